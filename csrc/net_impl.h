/* Whole-network drivers for one floating type, dispatching every layer kernel to the
 * variant net->isa names.  Included by kernels.c after the plain and SIMD kernels. */
#define F(name) CBP_CAT(name, SUF)

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

/* Layer kernels of the variant `isa` (CBP_ISA_*); an isa this build lacks runs generic.
 * CBP_RESULT prefixes each call (empty, or "r =" to keep a return value). */
#define CBP_RESULT
#if CBP_HAVE_X86_SIMD
#define CBP_DISPATCH(isa, fn, args)                                                          \
    switch (isa) {                                                                          \
    case CBP_ISA_AVX512: CBP_RESULT CBP_CAT(CBP_CAT(fn, SUF), avx512) args; break;          \
    case CBP_ISA_AVX2: CBP_RESULT CBP_CAT(CBP_CAT(fn, SUF), avx2) args; break;              \
    default: CBP_RESULT CBP_CAT(CBP_CAT(fn, SUF), generic) args; break;                     \
    }
#else
#define CBP_DISPATCH(isa, fn, args) CBP_RESULT CBP_CAT(CBP_CAT(fn, SUF), generic) args;
#endif

static void F(layer_forward)(int isa, REAL *z, REAL *a, const REAL *a_prev, const REAL *w,
                             const REAL *b, size_t m, size_t n_out, size_t n_in)
{
    if (isa == CBP_ISA_PLAIN) F(cbp_dense_forward)(z, a, a_prev, w, b, m, n_out, n_in);
    else { CBP_DISPATCH(isa, dense_forward, (z, a, a_prev, w, b, m, n_out, n_in)) }
}

static void F(layer_backward_delta)(int isa, REAL *delta_prev, const REAL *delta, const REAL *w,
                                    const REAL *a_prev, size_t m, size_t n_out, size_t n_in)
{
    if (isa == CBP_ISA_PLAIN) F(cbp_dense_backward_delta)(delta_prev, delta, w, a_prev, m, n_out, n_in);
    else { CBP_DISPATCH(isa, dense_backward_delta, (delta_prev, delta, w, a_prev, m, n_out, n_in)) }
}

/* op CBP_ADD: nabla_w += delta^T a_prev, nabla_b += sum delta (BP3/BP4, accumulate);
 * op CBP_SUB_SCALED: the same product applied as w -= eta (.), b -= eta (.) (fused step). */
static void F(layer_backward_params)(int isa, REAL *out_w, REAL *out_b, const REAL *delta,
                                     const REAL *a_prev, size_t m, size_t n_out, size_t n_in,
                                     int op, REAL eta, REAL *scratch_w, REAL *scratch_b)
{
    if (isa != CBP_ISA_PLAIN) {
        CBP_DISPATCH(isa, dense_backward_params, (out_w, out_b, delta, a_prev, m, n_out, n_in, op, eta))
        return;
    }
    if (op == CBP_ADD) {
        F(cbp_dense_backward_params)(out_w, out_b, delta, a_prev, m, n_out, n_in);
        return;
    }
    /* plain step: the gradient into the (zeroed) gradient blob, then the update */
    memset(scratch_w, 0, n_out * n_in * sizeof(REAL));
    memset(scratch_b, 0, n_out * sizeof(REAL));
    F(cbp_dense_backward_params)(scratch_w, scratch_b, delta, a_prev, m, n_out, n_in);
    F(cbp_sgd_update)(out_w, scratch_w, n_out * n_in, eta);
    F(cbp_sgd_update)(out_b, scratch_b, n_out, eta);
}

#undef CBP_RESULT
#define CBP_RESULT r =
/* The multiply-add loop of the variant isa (plain runs generic): 24 * lanes * iters flops. */
double F(cbp_fma_loop)(int isa, size_t iters)
{
    double r = 0;
    CBP_DISPATCH(isa, fma_loop, (iters))
    return r;
}
#undef CBP_RESULT
#undef CBP_DISPATCH

void F(cbp_net_forward)(const F(cbp_net) *net, const REAL *x, size_t m)
{
    const REAL *a_prev = x;                                 /* [m, n_0] */
    for (size_t l = 1; l <= net->n_layers; l++) {
        const size_t n_out = net->sizes[l], n_in = net->sizes[l - 1];
        const REAL *w = net->params + F(w_offset)(net, l);  /* [n_out, n_in] */
        const REAL *b = w + n_out * n_in;                   /* [n_out] */
        REAL *z = F(z_block)(net, net->z, l);               /* [m, n_out] */
        REAL *a = F(a_block)(net, l);                       /* [m, n_out] */
        F(layer_forward)(net->isa, z, a, a_prev, w, b, m, n_out, n_in);
        a_prev = a;
    }
}

/* Backward pass after a forward pass on x.  op CBP_ADD accumulates the gradient into
 * net->grads; op CBP_SUB_SCALED applies params -= eta * gradient layer by layer, each
 * layer's delta^{l-1} taken from w^l before w^l is updated. */
static void F(net_backward)(const F(cbp_net) *net, const REAL *x, const REAL *y, size_t m,
                            int op, REAL eta)
{
    const size_t L = net->n_layers;
    /* BP1 at the output layer. */
    REAL *delta = F(z_block)(net, net->delta, L);           /* [m, n_L] */
    F(cbp_quadratic_delta)(delta, F(a_block)(net, L), y, m, net->sizes[L]);
    for (size_t l = L; l >= 1; l--) {
        const size_t n_out = net->sizes[l], n_in = net->sizes[l - 1];
        const size_t off = F(w_offset)(net, l);
        const REAL *a_prev = (l == 1) ? x : F(a_block)(net, l - 1);  /* [m, n_in] */
        REAL *delta_prev = NULL;
        if (l > 1) {
            /* BP2: delta^{l-1} from delta^l and w^l (before w^l changes). */
            delta_prev = F(z_block)(net, net->delta, l - 1);          /* [m, n_in] */
            F(layer_backward_delta)(net->isa, delta_prev, delta, net->params + off, a_prev, m,
                                    n_out, n_in);
        }
        /* BP3, BP4 for layer l, accumulated or applied. */
        REAL *out = (op == CBP_ADD) ? net->grads + off : net->params + off;
        F(layer_backward_params)(net->isa, out, out + n_out * n_in, delta, a_prev, m, n_out, n_in,
                                 op, eta, net->grads + off, net->grads + off + n_out * n_in);
        if (l == 1) break;                                  /* no delta for the input layer */
        delta = delta_prev;
    }
}

void F(cbp_net_backprop)(const F(cbp_net) *net, const REAL *x, const REAL *y, size_t m)
{
    F(cbp_net_forward)(net, x, m);
    F(net_backward)(net, x, y, m, CBP_ADD, 0);
}

void F(cbp_net_sgd_step)(const F(cbp_net) *net, const REAL *x, const REAL *y, size_t m, REAL eta)
{
    F(cbp_net_forward)(net, x, m);
    F(net_backward)(net, x, y, m, CBP_SUB_SCALED, eta);
}

static void F(prefetch_rows)(const REAL *src, const long long *idx, size_t m, size_t n)
{
#if defined(__GNUC__) || defined(__clang__)
    for (size_t i = 0; i < m; i++) {
        const char *row = (const char *)(src + (size_t)idx[i] * n);
        for (size_t off = 0; off < n * sizeof(REAL); off += 64) __builtin_prefetch(row + off, 0, 2);
    }
#else
    (void)src; (void)idx; (void)m; (void)n;
#endif
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
        /* Rows of a shuffled epoch come from all over memory: ask for the next batch's rows
         * now so they arrive while this batch computes. */
        const size_t next = start + m;
        const size_t m_next = (n - next < mini_batch_size) ? n - next : mini_batch_size;
        F(prefetch_rows)(x, perm + next, m_next, n_in);
        F(prefetch_rows)(y, perm + next, m_next, n_out);
        F(cbp_net_sgd_step)(net, xb, yb, m, eta);
    }
}

#undef F
