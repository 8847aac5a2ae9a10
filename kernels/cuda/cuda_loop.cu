// cuda_loop.cu — the CUDA `loop` table: the textbook GPU version of every kernel.
// Each kernel gives one thread one output element and lets it loop over whatever
// that element needs, straight from global memory: no shared memory, no tiling, no
// libraries. Reductions over a channel give one thread the whole channel. It is
// what kernels/cpu/loop.c would be with its outer loops turned into threads, and
// the baseline the vectorized table is measured against.
//
// Every kernel starts from its flat output index `o` (or its channel, or row) and
// splits it into the output's coordinates once (km_unflatten2/3/4, km_math.h): the
// indices of kernels/cpu/loop.c's loop nest. The bodies of most (gemm, convolution,
// linear, batch norm, the softmax rows) are in kernels/km_elem.h, the same functions
// kernels/cpu/loop.c calls inside that nest. Entries return at once when there is
// nothing to compute; pooling, the loss gradient and accuracy are shared with the
// vectorized table (cuda_shared.cu).
#include "cuda_common.h"
#include "km_elem.h"

// ---- dense -------------------------------------------------------------------------

// op(a) (m,k), op(b) (k,n) -> c (m,n) = alpha*op(a)op(b) + beta*c
__global__ static void gemm_kernel(bool ta, bool tb, int m, int n, int k, float alpha,
                                   const float *a, const float *b, float beta, float *c) {
    size_t o = cu_tid();
    if (o >= (size_t)m * n) return;
    int i, j;
    km_unflatten2(o, n, &i, &j);
    c[o] = km_gemm_at(ta, tb, m, n, k, alpha, a, b, beta, c, i, j);
}

static void loop_gemm(bool ta, bool tb, int m, int n, int k, float alpha, const float *a,
                      const float *b, float beta, float *c) {
    CU_LAUNCH_PER_ELEMENT(gemm_kernel, (size_t)m * n, ta, tb, m, n, k, alpha, a, b, beta, c);
}

// x (n), y (n): y += alpha*x
__global__ static void axpy_kernel(size_t n, float alpha, const float *x, float *y) {
    size_t i = cu_tid();
    if (i < n) y[i] += alpha * x[i];
}

static void loop_axpy(size_t n, float alpha, const float *x, float *y) {
    CU_LAUNCH_PER_ELEMENT(axpy_kernel, n, n, alpha, x, y);
}

// ---- convolution --------------------------------------------------------------------

static size_t loop_conv2d_workspace(const struct conv_geom *g) {
    (void)g;
    return 0;
}

// x (n,c,h,w), w (k,c,r,s), bias (k) or NULL -> y (n,k,oh,ow); a thread per y element
__global__ static void conv_fwd_kernel(struct conv_geom g, const float *x, const float *w,
                                       const float *bias, float *y) {
    size_t o = cu_tid();
    if (o >= (size_t)g.n * g.k * g.oh * g.ow) return;
    int b, ko, oy, ox;
    km_unflatten4(o, g.k, g.oh, g.ow, &b, &ko, &oy, &ox);
    y[o] = km_conv_fwd_at(&g, x, w, bias, b, ko, oy, ox);
}

static void loop_conv2d_fwd(const struct conv_geom *g, const float *x, const float *w,
                            const float *bias, float *y, void *ws) {
    (void)ws;
    CU_LAUNCH_PER_ELEMENT(conv_fwd_kernel, (size_t)g->n * g->k * g->oh * g->ow, *g, x, w, bias, y);
}

// dy (n,k,oh,ow), w (k,c,r,s) -> dx (n,c,h,w) += (= when !acc); a thread per dx element
// collects dy*w from every output position whose window has this pixel under tap (ky,kx)
__global__ static void conv_bwd_data_kernel(struct conv_geom g, const float *dy, const float *w,
                                            float *dx, bool acc) {
    size_t o = cu_tid();
    if (o >= (size_t)g.n * g.c * g.h * g.w) return;
    int b, ci, iy, ix;
    km_unflatten4(o, g.c, g.h, g.w, &b, &ci, &iy, &ix);
    dx[o] = km_conv_bwd_data_at(&g, dy, w, acc ? dx[o] : 0.0f, b, ci, iy, ix);  // !acc: not read
}

static void loop_conv2d_bwd_data(const struct conv_geom *g, const float *dy, const float *w,
                                 float *dx, bool acc, void *ws) {
    (void)ws;
    CU_LAUNCH_PER_ELEMENT(conv_bwd_data_kernel, (size_t)g->n * g->c * g->h * g->w, *g, dy, w, dx,
                          acc);
}

// x (n,c,h,w), dy (n,k,oh,ow) -> dw (k,c,r,s) +=; a thread per dw element sums
// dy*x over every image and output position
__global__ static void conv_bwd_filter_kernel(struct conv_geom g, const float *x,
                                              const float *dy, float *dw) {
    size_t o = cu_tid();
    if (o >= (size_t)g.k * g.c * g.r * g.s) return;
    int ko, ci, ky, kx;
    km_unflatten4(o, g.c, g.r, g.s, &ko, &ci, &ky, &kx);
    dw[o] = km_conv_bwd_filter_at(&g, x, dy, dw[o], ko, ci, ky, kx);
}

// dy (n,k,hw) -> dbias (k) +=; a thread per channel
__global__ static void channel_sum_kernel(int n, int k, int hw, const float *dy, float *dbias) {
    size_t ko = cu_tid();
    if (ko < (size_t)k) dbias[ko] = km_bias_grad_at(n, k, hw, dy, dbias[ko], (int)ko);
}

static void loop_conv2d_bwd_filter(const struct conv_geom *g, const float *x, const float *dy,
                                   float *dw, float *dbias, void *ws) {
    (void)ws;
    CU_LAUNCH_PER_ELEMENT(conv_bwd_filter_kernel, (size_t)g->k * g->c * g->r * g->s, *g, x, dy, dw);
    if (dbias)
        CU_LAUNCH_PER_ELEMENT(channel_sum_kernel, (size_t)g->k, g->n, g->k, g->oh * g->ow, dy,
                              dbias);
}

// ---- linear ---------------------------------------------------------------------------

// x (n,in), w (out,in), bias (out) or NULL -> y (n,out) = x w^T + bias
__global__ static void linear_fwd_kernel(int n, int in, int out, const float *x, const float *w,
                                         const float *bias, float *y) {
    size_t o = cu_tid();
    if (o >= (size_t)n * out) return;
    int i, j;
    km_unflatten2(o, out, &i, &j);
    y[o] = km_linear_fwd_at(in, x, w, bias, i, j);
}

static void loop_linear_fwd(int n, int in, int out, const float *x, const float *w,
                            const float *bias, float *y) {
    CU_LAUNCH_PER_ELEMENT(linear_fwd_kernel, (size_t)n * out, n, in, out, x, w, bias, y);
}

// dy (n,out), w (out,in) -> dx (n,in) += dy w
__global__ static void linear_bwd_x_kernel(int n, int in, int out, const float *w,
                                           const float *dy, float *dx) {
    size_t o = cu_tid();
    if (o >= (size_t)n * in) return;
    int i, j;
    km_unflatten2(o, in, &i, &j);
    dx[o] += km_linear_bwd_x_at(in, out, w, dy, i, j);
}

// dy (n,out), x (n,in) -> dw (out,in) += dy^T x
__global__ static void linear_bwd_w_kernel(int n, int in, int out, const float *x,
                                           const float *dy, float *dw) {
    size_t o = cu_tid();
    if (o >= (size_t)out * in) return;
    int p, j;
    km_unflatten2(o, in, &p, &j);
    dw[o] += km_linear_bwd_w_at(n, in, out, x, dy, p, j);
}

// Any of dx, dw, dbias may be NULL when nobody wants that gradient.
static void loop_linear_bwd(int n, int in, int out, const float *x, const float *w,
                            const float *dy, float *dx, float *dw, float *dbias) {
    if (dx) CU_LAUNCH_PER_ELEMENT(linear_bwd_x_kernel, (size_t)n * in, n, in, out, w, dy, dx);
    if (dw) CU_LAUNCH_PER_ELEMENT(linear_bwd_w_kernel, (size_t)out * in, n, in, out, x, dy, dw);
    // dbias sums dy (n,out) over n: the conv bias sum with one pixel per channel
    if (dbias) CU_LAUNCH_PER_ELEMENT(channel_sum_kernel, (size_t)out, n, out, 1, dy, dbias);
}

// ---- batch norm -------------------------------------------------------------------------

// x (n,c,hw) -> mean (c), invstd (c); running_mean, running_var (c) updated.
// A thread per channel, two passes in double like kernels/cpu/loop.c.
__global__ static void bn_stats_kernel(int n, int c, int hw, const float *x, float *mean,
                                       float *invstd, float *running_mean, float *running_var,
                                       float momentum, float eps) {
    size_t ch = cu_tid();
    if (ch >= (size_t)c) return;
    km_bn_stats_at(n, c, hw, x, mean, invstd, running_mean, running_var, momentum, eps, (int)ch);
}

// x (n,c,hw), per-channel mean, invstd, gamma, beta -> y (n,c,hw)
__global__ static void bn_apply_kernel(int n, int c, int hw, const float *x, const float *mean,
                                       const float *invstd, const float *gamma, const float *beta,
                                       float *y) {
    size_t o = cu_tid();
    if (o >= (size_t)n * c * hw) return;
    int i, ch, j;
    km_unflatten3(o, c, hw, &i, &ch, &j);
    y[o] = km_bn_apply_at(c, hw, x, mean, invstd, gamma, beta, i, ch, j);
}

static void loop_bn_fwd_train(int n, int c, int hw, const float *x, const float *gamma,
                              const float *beta, float *y, float *mean, float *invstd,
                              float *running_mean, float *running_var, float momentum,
                              float eps) {
    CU_LAUNCH_PER_ELEMENT(bn_stats_kernel, (size_t)c, n, c, hw, x, mean, invstd, running_mean,
                          running_var, momentum, eps);
    CU_LAUNCH_PER_ELEMENT(bn_apply_kernel, (size_t)n * c * hw, n, c, hw, x, mean, invstd, gamma,
                          beta, y);
}

// x (n,c,hw), gamma, beta, running_mean, running_var (c) -> y (n,c,hw)
__global__ static void bn_eval_kernel(int n, int c, int hw, const float *x, const float *gamma,
                                      const float *beta, const float *running_mean,
                                      const float *running_var, float eps, float *y) {
    size_t o = cu_tid();
    if (o >= (size_t)n * c * hw) return;
    int i, ch, j;
    km_unflatten3(o, c, hw, &i, &ch, &j);
    y[o] = km_bn_eval_at(c, hw, x, gamma, beta, running_mean, running_var, eps, i, ch, j);
}

static void loop_bn_fwd_eval(int n, int c, int hw, const float *x, const float *gamma,
                             const float *beta, const float *running_mean,
                             const float *running_var, float eps, float *y) {
    CU_LAUNCH_PER_ELEMENT(bn_eval_kernel, (size_t)n * c * hw, n, c, hw, x, gamma, beta,
                          running_mean, running_var, eps, y);
}

// x, dy (n,c,hw), mean, invstd (c) -> sums (c,2) = (sum dy, sum dy*xhat);
// dgamma (c) += sum dy*xhat, dbeta (c) += sum dy. A thread per channel.
__global__ static void bn_bwd_sums_kernel(int n, int c, int hw, const float *x, const float *dy,
                                          const float *mean, const float *invstd, float *sums,
                                          float *dgamma, float *dbeta) {
    size_t ch = cu_tid();
    if (ch >= (size_t)c) return;
    double sum_dy, sum_dy_xhat;
    km_bn_bwd_sums_at(n, c, hw, x, dy, mean, invstd, (int)ch, &sum_dy, &sum_dy_xhat);
    sums[2 * ch] = (float)sum_dy;
    sums[2 * ch + 1] = (float)sum_dy_xhat;
    dgamma[ch] += (float)sum_dy_xhat;
    dbeta[ch] += (float)sum_dy;
}

// x, dy (n,c,hw), gamma, mean, invstd, sums (c) -> dx (n,c,hw) += (= when !acc)
__global__ static void bn_bwd_dx_kernel(int n, int c, int hw, const float *x, const float *dy,
                                        const float *gamma, const float *mean,
                                        const float *invstd, const float *sums, float *dx,
                                        bool acc) {
    size_t o = cu_tid();
    if (o >= (size_t)n * c * hw) return;
    int i, ch, j;
    km_unflatten3(o, c, hw, &i, &ch, &j);
    float v = km_bn_bwd_dx_at(c, hw, (long)n * hw, x, dy, gamma, mean, invstd, sums, i, ch, j);
    dx[o] = acc ? dx[o] + v : v;
}

static void loop_bn_bwd(int n, int c, int hw, const float *x, const float *dy,
                        const float *gamma, const float *mean, const float *invstd, float *dx,
                        bool acc_dx, float *dgamma, float *dbeta) {
    float *sums = (float *)cu_scratch(sizeof(float) * 2 * (size_t)c);
    if (!sums) return;
    CU_LAUNCH_PER_ELEMENT(bn_bwd_sums_kernel, (size_t)c, n, c, hw, x, dy, mean, invstd, sums,
                          dgamma, dbeta);
    CU_LAUNCH_PER_ELEMENT(bn_bwd_dx_kernel, (size_t)n * c * hw, n, c, hw, x, dy, gamma, mean,
                          invstd, sums, dx, acc_dx);
}

// ---- elementwise ---------------------------------------------------------------------------

__global__ static void relu_fwd_kernel(size_t n, const float *x, float *y) {
    size_t i = cu_tid();
    if (i < n) y[i] = km_relu(x[i]);
}

static void loop_relu_fwd(size_t n, const float *x, float *y) {
    CU_LAUNCH_PER_ELEMENT(relu_fwd_kernel, n, n, x, y);
}

__global__ static void relu_bwd_kernel(size_t n, const float *y, const float *dy, float *dx) {
    size_t i = cu_tid();
    if (i < n) dx[i] += km_relu_grad(y[i], dy[i]);
}

static void loop_relu_bwd(size_t n, const float *y, const float *dy, float *dx) {
    CU_LAUNCH_PER_ELEMENT(relu_bwd_kernel, n, n, y, dy, dx);
}

__global__ static void add_kernel(size_t n, const float *a, const float *b, float *y) {
    size_t i = cu_tid();
    if (i < n) y[i] = a[i] + b[i];
}

static void loop_add_fwd(size_t n, const float *a, const float *b, float *y) {
    CU_LAUNCH_PER_ELEMENT(add_kernel, n, n, a, b, y);
}

// ---- global average pool ---------------------------------------------------------------

// x (n,c,hw) -> y (n,c); a thread per plane
__global__ static void gap_fwd_kernel(size_t planes, int hw, const float *x, float *y) {
    size_t p = cu_tid();
    if (p >= planes) return;
    float sum = 0.0f;
    for (int j = 0; j < hw; j++) sum += x[p * hw + j];
    y[p] = sum / (float)hw;
}

static void loop_gap_fwd(int n, int c, int hw, const float *x, float *y) {
    size_t planes = (size_t)n * c;
    CU_LAUNCH_PER_ELEMENT(gap_fwd_kernel, planes, planes, hw, x, y);
}

// dy (n,c) -> dx (n,c,hw) +=; a thread per dx element
__global__ static void gap_bwd_kernel(size_t total, int hw, const float *dy, float *dx) {
    size_t o = cu_tid();
    if (o < total) dx[o] += dy[o / hw] / (float)hw;
}

static void loop_gap_bwd(int n, int c, int hw, const float *dy, float *dx) {
    size_t total = (size_t)n * c * hw;
    CU_LAUNCH_PER_ELEMENT(gap_bwd_kernel, total, total, hw, dy, dx);
}

// ---- loss ------------------------------------------------------------------------------

// logits (n,k), labels (n) -> probs (n,k), row_loss (n) = -log probs[label];
// a thread per row, like kernels/cpu/cpu_common.c
__global__ static void softmax_rows_kernel(int n, int k, const float *logits,
                                           const int32_t *labels, float *probs,
                                           double *row_loss) {
    size_t i = cu_tid();
    if (i < (size_t)n) row_loss[i] = km_softmax_xent_row(k, logits, labels, probs, i);
}

// row_loss (n) -> *loss = mean; one thread, in row order
__global__ static void mean_kernel(int n, const double *row_loss, float *loss) {
    double total = 0.0;
    for (int i = 0; i < n; i++) total += row_loss[i];
    *loss = (float)(total / n);
}

static void loop_softmax_xent_fwd(int n, int k, const float *logits, const int32_t *labels,
                                  float *probs, float *loss) {
    double *row_loss = (double *)cu_scratch(sizeof(double) * (size_t)n);
    if (!row_loss) return;
    CU_LAUNCH_PER_ELEMENT(softmax_rows_kernel, (size_t)n, n, k, logits, labels, probs, row_loss);
    CU_LAUNCH(mean_kernel, 1, 1, n, row_loss, loss);
    CU_LAUNCHED("mean_kernel");
}

// ---- input -----------------------------------------------------------------------------

// src uint8 (n,h,w,c) -> dst (n,c,h,w), channels [p.c0, p.c0+p.cn); a thread per dst element
__global__ static void normalize_u8_kernel(int n, int h, int w, int c, struct km_norm_params p,
                                           const uint8_t *src, float *dst) {
    size_t o = cu_tid();
    if (o >= (size_t)n * p.cn * h * w) return;
    int i, cl, y, x;  // cl: the channel within this launch's group
    km_unflatten4(o, p.cn, h, w, &i, &cl, &y, &x);
    int ch = p.c0 + cl;
    dst[km_idx4(i, ch, y, x, c, h, w)] =
        km_normalize_u8(src[km_idx4(i, y, x, ch, h, w, c)], p.mean[cl], p.std[cl]);
}

static void loop_normalize_u8(int n, int h, int w, int c, const uint8_t *src, const float *mean,
                              const float *std, float *dst) {
    for (int c0 = 0; c0 < c; c0 += NS_NORM_MAX_CH) {
        struct km_norm_params p = cu_norm_params(c0, c, mean, std);
        CU_LAUNCH_PER_ELEMENT(normalize_u8_kernel, (size_t)n * p.cn * h * w, n, h, w, c, p, src,
                              dst);
    }
}

// ---- optimizer -------------------------------------------------------------------------

// w, g, v (n): w and v updated in place
__global__ static void sgd_kernel(size_t n, float *w, const float *g, float *v, float lr,
                                  float momentum, bool nesterov, float weight_decay) {
    size_t i = cu_tid();
    if (i < n) km_sgd_update(&w[i], g[i], &v[i], lr, momentum, nesterov, weight_decay);
}

static void loop_sgd_step(size_t n, float *w, const float *g, float *v, float lr, float momentum,
                          bool nesterov, float weight_decay) {
    CU_LAUNCH_PER_ELEMENT(sgd_kernel, n, n, w, g, v, lr, momentum, nesterov, weight_decay);
}

// w, g, m, v (n): w, m and v updated in place
__global__ static void adamw_kernel(size_t n, float *w, const float *g, float *m, float *v, float lr, float beta1,
                                    float beta2, float eps, float weight_decay, float bc1, float bc2_sqrt) {
    size_t i = cu_tid();
    if (i < n) km_adamw_update(&w[i], g[i], &m[i], &v[i], lr, beta1, beta2, eps, weight_decay, bc1, bc2_sqrt);
}

static void loop_adamw_step(size_t n, float *w, const float *g, float *m, float *v, float lr, float beta1,
                            float beta2, float eps, float weight_decay, float bc1, float bc2_sqrt) {
    CU_LAUNCH_PER_ELEMENT(adamw_kernel, n, n, w, g, m, v, lr, beta1, beta2, eps, weight_decay, bc1, bc2_sqrt);
}

void cu_fill_loop_table(struct backend *b) {
    b->gemm = loop_gemm;
    b->axpy = loop_axpy;
    b->conv2d_workspace = loop_conv2d_workspace;
    b->conv2d_fwd = loop_conv2d_fwd;
    b->conv2d_bwd_data = loop_conv2d_bwd_data;
    b->conv2d_bwd_filter = loop_conv2d_bwd_filter;
    b->linear_fwd = loop_linear_fwd;
    b->linear_bwd = loop_linear_bwd;
    b->bn_fwd_train = loop_bn_fwd_train;
    b->bn_fwd_eval = loop_bn_fwd_eval;
    b->bn_bwd = loop_bn_bwd;
    b->relu_fwd = loop_relu_fwd;
    b->relu_bwd = loop_relu_bwd;
    b->add_fwd = loop_add_fwd;
    b->maxpool_fwd = cu_maxpool_fwd;
    b->maxpool_bwd = cu_maxpool_bwd;
    b->avgpool_fwd = cu_avgpool_fwd;
    b->avgpool_bwd = cu_avgpool_bwd;
    b->gap_fwd = loop_gap_fwd;
    b->gap_bwd = loop_gap_bwd;
    b->softmax_xent_fwd = loop_softmax_xent_fwd;
    b->softmax_xent_bwd = cu_softmax_xent_bwd;
    b->argmax_correct = cu_argmax_correct;
    b->normalize_u8 = loop_normalize_u8;
    b->sgd_step = loop_sgd_step;
    b->adamw_step = loop_adamw_step;
}
