/* vectorized.c — the fast CPU backend: convolutions as im2col + OpenBLAS sgemm,
 * OpenMP across the images of a batch and the channels of batch norm, inner
 * loops over contiguous memory that the compiler turns into SIMD.
 * It computes what loop.c computes, to float32 tolerance (tests/test_kernels.c).
 *
 * OpenBLAS threads vs OpenMP threads. The convolutions of a small network are
 * many small gemms (resnet_small: 16x144 times 144x784 per image), which split
 * poorly inside one gemm but perfectly across images. So the conv kernels run one
 * image per OpenMP thread and call sgemm from inside that parallel region, with
 * OpenBLAS switched to one thread for the region (blas_serial_begin/end). Without
 * that, our OpenBLAS (the pthread build, blind to OpenMP) would fan every one of
 * those concurrent calls out onto its own pool and oversubscribe the cores. When
 * the batch is smaller than the team or the work too small to split, and for the
 * plain gemm and linear entries, sgemm is called from outside any parallel region
 * and OpenBLAS threads it as it sees fit.
 * The switch is process-wide: only the thread that runs the kernels may call BLAS. */
#include <cblas.h>
#include <omp.h>
#include <string.h>

#include "cpu_common.h"
#include "math.h"

/* ---- threads ----
 * A parallel region costs microseconds to open, and far more when its threads
 * share the cores with another busy process: on small problems it loses. */
enum { PAR_MIN_WORK = 1 << 16 }; /* multiply-adds, or elements touched */

static bool worth_threads(double work) {
    return work >= PAR_MIN_WORK && omp_get_max_threads() > 1;
}

/* Returns OpenBLAS's thread count before the call, for blas_serial_end. */
static int blas_serial_begin(bool parallel_region) {
    int before = openblas_get_num_threads();
    if (parallel_region && before != 1) openblas_set_num_threads(1);
    return before;
}

static void blas_serial_end(bool parallel_region, int before) {
    if (parallel_region && before != 1) openblas_set_num_threads(before);
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

/* ---- convolution ----
 * Per image, with col (c*r*s, oh*ow) the im2col of x:
 *   fwd:         y (k, oh*ow)     = w (k, c*r*s) . col
 *   bwd_data:    dcol             = w^T . dy (k, oh*ow), then col2im adds dcol into dx
 *   bwd_filter:  dw (k, c*r*s)   += dy . col^T
 * A 1x1 stride-1 unpadded conv has col == x, so it skips im2col. */

static bool conv_is_pointwise(const struct conv_geom *g) {
    return g->r == 1 && g->s == 1 && g->stride == 1 && g->pad == 0;
}

static size_t conv_col_floats(const struct conv_geom *g) {
    return conv_is_pointwise(g) ? 0 : (size_t)g->c * g->r * g->s * g->oh * g->ow;
}

/* Each thread's slot of the workspace: its col buffer, then its private dw partial
 * (bwd_filter); rounded to 64 bytes so neighbouring slots don't share a cache line. */
static size_t conv_slot_floats(const struct conv_geom *g) {
    size_t floats = conv_col_floats(g) + (size_t)g->k * g->c * g->r * g->s;
    return (floats + 15) / 16 * 16;
}

static float *conv_thread_slot(const struct conv_geom *g, void *ws) {
    return (float *)ws + (size_t)omp_get_thread_num() * conv_slot_floats(g);
}

/* One image per thread pays only when every thread gets an image, and enough work. */
static bool conv_batch_parallel(const struct conv_geom *g) {
    double macs = (double)g->n * g->k * g->c * g->r * g->s * g->oh * g->ow;
    return g->n >= omp_get_max_threads() && worth_threads(macs);
}

/* Sized for omp_get_max_threads(): the thread count must not grow between this
 * call and the kernels that use the workspace. */
static size_t vec_conv2d_workspace(const struct conv_geom *g) {
    return (size_t)omp_get_max_threads() * conv_slot_floats(g) * sizeof(float);
}

/* Output positions ox whose tap kx lands inside the input row: [*lo, *hi). */
static void conv_valid_range(int tap, int in, int out, int stride, int pad, int *lo, int *hi) {
    int first = pad - tap;            /* ox*stride >= pad - tap */
    int last = in - 1 + pad - tap;    /* ox*stride <= in - 1 + pad - tap */
    *lo = first <= 0 ? 0 : (first + stride - 1) / stride;
    *hi = last < 0 ? 0 : last / stride + 1;
    if (*hi > out) *hi = out;
    if (*lo > *hi) *lo = *hi;
}

// x (c,h,w) one image -> col (c*r*s, oh*ow): row (ci,ky,kx) holds the input pixel
// under that tap for every output position, 0 where it falls in the padding.
static void im2col(const struct conv_geom *g, const float *x, float *col) {
    size_t ohow = (size_t)g->oh * g->ow;
    for (int ci = 0; ci < g->c; ci++)
        for (int ky = 0; ky < g->r; ky++)
            for (int kx = 0; kx < g->s; kx++) {
                float *row = col + ns_idx3(ci, ky, kx, g->r, g->s) * ohow;
                int lo, hi;
                conv_valid_range(kx, g->w, g->ow, g->stride, g->pad, &lo, &hi);
                for (int oy = 0; oy < g->oh; oy++) {
                    float *out = row + (size_t)oy * g->ow;
                    int iy = ns_conv_in_pos(oy, ky, g->stride, g->pad);
                    if (!ns_in_range(iy, g->h)) {
                        memset(out, 0, sizeof(float) * g->ow);
                        continue;
                    }
                    const float *in = x + ns_idx3(ci, iy, 0, g->h, g->w);
                    int shift = kx - g->pad; /* ix = ox*stride + shift */
                    for (int ox = 0; ox < lo; ox++) out[ox] = 0.0f;
                    if (g->stride == 1)
                        for (int ox = lo; ox < hi; ox++) out[ox] = in[ox + shift];
                    else
                        for (int ox = lo; ox < hi; ox++) out[ox] = in[ox * g->stride + shift];
                    for (int ox = hi; ox < g->ow; ox++) out[ox] = 0.0f;
                }
            }
}

// col (c*r*s, oh*ow) -> x (c,h,w) +=: the adjoint of im2col, padding taps dropped
static void col2im_add(const struct conv_geom *g, const float *col, float *x) {
    size_t ohow = (size_t)g->oh * g->ow;
    for (int ci = 0; ci < g->c; ci++)
        for (int ky = 0; ky < g->r; ky++)
            for (int kx = 0; kx < g->s; kx++) {
                const float *row = col + ns_idx3(ci, ky, kx, g->r, g->s) * ohow;
                int lo, hi;
                conv_valid_range(kx, g->w, g->ow, g->stride, g->pad, &lo, &hi);
                for (int oy = 0; oy < g->oh; oy++) {
                    int iy = ns_conv_in_pos(oy, ky, g->stride, g->pad);
                    if (!ns_in_range(iy, g->h)) continue;
                    const float *from = row + (size_t)oy * g->ow;
                    float *in = x + ns_idx3(ci, iy, 0, g->h, g->w);
                    int shift = kx - g->pad;
                    if (g->stride == 1)
                        for (int ox = lo; ox < hi; ox++) in[ox + shift] += from[ox];
                    else
                        for (int ox = lo; ox < hi; ox++) in[ox * g->stride + shift] += from[ox];
                }
            }
}

// x (n,c,h,w), w (k,c,r,s), bias (k) or NULL -> y (n,k,oh,ow)
// Images are handed out dynamically: when loader workers take a core for a
// while, the other threads pick up its share instead of waiting for it.
static void vec_conv2d_fwd(const struct conv_geom *g, const float *x, const float *w,
                           const float *bias, float *y, void *ws) {
    int crs = g->c * g->r * g->s, ohow = g->oh * g->ow;
    bool par = conv_batch_parallel(g);
    int blas_threads = blas_serial_begin(par);
#pragma omp parallel for if (par) schedule(dynamic)
    for (int i = 0; i < g->n; i++) {
        const float *xi = x + (size_t)i * g->c * g->h * g->w;
        float *yi = y + (size_t)i * g->k * ohow;
        const float *cols = xi;
        if (!conv_is_pointwise(g)) {
            float *col = conv_thread_slot(g, ws);
            im2col(g, xi, col);
            cols = col;
        }
        if (bias)
            for (int ko = 0; ko < g->k; ko++)
                for (int j = 0; j < ohow; j++) yi[(size_t)ko * ohow + j] = bias[ko];
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, g->k, ohow, crs, 1.0f, w, crs,
                    cols, ohow, bias ? 1.0f : 0.0f, yi, ohow);
    }
    blas_serial_end(par, blas_threads);
}

// dy (n,k,oh,ow), w (k,c,r,s) -> dx (n,c,h,w) +=
static void vec_conv2d_bwd_data(const struct conv_geom *g, const float *dy, const float *w,
                                float *dx, void *ws) {
    int crs = g->c * g->r * g->s, ohow = g->oh * g->ow;
    bool par = conv_batch_parallel(g);
    int blas_threads = blas_serial_begin(par);
#pragma omp parallel for if (par) schedule(dynamic)
    for (int i = 0; i < g->n; i++) {
        const float *dyi = dy + (size_t)i * g->k * ohow;
        float *dxi = dx + (size_t)i * g->c * g->h * g->w;
        if (conv_is_pointwise(g)) {
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, crs, ohow, g->k, 1.0f, w, crs,
                        dyi, ohow, 1.0f, dxi, ohow);
        } else {
            float *dcol = conv_thread_slot(g, ws);
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, crs, ohow, g->k, 1.0f, w, crs,
                        dyi, ohow, 0.0f, dcol, ohow);
            col2im_add(g, dcol, dxi);
        }
    }
    blas_serial_end(par, blas_threads);
}

// x (n,c,h,w), dy (n,k,oh,ow) -> dw (k,c,r,s) +=, dbias (k) += (if not NULL)
// Each thread sums its images into a private partial; the partials are added to dw
// at the end, in thread order. The schedule is static, unlike fwd and bwd_data, so
// which images land in which partial, and so the float rounding, doesn't depend
// on timing: a seeded run gives the same weights every time.
static void vec_conv2d_bwd_filter(const struct conv_geom *g, const float *x, const float *dy,
                                  float *dw, float *dbias, void *ws) {
    int crs = g->c * g->r * g->s, ohow = g->oh * g->ow;
    size_t wsize = (size_t)g->k * crs, col_floats = conv_col_floats(g);
    bool par = conv_batch_parallel(g);
    int team = 1;
    int blas_threads = blas_serial_begin(par);
#pragma omp parallel if (par)
    {
        float *slot = conv_thread_slot(g, ws);
        float *dw_part = slot + col_floats;
        memset(dw_part, 0, sizeof(float) * wsize);
#pragma omp single
        team = omp_get_num_threads();
#pragma omp for schedule(static)
        for (int i = 0; i < g->n; i++) {
            const float *xi = x + (size_t)i * g->c * g->h * g->w;
            const float *dyi = dy + (size_t)i * g->k * ohow;
            const float *cols = xi;
            if (!conv_is_pointwise(g)) {
                im2col(g, xi, slot);
                cols = slot;
            }
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, g->k, crs, ohow, 1.0f, dyi,
                        ohow, cols, ohow, 1.0f, dw_part, crs);
        }
    }
    blas_serial_end(par, blas_threads);
    for (int t = 0; t < team; t++) {
        const float *part = (const float *)ws + (size_t)t * conv_slot_floats(g) + col_floats;
        cpu_axpy(wsize, 1.0f, part, dw);
    }
    if (dbias)
        for (int i = 0; i < g->n; i++)
            for (int ko = 0; ko < g->k; ko++) {
                const float *plane = dy + ((size_t)i * g->k + ko) * ohow;
                float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
                for (int j = 0; j < ohow; j++) sum += plane[j];
                dbias[ko] += sum;
            }
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

/* ---- batch norm: one OpenMP thread per channel ---- */

// x (n,c,hw), gamma (c), beta (c) -> y (n,c,hw), mean (c), invstd (c);
// running_mean (c), running_var (c) updated in place
// Mean and variance come from one pass of sums and sums of squares. Taken about
// the channel's first value rather than 0, those sums don't cancel catastrophically
// when the mean is large against the spread.
static void vec_bn_fwd_train(int n, int c, int hw, const float *x, const float *gamma,
                             const float *beta, float *y, float *mean, float *invstd,
                             float *running_mean, float *running_var, float momentum,
                             float eps) {
    long m = (long)n * hw;
#pragma omp parallel for if (worth_threads((double)m * c)) schedule(static)
    for (int ch = 0; ch < c; ch++) {
        float shift = x[ns_idx3(0, ch, 0, c, hw)];
        double sum = 0.0, squares = 0.0;
        for (int i = 0; i < n; i++) {
            const float *row = x + ns_idx3(i, ch, 0, c, hw);
            float s = 0.0f, ss = 0.0f;
#pragma omp simd reduction(+ : s, ss)
            for (int j = 0; j < hw; j++) {
                float d = row[j] - shift;
                s += d;
                ss += d * d;
            }
            sum += s;
            squares += ss;
        }
        double shifted_mean = sum / m;
        double var_d = squares / m - shifted_mean * shifted_mean;
        float var = var_d > 0.0 ? (float)var_d : 0.0f;
        float mu = (float)(shift + shifted_mean);
        float is = 1.0f / sqrtf(var + eps);
        for (int i = 0; i < n; i++) {
            const float *row = x + ns_idx3(i, ch, 0, c, hw);
            float *out = y + ns_idx3(i, ch, 0, c, hw);
            for (int j = 0; j < hw; j++)
                out[j] = ns_bn_normalize(row[j], mu, is, gamma[ch], beta[ch]);
        }
        mean[ch] = mu;
        invstd[ch] = is;
        running_mean[ch] = ns_running_update(running_mean[ch], mu, momentum);
        running_var[ch] = ns_running_update(running_var[ch], ns_unbiased_var(var, m), momentum);
    }
}

// x (n,c,hw), gamma, beta, running_mean, running_var (c) -> y (n,c,hw)
static void vec_bn_fwd_eval(int n, int c, int hw, const float *x, const float *gamma,
                            const float *beta, const float *running_mean,
                            const float *running_var, float eps, float *y) {
#pragma omp parallel for collapse(2) if (worth_threads((double)n * c * hw)) schedule(static)
    for (int i = 0; i < n; i++)
        for (int ch = 0; ch < c; ch++) {
            float is = 1.0f / sqrtf(running_var[ch] + eps);
            const float *row = x + ns_idx3(i, ch, 0, c, hw);
            float *out = y + ns_idx3(i, ch, 0, c, hw);
            for (int j = 0; j < hw; j++)
                out[j] = ns_bn_normalize(row[j], running_mean[ch], is, gamma[ch], beta[ch]);
        }
}

// x, dy (n,c,hw), gamma, mean, invstd (c) -> dx (n,c,hw) +=, dgamma (c) +=, dbeta (c) +=
static void vec_bn_bwd(int n, int c, int hw, const float *x, const float *dy,
                       const float *gamma, const float *mean, const float *invstd, float *dx,
                       float *dgamma, float *dbeta) {
    long m = (long)n * hw;
#pragma omp parallel for if (worth_threads((double)m * c)) schedule(static)
    for (int ch = 0; ch < c; ch++) {
        float mu = mean[ch], is = invstd[ch];
        double sum_dy = 0.0, sum_dy_xhat = 0.0;
        for (int i = 0; i < n; i++) {
            const float *xr = x + ns_idx3(i, ch, 0, c, hw), *dyr = dy + ns_idx3(i, ch, 0, c, hw);
            float s = 0.0f, sx = 0.0f;
#pragma omp simd reduction(+ : s, sx)
            for (int j = 0; j < hw; j++) {
                s += dyr[j];
                sx += dyr[j] * (xr[j] - mu) * is;
            }
            sum_dy += s;
            sum_dy_xhat += sx;
        }
        for (int i = 0; i < n; i++) {
            const float *xr = x + ns_idx3(i, ch, 0, c, hw), *dyr = dy + ns_idx3(i, ch, 0, c, hw);
            float *dxr = dx + ns_idx3(i, ch, 0, c, hw);
            for (int j = 0; j < hw; j++)
                dxr[j] += ns_bn_dx(dyr[j], (xr[j] - mu) * is, gamma[ch], is, m, (float)sum_dy,
                                   (float)sum_dy_xhat);
        }
        dgamma[ch] += (float)sum_dy_xhat;
        dbeta[ch] += (float)sum_dy;
    }
}

/* ---- pooling: the bodies are in cpu_common.c, one plane per OpenMP thread ---- */

static bool pool_parallel(const struct pool_geom *g) {
    return worth_threads((double)g->n * g->c * g->oh * g->ow * g->size * g->size);
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

// src uint8 (n,h,w,c), mean (c), std (c) -> dst (n,c,h,w)
// One output plane per thread, written contiguously; the reads stride over c.
static void vec_normalize_u8(int n, int h, int w, int c, const uint8_t *src,
                             const float *mean, const float *std, float *dst) {
    size_t hw = (size_t)h * w;
#pragma omp parallel for collapse(2) if (worth_threads((double)n * c * hw)) schedule(static)
    for (int i = 0; i < n; i++)
        for (int ch = 0; ch < c; ch++) {
            const uint8_t *in = src + (size_t)i * hw * c + ch;
            float *out = dst + ns_idx3(i, ch, 0, c, (int)hw);
            for (size_t p = 0; p < hw; p++) out[p] = ns_normalize_u8(in[p * c], mean[ch], std[ch]);
        }
}

const struct backend cpu_vectorized_backend = {
    .name = "cpu-vectorized",
    .dev = DEV_CPU,
    .flavour = KF_VECTORIZED,
    CPU_COMMON_MEMORY_ENTRIES,
    CPU_COMMON_SHARED_ENTRIES,
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
    .maxpool_fwd = vec_maxpool_fwd,
    .maxpool_bwd = vec_maxpool_bwd,
    .avgpool_fwd = vec_avgpool_fwd,
    .avgpool_bwd = vec_avgpool_bwd,
    .normalize_u8 = vec_normalize_u8,
};
