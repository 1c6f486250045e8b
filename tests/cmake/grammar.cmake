# Structured output: JSON Schema compiler, matcher and token mask (cases labelled by the
# jsonschema package: tests/tools/make_grammar_cases.py).
ts_add_unit_test(NAME test_grammar SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/unit/test_grammar.c
                 LIBS ts_grammar PkgConfig::JANSSON m)

# Benchmark (not a test): the token mask's cost per state on the real vocabulary.
add_executable(bench_grammar ${CMAKE_CURRENT_SOURCE_DIR}/bench/bench_grammar.c)
target_link_libraries(bench_grammar PRIVATE ts_grammar ts_text)
ts_c_target(bench_grammar)

# Function calling helpers of tesserad (daemon/tools.c): prompt preamble, call grammar, parsing.
ts_add_unit_test(NAME test_tools SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/unit/test_tools.c
                 ${CMAKE_SOURCE_DIR}/daemon/tools.c LIBS ts_grammar PkgConfig::JANSSON)
target_include_directories(test_tools PRIVATE ${CMAKE_SOURCE_DIR}/daemon)
