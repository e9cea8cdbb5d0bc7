/* Every kernel for one floating type (REAL, SUF, EXP, TANH and CBP_IS_DOUBLE defined by
 * kernels.c).  Each SIMD variant defines simd_impl.h's parameters (ISA name, VB vector
 * bytes, NT_MR x NT_MC and NN_MR block sizes); simd_impl.h undefines them again.  NT_MC and
 * NN_MR must equal CBP_TILE(isa) in kernels.c (threads split layers at multiples of it). */
#include "kernels_plain.h"

#define ISA generic
#define VB 16
#define NT_MR 3
#define NT_MC 3
#define NN_MR 3
_Static_assert(NT_MC == CBP_TILE(CBP_ISA_GENERIC) && NN_MR == NT_MC, "tile of generic");
#include "simd_impl.h"

#if CBP_HAVE_X86_SIMD
#pragma GCC push_options
#pragma GCC target("avx2,fma")
#define ISA avx2
#define VB 32
#define NT_MR 3
#define NT_MC 3
#define NN_MR 3
_Static_assert(NT_MC == CBP_TILE(CBP_ISA_AVX2) && NN_MR == NT_MC, "tile of avx2");
#include "simd_impl.h"
#pragma GCC pop_options

#pragma GCC push_options
#pragma GCC target("avx512f,avx512vl,avx512dq,avx512bw,avx2,fma")
/* 5 x 5 and 5-row blocks (measured against 4 x 4 / 4 rows, float32 epoch CPU time:
 * N1 0.0493 -> 0.0478 s, N3 0.0469 -> 0.0441 s, N5 0.328 -> 0.320 s) */
#define ISA avx512
#define VB 64
#define NT_MR 5
#define NT_MC 5
#define NN_MR 5
_Static_assert(NT_MC == CBP_TILE(CBP_ISA_AVX512) && NN_MR == NT_MC, "tile of avx512");
#include "simd_impl.h"
#pragma GCC pop_options
#endif

#include "net_impl.h"
