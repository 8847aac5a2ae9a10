/* loop.c — the CPU `loop` backend: the textbook version of every kernel, plain
 * nested loops to read line by line. It is the reference the fast kernels are
 * checked against, and the baseline the benchmarks measure them by.
 * Where a kernel computes each output element on its own, the loop nest over the
 * output's coordinates is here, outermost dimension first, and the element's body
 * is in km_elem.h: the very function a CUDA thread runs for that element
 * (cuda_loop.cu), which holds the inner loops over whatever the element sums.
 * Entries that would be the same code in both CPU tables live in cpu_common.c. */
#include <string.h>

#include "cpu_common.h"
#include "km_elem.h"
#include "km_math.h"

/* ---- dense ---- */

// op(a) (m,k), op(b) (k,n) -> c (m,n) = alpha*op(a)op(b) + beta*c
static void loop_gemm(bool ta, bool tb, int m, int n, int k, float alpha, const float *a,
                      const float *b, float beta, float *c) {
    // each row i and column j of c: row i of op(a) dotted with column j of op(b)
    for (int i = 0; i < m; i++)
        for (int j = 0; j < n; j++)
            c[(size_t)i * n + j] = km_gemm_at(ta, tb, m, n, k, alpha, a, b, beta, c, i, j);
}

/* ---- convolution ---- */

static size_t loop_conv2d_workspace(const struct conv_geom *g) {
    (void)g;
    return 0;
}

// x (n,c,h,w), w (k,c,r,s), bias (k) or NULL -> y (n,k,oh,ow)
static void loop_conv2d_fwd(const struct conv_geom *g, const float *x, const float *w,
                            const float *bias, float *y, void *ws) {
    (void)ws;
    // each image b, output channel ko, position (oy,ox): bias + x*w over (ci,ky,kx)
    for (int b = 0; b < g->n; b++)
        for (int ko = 0; ko < g->k; ko++)
            for (int oy = 0; oy < g->oh; oy++)
                for (int ox = 0; ox < g->ow; ox++)
                    y[km_idx4(b, ko, oy, ox, g->k, g->oh, g->ow)] =
                        km_conv_fwd_at(g, x, w, bias, b, ko, oy, ox);
}

// dy (n,k,oh,ow), w (k,c,r,s) -> dx (n,c,h,w) += (= when !acc)
static void loop_conv2d_bwd_data(const struct conv_geom *g, const float *dy, const float *w,
                                 float *dx, bool acc, void *ws) {
    (void)ws;
    // each image b, channel ci, pixel (iy,ix): dy*w over every (ko,oy,ox) whose window covers it
    for (int b = 0; b < g->n; b++)
        for (int ci = 0; ci < g->c; ci++)
            for (int iy = 0; iy < g->h; iy++)
                for (int ix = 0; ix < g->w; ix++) {
                    size_t at = km_idx4(b, ci, iy, ix, g->c, g->h, g->w);
                    dx[at] = km_conv_bwd_data_at(g, dy, w, acc ? dx[at] : 0.0f, b, ci, iy, ix);
                }
}

// x (n,c,h,w), dy (n,k,oh,ow) -> dw (k,c,r,s) +=, dbias (k) += (if not NULL)
static void loop_conv2d_bwd_filter(const struct conv_geom *g, const float *x, const float *dy,
                                   float *dw, float *dbias, void *ws) {
    (void)ws;
    // each weight (ko,ci,ky,kx): dy*x over every image b and output position (oy,ox)
    for (int ko = 0; ko < g->k; ko++)
        for (int ci = 0; ci < g->c; ci++)
            for (int ky = 0; ky < g->r; ky++)
                for (int kx = 0; kx < g->s; kx++) {
                    size_t at = km_idx4(ko, ci, ky, kx, g->c, g->r, g->s);
                    dw[at] = km_conv_bwd_filter_at(g, x, dy, dw[at], ko, ci, ky, kx);
                }
    // each output channel ko: dy summed over every image and output position
    if (dbias)
        for (int ko = 0; ko < g->k; ko++)
            dbias[ko] = km_bias_grad_at(g->n, g->k, g->oh * g->ow, dy, dbias[ko], ko);
}

/* ---- linear ---- */

// x (n,in), w (out,in), bias (out) or NULL -> y (n,out) = x w^T + bias
static void loop_linear_fwd(int n, int in, int out, const float *x, const float *w,
                            const float *bias, float *y) {
    // each sample i and output j: the bias, plus row i of x dotted with row j of w
    for (int i = 0; i < n; i++)
        for (int j = 0; j < out; j++)
            y[(size_t)i * out + j] = km_linear_fwd_at(in, x, w, bias, i, j);
}

// x (n,in), w (out,in), dy (n,out) -> dx (n,in) +=, dw (out,in) +=, dbias (out) +=
// Any of dx, dw, dbias may be NULL when nobody wants that gradient.
static void loop_linear_bwd(int n, int in, int out, const float *x, const float *w,
                            const float *dy, float *dx, float *dw, float *dbias) {
    // dx: each sample i and input j, row i of dy dotted with column j of w
    if (dx)
        for (int i = 0; i < n; i++)
            for (int j = 0; j < in; j++)
                dx[(size_t)i * in + j] += km_linear_bwd_x_at(in, out, w, dy, i, j);
    // dw: each output p and input j, column p of dy dotted with column j of x
    if (dw)
        for (int p = 0; p < out; p++)
            for (int j = 0; j < in; j++)
                dw[(size_t)p * in + j] += km_linear_bwd_w_at(n, in, out, x, dy, p, j);
    // dbias: each output p, column p of dy summed
    if (dbias)
        for (int p = 0; p < out; p++) dbias[p] = km_bias_grad_at(n, out, 1, dy, dbias[p], p);
}

/* ---- batch norm ---- */

// x (n,c,hw), gamma (c), beta (c) -> y (n,c,hw), mean (c), invstd (c);
// running_mean (c), running_var (c) updated in place
static void loop_bn_fwd_train(int n, int c, int hw, const float *x, const float *gamma,
                              const float *beta, float *y, float *mean, float *invstd,
                              float *running_mean, float *running_var, float momentum,
                              float eps) {
    for (int ch = 0; ch < c; ch++) {
        km_bn_stats_at(n, c, hw, x, mean, invstd, running_mean, running_var, momentum, eps, ch);
        for (int i = 0; i < n; i++)
            for (int j = 0; j < hw; j++) {
                size_t at = km_idx3(i, ch, j, c, hw);
                y[at] = km_bn_normalize(x[at], mean[ch], invstd[ch], gamma[ch], beta[ch]);
            }
    }
}

// x (n,c,hw), gamma, beta, running_mean, running_var (c) -> y (n,c,hw)
static void loop_bn_fwd_eval(int n, int c, int hw, const float *x, const float *gamma,
                             const float *beta, const float *running_mean,
                             const float *running_var, float eps, float *y) {
    for (int i = 0; i < n; i++)
        for (int ch = 0; ch < c; ch++) {
            float is = 1.0f / sqrtf(running_var[ch] + eps);
            for (int j = 0; j < hw; j++) {
                size_t at = km_idx3(i, ch, j, c, hw);
                y[at] = km_bn_normalize(x[at], running_mean[ch], is, gamma[ch], beta[ch]);
            }
        }
}

// x, dy (n,c,hw), gamma, mean, invstd (c) -> dx (n,c,hw) += (= when !acc_dx),
// dgamma (c) +=, dbeta (c) +=
static void loop_bn_bwd(int n, int c, int hw, const float *x, const float *dy,
                        const float *gamma, const float *mean, const float *invstd, float *dx,
                        bool acc_dx, float *dgamma, float *dbeta) {
    long m = (long)n * hw;
    if (!acc_dx) memset(dx, 0, sizeof(float) * n * c * hw);
    for (int ch = 0; ch < c; ch++) {
        double sum_dy, sum_dy_xhat;
        km_bn_bwd_sums_at(n, c, hw, x, dy, mean, invstd, ch, &sum_dy, &sum_dy_xhat);
        for (int i = 0; i < n; i++)
            for (int j = 0; j < hw; j++) {
                size_t at = km_idx3(i, ch, j, c, hw);
                float xhat = (x[at] - mean[ch]) * invstd[ch];
                dx[at] += km_bn_dx(dy[at], xhat, gamma[ch], invstd[ch], m, (float)sum_dy,
                                   (float)sum_dy_xhat);
            }
        dgamma[ch] += (float)sum_dy_xhat;
        dbeta[ch] += (float)sum_dy;
    }
}

/* ---- batch norm + relu, fused: here simply batch norm, then the rest per element ---- */

// x (n,c,hw), res (n,c,hw) or NULL, gamma (c), beta (c) -> y = relu(bn(x) + res),
// mean (c), invstd (c); running_mean (c), running_var (c) updated in place
static void loop_bn_relu_fwd_train(int n, int c, int hw, const float *x, const float *res,
                                   const float *gamma, const float *beta, float *y, float *mean,
                                   float *invstd, float *running_mean, float *running_var,
                                   float momentum, float eps) {
    loop_bn_fwd_train(n, c, hw, x, gamma, beta, y, mean, invstd, running_mean, running_var,
                      momentum, eps);
    for (size_t i = 0; i < (size_t)n * c * hw; i++) y[i] = km_relu(y[i] + (res ? res[i] : 0.0f));
}

// x, y, dy (n,c,hw), gamma, mean, invstd (c) -> dx (n,c,hw) +=, dres (n,c,hw) += (or NULL),
// dgamma (c) +=, dbeta (c) +=; dx and dres zeroed first when !acc_dx, !acc_dres
// The gradient reaching the sum bn(x) + res is g = dy where y > 0: res gets it as is,
// and batch norm's backward takes it from there (loop_bn_bwd's sums, with g for dy).
static void loop_bn_relu_bwd(int n, int c, int hw, const float *x, const float *y,
                             const float *dy, const float *gamma, const float *mean,
                             const float *invstd, float *dx, bool acc_dx, float *dres,
                             bool acc_dres, float *dgamma, float *dbeta) {
    long m = (long)n * hw;
    if (!acc_dx) memset(dx, 0, sizeof(float) * n * c * hw);
    if (dres && !acc_dres) memset(dres, 0, sizeof(float) * n * c * hw);
    for (int ch = 0; ch < c; ch++) {
        double sum_g = 0.0, sum_g_xhat = 0.0;
        for (int i = 0; i < n; i++)
            for (int j = 0; j < hw; j++) {
                size_t at = km_idx3(i, ch, j, c, hw);
                float g = km_relu_grad(y[at], dy[at]);
                sum_g += g;
                sum_g_xhat += g * (x[at] - mean[ch]) * invstd[ch];
            }
        for (int i = 0; i < n; i++)
            for (int j = 0; j < hw; j++) {
                size_t at = km_idx3(i, ch, j, c, hw);
                float g = km_relu_grad(y[at], dy[at]), xhat = (x[at] - mean[ch]) * invstd[ch];
                dx[at] += km_bn_dx(g, xhat, gamma[ch], invstd[ch], m, (float)sum_g,
                                   (float)sum_g_xhat);
                if (dres) dres[at] += g;
            }
        dgamma[ch] += (float)sum_g_xhat;
        dbeta[ch] += (float)sum_g;
    }
}

/* ---- pooling: the bodies are in cpu_common.c, run here on one thread ---- */

// x (n,c,h,w) -> y (n,c,oh,ow), idx (n,c,oh,ow)
static void loop_maxpool_fwd(const struct pool_geom *g, const float *x, float *y,
                             int32_t *idx) {
    cpu_maxpool_fwd(g, x, y, idx, false);
}

// idx (n,c,oh,ow), dy (n,c,oh,ow) -> dx (n,c,h,w) +=
static void loop_maxpool_bwd(const struct pool_geom *g, const int32_t *idx, const float *dy,
                             float *dx) {
    cpu_maxpool_bwd(g, idx, dy, dx, false);
}

// x (n,c,h,w) -> y (n,c,oh,ow)
static void loop_avgpool_fwd(const struct pool_geom *g, const float *x, float *y) {
    cpu_avgpool_fwd(g, x, y, false);
}

// dy (n,c,oh,ow) -> dx (n,c,h,w) +=
static void loop_avgpool_bwd(const struct pool_geom *g, const float *dy, float *dx) {
    cpu_avgpool_bwd(g, dy, dx, false);
}

/* ---- input ---- */

// src uint8 (n,h,w,c), mean (c), std (c) -> dst (n,c,h,w)
static void loop_normalize_u8(int n, int h, int w, int c, const uint8_t *src,
                              const float *mean, const float *std, float *dst) {
    for (int i = 0; i < n; i++)
        for (int ch = 0; ch < c; ch++)
            for (int y = 0; y < h; y++)
                for (int x = 0; x < w; x++)
                    dst[km_idx4(i, ch, y, x, c, h, w)] =
                        km_normalize_u8(src[km_idx4(i, y, x, ch, h, w, c)], mean[ch], std[ch]);
}

const struct backend cpu_loop_backend = {
    .name = "cpu-loop",
    .dev = DEV_CPU,
    .flavour = KF_LOOP,
    CPU_COMMON_MEMORY_ENTRIES,
    .zero = cpu_zero,
    CPU_COMMON_SHARED_ENTRIES,
    CPU_COMMON_ELEMENTWISE_ENTRIES,
    .gemm = loop_gemm,
    .conv2d_workspace = loop_conv2d_workspace,
    .conv2d_fwd = loop_conv2d_fwd,
    .conv2d_bwd_data = loop_conv2d_bwd_data,
    .conv2d_bwd_filter = loop_conv2d_bwd_filter,
    .linear_fwd = loop_linear_fwd,
    .linear_bwd = loop_linear_bwd,
    .bn_fwd_train = loop_bn_fwd_train,
    .bn_fwd_eval = loop_bn_fwd_eval,
    .bn_bwd = loop_bn_bwd,
    .bn_relu_fwd_train = loop_bn_relu_fwd_train,
    .bn_relu_bwd = loop_bn_relu_bwd,
    .maxpool_fwd = loop_maxpool_fwd,
    .maxpool_bwd = loop_maxpool_bwd,
    .avgpool_fwd = loop_avgpool_fwd,
    .avgpool_bwd = loop_avgpool_bwd,
    .normalize_u8 = loop_normalize_u8,
};
