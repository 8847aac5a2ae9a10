/* dist.h — data-parallel training across processes: which process this is, and the
 * few collectives a step needs.
 *
 * One interface, two implementations chosen at start-up:
 *   none  a world of one: every collective returns at once. A plain ./train, and any
 *         build without MPI.
 *   mpi   the process was started by mpirun (or srun): Open MPI's environment says
 *         so. Buffers are host memory (Debian's Open MPI is not CUDA-aware).
 * The world is process-wide, like MPI itself: dist_init once, at the start of main.
 * Every collective must be called by every rank in the same order; the trainer keeps
 * them in lock step by agreeing, each step, on the loss and on whether to stop. */
#ifndef NS_DIST_H
#define NS_DIST_H

#include <stddef.h>
#include <stdint.h>

/* Reads the launcher's environment and joins the world (MPI_Init) when there is one.
 * 0, or -1 with err_set (started by mpirun, but built without MPI; MPI failing). */
int dist_init(void);
/* Leaves the world after a run that ended well on every rank. */
void dist_finalize(void);
/* Ends every rank's process at once, after an error on this one (MPI_Abort): the
 * others would otherwise wait for it in their next collective. Returns only alone. */
void dist_abort(int code);

int dist_rank(void);         /* 0..world-1 */
int dist_world(void);        /* 1 when alone */
const char *dist_name(void); /* "none" or "mpi" */

/* buf[0..n) summed over the ranks then divided by the world, in place, the same on
 * every rank (reduced on rank 0, then broadcast: no rank's float sum order differs). */
int dist_allreduce_mean(float *buf, size_t n);
/* bytes at buf from rank 0 to every rank. */
int dist_broadcast(void *buf, size_t bytes);
/* Every rank's `value` compared: -1 with err_set on every rank, naming the first rank
 * whose value differs from rank 0's, when they are not all equal (`what` says what,
 * e.g. "config"). */
int dist_check_same(uint64_t value, const char *what);

#endif
