/* attn_main.cpp: attn.cu kernels on the CPU (run.sh) vs a double-precision reference: flash
 * (multi-sequence tiles, windows, global / local rings, image hi) and split-K at 1, 2, 5, 32
 * splits with the combine kernel, on shuffled pages. */
#include "attn_k.cpp"
#include <cstdio>
#include <random>
#include <algorithm>
static std::mt19937_64 rng(42);
static float fr() { return std::uniform_real_distribution<float>(-1, 1)(rng); }
static double worst = 0; static int fails = 0, runs = 0;
struct Case { int D, nkv, G, ps, window; bool global; std::vector<int> len, nq; int img0, img1; float qs; };
static void run(const Case &c) {
    const int D = c.D, nkv = c.nkv, G = c.G, H = nkv * G, kvd = nkv * D, ps = c.ps;
    const int nseq = (int)c.len.size();
    int maxlen = 0, maxq = 0; for (int s = 0; s < nseq; s++) { maxlen = std::max(maxlen, c.len[s]); maxq = std::max(maxq, c.nq[s]); }
    const int R = (c.window + maxq) / ps + 2;
    // pages: global: per seq ceil(len/ps); local: R per seq; shuffled ids
    std::vector<std::vector<int>> gp(nseq), lp(nseq);
    int npg = 0; for (int s = 0; s < nseq; s++) npg += (c.len[s] + ps - 1) / ps;
    int npl = R * nseq;
    std::vector<int> idg(npg), idl(npl);
    for (int i = 0; i < npg; i++) idg[i] = i; for (int i = 0; i < npl; i++) idl[i] = i;
    std::shuffle(idg.begin(), idg.end(), rng); std::shuffle(idl.begin(), idl.end(), rng);
    int kg = 0, kl = 0;
    for (int s = 0; s < nseq; s++) { for (int i = 0; i < (c.len[s] + ps - 1) / ps; i++) gp[s].push_back(idg[kg++]); for (int i = 0; i < R; i++) lp[s].push_back(idl[kl++]); }
    const int npages = c.global ? npg : npl;
    std::vector<float> K((size_t)npages * ps * kvd, NAN), V((size_t)npages * ps * kvd, NAN);
    std::vector<std::vector<float>> LK(nseq), LV(nseq);
    for (int s = 0; s < nseq; s++) {
        LK[s].resize((size_t)c.len[s] * kvd); LV[s].resize((size_t)c.len[s] * kvd);
        for (auto &x : LK[s]) x = fr(); for (auto &x : LV[s]) x = fr();
        for (int p = 0; p < c.len[s]; p++) {
            int page = c.global ? gp[s][p / ps] : lp[s][(p / ps) % R];
            size_t slot = (size_t)page * ps + p % ps;
            memcpy(&K[slot * kvd], &LK[s][(size_t)p * kvd], sizeof(float) * kvd);
            memcpy(&V[slot * kvd], &LV[s][(size_t)p * kvd], sizeof(float) * kvd);
        }
    }
    // batch: interleave
    std::vector<int> pos, seq, hi;
    std::vector<int> done(nseq, 0); int T = 0; for (int s = 0; s < nseq; s++) T += c.nq[s];
    while ((int)pos.size() < T) for (int s = 0; s < nseq; s++) for (int k = 0; k < 3 && done[s] < c.nq[s]; k++, done[s]++) {
        int p = c.len[s] - c.nq[s] + done[s]; pos.push_back(p); seq.push_back(s);
        int h = p; if (s == 0 && c.img0 >= 0 && p >= c.img0 && p <= c.img1) h = c.img1; hi.push_back(h);
    }
    // table
    std::vector<int32_t> tab(3 * T);
    std::vector<int> seen;
    for (int t = 0; t < T; t++) if (std::find(seen.begin(), seen.end(), seq[t]) == seen.end()) seen.push_back(seq[t]);
    std::vector<int> goff(nseq), loff(nseq);
    for (int s : seen) { goff[s] = (int)tab.size() - 3 * T; for (int x : gp[s]) tab.push_back(x); loff[s] = (int)tab.size() - 3 * T; for (int x : lp[s]) tab.push_back(x); }
    for (int t = 0; t < T; t++) { tab[3*t] = pos[t]; tab[3*t+1] = goff[seq[t]]; tab[3*t+2] = loff[seq[t]]; }
    ts_k_kv_args a = {tab.data(), T, ps, R, kvd, c.global ? 1 : 0};
    std::vector<float> q((size_t)T * H * D); for (auto &x : q) x = fr() * c.qs;
    const float scale = 1.0f / sqrtf((float)D);
    // reference
    std::vector<double> ref((size_t)T * H * D);
    for (int t = 0; t < T; t++) for (int h = 0; h < H; h++) {
        int p = pos[t], s = seq[t], kh = h / G; int lo = c.global ? 0 : std::max(0, p - c.window + 1);
        std::vector<double> sc; double m = -1e300;
        for (int j = lo; j <= hi[t]; j++) { double d = 0; for (int i = 0; i < D; i++) d += (double)q[((size_t)t*H+h)*D+i] * LK[s][(size_t)j*kvd + kh*D + i]; d *= scale; sc.push_back(d); m = std::max(m, d); }
        double sum = 0; for (auto &x : sc) { x = exp(x - m); sum += x; }
        for (int i = 0; i < D; i++) { double o = 0; for (int j = lo; j <= hi[t]; j++) o += sc[j - lo] * LV[s][(size_t)j*kvd + kh*D + i]; ref[((size_t)t*H+h)*D+i] = o / sum; }
    }
    const bool use_hi = c.img0 >= 0;
    auto cmp = [&](const std::vector<float> &o, const char *what) {
        double num = 0, den = 0; for (size_t i = 0; i < o.size(); i++) { double d = o[i] - ref[i]; num += d*d; den += ref[i]*ref[i]; }
        double e = num != num ? INFINITY : num / den; runs++;
        if (e > worst) worst = e;
        if (!(e <= 1e-10)) { fails++; printf("FAIL %s D %d G %d nkv %d %s T %d: nmse %g\n", what, D, G, nkv, c.global ? "global" : "local", T, e); }
    };
    // flash
    {
        std::vector<float> out((size_t)T * H * D, NAN);
        const int rows = D == 64 ? flash_cfg<64>::ROWS : D == 128 ? flash_cfg<128>::ROWS : flash_cfg<256>::ROWS;
        const int bq = rows / G;
        dim3 grid((T + bq - 1) / bq, nkv, 1), block(128, 1, 1);
        const int32_t *hp = use_hi ? hi.data() : nullptr;
        if (D == 64) emu_launch(grid, block, [&] { k_attn_flash<64>(a, K.data(), V.data(), q.data(), out.data(), hp, H, G, bq, c.window, scale); });
        else if (D == 128) emu_launch(grid, block, [&] { k_attn_flash<128>(a, K.data(), V.data(), q.data(), out.data(), hp, H, G, bq, c.window, scale); });
        cmp(out, "flash");
    }
    for (int ns : {1, 2, 5, 32}) {
        std::vector<float> out((size_t)T * H * D, NAN);
        std::vector<float> part((size_t)T * H * ns * (D + 2), NAN);
        dim3 grid(T, nkv, ns), block(128, 1, 1);
        const int32_t *hp = use_hi ? hi.data() : nullptr;
#define SK(DD, GG) emu_launch(grid, block, [&] { k_attn_split<DD, GG>(a, K.data(), V.data(), q.data(), out.data(), hp, part.data(), H, ns, c.window, scale); })
        if (D == 64 && G == 1) SK(64, 1); else if (D == 64 && G == 2) SK(64, 2); else if (D == 64 && G == 4) SK(64, 4); else if (D == 128 && G == 2) SK(128, 2);
        if (ns > 1) {
            int64_t nth = (int64_t)T * H;
            dim3 g2(nth, 1, 1), b2(D, 1, 1);
            emu_launch(g2, b2, [&] { k_attn_combine(part.data(), out.data(), nth, ns, D); });
        }
        char w[32]; snprintf(w, sizeof w, "split x%d", ns); cmp(out, w);
    }
}
int main() {
    // D, nkv, G, ps, window, global, len, nq, img0, img1, qs
    std::vector<Case> cs = {
        {64, 2, 2, 4, 20, false, {70, 33, 1}, {40, 1, 1}, -1, -1, 4.0f},
        {64, 2, 2, 4, 20, true, {70, 33, 1}, {40, 1, 1}, -1, -1, 4.0f},
        {64, 1, 4, 8, 50, true, {130}, {37}, 90, 120, 1.0f},
        {64, 1, 4, 8, 30, false, {130}, {37}, 100, 120, 6.0f},
        {64, 3, 1, 4, 1000, true, {45, 80}, {45, 3}, -1, -1, 1.0f},
        {128, 1, 2, 16, 40, false, {100, 60}, {20, 2}, -1, -1, 6.0f},
    };
    for (auto &c : cs) run(c);
    printf("runs %d fails %d worst nmse %g\n", runs, fails, worst);
    return fails != 0;
}
