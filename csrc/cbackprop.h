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
