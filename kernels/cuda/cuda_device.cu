// cuda_device.cu — device discovery. A binary built with CUDA must still run on a
// machine without a GPU or driver, so every failure here is a reason, not a crash.
#include <cuda_runtime.h>
#include <stdio.h>

#include "cuda_device.h"

extern "C" int cuda_device_count(char *why, size_t why_len) {
    int n = 0;
    cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess) {
        snprintf(why, why_len, "%s (%s)", cudaGetErrorString(e), cudaGetErrorName(e));
        cudaGetLastError();  // clear the sticky error so later probes start clean
        return 0;
    }
    if (n == 0) snprintf(why, why_len, "the CUDA runtime found no GPU");
    return n;
}

extern "C" int cuda_device_describe(char *buf, size_t len) {
    cudaDeviceProp p;
    cudaError_t e = cudaGetDeviceProperties(&p, 0);
    if (e != cudaSuccess) {
        snprintf(buf, len, "unknown GPU (%s)", cudaGetErrorString(e));
        return -1;
    }
    snprintf(buf, len, "%s (sm_%d%d, %.1f GiB)", p.name, p.major, p.minor,
             (double)p.totalGlobalMem / (1024.0 * 1024.0 * 1024.0));
    return 0;
}
