/* dist.h: what `tessera run`, `tessera bench` and `tesserad` share for distributed runs
 * (docs/distributed.md): the parallel layout (fixed or `auto`), every rank's memory budget,
 * the transport choice, and byte sizes with suffixes. */
#ifndef TS_CMD_DIST_H
#define TS_CMD_DIST_H

#include <stdbool.h>
#include <stdint.h>

#include "plan.h"
#include "transport.h"

/* --tp auto / --pp auto */
#define TS_CMD_PAR_AUTO (-1)

typedef struct ts_cmd_dist_params {
    int32_t tp, pp;        /* > 0: fixed; 0: not given (tp 1, pp = ranks / tp);
                              TS_CMD_PAR_AUTO: chosen from the ranks' memory (one auto and
                              the other not given: both auto) */
    const char *backend;   /* NULL / "cpu" / "cuda" */
    const char *model;     /* the GGUF (rank 0 reads its shapes for the auto choice) */
    uint64_t mem_limit;    /* this rank's --gpu-mem-limit; 0: none */
    int32_t n_ctx, n_seq, n_batch, n_chunk; /* as the engine gets them (0: its defaults) */
} ts_cmd_dist_params;

typedef struct ts_cmd_dist {
    ts_transport *tr;      /* NULL: a singleton (the plain one-rank engine) */
    int32_t tp, pp;        /* for ts_engine_params (auto: the choice) */
    const uint64_t *rank_mem; /* for ts_engine_params.rank_mem: NULL or budget */
    uint64_t budget[TS_PLAN_MAX_RANKS]; /* every rank's budget (when rank_mem is set) */
    char report[6144];     /* rank 0: lines to print before the plan (the budgets and why
                              auto chose its layout); "" when there is nothing to say */
} ts_cmd_dist;

/* Under mpirun (or when tp / pp ask for more than one rank) opens the transport: NCCL for
 * backend "cuda" in a build with NCCL (TESSERA_TRANSPORT=mpi forces MPI with host staging),
 * else MPI. Under mpirun every rank first measures its memory budget (backend cuda: the
 * free memory of its GPU, local rank % GPUs, less 512 MiB; else the host's MemAvailable
 * shared by the host's ranks), caps it by its own --gpu-mem-limit, and the budgets and host
 * names are gathered over MPI; with auto, rank 0 chooses the layout (ts_plan_auto: TP
 * groups within a host, the most context, ties to fewer TP ranks) and broadcasts it;
 * with auto or with a --gpu-mem-limit on any rank (unless all ranks give the same one)
 * out->rank_mem carries every rank's budget to the plan. out->tr stays NULL for a
 * singleton. Prints the error (prefixed by `cmd`; a refused auto layout on rank 0 only)
 * and returns 1 on failure (every rank returns, MPI finalized), 2 when the build has no
 * MPI; 0 on success. */
int ts_cmd_dist_open(const char *cmd, const ts_cmd_dist_params *p, ts_cmd_dist *out);

/* The CUDA device of this process: its rank on the host under a launcher (Open MPI, MPICH,
 * Slurm; else `fallback`) modulo the devices; -1 without a device (or CUDA). */
int ts_cmd_local_gpu(int fallback);

/* --tp / --pp values: "auto" (TS_CMD_PAR_AUTO) or an integer in [lo, 256]. 0 on
 * success; -1 with a message naming the flag. */
int ts_cmd_parse_par(const char *cmd, const char *flag, const char *v, int32_t lo,
                     int32_t *out);

/* "12GiB", "8G", "512MiB", "1.5GiB", "4000000000", "16GB": K/M/G/T and KiB..TiB are
 * powers of 1024, KB..TB powers of 1000. 0 on success; -1 with a message on bad input. */
int ts_cmd_parse_bytes(const char *cmd, const char *flag, const char *v, uint64_t *out);

#endif
