/* CPU emulation shim for kernels/cuda/attn.cu (OS threads per CUDA thread, barriers). */
#pragma once
#include <barrier>
#include <memory>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <thread>
#include <vector>
#include <climits>
#include "kernels_cuda.h"
#undef __global__
#undef __device__
#undef __forceinline__
#undef __shared__
#undef __launch_bounds__
#define __global__
#define __device__
#define __forceinline__ inline
#define __shared__ static
#define __launch_bounds__(x)
thread_local uint3 threadIdx, blockIdx;
thread_local dim3 gridDim, blockDim;
struct warp_ctx { std::barrier<> *bar; uint64_t vals[32]; };
thread_local std::barrier<> *t_block_bar;
thread_local warp_ctx *t_warp;
inline void __syncthreads() { t_block_bar->arrive_and_wait(); }
template <class T> T shfl_impl(T v, int src_lane) {
    static_assert(sizeof(T) <= 8);
    uint64_t u = 0; memcpy(&u, &v, sizeof(T));
    const int lane = threadIdx.x & 31;
    t_warp->vals[lane] = u;
    t_warp->bar->arrive_and_wait();
    uint64_t r = t_warp->vals[src_lane & 31];
    t_warp->bar->arrive_and_wait();
    T out; memcpy(&out, &r, sizeof(T));
    return out;
}
template <class T> T __shfl_xor_sync(unsigned, T v, int o) { return shfl_impl(v, (int)(threadIdx.x & 31) ^ o); }
template <class T> T __shfl_sync(unsigned, T v, int s) { return shfl_impl(v, s); }
inline float4 make_float4(float a, float b, float c, float d) { float4 r; r.x=a; r.y=b; r.z=c; r.w=d; return r; }
using std::min; using std::max;
template <class F> void emu_launch(dim3 grid, dim3 block, F f) {
    const int nt = block.x;
    for (unsigned z = 0; z < grid.z; z++) for (unsigned y = 0; y < grid.y; y++) for (unsigned x = 0; x < grid.x; x++) {
        std::barrier<> bar(nt);
        std::vector<warp_ctx> warps((nt + 31) / 32);
        std::vector<std::unique_ptr<std::barrier<>>> wb;
        for (auto &w : warps) { wb.emplace_back(new std::barrier<>(32)); w.bar = wb.back().get(); }
        std::vector<std::thread> th;
        for (int t = 0; t < nt; t++) th.emplace_back([&, t] {
            threadIdx.x = t; threadIdx.y = 0; threadIdx.z = 0; blockIdx.x = x; blockIdx.y = y; blockIdx.z = z; gridDim = grid; blockDim = block;
            t_block_bar = &bar; t_warp = &warps[t / 32];
            f();
        });
        for (auto &t : th) t.join();
    }
}
