# embed.cmake: cmake -DIN=file -DOUT=file.c -DNAME=sym -P embed.cmake
# Writes `const unsigned char NAME[]` and `const unsigned int NAME_len` holding IN's bytes
# (used for the reflection FileDescriptorSet; no xxd needed).
file(READ ${IN} hex HEX)
string(LENGTH "${hex}" n)
math(EXPR len "${n} / 2")
string(REGEX REPLACE "([0-9a-f][0-9a-f])" "0x\\1," body "${hex}")
string(REGEX REPLACE "((0x[0-9a-f][0-9a-f],){16})" "\\1\n" body "${body}")
file(WRITE ${OUT} "/* generated from ${IN} by rpc/embed.cmake */\n"
     "const unsigned char ${NAME}[] = {\n${body}0x00};\n"
     "const unsigned int ${NAME}_len = ${len};\n")
