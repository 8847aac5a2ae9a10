// emu_blas.cpp — cuBLAS on the emulated device: a reference GEMM on the handle's
// stream, checking what cuBLAS checks and that every matrix lies in one device
// allocation. Tests only (see cublas_v2.h here).
#include <string.h>

#include "cublas_v2.h"
#include "emu_internal.h"

// ---- cuBLAS: a reference GEMM on the handle's stream ------------------------------------

struct emu_blas {
    cudaStream_t stream = NULL;
    bool tf32 = false;
};

std::atomic<int> emu_live_blas{0};

cublasStatus_t cublasCreate(cublasHandle_t *h) {
    if (emu_fails("cublasCreate")) return CUBLAS_STATUS_ALLOC_FAILED;
    *h = new emu_blas;
    emu_live_blas++;
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasDestroy(cublasHandle_t h) {
    if (!h || emu_fails("cublasDestroy")) return CUBLAS_STATUS_NOT_INITIALIZED;
    delete h;
    emu_live_blas--;
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasSetStream(cublasHandle_t h, cudaStream_t s) {
    if (emu_fails("cublasSetStream")) return CUBLAS_STATUS_NOT_INITIALIZED;
    if (!h) return CUBLAS_STATUS_NOT_INITIALIZED;
    h->stream = s;
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasSetMathMode(cublasHandle_t h, cublasMath_t mode) {
    if (emu_fails("cublasSetMathMode")) return CUBLAS_STATUS_NOT_INITIALIZED;
    if (!h) return CUBLAS_STATUS_NOT_INITIALIZED;
    h->tf32 = mode == CUBLAS_TF32_TENSOR_OP_MATH;
    return CUBLAS_STATUS_SUCCESS;
}
const char *cublasGetStatusName(cublasStatus_t s) {
    switch (s) {
    case CUBLAS_STATUS_SUCCESS: return "CUBLAS_STATUS_SUCCESS";
    case CUBLAS_STATUS_NOT_INITIALIZED: return "CUBLAS_STATUS_NOT_INITIALIZED";
    case CUBLAS_STATUS_ALLOC_FAILED: return "CUBLAS_STATUS_ALLOC_FAILED";
    case CUBLAS_STATUS_INVALID_VALUE: return "CUBLAS_STATUS_INVALID_VALUE";
    case CUBLAS_STATUS_EXECUTION_FAILED: return "CUBLAS_STATUS_EXECUTION_FAILED";
    }
    return "CUBLAS_STATUS_UNKNOWN";
}
const char *cublasGetStatusString(cublasStatus_t s) {
    return s == CUBLAS_STATUS_INVALID_VALUE
               ? "an invalid value was used as an argument (emulated cuBLAS: sizes, leading "
                 "dimensions, or a matrix outside its device buffer)"
               : cublasGetStatusName(s);
}

// float rounded to TF32: 10 mantissa bits, to nearest, ties to even
static float tf32(float x) {
    uint32_t u;
    memcpy(&u, &x, 4);
    if ((u & 0x7f800000u) != 0x7f800000u) u = (u + 0xfffu + ((u >> 13) & 1u)) & ~0x1fffu;
    memcpy(&x, &u, 4);
    return x;
}

// A column-major (rows, cols) matrix with leading dimension ld lies in one buffer.
static bool matrix_ok(const float *p, int rows, int cols, int ld) {
    if (ld < (rows > 1 ? rows : 1)) return false;
    if (rows == 0 || cols == 0) return true;
    return emu_is_device_range(p, ((size_t)ld * (size_t)(cols - 1) + (size_t)rows) * sizeof(float));
}

cublasStatus_t cublasSgemm(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int m,
                           int n, int k, const float *alpha, const float *a, int lda,
                           const float *b, int ldb, const float *beta, float *c, int ldc) {
    if (!h) return CUBLAS_STATUS_NOT_INITIALIZED;
    if (m < 0 || n < 0 || k < 0) return CUBLAS_STATUS_INVALID_VALUE;
    if (m == 0 || n == 0) return CUBLAS_STATUS_SUCCESS;
    bool at = ta == CUBLAS_OP_T, bt = tb == CUBLAS_OP_T;
    float al = *alpha, be = *beta;  // host pointers, read at the call as cuBLAS does
    if ((k > 0 && (!matrix_ok(a, at ? k : m, at ? m : k, lda) ||
                   !matrix_ok(b, bt ? n : k, bt ? k : n, ldb))) ||
        !matrix_ok(c, m, n, ldc))
        return CUBLAS_STATUS_INVALID_VALUE;
    bool round = h->tf32;
    cudaError_t e = emu_enqueue(h->stream, [=] {
        if (emu_broken()) return;
        for (int j = 0; j < n; j++)
            for (int i = 0; i < m; i++) {
                double sum = 0;
                for (int p = 0; p < k; p++) {
                    float x = at ? a[p + (size_t)i * lda] : a[i + (size_t)p * lda];
                    float y = bt ? b[j + (size_t)p * ldb] : b[p + (size_t)j * ldb];
                    sum += round ? (double)tf32(x) * tf32(y) : (double)x * y;
                }
                float *out = &c[i + (size_t)j * ldc];
                *out = (float)(al * sum + (be == 0.0f ? 0.0 : (double)be * *out));
            }
    });
    return e == cudaSuccess ? CUBLAS_STATUS_SUCCESS : CUBLAS_STATUS_EXECUTION_FAILED;
}

