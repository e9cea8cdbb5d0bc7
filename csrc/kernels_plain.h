/* The plain layer kernels for one floating type: straightforward loops, the oracle every
 * SIMD variant is tested against and the fallback on any CPU.  Included by kernels.c with
 * REAL, SUF and EXP (exp or expf) defined.  Formulas and shapes: cbackprop_decl.h. */
#define F(name) CBP_CAT(name, SUF)

/* sigma(z) = 1 / (1 + exp(-z)); for z << 0 exp overflows to inf and sigma is exactly 0. */
static inline REAL F(sigmoid)(REAL z) { return (REAL)1 / ((REAL)1 + EXP(-z)); }

void F(cbp_dense_forward)(REAL *z, REAL *a, const REAL *a_prev, const REAL *w, const REAL *b,
                          size_t m, size_t n_out, size_t n_in)
{
    for (size_t i = 0; i < m; i++) {
        const REAL *x = a_prev + i * n_in;      /* [n_in] row i of a^{l-1} */
        REAL *zi = z + i * n_out;               /* [n_out] */
        for (size_t j = 0; j < n_out; j++) {
            const REAL *wj = w + j * n_in;      /* [n_in] row j of w^l */
            REAL s = 0;
#pragma omp simd reduction(+ : s)
            for (size_t k = 0; k < n_in; k++) s += wj[k] * x[k];
            zi[j] = s + b[j];
        }
        REAL *ai = a + i * n_out;               /* [n_out] */
        for (size_t j = 0; j < n_out; j++) ai[j] = F(sigmoid)(zi[j]);
    }
}

void F(cbp_quadratic_delta)(REAL *delta, const REAL *a, const REAL *y, size_t m, size_t n)
{
    const REAL inv_m = (REAL)1 / (REAL)m;
    const size_t len = m * n;
#pragma omp simd
    for (size_t t = 0; t < len; t++) delta[t] = (a[t] - y[t]) * inv_m * (a[t] * ((REAL)1 - a[t]));
}

void F(cbp_dense_backward_delta)(REAL *delta_prev, const REAL *delta, const REAL *w,
                                 const REAL *a_prev, size_t m, size_t n_out, size_t n_in)
{
    for (size_t i = 0; i < m; i++) {
        REAL *dp = delta_prev + i * n_in;       /* [n_in] row i of delta^l */
        const REAL *d = delta + i * n_out;      /* [n_out] row i of delta^{l+1} */
        const REAL *ap = a_prev + i * n_in;     /* [n_in] row i of a^l */
        for (size_t k = 0; k < n_in; k++) dp[k] = 0;
        for (size_t j = 0; j < n_out; j++) {
            const REAL dj = d[j];
            const REAL *wj = w + j * n_in;      /* [n_in] row j of w^{l+1} */
#pragma omp simd
            for (size_t k = 0; k < n_in; k++) dp[k] += dj * wj[k];
        }
#pragma omp simd
        for (size_t k = 0; k < n_in; k++) dp[k] *= ap[k] * ((REAL)1 - ap[k]);
    }
}

void F(cbp_dense_backward_params)(REAL *nabla_w, REAL *nabla_b, const REAL *delta,
                                  const REAL *a_prev, size_t m, size_t n_out, size_t n_in)
{
    for (size_t j = 0; j < n_out; j++) {
        REAL *nwj = nabla_w + j * n_in;         /* [n_in] row j of nabla_w */
        REAL sb = 0;
        for (size_t i = 0; i < m; i++) {
            const REAL dij = delta[i * n_out + j];
            const REAL *ap = a_prev + i * n_in; /* [n_in] row i of a^{l-1} */
            sb += dij;
#pragma omp simd
            for (size_t k = 0; k < n_in; k++) nwj[k] += dij * ap[k];
        }
        nabla_b[j] += sb;
    }
}

void F(cbp_sgd_update)(REAL *params, const REAL *grads, size_t n, REAL eta)
{
#pragma omp simd
    for (size_t t = 0; t < n; t++) params[t] -= eta * grads[t];
}

void F(cbp_gather_rows)(REAL *dst, const REAL *src, const long long *idx, size_t m, size_t n)
{
    for (size_t i = 0; i < m; i++) memcpy(dst + i * n, src + (size_t)idx[i] * n, n * sizeof(REAL));
}

int F(cbp_all_finite)(const REAL *x, size_t n)
{
    /* x - x is 0 for finite x and NaN for inf or NaN; one NaN poisons the sum. */
    REAL acc = 0;
#pragma omp simd reduction(+ : acc)
    for (size_t t = 0; t < n; t++) acc += x[t] - x[t];
    return acc == 0;
}

#undef F
