/* matmul_avx512.c: the AVX-512 (F, BW, VL, VNNI) variant of the x86 kernels: the kernels
 * of matmul_avx2.c, compiled again with AVX-512 flags and TS_MM_AVX512 defined, which
 * switches the u8 x s8 dot products to vpdpbusd and the Q5 high-bit expansion to
 * AVX-512BW masks (kernels/CMakeLists.txt sets the flags). Exported: ts_mm_kernel_avx512.
 */
#define TS_MM_AVX512 1
#include "matmul_avx2.c"
