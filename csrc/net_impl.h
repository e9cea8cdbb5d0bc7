/* The network driver for one element type (instantiated by net.c with REAL, KT (the kernel
 * table type), RULE, EPI, KERNELS_FOR and NET(name) defined).
 *
 * A mini-batch is a sequence of phases; a phase is a few independent tasks, each a block of
 * one layer's work (a range of output columns, or of rows of w^l); a phase starts when the
 * phases before it are done.  For L layers and m rows (samples):
 *   gather            (epochs only) rows of x and of the targets into a^0 and y
 *   forward l = 1..L  z^l, a^l = f(z^l) for a range of columns (eq. (25)); for l = L also BP1
 *                     on those columns (unless softmax)
 *   softmax           (softmax output only) a^L and BP1 for a range of rows
 *   backward k = L..2 BP2 for a range of columns of delta^{k-1} = (delta^k . w^k) (.) f'(z^{k-1})
 *                     (from w^k before its update), and BP3/BP4 of layer k+1 (k < L) for a
 *                     range of rows of w^{k+1}, b^{k+1}
 *   last              BP3/BP4 of layers 2 and 1 (layer 1 only when L = 1)
 * BP3/BP4 accumulate the gradient (mode GRADIENT) or apply the update rule (mode STEP: the
 * step of network.py's update_mini_batch, folded into the product). */
#define UPDATE_T REAL
#define UPDATE_RULE RULE
#define UPDATE_SQRT SQRT
#define UPDATE_NAME NET(update_one)
#include "update.h"

/* One pass over one mini-batch. */
typedef struct {
    const cbp_net *net;
    const KT *k;
    int mode;               /* FORWARD, GRADIENT or STEP */
    const REAL *x;          /* [m, n_0] the input rows */
    const REAL *y;          /* [m, n_L] the target rows (GRADIENT, STEP) */
    size_t m;
    REAL scale;             /* the cost's scale (BP1): 1/m for the batch average */
    REAL *grads;            /* [n_params] GRADIENT: accumulated into */
    RULE rule_w, rule_b;    /* STEP: the update of weights and of biases (no decay) */
    int dropout;            /* STEP with net->dropout: the masks of (round, batch) */
    uint64_t round, batch;
    cbp_cuts cuts;          /* how layers are cut into tasks (net.c) */
    REAL *own_last[3];      /* hidden split: this thread's copy of w^L, b^L (then of the rule's
                               two states of them); NULL: the network's */
    REAL *save;             /* STEP with CBP_RULE_SGD_SAVE: [n_params] the old parameters */
} NET(pass);

static inline REAL *NET(ws)(const cbp_net *net, int which, size_t l)
{
    return (REAL *)net->work + cbp_workspace_offset(net, which, l);
}

static inline REAL *NET(weights)(const cbp_net *net, REAL *blob, size_t l)
{
    return blob + cbp_layer_offset(net->sizes, l);
}

/* w^l (b^l follows it) of the parameters (which = 0), or of the rule's first or second state
 * (1, 2): the network's, or a hidden-split thread's own copy of the last layer's. */
static inline REAL *NET(layer)(const NET(pass) *p, int which, size_t l)
{
    if (l == p->net->n_layers && p->own_last[which]) return p->own_last[which];
    void *blob = which == 0 ? p->net->params : which == 1 ? p->net->velocity : p->net->moment2;
    return NET(weights)(p->net, (REAL *)blob, l);
}

/* 1 when this pass drops units of layer l. */
static inline int NET(dropping)(const NET(pass) *p, size_t l)
{
    return p->dropout && l >= 1 && l < p->net->n_layers && p->net->dropout[l] > 0;
}

/* What layer l + 1 reads: the input rows (l = 0), a^l, or a^l (.) keep^l with dropout. */
static inline const REAL *NET(input)(const NET(pass) *p, size_t l)
{
    if (l == 0) return p->x;
    return NET(ws)(p->net, NET(dropping)(p, l) ? CBP_WS_DROPPED : CBP_WS_A, l);
}

/* Dropout of layer l, columns [j0, j1): keep^l = 0 (dropped) or 1 / (1 - p_l), and the
 * dropped activations a^l (.) keep^l (cbackprop.h: cbp_dropout_bits). */
static void NET(drop)(const NET(pass) *p, size_t l, size_t j0, size_t j1)
{
    const cbp_net *net = p->net;
    const size_t ld = cbp_ld(net, l);
    const double rate = net->dropout[l];
    const uint32_t below = (uint32_t)(rate * 16777216.0);          /* floor(p 2^24) */
    const REAL kept = (REAL)(1.0 / (1.0 - rate));
    const REAL *a = NET(ws)(net, CBP_WS_A, l);                     /* [m, n_l] (ld) */
    REAL *keep = NET(ws)(net, CBP_WS_KEEP, l), *out = NET(ws)(net, CBP_WS_DROPPED, l);
    for (size_t i = 0; i < p->m; i++)
        for (size_t j = j0; j < j1; j++) {
            const uint32_t bits = cbp_dropout_bits(net->seed, p->round, p->batch, l, i, j);
            const REAL k = (bits >> 8) < below ? (REAL)0 : kept;
            keep[i * ld + j] = k;
            out[i * ld + j] = a[i * ld + j] * k;
        }
}

/* BP1 on rows [i0, i1) and columns [j0, j1) of delta^L (softmax: whole rows only):
 *   quadratic, elementwise f:  delta = scale (a - y) (.) f'(z)              (eq. (BP1))
 *   quadratic, softmax:        delta_j = a_j (g_j - sum_k a_k g_k),  g = scale (a - y)
 *   cross-entropy, sigmoid:    delta = scale (a - y)                        (eq. (66))
 *   log-likelihood, softmax:   delta = scale (a sum_j y_j - y)              (eq. (81))
 * delta, a, y: [m, n]. */
static void NET(output_delta)(REAL *delta, const REAL *a, const REAL *y, size_t n, int act,
                              int cost, REAL scale, size_t i0, size_t i1, size_t j0, size_t j1)
{
    for (size_t i = i0; i < i1; i++) {
        const REAL *ai = a + i * n, *yi = y + i * n;   /* [n] */
        REAL *di = delta + i * n;                      /* [n] */
        if (cost == CBP_COST_CROSS_ENTROPY) {
            for (size_t j = j0; j < j1; j++) di[j] = (ai[j] - yi[j]) * scale;
        } else if (cost == CBP_COST_LOG_LIKELIHOOD) {
            REAL sy = 0;
            for (size_t j = 0; j < n; j++) sy += yi[j];
            for (size_t j = j0; j < j1; j++) di[j] = (ai[j] * sy - yi[j]) * scale;
        } else if (act == CBP_ACT_SOFTMAX) {
            REAL ag = 0;
            for (size_t j = 0; j < n; j++) ag += ai[j] * ((ai[j] - yi[j]) * scale);
            for (size_t j = j0; j < j1; j++) di[j] = ai[j] * ((ai[j] - yi[j]) * scale - ag);
        } else {
            for (size_t j = j0; j < j1; j++)
                di[j] = (ai[j] - yi[j]) * scale * NET(cbp_prime)(ai[j], act);
        }
    }
}

/* forward, layer l, columns [j0, j1): z = a_prev . w^T + b, a = f(z); BP1 there for l = L. */
static void NET(task_forward)(const NET(pass) *p, size_t l, size_t j0, size_t j1)
{
    const cbp_net *net = p->net;
    const size_t n_out = net->sizes[l], n_in = net->sizes[l - 1], m = p->m;
    const size_t ld_out = cbp_ld(net, l), ld_in = cbp_ld(net, l - 1);
    const REAL *w = NET(layer)(p, 0, l);                               /* [n_out, n_in] */
    const REAL *b = w + n_out * n_in;                                  /* [n_out] */
    const REAL *a_prev = NET(input)(p, l - 1);                         /* [m, n_in] (ld_in) */
    REAL *z = NET(ws)(net, CBP_WS_Z, l);                               /* [m, n_out] (ld_out) */
    REAL *a = NET(ws)(net, CBP_WS_A, l);                               /* [m, n_out] (ld_out) */
    const int act = net->act[l];
    p->k->gemm_nt(z + j0, ld_out, a_prev, ld_in, w + j0 * n_in, n_in, b + j0, m, j1 - j0, n_in);
    if (act == CBP_ACT_SOFTMAX) return;                 /* (the softmax phase) */
    p->k->activate(a + j0, z + j0, ld_out, m, j1 - j0, act);
    if (NET(dropping)(p, l)) NET(drop)(p, l, j0, j1);
    if (l == net->n_layers && p->mode != CBP_PASS_FORWARD)
        NET(output_delta)(NET(ws)(net, CBP_WS_DELTA, l), a, p->y, n_out, act, net->cost, p->scale, 0, m,
                          j0, j1);
}

/* softmax output, rows [i0, i1): a^L = softmax(z^L) and BP1 there. */
static void NET(task_softmax)(const NET(pass) *p, size_t i0, size_t i1)
{
    const cbp_net *net = p->net;
    const size_t L = net->n_layers, n = net->sizes[L];
    REAL *z = NET(ws)(net, CBP_WS_Z, L), *a = NET(ws)(net, CBP_WS_A, L);
    NET(cbp_softmax_rows)(a, z, n, i0, i1);
    if (p->mode != CBP_PASS_FORWARD)
        NET(output_delta)(NET(ws)(net, CBP_WS_DELTA, L), a, p->y, n, CBP_ACT_SOFTMAX, net->cost, p->scale,
                          i0, i1, 0, n);
}

/* BP2 from layer l, columns [k0, k1) of delta^{l-1}:
 *   delta^{l-1} = (delta^l . w^l) (.) f'(z^{l-1}),  f' from a^{l-1}
 * (with dropout: (delta^l . w^l) (.) keep^{l-1} (.) f'(z^{l-1})). */
static void NET(task_bp2)(const NET(pass) *p, size_t l, size_t k0, size_t k1)
{
    const cbp_net *net = p->net;
    const size_t n_out = net->sizes[l], n_in = net->sizes[l - 1], m = p->m;
    const size_t ld_out = cbp_ld(net, l), ld_in = cbp_ld(net, l - 1);
    const REAL *w = NET(layer)(p, 0, l);                               /* [n_out, n_in] */
    const REAL *delta = NET(ws)(net, CBP_WS_DELTA, l);                 /* [m, n_out] (ld_out) */
    REAL *delta_prev = NET(ws)(net, CBP_WS_DELTA, l - 1);              /* [m, n_in] (ld_in) */
    const REAL *a_prev = NET(ws)(net, CBP_WS_A, l - 1);                /* [m, n_in] (ld_in) */
    const EPI set = {.op = CBP_EPI_SET};
    p->k->gemm_nn(delta_prev + k0, ld_in, delta, ld_out, 1, w + k0, n_in, m, k1 - k0, n_out,
                  &set);
    if (NET(dropping)(p, l - 1)) {
        const REAL *keep = NET(ws)(net, CBP_WS_KEEP, l - 1);           /* [m, n_in] (ld_in) */
        for (size_t i = 0; i < m; i++)
            for (size_t k = k0; k < k1; k++) delta_prev[i * ld_in + k] *= keep[i * ld_in + k];
    }
    p->k->mul_prime(delta_prev + k0, a_prev + k0, ld_in, m, k1 - k0, net->act[l - 1]);
}

/* BP3/BP4 of layer l, rows [j0, j1) of w^l and b^l:
 *   nabla_w[j] = delta[:, j]^T . a_prev,  nabla_b[j] = sum_i delta[i, j]
 * accumulated into the gradient (GRADIENT) or applied by the update rule (STEP). */
static void NET(task_bp4)(const NET(pass) *p, size_t l, size_t j0, size_t j1)
{
    const cbp_net *net = p->net;
    const size_t n_out = net->sizes[l], n_in = net->sizes[l - 1], m = p->m;
    const size_t ld_out = cbp_ld(net, l), ld_in = cbp_ld(net, l - 1);
    const REAL *delta = NET(ws)(net, CBP_WS_DELTA, l);                 /* [m, n_out] (ld_out) */
    const REAL *a_prev = NET(input)(p, l - 1);                         /* [m, n_in] (ld_in) */
    const int step = p->mode == CBP_PASS_STEP;
    REAL *out_w = step ? NET(layer)(p, 0, l) : NET(weights)(net, p->grads, l); /* [n_out, n_in] */
    REAL *out_b = out_w + n_out * n_in;                                       /* [n_out] */
    REAL *s1 = NULL, *s2 = NULL;            /* the rule's state of layer l: w^l's, then b^l's */
    if (step && p->rule_w.kind == CBP_RULE_SGD_SAVE) s1 = NET(weights)(net, p->save, l);
    else if (step && p->rule_w.kind != CBP_OPT_SGD) s1 = NET(layer)(p, 1, l);
    if (step && p->rule_w.kind == CBP_OPT_ADAM) s2 = NET(layer)(p, 2, l);
    const EPI epi = {.op = step ? CBP_EPI_UPDATE : CBP_EPI_ADD, .rule = p->rule_w,
                     .state1 = s1 ? s1 + j0 * n_in : NULL, .state2 = s2 ? s2 + j0 * n_in : NULL};
    p->k->gemm_nn(out_w + j0 * n_in, n_in, delta + j0, 1, ld_out, a_prev, ld_in, j1 - j0, n_in, m,
                  &epi);
    /* BP3: nabla_b^l[j] = sum_i delta[i, j], each column summed over i in order (the
     * compiler vectorizes across a chunk of columns: the same sums, not reassociated) */
    for (size_t c0 = j0; c0 < j1; c0 += CBP_BIAS_CHUNK) {
        const size_t c1 = j1 - c0 < CBP_BIAS_CHUNK ? j1 : c0 + CBP_BIAS_CHUNK;
        REAL sum[CBP_BIAS_CHUNK] = {0};
        for (size_t i = 0; i < m; i++) {
            const REAL *row = delta + i * ld_out + c0;
            for (size_t j = 0; j < c1 - c0; j++) sum[j] += row[j];
        }
        for (size_t j = c0; j < c1; j++) {
            const REAL s = sum[j - c0];
            if (!step) {
                out_b[j] += s;
            } else {
                REAL u1 = 0, u2 = 0;
                REAL *b1 = s1 ? s1 + n_out * n_in + j : &u1;
                REAL *b2 = s2 ? s2 + n_out * n_in + j : &u2;
                out_b[j] = NET(update_one)(out_b[j], s, b1, b2, &p->rule_b);
            }
        }
    }
}

/* Rows [i0, i1) of the next mini-batch (the rows after perm[0 .. mbs)) on their way into
 * cache: head, the first CBP_PREFETCH_LINES lines of each x row (into L2, as the rest) and
 * its target (into L1), issued by the gather of this mini-batch's same rows, and the
 * hardware prefetcher follows each row; else the rest of each x row into L2 (a part after
 * each phase of a pass, so that the rows are ready for the next gather without a burst that
 * fills the miss buffers).  Why the heads go to L2 and not to L1: net.c. */
static void NET(prefetch_next)(const cbp_epoch_data *d, size_t n_in, size_t n_out,
                               const int64_t *perm, size_t i0, size_t i1, int head)
{
    const size_t mbs = d->mini_batch_size, next = (size_t)(perm - d->perm) + mbs;
    if (next >= d->n) return;
    const size_t m_next = d->n - next < mbs ? d->n - next : mbs;
    const size_t row_lines = (n_in * sizeof(REAL) + 63) / 64;
    for (size_t i = i0; i < i1 && i < m_next; i++) {
        const size_t r = (size_t)perm[mbs + i];
        const char *row = (const char *)((const REAL *)d->x + r * n_in);
        if (head) {
            for (size_t k = 0; k < CBP_PREFETCH_LINES && k < row_lines; k++)
                __builtin_prefetch(row + 64 * k, 0, 2);
            if (d->y) __builtin_prefetch((const REAL *)d->y + r * n_out, 0, 3);
            else __builtin_prefetch(d->labels + r, 0, 3);
        } else {
            for (size_t k = CBP_PREFETCH_LINES; k < row_lines; k++)
                __builtin_prefetch(row + 64 * k, 0, 2);
        }
    }
    /* GCC (12, from -O1) finds a function whose only effects are prefetches pure and deletes
     * its calls; an empty volatile asm is an effect it keeps (tools/check_simd.py checks that
     * the build has its prefetches). */
    __asm__ __volatile__("");
}

/* gather, rows [i0, i1) of mini-batch rows perm[0..m): a^0 and y, after the prefetch of the
 * heads of the same rows of the next mini-batch. */
static void NET(task_gather)(const NET(pass) *p, const cbp_epoch_data *d, const int64_t *perm,
                             size_t i0, size_t i1)
{
    const cbp_net *net = p->net;
    const size_t n_in = net->sizes[0], n_out = net->sizes[net->n_layers];
    REAL *xb = (REAL *)p->x, *yb = (REAL *)p->y;          /* [m, n_0], [m, n_L] workspace */
    const REAL *x = (const REAL *)d->x, *y = (const REAL *)d->y;
    NET(prefetch_next)(d, n_in, n_out, perm, i0, i1, 1);
    for (size_t i = i0; i < i1; i++) {
        const size_t r = (size_t)perm[i];
        memcpy(xb + i * n_in, x + r * n_in, n_in * sizeof(REAL));
        if (d->labels) {
            memset(yb + i * n_out, 0, n_out * sizeof(REAL));
            yb[i * n_out + (size_t)d->labels[r]] = 1;
        } else {
            memcpy(yb + i * n_out, y + r * n_out, n_out * sizeof(REAL));
        }
    }
}

/* Task k of a phase's group g (cut for `split` threads): the range it covers, and its work. */
static void NET(run_task)(const NET(pass) *p, const cbp_group *g, size_t k, size_t tasks,
                          const cbp_epoch_data *d, const int64_t *perm)
{
    size_t lo, hi;
    cbp_range(g->dim, g->align, k, tasks, &lo, &hi);
    if (lo >= hi) return;
    switch (g->kind) {
    case CBP_TASK_GATHER: NET(task_gather)(p, d, perm, lo, hi); break;
    case CBP_TASK_FORWARD: NET(task_forward)(p, g->layer, lo, hi); break;
    case CBP_TASK_SOFTMAX: NET(task_softmax)(p, lo, hi); break;
    case CBP_TASK_BP2: NET(task_bp2)(p, g->layer, lo, hi); break;
    default: NET(task_bp4)(p, g->layer, lo, hi); break;
    }
}

/* Part `part` of `parts` of the rest of the next mini-batch's input rows into L2. */
static void NET(prefetch_rest)(const cbp_epoch_data *d, size_t n_in, const int64_t *perm,
                               size_t part, size_t parts)
{
    const size_t mbs = d->mini_batch_size;
    NET(prefetch_next)(d, n_in, 0, perm, part * mbs / parts, (part + 1) * mbs / parts, 0);
}

/* The whole pass on this thread, one task per group (the single-threaded path); in an epoch
 * (gather), each phase followed by a part of the next mini-batch's prefetch. */
static void NET(run_pass)(const NET(pass) *p, int gather, const cbp_epoch_data *d,
                          const int64_t *perm)
{
    const int back = p->mode != CBP_PASS_FORWARD;
    const size_t phases = cbp_phase_count(p->net, back, gather);
    for (size_t ph = 0; ph < phases; ph++) {
        const cbp_phase at = cbp_phase_at(p->net, gather, ph, p->m, &p->cuts);
        for (int i = 0; i < at.n; i++) NET(run_task)(p, &at.g[i], 0, 1, d, perm);
        if (gather) NET(prefetch_rest)(d, p->net->sizes[0], perm, ph, phases);
    }
}

/* A pass over m rows of x, y (no gather). */
static void NET(pass_init)(NET(pass) *p, const cbp_net *net, int mode, const void *x,
                           const void *y, size_t m, double scale)
{
    const KT *k = KERNELS_FOR(net->isa);
    *p = (NET(pass)){.net = net, .k = k, .mode = mode, .x = (const REAL *)x,
                     .y = (const REAL *)y, .m = m, .scale = (REAL)scale,
                     .cuts = {.lanes = (size_t)k->lanes, .nt_mc = (size_t)k->nt_mc,
                              .nn_mr = (size_t)k->nn_mr, .split = 1}};
}

/* The update u as the rules for weights and biases (biases: no decay) at step t (1, 2, ...:
 * Adam's bias correction). */
static void NET(rules)(NET(pass) *p, const cbp_update *u, double t)
{
    const double bc1 = 1 - pow(u->beta1, t), bc2 = 1 - pow(u->beta2, t);
    p->rule_w = (RULE){.kind = u->kind, .eta = (REAL)u->eta, .keep = (REAL)(1.0 - u->decay),
                       .decay = (REAL)u->decay, .mu = (REAL)u->mu,
                       .l2 = (REAL)(u->eta > 0 ? u->decay / u->eta : 0),
                       .beta1 = (REAL)u->beta1, .beta2 = (REAL)u->beta2,
                       .one_minus_beta1 = (REAL)(1 - u->beta1),
                       .one_minus_beta2 = (REAL)(1 - u->beta2), .eps = (REAL)u->eps,
                       .step = (REAL)(u->kind == CBP_OPT_ADAM ? u->eta / bc1 : 0),
                       .sqrt_bc2 = (REAL)(u->kind == CBP_OPT_ADAM ? sqrt(bc2) : 1)};
    p->rule_b = p->rule_w;
    p->rule_b.keep = 1;
    p->rule_b.decay = 0;
    p->rule_b.l2 = 0;
}

static void NET(forward)(const cbp_net *net, void *out, const void *x, size_t m)
{
    const size_t n_in = net->sizes[0], n_out = net->sizes[net->n_layers];
    const REAL *a_last = NET(ws)(net, CBP_WS_A, net->n_layers);   /* [m_cap, n_L] */
    for (size_t start = 0; start < m; start += net->m_cap) {
        const size_t rows = (m - start < net->m_cap) ? m - start : net->m_cap;
        NET(pass) p;
        NET(pass_init)(&p, net, CBP_PASS_FORWARD, (const REAL *)x + start * n_in, NULL, rows, 0);
        NET(run_pass)(&p, 0, NULL, NULL);
        memcpy((REAL *)out + start * n_out, a_last, rows * n_out * sizeof(REAL));
    }
}

static void NET(backprop)(const cbp_net *net, void *grads, const void *x, const void *y,
                          size_t m, double scale)
{
    NET(pass) p;
    NET(pass_init)(&p, net, CBP_PASS_GRADIENT, x, y, m, scale);
    p.grads = (REAL *)grads;
    NET(run_pass)(&p, 0, NULL, NULL);
}

static void NET(step)(const cbp_net *net, const void *x, const void *y, size_t m,
                      const cbp_update *u)
{
    NET(pass) p;
    NET(pass_init)(&p, net, CBP_PASS_STEP, x, y, m, 1.0 / (double)m);
    NET(rules)(&p, u, u->t + 1);
    if (u->save && u->kind == CBP_OPT_SGD) {
        p.rule_w.kind = p.rule_b.kind = CBP_RULE_SGD_SAVE;
        p.save = (REAL *)u->save;
    }
    p.dropout = net->dropout != NULL;
    p.round = u->round;
    NET(run_pass)(&p, 0, NULL, NULL);
}

/* One update with the gradient scale * g, layer by layer (weights decayed, biases not). */
static void NET(update)(const cbp_net *net, const void *g, double scale, const cbp_update *u)
{
    const REAL sc = (REAL)scale;
    NET(pass) p;
    NET(pass_init)(&p, net, CBP_PASS_STEP, NULL, NULL, 0, 0);
    NET(rules)(&p, u, u->t + 1);
    REAL *params = (REAL *)net->params;
    REAL *s1 = u->kind != CBP_OPT_SGD ? (REAL *)net->velocity : NULL;
    REAL *s2 = u->kind == CBP_OPT_ADAM ? (REAL *)net->moment2 : NULL;
    const REAL *grad = (const REAL *)g;
    for (size_t l = 1; l <= net->n_layers; l++) {
        const size_t n_out = net->sizes[l], n_in = net->sizes[l - 1];
        const size_t off = cbp_layer_offset(net->sizes, l), nw = n_out * n_in;
        for (size_t i = off; i < off + nw + n_out; i++) {
            REAL u1 = 0, u2 = 0;
            params[i] = NET(update_one)(params[i], sc == 1 ? grad[i] : sc * grad[i],
                                        s1 ? &s1[i] : &u1, s2 ? &s2[i] : &u2,
                                        i < off + nw ? &p.rule_w : &p.rule_b);
        }
    }
}

/* ---- the epoch: every mini-batch as a stream of tasks (parallel.h) ------------------------ */

typedef struct {
    NET(pass) pass;             /* mode STEP; x, y: the workspace's a^0 and y blocks */
    const cbp_epoch_data *d;
    const cbp_update *u;
    size_t n_batches, per_batch;
    const size_t *first;        /* [phases + 1]: a batch's first task of each phase */
    size_t phases;
    cbp_queue q;
    cbp_poll_fn poll;
    void *poll_arg;
    cbp_fp_mode caller;         /* the caller's floating-point mode (poll runs in it) */
    double polled;              /* when thread 0 last called poll */
    atomic_int active;          /* threads that ran a task */
} NET(epoch_job);

/* Thread 0, about to start mini-batch b: 1 when poll asks to stop (at most every
 * poll_seconds). */
static int NET(poll)(NET(epoch_job) *job)
{
    if (!job->poll) return 0;
    const double now = cbp_now();
    if (now - job->polled < job->d->poll_seconds) return 0;
    job->polled = now;
    return cbp_fp_call(job->poll, job->poll_arg, job->caller) != 0;
}

/* Mini-batch b's rows: the pass's m. */
static inline size_t NET(batch_rows)(const NET(epoch_job) *job, size_t b)
{
    const size_t mbs = job->d->mini_batch_size, start = b * mbs;
    return (job->d->n - start < mbs) ? job->d->n - start : mbs;
}

/* The pass p set for mini-batch b of the epoch: its rows, the cost's scale, its dropout
 * masks and (Adam) its step's bias correction. */
static inline void NET(batch_pass)(NET(pass) *p, const NET(epoch_job) *job, size_t b)
{
    p->m = NET(batch_rows)(job, b);
    p->scale = (REAL)1 / (REAL)p->m;
    p->batch = b;
    if (job->u->kind == CBP_OPT_ADAM) NET(rules)(p, job->u, job->u->t + (double)b + 1);
}

static void NET(epoch_worker)(void *arg, int t)
{
    NET(epoch_job) *job = (NET(epoch_job) *)arg;
    NET(pass) p = job->pass;
    int ran = 0;
    for (;;) {
        const size_t id = cbp_queue_claim(&job->q);
        if (id >= cbp_queue_limit(&job->q)) break;
        const size_t b = id / job->per_batch, local = id % job->per_batch;
        size_t ph = 0;
        while (job->first[ph + 1] <= local) ph++;
        if (t == 0 && ph == 0 && NET(poll)(job)) {
            /* no task of b has run: thread 0 holds one of its first phase */
            cbp_queue_cut(&job->q, b * job->per_batch);
            break;
        }
        if (!cbp_queue_wait(&job->q, b * job->per_batch + job->first[ph], id)) break;
        NET(batch_pass)(&p, job, b);
        const int64_t *perm = job->d->perm + b * job->d->mini_batch_size;
        const cbp_phase at = cbp_phase_at(p.net, 1, ph, job->d->mini_batch_size, &p.cuts);
        size_t k = local - job->first[ph];
        for (int i = 0; i < at.n; i++) {
            const size_t tasks = cbp_group_tasks(&at.g[i], &p.cuts);
            if (k < tasks) {
                const cbp_group g = cbp_group_rows(&at.g[i], p.m);
                NET(run_task)(&p, &g, k, tasks, job->d, perm);
                break;
            }
            k -= tasks;
        }
        cbp_queue_done(&job->q);
        ran = 1;
    }
    if (ran) atomic_fetch_add_explicit(&job->active, 1, memory_order_relaxed);
}

/* One epoch on one thread: batch after batch, polling between them. */
static size_t NET(epoch_alone)(NET(epoch_job) *job)
{
    NET(pass) p = job->pass;
    for (size_t b = 0; b < job->n_batches; b++) {
        if (NET(poll)(job)) return b;
        NET(batch_pass)(&p, job, b);
        NET(run_pass)(&p, 1, job->d, job->d->perm + b * job->d->mini_batch_size);
    }
    return job->n_batches;
}

/* An epoch's own buffers: n elements on a 64-byte boundary at *mem; the block to free, or
 * NULL when there is no memory (the epoch then runs another way). */
static void *NET(epoch_buffers)(size_t n, REAL **mem)
{
    void *raw = malloc(n * sizeof(REAL) + 64);
    *mem = raw ? (REAL *)(((uintptr_t)raw + 63) & ~(uintptr_t)63) : NULL;
    return raw;
}

/* ---- the feeder: a second core gathers the next mini-batch while this one trains --------
 * A shuffled epoch reads its rows from all over memory, and on a small network the gather's
 * cache misses are a large share of a mini-batch.  Mini-batch b goes into buffer b mod 2;
 * either thread gathers it after claiming it (claims go in order, one at a time).  The
 * feeder (thread 1) claims the next batch once the trainer (thread 0) has finished the
 * batch that last used its buffer; the trainer takes a batch the feeder has gathered,
 * waits for one the feeder is gathering, and gathers an unclaimed one itself, so a feeder
 * that the operating system deschedules costs no more than training alone.  The data, and
 * so the result, are the one-thread epoch's. */
typedef struct {
    NET(epoch_job) *job;
    REAL *x[2], *y[2];                     /* [mbs, n_0], [mbs, n_L]: the two buffers */
    _Alignas(64) atomic_size_t claimed;    /* mini-batches claimed for gathering */
    _Alignas(64) atomic_size_t ready[2];   /* buffer k holds mini-batch ready[k] - 1 */
    _Alignas(64) atomic_size_t trained;    /* mini-batches trained (by thread 0) */
    _Alignas(64) atomic_int stop;          /* thread 0 stopped (poll) */
} NET(feed_job);

/* Gather mini-batch b into its buffer (p: a pass of the epoch). */
static void NET(feed_gather)(NET(feed_job) *f, NET(pass) *p, size_t b)
{
    NET(epoch_job) *job = f->job;
    p->m = NET(batch_rows)(job, b);
    p->x = f->x[b & 1];
    p->y = f->y[b & 1];
    NET(task_gather)(p, job->d, job->d->perm + b * job->d->mini_batch_size, 0, p->m);
}

/* Thread 1: claim and gather the batches ahead of the trainer. */
static void NET(feeder)(NET(feed_job) *f)
{
    NET(epoch_job) *job = f->job;
    NET(pass) p = job->pass;
    for (;;) {
        size_t b = atomic_load_explicit(&f->claimed, memory_order_relaxed);
        if (b >= job->n_batches) return;
        unsigned spins = 0;                 /* buffer b mod 2 is free once b - 2 is trained */
        while (atomic_load_explicit(&f->trained, memory_order_acquire) + 1 < b) {
            if (atomic_load_explicit(&f->stop, memory_order_relaxed)) return;
            cbp_backoff(&spins);
        }
        if (atomic_load_explicit(&f->stop, memory_order_relaxed)) return;
        if (!atomic_compare_exchange_strong(&f->claimed, &b, b + 1)) continue;
        NET(feed_gather)(f, &p, b);
        atomic_store_explicit(&f->ready[b & 1], b + 1, memory_order_release);
    }
}

static void NET(feed_worker)(void *arg, int t)
{
    NET(feed_job) *f = (NET(feed_job) *)arg;
    NET(epoch_job) *job = f->job;
    if (t == 1) {
        NET(feeder)(f);
        return;
    }
    NET(pass) p = job->pass;
    for (size_t b = 0; b < job->n_batches; b++) {
        if (NET(poll)(job)) {
            atomic_store_explicit(&f->stop, 1, memory_order_relaxed);
            return;
        }
        if (atomic_load_explicit(&f->ready[b & 1], memory_order_acquire) != b + 1) {
            size_t want = b;
            if (atomic_compare_exchange_strong(&f->claimed, &want, b + 1)) {
                NET(feed_gather)(f, &p, b);           /* not claimed: gather it here */
            } else {                                  /* the feeder is gathering it */
                unsigned spins = 0;
                while (atomic_load_explicit(&f->ready[b & 1], memory_order_acquire) != b + 1)
                    cbp_backoff(&spins);
            }
        }
        NET(batch_pass)(&p, job, b);
        p.x = f->x[b & 1];
        p.y = f->y[b & 1];
        NET(run_pass)(&p, 0, NULL, NULL);
        atomic_store_explicit(&f->trained, b + 1, memory_order_release);
    }
}

/* The epoch with the feeder; 0 when its buffers or thread cannot be had (the caller then
 * trains alone). */
static int NET(epoch_feed)(NET(epoch_job) *job, cbp_epoch_result *res)
{
    const cbp_net *net = job->pass.net;
    const size_t mbs = job->d->mini_batch_size, n0 = net->sizes[0], nL = net->sizes[net->n_layers];
    const size_t xl = cbp_block_len(net, mbs, n0), yl = cbp_block_len(net, mbs, nL);
    REAL *mem;
    void *raw = NET(epoch_buffers)(2 * (xl + yl), &mem);
    if (!raw) return 0;
    NET(feed_job) f = {.job = job, .x = {mem, mem + xl}, .y = {mem + 2 * xl, mem + 2 * xl + yl}};
    atomic_init(&f.claimed, 0);
    atomic_init(&f.ready[0], 0);
    atomic_init(&f.ready[1], 0);
    atomic_init(&f.trained, 0);
    atomic_init(&f.stop, 0);
    const int ok = cbp_parallel_run_all(2, NET(feed_worker), &f);
    free(raw);
    if (!ok) return 0;
    res->batches = atomic_load(&f.trained);
    res->threads = 2;
    return 1;
}

/* ---- the hidden split: one hidden layer on T threads, one wait per mini-batch -------------
 * Thread t owns the hidden units [h0, h1): columns of a^1 and delta^1, rows of w^1, b^1.  For
 * each mini-batch it gathers every row into its own workspace, computes z^1, a^1 of its units
 * and publishes them; after one wait for all threads it has a^1 whole and computes the output
 * layer and BP1, BP2 into delta^1 of its units, BP3/BP4 of the output layer on its own copy
 * of w^2, b^2 (and of the rule's state of them: every thread computes the same values, so
 * the copies stay equal), then BP3/BP4 of w^1, b^1 for its units.  The published a^1
 * alternate between two buffers by the mini-batch's parity, so a thread that starts batch
 * b + 1 never overwrites what another still reads of batch b; w^1 rows and the copies are
 * each written by one thread only.  Every value is what the one-thread pass computes (the
 * units are cut at multiples of nn_mr, as the phases cut BP4: kernels.h), so the result is
 * bitwise the same.
 * The phases of tasks would wait 4-5 times per mini-batch and move a^0 and w^1 between
 * cores; on networks this small the waits cost more than the work they share. */
typedef struct {
    NET(epoch_job) *job;
    REAL *mem;                  /* per thread: workspace, then its w^L, b^L and state copies */
    size_t per_thread, ws_len;  /* elements of mem per thread; of its workspace */
    REAL *a1[2];                /* [mbs, n_1] (rows cbp_ld apart) each: the published a^1 of
                                   even and odd batches */
    int T;
    _Alignas(64) atomic_size_t arrived;   /* threads arrived, over every mini-batch */
    _Alignas(64) atomic_size_t stop;      /* the batch thread 0 stopped before, or SIZE_MAX */
} NET(split_job);

/* Wait until every thread has arrived for mini-batch b (b + 1 arrivals each). */
static void NET(split_wait)(NET(split_job) *sj, size_t b)
{
    const size_t want = (b + 1) * (size_t)sj->T;
    unsigned spins = 0;
    while (atomic_load_explicit(&sj->arrived, memory_order_acquire) < want) cbp_backoff(&spins);
}

static void NET(split_worker)(void *arg, int t)
{
    NET(split_job) *sj = (NET(split_job) *)arg;
    NET(epoch_job) *job = sj->job;
    const size_t *n = job->pass.net->sizes, last = n[2] * (n[1] + 1);
    cbp_net net = *job->pass.net;                       /* with this thread's workspace */
    net.work = sj->mem + (size_t)t * sj->per_thread;
    net.m_cap = job->d->mini_batch_size;
    REAL *own = (REAL *)net.work + sj->ws_len;          /* [3][n_2 (n_1 + 1)] */
    NET(pass) p = job->pass;
    p.net = &net;
    p.x = NET(ws)(&net, CBP_WS_A, 0);
    p.y = NET(ws)(&net, CBP_WS_Y, 0);
    const int kind = job->u->kind;
    for (int which = 0; which < (kind == CBP_OPT_ADAM ? 3 : kind != CBP_OPT_SGD ? 2 : 1); which++) {
        memcpy(own + which * last, NET(layer)(&job->pass, which, 2), last * sizeof(REAL));
        p.own_last[which] = own + which * last;
    }
    size_t h0, h1;
    cbp_range(n[1], p.cuts.nn_mr, (size_t)t, (size_t)sj->T, &h0, &h1);   /* (as the phases cut BP4) */
    REAL *a1 = NET(ws)(&net, CBP_WS_A, 1);              /* [mbs, n_1] (ld1) */
    const size_t ld1 = cbp_ld(&net, 1);
    for (size_t b = 0; b < job->n_batches; b++) {
        if (t == 0 && NET(poll)(job)) {
            atomic_store_explicit(&sj->stop, b, memory_order_relaxed);
            atomic_fetch_add_explicit(&sj->arrived, 1, memory_order_release);
            break;
        }
        NET(batch_pass)(&p, job, b);
        const int64_t *perm = job->d->perm + b * job->d->mini_batch_size;
        REAL *pub = sj->a1[b & 1];                      /* [mbs, n_1] (ld1) */
        NET(task_gather)(&p, job->d, perm, 0, p.m);
        if (h0 < h1) {
            NET(task_forward)(&p, 1, h0, h1);
            for (size_t i = 0; i < p.m; i++)
                memcpy(pub + i * ld1 + h0, a1 + i * ld1 + h0, (h1 - h0) * sizeof(REAL));
        }
        atomic_fetch_add_explicit(&sj->arrived, 1, memory_order_release);
        NET(split_wait)(sj, b);
        if (atomic_load_explicit(&sj->stop, memory_order_relaxed) == b) break;
        memcpy(a1, pub, p.m * ld1 * sizeof(REAL));
        NET(prefetch_rest)(job->d, n[0], perm, 0, 3);     /* (each thread gathers every row) */
        NET(task_forward)(&p, 2, 0, n[2]);
        if (net.act[2] == CBP_ACT_SOFTMAX) NET(task_softmax)(&p, 0, p.m);
        if (h0 < h1) NET(task_bp2)(&p, 2, h0, h1);
        NET(prefetch_rest)(job->d, n[0], perm, 1, 3);
        NET(task_bp4)(&p, 2, 0, n[2]);
        NET(prefetch_rest)(job->d, n[0], perm, 2, 3);
        if (h0 < h1) NET(task_bp4)(&p, 1, h0, h1);
    }
    if (t == 0)             /* (the copies are equal; thread 0's goes back) */
        for (int which = 0; which < 3 && p.own_last[which]; which++)
            memcpy(NET(layer)(&job->pass, which, 2), p.own_last[which], last * sizeof(REAL));
}

/* The epoch as the hidden split on T threads; 0 when its buffers or threads cannot be had
 * (the caller then trains on one thread). */
static int NET(epoch_split)(NET(epoch_job) *job, int T, cbp_epoch_result *res)
{
    const cbp_net *net = job->pass.net;
    const size_t mbs = job->d->mini_batch_size, *n = net->sizes;
    cbp_net sized = *net;
    sized.m_cap = mbs;
    const size_t ws_len = cbp_workspace_len(&sized, mbs);   /* (whole lines already) */
    const size_t own_len = cbp_block_len(net, 3 * n[2], n[1] + 1);
    const size_t a1_len = cbp_block_len(net, mbs, cbp_ld(net, 1));
    REAL *mem;
    void *raw = NET(epoch_buffers)((size_t)T * (ws_len + own_len) + 2 * a1_len, &mem);
    if (!raw) return 0;
    NET(split_job) sj = {.job = job, .mem = mem, .per_thread = ws_len + own_len, .ws_len = ws_len,
                         .a1 = {mem + (size_t)T * (ws_len + own_len),
                                mem + (size_t)T * (ws_len + own_len) + a1_len},
                         .T = T};
    atomic_init(&sj.arrived, 0);
    atomic_init(&sj.stop, SIZE_MAX);
    if (!cbp_parallel_run_all(T, NET(split_worker), &sj)) {   /* (every thread, or none) */
        free(raw);
        return 0;
    }
    const size_t stop = atomic_load(&sj.stop);
    res->batches = stop == SIZE_MAX ? job->n_batches : stop;
    res->threads = T;
    free(raw);
    return 1;
}

static cbp_epoch_result NET(epoch)(const cbp_net *net, const cbp_epoch_data *d,
                                   const cbp_update *u, cbp_poll_fn poll, void *poll_arg,
                                   cbp_fp_mode caller)
{
    NET(epoch_job) job = {.d = d, .u = u, .poll = poll, .poll_arg = poll_arg, .caller = caller,
                          .polled = d->poll_seconds > 0 ? cbp_now() : -1};
    NET(pass_init)(&job.pass, net, CBP_PASS_STEP, NET(ws)(net, CBP_WS_A, 0), NET(ws)(net, CBP_WS_Y, 0),
                   d->mini_batch_size, 0);
    NET(rules)(&job.pass, u, u->t + 1);
    job.pass.dropout = net->dropout != NULL;
    job.pass.round = u->round;
    job.n_batches = d->n / d->mini_batch_size + (d->n % d->mini_batch_size != 0);
    const cbp_plan plan = cbp_epoch_plan_now(net, d->mini_batch_size, d->n);
    const int T = plan.threads;
    cbp_epoch_result res = {.batches = 0, .threads = 1};
    if (plan.kind == CBP_PLAN_FEED && job.n_batches > 1 && NET(epoch_feed)(&job, &res)) return res;
    if (plan.kind == CBP_PLAN_SPLIT && job.n_batches > 0 && NET(epoch_split)(&job, T, &res))
        return res;
    if (plan.kind != CBP_PLAN_TASKS || job.n_batches == 0) {
        res.batches = NET(epoch_alone)(&job);
        return res;
    }
    job.pass.cuts.split = (size_t)T;
    job.phases = cbp_phase_count(net, 1, 1);
    size_t first[job.phases + 1];          /* (a few entries: no allocation) */
    first[0] = 0;
    for (size_t ph = 0; ph < job.phases; ph++) {
        const cbp_phase at = cbp_phase_at(net, 1, ph, d->mini_batch_size, &job.pass.cuts);
        first[ph + 1] = first[ph];
        for (int i = 0; i < at.n; i++) first[ph + 1] += cbp_group_tasks(&at.g[i], &job.pass.cuts);
    }
    job.first = first;
    job.per_batch = first[job.phases];
    cbp_queue_init(&job.q, job.n_batches * job.per_batch);
    atomic_init(&job.active, 0);
    cbp_parallel_run(T, NET(epoch_worker), &job);
    res.batches = cbp_queue_limit(&job.q) / job.per_batch;
    res.threads = atomic_load(&job.active) > 0 ? atomic_load(&job.active) : 1;
    return res;
}

#undef REAL
#undef SQRT
#undef KT
#undef RULE
#undef EPI
#undef KERNELS_FOR
#undef NET
