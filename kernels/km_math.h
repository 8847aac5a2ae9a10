/* kernels/km_math.h — the per-element math and index arithmetic that every backend
 * shares. The CPU kernels call these, and the CUDA kernels call the very same
 * functions, so the CPU tests exercise the code the GPU runs. Everything here
 * carries a `km_` prefix, for kernel math (conv_out_size keeps the name the ops know
 * it by).
 * Whole per-element kernel bodies built on these (convolution, pooling, ...) are
 * in km_elem.h. */
#ifndef NS_KERNELS_MATH_H
#define NS_KERNELS_MATH_H

#include <math.h>

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#if defined(__CUDACC__)
#define NS_HD __host__ __device__
#else
#define NS_HD
#endif

/* ---- shapes and indices ---- */

/* Output length of a convolution or pooling window along one axis. */
NS_HD static inline int conv_out_size(int in, int k, int stride, int pad) {
    return (in + 2 * pad - k) / stride + 1;
}

/* Flat index of element (i0,i1,i2,i3) of a contiguous (d0,d1,d2,d3) array;
 * d0 is not needed. */
NS_HD static inline size_t km_idx4(int i0, int i1, int i2, int i3, int d1, int d2, int d3) {
    return (((size_t)i0 * d1 + i1) * d2 + i2) * d3 + i3;
}

/* Flat index of element (i0,i1,i2) of a contiguous (d0,d1,d2) array. */
NS_HD static inline size_t km_idx3(int i0, int i1, int i2, int d1, int d2) {
    return ((size_t)i0 * d1 + i1) * d2 + i2;
}

/* The other way: the coordinates of flat index o in a contiguous array, the last one
 * fastest-varying, so that o == km_idx4(*i0, *i1, *i2, *i3, d1, d2, d3) (or km_idx3,
 * or *i0 * d1 + *i1). A CUDA kernel that gives a thread one element of an array
 * splits its thread index with one of these, once, and hands the coordinates to the
 * element's body (km_elem.h). */
NS_HD static inline void km_unflatten2(size_t o, int d1, int *i0, int *i1) {
    *i1 = (int)(o % d1);
    *i0 = (int)(o / d1);
}

NS_HD static inline void km_unflatten3(size_t o, int d1, int d2, int *i0, int *i1, int *i2) {
    *i2 = (int)(o % d2);
    km_unflatten2(o / d2, d1, i0, i1);
}

NS_HD static inline void km_unflatten4(size_t o, int d1, int d2, int d3, int *i0, int *i1,
                                       int *i2, int *i3) {
    *i3 = (int)(o % d3);
    km_unflatten3(o / d3, d1, d2, i0, i1, i2);
}

/* Element (row,col) of op(M) for a row-major matrix M, where op(M) has `rows`
 * rows and `cols` columns: M itself is (rows,cols), or (cols,rows) if trans. */
NS_HD static inline size_t km_idx_op(bool trans, int row, int col, int rows, int cols) {
    return trans ? (size_t)col * rows + row : (size_t)row * cols + col;
}

/* Input coordinate under output position o, kernel tap t. */
NS_HD static inline int km_conv_in_pos(int o, int t, int stride, int pad) {
    return o * stride - pad + t;
}

NS_HD static inline bool km_in_range(int i, int n) { return i >= 0 && i < n; }

/* ---- elementwise ---- */

NS_HD static inline float km_relu(float x) { return x > 0.0f ? x : 0.0f; }

/* Gradient through relu, from its output y: dy where y > 0, else 0. */
NS_HD static inline float km_relu_grad(float y, float dy) { return y > 0.0f ? dy : 0.0f; }

/* One uint8 pixel -> normalized float: (v/255 - mean) / std. */
NS_HD static inline float km_normalize_u8(uint8_t v, float mean, float std) {
    return ((float)v / 255.0f - mean) / std;
}

/* ---- optimizer ----
 * PyTorch's SGD with dampening 0 on one parameter:
 *   g' = g + wd*w;  v = momentum*v + g';  step = nesterov ? g' + momentum*v : v;
 *   w -= lr*step */
NS_HD static inline void km_sgd_update(float *w, float g, float *v, float lr, float momentum,
                                       bool nesterov, float weight_decay) {
    float gd = g + weight_decay * *w;
    float vel = momentum * *v + gd;
    float step = nesterov ? gd + momentum * vel : vel;
    *v = vel;
    *w -= lr * step;
}

/* PyTorch's AdamW on one parameter (its single-tensor code, in its order of
 * operations, so the two agree to float rounding). bc1 = 1 - beta1^t and
 * bc2_sqrt = sqrt(1 - beta2^t) for the step t being taken, computed once per step:
 *   w *= 1 - lr*wd;  m = beta1*m + (1-beta1)*g;  v = beta2*v + (1-beta2)*g*g;
 *   w -= (lr/bc1) * m / (sqrt(v)/bc2_sqrt + eps) */
NS_HD static inline void km_adamw_update(float *w, float g, float *m, float *v, float lr, float beta1, float beta2,
                                         float eps, float weight_decay, float bc1, float bc2_sqrt) {
    *w *= 1.0f - lr * weight_decay;
    *m = beta1 * *m + (1.0f - beta1) * g;
    *v = beta2 * *v + (1.0f - beta2) * g * g;
    float denom = sqrtf(*v) / bc2_sqrt + eps;
    *w -= (lr / bc1) * *m / denom;
}

/* ---- batch norm ---- */

/* y = (x - mean) * invstd * gamma + beta */
NS_HD static inline float km_bn_normalize(float x, float mean, float invstd, float gamma,
                                          float beta) {
    return (x - mean) * invstd * gamma + beta;
}

/* running = (1-momentum)*running + momentum*stat */
NS_HD static inline float km_running_update(float running, float stat, float momentum) {
    return (1.0f - momentum) * running + momentum * stat;
}

/* The unbiased variance from the biased one over m samples; a single sample
 * has no spread to correct, so it is returned as is. */
NS_HD static inline float km_unbiased_var(float biased_var, long m) {
    return m > 1 ? biased_var * (float)m / (float)(m - 1) : biased_var;
}

/* d loss / d x for one element in training-mode batch norm over m samples, given
 * the channel's sums sum_dy = sum dy and sum_dy_xhat = sum dy*xhat:
 *   dx = gamma*invstd/m * (m*dy - sum_dy - xhat*sum_dy_xhat) */
NS_HD static inline float km_bn_dx(float dy, float xhat, float gamma, float invstd, long m,
                                   float sum_dy, float sum_dy_xhat) {
    return gamma * invstd / (float)m * ((float)m * dy - sum_dy - xhat * sum_dy_xhat);
}

#endif
