// cuda_shared.cu — kernels both CUDA tables use, because the simple version is
// already the right one on a GPU: pooling (one thread per output, and for the
// backward pass one thread per input gathering from the windows that cover it, so
// no two threads add into the same element), the loss gradient, accuracy, and the
// per-channel bias gradient. The per-element bodies are kernels/km_elem.h's, the
// ones the CPU runs.
#include "cuda_common.h"
#include "km_elem.h"

// ---- pooling ----------------------------------------------------------------------

// x (n,c,h,w) -> y (n,c,oh,ow), idx (n,c,oh,ow): flat h*w index of the first max;
// -1 and 0 for a window wholly in the padding (as cpu_maxpool_plane_fwd)
__global__ static void maxpool_fwd_kernel(struct pool_geom g, const float *x, float *y,
                                          int32_t *idx) {
    size_t o = cu_tid();
    if (o >= (size_t)g.n * g.c * g.oh * g.ow) return;
    int b, ch, oy, ox;
    km_unflatten4(o, g.c, g.oh, g.ow, &b, &ch, &oy, &ox);
    y[o] = km_maxpool_fwd_at(&g, x, b, ch, oy, ox, &idx[o]);
}

void cu_maxpool_fwd(const struct pool_geom *g, const float *x, float *y, int32_t *idx) {
    CU_LAUNCH_PER_ELEMENT(maxpool_fwd_kernel, (size_t)g->n * g->c * g->oh * g->ow, *g, x, y, idx);
}

// idx, dy (n,c,oh,ow) -> dx (n,c,h,w) +=; one thread per input element, adding the
// dy of every window whose max it was, in the order the CPU adds them
__global__ static void maxpool_bwd_kernel(struct pool_geom g, const int32_t *idx, const float *dy,
                                          float *dx) {
    size_t i = cu_tid();
    if (i >= (size_t)g.n * g.c * g.h * g.w) return;
    int b, ch, iy, ix;
    km_unflatten4(i, g.c, g.h, g.w, &b, &ch, &iy, &ix);
    dx[i] = km_maxpool_bwd_at(&g, idx, dy, dx[i], b, ch, iy, ix);
}

void cu_maxpool_bwd(const struct pool_geom *g, const int32_t *idx, const float *dy, float *dx) {
    CU_LAUNCH_PER_ELEMENT(maxpool_bwd_kernel, (size_t)g->n * g->c * g->h * g->w, *g, idx, dy, dx);
}

// x (n,c,h,w) -> y (n,c,oh,ow); padded taps count as zeros in the size*size divisor
__global__ static void avgpool_fwd_kernel(struct pool_geom g, const float *x, float *y) {
    size_t o = cu_tid();
    if (o >= (size_t)g.n * g.c * g.oh * g.ow) return;
    int b, ch, oy, ox;
    km_unflatten4(o, g.c, g.oh, g.ow, &b, &ch, &oy, &ox);
    y[o] = km_avgpool_fwd_at(&g, x, b, ch, oy, ox);
}

void cu_avgpool_fwd(const struct pool_geom *g, const float *x, float *y) {
    CU_LAUNCH_PER_ELEMENT(avgpool_fwd_kernel, (size_t)g->n * g->c * g->oh * g->ow, *g, x, y);
}

// dy (n,c,oh,ow) -> dx (n,c,h,w) +=; one thread per input element
__global__ static void avgpool_bwd_kernel(struct pool_geom g, const float *dy, float *dx) {
    size_t i = cu_tid();
    if (i >= (size_t)g.n * g.c * g.h * g.w) return;
    int b, ch, iy, ix;
    km_unflatten4(i, g.c, g.h, g.w, &b, &ch, &iy, &ix);
    dx[i] = km_avgpool_bwd_at(&g, dy, dx[i], b, ch, iy, ix);
}

void cu_avgpool_bwd(const struct pool_geom *g, const float *dy, float *dx) {
    CU_LAUNCH_PER_ELEMENT(avgpool_bwd_kernel, (size_t)g->n * g->c * g->h * g->w, *g, dy, dx);
}

// ---- loss and accuracy ---------------------------------------------------------------

// probs (n,k), labels (n), dloss (device scalar) -> dlogits (n,k) +=
__global__ static void softmax_xent_bwd_kernel(int n, int k, const float *probs,
                                               const int32_t *labels, const float *dloss,
                                               float *dlogits) {
    size_t o = cu_tid();
    if (o >= (size_t)n * k) return;
    int i, j;
    km_unflatten2(o, k, &i, &j);
    dlogits[o] += km_softmax_xent_grad_at(k, probs, labels, *dloss / (float)n, i, j);
}

void cu_softmax_xent_bwd(int n, int k, const float *probs, const int32_t *labels,
                         const float *dloss, float *dlogits) {
    CU_LAUNCH_PER_ELEMENT(softmax_xent_bwd_kernel, (size_t)n * k, n, k, probs, labels, dloss,
                          dlogits);
}

// logits (n,k), labels (n) -> *correct; one block, a thread per row at a time
__global__ static void argmax_correct_kernel(int n, int k, const float *logits,
                                             const int32_t *labels, float *correct) {
    double hits = 0.0;  // integer-valued: exact, whatever the order
    for (int i = threadIdx.x; i < n; i += blockDim.x)
        hits += km_argmax_row(k, logits, i) == labels[i] ? 1.0 : 0.0;
    hits = cu_block_sum_d(hits);
    if (threadIdx.x == 0) *correct = (float)hits;
}

void cu_argmax_correct(int n, int k, const float *logits, const int32_t *labels, float *correct) {
    CU_LAUNCH(argmax_correct_kernel, 1, CU_THREADS, n, k, logits, labels, correct);
    CU_LAUNCHED("argmax_correct_kernel");
}

// ---- bias gradient: dy (n,k,hw) -> dbias (k) += sum over n and hw ------------------
// One block per channel; each thread sums a strided share, then the block adds up.
__global__ static void bias_grad_kernel(int n, int k, int hw, const float *dy, float *dbias) {
    int ch = blockIdx.x;
    size_t m = (size_t)n * hw;
    float sum = 0.0f;
    for (size_t e = threadIdx.x; e < m; e += blockDim.x)
        sum += dy[((e / hw) * k + ch) * hw + e % hw];
    sum = cu_block_sum(sum);
    if (threadIdx.x == 0) dbias[ch] += sum;
}

void cu_bias_grad(int n, int k, int hw, const float *dy, float *dbias) {
    if (k <= 0) return;
    CU_LAUNCH(bias_grad_kernel, k, CU_THREADS, n, k, hw, dy, dbias);
    CU_LAUNCHED("bias_grad_kernel");
}
