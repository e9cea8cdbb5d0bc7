/* Which kernel variant runs: CPU detection and the kernel tables (kernels.h). */
#include "cbackprop.h"
#include "kernels.h"

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

const cbp_kernels_f32 *cbp_kernels_for_f32(int isa)
{
    switch (isa) {
    case CBP_ISA_PLAIN: return &cbp_kernels_plain_f32;
#if CBP_HAVE_X86_SIMD
    case CBP_ISA_AVX2: return &cbp_kernels_avx2_f32;
    case CBP_ISA_AVX512: return &cbp_kernels_avx512_f32;
#endif
    default: return &cbp_kernels_generic_f32;
    }
}

const cbp_kernels_f64 *cbp_kernels_for_f64(int isa)
{
    switch (isa) {
    case CBP_ISA_PLAIN: return &cbp_kernels_plain_f64;
#if CBP_HAVE_X86_SIMD
    case CBP_ISA_AVX2: return &cbp_kernels_avx2_f64;
    case CBP_ISA_AVX512: return &cbp_kernels_avx512_f64;
#endif
    default: return &cbp_kernels_generic_f64;
    }
}

double cbp_fma_loop(int dtype, int isa, size_t iters)
{
    return dtype == CBP_F64 ? cbp_kernels_for_f64(isa)->fma_loop(iters)
                            : cbp_kernels_for_f32(isa)->fma_loop(iters);
}

int cbp_all_finite(int dtype, int isa, const void *x, size_t n)
{
    if (isa < 0) isa = cbp_isa_best();      /* (tens of nanoseconds) */
    return dtype == CBP_F64 ? cbp_kernels_for_f64(isa)->all_finite((const double *)x, n)
                            : cbp_kernels_for_f32(isa)->all_finite((const float *)x, n);
}
