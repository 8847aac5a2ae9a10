// cublas_v2.h of the emulated device — tests only (see cuda_runtime.h here).
//
// The part nostall calls, served by a reference GEMM that runs on the handle's
// stream. It checks what cuBLAS checks (sizes, leading dimensions) and more: every
// matrix must lie inside one device allocation, so a wrong layout, transpose or
// leading dimension in the tables fails here instead of reading a neighbour. With
// TF32 math the inputs are rounded to TF32 (10 mantissa bits) first, as tensor
// cores do, so a test can see whether TF32 is really on.
#ifndef NS_EMU_CUBLAS_V2_H
#define NS_EMU_CUBLAS_V2_H

#include "cuda_runtime.h"

enum cublasStatus_t {
    CUBLAS_STATUS_SUCCESS = 0,
    CUBLAS_STATUS_NOT_INITIALIZED = 1,
    CUBLAS_STATUS_ALLOC_FAILED = 3,
    CUBLAS_STATUS_INVALID_VALUE = 7,
    CUBLAS_STATUS_EXECUTION_FAILED = 13,
};
enum cublasOperation_t { CUBLAS_OP_N = 0, CUBLAS_OP_T = 1 };
enum cublasMath_t { CUBLAS_DEFAULT_MATH = 0, CUBLAS_TF32_TENSOR_OP_MATH = 3 };

struct emu_blas;
typedef emu_blas *cublasHandle_t;

cublasStatus_t cublasCreate(cublasHandle_t *h);
cublasStatus_t cublasDestroy(cublasHandle_t h);
cublasStatus_t cublasSetStream(cublasHandle_t h, cudaStream_t s);
cublasStatus_t cublasSetMathMode(cublasHandle_t h, cublasMath_t mode);
const char *cublasGetStatusName(cublasStatus_t s);
const char *cublasGetStatusString(cublasStatus_t s);

// Column-major C (m, n) = alpha op(A) op(B) + beta C; C is not read when beta is 0.
cublasStatus_t cublasSgemm(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int m,
                           int n, int k, const float *alpha, const float *a, int lda,
                           const float *b, int ldb, const float *beta, float *c, int ldc);

#endif
