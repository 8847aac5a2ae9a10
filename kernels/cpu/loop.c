/* loop.c — the CPU `loop` backend: the textbook version of every kernel, plain
 * nested loops to read line by line. It is the reference the fast kernels are
 * checked against, and the baseline the benchmarks measure them by.
 * Entries that would be the same code in both CPU tables live in cpu_common.c. */
#include <string.h>

#include "cpu_common.h"
#include "ns_math.h"

/* ---- dense ---- */

// op(a) (m,k), op(b) (k,n) -> c (m,n) = alpha*op(a)op(b) + beta*c
static void loop_gemm(bool ta, bool tb, int m, int n, int k, float alpha, const float *a,
                      const float *b, float beta, float *c) {
    for (int i = 0; i < m; i++)
        for (int j = 0; j < n; j++) {
            float acc = 0.0f;
            for (int p = 0; p < k; p++)
                acc += a[ns_idx_op(ta, i, p, m, k)] * b[ns_idx_op(tb, p, j, k, n)];
            /* beta == 0 ignores c entirely, as BLAS does: it may hold garbage or NaN */
            float *out = &c[(size_t)i * n + j];
            *out = beta == 0.0f ? alpha * acc : alpha * acc + beta * *out;
        }
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
    for (int b = 0; b < g->n; b++)
        for (int ko = 0; ko < g->k; ko++)
            for (int oy = 0; oy < g->oh; oy++)
                for (int ox = 0; ox < g->ow; ox++) {
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
                    y[ns_idx4(b, ko, oy, ox, g->k, g->oh, g->ow)] = acc;
                }
}

// dy (n,k,oh,ow), w (k,c,r,s) -> dx (n,c,h,w) += (= when !acc)
// Every input pixel collects dy*w from each output position whose window covers it.
static void loop_conv2d_bwd_data(const struct conv_geom *g, const float *dy, const float *w,
                                 float *dx, bool acc, void *ws) {
    (void)ws;
    if (!acc) memset(dx, 0, sizeof(float) * g->n * g->c * g->h * g->w);
    for (int b = 0; b < g->n; b++)
        for (int ko = 0; ko < g->k; ko++)
            for (int oy = 0; oy < g->oh; oy++)
                for (int ox = 0; ox < g->ow; ox++) {
                    float grad = dy[ns_idx4(b, ko, oy, ox, g->k, g->oh, g->ow)];
                    for (int ci = 0; ci < g->c; ci++)
                        for (int ky = 0; ky < g->r; ky++)
                            for (int kx = 0; kx < g->s; kx++) {
                                int iy = ns_conv_in_pos(oy, ky, g->stride, g->pad);
                                int ix = ns_conv_in_pos(ox, kx, g->stride, g->pad);
                                if (!ns_in_range(iy, g->h) || !ns_in_range(ix, g->w)) continue;
                                dx[ns_idx4(b, ci, iy, ix, g->c, g->h, g->w)] +=
                                    grad * w[ns_idx4(ko, ci, ky, kx, g->c, g->r, g->s)];
                            }
                }
}

// x (n,c,h,w), dy (n,k,oh,ow) -> dw (k,c,r,s) +=, dbias (k) += (if not NULL)
static void loop_conv2d_bwd_filter(const struct conv_geom *g, const float *x, const float *dy,
                                   float *dw, float *dbias, void *ws) {
    (void)ws;
    for (int b = 0; b < g->n; b++)
        for (int ko = 0; ko < g->k; ko++)
            for (int oy = 0; oy < g->oh; oy++)
                for (int ox = 0; ox < g->ow; ox++) {
                    float grad = dy[ns_idx4(b, ko, oy, ox, g->k, g->oh, g->ow)];
                    if (dbias) dbias[ko] += grad;
                    for (int ci = 0; ci < g->c; ci++)
                        for (int ky = 0; ky < g->r; ky++)
                            for (int kx = 0; kx < g->s; kx++) {
                                int iy = ns_conv_in_pos(oy, ky, g->stride, g->pad);
                                int ix = ns_conv_in_pos(ox, kx, g->stride, g->pad);
                                if (!ns_in_range(iy, g->h) || !ns_in_range(ix, g->w)) continue;
                                dw[ns_idx4(ko, ci, ky, kx, g->c, g->r, g->s)] +=
                                    grad * x[ns_idx4(b, ci, iy, ix, g->c, g->h, g->w)];
                            }
                }
}

/* ---- linear ---- */

// x (n,in), w (out,in), bias (out) or NULL -> y (n,out) = x w^T + bias
static void loop_linear_fwd(int n, int in, int out, const float *x, const float *w,
                            const float *bias, float *y) {
    for (int i = 0; i < n; i++)
        for (int o = 0; o < out; o++) {
            float acc = bias ? bias[o] : 0.0f;
            for (int j = 0; j < in; j++) acc += x[(size_t)i * in + j] * w[(size_t)o * in + j];
            y[(size_t)i * out + o] = acc;
        }
}

// x (n,in), w (out,in), dy (n,out) -> dx (n,in) +=, dw (out,in) +=, dbias (out) +=
// Any of dx, dw, dbias may be NULL when nobody wants that gradient.
static void loop_linear_bwd(int n, int in, int out, const float *x, const float *w,
                            const float *dy, float *dx, float *dw, float *dbias) {
    if (dx)
        for (int i = 0; i < n; i++)
            for (int j = 0; j < in; j++) {
                float acc = 0.0f;
                for (int o = 0; o < out; o++)
                    acc += dy[(size_t)i * out + o] * w[(size_t)o * in + j];
                dx[(size_t)i * in + j] += acc;
            }
    if (dw)
        for (int o = 0; o < out; o++)
            for (int j = 0; j < in; j++) {
                float acc = 0.0f;
                for (int i = 0; i < n; i++) acc += dy[(size_t)i * out + o] * x[(size_t)i * in + j];
                dw[(size_t)o * in + j] += acc;
            }
    if (dbias)
        for (int o = 0; o < out; o++)
            for (int i = 0; i < n; i++) dbias[o] += dy[(size_t)i * out + o];
}

/* ---- batch norm ---- */

// x (n,c,hw), gamma (c), beta (c) -> y (n,c,hw), mean (c), invstd (c);
// running_mean (c), running_var (c) updated in place
static void loop_bn_fwd_train(int n, int c, int hw, const float *x, const float *gamma,
                              const float *beta, float *y, float *mean, float *invstd,
                              float *running_mean, float *running_var, float momentum,
                              float eps) {
    long m = (long)n * hw;
    for (int ch = 0; ch < c; ch++) {
        double sum = 0.0;
        for (int i = 0; i < n; i++)
            for (int j = 0; j < hw; j++) sum += x[ns_idx3(i, ch, j, c, hw)];
        float mu = (float)(sum / m);

        double squares = 0.0;
        for (int i = 0; i < n; i++)
            for (int j = 0; j < hw; j++) {
                float d = x[ns_idx3(i, ch, j, c, hw)] - mu;
                squares += d * d;
            }
        float var = (float)(squares / m);
        float is = 1.0f / sqrtf(var + eps);

        for (int i = 0; i < n; i++)
            for (int j = 0; j < hw; j++) {
                size_t at = ns_idx3(i, ch, j, c, hw);
                y[at] = ns_bn_normalize(x[at], mu, is, gamma[ch], beta[ch]);
            }
        mean[ch] = mu;
        invstd[ch] = is;
        running_mean[ch] = ns_running_update(running_mean[ch], mu, momentum);
        running_var[ch] = ns_running_update(running_var[ch], ns_unbiased_var(var, m), momentum);
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
                size_t at = ns_idx3(i, ch, j, c, hw);
                y[at] = ns_bn_normalize(x[at], running_mean[ch], is, gamma[ch], beta[ch]);
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
        double sum_dy = 0.0, sum_dy_xhat = 0.0;
        for (int i = 0; i < n; i++)
            for (int j = 0; j < hw; j++) {
                size_t at = ns_idx3(i, ch, j, c, hw);
                float xhat = (x[at] - mean[ch]) * invstd[ch];
                sum_dy += dy[at];
                sum_dy_xhat += dy[at] * xhat;
            }
        for (int i = 0; i < n; i++)
            for (int j = 0; j < hw; j++) {
                size_t at = ns_idx3(i, ch, j, c, hw);
                float xhat = (x[at] - mean[ch]) * invstd[ch];
                dx[at] += ns_bn_dx(dy[at], xhat, gamma[ch], invstd[ch], m, (float)sum_dy,
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
    for (size_t i = 0; i < (size_t)n * c * hw; i++) y[i] = ns_relu(y[i] + (res ? res[i] : 0.0f));
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
                size_t at = ns_idx3(i, ch, j, c, hw);
                float g = ns_relu_grad(y[at], dy[at]);
                sum_g += g;
                sum_g_xhat += g * (x[at] - mean[ch]) * invstd[ch];
            }
        for (int i = 0; i < n; i++)
            for (int j = 0; j < hw; j++) {
                size_t at = ns_idx3(i, ch, j, c, hw);
                float g = ns_relu_grad(y[at], dy[at]), xhat = (x[at] - mean[ch]) * invstd[ch];
                dx[at] += ns_bn_dx(g, xhat, gamma[ch], invstd[ch], m, (float)sum_g,
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
                    dst[ns_idx4(i, ch, y, x, c, h, w)] =
                        ns_normalize_u8(src[ns_idx4(i, y, x, ch, h, w, c)], mean[ch], std[ch]);
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
