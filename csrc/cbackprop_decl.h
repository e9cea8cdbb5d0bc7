/* Declarations for one floating type; included by cbackprop.h with REAL and SUF defined.
 * F(name) expands to name_s (float) or name_d (double).  No include guard on purpose. */
#define F(name) CBP_CAT(name, SUF)

/* Per-network state: parameter and gradient blobs plus the per-layer workspace, all
 * allocated by the caller once per network and mini-batch capacity m_cap.  A call with
 * m <= m_cap rows uses the first m rows of every block. */
typedef struct {
    size_t n_layers;      /* L = len(sizes) - 1                                               */
    const size_t *sizes;  /* [L+1]: n_0 .. n_L                                                */
    REAL *params;         /* [n_params] parameter blob: per layer w^l [n_l, n_{l-1}], b^l [n_l] */
    REAL *grads;          /* [n_params] gradient blob, same layout: nabla_w^l, nabla_b^l        */
    REAL *z;              /* [m_cap * sum_{l=1..L} n_l]: z^l is [m, n_l] at m_cap*sum_{1<=k<l} n_k */
    REAL *a;              /* [m_cap * sum_{l=0..L} n_l]: a^l is [m, n_l] at m_cap*sum_{0<=k<l} n_k;
                             block 0 holds gathered input of sgd_epoch (with the feeder, every
                             other mini-batch's: the rest go to feed)                          */
    REAL *delta;          /* same layout as z: delta^l for l = 1..L                            */
    REAL *y;              /* [m_cap, n_L] gathered targets (sgd_epoch)                          */
    size_t m_cap;         /* rows every workspace block holds                                   */
    REAL *velocity;       /* [n_params] momentum velocity, same layout (NULL when mu is never
                             used)                                                             */
    const int *act;       /* [L+1]: act[l] = CBP_ACT_* of layer l = 1..L (act[0] unused);
                             softmax only for l = L                                            */
    int cost;             /* CBP_COST_*, paired with act[L] as checked at the Python boundary:
                             cross-entropy with sigmoid, log-likelihood with softmax          */
    int isa;              /* kernel variant, CBP_ISA_*, supported on this CPU                    */
    int n_threads;        /* threads for sgd_epoch (1: the caller only; plain kernels: always 1) */
    double start_wait;    /* seconds sgd_epoch waits for its threads to start before it runs
                             alone (0: the default, 2% of the epoch's work, 1-20 ms)          */
    double slow_wait;     /* a barrier wait longer than this (seconds) makes the epoch finish
                             on one thread (0: the default, 5 ms)                              */
    REAL *feed;           /* [feed_rows * (n_0 + n_L)]: a second input block [feed_rows, n_0] and
                             target block [feed_rows, n_L] for the feeder (NULL: no feeder)   */
    size_t feed_rows;     /* rows of feed's blocks (the feeder runs only for mbs <= feed_rows) */
    int feeder;           /* 1: a one-thread epoch lets a second thread gather the next
                             mini-batch into the other buffer while this one trains          */
    REAL *split;          /* [cbp_split_len(net, split_rows, split_threads)]: the hidden-split
                             epoch's second a^1 block, and threads 1..T-1's own blocks (input,
                             target, z, a^2, delta, copies of w^2, b^2 and their velocity)
                             (NULL: none)                                                     */
    size_t split_rows;    /* rows of split's blocks                                         */
    int split_threads;    /* threads split's blocks were laid out for                       */
} F(cbp_net);

/* The hyper-parameters of one gradient-descent update (book eqs. (20)-(21), (93)-(94), and
 * momentum, chapter 3), applied to a gradient g averaged over the mini-batch:
 *   without momentum (mu == 0):  w <- keep w - eta g,   b <- b - eta g
 *   with momentum:               v <- mu v - eta g - decay w,  w <- w + v   (weights)
 *                                v <- mu v - eta g,            b <- b + v   (biases)
 * keep = 1 - decay, decay = eta lmbda / n (L2 weight decay, n the training-set size;
 * biases are not decayed), both computed once by the caller. */
typedef struct {
    REAL eta;
    REAL keep;
    REAL decay;
    REAL mu;
} F(cbp_hyper);

/* ---- layer kernels ------------------------------------------------------------------- */

/* Feedforward of one dense layer, book eq. (25) with rows as samples:
 *   z = a_prev . w^T + b,   a = f(z),  f = act (CBP_ACT_*; softmax per row, eq. (78)).
 * z, a: [m, n_out] (overwritten); a_prev: [m, n_in]; w: [n_out, n_in]; b: [n_out]. */
void F(cbp_dense_forward)(REAL *z, REAL *a, const REAL *a_prev, const REAL *w, const REAL *b,
                          size_t m, size_t n_out, size_t n_in, int act);

/* BP1 for the batch cost C = scale * sum_x C_x over the m rows (scale = 1/m: the average):
 *   quadratic, elementwise f:  delta^L = scale (a^L - y) (.) f'(z^L)   (eq. (BP1))
 *   quadratic, softmax:        delta^L_j = a_j (g_j - sum_k a_k g_k),  g = scale (a - y)
 *                              (BP1 with the softmax Jacobian in place of Sigma'(z))
 *   cross-entropy, sigmoid:    delta^L = scale (a^L - y)                (eq. (66))
 *   log-likelihood, softmax:   delta^L = scale (a^L sum_j y_j - y)      (eq. (81))
 * delta: [m, n] (overwritten); a, y: [m, n]; act = act[L]. */
void F(cbp_output_delta)(REAL *delta, const REAL *a, const REAL *y, size_t m, size_t n, int act,
                         int cost, REAL scale);

/* BP2, the delta recursion, with rows as samples:
 *   delta^l = (delta^{l+1} . w^{l+1}) (.) f'(z^l),  f'(z^l) from a^l (see CBP_ACT_*)
 * (book eq. (BP2): ((w^{l+1})^T delta^{l+1}) (.) sigma'(z^l) per column-vector sample).
 * delta_prev: [m, n_in] (overwritten) is delta^l; delta: [m, n_out] is delta^{l+1};
 * w: [n_out, n_in] is w^{l+1}; a_prev: [m, n_in] is a^l; act = act[l] (not softmax). */
void F(cbp_dense_backward_delta)(REAL *delta_prev, const REAL *delta, const REAL *w,
                                 const REAL *a_prev, size_t m, size_t n_out, size_t n_in, int act);

/* BP3 and BP4 summed over the batch rows (ACCUMULATES into its outputs):
 *   nabla_b[j]    += sum_i delta[i, j]                 (BP3: dC/db_j = delta_j)
 *   nabla_w[j, k] += sum_i delta[i, j] a_prev[i, k]     (BP4: dC/dw_jk = a^{l-1}_k delta_j)
 * i.e. nabla_w += delta^T . a_prev.
 * nabla_w: [n_out, n_in]; nabla_b: [n_out]; delta: [m, n_out]; a_prev: [m, n_in]. */
void F(cbp_dense_backward_params)(REAL *nabla_w, REAL *nabla_b, const REAL *delta,
                                  const REAL *a_prev, size_t m, size_t n_out, size_t n_in);

/* Gradient-descent step over part of a blob (book eqs. (20)-(21), with L2 weight decay
 * eq. (93) when keep != 1): params <- keep params - eta grads.
 * params: [n] (updated in place); grads: [n]. */
void F(cbp_sgd_update)(REAL *params, const REAL *grads, size_t n, REAL eta, REAL keep);

/* Momentum step (chapter 3, "momentum-based gradient descent") over part of a blob:
 *   v <- mu v - eta g - decay p,   p <- p + v.
 * params, velocity: [n] (updated in place); grads: [n]. */
void F(cbp_momentum_update)(REAL *params, REAL *velocity, const REAL *grads, size_t n, REAL eta,
                            REAL decay, REAL mu);

/* dst[i, :] = src[idx[i], :] for i < m.  dst: [m, n] (overwritten); src: [*, n];
 * idx: [m], every entry a valid row of src. */
void F(cbp_gather_rows)(REAL *dst, const REAL *src, const long long *idx, size_t m, size_t n);

/* Benchmark helper: 12 independent multiply-add chains of the variant isa for iters rounds
 * (24 * lanes * iters flops, lanes = vector bytes / sizeof(REAL)); measures the ceiling. */
double F(cbp_fma_loop)(int isa, size_t iters);

/* 1 when every one of the n values is finite, else 0. */
int F(cbp_all_finite)(const REAL *x, size_t n);

/* ---- whole-network drivers (one C call per mini-batch or per epoch) ------------------- */

/* Elements of the buffer net->split that a hidden-split epoch of T threads with
 * mini-batches of up to `rows` rows needs; 0 when that epoch does not apply to net and T
 * (see cbp_net_sgd_epoch). */
size_t F(cbp_split_len)(const F(cbp_net) *net, size_t rows, int T);

/* Number of parameters: sum_l n_l n_{l-1} + n_l. */
size_t F(cbp_n_params)(const F(cbp_net) *net);

/* Feedforward, eq. (25) for l = 1..L: fills z^l and a^l of the workspace (overwritten).
 * x: [m, n_0] with m <= m_cap; a^L is then the block of layer L in net->a. */
void F(cbp_net_forward)(const F(cbp_net) *net, const REAL *x, size_t m);

/* Feedforward of any number of rows, m_cap rows at a time through the workspace:
 * out = a^L.  x: [m, n_0]; out: [m, n_L] (overwritten); overwrites the workspace. */
void F(cbp_net_predict)(const F(cbp_net) *net, const REAL *x, size_t m, REAL *out);

/* Backpropagation over an m-row batch (matrix form of BP1-BP4): forward pass, BP1 at
 * layer L, BP2 for l = L-1 .. 1, BP3/BP4 for every layer.  ACCUMULATES the gradient of
 * C = scale * sum_x C_x (scale = 1/m: the batch average; 1: the sum, for accumulating
 * micro-batches) into net->grads (zero it first for a plain gradient); overwrites the z, a
 * and delta workspace.  x: [m, n_0]; y: [m, n_L]; m <= m_cap. */
void F(cbp_net_backprop)(const F(cbp_net) *net, const REAL *x, const REAL *y, size_t m,
                         REAL scale);

/* One update from the gradient blob (after cbp_net_backprop calls): the update of
 * F(cbp_hyper) with g = net->grads, over every layer.  grads is left unchanged. */
void F(cbp_net_apply_gradient)(const F(cbp_net) *net, F(cbp_hyper) h);

/* One mini-batch step (network.py's / network2.py's update_mini_batch) with the gradient
 * averaged over the m rows, the update folded into BP3/BP4: for l = L..1, BP2 for
 * delta^{l-1} from the old w^l, then the update of h on w^l, b^l (and the velocity), no
 * gradient stored (the plain variant uses grads as scratch: no meaningful value after).
 * Overwrites the workspace. */
void F(cbp_net_sgd_step)(const F(cbp_net) *net, const REAL *x, const REAL *y, size_t m,
                         F(cbp_hyper) h);

/* One epoch of mini-batch SGD in the order perm: mini-batch k holds rows
 * perm[k*mbs .. min((k+1)*mbs, n)) of x and y, gathered into workspace blocks a^0 and y,
 * then one sgd_step.  x: [*, n_0]; y: [*, n_L]; perm: [n]; mbs <= m_cap.  Runs on
 * net->n_threads threads (created for the call), each layer split between them; the
 * result does not depend on the thread count (each output is computed by one thread in
 * the same order).  When barriers keep waiting for a thread that lost its core (a shared
 * machine), thread 0 finishes the epoch alone.  Returns the threads that finished it.
 * With n_threads = 1, net->feeder and net->feed set (feed_rows >= mbs), SIMD kernels and
 * a threads build (not _WIN32), a feeder thread gathers mini-batches into the two buffers
 * (a^0 and y blocks, feed) ahead of the training thread, which gathers any batch the
 * feeder has not claimed yet.  A network with one hidden layer (L = 2) whose output layer
 * is narrow (cbp_split_len) trains on n_threads >= 2 threads by the hidden split instead
 * when net->split holds cbp_split_len(net, mbs, n_threads) elements (split_rows >= mbs,
 * split_threads >= n_threads): one barrier per mini-batch instead of one per phase.
 * *stats (not NULL) says what the feeder did and whether the hidden split ran. */
int F(cbp_net_sgd_epoch)(const F(cbp_net) *net, const REAL *x, const REAL *y,
                         const long long *perm, size_t n, size_t mini_batch_size, F(cbp_hyper) h,
                         cbp_epoch_stats *stats);

#undef F
