/* The plain kernels for one element type (see kernels_plain.c, which defines REAL, EXP,
 * TANH, RULE, EPI, PLAIN(name), KERNELS_T, KERNELS_PLAIN and GENERIC_FMA_LOOP).  Formulas and
 * shapes: kernels.h. */

#define UPDATE_T REAL
#define UPDATE_RULE RULE
#define UPDATE_SQRT SQRT
#define UPDATE_NAME PLAIN(plain_update)
#include "update.h"

/* sigma(z) = 1 / (1 + exp(-z)); for z << 0 exp overflows to inf and sigma is exactly 0. */
static inline REAL PLAIN(sigmoid)(REAL z) { return (REAL)1 / ((REAL)1 + EXP(-z)); }

/* a = f(z) for an elementwise activation (CBP_ACT_*, not softmax). */
REAL PLAIN(cbp_activate)(REAL z, int act)
{
    switch (act) {
    case CBP_ACT_SIGMOID: return PLAIN(sigmoid)(z);
    case CBP_ACT_TANH: return TANH(z);
    case CBP_ACT_RELU: return (z < 0) ? (REAL)0 : z;   /* NaN stays NaN */
    default: return z;                                 /* identity */
    }
}

/* f'(z) from a = f(z), for an elementwise activation. */
REAL PLAIN(cbp_prime)(REAL a, int act)
{
    switch (act) {
    case CBP_ACT_SIGMOID: return a * ((REAL)1 - a);
    case CBP_ACT_TANH: return (REAL)1 - a * a;
    case CBP_ACT_RELU: return (a > 0) ? (REAL)1 : (REAL)0;
    default: return (REAL)1;                           /* identity */
    }
}

/* Softmax of rows [i0, i1) of z into a (eq. (78)), shifted by the row maximum so that no
 * exp overflows: a_j = e^{z_j - max} / sum_k e^{z_k - max}.  z, a: [*, n]. */
void PLAIN(cbp_softmax_rows)(REAL *a, const REAL *z, size_t n, size_t i0, size_t i1)
{
    for (size_t i = i0; i < i1; i++) {
        const REAL *zi = z + i * n;             /* [n] */
        REAL *ai = a + i * n;                   /* [n] */
        REAL mx = zi[0];
        for (size_t j = 1; j < n; j++) mx = (zi[j] > mx) ? zi[j] : mx;
        REAL sum = 0;
        for (size_t j = 0; j < n; j++) {
            ai[j] = EXP(zi[j] - mx);
            sum += ai[j];
        }
        const REAL inv = (REAL)1 / sum;
        for (size_t j = 0; j < n; j++) ai[j] *= inv;
    }
}

/* z[i, j] = sum_k a[i, k] w[j, k] + b[j] */
static void PLAIN(gemm_nt)(REAL *z, size_t ldz, const REAL *a, size_t lda, const REAL *w,
                           size_t ldw, const REAL *b, size_t M, size_t N, size_t K)
{
    for (size_t i = 0; i < M; i++) {
        const REAL *ai = a + i * lda;           /* [K] row i of a */
        for (size_t j = 0; j < N; j++) {
            const REAL *wj = w + j * ldw;       /* [K] row j of w */
            REAL s = 0;
#pragma omp simd reduction(+ : s)
            for (size_t k = 0; k < K; k++) s += wj[k] * ai[k];
            z[i * ldz + j] = s + b[j];
        }
    }
}

/* C (op)= P, P[i, j] = sum_t A(i, t) B[t, j] */
static void PLAIN(gemm_nn)(REAL *c, size_t ldc, const REAL *A, size_t ars, size_t ats,
                           const REAL *B, size_t ldb, size_t M, size_t N, size_t K,
                           const EPI *epi)
{
    for (size_t i = 0; i < M; i++) {
        REAL *ci = c + i * ldc;                 /* [N] row i of C */
        for (size_t j = 0; j < N; j++) {
            REAL p = 0;
            for (size_t t = 0; t < K; t++) p += A[i * ars + t * ats] * B[t * ldb + j];
            if (epi->op == CBP_EPI_SET) ci[j] = p;
            else if (epi->op == CBP_EPI_ADD) ci[j] += p;
            else {
                REAL unused1 = 0, unused2 = 0;
                REAL *s1 = epi->state1 ? epi->state1 + i * ldc + j : &unused1;
                REAL *s2 = epi->state2 ? epi->state2 + i * ldc + j : &unused2;
                ci[j] = PLAIN(plain_update)(ci[j], p, s1, s2, &epi->rule);
            }
        }
    }
}

static void PLAIN(activate)(REAL *a, const REAL *z, size_t ld, size_t M, size_t N, int act)
{
    for (size_t i = 0; i < M; i++)
        for (size_t j = 0; j < N; j++) a[i * ld + j] = PLAIN(cbp_activate)(z[i * ld + j], act);
}

static void PLAIN(mul_prime)(REAL *d, const REAL *a, size_t ld, size_t M, size_t N, int act)
{
    for (size_t i = 0; i < M; i++)
        for (size_t j = 0; j < N; j++) d[i * ld + j] *= PLAIN(cbp_prime)(a[i * ld + j], act);
}

static int PLAIN(all_finite)(const REAL *x, size_t n)
{
    for (size_t t = 0; t < n; t++)
        if (!isfinite(x[t])) return 0;
    return 1;
}

double GENERIC_FMA_LOOP(size_t iters);   /* (kernels_simd.c: plain has no vectors of its own) */

const KERNELS_T KERNELS_PLAIN = {
    .lanes = 1,
    .nt_mc = 1,
    .nn_mr = 1,
    .gemm_nt = PLAIN(gemm_nt),
    .gemm_nn = PLAIN(gemm_nn),
    .activate = PLAIN(activate),
    .mul_prime = PLAIN(mul_prime),
    .fma_loop = GENERIC_FMA_LOOP,
    .all_finite = PLAIN(all_finite),
};

#undef REAL
#undef EXP
#undef TANH
#undef SQRT
#undef RULE
#undef EPI
#undef PLAIN
#undef KERNELS_T
#undef KERNELS_PLAIN
#undef GENERIC_FMA_LOOP
