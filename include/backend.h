/* backend.h — the one seam between the math and the devices.
 *
 * Each (device, flavour) fills one `struct backend`. Ops in src/ops/ check shapes,
 * record themselves on the tape and call these entries; nothing above kernels/
 * asks which device it is on. All pointers are on the backend's device. All
 * tensors are float32, contiguous, NCHW unless said otherwise.
 *
 * Conventions every kernel keeps:
 *  - forward kernels OVERWRITE their outputs;
 *  - backward kernels ACCUMULATE (+=) into gradient outputs, so a tensor used
 *    twice (the residual fan-out) simply receives both contributions; except
 *    that the entries with an `acc` flag OVERWRITE (=) that output when the flag
 *    is false, reading nothing from it (its contents may be garbage: BLAS's
 *    beta = 0). The tape passes false to a gradient's first writer, so the big
 *    activation gradients are never zero-filled just to be added to.
 *  - `ws` is scratch from the step arena, at least the size the matching
 *    *_workspace() entry returned; its contents are undefined on entry.
 *  - kernels don't fail: shapes are checked by the ops before the call.
 *  - a NULL entry means "not supported by this table". Where there is another way,
 *    the callers test for it: the ops run bn_relu_fwd_train and bn_relu_bwd as batch
 *    norm, add and ReLU apart when either is NULL (both are, on the CUDA tables),
 *    and the entries marked optional below may be NULL. Every other entry is one a
 *    training step calls, so a table the trainer can get fills it. The kernel tests
 *    report a NULL entry's cases as skipped on that table, naming it.
 */
#ifndef NS_BACKEND_H
#define NS_BACKEND_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum device { DEV_CPU = 0, DEV_CUDA = 1 };
/* also the config's train.kernels (config.h), whose names are "loop" and "vectorized" */
enum kernel_flavour { KF_LOOP = 0, KF_VECTORIZED = 1 };

/* x (n,c,h,w) * w (k,c,r,s) -> y (n,k,oh,ow); oh = (h + 2*pad - r)/stride + 1 */
struct conv_geom {
    int n, c, h, w;
    int k, r, s;
    int stride, pad;
    int oh, ow;
};

/* x (n,c,h,w) -> y (n,c,oh,ow), window size x size, zero padding `pad`.
 * Max pooling ignores padded positions; average pooling divides by size*size. */
struct pool_geom {
    int n, c, h, w;
    int size, stride, pad;
    int oh, ow;
};

enum copy_kind { COPY_H2D, COPY_D2H, COPY_D2D };

/* Streams and events for the loader's copy stage (docs/design.md, "Data flow"). Only a
 * device with its own memory has them; the CPU table leaves `stage` NULL and the
 * trainer then uses the loader's slots in place. Streams: STREAM_COMPUTE runs every
 * kernel of the table, STREAM_COPY only copies. */
enum stream_id { STREAM_COMPUTE = 0, STREAM_COPY = 1 };
struct device_event;

/* Data-parallel training across processes on a device whose memory MPI can't read
 * (dist.h moves host memory): NCCL on CUDA. A table without one (NULL) averages its
 * gradients through the host. Each returns 0, or -1 with err_set. */
struct device_comm {
    size_t id_bytes;                                  /* the communicator's id, made by rank 0 */
    int (*make_id)(void *id);
    int (*join)(int rank, int world, const void *id); /* every rank, with rank 0's id */
    /* Starts averaging buf[0..n) (device memory) over the ranks, in place, on a
     * communication stream that first waits for the compute stream's work so far; the
     * compute stream's later work waits for it. The host doesn't wait. */
    int (*allreduce_mean)(float *buf, size_t n);
    void (*leave)(void);
};

struct copy_stage {
    /* page-locked host memory for the ring's slots (cudaHostAlloc); NULL on failure */
    void *(*pinned_alloc)(size_t bytes);
    void (*pinned_free)(void *p);
    /* dst on the device, src on the host; async on `s` (synchronous if src is pageable) */
    void (*copy_h2d_async)(void *dst, const void *src, size_t bytes, enum stream_id s);
    struct device_event *(*event_create)(void);             /* NULL on failure, with err_set */
    void (*event_destroy)(struct device_event *e);
    void (*event_record)(struct device_event *e, enum stream_id s);
    void (*stream_wait_event)(enum stream_id s, struct device_event *e);  /* device-side wait */
    bool (*event_done)(struct device_event *e);              /* non-blocking query */
    void (*event_sync)(struct device_event *e);              /* host waits */
    float (*event_elapsed_ms)(struct device_event *start, struct device_event *end);
    /* NVTX range around a host-side phase, so Nsight Systems shows the same picture */
    void (*range_push)(const char *name);
    void (*range_pop)(void);
};

struct backend {
    const char *name;             /* "cpu-loop", "cpu-vectorized", "cuda-loop", ... */
    enum device dev;
    enum kernel_flavour flavour;

    /* ---- memory ---- */
    void *(*alloc)(size_t bytes);                 /* NULL on failure, with err_set */
    void (*free)(void *p);
    void (*zero)(void *p, size_t bytes);
    void (*copy)(void *dst, const void *src, size_t bytes, enum copy_kind kind);
    void (*sync)(void);                            /* wait for queued device work */
    const struct copy_stage *stage;                /* NULL: host memory, nothing to copy */
    const struct device_comm *comm;                /* NULL: collectives through the host (dist.h) */
    /* Optional (NULL where they mean nothing, as on the CPU):
     * check: waits for the compute stream and reports the first asynchronous
     *        kernel failure, 0 or -1 with err_set; the trainer calls it every step.
     * set_tf32: allow TF32 tensor-core math in matrix products and convolutions. */
    int (*check)(void);
    void (*set_tf32)(bool on);

    /* ---- dense ----
     * C (m,n) = alpha * op(A) op(B) + beta * C, row-major; op(A) is (m,k):
     * A is (m,k) or, if ta, (k,m); B is (k,n) or, if tb, (n,k). */
    void (*gemm)(bool ta, bool tb, int m, int n, int k, float alpha,
                 const float *a, const float *b, float beta, float *c);
    /* y += alpha * x, n floats */
    void (*axpy)(size_t n, float alpha, const float *x, float *y);

    /* ---- convolution ---- w (k,c,r,s), bias (k) or NULL */
    size_t (*conv2d_workspace)(const struct conv_geom *g);
    void (*conv2d_fwd)(const struct conv_geom *g, const float *x, const float *w,
                       const float *bias, float *y, void *ws);
    /* dx += conv_transpose(dy, w), or dx = ... when !acc */
    void (*conv2d_bwd_data)(const struct conv_geom *g, const float *dy, const float *w,
                            float *dx, bool acc, void *ws);
    /* dw += corr(x, dy); dbias += sum of dy over n,oh,ow (dbias may be NULL) */
    void (*conv2d_bwd_filter)(const struct conv_geom *g, const float *x, const float *dy,
                              float *dw, float *dbias, void *ws);

    /* ---- linear ---- x (n,in), w (out,in), bias (out) or NULL, y (n,out):
     * y = x w^T + bias; backward: dx += dy w, dw += dy^T x, dbias += sum_n dy */
    void (*linear_fwd)(int n, int in, int out, const float *x, const float *w,
                       const float *bias, float *y);
    void (*linear_bwd)(int n, int in, int out, const float *x, const float *w,
                       const float *dy, float *dx, float *dw, float *dbias);

    /* ---- batch norm over (n,c,hw), per channel c ----
     * train: mean/var (biased) over n*hw; y = (x-mean)*invstd*gamma + beta;
     *   saves mean[c], invstd[c] = 1/sqrt(var+eps) for backward;
     *   running = (1-momentum)*running + momentum*stat, with the UNBIASED variance
     *   (var * m/(m-1), m = n*hw) going into running_var (PyTorch's convention). */
    void (*bn_fwd_train)(int n, int c, int hw, const float *x, const float *gamma,
                         const float *beta, float *y, float *mean, float *invstd,
                         float *running_mean, float *running_var, float momentum, float eps);
    /* eval: y = (x - running_mean) / sqrt(running_var + eps) * gamma + beta */
    void (*bn_fwd_eval)(int n, int c, int hw, const float *x, const float *gamma,
                        const float *beta, const float *running_mean,
                        const float *running_var, float eps, float *y);
    /* dx += ... (= when !acc_dx), dgamma += sum dy*xhat, dbeta += sum dy
     * (the training-mode gradient) */
    void (*bn_bwd)(int n, int c, int hw, const float *x, const float *dy,
                   const float *gamma, const float *mean, const float *invstd,
                   float *dx, bool acc_dx, float *dgamma, float *dbeta);

    /* ---- batch norm fused with the ReLU after it (training) ----
     * y = relu(bn(x) + res), res (n,c,hw) or NULL for y = relu(bn(x)): a BasicBlock's
     * BN -> ReLU, and its end BN -> + shortcut -> ReLU, in one pass over memory
     * instead of two or three. Statistics, mean/invstd and the running updates
     * exactly as bn_fwd_train. */
    void (*bn_relu_fwd_train)(int n, int c, int hw, const float *x, const float *res,
                              const float *gamma, const float *beta, float *y, float *mean,
                              float *invstd, float *running_mean, float *running_var,
                              float momentum, float eps);
    /* y is bn_relu_fwd_train's output. With g = dy where y > 0, else 0:
     * dres += g (dres NULL: not wanted), and dx, dgamma, dbeta += bn_bwd(x, g);
     * dx and dres overwritten instead when acc_dx, acc_dres are false */
    void (*bn_relu_bwd)(int n, int c, int hw, const float *x, const float *y, const float *dy,
                        const float *gamma, const float *mean, const float *invstd, float *dx,
                        bool acc_dx, float *dres, bool acc_dres, float *dgamma, float *dbeta);

    /* ---- elementwise ---- */
    void (*relu_fwd)(size_t n, const float *x, float *y);
    void (*relu_bwd)(size_t n, const float *y, const float *dy, float *dx); /* dx += dy*(y>0) */
    void (*add_fwd)(size_t n, const float *a, const float *b, float *y);    /* y = a + b */

    /* ---- pooling ---- idx (n,c,oh,ow) holds the flat h*w index of each max */
    void (*maxpool_fwd)(const struct pool_geom *g, const float *x, float *y, int32_t *idx);
    void (*maxpool_bwd)(const struct pool_geom *g, const int32_t *idx, const float *dy, float *dx);
    void (*avgpool_fwd)(const struct pool_geom *g, const float *x, float *y);
    void (*avgpool_bwd)(const struct pool_geom *g, const float *dy, float *dx);
    /* global average pool: x (n,c,hw) -> y (n,c) */
    void (*gap_fwd)(int n, int c, int hw, const float *x, float *y);
    void (*gap_bwd)(int n, int c, int hw, const float *dy, float *dx);

    /* ---- loss and metrics ---- logits (n,k), labels int32 (n) in [0,k)
     * fwd: probs = softmax(logits) (saved), *loss = mean_n -log probs[label]
     * bwd: dlogits += (*dloss / n) * (probs - onehot(label)); dloss is a device scalar */
    void (*softmax_xent_fwd)(int n, int k, const float *logits, const int32_t *labels,
                             float *probs, float *loss);
    void (*softmax_xent_bwd)(int n, int k, const float *probs, const int32_t *labels,
                             const float *dloss, float *dlogits);
    /* *correct = number of rows whose argmax (first max on ties) equals the label, as float */
    void (*argmax_correct)(int n, int k, const float *logits, const int32_t *labels,
                           float *correct);

    /* ---- input ---- src uint8 (n,h,w,c) HWC -> dst float (n,c,h,w):
     * dst = (src/255 - mean[c]) / std[c]; mean/std are HOST arrays of c floats */
    void (*normalize_u8)(int n, int h, int w, int c, const uint8_t *src,
                         const float *mean, const float *std, float *dst);

    /* ---- optimizer: one fused SGD step over every parameter (flat buffers) ----
     * g' = g + wd*w;  v = momentum*v + g';  step = nesterov ? g' + momentum*v : v;
     * w -= lr*step   (PyTorch's SGD with dampening 0) */
    void (*sgd_step)(size_t n, float *w, const float *g, float *v, float lr,
                     float momentum, bool nesterov, float weight_decay);
    /* One fused AdamW step: m, v (n) the first and second moments; bc1 = 1 - beta1^t,
     * bc2_sqrt = sqrt(1 - beta2^t) for step t (km_math.h's km_adamw_update). */
    void (*adamw_step)(size_t n, float *w, const float *g, float *m, float *v, float lr, float beta1,
                       float beta2, float eps, float weight_decay, float bc1, float bc2_sqrt);
};

/* NULL (with err_set naming what is missing) when the pair isn't built or
 * the device isn't present. */
const struct backend *backend_get(enum device dev, enum kernel_flavour fl);

/* The CPU tables, defined in kernels/cpu/; the CUDA ones in kernels/cuda/ when built. */
extern const struct backend cpu_loop_backend;
extern const struct backend cpu_vectorized_backend;

/* How many GPUs this build can use; 0 with the reason in `why`. */
int backend_gpu_count(char *why, size_t why_len);

const char *device_name(enum device dev);
const char *kernel_flavour_name(enum kernel_flavour fl);

#endif
