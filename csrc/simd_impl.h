/* Register-blocked SIMD kernels for one floating type and one instruction set, written with
 * GCC/Clang vector extensions so the same source compiles to AVX-512, AVX2, SSE2 or NEON.
 * Included by kernels.c with REAL, SUF (s|d), ISA (name suffix) and VB (vector bytes)
 * defined, inside a `#pragma GCC target` region for the wide instruction sets: the build
 * itself targets baseline x86-64 and the caller picks the variant at run time.
 *
 * Two product shapes cover every matrix product of backpropagation:
 *   gemm_nt: C[r, c] = sum_k A[r, k] B[c, k]          (feedforward: z = a_prev . w^T)
 *   gemm_nn: C[r, :] (op)= sum_t A(r, t) B[t, :]       (BP2: delta . w;  BP4: delta^T . a_prev)
 * with A(r, t) = A[r * ars + t * ats], so delta or its transpose is read in place.
 * Sums run in a different order than the plain kernels (one partial sum per vector lane),
 * so results differ from them by rounding only; tests compare the two over awkward sizes. */
#define F(name) CBP_CAT(CBP_CAT(name, SUF), ISA)
#define V ((size_t)(VB / sizeof(REAL)))
#define VEC F(vec)
typedef REAL VEC __attribute__((vector_size(VB)));

/* unaligned vector load/store (memcpy compiles to one vmovups) */
static inline VEC F(vload)(const REAL *p) { VEC v; memcpy(&v, p, sizeof v); return v; }
static inline void F(vstore)(REAL *p, VEC v) { memcpy(p, &v, sizeof v); }
static inline REAL F(hsum)(VEC v)
{
    REAL s = 0;
    for (size_t t = 0; t < V; t++) s += v[t];
    return s;
}

/* MR x MC block of gemm_nt: out[r*ldo + c] = sum_{k<K} A[r*lda + k] B[c*ldb + k]. */
#define CBP_DOT_BLOCK(MR, MC)                                                                \
    static inline __attribute__((always_inline)) void F(dot_##MR##x##MC)(                   \
        REAL *out, size_t ldo, const REAL *A, size_t lda, const REAL *B, size_t ldb, size_t K) \
    {                                                                                        \
        VEC acc[MR][MC];                                                                     \
        for (int r = 0; r < MR; r++)                                                         \
            for (int c = 0; c < MC; c++) acc[r][c] = (VEC){0};                               \
        size_t k = 0;                                                                        \
        for (; k + V <= K; k += V) {                                                         \
            VEC bv[MC];                                                                      \
            for (int c = 0; c < MC; c++) bv[c] = F(vload)(B + c * ldb + k);                  \
            for (int r = 0; r < MR; r++) {                                                   \
                VEC av = F(vload)(A + r * lda + k);                                          \
                for (int c = 0; c < MC; c++) acc[r][c] += av * bv[c];                        \
            }                                                                                \
        }                                                                                    \
        for (int r = 0; r < MR; r++)                                                         \
            for (int c = 0; c < MC; c++) {                                                   \
                REAL s = F(hsum)(acc[r][c]);                                                 \
                for (size_t kk = k; kk < K; kk++) s += A[r * lda + kk] * B[c * ldb + kk];    \
                out[r * ldo + c] = s;                                                        \
            }                                                                                \
    }
CBP_DOT_BLOCK(4, 4)
CBP_DOT_BLOCK(4, 1)
CBP_DOT_BLOCK(1, 4)
CBP_DOT_BLOCK(1, 1)
#undef CBP_DOT_BLOCK

/* out[M, N] = A[M, K] . B[N, K]^T (out overwritten; rows of A and B contiguous). */
static void F(gemm_nt)(REAL *out, const REAL *A, const REAL *B, size_t M, size_t N, size_t K)
{
    size_t i = 0;
    for (; i + 4 <= M; i += 4) {
        size_t j = 0;
        for (; j + 4 <= N; j += 4) F(dot_4x4)(out + i * N + j, N, A + i * K, K, B + j * K, K, K);
        for (; j < N; j++) F(dot_4x1)(out + i * N + j, N, A + i * K, K, B + j * K, K, K);
    }
    for (; i < M; i++) {
        size_t j = 0;
        for (; j + 4 <= N; j += 4) F(dot_1x4)(out + i * N + j, N, A + i * K, K, B + j * K, K, K);
        for (; j < N; j++) F(dot_1x1)(out + i * N + j, N, A + i * K, K, B + j * K, K, K);
    }
}

/* MR rows x NV vectors of gemm_nn: C[r*ldc + c] (op)= sum_{t<T} A(r, t) B[t*ldb + c]. */
#define CBP_AXPY_BLOCK(MR, NV)                                                               \
    static inline __attribute__((always_inline)) void F(axpy_##MR##x##NV)(                 \
        REAL *C, size_t ldc, const REAL *A, size_t ars, size_t ats, const REAL *B,           \
        size_t ldb, size_t T, int op, REAL eta)                                              \
    {                                                                                        \
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
                else F(vstore)(p, F(vload)(p) - eta * acc[r][c]);                            \
            }                                                                                \
    }
CBP_AXPY_BLOCK(4, 4)
CBP_AXPY_BLOCK(4, 1)
CBP_AXPY_BLOCK(1, 4)
CBP_AXPY_BLOCK(1, 1)
#undef CBP_AXPY_BLOCK

/* Columns [c0, N) that do not fill a vector, for rows [0, R) of a row block. */
static inline void F(axpy_tail)(REAL *C, size_t ldc, const REAL *A, size_t ars, size_t ats,
                                const REAL *B, size_t ldb, size_t T, size_t R, size_t c0,
                                size_t N, int op, REAL eta)
{
    for (size_t r = 0; r < R; r++)
        for (size_t c = c0; c < N; c++) {
            REAL s = 0;
            for (size_t t = 0; t < T; t++) s += A[r * ars + t * ats] * B[t * ldb + c];
            REAL *p = C + r * ldc + c;
            if (op == CBP_SET) *p = s;
            else if (op == CBP_ADD) *p += s;
            else *p -= eta * s;
        }
}

/* C[R, N] (op)= A(R, T) . B[T, N], A(r, t) = A[r*ars + t*ats], B and C row-major. */
static void F(gemm_nn)(REAL *C, const REAL *A, size_t ars, size_t ats, const REAL *B, size_t R,
                       size_t N, size_t T, int op, REAL eta)
{
    size_t r = 0;
    for (; r + 4 <= R; r += 4) {
        const REAL *Ar = A + r * ars;
        REAL *Cr = C + r * N;
        size_t c = 0;
        for (; c + 4 * V <= N; c += 4 * V) F(axpy_4x4)(Cr + c, N, Ar, ars, ats, B + c, N, T, op, eta);
        for (; c + V <= N; c += V) F(axpy_4x1)(Cr + c, N, Ar, ars, ats, B + c, N, T, op, eta);
        F(axpy_tail)(Cr, N, Ar, ars, ats, B, N, T, 4, c, N, op, eta);
    }
    for (; r < R; r++) {
        const REAL *Ar = A + r * ars;
        REAL *Cr = C + r * N;
        size_t c = 0;
        for (; c + 4 * V <= N; c += 4 * V) F(axpy_1x4)(Cr + c, N, Ar, ars, ats, B + c, N, T, op, eta);
        for (; c + V <= N; c += V) F(axpy_1x1)(Cr + c, N, Ar, ars, ats, B + c, N, T, op, eta);
        F(axpy_tail)(Cr, N, Ar, ars, ats, B, N, T, 1, c, N, op, eta);
    }
}

/* ---- the layer kernels of cbackprop_decl.h, same formulas and shapes --------------------- */

/* eq. (25): z = a_prev . w^T + b, a = sigma(z).  z, a: [m, n_out] overwritten. */
static void F(dense_forward)(REAL *z, REAL *a, const REAL *a_prev, const REAL *w, const REAL *b,
                             size_t m, size_t n_out, size_t n_in)
{
    F(gemm_nt)(z, a_prev, w, m, n_out, n_in);
    for (size_t i = 0; i < m; i++)
        for (size_t j = 0; j < n_out; j++) {
            const REAL zij = z[i * n_out + j] + b[j];
            z[i * n_out + j] = zij;
            a[i * n_out + j] = CBP_CAT(sigmoid, SUF)(zij);
        }
}

/* BP2: delta_prev = (delta . w) (.) a_prev (1 - a_prev).  delta_prev: [m, n_in] overwritten. */
static void F(dense_backward_delta)(REAL *delta_prev, const REAL *delta, const REAL *w,
                                    const REAL *a_prev, size_t m, size_t n_out, size_t n_in)
{
    F(gemm_nn)(delta_prev, delta, n_out, 1, w, m, n_in, n_out, CBP_SET, 0);
    const size_t len = m * n_in;
    for (size_t t = 0; t < len; t++) delta_prev[t] *= a_prev[t] * ((REAL)1 - a_prev[t]);
}

/* BP3/BP4 summed over the batch, combined with (nabla_w, nabla_b) by op:
 *   CBP_ADD:        nabla_w += delta^T . a_prev,      nabla_b += sum_i delta_i   (accumulate)
 *   CBP_SUB_SCALED: w -= eta delta^T . a_prev,        b -= eta sum_i delta_i    (fused SGD step,
 *                   the two outputs are then w and b and no gradient is stored). */
static void F(dense_backward_params)(REAL *nabla_w, REAL *nabla_b, const REAL *delta,
                                     const REAL *a_prev, size_t m, size_t n_out, size_t n_in,
                                     int op, REAL eta)
{
    F(gemm_nn)(nabla_w, delta, 1, n_out, a_prev, n_out, n_in, m, op, eta);
    for (size_t j = 0; j < n_out; j++) {
        REAL s = 0;
        for (size_t i = 0; i < m; i++) s += delta[i * n_out + j];
        if (op == CBP_ADD) nabla_b[j] += s;
        else nabla_b[j] -= eta * s;
    }
}

#undef VEC
#undef V
#undef F
