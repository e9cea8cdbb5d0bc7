/* ThreadSanitizer harness for the threaded sgd epochs (tools/tsan.sh builds it with the C
 * kernels and -fsanitize=thread): every way an epoch runs on more than one thread, in both
 * types, with each update rule (plain, L2 decay, momentum):
 *   - the hidden split (L = 2): 2 and 3 threads;
 *   - the per-phase team (L = 3, and L = 2 when the split does not apply): 2 and 3 threads;
 *   - one training thread with the feeder;
 *   - the fallbacks: a partner that does not start in time (start_wait 1 ns) and slow
 *     barriers (slow_wait 1 ns: thread 0 finishes alone).
 * Every run's parameters must equal the one-thread run's bitwise, and each way must have
 * run as intended (every thread, the split exactly where cbp_split_len says it applies, the
 * feeder gathering, a fallback to one thread).  Exit status 0 when all hold
 * (ThreadSanitizer itself makes the exit status 66 when it reports a race). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cbackprop.h"

#define N_ROWS 403
#define MBS 9

#define DEFINE_CASE(REAL, SUF)                                                                  \
    static REAL *zalloc_##SUF(size_t n)                                                         \
    {                                                                                           \
        const size_t bytes = ((n * sizeof(REAL) + 63) / 64 + 1) * 64;                           \
        REAL *p = aligned_alloc(64, bytes);                                                     \
        if (!p) { perror("aligned_alloc"); exit(2); }                                           \
        memset(p, 0, bytes);                                                                    \
        return p;                                                                               \
    }                                                                                           \
    /* Train 3 epochs (plain, L2 decay, momentum) of a fresh network; params into out. */     \
    static int run_##SUF(const size_t *sizes, size_t L, int threads, int feeder, double start_wait, \
                         double slow_wait, REAL *out, size_t np_, int *split_seen, char *how,   \
                         int *least, int *fed, size_t *split_len)                               \
    {                                                                                           \
        static const int act[4] = {0, 0, 0, 0};                                                 \
        cbp_net_##SUF net;                                                                      \
        memset(&net, 0, sizeof net);                                                            \
        net.n_layers = L;                                                                       \
        net.sizes = sizes;                                                                      \
        net.act = act;                                                                          \
        net.isa = cbp_isa_best();                                                               \
        net.params = zalloc_##SUF(np_);                                                         \
        net.grads = zalloc_##SUF(np_);                                                          \
        net.velocity = zalloc_##SUF(np_);                                                       \
        srand(7);                                                                               \
        for (size_t i = 0; i < np_; i++) net.params[i] = (REAL)((double)rand() / RAND_MAX - 0.5); \
        size_t sum_out = 0, sum_all = sizes[0];                                                 \
        for (size_t l = 1; l <= L; l++) { sum_out += sizes[l]; sum_all += sizes[l]; }           \
        net.z = zalloc_##SUF(MBS * sum_out);                                                    \
        net.delta = zalloc_##SUF(MBS * sum_out);                                                \
        net.a = zalloc_##SUF(MBS * sum_all);                                                    \
        net.y = zalloc_##SUF(MBS * sizes[L]);                                                   \
        net.m_cap = MBS;                                                                        \
        net.n_threads = threads;                                                                \
        net.start_wait = start_wait;                                                            \
        net.slow_wait = slow_wait;                                                              \
        const size_t len = cbp_split_len_##SUF(&net, MBS, threads);                             \
        *split_len = len;                                                                       \
        if (len) {                                                                              \
            net.split = zalloc_##SUF(len);                                                      \
            net.split_rows = MBS;                                                               \
            net.split_threads = threads;                                                        \
        }                                                                                       \
        if (feeder) {                                                                           \
            net.feed = zalloc_##SUF(MBS * (sizes[0] + sizes[L]));                               \
            net.feed_rows = MBS;                                                                \
            net.feeder = 1;                                                                     \
        }                                                                                       \
        REAL *x = zalloc_##SUF(N_ROWS * sizes[0]), *y = zalloc_##SUF(N_ROWS * sizes[L]);        \
        for (size_t i = 0; i < N_ROWS * sizes[0]; i++) x[i] = (REAL)((double)rand() / RAND_MAX); \
        for (size_t i = 0; i < N_ROWS * sizes[L]; i++) y[i] = (REAL)((double)rand() / RAND_MAX); \
        long long perm[N_ROWS];                                                                 \
        for (size_t i = 0; i < N_ROWS; i++) perm[i] = (long long)((i * 7919) % N_ROWS);         \
        const cbp_hyper_##SUF hs[3] = {{0.5, 1, 0, 0}, {0.5, (REAL)0.999, (REAL)0.001, 0},      \
                                       {0.5, 1, (REAL)0.001, (REAL)0.6}};                       \
        int most = 0;                                                                           \
        *least = 1 << 20;                                                                       \
        *fed = 1;                                                                               \
        how[0] = 0;                                                                             \
        for (int e = 0; e < 3; e++) {                                                           \
            cbp_epoch_stats st;                                                                 \
            const int ran = cbp_net_sgd_epoch_##SUF(&net, x, y, perm, N_ROWS, MBS, hs[e], &st); \
            if (ran > most) most = ran;                                                         \
            if (ran < *least) *least = ran;                                                     \
            *fed &= st.fed > 0;                                                                 \
            *split_seen |= st.split;                                                            \
            sprintf(how + strlen(how), "%s%d%s", e ? "," : "", ran,                             \
                    st.fed ? (st.stopped ? "+fed(stopped)" : "+fed") : "");                     \
        }                                                                                       \
        memcpy(out, net.params, np_ * sizeof(REAL));                                            \
        free(net.params); free(net.grads); free(net.velocity); free(net.z); free(net.delta);    \
        free(net.a); free(net.y); free(net.split); free(net.feed); free(x); free(y);            \
        return most;                                                                            \
    }                                                                                           \
    static int check_##SUF(const char *type)                                                    \
    {                                                                                           \
        static const size_t shapes[3][4] = {{120, 45, 7, 0}, {120, 12, 7, 0}, {60, 40, 30, 5}}; \
        static const size_t depth[3] = {2, 2, 3};                                               \
        int bad = 0;                                                                            \
        for (int s = 0; s < 3; s++) {                                                           \
            const size_t *sizes = shapes[s], L = depth[s];                                      \
            size_t np_ = 0;                                                                     \
            for (size_t l = 1; l <= L; l++) np_ += sizes[l] * (sizes[l - 1] + 1);               \
            REAL *want = zalloc_##SUF(np_), *got = zalloc_##SUF(np_);                           \
            int split = 0;                                                                      \
            char how[96];                                                                       \
            int least, fed;                                                                     \
            size_t len;                                                                         \
            run_##SUF(sizes, L, 1, 0, 1.0, 1.0, want, np_, &split, how, &least, &fed, &len);    \
            const struct { int threads, feeder; double start_wait, slow_wait; const char *what; } ways[] = { \
                {2, 0, 1.0, 1.0, "2 threads"}, {3, 0, 1.0, 1.0, "3 threads"},                   \
                {1, 1, 1.0, 1.0, "feeder"}, {2, 0, 1e-9, 1.0, "late start"},                    \
                {2, 0, 1.0, 1e-9, "slow barriers"}};                                            \
            for (size_t w = 0; w < sizeof ways / sizeof ways[0]; w++) {                         \
                split = 0;                                                                      \
                const int ran = run_##SUF(sizes, L, ways[w].threads, ways[w].feeder,            \
                                          ways[w].start_wait, ways[w].slow_wait, got, np_, &split, how, \
                                          &least, &fed, &len);                                  \
                const int same = memcmp(want, got, np_ * sizeof(REAL)) == 0;                    \
                printf("%s [%zu, %zu, %zu%s]: %-13s epochs finished on %s thread(s)%s: %s\n",   \
                       type, sizes[0], sizes[1], sizes[2], L == 3 ? ", 5" : "", ways[w].what, how, \
                       split ? ", hidden split" : "", same ? "bitwise the one-thread result" : "DIFFERS"); \
                bad |= !same;                                                                   \
                /* ran as intended? (a late start may or may not happen: not checked) */        \
                const int plain = ways[w].start_wait == 1.0 && ways[w].slow_wait == 1.0;        \
                const char *wrong = NULL;                                                       \
                if (plain && ways[w].feeder && (ran != 1 || !fed)) wrong = "the feeder did not gather"; \
                else if (plain && !ways[w].feeder && least != ways[w].threads)                  \
                    wrong = "an epoch did not finish on all its threads";                       \
                else if (plain && !ways[w].feeder && split != (len > 0))                        \
                    wrong = "the hidden split ran where it does not apply, or not where it does"; \
                else if (ways[w].slow_wait < 1.0 && least != 1)                                 \
                    wrong = "slow barriers sent no epoch back to one thread";                   \
                if (wrong) printf("  FAIL: %s\n", wrong);                                      \
                bad |= wrong != NULL;                                                           \
            }                                                                                   \
            free(want); free(got);                                                              \
        }                                                                                       \
        return bad;                                                                             \
    }

DEFINE_CASE(float, s)
DEFINE_CASE(double, d)

int main(void)
{
    const int bad = check_s("float32") | check_d("float64");
    puts(bad ? "FAIL: a threaded epoch differs from the one-thread epoch" : "ok");
    return bad;
}
