/* vectorized.c — the fast CPU backend: its table, cpu_vectorized_backend (at the end),
 * and the entries short enough to sit with it: zeroing, the plain gemm and linear
 * through OpenBLAS, the elementwise ops in SIMD, pooling (the bodies are in
 * cpu_common.c) and the input's normalization, all spread over cpu_parallel's threads
 * (thread_pool.c). The convolutions, shifted GEMMs on a grid (no im2col) in explicit
 * SIMD, are in vec_conv.c; batch norm in vec_bn.c; what these files share in vec.h.
 * It computes what loop.c computes, to float32 tolerance (tests/test_kernels.c).
 *
 * OpenBLAS is called only from the caller's thread, outside any cpu_parallel job,
 * and threads itself as it sees fit; the convolutions don't use it (see
 * "convolution" in vec_conv.c for why). */
#include <cblas.h>
#include <string.h>

#include "cpu_common.h"
#include "km_math.h"
#include "vec.h"

/* ---- memory ----
 * Gradients that more than one backward adds to, and those of kernels that can
 * only add, are zeroed before their first use: in blocks, on all threads, rather
 * than as one memset on one. (The first writer of the others overwrites instead,
 * the `acc` flags of backend.h.) */
enum { ZERO_BLOCK = 1 << 18 };

struct zero_job { char *p; size_t bytes; };

static void zero_block(void *ctx, int task, int thread) {
    (void)thread;
    const struct zero_job *j = ctx;
    size_t at = (size_t)task * ZERO_BLOCK;
    memset(j->p + at, 0, j->bytes - at < ZERO_BLOCK ? j->bytes - at : ZERO_BLOCK);
}

void vec_zero(void *p, size_t bytes) {
    struct zero_job j = {p, bytes};
    cpu_parallel((int)((bytes + ZERO_BLOCK - 1) / ZERO_BLOCK), threads_for((double)bytes / 4), zero_block, &j);
}

/* ---- dense ---- */

// op(a) (m,k), op(b) (k,n) -> c (m,n) = alpha*op(a)op(b) + beta*c
static void vec_gemm(bool ta, bool tb, int m, int n, int k, float alpha, const float *a,
                     const float *b, float beta, float *c) {
    if (m == 0 || n == 0) return;
    /* leading dimensions of A and B as stored; BLAS wants at least 1 even when k == 0 */
    int lda = ta ? m : (k > 0 ? k : 1);
    int ldb = tb ? (k > 0 ? k : 1) : n;
    cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans,
                m, n, k, alpha, a, lda, b, ldb, beta, c, n);
}

/* ---- linear: gemms that OpenBLAS threads itself ---- */

// x (n,in), w (out,in), bias (out) or NULL -> y (n,out) = x w^T + bias
static void vec_linear_fwd(int n, int in, int out, const float *x, const float *w,
                           const float *bias, float *y) {
    if (bias)
        for (int i = 0; i < n; i++) memcpy(y + (size_t)i * out, bias, sizeof(float) * out);
    vec_gemm(false, true, n, out, in, 1.0f, x, w, bias ? 1.0f : 0.0f, y);
}

// x (n,in), w (out,in), dy (n,out) -> dx (n,in) +=, dw (out,in) +=, dbias (out) +=
// Any of dx, dw, dbias may be NULL when nobody wants that gradient.
static void vec_linear_bwd(int n, int in, int out, const float *x, const float *w,
                           const float *dy, float *dx, float *dw, float *dbias) {
    if (dx) vec_gemm(false, false, n, in, out, 1.0f, dy, w, 1.0f, dx);
    if (dw) vec_gemm(true, false, out, in, n, 1.0f, dy, x, 1.0f, dw);
    if (dbias)
        for (int i = 0; i < n; i++) cpu_axpy((size_t)out, 1.0f, dy + (size_t)i * out, dbias);
}

/* ---- elementwise: blocks of EW_BLOCK floats, a task each ---- */

enum { EW_BLOCK = 1 << 14 };

/* One block's body: a, b and y offset to the block; unused operands NULL. */
typedef void ew_body(size_t n, float alpha, const float *a, const float *b, float *y);

struct ew_job {
    ew_body *body;
    size_t n;
    float alpha;
    const float *a, *b;
    float *y;
};

static void ew_task(void *ctx, int task, int thread) {
    (void)thread;
    const struct ew_job *j = ctx;
    size_t lo = (size_t)task * EW_BLOCK, len = j->n - lo < EW_BLOCK ? j->n - lo : EW_BLOCK;
    j->body(len, j->alpha, j->a ? j->a + lo : NULL, j->b ? j->b + lo : NULL, j->y + lo);
}

static void ew_run(ew_body *body, size_t n, float alpha, const float *a, const float *b, float *y) {
    struct ew_job j = {body, n, alpha, a, b, y};
    cpu_parallel((int)((n + EW_BLOCK - 1) / EW_BLOCK), threads_for((double)n), ew_task, &j);
}

SIMD_CLONES
static void relu_body(size_t n, float alpha, const float *x, const float *unused, float *y) {
    (void)alpha, (void)unused;
#pragma omp simd
    for (size_t i = 0; i < n; i++) y[i] = km_relu(x[i]);
}

SIMD_CLONES
static void relu_bwd_body(size_t n, float alpha, const float *y, const float *dy, float *dx) {
    (void)alpha;
#pragma omp simd
    for (size_t i = 0; i < n; i++) dx[i] += km_relu_grad(y[i], dy[i]);
}

SIMD_CLONES
static void add_body(size_t n, float alpha, const float *a, const float *b, float *y) {
    (void)alpha;
#pragma omp simd
    for (size_t i = 0; i < n; i++) y[i] = a[i] + b[i];
}

SIMD_CLONES
static void axpy_body(size_t n, float alpha, const float *x, const float *unused, float *y) {
    (void)unused;
#pragma omp simd
    for (size_t i = 0; i < n; i++) y[i] += alpha * x[i];
}

// x (n) -> y (n)
static void vec_relu_fwd(size_t n, const float *x, float *y) { ew_run(relu_body, n, 0, x, NULL, y); }

// y (n), dy (n) -> dx (n) +=
static void vec_relu_bwd(size_t n, const float *y, const float *dy, float *dx) {
    ew_run(relu_bwd_body, n, 0, y, dy, dx);
}

// a (n), b (n) -> y (n)
static void vec_add_fwd(size_t n, const float *a, const float *b, float *y) {
    ew_run(add_body, n, 0, a, b, y);
}

// x (n), y (n): y += alpha*x
static void vec_axpy(size_t n, float alpha, const float *x, float *y) {
    ew_run(axpy_body, n, alpha, x, NULL, y);
}

/* ---- pooling: the bodies are in cpu_common.c, planes spread over the threads ---- */

static bool pool_parallel(const struct pool_geom *g) {
    return threads_for((double)g->n * g->c * g->oh * g->ow * g->size * g->size) > 1;
}

// x (n,c,h,w) -> y (n,c,oh,ow), idx (n,c,oh,ow)
static void vec_maxpool_fwd(const struct pool_geom *g, const float *x, float *y, int32_t *idx) {
    cpu_maxpool_fwd(g, x, y, idx, pool_parallel(g));
}

// idx (n,c,oh,ow), dy (n,c,oh,ow) -> dx (n,c,h,w) +=
static void vec_maxpool_bwd(const struct pool_geom *g, const int32_t *idx, const float *dy,
                            float *dx) {
    cpu_maxpool_bwd(g, idx, dy, dx, pool_parallel(g));
}

// x (n,c,h,w) -> y (n,c,oh,ow)
static void vec_avgpool_fwd(const struct pool_geom *g, const float *x, float *y) {
    cpu_avgpool_fwd(g, x, y, pool_parallel(g));
}

// dy (n,c,oh,ow) -> dx (n,c,h,w) +=
static void vec_avgpool_bwd(const struct pool_geom *g, const float *dy, float *dx) {
    cpu_avgpool_bwd(g, dy, dx, pool_parallel(g));
}

/* ---- input ---- */

struct normalize_job {
    int h, w, c;
    const uint8_t *src;
    const float *mean, *std;
    float *dst;
};

// image i: src (h,w,c) -> dst (c,h,w), a plane at a time, written contiguously
static void normalize_image(void *ctx, int i, int thread) {
    (void)thread;
    const struct normalize_job *j = ctx;
    size_t hw = (size_t)j->h * j->w;
    for (int ch = 0; ch < j->c; ch++) {
        const uint8_t *in = j->src + (size_t)i * hw * j->c + ch;
        float *out = j->dst + km_idx3(i, ch, 0, j->c, (int)hw);
        for (size_t p = 0; p < hw; p++) out[p] = km_normalize_u8(in[p * j->c], j->mean[ch], j->std[ch]);
    }
}

// src uint8 (n,h,w,c), mean (c), std (c) -> dst (n,c,h,w)
static void vec_normalize_u8(int n, int h, int w, int c, const uint8_t *src,
                             const float *mean, const float *std, float *dst) {
    struct normalize_job j = {h, w, c, src, mean, std, dst};
    cpu_parallel(n, threads_for((double)n * c * h * w), normalize_image, &j);
}

const struct backend cpu_vectorized_backend = {
    .name = "cpu-vectorized",
    .dev = DEV_CPU,
    .flavour = KF_VECTORIZED,
    CPU_COMMON_MEMORY_ENTRIES,
    CPU_COMMON_SHARED_ENTRIES,
    .zero = vec_zero,
    .axpy = vec_axpy,
    .relu_fwd = vec_relu_fwd,
    .relu_bwd = vec_relu_bwd,
    .add_fwd = vec_add_fwd,
    .gemm = vec_gemm,
    .conv2d_workspace = vec_conv2d_workspace,
    .conv2d_fwd = vec_conv2d_fwd,
    .conv2d_bwd_data = vec_conv2d_bwd_data,
    .conv2d_bwd_filter = vec_conv2d_bwd_filter,
    .linear_fwd = vec_linear_fwd,
    .linear_bwd = vec_linear_bwd,
    .bn_fwd_train = vec_bn_fwd_train,
    .bn_fwd_eval = vec_bn_fwd_eval,
    .bn_bwd = vec_bn_bwd,
    .bn_relu_fwd_train = vec_bn_relu_fwd_train,
    .bn_relu_bwd = vec_bn_relu_bwd,
    .maxpool_fwd = vec_maxpool_fwd,
    .maxpool_bwd = vec_maxpool_bwd,
    .avgpool_fwd = vec_avgpool_fwd,
    .avgpool_bwd = vec_avgpool_bwd,
    .normalize_u8 = vec_normalize_u8,
};
