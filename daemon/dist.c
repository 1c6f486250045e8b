/* dist.c: the layout, memory budgets and transport of distributed `tessera run` / `bench`
 * and `tesserad` (dist.h, docs/distributed.md).
 *
 * DESIGN
 * Under mpirun every rank, before any transport exists (NCCL needs tp when it opens),
 * measures its memory (its GPU's free memory less a reserve, or the host's MemAvailable
 * split over the ranks of the host) and gathers it with its --gpu-mem-limit and host name
 * from every rank (one MPI all-gather). With --tp / --pp auto rank 0 reads the model's
 * shapes, runs ts_plan_auto and broadcasts the layout or the refusal, so that every rank
 * opens the same transport or every rank exits with rank 0's message. The budgets go to
 * the engine (ts_engine_params.rank_mem), whose plan splits the layers in proportion.
 */
#include "dist.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "alloc.h"
#include "config.h"
#include "gguf.h"
#include "quant.h"
#include "status.h"
#include "strbuf.h"
#ifdef TS_HAVE_CUDA
#include <cuda_runtime.h>

#include "kernels_cuda.h"
#endif

#define GPU_RESERVE (512ull << 20) /* CUDA context slack, NCCL buffers, small allocations */

int ts_cmd_parse_par(const char *cmd, const char *flag, const char *v, int32_t lo,
                     int32_t *out) {
    if (!strcasecmp(v, "auto")) {
        *out = TS_CMD_PAR_AUTO;
        return 0;
    }
    char *end;
    errno = 0;
    long x = strtol(v, &end, 10);
    if (errno || *end || end == v || x < lo || x > 256) {
        fprintf(stderr, "%s: %s expects auto or an integer in [%d, 256], got '%s'\n", cmd, flag,
                lo, v);
        return -1;
    }
    *out = (int32_t)x;
    return 0;
}

/* ---------------------------------------------------------------- measuring */

#ifdef TS_HAVE_MPI
typedef struct {
    char host[64];
    int32_t gpu;          /* the CUDA device measured, or -1: host memory */
    int32_t has_limit;    /* --gpu-mem-limit given on this rank */
    uint64_t limit;
    uint64_t mem;         /* measured: free GPU memory / the host's MemAvailable */
    char err[192];        /* why it could not be measured ("" when it was) */
} rank_mem;

typedef struct {
    int32_t ok, tp, pp;
    char msg[4096];       /* ok: why this layout; else the refusal */
} decision;

#ifdef TS_HAVE_CUDA
/* This process's rank on its host under a launcher (Open MPI, MPICH, Slurm), else -1. */
static int local_rank(void) {
    const char *envs[] = {"OMPI_COMM_WORLD_LOCAL_RANK", "MPI_LOCALRANKID", "SLURM_LOCALID"};
    for (size_t i = 0; i < sizeof envs / sizeof envs[0]; i++) {
        const char *v = getenv(envs[i]);
        if (v && *v) return atoi(v);
    }
    return -1;
}
#endif

int ts_cmd_local_gpu(int fallback) {
#ifdef TS_HAVE_CUDA
    int count = 0;
    if (ts_cuda_device_count(&count) != TS_OK || count <= 0) return -1;
    const int lr = local_rank();
    return (lr >= 0 ? lr : fallback > 0 ? fallback : 0) % count;
#else
    (void)fallback;
    return -1;
#endif
}

/* MemAvailable of /proc/meminfo (bytes); else free pages (sysconf); 0 if neither. */
static uint64_t host_available(void) {
    FILE *f = fopen("/proc/meminfo", "r");
    if (f) {
        char key[64];
        unsigned long long v;
        while (fscanf(f, "%63s %llu kB\n", key, &v) == 2)
            if (!strcmp(key, "MemAvailable:")) {
                fclose(f);
                return (uint64_t)v * 1024ull;
            }
        fclose(f);
    }
    long pages = sysconf(_SC_AVPHYS_PAGES), psz = sysconf(_SC_PAGESIZE);
    return pages > 0 && psz > 0 ? (uint64_t)pages * (uint64_t)psz : 0;
}

static void measure(const char *backend, uint64_t limit, rank_mem *me) {
    memset(me, 0, sizeof *me);
    if (gethostname(me->host, sizeof me->host - 1)) snprintf(me->host, sizeof me->host, "?");
    me->has_limit = limit > 0;
    me->limit = limit;
    me->gpu = -1;
    if (backend && !strcmp(backend, "cuda")) {
#ifdef TS_HAVE_CUDA
        int count = 0;
        if (ts_cuda_device_count(&count) != TS_OK || count <= 0) {
            snprintf(me->err, sizeof me->err, "no CUDA device on %s", me->host);
            return;
        }
        const int lr = local_rank(), dev = (lr > 0 ? lr : 0) % count;
        size_t fr = 0, tot = 0;
        cudaError_t ce = cudaSetDevice(dev);
        if (ce == cudaSuccess) ce = cudaMemGetInfo(&fr, &tot);
        if (ce != cudaSuccess) {
            snprintf(me->err, sizeof me->err, "GPU %d on %s: cudaMemGetInfo: %s", dev, me->host,
                     cudaGetErrorString(ce));
            (void)cudaGetLastError();
            return;
        }
        me->gpu = dev;
        me->mem = fr;
        return;
#endif
        /* a build without CUDA: the engine refuses the backend; measure the host */
    }
    me->mem = host_available();
    if (!me->mem) snprintf(me->err, sizeof me->err, "cannot read the available memory of %s",
                           me->host);
}

#define hs ts_str_gib /* "14.2 GiB" / "3.5 MiB" */

/* Every rank's budget from the gathered measurements: the measured memory split over the
 * ranks that share it (a host's memory, or one GPU), a GPU's less the reserve, capped by
 * the rank's --gpu-mem-limit. needed: with auto a rank must have a budget. Fills
 * budget, host ids and (rank 0) the report; -1 with msg when a needed one is missing. */
static int budgets(const rank_mem *all, int32_t world, bool needed, uint64_t *budget,
                   int32_t *host, char *report, size_t rcap, char *msg, size_t mcap) {
    char a[32], b[32], c[32];
    for (int32_t r = 0; r < world; r++) {
        host[r] = r;
        for (int32_t q = 0; q < r; q++)
            if (!strcmp(all[q].host, all[r].host)) {
                host[r] = host[q];
                break;
            }
    }
    ts_str_append(report, rcap, "memory budgets (the plan's, before step buffers):\n");
    for (int32_t r = 0; r < world; r++) {
        const rank_mem *m = &all[r];
        int32_t share = 0;
        for (int32_t q = 0; q < world; q++)
            share += host[q] == host[r] && all[q].gpu == m->gpu && !all[q].err[0];
        if (share < 1) share = 1;
        uint64_t meas = 0;
        if (!m->err[0]) {
            meas = m->mem / (uint64_t)share;
            if (m->gpu >= 0) meas = meas > GPU_RESERVE ? meas - GPU_RESERVE : 0;
        }
        if (m->err[0] && !m->has_limit) {
            if (needed) {
                snprintf(msg, mcap, "rank %d: cannot measure its memory (%s); give it "
                         "--gpu-mem-limit", r, m->err);
                return -1;
            }
            budget[r] = 0;
            continue;
        }
        budget[r] = m->err[0] ? m->limit
                    : m->has_limit && m->limit < meas ? m->limit : meas;
        if (r >= 16 && r < world - 1) {
            if (r == 16) ts_str_append(report, rcap, "  ...\n");
            continue;
        }
        ts_str_append(report, rcap, "  rank %d on %s: %s", r, m->host, hs(budget[r], a, sizeof a));
        if (m->err[0])
            ts_str_append(report, rcap, " (--gpu-mem-limit; not measured: %s)\n", m->err);
        else if (m->gpu >= 0)
            ts_str_append(report, rcap, " (GPU %d: %s free%s, less %s reserve%s)\n", m->gpu,
                    hs(m->mem, b, sizeof b), share > 1 ? " shared by its ranks" : "",
                    hs(GPU_RESERVE, c, sizeof c),
                    m->has_limit && m->limit < meas ? "; capped by --gpu-mem-limit" : "");
        else
            ts_str_append(report, rcap, " (host memory: %s available%s%s)\n", hs(m->mem, b, sizeof b),
                    share > 1 ? ", split over its ranks" : "",
                    m->has_limit && m->limit < meas ? "; capped by --gpu-mem-limit" : "");
    }
    return 0;
}

/* Rank 0: the auto layout for the model on these budgets. */
static void choose(const ts_cmd_dist_params *p, int32_t world, const uint64_t *budget,
                   const int32_t *host, decision *d) {
    ts_gguf *g = NULL;
    ts_config cfg;
    if (ts_gguf_open(p->model, &g) != TS_OK || ts_config_from_gguf(g, &cfg) != TS_OK) {
        snprintf(d->msg, sizeof d->msg, "auto: cannot read the model: %s", ts_last_error());
        ts_gguf_close(g);
        return;
    }
    const ts_gguf_tensor *to = ts_gguf_find_tensor(g, "blk.0.attn_output.weight"),
                         *td = ts_gguf_find_tensor(g, "blk.0.ffn_down.weight"),
                         *te = ts_gguf_find_tensor(g, "token_embd.weight");
    uint32_t align = 32; /* as the engine derives it */
    if (to && ts_type_block_elems(to->type) > align) align = ts_type_block_elems(to->type);
    if (td && ts_type_block_elems(td->type) > align) align = ts_type_block_elems(td->type);
    const int32_t n_batch = p->n_batch > 0 ? p->n_batch : 512;
    ts_plan_auto_params ap = {
        .plan = {.world = world, .tp = p->tp > 0 ? p->tp : 0, .pp = p->pp > 0 ? p->pp : 0,
                 .mem_bytes = budget, .n_ctx = p->n_ctx, .n_seq = p->n_seq > 0 ? p->n_seq : 1,
                 .n_chunk = p->n_chunk > 0 && p->n_chunk <= n_batch ? p->n_chunk : n_batch,
                 .weight_type = td ? td->type : 0, .embd_type = te ? te->type : 0,
                 .row_align = align},
        .host = host,
        .n_batch = n_batch,
    };
    ts_gguf_close(g);
    static ts_plan_auto_result res; /* large; rank 0's main thread only */
    ts_status st = ts_plan_auto(&cfg, &ap, &res);
    snprintf(d->msg, sizeof d->msg, "%s", res.desc[0] ? res.desc : ts_last_error());
    if (st == TS_OK) {
        d->ok = 1;
        d->tp = res.tp;
        d->pp = res.pp;
    }
}
#endif

/* ---------------------------------------------------------------- opening */

int ts_cmd_dist_open(const char *cmd, const ts_cmd_dist_params *pin, ts_cmd_dist *out) {
    out->tr = NULL;
    out->rank_mem = NULL;
    out->report[0] = '\0';
    ts_cmd_dist_params p = *pin;
    if (p.tp == TS_CMD_PAR_AUTO && p.pp == 0) p.pp = TS_CMD_PAR_AUTO;
    if (p.pp == TS_CMD_PAR_AUTO && p.tp == 0) p.tp = TS_CMD_PAR_AUTO;
    const bool autop = p.tp == TS_CMD_PAR_AUTO || p.pp == TS_CMD_PAR_AUTO;
    out->tp = p.tp > 0 ? p.tp : 0;
    out->pp = p.pp > 0 ? p.pp : 0;
    const bool launched = ts_transport_mpi_launched();
    if (!launched && out->tp <= 1 && out->pp <= 1) return 0; /* one rank (auto: tp 1 x pp 1) */
#ifdef TS_HAVE_MPI
    ts_transport *tr = NULL;
    ts_status st;
    const bool cuda = p.backend && !strcmp(p.backend, "cuda");
    if (launched) {
        /* every rank's memory and host, before the transport */
        rank_mem me;
        measure(p.backend, p.mem_limit, &me);
        rank_mem *all = ts_calloc(TS_PLAN_MAX_RANKS, sizeof *all);
        int32_t rank = 0, world = 1;
        st = all ? ts_transport_mpi_allgather(&me, sizeof me, all, TS_PLAN_MAX_RANKS, &rank,
                                              &world)
                 : TS_FAIL(TS_NOMEM, "memory budgets of %d ranks", TS_PLAN_MAX_RANKS);
        if (st != TS_OK) {
            fprintf(stderr, "%s: rank %d: %s\n", cmd, rank, ts_last_error());
            ts_free(all);
            ts_transport_mpi_finalize();
            return 1;
        }
        bool any_limit = false, same_limit = true;
        for (int32_t r = 0; r < world; r++) {
            any_limit = any_limit || all[r].has_limit;
            same_limit = same_limit && all[r].has_limit && all[r].limit == all[0].limit;
        }
        int32_t host[TS_PLAN_MAX_RANKS];
        char msg[512] = "";
        int br = budgets(all, world, autop, out->budget, host, out->report,
                         sizeof out->report, msg, sizeof msg);
        bool capped = false; /* a measured budget below the (common) limit */
        for (int32_t r = 0; r < world && br == 0; r++)
            capped = capped || (all[r].has_limit && out->budget[r] < all[r].limit);
        ts_free(all);
        if (br) { /* the same on every rank */
            if (rank == 0) fprintf(stderr, "%s: %s\n", cmd, msg);
            ts_transport_mpi_finalize();
            return 1;
        }
        if (autop || (any_limit && (!same_limit || capped)))
            out->rank_mem = out->budget;
        else
            out->report[0] = '\0'; /* the plan shows the common limit */
        if (autop) {
            static decision d; /* 4 KiB */
            memset(&d, 0, sizeof d);
            if (rank == 0) choose(&p, world, out->budget, host, &d);
            st = ts_transport_mpi_bcast0(&d, sizeof d, "the parallel layout");
            if (st != TS_OK) {
                fprintf(stderr, "%s: rank %d: %s\n", cmd, rank, ts_last_error());
                ts_transport_mpi_finalize();
                return 1;
            }
            if (!d.ok) {
                if (rank == 0) fprintf(stderr, "%s: %s\n", cmd, d.msg);
                ts_transport_mpi_finalize();
                return 1;
            }
            out->tp = d.tp;
            out->pp = d.pp;
            ts_str_append(out->report, sizeof out->report, "%s\n", d.msg);
        }
    }
    const int32_t tp = out->tp > 0 ? out->tp : 1;
    const char *force = getenv("TESSERA_TRANSPORT");
    if (cuda && !(force && !strcmp(force, "mpi"))) {
#ifdef TS_HAVE_NCCL
        st = ts_transport_nccl_open(tp, -1, &tr);
#else
        st = ts_transport_mpi_open(tp, &tr);
        if (st == TS_OK && tr->world > 1 && tr->rank == 0)
            fprintf(stderr, "%s: this build has no NCCL: GPU ranks exchange activations over "
                    "MPI through host memory\n", cmd);
#endif
    } else {
        st = ts_transport_mpi_open(tp, &tr);
    }
    if (st != TS_OK) {
        fprintf(stderr, "%s: %s\n", cmd, ts_last_error());
        ts_transport_mpi_finalize();
        return 1;
    }
    if (tr->world == 1 && tr->tp == 1 && out->pp <= 1) {
        ts_transport_close(tr); /* a singleton: the plain one-rank engine */
        ts_transport_mpi_finalize();
        out->rank_mem = NULL;
        out->report[0] = '\0';
        return 0;
    }
#ifdef TS_HAVE_CUDA
    if (cuda && tr->device < 0) /* MPI with GPU ranks: local rank % GPUs, as NCCL does */
        tr->device = ts_cmd_local_gpu(tr->rank);
#endif
    out->tr = tr;
    return 0;
#else
    (void)launched;
    (void)autop;
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
