/* cmd_mkmodel.c: `tessera mkmodel`, a random-weight Gemma 3 GGUF at a real shape.
 *
 *   tessera mkmodel --size {tiny,270m,1b,4b,12b,27b} --type {q4_0,q8_0,f16,f32}
 *                   [--seed S] -o FILE [--vocab N] [--ctx N] [--force] [--dry-run]
 *
 *   tessera mkmodel --mmproj --size SIZE [--type {f16,f32}] [--seed S] -o FILE [--force]
 *       a random Gemma 3 mmproj (SigLIP so400m vision tower + projector to SIZE's width)
 *
 * Writes FILE.tmp, then renames it to FILE (an existing FILE is refused unless --force).
 * Prints a summary (parameters, bytes, time, MB/s) on stdout; progress on stderr when it
 * is a terminal. See docs/mkmodel.md.
 * Exit codes: 0 success, 1 failure (message on stderr), 2 usage error.
 */
#define _POSIX_C_SOURCE 200809L

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "base/alloc.h"
#include "commands.h"
#include "mkmodel.h"
#include "quant.h"

static void mk_usage(FILE *f) {
    fprintf(f,
            "usage: tessera mkmodel --size SIZE --type TYPE [--seed S] -o FILE [--vocab N]\n"
            "                       [--ctx N] [--force] [--dry-run]\n\n"
            "Writes a GGUF with the exact Gemma 3 architecture, metadata and tokenizer layout of\n"
            "a llama.cpp conversion, and random (deterministic, seeded) weights: for tests and\n"
            "for benchmarks at real shapes. Streams one tensor at a time.\n\n"
            "  --size SIZE   tiny, 270m, 1b, 4b, 12b or 27b\n"
            "  --type TYPE   q4_0, q8_0, f16 or f32 (matrices and token_embd; norms are f32)\n"
            "  --seed S      unsigned 64-bit seed (default 0)\n"
            "  -o FILE       output path (written to FILE.tmp, then renamed)\n"
            "  --vocab N     vocabulary size, %u..%u (default %u)\n"
            "  --ctx N       gemma3.context_length (default: the size's)\n"
            "  --force       replace an existing FILE\n"
            "  --dry-run     print the summary and the exact file size, write nothing\n"
            "  --mmproj      instead: a random mmproj GGUF (Gemma 3's SigLIP so400m vision tower\n"
            "                + projector to SIZE's width; --type f16 (default) or f32)\n",
            TS_MKMODEL_MIN_VOCAB, TS_MKMODEL_MAX_VOCAB, TS_MKMODEL_DEFAULT_VOCAB);
}

static bool parse_u64(const char *s, uint64_t *out) {
    if (!s || !*s || *s == '-' || *s == '+') return false;
    errno = 0;
    char *end;
    unsigned long long v = strtoull(s, &end, 0);
    if (errno || *end) return false;
    *out = v;
    return true;
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

typedef struct {
    double t0, last;
} progress_state;

static void progress(void *ctx, uint64_t done, uint64_t total) {
    progress_state *ps = ctx;
    double t = now_s();
    if (done < total && t - ps->last < 0.2) return;
    ps->last = t;
    double el = t - ps->t0;
    fprintf(stderr, "\r  %5.1f%%  %8.1f / %.1f MB  %6.0f MB/s ", total ? 100.0 * (double)done / (double)total : 100.0,
            (double)done / 1e6, (double)total / 1e6, el > 0 ? (double)done / 1e6 / el : 0.0);
    if (done >= total) fputc('\n', stderr);
    fflush(stderr);
}

/* Option value: "--opt V" or "--opt=V". Returns NULL (after printing) if missing. */
static const char *opt_value(int argc, char **argv, int *i, const char *opt) {
    const char *a = argv[*i];
    size_t n = strlen(opt);
    if (!strncmp(a, opt, n) && a[n] == '=') return a + n + 1;
    if (*i + 1 >= argc) {
        fprintf(stderr, "tessera mkmodel: %s needs a value\n", opt);
        return NULL;
    }
    return argv[++*i];
}

static bool is_opt(const char *a, const char *opt) {
    size_t n = strlen(opt);
    return !strncmp(a, opt, n) && (a[n] == '\0' || a[n] == '=');
}

/* --mmproj: writes FILE.tmp, renames it to FILE. */
static int mk_mmproj(const ts_mkmodel_shape *shape, const char *type_s, uint64_t seed,
                     const char *out, bool force) {
    ts_mkmodel_mmproj_params p = ts_mkmodel_mmproj_gemma3(shape->n_embd);
    p.seed = seed;
    if (type_s && !ts_mkmodel_type_from_name(type_s, &p.type)) p.type = 0;
    if (p.type != TS_TYPE_F16 && p.type != TS_TYPE_F32) {
        fprintf(stderr, "tessera mkmodel: --mmproj --type '%s' (f16 or f32)\n", type_s);
        return 2;
    }
    struct stat sb;
    if (!force && stat(out, &sb) == 0) {
        fprintf(stderr, "tessera mkmodel: '%s' exists (use --force to replace it)\n", out);
        return 1;
    }
    char tmp[4096];
    if ((size_t)snprintf(tmp, sizeof tmp, "%s.tmp", out) >= sizeof tmp) {
        fprintf(stderr, "tessera mkmodel: output path too long\n");
        return 2;
    }
    FILE *f = fopen(tmp, "wb");
    if (!f) {
        fprintf(stderr, "tessera mkmodel: cannot create '%s': %s\n", tmp, strerror(errno));
        return 1;
    }
    setvbuf(f, NULL, _IOFBF, 1 << 20);
    const double t0 = now_s();
    ts_status rc = ts_mkmodel_write_mmproj(&p, f);
    const bool closed = fclose(f) == 0;
    if (rc != TS_OK || !closed || rename(tmp, out) != 0) {
        fprintf(stderr, "tessera mkmodel: writing '%s': %s\n", tmp,
                rc != TS_OK ? ts_last_error() : strerror(errno));
        remove(tmp);
        return 1;
    }
    printf("mkmodel: mmproj %ux%u / %u, width %u, ff %u, %u layers, %u heads, pool %u, "
           "projection to %u, type %s, seed %" PRIu64 ": %s in %.1f s\n", p.image_size,
           p.image_size, p.patch_size, p.n_embd, p.n_ff, p.n_layer, p.n_head, p.pool,
           p.proj_dim, ts_type_name(p.type), seed, out, now_s() - t0);
    return 0;
}

int ts_cmd_mkmodel(int argc, char **argv) {
    const char *size = NULL, *type_s = NULL, *out = NULL;
    uint64_t seed = 0, vocab = 0, ctx = 0;
    bool force = false, dry = false, mmproj = false;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            mk_usage(stdout);
            return 0;
        } else if (!strcmp(a, "--force")) {
            force = true;
        } else if (!strcmp(a, "--dry-run")) {
            dry = true;
        } else if (!strcmp(a, "--mmproj")) {
            mmproj = true;
        } else if (is_opt(a, "--size")) {
            if (!(size = opt_value(argc, argv, &i, "--size"))) return 2;
        } else if (is_opt(a, "--type")) {
            if (!(type_s = opt_value(argc, argv, &i, "--type"))) return 2;
        } else if (!strcmp(a, "-o") || is_opt(a, "--output")) {
            if (!(out = opt_value(argc, argv, &i, a[1] == 'o' ? "-o" : "--output"))) return 2;
        } else if (is_opt(a, "--seed")) {
            if (!(v = opt_value(argc, argv, &i, "--seed"))) return 2;
            if (!parse_u64(v, &seed)) {
                fprintf(stderr, "tessera mkmodel: --seed '%s' is not an unsigned 64-bit integer\n", v);
                return 2;
            }
        } else if (is_opt(a, "--vocab")) {
            if (!(v = opt_value(argc, argv, &i, "--vocab"))) return 2;
            if (!parse_u64(v, &vocab) || vocab < TS_MKMODEL_MIN_VOCAB ||
                vocab > TS_MKMODEL_MAX_VOCAB) {
                fprintf(stderr, "tessera mkmodel: --vocab '%s' must be an integer in [%u, %u]\n",
                        v, TS_MKMODEL_MIN_VOCAB, TS_MKMODEL_MAX_VOCAB);
                return 2;
            }
        } else if (is_opt(a, "--ctx")) {
            if (!(v = opt_value(argc, argv, &i, "--ctx"))) return 2;
            if (!parse_u64(v, &ctx) || ctx < 1 || ctx > (1u << 24)) {
                fprintf(stderr, "tessera mkmodel: --ctx '%s' must be an integer in [1, %u]\n", v,
                        1u << 24);
                return 2;
            }
        } else {
            fprintf(stderr, "tessera mkmodel: unknown argument '%s'\n\n", a);
            mk_usage(stderr);
            return 2;
        }
    }
    if (mmproj) {
        const ts_mkmodel_shape *sh = ts_mkmodel_shape_by_name(size);
        if (!sh || !out) {
            fprintf(stderr, "tessera mkmodel: --mmproj needs --size SIZE (its text width) and "
                    "-o FILE\n");
            return 2;
        }
        return mk_mmproj(sh, type_s ? type_s : "f16", seed, out, force);
    }
    if (!size || !type_s || (!out && !dry)) {
        fprintf(stderr, "tessera mkmodel: --size, --type and -o are required\n\n");
        mk_usage(stderr);
        return 2;
    }
    const ts_mkmodel_shape *shape = ts_mkmodel_shape_by_name(size);
    if (!shape) {
        fprintf(stderr, "tessera mkmodel: unknown --size '%s' (tiny, 270m, 1b, 4b, 12b, 27b)\n",
                size);
        return 2;
    }
    uint32_t type;
    if (!ts_mkmodel_type_from_name(type_s, &type)) {
        fprintf(stderr, "tessera mkmodel: unknown --type '%s' (q4_0, q8_0, f16, f32)\n", type_s);
        return 2;
    }
    progress_state ps = {0};
    ts_mkmodel_params p = {.shape = shape, .type = type, .seed = seed,
                           .n_vocab = (uint32_t)vocab, .n_ctx = (uint32_t)ctx};
    uint64_t est = 0, n_params = 0;
    if (ts_mkmodel_estimate_bytes(&p, &est, &n_params) != TS_OK) {
        fprintf(stderr, "tessera mkmodel: %s\n", ts_last_error());
        return 1;
    }
    const char *tname = ts_type_name(type);
    printf("mkmodel: size %s, type %s, seed %" PRIu64 ", vocab %u, ctx %u\n", shape->name, tname,
           seed, vocab ? (uint32_t)vocab : TS_MKMODEL_DEFAULT_VOCAB,
           ctx ? (uint32_t)ctx : shape->n_ctx);
    printf("  %u layers, d %u, ff %u, heads %u/%u, head_dim %u, window %u\n", shape->n_layer,
           shape->n_embd, shape->n_ff, shape->n_head, shape->n_head_kv, shape->head_dim,
           shape->sliding_window);
    printf("  params %" PRIu64 " (%.3f B), file %" PRIu64 " bytes (%.2f GiB)\n", n_params,
           (double)n_params / 1e9, est, (double)est / (1024.0 * 1024.0 * 1024.0));
    if (dry) return 0;

    struct stat sb;
    if (!force && stat(out, &sb) == 0) {
        fprintf(stderr, "tessera mkmodel: '%s' exists (use --force to replace it)\n", out);
        return 1;
    }
    size_t tl = strlen(out) + 5;
    char *tmp = ts_malloc(tl);
    if (!tmp) {
        fprintf(stderr, "tessera mkmodel: out of memory\n");
        return 1;
    }
    snprintf(tmp, tl, "%s.tmp", out);
    FILE *f = fopen(tmp, "wb");
    if (!f) {
        fprintf(stderr, "tessera mkmodel: cannot create '%s': %s\n", tmp, strerror(errno));
        ts_free(tmp);
        return 1;
    }
    /* Large stdio buffer: tensors are written with one fwrite each anyway. */
    setvbuf(f, NULL, _IOFBF, 1 << 20);
    if (isatty(STDERR_FILENO)) {
        p.progress = progress;
        p.progress_ctx = &ps;
    }
    ps.t0 = ps.last = now_s();
    errno = 0;
    ts_status rc = ts_mkmodel_write(&p, f);
    int err = 0;
    if (rc == TS_OK && fsync(fileno(f)) != 0 && errno != EINVAL && errno != EROFS) err = errno;
    if (fclose(f) != 0 && rc == TS_OK && !err) err = errno ? errno : EIO;
    if (rc != TS_OK || err) {
        if (rc != TS_OK)
            fprintf(stderr, "tessera mkmodel: writing '%s': %s%s%s\n", tmp, ts_last_error(),
                    errno ? ": " : "", errno ? strerror(errno) : "");
        else
            fprintf(stderr, "tessera mkmodel: writing '%s': %s\n", tmp, strerror(err));
        remove(tmp);
        ts_free(tmp);
        return 1;
    }
    double el = now_s() - ps.t0;
    if (rename(tmp, out) != 0) {
        fprintf(stderr, "tessera mkmodel: cannot rename '%s' to '%s': %s\n", tmp, out,
                strerror(errno));
        remove(tmp);
        ts_free(tmp);
        return 1;
    }
    ts_free(tmp);
    uint64_t bytes = stat(out, &sb) == 0 ? (uint64_t)sb.st_size : est;
    printf("  wrote %s: %" PRIu64 " bytes in %.2f s (%.0f MB/s)\n", out, bytes, el,
           el > 0 ? (double)bytes / 1e6 / el : 0.0);
    return 0;
}
