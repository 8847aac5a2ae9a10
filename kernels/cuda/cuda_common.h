// cuda_common.h — what every CUDA source of the backend shares: the process-wide
// context (device, the two streams, the cuBLAS and cuDNN handles, a scratch buffer),
// the checks that turn a failed call into a message, and launch helpers.
// C++ only; the C side sees kernels/cuda/cuda_backend.h.
#ifndef NS_CUDA_COMMON_H
#define NS_CUDA_COMMON_H

#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <stddef.h>
#include <stdint.h>
#if NS_HAVE_CUDNN
#include <cudnn.h>
#endif

extern "C" {
#include "backend.h"
#include "error.h"
}
#include "km_math.h"

// ---- the context ---------------------------------------------------------------
// One per process, made by cuda_backend_get (cuda_context.cu) on device 0. Every
// kernel of both tables runs on stream[STREAM_COMPUTE]; both streams are
// non-blocking, so nothing here may use the legacy default stream (no plain
// cudaMemcpy/cudaMemset): it would not order against them.
struct cu_context {
    int sm_count;
    cudaStream_t stream[2];
    cublasHandle_t blas;
#if NS_HAVE_CUDNN
    cudnnHandle_t dnn;  // NULL when cuDNN could not be initialised (cu_dnn_init)
#endif
    bool tf32;
    void *scratch;        // see cu_scratch
    size_t scratch_bytes;
};
extern cu_context cu;

static inline cudaStream_t cu_compute(void) { return cu.stream[STREAM_COMPUTE]; }

// A device buffer of at least `bytes` for a kernel's intermediate results (the
// per-block partial sums of a reduction). It lives as long as the process and only
// grows, so after the first step of a training run it never allocates; growing
// frees the old one, which cudaFree orders after the work that used it.
// NULL (recorded as an error) if the device is out of memory.
void *cu_scratch(size_t bytes);

// ---- errors ----------------------------------------------------------------------
// Kernels can't fail (backend.h), so a failing call inside a void entry is
// recorded: err_set on the calling thread, and the process-wide first error that
// cuda_backend_error() returns, printed once to stderr. Entries that can fail
// (alloc, event_create) return NULL with err_set as backend.h says.
void cu_record(const char *fmt, ...) NS_PRINTF(1, 2);

bool cu_ok_cuda(cudaError_t e, const char *call, const char *file, int line);
bool cu_ok_cublas(cublasStatus_t s, const char *call, const char *file, int line);
#if NS_HAVE_CUDNN
bool cu_ok_cudnn(cudnnStatus_t s, const char *call, const char *file, int line);
#endif

// Each evaluates the call once and is true when it succeeded.
#define CU_OK(call) cu_ok_cuda((call), #call, __FILE__, __LINE__)
#define CUBLAS_OK(call) cu_ok_cublas((call), #call, __FILE__, __LINE__)
#define CUDNN_OK(call) cu_ok_cudnn((call), #call, __FILE__, __LINE__)

// ---- launches ------------------------------------------------------------------
// CU_LAUNCH(kernel, grid, block, args...) is kernel<<<grid, block, 0, compute>>>(args):
// every launch of both tables goes to the compute stream without dynamic shared
// memory. It is a macro so that the emulated device of the tests (kernels/emu/) can run
// the same source on the CPU, where <<<>>> is not C++: there it queues the kernel on
// the emulated stream, its arguments evaluated at the launch, as CUDA does.
#if NS_EMU
#define CU_LAUNCH(kernel, grid, block, ...) \
    emu_launch(#kernel, dim3(grid), dim3(block), cu_compute(), kernel, __VA_ARGS__)
#else
#define CU_LAUNCH(kernel, grid, block, ...) kernel<<<grid, block, 0, cu_compute()>>>(__VA_ARGS__)
#endif

// After a launch: a bad configuration shows at once in cudaGetLastError; a
// fault inside the kernel shows at the next synchronizing call, which then names
// itself, with a hint to rerun under compute-sanitizer.
#define CU_LAUNCHED(name) cu_ok_cuda(cudaGetLastError(), "launch of " name, __FILE__, __LINE__)

// ---- launch geometry ------------------------------------------------------------
enum { CU_THREADS = 256 };

// Blocks for one thread per element: ceil(n / threads). Grids are capped at 2^31-1
// blocks, so more than ~5e11 elements is recorded as an error and gives 0 blocks.
unsigned cu_blocks(size_t n, unsigned threads);
// Blocks for a grid-stride loop: enough to fill every SM a few times over.
unsigned cu_stride_blocks(size_t n, unsigned threads);

// Launches `kernel` with one thread per element of an n-element output on the compute
// stream; nothing when n is 0.
#define CU_LAUNCH_PER_ELEMENT(kernel, n, ...)                                            \
    do {                                                                                 \
        unsigned blocks_ = cu_blocks((n), CU_THREADS);                                   \
        if (blocks_) {                                                                   \
            CU_LAUNCH(kernel, blocks_, CU_THREADS, __VA_ARGS__);                         \
            CU_LAUNCHED(#kernel);                                                        \
        }                                                                                \
    } while (0)

// normalize_u8's per-channel constants travel by value in the kernel's parameters
// (they are host arrays); more channels than this go in groups, one launch each.
enum { NS_NORM_MAX_CH = 64 };
struct km_norm_params {
    int c0, cn;  // channels [c0, c0 + cn) of this launch
    float mean[NS_NORM_MAX_CH], std[NS_NORM_MAX_CH];
};

// The launch for the group of channels from c0, of c in all; mean, std (c) on the host.
static inline struct km_norm_params cu_norm_params(int c0, int c, const float *mean,
                                                   const float *std) {
    struct km_norm_params p;
    p.c0 = c0;
    p.cn = c - c0 < NS_NORM_MAX_CH ? c - c0 : NS_NORM_MAX_CH;
    for (int j = 0; j < p.cn; j++) {
        p.mean[j] = mean[c0 + j];
        p.std[j] = std[c0 + j];
    }
    return p;
}

// The flat index of this thread over the whole grid, and the grid's size.
__device__ static inline size_t cu_tid(void) {
    return (size_t)blockIdx.x * blockDim.x + threadIdx.x;
}
__device__ static inline size_t cu_nthreads(void) { return (size_t)gridDim.x * blockDim.x; }

// ---- reductions ------------------------------------------------------------------
__device__ static inline float cu_warp_sum(float v) {
    for (int off = 16; off > 0; off >>= 1) v += __shfl_down_sync(0xffffffffu, v, off);
    return v;
}
__device__ static inline double cu_warp_sum_d(double v) {
    for (int off = 16; off > 0; off >>= 1) v += __shfl_down_sync(0xffffffffu, v, off);
    return v;
}
__device__ static inline float cu_warp_max(float v) {
    for (int off = 16; off > 0; off >>= 1) v = fmaxf(v, __shfl_down_sync(0xffffffffu, v, off));
    return v;
}

// Sum of v over the block (blockDim.x a multiple of 32, at most 1024); the result
// is valid in thread 0. Every thread of the block must call it. The order of the
// additions is fixed by the block shape, so the result is reproducible.
__device__ static inline float cu_block_sum(float v) {
    __shared__ float warp_sums[32];
    int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    v = cu_warp_sum(v);
    __syncthreads();  // warp_sums may still be read by a previous call
    if (lane == 0) warp_sums[warp] = v;
    __syncthreads();
    v = threadIdx.x < blockDim.x / 32 ? warp_sums[lane] : 0.0f;
    if (warp == 0) v = cu_warp_sum(v);
    return v;
}
__device__ static inline double cu_block_sum_d(double v) {
    __shared__ double warp_sums_d[32];
    int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    v = cu_warp_sum_d(v);
    __syncthreads();
    if (lane == 0) warp_sums_d[warp] = v;
    __syncthreads();
    v = threadIdx.x < blockDim.x / 32 ? warp_sums_d[lane] : 0.0;
    if (warp == 0) v = cu_warp_sum_d(v);
    return v;
}

// ---- entries both tables share (cuda_context.cu, cuda_shared.cu) ---------------
void *cu_alloc(size_t bytes);
void cu_free(void *p);
void cu_zero(void *p, size_t bytes);
void cu_copy(void *dst, const void *src, size_t bytes, enum copy_kind kind);
void cu_sync(void);
extern const struct copy_stage cu_copy_stage;

void cu_maxpool_fwd(const struct pool_geom *g, const float *x, float *y, int32_t *idx);
void cu_maxpool_bwd(const struct pool_geom *g, const int32_t *idx, const float *dy, float *dx);
void cu_avgpool_fwd(const struct pool_geom *g, const float *x, float *y);
void cu_avgpool_bwd(const struct pool_geom *g, const float *dy, float *dx);
void cu_softmax_xent_bwd(int n, int k, const float *probs, const int32_t *labels,
                         const float *dloss, float *dlogits);
void cu_argmax_correct(int n, int k, const float *logits, const int32_t *labels, float *correct);
void cu_bias_grad(int n, int k, int hw, const float *dy, float *dbias);

// row-major C (m,n) = alpha op(A) op(B) + beta C through cuBLAS (cuda_vectorized.cu);
// the im2col convolution uses it too.
void cu_gemm(bool ta, bool tb, int m, int n, int k, float alpha, const float *a, const float *b,
             float beta, float *c);

// ---- the vectorized convolution: cuDNN, falling back to im2col + cuBLAS for a shape
// (or for all) when cuDNN can't run it (cuda_conv_cudnn.cu), or, in a CUDNN=0 build,
// im2col + cuBLAS alone (cuda_conv_im2col.cu); same names either way. The workspace
// is for the path that will run the shape.
size_t cu_conv2d_workspace(const struct conv_geom *g);
void cu_conv2d_fwd(const struct conv_geom *g, const float *x, const float *w, const float *bias,
                   float *y, void *ws);
// dx += ..., or dx = ... (dx not read) when !acc
void cu_conv2d_bwd_data(const struct conv_geom *g, const float *dy, const float *w, float *dx,
                        bool acc, void *ws);
void cu_conv2d_bwd_filter(const struct conv_geom *g, const float *x, const float *dy, float *dw,
                          float *dbias, void *ws);
// Called when TF32 is switched, so cached algorithm choices are made again.
void cu_conv_forget(void);

// im2col + cuBLAS (cuda_conv_im2col.cu), in every build: the entries above in a
// CUDNN=0 build, cuDNN's fallback otherwise. cu_im2col_workspace is what they need;
// each is told how many bytes `ws` holds, and when that is less (a shape whose
// workspace was asked for cuDNN, which then failed) it borrows cu_scratch instead.
size_t cu_im2col_workspace(const struct conv_geom *g);
void cu_im2col_fwd(const struct conv_geom *g, const float *x, const float *w, const float *bias,
                   float *y, void *ws, size_t ws_bytes);
void cu_im2col_bwd_data(const struct conv_geom *g, const float *dy, const float *w, float *dx,
                        bool acc, void *ws, size_t ws_bytes);
void cu_im2col_bwd_filter(const struct conv_geom *g, const float *x, const float *dy, float *dw,
                          float *dbias, void *ws, size_t ws_bytes);

#if NS_HAVE_CUDNN
// cuDNN's part of the context (cuda_conv_cudnn.cu). cu_dnn_init never fails the
// context: when cuDNN can't be had it prints one line saying why, leaves cu.dnn NULL
// and the convolutions run im2col. cu_dnn_release destroys the handle and the plans.
void cu_dnn_init(void);
void cu_dnn_release(void);
#endif

// The tables' contents, filled in by the flavour files.
void cu_fill_loop_table(struct backend *b);
void cu_fill_vectorized_table(struct backend *b);

#endif
