/* The register-blocked SIMD kernels (kernels_simd_impl.h), instantiated once per instruction
 * set and element type with explicit names (tables below; functions <name>_<type>_<isa>, e.g.
 * gemm_nn_f32_avx512: tools/check_simd.py finds the dispatched ones by their suffix):
 *   generic  16-byte vectors with the build's baseline flags (SSE2 on x86-64, NEON on
 *            aarch64): cbp_kernels_generic_f32, cbp_kernels_generic_f64
 *   avx2     32-byte vectors, AVX2 + FMA, under #pragma GCC target: cbp_kernels_avx2_f32/_f64
 *   avx512   64-byte vectors, AVX-512 F/VL/DQ/BW: cbp_kernels_avx512_f32/_f64
 * The build never uses -march=native; dispatch.c picks a variant at run time.
 * Register tiles: NT_MR x NT_MC dot-product accumulators for gemm_nt and NN_MR rows x 4
 * vectors for gemm_nn: 5 x 5 and 5 x 4 where 32 vector registers are available (AVX-512),
 * 3 x 3 and 3 x 4 with 16 (measured on a Zen 5 VM against 4 x 4 / 4 rows, float32 epoch CPU
 * time: N1 0.0493 -> 0.0478 s, N3 0.0469 -> 0.0441 s, N5 0.328 -> 0.320 s). */
#include <string.h>

#include "kernels.h"

/* ---- generic ---------------------------------------------------------------------------- */
#define REAL float
#define IS_DOUBLE 0
#define VB 16
#define NT_MR 3
#define NT_MC 3
#define NN_MR 3
#define RULE cbp_rule_f32
#define EPI cbp_epi_f32
#define KERNELS_T cbp_kernels_f32
#define KERNELS_NAME cbp_kernels_generic_f32
#define K_(name) name##_f32_generic
#include "kernels_simd_impl.h"

#define REAL double
#define IS_DOUBLE 1
#define VB 16
#define NT_MR 3
#define NT_MC 3
#define NN_MR 3
#define RULE cbp_rule_f64
#define EPI cbp_epi_f64
#define KERNELS_T cbp_kernels_f64
#define KERNELS_NAME cbp_kernels_generic_f64
#define K_(name) name##_f64_generic
#include "kernels_simd_impl.h"

#if CBP_HAVE_X86_SIMD
/* ---- avx2 ------------------------------------------------------------------------------- */
#pragma GCC push_options
#pragma GCC target("avx2,fma")
#define REAL float
#define IS_DOUBLE 0
#define VB 32
#define NT_MR 3
#define NT_MC 3
#define NN_MR 3
#define RULE cbp_rule_f32
#define EPI cbp_epi_f32
#define KERNELS_T cbp_kernels_f32
#define KERNELS_NAME cbp_kernels_avx2_f32
#define K_(name) name##_f32_avx2
#include "kernels_simd_impl.h"

#define REAL double
#define IS_DOUBLE 1
#define VB 32
#define NT_MR 3
#define NT_MC 3
#define NN_MR 3
#define RULE cbp_rule_f64
#define EPI cbp_epi_f64
#define KERNELS_T cbp_kernels_f64
#define KERNELS_NAME cbp_kernels_avx2_f64
#define K_(name) name##_f64_avx2
#include "kernels_simd_impl.h"
#pragma GCC pop_options

/* ---- avx512 ----------------------------------------------------------------------------- */
#pragma GCC push_options
#pragma GCC target("avx512f,avx512vl,avx512dq,avx512bw,avx2,fma")
#define REAL float
#define IS_DOUBLE 0
#define VB 64
#define NT_MR 5
#define NT_MC 5
#define NN_MR 5
#define RULE cbp_rule_f32
#define EPI cbp_epi_f32
#define KERNELS_T cbp_kernels_f32
#define KERNELS_NAME cbp_kernels_avx512_f32
#define K_(name) name##_f32_avx512
#include "kernels_simd_impl.h"

#define REAL double
#define IS_DOUBLE 1
#define VB 64
#define NT_MR 5
#define NT_MC 5
#define NN_MR 5
#define RULE cbp_rule_f64
#define EPI cbp_epi_f64
#define KERNELS_T cbp_kernels_f64
#define KERNELS_NAME cbp_kernels_avx512_f64
#define K_(name) name##_f64_avx512
#include "kernels_simd_impl.h"
#pragma GCC pop_options
#endif
