/* The layer kernels: what every instruction set provides, per element type.
 *
 * A kernel computes one block of one product of backpropagation, with its epilogue fused in,
 * and knows nothing about threads: the network driver (net.c) cuts each layer's work into
 * blocks and the parallel layer (parallel.c) decides which thread computes which block.
 * Every value a kernel writes is computed with the same instructions wherever it lies in
 * the block (edges narrower than a vector go through a vector window ending at the edge, or
 * a zero-padded vector, never scalar code), so a layer cut into blocks gives bitwise the
 * same result, with one condition: gemm_nn's rows are cut at multiples of nn_mr (a block
 * of fewer rows runs a smaller register tile, whose update epilogue the compiler may fuse
 * differently: momentum's v = mu v - eta g differed in the last bit when a block of w^1
 * started off the tile grid).  That is what makes training bitwise the same for any thread
 * count.
 *
 * The two product shapes of backpropagation (rows are samples):
 *   gemm_nt  Z[i, j] = sum_k A[i, k] W[j, k] + b[j]        feedforward, eq. (25): z = a_prev . w^T + b
 *   gemm_nn  P[i, j] = sum_t A(i, t) B[t, j],  A(i, t) = A[i*ars + t*ats]
 *            BP2: delta^{l-1} = delta^l . w^l          (A = delta^l, B = w^l)
 *            BP4: nabla_w^l = (delta^l)^T . a^{l-1}    (A = delta^l read transposed, B = a^{l-1})
 *            and combine P with the output C by an epilogue: C = P, C += P, or the update rule
 *            of update.h applied to C (the parameters) with P as the averaged gradient.
 * Elementwise:
 *   activate   a = f(z)              (CBP_ACT_*, not softmax)
 *   mul_prime  d = d (.) f'(z), f' from a = f(z): BP2's Hadamard product
 *
 * Each instruction set fills one table per element type (cbp_kernels_f32, cbp_kernels_f64);
 * dispatch.c returns the table of net->isa.  The plain variant (kernels_plain.c) is the
 * oracle: straightforward loops every other variant is tested against. */
#ifndef CBACKPROP_KERNELS_H
#define CBACKPROP_KERNELS_H

#include <stddef.h>

#include "cbackprop.h"

/* How gemm_nn combines its product P with its output C. */
enum {
    CBP_EPI_SET = 0,     /* C = P */
    CBP_EPI_ADD = 1,     /* C += P */
    CBP_EPI_UPDATE = 2   /* C = the update rule (update.h) of C with gradient P */
};

/* The update rules' kinds: CBP_OPT_* and, internal to the engine, plain SGD that saves each
 * parameter before its step (update.h). */
enum { CBP_RULE_SGD_SAVE = 16 };

/* An update rule in one element type (a cbp_update converted once per step; update.h has
 * the formulas): keep = 1 - decay; l2 = decay / eta; Adam's one_minus_beta* = 1 - beta*,
 * step = eta / (1 - beta1^t), sqrt_bc2 = sqrt(1 - beta2^t) at step t. */
typedef struct {
    int kind;
    float eta, keep, decay, mu, l2, beta1, beta2, one_minus_beta1, one_minus_beta2, eps;
    float step, sqrt_bc2;
} cbp_rule_f32;
typedef struct {
    int kind;
    double eta, keep, decay, mu, l2, beta1, beta2, one_minus_beta1, one_minus_beta2, eps;
    double step, sqrt_bc2;
} cbp_rule_f64;

/* gemm_nn's epilogue: op, and for CBP_EPI_UPDATE the rule and its state rows, laid out as C
 * (row r at state1 + r ldc): state1 the velocity or Adam's first moment, state2 Adam's second
 * moment (NULL where the rule has none). */
typedef struct { int op; cbp_rule_f32 rule; float *state1, *state2; } cbp_epi_f32;
typedef struct { int op; cbp_rule_f64 rule; double *state1, *state2; } cbp_epi_f64;

/* One instruction set's kernels for float.  Shapes (row strides ld*):
 *   gemm_nt:   z [M, N] (ldz, overwritten); a [M, K] (lda); w [N, K] (ldw); b [N]
 *   gemm_nn:   c [M, N] (ldc); A(i, t) = A[i ars + t ats], i < M, t < K; B [K, N] (ldb)
 *   activate:  a, z [M, N] (row stride ld; a overwritten)
 *   mul_prime: d, a [M, N] (row stride ld; d updated in place)
 * fma_loop: the multiply-add ceiling of the vector width (returns a value that depends on
 * every chain).  all_finite: 1 when every one of x[0 .. n) is finite, else 0.  lanes, nt_mc,
 * nn_mr: how the driver best cuts a layer into blocks. */
typedef struct {
    int lanes;      /* elements per vector */
    int nt_mc;      /* gemm_nt's register tile is nt_mc columns wide */
    int nn_mr;      /* gemm_nn's register tile is nn_mr rows high */
    void (*gemm_nt)(float *z, size_t ldz, const float *a, size_t lda, const float *w, size_t ldw,
                    const float *b, size_t M, size_t N, size_t K);
    void (*gemm_nn)(float *c, size_t ldc, const float *A, size_t ars, size_t ats,
                    const float *B, size_t ldb, size_t M, size_t N, size_t K,
                    const cbp_epi_f32 *epi);
    void (*activate)(float *a, const float *z, size_t ld, size_t M, size_t N, int act);
    void (*mul_prime)(float *d, const float *a, size_t ld, size_t M, size_t N, int act);
    double (*fma_loop)(size_t iters);
    int (*all_finite)(const float *x, size_t n);
} cbp_kernels_f32;

/* The same for double. */
typedef struct {
    int lanes;
    int nt_mc;
    int nn_mr;
    void (*gemm_nt)(double *z, size_t ldz, const double *a, size_t lda, const double *w,
                    size_t ldw, const double *b, size_t M, size_t N, size_t K);
    void (*gemm_nn)(double *c, size_t ldc, const double *A, size_t ars, size_t ats,
                    const double *B, size_t ldb, size_t M, size_t N, size_t K,
                    const cbp_epi_f64 *epi);
    void (*activate)(double *a, const double *z, size_t ld, size_t M, size_t N, int act);
    void (*mul_prime)(double *d, const double *a, size_t ld, size_t M, size_t N, int act);
    double (*fma_loop)(size_t iters);
    int (*all_finite)(const double *x, size_t n);
} cbp_kernels_f64;

/* The kernels of variant isa (CBP_ISA_*; an isa this build lacks gets the generic ones). */
const cbp_kernels_f32 *cbp_kernels_for_f32(int isa);
const cbp_kernels_f64 *cbp_kernels_for_f64(int isa);

/* The tables each variant defines (kernels_plain.c, kernels_simd.c). */
extern const cbp_kernels_f32 cbp_kernels_plain_f32, cbp_kernels_generic_f32;
extern const cbp_kernels_f64 cbp_kernels_plain_f64, cbp_kernels_generic_f64;
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define CBP_HAVE_X86_SIMD 1
extern const cbp_kernels_f32 cbp_kernels_avx2_f32, cbp_kernels_avx512_f32;
extern const cbp_kernels_f64 cbp_kernels_avx2_f64, cbp_kernels_avx512_f64;
#else
#define CBP_HAVE_X86_SIMD 0
#endif

/* Scalar helpers every variant shares (kernels_plain.c): sigma and the activations on one
 * value, softmax of rows [i0, i1) of z into a (eq. (78), shifted by the row maximum), and
 * BP1 (cbp_output_delta_*: see net.c). */
float cbp_activate_f32(float z, int act);
double cbp_activate_f64(double z, int act);
float cbp_prime_f32(float a, int act);      /* f'(z) from a = f(z) */
double cbp_prime_f64(double a, int act);
void cbp_softmax_rows_f32(float *a, const float *z, size_t n, size_t i0, size_t i1);
void cbp_softmax_rows_f64(double *a, const double *z, size_t n, size_t i0, size_t i1);

#endif /* CBACKPROP_KERNELS_H */
