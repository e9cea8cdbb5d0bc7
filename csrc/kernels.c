/* Instantiates every kernel for float (suffix _s) and double (suffix _d):
 *   kernels_plain.h  the plain layer kernels (the oracle, and the fallback)
 *   simd_impl.h      register-blocked variants: "generic" (baseline flags: SSE2 on x86-64,
 *                    NEON on aarch64) and, on x86-64, "avx2" and "avx512" compiled under
 *                    `#pragma GCC target` and chosen at run time (never -march=native)
 *   net_impl.h       whole-network drivers dispatching on cbp_net.isa */
#include <math.h>
#include <string.h>

#include "cbackprop.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define CBP_HAVE_X86_SIMD 1
#else
#define CBP_HAVE_X86_SIMD 0
#endif

/* How gemm_nn combines its product P with its output C. */
enum { CBP_SET = 0, CBP_ADD = 1, CBP_SUB_SCALED = 2 };  /* C = P;  C += P;  C -= eta P */


#define REAL float
#define SUF s
#define EXP expf
#include "kernels_type.h"
#undef REAL
#undef SUF
#undef EXP

#define REAL double
#define SUF d
#define EXP exp
#include "kernels_type.h"
#undef REAL
#undef SUF
#undef EXP

int cbp_isa_supported(int isa)
{
    switch (isa) {
    case CBP_ISA_PLAIN:
    case CBP_ISA_GENERIC: return 1;
#if CBP_HAVE_X86_SIMD
    case CBP_ISA_AVX2:
        __builtin_cpu_init();
        return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    case CBP_ISA_AVX512:
        __builtin_cpu_init();
        return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
               __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512bw") &&
               cbp_isa_supported(CBP_ISA_AVX2);
#endif
    default: return 0;
    }
}

int cbp_isa_best(void)
{
    for (int isa = CBP_ISA_AVX512; isa > CBP_ISA_GENERIC; isa--)
        if (cbp_isa_supported(isa)) return isa;
    return CBP_ISA_GENERIC;
}
