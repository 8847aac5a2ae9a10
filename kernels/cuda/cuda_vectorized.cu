// cuda_vectorized.cu — the fast CUDA table: cuBLAS for gemm and linear, cuDNN (or
// im2col + cuBLAS) for convolution (cuda_conv_*.cu), and our own kernels where a
// library has nothing fused to offer: elementwise ops and the SGD step four floats
// at a time, batch norm and the loss as block and warp reductions.
// It computes what cuda_loop.cu computes, to float32 tolerance (tests/test_cuda.c).
#include <stdint.h>

#include "cuda_common.h"
#include "km_elem.h"

// ---- dense -------------------------------------------------------------------------

// c (total) = beta*c, and 0 where beta == 0 (c may hold NaN then)
__global__ static void scale_kernel(size_t total, float beta, float *c) {
    for (size_t i = cu_tid(); i < total; i += cu_nthreads()) c[i] = beta == 0.0f ? 0.0f : beta * c[i];
}

// op(a) (m,k), op(b) (k,n) -> c (m,n) = alpha*op(a)op(b) + beta*c, row-major.
// cuBLAS is column-major, and a row-major matrix read column-major is its
// transpose, so this asks for c^T = op(b)^T op(a)^T: the same call with the
// operands swapped and m, n swapped.
void cu_gemm(bool ta, bool tb, int m, int n, int k, float alpha, const float *a, const float *b,
             float beta, float *c) {
    if (m <= 0 || n <= 0) return;
    if (k == 0) {  // no products: BLAS would only scale c, which we do ourselves
        size_t total = (size_t)m * n;
        CU_LAUNCH(scale_kernel, cu_stride_blocks(total, CU_THREADS), CU_THREADS, total,
                                                                                        beta, c);
        CU_LAUNCHED("scale_kernel");
        return;
    }
    int lda = ta ? m : k, ldb = tb ? k : n;
    CUBLAS_OK(cublasSgemm(cu.blas, tb ? CUBLAS_OP_T : CUBLAS_OP_N, ta ? CUBLAS_OP_T : CUBLAS_OP_N,
                          n, m, k, &alpha, b, ldb, a, lda, &beta, c, n));
}

// ---- elementwise: four floats per load where the pointers allow ---------------------

static bool aligned16(const void *p) { return ((uintptr_t)p & 15u) == 0; }

// Applies op to elements [0, n): as float4 quads [0, quads), then one by one.
template <class Op> __global__ static void map_kernel(size_t n, size_t quads, Op op) {
    for (size_t q = cu_tid(); q < quads; q += cu_nthreads()) op.quad(q);
    for (size_t i = quads * 4 + cu_tid(); i < n; i += cu_nthreads()) op.one(i);
}

// Quads only when every pointer is 16-byte aligned (cudaMalloc gives 256; a view
// into a buffer may not).
template <class Op> static void launch_map(const char *name, size_t n, bool aligned, Op op) {
    size_t quads = aligned ? n / 4 : 0;
    unsigned blocks = cu_stride_blocks(quads ? quads : n, CU_THREADS);
    if (!blocks) return;
    CU_LAUNCH(map_kernel<Op>, blocks, CU_THREADS, n, quads, op);
    cu_ok_cuda(cudaGetLastError(), name, __FILE__, __LINE__);
}

#define QUAD(p, q) (reinterpret_cast<float4 *>(p)[q])
#define CQUAD(p, q) (reinterpret_cast<const float4 *>(p)[q])

// x (n), y (n): y += alpha*x
struct axpy_op {
    float alpha;
    const float *x;
    float *y;
    __device__ void one(size_t i) const { y[i] += alpha * x[i]; }
    __device__ void quad(size_t q) const {
        float4 a = CQUAD(x, q), b = QUAD(y, q);
        b.x += alpha * a.x, b.y += alpha * a.y, b.z += alpha * a.z, b.w += alpha * a.w;
        QUAD(y, q) = b;
    }
};

static void vec_axpy(size_t n, float alpha, const float *x, float *y) {
    launch_map("axpy", n, aligned16(x) && aligned16(y), axpy_op{alpha, x, y});
}

// x (n) -> y (n)
struct relu_op {
    const float *x;
    float *y;
    __device__ void one(size_t i) const { y[i] = km_relu(x[i]); }
    __device__ void quad(size_t q) const {
        float4 a = CQUAD(x, q);
        QUAD(y, q) = make_float4(km_relu(a.x), km_relu(a.y), km_relu(a.z), km_relu(a.w));
    }
};

static void vec_relu_fwd(size_t n, const float *x, float *y) {
    launch_map("relu_fwd", n, aligned16(x) && aligned16(y), relu_op{x, y});
}

// y (n), dy (n) -> dx (n) +=
struct relu_bwd_op {
    const float *y, *dy;
    float *dx;
    __device__ void one(size_t i) const { dx[i] += km_relu_grad(y[i], dy[i]); }
    __device__ void quad(size_t q) const {
        float4 a = CQUAD(y, q), d = CQUAD(dy, q), o = QUAD(dx, q);
        o.x += km_relu_grad(a.x, d.x), o.y += km_relu_grad(a.y, d.y);
        o.z += km_relu_grad(a.z, d.z), o.w += km_relu_grad(a.w, d.w);
        QUAD(dx, q) = o;
    }
};

static void vec_relu_bwd(size_t n, const float *y, const float *dy, float *dx) {
    launch_map("relu_bwd", n, aligned16(y) && aligned16(dy) && aligned16(dx),
               relu_bwd_op{y, dy, dx});
}

// a (n), b (n) -> y (n)
struct add_op {
    const float *a, *b;
    float *y;
    __device__ void one(size_t i) const { y[i] = a[i] + b[i]; }
    __device__ void quad(size_t q) const {
        float4 u = CQUAD(a, q), v = CQUAD(b, q);
        QUAD(y, q) = make_float4(u.x + v.x, u.y + v.y, u.z + v.z, u.w + v.w);
    }
};

static void vec_add_fwd(size_t n, const float *a, const float *b, float *y) {
    launch_map("add_fwd", n, aligned16(a) && aligned16(b) && aligned16(y), add_op{a, b, y});
}

// w, g, v (n): w and v updated in place, one fused pass over every parameter
struct sgd_op {
    float *w;
    const float *g;
    float *v;
    float lr, momentum, weight_decay;
    bool nesterov;
    __device__ void one(size_t i) const {
        km_sgd_update(&w[i], g[i], &v[i], lr, momentum, nesterov, weight_decay);
    }
    __device__ void quad(size_t q) const {
        float4 w4 = QUAD(w, q), g4 = CQUAD(g, q), v4 = QUAD(v, q);
        km_sgd_update(&w4.x, g4.x, &v4.x, lr, momentum, nesterov, weight_decay);
        km_sgd_update(&w4.y, g4.y, &v4.y, lr, momentum, nesterov, weight_decay);
        km_sgd_update(&w4.z, g4.z, &v4.z, lr, momentum, nesterov, weight_decay);
        km_sgd_update(&w4.w, g4.w, &v4.w, lr, momentum, nesterov, weight_decay);
        QUAD(w, q) = w4;
        QUAD(v, q) = v4;
    }
};

static void vec_sgd_step(size_t n, float *w, const float *g, float *v, float lr, float momentum,
                         bool nesterov, float weight_decay) {
    launch_map("sgd_step", n, aligned16(w) && aligned16(g) && aligned16(v),
               sgd_op{w, g, v, lr, momentum, weight_decay, nesterov});
}

// w, g, m, v (n): AdamW, one fused pass, four parameters a thread where aligned
struct adamw_op {
    float *w;
    const float *g;
    float *m, *v;
    float lr, beta1, beta2, eps, weight_decay, bc1, bc2_sqrt;
    __device__ void one(size_t i) const {
        km_adamw_update(&w[i], g[i], &m[i], &v[i], lr, beta1, beta2, eps, weight_decay, bc1, bc2_sqrt);
    }
    __device__ void quad(size_t q) const {
        float4 w4 = QUAD(w, q), g4 = CQUAD(g, q), m4 = QUAD(m, q), v4 = QUAD(v, q);
        km_adamw_update(&w4.x, g4.x, &m4.x, &v4.x, lr, beta1, beta2, eps, weight_decay, bc1, bc2_sqrt);
        km_adamw_update(&w4.y, g4.y, &m4.y, &v4.y, lr, beta1, beta2, eps, weight_decay, bc1, bc2_sqrt);
        km_adamw_update(&w4.z, g4.z, &m4.z, &v4.z, lr, beta1, beta2, eps, weight_decay, bc1, bc2_sqrt);
        km_adamw_update(&w4.w, g4.w, &m4.w, &v4.w, lr, beta1, beta2, eps, weight_decay, bc1, bc2_sqrt);
        QUAD(w, q) = w4;
        QUAD(m, q) = m4;
        QUAD(v, q) = v4;
    }
};

static void vec_adamw_step(size_t n, float *w, const float *g, float *m, float *v, float lr, float beta1,
                           float beta2, float eps, float weight_decay, float bc1, float bc2_sqrt) {
    launch_map("adamw_step", n, aligned16(w) && aligned16(g) && aligned16(m) && aligned16(v),
               adamw_op{w, g, m, v, lr, beta1, beta2, eps, weight_decay, bc1, bc2_sqrt});
}

// ---- linear ---------------------------------------------------------------------------

// bias (out) -> y (n,out), every row
__global__ static void broadcast_rows_kernel(size_t total, int out, const float *bias, float *y) {
    for (size_t i = cu_tid(); i < total; i += cu_nthreads()) y[i] = bias[i % out];
}

// x (n,in), w (out,in), bias (out) or NULL -> y (n,out) = x w^T + bias
static void vec_linear_fwd(int n, int in, int out, const float *x, const float *w,
                           const float *bias, float *y) {
    size_t total = (size_t)n * out;
    if (bias && total) {
        CU_LAUNCH(broadcast_rows_kernel, cu_stride_blocks(total, CU_THREADS), CU_THREADS, total, out, bias, y);
        CU_LAUNCHED("broadcast_rows_kernel");
    }
    cu_gemm(false, true, n, out, in, 1.0f, x, w, bias ? 1.0f : 0.0f, y);
}

// x (n,in), w (out,in), dy (n,out) -> dx (n,in) +=, dw (out,in) +=, dbias (out) +=
// Any of dx, dw, dbias may be NULL when nobody wants that gradient.
static void vec_linear_bwd(int n, int in, int out, const float *x, const float *w,
                           const float *dy, float *dx, float *dw, float *dbias) {
    if (dx) cu_gemm(false, false, n, in, out, 1.0f, dy, w, 1.0f, dx);
    if (dw) cu_gemm(true, false, out, in, n, 1.0f, dy, x, 1.0f, dw);
    if (dbias) cu_bias_grad(n, out, 1, dy, dbias);  // dy (n,out) is (n,k,hw) with hw = 1
}

// ---- batch norm ---------------------------------------------------------------------------
// A channel's m = n*hw values are split into `chunks` slices; block (ch, chunk)
// reduces its slice to partial sums in scratch; one thread per channel then adds
// the partials in order (in double) and finishes; a last elementwise pass
// normalizes, or forms dx. Fixed shapes, fixed order: reproducible results.

enum { BN_SLICE = 2048, BN_MAX_CHUNKS = 64 };

static int bn_chunks(long m) {
    long want = (m + BN_SLICE - 1) / BN_SLICE;
    return want < 1 ? 1 : want > BN_MAX_CHUNKS ? BN_MAX_CHUNKS : (int)want;
}

// x (n,c,hw) -> part (c,chunks,2) = per slice (sum d, sum d^2), d = x - x[0,ch,0].
// Sums about the channel's first value rather than 0 don't cancel catastrophically
// when the mean is large against the spread.
__global__ static void bn_stats_partial_kernel(int n, int c, int hw, const float *x, float *part) {
    int ch = blockIdx.x, chunk = blockIdx.y, chunks = gridDim.y;
    size_t m = (size_t)n * hw;
    float shift = x[km_idx3(0, ch, 0, c, hw)];
    float s = 0.0f, ss = 0.0f;
    for (size_t e = (size_t)chunk * blockDim.x + threadIdx.x; e < m; e += (size_t)chunks * blockDim.x) {
        float d = x[km_bn_at(e, ch, c, hw)] - shift;
        s += d;
        ss += d * d;
    }
    s = cu_block_sum(s);
    ss = cu_block_sum(ss);
    if (threadIdx.x == 0) {
        part[((size_t)ch * chunks + chunk) * 2] = s;
        part[((size_t)ch * chunks + chunk) * 2 + 1] = ss;
    }
}

// part (c,chunks,2) -> mean, invstd (c); running_mean, running_var (c) updated
__global__ static void bn_stats_finish_kernel(int n, int c, int hw, int chunks, const float *x,
                                              const float *part, float *mean, float *invstd,
                                              float *running_mean, float *running_var,
                                              float momentum, float eps) {
    size_t ch = cu_tid();
    if (ch >= (size_t)c) return;
    long m = (long)n * hw;
    double sum = 0.0, squares = 0.0;
    for (int j = 0; j < chunks; j++) {
        sum += part[(ch * chunks + j) * 2];
        squares += part[(ch * chunks + j) * 2 + 1];
    }
    double shifted_mean = sum / m, var_d = squares / m - shifted_mean * shifted_mean;
    float var = var_d > 0.0 ? (float)var_d : 0.0f;
    float mu = (float)(x[km_idx3(0, (int)ch, 0, c, hw)] + shifted_mean);
    km_bn_store_stats(mu, var, m, mean, invstd, running_mean, running_var, momentum, eps, (int)ch);
}

// x (n,c,hw), per-channel mean, invstd, gamma, beta -> y (n,c,hw)
__global__ static void bn_apply_kernel(size_t total, int c, int hw, const float *x,
                                       const float *mean, const float *invstd, const float *gamma,
                                       const float *beta, float *y) {
    for (size_t o = cu_tid(); o < total; o += cu_nthreads()) {
        int i, ch, j;
        km_unflatten3(o, c, hw, &i, &ch, &j);
        y[o] = km_bn_apply_at(c, hw, x, mean, invstd, gamma, beta, i, ch, j);
    }
}

static void vec_bn_fwd_train(int n, int c, int hw, const float *x, const float *gamma,
                             const float *beta, float *y, float *mean, float *invstd,
                             float *running_mean, float *running_var, float momentum,
                             float eps) {
    size_t total = (size_t)n * c * hw;
    if (total == 0) return;
    int chunks = bn_chunks((long)n * hw);
    float *part = (float *)cu_scratch(sizeof(float) * 2 * (size_t)c * chunks);
    if (!part) return;
    CU_LAUNCH(bn_stats_partial_kernel, dim3(c, chunks), CU_THREADS, n, c, hw, x, part);
    CU_LAUNCHED("bn_stats_partial_kernel");
    CU_LAUNCH(bn_stats_finish_kernel, cu_blocks(c, CU_THREADS), CU_THREADS,
        n, c, hw, chunks, x, part, mean, invstd, running_mean, running_var, momentum, eps);
    CU_LAUNCHED("bn_stats_finish_kernel");
    CU_LAUNCH(bn_apply_kernel, cu_stride_blocks(total, CU_THREADS), CU_THREADS,
        total, c, hw, x, mean, invstd, gamma, beta, y);
    CU_LAUNCHED("bn_apply_kernel");
}

// x (n,c,hw), gamma, beta, running_mean, running_var (c) -> y (n,c,hw)
__global__ static void bn_eval_kernel(size_t total, int c, int hw, const float *x,
                                      const float *gamma, const float *beta,
                                      const float *running_mean, const float *running_var,
                                      float eps, float *y) {
    for (size_t o = cu_tid(); o < total; o += cu_nthreads()) {
        int i, ch, j;
        km_unflatten3(o, c, hw, &i, &ch, &j);
        y[o] = km_bn_eval_at(c, hw, x, gamma, beta, running_mean, running_var, eps, i, ch, j);
    }
}

static void vec_bn_fwd_eval(int n, int c, int hw, const float *x, const float *gamma,
                            const float *beta, const float *running_mean,
                            const float *running_var, float eps, float *y) {
    size_t total = (size_t)n * c * hw;
    if (total == 0) return;
    CU_LAUNCH(bn_eval_kernel, cu_stride_blocks(total, CU_THREADS), CU_THREADS,
        total, c, hw, x, gamma, beta, running_mean, running_var, eps, y);
    CU_LAUNCHED("bn_eval_kernel");
}

// x, dy (n,c,hw), mean, invstd (c) -> part (c,chunks,2) = per slice (sum dy, sum dy*xhat)
__global__ static void bn_bwd_partial_kernel(int n, int c, int hw, const float *x, const float *dy,
                                             const float *mean, const float *invstd, float *part) {
    int ch = blockIdx.x, chunk = blockIdx.y, chunks = gridDim.y;
    size_t m = (size_t)n * hw;
    float mu = mean[ch], is = invstd[ch];
    float s = 0.0f, sx = 0.0f;
    for (size_t e = (size_t)chunk * blockDim.x + threadIdx.x; e < m; e += (size_t)chunks * blockDim.x) {
        size_t at = km_bn_at(e, ch, c, hw);
        s += dy[at];
        sx += dy[at] * ((x[at] - mu) * is);
    }
    s = cu_block_sum(s);
    sx = cu_block_sum(sx);
    if (threadIdx.x == 0) {
        part[((size_t)ch * chunks + chunk) * 2] = s;
        part[((size_t)ch * chunks + chunk) * 2 + 1] = sx;
    }
}

// part (c,chunks,2) -> sums (c,2); dgamma (c) += sum dy*xhat, dbeta (c) += sum dy
__global__ static void bn_bwd_finish_kernel(int c, int chunks, const float *part, float *sums,
                                            float *dgamma, float *dbeta) {
    size_t ch = cu_tid();
    if (ch >= (size_t)c) return;
    double sum_dy = 0.0, sum_dy_xhat = 0.0;
    for (int j = 0; j < chunks; j++) {
        sum_dy += part[(ch * chunks + j) * 2];
        sum_dy_xhat += part[(ch * chunks + j) * 2 + 1];
    }
    sums[2 * ch] = (float)sum_dy;
    sums[2 * ch + 1] = (float)sum_dy_xhat;
    dgamma[ch] += (float)sum_dy_xhat;
    dbeta[ch] += (float)sum_dy;
}

// x, dy (n,c,hw), gamma, mean, invstd, sums (c) -> dx (n,c,hw) += (= when !acc)
__global__ static void bn_bwd_dx_kernel(size_t total, int c, int hw, long m, const float *x,
                                        const float *dy, const float *gamma, const float *mean,
                                        const float *invstd, const float *sums, float *dx,
                                        bool acc) {
    for (size_t o = cu_tid(); o < total; o += cu_nthreads()) {
        int i, ch, j;
        km_unflatten3(o, c, hw, &i, &ch, &j);
        float v = km_bn_bwd_dx_at(c, hw, m, x, dy, gamma, mean, invstd, sums, i, ch, j);
        dx[o] = acc ? dx[o] + v : v;
    }
}

static void vec_bn_bwd(int n, int c, int hw, const float *x, const float *dy,
                       const float *gamma, const float *mean, const float *invstd, float *dx,
                       bool acc_dx, float *dgamma, float *dbeta) {
    size_t total = (size_t)n * c * hw;
    if (total == 0) return;
    int chunks = bn_chunks((long)n * hw);
    float *part = (float *)cu_scratch(sizeof(float) * 2 * (size_t)c * (chunks + 1));
    if (!part) return;
    float *sums = part + 2 * (size_t)c * chunks;
    CU_LAUNCH(bn_bwd_partial_kernel, dim3(c, chunks), CU_THREADS, n, c, hw, x, dy, mean,
                                                                           invstd, part);
    CU_LAUNCHED("bn_bwd_partial_kernel");
    CU_LAUNCH(bn_bwd_finish_kernel, cu_blocks(c, CU_THREADS), CU_THREADS,
        c, chunks, part, sums, dgamma, dbeta);
    CU_LAUNCHED("bn_bwd_finish_kernel");
    CU_LAUNCH(bn_bwd_dx_kernel, cu_stride_blocks(total, CU_THREADS), CU_THREADS,
        total, c, hw, (long)n * hw, x, dy, gamma, mean, invstd, sums, dx, acc_dx);
    CU_LAUNCHED("bn_bwd_dx_kernel");
}

// ---- global average pool ----------------------------------------------------------------

enum { WARPS_PER_BLOCK = CU_THREADS / 32 };

// x (planes,hw) -> y (planes); a warp per plane
__global__ static void gap_fwd_kernel(size_t planes, int hw, const float *x, float *y) {
    size_t p = cu_tid() / 32;
    int lane = threadIdx.x % 32;
    if (p >= planes) return;  // whole warps leave together
    float sum = 0.0f;
    for (int j = lane; j < hw; j += 32) sum += x[p * hw + j];
    sum = cu_warp_sum(sum);
    if (lane == 0) y[p] = sum / (float)hw;
}

static void vec_gap_fwd(int n, int c, int hw, const float *x, float *y) {
    size_t planes = (size_t)n * c;
    unsigned blocks = cu_blocks(planes, WARPS_PER_BLOCK);
    if (!blocks) return;
    CU_LAUNCH(gap_fwd_kernel, blocks, CU_THREADS, planes, hw, x, y);
    CU_LAUNCHED("gap_fwd_kernel");
}

// dy (planes) -> dx (planes,hw) +=
__global__ static void gap_bwd_kernel(size_t total, int hw, const float *dy, float *dx) {
    for (size_t o = cu_tid(); o < total; o += cu_nthreads()) dx[o] += dy[o / hw] / (float)hw;
}

static void vec_gap_bwd(int n, int c, int hw, const float *dy, float *dx) {
    size_t total = (size_t)n * c * hw;
    if (total == 0) return;
    CU_LAUNCH(gap_bwd_kernel, cu_stride_blocks(total, CU_THREADS), CU_THREADS, total, hw,
                                                                                      dy, dx);
    CU_LAUNCHED("gap_bwd_kernel");
}

// ---- loss -------------------------------------------------------------------------------

// logits (n,k), labels (n) -> probs (n,k), row_loss (n) = -log probs[label]; a warp per row
__global__ static void softmax_rows_kernel(int n, int k, const float *logits,
                                           const int32_t *labels, float *probs,
                                           float *row_loss) {
    size_t i = cu_tid() / 32;
    int lane = threadIdx.x % 32;
    if (i >= (size_t)n) return;
    const float *row = logits + i * k;
    float *p = probs + i * k;
    float max = -INFINITY;
    for (int j = lane; j < k; j += 32) max = fmaxf(max, row[j]);
    max = __shfl_sync(0xffffffffu, cu_warp_max(max), 0);
    float sum = 0.0f;
    for (int j = lane; j < k; j += 32) {
        p[j] = expf(row[j] - max);
        sum += p[j];
    }
    sum = __shfl_sync(0xffffffffu, cu_warp_sum(sum), 0);
    for (int j = lane; j < k; j += 32) p[j] = p[j] / sum;
    // -log p[label] from the logits, so a tiny p can't underflow to log(0)
    if (lane == 0) row_loss[i] = logf(sum) + max - row[labels[i]];
}

// row_loss (n) -> *loss = mean; one block
__global__ static void mean_kernel(int n, const float *row_loss, float *loss) {
    double total = 0.0;
    for (int i = threadIdx.x; i < n; i += blockDim.x) total += row_loss[i];
    total = cu_block_sum_d(total);
    if (threadIdx.x == 0) *loss = (float)(total / n);
}

static void vec_softmax_xent_fwd(int n, int k, const float *logits, const int32_t *labels,
                                 float *probs, float *loss) {
    float *row_loss = (float *)cu_scratch(sizeof(float) * (size_t)n);
    if (!row_loss) return;
    unsigned blocks = cu_blocks((size_t)n, WARPS_PER_BLOCK);
    if (blocks) {
        CU_LAUNCH(softmax_rows_kernel, blocks, CU_THREADS, n, k, logits, labels, probs,
                                                                     row_loss);
        CU_LAUNCHED("softmax_rows_kernel");
    }
    CU_LAUNCH(mean_kernel, 1, CU_THREADS, n, row_loss, loss);
    CU_LAUNCHED("mean_kernel");
}

// ---- input ------------------------------------------------------------------------------

// src uint8 (n,h,w,c) -> dst (n,c,h,w), channels [p.c0, p.c0+p.cn); a thread per pixel
// reads its channels' bytes side by side and writes one float into each plane, so
// neighbouring threads write neighbouring floats
__global__ static void normalize_u8_kernel(size_t pixels, int hw, int c, struct km_norm_params p,
                                           const uint8_t *src, float *dst) {
    for (size_t q = cu_tid(); q < pixels; q += cu_nthreads()) {
        size_t i = q / hw, at = q % hw;
        const uint8_t *in = src + q * c + p.c0;
        float *out = dst + (i * c + p.c0) * hw + at;
        for (int cl = 0; cl < p.cn; cl++)
            out[(size_t)cl * hw] = km_normalize_u8(in[cl], p.mean[cl], p.std[cl]);
    }
}

static void vec_normalize_u8(int n, int h, int w, int c, const uint8_t *src, const float *mean,
                             const float *std, float *dst) {
    size_t pixels = (size_t)n * h * w;
    if (pixels == 0) return;
    for (int c0 = 0; c0 < c; c0 += NS_NORM_MAX_CH) {
        struct km_norm_params p = cu_norm_params(c0, c, mean, std);
        CU_LAUNCH(normalize_u8_kernel, cu_stride_blocks(pixels, CU_THREADS), CU_THREADS,
            pixels, h * w, c, p, src, dst);
        CU_LAUNCHED("normalize_u8_kernel");
    }
}

void cu_fill_vectorized_table(struct backend *b) {
    b->gemm = cu_gemm;
    b->axpy = vec_axpy;
    b->conv2d_workspace = cu_conv2d_workspace;
    b->conv2d_fwd = cu_conv2d_fwd;
    b->conv2d_bwd_data = cu_conv2d_bwd_data;
    b->conv2d_bwd_filter = cu_conv2d_bwd_filter;
    b->linear_fwd = vec_linear_fwd;
    b->linear_bwd = vec_linear_bwd;
    b->bn_fwd_train = vec_bn_fwd_train;
    b->bn_fwd_eval = vec_bn_fwd_eval;
    b->bn_bwd = vec_bn_bwd;
    b->relu_fwd = vec_relu_fwd;
    b->relu_bwd = vec_relu_bwd;
    b->add_fwd = vec_add_fwd;
    b->maxpool_fwd = cu_maxpool_fwd;
    b->maxpool_bwd = cu_maxpool_bwd;
    b->avgpool_fwd = cu_avgpool_fwd;
    b->avgpool_bwd = cu_avgpool_bwd;
    b->gap_fwd = vec_gap_fwd;
    b->gap_bwd = vec_gap_bwd;
    b->softmax_xent_fwd = vec_softmax_xent_fwd;
    b->softmax_xent_bwd = cu_softmax_xent_bwd;
    b->argmax_correct = cu_argmax_correct;
    b->normalize_u8 = vec_normalize_u8;
    b->sgd_step = vec_sgd_step;
    b->adamw_step = vec_adamw_step;
}
