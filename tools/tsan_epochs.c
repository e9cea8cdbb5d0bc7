/* ThreadSanitizer harness for the threaded sgd epochs (tools/tsan.sh builds it with the C
 * engine and -fsanitize=thread): epochs on 2, 3 and 5 threads (more than this machine's
 * cores), in both element types, with each update rule (plain, L2 decay, momentum), on a
 * network of two layers and one of three with a softmax output, with target rows and with
 * integer labels, each way of running an epoch (cbp_net.plan: automatic, the feeder, the hidden
 * split, phases of tasks); and an epoch on 2 threads stopped by its poll, in each way.
 * Every run's parameters must equal the one-thread run's bitwise (the stopped one: those of
 * a one-thread epoch over the mini-batches it finished).  Exit status 0 when all hold
 * (ThreadSanitizer itself makes the exit status 66 when it reports a race). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cbackprop.h"

#define N_ROWS 403
#define MBS 9

static void *zalloc(size_t bytes)
{
    bytes = (bytes + 63) / 64 * 64 + 64;
    void *p = aligned_alloc(64, bytes);
    if (!p) { perror("aligned_alloc"); exit(2); }
    memset(p, 0, bytes);
    return p;
}

typedef struct {
    const size_t *sizes;
    size_t L;
    const int *act;
    int cost;
} shape;

/* polls until it has answered `left` times, then asks to stop */
static int stop_after(void *arg)
{
    int *left = (int *)arg;
    return (*left)-- <= 0;
}

/* Two epochs of a fresh network (dtype, rule, threads, targets: labels or rows) from fixed
 * parameters, over N_ROWS rows and then the first n2 of them; the parameters into out.
 * stop_polls >= 0: the second epoch is stopped after that many polls; returns the
 * mini-batches the second epoch finished. */
static size_t run(const shape *s, int dtype, int rule, int threads, int plan, int labels,
                  size_t n2, int stop_polls, unsigned char *out)
{
    const size_t esz = dtype == CBP_F64 ? 8 : 4, np_ = cbp_n_params(s->sizes, s->L);
    const size_t n0 = s->sizes[0], nL = s->sizes[s->L];
    cbp_net net = {.dtype = dtype, .isa = cbp_isa_best(), .n_layers = s->L, .sizes = s->sizes,
                   .act = s->act, .cost = s->cost, .m_cap = MBS, .n_threads = threads,
                   .plan = plan};
    net.params = zalloc(np_ * esz);
    net.velocity = zalloc(np_ * esz);
    net.work = zalloc(cbp_workspace_len(&net, MBS) * esz);
    void *x = zalloc(N_ROWS * n0 * esz), *y = zalloc(N_ROWS * nL * esz);
    int64_t *lab = zalloc(N_ROWS * sizeof(int64_t)), *perm = zalloc(N_ROWS * sizeof(int64_t));
    srand(7);
    for (size_t i = 0; i < np_; i++) {
        const double v = (double)rand() / RAND_MAX - 0.5;
        if (dtype == CBP_F64) ((double *)net.params)[i] = v; else ((float *)net.params)[i] = (float)v;
    }
    for (size_t i = 0; i < N_ROWS; i++) {
        lab[i] = (int64_t)(i % nL);
        perm[i] = (int64_t)((i * 37) % N_ROWS);
        for (size_t j = 0; j < n0; j++) {
            const double v = (double)((i * 13 + j * 7) % 17) / 17.0;
            if (dtype == CBP_F64) ((double *)x)[i * n0 + j] = v; else ((float *)x)[i * n0 + j] = (float)v;
        }
        for (size_t j = 0; j < nL; j++) {
            const double v = (j == (size_t)lab[i]) ? 1.0 : 0.0;
            if (dtype == CBP_F64) ((double *)y)[i * nL + j] = v; else ((float *)y)[i * nL + j] = (float)v;
        }
    }
    const cbp_update u = {.kind = rule == 2 ? CBP_OPT_MOMENTUM : CBP_OPT_SGD, .eta = 0.3,
                          .decay = rule >= 1 ? 0.01 : 0.0, .mu = 0.5};
    cbp_epoch_data d = {.x = x, .y = labels ? NULL : y, .labels = labels ? lab : NULL,
                        .perm = perm, .n = N_ROWS, .mini_batch_size = MBS, .poll_seconds = 0};
    cbp_net_epoch(&net, &d, &u, NULL, NULL);
    d.n = n2;
    int left = stop_polls;
    const cbp_epoch_result r = cbp_net_epoch(&net, &d, &u, stop_polls >= 0 ? stop_after : NULL, &left);
    memcpy(out, net.params, np_ * esz);
    free(net.params); free(net.velocity); free(net.work); free(x); free(y); free(lab); free(perm);
    return r.batches;
}

int main(void)
{
    static const size_t s2[] = {40, 70, 7}, s3[] = {30, 25, 20, 6};
    static const int a2[] = {0, 0, 0}, a3[] = {0, 1, 2, 4};
    const shape shapes[2] = {{s2, 2, a2, CBP_COST_QUADRATIC}, {s3, 3, a3, CBP_COST_LOG_LIKELIHOOD}};
    const int tcounts[] = {2, 3, 5};
    int failures = 0, checks = 0;
    for (int i = 0; i < 3; i++) {       /* the automatic policy's probe (cbp_round_trip_ns) */
        const double ns = cbp_round_trip_ns();
        checks++;
        if (!(ns > 0 && ns <= 1e9)) {
            failures++;
            printf("ROUND TRIP: %g ns\n", ns);
        }
    }
    for (int si = 0; si < 2; si++)
        for (int dtype = CBP_F32; dtype <= CBP_F64; dtype++)
            for (int rule = 0; rule < 3; rule++)
                for (int labels = 0; labels < 2; labels++) {
                    const shape *s = &shapes[si];
                    const size_t bytes = cbp_n_params(s->sizes, s->L) * 8;
                    unsigned char *one = zalloc(bytes), *many = zalloc(bytes);
                    run(s, dtype, rule, 1, 0, labels, N_ROWS, -1, one);
                    for (int plan = 0; plan < 4; plan++) {      /* auto, feed, split, tasks */
                        const int p = plan ? plan + 1 : 0;
                        for (int k = 0; k < 3; k++) {
                            run(s, dtype, rule, tcounts[k], p, labels, N_ROWS, -1, many);
                            checks++;
                            if (memcmp(one, many, bytes)) {
                                failures++;
                                printf("DIFFERS: L=%zu dtype=%d rule=%d labels=%d threads=%d "
                                       "plan=%d\n", s->L, dtype, rule, labels, tcounts[k], p);
                            }
                        }
                        /* stopped at its 4th poll (thread 0 polls before the mini-batches
                         * whose first task it takes): at least 3 mini-batches done, and the
                         * parameters those of a one-thread epoch over them */
                        const size_t done = run(s, dtype, rule, 2, p, labels, N_ROWS, 3, many);
                        run(s, dtype, rule, 1, 0, labels,
                            done * MBS < N_ROWS ? done * MBS : N_ROWS, -1, one);
                        if (done < 3 || memcmp(one, many, bytes)) {
                            failures++;
                            printf("STOP: %zu mini-batches done (want >= 3), %s; L=%zu dtype=%d "
                                   "rule=%d labels=%d plan=%d\n", done,
                                   memcmp(one, many, bytes) ? "differs" : "same", s->L, dtype, rule,
                                   labels, p);
                        }
                        checks++;
                        run(s, dtype, rule, 1, 0, labels, N_ROWS, -1, one);
                    }
                    free(one);
                    free(many);
                }
    printf("%d checks, %d failures\n", checks, failures);
    return failures ? 1 : 0;
}
