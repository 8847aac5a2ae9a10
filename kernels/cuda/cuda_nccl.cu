// cuda_nccl.cu — data parallel on GPUs (backend.h's struct device_comm): NCCL's
// all-reduce on a communication stream of its own, ordered against the compute stream
// by events, so the averaging of one bucket runs while backward computes the next.
// One GPU per process; the communicator's id is made by rank 0 and handed to the
// others over MPI (src/dist). On the emulated device (tests) nccl.h is a stand-in that
// runs the same calls over MPI (kernels/emu/emu_nccl.cpp).
#include "cuda_common.h"

#if NS_HAVE_NCCL
#include <nccl.h>

static struct {
    ncclComm_t comm;
    cudaStream_t stream;
    cudaEvent_t computed, reduced;  // compute -> comm, comm -> compute
    bool joined;
} nc;

static bool nccl_ok(ncclResult_t r, const char *call) {
    if (r == ncclSuccess) return true;
    err_set("%s failed: %s", call, ncclGetErrorString(r));
    return false;
}
#define NCCL_OK(call) nccl_ok((call), #call)

static int nccl_make_id(void *id) {
    ncclUniqueId u;
    if (!NCCL_OK(ncclGetUniqueId(&u))) return -1;
    memcpy(id, &u, sizeof u);
    return 0;
}

static void nccl_leave(void) {
    if (!nc.joined) return;
    cudaStreamSynchronize(nc.stream);
    ncclCommDestroy(nc.comm);
    cudaEventDestroy(nc.computed);
    cudaEventDestroy(nc.reduced);
    cudaStreamDestroy(nc.stream);
    nc.joined = false;
}

static int nccl_join(int rank, int world, const void *id) {
    ncclUniqueId u;
    memcpy(&u, id, sizeof u);
    if (!CU_OK(cudaStreamCreateWithFlags(&nc.stream, cudaStreamNonBlocking)) ||
        !CU_OK(cudaEventCreateWithFlags(&nc.computed, cudaEventDisableTiming)) ||
        !CU_OK(cudaEventCreateWithFlags(&nc.reduced, cudaEventDisableTiming)))
        return err_wrap("rank %d: the communication stream: ", rank);
    if (!NCCL_OK(ncclCommInitRank(&nc.comm, world, u, rank))) return err_wrap("rank %d of %d: ", rank, world);
    nc.joined = true;
    return 0;
}

static int nccl_allreduce_mean(float *buf, size_t n) {
    // the bucket's gradients are queued on the compute stream: the comm stream waits for
    // them, averages, and the compute stream's next kernels (the optimizer) wait for that
    if (!CU_OK(cudaEventRecord(nc.computed, cu_compute())) || !CU_OK(cudaStreamWaitEvent(nc.stream, nc.computed, 0)) ||
        !NCCL_OK(ncclAllReduce(buf, buf, n, ncclFloat, ncclAvg, nc.comm, nc.stream)) ||
        !CU_OK(cudaEventRecord(nc.reduced, nc.stream)) || !CU_OK(cudaStreamWaitEvent(cu_compute(), nc.reduced, 0)))
        return -1;
    return 0;
}

extern "C" const struct device_comm cu_nccl_comm = {
    sizeof(ncclUniqueId), nccl_make_id, nccl_join, nccl_allreduce_mean, nccl_leave,
};
#endif
