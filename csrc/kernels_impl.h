/* Kernel definitions for one floating type; included by kernels.c with REAL, SUF and
 * EXP (exp or expf) defined.  Formulas and shapes are documented in cbackprop_decl.h. */
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

/* ---- whole-network drivers ------------------------------------------------------------ */

size_t F(cbp_n_params)(const F(cbp_net) *net)
{
    size_t total = 0;
    for (size_t l = 1; l <= net->n_layers; l++) total += net->sizes[l] * (net->sizes[l - 1] + 1);
    return total;
}

/* Offsets of layer l (1-based) in the parameter blob and in the workspace blocks. */
static inline size_t F(w_offset)(const F(cbp_net) *net, size_t l)
{
    size_t off = 0;
    for (size_t k = 1; k < l; k++) off += net->sizes[k] * (net->sizes[k - 1] + 1);
    return off;
}
static inline REAL *F(z_block)(const F(cbp_net) *net, REAL *base, size_t l)
{
    size_t off = 0;
    for (size_t k = 1; k < l; k++) off += net->sizes[k];
    return base + net->m_cap * off;
}
static inline REAL *F(a_block)(const F(cbp_net) *net, size_t l)
{
    size_t off = 0;
    for (size_t k = 0; k < l; k++) off += net->sizes[k];
    return net->a + net->m_cap * off;
}

void F(cbp_net_forward)(const F(cbp_net) *net, const REAL *x, size_t m)
{
    const REAL *a_prev = x;                           /* [m, n_0] */
    for (size_t l = 1; l <= net->n_layers; l++) {
        const size_t n_out = net->sizes[l], n_in = net->sizes[l - 1];
        const REAL *w = net->params + F(w_offset)(net, l);  /* [n_out, n_in] */
        const REAL *b = w + n_out * n_in;                   /* [n_out] */
        REAL *z = F(z_block)(net, net->z, l);               /* [m, n_out] */
        REAL *a = F(a_block)(net, l);                       /* [m, n_out] */
        F(cbp_dense_forward)(z, a, a_prev, w, b, m, n_out, n_in);
        a_prev = a;
    }
}

void F(cbp_net_backprop)(const F(cbp_net) *net, const REAL *x, const REAL *y, size_t m)
{
    const size_t L = net->n_layers;
    F(cbp_net_forward)(net, x, m);
    /* BP1 at the output layer. */
    REAL *delta = F(z_block)(net, net->delta, L);           /* [m, n_L] */
    F(cbp_quadratic_delta)(delta, F(a_block)(net, L), y, m, net->sizes[L]);
    for (size_t l = L; l >= 1; l--) {
        const size_t n_out = net->sizes[l], n_in = net->sizes[l - 1];
        const size_t off = F(w_offset)(net, l);
        const REAL *a_prev = (l == 1) ? x : F(a_block)(net, l - 1);  /* [m, n_in] */
        /* BP3, BP4 for layer l. */
        F(cbp_dense_backward_params)(net->grads + off, net->grads + off + n_out * n_in, delta,
                                     a_prev, m, n_out, n_in);
        if (l == 1) break;                                  /* no delta for the input layer */
        /* BP2: delta^{l-1} from delta^l and w^l. */
        REAL *delta_prev = F(z_block)(net, net->delta, l - 1);  /* [m, n_in] */
        F(cbp_dense_backward_delta)(delta_prev, delta, net->params + off, a_prev, m, n_out, n_in);
        delta = delta_prev;
    }
}

void F(cbp_net_sgd_step)(const F(cbp_net) *net, const REAL *x, const REAL *y, size_t m, REAL eta)
{
    const size_t n_params = F(cbp_n_params)(net);
    memset(net->grads, 0, n_params * sizeof(REAL));
    F(cbp_net_backprop)(net, x, y, m);
    F(cbp_sgd_update)(net->params, net->grads, n_params, eta);
}

void F(cbp_net_sgd_epoch)(const F(cbp_net) *net, const REAL *x, const REAL *y,
                          const long long *perm, size_t n, size_t mini_batch_size, REAL eta)
{
    const size_t n_in = net->sizes[0], n_out = net->sizes[net->n_layers];
    REAL *xb = net->a;                                      /* [mbs, n_0] block a^0 */
    REAL *yb = net->y;                                      /* [mbs, n_L] */
    for (size_t start = 0; start < n; start += mini_batch_size) {
        const size_t m = (n - start < mini_batch_size) ? n - start : mini_batch_size;
        F(cbp_gather_rows)(xb, x, perm + start, m, n_in);
        F(cbp_gather_rows)(yb, y, perm + start, m, n_out);
        F(cbp_net_sgd_step)(net, xb, yb, m, eta);
    }
}

#undef F
