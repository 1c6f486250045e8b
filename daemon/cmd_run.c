/* cmd_run.c: `tessera run`: generate a continuation of a prompt on one rank (CPU engine),
 * streaming it to stdout as it is produced.
 *
 *   tessera run -m MODEL -p TEXT [-n N] [--chat] [--system TEXT] [--temp T] [--top-k K]
 *               [--top-p P] [--min-p P] [--repeat-penalty R] [--presence-penalty X]
 *               [--frequency-penalty X] [--seed S] [--stop STR]... [--ctx N]
 *               [--threads N] [--batch N] [--json] [--reference] [--no-bos]
 *               [--tp T|auto] [--pp P|auto] [--gpu-mem-limit B] [--verbose]
 *
 * Distributed (docs/distributed.md): `mpirun -np N tessera run --tp T --pp P ...` splits
 * the model over the N = T * P ranks (--pp 0 or absent: N / T; auto: dist.h chooses from
 * every rank's memory). Rank 0 prints the plan on stderr, tokenizes, samples
 * and prints exactly what one rank would; the other ranks print nothing but errors. A
 * transport failure (a peer that stops answering within TESSERA_COMM_TIMEOUT seconds)
 * prints the rank and the operation and aborts the whole job.
 *
 * With --temp 0 decoding is greedy. With --json nothing streams; one object is printed at
 * the end: {"prompt_ids":[...],"ids":[...],"text":"...","finish_reason":"...","seed":S}.
 * Generation stops at an end-of-turn / end-of-sequence token, a stop string (not printed),
 * N new tokens, or the end of the context.
 */
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "alloc.h"
#include "chat.h"
#include "commands.h"
#include "engine.h"
#include "image.h"
#include "shieldgemma.h"
#include "vision.h"
#include "sampler.h"
#include "tokenizer.h"
#include "dist.h"
#include "transport.h"

#define MAX_STOPS 16
#define RUN_TOP_K 64 /* GPU sampling prefilter width (top_k <= 64 sampled exactly) */

typedef struct {
    const char *model, *prompt, *system;
    const char *image, *vision, *vision_ids; /* one image after the user text (--chat) */
    int32_t n_predict, n_ctx, n_threads, n_batch, tp, pp, micro_batches;
    bool chat, json, reference, llamacpp_batch, no_bos, seed_set, verbose;
    const char *backend;
    uint64_t mem_limit;
    ts_sampler_params sp;
    const char *stops[MAX_STOPS];
    size_t n_stops;
} run_opts;

static void usage(FILE *f) {
    fprintf(f,
            "usage: tessera run -m MODEL -p TEXT [options]\n\n"
            "Generates a continuation of TEXT with the model (CPU engine), streaming it.\n\n"
            "  -m, --model FILE         Gemma 3 GGUF file\n"
            "  -p, --prompt TEXT        the prompt (raw text, or the user message with --chat)\n"
            "  -n, --n-predict N        new tokens at most (default 128)\n"
            "      --chat               apply the Gemma 3 chat template (user turn + model turn)\n"
            "      --system TEXT        system message (with --chat)\n"
            "      --image FILE         an image (PNG/JPEG/WebP) after the user text (with --chat\n"
            "                           and --vision; CPU, one rank)\n"
            "      --vision PATH        the model's vision tower (mmproj GGUF or HF checkpoint)\n"
            "      --vision-ids B,E,I   image marker token ids (test vocabularies)\n"
            "      --temp T             temperature, 0 = greedy (default 1.0)\n"
            "      --top-k K            (default 64; 0 = off)\n"
            "      --top-p P            (default 0.95; 1 = off)\n"
            "      --min-p P            (default 0 = off)\n"
            "      --repeat-penalty R   multiplicative repetition penalty (default 1 = off)\n"
            "      --presence-penalty X, --frequency-penalty X   additive (default 0)\n"
            "      --seed S             sampling seed (default: random, printed with --json)\n"
            "      --stop STR           stop string (repeatable, up to %d)\n"
            "      --ctx N              context length (default min(model, 8192))\n"
            "      --threads N          CPU threads (default: all)\n"
            "      --batch N            prompt tokens per step (default 512)\n"
            "      --no-bos             do not prepend <bos> (raw prompts)\n"
            "      --reference          scalar reference kernels (slow; for checking)\n"
            "      --llamacpp-batch     batched prompts with llama.cpp's batch-size-dependent\n"
            "                           kernels (its exact numerics; see docs/engine.md)\n"
            "      --backend cpu|cuda   compute backend (default cpu; cuda: GPU 0, under\n"
            "                           mpirun GPU local-rank %% device count, NCCL)\n"
            "      --tp T, --pp P       tensor / pipeline parallel ranks (under mpirun;\n"
            "                           default tp 1, pp = ranks / tp); auto: chosen from\n"
            "                           every rank's free memory (--tp auto alone: both)\n"
            "      --gpu-mem-limit B    bytes this rank may allocate on its device (weights,\n"
            "                           KV, buffers; CPU ranks: host memory), e.g. 12GiB;\n"
            "                           each rank its own (mpirun MPMD); the plan fits\n"
            "                           every rank's budget\n"
            "      --micro-batches N    pipeline micro-batches per step (greedy runs; 0 =\n"
            "                           auto: one per stage)\n"
            "      --verbose            engine and memory figures (stderr; distributed,\n"
            "                           rank 0 always prints the plan)\n"
            "      --json               print one JSON object at the end instead of streaming\n",
            MAX_STOPS);
}

static int parse_i32(const char *flag, const char *v, int32_t lo, int32_t hi, int32_t *out) {
    char *end;
    errno = 0;
    long x = strtol(v, &end, 10);
    if (errno || *end || end == v || x < lo || x > hi) {
        fprintf(stderr, "tessera run: %s expects an integer in [%d, %d], got '%s'\n", flag, lo,
                hi, v);
        return -1;
    }
    *out = (int32_t)x;
    return 0;
}

static int parse_f32(const char *flag, const char *v, float *out) {
    char *end;
    errno = 0;
    float x = strtof(v, &end);
    if (errno || *end || end == v) {
        fprintf(stderr, "tessera run: %s expects a number, got '%s'\n", flag, v);
        return -1;
    }
    *out = x;
    return 0;
}

static int parse_args(int argc, char **argv, run_opts *o) {
    memset(o, 0, sizeof *o);
    o->n_predict = 128;
    o->sp = ts_sampler_params_default();
    o->sp.temperature = 1.0f;
    o->sp.top_k = 64;
    o->sp.top_p = 0.95f;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage(stdout);
            return 1;
        }
        bool flag_only = !strcmp(a, "--chat") || !strcmp(a, "--json") ||
                         !strcmp(a, "--reference") || !strcmp(a, "--llamacpp-batch") || !strcmp(a, "--no-bos") ||
                         !strcmp(a, "--verbose");
        if (flag_only) {
            if (!strcmp(a, "--chat")) o->chat = true;
            if (!strcmp(a, "--json")) o->json = true;
            if (!strcmp(a, "--reference")) o->reference = true;
            if (!strcmp(a, "--llamacpp-batch")) o->llamacpp_batch = true;
            if (!strcmp(a, "--no-bos")) o->no_bos = true;
            if (!strcmp(a, "--verbose")) o->verbose = true;
            continue;
        }
        if (a[0] != '-') {
            fprintf(stderr, "tessera run: unexpected argument '%s'\n", a);
            return -1;
        }
        static const char *const with_value[] = {
            "-m", "--model", "-p", "--prompt", "--system", "-n", "--n-predict", "--ctx",
            "--threads", "--batch", "--temp", "--top-k", "--top-p", "--min-p",
            "--repeat-penalty", "--presence-penalty", "--frequency-penalty", "--seed", "--stop",
            "--backend", "--tp", "--pp", "--gpu-mem-limit", "--micro-batches", "--image",
            "--vision", "--vision-ids"};
        bool known = false;
        for (size_t k = 0; k < sizeof with_value / sizeof with_value[0]; k++)
            if (!strcmp(a, with_value[k])) known = true;
        if (!known) {
            fprintf(stderr, "tessera run: unknown option '%s'\n", a);
            return -1;
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "tessera run: %s needs a value\n", a);
            return -1;
        }
        const char *v = argv[++i];
        int32_t iv;
        if (!strcmp(a, "-m") || !strcmp(a, "--model")) o->model = v;
        else if (!strcmp(a, "-p") || !strcmp(a, "--prompt")) o->prompt = v;
        else if (!strcmp(a, "--system")) o->system = v;
        else if (!strcmp(a, "--image")) o->image = v;
        else if (!strcmp(a, "--vision")) o->vision = v;
        else if (!strcmp(a, "--vision-ids")) o->vision_ids = v;
        else if (!strcmp(a, "--backend")) {
            if (strcmp(v, "cpu") && strcmp(v, "cuda")) {
                fprintf(stderr, "tessera run: --backend expects cpu or cuda, got '%s'\n", v);
                return -1;
            }
            o->backend = v;
        }
        else if (!strcmp(a, "-n") || !strcmp(a, "--n-predict")) {
            if (parse_i32(a, v, 0, 1 << 24, &o->n_predict)) return -1;
        } else if (!strcmp(a, "--ctx")) {
            if (parse_i32(a, v, 1, 1 << 24, &o->n_ctx)) return -1;
        } else if (!strcmp(a, "--tp")) {
            if (ts_cmd_parse_par("tessera run", a, v, 1, &o->tp)) return -1;
        } else if (!strcmp(a, "--pp")) {
            if (ts_cmd_parse_par("tessera run", a, v, 0, &o->pp)) return -1;
        } else if (!strcmp(a, "--micro-batches")) {
            if (parse_i32(a, v, 0, 4096, &o->micro_batches)) return -1;
        } else if (!strcmp(a, "--gpu-mem-limit")) {
            if (ts_cmd_parse_bytes("tessera run", a, v, &o->mem_limit)) return -1;
        } else if (!strcmp(a, "--threads")) {
            if (parse_i32(a, v, 1, 1024, &o->n_threads)) return -1;
        } else if (!strcmp(a, "--batch")) {
            if (parse_i32(a, v, 1, 65536, &o->n_batch)) return -1;
        } else if (!strcmp(a, "--temp")) {
            if (parse_f32(a, v, &o->sp.temperature)) return -1;
        } else if (!strcmp(a, "--top-k")) {
            if (parse_i32(a, v, 0, INT32_MAX, &iv)) return -1;
            o->sp.top_k = (uint32_t)iv;
        } else if (!strcmp(a, "--top-p")) {
            if (parse_f32(a, v, &o->sp.top_p)) return -1;
        } else if (!strcmp(a, "--min-p")) {
            if (parse_f32(a, v, &o->sp.min_p)) return -1;
        } else if (!strcmp(a, "--repeat-penalty")) {
            if (parse_f32(a, v, &o->sp.repetition_penalty)) return -1;
        } else if (!strcmp(a, "--presence-penalty")) {
            if (parse_f32(a, v, &o->sp.presence_penalty)) return -1;
        } else if (!strcmp(a, "--frequency-penalty")) {
            if (parse_f32(a, v, &o->sp.frequency_penalty)) return -1;
        } else if (!strcmp(a, "--seed")) {
            char *end;
            errno = 0;
            unsigned long long s = strtoull(v, &end, 10);
            if (errno || *end || end == v || v[0] == '-') {
                fprintf(stderr, "tessera run: --seed expects a non-negative integer, got '%s'\n", v);
                return -1;
            }
            o->sp.seed = s;
            o->seed_set = true;
        } else if (!strcmp(a, "--stop")) {
            if (o->n_stops == MAX_STOPS) {
                fprintf(stderr, "tessera run: at most %d --stop strings\n", MAX_STOPS);
                return -1;
            }
            o->stops[o->n_stops++] = v;
        } else {
            fprintf(stderr, "tessera run: unknown option '%s'\n", a);
            return -1;
        }
    }
    if (o->image && (!o->vision || !o->chat)) {
        fprintf(stderr, "tessera run: --image needs --chat and --vision\n");
        return -1;
    }
    if (!o->model || !o->prompt) {
        fprintf(stderr, "tessera run: -m MODEL and -p TEXT are required\n");
        return -1;
    }
    if (o->system && !o->chat) {
        fprintf(stderr, "tessera run: --system needs --chat\n");
        return -1;
    }
    if (!o->seed_set) o->sp.seed = (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 32);
    if (ts_sampler_params_validate(&o->sp) != TS_OK) {
        fprintf(stderr, "tessera run: %s\n", ts_last_error());
        return -1;
    }
    return 0;
}

/* Reads and decodes an image file (at most 64 MiB). */
static ts_status read_image(const char *path, ts_image *im) {
    FILE *f = fopen(path, "rb");
    if (!f) return TS_FAIL(TS_NOT_FOUND, "cannot open: %s", strerror(errno));
    uint8_t *buf = NULL;
    size_t n = 0, cap = 0;
    ts_status rc = TS_OK;
    for (;;) {
        if (n == cap) {
            if (cap >= ((size_t)64 << 20)) {
                rc = TS_FAIL(TS_RANGE, "larger than 64 MiB");
                break;
            }
            uint8_t *q = ts_realloc(buf, cap = cap ? cap * 2 : 65536);
            if (!q) {
                rc = TS_FAIL(TS_NOMEM, "image file");
                break;
            }
            buf = q;
        }
        size_t got = fread(buf + n, 1, cap - n, f);
        n += got;
        if (got == 0) break;
    }
    fclose(f);
    if (rc == TS_OK) rc = ts_image_decode(buf, n, 0, im);
    ts_free(buf);
    return rc;
}

static void progress(void *ctx, float done) {
    (void)ctx;
    int w = 30, n = (int)(done * (float)w + 0.5f);
    fprintf(stderr, "\rloading model [");
    for (int i = 0; i < w; i++) fputc(i < n ? '=' : ' ', stderr);
    fprintf(stderr, "] %3d%%%s", (int)(done * 100.0f + 0.5f), done >= 1.0f ? "\n" : "");
    fflush(stderr);
}

/* Growable output text. */
typedef struct {
    char *p;
    size_t n, cap;
} sbuf;

static int sbuf_add(sbuf *b, const char *s, size_t n) {
    if (b->n + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap * 2 : 1024;
        while (cap < b->n + n + 1) cap *= 2;
        char *q = ts_realloc(b->p, cap);
        if (!q) return -1;
        b->p = q;
        b->cap = cap;
    }
    memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = '\0';
    return 0;
}

int ts_cmd_run(int argc, char **argv) {
    run_opts o;
    int pr = parse_args(argc, argv, &o);
    if (pr > 0) return 0;
    if (pr < 0) return 2;

    int ret = 1;
    ts_engine *e = NULL;
    ts_tokenizer *tok = NULL;
    ts_sampler *smp = NULL;
    ts_detok_stream *ds = NULL;
    ts_tokens pt = {0};
    char *rendered = NULL;
    ts_vision *vis = NULL;
    float *img_embd = NULL;
    const float **rows = NULL;
    int32_t *hi = NULL, img_first = 0, img_n = 0;
    float *logits = NULL;
    int32_t top_ids[RUN_TOP_K]; /* one flagged row per step */
    float top_vals[RUN_TOP_K];
    int32_t *ids = NULL, *pos = NULL, *seq = NULL;
    sbuf text = {0};
    json_t *jids = NULL;
    ts_transport *tr = NULL;
    bool dist = false;

    /* Under mpirun (or with --tp / --pp): one rank of a distributed engine. */
    static ts_cmd_dist dd; /* budgets and report: large */
    {
        ts_cmd_dist_params dp = {.tp = o.tp, .pp = o.pp, .backend = o.backend,
                                 .model = o.model, .mem_limit = o.mem_limit, .n_ctx = o.n_ctx,
                                 .n_seq = 1, .n_batch = o.n_batch};
        int dr = ts_cmd_dist_open("tessera run", &dp, &dd);
        if (dr) return dr;
        tr = dd.tr;
        dist = tr != NULL;
    }
    if (dist && tr->rank != 0) o.json = true; /* never stream on other ranks */

    ts_engine_params ep = {
        .model_path = o.model, .n_threads = o.n_threads, .reference = o.reference,
        .llamacpp_batch = o.llamacpp_batch,
        .backend = o.backend,
        .n_ctx = o.n_ctx, .n_seq_max = 1, .n_batch = o.n_batch,
        .progress = isatty(STDERR_FILENO) && !dist ? progress : NULL,
        .transport = tr, .tp = dd.tp, .pp = dd.pp, .rank_mem = dd.rank_mem,
        .device = tr && tr->device >= 0 ? tr->device : 0,
        .mem_limit = o.mem_limit, .micro_batches = o.micro_batches,
    };
    ts_status cst = ts_engine_create(&ep, &e);
    if (cst != TS_OK) {
        /* plan refusals are the same on every rank: rank 0 reports, all exit; anything
         * else may be one rank's alone: it reports and ends the job */
        if (!dist || (tr->rank == 0 && cst == TS_INVAL))
            fprintf(stderr, "tessera run: %s\n", ts_last_error());
        else if (cst != TS_INVAL)
            fprintf(stderr, "tessera run: rank %d: %s\n", tr->rank, ts_last_error());
        if (dist && cst != TS_INVAL) tr->ops->abort(tr, 1);
        goto out;
    }
    if (dist && tr->rank == 0) {
        fputs(dd.report, stderr);
        fputs(ts_engine_plan(e)->desc, stderr);
    }
    if (dist && tr->rank != 0) {
        if (ts_engine_serve(e) != TS_OK) {
            fprintf(stderr, "tessera run: %s\n", ts_last_error());
            tr->ops->abort(tr, 1);
        }
        ret = 0;
        goto out;
    }
    const ts_config *cfg = ts_engine_config(e);
    ts_engine_info info;
    ts_engine_get_info(e, &info);
    if ((o.verbose || isatty(STDERR_FILENO)) && (!dist || tr->rank == 0))
        fprintf(stderr,
                "engine: %s backend; weights %.1f MiB; KV cache %.1f MiB (%lld global + %lld "
                "local pages of %d tokens; context %d, %d slot(s)); step buffers %.1f MiB\n",
                info.backend, (double)info.weight_bytes / 1048576.0,
                (double)info.kv_bytes / 1048576.0, (long long)info.kv_global_pages,
                (long long)info.kv_local_pages, info.page_size, info.n_ctx, info.n_seq_max,
                (double)info.activation_bytes / 1048576.0);
    if ((o.verbose || isatty(STDERR_FILENO)) && (!dist || tr->rank == 0) &&
        info.device_total_bytes > 0)
        fprintf(stderr,
                "device memory: %.1f MiB of %.1f MiB used (%.1f MiB before loading); the "
                "backend's allocations %.1f MiB, peak %.1f MiB\n",
                (double)info.device_used_bytes / 1048576.0,
                (double)info.device_total_bytes / 1048576.0,
                (double)info.device_used_at_create / 1048576.0,
                (double)info.backend_alloc_bytes / 1048576.0,
                (double)info.backend_alloc_peak / 1048576.0);
    if (ts_tokenizer_load(ts_engine_gguf(e), &tok) != TS_OK) {
        fprintf(stderr, "tessera run: tokenizer: %s\n", ts_last_error());
        goto out;
    }
    const char *text_in = o.prompt;
    size_t text_len = strlen(o.prompt);
    unsigned flags = TS_TOK_PARSE_SPECIAL | (o.no_bos ? 0 : TS_TOK_ADD_BOS);
    if (o.chat) {
        ts_chat_message msgs[2];
        size_t nm = 0;
        if (o.system) msgs[nm++] = (ts_chat_message){.role = "system", .content = o.system,
                                                     .content_len = strlen(o.system)};
        ts_chat_part up[2] = {{.kind = TS_CHAT_PART_TEXT, .text = o.prompt, .len = text_len},
                              {.kind = TS_CHAT_PART_IMAGE}};
        msgs[nm++] = (ts_chat_message){.role = "user", .content = o.prompt,
                                       .content_len = text_len, .parts = o.image ? up : NULL,
                                       .n_parts = o.image ? 2 : 0};
        size_t rl;
        if (ts_chat_render(msgs, nm, true, false, &rendered, &rl) != TS_OK) {
            fprintf(stderr, "tessera run: chat: %s\n", ts_last_error());
            goto out;
        }
        text_in = rendered;
        text_len = rl;
    }
    if (o.image) { /* the image's soft tokens, encoded on the engine's backend */
        ts_vision_params vp = {.n_threads = o.n_threads, .backend = o.backend};
        ts_mm_ids mi = {-1, -1, -1};
        ts_image im = {0};
        int32_t n_img = 0;
        if (o.vision_ids && sscanf(o.vision_ids, "%d,%d,%d", &mi.boi, &mi.eoi, &mi.image) != 3) {
            fprintf(stderr, "tessera run: --vision-ids '%s': expected BOI,EOI,IMAGE\n", o.vision_ids);
            goto out;
        }
        if (ts_vision_load(o.vision, &vp, &vis) != TS_OK || ts_mm_ids_lookup(tok, &mi) != TS_OK ||
            ts_mm_tokenize(tok, text_in, text_len, flags, &mi, ts_vision_get_config(vis)->n_tokens,
                           &pt, &img_first, 1, &n_img) != TS_OK) {
            fprintf(stderr, "tessera run: --vision %s: %s\n", o.vision, ts_last_error());
            goto out;
        }
        if (n_img != 1) {
            fprintf(stderr, "tessera run: the prompt must not contain <start_of_image> itself\n");
            goto out;
        }
        img_n = ts_vision_get_config(vis)->n_tokens;
        if ((uint32_t)ts_vision_get_config(vis)->proj_dim != cfg->n_embd || img_n > info.n_batch) {
            fprintf(stderr, "tessera run: --vision %s does not fit this model or --batch\n", o.vision);
            goto out;
        }
        img_embd = ts_malloc(sizeof(float) * (size_t)img_n * cfg->n_embd);
        if (!img_embd || read_image(o.image, &im) != TS_OK ||
            ts_vision_encode_image(vis, &im, img_embd) != TS_OK) {
            fprintf(stderr, "tessera run: --image %s: %s\n", o.image, ts_last_error());
            ts_image_free(&im);
            goto out;
        }
        ts_image_free(&im);
    } else if (ts_tokenize(tok, text_in, text_len, flags, &pt) != TS_OK) {
        fprintf(stderr, "tessera run: prompt: %s\n", ts_last_error());
        goto out;
    }
    if (pt.n == 0) {
        fprintf(stderr, "tessera run: the prompt is empty (and --no-bos is set)\n");
        goto out;
    }
    if ((int64_t)pt.n >= info.n_ctx) {
        fprintf(stderr, "tessera run: the prompt has %zu tokens, which does not fit the context "
                "of %d tokens (raise --ctx, up to the model's %u)\n", pt.n, info.n_ctx,
                cfg->n_ctx_train);
        goto out;
    }
    int32_t total = (int32_t)pt.n + o.n_predict;
    if (total > info.n_ctx) total = info.n_ctx;
    if (ts_engine_seq_reserve(e, 0, total) != TS_OK) {
        fprintf(stderr, "tessera run: %s\n", ts_last_error());
        goto out;
    }
    if (ts_sampler_create(&o.sp, cfg->n_vocab, &smp) != TS_OK ||
        ts_detok_stream_init(tok, &ds) != TS_OK) {
        fprintf(stderr, "tessera run: %s\n", ts_last_error());
        goto out;
    }
    logits = ts_malloc(sizeof(float) * cfg->n_vocab);
    ids = ts_malloc(sizeof(int32_t) * (size_t)info.n_batch);
    pos = ts_malloc(sizeof(int32_t) * (size_t)info.n_batch);
    seq = ts_calloc((size_t)info.n_batch, sizeof(int32_t));
    rows = ts_calloc((size_t)info.n_batch, sizeof *rows);
    hi = ts_malloc(sizeof(int32_t) * (size_t)info.n_batch);
    jids = json_array();
    if (!logits || !ids || !pos || !seq || !jids || !rows || !hi) {
        fprintf(stderr, "tessera run: out of memory\n");
        goto out;
    }
    for (size_t i = 0; i < pt.n; i++) (void)ts_sampler_accept(smp, pt.ids[i]);
    /* distributed greedy decoding without penalties: the last stage picks the token and
     * only its id crosses to rank 0 (ts_engine_step_greedy) */
    const bool greedy_ids = dist && o.sp.temperature == 0.0f && o.sp.repetition_penalty == 1.0f &&
                            o.sp.presence_penalty == 0.0f && o.sp.frequency_penalty == 0.0f;
    int32_t next_id = -1;
    /* GPU sampling (CUDA backend): only the top k (id, logit) pairs come back when the
     * sampler can finish on them exactly (sampler.h ts_sampler_top_ok); else full logits.
     * TESSERA_GPU_SAMPLING=0 turns it off. */
    const char *gs = getenv("TESSERA_GPU_SAMPLING");
    const int32_t ktop = cfg->n_vocab < RUN_TOP_K ? (int32_t)cfg->n_vocab : RUN_TOP_K;
    const bool use_top = !(gs && !strcmp(gs, "0")) && !strcmp(info.backend, "cuda") &&
                         ts_engine_can_step_top(e) && ts_sampler_top_ok(smp, (uint32_t)ktop);
    if (o.verbose)
        fprintf(stderr, "sampling: %s\n", use_top ? "top-k prefilter on the device"
                                                  : "full logits on the host");

    /* prefill in chunks (an image is never split); logits of the last prompt token */
    for (size_t i0 = 0, n = 0; i0 < pt.n; i0 += n) {
        n = pt.n - i0 < (size_t)info.n_batch ? pt.n - i0 : (size_t)info.n_batch;
        size_t f = (size_t)img_first, fe = f + (size_t)img_n;
        if (img_embd && f > i0 && f < i0 + n && fe > i0 + n) n = f - i0; /* the image: next step */
        bool mm = img_embd && f < i0 + n && fe > i0;
        for (size_t j = 0; j < n; j++) {
            size_t p = i0 + j;
            ids[j] = pt.ids[p];
            pos[j] = (int32_t)p;
            bool in = img_embd && p >= (size_t)img_first && p < (size_t)(img_first + img_n);
            rows[j] = in ? img_embd + (p - (size_t)img_first) * cfg->n_embd : NULL;
            hi[j] = in ? img_first + img_n - 1 : (int32_t)p;
        }
        ts_batch b = {.n_tokens = (int32_t)n, .token = ids, .pos = pos, .seq = seq,
                      .embd = mm ? rows : NULL, .attn_hi = mm ? hi : NULL};
        if ((use_top ? ts_engine_step_top(e, &b, ktop, top_ids, top_vals)
             : greedy_ids ? ts_engine_step_greedy(e, &b, &next_id)
                          : ts_engine_step(e, &b, logits)) != TS_OK) {
            fprintf(stderr, "tessera run: %s\n", ts_last_error());
            if (dist) tr->ops->abort(tr, 1); /* the other ranks may wait on us */
            goto out;
        }
    }

    const char *finish = "length";
    size_t emitted = 0, max_stop = 0;
    for (size_t s = 0; s < o.n_stops; s++)
        if (strlen(o.stops[s]) > max_stop) max_stop = strlen(o.stops[s]);
    int32_t n_gen = 0, cur = (int32_t)pt.n;
    while (n_gen < o.n_predict) {
        int32_t t = next_id;
        if (!greedy_ids && (use_top ? ts_sampler_sample_top(smp, top_ids, top_vals, (uint32_t)ktop, &t)
                                    : ts_sampler_sample(smp, logits, &t)) != TS_OK) {
            fprintf(stderr, "tessera run: sampling: %s\n", ts_last_error());
            goto out;
        }
        if (ts_tokenizer_is_eog(tok, t)) {
            finish = "stop";
            break;
        }
        (void)ts_sampler_accept(smp, t);
        json_array_append_new(jids, json_integer(t));
        n_gen++;
        const char *piece;
        size_t plen;
        if (ts_detok_stream_push(ds, t, &piece, &plen) != TS_OK || sbuf_add(&text, piece, plen)) {
            fprintf(stderr, "tessera run: detokenize: %s\n", ts_last_error());
            goto out;
        }
        size_t from = text.n > plen + max_stop ? text.n - plen - max_stop : 0;
        size_t which;
        size_t cut = o.n_stops ? ts_stop_check(text.p + from, text.n - from, o.stops, o.n_stops, &which)
                               : TS_STOP_NONE;
        if (cut != TS_STOP_NONE) {
            text.n = from + cut;
            text.p[text.n] = '\0';
            finish = "stop_sequence";
            break;
        }
        size_t hold = o.n_stops ? ts_stop_holdback(text.p, text.n, o.stops, o.n_stops) : 0;
        if (!o.json && text.n - hold > emitted) {
            fwrite(text.p + emitted, 1, text.n - hold - emitted, stdout);
            fflush(stdout);
            emitted = text.n - hold;
        }
        if (cur >= info.n_ctx) {
            finish = "context_length";
            break;
        }
        if (n_gen == o.n_predict) break;
        ids[0] = t;
        pos[0] = cur++;
        ts_batch b = {.n_tokens = 1, .token = ids, .pos = pos, .seq = seq};
        if ((use_top ? ts_engine_step_top(e, &b, ktop, top_ids, top_vals)
             : greedy_ids ? ts_engine_step_greedy(e, &b, &next_id)
                          : ts_engine_step(e, &b, logits)) != TS_OK) {
            fprintf(stderr, "tessera run: %s\n", ts_last_error());
            if (dist) tr->ops->abort(tr, 1); /* the other ranks may wait on us */
            goto out;
        }
    }
    if (strcmp(finish, "stop_sequence") != 0) {
        const char *tail;
        size_t tl;
        if (ts_detok_stream_flush(ds, &tail, &tl) == TS_OK) sbuf_add(&text, tail, tl);
    }
    if (o.json) {
        json_t *obj = json_object();
        json_t *jp = json_array();
        for (size_t i = 0; i < pt.n; i++) json_array_append_new(jp, json_integer(pt.ids[i]));
        json_object_set_new(obj, "prompt_ids", jp);
        json_object_set(obj, "ids", jids);
        json_object_set_new(obj, "text", json_stringn(text.p ? text.p : "", text.n));
        json_object_set_new(obj, "finish_reason", json_string(finish));
        json_object_set_new(obj, "seed", json_integer((json_int_t)o.sp.seed));
        json_dumpf(obj, stdout, JSON_COMPACT);
        putchar('\n');
        json_decref(obj);
    } else {
        if (text.n > emitted) fwrite(text.p + emitted, 1, text.n - emitted, stdout);
        putchar('\n');
    }
    ret = 0;
out:
    json_decref(jids);
    ts_free(text.p);
    ts_free(logits);
    ts_free(ids);
    ts_free(pos);
    ts_free(seq);
    ts_free(rendered);
    ts_free(img_embd);
    ts_free(rows);
    ts_free(hi);
    ts_vision_destroy(vis);
    ts_tokens_free(&pt);
    ts_detok_stream_free(ds);
    ts_sampler_destroy(smp);
    ts_tokenizer_free(tok);
    ts_engine_destroy(e);
    ts_transport_close(tr);
    return ret;
}
