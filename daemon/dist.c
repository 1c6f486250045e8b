/* dist.c: transport choice and size parsing for distributed `tessera run` / `bench`. */
#include "dist.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "status.h"
#ifdef TS_HAVE_CUDA
#include "kernels_cuda.h"
#endif

int ts_cmd_dist_open(const char *cmd, int32_t tp, int32_t pp, const char *backend,
                     ts_transport **out) {
    *out = NULL;
    if (!ts_transport_mpi_launched() && tp <= 1 && pp <= 1) return 0;
#ifdef TS_HAVE_MPI
    ts_transport *tr = NULL;
    ts_status st;
    const char *force = getenv("TESSERA_TRANSPORT");
    const bool cuda = backend && !strcmp(backend, "cuda");
    if (cuda && !(force && !strcmp(force, "mpi"))) {
#ifdef TS_HAVE_NCCL
        st = ts_transport_nccl_open(tp > 0 ? tp : 1, -1, &tr);
#else
        st = ts_transport_mpi_open(tp > 0 ? tp : 1, &tr);
        if (st == TS_OK && tr->world > 1 && tr->rank == 0)
            fprintf(stderr, "%s: this build has no NCCL: GPU ranks exchange activations over "
                    "MPI through host memory\n", cmd);
#endif
    } else {
        st = ts_transport_mpi_open(tp > 0 ? tp : 1, &tr);
    }
    if (st != TS_OK) {
        fprintf(stderr, "%s: %s\n", cmd, ts_last_error());
        return 1;
    }
    if (tr->world == 1 && tr->tp == 1 && pp <= 1) {
        ts_transport_close(tr); /* a singleton: the plain one-rank engine */
        return 0;
    }
#ifdef TS_HAVE_CUDA
    if (cuda && tr->device < 0) { /* MPI with GPU ranks: local rank % GPUs, as NCCL does */
        int count = 0;
        const char *lr = getenv("OMPI_COMM_WORLD_LOCAL_RANK");
        if (!lr) lr = getenv("MPI_LOCALRANKID");
        if (!lr) lr = getenv("SLURM_LOCALID");
        if (ts_cuda_device_count(&count) == TS_OK && count > 0)
            tr->device = (lr ? atoi(lr) : tr->rank) % count;
    }
#endif
    *out = tr;
    return 0;
#else
    (void)backend;
    fprintf(stderr, "%s: --tp / --pp need a build with MPI (Open MPI)\n", cmd);
    return 2;
#endif
}

int ts_cmd_parse_bytes(const char *cmd, const char *flag, const char *v, uint64_t *out) {
    char *end;
    errno = 0;
    double x = strtod(v, &end);
    if (errno || end == v || !(x > 0) || v[0] == '-') goto bad;
    static const struct { const char *suf; double mul; } sufs[] = {
        {"", 1}, {"B", 1},
        {"K", 1024.0}, {"KiB", 1024.0}, {"KB", 1e3},
        {"M", 1048576.0}, {"MiB", 1048576.0}, {"MB", 1e6},
        {"G", 1073741824.0}, {"GiB", 1073741824.0}, {"GB", 1e9},
        {"T", 1099511627776.0}, {"TiB", 1099511627776.0}, {"TB", 1e12},
    };
    for (size_t i = 0; i < sizeof sufs / sizeof sufs[0]; i++)
        if (!strcasecmp(end, sufs[i].suf) && (sufs[i].suf[0] || *end == '\0')) {
            double b = floor(x * sufs[i].mul);
            if (b < 1 || b > 1.8e19) goto bad;
            *out = (uint64_t)b;
            return 0;
        }
bad:
    fprintf(stderr, "%s: %s expects a size in bytes such as 12GiB, 8G, 512MiB or 16GB, got "
            "'%s'\n", cmd, flag, v);
    return -1;
}
