/* dist.h: what `tessera run` and `tessera bench` share for distributed runs
 * (docs/distributed.md): the transport choice and byte sizes with suffixes. */
#ifndef TS_CMD_DIST_H
#define TS_CMD_DIST_H

#include <stdbool.h>
#include <stdint.h>

#include "transport.h"

/* Under mpirun (or when tp / pp ask for more than one rank) opens the transport: NCCL for
 * backend "cuda" in a build with NCCL (TESSERA_TRANSPORT=mpi forces MPI with host staging),
 * else MPI. *out stays NULL for a singleton (the plain one-rank engine). Prints the error
 * (prefixed by `cmd`) and returns 1 on failure, 2 when the build has no MPI; 0 on success. */
int ts_cmd_dist_open(const char *cmd, int32_t tp, int32_t pp, const char *backend,
                     ts_transport **out);

/* "12GiB", "8G", "512MiB", "1.5GiB", "4000000000", "16GB": K/M/G/T and KiB..TiB are
 * powers of 1024, KB..TB powers of 1000. 0 on success; -1 with a message on bad input. */
int ts_cmd_parse_bytes(const char *cmd, const char *flag, const char *v, uint64_t *out);

#endif
