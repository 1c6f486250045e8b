/* test_parallel.c: the distributed engine (TP / PP over MPI, CPU ranks) against the
 * single-rank engine. Plain C (no cmocka): run under mpirun.
 *
 *   mpirun -np N test_parallel --tp T --pp P [FIXTURE_DIR]
 *
 * For each HF fixture model (tests/fixtures/hf) and the real 270M when TESSERA_MODEL_270M
 * is set: rank 0 runs a script on the single-rank engine (reference kernels): each prompt
 * in one step with logits everywhere, 8 greedy decode steps, and the three "batch" prompts
 * together in one 3-sequence step; then all ranks run the same script on the distributed
 * engine (reference kernels too: TP changes the summation order only), and every prompt
 * and the batch once more through ts_engine_step_greedy (only ids to rank 0; with pp > 1
 * in pipeline micro-batches: one per stage, or --micro-batches N). Checks: logits
 * within 1e-4 (max|a-b| / max|ref|) and identical greedy tokens. Where the plan must
 * refuse (tp not dividing the KV heads, more stages than layers) it checks the refusal and
 * its message instead. Rank 0 prints "N passed, N failed"; exit 1 on a failure.
 *
 * GPU ranks (scripts/gpu-check-dist.sh): `--backend cuda` runs both engines on the CUDA
 * backend (the single-rank one on rank 0's GPU; the distributed one over the NCCL
 * transport when built with it, each rank on GPU local rank % devices); `--models A:B`
 * adds GGUF files (e.g. tessera mkmodel output) run with fixed prompts.
 */
#include <jansson.h>
#include <math.h>
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "config.h"
#include "engine.h"
#include "fixture_util.h"
#include "gguf.h"
#include "transport.h"

#define TOL 1e-4
#define N_GREEDY 8
#define MAX_CASES 8

static int g_pass, g_fail, g_rank;
static const char *g_backend; /* NULL: cpu */
static int32_t g_micro;       /* --micro-batches (0: auto) */
static int g_device;

static void check(bool ok, const char *what) {
    if (g_rank != 0) return;
    if (ok) {
        g_pass++;
        printf("ok: %s\n", what);
    } else {
        g_fail++;
        printf("FAIL: %s\n", what);
    }
    fflush(stdout);
}

typedef struct {
    char name[32];
    int32_t n_tok;
    int32_t tok[256];
} pcase;

/* What a script run produced (rank 0). */
typedef struct {
    float *logits;
    size_t n, cap;
    int32_t ids[MAX_CASES * N_GREEDY];
    int32_t n_ids;
    /* ts_engine_step_greedy on each prompt (every position flagged): the ids, and how many
     * differ from the argmax of the same run's logits */
    int32_t gids[MAX_CASES * 256 + 256];
    int32_t n_gids, gid_mismatch;
    bool ok;
} result;

static void push(result *r, const float *x, size_t n) {
    if (r->n + n > r->cap) {
        size_t cap = r->cap ? r->cap : 1 << 16;
        while (cap < r->n + n) cap *= 2;
        r->logits = realloc(r->logits, cap * sizeof(float));
        r->cap = cap;
    }
    memcpy(r->logits + r->n, x, n * sizeof(float));
    r->n += n;
}

static int32_t argmax(const float *x, int32_t n) {
    int32_t m = 0;
    for (int32_t i = 1; i < n; i++)
        if (x[i] > x[m]) m = i;
    return m;
}

/* The script (rank 0 only drives; logits buffer (256 * V)). */
static void run_script(ts_engine *e, const pcase *cs, int n_cases, int32_t V, result *r) {
    float *lg = malloc(sizeof(float) * 256 * (size_t)V);
    int32_t pos[256], seq[256], tok[256];
    uint8_t want[256];
    r->ok = lg != NULL;
    for (int ci = 0; r->ok && ci < n_cases; ci++) {
        const pcase *c = &cs[ci];
        ts_engine_seq_release(e, 0);
        if (ts_engine_seq_reserve(e, 0, c->n_tok + N_GREEDY) != TS_OK) {
            r->ok = false;
            break;
        }
        for (int32_t i = 0; i < c->n_tok; i++) {
            pos[i] = i;
            seq[i] = 0;
            want[i] = 1;
        }
        ts_batch b = {.n_tokens = c->n_tok, .token = c->tok, .pos = pos, .seq = seq,
                      .want_logits = want};
        /* greedy ids first, on positions the previous case's prompt (or nothing) wrote:
         * micro-batches must see each other's KV; then the logits recompute everything */
        int32_t gi[256];
        if (ts_engine_step_greedy(e, &b, gi) != TS_OK) {
            printf("greedy step: %s\n", ts_last_error());
            r->ok = false;
            break;
        }
        if (ts_engine_step(e, &b, lg) != TS_OK) {
            printf("step: %s\n", ts_last_error());
            r->ok = false;
            break;
        }
        push(r, lg, (size_t)c->n_tok * V);
        for (int32_t k = 0; k < c->n_tok; k++) {
            r->gids[r->n_gids++] = gi[k];
            if (gi[k] != argmax(lg + (size_t)k * V, V)) r->gid_mismatch++;
        }
        int32_t next = argmax(lg + (size_t)(c->n_tok - 1) * V, V), cur = c->n_tok;
        for (int g = 0; g < N_GREEDY; g++) {
            r->ids[r->n_ids++] = next;
            if (g == N_GREEDY - 1) break;
            tok[0] = next;
            pos[0] = cur++;
            ts_batch d = {.n_tokens = 1, .token = tok, .pos = pos, .seq = seq};
            if (ts_engine_step(e, &d, lg) != TS_OK) {
                printf("decode: %s\n", ts_last_error());
                r->ok = false;
                break;
            }
            push(r, lg, (size_t)V);
            next = argmax(lg, V);
        }
    }
    /* the batch prompts (or the first three cases) together in one step */
    if (r->ok && n_cases >= 3) {
        int32_t n = 0;
        for (int s = 0; s < 3; s++) {
            ts_engine_seq_release(e, s);
            if (ts_engine_seq_reserve(e, s, cs[s].n_tok) != TS_OK) r->ok = false;
        }
        for (int s = 0; s < 3 && r->ok; s++)
            for (int32_t i = 0; i < cs[s].n_tok && n < 256; i++) {
                tok[n] = cs[s].tok[i];
                pos[n] = i;
                seq[n] = s;
                want[n] = (uint8_t)(i % 2 == 0 || i == cs[s].n_tok - 1);
                n++;
            }
        int32_t nw = 0;
        for (int32_t i = 0; i < n; i++) nw += want[i];
        ts_batch b = {.n_tokens = n, .token = tok, .pos = pos, .seq = seq, .want_logits = want};
        int32_t gi[256];
        bool gok = r->ok && ts_engine_step_greedy(e, &b, gi) == TS_OK;
        if (r->ok && ts_engine_step(e, &b, lg) == TS_OK) push(r, lg, (size_t)nw * V);
        else r->ok = false;
        if (r->ok && gok) {
            for (int32_t k = 0; k < nw; k++) {
                r->gids[r->n_gids++] = gi[k];
                if (gi[k] != argmax(lg + (size_t)k * V, V)) r->gid_mismatch++;
            }
        } else {
            r->ok = false;
        }
        for (int s = 0; s < 3; s++) ts_engine_seq_release(e, s);
    }
    free(lg);
}

static int load_cases(const char *json_path, pcase *cs) {
    json_error_t jerr;
    json_t *j = json_load_file(json_path, 0, &jerr);
    if (!j) return -1;
    json_t *cases = json_object_get(j, "cases");
    int n = 0;
    /* batch cases first (the 3-sequence step uses cases 0..2), then the others */
    for (int pass = 0; pass < 2; pass++)
        for (size_t i = 0; i < json_array_size(cases) && n < MAX_CASES; i++) {
            json_t *c = json_array_get(cases, i);
            const char *name = json_string_value(json_object_get(c, "name"));
            bool is_batch = name && !strncmp(name, "batch", 5);
            if (is_batch != (pass == 0)) continue;
            json_t *toks = json_object_get(c, "tokens");
            pcase *p = &cs[n++];
            snprintf(p->name, sizeof p->name, "%s", name ? name : "?");
            p->n_tok = (int32_t)json_array_size(toks);
            if (p->n_tok > 200) p->n_tok = 200;
            for (int32_t k = 0; k < p->n_tok; k++)
                p->tok[k] = (int32_t)json_integer_value(json_array_get(toks, (size_t)k));
        }
    json_decref(j);
    return n;
}

static void run_model(ts_transport *tr, const char *label, const char *gguf, const pcase *cs,
                      int n_cases, int32_t tp, int32_t pp) {
    char what[512];
    /* the expected refusal, from the config (every rank reads it) */
    ts_gguf *g = NULL;
    ts_config cfg;
    if (ts_gguf_open(gguf, &g) != TS_OK || ts_config_from_gguf(g, &cfg) != TS_OK) {
        snprintf(what, sizeof what, "%s: cannot read %s", label, gguf);
        check(false, what);
        ts_gguf_close(g);
        return;
    }
    ts_gguf_close(g);
    const char *refusal = NULL;
    if (cfg.n_head_kv % (uint32_t)tp) refusal = "does not divide the model's";
    else if ((uint32_t)pp > cfg.n_layer) refusal = "pipeline stages but the model has only";
    /* (the fixtures are F32: row-parallel splits at 32-element blocks) */
    else if (cfg.n_ff / 32 < (uint32_t)tp) refusal = "blocks of 32 elements, fewer than tp";
    const int32_t V = (int32_t)cfg.n_vocab;

    result ref = {0}, dist = {0};
    if (tr->rank == 0 && !refusal) {
        ts_engine_params ep = {.model_path = gguf, .n_threads = 1, .reference = true,
                               .n_ctx = 256, .n_seq_max = 3, .n_batch = 256,
                               .backend = g_backend, .device = g_device};
        ts_engine *e = NULL;
        if (ts_engine_create(&ep, &e) != TS_OK) {
            snprintf(what, sizeof what, "%s: single-rank engine: %s", label, ts_last_error());
            check(false, what);
        } else {
            run_script(e, cs, n_cases, V, &ref);
            ts_engine_destroy(e);
        }
    }
    ts_engine_params dp = {.model_path = gguf, .n_threads = 1, .reference = true,
                           .n_ctx = 256, .n_seq_max = 3, .n_batch = 256,
                           .transport = tr, .tp = tp, .pp = pp, .micro_batches = g_micro,
                           .backend = g_backend, .device = g_device};
    ts_engine *e = NULL;
    ts_status rc = ts_engine_create(&dp, &e);
    if (refusal) {
        snprintf(what, sizeof what, "%s: tp %d x pp %d refused: \"%s\"", label, tp, pp,
                 rc == TS_OK ? "(accepted)" : ts_last_error());
        check(rc == TS_INVAL && strstr(ts_last_error(), refusal) != NULL, what);
        ts_engine_destroy(e);
        return;
    }
    if (rc != TS_OK) {
        snprintf(what, sizeof what, "%s: distributed engine (rank %d): %s", label, tr->rank,
                 ts_last_error());
        fprintf(stderr, "%s\n", what);
        check(false, what);
        tr->ops->abort(tr, 1); /* the others would wait for us */
    }
    if (tr->rank == 0) {
        if (g_rank == 0) fputs(ts_engine_plan(e)->desc, stdout);
        run_script(e, cs, n_cases, V, &dist);
        ts_engine_destroy(e); /* releases the other ranks */
        snprintf(what, sizeof what, "%s: tp %d x pp %d: script ran", label, tp, pp);
        check(ref.ok && dist.ok, what);
        snprintf(what, sizeof what, "%s: tp %d x pp %d: %zu logits", label, tp, pp, dist.n);
        check(ref.n == dist.n && ref.n > 0, what);
        if (ref.n == dist.n && ref.n > 0) {
            double er = ts_fixture_rel_err(dist.logits, ref.logits, ref.n);
            snprintf(what, sizeof what, "%s: tp %d x pp %d: logits rel err %.3g (<= %g)", label,
                     tp, pp, er, TOL);
            check(er <= TOL, what);
        }
        bool same = ref.n_ids == dist.n_ids &&
                    !memcmp(ref.ids, dist.ids, sizeof(int32_t) * (size_t)ref.n_ids);
        snprintf(what, sizeof what, "%s: tp %d x pp %d: %d greedy tokens identical", label, tp,
                 pp, ref.n_ids);
        check(same, what);
        same = ref.n_gids == dist.n_gids && ref.n_gids > 0 &&
               !memcmp(ref.gids, dist.gids, sizeof(int32_t) * (size_t)ref.n_gids);
        snprintf(what, sizeof what, "%s: tp %d x pp %d: step_greedy ids (%d, only ids to rank 0) "
                 "identical to one rank's and to the logits' argmax (%d / %d mismatches)", label,
                 tp, pp, dist.n_gids, ref.gid_mismatch, dist.gid_mismatch);
        check(same && ref.gid_mismatch == 0 && dist.gid_mismatch == 0, what);
    } else {
        rc = ts_engine_serve(e);
        if (rc != TS_OK) {
            fprintf(stderr, "rank %d: %s: serve: %s\n", tr->rank, label, ts_last_error());
            tr->ops->abort(tr, 1);
        }
        ts_engine_destroy(e);
    }
    free(ref.logits);
    free(dist.logits);
}

int main(int argc, char **argv) {
    int32_t tp = 1, pp = 0;
    const char *dir = TS_TEST_DATA "/fixtures/hf";
    const char *models = NULL;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--tp") && i + 1 < argc) tp = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--pp") && i + 1 < argc) pp = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--backend") && i + 1 < argc) g_backend = argv[++i];
        else if (!strcmp(argv[i], "--models") && i + 1 < argc) models = argv[++i];
        else if (!strcmp(argv[i], "--micro-batches") && i + 1 < argc) g_micro = atoi(argv[++i]);
        else dir = argv[i];
    }
    ts_transport *tr = NULL;
    ts_status ost;
    const bool cuda = g_backend && !strcmp(g_backend, "cuda");
#ifdef TS_HAVE_NCCL
    if (cuda) ost = ts_transport_nccl_open(tp, -1, &tr);
    else
#endif
        ost = ts_transport_mpi_open(tp, &tr);
    if (ost != TS_OK) {
        fprintf(stderr, "test_parallel: %s\n", ts_last_error());
        return 1;
    }
    g_device = tr->device >= 0 ? tr->device : 0;
    if (tr->rank == 0)
        printf("transport %s%s, backend %s (rank 0 on device %d)\n", tr->ops->name,
               tr->device_buffers ? " (device buffers)" : "", cuda ? "cuda" : "cpu", g_device);
    g_rank = tr->rank;
    if (pp == 0) pp = tr->world / tp;
    if (tp * pp != tr->world) {
        if (g_rank == 0)
            fprintf(stderr, "test_parallel: tp %d x pp %d != %d ranks\n", tp, pp, tr->world);
        ts_transport_close(tr);
        return 2;
    }
    if (!getenv("TESSERA_COMM_TIMEOUT")) tr->timeout_s = 300; /* rank 0 runs the reference */

    const char *cfgs[] = {"gqa1", "gqa2", "gqa4_270m_like", "like27b", "tp4like"};
    for (size_t i = 0; i < sizeof cfgs / sizeof cfgs[0]; i++) {
        char jp[1024], gp[1024];
        snprintf(jp, sizeof jp, "%s/%s.json", dir, cfgs[i]);
        snprintf(gp, sizeof gp, "%s/%s.gguf", dir, cfgs[i]);
        pcase cs[MAX_CASES];
        int n = load_cases(jp, cs);
        if (n <= 0) {
            check(false, jp);
            continue;
        }
        run_model(tr, cfgs[i], gp, cs, n, tp, pp);
    }
    if (models && *models) {
        char list[4096];
        snprintf(list, sizeof list, "%s", models);
        for (char *save = NULL, *m = strtok_r(list, ":", &save); m; m = strtok_r(NULL, ":", &save)) {
            ts_gguf *g = NULL;
            ts_config mc;
            if (ts_gguf_open(m, &g) != TS_OK || ts_config_from_gguf(g, &mc) != TS_OK) {
                ts_gguf_close(g);
                check(false, m);
                continue;
            }
            ts_gguf_close(g);
            static const int32_t p0[] = {2, 818, 5279, 529, 7001, 563, 9079, 236761, 1437, 27};
            pcase cs[3];
            for (int k = 0; k < 3; k++) {
                snprintf(cs[k].name, sizeof cs[k].name, "p%d", k);
                cs[k].n_tok = 10 - 3 * k;
                for (int32_t i = 0; i < cs[k].n_tok; i++)
                    cs[k].tok[i] = (int32_t)((uint32_t)p0[i] % mc.n_vocab);
            }
            const char *base = strrchr(m, '/');
            run_model(tr, base ? base + 1 : m, m, cs, 3, tp, pp);
        }
    }
    const char *m270 = getenv("TESSERA_MODEL_270M");
    if (m270 && *m270) {
        static const int32_t p0[] = {2, 818, 5279, 529, 7001, 563, 9079, 236761}; /* fixed ids */
        pcase cs[3];
        for (int k = 0; k < 3; k++) {
            snprintf(cs[k].name, sizeof cs[k].name, "p%d", k);
            cs[k].n_tok = 8 - 2 * k;
            memcpy(cs[k].tok, p0, sizeof(int32_t) * (size_t)cs[k].n_tok);
        }
        run_model(tr, "gemma-3-270m", m270, cs, 3, tp, pp);
    } else if (g_rank == 0) {
        printf("(TESSERA_MODEL_270M not set: the real 270M is skipped)\n");
    }
    ts_transport_close(tr);
    if (g_rank == 0) {
        check(ts_alloc_bytes_in_use() == 0, "no leaked allocations on rank 0");
        printf("%d passed, %d failed\n", g_pass, g_fail);
    }
    return g_fail ? 1 : 0;
}
