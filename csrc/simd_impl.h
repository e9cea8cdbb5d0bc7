/* Register-blocked SIMD kernels for one floating type and one instruction set, written with
 * GCC/Clang vector extensions so the same source compiles to AVX-512, AVX2, SSE2 or NEON.
 * Included by kernels.c with REAL, SUF (s|d), ISA (name suffix) and VB (vector bytes)
 * defined, inside a `#pragma GCC target` region for the wide instruction sets: the build
 * itself targets baseline x86-64 and the caller picks the variant at run time.
 *
 * Two product shapes cover every matrix product of backpropagation:
 *   gemm_nt: C[r, c] = sum_k A[r, k] B[c, k] + bias[c]  (feedforward: z = a_prev . w^T + b)
 *   gemm_nn: C[r, :] (op)= sum_t A(r, t) B[t, :]       (BP2: delta . w;  BP4: delta^T . a_prev)
 * with A(r, t) = A[r * ars + t * ats], so delta or its transpose is read in place.
 * Sums run in a different order than the plain kernels (one partial sum per vector lane),
 * so results differ from them by rounding only; tests compare the two over awkward sizes. */
#define F(name) CBP_CAT(CBP_CAT(name, SUF), ISA)
#define V ((size_t)(VB / sizeof(REAL)))
#define VEC F(vec)
#define HYPER CBP_CAT(cbp_hyper, SUF)
typedef REAL VEC __attribute__((vector_size(VB)));
#define VECI F(veci)
#if CBP_IS_DOUBLE
typedef long long VECI __attribute__((vector_size(VB)));
#else
typedef int VECI __attribute__((vector_size(VB)));
#endif

/* unaligned vector load/store (memcpy compiles to one vmovups) */
static inline VEC F(vload)(const REAL *p) { VEC v; memcpy(&v, p, sizeof v); return v; }
static inline void F(vstore)(REAL *p, VEC v) { memcpy(p, &v, sizeof v); }
/* Sum of the lanes by halving: log2(V) adds of the two halves of a vector (extracted with
 * __builtin_shufflevector, in registers), instead of V - 1 dependent scalar adds. */
typedef REAL F(v2) __attribute__((vector_size(2 * sizeof(REAL))));
typedef REAL F(v4) __attribute__((vector_size(4 * sizeof(REAL))));
typedef REAL F(v8) __attribute__((vector_size(8 * sizeof(REAL))));
typedef REAL F(v16) __attribute__((vector_size(16 * sizeof(REAL))));
static inline REAL F(hsum2)(F(v2) x) { return x[0] + x[1]; }
static inline REAL F(hsum4)(F(v4) x)
{
    return F(hsum2)(__builtin_shufflevector(x, x, 0, 1) + __builtin_shufflevector(x, x, 2, 3));
}
static inline REAL F(hsum8)(F(v8) x)
{
    return F(hsum4)(__builtin_shufflevector(x, x, 0, 1, 2, 3) + __builtin_shufflevector(x, x, 4, 5, 6, 7));
}
static inline REAL F(hsum16)(F(v16) x)
{
    return F(hsum8)(__builtin_shufflevector(x, x, 0, 1, 2, 3, 4, 5, 6, 7) +
                    __builtin_shufflevector(x, x, 8, 9, 10, 11, 12, 13, 14, 15));
}
#define CBP_LANES (VB / (CBP_IS_DOUBLE ? 8 : 4))
#if CBP_LANES == 2
#define CBP_HSUM F(hsum2)
#elif CBP_LANES == 4
#define CBP_HSUM F(hsum4)
#elif CBP_LANES == 8
#define CBP_HSUM F(hsum8)
#else
#define CBP_HSUM F(hsum16)
#endif
static inline REAL F(hsum)(VEC v) { return CBP_HSUM(v); }
#undef CBP_HSUM
#undef CBP_LANES

/* Edges narrower than a vector, when the row has at least V columns, go through one vector
 * window ending at the edge: the window's first `n` lanes (columns already done) are masked
 * out (lane_lt(n): all bits set in lanes t < n) and keep their values (blend). */
static inline VECI F(lane_lt)(size_t n)
{
    VECI m;
    for (size_t t = 0; t < V; t++) m[t] = (t < n) ? -1 : 0;
    return m;
}
static inline VEC F(blend)(VECI keep_old, VEC old, VEC nw)
{
    return (VEC)(((VECI)old & keep_old) | ((VECI)nw & ~keep_old));
}

/* MR x MC block of gemm_nt: out[r*ldo + c] = sum_{k<K} A[r*lda + k] B[c*ldb + k] + bias[c]. */
#define CBP_DOT_BLOCK(MR, MC)                                                                \
    static inline __attribute__((always_inline)) void F(dot_##MR##x##MC)(                   \
        REAL *out, size_t ldo, const REAL *A, size_t lda, const REAL *B, size_t ldb, size_t K, \
        const REAL *bias, cbp_prefetch *pf)                                                  \
    {                                                                                        \
        VEC acc[MR][MC];                                                                     \
        for (int r = 0; r < MR; r++)                                                         \
            for (int c = 0; c < MC; c++) acc[r][c] = (VEC){0};                               \
        size_t k = 0;                                                                        \
        for (; k + V <= K; k += V) {                                                         \
            if ((k & (8 * V - 1)) == 0) cbp_prefetch_step(pf, MR * MC * 8 * V);            \
            VEC bv[MC];                                                                      \
            for (int c = 0; c < MC; c++) bv[c] = F(vload)(B + c * ldb + k);                  \
            for (int r = 0; r < MR; r++) {                                                   \
                VEC av = F(vload)(A + r * lda + k);                                          \
                for (int c = 0; c < MC; c++) acc[r][c] += av * bv[c];                        \
            }                                                                                \
        }                                                                                    \
        if (k < K && K >= V) { /* the last K - k columns: window [K - V, K), both operands */ \
            const VECI fresh = ~F(lane_lt)(k - (K - V));    /* zeroed below column k */      \
            VEC bv[MC];                                                                      \
            for (int c = 0; c < MC; c++) bv[c] = (VEC)((VECI)F(vload)(B + c * ldb + K - V) & fresh); \
            for (int r = 0; r < MR; r++) {                                                   \
                const VEC av = (VEC)((VECI)F(vload)(A + r * lda + K - V) & fresh);           \
                for (int c = 0; c < MC; c++) acc[r][c] += av * bv[c];                        \
            }                                                                                \
            k = K;                                                                           \
        }                                                                                    \
        for (int r = 0; r < MR; r++)                                                         \
            for (int c = 0; c < MC; c++) {                                                   \
                REAL s = F(hsum)(acc[r][c]);                                                 \
                for (size_t kk = k; kk < K; kk++) s += A[r * lda + kk] * B[c * ldb + kk];    \
                out[r * ldo + c] = s + bias[c];                                              \
            }                                                                                \
    }
CBP_DOT_BLOCK(1, 1) CBP_DOT_BLOCK(1, 2) CBP_DOT_BLOCK(1, 3) CBP_DOT_BLOCK(1, 4)
CBP_DOT_BLOCK(2, 1) CBP_DOT_BLOCK(2, 2) CBP_DOT_BLOCK(2, 3) CBP_DOT_BLOCK(2, 4)
CBP_DOT_BLOCK(3, 1) CBP_DOT_BLOCK(3, 2) CBP_DOT_BLOCK(3, 3) CBP_DOT_BLOCK(3, 4)
CBP_DOT_BLOCK(4, 1) CBP_DOT_BLOCK(4, 2) CBP_DOT_BLOCK(4, 3) CBP_DOT_BLOCK(4, 4)
#if NT_MR > 4 || NT_MC > 4
CBP_DOT_BLOCK(1, 5) CBP_DOT_BLOCK(2, 5) CBP_DOT_BLOCK(3, 5) CBP_DOT_BLOCK(4, 5)
CBP_DOT_BLOCK(5, 1) CBP_DOT_BLOCK(5, 2) CBP_DOT_BLOCK(5, 3) CBP_DOT_BLOCK(5, 4) CBP_DOT_BLOCK(5, 5)
#endif
#undef CBP_DOT_BLOCK

/* One mr x mc block (1 <= mr <= NT_MR, 1 <= mc <= NT_MC) of gemm_nt. */
static inline void F(dot_block)(size_t mr, size_t mc, REAL *out, size_t ldo, const REAL *A,
                                size_t lda, const REAL *B, size_t ldb, size_t K, const REAL *bias,
                                cbp_prefetch *pf)
{
#define CBP_CASE(R, C) case 8 * (R - 1) + (C - 1): F(dot_##R##x##C)(out, ldo, A, lda, B, ldb, K, bias, pf); break;
    switch (8 * (mr - 1) + (mc - 1)) {
        CBP_CASE(1, 1) CBP_CASE(1, 2) CBP_CASE(1, 3) CBP_CASE(1, 4)
        CBP_CASE(2, 1) CBP_CASE(2, 2) CBP_CASE(2, 3) CBP_CASE(2, 4)
        CBP_CASE(3, 1) CBP_CASE(3, 2) CBP_CASE(3, 3) CBP_CASE(3, 4)
        CBP_CASE(4, 1) CBP_CASE(4, 2) CBP_CASE(4, 3) CBP_CASE(4, 4)
#if NT_MR > 4 || NT_MC > 4
        CBP_CASE(1, 5) CBP_CASE(2, 5) CBP_CASE(3, 5) CBP_CASE(4, 5)
        CBP_CASE(5, 1) CBP_CASE(5, 2) CBP_CASE(5, 3) CBP_CASE(5, 4) CBP_CASE(5, 5)
#endif
    }
#undef CBP_CASE
}

/* out[M, N] = A[M, K] . B[N, K]^T + bias[N] (out overwritten), rows ldo, lda, ldb apart, in blocks of
 * NT_MR x NT_MC (5 x 5: 25 accumulators fit AVX-512's 32 registers; 3 x 3 for 16-register
 * instruction sets) with the edges in smaller blocks. */
static void F(gemm_nt)(REAL *out, size_t ldo, const REAL *A, size_t lda, const REAL *B,
                       size_t ldb, size_t M, size_t N, size_t K, const REAL *bias, cbp_prefetch *pf)
{
    /* j outer: the NT_MC rows of B (weights) stay in L1 while all rows of A pass by, so
     * a large weight matrix is read from memory once per call, not once per row block. */
    for (size_t j = 0; j < N; j += NT_MC) {
        const size_t mc = (N - j < NT_MC) ? N - j : NT_MC;
        for (size_t i = 0; i < M; i += NT_MR) {
            const size_t mr = (M - i < NT_MR) ? M - i : NT_MR;
            F(dot_block)(mr, mc, out + i * ldo + j, ldo, A + i * lda, lda, B + j * ldb, ldb, K,
                         bias + j, pf);
        }
    }
}

/* MR rows x NV vectors of gemm_nn: C[r*ldc + c] (op)= sum_{t<T} A(r, t) B[t*ldb + c]. */
#define CBP_AXPY_BLOCK(MR, NV)                                                               \
    static inline __attribute__((always_inline)) void F(axpy_##MR##x##NV)(                 \
        REAL *C, size_t ldc, const REAL *A, size_t ars, size_t ats, const REAL *B,           \
        size_t ldb, size_t T, int op, const HYPER *h, REAL *vel)                             \
    {                                                                                        \
        /* (copied: stores through C could alias *h as far as the compiler knows) */         \
        const REAL eta = h ? h->eta : 0, keep = h ? h->keep : 1;                             \
        const REAL decay = h ? h->decay : 0, mu = h ? h->mu : 0;                             \
        VEC acc[MR][NV];                                                                     \
        for (int r = 0; r < MR; r++)                                                         \
            for (int c = 0; c < NV; c++) acc[r][c] = (VEC){0};                               \
        for (size_t t = 0; t < T; t++) {                                                     \
            VEC bv[NV];                                                                      \
            for (int c = 0; c < NV; c++) bv[c] = F(vload)(B + t * ldb + c * V);              \
            for (int r = 0; r < MR; r++) {                                                   \
                const REAL a = A[r * ars + t * ats];                                         \
                for (int c = 0; c < NV; c++) acc[r][c] += a * bv[c];                         \
            }                                                                                \
        }                                                                                    \
        for (int r = 0; r < MR; r++)                                                         \
            for (int c = 0; c < NV; c++) {                                                   \
                REAL *p = C + r * ldc + c * V;                                               \
                if (op == CBP_SET) F(vstore)(p, acc[r][c]);                                  \
                else if (op == CBP_ADD) F(vstore)(p, F(vload)(p) + acc[r][c]);               \
                else if (op == CBP_SUB_SCALED) F(vstore)(p, F(vload)(p) - eta * acc[r][c]);  \
                else if (op == CBP_DECAY_SUB)                                                \
                    F(vstore)(p, keep * F(vload)(p) - eta * acc[r][c]);                      \
                else { /* CBP_MOMENTUM: v = mu v - eta P - decay w, w += v */                \
                    REAL *q = vel + r * ldc + c * V;                                         \
                    const VEC w = F(vload)(p);                                               \
                    const VEC v = mu * F(vload)(q) - eta * acc[r][c] - decay * w;            \
                    F(vstore)(q, v);                                                         \
                    F(vstore)(p, w + v);                                                     \
                }                                                                            \
            }                                                                                \
    }
CBP_AXPY_BLOCK(1, 1) CBP_AXPY_BLOCK(2, 1) CBP_AXPY_BLOCK(3, 1) CBP_AXPY_BLOCK(4, 1)
CBP_AXPY_BLOCK(1, 4) CBP_AXPY_BLOCK(2, 4) CBP_AXPY_BLOCK(3, 4) CBP_AXPY_BLOCK(4, 4)
#if NN_MR > 4
CBP_AXPY_BLOCK(5, 1) CBP_AXPY_BLOCK(5, 4)
#endif
#undef CBP_AXPY_BLOCK

/* Columns [c0, N) (N - c0 < V <= N) of rows [0, MR): one vector window [N - V, N) whose
 * lanes below c0 keep their values (the same sums, lane by lane, as a full vector). */
#define CBP_AXPY_WIN(MR)                                                                     \
    static inline __attribute__((always_inline)) void F(axpy_win_##MR)(                     \
        REAL *C, size_t ldc, const REAL *A, size_t ars, size_t ats, const REAL *B,           \
        size_t ldb, size_t T, size_t c0, size_t N, int op, const HYPER *h, REAL *vel)        \
    {                                                                                        \
        const REAL eta = h ? h->eta : 0, keep = h ? h->keep : 1;                             \
        const REAL decay = h ? h->decay : 0, mu = h ? h->mu : 0;                             \
        const size_t w0 = N - V;                                                             \
        const VECI old = F(lane_lt)(c0 - w0);                                                \
        VEC acc[MR];                                                                         \
        for (int r = 0; r < MR; r++) acc[r] = (VEC){0};                                      \
        for (size_t t = 0; t < T; t++) {                                                     \
            const VEC bv = F(vload)(B + t * ldb + w0);                                       \
            for (int r = 0; r < MR; r++) acc[r] += A[r * ars + t * ats] * bv;                \
        }                                                                                    \
        for (int r = 0; r < MR; r++) {                                                       \
            REAL *p = C + r * ldc + w0;                                                      \
            const VEC cur = F(vload)(p);                                                     \
            VEC nw;                                                                          \
            if (op == CBP_SET) nw = acc[r];                                                  \
            else if (op == CBP_ADD) nw = cur + acc[r];                                       \
            else if (op == CBP_SUB_SCALED) nw = cur - eta * acc[r];                          \
            else if (op == CBP_DECAY_SUB) nw = keep * cur - eta * acc[r];                    \
            else { /* CBP_MOMENTUM */                                                        \
                REAL *q = vel + r * ldc + w0;                                                \
                const VEC vq = F(vload)(q);                                                  \
                const VEC v = mu * vq - eta * acc[r] - decay * cur;                          \
                F(vstore)(q, F(blend)(old, vq, v));                                          \
                nw = cur + v;                                                                \
            }                                                                                \
            F(vstore)(p, F(blend)(old, cur, nw));                                            \
        }                                                                                    \
    }
CBP_AXPY_WIN(1) CBP_AXPY_WIN(2) CBP_AXPY_WIN(3) CBP_AXPY_WIN(4)
#if NN_MR > 4
CBP_AXPY_WIN(5)
#endif
#undef CBP_AXPY_WIN

/* Columns [c0, N) of rows [0, R) when N < V (a layer, or a thread's share of one, narrower
 * than a vector): through zero-padded vectors, so that each column gets exactly the vector
 * arithmetic (FMA where the variant has it) of the wider paths, whatever the split. */
static inline void F(axpy_narrow)(REAL *C, size_t ldc, const REAL *A, size_t ars, size_t ats,
                                  const REAL *B, size_t ldb, size_t T, size_t R, size_t c0,
                                  size_t N, int op, const HYPER *h, REAL *vel)
{
    const size_t w = N - c0, bytes = w * sizeof(REAL);
    const REAL eta = h ? h->eta : 0, keep = h ? h->keep : 1;
    const REAL decay = h ? h->decay : 0, mu = h ? h->mu : 0;
    for (size_t r = 0; r < R; r++) {
        VEC acc = {0};
        for (size_t t = 0; t < T; t++) {
            REAL buf[V] = {0};
            memcpy(buf, B + t * ldb + c0, bytes);
            acc += A[r * ars + t * ats] * F(vload)(buf);
        }
        REAL pb[V] = {0};
        REAL *p = C + r * ldc + c0;
        memcpy(pb, p, bytes);
        const VEC cur = F(vload)(pb);
        VEC nw;
        if (op == CBP_SET) nw = acc;
        else if (op == CBP_ADD) nw = cur + acc;
        else if (op == CBP_SUB_SCALED) nw = cur - eta * acc;
        else if (op == CBP_DECAY_SUB) nw = keep * cur - eta * acc;
        else { /* CBP_MOMENTUM */
            REAL qb[V] = {0};
            REAL *q = vel + r * ldc + c0;
            memcpy(qb, q, bytes);
            const VEC v = mu * F(vload)(qb) - eta * acc - decay * cur;
            F(vstore)(qb, v);
            memcpy(q, qb, bytes);
            nw = cur + v;
        }
        F(vstore)(pb, nw);
        memcpy(p, pb, bytes);
    }
}

/* Rows [0, mr) (mr <= NN_MR) of gemm_nn: 4-vector column blocks, single vectors, then the
 * last columns through a window (or zero-padded vectors when the range is narrower than one). */
#define CBP_NN_ROWS(MR)                                                                      \
    static inline __attribute__((always_inline)) void F(nn_rows_##MR)(                      \
                                REAL *C, size_t ldc, const REAL *A, size_t ars, size_t ats,  \
                                const REAL *B, size_t ldb, size_t N, size_t T, int op,       \
                                const HYPER *h, REAL *vel, cbp_prefetch *pf)                 \
    {                                                                                        \
        size_t c = 0;                                                                        \
        for (; c + 4 * V <= N; c += 4 * V, cbp_prefetch_step(pf, MR * 4 * V * T)) F(axpy_##MR##x4)(C + c, ldc, A, ars, ats, B + c, ldb, T, op, h, vel ? vel + c : NULL); \
        for (; c + V <= N; c += V) F(axpy_##MR##x1)(C + c, ldc, A, ars, ats, B + c, ldb, T, op, h, vel ? vel + c : NULL); \
        if (c < N && N >= V) F(axpy_win_##MR)(C, ldc, A, ars, ats, B, ldb, T, c, N, op, h, vel); \
        else if (c < N) F(axpy_narrow)(C, ldc, A, ars, ats, B, ldb, T, MR, c, N, op, h, vel); \
    }
CBP_NN_ROWS(1) CBP_NN_ROWS(2) CBP_NN_ROWS(3) CBP_NN_ROWS(4)
#if NN_MR > 4
CBP_NN_ROWS(5)
#endif
#undef CBP_NN_ROWS

/* C[R, N] (op)= A(R, T) . B[T, N], A(r, t) = A[r*ars + t*ats]; rows of B and C ldb and ldc
 * apart; rows in blocks of NN_MR (5 rows x 4 vectors = 20 accumulators on AVX-512, 3 x 4
 * elsewhere). */
static inline __attribute__((always_inline)) void F(gemm_nn)(REAL *C, size_t ldc, const REAL *A, size_t ars, size_t ats, const REAL *B,
                       size_t ldb, size_t R, size_t N, size_t T, int op, const HYPER *h, REAL *vel,
                       cbp_prefetch *pf)
{
    for (size_t r = 0; r < R; r += NN_MR) {
        const REAL *Ar = A + r * ars;
        REAL *Cr = C + r * ldc;
        REAL *vr = vel ? vel + r * ldc : NULL;              /* velocity, laid out as C */
        switch ((R - r < NN_MR) ? R - r : NN_MR) {
        case 1: F(nn_rows_1)(Cr, ldc, Ar, ars, ats, B, ldb, N, T, op, h, vr, pf); break;
        case 2: F(nn_rows_2)(Cr, ldc, Ar, ars, ats, B, ldb, N, T, op, h, vr, pf); break;
        case 3: F(nn_rows_3)(Cr, ldc, Ar, ars, ats, B, ldb, N, T, op, h, vr, pf); break;
#if NN_MR > 4
        case 4: F(nn_rows_4)(Cr, ldc, Ar, ars, ats, B, ldb, N, T, op, h, vr, pf); break;
        default: F(nn_rows_5)(Cr, ldc, Ar, ars, ats, B, ldb, N, T, op, h, vr, pf); break;
#else
        default: F(nn_rows_4)(Cr, ldc, Ar, ars, ats, B, ldb, N, T, op, h, vr, pf); break;
#endif
        }
    }
}

/* ---- sigma over vectors ------------------------------------------------------------------ */

/* exp(x) for x in [CBP_EXP_LO, CBP_EXP_HI] (callers clamp): x = k ln2 + r, |r| <= ln2/2,
 * exp(r) by its Taylor polynomial (degree 7 for float, 13 for double: truncation below
 * half an ulp), times 2^k assembled in the exponent bits.  About 1 ulp. */
#if CBP_IS_DOUBLE
#define CBP_EXP_HI 709.0
#define CBP_EXP_LO (-708.0)
#define CBP_MANT_BITS 52
#define CBP_BIAS 1023
#define CBP_ROUND_MAGIC 6755399441055744.0 /* 1.5 * 2^52 */
#else
#define CBP_EXP_HI 88.0f
#define CBP_EXP_LO (-87.0f)
#define CBP_MANT_BITS 23
#define CBP_BIAS 127
#define CBP_ROUND_MAGIC 12582912.0f /* 1.5 * 2^23 */
#endif

static inline VEC F(vclamp)(VEC v, REAL lo, REAL hi)
{
    const VEC vlo = (VEC){0} + lo, vhi = (VEC){0} + hi;
    VECI below = (VECI)(v < vlo), above = (VECI)(v > vhi);  /* -1 where true; NaN stays NaN */
    VECI bits = ((VECI)v & ~below) | ((VECI)vlo & below);
    bits = (bits & ~above) | ((VECI)vhi & above);
    return (VEC)bits;
}

static inline VEC F(vexp)(VEC x)
{
    const REAL log2e = (REAL)1.4426950408889634, ln2_hi = (REAL)0.693145751953125,
               ln2_lo = (REAL)1.428606820309417232e-06;
    VEC kf = x * log2e + CBP_ROUND_MAGIC;
    kf = kf - CBP_ROUND_MAGIC;                 /* round to nearest integer */
    const VEC r = (x - kf * ln2_hi) - kf * ln2_lo;
#if CBP_IS_DOUBLE
    VEC p = (VEC){0} + 1.0 / 6227020800.0;     /* 1/13! */
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
    VEC p = (VEC){0} + 1.0f / 5040.0f;
    p = p * r + 1.0f / 720.0f;
    p = p * r + 1.0f / 120.0f;
    p = p * r + 1.0f / 24.0f;
    p = p * r + 1.0f / 6.0f;
    p = p * r + 0.5f;
    p = p * r + 1.0f;
    p = p * r + 1.0f;
#endif
    const VECI k = __builtin_convertvector(kf, VECI);
    const VECI scale = (k + CBP_BIAS) << CBP_MANT_BITS;
    return p * (VEC)scale;
}

/* sigma(z) = 1 / (1 + exp(-z)).  -z is clamped to exp's range; below it sigma is exactly
 * 1, and above it (z < -709 in double, -88 in float) sigma is set to exactly 0, as libm's
 * overflowing exp gives (up to the last few subnormal values). */
static inline VEC F(vsigmoid)(VEC z)
{
    const VEC nz = -z;
    const VECI beyond = (VECI)(nz > ((VEC){0} + CBP_EXP_HI));
    const VEC s = (REAL)1 / ((REAL)1 + F(vexp)(F(vclamp)(nz, CBP_EXP_LO, CBP_EXP_HI)));
    return (VEC)((VECI)s & ~beyond);
}
#undef CBP_EXP_HI
#undef CBP_EXP_LO
#undef CBP_MANT_BITS
#undef CBP_BIAS
#undef CBP_ROUND_MAGIC

/* ---- the layer kernels, on a range of columns or rows so that threads can share a layer -- */

/* a = f(z) for an elementwise activation (the act switch is resolved at compile time in
 * the always-inlined callers).  tanh z = 2 sigma(2z) - 1: about 1 ulp of 1 in absolute
 * terms (so relatively coarser for |z| << 1, where a ~ z), saturating to exactly -1 / 1. */
static inline __attribute__((always_inline)) VEC F(vactivate)(VEC z, int act)
{
    switch (act) {
    case CBP_ACT_SIGMOID: return F(vsigmoid)(z);
    case CBP_ACT_TANH: return (REAL)2 * F(vsigmoid)(z + z) - (REAL)1;
    case CBP_ACT_RELU: return (VEC)((VECI)z & ~(VECI)(z < (REAL)0));  /* NaN stays NaN */
    default: return z;                                                /* identity */
    }
}

/* f'(z) from a = f(z) (see CBP_ACT_*). */
static inline __attribute__((always_inline)) VEC F(vactivate_prime)(VEC a, int act)
{
    switch (act) {
    case CBP_ACT_SIGMOID: return a * ((REAL)1 - a);
    case CBP_ACT_TANH: return (REAL)1 - a * a;
    case CBP_ACT_RELU: return (VEC)((VECI)((VEC){0} + (REAL)1) & (VECI)(a > (REAL)0));
    default: return (VEC){0} + (REAL)1;
    }
}

/* The columns [j0, j1) of m rows n apart as passes of `width` elements: whole rows (j0 = 0,
 * j1 = n) are one flat pass over the [m, n] block; otherwise one pass per row. */
static inline void F(passes)(size_t m, size_t n, size_t j0, size_t j1, size_t *rows, size_t *width)
{
    *rows = (j0 == 0 && j1 == n) ? 1 : m;
    *width = (j0 == 0 && j1 == n) ? m * n : j1 - j0;
}

/* a[:, j0..j1) = f(z) there, z: [m, n_out] (bias already added).  Each pass ends with a
 * vector window at its edge (lanes recomputed from the same z give the same a) or, for a
 * pass narrower than a vector, a zero-padded buffer. */
static inline __attribute__((always_inline)) void F(activate_range)(const REAL *z, REAL *a,
                                                                    size_t m, size_t n_out,
                                                                    size_t j0, size_t j1, int act)
{
    size_t rows, width;
    F(passes)(m, n_out, j0, j1, &rows, &width);
    for (size_t i = 0; i < rows; i++) {
        const REAL *zi = z + i * n_out + j0;
        REAL *ai = a + i * n_out + j0;
        size_t j = 0;
        for (; j + V <= width; j += V) F(vstore)(ai + j, F(vactivate)(F(vload)(zi + j), act));
        if (j < width && width >= V) {
            F(vstore)(ai + width - V, F(vactivate)(F(vload)(zi + width - V), act));
        } else if (j < width) {
            REAL buf[V] = {0};
            memcpy(buf, zi + j, (width - j) * sizeof(REAL));
            const VEC sv = F(vactivate)(F(vload)(buf), act);
            for (size_t t = 0; j + t < width; t++) ai[j + t] = sv[t];
        }
    }
}

/* eq. (25) for output columns [j0, j1): z[:, j] = a_prev . w[j, :] + b[j], a = f(z)
 * (softmax: z only).  z, a: [m, n_out] (columns j0..j1 overwritten); a_prev: [m, n_in];
 * w: [n_out, n_in]. */
static void F(dense_forward)(REAL *z, REAL *a, const REAL *a_prev, const REAL *w, const REAL *b,
                             size_t m, size_t n_out, size_t n_in, size_t j0, size_t j1, int act,
                             cbp_prefetch *pf)
{
    F(gemm_nt)(z + j0, n_out, a_prev, n_in, w + j0 * n_in, n_in, m, j1 - j0, n_in, b + j0, pf);
    switch (act) {
    case CBP_ACT_SIGMOID: F(activate_range)(z, a, m, n_out, j0, j1, CBP_ACT_SIGMOID); break;
    case CBP_ACT_TANH: F(activate_range)(z, a, m, n_out, j0, j1, CBP_ACT_TANH); break;
    case CBP_ACT_RELU: F(activate_range)(z, a, m, n_out, j0, j1, CBP_ACT_RELU); break;
    case CBP_ACT_IDENTITY: F(activate_range)(z, a, m, n_out, j0, j1, CBP_ACT_IDENTITY); break;
    default: break;                                   /* softmax: the caller's softmax_rows */
    }
}

/* delta_prev[:, k0..k1) *= f'(a_prev) there, in passes as activate_range; a pass's last
 * columns go through a window at its edge whose lanes already done keep their values. */
static inline __attribute__((always_inline)) void F(times_prime)(REAL *dp, const REAL *ap,
                                                                 size_t m, size_t n_in,
                                                                 size_t k0, size_t k1, int act)
{
    size_t rows, width;
    F(passes)(m, n_in, k0, k1, &rows, &width);
    const size_t full = width / V * V;                  /* columns in whole vectors */
    const VECI old = (full < width && width >= V) ? F(lane_lt)(full - (width - V)) : (VECI){0};
    for (size_t i = 0; i < rows; i++) {
        REAL *di = dp + i * n_in + k0;
        const REAL *ai = ap + i * n_in + k0;
        for (size_t k = 0; k < full; k += V)
            F(vstore)(di + k, F(vload)(di + k) * F(vactivate_prime)(F(vload)(ai + k), act));
        if (full < width && width >= V) {
            const size_t w0 = width - V;
            const VEC d = F(vload)(di + w0);
            F(vstore)(di + w0, F(blend)(old, d, d * F(vactivate_prime)(F(vload)(ai + w0), act)));
        } else if (full < width) {
            REAL buf[V] = {0};
            memcpy(buf, ai + full, (width - full) * sizeof(REAL));
            const VEC pv = F(vactivate_prime)(F(vload)(buf), act);
            for (size_t t = 0; full + t < width; t++) di[full + t] *= pv[t];
        }
    }
}

/* BP2 for columns [k0, k1) of delta^{l-1}:
 *   delta_prev[:, k] = (delta . w[:, k]) (.) f'(z^{l-1}[:, k])  (f' from a_prev, act).
 * delta_prev, a_prev: [m, n_in]; delta: [m, n_out]; w: [n_out, n_in]. */
static void F(dense_backward_delta)(REAL *delta_prev, const REAL *delta, const REAL *w,
                                    const REAL *a_prev, size_t m, size_t n_out, size_t n_in,
                                    size_t k0, size_t k1, int act, cbp_prefetch *pf)
{
    F(gemm_nn)(delta_prev + k0, n_in, delta, n_out, 1, w + k0, n_in, m, k1 - k0, n_out, CBP_SET, NULL, NULL, pf);
    switch (act) {
    case CBP_ACT_SIGMOID: F(times_prime)(delta_prev, a_prev, m, n_in, k0, k1, CBP_ACT_SIGMOID); break;
    case CBP_ACT_TANH: F(times_prime)(delta_prev, a_prev, m, n_in, k0, k1, CBP_ACT_TANH); break;
    case CBP_ACT_RELU: F(times_prime)(delta_prev, a_prev, m, n_in, k0, k1, CBP_ACT_RELU); break;
    default: break;                                   /* identity: f' = 1 */
    }
}

/* BP3/BP4 summed over the batch for rows [j0, j1) of the layer, combined by op:
 *   CBP_ADD:           nabla_w[j] += delta[:, j]^T . a_prev,   nabla_b[j] += sum_i delta[i, j]
 *   CBP_SUB_SCALED:    w[j] -= eta delta[:, j]^T . a_prev,     b[j] -= eta sum_i delta[i, j]
 *   CBP_DECAY_SUB:     w[j] = keep w[j] - eta delta[:, j]^T . a_prev, b[j] as above
 *   CBP_MOMENTUM:      v = mu v - eta (.) - decay w, w += v  (biases: no decay term)
 * (the fused SGD steps: the outputs are w and b, no gradient is stored; h holds eta,
 * keep, decay, mu; vel_w, vel_b the velocity of w and b for CBP_MOMENTUM, else NULL).
 * out_w: [n_out, n_in]; out_b: [n_out]; delta: [m, n_out]; a_prev: [m, n_in]. */
static void F(dense_backward_params)(REAL *out_w, REAL *out_b, const REAL *delta,
                                     const REAL *a_prev, size_t m, size_t n_out, size_t n_in,
                                     size_t j0, size_t j1, int op, const HYPER *h, REAL *vel_w,
                                     REAL *vel_b, cbp_prefetch *pf)
{
    /* one copy of the product per op, so that each epilogue is compiled for its op */
#define CBP_BP4(OP) F(gemm_nn)(out_w + j0 * n_in, n_in, delta + j0, 1, n_out, a_prev, n_in, j1 - j0, \
                               n_in, m, OP, h, vel_w ? vel_w + j0 * n_in : NULL, pf)
    switch (op) {
    case CBP_ADD: CBP_BP4(CBP_ADD); break;
    case CBP_SUB_SCALED: CBP_BP4(CBP_SUB_SCALED); break;
    case CBP_DECAY_SUB: CBP_BP4(CBP_DECAY_SUB); break;
    default: CBP_BP4(CBP_MOMENTUM); break;
    }
#undef CBP_BP4
    for (size_t j = j0; j < j1; j++) {
        REAL s = 0;
        for (size_t i = 0; i < m; i++) s += delta[i * n_out + j];
        if (op == CBP_ADD) out_b[j] += s;
        else if (op == CBP_MOMENTUM) {
            vel_b[j] = h->mu * vel_b[j] - h->eta * s;
            out_b[j] += vel_b[j];
        } else out_b[j] -= h->eta * s;
    }
}

/* The machine's multiply-add ceiling for this vector width: 12 independent chains of
 * acc = acc * x + y in named variables (registers; 12 covers FMA latency x throughput),
 * iters rounds; returns a value that depends on every chain so nothing is optimised away.
 * Flops: 24 * lanes * iters. */
static REAL F(fma_loop)(size_t iters)
{
    const VEC x = (VEC){0} + (REAL)0.999999, y = (VEC){0} + (REAL)1e-7;
    VEC c0 = x, c1 = c0 + y, c2 = c1 + y, c3 = c2 + y, c4 = c3 + y, c5 = c4 + y;
    VEC c6 = c5 + y, c7 = c6 + y, c8 = c7 + y, c9 = c8 + y, c10 = c9 + y, c11 = c10 + y;
    for (size_t it = 0; it < iters; it++) {
        c0 = c0 * x + y; c1 = c1 * x + y; c2 = c2 * x + y; c3 = c3 * x + y;
        c4 = c4 * x + y; c5 = c5 * x + y; c6 = c6 * x + y; c7 = c7 * x + y;
        c8 = c8 * x + y; c9 = c9 * x + y; c10 = c10 * x + y; c11 = c11 * x + y;
    }
    return F(hsum)(((c0 + c1) + (c2 + c3)) + ((c4 + c5) + (c6 + c7)) + ((c8 + c9) + (c10 + c11)));
}

#undef VECI
#undef HYPER
#undef VEC
#undef V
#undef F
#undef ISA
#undef VB
#undef NT_MR
#undef NT_MC
#undef NN_MR
