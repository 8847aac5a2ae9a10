/* dist.c — the world of processes (dist.h): none, or MPI. */
#include <stdlib.h>
#include <string.h>

#include "dist.h"
#include "error.h"

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

/* MPI's own words for an error code. */
static int mpi_fail(int code, const char *call) {
    char text[MPI_MAX_ERROR_STRING];
    int len = 0;
    MPI_Error_string(code, text, &len);
    return err_set("rank %d: %s failed: %.*s", world_rank, call, len, text);
}
#define MPI_CHECK(call) do { int rc_ = (call); if (rc_ != MPI_SUCCESS) return mpi_fail(rc_, #call); } while (0)

int dist_init(void) {
    if (launched_size() <= 0) return 0; /* a plain ./train: a world of one, MPI untouched */
    int provided;
    if (MPI_Init_thread(NULL, NULL, MPI_THREAD_FUNNELED, &provided) != MPI_SUCCESS)
        return err_set("MPI_Init_thread failed; the launcher's environment says this is an MPI job");
    /* errors come back as codes, so they are reported with the rank and the call */
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
    MPI_Comm_rank(MPI_COMM_WORLD, &world_rank);
    MPI_Comm_size(MPI_COMM_WORLD, &world_size);
    using_mpi = 1;
    return 0;
}

void dist_finalize(void) {
    if (using_mpi) MPI_Finalize();
    using_mpi = 0;
}

void dist_abort(int code) {
    if (using_mpi && world_size > 1) MPI_Abort(MPI_COMM_WORLD, code);
}

int dist_allreduce_mean(float *buf, size_t n) {
    if (world_size == 1) return 0;
    for (size_t at = 0; at < n;) { /* MPI counts are ints */
        int chunk = n - at > (1u << 30) ? 1 << 30 : (int)(n - at);
        MPI_CHECK(MPI_Reduce(world_rank ? buf + at : MPI_IN_PLACE, buf + at, chunk, MPI_FLOAT, MPI_SUM, 0,
                             MPI_COMM_WORLD));
        MPI_CHECK(MPI_Bcast(buf + at, chunk, MPI_FLOAT, 0, MPI_COMM_WORLD));
        at += (size_t)chunk;
    }
    float scale = 1.0f / (float)world_size;
    for (size_t i = 0; i < n; i++) buf[i] *= scale;
    return 0;
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
    (void)value;
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
void dist_finalize(void) {}
void dist_abort(int code) { (void)code; }
int dist_allreduce_mean(float *buf, size_t n) { (void)buf; (void)n; return 0; }
int dist_broadcast(void *buf, size_t bytes) { (void)buf; (void)bytes; return 0; }
int dist_check_same(uint64_t value, const char *what) { (void)value; (void)what; return 0; }

#endif
