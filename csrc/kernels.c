/* Instantiates every kernel for float (suffix _s) and double (suffix _d):
 *   kernels_plain.h  the plain layer kernels (the oracle, and the fallback)
 *   simd_impl.h      register-blocked variants: "generic" (baseline flags: SSE2 on x86-64,
 *                    NEON on aarch64) and, on x86-64, "avx2" and "avx512" compiled under
 *                    `#pragma GCC target` and chosen at run time (never -march=native)
 *   net_impl.h       whole-network drivers dispatching on cbp_net.isa */
#include <math.h>
#include <string.h>
#include <stdatomic.h>
#include <stdint.h>

#include "cbackprop.h"

#if !defined(_WIN32)
#include <pthread.h>
#include <sched.h>
#define CBP_HAVE_THREADS 1
#else
#define CBP_HAVE_THREADS 0
#endif

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define CBP_HAVE_X86_SIMD 1
#else
#define CBP_HAVE_X86_SIMD 0
#endif

/* Thread partitions split layers at multiples of this many bytes (one AVX-512 vector). */
#define CBP_VEC_ALIGN 64
#define CBP_MAX_THREADS 64
/* A barrier wait spins this many pauses (some microseconds; a mini-batch phase takes a
 * few) before yielding the core. */
#define CBP_SPINS 4000
/* A barrier wait longer than this (seconds) is slow; an epoch with more than
 * CBP_SLOW_LIMIT slow waits continues on the calling thread alone.  Measured on a shared
 * 2-vCPU VM: with 0.5 ms, epochs of [784,256,256,10] and [784,1024,1024,10] fell back to one
 * thread in most runs (the second vCPU stalls for about a millisecond now and then); with
 * 5 ms every epoch finished on 2 threads, 1.83x and 1.97x faster than one. */
#define CBP_SLOW_WAIT 5e-3
/* How long (seconds) an epoch waits for its new threads to start before running alone: 2% of
 * the epoch's work at CBP_START_RATE flop/s, within [CBP_START_WAIT, CBP_START_WAIT_MAX] (an
 * idle vCPU can take milliseconds to wake; a large epoch can afford to wait for it). */
#define CBP_START_WAIT 1e-3
#define CBP_START_WAIT_MAX 2e-2
#define CBP_START_RATE 1e11
#define CBP_SLOW_LIMIT 0

/* ---- threads: a team of T threads (the caller is thread 0) sharing one epoch ----------- */

/* [lo, hi): thread t's share of [0, n) when split into T contiguous pieces at multiples of
 * align (the last piece takes the remainder; a piece may be empty). */
static inline void cbp_part(size_t n, size_t align, int t, int T, size_t *lo, size_t *hi)
{
    const size_t chunks = (n + align - 1) / align;
    const size_t per = chunks / (size_t)T, extra = chunks % (size_t)T;
    const size_t c0 = (size_t)t * per + ((size_t)t < extra ? (size_t)t : extra);
    const size_t c1 = c0 + per + ((size_t)t < extra ? 1 : 0);
    *lo = c0 * align < n ? c0 * align : n;
    *hi = c1 * align < n ? c1 * align : n;
}

/* ---- spread prefetch: the next mini-batch's rows, a few cache lines at a time ----------
 * The rows of a shuffled epoch come from all over memory.  Prefetching all of the next
 * batch's rows in one burst barely helped (in a C microbenchmark the gather that followed
 * stayed as slow as without prefetch: the core's miss buffers fill up), so the kernels
 * call cbp_prefetch_step every few register-tile iterations (gemm_nt: every 8 vectors of
 * K; gemm_nn: every 4-vector column block) and the lines go out a few at a time while the
 * current batch computes, in proportion to the multiply-adds done.  The first batch
 * only counts the multiply-adds; later ones issue one line per work_per_line of them, so
 * that the lines are out within about three quarters of the batch's work.  Only the epoch
 * driver passes a cursor; elsewhere pf is NULL.  Everything here is always inlined: a call
 * inside a register tile's loop would spill its accumulators. */
typedef struct {
    const char *base[2];     /* x, y: the data set's rows */
    size_t row_bytes[2];
    const long long *idx;    /* the rows to fetch */
    size_t rows;
    size_t s, i;             /* next line: stream s, row idx[i], at address p (below end) */
    uintptr_t p, end;
    size_t work_per_line;    /* multiply-adds per line (0: count them only) */
    size_t work;             /* multiply-adds seen in this batch */
    size_t credit;           /* multiply-adds not yet paid for with a line */
    size_t issued;           /* lines issued in this batch */
} cbp_prefetch;

static inline __attribute__((always_inline)) void cbp_prefetch_row(cbp_prefetch *pf)
{
    const uintptr_t row = (uintptr_t)(pf->base[pf->s] + (size_t)pf->idx[pf->i] * pf->row_bytes[pf->s]);
    pf->p = row & ~(uintptr_t)63;                         /* the row's first line */
    pf->end = row + pf->row_bytes[pf->s];
}

/* Aim at rows idx[0, rows) of both streams. */
static inline void cbp_prefetch_start(cbp_prefetch *pf, const long long *idx, size_t rows)
{
    pf->idx = idx;
    pf->rows = rows;
    pf->s = 0;
    pf->i = 0;
    pf->work = 0;
    pf->credit = 0;
    pf->issued = 0;
    if (rows == 0) pf->s = 2;
    else cbp_prefetch_row(pf);
}

/* Issue up to n more lines; returns how many. */
static inline __attribute__((always_inline)) size_t cbp_prefetch_lines(cbp_prefetch *pf, size_t n)
{
    size_t done = 0;
    for (; done < n && pf->s < 2; done++) {
#if defined(__GNUC__) || defined(__clang__)
        __builtin_prefetch((const void *)pf->p, 0, 2);
#endif
        pf->p += 64;
        if (pf->p >= pf->end) {
            if (++pf->i == pf->rows) {
                pf->i = 0;
                if (++pf->s == 2) { done++; break; }
            }
            cbp_prefetch_row(pf);
        }
    }
    return done;
}

/* The kernels' hook, once per register tile of `work` multiply-adds (pf may be NULL). */
static inline __attribute__((always_inline)) void cbp_prefetch_step(cbp_prefetch *pf, size_t work)
{
    if (!pf) return;
    pf->work += work;
    if (pf->work_per_line == 0) return;
    pf->credit += work;
    size_t n = 0;
    while (pf->credit >= pf->work_per_line) {
        pf->credit -= pf->work_per_line;
        n++;
    }
    if (n) pf->issued += cbp_prefetch_lines(pf, n);
}

/* After a batch: the lines the steps left (all of them after the first batch), and the
 * rate for the next batch. */
static inline void cbp_prefetch_finish(cbp_prefetch *pf)
{
    const size_t lines = pf->issued + cbp_prefetch_lines(pf, (size_t)-1);
    if (lines > 0 && pf->work > 0) {
        const size_t w = 3 * pf->work / (4 * lines);
        pf->work_per_line = w > 0 ? w : 1;
    }
}

/* Generation barrier: the last of T arrivals resets the count and advances the generation;
 * the others spin on it (pause), yielding the core after a while so that an oversubscribed
 * machine still makes progress.  `slow` counts the waits that lasted over CBP_SLOW_WAIT: a
 * partner that the OS descheduled (another process on its core) makes barriers that slow. */
typedef struct {
    atomic_uint count;
    atomic_uint generation;
    atomic_uint slow;
    double slow_wait;     /* seconds: a longer wait is slow */
} cbp_barrier;

typedef struct {
    int n_threads;
    atomic_int checked_in;  /* threads 1..T-1 that have started */
    atomic_int go;          /* 0: wait; 1: run as a team; 2: leave, thread 0 runs alone */
    atomic_int solo;      /* set by thread 0: the others leave, thread 0 finishes alone */
    cbp_barrier barrier;
} cbp_team;

static inline void cbp_cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}

#if CBP_HAVE_THREADS
#include <time.h>
static double cbp_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}
#endif

static void cbp_barrier_wait(cbp_barrier *b, int T)
{
    if (T <= 1) return;
    const unsigned gen = atomic_load_explicit(&b->generation, memory_order_acquire);
    if (atomic_fetch_add_explicit(&b->count, 1, memory_order_acq_rel) == (unsigned)T - 1) {
        atomic_store_explicit(&b->count, 0, memory_order_relaxed);
        atomic_fetch_add_explicit(&b->generation, 1, memory_order_release);
        return;
    }
#if CBP_HAVE_THREADS
    unsigned spins = 0;
    double since = 0;
    int counted = 0;
    if (b->slow_wait < 1e-6) {          /* (tests: every wait counts as slow) */
        atomic_fetch_add_explicit(&b->slow, 1, memory_order_relaxed);
        counted = 1;
    }
    while (atomic_load_explicit(&b->generation, memory_order_acquire) == gen) {
        /* Count the wait as slow once it has lasted slow_wait seconds (CBP_SLOW_WAIT, far
         * longer than one phase's imbalance: the partner has most likely lost its core);
         * the clock is read every 16 spins. */
        if (!counted && (++spins & 15) == 0) {
            const double now = cbp_now();
            if (since == 0) since = now;
            else if (now - since > b->slow_wait) {
                atomic_fetch_add_explicit(&b->slow, 1, memory_order_relaxed);
                counted = 1;
            }
        }
        if (spins <= CBP_SPINS && !counted) {
            cbp_cpu_relax();
            continue;
        }
        /* Past the spins: yield the core (sleep once the wait counted as slow). */
        if (!counted) {
            sched_yield();
        } else {
            /* Sleep rather than yield: this core goes idle, and the scheduler's idle
             * balancing can move the waiting partner here. */
            const struct timespec nap = {0, 50000};
            nanosleep(&nap, NULL);
        }
    }
#else
    while (atomic_load_explicit(&b->generation, memory_order_acquire) == gen) {}
#endif
}

#if CBP_HAVE_THREADS
/* One step of a wait on the feeder or the trainer (net_impl.h): spin briefly (a mini-batch
 * takes microseconds), then sleep 20 us at a time so that a busy machine gets the core. */
static inline void cbp_wait_step(unsigned *spins)
{
    if (++*spins <= CBP_SPINS) {
        cbp_cpu_relax();
    } else {
        const struct timespec nap = {0, 20000};
        nanosleep(&nap, NULL);
    }
}
#endif

typedef void (*cbp_task)(void *job, int t);

#if CBP_HAVE_THREADS
typedef struct {
    cbp_task fn;
    void *job;
    cbp_team *team;
    int t;
} cbp_thread_arg;

static void *cbp_thread_main(void *p)
{
    cbp_thread_arg *arg = (cbp_thread_arg *)p;
    atomic_fetch_add_explicit(&arg->team->checked_in, 1, memory_order_acq_rel);
    int go;
    while ((go = atomic_load_explicit(&arg->team->go, memory_order_acquire)) == 0) cbp_cpu_relax();
    if (go == 1) arg->fn(arg->job, arg->t);
    return NULL;
}
#endif

/* Run fn(job, t) on threads t = 0..T-1 (the caller is t = 0) and wait for all.  Threads are
 * created per call (an epoch: microseconds against milliseconds of work).  If one cannot be
 * created, the team is smaller; if the new threads have not all started within
 * start_wait seconds (CBP_START_WAIT when 0) (a busy machine can keep a new thread off a core for a hundred
 * milliseconds), the caller runs the job alone and the late threads leave when they start.
 * Never wrong, only slower.  team->n_threads is the size that ran. */
static void cbp_team_run(cbp_team *team, int T, cbp_task fn, void *job, double start_wait,
                         double slow_wait)
{
    team->barrier.slow_wait = slow_wait > 0 ? slow_wait : CBP_SLOW_WAIT;
    if (start_wait <= 0) start_wait = CBP_START_WAIT;
    if (T < 1) T = 1;
    if (T > CBP_MAX_THREADS) T = CBP_MAX_THREADS;
    atomic_store(&team->barrier.count, 0);
    atomic_store(&team->barrier.generation, 0);
    atomic_store(&team->barrier.slow, 0);
    atomic_store(&team->go, 0);
    atomic_store(&team->checked_in, 0);
    atomic_store(&team->solo, 0);
#if CBP_HAVE_THREADS
    pthread_t threads[CBP_MAX_THREADS];
    cbp_thread_arg args[CBP_MAX_THREADS];
    int started = 1;
    for (int t = 1; t < T; t++) {
        args[t] = (cbp_thread_arg){fn, job, team, t};
        if (pthread_create(&threads[t], NULL, cbp_thread_main, &args[t]) != 0) break;
        started++;
    }
    int all_in = 1;
    if (started > 1) {
        const double t0 = cbp_now();
        while (atomic_load_explicit(&team->checked_in, memory_order_acquire) < started - 1) {
            if (cbp_now() - t0 > start_wait) {
                all_in = 0;
                break;
            }
            cbp_cpu_relax();
        }
    }
    team->n_threads = all_in ? started : 1;
    atomic_store_explicit(&team->go, all_in ? 1 : 2, memory_order_release);
    fn(job, 0);
    for (int t = 1; t < started; t++) pthread_join(threads[t], NULL);
#else
    team->n_threads = 1;
    fn(job, 0);
#endif
}

/* How gemm_nn combines its product P with its output C. */
enum {
    CBP_SET = 0,        /* C = P */
    CBP_ADD = 1,        /* C += P */
    CBP_SUB_SCALED = 2, /* C -= eta P  (the fused SGD step) */
    CBP_DECAY_SUB = 3,  /* C = keep C - eta P  (the fused step with L2 weight decay) */
    CBP_MOMENTUM = 4    /* V = mu V - eta P - decay C, C += V  (the fused momentum step) */
};

/* The register tile of a variant: NT_MC columns of gemm_nt and NN_MR rows of gemm_nn (both
 * equal; kernels_type.h checks).  Threads split layers at its multiples (net_impl.h). */
#define CBP_TILE(isa) ((size_t)((isa) == CBP_ISA_AVX512 ? 5 : 3))

/* What run_batch (net_impl.h) does after the forward pass. */
enum { CBP_FORWARD_ONLY = 0, CBP_GRADIENT = 1, CBP_STEP = 2 };


#define REAL float
#define SUF s
#define EXP expf
#define TANH tanhf
#define CBP_IS_DOUBLE 0
#include "kernels_type.h"
#undef REAL
#undef SUF
#undef EXP
#undef TANH
#undef CBP_IS_DOUBLE

#define REAL double
#define SUF d
#define EXP exp
#define TANH tanh
#define CBP_IS_DOUBLE 1
#include "kernels_type.h"
#undef REAL
#undef SUF
#undef EXP
#undef TANH
#undef CBP_IS_DOUBLE

int cbp_isa_supported(int isa)
{
    switch (isa) {
    case CBP_ISA_PLAIN:
    case CBP_ISA_GENERIC: return 1;
#if CBP_HAVE_X86_SIMD
    case CBP_ISA_AVX2:
        __builtin_cpu_init();
        return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    case CBP_ISA_AVX512:
        __builtin_cpu_init();
        return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
               __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512bw") &&
               cbp_isa_supported(CBP_ISA_AVX2);
#endif
    default: return 0;
    }
}

int cbp_isa_best(void)
{
    for (int isa = CBP_ISA_AVX512; isa > CBP_ISA_GENERIC; isa--)
        if (cbp_isa_supported(isa)) return isa;
    return CBP_ISA_GENERIC;
}
