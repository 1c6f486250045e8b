/* commands.h: the subcommands of the `tessera` CLI. Each takes the arguments after the
 * subcommand name (argv[0] is the subcommand) and returns the process exit code:
 * 0 success, 1 failure (message printed to stderr), 2 usage error. */
#ifndef TS_COMMANDS_H
#define TS_COMMANDS_H

int ts_cmd_inspect(int argc, char **argv);
int ts_cmd_tokenize(int argc, char **argv);
int ts_cmd_detokenize(int argc, char **argv);
int ts_cmd_mkmodel(int argc, char **argv);
int ts_cmd_run(int argc, char **argv);
int ts_cmd_bench(int argc, char **argv);
int ts_cmd_safety(int argc, char **argv);
/* cmd_cluster.c: plans for given devices; a check of the ranks of an mpirun job */
int ts_cmd_plan(int argc, char **argv);
int ts_cmd_cluster_check(int argc, char **argv);
#ifdef TS_HAVE_RPC
/* gRPC clients of tesserad (cmd_client.c) */
int ts_cmd_generate(int argc, char **argv);
int ts_cmd_chat(int argc, char **argv);
int ts_cmd_health(int argc, char **argv);
int ts_cmd_info(int argc, char **argv);
/* load generator (cmd_loadgen.c) */
int ts_cmd_loadgen(int argc, char **argv);
#endif

#endif
