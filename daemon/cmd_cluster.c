/* cmd_cluster.c: `tessera plan` (which parallel plans fit given devices, and the context
 * each leaves: the planner of shard/plan.c, no devices needed) and `tessera cluster-check`
 * (run under mpirun: every rank reports its host, device, memory and measured bandwidth,
 * the MPI (and, with GPUs, NCCL) all-reduce and send/recv bandwidth between the ranks,
 * then rank 0 proposes a plan for the model from the measured free memory).
 *
 *   tessera plan (-m MODEL | --size 27b [--type q4_0]) --devices 12G,12G [--tp T] [--pp P]
 *                [--ctx N] [--seqs N] [--reserve SIZE] [--json]
 *   mpirun -np N tessera cluster-check [-m MODEL | --size S [--type T]] [--ctx N] [--seqs N]
 *                [--reserve SIZE] [--mb N] [--json]
 *
 * Budgets: a device's memory minus --reserve (default 1 GiB: the CUDA context, step
 * buffers and allocator slack, which the planner does not count). The planner counts
 * weights (at the file's types) and the KV cache (fp32, as the engine stores it: global
 * layers keep n_seq x n_ctx positions, sliding-window layers window + chunk).
 * Bandwidths count bytes read plus bytes written per second for copies (STREAM "copy",
 * NVIDIA bandwidthTest D2D), and nccl-tests' bus bandwidth for all-reduce
 * (size / time x 2 (n-1) / n); send/recv is bytes sent per second on each link of a ring.
 * docs/operations.md.
 */
#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "alloc.h"
#include "commands.h"
#include "config.h"
#include "gguf.h"
#include "mkmodel.h"
#include "plan.h"
#include "transport.h"

#ifdef TS_HAVE_MPI
#include <mpi.h>
#endif
#ifdef TS_HAVE_CUDART
#include <cuda_runtime.h>
#endif
#ifdef TS_HAVE_NCCL
#include <nccl.h>
#endif

#define GiB (1024.0 * 1024.0 * 1024.0)
#define MAX_DEV 256

/* ---------------------------------------------------------------- the model */

typedef struct {
    ts_config cfg;
    uint32_t wtype, etype; /* GGUF types of the matrices and of token_embd */
    char desc[256];
} model_shape;

/* From a GGUF (-m) or from a known shape (--size, mkmodel's table: the real Gemma 3
 * hyperparameters, vocabulary 262144). */
static int load_shape(const char *path, const char *size, const char *type, model_shape *m,
                      const char *cmd) {
    memset(m, 0, sizeof *m);
    if (path) {
        ts_gguf *g = NULL;
        if (ts_gguf_open(path, &g) != TS_OK || ts_config_from_gguf(g, &m->cfg) != TS_OK) {
            fprintf(stderr, "tessera %s: %s\n", cmd, ts_last_error());
            ts_gguf_close(g);
            return 1;
        }
        const ts_gguf_tensor *td = ts_gguf_find_tensor(g, "blk.0.ffn_down.weight");
        const ts_gguf_tensor *te = ts_gguf_find_tensor(g, "token_embd.weight");
        m->wtype = td ? td->type : 0;
        m->etype = te ? te->type : m->wtype;
        snprintf(m->desc, sizeof m->desc, "%s (%s)", m->cfg.name[0] ? m->cfg.name : path, path);
        ts_gguf_close(g);
        return 0;
    }
    const ts_mkmodel_shape *s = ts_mkmodel_shape_by_name(size ? size : "");
    if (!s) {
        fprintf(stderr, "tessera %s: give -m MODEL or --size (tiny, 270m, 1b, 4b, 12b, 27b)\n", cmd);
        return 2;
    }
    uint32_t t = 2; /* Q4_0 */
    if (type && !ts_mkmodel_type_from_name(type, &t)) {
        fprintf(stderr, "tessera %s: unknown --type '%s' (q4_0, q8_0, f16, f32)\n", cmd, type);
        return 2;
    }
    ts_config *c = &m->cfg;
    snprintf(c->arch, sizeof c->arch, "gemma3");
    snprintf(c->name, sizeof c->name, "gemma-3-%s", s->name);
    c->n_layer = s->n_layer;
    c->n_embd = s->n_embd;
    c->n_ff = s->n_ff;
    c->n_head = s->n_head;
    c->n_head_kv = s->n_head_kv;
    c->head_dim = s->head_dim;
    c->n_ctx_train = s->n_ctx;
    c->n_vocab = TS_MKMODEL_DEFAULT_VOCAB;
    c->sliding_window = s->sliding_window;
    for (uint32_t i = 0; i < c->n_layer && i < TS_MAX_LAYERS; i++) {
        c->is_global[i] = (i + 1) % 6 == 0; /* Gemma 3's pattern: 5 local, 1 global */
        c->n_global += c->is_global[i];
    }
    m->wtype = m->etype = t;
    snprintf(m->desc, sizeof m->desc, "gemma-3-%s shape, %s weights", s->name,
             type ? type : "q4_0");
    return 0;
}

/* "12G", "8GiB", "24000M", "1.5G", "123456789" (bytes) -> bytes; false if malformed. */
static bool parse_size(const char *s, uint64_t *out) {
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || v < 0) return false;
    double mul = 1;
    if (*end) {
        switch (*end == 'k' ? 'K' : *end) {
        case 'K': mul = 1024.0; break;
        case 'M': mul = 1024.0 * 1024; break;
        case 'G': mul = GiB; break;
        case 'T': mul = GiB * 1024; break;
        default: return false;
        }
        end++;
        if (*end && strcasecmp(end, "iB") && strcasecmp(end, "B")) return false;
    }
    if (v * mul > 1.8e19) return false;
    *out = (uint64_t)(v * mul);
    return true;
}

/* ---------------------------------------------------------------- planning */

static ts_plan_params plan_params(const model_shape *m, int32_t world, int32_t tp, int32_t pp,
                                  const uint64_t *budget, int32_t n_ctx, int32_t n_seq) {
    return (ts_plan_params){.world = world, .tp = tp, .pp = pp, .mem_bytes = budget,
                            .n_ctx = n_ctx, .n_seq = n_seq, .weight_type = m->wtype,
                            .embd_type = m->etype};
}

typedef struct {
    int32_t tp, pp, ctx;
    char why[512];
} layout;

/* Every (tp, pp) with tp * pp = world (or the one asked for), with its largest context:
 * ts_plan_auto (shard/plan.c, the chooser of `--tp auto`). host[r]: rank r's host id (TP
 * groups must not span hosts); NULL = one host. n_ctx > 0: only layouts holding that
 * context count. Returns the number of layouts; *best: the index of the one leaving the
 * most context (ties: fewer TP ranks, less traffic per layer), -1 if none fits (then
 * `refusal` says why and what would fit). */
static int all_layouts(const model_shape *m, int32_t world, int32_t want_tp, int32_t want_pp,
                       const uint64_t *budget, int32_t n_ctx, int32_t n_seq, const int32_t *host,
                       layout *out, int *best, char *refusal, size_t rcap) {
    static ts_plan_auto_result res; /* large */
    ts_plan_auto_params ap = {
        .plan = plan_params(m, world, want_tp, want_pp, budget, n_ctx > 0 ? n_ctx : 1, n_seq),
        .host = host};
    ts_status st = ts_plan_auto(&m->cfg, &ap, &res);
    *best = -1;
    if (refusal && rcap) refusal[0] = '\0';
    if (st != TS_OK && refusal) snprintf(refusal, rcap, "%s", res.desc[0] ? res.desc : ts_last_error());
    for (int i = 0; i < res.n_layout; i++) {
        const ts_plan_layout *l = &res.layout[i];
        layout *L = &out[i];
        *L = (layout){.tp = l->tp, .pp = l->pp, .ctx = l->max_ctx};
        if (n_ctx > 0 && l->max_ctx > 0 && l->max_ctx < n_ctx) {
            snprintf(L->why, sizeof L->why, "context %d needs more memory (at most %d)", n_ctx,
                     l->max_ctx);
            L->ctx = 0;
        } else if (!l->max_ctx) {
            snprintf(L->why, sizeof L->why, "%s", l->why);
        }
        if (st == TS_OK && l->tp == res.tp && l->pp == res.pp) *best = i;
    }
    return res.n_layout;
}

/* Prints the layouts (text) or adds them to obj (JSON). */
static void report_layouts(const layout *ls, int n, int best, json_t *obj) {
    if (obj) {
        json_t *a = json_array();
        for (int i = 0; i < n; i++) {
            json_t *o = json_pack("{s:i,s:i,s:i}", "tp", ls[i].tp, "pp", ls[i].pp, "max_context",
                                  ls[i].ctx);
            if (!ls[i].ctx) json_object_set_new(o, "refused", json_string(ls[i].why));
            json_array_append_new(a, o);
        }
        json_object_set_new(obj, "layouts", a);
        if (best >= 0)
            json_object_set_new(obj, "proposed", json_pack("{s:i,s:i,s:i}", "tp", ls[best].tp,
                                                           "pp", ls[best].pp, "max_context",
                                                           ls[best].ctx));
        return;
    }
    printf("  tp  pp  max context per sequence\n");
    for (int i = 0; i < n; i++) {
        if (ls[i].ctx)
            printf("  %2d  %2d  %d%s\n", ls[i].tp, ls[i].pp, ls[i].ctx, i == best ? "  <- proposed" : "");
        else
            printf("  %2d  %2d  does not fit: %s\n", ls[i].tp, ls[i].pp, ls[i].why);
    }
}

/* The plan of layout L at n_ctx (clamped to its maximum), printed or added to obj. */
static void report_plan(const model_shape *m, int32_t world, const layout *L, const uint64_t *budget,
                        int32_t n_ctx, int32_t n_seq, json_t *obj) {
    ts_plan pl;
    int32_t ctx = n_ctx > 0 && n_ctx < L->ctx ? n_ctx : L->ctx;
    ts_plan_params p = plan_params(m, world, L->tp, L->pp, budget, ctx, n_seq);
    if (ts_plan_make(&m->cfg, &p, &pl) != TS_OK) return;
    if (obj) {
        json_t *ranks = json_array();
        for (int32_t r = 0; r < world; r++) {
            const ts_plan_rank *x = &pl.rank[r];
            json_array_append_new(ranks, json_pack("{s:i,s:i,s:i,s:i,s:i,s:I,s:I,s:I}", "rank", r,
                                                   "stage", x->stage, "tp_rank", x->tp_rank,
                                                   "layer_begin", x->l0, "layer_end", x->l1,
                                                   "weight_bytes", (json_int_t)x->weight_bytes,
                                                   "kv_bytes", (json_int_t)x->kv_bytes,
                                                   "budget_bytes",
                                                   (json_int_t)(budget ? budget[r] : 0)));
        }
        json_object_set_new(obj, "plan", json_pack("{s:i,s:i,s:i,s:o,s:s}", "tp", L->tp, "pp",
                                                   L->pp, "context", ctx, "ranks", ranks,
                                                   "description", pl.desc));
        return;
    }
    printf("\nproposed plan at context %d (x %d sequence%s):\n%s", ctx, n_seq, n_seq > 1 ? "s" : "",
           pl.desc);
    if (pl.desc[0] && pl.desc[strlen(pl.desc) - 1] != '\n') printf("\n");
    if (budget)
        for (int32_t r = 0; r < world; r++)
            printf("  rank %d: weights %.2f GiB + KV %.2f GiB of a %.2f GiB budget\n", r,
                   (double)pl.rank[r].weight_bytes / GiB, (double)pl.rank[r].kv_bytes / GiB,
                   (double)budget[r] / GiB);
}

/* ---------------------------------------------------------------- tessera plan */

static void plan_usage(FILE *f) {
    fprintf(f,
            "usage: tessera plan (-m MODEL | --size SIZE [--type TYPE]) --devices LIST [options]\n\n"
            "Which tensor/pipeline-parallel plans fit the model on the given devices, and the\n"
            "longest context each leaves (the planner of `mpirun ... tessera run`; no devices\n"
            "needed). Exit 0 when some plan fits, 1 when none does.\n\n"
            "  -m, --model FILE     Gemma 3 GGUF (its shapes and weight types)\n"
            "      --size SIZE      a known shape instead: tiny, 270m, 1b, 4b, 12b, 27b\n"
            "      --type TYPE      weights for --size: q4_0 (default), q8_0, f16, f32\n"
            "      --devices LIST   memory per rank, e.g. 12G,12G or 24G,12G,12G (or 4x8G)\n"
            "      --reserve SIZE   kept free on each device (default 1G)\n"
            "      --tp T, --pp P   only this layout (default: every tp x pp = ranks)\n"
            "      --ctx N          the context to plan for (default: the largest that fits)\n"
            "      --seqs N         sequences of that context held at once (default 1)\n"
            "      --json           one JSON object\n");
}

/* "4x8G" or "24G,12G,12G" -> budgets (minus reserve). */
static int parse_devices(const char *s, uint64_t reserve, uint64_t *dev, int32_t *n) {
    *n = 0;
    char buf[1024];
    snprintf(buf, sizeof buf, "%s", s);
    for (char *save = NULL, *t = strtok_r(buf, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
        long rep = 1;
        char *x = strchr(t, 'x');
        if (x) {
            char *end;
            rep = strtol(t, &end, 10);
            if (end != x || rep < 1 || rep > MAX_DEV) return -1;
            t = x + 1;
        }
        uint64_t b;
        if (!parse_size(t, &b)) return -1;
        for (long i = 0; i < rep; i++) {
            if (*n >= MAX_DEV) return -1;
            dev[(*n)++] = b > reserve ? b - reserve : 0;
        }
    }
    return *n > 0 ? 0 : -1;
}

int ts_cmd_plan(int argc, char **argv) {
    const char *model = NULL, *size = NULL, *type = NULL, *devices = NULL;
    int32_t tp = 0, pp = 0, n_ctx = 0, n_seq = 1;
    uint64_t reserve = 1ull << 30;
    bool json = false;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            plan_usage(stdout);
            return 0;
        } else if (!strcmp(a, "--json")) {
            json = true;
            continue;
        }
        if (!v) {
            fprintf(stderr, "tessera plan: unknown option or missing value: '%s'\n", a);
            plan_usage(stderr);
            return 2;
        }
        i++;
        if (!strcmp(a, "-m") || !strcmp(a, "--model")) model = v;
        else if (!strcmp(a, "--size")) size = v;
        else if (!strcmp(a, "--type")) type = v;
        else if (!strcmp(a, "--devices")) devices = v;
        else if (!strcmp(a, "--tp")) tp = atoi(v);
        else if (!strcmp(a, "--pp")) pp = atoi(v);
        else if (!strcmp(a, "--ctx")) n_ctx = atoi(v);
        else if (!strcmp(a, "--seqs")) n_seq = atoi(v);
        else if (!strcmp(a, "--reserve")) {
            if (!parse_size(v, &reserve)) {
                fprintf(stderr, "tessera plan: --reserve: bad size '%s'\n", v);
                return 2;
            }
        } else {
            fprintf(stderr, "tessera plan: unknown option '%s'\n", a);
            plan_usage(stderr);
            return 2;
        }
    }
    if (!devices || tp < 0 || pp < 0 || n_ctx < 0 || n_seq < 1) {
        plan_usage(stderr);
        return 2;
    }
    model_shape m;
    int rc = load_shape(model, size, type, &m, "plan");
    if (rc) return rc;
    uint64_t budget[MAX_DEV];
    int32_t world;
    if (parse_devices(devices, reserve, budget, &world)) {
        fprintf(stderr, "tessera plan: --devices: expected sizes like 12G,12G or 4x8G, got '%s'\n",
                devices);
        return 2;
    }
    if (tp && pp && tp * pp != world) {
        fprintf(stderr, "tessera plan: --tp %d x --pp %d is not the %d devices given\n", tp, pp, world);
        return 2;
    }
    static layout ls[TS_PLAN_AUTO_MAX];
    static char refusal[4096];
    int best;
    /* --ctx: only layouts that hold that context count */
    int n = all_layouts(&m, world, tp, pp, budget, n_ctx, n_seq, NULL, ls, &best, refusal,
                        sizeof refusal);
    json_t *obj = json ? json_object() : NULL;
    if (obj) {
        json_object_set_new(obj, "model", json_string(m.desc));
        json_t *d = json_array();
        for (int32_t r = 0; r < world; r++) json_array_append_new(d, json_integer((json_int_t)budget[r]));
        json_object_set_new(obj, "budget_bytes", d);
        json_object_set_new(obj, "reserve_bytes", json_integer((json_int_t)reserve));
        json_object_set_new(obj, "sequences", json_integer(n_seq));
    } else {
        printf("model: %s\n%d device%s, budgets (after %.2f GiB reserve each):", m.desc, world,
               world > 1 ? "s" : "", (double)reserve / GiB);
        for (int32_t r = 0; r < world; r++) printf(" %.2f", (double)budget[r] / GiB);
        printf(" GiB\n");
    }
    report_layouts(ls, n, best, obj);
    if (best >= 0) report_plan(&m, world, &ls[best], budget, n_ctx, n_seq, obj);
    if (obj) {
        char *s = json_dumps(obj, JSON_COMPACT);
        if (s) printf("%s\n", s);
        free(s);
        json_decref(obj);
    } else if (best < 0) {
        printf("no plan fits: %s\n", refusal);
    }
    return best >= 0 ? 0 : 1;
}

/* ---------------------------------------------------------------- cluster-check */

typedef struct {
    char host[64];
    char device[128];
    int32_t gpu;              /* 1: a GPU (device memory below), 0: CPU */
    int32_t ranks_on_host;
    uint64_t mem_total, mem_free;
    double copy_gbps;         /* device memory bandwidth: memcpy / cudaMemcpy D2D */
    double sendrecv_gbps;     /* MPI: to the next rank of the ring */
    double nccl_sendrecv_gbps;
} rank_info;

static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static void cpu_model(char *out, size_t n) {
    snprintf(out, n, "CPU");
    FILE *f = fopen("/proc/cpuinfo", "r");
    if (!f) return;
    char line[512];
    while (fgets(line, sizeof line, f)) {
        if (strncmp(line, "model name", 10)) continue;
        char *c = strchr(line, ':');
        if (!c) break;
        c++;
        while (*c == ' ' || *c == '\t') c++;
        c[strcspn(c, "\n")] = '\0';
        long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
        snprintf(out, n, "%s (%ld CPUs)", c, ncpu);
        break;
    }
    fclose(f);
}

static void meminfo(uint64_t *total, uint64_t *avail) {
    *total = *avail = 0;
    FILE *f = fopen("/proc/meminfo", "r");
    if (!f) return;
    char key[64];
    unsigned long long v;
    while (fscanf(f, "%63s %llu kB\n", key, &v) == 2) {
        if (!strcmp(key, "MemTotal:")) *total = v * 1024ull;
        if (!strcmp(key, "MemAvailable:")) *avail = v * 1024ull;
    }
    fclose(f);
}

/* memcpy bandwidth: best of reps copies of mb MiB, read + write bytes per second. */
static double memcpy_gbps(size_t mb) {
    size_t n = mb << 20;
    char *a = ts_malloc(n), *b = ts_malloc(n);
    double best = 0;
    if (a && b) {
        memset(a, 1, n);
        memset(b, 2, n);
        for (int rep = 0; rep < 5; rep++) {
            double t0 = now_s();
            memcpy(rep & 1 ? a : b, rep & 1 ? b : a, n);
            double dt = now_s() - t0;
            if (dt > 0 && 2.0 * (double)n / dt > best) best = 2.0 * (double)n / dt;
        }
    }
    ts_free(a);
    ts_free(b);
    return best / 1e9;
}

#ifdef TS_HAVE_CUDART
/* The GPU of this rank (local rank modulo the devices), or -1 when there is none. */
static int gpu_pick(int local_rank) {
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess || n <= 0) {
        (void)cudaGetLastError();
        return -1;
    }
    int d = local_rank % n;
    return cudaSetDevice(d) == cudaSuccess ? d : -1;
}

/* cudaMemcpy device to device: best of 5, read + write bytes per second. */
static double gpu_copy_gbps(size_t mb) {
    size_t n = mb << 20;
    void *a = NULL, *b = NULL;
    double best = 0;
    if (cudaMalloc(&a, n) == cudaSuccess && cudaMalloc(&b, n) == cudaSuccess) {
        cudaEvent_t e0, e1;
        cudaEventCreate(&e0);
        cudaEventCreate(&e1);
        cudaMemcpy(b, a, n, cudaMemcpyDeviceToDevice); /* warm-up */
        for (int rep = 0; rep < 5; rep++) {
            cudaEventRecord(e0, 0);
            cudaMemcpy(b, a, n, cudaMemcpyDeviceToDevice);
            cudaEventRecord(e1, 0);
            cudaEventSynchronize(e1);
            float ms = 0;
            cudaEventElapsedTime(&ms, e0, e1);
            if (ms > 0 && 2.0 * (double)n / (ms * 1e-3) > best) best = 2.0 * (double)n / (ms * 1e-3);
        }
        cudaEventDestroy(e0);
        cudaEventDestroy(e1);
    }
    cudaFree(a);
    cudaFree(b);
    (void)cudaGetLastError();
    return best / 1e9;
}
#endif

#ifdef TS_HAVE_MPI
/* MPI all-reduce (sum of floats) bus bandwidth over the world, GB/s (0 for one rank). */
static double mpi_allreduce_gbps(size_t mb, int world) {
    if (world < 2) return 0;
    size_t n = (mb << 20) / sizeof(float);
    float *x = ts_malloc(n * sizeof(float)), *y = ts_malloc(n * sizeof(float));
    int ok = x && y;
    int all_ok = 0;
    MPI_Allreduce(&ok, &all_ok, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD);
    double best = 0;
    if (all_ok) {
        for (size_t i = 0; i < n; i++) x[i] = 1.0f;
        MPI_Allreduce(x, y, (int)n, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD); /* warm-up */
        for (int rep = 0; rep < 3; rep++) {
            MPI_Barrier(MPI_COMM_WORLD);
            double t0 = MPI_Wtime();
            MPI_Allreduce(x, y, (int)n, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
            double dt = MPI_Wtime() - t0, slowest = 0;
            MPI_Allreduce(&dt, &slowest, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
            double bw = (double)(n * sizeof(float)) / slowest * 2.0 * (world - 1) / world;
            if (slowest > 0 && bw > best) best = bw;
        }
    }
    ts_free(x);
    ts_free(y);
    return best / 1e9;
}

/* Ring send/recv: rank r sends mb MiB to r + 1 while receiving from r - 1. GB/s sent. */
static double mpi_sendrecv_gbps(size_t mb, int rank, int world) {
    if (world < 2) return 0;
    size_t n = mb << 20;
    char *s = ts_malloc(n), *r = ts_malloc(n);
    int ok = s && r, all_ok = 0;
    MPI_Allreduce(&ok, &all_ok, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD);
    double best = 0;
    if (all_ok) {
        memset(s, 3, n);
        int to = (rank + 1) % world, from = (rank + world - 1) % world;
        for (int rep = 0; rep < 4; rep++) {
            MPI_Barrier(MPI_COMM_WORLD);
            double t0 = MPI_Wtime();
            MPI_Sendrecv(s, (int)n, MPI_BYTE, to, 7, r, (int)n, MPI_BYTE, from, 7, MPI_COMM_WORLD,
                         MPI_STATUS_IGNORE);
            double dt = MPI_Wtime() - t0;
            if (rep && dt > 0 && (double)n / dt > best) best = (double)n / dt; /* rep 0: warm-up */
        }
    }
    ts_free(s);
    ts_free(r);
    return best / 1e9;
}
#endif

#ifdef TS_HAVE_NCCL
/* NCCL all-reduce bus bandwidth and ring send/recv between the GPUs (every rank has one). */
static void nccl_bench(size_t mb, int rank, int world, double *ar_gbps, double *sr_gbps) {
    *ar_gbps = *sr_gbps = 0;
    ncclUniqueId id;
    if (rank == 0 && ncclGetUniqueId(&id) != ncclSuccess) memset(&id, 0, sizeof id);
    MPI_Bcast(&id, sizeof id, MPI_BYTE, 0, MPI_COMM_WORLD);
    ncclComm_t comm;
    if (ncclCommInitRank(&comm, world, id, rank) != ncclSuccess) return;
    size_t n = (mb << 20) / sizeof(float);
    float *x = NULL, *y = NULL;
    cudaStream_t st;
    cudaStreamCreate(&st);
    if (cudaMalloc((void **)&x, n * sizeof(float)) == cudaSuccess &&
        cudaMalloc((void **)&y, n * sizeof(float)) == cudaSuccess) {
        ncclAllReduce(x, y, n, ncclFloat, ncclSum, comm, st); /* warm-up */
        cudaStreamSynchronize(st);
        for (int rep = 0; rep < 5; rep++) {
            MPI_Barrier(MPI_COMM_WORLD);
            double t0 = MPI_Wtime();
            ncclAllReduce(x, y, n, ncclFloat, ncclSum, comm, st);
            cudaStreamSynchronize(st);
            double dt = MPI_Wtime() - t0, slowest = 0;
            MPI_Allreduce(&dt, &slowest, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
            double bw = (double)(n * sizeof(float)) / slowest * 2.0 * (world - 1) / world;
            if (slowest > 0 && bw > *ar_gbps) *ar_gbps = bw;
        }
        int to = (rank + 1) % world, from = (rank + world - 1) % world;
        for (int rep = 0; rep < 5; rep++) {
            MPI_Barrier(MPI_COMM_WORLD);
            double t0 = MPI_Wtime();
            ncclGroupStart();
            ncclSend(x, n, ncclFloat, to, comm, st);
            ncclRecv(y, n, ncclFloat, from, comm, st);
            ncclGroupEnd();
            cudaStreamSynchronize(st);
            double dt = MPI_Wtime() - t0;
            if (rep && dt > 0 && (double)(n * sizeof(float)) / dt > *sr_gbps)
                *sr_gbps = (double)(n * sizeof(float)) / dt;
        }
    }
    cudaFree(x);
    cudaFree(y);
    cudaStreamDestroy(st);
    ncclCommDestroy(comm);
    *ar_gbps /= 1e9;
    *sr_gbps /= 1e9;
}
#endif

static void cc_usage(FILE *f) {
    fprintf(f,
            "usage: mpirun -np N tessera cluster-check [-m MODEL | --size S [--type T]] [options]\n\n"
            "Every rank reports its host, device, memory and measured memory bandwidth; the\n"
            "ranks measure MPI (and with GPUs, NCCL) all-reduce and send/recv bandwidth; rank 0\n"
            "prints the report and, given a model, proposes a plan from the free memory.\n\n"
            "  -m, --model FILE     Gemma 3 GGUF to plan for (or --size 27b [--type q4_0])\n"
            "      --ctx N          context to plan for (default: the largest that fits)\n"
            "      --seqs N         sequences of that context (default 1)\n"
            "      --reserve SIZE   kept free on each device (default 1G)\n"
            "      --mb N           MiB per bandwidth transfer (default 64)\n"
            "      --json           one JSON object (rank 0)\n");
}

int ts_cmd_cluster_check(int argc, char **argv) {
    const char *model = NULL, *size = NULL, *type = NULL;
    int32_t n_ctx = 0, n_seq = 1;
    long mb = 64;
    uint64_t reserve = 1ull << 30;
    bool json = false;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            cc_usage(stdout);
            return 0;
        } else if (!strcmp(a, "--json")) {
            json = true;
            continue;
        }
        if (!v) {
            fprintf(stderr, "tessera cluster-check: unknown option or missing value: '%s'\n", a);
            cc_usage(stderr);
            return 2;
        }
        i++;
        if (!strcmp(a, "-m") || !strcmp(a, "--model")) model = v;
        else if (!strcmp(a, "--size")) size = v;
        else if (!strcmp(a, "--type")) type = v;
        else if (!strcmp(a, "--ctx")) n_ctx = atoi(v);
        else if (!strcmp(a, "--seqs")) n_seq = atoi(v);
        else if (!strcmp(a, "--mb")) mb = atol(v);
        else if (!strcmp(a, "--reserve")) {
            if (!parse_size(v, &reserve)) {
                fprintf(stderr, "tessera cluster-check: --reserve: bad size '%s'\n", v);
                return 2;
            }
        } else {
            fprintf(stderr, "tessera cluster-check: unknown option '%s'\n", a);
            cc_usage(stderr);
            return 2;
        }
    }
    if (mb < 1 || mb > 4096 || n_ctx < 0 || n_seq < 1) {
        cc_usage(stderr);
        return 2;
    }
    int rank = 0, world = 1;
    bool use_mpi = false; /* only when started by mpirun (like tessera run) */
#ifdef TS_HAVE_MPI
    use_mpi = ts_transport_mpi_launched();
    if (use_mpi) {
        int inited = 0;
        MPI_Initialized(&inited);
        if (!inited && MPI_Init(NULL, NULL) != MPI_SUCCESS) {
            fprintf(stderr, "tessera cluster-check: MPI_Init failed\n");
            return 1;
        }
        MPI_Comm_rank(MPI_COMM_WORLD, &rank);
        MPI_Comm_size(MPI_COMM_WORLD, &world);
    }
#endif
    if (world > MAX_DEV) {
        if (rank == 0) fprintf(stderr, "tessera cluster-check: at most %d ranks\n", MAX_DEV);
        return 2;
    }
    /* rank 0 reads the model; a bad model ends every rank with the same answer */
    model_shape m;
    int have_model = 0, mrc = 0;
    if (rank == 0 && (model || size)) {
        mrc = load_shape(model, size, type, &m, "cluster-check");
        have_model = mrc == 0;
    }
#ifdef TS_HAVE_MPI
    if (use_mpi) MPI_Bcast(&mrc, 1, MPI_INT, 0, MPI_COMM_WORLD);
#endif
    if (mrc) {
#ifdef TS_HAVE_MPI
        if (use_mpi) MPI_Finalize();
#endif
        return mrc;
    }

    rank_info me;
    memset(&me, 0, sizeof me);
    if (gethostname(me.host, sizeof me.host - 1)) snprintf(me.host, sizeof me.host, "?");
    cpu_model(me.device, sizeof me.device);
    meminfo(&me.mem_total, &me.mem_free);
    int local_rank = 0;
    const char *lr = getenv("OMPI_COMM_WORLD_LOCAL_RANK");
    if (lr) local_rank = atoi(lr);
    const char *ls = getenv("OMPI_COMM_WORLD_LOCAL_SIZE");
    me.ranks_on_host = ls ? atoi(ls) : 1;
    if (me.ranks_on_host < 1) me.ranks_on_host = 1;
    (void)local_rank;
    int gpu = -1;
#ifdef TS_HAVE_CUDART
    gpu = gpu_pick(local_rank);
    if (gpu >= 0) {
        struct cudaDeviceProp prop;
        size_t fr = 0, tot = 0;
        if (cudaGetDeviceProperties(&prop, gpu) == cudaSuccess)
            snprintf(me.device, sizeof me.device, "GPU %d: %.100s", gpu, prop.name);
        if (cudaMemGetInfo(&fr, &tot) == cudaSuccess) {
            me.mem_total = tot;
            me.mem_free = fr;
        }
        me.gpu = 1;
        me.copy_gbps = gpu_copy_gbps((size_t)mb);
    }
#endif
    if (gpu < 0) me.copy_gbps = memcpy_gbps((size_t)mb);

    double ar = 0, nccl_ar = 0;
    int all_gpu = me.gpu;
#ifdef TS_HAVE_MPI
    if (use_mpi) {
        ar = mpi_allreduce_gbps((size_t)mb, world);
        me.sendrecv_gbps = mpi_sendrecv_gbps((size_t)mb, rank, world);
        MPI_Allreduce(&me.gpu, &all_gpu, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD);
#ifdef TS_HAVE_NCCL
        if (all_gpu && world > 1)
            nccl_bench((size_t)mb, rank, world, &nccl_ar, &me.nccl_sendrecv_gbps);
#endif
    }
#endif
    rank_info *all = rank == 0 ? ts_calloc((size_t)world, sizeof *all) : NULL;
    int ok = rank != 0 || all != NULL;
    if (!use_mpi && all) all[0] = me;
#ifdef TS_HAVE_MPI
    if (use_mpi) {
        int all_ok = 0;
        MPI_Allreduce(&ok, &all_ok, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD);
        ok = all_ok;
        if (ok)
            MPI_Gather(&me, (int)sizeof me, MPI_BYTE, all, (int)sizeof me, MPI_BYTE, 0,
                       MPI_COMM_WORLD);
    }
#endif
    int rc = 0;
    if (!ok) {
        if (rank == 0) fprintf(stderr, "tessera cluster-check: out of memory\n");
        rc = 1;
    } else if (rank == 0) {
        /* budgets: a GPU's free memory; CPU ranks share their host's available memory */
        uint64_t budget[MAX_DEV];
        int32_t host[MAX_DEV];
        for (int r = 0; r < world; r++) {
            uint64_t f = all[r].gpu ? all[r].mem_free
                                    : all[r].mem_free / (uint64_t)all[r].ranks_on_host;
            budget[r] = f > reserve ? f - reserve : 0;
            host[r] = r > 0 && !strcmp(all[r].host, all[r - 1].host) ? host[r - 1] : r;
        }
        json_t *obj = json ? json_object() : NULL;
        if (obj) {
            json_t *a = json_array();
            for (int r = 0; r < world; r++) {
                json_t *o = json_pack("{s:i,s:s,s:s,s:b,s:I,s:I,s:f}", "rank", r, "host",
                                      all[r].host, "device", all[r].device, "gpu", all[r].gpu,
                                      "memory_total_bytes", (json_int_t)all[r].mem_total,
                                      "memory_free_bytes", (json_int_t)all[r].mem_free,
                                      "memory_bandwidth_gbps", all[r].copy_gbps);
                if (world > 1) {
                    json_object_set_new(o, "sendrecv_to", json_integer((r + 1) % world));
                    json_object_set_new(o, "mpi_sendrecv_gbps", json_real(all[r].sendrecv_gbps));
                    if (all_gpu)
                        json_object_set_new(o, "nccl_sendrecv_gbps",
                                            json_real(all[r].nccl_sendrecv_gbps));
                }
                json_array_append_new(a, o);
            }
            json_object_set_new(obj, "world", json_integer(world));
            json_object_set_new(obj, "ranks", a);
            json_object_set_new(obj, "transfer_bytes", json_integer((json_int_t)mb << 20));
            if (world > 1) json_object_set_new(obj, "mpi_allreduce_busbw_gbps", json_real(ar));
            if (all_gpu && world > 1)
                json_object_set_new(obj, "nccl_allreduce_busbw_gbps", json_real(nccl_ar));
        } else {
            printf("tessera cluster-check: %d rank%s\n", world, world > 1 ? "s" : "");
            printf("rank  host                 device                                       memory total / free   bandwidth\n");
            for (int r = 0; r < world; r++)
                printf("%4d  %-20.20s %-44.44s %7.1f / %6.1f GiB  %7.1f GB/s\n", r, all[r].host,
                       all[r].device, (double)all[r].mem_total / GiB,
                       (double)all[r].mem_free / GiB, all[r].copy_gbps);
            if (world > 1) {
                printf("MPI all-reduce (%ld MiB floats): bus bandwidth %.2f GB/s\n", mb, ar);
                for (int r = 0; r < world; r++)
                    printf("MPI send/recv rank %d (%s) -> rank %d (%s): %.2f GB/s%s\n", r,
                           all[r].host, (r + 1) % world, all[(r + 1) % world].host,
                           all[r].sendrecv_gbps, "");
                if (all_gpu) {
                    printf("NCCL all-reduce: bus bandwidth %.2f GB/s\n", nccl_ar);
                    for (int r = 0; r < world; r++)
                        printf("NCCL send/recv rank %d -> rank %d: %.2f GB/s\n", r, (r + 1) % world,
                               all[r].nccl_sendrecv_gbps);
                } else {
                    printf("NCCL: skipped (%s)\n",
#ifdef TS_HAVE_NCCL
                           "not every rank has a GPU"
#else
                           "built without CUDA/NCCL"
#endif
                    );
                }
            }
        }
        if (have_model) {
            static layout lys[TS_PLAN_AUTO_MAX];
            static char refusal[4096];
            int best;
            int n = all_layouts(&m, world, 0, 0, budget, 0, n_seq, host, lys, &best, refusal,
                                sizeof refusal);
            if (obj) {
                json_object_set_new(obj, "model", json_string(m.desc));
            } else {
                printf("\nplans for %s (budgets: free memory", m.desc);
                printf("%s minus %.2f GiB each):\n", all_gpu ? "" : " shared by the ranks of a host",
                       (double)reserve / GiB);
            }
            report_layouts(lys, n, best, obj);
            if (best >= 0) report_plan(&m, world, &lys[best], budget, n_ctx, n_seq, obj);
            else if (!obj) printf("no plan fits these ranks: %s\n", refusal);
            if (best < 0) rc = 1;
        }
        if (obj) {
            char *s = json_dumps(obj, JSON_COMPACT);
            if (s) printf("%s\n", s);
            free(s);
            json_decref(obj);
        }
        fflush(stdout);
    }
    ts_free(all);
#ifdef TS_HAVE_MPI
    if (use_mpi) {
        MPI_Bcast(&rc, 1, MPI_INT, 0, MPI_COMM_WORLD);
        MPI_Finalize();
    }
#endif
    return rc;
}
