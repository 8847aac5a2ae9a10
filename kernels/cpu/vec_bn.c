/* vec_bn.c — the vectorized table's batch norm, alone or fused with the ReLU after it
 * (bn_fwd_train, bn_fwd_eval, bn_bwd, bn_relu_fwd_train, bn_relu_bwd): each channel in
 * SIMD, blocks of channels spread over cpu_parallel's threads. The table and its other
 * entries are in vectorized.c, the convolutions in vec_conv.c; what these files share
 * in vec.h; the per-element math, the same on every device, in km_math.h. */
#include "km_math.h"
#include "vec.h"

/* ---- batch norm, alone or fused with the ReLU after it: a task per channel ----
 * A channel's rows lie c*hw floats apart, one per image (see "asking ahead", vec.h),
 * so the first pass asks for the next image's rows while it sums this one's, and
 * the second pass for the rows it will write. */

struct bn_job {
    int n, c, hw;
    const float *x, *res, *y_in, *dy, *gamma, *beta;
    const float *mean, *invstd;                 /* bwd: the saved statistics */
    const float *running_mean, *running_var;    /* eval */
    bool relu;
    float *y, *dx, *dres, *dgamma, *dbeta;
    bool acc_dx, acc_dres;                      /* bwd: += (else =) into dx, dres */
    float *save_mean, *save_invstd, *update_mean, *update_var; /* fwd_train */
    float momentum, eps;
};

/* A task is a block of neighbouring channels, one after the other. Two threads on
 * neighbouring channels would write the two ends of one cache line wherever a row
 * (hw floats) doesn't end on a line, 784 bytes at 14x14, and pass that line back and
 * forth between their cores; by blocks, they meet only at the blocks' edges. */
enum { BN_TASKS = 8 };

struct bn_blocks {
    void (*channel)(void *ctx, int ch, int thread);
    void *job;
    int c, per;
};

static void bn_block(void *ctx, int task, int thread) {
    const struct bn_blocks *b = ctx;
    for (int ch = task * b->per; ch < b->c && ch < (task + 1) * b->per; ch++) b->channel(b->job, ch, thread);
}

static void bn_parallel(struct bn_job *j, void (*channel)(void *ctx, int ch, int thread)) {
    struct bn_blocks b = {channel, j, j->c, (j->c + BN_TASKS - 1) / BN_TASKS};
    cpu_parallel((j->c + b.per - 1) / b.per, threads_for((double)j->n * j->c * j->hw), bn_block, &b);
}

// channel ch of x (n,c,hw) -> y = bn(x), or relu(bn(x) + res); mean, invstd; running
// statistics updated
// Mean and variance come from one pass of sums and sums of squares. Taken about
// the channel's first value rather than 0, those sums don't cancel catastrophically
// when the mean is large against the spread.
SIMD_CLONES
static void bn_train_channel(void *ctx, int ch, int thread) {
    (void)thread;
    const struct bn_job *j = ctx;
    long m = (long)j->n * j->hw;
    float shift = j->x[km_idx3(0, ch, 0, j->c, j->hw)];
    double sum = 0.0, squares = 0.0;
    int la = planes_ahead(j->hw);
    size_t ahead = (size_t)la * j->c * j->hw;
    for (int i = 0; i < j->n; i++) {
        const float *row = j->x + km_idx3(i, ch, 0, j->c, j->hw);
        float s = 0.0f, ss = 0.0f;
        if (i + la < j->n) prefetch_read(row + ahead, j->hw);
#pragma omp simd reduction(+ : s, ss)
        for (int q = 0; q < j->hw; q++) {
            float d = row[q] - shift;
            s += d;
            ss += d * d;
        }
        sum += s;
        squares += ss;
    }
    double shifted_mean = sum / m, var_d = squares / m - shifted_mean * shifted_mean;
    float var = var_d > 0.0 ? (float)var_d : 0.0f;
    float mu = (float)(shift + shifted_mean), is = 1.0f / sqrtf(var + j->eps);
    float gamma = j->gamma[ch], beta = j->beta[ch];
    for (int i = 0; i < j->n; i++) {
        size_t at = km_idx3(i, ch, 0, j->c, j->hw);
        const float *row = j->x + at, *res = j->res ? j->res + at : NULL;
        float *out = j->y + at;
        if (i + la < j->n) {
            if (res) prefetch_read(res + ahead, j->hw);
            prefetch_write(out + ahead, j->hw);
        }
        if (res)
#pragma omp simd
            for (int q = 0; q < j->hw; q++)
                out[q] = km_relu(km_bn_normalize(row[q], mu, is, gamma, beta) + res[q]);
        else if (j->relu)
#pragma omp simd
            for (int q = 0; q < j->hw; q++)
                out[q] = km_relu(km_bn_normalize(row[q], mu, is, gamma, beta));
        else
#pragma omp simd
            for (int q = 0; q < j->hw; q++) out[q] = km_bn_normalize(row[q], mu, is, gamma, beta);
    }
    j->save_mean[ch] = mu;
    j->save_invstd[ch] = is;
    j->update_mean[ch] = km_running_update(j->update_mean[ch], mu, j->momentum);
    j->update_var[ch] = km_running_update(j->update_var[ch], km_unbiased_var(var, m), j->momentum);
}

// x (n,c,hw), gamma (c), beta (c) -> y (n,c,hw), mean (c), invstd (c);
// running_mean (c), running_var (c) updated in place
void vec_bn_fwd_train(int n, int c, int hw, const float *x, const float *gamma,
                      const float *beta, float *y, float *mean, float *invstd,
                      float *running_mean, float *running_var, float momentum,
                      float eps) {
    struct bn_job j = {.n = n, .c = c, .hw = hw, .x = x, .gamma = gamma, .beta = beta, .y = y,
                       .save_mean = mean, .save_invstd = invstd, .update_mean = running_mean,
                       .update_var = running_var, .momentum = momentum, .eps = eps};
    bn_parallel(&j, bn_train_channel);
}

// x (n,c,hw), res (n,c,hw) or NULL, gamma (c), beta (c) -> y = relu(bn(x) + res),
// mean (c), invstd (c); running_mean (c), running_var (c) updated in place
void vec_bn_relu_fwd_train(int n, int c, int hw, const float *x, const float *res,
                           const float *gamma, const float *beta, float *y, float *mean,
                           float *invstd, float *running_mean, float *running_var,
                           float momentum, float eps) {
    struct bn_job j = {.n = n, .c = c, .hw = hw, .x = x, .res = res, .relu = true,
                       .gamma = gamma, .beta = beta, .y = y, .save_mean = mean,
                       .save_invstd = invstd, .update_mean = running_mean,
                       .update_var = running_var, .momentum = momentum, .eps = eps};
    bn_parallel(&j, bn_train_channel);
}

SIMD_CLONES
static void bn_eval_channel(void *ctx, int ch, int thread) {
    (void)thread;
    const struct bn_job *j = ctx;
    float mu = j->running_mean[ch], is = 1.0f / sqrtf(j->running_var[ch] + j->eps);
    float gamma = j->gamma[ch], beta = j->beta[ch];
    for (int i = 0; i < j->n; i++) {
        const float *row = j->x + km_idx3(i, ch, 0, j->c, j->hw);
        float *out = j->y + km_idx3(i, ch, 0, j->c, j->hw);
#pragma omp simd
        for (int q = 0; q < j->hw; q++) out[q] = km_bn_normalize(row[q], mu, is, gamma, beta);
    }
}

// x (n,c,hw), gamma, beta, running_mean, running_var (c) -> y (n,c,hw)
void vec_bn_fwd_eval(int n, int c, int hw, const float *x, const float *gamma,
                     const float *beta, const float *running_mean,
                     const float *running_var, float eps, float *y) {
    struct bn_job j = {.n = n, .c = c, .hw = hw, .x = x, .gamma = gamma, .beta = beta,
                       .running_mean = running_mean, .running_var = running_var, .y = y, .eps = eps};
    bn_parallel(&j, bn_eval_channel);
}

enum { BN_PIECE = 256 };

// channel ch: dx, dgamma, dbeta += batch norm's backward of g, where g = dy, or with
// the fused relu g = dy where y > 0 (and dres += g); dx, dres = when not acc_dx, acc_dres
SIMD_CLONES
static void bn_bwd_channel(void *ctx, int ch, int thread) {
    (void)thread;
    const struct bn_job *j = ctx;
    long m = (long)j->n * j->hw;
    float mu = j->mean[ch], is = j->invstd[ch], gamma = j->gamma[ch];
    double sum_g = 0.0, sum_g_xhat = 0.0;
    int la = planes_ahead(j->hw);
    size_t ahead = (size_t)la * j->c * j->hw;
    for (int i = 0; i < j->n; i++) {
        size_t at = km_idx3(i, ch, 0, j->c, j->hw);
        const float *xr = j->x + at, *dyr = j->dy + at, *yr = j->y_in ? j->y_in + at : NULL;
        float s = 0.0f, sx = 0.0f;
        if (i + la < j->n) {
            prefetch_read(xr + ahead, j->hw);
            prefetch_read(dyr + ahead, j->hw);
            if (yr) prefetch_read(yr + ahead, j->hw);
        }
        if (yr)
#pragma omp simd reduction(+ : s, sx)
            for (int q = 0; q < j->hw; q++) {
                float g = km_relu_grad(yr[q], dyr[q]);
                s += g;
                sx += g * (xr[q] - mu) * is;
            }
        else
#pragma omp simd reduction(+ : s, sx)
            for (int q = 0; q < j->hw; q++) {
                s += dyr[q];
                sx += dyr[q] * (xr[q] - mu) * is;
            }
        sum_g += s;
        sum_g_xhat += sx;
    }
    float sg = (float)sum_g, sgx = (float)sum_g_xhat;
    /* the second pass by pieces of a row, so that g lands in L1 first: straight in
     * dres where dres is overwritten, else in g[] */
    float g[BN_PIECE];
    for (int i = 0; i < j->n; i++)
        for (int q0 = 0; q0 < j->hw; q0 += BN_PIECE) {
            size_t at = km_idx3(i, ch, q0, j->c, j->hw);
            int len = min_int(BN_PIECE, j->hw - q0);
            if (i + la < j->n) {
                prefetch_write(j->dx + at + ahead, len);
                if (j->dres) prefetch_write(j->dres + at + ahead, len);
            }
            const float *xr = j->x + at, *dyr = j->dy + at, *gr = dyr;
            float *dxr = j->dx + at, *dres = j->dres ? j->dres + at : NULL;
            if (j->y_in) {
                const float *yr = j->y_in + at;
                float *gw = dres && !j->acc_dres ? dres : g;
#pragma omp simd
                for (int q = 0; q < len; q++) gw[q] = km_relu_grad(yr[q], dyr[q]);
                gr = gw;
            }
            if (dres && gr != dres)
#pragma omp simd
                for (int q = 0; q < len; q++) dres[q] += gr[q];
            if (j->acc_dx)
#pragma omp simd
                for (int q = 0; q < len; q++) dxr[q] += km_bn_dx(gr[q], (xr[q] - mu) * is, gamma, is, m, sg, sgx);
            else
#pragma omp simd
                for (int q = 0; q < len; q++) dxr[q] = km_bn_dx(gr[q], (xr[q] - mu) * is, gamma, is, m, sg, sgx);
        }
    j->dgamma[ch] += sgx;
    j->dbeta[ch] += sg;
}

// x, dy (n,c,hw), gamma, mean, invstd (c) -> dx (n,c,hw) += (= when !acc_dx),
// dgamma (c) +=, dbeta (c) +=
void vec_bn_bwd(int n, int c, int hw, const float *x, const float *dy,
                const float *gamma, const float *mean, const float *invstd, float *dx,
                bool acc_dx, float *dgamma, float *dbeta) {
    struct bn_job j = {.n = n, .c = c, .hw = hw, .x = x, .dy = dy, .gamma = gamma, .mean = mean,
                       .invstd = invstd, .dx = dx, .acc_dx = acc_dx, .dgamma = dgamma,
                       .dbeta = dbeta};
    bn_parallel(&j, bn_bwd_channel);
}

// x, y, dy (n,c,hw), gamma, mean, invstd (c) -> dx (n,c,hw) +=, dres (n,c,hw) += (or NULL),
// each = instead when its acc flag is false; dgamma (c) +=, dbeta (c) +=
void vec_bn_relu_bwd(int n, int c, int hw, const float *x, const float *y,
                     const float *dy, const float *gamma, const float *mean,
                     const float *invstd, float *dx, bool acc_dx, float *dres,
                     bool acc_dres, float *dgamma, float *dbeta) {
    struct bn_job j = {.n = n, .c = c, .hw = hw, .x = x, .y_in = y, .dy = dy, .gamma = gamma,
                       .mean = mean, .invstd = invstd, .dx = dx, .acc_dx = acc_dx, .dres = dres,
                       .acc_dres = acc_dres, .dgamma = dgamma, .dbeta = dbeta};
    bn_parallel(&j, bn_bwd_channel);
}
