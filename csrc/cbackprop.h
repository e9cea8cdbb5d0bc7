/*
 * cbackprop C kernels: backpropagation for fully-connected sigmoid networks,
 * as chapter 2 of Nielsen's "Neural Networks and Deep Learning" states it.
 *
 * Conventions (shared by every kernel)
 *   - Samples are rows.  A mini-batch of m samples is an [m, n] row-major matrix,
 *     so the book's column-vector z^l = w^l a^{l-1} + b^l becomes z = a_prev . w^T + b.
 *   - w^l is [n_l, n_{l-1}] row-major (the book's shape), b^l is [n_l].
 *   - Sizes are size_t.  Outputs come first, const inputs after.
 *   - Kernels trust their inputs: shapes, finiteness and aliasing are checked once,
 *     at the Python boundary.  No kernel allocates, prints or exits.
 *   - Every kernel exists twice, suffix _s (float) and _d (double), declared by
 *     cbackprop_decl.h and defined by kernels_plain.h / simd_impl.h / net_impl.h (see
 *     kernels.c), each included once per type.
 *
 * Parameter blob: for l = 1..L in order, w^l ([n_l, n_{l-1}]) then b^l ([n_l]).
 * The gradient blob has the same layout, so an SGD step is one loop over it.
 */
#ifndef CBACKPROP_H
#define CBACKPROP_H

#include <stddef.h>

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

/* Activation of a layer, a = f(z) (chapter 1 and 3 of the book; the net's act[l]).
 * Each derivative f'(z) is computed from a = f(z):
 *   sigmoid  a = 1 / (1 + e^{-z})             f' = a (1 - a)
 *   tanh     a = tanh z                        f' = 1 - a^2
 *   relu     a = max(z, 0)                     f' = 1 if a > 0 else 0 (0 at z = 0)
 *   identity a = z (the book's linear neurons)  f' = 1
 *   softmax  a_j = e^{z_j} / sum_k e^{z_k} per sample (eq. (78)); output layer only, its
 *            Jacobian da_j/dz_k = a_j (delta_jk - a_k) enters BP1 directly. */
enum { CBP_ACT_SIGMOID = 0, CBP_ACT_TANH = 1, CBP_ACT_RELU = 2, CBP_ACT_IDENTITY = 3,
       CBP_ACT_SOFTMAX = 4 };

/* Cost of one sample x (the batch cost is their average; y = y(x), a = a^L(x)):
 *   quadratic      C_x = 1/2 ||y - a||^2                      grad_a C_x = a - y   (eq. (6))
 *   cross-entropy  C_x = -sum_j [y_j ln a_j + (1-y_j) ln(1-a_j)]  (eq. (63)), sigmoid output:
 *                  delta^L = a - y  (eq. (66): sigma' cancels)
 *   log-likelihood C_x = -sum_j y_j ln a_j  (eq. (80), = -ln a_y for a one-hot y), softmax
 *                  output: delta^L = a sum_j y_j - y  (= a - y for one-hot y, eq. (81)) */
enum { CBP_COST_QUADRATIC = 0, CBP_COST_CROSS_ENTROPY = 1, CBP_COST_LOG_LIKELIHOOD = 2 };

/* How an sgd epoch ran (cbp_net_sgd_epoch_s/_d): the feeder thread of a one-thread epoch,
 * and whether the hidden split ran. */
typedef struct {
    size_t fed;     /* mini-batches the feeder gathered (0: no feeder ran) */
    int stopped;    /* 1: the trainer stopped it after a wait over slow_wait */
    int split;      /* 1: the threads split the hidden layer (one barrier per mini-batch) */
} cbp_epoch_stats;

#define CBP_CAT_(a, b) a##_##b
#define CBP_CAT(a, b) CBP_CAT_(a, b)

#define REAL float
#define SUF s
#include "cbackprop_decl.h"
#undef REAL
#undef SUF

#define REAL double
#define SUF d
#include "cbackprop_decl.h"
#undef REAL
#undef SUF

#endif /* CBACKPROP_H */
