// cuda_conv_cudnn.cu — the vectorized table's convolutions through cuDNN's v9
// legacy convolution API (cudnnConvolutionForward / BackwardData / BackwardFilter),
// with im2col + cuBLAS (cuda_conv_im2col.cu) wherever cuDNN can't do the work.
//
// Algorithms are chosen once per shape by cuDNN's heuristics
// (cudnnGet*Algorithm_v7), not by timing them (cudnnFind*): conv2d_workspace must
// answer before any buffer exists, and must give the same answer every time it
// is asked, or the arena's block would be sized for one algorithm and used by
// another. Among the candidates, the first deterministic one that runs with plain
// FMA math wins (TF32 only when cuda_set_tf32(true)), so a seeded run trains to
// the same weights every time. The choice, descriptors and workspace size live in
// a small table of records keyed by conv_geom.
//
// cuDNN is a soft dependency. When it fails, the convolution still runs, through
// im2col, one line on stderr says what failed, and nothing is recorded as an error
// (cuda_backend_check stays clean). How far the fallback reaches:
//  - every shape, from then on: cuDNN can't be initialised (its major version
//    isn't the headers', cudnnCreate, cudnnSetStream or a sub-library's version
//    check fails), or any later call fails in a way no shape escapes (the status
//    categories of a library not loaded or not matching, dnn_fails_everywhere).
//    cuda_has_cudnn() is false from then on.
//  - one shape, from then on, whatever the TF32 setting: planning it (descriptors,
//    algorithm queries, workspace sizes) or one of its convolution calls fails
//    otherwise (CUDNN_STATUS_NOT_SUPPORTED, BAD_PARAM, EXECUTION_FAILED...).
//
// The workspace: cu_conv2d_workspace answers for the path that will run the shape,
// the plan's size or im2col's, and the shape's record keeps that answer. A shape
// can fall back between the answer and the call (its cuDNN call fails, or the
// data gradient's call fails in a backward pass whose filter gradient comes next
// in the same workspace); the im2col pass is then told the size the workspace
// really has and borrows the context's scratch when that is too small.
#if NS_HAVE_CUDNN
#include <mutex>
#include <stdio.h>
#include <string.h>

#include "cuda_backend.h"
#include "cuda_common.h"

// ---- cuDNN's failures --------------------------------------------------------------

// A cuDNN call that failed: which one, its status, and cuDNN's own words.
struct dnn_failure {
    const char *call;  // the call as written; its name is up to the '('
    cudnnStatus_t status;
    char detail[256];
};

static bool dnn_try(cudnnStatus_t s, const char *call, struct dnn_failure *f) {
    if (s == CUDNN_STATUS_SUCCESS) return true;
    f->call = call;
    f->status = s;
    f->detail[0] = '\0';
    cudnnGetLastErrorString(f->detail, sizeof f->detail);
    return false;
}
// True when the call succeeded; else *f says how it failed. Nothing is recorded.
#define DNN_TRY(f, call) dnn_try((call), #call, (f))

// The failures of cuDNN itself rather than of one shape: the library or one of its
// parts not loaded, not initialised, of another version, or unfit for this
// driver, runtime or GPU.
static bool dnn_fails_everywhere(cudnnStatus_t s) {
    switch (s) {
    case CUDNN_STATUS_NOT_SUPPORTED_INCOMPATIBLE_CUDA_DRIVER:
    case CUDNN_STATUS_NOT_SUPPORTED_INCOMPATIBLE_CUDART:
    case CUDNN_STATUS_NOT_SUPPORTED_ARCH_MISMATCH:
    case CUDNN_STATUS_NOT_SUPPORTED_RUNTIME_PREREQUISITE_MISSING:
    case CUDNN_STATUS_NOT_SUPPORTED_SUBLIBRARY_UNAVAILABLE:
        return true;
    default:
        return CUDNN_STATUS_CATEGORY(s) == CUDNN_STATUS_CATEGORY(CUDNN_STATUS_NOT_INITIALIZED);
    }
}

// What to do about a cuDNN that fails everywhere, when it is the libraries' fault.
static const char *library_hint(cudnnStatus_t s) {
    bool libraries =
        CUDNN_STATUS_CATEGORY(s) == CUDNN_STATUS_CATEGORY(CUDNN_STATUS_NOT_INITIALIZED) ||
        s == CUDNN_STATUS_NOT_SUPPORTED_SUBLIBRARY_UNAVAILABLE;
    return libraries ? " HINT: cuDNN 9 loads libcudnn_ops, libcudnn_cnn and its engines from "
                       "beside libcudnn.so.9, all of one version; put that folder on "
                       "LD_LIBRARY_PATH"
                     : "";
}

// ---- the records ---------------------------------------------------------------------

enum { RECORD_SLOTS = 64 };

// cuDNN's plan for one shape: descriptors, the three algorithms, their math.
struct conv_plan {
    bool made;
    bool tf32;  // the setting it was made for
    cudnnTensorDescriptor_t x, y, bias;
    cudnnFilterDescriptor_t w;
    cudnnConvolutionDescriptor_t conv;
    cudnnConvolutionFwdAlgo_t fwd;
    cudnnConvolutionBwdDataAlgo_t bwd_data;
    cudnnConvolutionBwdFilterAlgo_t bwd_filter;
    cudnnMathType_t fwd_math, bwd_data_math, bwd_filter_math;
    size_t ws;  // the largest workspace of the three
};

// What is known about one shape.
struct conv_record {
    bool used;
    bool im2col;  // cuDNN can't run this shape: im2col from now on
    struct conv_geom g;
    size_t told;  // what cu_conv2d_workspace last answered for it; 0 before it was asked
    struct conv_plan plan;
};

// All under dnn_lock.
static std::mutex dnn_lock;
static struct conv_record records[RECORD_SLOTS];
static int next_victim;  // a full table reuses slots round-robin
static bool dnn_on;      // cu.dnn is made and cuDNN wasn't given up on
static int forced[3];    // by enum cuda_dnn_step: a status to fail with next, 0 none

static bool same_geom(const struct conv_geom *a, const struct conv_geom *b) {
    return a->n == b->n && a->c == b->c && a->h == b->h && a->w == b->w && a->k == b->k &&
           a->r == b->r && a->s == b->s && a->stride == b->stride && a->pad == b->pad &&
           a->oh == b->oh && a->ow == b->ow;
}

// Destroys what the plan made, if anything; statuses are ignored, as there is
// nothing to do about them.
static void plan_release(struct conv_plan *p) {
    if (p->x) cudnnDestroyTensorDescriptor(p->x);
    if (p->y) cudnnDestroyTensorDescriptor(p->y);
    if (p->bias) cudnnDestroyTensorDescriptor(p->bias);
    if (p->w) cudnnDestroyFilterDescriptor(p->w);
    if (p->conv) cudnnDestroyConvolutionDescriptor(p->conv);
    memset(p, 0, sizeof *p);
}

static struct conv_record *record_of(const struct conv_geom *g) {
    for (int i = 0; i < RECORD_SLOTS; i++)
        if (records[i].used && same_geom(&records[i].g, g)) return &records[i];
    int slot = -1;
    for (int i = 0; i < RECORD_SLOTS && slot < 0; i++)
        if (!records[i].used) slot = i;
    if (slot < 0) {
        slot = next_victim;
        next_victim = (next_victim + 1) % RECORD_SLOTS;
        plan_release(&records[slot].plan);
    }
    struct conv_record *r = &records[slot];
    memset(r, 0, sizeof *r);
    r->used = true;
    r->g = *g;
    return r;
}

// The failure a test asked for at `step` (cuda_dnn_fail_next_for_tests), as if `call`
// had returned it.
static bool forced_failure(enum cuda_dnn_step step, const char *call, struct dnn_failure *f) {
    if (!forced[step]) return false;
    f->call = call;
    f->status = (cudnnStatus_t)forced[step];
    snprintf(f->detail, sizeof f->detail, "injected by cuda_dnn_fail_next_for_tests");
    forced[step] = 0;
    return true;
}

static void say_unusable(const char *what, const char *hint) {
    fprintf(stderr, "nostall: cuDNN is unusable (%s); using the im2col + cuBLAS convolution "
            "for every shape from now on.%s\n", what, hint);
}

static void say_failure(const struct dnn_failure *f, char *buf, size_t len) {
    int name = (int)strcspn(f->call, "(");
    snprintf(buf, len, "%.*s: %s%s%s", name, f->call, cudnnGetErrorString(f->status),
             f->detail[0] ? ": " : "", f->detail);
}

// cuDNN failed to `act` ("plan conv2d", "run conv2d fwd"...) for r's shape: that
// shape, or every shape, runs im2col from now on, and one line says so.
static void fall_back(struct conv_record *r, const char *act, const struct dnn_failure *f) {
    char why[600];
    say_failure(f, why, sizeof why);
    if (dnn_fails_everywhere(f->status)) {
        dnn_on = false;
        for (int i = 0; i < RECORD_SLOTS; i++) plan_release(&records[i].plan);
        say_unusable(why, library_hint(f->status));
        return;
    }
    r->im2col = true;
    plan_release(&r->plan);
    const struct conv_geom *g = &r->g;
    fprintf(stderr, "nostall: cuDNN can't %s %dx%dx%dx%d k%d %dx%d/%d pad %d (%s); "
            "using the im2col + cuBLAS convolution for this shape from now on\n", act, g->n,
            g->c, g->h, g->w, g->k, g->r, g->s, g->stride, g->pad, why);
}

// ---- planning ---------------------------------------------------------------------

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

// A failure that is no cuDNN call's status: `call` found nothing that works.
static bool no_way(struct dnn_failure *f, const char *call, cudnnStatus_t s, const char *detail) {
    f->call = call;
    f->status = s;
    snprintf(f->detail, sizeof f->detail, "%s", detail);
    return false;
}

// Makes p for g; false with *f saying why (p may then hold some descriptors:
// plan_release frees them).
static bool plan_make(struct conv_plan *p, const struct conv_geom *g, struct dnn_failure *f) {
    memset(p, 0, sizeof *p);
    p->tf32 = cu.tf32;
    if (!DNN_TRY(f, cudnnCreateTensorDescriptor(&p->x)) ||
        !DNN_TRY(f, cudnnCreateTensorDescriptor(&p->y)) ||
        !DNN_TRY(f, cudnnCreateTensorDescriptor(&p->bias)) ||
        !DNN_TRY(f, cudnnCreateFilterDescriptor(&p->w)) ||
        !DNN_TRY(f, cudnnCreateConvolutionDescriptor(&p->conv)) ||
        !DNN_TRY(f, cudnnSetTensor4dDescriptor(p->x, CUDNN_TENSOR_NCHW, CUDNN_DATA_FLOAT, g->n,
                                               g->c, g->h, g->w)) ||
        !DNN_TRY(f, cudnnSetTensor4dDescriptor(p->y, CUDNN_TENSOR_NCHW, CUDNN_DATA_FLOAT, g->n,
                                               g->k, g->oh, g->ow)) ||
        !DNN_TRY(f, cudnnSetTensor4dDescriptor(p->bias, CUDNN_TENSOR_NCHW, CUDNN_DATA_FLOAT, 1,
                                               g->k, 1, 1)) ||
        !DNN_TRY(f, cudnnSetFilter4dDescriptor(p->w, CUDNN_DATA_FLOAT, CUDNN_TENSOR_NCHW, g->k,
                                               g->c, g->r, g->s)) ||
        !DNN_TRY(f, cudnnSetConvolution2dDescriptor(p->conv, g->pad, g->pad, g->stride, g->stride,
                                                    1, 1, CUDNN_CROSS_CORRELATION,
                                                    CUDNN_DATA_FLOAT)) ||
        !DNN_TRY(f, cudnnSetConvolutionMathType(p->conv, p->tf32 ? CUDNN_DEFAULT_MATH
                                                                 : CUDNN_FMA_MATH)))
        return false;

    int n, c, h, w;  // cuDNN's idea of the output shape must be ours
    if (!DNN_TRY(f, cudnnGetConvolution2dForwardOutputDim(p->conv, p->x, p->w, &n, &c, &h, &w)))
        return false;
    if (n != g->n || c != g->k || h != g->oh || w != g->ow) {
        char d[128];
        snprintf(d, sizeof d, "cuDNN computes a %dx%dx%dx%d output, the op %dx%dx%dx%d", n, c, h,
                 w, g->n, g->k, g->oh, g->ow);
        return no_way(f, "cudnnGetConvolution2dForwardOutputDim",
                      CUDNN_STATUS_BAD_PARAM_SHAPE_MISMATCH, d);
    }

    enum { MAX_ALGOS = 16 };
    static const char NONE[] = "no candidate algorithm works";
    int count = 0, i;
    cudnnConvolutionFwdAlgoPerf_t fwd[MAX_ALGOS];
    if (forced_failure(CUDA_DNN_AT_PLAN, "cudnnGetConvolutionForwardAlgorithm_v7", f) ||
        !DNN_TRY(f, cudnnGetConvolutionForwardAlgorithm_v7(cu.dnn, p->x, p->w, p->conv, p->y,
                                                           MAX_ALGOS, &count, fwd)))
        return false;
    if ((i = pick(fwd, count, p->tf32)) < 0)
        return no_way(f, "cudnnGetConvolutionForwardAlgorithm_v7", CUDNN_STATUS_NOT_SUPPORTED,
                      NONE);
    p->fwd = fwd[i].algo;
    p->fwd_math = math_of(fwd[i].mathType, p->tf32);

    cudnnConvolutionBwdDataAlgoPerf_t bwd_data[MAX_ALGOS];
    if (!DNN_TRY(f, cudnnGetConvolutionBackwardDataAlgorithm_v7(cu.dnn, p->w, p->y, p->conv, p->x,
                                                                MAX_ALGOS, &count, bwd_data)))
        return false;
    if ((i = pick(bwd_data, count, p->tf32)) < 0)
        return no_way(f, "cudnnGetConvolutionBackwardDataAlgorithm_v7", CUDNN_STATUS_NOT_SUPPORTED,
                      NONE);
    p->bwd_data = bwd_data[i].algo;
    p->bwd_data_math = math_of(bwd_data[i].mathType, p->tf32);

    cudnnConvolutionBwdFilterAlgoPerf_t bwd_filter[MAX_ALGOS];
    if (!DNN_TRY(f, cudnnGetConvolutionBackwardFilterAlgorithm_v7(cu.dnn, p->x, p->y, p->conv, p->w,
                                                                  MAX_ALGOS, &count, bwd_filter)))
        return false;
    if ((i = pick(bwd_filter, count, p->tf32)) < 0)
        return no_way(f, "cudnnGetConvolutionBackwardFilterAlgorithm_v7",
                      CUDNN_STATUS_NOT_SUPPORTED, NONE);
    p->bwd_filter = bwd_filter[i].algo;
    p->bwd_filter_math = math_of(bwd_filter[i].mathType, p->tf32);

    // exact sizes, with the math type each call will run with
    size_t a = 0, b = 0, fl = 0;
    if (!DNN_TRY(f, cudnnSetConvolutionMathType(p->conv, p->fwd_math)) ||
        !DNN_TRY(f, cudnnGetConvolutionForwardWorkspaceSize(cu.dnn, p->x, p->w, p->conv, p->y,
                                                            p->fwd, &a)) ||
        !DNN_TRY(f, cudnnSetConvolutionMathType(p->conv, p->bwd_data_math)) ||
        !DNN_TRY(f, cudnnGetConvolutionBackwardDataWorkspaceSize(cu.dnn, p->w, p->y, p->conv, p->x,
                                                                 p->bwd_data, &b)) ||
        !DNN_TRY(f, cudnnSetConvolutionMathType(p->conv, p->bwd_filter_math)) ||
        !DNN_TRY(f, cudnnGetConvolutionBackwardFilterWorkspaceSize(cu.dnn, p->x, p->y, p->conv,
                                                                   p->w, p->bwd_filter, &fl)))
        return false;
    p->ws = a > b ? a : b;
    if (fl > p->ws) p->ws = fl;
    p->made = true;
    return true;
}

// Whether cuDNN runs r's shape now, planning it first if need be (a failure falls
// back, with its line). With `ws_bytes` of workspace: a plan that needs more (a
// shape never asked for its workspace, or asked before a TF32 switch) runs im2col
// this once.
static bool dnn_runs(struct conv_record *r, size_t ws_bytes) {
    if (!dnn_on || r->im2col) return false;
    if (!r->plan.made || r->plan.tf32 != cu.tf32) {
        plan_release(&r->plan);
        struct dnn_failure f;
        if (!plan_make(&r->plan, &r->g, &f)) {
            plan_release(&r->plan);
            fall_back(r, "plan conv2d", &f);
            return false;
        }
    }
    return r->plan.ws <= ws_bytes;
}

// ---- the context's part --------------------------------------------------------------

void cu_dnn_init(void) {
    std::lock_guard<std::mutex> hold(dnn_lock);
    dnn_on = false;
    cu.dnn = NULL;
    // cuDNN 9 numbers versions major*10000 + minor*100 + patch, 8 and older
    // major*1000 + minor*100 + patch. Within a major version cuDNN keeps its API.
    size_t v = cudnnGetVersion();
    size_t major = v >= 10000 ? v / 10000 : v / 1000;
    size_t minor = v >= 10000 ? v / 100 % 100 : v / 100 % 10;
    if (major != CUDNN_MAJOR) {
        char what[200], hint[120];
        snprintf(what, sizeof what, "the library loaded is cuDNN %zu.%zu.%zu, nostall was built "
                 "against %d.%d.%d", major, minor, v % 100, CUDNN_MAJOR, CUDNN_MINOR,
                 CUDNN_PATCHLEVEL);
        snprintf(hint, sizeof hint, " HINT: put a cuDNN %d library's folder first on "
                 "LD_LIBRARY_PATH", CUDNN_MAJOR);
        say_unusable(what, hint);
        return;
    }
    struct dnn_failure f;
    char why[600];
    if (forced_failure(CUDA_DNN_AT_INIT, "cudnnCreate", &f) || !DNN_TRY(&f, cudnnCreate(&cu.dnn))) {
        cu.dnn = NULL;
        say_failure(&f, why, sizeof why);
        say_unusable(why, library_hint(f.status));
        return;
    }
    // The version checks load the sub-libraries the convolutions need, so a missing or
    // mismatched one shows here rather than at the first convolution.
    if (!DNN_TRY(&f, cudnnSetStream(cu.dnn, cu_compute())) ||
        !DNN_TRY(&f, cudnnOpsVersionCheck()) || !DNN_TRY(&f, cudnnCnnVersionCheck())) {
        cudnnDestroy(cu.dnn);
        cu.dnn = NULL;
        say_failure(&f, why, sizeof why);
        say_unusable(why, library_hint(f.status));
        return;
    }
    dnn_on = true;
}

void cu_dnn_release(void) {
    std::lock_guard<std::mutex> hold(dnn_lock);
    for (int i = 0; i < RECORD_SLOTS; i++) {
        plan_release(&records[i].plan);
        records[i].used = false;
    }
    next_victim = 0;
    if (cu.dnn) cudnnDestroy(cu.dnn);
    cu.dnn = NULL;
    dnn_on = false;
}

// Plans are made again for the new setting; what fell back stays so.
void cu_conv_forget(void) {
    std::lock_guard<std::mutex> hold(dnn_lock);
    for (int i = 0; i < RECORD_SLOTS; i++) plan_release(&records[i].plan);
}

extern "C" bool cuda_has_cudnn(void) {
    std::lock_guard<std::mutex> hold(dnn_lock);
    return dnn_on;
}

extern "C" void cuda_dnn_fail_next_for_tests(enum cuda_dnn_step at, int status) {
    std::lock_guard<std::mutex> hold(dnn_lock);
    if (at >= CUDA_DNN_AT_INIT && at <= CUDA_DNN_AT_CALL) forced[at] = status;
}

// ---- the entries ------------------------------------------------------------------

size_t cu_conv2d_workspace(const struct conv_geom *g) {
    std::lock_guard<std::mutex> hold(dnn_lock);
    struct conv_record *r = record_of(g);
    r->told = dnn_runs(r, SIZE_MAX) ? r->plan.ws : cu_im2col_workspace(g);
    return r->told;
}

static const float one = 1.0f, zero = 0.0f;

// x (n,c,h,w), w (k,c,r,s), bias (k) or NULL -> y (n,k,oh,ow)
void cu_conv2d_fwd(const struct conv_geom *g, const float *x, const float *w, const float *bias,
                   float *y, void *ws) {
    std::lock_guard<std::mutex> hold(dnn_lock);
    struct conv_record *r = record_of(g);
    if (dnn_runs(r, r->told)) {
        const struct conv_plan *p = &r->plan;
        struct dnn_failure f;
        if (!forced_failure(CUDA_DNN_AT_CALL, "cudnnConvolutionForward", &f) &&
            DNN_TRY(&f, cudnnSetConvolutionMathType(p->conv, p->fwd_math)) &&
            DNN_TRY(&f, cudnnConvolutionForward(cu.dnn, &one, p->x, x, p->w, w, p->conv, p->fwd,
                                                ws, p->ws, &zero, p->y, y)) &&
            (!bias || DNN_TRY(&f, cudnnAddTensor(cu.dnn, &one, p->bias, bias, &one, p->y, y))))
            return;
        fall_back(r, "run conv2d fwd", &f);  // im2col overwrites y whole, whatever cuDNN left there
    }
    cu_im2col_fwd(g, x, w, bias, y, ws, r->told);
}

// dy (n,k,oh,ow), w (k,c,r,s) -> dx (n,c,h,w) += when acc (beta = 1 blends into dx),
// = when !acc (beta = 0: cuDNN then doesn't read dx, which may hold NaN). A call
// that returns an error has changed nothing, so im2col can start over.
void cu_conv2d_bwd_data(const struct conv_geom *g, const float *dy, const float *w, float *dx,
                        bool acc, void *ws) {
    std::lock_guard<std::mutex> hold(dnn_lock);
    struct conv_record *r = record_of(g);
    if (dnn_runs(r, r->told)) {
        const struct conv_plan *p = &r->plan;
        struct dnn_failure f;
        if (!forced_failure(CUDA_DNN_AT_CALL, "cudnnConvolutionBackwardData", &f) &&
            DNN_TRY(&f, cudnnSetConvolutionMathType(p->conv, p->bwd_data_math)) &&
            DNN_TRY(&f, cudnnConvolutionBackwardData(cu.dnn, &one, p->w, w, p->y, dy, p->conv,
                                                     p->bwd_data, ws, p->ws, acc ? &one : &zero,
                                                     p->x, dx)))
            return;
        fall_back(r, "run conv2d bwd data", &f);
    }
    cu_im2col_bwd_data(g, dy, w, dx, acc, ws, r->told);
}

// x (n,c,h,w), dy (n,k,oh,ow) -> dw (k,c,r,s) +=, dbias (k) += (if not NULL). When
// only the bias gradient fails, dw has had its share and only dbias is left.
void cu_conv2d_bwd_filter(const struct conv_geom *g, const float *x, const float *dy, float *dw,
                          float *dbias, void *ws) {
    std::lock_guard<std::mutex> hold(dnn_lock);
    struct conv_record *r = record_of(g);
    if (dnn_runs(r, r->told)) {
        const struct conv_plan *p = &r->plan;
        struct dnn_failure f;
        if (forced_failure(CUDA_DNN_AT_CALL, "cudnnConvolutionBackwardFilter", &f) ||
            !DNN_TRY(&f, cudnnSetConvolutionMathType(p->conv, p->bwd_filter_math)) ||
            !DNN_TRY(&f, cudnnConvolutionBackwardFilter(cu.dnn, &one, p->x, x, p->y, dy,
                                                        p->conv, p->bwd_filter, ws, p->ws, &one,
                                                        p->w, dw))) {
            fall_back(r, "run conv2d bwd filter", &f);
        } else {
            if (!dbias || DNN_TRY(&f, cudnnConvolutionBackwardBias(cu.dnn, &one, p->y, dy, &one,
                                                                   p->bias, dbias)))
                return;
            fall_back(r, "run conv2d bwd bias", &f);
            cu_bias_grad(g->n, g->k, g->oh * g->ow, dy, dbias);
            return;
        }
    }
    cu_im2col_bwd_filter(g, x, dy, dw, dbias, ws, r->told);
}
#endif
