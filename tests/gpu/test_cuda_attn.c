/* test_cuda_attn.c: the CUDA attention kernels (kernels/cuda/attn.cu: flash prefill,
 * split-K decode; and ts_k_attention_cuda, the per-(token, head) kernel) against the CPU
 * backend's reference attention (shard/backend_cpu.c, reference mode) on the same paged KV
 * cache, on fresh random inputs. The seed comes from the clock and is printed; set
 * TESSERA_TEST_SEED to replay a run.
 *
 * Kernel level: a KV cache of three sequences whose pages are interleaved (reserved in
 * turns, one released and re-reserved), keys / values of every stored position random,
 * stored into the CPU backend (kv_store) and mirrored into device pools at the same slots;
 * the step's page table built here as shard/backend_cuda.c builds it. Cases: head_dim 64 /
 * 128 / 256, GQA ratios 1 / 2 / 4 / 8, windows smaller and larger than the context, contexts of
 * 1 .. 4200 positions, decode (1 token per sequence, 1-8 tokens) and prefill (512 tokens of
 * one sequence next to chunks of the others), bidirectional image blocks (hi > pos), query
 * scales 1 and 6 (sharp softmax: the online rescaling matters). Every kernel's output vs
 * the reference: NMSE <= 1e-10 (fp32 sums in another order and expf; ~1e-14 expected).
 * Split-K at 1, 2, 5 and 32 splits.
 * Fused ops (rmsnorm_add, qk_norm_rope): bit-identical to the separate CUDA ops they
 * replace (and y of rmsnorm_add unchanged), NMSE <= 1e-12 against the CPU backend's ops.
 * Backend level: ts_backend_cuda_create under TESSERA_CUDA_ATTN=auto / basic / flash /
 * splitk (kv_init sizes the split-K scratch), kv_store + attention vs the CPU backend, same
 * bound; a bad TESSERA_CUDA_ATTN value is refused at create.
 * Plain C main (no cmocka: the GPU machine lacks it). Exits 77 when there is no GPU; prints
 * "N passed, N failed" and exits 1 on any failure. Label `gpu`.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cuda_runtime_api.h>

#include "backend.h"
#include "kernels_cuda.h"
#include "kvcache.h"
#include "test_rand.h"

static int g_pass, g_fail;
static double g_worst[4]; /* basic, flash, split, backend */

static void check(bool ok, const char *what) {
    if (ok) g_pass++;
    else {
        g_fail++;
        printf("FAIL: %s\n", what);
    }
}



static void *xmalloc(size_t n) {
    void *p = malloc(n ? n : 1);
    if (!p) {
        printf("FAIL: out of host memory (%zu bytes)\n", n);
        exit(1);
    }
    return p;
}

static void *dmalloc(size_t n) {
    void *p = NULL;
    if (cudaMalloc(&p, n ? n : 1) != cudaSuccess) {
        printf("FAIL: cudaMalloc(%zu)\n", n);
        exit(1);
    }
    return p;
}

static bool h2d(void *d, const void *h, size_t n) {
    return cudaMemcpy(d, h, n, cudaMemcpyHostToDevice) == cudaSuccess;
}
static bool d2h(void *h, const void *d, size_t n) {
    return cudaMemcpy(h, d, n, cudaMemcpyDeviceToHost) == cudaSuccess;
}

typedef struct {
    const char *name;
    int32_t hd, n_kv, group, ps, window, n_ctx;
    int32_t len[3];  /* positions stored per sequence (0: the sequence is absent) */
    int32_t nq[3];   /* queries per sequence: its last nq positions */
    int32_t img[2];  /* image block [img0, img1] of sequence 0 (hi = img1 inside; -1: none) */
    float qscale;
} attn_case;

/* The step's page table as backend_cuda.c kv_table builds it. Returns its length. */
static int64_t build_table(const ts_kvcache *kv, const int32_t *pos, const int32_t *seq,
                           int64_t n_tok, int32_t *tab) {
    const int32_t ps = ts_kv_page_size(kv), ring = ts_kv_ring_pages(kv);
    int32_t sseq[64], smax[64];
    int64_t n_seg = 0, off = 0;
    for (int64_t t = 0; t < n_tok; t++) {
        int64_t s = 0;
        while (s < n_seg && sseq[s] != seq[t]) s++;
        if (s == n_seg) {
            sseq[n_seg] = seq[t];
            smax[n_seg++] = pos[t];
        } else if (pos[t] > smax[s]) {
            smax[s] = pos[t];
        }
    }
    int32_t *pt = tab + 3 * n_tok;
    for (int64_t s = 0; s < n_seg; s++) {
        const int32_t goff = (int32_t)off;
        for (int32_t pi = 0; pi <= smax[s] / ps; pi++) pt[off++] = ts_kv_global_page(kv, sseq[s], pi * ps);
        const int32_t loff = (int32_t)off;
        for (int32_t ri = 0; ri < ring; ri++) pt[off++] = ts_kv_local_page(kv, sseq[s], ri * ps);
        for (int64_t t = 0; t < n_tok; t++)
            if (seq[t] == sseq[s]) {
                tab[3 * t] = pos[t];
                tab[3 * t + 1] = goff;
                tab[3 * t + 2] = loff;
            }
    }
    return 3 * n_tok + off;
}

/* slot of (seq, pos) in a layer kind's pool, as both backends map it */
static size_t slot_of(const ts_kvcache *kv, bool g, int32_t s, int32_t p) {
    const int32_t ps = ts_kv_page_size(kv);
    const int32_t page = g ? ts_kv_global_page(kv, s, p) : ts_kv_local_page(kv, s, p);
    return (size_t)page * (size_t)ps + (size_t)(p % ps);
}

static const char *mode_name[] = {"basic", "flash", "split"};

static void run_case(const attn_case *tc) {
    char what[400];
    const int32_t hd = tc->hd, n_kv = tc->n_kv, H = n_kv * tc->group, kd = n_kv * hd;
    const int32_t ps = tc->ps;
    int32_t max_len = 1, max_q = 1;
    for (int s = 0; s < 3; s++) {
        if (tc->len[s] > max_len) max_len = tc->len[s];
        if (tc->nq[s] > max_q) max_q = tc->nq[s];
    }
    const int32_t chunk = max_q > 64 ? max_q : 64;
    ts_kv_params kp = {.page_size = ps, .n_seq_max = 3, .n_ctx = tc->n_ctx, .max_chunk = chunk,
                       .window = tc->window,
                       .global_pages = 3 * ((int64_t)tc->n_ctx / ps + 2),
                       .n_global_layers = 1, .n_local_layers = 1};
    ts_kvcache *kv = NULL;
    if (ts_kv_create(&kp, &kv) != TS_OK) {
        snprintf(what, sizeof what, "%s: kv create: %s", tc->name, ts_last_error());
        check(false, what);
        return;
    }
    /* interleaved reservations: the sequences' pages alternate in the pool */
    const int32_t step = 3 * ps;
    for (int32_t n = step; n < max_len + step; n += step)
        for (int s = 0; s < 3; s++)
            if (tc->len[s] > 0) {
                const int32_t want = n < tc->len[s] ? n : tc->len[s];
                if (ts_kv_reserve(kv, s, want) != TS_OK) {
                    snprintf(what, sizeof what, "%s: reserve: %s", tc->name, ts_last_error());
                    check(false, what);
                    ts_kv_destroy(kv);
                    return;
                }
                if (s == 1 && n == step && tc->len[2] > 0) { /* scramble: release, re-take */
                    ts_kv_release(kv, 1);
                    ts_kv_reserve(kv, 1, want);
                }
            }
    const uint8_t is_global[2] = {0, 1};
    ts_kv_layout kl = {.n_layer = 2, .is_global = is_global,
                       .global_pages = ts_kv_global_pages(kv),
                       .local_pages = ts_kv_local_pages(kv), .page_size = ps, .kv_dim = kd,
                       .n_ctx = tc->n_ctx, .n_batch = chunk};
    ts_backend *cpu = NULL;
    if (ts_backend_cpu_create(0, true, &cpu) != TS_OK || cpu->ops->kv_init(cpu, &kl) != TS_OK) {
        snprintf(what, sizeof what, "%s: cpu backend: %s", tc->name, ts_last_error());
        check(false, what);
        ts_backend_destroy(cpu);
        ts_kv_destroy(kv);
        return;
    }
    /* keys / values of every stored position: CPU backend + host mirrors of the pools */
    const size_t gslots = (size_t)kl.global_pages * ps, lslots = (size_t)kl.local_pages * ps;
    float *Kh[2], *Vh[2];
    const size_t nslots[2] = {lslots, gslots};
    for (int l = 0; l < 2; l++) {
        Kh[l] = xmalloc(sizeof(float) * nslots[l] * kd);
        Vh[l] = xmalloc(sizeof(float) * nslots[l] * kd);
        memset(Kh[l], 0, sizeof(float) * nslots[l] * kd);
        memset(Vh[l], 0, sizeof(float) * nslots[l] * kd);
    }
    float *kb = xmalloc(sizeof(float) * (size_t)chunk * kd), *vb = xmalloc(sizeof(float) * (size_t)chunk * kd);
    int32_t *pb = xmalloc(sizeof(int32_t) * (size_t)chunk), *sb = xmalloc(sizeof(int32_t) * (size_t)chunk);
    bool ok = true;
    for (int32_t p0 = 0; p0 < max_len && ok; p0 += chunk)
        for (int s = 0; s < 3 && ok; s++) {
            if (p0 >= tc->len[s]) continue;
            const int32_t n = tc->len[s] - p0 < chunk ? tc->len[s] - p0 : chunk;
            for (int32_t i = 0; i < n; i++) {
                pb[i] = p0 + i;
                sb[i] = s;
            }
            fill(kb, (size_t)n * kd, 1.0f);
            fill(vb, (size_t)n * kd, 1.0f);
            for (int l = 0; l < 2 && ok; l++) {
                ok = cpu->ops->kv_store(cpu, l, is_global[l], kb, vb, n, pb, sb, kv) == TS_OK;
                for (int32_t i = 0; i < n; i++) {
                    const size_t sl = slot_of(kv, is_global[l], s, pb[i]);
                    memcpy(Kh[l] + sl * kd, kb + (size_t)i * kd, sizeof(float) * kd);
                    memcpy(Vh[l] + sl * kd, vb + (size_t)i * kd, sizeof(float) * kd);
                }
            }
        }
    float *Kd[2], *Vd[2];
    for (int l = 0; l < 2; l++) {
        Kd[l] = dmalloc(sizeof(float) * nslots[l] * kd);
        Vd[l] = dmalloc(sizeof(float) * nslots[l] * kd);
        ok = ok && h2d(Kd[l], Kh[l], sizeof(float) * nslots[l] * kd) &&
             h2d(Vd[l], Vh[l], sizeof(float) * nslots[l] * kd);
    }
    /* the step: each sequence's last nq positions, sequences interleaved in blocks of 5 */
    int32_t T = 0;
    for (int s = 0; s < 3; s++) T += tc->len[s] > 0 ? tc->nq[s] : 0;
    int32_t *pos = xmalloc(sizeof(int32_t) * T), *seq = xmalloc(sizeof(int32_t) * T),
            *hi = xmalloc(sizeof(int32_t) * T);
    {
        int32_t done[3] = {0, 0, 0}, t = 0;
        while (t < T)
            for (int s = 0; s < 3; s++)
                for (int k = 0; k < 5 && tc->len[s] > 0 && done[s] < tc->nq[s]; k++, done[s]++) {
                    pos[t] = tc->len[s] - tc->nq[s] + done[s];
                    seq[t] = s;
                    hi[t] = pos[t];
                    if (s == 0 && tc->img[0] >= 0 && pos[t] >= tc->img[0] && pos[t] <= tc->img[1])
                        hi[t] = tc->img[1];
                    t++;
                }
    }
    const bool use_hi = tc->img[0] >= 0;
    const size_t nq = (size_t)T * H * hd;
    float *q = xmalloc(sizeof(float) * nq), *ref = xmalloc(sizeof(float) * nq),
          *got = xmalloc(sizeof(float) * nq);
    fill(q, nq, tc->qscale);
    int32_t *tab = xmalloc(sizeof(int32_t) * (3 * (size_t)T + 3 * ((size_t)tc->n_ctx / ps + 2) +
                                              3 * (size_t)ts_kv_ring_pages(kv) + 8));
    const int64_t tab_n = build_table(kv, pos, seq, T, tab);
    float *qd = dmalloc(sizeof(float) * nq), *od = dmalloc(sizeof(float) * nq);
    int32_t *tabd = dmalloc(sizeof(int32_t) * (size_t)tab_n), *hid = dmalloc(sizeof(int32_t) * T);
    const size_t part_n = ts_k_attn_split_scratch_floats(T, H, hd, TS_K_ATTN_MAX_SPLIT);
    float *part = dmalloc(sizeof(float) * (part_n ? part_n : 1));
    ok = ok && h2d(qd, q, sizeof(float) * nq) && h2d(tabd, tab, sizeof(int32_t) * (size_t)tab_n) &&
         h2d(hid, hi, sizeof(int32_t) * T);
    if (!ok) {
        snprintf(what, sizeof what, "%s: setup: %s", tc->name, ts_last_error());
        check(false, what);
    }
    const float scale = 1.0f / sqrtf((float)hd);
    for (int l = 0; l < 2 && ok; l++) {
        const bool g = is_global[l];
        ts_attn_args a = {.layer = l, .is_global = g, .n_tok = T, .q = q, .out = ref,
                          .pos = pos, .seq = seq, .hi = use_hi ? hi : NULL, .n_head = H,
                          .n_head_kv = n_kv, .head_dim = hd, .window = tc->window,
                          .scale = scale, .kv = kv};
        if (cpu->ops->attention(cpu, &a) != TS_OK) {
            snprintf(what, sizeof what, "%s: cpu attention: %s", tc->name, ts_last_error());
            check(false, what);
            continue;
        }
        ts_k_kv_args ka = {.tab = tabd, .n_tok = T, .page_size = ps,
                           .ring = ts_kv_ring_pages(kv) > 0 ? ts_kv_ring_pages(kv) : 1,
                           .kv_dim = kd, .is_global = g};
        /* mode 0: basic (no hi), 1: flash, 2..5: split-K with 1, 2, 5, 32 splits */
        const int32_t splits[] = {1, 2, 5, 32};
        for (int m = 0; m < 6; m++) {
            if (m == 0 && use_hi) continue;
            if (m == 1 && !ts_k_attn_flash_supports_cuda(hd, tc->group)) {
                printf("note: %s: flash unsupported on this device (hd %d group %d)\n", tc->name,
                       hd, tc->group);
                continue;
            }
            if (cudaMemset(od, 0xff, sizeof(float) * nq) != cudaSuccess) ok = false; /* NaNs */
            ts_status rc;
            const int32_t ns = m >= 2 ? splits[m - 2] : 1;
            if (m == 0)
                rc = ts_k_attention_cuda(&ka, Kd[l], Vd[l], qd, od, H, n_kv, hd, tc->window,
                                         scale, NULL);
            else if (m == 1)
                rc = ts_k_attn_flash_cuda(&ka, Kd[l], Vd[l], qd, od, use_hi ? hid : NULL, H,
                                          n_kv, hd, tc->window, scale, NULL);
            else
                rc = ts_k_attn_split_cuda(&ka, Kd[l], Vd[l], qd, od, use_hi ? hid : NULL, H,
                                          n_kv, hd, tc->window, scale, ns, part, part_n, NULL);
            const bool run = rc == TS_OK && cudaDeviceSynchronize() == cudaSuccess &&
                             d2h(got, od, sizeof(float) * nq);
            const double e = run ? nmse(got, ref, nq) : INFINITY;
            const int k = m < 2 ? m : 2;
            if (e > g_worst[k]) g_worst[k] = e;
            snprintf(what, sizeof what, "%s %s%s%.0d %s: hd %d kv %d group %d ps %d window %d "
                     "T %d: nmse %.3g%s%s", tc->name, mode_name[k], m >= 2 ? " x" : "",
                     m >= 2 ? ns : 0, g ? "global" : "local", hd, n_kv, tc->group, ps,
                     tc->window, T, e, rc == TS_OK ? "" : ": ", rc == TS_OK ? "" : ts_last_error());
            check(e <= 1e-10, what);
        }
    }
    for (int l = 0; l < 2; l++) {
        cudaFree(Kd[l]);
        cudaFree(Vd[l]);
        free(Kh[l]);
        free(Vh[l]);
    }
    cudaFree(qd);
    cudaFree(od);
    cudaFree(tabd);
    cudaFree(hid);
    cudaFree(part);
    free(kb); free(vb); free(pb); free(sb); free(pos); free(seq); free(hi);
    free(q); free(ref); free(got); free(tab);
    ts_backend_destroy(cpu);
    ts_kv_destroy(kv);
}

/* The backend's choice and scratch under each TESSERA_CUDA_ATTN mode: prefill of two
 * sequences (flash in auto), then decode steps (split-K in auto), vs the CPU backend. */
static void backend_mode(const char *mode) {
    char what[300];
    const int32_t hd = 128, n_kv = 2, group = 2, H = n_kv * group, kd = n_kv * hd, ps = 16;
    const int32_t n_ctx = 1200, window = 100, chunk = 300;
    setenv("TESSERA_CUDA_ATTN", mode, 1);
    ts_kv_params kp = {.page_size = ps, .n_seq_max = 2, .n_ctx = n_ctx, .max_chunk = chunk,
                       .window = window, .global_pages = 2 * n_ctx / ps + 2,
                       .n_global_layers = 1, .n_local_layers = 1};
    ts_kvcache *kv = NULL;
    ts_backend *gpu = NULL, *cpu = NULL;
    const uint8_t is_global[2] = {0, 1};
    if (ts_kv_create(&kp, &kv) != TS_OK) {
        check(false, "backend: kv create");
        return;
    }
    ts_kv_layout kl = {.n_layer = 2, .is_global = is_global,
                       .global_pages = ts_kv_global_pages(kv),
                       .local_pages = ts_kv_local_pages(kv), .page_size = ps, .kv_dim = kd,
                       .n_ctx = n_ctx, .n_batch = 2 * chunk, .n_head = H, .head_dim = hd};
    if (ts_backend_cuda_create(0, &gpu) != TS_OK || ts_backend_cpu_create(0, true, &cpu) != TS_OK ||
        gpu->ops->kv_init(gpu, &kl) != TS_OK || cpu->ops->kv_init(cpu, &kl) != TS_OK) {
        snprintf(what, sizeof what, "backend %s: create: %s", mode, ts_last_error());
        check(false, what);
        goto out;
    }
    /* steps: (tokens of seq 0, tokens of seq 1): prefill chunks, then decodes */
    const int32_t steps[][2] = {{300, 250}, {300, 0}, {200, 1}, {1, 1}, {1, 0}, {0, 1}};
    int32_t done[2] = {0, 0};
    for (size_t si = 0; si < sizeof steps / sizeof steps[0]; si++) {
        const int32_t T = steps[si][0] + steps[si][1];
        if (ts_kv_reserve(kv, 0, done[0] + steps[si][0]) != TS_OK ||
            ts_kv_reserve(kv, 1, done[1] + steps[si][1]) != TS_OK) {
            check(false, "backend: reserve");
            goto out;
        }
        int32_t *pos = xmalloc(sizeof(int32_t) * T), *seq = xmalloc(sizeof(int32_t) * T);
        for (int32_t t = 0; t < T; t++) {
            const int s = t < steps[si][0] ? 0 : 1;
            seq[t] = s;
            pos[t] = done[s]++;
        }
        const size_t nq = (size_t)T * H * hd, nk = (size_t)T * kd;
        float *q = xmalloc(sizeof(float) * nq), *k = xmalloc(sizeof(float) * nk),
              *v = xmalloc(sizeof(float) * nk), *ref = xmalloc(sizeof(float) * nq),
              *got = xmalloc(sizeof(float) * nq);
        fill(q, nq, 3.0f);
        fill(k, nk, 1.0f);
        fill(v, nk, 1.0f);
        float *dq = NULL, *dk = NULL, *dv = NULL, *dout = NULL;
        bool ok = gpu->ops->alloc(gpu, sizeof(float) * nq, (void **)&dq) == TS_OK &&
                  gpu->ops->alloc(gpu, sizeof(float) * nk, (void **)&dk) == TS_OK &&
                  gpu->ops->alloc(gpu, sizeof(float) * nk, (void **)&dv) == TS_OK &&
                  gpu->ops->alloc(gpu, sizeof(float) * nq, (void **)&dout) == TS_OK &&
                  gpu->ops->to_device(gpu, dq, q, sizeof(float) * nq) == TS_OK &&
                  gpu->ops->to_device(gpu, dk, k, sizeof(float) * nk) == TS_OK &&
                  gpu->ops->to_device(gpu, dv, v, sizeof(float) * nk) == TS_OK;
        if (ok && gpu->ops->step_begin) ok = gpu->ops->step_begin(gpu, pos, seq, T, kv) == TS_OK;
        for (int32_t layer = 0; layer < 2 && ok; layer++) {
            const bool g = is_global[layer];
            ts_attn_args a = {.layer = layer, .is_global = g, .n_tok = T, .q = q, .out = ref,
                              .pos = pos, .seq = seq, .n_head = H, .n_head_kv = n_kv,
                              .head_dim = hd, .window = window, .scale = 1.0f / sqrtf((float)hd),
                              .kv = kv};
            ts_status rc = cpu->ops->kv_store(cpu, layer, g, k, v, T, pos, seq, kv);
            if (rc == TS_OK) rc = cpu->ops->attention(cpu, &a);
            ts_status rg = gpu->ops->kv_store(gpu, layer, g, dk, dv, T, pos, seq, kv);
            a.q = dq;
            a.out = dout;
            if (rg == TS_OK) rg = gpu->ops->attention(gpu, &a);
            const bool run = rc == TS_OK && rg == TS_OK &&
                             gpu->ops->to_host(gpu, got, dout, sizeof(float) * nq) == TS_OK;
            const double e = run ? nmse(got, ref, nq) : INFINITY;
            if (e > g_worst[3]) g_worst[3] = e;
            snprintf(what, sizeof what, "backend TESSERA_CUDA_ATTN=%s step %zu %s T %d: nmse %.3g%s%s",
                     mode, si, g ? "global" : "local", T, e, run ? "" : ": ",
                     run ? "" : ts_last_error());
            check(e <= 1e-10, what);
        }
        if (!ok) check(false, "backend: step setup");
        gpu->ops->free(gpu, dq);
        gpu->ops->free(gpu, dk);
        gpu->ops->free(gpu, dv);
        gpu->ops->free(gpu, dout);
        free(q); free(k); free(v); free(ref); free(got); free(pos); free(seq);
    }
out:
    ts_backend_destroy(gpu);
    ts_backend_destroy(cpu);
    ts_kv_destroy(kv);
    unsetenv("TESSERA_CUDA_ATTN");
}

/* ---- fused ops vs the separate ops (bit-identical) and vs the CPU backend ---- */

static float *dnew(ts_backend *g, const float *h, size_t n) {
    void *d = NULL;
    if (g->ops->alloc(g, sizeof(float) * n, &d) != TS_OK) return NULL;
    if (h && g->ops->to_device(g, d, h, sizeof(float) * n) != TS_OK) return NULL;
    return d;
}

static void test_fused(void) {
    char what[200];
    ts_backend *gpu = NULL, *cpu = NULL;
    if (ts_backend_cuda_create(0, &gpu) != TS_OK || ts_backend_cpu_create(0, true, &cpu) != TS_OK) {
        check(false, "fused: backends");
        ts_backend_destroy(gpu);
        ts_backend_destroy(cpu);
        return;
    }
    const ts_backend_ops *G = gpu->ops, *Cp = cpu->ops;
    check(G->rmsnorm_add && G->qk_norm_rope, "CUDA backend has rmsnorm_add and qk_norm_rope");
    if (!G->rmsnorm_add || !G->qk_norm_rope) goto out;
    const int64_t rn[][2] = {{1, 5376}, {7, 640}, {33, 1152}, {3, 100}};
    for (size_t i = 0; i < sizeof rn / sizeof rn[0]; i++) {
        const int64_t R = rn[i][0], N = rn[i][1];
        const size_t n = (size_t)(R * N);
        float *x = xmalloc(sizeof(float) * n), *y = xmalloc(sizeof(float) * n),
              *w = xmalloc(sizeof(float) * (size_t)N), *a = xmalloc(sizeof(float) * n),
              *f = xmalloc(sizeof(float) * n), *yb = xmalloc(sizeof(float) * n),
              *ref = xmalloc(sizeof(float) * n), *tmp = xmalloc(sizeof(float) * n);
        fill(x, n, 4.0f);
        fill(y, n, 30.0f);
        fill(w, (size_t)N, 2.0f);
        float *dx1 = dnew(gpu, x, n), *dx2 = dnew(gpu, x, n), *dy = dnew(gpu, y, n),
              *dw = dnew(gpu, w, (size_t)N), *dt = dnew(gpu, NULL, n);
        bool ok = dx1 && dx2 && dy && dw && dt &&
                  G->rmsnorm(gpu, dt, dy, dw, R, N, 1e-6f) == TS_OK &&
                  G->add(gpu, dx1, dt, (int64_t)n) == TS_OK &&
                  G->rmsnorm_add(gpu, dx2, dy, dw, R, N, 1e-6f) == TS_OK &&
                  G->to_host(gpu, a, dx1, sizeof(float) * n) == TS_OK &&
                  G->to_host(gpu, f, dx2, sizeof(float) * n) == TS_OK &&
                  G->to_host(gpu, yb, dy, sizeof(float) * n) == TS_OK;
        memcpy(ref, x, sizeof(float) * n);
        ok = ok && Cp->rmsnorm(cpu, tmp, y, w, R, N, 1e-6f) == TS_OK &&
             Cp->add(cpu, ref, tmp, (int64_t)n) == TS_OK;
        const double e = ok ? nmse(f, ref, n) : INFINITY;
        snprintf(what, sizeof what, "rmsnorm_add %lld x %lld: == rmsnorm + add (bit-exact), y "
                 "unchanged, nmse vs cpu %.3g <= 1e-12", (long long)R, (long long)N, e);
        check(ok && !memcmp(a, f, sizeof(float) * n) && !memcmp(y, yb, sizeof(float) * n) &&
                  e <= 1e-12, what);
        G->free(gpu, dx1); G->free(gpu, dx2); G->free(gpu, dy); G->free(gpu, dw); G->free(gpu, dt);
        free(x); free(y); free(w); free(a); free(f); free(yb); free(ref); free(tmp);
    }
    /* n_tok, n_head, n_head_kv, head_dim, base, scale */
    const struct { int64_t T, H, KV, hd; float base, scale; } qc[] = {
        {1, 32, 16, 128, 10000.0f, 1.0f}, {5, 4, 1, 256, 1000000.0f, 8.0f},
        {17, 8, 4, 64, 10000.0f, 1.0f}, {64, 2, 2, 128, 1000000.0f, 8.0f}};
    for (size_t i = 0; i < sizeof qc / sizeof qc[0]; i++) {
        const int64_t T = qc[i].T, H = qc[i].H, KV = qc[i].KV, hd = qc[i].hd;
        const size_t nq = (size_t)(T * H * hd), nk = (size_t)(T * KV * hd);
        float *q = xmalloc(sizeof(float) * nq), *k = xmalloc(sizeof(float) * nk),
              *qw = xmalloc(sizeof(float) * (size_t)hd), *kw = xmalloc(sizeof(float) * (size_t)hd),
              *qa = xmalloc(sizeof(float) * nq), *ka = xmalloc(sizeof(float) * nk),
              *qf = xmalloc(sizeof(float) * nq), *kf = xmalloc(sizeof(float) * nk);
        int32_t *pos = xmalloc(sizeof(int32_t) * (size_t)T);
        fill(q, nq, 10.0f);
        fill(k, nk, 10.0f);
        fill(qw, (size_t)hd, 2.0f);
        fill(kw, (size_t)hd, 2.0f);
        for (int64_t t = 0; t < T; t++) pos[t] = (int32_t)(rnd64() % 131072);
        float *dq1 = dnew(gpu, q, nq), *dq2 = dnew(gpu, q, nq), *dk1 = dnew(gpu, k, nk),
              *dk2 = dnew(gpu, k, nk), *dqw = dnew(gpu, qw, (size_t)hd), *dkw = dnew(gpu, kw, (size_t)hd);
        const float eps = 1e-6f, b = qc[i].base, sc = qc[i].scale;
        bool ok = dq1 && dq2 && dk1 && dk2 && dqw && dkw &&
                  G->rmsnorm(gpu, dq1, dq1, dqw, T * H, hd, eps) == TS_OK &&
                  G->rmsnorm(gpu, dk1, dk1, dkw, T * KV, hd, eps) == TS_OK &&
                  G->rope(gpu, dq1, pos, T, H, hd, b, sc) == TS_OK &&
                  G->rope(gpu, dk1, pos, T, KV, hd, b, sc) == TS_OK &&
                  G->qk_norm_rope(gpu, dq2, dk2, dqw, dkw, pos, T, H, KV, hd, eps, b, sc) == TS_OK &&
                  G->to_host(gpu, qa, dq1, sizeof(float) * nq) == TS_OK &&
                  G->to_host(gpu, ka, dk1, sizeof(float) * nk) == TS_OK &&
                  G->to_host(gpu, qf, dq2, sizeof(float) * nq) == TS_OK &&
                  G->to_host(gpu, kf, dk2, sizeof(float) * nk) == TS_OK;
        ok = ok && Cp->rmsnorm(cpu, q, q, qw, T * H, hd, eps) == TS_OK &&
             Cp->rmsnorm(cpu, k, k, kw, T * KV, hd, eps) == TS_OK &&
             Cp->rope(cpu, q, pos, T, H, hd, b, sc) == TS_OK &&
             Cp->rope(cpu, k, pos, T, KV, hd, b, sc) == TS_OK;
        const double eq = ok ? nmse(qf, q, nq) : INFINITY, ek = ok ? nmse(kf, k, nk) : INFINITY;
        snprintf(what, sizeof what, "qk_norm_rope T %lld H %lld KV %lld hd %lld: == rmsnorm x2 + "
                 "rope x2 (bit-exact), nmse vs cpu q %.3g k %.3g <= 1e-12", (long long)T,
                 (long long)H, (long long)KV, (long long)hd, eq, ek);
        check(ok && !memcmp(qa, qf, sizeof(float) * nq) && !memcmp(ka, kf, sizeof(float) * nk) &&
                  eq <= 1e-12 && ek <= 1e-12, what);
        G->free(gpu, dq1); G->free(gpu, dq2); G->free(gpu, dk1); G->free(gpu, dk2);
        G->free(gpu, dqw); G->free(gpu, dkw);
        free(q); free(k); free(qw); free(kw); free(qa); free(ka); free(qf); free(kf); free(pos);
    }
out:
    ts_backend_destroy(gpu);
    ts_backend_destroy(cpu);
}

int main(void) {
    int n_dev = 0;
    if (ts_cuda_device_count(&n_dev) != TS_OK || n_dev == 0) {
        printf("no CUDA device: skipped\n");
        return 77;
    }
    (void)seed_rng();
    if (cudaSetDevice(0) != cudaSuccess || ts_k_attn_prepare_cuda() != TS_OK) {
        printf("FAIL: device setup: %s\n", ts_last_error());
        return 1;
    }
    /* name, hd, n_kv, group, ps, window, n_ctx, len[3], nq[3], img, qscale */
    const attn_case cases[] = {
        {"decode-1", 128, 2, 2, 16, 1024, 64, {1, 0, 0}, {1, 0, 0}, {-1, -1}, 1.0f},
        {"decode-3seq", 64, 2, 1, 16, 40, 256, {200, 33, 1}, {1, 1, 1}, {-1, -1}, 1.0f},
        {"decode-8tok", 256, 1, 4, 16, 512, 1100, {1000, 700, 90}, {4, 3, 1}, {-1, -1}, 6.0f},
        {"decode-long", 128, 4, 2, 16, 1024, 4224, {4200, 2500, 0}, {1, 1, 0}, {-1, -1}, 6.0f},
        {"decode-long-hd256", 256, 2, 2, 32, 1024, 4160, {4100, 0, 0}, {2, 0, 0}, {-1, -1}, 1.0f},
        {"prefill-512", 128, 2, 2, 16, 1024, 1024, {512, 0, 0}, {512, 0, 0}, {-1, -1}, 1.0f},
        {"prefill-512-window", 128, 4, 2, 16, 100, 1200, {1100, 0, 0}, {512, 0, 0}, {-1, -1}, 6.0f},
        {"prefill-mixed", 64, 2, 4, 16, 200, 1500, {1300, 600, 77}, {300, 40, 5}, {-1, -1}, 1.0f},
        {"prefill-hd256", 256, 1, 4, 16, 512, 1100, {1024, 100, 0}, {512, 10, 0}, {-1, -1}, 6.0f},
        {"prefill-g1", 64, 3, 1, 8, 64, 600, {513, 0, 0}, {513, 0, 0}, {-1, -1}, 6.0f},
        {"prefill-ps4", 128, 1, 2, 4, 30, 300, {250, 120, 0}, {60, 60, 0}, {-1, -1}, 1.0f},
        {"group8", 64, 1, 8, 16, 128, 700, {650, 300, 0}, {70, 2, 0}, {-1, -1}, 6.0f},
        {"image", 128, 2, 2, 16, 64, 512, {400, 50, 0}, {300, 10, 0}, {180, 339}, 1.0f},
        {"image-hd256", 256, 1, 4, 16, 1024, 640, {600, 0, 0}, {200, 0, 0}, {420, 599}, 6.0f},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) run_case(&cases[i]);
    test_fused();
    const char *modes[] = {"auto", "basic", "flash", "splitk"};
    for (size_t i = 0; i < 4; i++) backend_mode(modes[i]);
    {
        ts_backend *b = NULL;
        setenv("TESSERA_CUDA_ATTN", "fast", 1);
        const ts_status rc = ts_backend_cuda_create(0, &b);
        check(rc == TS_INVAL && b == NULL && strstr(ts_last_error(), "TESSERA_CUDA_ATTN=fast"),
              "TESSERA_CUDA_ATTN=fast is refused at create, naming the value");
        ts_backend_destroy(b);
        unsetenv("TESSERA_CUDA_ATTN");
    }
    printf("worst nmse: basic %.3g, flash %.3g, split-K %.3g, backend modes %.3g\n", g_worst[0],
           g_worst[1], g_worst[2], g_worst[3]);
    printf("%d passed, %d failed\n", g_pass, g_fail);
    return g_fail ? 1 : 0;
}
