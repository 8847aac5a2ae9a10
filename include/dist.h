/* dist.h — data-parallel training across processes: which process this is, and the
 * exchanges a step needs.
 *
 * One interface, two implementations chosen at start-up:
 *   none  a world of one: every exchange returns at once. A plain ./train, and any
 *         build without MPI.
 *   mpi   the process was started by mpirun (or srun): the launcher's environment says
 *         so. Buffers are host memory (Debian's Open MPI is not CUDA-aware).
 * The world is process-wide, like MPI itself: dist_init once, at the start of main.
 *
 * Every rank must make the same calls in the same order. Gradients are averaged by a
 * communication thread (Open MPI makes no progress on its own between MPI calls), in
 * buckets the trainer hands over during backward; the training thread talks to MPI only
 * while that thread is idle. Every wait on another rank has a deadline (timeout_s): a
 * rank that died, hung or was stopped is named, and the job is ended. */
#ifndef NS_DIST_H
#define NS_DIST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Reads the launcher's environment and joins the world (MPI_Init_thread) when there is
 * one. 0, or -1 with err_set (started by mpirun but built without MPI; MPI failing). */
int dist_init(void);
/* The network's simulated cost (0 latency and 0 Gbit/s: none) and the deadline of every
 * wait; starts the communication thread. */
int dist_configure(int comm_latency_us, double comm_gbps, int timeout_s);
/* Leaves the world after a run that ended the same way on every rank. */
void dist_finalize(void);
/* Ends every rank's process at once (MPI_Abort), after an error on this one that the
 * others can't know of. Returns only when alone. */
void dist_abort(int code);

int dist_rank(void);         /* 0..world-1 */
int dist_world(void);        /* 1 when alone */
const char *dist_name(void); /* "none" or "mpi" */

/* The step's handshake: every rank's step number, loss and stop request sent to every
 * other. Out come the mean loss (summed in rank order, so the same bits everywhere) and
 * whether any rank asked to stop. A rank at another step is an error; one that doesn't
 * answer within the deadline is named and the job ended. */
int dist_agree(int64_t step, float loss, bool stop, float *mean_loss, bool *any_stop);

/* Gradient buckets. dist_reduce_start hands buf[0..n) (host memory, untouched by the
 * caller until the wait) to the communication thread, which averages it over the ranks
 * in place: each rank's values go to rank 0, are summed there in rank order and
 * divided by the world, and the mean comes back, so every rank holds the same bits.
 * dist_reduce_wait returns when every bucket handed over is done: *wait_ns is the time
 * the caller was blocked (communication that backward did not hide), *comm_ns the
 * thread's time on them, simulated network included. */
int dist_reduce_start(float *buf, size_t n);
int dist_reduce_wait(int64_t *wait_ns, int64_t *comm_ns);

/* The buckets of the last dist_reduce_wait, on the communication thread's clock
 * (os_now_ns): up to max of them into start/end; how many there were. */
int dist_last_buckets(int64_t *start_ns, int64_t *end_ns, int max);

/* Rank 0 receives every rank's bytes: *all (malloc'd, rank 0 only; free it) holds them
 * one rank after the other, lens[r] bytes each (lens: world entries, rank 0 only). */
int dist_gather(const void *mine, size_t len, void **all, size_t *lens);

/* bytes at buf from rank 0 to every rank. */
int dist_broadcast(void *buf, size_t bytes);
/* Every rank's `value` compared: -1 with err_set on every rank, naming the first rank
 * whose value differs from rank 0's, when they are not all equal (`what` says what,
 * e.g. "config"). */
int dist_check_same(uint64_t value, const char *what);

#endif
