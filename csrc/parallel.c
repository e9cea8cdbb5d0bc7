/* Threads for the epoch (parallel.h).  Threads are created per epoch and joined at its end
 * (tens of microseconds against milliseconds of work), so no thread outlives a call: a
 * fork() between calls copies no thread state. */
#if defined(__linux__)
#define _GNU_SOURCE     /* sched_getcpu, sched_setaffinity (the round-trip probe) */
#endif
#include "parallel.h"

#include <time.h>

#if !defined(_WIN32)
#include <pthread.h>
#include <sched.h>
#define CBP_HAVE_THREADS 1
#else
#define CBP_HAVE_THREADS 0
#endif

/* A wait spins this many pauses (a task takes microseconds) before yielding the core. */
#define CBP_SPINS 2000

double cbp_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static inline void cbp_cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

#if defined(__x86_64__) || defined(__i386__)
#include <xmmintrin.h>
#define CBP_MXCSR_FTZ_DAZ 0x8040u   /* bit 15 flush to zero, bit 6 denormals are zero */
#endif

cbp_fp_mode cbp_fp_enter(void)
{
    cbp_fp_mode m = {0};
#if defined(__x86_64__) || defined(__i386__)
    const unsigned csr = _mm_getcsr();
    m.saved = csr;
    _mm_setcsr(csr | CBP_MXCSR_FTZ_DAZ);
#elif defined(__aarch64__)
    unsigned long long fpcr;
    __asm__ __volatile__("mrs %0, fpcr" : "=r"(fpcr));
    m.saved = fpcr;
    __asm__ __volatile__("msr fpcr, %0" : : "r"(fpcr | (1ull << 24)));   /* FZ */
#endif
    return m;
}

void cbp_fp_leave(cbp_fp_mode mode)
{
#if defined(__x86_64__) || defined(__i386__)
    _mm_setcsr((unsigned)mode.saved);
#elif defined(__aarch64__)
    __asm__ __volatile__("msr fpcr, %0" : : "r"(mode.saved));
#else
    (void)mode;
#endif
}

int cbp_fp_call(int (*fn)(void *), void *arg, cbp_fp_mode caller)
{
    const cbp_fp_mode ours = cbp_fp_enter();   /* (the flushing mode, to come back to) */
    cbp_fp_leave(caller);
    const int r = fn(arg);
    cbp_fp_leave(ours);
    return r;
}

void cbp_queue_init(cbp_queue *q, size_t total)
{
    atomic_init(&q->next, 0);
    atomic_init(&q->done, 0);
    atomic_init(&q->limit, total);
}

void cbp_backoff(unsigned *spins)
{
    if (*spins <= CBP_SPINS) {
        ++*spins;
        cbp_cpu_relax();
    } else {
#if CBP_HAVE_THREADS
        sched_yield();
#endif
    }
}

int cbp_queue_wait(cbp_queue *q, size_t first, size_t id)
{
    unsigned spins = 0;
    while (atomic_load_explicit(&q->done, memory_order_acquire) < first) {
        if (id >= cbp_queue_limit(q)) return 0;
        cbp_backoff(&spins);
    }
    return id < cbp_queue_limit(q);
}

#if CBP_HAVE_THREADS
typedef struct {
    void (*fn)(void *, int);
    void *arg;
    int t;
    atomic_int *go;     /* NULL: run at once; else wait while 0, run on 1, return on 2 */
} cbp_thread_arg;

static void *cbp_thread_main(void *p)
{
    const cbp_thread_arg *a = (const cbp_thread_arg *)p;
    if (a->go) {
        unsigned spins = 0;
        int go;
        while ((go = atomic_load_explicit(a->go, memory_order_acquire)) == 0) cbp_backoff(&spins);
        if (go != 1) return NULL;
    }
    const cbp_fp_mode mode = cbp_fp_enter();
    a->fn(a->arg, a->t);
    cbp_fp_leave(mode);
    return NULL;
}
#endif

/* T - 1 threads (go: see cbp_thread_arg), then fn on this one; joins them.  Returns the
 * number of threads that were created, this one included. */
static int cbp_run(int T, void (*fn)(void *arg, int t), void *arg, atomic_int *go)
{
    if (T < 1) T = 1;
    if (T > CBP_MAX_THREADS) T = CBP_MAX_THREADS;
    int started = 1;
#if CBP_HAVE_THREADS
    pthread_t threads[CBP_MAX_THREADS];
    cbp_thread_arg args[CBP_MAX_THREADS];
    for (int t = 1; t < T; t++) {
        args[t] = (cbp_thread_arg){fn, arg, t, go};
        if (pthread_create(&threads[t], NULL, cbp_thread_main, &args[t]) != 0) break;
        started++;
    }
#endif
    if (go) atomic_store_explicit(go, started == T ? 1 : 2, memory_order_release);
    if (!go || started == T) fn(arg, 0);
#if CBP_HAVE_THREADS
    for (int t = 1; t < started; t++) pthread_join(threads[t], NULL);
#endif
    return started;
}

int cbp_parallel_run_all(int T, void (*fn)(void *arg, int t), void *arg)
{
    atomic_int go;
    atomic_init(&go, 0);
    return cbp_run(T, fn, arg, &go) == (T < 1 ? 1 : T > CBP_MAX_THREADS ? CBP_MAX_THREADS : T);
}

int cbp_parallel_run(int T, void (*fn)(void *arg, int t), void *arg)
{
    return cbp_run(T, fn, arg, NULL);
}

#define CBP_RT_WARM 64     /* rounds before the timed ones */
#define CBP_RT_GROUP 48    /* timed rounds per group; the result is the fastest group's mean */
#define CBP_RT_ROUNDS (CBP_RT_WARM + 4 * CBP_RT_GROUP)

typedef struct {
    _Alignas(64) atomic_int ball;   /* 2i + 1: thread 0's serve of round i; 2i + 2: the return */
    _Alignas(64) atomic_int ready;  /* thread 1 is running */
    _Alignas(64) atomic_int stop;   /* thread 0 gave up: thread 1 returns */
    int cpu0;                       /* thread 0's CPU, or -1 */
    double ns;
} cbp_rt_job;

/* Thread 1 onto a CPU of the process other than cpu0 (Linux): a new thread often starts on
 * its creator's CPU and waits there for the scheduler to move it, and the probe is about
 * two CPUs. */
static void cbp_rt_elsewhere(int cpu0)
{
#if defined(__linux__)
    cpu_set_t mask, one;
    if (cpu0 < 0 || sched_getaffinity(0, sizeof mask, &mask) != 0) return;
    for (int c = 0; c < CPU_SETSIZE; c++)
        if (c != cpu0 && CPU_ISSET(c, &mask)) {
            CPU_ZERO(&one);
            CPU_SET(c, &one);
            sched_setaffinity(0, sizeof one, &one);     /* (0: this thread only) */
            return;
        }
#else
    (void)cpu0;
#endif
}

static void cbp_rt_play(void *arg, int t)
{
    cbp_rt_job *j = (cbp_rt_job *)arg;
    if (t == 1) {
        cbp_rt_elsewhere(j->cpu0);
        atomic_store_explicit(&j->ready, 1, memory_order_release);
        for (int i = 0; i < CBP_RT_ROUNDS; i++) {
            unsigned spins = 0;
            while (atomic_load_explicit(&j->ball, memory_order_acquire) != 2 * i + 1) {
                if (atomic_load_explicit(&j->stop, memory_order_relaxed)) return;
                cbp_backoff(&spins);
            }
            atomic_store_explicit(&j->ball, 2 * i + 2, memory_order_release);
        }
        return;
    }
    const double t0 = cbp_now(), limit = 2e-3;
    unsigned n = 0, spins = 0;
    while (!atomic_load_explicit(&j->ready, memory_order_acquire)) {
        if ((spins > CBP_SPINS || (++n & 255) == 0) && cbp_now() - t0 > limit) goto give_up;
        cbp_backoff(&spins);
    }
    double start = t0, best = 1e9;
    for (int i = 0; i <= CBP_RT_ROUNDS; i++) {
        if (i >= CBP_RT_WARM && (i - CBP_RT_WARM) % CBP_RT_GROUP == 0) {
            const double now = cbp_now();
            if (i > CBP_RT_WARM && (now - start) / CBP_RT_GROUP < best)
                best = (now - start) / CBP_RT_GROUP;
            start = now;
        }
        if (i == CBP_RT_ROUNDS) break;
        atomic_store_explicit(&j->ball, 2 * i + 1, memory_order_release);
        spins = 0;
        while (atomic_load_explicit(&j->ball, memory_order_acquire) != 2 * i + 2) {
            if ((spins > CBP_SPINS || (++n & 255) == 0) && cbp_now() - t0 > limit) goto give_up;
            cbp_backoff(&spins);
        }
    }
    j->ns = best * 1e9;
    return;
give_up:
    atomic_store_explicit(&j->stop, 1, memory_order_relaxed);
    j->ns = 1e9;
}

double cbp_round_trip_ns(void)
{
    if (!CBP_HAVE_THREADS) return 1e9;
    cbp_rt_job j = {.ns = 1e9, .cpu0 = -1};
#if defined(__linux__)
    j.cpu0 = sched_getcpu();
#endif
    atomic_init(&j.ball, 0);
    atomic_init(&j.ready, 0);
    atomic_init(&j.stop, 0);
    cbp_parallel_run_all(2, cbp_rt_play, &j);   /* (no second thread: neither runs, 1e9) */
    return j.ns;
}
