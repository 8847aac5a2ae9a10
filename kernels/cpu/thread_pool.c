/* thread_pool.c — the threads of the CPU kernels: cpu_parallel and the pool of
 * worker threads behind it (thread_pool.h says how to call it). The kernels that
 * use it are in vectorized.c, vec_conv.c, vec_bn.c and cpu_common.c. */
#include <omp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

#include "os.h"
#include "thread_pool.h"

/* ---- a pool of threads that spins briefly, then sleeps ----
 * Why not OpenMP's own threads: libgomp's idle threads spin for up to milliseconds
 * waiting for the next parallel region (OMP_WAIT_POLICY=active is its default, and
 * only the environment of a starting program can change it). On two cores shared
 * with the loader's workers, or another job, that spinning takes the core from
 * whoever needs it; on this machine, under load, resnet_small trained 3x faster
 * with OMP_WAIT_POLICY=passive (docs/benchmarks.md). These threads spin
 * TP_SPIN_NS, enough to bridge the short gaps between the kernels of a step,
 * then sleep on a condition variable. The team size stays OpenMP's
 * omp_get_max_threads(), so OMP_NUM_THREADS and train.threads still apply. */

enum { TP_MAX_THREADS = 64 };
#define TP_SPIN_NS 50000

static struct thread_pool {
    pthread_mutex_t mu;
    pthread_cond_t start, finish;
    int workers;                     /* threads started: threads 1..workers of a team */
    _Atomic unsigned long gen;       /* bumped for each job */
    unsigned long born_gen;          /* gen when the newest workers were started */
    void (*fn)(void *ctx, int task, int thread);
    void *ctx;
    int tasks, team;
    atomic_int next;                 /* the next task to hand out */
    atomic_int busy;                 /* workers that haven't checked out of the job */
    atomic_flag in_use;              /* a job is running: a nested call runs inline */
} tp = {.mu = PTHREAD_MUTEX_INITIALIZER,
        .start = PTHREAD_COND_INITIALIZER,
        .finish = PTHREAD_COND_INITIALIZER};

static inline void tp_pause(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}

static void tp_run_tasks(int thread) {
    int t;
    while ((t = atomic_fetch_add(&tp.next, 1)) < tp.tasks) tp.fn(tp.ctx, t, thread);
}

static void *tp_worker(void *arg) {
    int thread = (int)(intptr_t)arg;
    pthread_mutex_lock(&tp.mu);
    unsigned long seen = tp.born_gen; /* the job it was started for is yet to be seen */
    pthread_mutex_unlock(&tp.mu);
    for (;;) {
        int64_t until = os_now_ns() + TP_SPIN_NS;
        while (atomic_load_explicit(&tp.gen, memory_order_acquire) == seen && os_now_ns() < until)
            tp_pause();
        pthread_mutex_lock(&tp.mu);
        while (atomic_load(&tp.gen) == seen) pthread_cond_wait(&tp.start, &tp.mu);
        pthread_mutex_unlock(&tp.mu);
        seen++; /* the job can't change before every worker has checked out of it */
        if (thread < tp.team) tp_run_tasks(thread);
        if (atomic_fetch_sub(&tp.busy, 1) == 1) {
            pthread_mutex_lock(&tp.mu);
            pthread_cond_signal(&tp.finish);
            pthread_mutex_unlock(&tp.mu);
        }
    }
    return NULL;
}

/* A forked child has none of the parent's threads: it starts a pool of its own. */
static void tp_after_fork(void) {
    pthread_mutex_init(&tp.mu, NULL);
    pthread_cond_init(&tp.start, NULL);
    pthread_cond_init(&tp.finish, NULL);
    tp.workers = 0;
    atomic_flag_clear(&tp.in_use);
}

static void tp_register_fork(void) { pthread_atfork(NULL, NULL, tp_after_fork); }

int cpu_threads(void) {
    int n = omp_get_max_threads();
    return n < 1 ? 1 : n > TP_MAX_THREADS ? TP_MAX_THREADS : n;
}

void cpu_parallel(int tasks, int threads, void (*fn)(void *ctx, int task, int thread), void *ctx) {
    if (threads > cpu_threads()) threads = cpu_threads();
    if (threads > tasks) threads = tasks;
    if (threads <= 1 || atomic_flag_test_and_set(&tp.in_use)) {
        for (int t = 0; t < tasks; t++) fn(ctx, t, 0);
        return;
    }
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, tp_register_fork);
    pthread_mutex_lock(&tp.mu);
    tp.born_gen = atomic_load(&tp.gen);
    while (tp.workers < threads - 1) {
        pthread_t th;
        if (pthread_create(&th, NULL, tp_worker, (void *)(intptr_t)(tp.workers + 1)) != 0) break;
        pthread_detach(th);
        tp.workers++;
    }
    if (threads > tp.workers + 1) threads = tp.workers + 1; /* no more threads to be had */
    tp.fn = fn;
    tp.ctx = ctx;
    tp.tasks = tasks;
    tp.team = threads;
    atomic_store(&tp.next, 0);
    atomic_store(&tp.busy, tp.workers); /* every worker checks in, in the team or not */
    atomic_fetch_add_explicit(&tp.gen, 1, memory_order_release);
    pthread_cond_broadcast(&tp.start);
    pthread_mutex_unlock(&tp.mu);

    tp_run_tasks(0);
    int64_t until = os_now_ns() + TP_SPIN_NS;
    while (atomic_load(&tp.busy) > 0 && os_now_ns() < until) tp_pause();
    pthread_mutex_lock(&tp.mu);
    while (atomic_load(&tp.busy) > 0) pthread_cond_wait(&tp.finish, &tp.mu);
    pthread_mutex_unlock(&tp.mu);
    atomic_flag_clear(&tp.in_use);
}
