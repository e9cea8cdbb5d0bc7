/* The network driver: the public functions of cbackprop.h.  A pass over a mini-batch is a
 * sequence of phases of tasks (net_impl.h, instantiated here for float and double); this
 * file says what the phases are, how a layer is cut into tasks, where the workspace blocks
 * lie, and how many threads an epoch uses (the thread policy: cbp_epoch_threads). */
#if defined(__linux__)
#define _GNU_SOURCE     /* sched_getaffinity */
#endif
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cbackprop.h"
#include "kernels.h"
#include "parallel.h"

#if !defined(_WIN32)
#include <sched.h>
#include <unistd.h>
#endif

/* An automatic epoch uses every usable core from this many flops per mini-batch
 * (cbp_batch_flops), one thread below. */
#define CBP_AUTO_THREADS_MIN_FLOPS 2e7
/* ... and from this many for a network with one hidden layer (its epoch then runs as the
 * hidden split, net_impl.h): measured on a Zen 4 VM, float32, [784, 30, 10] (too narrow to
 * split on two threads) and [784, 100, 10] at mini-batch 10 are 1.0e6 and 3.2e6 flops. */
#define CBP_AUTO_SPLIT_MIN_FLOPS 1e6
/* A task of a threaded epoch gets at least this many flops (a task claim and the wait for
 * its phase cost a few hundred nanoseconds between cores). */
#define CBP_TASK_MIN_FLOPS 1e5

/* Cache lines at the head of each of the next mini-batch's input rows prefetched at each
 * gather (net_impl.h: prefetch_next); the rest of each row goes into L2 a part after each
 * phase of a single-threaded pass (prefetch_rest), and each thread of the hidden split,
 * which gathers every row itself, does the same in three parts.  Measured on a Zen 4 VM, one
 * process, epochs interleaved, medians of 10-15 epochs, 50,000 rows: [784, 30, 10] at
 * mini-batch 10 on one thread 0.089-0.094 s without any prefetch, 0.077-0.082 s with (the
 * gather itself, by the time-stamp counter, 26-27 -> 13 ms of the epoch); in float64 0.162 ->
 * 0.148 s; at mini-batch 100 0.068 -> 0.066 s; [784, 100, 10] on the hidden split's two
 * threads 0.119 -> 0.115 s; the feeder's epochs, N5's phases of tasks: no change.  Head
 * lines, same way: 4 0.073 s, 8 0.073, 16 0.076, none (every line into L2) 0.077, the whole
 * row into L1 0.079; the rest all at once after the gather instead of a part per phase
 * 0.084 against 0.079, and a second round of the same prefetches no faster.
 * The heads go into L2 (prefetcht1), not L1 (prefetcht0): in a C model of the epoch's memory
 * traffic (10 random rows of 784 floats copied from 150 MiB, the next rows prefetched during
 * 40,000 cycles of other work), the copy took 2,400 cycles per mini-batch with the heads
 * prefetched into L2 against 3,300-3,900 into L1 or with the non-temporal hint (1,500 from
 * rows already in L2); whole epochs, six processes each way, interleaved, medians: [784, 30,
 * 10] one thread 0.0690 -> 0.0677 s (lower in all six), in float64 0.1304 -> 0.1289 (lower
 * in four), at mini-batch 100 0.0653 -> 0.0645 (lower in all six).  The targets stay in L1. */
#define CBP_PREFETCH_LINES 4

/* Columns of delta whose bias gradients are summed together (BP3, net_impl.h: task_bp4). */
#define CBP_BIAS_CHUNK 64

enum { CBP_PASS_FORWARD = 0, CBP_PASS_GRADIENT = 1, CBP_PASS_STEP = 2 };
enum { CBP_TASK_GATHER, CBP_TASK_FORWARD, CBP_TASK_SOFTMAX, CBP_TASK_BP2, CBP_TASK_BP4 };

/* ---- shapes and offsets ------------------------------------------------------------------- */

size_t cbp_n_params(const size_t *sizes, size_t n_layers)
{
    size_t total = 0;
    for (size_t l = 1; l <= n_layers; l++) total += sizes[l] * (sizes[l - 1] + 1);
    return total;
}

/* Where w^l starts in the parameter blob (b^l follows it). */
static inline size_t cbp_layer_offset(const size_t *sizes, size_t l)
{
    return cbp_n_params(sizes, l - 1);
}

static inline size_t cbp_elem_bytes(const cbp_net *net) { return net->dtype == CBP_F64 ? 8 : 4; }

/* The row stride of layer l's workspace blocks (a^l, z^l, delta^l, keep^l, dropped a^l):
 * n_l, or one 64-byte line more for a hidden layer whose rows are a multiple of 2 KiB.  L1
 * (32 KiB, 8 ways) maps addresses 4 KiB apart to the same set, so gemm_nt's register tile,
 * reading 5 rows of a^l and 5 rows of w^(l+1) at the same column at every step, had all 10
 * lines in one set with rows of 4 KiB (in two sets with rows of 2 KiB).  Measured on a Zen 4
 * VM (AVX-512, one thread): the product alone, z = a . w^T + b for a [128, 1024] and w
 * [1024, 1024], best of 40 calls, 93-96 -> 102-104 GFLOP/s float32 and 45-47 -> 52-54 float64
 * with a's rows 8, 16 or 64 elements longer (w's rows padded instead: the same gain);
 * [784, 1024, 1024, 10] epochs at mini-batch 128 (12,800 rows, scaled to 50,000, four
 * interleaved pairs, medians): float64 10.42 -> 10.06 s on one thread (faster in all four),
 * 6.35 -> 6.06 s on two (three of four); float32 5.06 and 5.12 s (no change measured: the
 * product is a fifth of the epoch's flops); [784, 256, 256, 10] float64 (rows of 2 KiB): no
 * change.  The results are the same bits (only where the rows lie changes).  The input layer
 * (the caller's rows) and the output layer keep n. */
static inline size_t cbp_ld(const cbp_net *net, size_t l)
{
    const size_t n = net->sizes[l], e = cbp_elem_bytes(net);
    if (l == 0 || l == net->n_layers || n * e % 2048 != 0) return n;
    return n + 64 / e;
}

size_t cbp_workspace_ld(const cbp_net *net, size_t l) { return cbp_ld(net, l); }

/* rows x n elements rounded up to whole 64-byte lines */
static inline size_t cbp_block_len(const cbp_net *net, size_t rows, size_t n)
{
    const size_t per_line = 64 / cbp_elem_bytes(net);
    return (rows * n + per_line - 1) / per_line * per_line;
}

/* The workspace's blocks, m_cap rows each, in order: for l = 0..L the blocks of layer l
 * (a^l; for l >= 1 also z^l and delta^l; with dropout for 1 <= l < L also keep^l and the
 * dropped a^l), then y.  Returns where block `which` of layer l starts (CBP_WS_END: the
 * length of the whole workspace). */
static size_t cbp_offset(const cbp_net *net, size_t m_cap, int which, size_t l)
{
    const size_t L = net->n_layers;
    size_t off = 0;
    for (size_t k = 0; k <= L; k++) {
        const size_t len = cbp_block_len(net, m_cap, cbp_ld(net, k));
        const int drop = net->dropout && k >= 1 && k < L;
        const int blocks[] = {CBP_WS_A, CBP_WS_Z, CBP_WS_DELTA, CBP_WS_KEEP, CBP_WS_DROPPED};
        const int n_blocks = k == 0 ? 1 : drop ? 5 : 3;
        for (int i = 0; i < n_blocks; i++) {
            if (k == l && blocks[i] == which) return off;
            off += len;
        }
    }
    if (which == CBP_WS_Y) return off;
    return off + cbp_block_len(net, m_cap, net->sizes[L]);   /* CBP_WS_END */
}

size_t cbp_workspace_len(const cbp_net *net, size_t m_cap)
{
    return cbp_offset(net, m_cap, CBP_WS_END, 0);
}

size_t cbp_workspace_offset(const cbp_net *net, int which, size_t l)
{
    return cbp_offset(net, net->m_cap, which, l);
}

/* ---- phases and tasks ----------------------------------------------------------------------- */

/* How the layers are cut into tasks: the kernels' preferred multiples, and the threads. */
typedef struct {
    size_t lanes, nt_mc, nn_mr;
    size_t split;               /* threads the tasks are cut for (1: one task per group) */
} cbp_cuts;

/* A group of tasks in a phase: `dim` (columns, rows of w, or samples) cut at multiples of
 * `align`; flops of the whole group. */
typedef struct {
    int kind;                   /* CBP_TASK_* */
    size_t layer, dim, align;
    double flops;
} cbp_group;

typedef struct {
    cbp_group g[2];
    int n;
} cbp_phase;

/* [lo, hi): task k of `tasks` over [0, dim) cut at multiples of align (the last piece takes
 * the remainder; a piece may be empty). */
static inline void cbp_range(size_t dim, size_t align, size_t k, size_t tasks, size_t *lo,
                             size_t *hi)
{
    const size_t chunks = (dim + align - 1) / align;
    const size_t c0 = k * chunks / tasks, c1 = (k + 1) * chunks / tasks;
    *lo = c0 * align < dim ? c0 * align : dim;
    *hi = c1 * align < dim ? c1 * align : dim;
}

static size_t cbp_phase_count(const cbp_net *net, int back, int gather)
{
    const size_t L = net->n_layers;
    return (size_t)gather + L + (net->act[L] == CBP_ACT_SOFTMAX) + (back ? L : 0);
}

static void cbp_phase_add(cbp_phase *ph, int kind, size_t layer, size_t dim, size_t align,
                          double flops)
{
    ph->g[ph->n++] = (cbp_group){.kind = kind, .layer = layer, .dim = dim, .align = align,
                                 .flops = flops};
}

/* Phase p (< cbp_phase_count) of a pass over m rows (net_impl.h lists the phases). */
static cbp_phase cbp_phase_at(const cbp_net *net, int gather, size_t p, size_t m,
                              const cbp_cuts *c)
{
    const size_t L = net->n_layers, *n = net->sizes;
    cbp_phase ph = {.n = 0};
    const double dm = (double)m;
    if (gather && p-- == 0) {
        cbp_phase_add(&ph, CBP_TASK_GATHER, 0, m, 1, dm * (double)(n[0] + n[L]));
        return ph;
    }
    if (p < L) {
        const size_t l = p + 1;
        cbp_phase_add(&ph, CBP_TASK_FORWARD, l, n[l], c->nt_mc * c->lanes,
                      2 * dm * (double)n[l] * (double)n[l - 1]);
        return ph;
    }
    p -= L;
    if (net->act[L] == CBP_ACT_SOFTMAX && p-- == 0) {
        cbp_phase_add(&ph, CBP_TASK_SOFTMAX, L, m, 1, 20 * dm * (double)n[L]);
        return ph;
    }
    const size_t k = L - p;                     /* backward: k = L .. 1 */
    if (k >= 2) {
        cbp_phase_add(&ph, CBP_TASK_BP2, k, n[k - 1], 4 * c->lanes,
                      2 * dm * (double)n[k] * (double)n[k - 1]);
        if (k < L)
            cbp_phase_add(&ph, CBP_TASK_BP4, k + 1, n[k + 1], c->nn_mr,
                          2 * dm * (double)n[k + 1] * (double)n[k]);
    } else {
        if (L >= 2)
            cbp_phase_add(&ph, CBP_TASK_BP4, 2, n[2], c->nn_mr, 2 * dm * (double)n[2] * (double)n[1]);
        cbp_phase_add(&ph, CBP_TASK_BP4, 1, n[1], c->nn_mr, 2 * dm * (double)n[1] * (double)n[0]);
    }
    return ph;
}

/* Tasks a group is cut into: one on one thread; for T threads up to 4 T, each of at least
 * CBP_TASK_MIN_FLOPS, at most one per align-wide piece. */
static size_t cbp_group_tasks(const cbp_group *g, const cbp_cuts *c)
{
    if (c->split <= 1) return 1;
    const size_t pieces = (g->dim + g->align - 1) / g->align;
    size_t t = (size_t)(g->flops / CBP_TASK_MIN_FLOPS);
    if (t > 4 * c->split) t = 4 * c->split;
    if (t > pieces) t = pieces;
    return t > 0 ? t : 1;
}

/* A group over samples cut for a mini-batch of m rows (the last may be shorter: the same
 * number of tasks, over fewer rows). */
static inline cbp_group cbp_group_rows(const cbp_group *g, size_t m)
{
    cbp_group r = *g;
    if (g->kind == CBP_TASK_GATHER || g->kind == CBP_TASK_SOFTMAX) r.dim = m;
    return r;
}

/* ---- dropout's generator ------------------------------------------------------------------ */

void cbp_philox4x32(uint32_t out[4], const uint32_t ctr[4], const uint32_t key[2])
{
    uint32_t c0 = ctr[0], c1 = ctr[1], c2 = ctr[2], c3 = ctr[3], k0 = key[0], k1 = key[1];
    for (int r = 0; r < 10; r++) {
        if (r) {
            k0 += 0x9E3779B9u;
            k1 += 0xBB67AE85u;
        }
        const uint64_t p0 = (uint64_t)0xD2511F53u * c0, p1 = (uint64_t)0xCD9E8D57u * c2;
        const uint32_t n0 = (uint32_t)(p1 >> 32) ^ c1 ^ k0, n2 = (uint32_t)(p0 >> 32) ^ c3 ^ k1;
        c0 = n0;
        c1 = (uint32_t)p1;
        c2 = n2;
        c3 = (uint32_t)p0;
    }
    out[0] = c0;
    out[1] = c1;
    out[2] = c2;
    out[3] = c3;
}

uint32_t cbp_dropout_bits(uint64_t seed, uint64_t round, uint64_t batch, uint64_t layer,
                          uint64_t row, uint64_t unit)
{
    const uint32_t key[2] = {(uint32_t)seed, (uint32_t)(seed >> 32)};
    const uint32_t ctr[4] = {(uint32_t)unit, (uint32_t)row, (uint32_t)((batch << 8) | layer),
                             (uint32_t)round};
    uint32_t out[4];
    cbp_philox4x32(out, ctr, key);
    return out[0];
}

/* ---- thread policy -------------------------------------------------------------------------- */

int cbp_usable_cores(void)
{
    int n = 1;
#if defined(__linux__)
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) == 0) n = CPU_COUNT(&set);
#elif !defined(_WIN32)
    long c = sysconf(_SC_NPROCESSORS_ONLN);
    n = c > 0 ? (int)c : 1;
#endif
    return n < 1 ? 1 : n > CBP_MAX_THREADS ? CBP_MAX_THREADS : n;
}

double cbp_batch_flops(const cbp_net *net, size_t m)
{
    double f = 0;
    for (size_t l = 1; l <= net->n_layers; l++) {
        const double w = (double)net->sizes[l] * (double)net->sizes[l - 1];
        f += 4 * w + (l >= 2 ? 2 * w : 0);      /* forward and BP4; BP2 below layer l >= 2 */
    }
    return f * (double)m;
}

/* The lanes of net's kernels (the widths the policy compares layers with). */
static size_t cbp_lanes(const cbp_net *net)
{
    return net->dtype == CBP_F64 ? (size_t)cbp_kernels_for_f64(net->isa)->lanes
                                 : (size_t)cbp_kernels_for_f32(net->isa)->lanes;
}

/* The thread policy (cbackprop.h says it; the benchmarks' docs say why). */
cbp_plan cbp_epoch_plan(const cbp_net *net, size_t m)
{
    const int automatic = net->n_threads <= 0;
    int T = automatic ? cbp_usable_cores() : net->n_threads;
    if (T > CBP_MAX_THREADS) T = CBP_MAX_THREADS;
    const int forced = net->plan - 1;               /* (-1: none) */
    if (T == 1 || forced == CBP_PLAN_ALONE) return (cbp_plan){CBP_PLAN_ALONE, 1};
    if (forced == CBP_PLAN_FEED) return (cbp_plan){CBP_PLAN_FEED, 2};
    const double flops = cbp_batch_flops(net, m);
    const int split = net->n_layers == 2 && !net->dropout &&
                      net->sizes[1] >= 2 * (size_t)T * cbp_lanes(net);
    if (split && forced != CBP_PLAN_TASKS && (forced == CBP_PLAN_SPLIT || !automatic ||
                                              flops >= CBP_AUTO_SPLIT_MIN_FLOPS))
        return (cbp_plan){CBP_PLAN_SPLIT, T};
    if (forced >= 0 || flops >= CBP_AUTO_THREADS_MIN_FLOPS) return (cbp_plan){CBP_PLAN_TASKS, T};
    return (cbp_plan){CBP_PLAN_FEED, 2};
}

/* Cores far apart.  On a 2-vCPU Zen 4 VM the two virtual CPUs sit, for seconds to minutes
 * at a time, on cores that share no L3: a cache line's round trip between two threads then
 * takes 309-356 ns instead of 50-82 (a ping-pong beside each epoch), every value one thread
 * writes and the other reads crosses the fabric, and the epochs that share most per flop
 * ran slower on two threads than on one (float32, 20,000-row epochs, automatic against one
 * thread, medians, cores near / far; flops per mini-batch as cbp_batch_flops counts them):
 * [784, 30, 10] at mini-batch 10 (the feeder) 0.86 / 1.19 of one thread's time; phases of
 * tasks: [784, 256, 256, 10] at 32 (3.9e7 flops) 0.66 / 1.22, [784, 512, 512, 10] at 32
 * (1.0e8) 0.56 / 1.10, at 64 (2.05e8) 0.54 / 0.90; the hidden split, [784, 100, 10] at 10,
 * 0.75 / 0.81; [784, 1024, 1024, 10] at 128 stays faster on two.  The one-thread epochs ran
 * the same in both states.  So an automatic two-thread epoch of the feeder or of small
 * phases measures the round trip first (about 0.1 ms, so only for epochs of at least 1e9
 * flops) and runs alone while the cores are far apart (or the other one does not answer);
 * the results do not change (they never depend on the thread count).  Only two threads: on
 * a machine with more cores, which of them share a cache is another question. */
#define CBP_FAR_NS 150.0
#define CBP_FAR_MAX_FLOPS 2e8
#define CBP_FAR_PROBE_MIN_FLOPS 1e9

cbp_plan cbp_epoch_plan_now(const cbp_net *net, size_t m, size_t n)
{
    const cbp_plan p = cbp_epoch_plan(net, m);
    const int automatic = net->n_threads <= 0 && net->plan == 0 && p.threads == 2;
    const double per_batch = cbp_batch_flops(net, m);
    const int sharing = p.kind == CBP_PLAN_FEED ||
                        (p.kind == CBP_PLAN_TASKS && per_batch < CBP_FAR_MAX_FLOPS);
    const double epoch = per_batch * (double)n / (double)(m ? m : 1);
    const int long_enough = epoch >= CBP_FAR_PROBE_MIN_FLOPS;
    if (!automatic || !sharing || !long_enough) return p;
    const double far = net->far_ns > 0 ? net->far_ns : CBP_FAR_NS;
    if (cbp_round_trip_ns() > far) return (cbp_plan){CBP_PLAN_ALONE, 1};
    return p;
}

int cbp_epoch_threads(const cbp_net *net, size_t m)
{
    return cbp_epoch_plan(net, m).threads;
}

/* ---- the drivers, per element type ---------------------------------------------------------- */

#define REAL float
#define SQRT sqrtf
#define KT cbp_kernels_f32
#define RULE cbp_rule_f32
#define EPI cbp_epi_f32
#define KERNELS_FOR cbp_kernels_for_f32
#define NET(name) name##_f32
#include "net_impl.h"

#define REAL double
#define SQRT sqrt
#define KT cbp_kernels_f64
#define RULE cbp_rule_f64
#define EPI cbp_epi_f64
#define KERNELS_FOR cbp_kernels_for_f64
#define NET(name) name##_f64
#include "net_impl.h"

/* Each public function runs with subnormals flushed (parallel.h: cbp_fp_enter). */
void cbp_net_forward(const cbp_net *net, void *out, const void *x, size_t m)
{
    const cbp_fp_mode mode = cbp_fp_enter();
    if (net->dtype == CBP_F64) forward_f64(net, out, x, m);
    else forward_f32(net, out, x, m);
    cbp_fp_leave(mode);
}

void cbp_net_backprop(const cbp_net *net, void *grads, const void *x, const void *y, size_t m,
                      double scale)
{
    const cbp_fp_mode mode = cbp_fp_enter();
    if (net->dtype == CBP_F64) backprop_f64(net, grads, x, y, m, scale);
    else backprop_f32(net, grads, x, y, m, scale);
    cbp_fp_leave(mode);
}

void cbp_net_update(const cbp_net *net, const void *g, double scale, const cbp_update *u)
{
    const cbp_fp_mode mode = cbp_fp_enter();
    if (net->dtype == CBP_F64) update_f64(net, g, scale, u);
    else update_f32(net, g, scale, u);
    cbp_fp_leave(mode);
}

void cbp_net_step(const cbp_net *net, const void *x, const void *y, size_t m,
                  const cbp_update *u)
{
    const cbp_fp_mode mode = cbp_fp_enter();
    if (net->dtype == CBP_F64) step_f64(net, x, y, m, u);
    else step_f32(net, x, y, m, u);
    cbp_fp_leave(mode);
}

cbp_epoch_result cbp_net_epoch(const cbp_net *net, const cbp_epoch_data *data,
                               const cbp_update *u, cbp_poll_fn poll, void *poll_arg)
{
    const cbp_fp_mode mode = cbp_fp_enter();
    const cbp_epoch_result r = net->dtype == CBP_F64
                                   ? epoch_f64(net, data, u, poll, poll_arg, mode)
                                   : epoch_f32(net, data, u, poll, poll_arg, mode);
    cbp_fp_leave(mode);
    return r;
}
