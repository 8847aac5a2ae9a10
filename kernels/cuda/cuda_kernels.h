/* cuda_kernels.h — the per-element bodies of the CUDA kernels that give one thread
 * one output element, and the index arithmetic they share, on top of
 * kernels/math.h. Host+device and plain C, like math.h: a kernel is "o = my thread's
 * index; out[o] = ns_..._at(..., o)", and tests/test_cuda.c runs the very same
 * functions over every element on the CPU against the CPU tables, so this code is
 * checked even where there is no GPU. Shapes as in backend.h. */
#ifndef NS_CUDA_KERNELS_H
#define NS_CUDA_KERNELS_H

#ifdef __cplusplus
extern "C" {
#endif
#include "backend.h"
#ifdef __cplusplus
}
#endif
#include "ns_math.h"

/* ---- window arithmetic ---- */

/* The output position o whose window puts tap t on input position i
 * (ns_conv_in_pos(o, t, stride, pad) == i), or -1 if there is none in [0, out). */
NS_HD static inline int ns_conv_out_pos(int i, int t, int stride, int pad, int out) {
    int shifted = i + pad - t;
    if (shifted < 0 || shifted % stride != 0) return -1;
    int o = shifted / stride;
    return o < out ? o : -1;
}

/* The outputs whose size-wide window covers input position i: [*lo, *hi), ascending. */
NS_HD static inline void ns_window_cover(int i, int size, int stride, int pad, int out, int *lo,
                                         int *hi) {
    int first = i + pad - size + 1; /* o*stride >= i + pad - size + 1 */
    *lo = first <= 0 ? 0 : (first + stride - 1) / stride;
    *hi = (i + pad) / stride + 1;   /* o*stride <= i + pad */
    if (*hi > out) *hi = out;
    if (*lo > *hi) *lo = *hi;
}

/* ---- dense ---- */

/* op(a) (m,k), op(b) (k,n), c (m,n): the new value of c[o] = alpha*op(a)op(b) + beta*c;
 * beta == 0 ignores c, as BLAS does (it may hold NaN) */
NS_HD static inline float ns_gemm_at(bool ta, bool tb, int m, int n, int k, float alpha,
                                     const float *a, const float *b, float beta, const float *c,
                                     size_t o) {
    int i = (int)(o / n), j = (int)(o % n);
    float acc = 0.0f;
    for (int p = 0; p < k; p++) acc += a[ns_idx_op(ta, i, p, m, k)] * b[ns_idx_op(tb, p, j, k, n)];
    return beta == 0.0f ? alpha * acc : alpha * acc + beta * c[o];
}

/* ---- direct convolution ---- */

/* y (n,k,oh,ow) element o of x (n,c,h,w) * w (k,c,r,s) + bias (k, or NULL) */
NS_HD static inline float ns_conv_fwd_at(const struct conv_geom *g, const float *x, const float *w,
                                         const float *bias, size_t o) {
    int ox = (int)(o % g->ow), oy = (int)(o / g->ow % g->oh);
    int ko = (int)(o / ((size_t)g->ow * g->oh) % g->k), b = (int)(o / ((size_t)g->ow * g->oh * g->k));
    float acc = bias ? bias[ko] : 0.0f;
    for (int ci = 0; ci < g->c; ci++)
        for (int ky = 0; ky < g->r; ky++)
            for (int kx = 0; kx < g->s; kx++) {
                int iy = ns_conv_in_pos(oy, ky, g->stride, g->pad);
                int ix = ns_conv_in_pos(ox, kx, g->stride, g->pad);
                if (!ns_in_range(iy, g->h) || !ns_in_range(ix, g->w)) continue;
                acc += x[ns_idx4(b, ci, iy, ix, g->c, g->h, g->w)] *
                       w[ns_idx4(ko, ci, ky, kx, g->c, g->r, g->s)];
            }
    return acc;
}

/* What conv2d_bwd_data adds to dx (n,c,h,w) element o: dy*w from every output
 * position whose window has this pixel under tap (ky,kx) */
NS_HD static inline float ns_conv_bwd_data_at(const struct conv_geom *g, const float *dy,
                                              const float *w, size_t o) {
    int ix = (int)(o % g->w), iy = (int)(o / g->w % g->h);
    int ci = (int)(o / ((size_t)g->w * g->h) % g->c), b = (int)(o / ((size_t)g->w * g->h * g->c));
    float acc = 0.0f;
    for (int ko = 0; ko < g->k; ko++)
        for (int ky = 0; ky < g->r; ky++) {
            int oy = ns_conv_out_pos(iy, ky, g->stride, g->pad, g->oh);
            if (oy < 0) continue;
            for (int kx = 0; kx < g->s; kx++) {
                int ox = ns_conv_out_pos(ix, kx, g->stride, g->pad, g->ow);
                if (ox < 0) continue;
                acc += dy[ns_idx4(b, ko, oy, ox, g->k, g->oh, g->ow)] *
                       w[ns_idx4(ko, ci, ky, kx, g->c, g->r, g->s)];
            }
        }
    return acc;
}

/* What conv2d_bwd_filter adds to dw (k,c,r,s) element o: dy*x over every image and
 * output position */
NS_HD static inline float ns_conv_bwd_filter_at(const struct conv_geom *g, const float *x,
                                                const float *dy, size_t o) {
    int kx = (int)(o % g->s), ky = (int)(o / g->s % g->r);
    int ci = (int)(o / ((size_t)g->s * g->r) % g->c), ko = (int)(o / ((size_t)g->s * g->r * g->c));
    float acc = 0.0f;
    for (int b = 0; b < g->n; b++)
        for (int oy = 0; oy < g->oh; oy++)
            for (int ox = 0; ox < g->ow; ox++) {
                int iy = ns_conv_in_pos(oy, ky, g->stride, g->pad);
                int ix = ns_conv_in_pos(ox, kx, g->stride, g->pad);
                if (!ns_in_range(iy, g->h) || !ns_in_range(ix, g->w)) continue;
                acc += dy[ns_idx4(b, ko, oy, ox, g->k, g->oh, g->ow)] *
                       x[ns_idx4(b, ci, iy, ix, g->c, g->h, g->w)];
            }
    return acc;
}

/* ---- im2col convolution, on a chunk of nb images starting at image b0 ----
 * col (c*r*s, P) and yp (k, P), P = nb*oh*ow columns over (image, output position). */

/* col element o: the input pixel under tap (ci,ky,kx) at output column j, 0 in the padding */
NS_HD static inline float ns_im2col_at(const struct conv_geom *g, int b0, int nb, const float *x,
                                       size_t o) {
    size_t ohow = (size_t)g->oh * g->ow, cols = nb * ohow;
    size_t j = o % cols, row = o / cols;
    int b = b0 + (int)(j / ohow), oy = (int)(j % ohow / g->ow), ox = (int)(j % g->ow);
    int kx = (int)(row % g->s), ky = (int)(row / g->s % g->r), ci = (int)(row / ((size_t)g->s * g->r));
    int iy = ns_conv_in_pos(oy, ky, g->stride, g->pad), ix = ns_conv_in_pos(ox, kx, g->stride, g->pad);
    return ns_in_range(iy, g->h) && ns_in_range(ix, g->w)
               ? x[ns_idx4(b, ci, iy, ix, g->c, g->h, g->w)]
               : 0.0f;
}

/* For element o of the chunk's dx (nb,c,h,w): the sum of the col entries im2col
 * copied it into (the adjoint of im2col) */
NS_HD static inline float ns_col2im_at(const struct conv_geom *g, int nb, const float *col,
                                       size_t o) {
    size_t ohow = (size_t)g->oh * g->ow, cols = nb * ohow;
    int ix = (int)(o % g->w), iy = (int)(o / g->w % g->h);
    int ci = (int)(o / ((size_t)g->w * g->h) % g->c), bl = (int)(o / ((size_t)g->w * g->h * g->c));
    float acc = 0.0f;
    for (int ky = 0; ky < g->r; ky++) {
        int oy = ns_conv_out_pos(iy, ky, g->stride, g->pad, g->oh);
        if (oy < 0) continue;
        for (int kx = 0; kx < g->s; kx++) {
            int ox = ns_conv_out_pos(ix, kx, g->stride, g->pad, g->ow);
            if (ox < 0) continue;
            size_t row = ((size_t)ci * g->r + ky) * g->s + kx;
            acc += col[row * cols + bl * ohow + (size_t)oy * g->ow + ox];
        }
    }
    return acc;
}

/* Element o of a chunk's (nb,k,oh*ow) slice of y or dy -> its index in yp (k, P). */
NS_HD static inline size_t ns_chunk_kp_index(const struct conv_geom *g, int nb, size_t o) {
    size_t ohow = (size_t)g->oh * g->ow;
    size_t p = o % ohow, ko = o / ohow % g->k, bl = o / (ohow * g->k);
    return ko * (nb * ohow) + bl * ohow + p;
}

/* ---- pooling ---- */

/* y (n,c,oh,ow) element o, and *idx = the flat h*w index of the first max in its
 * window; -1 (and y = 0) for a window wholly in the padding */
NS_HD static inline float ns_maxpool_fwd_at(const struct pool_geom *g, const float *x, size_t o,
                                            int32_t *idx) {
    int ox = (int)(o % g->ow), oy = (int)(o / g->ow % g->oh);
    const float *plane = x + o / ((size_t)g->oh * g->ow) * g->h * g->w;
    float best = 0.0f;
    int32_t at = -1;
    for (int ky = 0; ky < g->size; ky++)
        for (int kx = 0; kx < g->size; kx++) {
            int iy = ns_conv_in_pos(oy, ky, g->stride, g->pad);
            int ix = ns_conv_in_pos(ox, kx, g->stride, g->pad);
            if (!ns_in_range(iy, g->h) || !ns_in_range(ix, g->w)) continue;
            int32_t here = iy * g->w + ix;
            if (at < 0 || plane[here] > best) {
                best = plane[here];
                at = here;
            }
        }
    *idx = at;
    return best;
}

/* dx (n,c,h,w) element i, starting from dx_old: plus the dy of every window whose max
 * it was, added in the order the CPU adds them */
NS_HD static inline float ns_maxpool_bwd_at(const struct pool_geom *g, const int32_t *idx,
                                            const float *dy, float dx_old, size_t i) {
    int ix = (int)(i % g->w), iy = (int)(i / g->w % g->h);
    size_t out0 = i / ((size_t)g->h * g->w) * g->oh * g->ow;
    int32_t self = iy * g->w + ix;
    int oy_lo, oy_hi, ox_lo, ox_hi;
    ns_window_cover(iy, g->size, g->stride, g->pad, g->oh, &oy_lo, &oy_hi);
    ns_window_cover(ix, g->size, g->stride, g->pad, g->ow, &ox_lo, &ox_hi);
    float acc = dx_old;
    for (int oy = oy_lo; oy < oy_hi; oy++)
        for (int ox = ox_lo; ox < ox_hi; ox++) {
            size_t o = out0 + (size_t)oy * g->ow + ox;
            if (idx[o] == self) acc += dy[o];
        }
    return acc;
}

/* y (n,c,oh,ow) element o: padded taps count as zeros in the size*size divisor */
NS_HD static inline float ns_avgpool_fwd_at(const struct pool_geom *g, const float *x, size_t o) {
    int ox = (int)(o % g->ow), oy = (int)(o / g->ow % g->oh);
    const float *plane = x + o / ((size_t)g->oh * g->ow) * g->h * g->w;
    float sum = 0.0f;
    for (int ky = 0; ky < g->size; ky++)
        for (int kx = 0; kx < g->size; kx++) {
            int iy = ns_conv_in_pos(oy, ky, g->stride, g->pad);
            int ix = ns_conv_in_pos(ox, kx, g->stride, g->pad);
            if (ns_in_range(iy, g->h) && ns_in_range(ix, g->w)) sum += plane[iy * g->w + ix];
        }
    return sum / (float)(g->size * g->size);
}

/* dx (n,c,h,w) element i, starting from dx_old: plus its share of every window covering it */
NS_HD static inline float ns_avgpool_bwd_at(const struct pool_geom *g, const float *dy,
                                            float dx_old, size_t i) {
    int ix = (int)(i % g->w), iy = (int)(i / g->w % g->h);
    const float *dplane = dy + i / ((size_t)g->h * g->w) * g->oh * g->ow;
    int oy_lo, oy_hi, ox_lo, ox_hi;
    ns_window_cover(iy, g->size, g->stride, g->pad, g->oh, &oy_lo, &oy_hi);
    ns_window_cover(ix, g->size, g->stride, g->pad, g->ow, &ox_lo, &ox_hi);
    float acc = dx_old;
    for (int oy = oy_lo; oy < oy_hi; oy++)
        for (int ox = ox_lo; ox < ox_hi; ox++)
            acc += dplane[oy * g->ow + ox] / (float)(g->size * g->size);
    return acc;
}

/* ---- input ---- */

/* normalize_u8's per-channel constants travel by value in the kernel's parameters
 * (they are host arrays); more channels than this go in groups, one launch each. */
enum { NS_NORM_MAX_CH = 64 };
struct ns_norm_params {
    int c0, cn; /* channels [c0, c0 + cn) of this launch */
    float mean[NS_NORM_MAX_CH], std[NS_NORM_MAX_CH];
};

/* ---- batch norm ---- */

/* Element e of channel ch's n*hw values, in (n,c,hw) layout. */
NS_HD static inline size_t ns_bn_at(size_t e, int ch, int c, int hw) {
    return (e / hw * c + ch) * hw + e % hw;
}

#endif
