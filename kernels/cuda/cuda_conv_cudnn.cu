// cuda_conv_cudnn.cu — the vectorized table's convolutions through cuDNN's v9
// legacy convolution API (cudnnConvolutionForward / BackwardData / BackwardFilter).
//
// Algorithms are chosen once per shape by cuDNN's heuristics
// (cudnnGet*Algorithm_v7), not by timing them (cudnnFind*): conv2d_workspace must
// answer before any buffer exists, and must give the same answer every time it
// is asked, or the arena's block would be sized for one algorithm and used by
// another. Among the candidates, the first deterministic one that runs with plain
// FMA math wins (TF32 only when cuda_set_tf32(true)), so a seeded run trains to
// the same weights every time. The choice, descriptors and workspace size live in
// a small table keyed by conv_geom.
#if NS_HAVE_CUDNN
#include <mutex>
#include <string.h>

#include "cuda_backend.h"
#include "cuda_common.h"

enum { PLAN_SLOTS = 64 };

struct conv_plan {
    bool used;
    bool tf32;
    struct conv_geom g;
    cudnnTensorDescriptor_t x, y, bias;
    cudnnFilterDescriptor_t w;
    cudnnConvolutionDescriptor_t conv;
    cudnnConvolutionFwdAlgo_t fwd;
    cudnnConvolutionBwdDataAlgo_t bwd_data;
    cudnnConvolutionBwdFilterAlgo_t bwd_filter;
    cudnnMathType_t fwd_math, bwd_data_math, bwd_filter_math;
    size_t ws;  // the largest workspace of the three
};

static struct conv_plan plans[PLAN_SLOTS];
static int next_victim;  // a full table reuses slots round-robin
static std::mutex plans_lock;

static bool same_geom(const struct conv_geom *a, const struct conv_geom *b) {
    return a->n == b->n && a->c == b->c && a->h == b->h && a->w == b->w && a->k == b->k &&
           a->r == b->r && a->s == b->s && a->stride == b->stride && a->pad == b->pad &&
           a->oh == b->oh && a->ow == b->ow;
}

static void plan_release(struct conv_plan *p) {
    if (!p->used) return;
    CUDNN_OK(cudnnDestroyTensorDescriptor(p->x));
    CUDNN_OK(cudnnDestroyTensorDescriptor(p->y));
    CUDNN_OK(cudnnDestroyTensorDescriptor(p->bias));
    CUDNN_OK(cudnnDestroyFilterDescriptor(p->w));
    CUDNN_OK(cudnnDestroyConvolutionDescriptor(p->conv));
    p->used = false;
}

// Algorithms that add with atomics, whatever a heuristic reports about them.
static bool adds_with_atomics(cudnnConvolutionFwdAlgo_t) { return false; }
static bool adds_with_atomics(cudnnConvolutionBwdDataAlgo_t a) {
    return a == CUDNN_CONVOLUTION_BWD_DATA_ALGO_0;
}
static bool adds_with_atomics(cudnnConvolutionBwdFilterAlgo_t a) {
    return a == CUDNN_CONVOLUTION_BWD_FILTER_ALGO_0 || a == CUDNN_CONVOLUTION_BWD_FILTER_ALGO_3;
}

// A workspace larger than this would crowd the activations out of the arena.
static const size_t WS_LIMIT = (size_t)512 << 20;

// Heuristic candidates come best first. Take the first that works, is reported
// deterministic, adds without atomics, needs a sane workspace and uses the allowed
// math; failing that, drop the report (some cuDNN versions leave it unset); failing
// that, the first that works at all.
template <class Perf> static int pick(const Perf *perf, int count, bool tf32) {
    for (int strict = 2; strict >= 0; strict--)
        for (int i = 0; i < count; i++) {
            const Perf *p = &perf[i];
            bool math_ok = tf32 || (p->mathType != CUDNN_TENSOR_OP_MATH &&
                                    p->mathType != CUDNN_TENSOR_OP_MATH_ALLOW_CONVERSION);
            bool careful = !adds_with_atomics(p->algo) && p->memory <= WS_LIMIT && math_ok;
            if (p->status != CUDNN_STATUS_SUCCESS) continue;
            if (strict == 2 && careful && p->determinism == CUDNN_DETERMINISTIC) return i;
            if (strict == 1 && careful) return i;
            if (strict == 0) return i;
        }
    return -1;
}

// Without TF32 every call runs with FMA math, whatever the heuristic said: on
// Ampere and newer, cuDNN's default math lets float convolutions use TF32.
static cudnnMathType_t math_of(cudnnMathType_t chosen, bool tf32) {
    return tf32 ? chosen : CUDNN_FMA_MATH;
}

static bool plan_make(struct conv_plan *p, const struct conv_geom *g) {
    memset(p, 0, sizeof *p);
    p->g = *g;
    p->tf32 = cu.tf32;
    if (!CUDNN_OK(cudnnCreateTensorDescriptor(&p->x)) || !CUDNN_OK(cudnnCreateTensorDescriptor(&p->y)) ||
        !CUDNN_OK(cudnnCreateTensorDescriptor(&p->bias)) || !CUDNN_OK(cudnnCreateFilterDescriptor(&p->w)) ||
        !CUDNN_OK(cudnnCreateConvolutionDescriptor(&p->conv)))
        return false;
    p->used = true;  // from here on plan_release frees the descriptors
    if (!CUDNN_OK(cudnnSetTensor4dDescriptor(p->x, CUDNN_TENSOR_NCHW, CUDNN_DATA_FLOAT, g->n, g->c, g->h, g->w)) ||
        !CUDNN_OK(cudnnSetTensor4dDescriptor(p->y, CUDNN_TENSOR_NCHW, CUDNN_DATA_FLOAT, g->n, g->k, g->oh, g->ow)) ||
        !CUDNN_OK(cudnnSetTensor4dDescriptor(p->bias, CUDNN_TENSOR_NCHW, CUDNN_DATA_FLOAT, 1, g->k, 1, 1)) ||
        !CUDNN_OK(cudnnSetFilter4dDescriptor(p->w, CUDNN_DATA_FLOAT, CUDNN_TENSOR_NCHW, g->k, g->c, g->r, g->s)) ||
        !CUDNN_OK(cudnnSetConvolution2dDescriptor(p->conv, g->pad, g->pad, g->stride, g->stride, 1, 1,
                                                  CUDNN_CROSS_CORRELATION, CUDNN_DATA_FLOAT)) ||
        !CUDNN_OK(cudnnSetConvolutionMathType(p->conv, p->tf32 ? CUDNN_DEFAULT_MATH : CUDNN_FMA_MATH)))
        return false;

    int n, c, h, w;  // cuDNN's idea of the output shape must be ours
    if (!CUDNN_OK(cudnnGetConvolution2dForwardOutputDim(p->conv, p->x, p->w, &n, &c, &h, &w)))
        return false;
    if (n != g->n || c != g->k || h != g->oh || w != g->ow) {
        cu_record("cuDNN computes a %dx%dx%dx%d output for conv n%d c%d %dx%d k%d %dx%d stride %d "
                  "pad %d, the op %dx%dx%dx%d", n, c, h, w, g->n, g->c, g->h, g->w, g->k, g->r,
                  g->s, g->stride, g->pad, g->n, g->k, g->oh, g->ow);
        return false;
    }

    auto none = [g]() {
        cu_record("cuDNN offers no working algorithm for conv n%d c%d %dx%d k%d %dx%d stride %d "
                  "pad %d", g->n, g->c, g->h, g->w, g->k, g->r, g->s, g->stride, g->pad);
        return false;
    };
    enum { MAX_ALGOS = 16 };
    int count = 0, i;
    cudnnConvolutionFwdAlgoPerf_t fwd[MAX_ALGOS];
    if (!CUDNN_OK(cudnnGetConvolutionForwardAlgorithm_v7(cu.dnn, p->x, p->w, p->conv, p->y,
                                                         MAX_ALGOS, &count, fwd)))
        return false;
    if ((i = pick(fwd, count, p->tf32)) < 0) return none();
    p->fwd = fwd[i].algo;
    p->fwd_math = math_of(fwd[i].mathType, p->tf32);

    cudnnConvolutionBwdDataAlgoPerf_t bwd_data[MAX_ALGOS];
    if (!CUDNN_OK(cudnnGetConvolutionBackwardDataAlgorithm_v7(cu.dnn, p->w, p->y, p->conv, p->x,
                                                              MAX_ALGOS, &count, bwd_data)))
        return false;
    if ((i = pick(bwd_data, count, p->tf32)) < 0) return none();
    p->bwd_data = bwd_data[i].algo;
    p->bwd_data_math = math_of(bwd_data[i].mathType, p->tf32);

    cudnnConvolutionBwdFilterAlgoPerf_t bwd_filter[MAX_ALGOS];
    if (!CUDNN_OK(cudnnGetConvolutionBackwardFilterAlgorithm_v7(cu.dnn, p->x, p->y, p->conv, p->w,
                                                                MAX_ALGOS, &count, bwd_filter)))
        return false;
    if ((i = pick(bwd_filter, count, p->tf32)) < 0) return none();
    p->bwd_filter = bwd_filter[i].algo;
    p->bwd_filter_math = math_of(bwd_filter[i].mathType, p->tf32);

    {  // exact sizes, with the math type each call will run with
        size_t a = 0, b = 0, f = 0;
        if (!CUDNN_OK(cudnnSetConvolutionMathType(p->conv, p->fwd_math)) ||
            !CUDNN_OK(cudnnGetConvolutionForwardWorkspaceSize(cu.dnn, p->x, p->w, p->conv, p->y, p->fwd, &a)) ||
            !CUDNN_OK(cudnnSetConvolutionMathType(p->conv, p->bwd_data_math)) ||
            !CUDNN_OK(cudnnGetConvolutionBackwardDataWorkspaceSize(cu.dnn, p->w, p->y, p->conv, p->x,
                                                                   p->bwd_data, &b)) ||
            !CUDNN_OK(cudnnSetConvolutionMathType(p->conv, p->bwd_filter_math)) ||
            !CUDNN_OK(cudnnGetConvolutionBackwardFilterWorkspaceSize(cu.dnn, p->x, p->y, p->conv, p->w,
                                                                     p->bwd_filter, &f)))
            return false;
        p->ws = a > b ? a : b;
        if (f > p->ws) p->ws = f;
    }
    return true;
}

// The plan for g, made on first use; NULL (recorded) if cuDNN can't make one.
static struct conv_plan *plan_for(const struct conv_geom *g) {
    std::lock_guard<std::mutex> hold(plans_lock);
    for (int i = 0; i < PLAN_SLOTS; i++)
        if (plans[i].used && plans[i].tf32 == cu.tf32 && same_geom(&plans[i].g, g)) return &plans[i];
    int slot = -1;
    for (int i = 0; i < PLAN_SLOTS && slot < 0; i++)
        if (!plans[i].used) slot = i;
    if (slot < 0) {
        slot = next_victim;
        next_victim = (next_victim + 1) % PLAN_SLOTS;
        plan_release(&plans[slot]);
    }
    if (plan_make(&plans[slot], g)) return &plans[slot];
    plan_release(&plans[slot]);
    return NULL;
}

void cu_conv_forget(void) {
    std::lock_guard<std::mutex> hold(plans_lock);
    for (int i = 0; i < PLAN_SLOTS; i++) plan_release(&plans[i]);
}

extern "C" bool cuda_has_cudnn(void) { return true; }
extern "C" void cuda_set_conv_chunk_bytes(size_t bytes) { (void)bytes; }

size_t cu_conv2d_workspace(const struct conv_geom *g) {
    const struct conv_plan *p = plan_for(g);
    return p ? p->ws : 0;
}

static const float one = 1.0f, zero = 0.0f;

// x (n,c,h,w), w (k,c,r,s), bias (k) or NULL -> y (n,k,oh,ow)
void cu_conv2d_fwd(const struct conv_geom *g, const float *x, const float *w, const float *bias,
                   float *y, void *ws) {
    struct conv_plan *p = plan_for(g);
    if (!p || !CUDNN_OK(cudnnSetConvolutionMathType(p->conv, p->fwd_math))) return;
    if (!CUDNN_OK(cudnnConvolutionForward(cu.dnn, &one, p->x, x, p->w, w, p->conv, p->fwd, ws, p->ws,
                                          &zero, p->y, y)))
        return;
    if (bias) CUDNN_OK(cudnnAddTensor(cu.dnn, &one, p->bias, bias, &one, p->y, y));
}

// dy (n,k,oh,ow), w (k,c,r,s) -> dx (n,c,h,w) += when acc (beta = 1 blends into dx),
// = when !acc (beta = 0: cuDNN then doesn't read dx, which may hold NaN)
void cu_conv2d_bwd_data(const struct conv_geom *g, const float *dy, const float *w, float *dx,
                        bool acc, void *ws) {
    struct conv_plan *p = plan_for(g);
    if (!p || !CUDNN_OK(cudnnSetConvolutionMathType(p->conv, p->bwd_data_math))) return;
    CUDNN_OK(cudnnConvolutionBackwardData(cu.dnn, &one, p->w, w, p->y, dy, p->conv, p->bwd_data, ws,
                                          p->ws, acc ? &one : &zero, p->x, dx));
}

// x (n,c,h,w), dy (n,k,oh,ow) -> dw (k,c,r,s) +=, dbias (k) += (if not NULL)
void cu_conv2d_bwd_filter(const struct conv_geom *g, const float *x, const float *dy, float *dw,
                          float *dbias, void *ws) {
    struct conv_plan *p = plan_for(g);
    if (!p || !CUDNN_OK(cudnnSetConvolutionMathType(p->conv, p->bwd_filter_math))) return;
    if (!CUDNN_OK(cudnnConvolutionBackwardFilter(cu.dnn, &one, p->x, x, p->y, dy, p->conv,
                                                 p->bwd_filter, ws, p->ws, &one, p->w, dw)))
        return;
    if (dbias) CUDNN_OK(cudnnConvolutionBackwardBias(cu.dnn, &one, p->y, dy, &one, p->bias, dbias));
}
#endif
