/* cmd_safety.c: `tessera safety`: ShieldGemma 2 image safety scores, offline (CPU engine).
 *
 *   tessera safety -m MODEL.gguf --vision VISION [options] IMAGE...
 *   tessera safety --server HOST:PORT [--api-key KEY] [--policy NAME]...
 *                  [--policy-text TEXT]... [--custom-policy NAME=TEXT]... IMAGE...
 *       (the second form asks a tesserad's CheckSafety RPC; same output; policy texts
 *       travel in the request as ad-hoc policies)
 *       MODEL   the ShieldGemma 2 (Gemma 3 4B) language model as GGUF
 *       VISION  its vision tower + projector: an mmproj GGUF, or the Hugging Face checkpoint
 *               directory (ShieldGemma 2 ships as safetensors)
 *   Prints one JSON object per image and line: {"image": PATH, "scores": {policy: P(Yes)}}
 *   or {"image": PATH, "error": MESSAGE} for an image that cannot be read (the others are
 *   still scored; exit code 1 then).
 * Options: --policy NAME (repeatable; default: all three, or the server's policies),
 * --custom-policy NAME=TEXT (repeatable; locally it overrides a default of the same name),
 * --policy-text TEXT (the same named custom-1, custom-2, ...), --threads N, --reference,
 * --single-bos, --max-pixels N, --backend cpu|cuda (the encoder and the language model),
 * --bench N (a benchmark instead of scores: N timed rounds over the images, see
 * bench() below and docs/vision.md), and for test models without the marker / answer tokens in
 * their vocabulary --ids BOI,EOI,IMAGE,YES,NO.
 * Exit codes: 0 success, 1 failure, 2 usage error.
 */
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/alloc.h"
#include "commands.h"
#include "engine.h"
#include "image.h"
#include "shieldgemma.h"
#include "tokenizer.h"
#include "vision.h"
#ifdef TS_HAVE_RPC
#include "client.h"
#include "tessera/v1/inference.pb-c.h"
#endif

#define MAX_POLICIES 32

static void usage(FILE *f) {
    fprintf(f,
            "usage: tessera safety -m MODEL.gguf --vision VISION [options] IMAGE...\n\n"
            "Scores each image with ShieldGemma 2: P(violation) per policy, one JSON line per\n"
            "image.\n\n"
            "  --server HOST:PORT       ask a tesserad (CheckSafety) instead of running locally\n"
            "  --api-key KEY            API key for --server\n"
            "  -m, --model MODEL        the language model (GGUF)\n"
            "  --vision PATH            mmproj GGUF or Hugging Face checkpoint directory\n"
            "  --policy NAME            dangerous, sexual, violence or a custom name (repeatable;\n"
            "                           default: the three built-in policies)\n"
            "  --custom-policy NAME=TEXT  a policy text (repeatable; overrides a built-in name)\n"
            "  --policy-text TEXT       an ad-hoc policy named custom-1, custom-2, ... (repeatable;\n"
            "                           scored with or without --policy)\n"
            "  --threads N              CPU threads (default: all)\n"
            "  --reference              scalar reference kernels\n"
            "  --single-bos             one <bos> (HF's processor produces two)\n"
            "  --max-pixels N           refuse larger images (default 50000000)\n"
            "  --ids BOI,EOI,IMAGE,YES,NO  token ids for test vocabularies\n"
            "  --backend cpu|cuda       where the encoder and the language model run (default cpu)\n"
            "  --bench N                benchmark: score the images N times (after one warm-up\n"
            "                           round) and print images/s and per-image latency\n");
}

static int need(int i, int argc, const char *a) {
    if (i + 1 >= argc) {
        fprintf(stderr, "tessera safety: %s needs a value\n", a);
        return 0;
    }
    return 1;
}

static uint8_t *read_all(const char *path, size_t *len, char *err, size_t errn) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        snprintf(err, errn, "cannot open: %s", strerror(errno));
        return NULL;
    }
    uint8_t *buf = NULL;
    size_t n = 0, cap = 0;
    for (;;) {
        if (n == cap) {
            cap = cap ? 2 * cap : 65536;
            if (cap > ((size_t)256 << 20)) {
                snprintf(err, errn, "larger than 256 MiB");
                break;
            }
            uint8_t *nb = ts_realloc(buf, cap);
            if (!nb) {
                snprintf(err, errn, "out of memory");
                break;
            }
            buf = nb;
        }
        size_t got = fread(buf + n, 1, cap - n, f);
        n += got;
        if (got == 0) {
            if (ferror(f)) snprintf(err, errn, "read error");
            else {
                fclose(f);
                *len = n;
                return buf;
            }
            break;
        }
    }
    fclose(f);
    ts_free(buf);
    return NULL;
}

#ifdef TS_HAVE_RPC
/* --server: one CheckSafety call per image, so that a bad image gets its own error line. */
static int remote(const char *server, const char *api_key, const char *const *names, int n_pol,
                  const char *const *cname, const char *const *ctext, int n_custom, int first,
                  int argc, char **argv) {
    ts_rpc_client *cl = ts_rpc_client_open_ex(server, NULL, api_key);
    if (!cl) {
        fprintf(stderr, "tessera safety: cannot connect to %s\n", server);
        return 1;
    }
    int rc_exit = 0;
    for (int i = first; i < argc; i++) {
        json_t *o = json_object();
        json_object_set_new(o, "image", json_string(argv[i]));
        char err[256] = "";
        size_t len = 0;
        uint8_t *buf = read_all(argv[i], &len, err, sizeof err);
        if (!buf) {
            json_object_set_new(o, "error", json_string(err));
        } else {
            Tessera__V1__Image img = TESSERA__V1__IMAGE__INIT;
            img.data.data = buf;
            img.data.len = len;
            Tessera__V1__ContentPart part = TESSERA__V1__CONTENT_PART__INIT;
            part.part_case = TESSERA__V1__CONTENT_PART__PART_IMAGE;
            part.image = &img;
            Tessera__V1__ContentPart *parts[1] = {&part};
            Tessera__V1__SafetyCheckRequest req = TESSERA__V1__SAFETY_CHECK_REQUEST__INIT;
            req.n_parts = 1;
            req.parts = parts;
            req.n_policies = (size_t)n_pol;
            req.policies = (char **)(uintptr_t)names;
            Tessera__V1__SafetyCheckRequest__PolicyTextsEntry pe[MAX_POLICIES], *pep[MAX_POLICIES];
            for (int k = 0; k < n_custom; k++) {
                tessera__v1__safety_check_request__policy_texts_entry__init(&pe[k]);
                pe[k].key = (char *)(uintptr_t)cname[k];
                pe[k].value = (char *)(uintptr_t)ctext[k];
                pep[k] = &pe[k];
            }
            req.n_policy_texts = (size_t)n_custom;
            req.policy_texts = pep;
            ProtobufCMessage *resp = NULL;
            ts_rpc_result res = {0};
            grpc_status_code code = ts_rpc_unary(cl, "/tessera.v1.Inference/CheckSafety", &req.base,
                                                 &tessera__v1__safety_check_response__descriptor,
                                                 600000, &resp, &res);
            if (code != GRPC_STATUS_OK) {
                json_object_set_new(o, "error", json_string(res.details ? res.details : "RPC failed"));
            } else {
                Tessera__V1__SafetyCheckResponse *r = (Tessera__V1__SafetyCheckResponse *)resp;
                json_t *sc = json_object();
                for (size_t v = 0; v < r->n_verdicts; v++)
                    for (size_t k = 0; k < r->verdicts[v]->n_scores; k++)
                        json_object_set_new(sc, r->verdicts[v]->scores[k]->policy,
                                            json_real(r->verdicts[v]->scores[k]->probability));
                json_object_set_new(o, "scores", sc);
                protobuf_c_message_free_unpacked(resp, NULL);
            }
            ts_rpc_result_free(&res);
        }
        if (json_object_get(o, "error")) rc_exit = 1;
        char *line = json_dumps(o, JSON_COMPACT | JSON_REAL_PRECISION(6));
        if (line) puts(line);
        free(line);
        json_decref(o);
        ts_free(buf);
        fflush(stdout);
    }
    ts_rpc_client_close(cl);
    return rc_exit;
}
#endif

static double sec_now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static int cmp_d(const void *a, const void *b) {
    const double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* q-quantile (nearest rank) of sorted v[n]. */
static double quant(const double *v, int n, double q) {
    int k = (int)(q * n + 0.999999) - 1;
    return v[k < 0 ? 0 : k >= n ? n - 1 : k];
}

/* --bench: one warm-up round over the images, then n rounds, each image decoded,
 * preprocessed, encoded and scored for every policy, one after another (the latency one
 * request adds). Prints per-stage p50 / p99 (ms) and images/s. */
static int bench(ts_vision *v, ts_engine *e, const ts_tokenizer *tok, const ts_sg_params *prm,
                 const char *const *texts, int n_pol, char **paths, int n_img,
                 unsigned long long max_pixels, int n, const char *backend) {
    const ts_vision_config *vc = ts_vision_get_config(v);
    const size_t S = (size_t)vc->image_size;
    uint8_t **bufs = ts_calloc((size_t)n_img, sizeof *bufs);
    size_t *lens = ts_calloc((size_t)n_img, sizeof *lens);
    float *pix = ts_malloc(sizeof(float) * 3 * S * S);
    float *embd = ts_malloc(sizeof(float) * (size_t)vc->n_tokens * (size_t)vc->proj_dim);
    const int total = n * n_img;
    double *t = ts_malloc(sizeof(double) * 4 * (size_t)(total + n_img));
    int rc_exit = 0;
    if (!bufs || !lens || !pix || !embd || !t) {
        fprintf(stderr, "tessera safety: out of memory\n");
        rc_exit = 1;
        goto out;
    }
    for (int k = 0; k < n_img; k++) {
        char err[256];
        if (!(bufs[k] = read_all(paths[k], &lens[k], err, sizeof err))) {
            fprintf(stderr, "tessera safety: %s\n", err);
            rc_exit = 1;
            goto out;
        }
    }
    double *tp = t, *te = t + total, *ts = t + 2 * total, *tt = t + 3 * total;
    double wall0 = 0;
    for (int r = -1; r < n; r++) { /* r == -1: warm-up */
        if (r == 0) wall0 = sec_now();
        for (int k = 0; k < n_img; k++) {
            ts_image im = {0};
            const double a = sec_now();
            ts_status rc = ts_image_decode(bufs[k], lens[k], max_pixels, &im);
            if (rc == TS_OK) rc = ts_image_preprocess(&im, vc->image_size, vc->mean, vc->std, pix);
            ts_image_free(&im);
            const double b = sec_now();
            if (rc == TS_OK) rc = ts_vision_encode(v, pix, NULL, embd);
            const double c = sec_now();
            for (int p = 0; p < n_pol && rc == TS_OK; p++) {
                float py;
                rc = ts_sg_score(e, tok, embd, vc->n_tokens, texts[p], prm, &py);
            }
            const double d = sec_now();
            if (rc != TS_OK) {
                fprintf(stderr, "tessera safety: %s: %s\n", paths[k], ts_last_error());
                rc_exit = 1;
                goto out;
            }
            if (r >= 0) {
                const int j = r * n_img + k;
                tp[j] = (b - a) * 1e3;
                te[j] = (c - b) * 1e3;
                ts[j] = (d - c) * 1e3;
                tt[j] = (d - a) * 1e3;
            }
        }
    }
    const double wall = sec_now() - wall0;
    printf("safety bench: backend %s, %d image(s) x %d rounds, %d policies, vision %dx%d "
           "(%d layers, width %d) -> %d tokens of %d\n", backend, n_img, n, n_pol,
           vc->image_size, vc->image_size, vc->n_layer, vc->n_embd, vc->n_tokens, vc->proj_dim);
    const char *nm[4] = {"decode+preprocess", "encoder", "text scoring", "total"};
    for (int s = 0; s < 4; s++) {
        double *x = t + (size_t)s * total;
        double sum = 0;
        for (int j = 0; j < total; j++) sum += x[j];
        qsort(x, (size_t)total, sizeof *x, cmp_d);
        printf("  %-18s p50 %9.2f ms  p99 %9.2f ms  mean %9.2f ms\n", nm[s], quant(x, total, 0.5),
               quant(x, total, 0.99), sum / total);
    }
    printf("  images/s %.3f (%d images in %.2f s, one at a time; %d policies each)\n",
           total / wall, total, wall, n_pol);
out:
    if (bufs)
        for (int k = 0; k < n_img; k++) ts_free(bufs[k]);
    ts_free(bufs);
    ts_free(lens);
    ts_free(pix);
    ts_free(embd);
    ts_free(t);
    return rc_exit;
}

int ts_cmd_safety(int argc, char **argv) {
    const char *model = NULL, *vpath = NULL, *server = NULL, *api_key = NULL;
    const char *names[MAX_POLICIES], *texts[MAX_POLICIES];
    int n_pol = 0, n_custom = 0;
    const char *cname[MAX_POLICIES], *ctext[MAX_POLICIES];
    char *cbuf[MAX_POLICIES];
    bool adhoc[MAX_POLICIES]; /* from --policy-text: always scored */
    int threads = 0, bench_n = 0;
    const char *backend = NULL;
    bool reference = false;
    unsigned long long max_pixels = 0;
    ts_sg_params prm = ts_sg_default_params();
    int i = 1;
    for (; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            return 0;
        } else if (!strcmp(a, "-m") || !strcmp(a, "--model")) {
            if (!need(i, argc, a)) return 2;
            model = argv[++i];
        } else if (!strcmp(a, "--server")) {
            if (!need(i, argc, a)) return 2;
            server = argv[++i];
        } else if (!strcmp(a, "--api-key")) {
            if (!need(i, argc, a)) return 2;
            api_key = argv[++i];
        } else if (!strcmp(a, "--vision")) {
            if (!need(i, argc, a)) return 2;
            vpath = argv[++i];
        } else if (!strcmp(a, "--policy")) {
            if (!need(i, argc, a)) return 2;
            if (n_pol == MAX_POLICIES) return fprintf(stderr, "tessera safety: too many policies\n"), 2;
            names[n_pol++] = argv[++i];
        } else if (!strcmp(a, "--custom-policy")) {
            if (!need(i, argc, a)) return 2;
            const char *v = argv[++i], *eq = strchr(v, '=');
            if (!eq || eq == v || !eq[1] || n_custom == MAX_POLICIES) {
                fprintf(stderr, "tessera safety: --custom-policy expects NAME=TEXT\n");
                return 2;
            }
            cbuf[n_custom] = ts_strndup(v, (size_t)(eq - v));
            if (!cbuf[n_custom]) return fprintf(stderr, "tessera safety: out of memory\n"), 1;
            cname[n_custom] = cbuf[n_custom];
            ctext[n_custom] = eq + 1;
            adhoc[n_custom++] = false;
        } else if (!strcmp(a, "--policy-text")) {
            if (!need(i, argc, a)) return 2;
            if (!argv[i + 1][0] || n_custom == MAX_POLICIES) {
                fprintf(stderr, "tessera safety: --policy-text expects a non-empty TEXT\n");
                return 2;
            }
            char nm[32];
            int k = 1;
            for (int j = 0; j < n_custom; j++) k += !strncmp(cname[j], "custom-", 7);
            snprintf(nm, sizeof nm, "custom-%d", k);
            cbuf[n_custom] = ts_strdup(nm);
            if (!cbuf[n_custom]) return fprintf(stderr, "tessera safety: out of memory\n"), 1;
            cname[n_custom] = cbuf[n_custom];
            ctext[n_custom] = argv[++i];
            adhoc[n_custom++] = true;
        } else if (!strcmp(a, "--threads")) {
            if (!need(i, argc, a)) return 2;
            threads = atoi(argv[++i]);
        } else if (!strcmp(a, "--reference")) {
            reference = true;
        } else if (!strcmp(a, "--backend")) {
            if (!need(i, argc, a)) return 2;
            backend = argv[++i];
            if (strcmp(backend, "cpu") && strcmp(backend, "cuda")) {
                fprintf(stderr, "tessera safety: --backend '%s' (cpu or cuda)\n", backend);
                return 2;
            }
        } else if (!strcmp(a, "--bench")) {
            if (!need(i, argc, a)) return 2;
            bench_n = atoi(argv[++i]);
            if (bench_n < 1 || bench_n > 1000000) {
                fprintf(stderr, "tessera safety: --bench expects a count in [1, 1000000]\n");
                return 2;
            }
        } else if (!strcmp(a, "--single-bos")) {
            prm.single_bos = true;
        } else if (!strcmp(a, "--max-pixels")) {
            if (!need(i, argc, a)) return 2;
            max_pixels = strtoull(argv[++i], NULL, 10);
        } else if (!strcmp(a, "--ids")) {
            if (!need(i, argc, a)) return 2;
            if (sscanf(argv[++i], "%d,%d,%d,%d,%d", &prm.ids.boi, &prm.ids.eoi, &prm.ids.image,
                       &prm.yes, &prm.no) != 5) {
                fprintf(stderr, "tessera safety: --ids expects BOI,EOI,IMAGE,YES,NO\n");
                return 2;
            }
        } else if (a[0] == '-' && a[1]) {
            fprintf(stderr, "tessera safety: unknown option '%s'\n\n", a);
            usage(stderr);
            return 2;
        } else {
            break;
        }
    }
    if (server) {
        int rc_remote = 2;
        if (i >= argc) {
            fprintf(stderr, "tessera safety: --server needs IMAGE arguments\n");
        } else {
#ifdef TS_HAVE_RPC
            rc_remote = remote(server, api_key, names, n_pol, cname, ctext, n_custom, i, argc,
                               argv);
#else
            (void)api_key;
            fprintf(stderr, "tessera safety: this build has no gRPC client (--server)\n");
            rc_remote = 1;
#endif
        }
        for (int k = 0; k < n_custom; k++) ts_free(cbuf[k]);
        return rc_remote;
    }
    if (!model || !vpath || i >= argc) {
        for (int k = 0; k < n_custom; k++) ts_free(cbuf[k]);
        fprintf(stderr, "tessera safety: -m MODEL, --vision PATH and at least one IMAGE are "
                        "required\n\n");
        usage(stderr);
        return 2;
    }
    ts_vision *v = NULL;
    ts_engine *e = NULL;
    ts_gguf *g = NULL;
    ts_tokenizer *tok = NULL;
    float *embd = NULL;
    int rc_exit = 0;
    ts_status rc = TS_OK;
    /* the policy list: named ones (custom text wins over a built-in of the same name) */
    size_t n_def;
    const ts_sg_policy *def = ts_sg_default_policies(&n_def);
    const bool all = n_pol == 0;
    if (all)
        for (size_t k = 0; k < n_def; k++) names[n_pol++] = def[k].name;
    for (int k = 0; k < n_custom && n_pol < MAX_POLICIES; k++) {
        bool dup = false;
        for (int j = 0; j < n_pol; j++) dup |= !strcmp(names[j], cname[k]);
        if (!dup && (all || adhoc[k])) names[n_pol++] = cname[k];
    }
    for (int p = 0; p < n_pol; p++) {
        texts[p] = NULL;
        for (int k = 0; k < n_custom; k++)
            if (!strcmp(names[p], cname[k])) texts[p] = ctext[k];
        if (!texts[p]) texts[p] = ts_sg_policy_text(names[p]);
        if (!texts[p]) {
            fprintf(stderr, "tessera safety: unknown policy '%s' (built-in: dangerous, sexual, "
                            "violence; or give --custom-policy NAME=TEXT)\n", names[p]);
            rc_exit = 2;
            goto done;
        }
    }

    ts_vision_params vp = {.n_threads = threads, .reference = reference, .backend = backend};
    rc = ts_vision_load(vpath, &vp, &v);
    const ts_vision_config *vc = rc == TS_OK ? ts_vision_get_config(v) : NULL;
    if (rc == TS_OK) {
        ts_engine_params ep = {.model_path = model, .n_threads = threads, .reference = reference,
                               .backend = backend,
                               .n_batch = vc->n_tokens > 512 ? vc->n_tokens : 512};
        rc = ts_engine_create(&ep, &e);
    }
    if (rc == TS_OK) rc = ts_gguf_open(model, &g);
    if (rc == TS_OK) rc = ts_tokenizer_load(g, &tok);
    if (rc == TS_OK && (uint32_t)vc->proj_dim != ts_engine_config(e)->n_embd)
        rc = TS_FAIL(TS_FORMAT, "the vision projector outputs %d values per token, the model "
                     "takes %u", vc->proj_dim, ts_engine_config(e)->n_embd);
    if (rc == TS_OK) {
        embd = ts_malloc(sizeof(float) * (size_t)vc->n_tokens * (size_t)vc->proj_dim);
        if (!embd) rc = TS_FAIL(TS_NOMEM, "image embeddings");
    }
    if (rc != TS_OK) {
        fprintf(stderr, "tessera safety: %s\n", ts_last_error());
        rc_exit = 1;
        goto done;
    }
    if (bench_n > 0) {
        rc_exit = bench(v, e, tok, &prm, (const char *const *)texts, n_pol, argv + i, argc - i,
                        max_pixels, bench_n, backend ? backend : "cpu");
        goto done;
    }
    for (; i < argc; i++) {
        json_t *o = json_object();
        json_object_set_new(o, "image", json_string(argv[i]));
        char err[256] = "";
        size_t len = 0;
        uint8_t *buf = read_all(argv[i], &len, err, sizeof err);
        ts_image im = {0};
        if (!buf) {
            json_object_set_new(o, "error", json_string(err));
        } else if ((rc = ts_image_decode(buf, len, max_pixels, &im)) != TS_OK ||
                   (rc = ts_vision_encode_image(v, &im, embd)) != TS_OK) {
            json_object_set_new(o, "error", json_string(ts_last_error()));
        } else {
            json_t *sc = json_object();
            for (int p = 0; p < n_pol && rc == TS_OK; p++) {
                float py = 0;
                rc = ts_sg_score(e, tok, embd, vc->n_tokens, texts[p], &prm, &py);
                if (rc == TS_OK) json_object_set_new(sc, names[p], json_real(py));
            }
            if (rc == TS_OK) json_object_set_new(o, "scores", sc);
            else {
                json_decref(sc);
                json_object_set_new(o, "error", json_string(ts_last_error()));
            }
        }
        if (json_object_get(o, "error")) rc_exit = 1;
        char *line = json_dumps(o, JSON_COMPACT | JSON_REAL_PRECISION(6));
        if (line) puts(line);
        free(line);
        json_decref(o);
        ts_image_free(&im);
        ts_free(buf);
        fflush(stdout);
    }
done:
    ts_free(embd);
    ts_tokenizer_free(tok);
    ts_gguf_close(g);
    ts_engine_destroy(e);
    ts_vision_destroy(v);
    for (int k = 0; k < n_custom; k++) ts_free(cbuf[k]);
    return rc_exit;
}
