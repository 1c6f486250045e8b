/* ops_main.cpp: the fused ops of ops.cu on the CPU (run.sh) vs the separate kernels
 * (bit-identical) and a double-precision rmsnorm_add. */
#include "common.cuh"
static inline float __fmul_rn(float a, float b) { volatile float r = a * b; return r; }
static inline float __fadd_rn(float a, float b) { volatile float r = a + b; return r; }
static inline float __fsub_rn(float a, float b) { volatile float r = a - b; return r; }
#include "ops_k.cpp"
#include <cstdio>
#include <random>
static std::mt19937_64 rng(7);
static float fr() { return std::uniform_real_distribution<float>(-1, 1)(rng); }
int main() {
    int fails = 0;
    { // rmsnorm_add
        const int R = 3, N = 300;
        std::vector<float> x(R * N), y(R * N), w(N), t(R * N);
        for (auto &v : x) v = fr() * 4; for (auto &v : y) v = fr() * 30; for (auto &v : w) v = fr() * 2;
        std::vector<float> x1 = x, x2 = x, y0 = y;
        emu_launch(dim3(R, 1, 1), dim3(256, 1, 1), [&] { k_rmsnorm(t.data(), y.data(), w.data(), N, 1e-6f); });
        emu_launch(dim3((R * N + 255) / 256, 1, 1), dim3(256, 1, 1), [&] { k_add(x1.data(), t.data(), R * N); });
        emu_launch(dim3(R, 1, 1), dim3(256, 1, 1), [&] { k_rmsnorm_add(x2.data(), y.data(), w.data(), N, 1e-6f); });
        if (memcmp(x1.data(), x2.data(), 4 * R * N) || memcmp(y.data(), y0.data(), 4 * R * N)) { fails++; printf("FAIL rmsnorm_add\n"); }
        // independent: double reference
        double md = 0;
        for (int r = 0; r < R; r++) { double ss = 0; for (int i = 0; i < N; i++) ss += (double)y[r*N+i]*y[r*N+i]; double sc = 1/sqrt(ss/N + 1e-6);
            for (int i = 0; i < N; i++) md = std::max(md, fabs(x2[r*N+i] - (x[r*N+i] + y[r*N+i]*sc*w[i]))); }
        printf("rmsnorm_add max abs vs double %g\n", md);
    }
    { // qk_norm_rope
        const int T = 3, H = 4, KV = 2, hd = 64; const float eps = 1e-6f, base = 10000.f, sc = 8.f;
        std::vector<float> q(T*H*hd), k(T*KV*hd), qw(hd), kw(hd); std::vector<int32_t> pos = {5, 1000, 77777};
        for (auto &v : q) v = fr()*10; for (auto &v : k) v = fr()*10; for (auto &v : qw) v = fr()*2; for (auto &v : kw) v = fr()*2;
        std::vector<float> q1 = q, k1 = k, q2 = q, k2 = k;
        emu_launch(dim3(T*H,1,1), dim3(256,1,1), [&] { k_rmsnorm(q1.data(), q1.data(), qw.data(), hd, eps); });
        emu_launch(dim3(T*KV,1,1), dim3(256,1,1), [&] { k_rmsnorm(k1.data(), k1.data(), kw.data(), hd, eps); });
        emu_launch(dim3(2,1,1), dim3(256,1,1), [&] { k_rope(q1.data(), pos.data(), T, H, hd, base, sc); });
        emu_launch(dim3(2,1,1), dim3(256,1,1), [&] { k_rope(k1.data(), pos.data(), T, KV, hd, base, sc); });
        emu_launch(dim3(T*(H+KV),1,1), dim3(256,1,1), [&] { k_qk_norm_rope(q2.data(), k2.data(), qw.data(), kw.data(), pos.data(), T, H, KV, hd, eps, base, sc); });
        if (memcmp(q1.data(), q2.data(), 4*q.size()) || memcmp(k1.data(), k2.data(), 4*k.size())) { fails++; printf("FAIL qk_norm_rope\n"); }
        else printf("qk_norm_rope identical\n");
    }
    printf("fails %d\n", fails);
    return fails;
}
