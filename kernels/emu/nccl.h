// nccl.h (emulated device) — the part of NCCL that kernels/cuda/cuda_nccl.cu calls,
// for the tests on a machine without GPUs, where real NCCL can't run (and refuses two
// ranks on one GPU anyway). The calls keep NCCL's contract: an all-reduce is queued on
// a stream and runs when the stream reaches it; every rank must pass rank 0's id. The
// ranks are the processes of an MPI job, and the reduction is done over MPI
// (emu_nccl.cpp); without MPI only a world of one can be made.
#ifndef NS_EMU_NCCL_H
#define NS_EMU_NCCL_H

#include <stddef.h>

#include "cuda_runtime.h"

typedef enum {
    ncclSuccess = 0, ncclUnhandledCudaError = 1, ncclSystemError = 2, ncclInternalError = 3,
    ncclInvalidArgument = 4, ncclInvalidUsage = 5
} ncclResult_t;
typedef enum { ncclFloat = 7 } ncclDataType_t;
typedef enum { ncclSum = 0, ncclAvg = 4 } ncclRedOp_t;
typedef struct { char internal[128]; } ncclUniqueId;
typedef struct emu_nccl_comm *ncclComm_t;

ncclResult_t ncclGetUniqueId(ncclUniqueId *id);
ncclResult_t ncclCommInitRank(ncclComm_t *comm, int nranks, ncclUniqueId id, int rank);
ncclResult_t ncclAllReduce(const void *sendbuf, void *recvbuf, size_t count, ncclDataType_t type,
                           ncclRedOp_t op, ncclComm_t comm, cudaStream_t stream);
ncclResult_t ncclCommDestroy(ncclComm_t comm);
const char *ncclGetErrorString(ncclResult_t r);

#endif
