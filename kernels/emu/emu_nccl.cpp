// emu_nccl.cpp — the NCCL stand-in of the emulated device (nccl.h here): the same
// calls, run over MPI between the processes of an mpirun job. An all-reduce is queued
// on its stream like a kernel; when the stream reaches it, every rank's buffer is
// summed at rank 0 (in rank order, so every rank gets the same bits, as NCCL's
// all-reduce gives) and sent back.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "emu_internal.h"
#include "nccl.h"

#if NS_HAVE_MPI
#define OMPI_SKIP_MPICXX 1
#include <mpi.h>
#endif

struct emu_nccl_comm { int rank, world; };

const char *ncclGetErrorString(ncclResult_t r) {
    switch (r) {
    case ncclSuccess: return "no error";
    case ncclInvalidArgument: return "invalid argument (emulated NCCL)";
    case ncclInvalidUsage: return "invalid usage (emulated NCCL)";
    case ncclSystemError: return "system error (emulated NCCL: MPI)";
    default: return "internal error (emulated NCCL)";
    }
}

ncclResult_t ncclGetUniqueId(ncclUniqueId *id) {
    if (!id) return ncclInvalidArgument;
    memset(id, 0, sizeof *id);
    snprintf(id->internal, sizeof id->internal, "emu-nccl-%ld-%ld", (long)time(NULL), (long)clock());
    return ncclSuccess;
}

ncclResult_t ncclCommInitRank(ncclComm_t *comm, int nranks, ncclUniqueId id, int rank) {
    if (!comm || nranks < 1 || rank < 0 || rank >= nranks) return ncclInvalidArgument;
    int world = 1, me = 0;
#if NS_HAVE_MPI
    int up = 0;
    MPI_Initialized(&up);
    if (up) {
        MPI_Comm_size(MPI_COMM_WORLD, &world);
        MPI_Comm_rank(MPI_COMM_WORLD, &me);
    }
    if (world > 1) { // every rank must hold rank 0's id, as real NCCL requires
        ncclUniqueId root = id;
        if (MPI_Bcast(&root, (int)sizeof root, MPI_BYTE, 0, MPI_COMM_WORLD) != MPI_SUCCESS) return ncclSystemError;
        if (memcmp(&root, &id, sizeof id) != 0) return ncclInvalidUsage;
    }
#else
    (void)id;
#endif
    if (world != nranks || me != rank) return ncclInvalidUsage; // the stand-in's ranks are MPI's
    *comm = new emu_nccl_comm{rank, nranks};
    return ncclSuccess;
}

ncclResult_t ncclAllReduce(const void *sendbuf, void *recvbuf, size_t count, ncclDataType_t type,
                           ncclRedOp_t op, ncclComm_t comm, cudaStream_t stream) {
    if (!comm || type != ncclFloat || (op != ncclSum && op != ncclAvg) || sendbuf != recvbuf || count > (1u << 30))
        return ncclInvalidArgument; // nostall reduces in place, float, sum or mean
    if (!emu_is_device_range(recvbuf, count * sizeof(float))) return ncclInvalidArgument;
    float *buf = (float *)recvbuf;
    int world = comm->world;
    cudaError_t e = emu_enqueue(stream, [buf, count, op, world] {
#if NS_HAVE_MPI
        if (world > 1) {
            int me = 0;
            MPI_Comm_rank(MPI_COMM_WORLD, &me);
            if (MPI_Reduce(me ? buf : MPI_IN_PLACE, buf, (int)count, MPI_FLOAT, MPI_SUM, 0, MPI_COMM_WORLD) != MPI_SUCCESS ||
                MPI_Bcast(buf, (int)count, MPI_FLOAT, 0, MPI_COMM_WORLD) != MPI_SUCCESS)
                emu_fatal("emulated ncclAllReduce: MPI failed");
        }
#endif
        if (op == ncclAvg)
            for (size_t i = 0; i < count; i++) buf[i] /= (float)world;
    });
    return e == cudaSuccess ? ncclSuccess : ncclUnhandledCudaError;
}

ncclResult_t ncclCommDestroy(ncclComm_t comm) {
    delete comm;
    return ncclSuccess;
}
