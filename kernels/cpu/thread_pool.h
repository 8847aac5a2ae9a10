/* thread_pool.h — the CPU kernels' threads: cpu_parallel spreads the tasks of one
 * kernel call over a pool of worker threads that kernels/cpu/thread_pool.c keeps.
 * Its users: the vectorized table (vectorized.c, vec_conv.c, vec_bn.c) and the
 * pooling layers' kernels in cpu_common.c. (A pool of threads, not a pooling layer.) */
#ifndef NS_CPU_THREAD_POOL_H
#define NS_CPU_THREAD_POOL_H

/* cpu_parallel runs fn(ctx, task, thread) for every task in 0..tasks-1 on up to
 * `threads` threads (capped at cpu_threads()), handing tasks out one at a time to
 * whichever thread is free; it returns when all are done. The caller is thread 0;
 * `thread` < cpu_threads() indexes per-thread scratch. threads <= 1 runs inline. */
int cpu_threads(void); /* omp_get_max_threads(): OMP_NUM_THREADS and train.threads apply */
void cpu_parallel(int tasks, int threads, void (*fn)(void *ctx, int task, int thread), void *ctx);

#endif
