/* cmd_bench.c: `tessera bench`: prompt processing and generation speed with the
 * definitions of llama.cpp's llama-bench:
 *   ppP  - one step of P prompt tokens from an empty context: P / time;
 *   tgN  - N tokens generated one at a time from an empty context: N / time;
 *   with --streams S > 1 also: S sequences each with a P-token prompt (prefill not timed;
 *          --stream-prompt P2 gives them P2 tokens instead), then N decode steps of S
 *          tokens each: S * N / time (aggregate decode).
 * --ctx C sizes the KV cache for C positions per sequence (default P + N + 1). --greedy
 * steps with ts_engine_step_greedy (the token ids, not the logits, come back: what a
 * greedy server does; distributed, it enables pipeline micro-batches, --micro-batches).
 * Token ids are random (seeded) in [0, vocab). Each test runs --reps times (after one
 * warm-up) and the median is reported.
 *
 * Under mpirun (--tp / --pp, docs/distributed.md) rank 0 drives and reports; the others
 * serve. Per test it also reports rank 0's communication per token: operations, bytes,
 * and with TESSERA_COMM_PROFILE=1 on NCCL the device time of the all-reduces and of all
 * operations (summed over the timed reps, the warm-up excluded, per token).
 */
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "alloc.h"
#include "commands.h"
#include "dist.h"
#include "engine.h"

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int cmp_d(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static void usage(FILE *f) {
    fprintf(f, "usage: tessera bench -m MODEL [-p 512] [-n 128] [--streams S] [--threads N]\n"
               "                     [--reps R] [--backend cpu|cuda] [--json]\n"
               "                     [--stream-prompt P2] [--ctx C] [--greedy]\n"
               "                     [--micro-batches M]\n"
               "                     [--tp T|auto] [--pp P|auto] [--gpu-mem-limit BYTES]\n"
               "                     (--tp / --pp under mpirun; auto: chosen from every\n"
               "                     rank's free memory, --gpu-mem-limit capping each rank's)\n\n"
               "Prefill (ppP) and decode (tgN) tokens/s with llama-bench's definitions; with\n"
               "--streams S also aggregate decode of S sequences with P-token prompts.\n");
}

static int parse_int(const char *flag, const char *v, long lo, long hi, long *out) {
    char *end;
    errno = 0;
    long x = strtol(v, &end, 10);
    if (errno || *end || end == v || x < lo || x > hi) {
        fprintf(stderr, "tessera bench: %s expects an integer in [%ld, %ld], got '%s'\n", flag,
                lo, hi, v);
        return -1;
    }
    *out = x;
    return 0;
}

/* Adds the communication since *s0 (rank 0's counters) to *acc over `tokens` tokens. */
static void comm_add(const ts_transport *tr, const ts_transport_stats *s0, ts_transport_stats *acc,
                     double *acc_tok, double tokens) {
    if (!tr) return;
    const ts_transport_stats *s1 = &tr->stats;
    acc->n_ops += s1->n_ops - s0->n_ops;
    acc->n_allreduce += s1->n_allreduce - s0->n_allreduce;
    acc->bytes += s1->bytes - s0->bytes;
    acc->wait_s += s1->wait_s - s0->wait_s;
    acc->device_s += s1->device_s - s0->device_s;
    acc->allreduce_s += s1->allreduce_s - s0->allreduce_s;
    *acc_tok += tokens;
}

/* One step: on a single CUDA rank only the argmax ids come back (GPU sampling; off with
 * TESSERA_GPU_SAMPLING=0); with --greedy the ids of the flagged tokens (distributed: only
 * ids cross to rank 0); else the full logits. */
static bool g_top;
static int32_t *g_top_ids;
static float *g_top_vals;
static ts_status bstep(ts_engine *e, const ts_batch *b, float *logits, bool greedy, int32_t *ids) {
    if (g_top) return ts_engine_step_top(e, b, 1, g_top_ids, g_top_vals);
    return greedy ? ts_engine_step_greedy(e, b, ids) : ts_engine_step(e, b, logits);
}

static uint64_t g_rng = 0x9E3779B97F4A7C15ull;
static uint32_t rnd(void) {
    g_rng ^= g_rng << 13;
    g_rng ^= g_rng >> 7;
    g_rng ^= g_rng << 17;
    return (uint32_t)(g_rng >> 11);
}

int ts_cmd_bench(int argc, char **argv) {
    const char *model = NULL;
    long p = 512, n = 128, streams = 1, threads = 0, reps = 3, sp = -1, ctx = 0;
    int32_t tp = 0, ppar = 0;
    uint64_t mem_limit = 0;
    long micro = 0;
    bool greedy = false;
    bool json = false;
    const char *backend = NULL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage(stdout);
            return 0;
        }
        if (!strcmp(a, "--json")) {
            json = true;
            continue;
        }
        if (!strcmp(a, "--greedy")) {
            greedy = true;
            continue;
        }
        if (i + 1 >= argc || a[0] != '-') {
            fprintf(stderr, "tessera bench: %s '%s'\n", a[0] == '-' ? "missing value for" :
                    "unexpected argument", a);
            return 2;
        }
        const char *v = argv[++i];
        int bad = 0;
        if (!strcmp(a, "-m") || !strcmp(a, "--model")) model = v;
        else if (!strcmp(a, "-p")) bad = parse_int(a, v, 0, 65536, &p);
        else if (!strcmp(a, "-n")) bad = parse_int(a, v, 0, 65536, &n);
        else if (!strcmp(a, "--streams")) bad = parse_int(a, v, 1, 4096, &streams);
        else if (!strcmp(a, "--threads")) bad = parse_int(a, v, 1, 1024, &threads);
        else if (!strcmp(a, "--reps")) bad = parse_int(a, v, 1, 1000, &reps);
        else if (!strcmp(a, "--tp")) bad = ts_cmd_parse_par("tessera bench", a, v, 1, &tp);
        else if (!strcmp(a, "--stream-prompt")) bad = parse_int(a, v, 0, 65536, &sp);
        else if (!strcmp(a, "--ctx")) bad = parse_int(a, v, 1, 1 << 24, &ctx);
        else if (!strcmp(a, "--micro-batches")) bad = parse_int(a, v, 0, 4096, &micro);
        else if (!strcmp(a, "--pp")) bad = ts_cmd_parse_par("tessera bench", a, v, 0, &ppar);
        else if (!strcmp(a, "--gpu-mem-limit"))
            bad = ts_cmd_parse_bytes("tessera bench", a, v, &mem_limit);
        else if (!strcmp(a, "--backend")) {
            if (strcmp(v, "cpu") && strcmp(v, "cuda")) {
                fprintf(stderr, "tessera bench: --backend expects cpu or cuda, got '%s'\n", v);
                return 2;
            }
            backend = v;
        }
        else {
            fprintf(stderr, "tessera bench: unknown option '%s'\n", a);
            return 2;
        }
        if (bad) return 2;
    }
    if (!model) {
        fprintf(stderr, "tessera bench: -m MODEL is required\n");
        return 2;
    }
    if (p + n < 1) {
        fprintf(stderr, "tessera bench: nothing to do (-p 0 -n 0)\n");
        return 2;
    }
    if (sp < 0) sp = p;
    long batch = p > streams ? p : streams;
    if (sp > batch) batch = sp;
    long need_ctx = (p > sp ? p : sp) + n + 1;
    if (ctx && ctx < need_ctx) {
        fprintf(stderr, "tessera bench: --ctx %ld is less than the %ld positions the tests use\n",
                ctx, need_ctx);
        return 2;
    }
    if (batch < 1) batch = 1;
    ts_transport *tr = NULL;
    static ts_cmd_dist dd; /* budgets and report: large */
    {
        ts_cmd_dist_params dp = {.tp = tp, .pp = ppar, .backend = backend, .model = model,
                                 .mem_limit = mem_limit,
                                 .n_ctx = (int32_t)(ctx ? ctx : need_ctx),
                                 .n_seq = (int32_t)streams, .n_batch = (int32_t)batch,
                                 .n_chunk = (int32_t)batch};
        int dr = ts_cmd_dist_open("tessera bench", &dp, &dd);
        if (dr) return dr;
        tr = dd.tr;
    }
    ts_engine_params ep = {
        .model_path = model, .n_threads = (int)threads, .backend = backend,
        .n_ctx = (int32_t)(ctx ? ctx : need_ctx),
        .n_seq_max = (int32_t)streams, .n_batch = (int32_t)batch,
        .n_chunk = (int32_t)(batch > 0 ? batch : 1),
        .transport = tr, .tp = dd.tp, .pp = dd.pp, .rank_mem = dd.rank_mem,
        .device = tr && tr->device >= 0 ? tr->device : 0, .mem_limit = mem_limit,
        .micro_batches = (int32_t)micro,
    };
    ts_engine *e = NULL;
    ts_status cst = ts_engine_create(&ep, &e);
    if (cst != TS_OK) {
        if (!tr || (tr->rank == 0 && cst == TS_INVAL))
            fprintf(stderr, "tessera bench: %s\n", ts_last_error());
        else if (cst != TS_INVAL)
            fprintf(stderr, "tessera bench: rank %d: %s\n", tr->rank, ts_last_error());
        if (tr && cst != TS_INVAL) tr->ops->abort(tr, 1);
        ts_transport_close(tr);
        return 1;
    }
    if (tr && tr->rank != 0) {
        int sr = 0;
        if (ts_engine_serve(e) != TS_OK) {
            fprintf(stderr, "tessera bench: %s\n", ts_last_error());
            tr->ops->abort(tr, 1);
            sr = 1;
        }
        ts_engine_destroy(e);
        ts_transport_close(tr);
        return sr;
    }
    if (tr) fprintf(stderr, "%s%s", dd.report, ts_engine_plan(e)->desc);
    {
        ts_engine_info in;
        ts_engine_get_info(e, &in);
        fprintf(stderr, "engine (rank 0): %s; weights %.1f MiB, KV cache %.1f MiB for %d "
                "positions x %d sequences, step buffers %.1f MiB\n", in.backend,
                (double)in.weight_bytes / 1048576.0, (double)in.kv_bytes / 1048576.0, in.n_ctx,
                in.n_seq_max, (double)in.activation_bytes / 1048576.0);
    }
    const ts_config *c = ts_engine_config(e);
    ts_engine_info info;
    ts_engine_get_info(e, &info);
    int32_t *tok = ts_malloc(sizeof(int32_t) * (size_t)batch);
    int32_t *pos = ts_malloc(sizeof(int32_t) * (size_t)batch);
    int32_t *seq = ts_malloc(sizeof(int32_t) * (size_t)batch);
    uint8_t *want = ts_malloc((size_t)batch);
    int32_t *ids = ts_malloc(sizeof(int32_t) * (size_t)batch);
    float *logits = ts_malloc(sizeof(float) * c->n_vocab * (size_t)streams);
    double *t = ts_malloc(sizeof(double) * (size_t)(reps + 1));
    const char *gs = getenv("TESSERA_GPU_SAMPLING");
    g_top = !(gs && !strcmp(gs, "0")) && !strcmp(info.backend, "cuda") &&
            ts_engine_can_step_top(e);
    g_top_ids = ts_malloc(sizeof(int32_t) * (size_t)(streams > 1 ? streams : 1));
    g_top_vals = ts_malloc(sizeof(float) * (size_t)(streams > 1 ? streams : 1));
    int ret = 1;
    if (!tok || !pos || !seq || !want || !ids || !logits || !t || !g_top_ids || !g_top_vals) {
        fprintf(stderr, "tessera bench: out of memory\n");
        goto out;
    }
    double pp = 0, tg = 0, agg = 0;
    ts_transport_stats acc[3] = {{0}}, s0 = {0};
    double acc_tok[3] = {0, 0, 0};
    /* ppP */
    if (p > 0) {
        for (long r = 0; r <= reps; r++) {
            ts_engine_seq_release(e, 0);
            if (ts_engine_seq_reserve(e, 0, (int32_t)p) != TS_OK) goto fail;
            for (long i = 0; i < p; i++) {
                tok[i] = (int32_t)(rnd() % c->n_vocab);
                pos[i] = (int32_t)i;
                seq[i] = 0;
            }
            ts_batch b = {.n_tokens = (int32_t)p, .token = tok, .pos = pos, .seq = seq};
            if (tr) s0 = tr->stats;
            double t0 = now_s();
            if (bstep(e, &b, logits, greedy, ids) != TS_OK) goto fail;
            t[r] = now_s() - t0;
            if (r > 0) comm_add(tr, &s0, &acc[0], &acc_tok[0], (double)p);
        }
        qsort(t + 1, (size_t)reps, sizeof(double), cmp_d); /* t[0] is the warm-up */
        pp = (double)p / t[1 + reps / 2];
    }
    /* tgN */
    if (n > 0) {
        for (long r = 0; r <= reps; r++) {
            ts_engine_seq_release(e, 0);
            if (ts_engine_seq_reserve(e, 0, (int32_t)n) != TS_OK) goto fail;
            if (tr) s0 = tr->stats;
            double t0 = now_s();
            for (long i = 0; i < n; i++) {
                tok[0] = (int32_t)(rnd() % c->n_vocab);
                pos[0] = (int32_t)i;
                seq[0] = 0;
                ts_batch b = {.n_tokens = 1, .token = tok, .pos = pos, .seq = seq};
                if (bstep(e, &b, logits, greedy, ids) != TS_OK) goto fail;
            }
            t[r] = now_s() - t0;
            if (r > 0) comm_add(tr, &s0, &acc[1], &acc_tok[1], (double)n);
        }
        qsort(t + 1, (size_t)reps, sizeof(double), cmp_d);
        tg = (double)n / t[1 + reps / 2];
    }
    /* S streams: prefill each (not timed), then n steps of S tokens */
    if (streams > 1 && n > 0) {
        for (long r = 0; r <= reps; r++) {
            for (long s = 0; s < streams; s++) {
                ts_engine_seq_release(e, (int32_t)s);
                if (ts_engine_seq_reserve(e, (int32_t)s, (int32_t)(sp + n)) != TS_OK) goto fail;
                if (sp > 0) {
                    for (long i = 0; i < sp; i++) {
                        tok[i] = (int32_t)(rnd() % c->n_vocab);
                        pos[i] = (int32_t)i;
                        seq[i] = (int32_t)s;
                    }
                    ts_batch b = {.n_tokens = (int32_t)sp, .token = tok, .pos = pos, .seq = seq};
                    if (bstep(e, &b, logits, greedy, ids) != TS_OK) goto fail;
                }
            }
            if (tr) s0 = tr->stats;
            double t0 = now_s();
            for (long i = 0; i < n; i++) {
                for (long s = 0; s < streams; s++) {
                    tok[s] = (int32_t)(rnd() % c->n_vocab);
                    pos[s] = (int32_t)(sp + i);
                    seq[s] = (int32_t)s;
                    want[s] = 1;
                }
                ts_batch b = {.n_tokens = (int32_t)streams, .token = tok, .pos = pos, .seq = seq,
                              .want_logits = want};
                if (bstep(e, &b, logits, greedy, ids) != TS_OK) goto fail;
            }
            t[r] = now_s() - t0;
            if (r > 0) comm_add(tr, &s0, &acc[2], &acc_tok[2], (double)(streams * n));
        }
        qsort(t + 1, (size_t)reps, sizeof(double), cmp_d);
        agg = (double)(streams * n) / t[1 + reps / 2];
    }
    char comm[3][320] = {"", "", ""};
    for (int k = 0; tr && k < 3; k++) {
        const ts_transport_stats *a = &acc[k];
        const double tk = acc_tok[k];
        if (tk <= 0) continue;
        snprintf(comm[k], sizeof comm[k],
                 "%.1f ops/token (%.1f all-reduces), %.1f KiB/token, rank-0 host wait %.3f "
                 "ms/token, device comm %.3f ms/token (all-reduce %.3f)%s",
                 (double)a->n_ops / tk, (double)a->n_allreduce / tk,
                 (double)a->bytes / tk / 1024.0, a->wait_s * 1e3 / tk, a->device_s * 1e3 / tk,
                 a->allreduce_s * 1e3 / tk,
                 tr->device_buffers && a->device_s == 0 ? " (device times: set "
                 "TESSERA_COMM_PROFILE=1)" : "");
    }
    if (json) {
        json_t *o = json_object();
        json_object_set_new(o, "model", json_string(model));
        json_object_set_new(o, "backend", json_string(info.backend));
        json_object_set_new(o, "threads", json_integer(threads));
        if (p > 0) json_object_set_new(o, "pp_tok_s", json_real(pp));
        if (n > 0) json_object_set_new(o, "tg_tok_s", json_real(tg));
        if (streams > 1 && n > 0) json_object_set_new(o, "streams_tok_s", json_real(agg));
        json_object_set_new(o, "p", json_integer(p));
        json_object_set_new(o, "n", json_integer(n));
        json_object_set_new(o, "streams", json_integer(streams));
        json_object_set_new(o, "stream_prompt", json_integer(sp));
        json_object_set_new(o, "n_ctx", json_integer(info.n_ctx));
        json_object_set_new(o, "greedy", json_boolean(greedy));
        if (tr) {
            json_object_set_new(o, "tp", json_integer(tr->tp));
            json_object_set_new(o, "pp", json_integer(tr->pp));
            json_object_set_new(o, "transport", json_string(tr->ops->name));
            json_object_set_new(o, "comm_pp", json_string(comm[0]));
            json_object_set_new(o, "comm_tg", json_string(comm[1]));
            json_object_set_new(o, "comm_streams", json_string(comm[2]));
        }
        json_object_set_new(o, "gpu_sampling", json_boolean(g_top));
        if (info.device_total_bytes > 0) {
            ts_engine_get_info(e, &info); /* after the runs: the peak includes them */
            json_object_set_new(o, "device_used_bytes", json_integer((json_int_t)info.device_used_bytes));
            json_object_set_new(o, "device_used_at_create",
                                json_integer((json_int_t)info.device_used_at_create));
            json_object_set_new(o, "backend_alloc_peak",
                                json_integer((json_int_t)info.backend_alloc_peak));
        }
        json_dumpf(o, stdout, JSON_COMPACT);
        putchar('\n');
        json_decref(o);
    } else {
        printf("| model | size | params | backend | threads | test | t/s |\n");
        printf("|---|---|---|---|---|---|---|\n");
        char sz[32];
        snprintf(sz, sizeof sz, "%.2f MiB", (double)info.weight_bytes / (1024.0 * 1024.0));
        char desc[160], thr[16];
        if (threads) snprintf(thr, sizeof thr, "%ld", threads);
        else snprintf(thr, sizeof thr, "all");
        char be[64];
        if (tr) snprintf(be, sizeof be, "%s tp%d pp%d %s", info.backend, tr->tp, tr->pp,
                         tr->ops->name);
        else snprintf(be, sizeof be, "%s", info.backend);
        snprintf(desc, sizeof desc, "gemma3 %s | %s | %.2f M | %s | %s", ts_config_size_label(c),
                 sz, (double)ts_config_n_params(c) / 1e6, be, thr);
        if (p > 0) printf("| %s | pp%ld | %.2f |\n", desc, p, pp);
        if (n > 0) printf("| %s | tg%ld | %.2f |\n", desc, n, tg);
        if (streams > 1 && n > 0)
            printf("| %s | %ld streams, pp%ld+tg%ld | %.2f |\n", desc, streams, sp, n, agg);
        const char *tn[3] = {"pp", "tg", "streams"};
        for (int k = 0; k < 3; k++)
            if (comm[k][0]) printf("comm %s: %s\n", tn[k], comm[k]);
        if (info.device_total_bytes > 0) {
            ts_engine_get_info(e, &info);
            printf("\ndevice memory: %.1f MiB of %.1f MiB used (%.1f MiB before loading); "
                   "backend allocations peak %.1f MiB; %s\n",
                   (double)info.device_used_bytes / 1048576.0,
                   (double)info.device_total_bytes / 1048576.0,
                   (double)info.device_used_at_create / 1048576.0,
                   (double)info.backend_alloc_peak / 1048576.0,
                   g_top ? "argmax on the device (only token ids copied back)"
                         : "full logits copied back");
        }
    }
    ret = 0;
    goto out;
fail:
    fprintf(stderr, "tessera bench: %s\n", ts_last_error());
    if (tr) tr->ops->abort(tr, 1); /* the other ranks may wait on us */
out:
    ts_free(tok);
    ts_free(pos);
    ts_free(seq);
    ts_free(want);
    ts_free(ids);
    ts_free(logits);
    ts_free(t);
    ts_free(g_top_ids);
    ts_free(g_top_vals);
    ts_engine_destroy(e);
    ts_transport_close(tr);
    return ret;
}
