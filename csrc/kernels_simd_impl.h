/* Register-blocked SIMD kernels for one element type and one instruction set, written with
 * GCC/Clang vector extensions so the same source compiles to AVX-512, AVX2, SSE2 or NEON.
 * Instantiated by kernels_simd.c with REAL, IS_DOUBLE, VB (vector bytes), NT_MR x NT_MC (the
 * gemm_nt register tile), NN_MR (gemm_nn's rows per tile; 4 vectors wide), RULE, EPI,
 * KERNELS_T and K_(name) (the instantiation's names) defined, inside a `#pragma GCC target`
 * region for the wide instruction sets: the build itself targets baseline x86-64 and
 * dispatch.c picks the variant at run time.  Formulas and shapes: kernels.h.
 *
 * Sums run in a different order than the plain kernels (one partial sum per vector lane),
 * so results differ from them by rounding only; tests compare the two over awkward sizes.
 * Every output element goes through the same vector arithmetic wherever it lies (edges: a
 * vector window ending at the edge, or a zero-padded vector), so any cut of a layer into
 * blocks gives bitwise the same values (kernels.h). */
#define V ((size_t)(VB / sizeof(REAL)))
#define VEC K_(vec)
#define VECI K_(veci)
typedef REAL VEC __attribute__((vector_size(VB)));
#if IS_DOUBLE
typedef long long VECI __attribute__((vector_size(VB)));
#else
typedef int VECI __attribute__((vector_size(VB)));
#endif

/* unaligned vector load/store (memcpy compiles to one vmovups) */
static inline VEC K_(vload)(const REAL *p) { VEC v; memcpy(&v, p, sizeof v); return v; }
static inline void K_(vstore)(REAL *p, VEC v) { memcpy(p, &v, sizeof v); }
static inline VEC K_(vsplat)(REAL x) { return (VEC){0} + x; }
/* p[0 .. n) in the low lanes of a vector, zeros above (n < V) */
static inline VEC K_(vpad)(const REAL *p, size_t n)
{
    REAL buf[V] = {0};
    memcpy(buf, p, n * sizeof(REAL));
    return K_(vload)(buf);
}
/* lane by lane (compiles to one vector square root) */
static inline VEC K_(vsqrt)(VEC x)
{
    VEC r;
    for (size_t t = 0; t < V; t++) r[t] = IS_DOUBLE ? __builtin_sqrt(x[t]) : __builtin_sqrtf(x[t]);
    return r;
}

#define UPDATE_T VEC
#define UPDATE_RULE RULE
#define UPDATE_SQRT K_(vsqrt)
#define UPDATE_NAME K_(vupdate)
#include "update.h"

/* Sum of the lanes by halving: log2(V) adds of the two halves of a vector. */
typedef REAL K_(v2) __attribute__((vector_size(2 * sizeof(REAL))));
typedef REAL K_(v4) __attribute__((vector_size(4 * sizeof(REAL))));
typedef REAL K_(v8) __attribute__((vector_size(8 * sizeof(REAL))));
typedef REAL K_(v16) __attribute__((vector_size(16 * sizeof(REAL))));
static inline REAL K_(hsum2)(K_(v2) x) { return x[0] + x[1]; }
static inline REAL K_(hsum4)(K_(v4) x)
{
    return K_(hsum2)(__builtin_shufflevector(x, x, 0, 1) + __builtin_shufflevector(x, x, 2, 3));
}
static inline REAL K_(hsum8)(K_(v8) x)
{
    return K_(hsum4)(__builtin_shufflevector(x, x, 0, 1, 2, 3) +
                     __builtin_shufflevector(x, x, 4, 5, 6, 7));
}
static inline REAL K_(hsum16)(K_(v16) x)
{
    return K_(hsum8)(__builtin_shufflevector(x, x, 0, 1, 2, 3, 4, 5, 6, 7) +
                     __builtin_shufflevector(x, x, 8, 9, 10, 11, 12, 13, 14, 15));
}
#define LANES_ (VB / (IS_DOUBLE ? 8 : 4))
#if LANES_ == 2
#define HSUM_ K_(hsum2)
#elif LANES_ == 4
#define HSUM_ K_(hsum4)
#elif LANES_ == 8
#define HSUM_ K_(hsum8)
#else
#define HSUM_ K_(hsum16)
#endif
static inline REAL K_(hsum)(VEC v) { return HSUM_(v); }

/* hsum of V vectors at once: lane t of the result is hsum(x[t]), by the same additions (each
 * level adds, for every input, the lower half of its remaining lanes to the upper half, as
 * hsum does, two inputs per vector); x is overwritten.  Level h of 2V lanes a|b: lo takes the
 * first h of each group of 2h lanes, hi the second h. */
#define LEVEL_(NAME, LO, HI)                                                                 \
    static inline VEC K_(NAME)(VEC a, VEC b)                                                 \
    {                                                                                        \
        return __builtin_shufflevector(a, b, LO) + __builtin_shufflevector(a, b, HI);        \
    }
#define L_(...) __VA_ARGS__
#if LANES_ == 16
LEVEL_(lvl1, L_(0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23),
       L_(8, 9, 10, 11, 12, 13, 14, 15, 24, 25, 26, 27, 28, 29, 30, 31))
LEVEL_(lvl2, L_(0, 1, 2, 3, 8, 9, 10, 11, 16, 17, 18, 19, 24, 25, 26, 27),
       L_(4, 5, 6, 7, 12, 13, 14, 15, 20, 21, 22, 23, 28, 29, 30, 31))
LEVEL_(lvl3, L_(0, 1, 4, 5, 8, 9, 12, 13, 16, 17, 20, 21, 24, 25, 28, 29),
       L_(2, 3, 6, 7, 10, 11, 14, 15, 18, 19, 22, 23, 26, 27, 30, 31))
LEVEL_(lvl4, L_(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30),
       L_(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31))
#define LEVELS_ LEVEL_RUN_(lvl1) LEVEL_RUN_(lvl2) LEVEL_RUN_(lvl3) LEVEL_RUN_(lvl4)
#elif LANES_ == 8
LEVEL_(lvl1, L_(0, 1, 2, 3, 8, 9, 10, 11), L_(4, 5, 6, 7, 12, 13, 14, 15))
LEVEL_(lvl2, L_(0, 1, 4, 5, 8, 9, 12, 13), L_(2, 3, 6, 7, 10, 11, 14, 15))
LEVEL_(lvl3, L_(0, 2, 4, 6, 8, 10, 12, 14), L_(1, 3, 5, 7, 9, 11, 13, 15))
#define LEVELS_ LEVEL_RUN_(lvl1) LEVEL_RUN_(lvl2) LEVEL_RUN_(lvl3)
#elif LANES_ == 4
LEVEL_(lvl1, L_(0, 1, 4, 5), L_(2, 3, 6, 7))
LEVEL_(lvl2, L_(0, 2, 4, 6), L_(1, 3, 5, 7))
#define LEVELS_ LEVEL_RUN_(lvl1) LEVEL_RUN_(lvl2)
#else
LEVEL_(lvl1, L_(0, 2), L_(1, 3))
#define LEVELS_ LEVEL_RUN_(lvl1)
#endif
static inline __attribute__((always_inline)) VEC K_(hsum_all)(VEC *x)
{
    size_t n = V;
#define LEVEL_RUN_(NAME)                                                                     \
    for (size_t i = 0; i < n / 2; i++) x[i] = K_(NAME)(x[2 * i], x[2 * i + 1]);             \
    n /= 2;
    LEVELS_
#undef LEVEL_RUN_
    return x[0];
}
#undef LEVELS_
#undef L_
#undef LEVEL_
#undef HSUM_
#undef LANES_

/* Lanes t < n all bits set (the lanes of a window that are already done), else 0; and
 * blend(keep_old, old, new): old where keep_old, else new. */
static inline VECI K_(lane_lt)(size_t n)
{
    VECI m;
    for (size_t t = 0; t < V; t++) m[t] = (t < n) ? -1 : 0;
    return m;
}
static inline VEC K_(blend)(VECI keep_old, VEC old, VEC nw)
{
    return (VEC)(((VECI)old & keep_old) | ((VECI)nw & ~keep_old));
}

/* ---- gemm_nt: z = a . w^T + b, register tiles of dot products along K ----------------- */

/* MR x MC tile: out[r*ldo + c] = sum_{k<K} A[r*lda + k] B[c*ldb + k] + bias[c].  The last
 * K mod V columns go through the window [K - V, K) with the lanes below k zeroed (K < V:
 * zero-padded vectors); then each accumulator's lanes are summed as hsum does: V at a time
 * (hsum_all) from 4 accumulators up, one by one below.  Both give the same bits; the small
 * tiles keep hsum because a reduction of V vectors, mostly zeros, costs them more (AVX-512
 * float32 on a Zen 4 VM, one thread, best of 7 x 200,000 calls: [1x100 -> 2] 22 -> 10-13
 * GFLOP/s, [2x784 -> 1] 47 -> 33-47 with hsum_all for every tile). */
#define DOT_TILE(MR, MC)                                                                     \
    static inline __attribute__((always_inline)) void K_(dot_##MR##x##MC)(                  \
        REAL *out, size_t ldo, const REAL *A, size_t lda, const REAL *B, size_t ldb, size_t K, \
        const REAL *bias)                                                                    \
    {                                                                                        \
        VEC acc[MR][MC];                                                                     \
        for (int r = 0; r < MR; r++)                                                         \
            for (int c = 0; c < MC; c++) acc[r][c] = (VEC){0};                               \
        size_t k = 0;                                                                        \
        for (; k + V <= K; k += V) {                                                         \
            VEC bv[MC];                                                                      \
            for (int c = 0; c < MC; c++) bv[c] = K_(vload)(B + c * ldb + k);                 \
            for (int r = 0; r < MR; r++) {                                                   \
                const VEC av = K_(vload)(A + r * lda + k);                                   \
                for (int c = 0; c < MC; c++) acc[r][c] += av * bv[c];                        \
            }                                                                                \
        }                                                                                    \
        if (k < K && K >= V) {                                                               \
            const VECI fresh = ~K_(lane_lt)(k - (K - V));                                    \
            VEC bv[MC];                                                                      \
            for (int c = 0; c < MC; c++)                                                     \
                bv[c] = (VEC)((VECI)K_(vload)(B + c * ldb + K - V) & fresh);                 \
            for (int r = 0; r < MR; r++) {                                                   \
                const VEC av = (VEC)((VECI)K_(vload)(A + r * lda + K - V) & fresh);          \
                for (int c = 0; c < MC; c++) acc[r][c] += av * bv[c];                        \
            }                                                                                \
        } else if (k < K) {                       /* K < V: zero-padded vectors */             \
            VEC bv[MC];                                                                      \
            for (int c = 0; c < MC; c++) bv[c] = K_(vpad)(B + c * ldb, K);                   \
            for (int r = 0; r < MR; r++) {                                                   \
                const VEC av = K_(vpad)(A + r * lda, K);                                     \
                for (int c = 0; c < MC; c++) acc[r][c] += av * bv[c];                        \
            }                                                                                \
        }                                                                                    \
        if (MR * MC >= 4) {                          /* V sums at a time, as hsum adds */    \
            REAL s[MR * MC];                                                                 \
            for (size_t g = 0; g < MR * MC; g += V) {                                        \
                VEC x[V];                                                                    \
                for (size_t t = 0; t < V; t++)                                               \
                    x[t] = g + t < MR * MC ? acc[(g + t) / MC][(g + t) % MC] : (VEC){0};     \
                const VEC h = K_(hsum_all)(x);                                               \
                for (size_t t = 0; t < V && g + t < MR * MC; t++) s[g + t] = h[t];           \
            }                                                                                \
            for (int r = 0; r < MR; r++)                                                     \
                for (int c = 0; c < MC; c++) out[r * ldo + c] = s[r * MC + c] + bias[c];     \
            return;                                                                          \
        }                                                                                    \
        for (int r = 0; r < MR; r++)                                                         \
            for (int c = 0; c < MC; c++) out[r * ldo + c] = K_(hsum)(acc[r][c]) + bias[c];  \
    }
DOT_TILE(1, 1) DOT_TILE(1, 2) DOT_TILE(1, 3) DOT_TILE(1, 4)
DOT_TILE(2, 1) DOT_TILE(2, 2) DOT_TILE(2, 3) DOT_TILE(2, 4)
DOT_TILE(3, 1) DOT_TILE(3, 2) DOT_TILE(3, 3) DOT_TILE(3, 4)
DOT_TILE(4, 1) DOT_TILE(4, 2) DOT_TILE(4, 3) DOT_TILE(4, 4)
#if NT_MR > 4 || NT_MC > 4
DOT_TILE(1, 5) DOT_TILE(2, 5) DOT_TILE(3, 5) DOT_TILE(4, 5)
DOT_TILE(5, 1) DOT_TILE(5, 2) DOT_TILE(5, 3) DOT_TILE(5, 4) DOT_TILE(5, 5)
#endif
#undef DOT_TILE

/* One mr x mc tile (1 <= mr <= NT_MR, 1 <= mc <= NT_MC). */
static inline void K_(dot_tile)(size_t mr, size_t mc, REAL *out, size_t ldo, const REAL *A,
                                size_t lda, const REAL *B, size_t ldb, size_t K,
                                const REAL *bias)
{
#define CASE_(R, C)                                                                          \
    case 8 * (R - 1) + (C - 1): K_(dot_##R##x##C)(out, ldo, A, lda, B, ldb, K, bias); break;
    switch (8 * (mr - 1) + (mc - 1)) {
        CASE_(1, 1) CASE_(1, 2) CASE_(1, 3) CASE_(1, 4)
        CASE_(2, 1) CASE_(2, 2) CASE_(2, 3) CASE_(2, 4)
        CASE_(3, 1) CASE_(3, 2) CASE_(3, 3) CASE_(3, 4)
        CASE_(4, 1) CASE_(4, 2) CASE_(4, 3) CASE_(4, 4)
#if NT_MR > 4 || NT_MC > 4
        CASE_(1, 5) CASE_(2, 5) CASE_(3, 5) CASE_(4, 5)
        CASE_(5, 1) CASE_(5, 2) CASE_(5, 3) CASE_(5, 4) CASE_(5, 5)
#endif
    }
#undef CASE_
}

/* z[M, N] = a[M, K] . w[N, K]^T + b[N].  j outer: the NT_MC rows of w stay in L1 while all
 * rows of a pass by, so a large weight matrix is read from memory once per call. */
static void K_(gemm_nt)(REAL *z, size_t ldz, const REAL *a, size_t lda, const REAL *w,
                        size_t ldw, const REAL *b, size_t M, size_t N, size_t K)
{
    for (size_t j = 0; j < N; j += NT_MC) {
        const size_t mc = (N - j < NT_MC) ? N - j : NT_MC;
        for (size_t i = 0; i < M; i += NT_MR) {
            const size_t mr = (M - i < NT_MR) ? M - i : NT_MR;
            K_(dot_tile)(mr, mc, z + i * ldz + j, ldz, a + i * lda, lda, w + j * ldw, ldw, K,
                         b + j);
        }
    }
}

/* ---- gemm_nn: C (op)= A(., t) B[t, .], register tiles of broadcast multiply-adds -------- */

/* The epilogue on one vector of C at p (states s1, s2 laid out as C, NULL where the rule has
 * none), product P. */
static inline __attribute__((always_inline)) void K_(epi_vec)(REAL *p, REAL *s1, REAL *s2, VEC P,
                                                               int op, const RULE *rule)
{
    if (op == CBP_EPI_SET) {
        K_(vstore)(p, P);
    } else if (op == CBP_EPI_ADD) {
        K_(vstore)(p, K_(vload)(p) + P);
    } else {
        VEC a = s1 ? K_(vload)(s1) : (VEC){0}, b = s2 ? K_(vload)(s2) : (VEC){0};
        K_(vstore)(p, K_(vupdate)(K_(vload)(p), P, &a, &b, rule));
        if (s1) K_(vstore)(s1, a);
        if (s2) K_(vstore)(s2, b);
    }
}

/* The same on the lanes >= c0 - w0 of the window at p (the lanes below keep their values). */
static inline __attribute__((always_inline)) void K_(epi_win)(REAL *p, REAL *s1, REAL *s2, VEC P,
                                                               VECI old, int op, const RULE *rule)
{
    const VEC cur = K_(vload)(p);
    VEC nw;
    if (op == CBP_EPI_SET) {
        nw = P;
    } else if (op == CBP_EPI_ADD) {
        nw = cur + P;
    } else {
        const VEC a0 = s1 ? K_(vload)(s1) : (VEC){0}, b0 = s2 ? K_(vload)(s2) : (VEC){0};
        VEC a = a0, b = b0;
        nw = K_(vupdate)(cur, P, &a, &b, rule);
        if (s1) K_(vstore)(s1, K_(blend)(old, a0, a));
        if (s2) K_(vstore)(s2, K_(blend)(old, b0, b));
    }
    K_(vstore)(p, K_(blend)(old, cur, nw));
}

/* MR rows x NV vectors: C[r*ldc + c] (op)= sum_{t<T} A(r, t) B[t*ldb + c]. */
#define AXPY_TILE(MR, NV)                                                                    \
    static inline __attribute__((always_inline)) void K_(axpy_##MR##x##NV)(                 \
        REAL *C, size_t ldc, const REAL *A, size_t ars, size_t ats, const REAL *B,           \
        size_t ldb, size_t T, int op, const RULE *rule, REAL *s1, REAL *s2)                  \
    {                                                                                        \
        VEC acc[MR][NV];                                                                     \
        for (int r = 0; r < MR; r++)                                                         \
            for (int c = 0; c < NV; c++) acc[r][c] = (VEC){0};                               \
        for (size_t t = 0; t < T; t++) {                                                     \
            VEC bv[NV];                                                                      \
            for (int c = 0; c < NV; c++) bv[c] = K_(vload)(B + t * ldb + c * V);             \
            for (int r = 0; r < MR; r++) {                                                   \
                const REAL x = A[r * ars + t * ats];                                         \
                for (int c = 0; c < NV; c++) acc[r][c] += x * bv[c];                         \
            }                                                                                \
        }                                                                                    \
        for (int r = 0; r < MR; r++)                                                         \
            for (int c = 0; c < NV; c++)                                                     \
                K_(epi_vec)(C + r * ldc + c * V, s1 ? s1 + r * ldc + c * V : NULL,           \
                            s2 ? s2 + r * ldc + c * V : NULL, acc[r][c], op, rule);          \
    }
AXPY_TILE(1, 1) AXPY_TILE(2, 1) AXPY_TILE(3, 1) AXPY_TILE(4, 1)
AXPY_TILE(1, 4) AXPY_TILE(2, 4) AXPY_TILE(3, 4) AXPY_TILE(4, 4)
#if NN_MR > 4
AXPY_TILE(5, 1) AXPY_TILE(5, 4)
#endif
#undef AXPY_TILE

/* Columns [c0, N) of MR rows when N - c0 < V <= N: one vector window [N - V, N) whose lanes
 * below c0 keep their values (the same sums, lane by lane, as a whole vector). */
#define AXPY_WIN(MR)                                                                         \
    static inline __attribute__((always_inline)) void K_(axpy_win_##MR)(                    \
        REAL *C, size_t ldc, const REAL *A, size_t ars, size_t ats, const REAL *B,           \
        size_t ldb, size_t T, size_t c0, size_t N, int op, const RULE *rule, REAL *s1,      \
        REAL *s2)                                                                            \
    {                                                                                        \
        const size_t w0 = N - V;                                                             \
        const VECI old = K_(lane_lt)(c0 - w0);                                               \
        VEC acc[MR];                                                                         \
        for (int r = 0; r < MR; r++) acc[r] = (VEC){0};                                      \
        for (size_t t = 0; t < T; t++) {                                                     \
            const VEC bv = K_(vload)(B + t * ldb + w0);                                      \
            for (int r = 0; r < MR; r++) acc[r] += A[r * ars + t * ats] * bv;                \
        }                                                                                    \
        for (int r = 0; r < MR; r++)                                                         \
            K_(epi_win)(C + r * ldc + w0, s1 ? s1 + r * ldc + w0 : NULL,                     \
                        s2 ? s2 + r * ldc + w0 : NULL, acc[r], old, op, rule);               \
    }
AXPY_WIN(1) AXPY_WIN(2) AXPY_WIN(3) AXPY_WIN(4)
#if NN_MR > 4
AXPY_WIN(5)
#endif
#undef AXPY_WIN

/* All N < V columns of R rows, through zero-padded vectors: each column gets exactly the
 * vector arithmetic of the wider paths. */
static inline __attribute__((always_inline)) void K_(axpy_narrow)(
    REAL *C, size_t ldc, const REAL *A, size_t ars, size_t ats, const REAL *B, size_t ldb,
    size_t T, size_t R, size_t N, int op, const RULE *rule, REAL *s1, REAL *s2)
{
    const size_t bytes = N * sizeof(REAL);
    for (size_t r = 0; r < R; r++) {
        VEC acc = {0};
        for (size_t t = 0; t < T; t++) {
            REAL buf[V] = {0};
            memcpy(buf, B + t * ldb, bytes);
            acc += A[r * ars + t * ats] * K_(vload)(buf);
        }
        REAL pb[V] = {0}, ab[V] = {0}, bb[V] = {0};
        memcpy(pb, C + r * ldc, bytes);
        if (s1) memcpy(ab, s1 + r * ldc, bytes);
        if (s2) memcpy(bb, s2 + r * ldc, bytes);
        K_(epi_vec)(pb, s1 ? ab : NULL, s2 ? bb : NULL, acc, op, rule);
        memcpy(C + r * ldc, pb, bytes);
        if (s1) memcpy(s1 + r * ldc, ab, bytes);
        if (s2) memcpy(s2 + r * ldc, bb, bytes);
    }
}

/* MR rows of gemm_nn: 4-vector column blocks, single vectors, then the last columns through
 * a window (or zero-padded vectors when N < V). */
#define NN_ROWS(MR)                                                                          \
    static inline __attribute__((always_inline)) void K_(nn_rows_##MR)(                     \
        REAL *C, size_t ldc, const REAL *A, size_t ars, size_t ats, const REAL *B,           \
        size_t ldb, size_t N, size_t T, int op, const RULE *rule, REAL *s1, REAL *s2)        \
    {                                                                                        \
        size_t c = 0;                                                                        \
        for (; c + 4 * V <= N; c += 4 * V)                                                   \
            K_(axpy_##MR##x4)(C + c, ldc, A, ars, ats, B + c, ldb, T, op, rule,              \
                              s1 ? s1 + c : NULL, s2 ? s2 + c : NULL);                       \
        for (; c + V <= N; c += V)                                                           \
            K_(axpy_##MR##x1)(C + c, ldc, A, ars, ats, B + c, ldb, T, op, rule,              \
                              s1 ? s1 + c : NULL, s2 ? s2 + c : NULL);                       \
        if (c < N && N >= V)                                                                 \
            K_(axpy_win_##MR)(C, ldc, A, ars, ats, B, ldb, T, c, N, op, rule, s1, s2);       \
        else if (c < N)                                                                      \
            K_(axpy_narrow)(C, ldc, A, ars, ats, B, ldb, T, MR, N, op, rule, s1, s2);        \
    }
NN_ROWS(1) NN_ROWS(2) NN_ROWS(3) NN_ROWS(4)
#if NN_MR > 4
NN_ROWS(5)
#endif
#undef NN_ROWS

/* C[M, N] (op)= A(M, T) . B[T, N] for one (op, rule kind): row tiles of NN_MR (5 rows x 4
 * vectors = 20 accumulators on AVX-512, 3 x 4 elsewhere), each over all N columns. */
static inline __attribute__((always_inline)) void K_(nn_cols)(
    REAL *C, size_t ldc, const REAL *A, size_t ars, size_t ats, const REAL *B, size_t ldb,
    size_t M, size_t N, size_t T, int op, const RULE *rule, REAL *s1, REAL *s2)
{
    for (size_t r = 0; r < M; r += NN_MR) {
        const REAL *Ar = A + r * ars;
        REAL *Cr = C + r * ldc;
        REAL *a = s1 ? s1 + r * ldc : NULL, *b = s2 ? s2 + r * ldc : NULL;
        switch ((M - r < NN_MR) ? M - r : NN_MR) {
        case 1: K_(nn_rows_1)(Cr, ldc, Ar, ars, ats, B, ldb, N, T, op, rule, a, b); break;
        case 2: K_(nn_rows_2)(Cr, ldc, Ar, ars, ats, B, ldb, N, T, op, rule, a, b); break;
        case 3: K_(nn_rows_3)(Cr, ldc, Ar, ars, ats, B, ldb, N, T, op, rule, a, b); break;
#if NN_MR > 4
        case 4: K_(nn_rows_4)(Cr, ldc, Ar, ars, ats, B, ldb, N, T, op, rule, a, b); break;
        default: K_(nn_rows_5)(Cr, ldc, Ar, ars, ats, B, ldb, N, T, op, rule, a, b); break;
#else
        default: K_(nn_rows_4)(Cr, ldc, Ar, ars, ats, B, ldb, N, T, op, rule, a, b); break;
#endif
        }
    }
}

/* C[M, N] (op)= A(M, T) . B[T, N] in cache blocks of columns.  In double, when B is larger
 * than half of L2, the blocks are nb columns wide: the most multiples of 4 vectors whose
 * [T, nb] part of B fits in a quarter of L2 (the last block takes the rest, from nb to 2 nb
 * wide), so that B comes from L3 once instead of once per row tile: 256 columns for BP4 below
 * a wide layer at mini-batch 128, 32 for BP2 from a layer of 1024 units.  Else (float, or
 * when not even 4 vectors of B's columns fit: T > 1024 on AVX-512) one block of all N.
 * Every block edge is a multiple of 4 vectors and the last block ends where C does, so each
 * 4-vector tile, vector and edge window lies where it lies unblocked, and one copy of the
 * tile code computes them all: the same bits.  The limits are those of the smallest L2
 * seen on these machines (1 MiB); on a smaller one a block spills to L3 as all of B does
 * unblocked.  Measured (performance-notes.md): N4 float64 epochs on a Zen 4 VM, two
 * threads, 7.2 -> 6.2 s, one thread 13.1 -> 11.4 s; float32 unchanged within the noise, so
 * left unblocked. */
static inline __attribute__((always_inline)) void K_(nn_body)(
    REAL *C, size_t ldc, const REAL *A, size_t ars, size_t ats, const REAL *B, size_t ldb,
    size_t M, size_t N, size_t T, int op, const RULE *rule, REAL *s1, REAL *s2)
{
    const size_t l2_part = (size_t)256 << 10, panel = 4 * V;
    const size_t nb = T ? l2_part / (T * sizeof(REAL)) / panel * panel : 0;
    const int blocked = IS_DOUBLE && nb > 0 && T * N * sizeof(REAL) > 2 * l2_part;
    const size_t width = blocked ? nb : N;
    for (size_t c0 = 0, n; c0 < N; c0 += n) {
        n = N - c0 >= 2 * width ? width : N - c0;
        K_(nn_cols)(C + c0, ldc, A, ars, ats, B + c0, ldb, M, n, T, op, rule,
                    s1 ? s1 + c0 : NULL, s2 ? s2 + c0 : NULL);
    }
}

/* gemm_nn with the epilogue's op and rule kind made compile-time constants (one compiled
 * copy of the product per epilogue). */
static void K_(gemm_nn)(REAL *c, size_t ldc, const REAL *A, size_t ars, size_t ats,
                        const REAL *B, size_t ldb, size_t M, size_t N, size_t K, const EPI *epi)
{
    RULE r = epi->rule;   /* (a local copy: stores through c could alias *epi) */
#define BODY_(OP, S1, S2) K_(nn_body)(c, ldc, A, ars, ats, B, ldb, M, N, K, OP, &r, S1, S2)
    if (epi->op == CBP_EPI_SET) {
        BODY_(CBP_EPI_SET, NULL, NULL);
    } else if (epi->op == CBP_EPI_ADD) {
        BODY_(CBP_EPI_ADD, NULL, NULL);
    } else if (r.kind == CBP_OPT_MOMENTUM) {
        r.kind = CBP_OPT_MOMENTUM;
        BODY_(CBP_EPI_UPDATE, epi->state1, NULL);
    } else if (r.kind == CBP_OPT_NESTEROV) {
        r.kind = CBP_OPT_NESTEROV;
        BODY_(CBP_EPI_UPDATE, epi->state1, NULL);
    } else if (r.kind == CBP_OPT_ADAM) {
        r.kind = CBP_OPT_ADAM;
        BODY_(CBP_EPI_UPDATE, epi->state1, epi->state2);
    } else if (r.kind == CBP_RULE_SGD_SAVE) {
        r.kind = CBP_RULE_SGD_SAVE;
        BODY_(CBP_EPI_UPDATE, epi->state1, NULL);
    } else {
        r.kind = CBP_OPT_SGD;
        BODY_(CBP_EPI_UPDATE, NULL, NULL);
    }
#undef BODY_
}

/* ---- activations over vectors --------------------------------------------------------- */

/* exp(x) for x in [EXP_LO, EXP_HI] (callers clamp): x = k ln2 + r, |r| <= ln2/2, exp(r) by
 * its Taylor polynomial (degree 7 for float, 13 for double: truncation below half an ulp),
 * times 2^k assembled in the exponent bits.  About 1 ulp. */
#if IS_DOUBLE
#define EXP_HI 709.0
#define EXP_LO (-708.0)
#define MANT_BITS 52
#define EXP_BIAS 1023
#define ROUND_MAGIC 6755399441055744.0 /* 1.5 * 2^52 */
#else
#define EXP_HI 88.0f
#define EXP_LO (-87.0f)
#define MANT_BITS 23
#define EXP_BIAS 127
#define ROUND_MAGIC 12582912.0f /* 1.5 * 2^23 */
#endif

static inline VEC K_(vclamp)(VEC v, REAL lo, REAL hi)
{
    const VEC vlo = K_(vsplat)(lo), vhi = K_(vsplat)(hi);
    VECI below = (VECI)(v < vlo), above = (VECI)(v > vhi);  /* -1 where true; NaN stays NaN */
    VECI bits = ((VECI)v & ~below) | ((VECI)vlo & below);
    bits = (bits & ~above) | ((VECI)vhi & above);
    return (VEC)bits;
}

static inline VEC K_(vexp)(VEC x)
{
    const REAL log2e = (REAL)1.4426950408889634, ln2_hi = (REAL)0.693145751953125,
               ln2_lo = (REAL)1.428606820309417232e-06;
    VEC kf = x * log2e + ROUND_MAGIC;
    kf = kf - ROUND_MAGIC;                     /* round to nearest integer */
    const VEC r = (x - kf * ln2_hi) - kf * ln2_lo;
#if IS_DOUBLE
    VEC p = K_(vsplat)(1.0 / 6227020800.0);    /* 1/13! */
    p = p * r + 1.0 / 479001600.0;
    p = p * r + 1.0 / 39916800.0;
    p = p * r + 1.0 / 3628800.0;
    p = p * r + 1.0 / 362880.0;
    p = p * r + 1.0 / 40320.0;
    p = p * r + 1.0 / 5040.0;
    p = p * r + 1.0 / 720.0;
    p = p * r + 1.0 / 120.0;
    p = p * r + 1.0 / 24.0;
    p = p * r + 1.0 / 6.0;
    p = p * r + 0.5;
    p = p * r + 1.0;
    p = p * r + 1.0;
#else
    VEC p = K_(vsplat)(1.0f / 5040.0f);
    p = p * r + 1.0f / 720.0f;
    p = p * r + 1.0f / 120.0f;
    p = p * r + 1.0f / 24.0f;
    p = p * r + 1.0f / 6.0f;
    p = p * r + 0.5f;
    p = p * r + 1.0f;
    p = p * r + 1.0f;
#endif
    const VECI k = __builtin_convertvector(kf, VECI);
    const VECI scale = (k + EXP_BIAS) << MANT_BITS;
    return p * (VEC)scale;
}

/* sigma(z) = 1 / (1 + exp(-z)).  -z is clamped to exp's range; below it sigma is exactly 1,
 * and above it (z < -709 in double, -88 in float) sigma is set to exactly 0, as libm's
 * overflowing exp gives (up to the last few subnormal values). */
static inline VEC K_(vsigmoid)(VEC z)
{
    const VEC nz = -z;
    const VECI beyond = (VECI)(nz > K_(vsplat)(EXP_HI));
    const VEC s = (REAL)1 / ((REAL)1 + K_(vexp)(K_(vclamp)(nz, EXP_LO, EXP_HI)));
    return (VEC)((VECI)s & ~beyond);
}
#undef EXP_HI
#undef EXP_LO
#undef MANT_BITS
#undef EXP_BIAS
#undef ROUND_MAGIC

/* a = f(z) (act resolved at compile time in the callers below).  tanh z = 2 sigma(2z) - 1:
 * about 1 ulp of 1 in absolute terms, saturating to exactly -1 / 1. */
static inline __attribute__((always_inline)) VEC K_(vactivate)(VEC z, int act)
{
    switch (act) {
    case CBP_ACT_SIGMOID: return K_(vsigmoid)(z);
    case CBP_ACT_TANH: return (REAL)2 * K_(vsigmoid)(z + z) - (REAL)1;
    case CBP_ACT_RELU: return (VEC)((VECI)z & ~(VECI)(z < (REAL)0));  /* NaN stays NaN */
    default: return z;                                                /* identity */
    }
}

/* f'(z) from a = f(z) (see CBP_ACT_*). */
static inline __attribute__((always_inline)) VEC K_(vprime)(VEC a, int act)
{
    switch (act) {
    case CBP_ACT_SIGMOID: return a * ((REAL)1 - a);
    case CBP_ACT_TANH: return (REAL)1 - a * a;
    case CBP_ACT_RELU: return (VEC)((VECI)K_(vsplat)(1) & (VECI)(a > (REAL)0));
    default: return K_(vsplat)(1);
    }
}

/* a = f(z) over n contiguous elements; the last ones through a window ending at n (lanes
 * recomputed from the same z give the same a) or, for n < V, a zero-padded vector. */
static inline __attribute__((always_inline)) void K_(activate_run)(REAL *a, const REAL *z,
                                                                   size_t n, int act)
{
    size_t j = 0;
    for (; j + V <= n; j += V) K_(vstore)(a + j, K_(vactivate)(K_(vload)(z + j), act));
    if (j < n && n >= V) {
        K_(vstore)(a + n - V, K_(vactivate)(K_(vload)(z + n - V), act));
    } else if (j < n) {
        REAL buf[V] = {0};
        memcpy(buf, z + j, (n - j) * sizeof(REAL));
        K_(vstore)(buf, K_(vactivate)(K_(vload)(buf), act));
        memcpy(a + j, buf, (n - j) * sizeof(REAL));
    }
}

/* d *= f'(a) over n contiguous elements; a window's lanes already done keep their values. */
static inline __attribute__((always_inline)) void K_(prime_run)(REAL *d, const REAL *a, size_t n,
                                                                int act)
{
    size_t j = 0;
    for (; j + V <= n; j += V)
        K_(vstore)(d + j, K_(vload)(d + j) * K_(vprime)(K_(vload)(a + j), act));
    if (j < n && n >= V) {
        const VEC dv = K_(vload)(d + n - V);
        const VEC nw = dv * K_(vprime)(K_(vload)(a + n - V), act);
        K_(vstore)(d + n - V, K_(blend)(K_(lane_lt)(j - (n - V)), dv, nw));
    } else if (j < n) {
        REAL db[V] = {0}, ab[V] = {0};
        memcpy(db, d + j, (n - j) * sizeof(REAL));
        memcpy(ab, a + j, (n - j) * sizeof(REAL));
        K_(vstore)(db, K_(vload)(db) * K_(vprime)(K_(vload)(ab), act));
        memcpy(d + j, db, (n - j) * sizeof(REAL));
    }
}

/* The M x N block (rows ld apart) as runs: one run when the rows are contiguous. */
#define BLOCK_RUNS_(FN, OUT, IN)                                                             \
    do {                                                                                     \
        if (ld == N) FN(OUT, IN, M * N, act_);                                               \
        else for (size_t i = 0; i < M; i++) FN(OUT + i * ld, IN + i * ld, N, act_);          \
    } while (0)

static void K_(activate)(REAL *a, const REAL *z, size_t ld, size_t M, size_t N, int act)
{
    int act_;
    switch (act) {
    case CBP_ACT_SIGMOID: act_ = CBP_ACT_SIGMOID; BLOCK_RUNS_(K_(activate_run), a, z); break;
    case CBP_ACT_TANH: act_ = CBP_ACT_TANH; BLOCK_RUNS_(K_(activate_run), a, z); break;
    case CBP_ACT_RELU: act_ = CBP_ACT_RELU; BLOCK_RUNS_(K_(activate_run), a, z); break;
    default: act_ = CBP_ACT_IDENTITY; BLOCK_RUNS_(K_(activate_run), a, z); break;
    }
}

static void K_(mul_prime)(REAL *d, const REAL *a, size_t ld, size_t M, size_t N, int act)
{
    int act_;
    switch (act) {
    case CBP_ACT_SIGMOID: act_ = CBP_ACT_SIGMOID; BLOCK_RUNS_(K_(prime_run), d, a); break;
    case CBP_ACT_TANH: act_ = CBP_ACT_TANH; BLOCK_RUNS_(K_(prime_run), d, a); break;
    case CBP_ACT_RELU: act_ = CBP_ACT_RELU; BLOCK_RUNS_(K_(prime_run), d, a); break;
    default: break;                                   /* identity: f' = 1 */
    }
}
#undef BLOCK_RUNS_

/* The machine's multiply-add ceiling for this vector width: 12 independent chains of
 * acc = acc * x + y in named variables (registers; 12 covers FMA latency x throughput),
 * iters rounds; returns a value that depends on every chain.  Flops: 24 * lanes * iters. */
double K_(cbp_fma_loop)(size_t iters)
{
    const VEC x = K_(vsplat)((REAL)0.999999), y = K_(vsplat)((REAL)1e-7);
    VEC c0 = x, c1 = c0 + y, c2 = c1 + y, c3 = c2 + y, c4 = c3 + y, c5 = c4 + y;
    VEC c6 = c5 + y, c7 = c6 + y, c8 = c7 + y, c9 = c8 + y, c10 = c9 + y, c11 = c10 + y;
    for (size_t it = 0; it < iters; it++) {
        c0 = c0 * x + y; c1 = c1 * x + y; c2 = c2 * x + y; c3 = c3 * x + y;
        c4 = c4 * x + y; c5 = c5 * x + y; c6 = c6 * x + y; c7 = c7 * x + y;
        c8 = c8 * x + y; c9 = c9 * x + y; c10 = c10 * x + y; c11 = c11 * x + y;
    }
    return (double)K_(hsum)(((c0 + c1) + (c2 + c3)) + ((c4 + c5) + (c6 + c7)) +
                            ((c8 + c9) + (c10 + c11)));
}

/* 1 when every x[t], t < n, is finite: x - x is 0 for a finite x and NaN for inf or NaN, and
 * one NaN poisons a sum.  Four sums, so that the additions' latency is hidden. */
static int K_(all_finite)(const REAL *x, size_t n)
{
    VEC s0 = K_(vsplat)(0), s1 = s0, s2 = s0, s3 = s0;
    size_t t = 0;
    for (; t + 4 * V <= n; t += 4 * V) {
        const VEC a = K_(vload)(x + t), b = K_(vload)(x + t + V);
        const VEC c = K_(vload)(x + t + 2 * V), d = K_(vload)(x + t + 3 * V);
        s0 += a - a;
        s1 += b - b;
        s2 += c - c;
        s3 += d - d;
    }
    REAL rest = 0;
    for (; t < n; t++) rest += x[t] - x[t];
    return K_(hsum)((s0 + s1) + (s2 + s3)) + rest == 0;
}

const KERNELS_T KERNELS_NAME = {
    .lanes = (int)V,
    .nt_mc = NT_MC,
    .nn_mr = NN_MR,
    .gemm_nt = K_(gemm_nt),
    .gemm_nn = K_(gemm_nn),
    .activate = K_(activate),
    .mul_prime = K_(mul_prime),
    .fma_loop = K_(cbp_fma_loop),
    .all_finite = K_(all_finite),
};

#undef VECI
#undef VEC
#undef V
#undef REAL
#undef IS_DOUBLE
#undef VB
#undef NT_MR
#undef NT_MC
#undef NN_MR
#undef RULE
#undef EPI
#undef KERNELS_T
#undef KERNELS_NAME
#undef K_
