/* tessera_main.c: the `tessera` command-line tool: dispatches to subcommands. */
#include <stdio.h>
#include <string.h>

#include "commands.h"

#ifndef TESSERA_VERSION
#define TESSERA_VERSION "0.1.0"
#endif

typedef struct {
    const char *name;
    int (*fn)(int argc, char **argv);
    const char *help;
} command;

static const command g_commands[] = {
    {"inspect", ts_cmd_inspect, "show a model file: hyperparameters, tokenizer, tensors"},
    {"tokenize", ts_cmd_tokenize, "text to token ids with a model's tokenizer"},
    {"detokenize", ts_cmd_detokenize, "token ids to text"},
    {"run", ts_cmd_run, "generate text from a prompt (CPU engine), streaming it"},
    {"bench", ts_cmd_bench, "prefill and decode speed (llama-bench definitions)"},
    {"mkmodel", ts_cmd_mkmodel, "write a random-weight Gemma 3 GGUF at a real shape"},
    {"safety", ts_cmd_safety, "ShieldGemma 2 safety scores of images (CPU engine)"},
    {"plan", ts_cmd_plan, "which parallel plans fit given devices, and the context each leaves"},
    {"cluster-check", ts_cmd_cluster_check, "under mpirun: devices, memory, bandwidth; proposes a plan"},
#ifdef TS_HAVE_RPC
    {"generate", ts_cmd_generate, "generate text on a tesserad server (gRPC)"},
    {"chat", ts_cmd_chat, "chat with a tesserad server, streaming the answer"},
    {"loadgen", ts_cmd_loadgen, "load a tesserad server: throughput, TTFT, inter-token latency"},
    {"health", ts_cmd_health, "health check of a tesserad server"},
    {"info", ts_cmd_info, "model and cluster information of a tesserad server"},
#endif
};

static void usage(FILE *f) {
    fprintf(f, "usage: tessera COMMAND [ARGS...]\n\ncommands:\n");
    for (size_t i = 0; i < sizeof g_commands / sizeof g_commands[0]; i++)
        fprintf(f, "  %-12s %s\n", g_commands[i].name, g_commands[i].help);
    fprintf(f, "\n'tessera COMMAND --help' describes a command.\n");
}

int main(int argc, char **argv) {
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
        usage(stdout);
        return 0;
    }
    if (!strcmp(argv[1], "--version")) {
        printf("tessera %s\n", TESSERA_VERSION);
        return 0;
    }
    for (size_t i = 0; i < sizeof g_commands / sizeof g_commands[0]; i++)
        if (!strcmp(argv[1], g_commands[i].name)) return g_commands[i].fn(argc - 1, argv + 1);
    fprintf(stderr, "tessera: unknown command '%s'\n\n", argv[1]);
    usage(stderr);
    return 2;
}
