/* Every kernel for one floating type (REAL, SUF, EXP defined by kernels.c).  Each SIMD
 * variant defines simd_impl.h's parameters (ISA name, VB vector bytes, NT_MR x NT_MC and
 * NN_MR block sizes); simd_impl.h undefines them again. */
#include "kernels_plain.h"

#define ISA generic
#define VB 16
#define NT_MR 3
#define NT_MC 3
#define NN_MR 3
#include "simd_impl.h"

#if CBP_HAVE_X86_SIMD
#pragma GCC push_options
#pragma GCC target("avx2,fma")
#define ISA avx2
#define VB 32
#define NT_MR 3
#define NT_MC 3
#define NN_MR 3
#include "simd_impl.h"
#pragma GCC pop_options

#pragma GCC push_options
#pragma GCC target("avx512f,avx512vl,avx512dq,avx512bw,avx2,fma")
#define ISA avx512
#define VB 64
#define NT_MR 4
#define NT_MC 4
#define NN_MR 4
#include "simd_impl.h"
#pragma GCC pop_options
#endif

#include "net_impl.h"
