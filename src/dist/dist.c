/* dist.c — the world of processes (dist.h): none, or MPI.
 *
 * The MPI implementation uses point-to-point messages with deadlines rather than MPI's
 * collectives for the two exchanges of every step, so that a rank that stops answering
 * is named instead of waited for:
 *   the handshake   every rank sends (step, loss, stop) to every other;
 *   a bucket        every rank sends its gradients to rank 0, which sums them in rank
 *                   order, divides by the world and sends the mean back.
 * Gathering at one rank is the simplest all-reduce to read; its cost at rank 0 grows
 * with the world (a ring all-reduce, as NCCL's, doesn't), which is fine for the few
 * ranks of a teaching framework. Buckets run on a communication thread, so they overlap
 * the rest of backward; the training thread calls MPI only while it is idle
 * (MPI_THREAD_SERIALIZED). */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "dist.h"
#include "error.h"
#include "os.h"

#if NS_HAVE_MPI
#include <mpi.h>
#endif

static int world_rank = 0, world_size = 1;
static int using_mpi;

/* A launcher's environment: Open MPI's mpirun, then PMI-based launchers (srun). */
static int launched_size(void) {
    const char *vars[] = {"OMPI_COMM_WORLD_SIZE", "PMIX_SIZE", "PMI_SIZE"};
    for (size_t i = 0; i < sizeof vars / sizeof *vars; i++) {
        const char *v = getenv(vars[i]);
        if (v && atoi(v) > 0) return atoi(v);
    }
    return 0;
}

int dist_rank(void) { return world_rank; }
int dist_world(void) { return world_size; }
const char *dist_name(void) { return using_mpi ? "mpi" : "none"; }

#if NS_HAVE_MPI

static void sleep_us(int64_t us) {
    struct timespec ts = {us / 1000000, (long)(us % 1000000) * 1000};
    while (us > 0 && nanosleep(&ts, &ts) != 0) {}
}

enum { TAG_AGREE = 30000, MAX_BUCKETS = 4096 };

static int timeout_s = 60, latency_us;
static double gbps;

/* MPI's own words for an error code. */
static int mpi_fail(int code, const char *call) {
    char text[MPI_MAX_ERROR_STRING];
    int len = 0;
    MPI_Error_string(code, text, &len);
    return err_set("rank %d: %s failed: %.*s", world_rank, call, len, text);
}
#define MPI_CHECK(call) do { int rc_ = (call); if (rc_ != MPI_SUCCESS) return mpi_fail(rc_, #call); } while (0)

/* ---- waiting on other ranks, with a deadline ---- */

/* Waits for req[0..n) (the messages to or from ranks peer[0..n)); past the deadline it
 * names the first rank that didn't answer, on stderr (the other ranks may be killed
 * before any message could travel back), and ends the job. */
static void wait_peers(MPI_Request *req, const int *peer, int n, const char *what) {
    int64_t deadline = os_now_ns() + (int64_t)timeout_s * 1000000000;
    for (int spins = 0;; spins++) {
        int done = 0;
        for (int i = 0; i < n; i++) {
            int flag = 0;
            MPI_Test(&req[i], &flag, MPI_STATUS_IGNORE); /* a finished request becomes NULL: flag 1 */
            done += flag;
        }
        if (done == n) return;
        if (os_now_ns() > deadline) {
            int late = -1;
            for (int i = 0; i < n && late < 0; i++) {
                int flag = 0;
                MPI_Test(&req[i], &flag, MPI_STATUS_IGNORE);
                if (!flag) late = peer[i];
            }
            fprintf(stderr, "\nerror: rank %d: rank %d did not answer within dist.timeout_s = %d s (%s): it died, "
                            "hung or was stopped; ending every rank\n", world_rank, late, timeout_s, what);
            fflush(stderr);
            MPI_Abort(MPI_COMM_WORLD, 4);
        }
        if (spins > 100) sleep_us(50); /* a short spin first: most waits end within microseconds */
    }
}

int dist_agree(int64_t step, float loss, bool stop, float *mean_loss, bool *any_stop) {
    *mean_loss = loss;
    *any_stop = stop;
    if (world_size == 1) return 0;
    double mine[3] = {(double)step, (double)loss, stop ? 1 : 0}, *all = calloc((size_t)world_size * 3, sizeof *all);
    MPI_Request *req = calloc((size_t)world_size * 2, sizeof *req);
    int *peer = calloc((size_t)world_size * 2, sizeof *peer);
    if (!all || !req || !peer) {
        free(all), free(req), free(peer);
        return err_set("rank %d: out of host memory for the step's handshake", world_rank);
    }
    int n = 0;
    for (int r = 0; r < world_size; r++) {
        if (r == world_rank) { memcpy(all + 3 * r, mine, sizeof mine); continue; }
        MPI_Irecv(all + 3 * r, 3, MPI_DOUBLE, r, TAG_AGREE, MPI_COMM_WORLD, &req[n]);
        peer[n++] = r;
        MPI_Isend(mine, 3, MPI_DOUBLE, r, TAG_AGREE, MPI_COMM_WORLD, &req[n]);
        peer[n++] = r;
    }
    char what[64];
    snprintf(what, sizeof what, "the handshake of step %lld", (long long)step);
    wait_peers(req, peer, n, what);
    int rc = 0;
    float sum = 0;
    for (int r = 0; r < world_size; r++) { /* rank order: the same sum on every rank */
        if ((int64_t)all[3 * r] != step && !rc)
            rc = err_set("rank %d is at step %lld, rank %d at step %lld: the ranks fell out of step", r,
                         (long long)all[3 * r], world_rank, (long long)step);
        sum += (float)all[3 * r + 1];
        *any_stop = *any_stop || all[3 * r + 2] != 0;
    }
    *mean_loss = sum / (float)world_size;
    free(all), free(req), free(peer);
    return rc;
}

/* ---- gradient buckets, on the communication thread ---- */

static struct {
    pthread_t thread;
    bool started, stopping;
    pthread_mutex_t mu;
    pthread_cond_t work, done;
    struct { float *buf; size_t n; int64_t start_ns, end_ns; } job[MAX_BUCKETS];
    int64_t last_start[MAX_BUCKETS], last_end[MAX_BUCKETS]; /* the last wait's buckets */
    int n_last;
    int head, tail;              /* job[head..tail) are waiting or running */
    int64_t busy_ns;             /* the thread's time on jobs since the last wait */
    float *scratch;              /* rank 0: the other ranks' values */
    size_t scratch_n;
} comm = {.mu = PTHREAD_MUTEX_INITIALIZER, .work = PTHREAD_COND_INITIALIZER, .done = PTHREAD_COND_INITIALIZER};

/* One bucket averaged over the ranks, in place (see the top of the file). */
static void reduce_bucket(float *buf, size_t n, int tag) {
    int w = world_size, count = (int)n;
    MPI_Request req[64];
    int peer[64] = {0};
    if (world_rank != 0) {
        MPI_Isend(buf, count, MPI_FLOAT, 0, tag, MPI_COMM_WORLD, &req[0]);
        peer[0] = 0;
        wait_peers(req, peer, 1, "sending a gradient bucket to rank 0");
        MPI_Irecv(buf, count, MPI_FLOAT, 0, tag, MPI_COMM_WORLD, &req[0]);
        wait_peers(req, peer, 1, "the averaged gradients from rank 0");
        return;
    }
    if (comm.scratch_n < (size_t)(w - 1) * n) {
        free(comm.scratch);
        comm.scratch_n = (size_t)(w - 1) * n;
        comm.scratch = malloc(comm.scratch_n * sizeof *comm.scratch);
        if (!comm.scratch) {
            fprintf(stderr, "error: rank 0: out of host memory for %zu gradients\n", comm.scratch_n);
            MPI_Abort(MPI_COMM_WORLD, 1);
        }
    }
    for (int r = 1; r < w; r++) {
        MPI_Irecv(comm.scratch + (size_t)(r - 1) * n, count, MPI_FLOAT, r, tag, MPI_COMM_WORLD, &req[r - 1]);
        peer[r - 1] = r;
    }
    wait_peers(req, peer, w - 1, "a gradient bucket");
    float scale = 1.0f / (float)w;
    for (size_t i = 0; i < n; i++) {
        float s = buf[i];
        for (int r = 1; r < w; r++) s += comm.scratch[(size_t)(r - 1) * n + i];
        buf[i] = s * scale;
    }
    for (int r = 1; r < w; r++) MPI_Isend(buf, count, MPI_FLOAT, r, tag, MPI_COMM_WORLD, &req[r - 1]);
    wait_peers(req, peer, w - 1, "sending the averaged gradients");
}

static void *comm_thread(void *arg) {
    (void)arg;
    pthread_mutex_lock(&comm.mu);
    for (;;) {
        while (comm.head == comm.tail && !comm.stopping) pthread_cond_wait(&comm.work, &comm.mu);
        if (comm.stopping) break;
        int tag = comm.head;
        float *buf = comm.job[tag].buf;
        size_t n = comm.job[tag].n;
        pthread_mutex_unlock(&comm.mu);
        int64_t t0 = os_now_ns();
        if (latency_us > 0 || gbps > 0) /* the simulated network: a cost per call, and bytes / bandwidth */
            sleep_us(latency_us + (gbps > 0 ? (int64_t)((double)n * sizeof(float) * 8 / (gbps * 1e3)) : 0));
        reduce_bucket(buf, n, tag);
        int64_t t1 = os_now_ns();
        pthread_mutex_lock(&comm.mu);
        comm.busy_ns += t1 - t0;
        comm.job[tag].start_ns = t0;
        comm.job[tag].end_ns = t1;
        comm.head++;
        pthread_cond_signal(&comm.done);
    }
    pthread_mutex_unlock(&comm.mu);
    return NULL;
}

int dist_reduce_start(float *buf, size_t n) {
    if (world_size == 1) return 0;
    if (n > (size_t)1 << 30)
        return err_set("a gradient bucket of %zu values: at most 2^30 (MPI counts are ints)", n);
    pthread_mutex_lock(&comm.mu);
    int full = comm.tail == MAX_BUCKETS;
    if (!full) {
        comm.job[comm.tail].buf = buf;
        comm.job[comm.tail].n = n;
        comm.tail++;
        pthread_cond_signal(&comm.work);
    }
    pthread_mutex_unlock(&comm.mu);
    return full ? err_set("more than %d gradient buckets in one step. HINT: raise dist.bucket_kb", MAX_BUCKETS) : 0;
}

int dist_reduce_wait(int64_t *wait_ns, int64_t *comm_ns) {
    int64_t t0 = os_now_ns();
    pthread_mutex_lock(&comm.mu);
    while (comm.head != comm.tail) pthread_cond_wait(&comm.done, &comm.mu);
    for (int i = 0; i < comm.tail; i++) comm.last_start[i] = comm.job[i].start_ns, comm.last_end[i] = comm.job[i].end_ns;
    comm.n_last = comm.tail;
    comm.head = comm.tail = 0; /* tags start again from 0: messages of a (source, tag) pair keep their order */
    *comm_ns = comm.busy_ns;
    comm.busy_ns = 0;
    pthread_mutex_unlock(&comm.mu);
    *wait_ns = os_now_ns() - t0;
    return 0;
}

int dist_last_buckets(int64_t *start_ns, int64_t *end_ns, int max) {
    pthread_mutex_lock(&comm.mu);
    int n = comm.n_last;
    for (int i = 0; i < n && i < max; i++) start_ns[i] = comm.last_start[i], end_ns[i] = comm.last_end[i];
    pthread_mutex_unlock(&comm.mu);
    return n;
}

int dist_gather(const void *mine, size_t len, void **all, size_t *lens) {
    *all = NULL;
    if (world_size == 1) {
        if (!(*all = malloc(len ? len : 1))) return err_set("out of host memory");
        memcpy(*all, mine, len);
        lens[0] = len;
        return 0;
    }
    if (len > INT32_MAX) return err_set("rank %d: %zu bytes to gather, at most 2^31", world_rank, len);
    int n = (int)len, *counts = NULL, *displs = NULL;
    if (world_rank == 0) {
        counts = calloc((size_t)world_size, sizeof *counts);
        displs = calloc((size_t)world_size, sizeof *displs);
        if (!counts || !displs) { free(counts), free(displs); return err_set("out of host memory"); }
    }
    int rc = MPI_Gather(&n, 1, MPI_INT, counts, 1, MPI_INT, 0, MPI_COMM_WORLD);
    size_t total = 0;
    for (int r = 0; world_rank == 0 && r < world_size; r++) displs[r] = (int)total, total += (size_t)counts[r], lens[r] = (size_t)counts[r];
    if (rc == MPI_SUCCESS && world_rank == 0 && (total > INT32_MAX || !(*all = malloc(total ? total : 1)))) {
        free(counts), free(displs);
        return err_set("rank 0: can't gather %zu bytes", total); /* the others then wait: the caller aborts */
    }
    if (rc == MPI_SUCCESS) rc = MPI_Gatherv(mine, n, MPI_BYTE, *all, counts, displs, MPI_BYTE, 0, MPI_COMM_WORLD);
    free(counts), free(displs);
    return rc == MPI_SUCCESS ? 0 : mpi_fail(rc, "MPI_Gather");
}

/* ---- start and end ---- */


int dist_init(void) {
    if (launched_size() <= 0) return 0; /* a plain ./train: a world of one, MPI untouched */
    int provided;
    if (MPI_Init_thread(NULL, NULL, MPI_THREAD_SERIALIZED, &provided) != MPI_SUCCESS)
        return err_set("MPI_Init_thread failed; the launcher's environment says this is an MPI job");
    using_mpi = 1;
    if (provided < MPI_THREAD_SERIALIZED)
        return err_set("this MPI offers thread level %d, and nostall's communication thread needs "
                       "MPI_THREAD_SERIALIZED", provided);
    /* errors come back as codes, so they are reported with the rank and the call */
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
    MPI_Comm_rank(MPI_COMM_WORLD, &world_rank);
    MPI_Comm_size(MPI_COMM_WORLD, &world_size);
    if (world_size > 65)
        return err_set("%d ranks: this all-reduce gathers at rank 0 and is meant for up to 65", world_size);
    return 0;
}

int dist_configure(int comm_latency_us, double comm_gbps, int deadline_s) {
    latency_us = comm_latency_us;
    gbps = comm_gbps;
    timeout_s = deadline_s;
    if (world_size == 1 || comm.started) return 0;
    if (pthread_create(&comm.thread, NULL, comm_thread, NULL))
        return err_set("rank %d: starting the communication thread failed", world_rank);
    comm.started = true;
    return 0;
}

void dist_finalize(void) {
    if (comm.started) {
        pthread_mutex_lock(&comm.mu);
        comm.stopping = true;
        pthread_cond_signal(&comm.work);
        pthread_mutex_unlock(&comm.mu);
        pthread_join(comm.thread, NULL);
        comm.started = false;
    }
    free(comm.scratch);
    comm.scratch = NULL;
    comm.scratch_n = 0;
    if (using_mpi) MPI_Finalize();
    using_mpi = 0;
}

void dist_abort(int code) {
    if (using_mpi && world_size > 1) MPI_Abort(MPI_COMM_WORLD, code);
}

int dist_broadcast(void *buf, size_t bytes) {
    if (world_size == 1) return 0;
    for (size_t at = 0; at < bytes;) {
        int chunk = bytes - at > (1u << 30) ? 1 << 30 : (int)(bytes - at);
        MPI_CHECK(MPI_Bcast((char *)buf + at, chunk, MPI_BYTE, 0, MPI_COMM_WORLD));
        at += (size_t)chunk;
    }
    return 0;
}

int dist_check_same(uint64_t value, const char *what) {
    if (world_size == 1) return 0;
    uint64_t *all = malloc((size_t)world_size * sizeof *all);
    if (!all) return err_set("rank %d: out of host memory comparing the %s", world_rank, what);
    int rc = MPI_Allgather(&value, 1, MPI_UINT64_T, all, 1, MPI_UINT64_T, MPI_COMM_WORLD);
    if (rc != MPI_SUCCESS) {
        free(all);
        return mpi_fail(rc, "MPI_Allgather");
    }
    int differs = -1;
    for (int r = 1; r < world_size && differs < 0; r++)
        if (all[r] != all[0]) differs = r;
    uint64_t theirs = differs >= 0 ? all[differs] : 0, root = all[0];
    free(all);
    if (differs >= 0)
        return err_set("rank %d's %s differs from rank 0's (%016llx vs %016llx): every rank must run the same. "
                       "HINT: give every rank the same config file, --set options and dataset", differs, what,
                       (unsigned long long)theirs, (unsigned long long)root);
    return 0;
}

#else /* built without MPI: always a world of one */

int dist_init(void) {
    int n = launched_size();
    if (n > 1)
        return err_set("started as one of %d MPI processes, but this nostall was built without MPI. HINT: "
                       "install libopenmpi-dev (make setup does) and rebuild", n);
    return 0;
}
int dist_configure(int comm_latency_us, double comm_gbps, int deadline_s) {
    (void)comm_latency_us, (void)comm_gbps, (void)deadline_s;
    return 0;
}
void dist_finalize(void) {}
void dist_abort(int code) { (void)code; }
int dist_agree(int64_t step, float loss, bool stop, float *mean_loss, bool *any_stop) {
    (void)step;
    *mean_loss = loss;
    *any_stop = stop;
    return 0;
}
int dist_reduce_start(float *buf, size_t n) { (void)buf, (void)n; return 0; }
int dist_reduce_wait(int64_t *wait_ns, int64_t *comm_ns) { *wait_ns = *comm_ns = 0; return 0; }
int dist_last_buckets(int64_t *start_ns, int64_t *end_ns, int max) { (void)start_ns, (void)end_ns, (void)max; return 0; }
int dist_gather(const void *mine, size_t len, void **all, size_t *lens) {
    if (!(*all = malloc(len ? len : 1))) return err_set("out of host memory");
    memcpy(*all, mine, len);
    lens[0] = len;
    return 0;
}
int dist_broadcast(void *buf, size_t bytes) { (void)buf, (void)bytes; return 0; }
int dist_check_same(uint64_t value, const char *what) { (void)value, (void)what; return 0; }

#endif
