// cuda_runtime.h of the emulated device — tests only, never in ./train.
//
// `make CUDA=emu` compiles kernels/cuda/*.cu as host C++ with this folder first on
// the include path, so the CUDA tables run on the CPU and test_cuda exercises them
// in every CI run, on machines without a GPU. What it gives the .cu files:
//
//  - device code: __global__/__device__ vanish; threadIdx, blockIdx, blockDim,
//    gridDim name the running thread; __shared__ is per block; __syncthreads is a
//    real barrier across the block's threads; warp shuffles exchange values between
//    the 32 lanes of a warp; atomics are atomic. A block's threads are fibers on the
//    stream's worker thread (emu.cpp): each runs until it reaches a barrier or a
//    shuffle, in an order set by emu_set_order, so a missing barrier gives a wrong
//    answer under one order or another every time, not by luck.
//  - the runtime: device memory is host memory with guard zones, checked when it is
//    freed and whenever a stream is waited for; fresh device memory is NaN bytes.
//    A stream is a worker thread that runs its queue later and in order; an event
//    completes when its stream reaches it; cudaStreamWaitEvent really holds one
//    stream until another reaches the event. Copies from page-locked memory read it
//    when the stream runs them, as DMA does, and emu_set_copy_delay_us makes them
//    late on purpose, so a protocol that reuses a buffer too early shows.
//  - the launch: CU_LAUNCH (cuda_common.h) calls emu_launch, which converts the
//    arguments to the kernel's parameter types at once and runs the kernel later.
//
// The legacy default stream is not emulated (nostall never uses it: a call that
// passes stream 0 fails with cudaErrorInvalidResourceHandle). cuDNN is not emulated:
// the emulated build uses the im2col convolution. cuBLAS is in cublas_v2.h.
#ifndef NS_EMU_CUDA_RUNTIME_H
#define NS_EMU_CUDA_RUNTIME_H

#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <functional>
#include <tuple>
#include <type_traits>
#include <utility>

#include "emu.h"

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
// One copy per OS thread; a stream's blocks run one after another on its worker
// thread and a block's fibers share that thread, so this is one copy per block.
#define __shared__ static thread_local

struct alignas(16) float4 {
    float x, y, z, w;
};
static inline float4 make_float4(float x, float y, float z, float w) { return float4{x, y, z, w}; }
struct uint3 {
    unsigned x, y, z;
};
struct dim3 {
    unsigned x, y, z;
    dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};

// ---- what a running thread sees ----------------------------------------------------
struct emu_thread_ctx {
    uint3 thread_idx, block_idx;
    dim3 block_dim, grid_dim;
};
extern thread_local const emu_thread_ctx *emu_cur;
#define threadIdx (emu_cur->thread_idx)
#define blockIdx (emu_cur->block_idx)
#define blockDim (emu_cur->block_dim)
#define gridDim (emu_cur->grid_dim)

void __syncthreads(void);
// The value `mine` of lane src_lane of the calling thread's warp; every live lane of
// the warp must call it (the _sync shuffles with a full mask).
uint64_t emu_warp_exchange(uint64_t mine, int src_lane);
// The calling thread's lane: its linear index in the block (x fastest) modulo 32.
unsigned emu_lane(void);

template <class T> static inline uint64_t emu_bits(T v) {
    static_assert(sizeof(T) <= 8, "a shuffle moves at most 8 bytes");
    uint64_t b = 0;
    memcpy(&b, &v, sizeof v);
    return b;
}
template <class T> static inline T emu_from_bits(uint64_t b) {
    T v;
    memcpy(&v, &b, sizeof v);
    return v;
}
void emu_check_mask(unsigned mask, const char *what);
template <class T> static inline T __shfl_sync(unsigned mask, T v, int src_lane) {
    emu_check_mask(mask, "__shfl_sync");
    return emu_from_bits<T>(emu_warp_exchange(emu_bits(v), src_lane & 31));
}
// As CUDA: a lane whose source would be past lane 31 keeps its own value.
template <class T> static inline T __shfl_down_sync(unsigned mask, T v, unsigned delta) {
    emu_check_mask(mask, "__shfl_down_sync");
    int lane = (int)emu_lane(), src = lane + (int)delta;
    return emu_from_bits<T>(emu_warp_exchange(emu_bits(v), src < 32 ? src : lane));
}

static inline unsigned atomicAdd(unsigned *p, unsigned v) {
    return __atomic_fetch_add(p, v, __ATOMIC_RELAXED);
}
static inline int atomicAdd(int *p, int v) { return __atomic_fetch_add(p, v, __ATOMIC_RELAXED); }
static inline float atomicAdd(float *p, float v) {
    float old, want;
    __atomic_load(p, &old, __ATOMIC_RELAXED);
    do {
        want = old + v;
    } while (!__atomic_compare_exchange(p, &old, &want, false, __ATOMIC_RELAXED, __ATOMIC_RELAXED));
    return old;
}

// ---- the runtime API: the part nostall calls ---------------------------------------
enum cudaError {
    cudaSuccess = 0,
    cudaErrorInvalidValue = 1,
    cudaErrorMemoryAllocation = 2,
    cudaErrorInvalidConfiguration = 9,
    cudaErrorNoDevice = 100,
    cudaErrorInvalidDevice = 101,
    cudaErrorInvalidResourceHandle = 400,
    cudaErrorNotReady = 600,
    cudaErrorIllegalAddress = 700,
    cudaErrorMisalignedAddress = 716,
    cudaErrorLaunchFailure = 719,
};
typedef enum cudaError cudaError_t;

struct emu_stream;
struct emu_event;
typedef emu_stream *cudaStream_t;
typedef emu_event *cudaEvent_t;

enum cudaMemcpyKind {
    cudaMemcpyHostToHost = 0,
    cudaMemcpyHostToDevice = 1,
    cudaMemcpyDeviceToHost = 2,
    cudaMemcpyDeviceToDevice = 3,
};
enum cudaMemoryType {
    cudaMemoryTypeUnregistered = 0,
    cudaMemoryTypeHost = 1,
    cudaMemoryTypeDevice = 2,
};
struct cudaPointerAttributes {
    enum cudaMemoryType type;
    int device;
    void *devicePointer, *hostPointer;
};
struct cudaDeviceProp {
    char name[256];
    size_t totalGlobalMem;
    int major, minor, multiProcessorCount;
};
enum cudaDeviceAttr { cudaDevAttrMultiProcessorCount = 16 };
enum {
    cudaStreamNonBlocking = 1,
    cudaEventBlockingSync = 1,
    cudaEventDisableTiming = 2,
    cudaHostAllocDefault = 0,
};

const char *cudaGetErrorName(cudaError_t e);
const char *cudaGetErrorString(cudaError_t e);
cudaError_t cudaGetLastError(void);
cudaError_t cudaGetDeviceCount(int *n);
cudaError_t cudaGetDeviceProperties(cudaDeviceProp *p, int device);
cudaError_t cudaDeviceGetAttribute(int *v, cudaDeviceAttr a, int device);
cudaError_t cudaSetDevice(int device);
cudaError_t cudaDeviceSynchronize(void);
cudaError_t cudaMemGetInfo(size_t *free_bytes, size_t *total_bytes);

cudaError_t cudaMalloc(void **p, size_t bytes);
cudaError_t cudaFree(void *p);
cudaError_t cudaHostAlloc(void **p, size_t bytes, unsigned flags);
cudaError_t cudaFreeHost(void *p);
cudaError_t cudaPointerGetAttributes(cudaPointerAttributes *a, const void *p);
cudaError_t cudaMemcpyAsync(void *dst, const void *src, size_t bytes, cudaMemcpyKind k,
                            cudaStream_t s);
cudaError_t cudaMemsetAsync(void *p, int value, size_t bytes, cudaStream_t s);

cudaError_t cudaStreamCreateWithFlags(cudaStream_t *s, unsigned flags);
cudaError_t cudaStreamDestroy(cudaStream_t s);
cudaError_t cudaStreamSynchronize(cudaStream_t s);
cudaError_t cudaStreamQuery(cudaStream_t s);
cudaError_t cudaStreamWaitEvent(cudaStream_t s, cudaEvent_t e, unsigned flags);

cudaError_t cudaEventCreateWithFlags(cudaEvent_t *e, unsigned flags);
cudaError_t cudaEventDestroy(cudaEvent_t e);
cudaError_t cudaEventRecord(cudaEvent_t e, cudaStream_t s);
cudaError_t cudaEventQuery(cudaEvent_t e);
cudaError_t cudaEventSynchronize(cudaEvent_t e);
cudaError_t cudaEventElapsedTime(float *ms, cudaEvent_t start, cudaEvent_t end);

// ---- launches ----------------------------------------------------------------------
// Queues body on stream s as a grid of grid x block threads; a bad configuration is
// the next cudaGetLastError, as a real launch's is.
void emu_enqueue_kernel(const char *name, dim3 grid, dim3 block, cudaStream_t s,
                        std::function<void()> body);
// The project's <<<grid, block, 0, s>>>(args): the arguments become the kernel's
// parameters now (by value, as CUDA copies them), the kernel runs when s reaches it.
bool emu_is_device_pointer(const void *p);
void emu_enqueue_fault(const char *name, cudaStream_t s, int param);
template <class T> static inline bool emu_param_ok(const T &v) {
    if constexpr (std::is_pointer<T>::value) return !v || emu_is_device_pointer((const void *)v);
    return true;
}
// Every pointer parameter must point into device or pinned memory (pointers inside a
// struct parameter are not seen); one that doesn't makes the kernel fault.
template <class... P, class... A>
static inline void emu_launch(const char *name, dim3 grid, dim3 block, cudaStream_t s,
                              void (*kernel)(P...), A &&...args) {
    std::tuple<P...> params(std::forward<A>(args)...);
    int bad = -1, i = 0;
    std::apply([&](const auto &...p) { ((bad < 0 && !emu_param_ok(p) ? bad = i : 0, ++i), ...); },
               params);
    if (bad >= 0) {
        emu_enqueue_fault(name, s, bad);
        return;
    }
    emu_enqueue_kernel(name, grid, block, s, [kernel, params] { std::apply(kernel, params); });
}

// The device's clock: the monotonic clock, in nanoseconds (%globaltimer).
uint64_t emu_global_ns(void);

#endif
