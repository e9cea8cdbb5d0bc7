/* The plain layer kernels for one floating type: straightforward loops, the oracle every
 * SIMD variant is tested against and the fallback on any CPU.  Included by kernels.c with
 * REAL, SUF, EXP (exp or expf) and TANH (tanh or tanhf) defined.  Formulas and shapes:
 * cbackprop_decl.h. */
#define F(name) CBP_CAT(name, SUF)

/* sigma(z) = 1 / (1 + exp(-z)); for z << 0 exp overflows to inf and sigma is exactly 0. */
static inline REAL F(sigmoid)(REAL z) { return (REAL)1 / ((REAL)1 + EXP(-z)); }

/* a = f(z) for an elementwise activation (CBP_ACT_*, not softmax). */
static inline REAL F(activate)(REAL z, int act)
{
    switch (act) {
    case CBP_ACT_SIGMOID: return F(sigmoid)(z);
    case CBP_ACT_TANH: return TANH(z);
    case CBP_ACT_RELU: return (z < 0) ? (REAL)0 : z;   /* NaN stays NaN */
    default: return z;                                 /* identity */
    }
}

/* f'(z) from a = f(z), for an elementwise activation. */
static inline REAL F(activate_prime)(REAL a, int act)
{
    switch (act) {
    case CBP_ACT_SIGMOID: return a * ((REAL)1 - a);
    case CBP_ACT_TANH: return (REAL)1 - a * a;
    case CBP_ACT_RELU: return (a > 0) ? (REAL)1 : (REAL)0;
    default: return (REAL)1;                           /* identity */
    }
}

/* Softmax of rows [i0, i1) of z into a (eq. (78)), shifted by the row maximum so that no
 * exp overflows: a_j = e^{z_j - max} / sum_k e^{z_k - max}.  z, a: [m, n]. */
static void F(softmax_rows)(REAL *a, const REAL *z, size_t n, size_t i0, size_t i1)
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

/* BP1 on rows [i0, i1) and columns [j0, j1) (softmax: whole rows only).  See
 * cbp_output_delta for the formulas.  delta, a, y: [m, n]. */
static void F(output_delta_part)(REAL *delta, const REAL *a, const REAL *y, size_t n, int act,
                                 int cost, REAL scale, size_t i0, size_t i1, size_t j0,
                                 size_t j1)
{
    for (size_t i = i0; i < i1; i++) {
        const REAL *ai = a + i * n, *yi = y + i * n;   /* [n] */
        REAL *di = delta + i * n;                      /* [n] */
        if (cost == CBP_COST_CROSS_ENTROPY) {          /* sigmoid output: sigma' cancels */
            for (size_t j = j0; j < j1; j++) di[j] = (ai[j] - yi[j]) * scale;
        } else if (cost == CBP_COST_LOG_LIKELIHOOD) {  /* softmax output */
            REAL sy = 0;
            for (size_t j = 0; j < n; j++) sy += yi[j];
            for (size_t j = j0; j < j1; j++) di[j] = (ai[j] * sy - yi[j]) * scale;
        } else if (act == CBP_ACT_SOFTMAX) {           /* quadratic through the Jacobian */
            REAL ag = 0;
            for (size_t j = 0; j < n; j++) ag += ai[j] * ((ai[j] - yi[j]) * scale);
            for (size_t j = j0; j < j1; j++) di[j] = ai[j] * ((ai[j] - yi[j]) * scale - ag);
        } else {                                       /* quadratic, elementwise f */
            for (size_t j = j0; j < j1; j++)
                di[j] = (ai[j] - yi[j]) * scale * F(activate_prime)(ai[j], act);
        }
    }
}

void F(cbp_dense_forward)(REAL *z, REAL *a, const REAL *a_prev, const REAL *w, const REAL *b,
                          size_t m, size_t n_out, size_t n_in, int act)
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
        if (act != CBP_ACT_SOFTMAX)
            for (size_t j = 0; j < n_out; j++) ai[j] = F(activate)(zi[j], act);
    }
    if (act == CBP_ACT_SOFTMAX) F(softmax_rows)(a, z, n_out, 0, m);
}

void F(cbp_output_delta)(REAL *delta, const REAL *a, const REAL *y, size_t m, size_t n, int act,
                         int cost, REAL scale)
{
    F(output_delta_part)(delta, a, y, n, act, cost, scale, 0, m, 0, n);
}

void F(cbp_dense_backward_delta)(REAL *delta_prev, const REAL *delta, const REAL *w,
                                 const REAL *a_prev, size_t m, size_t n_out, size_t n_in, int act)
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
        for (size_t k = 0; k < n_in; k++) dp[k] *= F(activate_prime)(ap[k], act);
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

void F(cbp_sgd_update)(REAL *params, const REAL *grads, size_t n, REAL eta, REAL keep)
{
    if (keep == (REAL)1) {
#pragma omp simd
        for (size_t t = 0; t < n; t++) params[t] -= eta * grads[t];
    } else {
#pragma omp simd
        for (size_t t = 0; t < n; t++) params[t] = keep * params[t] - eta * grads[t];
    }
}

void F(cbp_momentum_update)(REAL *params, REAL *velocity, const REAL *grads, size_t n, REAL eta,
                            REAL decay, REAL mu)
{
#pragma omp simd
    for (size_t t = 0; t < n; t++) {
        velocity[t] = mu * velocity[t] - eta * grads[t] - decay * params[t];
        params[t] += velocity[t];
    }
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
