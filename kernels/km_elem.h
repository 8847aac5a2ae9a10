/* kernels/km_elem.h — the bodies of the kernels that compute one output element (or
 * one channel, or one row) at a time, shared by the CPU and CUDA backends, and the
 * window arithmetic they use, on top of kernels/km_math.h. Host+device and plain C,
 * like km_math.h.
 *
 * A body km_..._at takes the coordinates of its output element, e.g. (b, ko, oy, ox)
 * for convolution, and returns that element. Where the CPU adds a gradient's terms
 * into it one at a time, the body takes the element's old value and returns the new
 * one, adding the same terms in the same order, so the CPU gets the same bits either
 * way. The CPU loop table (kernels/cpu/loop.c) calls a body inside the loop nest over
 * the output's coordinates. A CUDA kernel that gives a thread one element
 * (cuda_loop.cu, cuda_shared.cu, cuda_conv_im2col.cu, and the per-element passes of
 * cuda_vectorized.cu) splits its thread index into the same coordinates once, with
 * km_unflatten2/3/4 (km_math.h), and calls the body; kernels/cpu/cpu_common.c calls
 * the loss bodies and the pooling windows.
 * Who calls what is said above each section. tests/test_cuda.c (suite cuda_bodies)
 * runs the gemm, convolution (im2col too, which only the GPU calls), pooling and
 * batch norm bodies (the per-element ones too, which only the GPU calls) over every
 * element as a CPU table, so the code the GPU runs is checked even where there is no
 * GPU. Shapes as in backend.h. */
#ifndef NS_KERNELS_ELEM_H
#define NS_KERNELS_ELEM_H

#ifdef __cplusplus
extern "C" {
#endif
#include "backend.h"
#ifdef __cplusplus
}
#endif
#include "km_math.h"

/* ---- window arithmetic ---- */

/* The output position o whose window puts tap t on input position i
 * (km_conv_in_pos(o, t, stride, pad) == i), or -1 if there is none in [0, out). */
NS_HD static inline int km_conv_out_pos(int i, int t, int stride, int pad, int out) {
    int shifted = i + pad - t;
    if (shifted < 0 || shifted % stride != 0) return -1;
    int o = shifted / stride;
    return o < out ? o : -1;
}

/* The outputs whose size-wide window covers input position i: [*lo, *hi), ascending. */
NS_HD static inline void km_window_cover(int i, int size, int stride, int pad, int out, int *lo,
                                         int *hi) {
    int first = i + pad - size + 1; /* o*stride >= i + pad - size + 1 */
    *lo = first <= 0 ? 0 : (first + stride - 1) / stride;
    *hi = (i + pad) / stride + 1;   /* o*stride <= i + pad */
    if (*hi > out) *hi = out;
    if (*lo > *hi) *lo = *hi;
}

/* ---- dense and linear: CPU loop table, cuda_loop.cu ---- */

/* op(a) (m,k), op(b) (k,n), c (m,n): the new value of c[i,j] = alpha*op(a)op(b) + beta*c,
 * row i of op(a) times column j of op(b); beta == 0 ignores c, as BLAS does (it may
 * hold NaN) */
NS_HD static inline float km_gemm_at(bool ta, bool tb, int m, int n, int k, float alpha,
                                     const float *a, const float *b, float beta, const float *c,
                                     int i, int j) {
    float acc = 0.0f;
    for (int p = 0; p < k; p++) acc += a[km_idx_op(ta, i, p, m, k)] * b[km_idx_op(tb, p, j, k, n)];
    return beta == 0.0f ? alpha * acc : alpha * acc + beta * c[(size_t)i * n + j];
}

/* y (n,out) element (i,j) of x (n,in) w^T (w (out,in)) + bias (out, or NULL) */
NS_HD static inline float km_linear_fwd_at(int in, const float *x, const float *w,
                                           const float *bias, int i, int j) {
    float acc = bias ? bias[j] : 0.0f;
    for (int p = 0; p < in; p++) acc += x[(size_t)i * in + p] * w[(size_t)j * in + p];
    return acc;
}

/* What linear's backward adds to dx (n,in) element (i,j): (dy w)[i,j], dy (n,out) */
NS_HD static inline float km_linear_bwd_x_at(int in, int out, const float *w, const float *dy,
                                             int i, int j) {
    float acc = 0.0f;
    for (int p = 0; p < out; p++) acc += dy[(size_t)i * out + p] * w[(size_t)p * in + j];
    return acc;
}

/* What it adds to dw (out,in) element (p,j): (dy^T x)[p,j], summed over the n rows */
NS_HD static inline float km_linear_bwd_w_at(int n, int in, int out, const float *x,
                                             const float *dy, int p, int j) {
    float acc = 0.0f;
    for (int i = 0; i < n; i++) acc += dy[(size_t)i * out + p] * x[(size_t)i * in + j];
    return acc;
}

/* dbias (k) element ko, starting from dbias_old: plus dy (n,k,hw) over every image
 * and position, in that order; a linear layer's bias is the case hw = 1 */
NS_HD static inline float km_bias_grad_at(int n, int k, int hw, const float *dy, float dbias_old,
                                          int ko) {
    float acc = dbias_old;
    for (int b = 0; b < n; b++)
        for (int j = 0; j < hw; j++) acc += dy[km_idx3(b, ko, j, k, hw)];
    return acc;
}

/* ---- direct convolution: CPU loop table, cuda_loop.cu ---- */

/* y (n,k,oh,ow) element (b,ko,oy,ox) of x (n,c,h,w) * w (k,c,r,s) + bias (k, or NULL):
 * the sum over the input channels and the taps of the window */
NS_HD static inline float km_conv_fwd_at(const struct conv_geom *g, const float *x, const float *w,
                                         const float *bias, int b, int ko, int oy, int ox) {
    float acc = bias ? bias[ko] : 0.0f;
    for (int ci = 0; ci < g->c; ci++)
        for (int ky = 0; ky < g->r; ky++)
            for (int kx = 0; kx < g->s; kx++) {
                int iy = km_conv_in_pos(oy, ky, g->stride, g->pad);
                int ix = km_conv_in_pos(ox, kx, g->stride, g->pad);
                if (!km_in_range(iy, g->h) || !km_in_range(ix, g->w)) continue;
                acc += x[km_idx4(b, ci, iy, ix, g->c, g->h, g->w)] *
                       w[km_idx4(ko, ci, ky, kx, g->c, g->r, g->s)];
            }
    return acc;
}

/* dx (n,c,h,w) element (b,ci,iy,ix), starting from dx_old: plus dy*w from every
 * output position whose window has this pixel under one of its taps, by ascending
 * (ko, oy, ox), the order a scatter from dy would add them in */
NS_HD static inline float km_conv_bwd_data_at(const struct conv_geom *g, const float *dy,
                                              const float *w, float dx_old, int b, int ci, int iy,
                                              int ix) {
    int oy_lo, oy_hi, ox_lo, ox_hi;
    km_window_cover(iy, g->r, g->stride, g->pad, g->oh, &oy_lo, &oy_hi);
    km_window_cover(ix, g->s, g->stride, g->pad, g->ow, &ox_lo, &ox_hi);
    float acc = dx_old;
    for (int ko = 0; ko < g->k; ko++)
        for (int oy = oy_lo; oy < oy_hi; oy++) {
            int ky = iy - km_conv_in_pos(oy, 0, g->stride, g->pad);
            for (int ox = ox_lo; ox < ox_hi; ox++) {
                int kx = ix - km_conv_in_pos(ox, 0, g->stride, g->pad);
                acc += dy[km_idx4(b, ko, oy, ox, g->k, g->oh, g->ow)] *
                       w[km_idx4(ko, ci, ky, kx, g->c, g->r, g->s)];
            }
        }
    return acc;
}

/* dw (k,c,r,s) element (ko,ci,ky,kx), starting from dw_old: plus dy*x over every image
 * and output position, in that order */
NS_HD static inline float km_conv_bwd_filter_at(const struct conv_geom *g, const float *x,
                                                const float *dy, float dw_old, int ko, int ci,
                                                int ky, int kx) {
    float acc = dw_old;
    for (int b = 0; b < g->n; b++)
        for (int oy = 0; oy < g->oh; oy++)
            for (int ox = 0; ox < g->ow; ox++) {
                int iy = km_conv_in_pos(oy, ky, g->stride, g->pad);
                int ix = km_conv_in_pos(ox, kx, g->stride, g->pad);
                if (!km_in_range(iy, g->h) || !km_in_range(ix, g->w)) continue;
                acc += dy[km_idx4(b, ko, oy, ox, g->k, g->oh, g->ow)] *
                       x[km_idx4(b, ci, iy, ix, g->c, g->h, g->w)];
            }
    return acc;
}

/* ---- im2col convolution, on a chunk of nb images starting at image b0 ----
 * cuda_conv_im2col.cu only (the CPU vectorized table has its own im2col).
 * col (c*r*s, P) and yp (k, P), P = nb*oh*ow columns over (image, output position):
 * col is a (c,r,s, nb,oh,ow) array, row (ci,ky,kx) and column (bl,oy,ox) for the
 * chunk's image bl, which is image b0 + bl of the batch. */

/* The col entry in row (ci,ky,kx), column (bl,oy,ox), given b = b0 + bl: image b's
 * pixel of channel ci under tap (ky,kx) of the window at (oy,ox), 0 in the padding */
NS_HD static inline float km_im2col_at(const struct conv_geom *g, const float *x, int ci, int ky,
                                       int kx, int b, int oy, int ox) {
    int iy = km_conv_in_pos(oy, ky, g->stride, g->pad), ix = km_conv_in_pos(ox, kx, g->stride, g->pad);
    return km_in_range(iy, g->h) && km_in_range(ix, g->w)
               ? x[km_idx4(b, ci, iy, ix, g->c, g->h, g->w)]
               : 0.0f;
}

/* For element (bl,ci,iy,ix) of the chunk's dx (nb,c,h,w): the sum of the col entries
 * im2col copied it into (the adjoint of im2col) */
NS_HD static inline float km_col2im_at(const struct conv_geom *g, int nb, const float *col,
                                       int bl, int ci, int iy, int ix) {
    size_t ohow = (size_t)g->oh * g->ow, cols = nb * ohow;
    float acc = 0.0f;
    for (int ky = 0; ky < g->r; ky++) {
        int oy = km_conv_out_pos(iy, ky, g->stride, g->pad, g->oh);
        if (oy < 0) continue;
        for (int kx = 0; kx < g->s; kx++) {
            int ox = km_conv_out_pos(ix, kx, g->stride, g->pad, g->ow);
            if (ox < 0) continue;
            size_t row = ((size_t)ci * g->r + ky) * g->s + kx;
            acc += col[row * cols + bl * ohow + (size_t)oy * g->ow + ox];
        }
    }
    return acc;
}

/* Element (bl,ko,p) of a chunk's (nb,k,oh*ow) slice of y or dy -> its index in yp (k, P). */
NS_HD static inline size_t km_chunk_kp_index(const struct conv_geom *g, int nb, int bl, int ko,
                                             int p) {
    size_t ohow = (size_t)g->oh * g->ow;
    return (size_t)ko * (nb * ohow) + (size_t)bl * ohow + p;
}

/* ---- pooling ----
 * The windows: cpu_common.c (both CPU tables, plane by plane) and, through the _at
 * forms that find the (b,ch) plane of an element, cuda_shared.cu (both CUDA
 * tables). The backward bodies gather from every window covering an input, so
 * that no two CUDA threads add into one element: cuda_shared.cu only; the CPU
 * scatters from each window instead, which adds the same terms in the same order
 * at a fraction of the cost there. */

/* Element (oy,ox) of a (oh,ow) plane of y from the (h,w) plane of x under it, and
 * *idx = the flat h*w index of the first max in its window; -1 (and y = 0) for a
 * window wholly in the padding */
NS_HD static inline float km_maxpool_window(const struct pool_geom *g, const float *plane, int oy,
                                            int ox, int32_t *idx) {
    float best = 0.0f;
    int32_t at = -1;
    for (int ky = 0; ky < g->size; ky++)
        for (int kx = 0; kx < g->size; kx++) {
            int iy = km_conv_in_pos(oy, ky, g->stride, g->pad);
            int ix = km_conv_in_pos(ox, kx, g->stride, g->pad);
            if (!km_in_range(iy, g->h) || !km_in_range(ix, g->w)) continue;
            int32_t here = iy * g->w + ix;
            if (at < 0 || plane[here] > best) {
                best = plane[here];
                at = here;
            }
        }
    *idx = at;
    return best;
}

/* y (n,c,oh,ow) element (b,ch,oy,ox), and *idx, as km_maxpool_window */
NS_HD static inline float km_maxpool_fwd_at(const struct pool_geom *g, const float *x, int b,
                                            int ch, int oy, int ox, int32_t *idx) {
    return km_maxpool_window(g, x + km_idx4(b, ch, 0, 0, g->c, g->h, g->w), oy, ox, idx);
}

/* dx (n,c,h,w) element (b,ch,iy,ix), starting from dx_old: plus the dy of every window
 * whose max it was, by ascending output position, the order a scatter from dy would
 * add them in */
NS_HD static inline float km_maxpool_bwd_at(const struct pool_geom *g, const int32_t *idx,
                                            const float *dy, float dx_old, int b, int ch, int iy,
                                            int ix) {
    size_t out0 = km_idx4(b, ch, 0, 0, g->c, g->oh, g->ow);
    int32_t self = iy * g->w + ix;
    int oy_lo, oy_hi, ox_lo, ox_hi;
    km_window_cover(iy, g->size, g->stride, g->pad, g->oh, &oy_lo, &oy_hi);
    km_window_cover(ix, g->size, g->stride, g->pad, g->ow, &ox_lo, &ox_hi);
    float acc = dx_old;
    for (int oy = oy_lo; oy < oy_hi; oy++)
        for (int ox = ox_lo; ox < ox_hi; ox++) {
            size_t o = out0 + (size_t)oy * g->ow + ox;
            if (idx[o] == self) acc += dy[o];
        }
    return acc;
}

/* Element (oy,ox) of a (oh,ow) plane of y from the (h,w) plane of x under it: padded
 * taps count as zeros in the size*size divisor */
NS_HD static inline float km_avgpool_window(const struct pool_geom *g, const float *plane, int oy,
                                            int ox) {
    float sum = 0.0f;
    for (int ky = 0; ky < g->size; ky++)
        for (int kx = 0; kx < g->size; kx++) {
            int iy = km_conv_in_pos(oy, ky, g->stride, g->pad);
            int ix = km_conv_in_pos(ox, kx, g->stride, g->pad);
            if (km_in_range(iy, g->h) && km_in_range(ix, g->w)) sum += plane[iy * g->w + ix];
        }
    return sum / (float)(g->size * g->size);
}

/* y (n,c,oh,ow) element (b,ch,oy,ox), as km_avgpool_window */
NS_HD static inline float km_avgpool_fwd_at(const struct pool_geom *g, const float *x, int b,
                                            int ch, int oy, int ox) {
    return km_avgpool_window(g, x + km_idx4(b, ch, 0, 0, g->c, g->h, g->w), oy, ox);
}

/* dx (n,c,h,w) element (b,ch,iy,ix), starting from dx_old: plus its share of every
 * window covering it, by ascending output position */
NS_HD static inline float km_avgpool_bwd_at(const struct pool_geom *g, const float *dy,
                                            float dx_old, int b, int ch, int iy, int ix) {
    const float *dplane = dy + km_idx4(b, ch, 0, 0, g->c, g->oh, g->ow);
    int oy_lo, oy_hi, ox_lo, ox_hi;
    km_window_cover(iy, g->size, g->stride, g->pad, g->oh, &oy_lo, &oy_hi);
    km_window_cover(ix, g->size, g->stride, g->pad, g->ow, &ox_lo, &ox_hi);
    float acc = dx_old;
    for (int oy = oy_lo; oy < oy_hi; oy++)
        for (int ox = ox_lo; ox < ox_hi; ox++)
            acc += dplane[oy * g->ow + ox] / (float)(g->size * g->size);
    return acc;
}

/* ---- batch norm over (n,c,hw), per channel ----
 * The per-channel bodies: CPU loop table, cuda_loop.cu (a thread per channel).
 * The per-element ones: cuda_loop.cu and cuda_vectorized.cu; the CPU, which walks
 * (n,c,hw) knowing the channel, calls the km_math.h functions inside them directly. */

/* Element e of channel ch's n*hw values, in (n,c,hw) layout. */
NS_HD static inline size_t km_bn_at(size_t e, int ch, int c, int hw) {
    return (e / hw * c + ch) * hw + e % hw;
}

/* Channel ch's outputs from its mean mu and biased variance var over m samples:
 * mean[ch], invstd[ch], and the running averages moved towards them (with the
 * unbiased variance); cuda_vectorized.cu calls this after its own reductions */
NS_HD static inline void km_bn_store_stats(float mu, float var, long m, float *mean,
                                           float *invstd, float *running_mean,
                                           float *running_var, float momentum, float eps,
                                           int ch) {
    mean[ch] = mu;
    invstd[ch] = 1.0f / sqrtf(var + eps);
    running_mean[ch] = km_running_update(running_mean[ch], mu, momentum);
    running_var[ch] = km_running_update(running_var[ch], km_unbiased_var(var, m), momentum);
}

/* Channel ch's training statistics from x, in two passes in double, stored as
 * km_bn_store_stats does */
NS_HD static inline void km_bn_stats_at(int n, int c, int hw, const float *x, float *mean,
                                        float *invstd, float *running_mean, float *running_var,
                                        float momentum, float eps, int ch) {
    long m = (long)n * hw;
    double sum = 0.0;
    for (int i = 0; i < n; i++)
        for (int j = 0; j < hw; j++) sum += x[km_idx3(i, ch, j, c, hw)];
    float mu = (float)(sum / m);
    double squares = 0.0;
    for (int i = 0; i < n; i++)
        for (int j = 0; j < hw; j++) {
            float d = x[km_idx3(i, ch, j, c, hw)] - mu;
            squares += d * d;
        }
    float var = (float)(squares / m);
    km_bn_store_stats(mu, var, m, mean, invstd, running_mean, running_var, momentum, eps, ch);
}

/* y (n,c,hw) element (i,ch,j): x normalized with channel ch's mean and invstd */
NS_HD static inline float km_bn_apply_at(int c, int hw, const float *x, const float *mean,
                                         const float *invstd, const float *gamma,
                                         const float *beta, int i, int ch, int j) {
    size_t at = km_idx3(i, ch, j, c, hw);
    return km_bn_normalize(x[at], mean[ch], invstd[ch], gamma[ch], beta[ch]);
}

/* y (n,c,hw) element (i,ch,j) in eval mode: x normalized with the running statistics */
NS_HD static inline float km_bn_eval_at(int c, int hw, const float *x, const float *gamma,
                                        const float *beta, const float *running_mean,
                                        const float *running_var, float eps, int i, int ch, int j) {
    float is = 1.0f / sqrtf(running_var[ch] + eps);
    return km_bn_normalize(x[km_idx3(i, ch, j, c, hw)], running_mean[ch], is, gamma[ch], beta[ch]);
}

/* Channel ch's sums for the backward pass, in double: sum dy and sum dy*xhat */
NS_HD static inline void km_bn_bwd_sums_at(int n, int c, int hw, const float *x, const float *dy,
                                           const float *mean, const float *invstd, int ch,
                                           double *sum_dy, double *sum_dy_xhat) {
    double s = 0.0, sx = 0.0;
    for (int i = 0; i < n; i++)
        for (int j = 0; j < hw; j++) {
            size_t at = km_idx3(i, ch, j, c, hw);
            float xhat = (x[at] - mean[ch]) * invstd[ch];
            s += dy[at];
            sx += dy[at] * xhat;
        }
    *sum_dy = s;
    *sum_dy_xhat = sx;
}

/* What bn_bwd gives dx (n,c,hw) element (i,ch,j) over m = n*hw samples, from the
 * channels' sums (c,2) = (sum dy, sum dy*xhat) */
NS_HD static inline float km_bn_bwd_dx_at(int c, int hw, long m, const float *x, const float *dy,
                                          const float *gamma, const float *mean,
                                          const float *invstd, const float *sums, int i, int ch,
                                          int j) {
    size_t at = km_idx3(i, ch, j, c, hw);
    float xhat = (x[at] - mean[ch]) * invstd[ch];
    return km_bn_dx(dy[at], xhat, gamma[ch], invstd[ch], m, sums[2 * ch], sums[2 * ch + 1]);
}

/* ---- loss and accuracy, logits (n,k), labels (n): cpu_common.c (both CPU tables);
 * row i of softmax in cuda_loop.cu, the gradient and argmax in cuda_shared.cu ---- */

/* probs row i = softmax(logits row i); returns the row's loss -log probs[label] */
NS_HD static inline double km_softmax_xent_row(int k, const float *logits, const int32_t *labels,
                                               float *probs, size_t i) {
    const float *row = logits + i * k;
    float *p = probs + i * k;
    /* Subtracting the row max keeps exp() from overflowing. */
    float max = row[0];
    for (int j = 1; j < k; j++) max = fmaxf(max, row[j]);
    double sum = 0.0;
    for (int j = 0; j < k; j++) {
        p[j] = expf(row[j] - max);
        sum += p[j];
    }
    for (int j = 0; j < k; j++) p[j] = (float)(p[j] / sum);
    /* -log p[label], computed from the logits so a tiny p can't underflow to log(0) */
    return log(sum) + max - row[labels[i]];
}

/* What the loss gradient adds to dlogits (n,k) element (i,j):
 * scale*(probs - onehot(label)), scale = dloss/n */
NS_HD static inline float km_softmax_xent_grad_at(int k, const float *probs,
                                                  const int32_t *labels, float scale, int i,
                                                  int j) {
    float onehot = j == labels[i] ? 1.0f : 0.0f;
    return scale * (probs[(size_t)i * k + j] - onehot);
}

/* The column of row i's first largest logit */
NS_HD static inline int km_argmax_row(int k, const float *logits, size_t i) {
    const float *row = logits + i * k;
    int best = 0;
    for (int j = 1; j < k; j++)
        if (row[j] > row[best]) best = j;
    return best;
}

#endif
