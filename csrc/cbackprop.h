/*
 * cbackprop C engine: backpropagation for fully-connected feedforward networks, as chapters 2
 * and 3 of Nielsen's "Neural Networks and Deep Learning" state it.
 *
 * Conventions (shared by every function)
 *   - Samples are rows.  A mini-batch of m samples is an [m, n] row-major matrix, so the
 *     book's column-vector z^l = w^l a^{l-1} + b^l becomes z = a_prev . w^T + b.
 *   - w^l is [n_l, n_{l-1}] row-major (the book's shape), b^l is [n_l].
 *   - Every buffer holds elements of net->dtype (float or double) and is passed as void *;
 *     sizes are size_t; outputs come first, const inputs after.
 *   - The engine trusts its inputs: shapes, finiteness and aliasing are checked once, at the
 *     Python boundary.  It never allocates, prints or exits; the caller allocates every
 *     buffer (sizes from cbp_n_params and cbp_workspace_len).
 *
 * Parameter blob: for l = 1..L in order, w^l ([n_l, n_{l-1}]) then b^l ([n_l]).  Gradient
 * and optimizer-state blobs have the same layout, so an update is one loop over a blob.
 *
 * Files: this header (the public functions, each with its formula); kernels.h (the layer
 * kernels every instruction set provides, and the plain oracle); update.h (the one update
 * rule); net.c (the network driver: a mini-batch as phases of tasks, the epoch loop);
 * parallel.c (threads); kernels_plain.c, kernels_simd.c (the kernels); dispatch.c (which
 * instruction set runs).
 */
#ifndef CBACKPROP_H
#define CBACKPROP_H

#include <stddef.h>
#include <stdint.h>

/* Element type of every buffer of a network. */
enum { CBP_F32 = 0, CBP_F64 = 1 };

/* Kernel variants ("instruction sets"), chosen per network at run time. */
enum {
    CBP_ISA_PLAIN = 0,    /* plain loops: the oracle the others are tested against */
    CBP_ISA_GENERIC = 1,  /* register-blocked, 16-byte vectors, baseline flags (SSE2 / NEON) */
    CBP_ISA_AVX2 = 2,     /* register-blocked, 32-byte vectors, AVX2 + FMA (x86-64-v3) */
    CBP_ISA_AVX512 = 3    /* register-blocked, 64-byte vectors, AVX-512 F/VL/DQ/BW (x86-64-v4) */
};
/* 1 when this build has the variant and this CPU (and OS) can run it. */
int cbp_isa_supported(int isa);
/* The fastest supported variant. */
int cbp_isa_best(void);

/* Activation of a layer, a = f(z) (chapters 1 and 3; the net's act[l]).  Each derivative
 * f'(z) is computed from a = f(z):
 *   sigmoid  a = 1 / (1 + e^{-z})              f' = a (1 - a)          (eq. (3))
 *   tanh     a = tanh z                         f' = 1 - a^2
 *   relu     a = max(z, 0)                      f' = 1 if a > 0 else 0 (0 at z = 0)
 *   identity a = z (the book's linear neurons)  f' = 1
 *   softmax  a_j = e^{z_j} / sum_k e^{z_k} per sample (eq. (78)); output layer only, its
 *            Jacobian da_j/dz_k = a_j (delta_jk - a_k) enters BP1 directly. */
enum { CBP_ACT_SIGMOID = 0, CBP_ACT_TANH = 1, CBP_ACT_RELU = 2, CBP_ACT_IDENTITY = 3,
       CBP_ACT_SOFTMAX = 4 };

/* Cost of one sample x (the batch cost is their average; y = y(x), a = a^L(x)):
 *   quadratic      C_x = 1/2 ||y - a||^2                         grad_a C_x = a - y  (eq. (6))
 *   cross-entropy  C_x = -sum_j [y_j ln a_j + (1-y_j) ln(1-a_j)]  (eq. (63)), sigmoid output:
 *                  delta^L = a - y  (eq. (66): sigma' cancels)
 *   log-likelihood C_x = -sum_j y_j ln a_j  (eq. (80), = -ln a_y for a one-hot y), softmax
 *                  output: delta^L = a sum_j y_j - y  (= a - y for one-hot y, eq. (81)) */
enum { CBP_COST_QUADRATIC = 0, CBP_COST_CROSS_ENTROPY = 1, CBP_COST_LOG_LIKELIHOOD = 2 };

/* Update rules (update.h states each formula). */
enum { CBP_OPT_SGD = 0, CBP_OPT_MOMENTUM = 1, CBP_OPT_NESTEROV = 2, CBP_OPT_ADAM = 3 };

/* One gradient-descent update, applied to a gradient g averaged over the mini-batch
 * (update.h has every formula):
 *   CBP_OPT_SGD       w <- (1 - decay) w - eta g,         b <- b - eta g  (eqs. (20)-(21), (93))
 *   CBP_OPT_MOMENTUM  v <- mu v - eta g - decay w, w <- w + v;  v <- mu v - eta g, b <- b + v
 *   CBP_OPT_NESTEROV  v as momentum, w <- w + mu v - eta g - decay w  (biases: decay 0)
 *   CBP_OPT_ADAM      bias-corrected moments of g + (lmbda/n) w, PyTorch's Adam
 * decay = eta lmbda / n (L2 weight decay, n the training-set size; biases are not decayed). */
typedef struct {
    int kind;        /* CBP_OPT_* */
    double eta;      /* learning rate */
    double decay;    /* eta lmbda / n */
    double mu;       /* momentum coefficient (CBP_OPT_MOMENTUM, CBP_OPT_NESTEROV) */
    double beta1, beta2, eps;   /* CBP_OPT_ADAM */
    double t;        /* CBP_OPT_ADAM: steps taken before this call (the first is step t + 1) */
    uint64_t round;  /* dropout: this call's round (a step, or an epoch: its mini-batch k draws
                        the masks of (round, k)) */
    void *save;      /* cbp_net_step with CBP_OPT_SGD: NULL, or [n_params] (laid out as the
                        parameters) where the step stores each parameter's value before it
                        (what puts the network back when the step is rejected) */
} cbp_update;

/* Dropout (chapter 3, "Dropout"; network3.py's dropout_layer), inverted: in a training step
 * each unit j of hidden layer l is dropped for sample i with probability p_l, and the kept
 * ones are scaled by 1/(1 - p_l), so that nothing changes at inference:
 *   a^l <- a^l (.) keep^l,  keep^l_ij = 0 (dropped) or 1 / (1 - p_l)
 * and backpropagation goes through the mask, BP2 with keep^l in the Hadamard product:
 *   delta^l = (delta^{l+1} . w^{l+1}) (.) keep^l (.) f'(z^l)          (BP2 with dropout)
 * Unit j of layer l for sample (row) i of mini-batch k of round r is dropped when
 *   (cbp_dropout_bits(seed, r, k, l, i, j) >> 8) < floor(p_l 2^24),
 * the first word of Philox4x32-10 (Salmon et al., 2011) with key (seed mod 2^32, seed >> 32)
 * and counter (j, i, k 2^8 + l, r): a counter-based generator, so the masks are the same
 * for any thread count and in cbackprop.reference, which computes the same words. */
uint32_t cbp_dropout_bits(uint64_t seed, uint64_t round, uint64_t batch, uint64_t layer,
                          uint64_t row, uint64_t unit);

/* Philox4x32-10 of the 4-word counter ctr under the 2-word key: out = 4 words. */
void cbp_philox4x32(uint32_t out[4], const uint32_t ctr[4], const uint32_t key[2]);

/* A network: its shape, its parameters and the workspace of one mini-batch of up to m_cap
 * rows, all allocated by the caller. */
typedef struct {
    int dtype;            /* CBP_F32 or CBP_F64: the element type of every buffer below */
    int isa;              /* kernel variant, CBP_ISA_*, supported on this CPU */
    size_t n_layers;      /* L = len(sizes) - 1 */
    const size_t *sizes;  /* [L+1]: n_0 .. n_L */
    const int *act;       /* [L+1]: act[l] = CBP_ACT_* of layer l = 1..L (act[0] unused);
                             softmax only for l = L */
    int cost;             /* CBP_COST_*, paired with act[L] as checked at the Python boundary:
                             cross-entropy with sigmoid, log-likelihood with softmax */
    void *params;         /* [n_params] parameter blob: per layer w^l, b^l */
    void *velocity;       /* [n_params] momentum velocity, or Adam's first moment, same layout
                             (NULL until an update rule needs it) */
    void *moment2;        /* [n_params] Adam's second moment (NULL until Adam) */
    void *work;           /* [cbp_workspace_len(net, m_cap)] z, a, delta and target blocks */
    size_t m_cap;         /* rows the workspace holds */
    const double *dropout;  /* [L+1]: the probability p_l that a unit of hidden layer l
                             (1 <= l < L) is dropped in a training step (dropout[0], [L]
                             unused; NULL: no dropout) */
    uint64_t seed;        /* the dropout masks' key (cbp_dropout_bits) */
    int n_threads;        /* threads an epoch may use: 0 automatic (cbp_epoch_plan), else
                             that many */
    int plan;             /* how an epoch runs: 0 as cbp_epoch_plan chooses, else
                             CBP_PLAN_* + 1 (where it applies; for measurements and tests) */
    double far_ns;        /* the round trip (ns) above which two cores count as far apart
                             (cbp_epoch_plan_now); 0: CBP_FAR_NS (for tests) */
} cbp_net;

/* Number of parameters: sum_l n_l n_{l-1} + n_l. */
size_t cbp_n_params(const size_t *sizes, size_t n_layers);

/* The workspace's blocks, each [m_cap, n_l] (y: [m_cap, n_L]) and starting on 64 bytes. */
enum {
    CBP_WS_A = 0,        /* a^l, l = 0..L (a^0: the gathered input of an epoch) */
    CBP_WS_Z = 1,        /* z^l, l = 1..L */
    CBP_WS_DELTA = 2,    /* delta^l, l = 1..L */
    CBP_WS_KEEP = 3,     /* dropout, 1 <= l < L: 0 for a dropped unit, 1 / (1 - p_l) for a kept one */
    CBP_WS_DROPPED = 4,  /* dropout, 1 <= l < L: a^l (.) keep^l, what layer l + 1 sees */
    CBP_WS_Y = 5,        /* y: the gathered targets of an epoch (l ignored) */
    CBP_WS_END = 6       /* (the workspace's length) */
};

/* Elements of the workspace for mini-batches of up to m_cap rows (its blocks depend on
 * net->sizes and on whether net->dropout is set). */
size_t cbp_workspace_len(const cbp_net *net, size_t m_cap);

/* Where block `which` (CBP_WS_*) of layer l starts in the workspace (elements). */
size_t cbp_workspace_offset(const cbp_net *net, int which, size_t l);

/* The row stride (elements) of layer l's workspace blocks: n_l, or more for a hidden layer
 * whose rows would otherwise fall on the same L1 sets (net.c: cbp_ld). */
size_t cbp_workspace_ld(const cbp_net *net, size_t l);

/* Feedforward of m rows (any m), m_cap rows at a time through the workspace, eq. (25) for
 * l = 1..L: out = a^L.  x: [m, n_0]; out: [m, n_L] (overwritten).  The workspace then holds
 * z^l, a^l of the last m_cap-row chunk. */
void cbp_net_forward(const cbp_net *net, void *out, const void *x, size_t m);

/* Backpropagation over an m-row batch (matrix form of BP1-BP4), m <= m_cap: feedforward
 * (without dropout),
 * BP1 at layer L, BP2 for l = L-1 .. 1, BP3/BP4 for every layer.  ACCUMULATES the gradient
 * of C = scale sum_x C_x (scale = 1/m: the batch average; 1: the sum, for accumulating
 * micro-batches) into grads ([n_params], parameter layout; zero it first for a plain
 * gradient).  Leaves z^l, a^l, delta^l of the batch in the workspace.
 * x: [m, n_0]; y: [m, n_L]. */
void cbp_net_backprop(const cbp_net *net, void *grads, const void *x, const void *y, size_t m,
                      double scale);

/* One update u of every parameter with the gradient scale * g, g a gradient blob
 * ([n_params]; scale = 1 / samples for a sum accumulated by cbp_net_backprop). */
void cbp_net_update(const cbp_net *net, const void *g, double scale, const cbp_update *u);

/* One mini-batch step (network.py's / network2.py's update_mini_batch), m <= m_cap: the
 * gradient of the m rows averaged, folded into BP3/BP4 with the update u: for l = L..1,
 * BP2 for delta^{l-1} from the old w^l, then u on w^l, b^l; no gradient is stored.  With
 * dropout, the masks of (u->round, 0).  x: [m, n_0]; y: [m, n_L]. */
void cbp_net_step(const cbp_net *net, const void *x, const void *y, size_t m,
                  const cbp_update *u);

/* Called between mini-batches of an epoch (at most every poll_seconds): nonzero stops the
 * epoch there (cbackprop's Python layer checks for Ctrl-C in it). */
typedef int (*cbp_poll_fn)(void *arg);

/* The rows of one epoch: mini-batch k holds rows perm[k*mbs .. min((k+1)*mbs, n)) of x and
 * of the targets, which are rows of y ([*, n_L]) or, when labels is not NULL, the one-hot
 * rows of labels ([*], each in [0, n_L)): e_{labels[i]}. */
typedef struct {
    const void *x;            /* [*, n_0] */
    const void *y;            /* [*, n_L] (NULL with labels) */
    const int64_t *labels;    /* [*] (NULL with y) */
    const int64_t *perm;      /* [n]: the rows in epoch order */
    size_t n;
    size_t mini_batch_size;   /* <= m_cap */
    double poll_seconds;      /* poll at most this often (0: before every mini-batch) */
} cbp_epoch_data;

typedef struct {
    size_t batches;   /* mini-batches done: all of them, unless poll stopped the epoch */
    int threads;      /* threads that took part */
} cbp_epoch_result;

/* One epoch of mini-batch SGD: each mini-batch gathered into a^0 and y, then one
 * cbp_net_step (Adam: mini-batch k is step u->t + k + 1), run as cbp_epoch_plan_now says; the
 * result does not depend on the plan or the thread count (every value is computed by one
 * thread, with the same instructions whichever thread it is).  poll (may be NULL) is called
 * with poll_arg on the calling thread between mini-batches, at most every
 * data->poll_seconds; when it returns nonzero the epoch ends there, after a whole number of
 * mini-batches (result.batches). */
cbp_epoch_result cbp_net_epoch(const cbp_net *net, const cbp_epoch_data *data,
                               const cbp_update *u, cbp_poll_fn poll, void *poll_arg);

/* How an epoch of mini-batches of m rows runs (the thread policy, net.c), with T threads:
 * net->n_threads when set, else (0, automatic) every usable core, at most 64:
 *   CBP_PLAN_SPLIT  one hidden layer of at least two vectors of units per thread and no
 *                   dropout (automatic: from 1e6 flops per mini-batch): the hidden split,
 *                   T threads each owning a range of hidden units, one wait per mini-batch;
 *   CBP_PLAN_TASKS  else from 2e7 flops per mini-batch: phases of tasks on T threads;
 *   CBP_PLAN_FEED   else: a second thread gathers the next mini-batch while the caller's
 *                   trains (2 threads);
 *   CBP_PLAN_ALONE  T = 1. */
enum { CBP_PLAN_ALONE = 0, CBP_PLAN_FEED = 1, CBP_PLAN_SPLIT = 2, CBP_PLAN_TASKS = 3 };
typedef struct {
    int kind;       /* CBP_PLAN_* */
    int threads;
} cbp_plan;
cbp_plan cbp_epoch_plan(const cbp_net *net, size_t m);

/* The plan an epoch of n rows in mini-batches of m starts with: cbp_epoch_plan's, except
 * that an automatic one (n_threads and plan 0) on two threads, of the feeder or of phases
 * of tasks below 2e8 flops per mini-batch, with at least 1e9 flops in all, runs on one thread
 * (CBP_PLAN_ALONE) when a cache line's round trip between two threads (cbp_round_trip_ns,
 * measured here) takes longer than net->far_ns (0: 150 ns): the cores then share no
 * cache, and such epochs ran slower on two threads than on one (net.c). */
cbp_plan cbp_epoch_plan_now(const cbp_net *net, size_t m, size_t n);

/* cbp_epoch_plan(net, m).threads. */
int cbp_epoch_threads(const cbp_net *net, size_t m);

/* Flops of one mini-batch of m rows (forward, BP2 for the hidden layers, BP4), the measure
 * of work the thread policy uses. */
double cbp_batch_flops(const cbp_net *net, size_t m);

/* CPUs this process may run on (its affinity mask), at most 64. */
int cbp_usable_cores(void);

/* A cache line's round trip between this thread and a second one, in nanoseconds (the
 * parallel layer's probe, parallel.h). */
double cbp_round_trip_ns(void);

/* 1 when every one of the n values of x (dtype) is finite, else 0; checked by the kernel
 * variant isa (CBP_ISA_*, supported on this CPU; -1: the best). */
int cbp_all_finite(int dtype, int isa, const void *x, size_t n);

/* Benchmark helper: 12 independent multiply-add chains of the variant isa for iters rounds
 * (24 * lanes * iters flops, lanes = vector bytes / element bytes); measures the ceiling. */
double cbp_fma_loop(int dtype, int isa, size_t iters);

#endif /* CBACKPROP_H */
