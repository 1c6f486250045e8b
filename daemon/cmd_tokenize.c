/* placeholder: being written (tokenizer) */
#include <stdio.h>
#include "commands.h"
int ts_cmd_tokenize(int argc, char **argv) { (void)argc; (void)argv; fprintf(stderr, "tessera tokenize: not built yet\n"); return 1; }
int ts_cmd_detokenize(int argc, char **argv) { (void)argc; (void)argv; fprintf(stderr, "tessera detokenize: not built yet\n"); return 1; }
