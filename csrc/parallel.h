/* The parallel layer: the one place that knows about threads.
 *
 * An epoch runs as a stream of tasks numbered 0, 1, 2, ... (net.c: each mini-batch is a
 * sequence of phases, each phase a few independent tasks: blocks of one layer's product).
 * Every thread of the team claims the next task number from a shared counter, waits until
 * every task of the earlier phases is done, runs it, and counts it done.  So a thread that
 * the operating system deschedules delays only the task it holds, never the others'
 * claims, and a thread that starts late simply claims later tasks.  Which thread runs a
 * task never changes a result: the kernels compute every value with the same instructions
 * wherever it lies (kernels.h). */
#ifndef CBACKPROP_PARALLEL_H
#define CBACKPROP_PARALLEL_H

#include <stdatomic.h>
#include <stddef.h>

#define CBP_MAX_THREADS 64

/* Run fn(arg, t) on T threads, t = 0 on the caller's thread, and wait for all.  Returns the
 * number of threads that ran (fewer than T when threads cannot be created). */
int cbp_parallel_run(int T, void (*fn)(void *arg, int t), void *arg);

/* The same, but all or nothing: fn runs on T threads, or (when a thread cannot be created)
 * on none, and 0 is returned.  For work where every thread must take part. */
int cbp_parallel_run_all(int T, void (*fn)(void *arg, int t), void *arg);

/* One step of a wait loop: a pause for the first spins (a wait is usually microseconds),
 * then a yield of the core.  *spins counts the steps (start it at 0). */
void cbp_backoff(unsigned *spins);

/* A stream of tasks: ids below `limit` run, each once. */
typedef struct {
    _Alignas(64) atomic_size_t next;    /* the next id to claim */
    _Alignas(64) atomic_size_t done;    /* tasks finished */
    _Alignas(64) atomic_size_t limit;   /* ids from here on do not run (an epoch cut short) */
} cbp_queue;

void cbp_queue_init(cbp_queue *q, size_t total);

/* The next id for this thread (may be >= the limit: then the thread is done). */
static inline size_t cbp_queue_claim(cbp_queue *q)
{
    return atomic_fetch_add_explicit(&q->next, 1, memory_order_relaxed);
}

/* Wait until the tasks before `first` are all done (first <= id, the id this thread
 * claimed).  Returns 1 to run task id, 0 when the stream was cut below id meanwhile. */
int cbp_queue_wait(cbp_queue *q, size_t first, size_t id);

/* Task id is done (its writes are published to the threads that wait for it). */
static inline void cbp_queue_done(cbp_queue *q)
{
    atomic_fetch_add_explicit(&q->done, 1, memory_order_release);
}

/* No id >= limit runs (ids already running finish). */
static inline void cbp_queue_cut(cbp_queue *q, size_t limit)
{
    atomic_store_explicit(&q->limit, limit, memory_order_release);
}

static inline size_t cbp_queue_limit(cbp_queue *q)
{
    return atomic_load_explicit(&q->limit, memory_order_acquire);
}

/* The round trip of a cache line between this thread and a second one started for the
 * purpose, in nanoseconds (after 64 rounds to warm up, the mean of the fastest of four
 * groups of 48; with the thread's start, about 0.1 ms).  Large (1e9) when no second thread
 * could be started or none answered within about 2 ms (a busy machine).
 * On a VM whose two virtual CPUs sometimes sit on cores that share an L3 and sometimes not,
 * it tells which: measured on a 2-vCPU Zen 4 VM, 50-82 ns and 309-356 ns. */
double cbp_round_trip_ns(void);

/* Seconds on a monotonic clock. */
double cbp_now(void);

/* Subnormal numbers flushed to zero for the duration of a call: the arithmetic on them is
 * 50-100 times slower on x86 (microcode assists) and they carry nothing a network can use.
 * cbp_fp_enter sets flush-to-zero and denormals-are-zero (x86 MXCSR FTZ, DAZ; aarch64 FPCR
 * FZ) on the calling thread and returns the mode it found; cbp_fp_leave restores it.  Every
 * public function of the engine, and every thread of an epoch, runs inside such a pair. */
typedef struct { unsigned long long saved; } cbp_fp_mode;
cbp_fp_mode cbp_fp_enter(void);
void cbp_fp_leave(cbp_fp_mode mode);
/* fn(arg) run in the mode `caller` (the one cbp_fp_enter returned): an epoch's poll calls
 * back into Python, whose arithmetic must see the caller's mode. */
int cbp_fp_call(int (*fn)(void *), void *arg, cbp_fp_mode caller);

#endif /* CBACKPROP_PARALLEL_H */
