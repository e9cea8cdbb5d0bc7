/* Whole-network drivers for one floating type, dispatching every layer kernel to the
 * variant net->isa names.  Included by kernels.c after the plain and SIMD kernels. */
#define F(name) CBP_CAT(name, SUF)

/* ---- whole-network drivers ------------------------------------------------------------ */

/* Threads split a layer's outputs at multiples of CBP_TILE(isa) (kernels.c), the variant's
 * register tile: each thread then computes exactly the tiles one thread would, with the
 * same instructions, so the results are bitwise the same for any thread count, whatever
 * the compiler contracts into FMAs. */

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

/* Layer kernels of the variant `isa` (CBP_ISA_*) on a range of columns or rows; the plain
 * variant always runs whole layers (it is only used single-threaded).  An isa this build
 * lacks runs generic.  CBP_RESULT prefixes each call (empty, or "r =" for a value). */
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

/* z, a columns [j0, j1) of layer l: eq. (25) (softmax: z only, see run_batch) */
static void F(layer_forward)(int isa, REAL *z, REAL *a, const REAL *a_prev, const REAL *w,
                             const REAL *b, size_t m, size_t n_out, size_t n_in, size_t j0,
                             size_t j1, int act, cbp_prefetch *pf)
{
    if (isa == CBP_ISA_PLAIN) F(cbp_dense_forward)(z, a, a_prev, w, b, m, n_out, n_in, act);
    else { CBP_DISPATCH(isa, dense_forward, (z, a, a_prev, w, b, m, n_out, n_in, j0, j1, act, pf)) }
}

/* delta^{l-1} columns [k0, k1): BP2 */
static void F(layer_backward_delta)(int isa, REAL *delta_prev, const REAL *delta, const REAL *w,
                                    const REAL *a_prev, size_t m, size_t n_out, size_t n_in,
                                    size_t k0, size_t k1, int act, cbp_prefetch *pf)
{
    if (isa == CBP_ISA_PLAIN) F(cbp_dense_backward_delta)(delta_prev, delta, w, a_prev, m, n_out, n_in, act);
    else { CBP_DISPATCH(isa, dense_backward_delta, (delta_prev, delta, w, a_prev, m, n_out, n_in, k0, k1, act, pf)) }
}

/* rows [j0, j1) of BP3/BP4: op CBP_ADD accumulates nabla_w += delta^T a_prev and
 * nabla_b += sum delta into (out_w, out_b); ops CBP_SUB_SCALED, CBP_DECAY_SUB and
 * CBP_MOMENTUM apply the same product as the update of h to (out_w, out_b) = (w, b) (with
 * the velocity vel_w, vel_b): the fused step.  The plain variant does the step as gradient
 * (into scratch, the gradient blob) then update. */
static void F(layer_backward_params)(int isa, REAL *out_w, REAL *out_b, const REAL *delta,
                                     const REAL *a_prev, size_t m, size_t n_out, size_t n_in,
                                     size_t j0, size_t j1, int op, const F(cbp_hyper) *h,
                                     REAL *vel_w, REAL *vel_b, REAL *scratch_w, REAL *scratch_b,
                                     cbp_prefetch *pf)
{
    if (isa != CBP_ISA_PLAIN) {
        CBP_DISPATCH(isa, dense_backward_params, (out_w, out_b, delta, a_prev, m, n_out, n_in, j0, j1, op, h, vel_w, vel_b, pf))
        return;
    }
    if (op == CBP_ADD) {
        F(cbp_dense_backward_params)(out_w, out_b, delta, a_prev, m, n_out, n_in);
        return;
    }
    memset(scratch_w, 0, n_out * n_in * sizeof(REAL));
    memset(scratch_b, 0, n_out * sizeof(REAL));
    F(cbp_dense_backward_params)(scratch_w, scratch_b, delta, a_prev, m, n_out, n_in);
    if (op == CBP_MOMENTUM) {
        F(cbp_momentum_update)(out_w, vel_w, scratch_w, n_out * n_in, h->eta, h->decay, h->mu);
        F(cbp_momentum_update)(out_b, vel_b, scratch_b, n_out, h->eta, (REAL)0, h->mu);
        return;
    }
    F(cbp_sgd_update)(out_w, scratch_w, n_out * n_in, h->eta, op == CBP_DECAY_SUB ? h->keep : (REAL)1);
    F(cbp_sgd_update)(out_b, scratch_b, n_out, h->eta, (REAL)1);
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

/* The update of h from the gradient blob, as thread t of T: each layer's weights and
 * biases split in contiguous pieces (elementwise, so the result does not depend on T). */
static void F(apply_update)(const F(cbp_net) *net, const F(cbp_hyper) *h, int t, int T)
{
    for (size_t l = 1; l <= net->n_layers; l++) {
        const size_t n_out = net->sizes[l], n_in = net->sizes[l - 1];
        const size_t off = F(w_offset)(net, l);
        const size_t pieces[2][2] = {{off, n_out * n_in}, {off + n_out * n_in, n_out}};
        for (int k = 0; k < 2; k++) {                   /* k = 0: w^l, decayed; 1: b^l */
            size_t p0, p1;
            cbp_part(pieces[k][1], CBP_VEC_ALIGN / sizeof(REAL), t, T, &p0, &p1);
            if (p0 >= p1) continue;
            const size_t at = pieces[k][0] + p0, len = p1 - p0;
            if (h->mu != 0)
                F(cbp_momentum_update)(net->params + at, net->velocity + at, net->grads + at, len,
                                       h->eta, k == 0 ? h->decay : (REAL)0, h->mu);
            else
                F(cbp_sgd_update)(net->params + at, net->grads + at, len, h->eta,
                                  k == 0 ? h->keep : (REAL)1);
        }
    }
}

/* The fused update op of BP3/BP4 (layer_backward_params) for the step h. */
static inline int F(step_op)(const F(cbp_hyper) *h)
{
    return (h->mu != 0) ? CBP_MOMENTUM : (h->keep != (REAL)1) ? CBP_DECAY_SUB : CBP_SUB_SCALED;
}

/* One mini-batch through the network, as thread t of T (T = 1: the whole work, no
 * barrier).  Each phase splits a layer between the threads by output columns (forward,
 * BP1, BP2) or by rows of w (BP3/BP4); a barrier separates phases that depend on each
 * other.  A softmax output layer needs whole rows: its z is computed by columns, then
 * after a barrier softmax and BP1 run by rows.
 *   mode CBP_FORWARD_ONLY: z^l, a^l for l = 1..L.
 *   mode CBP_GRADIENT: then BP1 (with the cost's scale), and for l = L..1 BP2 for
 *     delta^{l-1} and BP3/BP4 of layer l accumulated into the gradient blob (op CBP_ADD).
 *   mode CBP_STEP: the gradient averaged over the m rows, the update of h (plain, L2
 *     decay or momentum) folded into BP3/BP4 (BP2 reads all of w^l first, so a barrier
 *     follows it before w^l changes). */
static void F(run_batch)(const F(cbp_net) *net, const REAL *x, const REAL *y, size_t m, int mode,
                         REAL scale, const F(cbp_hyper) *h, int t, int T, cbp_barrier *bar,
                         cbp_prefetch *pf)
{
    const size_t L = net->n_layers;
    const int isa = net->isa;
    const int act_L = net->act[L];
    const REAL *a_prev = x;                                 /* [m, n_0] */
    for (size_t l = 1; l <= L; l++) {
        const size_t n_out = net->sizes[l], n_in = net->sizes[l - 1];
        const REAL *w = net->params + F(w_offset)(net, l);  /* [n_out, n_in] */
        REAL *z = F(z_block)(net, net->z, l);               /* [m, n_out] */
        REAL *a = F(a_block)(net, l);                       /* [m, n_out] */
        size_t j0, j1;  /* split at tile multiples: the same tiles whatever the split */
        cbp_part(n_out, CBP_TILE(isa), t, T, &j0, &j1);
        const int whole_rows = (l == L && act_L == CBP_ACT_SOFTMAX);
        if (j0 < j1) {
            F(layer_forward)(isa, z, a, a_prev, w, w + n_out * n_in, m, n_out, n_in, j0, j1, net->act[l], pf);
            if (l == L && mode != CBP_FORWARD_ONLY && !whole_rows)  /* BP1 on the same columns */
                F(output_delta_part)(F(z_block)(net, net->delta, L), a, y, n_out, act_L, net->cost,
                                     scale, 0, m, j0, j1);
        }
        if (whole_rows && isa != CBP_ISA_PLAIN) {           /* (plain did the softmax itself) */
            cbp_barrier_wait(bar, T);                       /* z^L complete */
            size_t i0, i1;
            cbp_part(m, 1, t, T, &i0, &i1);
            F(softmax_rows)(a, z, n_out, i0, i1);
        }
        if (whole_rows && mode != CBP_FORWARD_ONLY) {
            size_t i0, i1;
            cbp_part(m, 1, t, T, &i0, &i1);
            F(output_delta_part)(F(z_block)(net, net->delta, L), a, y, n_out, act_L, net->cost,
                                 scale, i0, i1, 0, n_out);
        }
        cbp_barrier_wait(bar, T);
        a_prev = a;
    }
    if (mode == CBP_FORWARD_ONLY) return;
    const int op = (mode == CBP_STEP) ? F(step_op)(h) : CBP_ADD;
    for (size_t l = L; l >= 1; l--) {
        const size_t n_out = net->sizes[l], n_in = net->sizes[l - 1];
        const size_t off = F(w_offset)(net, l);
        const REAL *delta = F(z_block)(net, net->delta, l);          /* [m, n_out] */
        const REAL *ap = (l == 1) ? x : F(a_block)(net, l - 1);      /* [m, n_in] */
        if (l > 1) {
            /* BP2: delta^{l-1} from delta^l and w^l, before w^l changes */
            size_t k0, k1;
            cbp_part(n_in, 4 * CBP_VEC_ALIGN / sizeof(REAL), t, T, &k0, &k1);
            if (k0 < k1)
                F(layer_backward_delta)(isa, F(z_block)(net, net->delta, l - 1), delta,
                                        net->params + off, ap, m, n_out, n_in, k0, k1,
                                        net->act[l - 1], pf);
            cbp_barrier_wait(bar, T);
        }
        /* BP3, BP4 for layer l, accumulated or applied, on this thread's rows of w^l */
        size_t j0, j1;
        cbp_part(n_out, CBP_TILE(isa), t, T, &j0, &j1);
        if (j0 < j1) {
            REAL *out = (op == CBP_ADD) ? net->grads + off : net->params + off;
            REAL *vel = (op == CBP_MOMENTUM) ? net->velocity + off : NULL;
            F(layer_backward_params)(isa, out, out + n_out * n_in, delta, ap, m, n_out, n_in, j0,
                                     j1, op, h, vel, vel ? vel + n_out * n_in : NULL,
                                     net->grads + off, net->grads + off + n_out * n_in, pf);
        }
        if (l == 1) break;                                  /* no delta for the input layer */
    }
    cbp_barrier_wait(bar, T);                               /* parameters (or gradient) complete */
}

void F(cbp_net_forward)(const F(cbp_net) *net, const REAL *x, size_t m)
{
    F(run_batch)(net, x, NULL, m, CBP_FORWARD_ONLY, 0, NULL, 0, 1, NULL, NULL);
}

void F(cbp_net_predict)(const F(cbp_net) *net, const REAL *x, size_t m, REAL *out)
{
    const size_t n_in = net->sizes[0], n_out = net->sizes[net->n_layers];
    const REAL *a_last = F(a_block)(net, net->n_layers);   /* [m_cap, n_L] */
    for (size_t start = 0; start < m; start += net->m_cap) {
        const size_t rows = (m - start < net->m_cap) ? m - start : net->m_cap;
        F(cbp_net_forward)(net, x + start * n_in, rows);
        memcpy(out + start * n_out, a_last, rows * n_out * sizeof(REAL));
    }
}

void F(cbp_net_backprop)(const F(cbp_net) *net, const REAL *x, const REAL *y, size_t m, REAL scale)
{
    F(run_batch)(net, x, y, m, CBP_GRADIENT, scale, NULL, 0, 1, NULL, NULL);
}

void F(cbp_net_apply_gradient)(const F(cbp_net) *net, F(cbp_hyper) h)
{
    F(apply_update)(net, &h, 0, 1);
}

void F(cbp_net_sgd_step)(const F(cbp_net) *net, const REAL *x, const REAL *y, size_t m,
                         F(cbp_hyper) h)
{
    F(run_batch)(net, x, y, m, CBP_STEP, (REAL)1 / (REAL)m, &h, 0, 1, NULL, NULL);
}

/* One epoch as thread t of T: for each mini-batch, gather this thread's share of the rows,
 * barrier, run_batch, which prefetches this thread's share of the next batch's rows a few
 * lines per register tile (cbp_prefetch in kernels.c). */
typedef struct {
    const F(cbp_net) *net;
    const REAL *x, *y;
    const long long *perm;
    size_t n, mini_batch_size;
    F(cbp_hyper) h;
    cbp_team team;
    size_t first;               /* the row of perm the epoch starts at (a multiple of mbs) */
    atomic_size_t solo_batch;   /* hidden split: 1 + the mini-batch after which thread 0
                                   finishes alone (0: none) */
} F(epoch_job);

static void F(epoch_run)(F(epoch_job) *job, int t)
{
    const F(cbp_net) *net = job->net;
    /* (solo already set: the hidden split's thread 0 finishing its epoch alone) */
    int T = atomic_load_explicit(&job->team.solo, memory_order_relaxed) ? 1 : job->team.n_threads;
    const size_t n = job->n, mbs = job->mini_batch_size;
    const size_t n_in = net->sizes[0], n_out = net->sizes[net->n_layers];
    REAL *xb = net->a;                                      /* [mbs, n_0] block a^0 */
    REAL *yb = net->y;                                      /* [mbs, n_L] */
    cbp_prefetch pf = {.base = {(const char *)job->x, (const char *)job->y},
                       .row_bytes = {n_in * sizeof(REAL), n_out * sizeof(REAL)}};
    for (size_t start = job->first; start < n; start += mbs) {
        const size_t m = (n - start < mbs) ? n - start : mbs;
        /* On a shared machine a partner thread may lose its core for milliseconds, and
         * every barrier then waits that long: when that has happened too often, thread 0
         * finishes the epoch alone (the result is the same for any thread count). */
        if (T > 1 && t == 0 &&
            atomic_load_explicit(&job->team.barrier.slow, memory_order_relaxed) > CBP_SLOW_LIMIT)
            atomic_store_explicit(&job->team.solo, 1, memory_order_relaxed);
        size_t i0, i1;
        cbp_part(m, 1, t, T, &i0, &i1);
        F(cbp_gather_rows)(xb + i0 * n_in, job->x, job->perm + start + i0, i1 - i0, n_in);
        F(cbp_gather_rows)(yb + i0 * n_out, job->y, job->perm + start + i0, i1 - i0, n_out);
        const size_t next = start + m;
        const size_t m_next = (n - next < mbs) ? n - next : mbs;
        cbp_part(m_next, 1, t, T, &i0, &i1);
        cbp_prefetch_start(&pf, job->perm + next + i0, i1 - i0);
        cbp_barrier_wait(&job->team.barrier, T);
        if (T > 1 && atomic_load_explicit(&job->team.solo, memory_order_relaxed)) {
            if (t > 0) return;                              /* every gather share is done */
            T = 1;
        }
        F(run_batch)(net, xb, yb, m, CBP_STEP, (REAL)1 / (REAL)m, &job->h, t, T, &job->team.barrier, &pf);
        cbp_prefetch_finish(&pf);
    }
}

static void F(epoch_thread)(void *job, int t) { F(epoch_run)((F(epoch_job) *)job, t); }

/* ---- the hidden split: one hidden layer on T threads, one barrier per mini-batch --------
 * run_batch splits every phase of a mini-batch between the threads and waits at a barrier
 * after each (five per batch for L = 2); at mini-batch 10 a phase takes a few
 * microseconds, so the barriers cost as much as the second core brings.  For L = 2 with a
 * narrow output layer, thread t instead owns hidden units [j0, j1) (tile multiples) and
 * everything that belongs to them: z^1, a^1 and delta^1 columns, and the rows of w^1, b^1
 * (forward and BP4).  Per mini-batch b:
 *   1. gather the batch's rows into the thread's own x, y blocks (all rows);
 *   2. z^1, a^1 columns [j0, j1) from the thread's rows of w^1 (its own, so no wait);
 *   3. barrier: a^1 complete;
 *   4. on every thread, whole: the output layer and BP1 (the output layer is small:
 *      cbp_split_len);
 *   5. BP2 for delta^1 columns [j0, j1), from w^2 before its update;
 *   6. on every thread, whole: the update of w^2, b^2 (BP3/BP4), each thread on its own
 *      copy of w^2, b^2 (and of their velocity): the same kernel calls on the same inputs,
 *      so every copy holds the same values (thread 0's is the parameter blob), and no
 *      thread reads another's w^2;
 *   7. BP3/BP4 for rows [j0, j1) of w^1, b^1.
 * A thread may start batch b + 1 while another is still in steps 4-7 of batch b, so a^1,
 * the one block threads share, alternates between two blocks by the parity of b.  No
 * thread gets two batches ahead: step 3 waits for all.  Every value is computed by the
 * same kernel calls as on one thread (the ranges only move vector windows), so the result
 * is bitwise the same.  If barriers keep waiting (slow), thread 0 finishes the epoch alone
 * after the current batch (the decision names the batch: see solo_batch), as epoch_run
 * does. */
#if CBP_HAVE_THREADS
static int F(split_applies)(const F(cbp_net) *net, int T)
{
    if (net->n_layers != 2 || net->isa == CBP_ISA_PLAIN || T < 2) return 0;
    const size_t n0 = net->sizes[0], n1 = net->sizes[1], n2 = net->sizes[2];
    /* the output layer, done by every thread, at most about a quarter of a thread's share
     * of the work */
    if (4 * (size_t)T * n2 > 2 * n0 + 3 * n2) return 0;
    /* every thread's hidden units (split_run's shares) at least one vector wide: a
     * narrower share goes through the slow zero-padded paths */
    const size_t vbytes = net->isa == CBP_ISA_AVX512 ? 64 : net->isa == CBP_ISA_AVX2 ? 32 : 16;
    for (int t = 0; t < T; t++) {
        size_t j0, j1;
        cbp_part(n1, CBP_TILE(net->isa), t, T, &j0, &j1);
        if (j1 - j0 < vbytes / sizeof(REAL)) return 0;
    }
    return 1;
}
#endif

/* len elements rounded up to whole 64-byte lines */
static inline size_t F(lines)(size_t len)
{
    const size_t k = 64 / sizeof(REAL);
    return (len + k - 1) / k * k;
}

/* Elements of one thread's own blocks in net->split: x [rows, n_0]; y, z^2, a^2, delta^2
 * [rows, n_2]; z^1, delta^1 [rows, n_1]; w^2, b^2 and their velocity [n_2 n_1 + n_2] each. */
static inline size_t F(split_own)(const size_t *sizes, size_t rows)
{
    const size_t n0 = sizes[0], n1 = sizes[1], n2 = sizes[2];
    return F(lines)(rows * n0) + 4 * F(lines)(rows * n2) + 2 * F(lines)(rows * n1) +
           2 * F(lines)(n2 * n1 + n2);
}

/* net->split: the second a^1 block [rows, n_1], then the own blocks of threads 1..T-1
 * (thread 0 uses the workspace, the parameter blob and the velocity). */
size_t F(cbp_split_len)(const F(cbp_net) *net, size_t rows, int T)
{
#if CBP_HAVE_THREADS
    if (!F(split_applies)(net, T)) return 0;
    return F(lines)(rows * net->sizes[1]) + (size_t)(T - 1) * F(split_own)(net->sizes, rows);
#else
    (void)net; (void)rows; (void)T;
    return 0;
#endif
}

#if CBP_HAVE_THREADS
static void F(split_run)(F(epoch_job) *job, int t)
{
    const F(cbp_net) *net = job->net;
    const int T = job->team.n_threads;
    if (T == 1) {                                   /* the team did not start: one thread */
        F(epoch_run)(job, 0);
        return;
    }
    const int isa = net->isa;
    const size_t n = job->n, mbs = job->mini_batch_size, rows = net->split_rows;
    const size_t n0 = net->sizes[0], n1 = net->sizes[1], n2 = net->sizes[2];
    const int act1 = net->act[1], act2 = net->act[2];
    const F(cbp_hyper) *h = &job->h;
    const int op = F(step_op)(h);
    const size_t len2 = n2 * n1 + n2;                           /* w^2 [n_2, n_1], b^2 [n_2] */
    REAL *w1 = net->params, *b1 = w1 + n1 * n0;                 /* [n_1, n_0], [n_1] */
    REAL *v1 = net->velocity;                                   /* as params (momentum) */
    REAL *a1s[2] = {F(a_block)(net, 1), net->split};            /* [m, n_1] by parity */
    REAL *xb, *yb, *z2, *a2, *d2, *z1, *d1, *w2, *v2;           /* this thread's own blocks */
    if (t == 0) {
        xb = net->a;                                            /* [m, n_0] */
        yb = net->y;                                            /* [m, n_2] */
        z2 = F(z_block)(net, net->z, 2);                        /* [m, n_2] */
        a2 = F(a_block)(net, 2);                                /* [m, n_2] */
        d2 = F(z_block)(net, net->delta, 2);                    /* [m, n_2] */
        z1 = F(z_block)(net, net->z, 1);                        /* [m, n_1] */
        d1 = F(z_block)(net, net->delta, 1);                    /* [m, n_1] */
        w2 = b1 + n1;                                           /* [len2]: w^2, b^2 */
        v2 = v1 ? v1 + n1 * (n0 + 1) : NULL;                    /* [len2] */
    } else {
        xb = net->split + F(lines)(rows * n1) + (size_t)(t - 1) * F(split_own)(net->sizes, rows);
        yb = xb + F(lines)(rows * n0);
        z2 = yb + F(lines)(rows * n2);
        a2 = z2 + F(lines)(rows * n2);
        d2 = a2 + F(lines)(rows * n2);
        z1 = d2 + F(lines)(rows * n2);
        d1 = z1 + F(lines)(rows * n1);
        w2 = d1 + F(lines)(rows * n1);
        v2 = w2 + F(lines)(len2);
        /* the copies start from the blob (which thread 0 changes only after barrier 1) */
        memcpy(w2, b1 + n1, len2 * sizeof(REAL));
        if (v1) memcpy(v2, v1 + n1 * (n0 + 1), len2 * sizeof(REAL));
        else v2 = NULL;
    }
    REAL *b2 = w2 + n2 * n1;
    size_t j0, j1;                                              /* this thread's hidden units */
    cbp_part(n1, CBP_TILE(isa), t, T, &j0, &j1);
    cbp_prefetch pf = {.base = {(const char *)job->x, (const char *)job->y},
                       .row_bytes = {n0 * sizeof(REAL), n2 * sizeof(REAL)}};
    for (size_t start = 0, b = 0; start < n; start += mbs, b++) {
        const size_t m = (n - start < mbs) ? n - start : mbs;
        REAL *a1 = a1s[b & 1];
        F(cbp_gather_rows)(xb, job->x, job->perm + start, m, n0);
        F(cbp_gather_rows)(yb, job->y, job->perm + start, m, n2);
        const size_t next = start + m, m_next = (n - next < mbs) ? n - next : mbs;
        cbp_prefetch_start(&pf, job->perm + next, m_next);
        F(layer_forward)(isa, z1, a1, xb, w1, b1, m, n1, n0, j0, j1, act1, &pf);
        /* The decision to finish alone names its mini-batch: with one barrier per batch,
         * thread 0 may already decide at batch b + 1 while a partner has yet to read the
         * flag after batch b's barrier, and every thread must take the same batch. */
        if (t == 0 && atomic_load_explicit(&job->solo_batch, memory_order_relaxed) == 0 &&
            atomic_load_explicit(&job->team.barrier.slow, memory_order_relaxed) > CBP_SLOW_LIMIT) {
            atomic_store_explicit(&job->solo_batch, b + 1, memory_order_relaxed);
        }
        cbp_barrier_wait(&job->team.barrier, T);                /* a^1 complete */
        const size_t sb = atomic_load_explicit(&job->solo_batch, memory_order_relaxed);
        const int solo = sb != 0 && sb <= b + 1;
        /* the output layer and BP1, whole, on every thread */
        F(layer_forward)(isa, z2, a2, a1, w2, b2, m, n2, n1, 0, n2, act2, &pf);
        if (act2 == CBP_ACT_SOFTMAX) F(softmax_rows)(a2, z2, n2, 0, m);
        F(output_delta_part)(d2, a2, yb, n2, act2, net->cost, (REAL)1 / (REAL)m, 0, m, 0, n2);
        /* BP2 for this thread's columns of delta^1, then this thread's copy of w^2 updated,
         * then its rows of w^1 */
        F(layer_backward_delta)(isa, d1, d2, w2, a1, m, n2, n1, j0, j1, act1, &pf);
        F(layer_backward_params)(isa, w2, b2, d2, a1, m, n2, n1, 0, n2, op, h, v2,
                                 v2 ? v2 + n2 * n1 : NULL, NULL, NULL, &pf);
        F(layer_backward_params)(isa, w1, b1, d1, xb, m, n1, n0, j0, j1, op, h, v1,
                                 v1 ? v1 + n1 * n0 : NULL, NULL, NULL, &pf);
        cbp_prefetch_finish(&pf);
        if (solo && next < n) {
            cbp_barrier_wait(&job->team.barrier, T);            /* batch b done everywhere */
            if (t > 0) return;
            job->first = next;
            atomic_store_explicit(&job->team.solo, 1, memory_order_relaxed);  /* (reported) */
            F(epoch_run)(job, 0);                               /* one thread: solo is set */
            return;
        }
    }
}

static void F(split_thread)(void *job, int t) { F(split_run)((F(epoch_job) *)job, t); }
#endif

/* ---- the feeder: a second core gathers the next mini-batch while this one trains -----
 * A shuffled epoch reads its rows from all over memory; one core's gather waits on
 * memory (at mini-batch 10 about a fifth of the epoch, float32 and float64, even with the
 * spread prefetch), while the book's small networks leave the second core idle.  Batch b
 * goes into buffer b % 2.  Either thread gathers a batch after claiming it (claimed: a
 * compare-and-swap on the next unclaimed batch); the feeder claims batch b only once
 * batch b - 2 is trained (its buffer is free), the trainer claims the batch it needs next
 * if the feeder has not.  The trainer waits for a batch the feeder is gathering; once a
 * wait lasts longer than slow_wait (the feeder lost its core) it stops the feeder, which
 * then claims nothing more (it finishes and publishes a batch it has already claimed),
 * and gathers the rest itself.  The data, and so the result, are the same whoever
 * gathers. */
#if CBP_HAVE_THREADS
typedef struct {
    const REAL *x, *y;
    const long long *perm;
    size_t n, mbs, n_in, n_out, batches;
    REAL *xb[2], *yb[2];        /* [mbs, n_0], [mbs, n_L]: buffer k holds a batch b = k mod 2 */
    _Alignas(64) atomic_size_t claimed;  /* batches claimed for gathering, by either thread */
    atomic_size_t ready[2];     /* the last batch the feeder gathered into buffer k, plus 1 */
    atomic_size_t fed;          /* batches the feeder gathered */
    _Alignas(64) atomic_size_t consumed; /* batches trained (the trainer writes this line) */
    atomic_int stop;            /* 1: the feeder leaves (end of epoch, or it was too slow) */
} F(feed_job);

static void F(feed_gather)(F(feed_job) *f, size_t b)
{
    const size_t start = b * f->mbs, m = (f->n - start < f->mbs) ? f->n - start : f->mbs;
    F(cbp_gather_rows)(f->xb[b & 1], f->x, f->perm + start, m, f->n_in);
    F(cbp_gather_rows)(f->yb[b & 1], f->y, f->perm + start, m, f->n_out);
}

static void *F(feeder_main)(void *p)
{
    F(feed_job) *f = (F(feed_job) *)p;
    unsigned idle = 0;
    while (!atomic_load_explicit(&f->stop, memory_order_acquire)) {
        size_t b = atomic_load_explicit(&f->claimed, memory_order_acquire);
        if (b >= f->batches) break;
        if (b > atomic_load_explicit(&f->consumed, memory_order_acquire) + 1) {
            cbp_wait_step(&idle);                        /* buffer b % 2 still in use */
            continue;
        }
        if (!atomic_compare_exchange_strong_explicit(&f->claimed, &b, b + 1, memory_order_acq_rel,
                                                     memory_order_acquire))
            continue;                                        /* the trainer took it */
        F(feed_gather)(f, b);
        atomic_fetch_add_explicit(&f->fed, 1, memory_order_relaxed);
        atomic_store_explicit(&f->ready[b & 1], b + 1, memory_order_release);
        idle = 0;
    }
    return NULL;
}

/* One epoch on this thread with a feeder thread; returns 0 if the feeder could not be
 * created (nothing done then). */
static int F(epoch_fed)(const F(cbp_net) *net, const REAL *x, const REAL *y,
                        const long long *perm, size_t n, size_t mbs, const F(cbp_hyper) *h,
                        cbp_epoch_stats *stats)
{
    const size_t n_in = net->sizes[0], n_out = net->sizes[net->n_layers];
    F(feed_job) f = {.x = x, .y = y, .perm = perm, .n = n, .mbs = mbs, .n_in = n_in,
                     .n_out = n_out, .batches = n / mbs + (n % mbs != 0),
                     .xb = {net->a, net->feed}, .yb = {net->y, net->feed + net->feed_rows * n_in}};
    atomic_init(&f.claimed, 0);
    atomic_init(&f.ready[0], 0);
    atomic_init(&f.ready[1], 0);
    atomic_init(&f.consumed, 0);
    atomic_init(&f.stop, 0);
    atomic_init(&f.fed, 0);
    pthread_t feeder;
    if (pthread_create(&feeder, NULL, F(feeder_main), &f) != 0) return 0;
    const double slow_wait = net->slow_wait > 0 ? net->slow_wait : CBP_SLOW_WAIT;
    int stopped = 0;
    for (size_t b = 0; b < f.batches; b++) {
        const int k = (int)(b & 1);
        if (atomic_load_explicit(&f.ready[k], memory_order_acquire) != b + 1) {
            size_t want = b;
            if (atomic_compare_exchange_strong_explicit(&f.claimed, &want, b + 1, memory_order_acq_rel,
                                                        memory_order_acquire)) {
                F(feed_gather)(&f, b);                      /* not claimed: gather it here */
            } else {                                        /* the feeder is gathering it */
                unsigned spins = 0;
                const double since = cbp_now();
                while (atomic_load_explicit(&f.ready[k], memory_order_acquire) != b + 1) {
                    if (!stopped && (spins & 63) == 0 && cbp_now() - since > slow_wait) {
                        atomic_store_explicit(&f.stop, 1, memory_order_release);
                        stopped = 1;
                    }
                    cbp_wait_step(&spins);
                }
            }
        }
        const size_t m = (n - b * mbs < mbs) ? n - b * mbs : mbs;
        F(run_batch)(net, f.xb[k], f.yb[k], m, CBP_STEP, (REAL)1 / (REAL)m, h, 0, 1, NULL, NULL);
        atomic_store_explicit(&f.consumed, b + 1, memory_order_release);
    }
    atomic_store_explicit(&f.stop, 1, memory_order_release);
    pthread_join(feeder, NULL);
    stats->fed = atomic_load(&f.fed);
    stats->stopped = stopped;
    return 1;
}
#endif

int F(cbp_net_sgd_epoch)(const F(cbp_net) *net, const REAL *x, const REAL *y,
                         const long long *perm, size_t n, size_t mini_batch_size, F(cbp_hyper) h,
                         cbp_epoch_stats *stats)
{
    F(epoch_job) job = {.net = net, .x = x, .y = y, .perm = perm, .n = n,
                        .mini_batch_size = mini_batch_size, .h = h};
    atomic_init(&job.solo_batch, 0);
    int T = (net->isa == CBP_ISA_PLAIN || net->n_threads < 1) ? 1 : net->n_threads;
    if (T > CBP_MAX_THREADS) T = CBP_MAX_THREADS;
    stats->fed = 0;
    stats->stopped = 0;
    stats->split = 0;
#if CBP_HAVE_THREADS
    if (T == 1 && net->feeder && net->feed && net->feed_rows >= mini_batch_size &&
        net->isa != CBP_ISA_PLAIN && F(epoch_fed)(net, x, y, perm, n, mini_batch_size, &h, stats))
        return 1;
#endif
    double start_wait = net->start_wait;
    if (start_wait <= 0) {                                  /* default: 2% of the epoch's work */
        double flops = 0;
        for (size_t l = 1; l <= net->n_layers; l++)
            flops += 4.0 * (double)net->sizes[l] * (double)net->sizes[l - 1] * (double)n;
        start_wait = 0.02 * flops / CBP_START_RATE;
        start_wait = start_wait < CBP_START_WAIT ? CBP_START_WAIT
                   : start_wait > CBP_START_WAIT_MAX ? CBP_START_WAIT_MAX : start_wait;
    }
    cbp_task task = F(epoch_thread);                        /* the per-phase team */
#if CBP_HAVE_THREADS
    if (net->split && net->split_rows >= mini_batch_size && net->split_threads >= T &&
        F(split_applies)(net, T))
        task = F(split_thread);                             /* the hidden split */
#endif
    cbp_team_run(&job.team, T, task, &job, start_wait, net->slow_wait);
    stats->split = task != F(epoch_thread) && job.team.n_threads > 1;
    return atomic_load(&job.team.solo) ? 1 : job.team.n_threads;
}

#undef F
