// cuda_context.cu — the process-wide CUDA context, error recording, the memory
// entries, the copy stage (pinned memory, two streams, events, NVTX), and the
// public switches of cuda_backend.h.
#include <mutex>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#if __has_include(<nvtx3/nvToolsExt.h>)
#include <nvtx3/nvToolsExt.h>
#define NS_HAVE_NVTX 1
#else
#define NS_HAVE_NVTX 0
#endif

#include "cuda_backend.h"
#include "cuda_common.h"
#include "cuda_device.h"

cu_context cu;

// ---- errors ----------------------------------------------------------------------

static std::mutex first_error_lock;
static bool has_first_error;
static char first_error[1024];

void cu_record(const char *fmt, ...) {
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    err_set("%s", msg);
    std::lock_guard<std::mutex> hold(first_error_lock);
    if (has_first_error) return;
    has_first_error = true;
    snprintf(first_error, sizeof first_error, "%s", msg);
    fprintf(stderr, "nostall: CUDA error (the first; later ones are recorded, not printed): %s\n",
            msg);
}

// What to do about the errors a user can act on.
static const char *cuda_hint(cudaError_t e) {
    switch (e) {
    case cudaErrorMemoryAllocation:
        return " HINT: the GPU is out of memory; try a smaller batch or model.";
    case cudaErrorIllegalAddress:
    case cudaErrorLaunchFailure:
    case cudaErrorMisalignedAddress:
        return " HINT: a kernel touched memory it doesn't own, possibly one queued before this "
               "call; rerun under compute-sanitizer, or with CUDA_LAUNCH_BLOCKING=1, to find which.";
    case cudaErrorInvalidConfiguration:
        return " HINT: a launch asked for an impossible grid; report the shapes of the op.";
    default:
        return "";
    }
}

bool cu_ok_cuda(cudaError_t e, const char *call, const char *file, int line) {
    if (e == cudaSuccess) return true;
    cudaGetLastError();  // a non-sticky error would otherwise be reported again by the next launch
    cu_record("%s failed at %s:%d: %s (%s).%s", call, file, line, cudaGetErrorName(e),
              cudaGetErrorString(e), cuda_hint(e));
    return false;
}

bool cu_ok_cublas(cublasStatus_t s, const char *call, const char *file, int line) {
    if (s == CUBLAS_STATUS_SUCCESS) return true;
    cu_record("%s failed at %s:%d: %s (%s)", call, file, line, cublasGetStatusName(s),
              cublasGetStatusString(s));
    return false;
}

#if NS_HAVE_CUDNN
bool cu_ok_cudnn(cudnnStatus_t s, const char *call, const char *file, int line) {
    if (s == CUDNN_STATUS_SUCCESS) return true;
    char detail[256] = "";
    cudnnGetLastErrorString(detail, sizeof detail);
    cu_record("%s failed at %s:%d: %s%s%s", call, file, line, cudnnGetErrorString(s),
              detail[0] ? ": " : "", detail);
    return false;
}
#endif

extern "C" const char *cuda_backend_error(void) {
    std::lock_guard<std::mutex> hold(first_error_lock);
    return has_first_error ? first_error : NULL;
}

extern "C" void cuda_backend_clear_error(void) {
    std::lock_guard<std::mutex> hold(first_error_lock);
    has_first_error = false;
    first_error[0] = '\0';
}

// Waits for the compute stream only: a copy in flight on the copy stream is the
// next batch, and waiting for it would undo the overlap. A device fault breaks the
// whole context, so it shows on either stream.
extern "C" int cuda_backend_check(void) {
    CU_OK(cudaStreamSynchronize(cu_compute()));
    cudaError_t copy = cudaStreamQuery(cu.stream[STREAM_COPY]);
    if (copy == cudaErrorNotReady) cudaGetLastError();
    else CU_OK(copy);
    CU_OK(cudaGetLastError());
    const char *e = cuda_backend_error();
    return e ? err_set("%s", e) : 0;
}

// ---- launch geometry ---------------------------------------------------------------

unsigned cu_blocks(size_t n, unsigned threads) {
    size_t blocks = (n + threads - 1) / threads;
    if (blocks > 0x7fffffffu) {
        cu_record("a kernel over %zu elements needs %zu blocks, more than a grid holds (2^31-1)",
                  n, blocks);
        return 0;
    }
    return (unsigned)blocks;
}

unsigned cu_stride_blocks(size_t n, unsigned threads) {
    size_t want = (n + threads - 1) / threads, most = (size_t)cu.sm_count * 16;
    return (unsigned)(want < most ? want : most);
}

void *cu_scratch(size_t bytes) {
    if (bytes <= cu.scratch_bytes) return cu.scratch;
    size_t grown = cu.scratch_bytes * 2 > bytes ? cu.scratch_bytes * 2 : bytes;
    if (cu.scratch) CU_OK(cudaFree(cu.scratch));
    cu.scratch = NULL;
    cu.scratch_bytes = 0;
    if (!CU_OK(cudaMalloc(&cu.scratch, grown))) return NULL;
    cu.scratch_bytes = grown;
    return cu.scratch;
}

// ---- memory entries -------------------------------------------------------------

void *cu_alloc(size_t bytes) {
    void *p = NULL;
    cudaError_t e = cudaMalloc(&p, bytes ? bytes : 1);  // 0 bytes still gets a unique pointer
    if (e == cudaSuccess) return p;
    cudaGetLastError();
    size_t free_b = 0, total_b = 0;
    cudaMemGetInfo(&free_b, &total_b);
    cudaGetLastError();
    err_set("cuda alloc: cudaMalloc of %zu bytes (%.1f MiB) failed: %s (%s); cudaMemGetInfo: "
            "%zu bytes (%.1f MiB) free of %zu. HINT: try a smaller batch or model",
            bytes, bytes / 1048576.0, cudaGetErrorName(e), cudaGetErrorString(e), free_b,
            free_b / 1048576.0, total_b);
    return NULL;
}

void cu_free(void *p) {
    if (p) CU_OK(cudaFree(p));
}

void cu_zero(void *p, size_t bytes) {
    if (bytes) CU_OK(cudaMemsetAsync(p, 0, bytes, cu_compute()));
}

static bool host_is_pinned(const void *p) {
    cudaPointerAttributes a;
    if (cudaPointerGetAttributes(&a, p) != cudaSuccess) {
        cudaGetLastError();
        return false;
    }
    return a.type == cudaMemoryTypeHost;
}

// Ordered with the kernels on the compute stream. Like memcpy, it returns when the
// host side may be reused: a pageable source is staged before cudaMemcpyAsync
// returns, a page-locked one is read later by DMA, so that case waits; device to
// host always waits, since the caller reads the result next.
void cu_copy(void *dst, const void *src, size_t bytes, enum copy_kind kind) {
    if (bytes == 0) return;
    cudaMemcpyKind k = kind == COPY_H2D   ? cudaMemcpyHostToDevice
                       : kind == COPY_D2H ? cudaMemcpyDeviceToHost
                                          : cudaMemcpyDeviceToDevice;
    if (!CU_OK(cudaMemcpyAsync(dst, src, bytes, k, cu_compute()))) return;
    if (kind == COPY_D2H || (kind == COPY_H2D && host_is_pinned(src)))
        CU_OK(cudaStreamSynchronize(cu_compute()));
}

void cu_sync(void) {
    CU_OK(cudaStreamSynchronize(cu.stream[STREAM_COMPUTE]));
    CU_OK(cudaStreamSynchronize(cu.stream[STREAM_COPY]));
}

// ---- the copy stage ------------------------------------------------------------------

struct device_event {
    cudaEvent_t ev;
};

static cudaStream_t stream_of(enum stream_id s) {
    return cu.stream[s == STREAM_COPY ? STREAM_COPY : STREAM_COMPUTE];
}

static void *stage_pinned_alloc(size_t bytes) {
    void *p = NULL;
    cudaError_t e = cudaHostAlloc(&p, bytes ? bytes : 1, cudaHostAllocDefault);
    if (e == cudaSuccess) return p;
    cudaGetLastError();
    err_set("cudaHostAlloc of %zu bytes (%.1f MiB) of page-locked memory failed: %s (%s). "
            "HINT: lower loader.prefetch or the batch, or use loader.pinned = no",
            bytes, bytes / 1048576.0, cudaGetErrorName(e), cudaGetErrorString(e));
    return NULL;
}

static void stage_pinned_free(void *p) {
    if (p) CU_OK(cudaFreeHost(p));
}

static void stage_copy_h2d_async(void *dst, const void *src, size_t bytes, enum stream_id s) {
    if (bytes) CU_OK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, stream_of(s)));
}

// Timing stays enabled (the report's h2d and compute times come from event pairs).
// A host that waits on one sleeps instead of spinning on a core the loader's
// workers could use.
static struct device_event *stage_event_create(void) {
    struct device_event *e = (struct device_event *)malloc(sizeof *e);
    if (!e) {
        err_set("event_create: out of host memory");
        return NULL;
    }
    cudaError_t st = cudaEventCreateWithFlags(&e->ev, cudaEventBlockingSync);
    if (st == cudaSuccess) return e;
    cudaGetLastError();
    err_set("cudaEventCreateWithFlags failed: %s (%s)", cudaGetErrorName(st), cudaGetErrorString(st));
    free(e);
    return NULL;
}

static void stage_event_destroy(struct device_event *e) {
    if (!e) return;
    CU_OK(cudaEventDestroy(e->ev));
    free(e);
}

static void stage_event_record(struct device_event *e, enum stream_id s) {
    CU_OK(cudaEventRecord(e->ev, stream_of(s)));
}

static void stage_stream_wait_event(enum stream_id s, struct device_event *e) {
    CU_OK(cudaStreamWaitEvent(stream_of(s), e->ev, 0));
}

// A device that failed never completes anything: say done, so that nobody waits
// forever on it; the error is recorded.
static bool stage_event_done(struct device_event *e) {
    cudaError_t st = cudaEventQuery(e->ev);
    if (st == cudaErrorNotReady) {
        cudaGetLastError();
        return false;
    }
    CU_OK(st);
    return true;
}

static void stage_event_sync(struct device_event *e) { CU_OK(cudaEventSynchronize(e->ev)); }

// Waits for `end` to complete first, so the answer is there to read.
static float stage_event_elapsed_ms(struct device_event *start, struct device_event *end) {
    float ms = 0.0f;
    if (CU_OK(cudaEventSynchronize(end->ev))) CU_OK(cudaEventElapsedTime(&ms, start->ev, end->ev));
    return ms;
}

static void stage_range_push(const char *name) {
#if NS_HAVE_NVTX
    nvtxRangePushA(name);
#else
    (void)name;
#endif
}

static void stage_range_pop(void) {
#if NS_HAVE_NVTX
    nvtxRangePop();
#endif
}

const struct copy_stage cu_copy_stage = {
    stage_pinned_alloc,   stage_pinned_free,       stage_copy_h2d_async,
    stage_event_create,   stage_event_destroy,     stage_event_record,
    stage_stream_wait_event, stage_event_done,     stage_event_sync,
    stage_event_elapsed_ms, stage_range_push,      stage_range_pop,
};

// ---- the context and the tables -------------------------------------------------------

static std::mutex init_lock;
static int init_state;  // 0 not tried, 1 ready, -1 failed (init_error says why)
static char init_error[1024];

static void init_fail(const char *what, const char *name, const char *detail) {
    snprintf(init_error, sizeof init_error, "CUDA backend: %s failed: %s: %s", what, name, detail);
}
// Each jumps to context_init's one cleanup path when the call fails.
#define INIT_CUDA(call)                                                                      \
    do {                                                                                     \
        cudaError_t e_ = (call);                                                             \
        if (e_ != cudaSuccess) {                                                             \
            cudaGetLastError();                                                              \
            init_fail(#call, cudaGetErrorName(e_), cudaGetErrorString(e_));                  \
            goto fail;                                                                       \
        }                                                                                    \
    } while (0)
#define INIT_CUBLAS(call)                                                                    \
    do {                                                                                     \
        cublasStatus_t s_ = (call);                                                          \
        if (s_ != CUBLAS_STATUS_SUCCESS) {                                                   \
            init_fail(#call, cublasGetStatusName(s_), cublasGetStatusString(s_));            \
            goto fail;                                                                       \
        }                                                                                    \
    } while (0)

// Frees whatever the context holds, in the reverse order of context_init, skipping
// what was never made; the TF32 setting stays. Failures are ignored: there is
// nothing left to do about them.
static void context_release(void) {
    if (cu.scratch) cudaFree(cu.scratch);
#if NS_HAVE_CUDNN
    cu_dnn_release();
#endif
    if (cu.blas) cublasDestroy(cu.blas);
    for (int s = 1; s >= 0; s--)
        if (cu.stream[s]) cudaStreamDestroy(cu.stream[s]);
    cudaGetLastError();
    cu.scratch = NULL;
    cu.scratch_bytes = 0;
    cu.blas = NULL;
    cu.stream[0] = cu.stream[1] = NULL;
    cu.sm_count = 0;
}

// Makes the context; on a failure, says which call failed and frees what it made.
// cuDNN can't fail it (cu_dnn_init).
static int context_init(void) {
    char why[256];
    // What a call makes goes into cu only once the call succeeded, so the cleanup
    // never sees whatever a failed call left in its output.
    cudaStream_t compute, copy;
    cublasHandle_t blas;
    void *scratch;
    if (cuda_device_count(why, sizeof why) == 0) {
        snprintf(init_error, sizeof init_error, "no usable GPU: %s", why);
        return -1;
    }
    // Data parallel: one GPU per rank, chosen from the rank's place on its machine, which
    // the launcher says (Open MPI's mpirun, Slurm's srun); a lone process takes device 0.
    int gpus = cuda_device_count(why, sizeof why), device = 0;
    const char *local = getenv("OMPI_COMM_WORLD_LOCAL_RANK");
    if (!local) local = getenv("SLURM_LOCALID");
    if (local && gpus > 0) device = atoi(local) % gpus;
    INIT_CUDA(cudaSetDevice(device));
    INIT_CUDA(cudaDeviceGetAttribute(&cu.sm_count, cudaDevAttrMultiProcessorCount, device));
    INIT_CUDA(cudaStreamCreateWithFlags(&compute, cudaStreamNonBlocking));
    cu.stream[STREAM_COMPUTE] = compute;
    INIT_CUDA(cudaStreamCreateWithFlags(&copy, cudaStreamNonBlocking));
    cu.stream[STREAM_COPY] = copy;
    INIT_CUBLAS(cublasCreate(&blas));
    cu.blas = blas;
    INIT_CUBLAS(cublasSetStream(cu.blas, cu_compute()));
    INIT_CUBLAS(cublasSetMathMode(cu.blas, cu.tf32 ? CUBLAS_TF32_TENSOR_OP_MATH : CUBLAS_DEFAULT_MATH));
#if NS_HAVE_CUDNN
    cu_dnn_init();
#endif
    INIT_CUDA(cudaMalloc(&scratch, 1 << 20));
    cu.scratch = scratch;
    cu.scratch_bytes = 1 << 20;
    return 0;
fail:
    context_release();
    return -1;
}

#if NS_HAVE_NCCL
extern "C" const struct device_comm cu_nccl_comm; // cuda_nccl.cu
#endif

static struct backend table_of(enum kernel_flavour fl) {
    struct backend b;
    memset(&b, 0, sizeof b);
    b.dev = DEV_CUDA;
    b.flavour = fl;
    b.alloc = cu_alloc;
    b.free = cu_free;
    b.zero = cu_zero;
    b.copy = cu_copy;
    b.sync = cu_sync;
    b.stage = &cu_copy_stage;
#if NS_HAVE_NCCL
    b.comm = &cu_nccl_comm;
#endif
    b.check = cuda_backend_check;
    b.set_tf32 = cuda_set_tf32;
    if (fl == KF_LOOP) {
        b.name = "cuda-loop";
        cu_fill_loop_table(&b);
    } else {
        b.name = "cuda-vectorized";
        cu_fill_vectorized_table(&b);
    }
    return b;
}

extern "C" const struct backend cuda_loop_backend = table_of(KF_LOOP);
extern "C" const struct backend cuda_vectorized_backend = table_of(KF_VECTORIZED);

extern "C" const struct backend *cuda_backend_get(enum kernel_flavour fl) {
    std::lock_guard<std::mutex> hold(init_lock);
    if (init_state == 0) init_state = context_init() == 0 ? 1 : -1;
    if (init_state < 0) {
        err_set("%s", init_error);
        return NULL;
    }
    return fl == KF_LOOP ? &cuda_loop_backend : &cuda_vectorized_backend;
}

extern "C" void cuda_backend_reset_for_tests(void) {
    std::lock_guard<std::mutex> hold(init_lock);
    if (init_state == 1) {
        cudaDeviceSynchronize();
        context_release();
    }
    init_state = 0;
    init_error[0] = '\0';
}

extern "C" void cuda_set_tf32(bool on) {
    std::lock_guard<std::mutex> hold(init_lock);
    cu.tf32 = on;
    if (init_state == 1)
        CUBLAS_OK(cublasSetMathMode(cu.blas, on ? CUBLAS_TF32_TENSOR_OP_MATH : CUBLAS_DEFAULT_MATH));
    cu_conv_forget();
}

extern "C" bool cuda_tf32(void) { return cu.tf32; }

// ---- test and benchmark hooks --------------------------------------------------

__device__ static inline uint64_t global_ns(void) {
#if NS_EMU
    return emu_global_ns();  // the emulated device's clock (kernels/emu/)
#else
    uint64_t t;
    asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
    return t;
#endif
}

// one thread
__global__ static void spin_kernel(uint64_t ns) {
    uint64_t start = global_ns();
    while (global_ns() - start < ns) {
    }
}

extern "C" void cuda_spin_us(unsigned us) {
    CU_LAUNCH(spin_kernel, 1, 1, (uint64_t)us * 1000u);
    CU_LAUNCHED("spin_kernel");
}

__host__ __device__ static inline uint32_t checksum_term(uint8_t b, size_t i) {
    return (uint32_t)b * (uint32_t)(i % 251 + 1);
}

// bytes (n) -> *out += sum of terms; integer sums, so the order doesn't matter
__global__ static void checksum_kernel(const uint8_t *bytes, size_t n, uint32_t *out) {
    uint32_t sum = 0;
    for (size_t i = cu_tid(); i < n; i += cu_nthreads()) sum += checksum_term(bytes[i], i);
    atomicAdd(out, sum);
}

extern "C" void cuda_checksum_u8(const uint8_t *dev_bytes, size_t n, uint32_t *dev_out) {
    if (!CU_OK(cudaMemsetAsync(dev_out, 0, sizeof *dev_out, cu_compute()))) return;
    unsigned blocks = cu_stride_blocks(n, CU_THREADS);
    if (blocks == 0) return;
    CU_LAUNCH(checksum_kernel, blocks, CU_THREADS, dev_bytes, n, dev_out);
    CU_LAUNCHED("checksum_kernel");
}

extern "C" uint32_t cuda_checksum_host(const uint8_t *bytes, size_t n) {
    uint32_t sum = 0;
    for (size_t i = 0; i < n; i++) sum += checksum_term(bytes[i], i);
    return sum;
}
