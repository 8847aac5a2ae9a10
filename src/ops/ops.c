/* ops.c — op front-ends: check shapes, allocate from the arena, call the backend,
 * record on the tape. Each op's backward sits right below its forward. */
#include <stdio.h>

#include "error.h"
#include "km_math.h"
#include "ops.h"

/* "[8,16,28,28]": a tensor's shape as text for a message, in a buffer of its own */
#define SHAPE_BUF 64
#define SHAPE_STR(t) tensor_shape_str((t), (char[SHAPE_BUF]){0}, SHAPE_BUF)

static int need_rank(const char *op, const char *what, const struct tensor *t, int ndim) {
    if (!t) return err_set("%s: %s is NULL", op, what);
    if (t->ndim != ndim)
        return err_set("%s: %s has shape %s (rank %d), expected rank %d", op, what, SHAPE_STR(t), t->ndim, ndim);
    return 0;
}

static int need_vec(const char *op, const char *what, const struct tensor *t, int len) {
    if (need_rank(op, what, t, 1)) return -1;
    if (t->shape[0] != len) return err_set("%s: %s has shape %s, expected [%d]", op, what, SHAPE_STR(t), len);
    return 0;
}

/* Gradient buffer of an input if it wants one, else NULL (nothing to accumulate).
 * With `acc` the caller's kernel can overwrite: a gradient nobody has written yet
 * comes back unzeroed, with *acc = false (ag_grad_out). */
static float *grad_of(struct ag_ctx *c, struct tensor *t, bool *acc, int *failed) {
    if (!t || !t->requires_grad) return NULL;
    struct tensor *g = acc ? ag_grad_out(c, t, acc) : ag_grad(c, t);
    if (!g) { *failed = 1; return NULL; }
    return g->data;
}

/* Kernels that fill several gradients at once get scratch for the ones nobody
 * wants (overwritten, when the kernel can: *acc = false). */
static float *grad_or_scratch(struct ag_ctx *c, struct tensor *t, size_t numel, bool *acc) {
    if (t && t->requires_grad) {
        struct tensor *g = acc ? ag_grad_out(c, t, acc) : ag_grad(c, t);
        return g ? g->data : NULL;
    }
    if (acc) *acc = false;
    return arena_alloc(&c->arena, numel * sizeof(float));
}

/* ---- conv2d ------------------------------------------------------------------ */

static int conv2d_backward(struct ag_ctx *c, struct ag_node *n) {
    const struct conv_geom *g = &n->g.conv;
    struct tensor *x = n->in[0], *w = n->in[1], *b = n->in[2];
    int failed = 0;
    bool acc;
    float *dx = grad_of(c, x, &acc, &failed), *db = grad_of(c, b, NULL, &failed);
    void *ws = arena_alloc(&c->arena, c->be->conv2d_workspace(g));
    if (failed || !ws) return -1;
    if (dx) c->be->conv2d_bwd_data(g, n->out->grad->data, w->data, dx, acc, ws);
    if (w->requires_grad || db) {
        float *dw = grad_or_scratch(c, w, w->numel, NULL);
        if (!dw) return -1;
        c->be->conv2d_bwd_filter(g, x->data, n->out->grad->data, dw, db, ws);
    }
    return 0;
}

struct tensor *op_conv2d(struct ag_ctx *c, struct tensor *x, struct tensor *w, struct tensor *bias,
                         int stride, int pad) {
    if (need_rank("conv2d", "input", x, 4) || need_rank("conv2d", "weight", w, 4)) return NULL;
    if (w->shape[1] != x->shape[1]) {
        err_set("conv2d: input %s has %d channels but weight %s expects %d (weight is (out,in,kh,kw))",
                SHAPE_STR(x), x->shape[1], SHAPE_STR(w), w->shape[1]);
        return NULL;
    }
    if (bias && need_vec("conv2d", "bias", bias, w->shape[0])) return NULL;
    if (stride < 1 || pad < 0) {
        err_set("conv2d: stride %d / padding %d invalid (stride >= 1, padding >= 0)", stride, pad);
        return NULL;
    }
    struct conv_geom g = {.n = x->shape[0], .c = x->shape[1], .h = x->shape[2], .w = x->shape[3],
                          .k = w->shape[0], .r = w->shape[2], .s = w->shape[3],
                          .stride = stride, .pad = pad};
    g.oh = conv_out_size(g.h, g.r, stride, pad);
    g.ow = conv_out_size(g.w, g.s, stride, pad);
    if (g.h + 2 * pad < g.r || g.w + 2 * pad < g.s) {
        err_set("conv2d: kernel %dx%d is larger than the padded input %s (padding %d)", g.r, g.s,
                SHAPE_STR(x), pad);
        return NULL;
    }
    struct tensor *y = tensor_arena(&c->arena, 4, (int[]){g.n, g.k, g.oh, g.ow});
    void *ws = y ? arena_alloc(&c->arena, c->be->conv2d_workspace(&g)) : NULL;
    if (!ws) return NULL;
    c->be->conv2d_fwd(&g, x->data, w->data, bias ? bias->data : NULL, y->data, ws);
    struct ag_node *n = ag_record(c, "conv2d", conv2d_backward, y, 3, (struct tensor *[]){x, w, bias});
    if (n) n->g.conv = g;
    return y;
}

/* ---- linear ------------------------------------------------------------------ */

static int linear_backward(struct ag_ctx *c, struct ag_node *n) {
    struct tensor *x = n->in[0], *w = n->in[1];
    float *dx = grad_or_scratch(c, x, x->numel, NULL), *dw = grad_or_scratch(c, w, w->numel, NULL);
    float *db = grad_or_scratch(c, n->in[2], (size_t)w->shape[0], NULL);
    if (!dx || !dw || !db) return -1;
    c->be->linear_bwd(x->shape[0], x->shape[1], w->shape[0], x->data, w->data, n->out->grad->data,
                      dx, dw, db);
    return 0;
}

struct tensor *op_linear(struct ag_ctx *c, struct tensor *x, struct tensor *w, struct tensor *bias) {
    if (need_rank("linear", "input", x, 2) || need_rank("linear", "weight", w, 2)) return NULL;
    if (w->shape[1] != x->shape[1]) {
        err_set("linear: input %s has %d features but weight %s expects %d (weight is (out,in))",
                SHAPE_STR(x), x->shape[1], SHAPE_STR(w), w->shape[1]);
        return NULL;
    }
    if (bias && need_vec("linear", "bias", bias, w->shape[0])) return NULL;
    struct tensor *y = tensor_arena(&c->arena, 2, (int[]){x->shape[0], w->shape[0]});
    if (!y) return NULL;
    c->be->linear_fwd(x->shape[0], x->shape[1], w->shape[0], x->data, w->data,
                      bias ? bias->data : NULL, y->data);
    ag_record(c, "linear", linear_backward, y, 3, (struct tensor *[]){x, w, bias});
    return y;
}

/* ---- batchnorm2d ------------------------------------------------------------- */

static int bn_backward(struct ag_ctx *c, struct ag_node *n) {
    struct tensor *x = n->in[0];
    int nn = x->shape[0], ch = x->shape[1], hw = x->shape[2] * x->shape[3];
    bool acc;
    float *dx = grad_or_scratch(c, x, x->numel, &acc), *dg = grad_or_scratch(c, n->in[1], (size_t)ch, NULL);
    float *db = grad_or_scratch(c, n->in[2], (size_t)ch, NULL);
    if (!dx || !dg || !db) return -1;
    c->be->bn_bwd(nn, ch, hw, x->data, n->out->grad->data, n->in[1]->data, n->saved[0]->data,
                  n->saved[1]->data, dx, acc, dg, db);
    return 0;
}

/* The shapes both batch-norm ops need: x (n,c,h,w), four vectors of c, and in
 * training more than one value per channel. -1 with err_set naming `op` otherwise. */
static int bn_check(const char *op, bool training, const struct tensor *x, const struct tensor *gamma,
                    const struct tensor *beta, const struct tensor *running_mean,
                    const struct tensor *running_var) {
    if (need_rank(op, "input", x, 4)) return -1;
    int ch = x->shape[1];
    if (need_vec(op, "gamma", gamma, ch) || need_vec(op, "beta", beta, ch) ||
        need_vec(op, "running_mean", running_mean, ch) || need_vec(op, "running_var", running_var, ch))
        return -1;
    if (training && x->shape[0] * x->shape[2] * x->shape[3] < 2)
        return err_set("%s: training needs more than one value per channel to estimate a variance, "
                       "got input %s. HINT: use a batch larger than 1", op, SHAPE_STR(x));
    return 0;
}

struct tensor *op_batchnorm2d(struct ag_ctx *c, struct tensor *x, struct tensor *gamma,
                              struct tensor *beta, struct tensor *running_mean,
                              struct tensor *running_var, float momentum, float eps) {
    if (bn_check("batchnorm2d", c->training, x, gamma, beta, running_mean, running_var)) return NULL;
    int nn = x->shape[0], ch = x->shape[1], hw = x->shape[2] * x->shape[3];
    struct tensor *y = tensor_arena(&c->arena, 4, x->shape);
    if (!y) return NULL;
    if (!c->training) {
        /* evaluation only: no node, so no gradient flows through running statistics */
        c->be->bn_fwd_eval(nn, ch, hw, x->data, gamma->data, beta->data, running_mean->data,
                           running_var->data, eps, y->data);
        return y;
    }
    struct tensor *mean = tensor_arena(&c->arena, 1, &ch), *invstd = tensor_arena(&c->arena, 1, &ch);
    if (!mean || !invstd) return NULL;
    c->be->bn_fwd_train(nn, ch, hw, x->data, gamma->data, beta->data, y->data, mean->data,
                        invstd->data, running_mean->data, running_var->data, momentum, eps);
    struct ag_node *n = ag_record(c, "batchnorm2d", bn_backward, y, 3, (struct tensor *[]){x, gamma, beta});
    if (n) { n->saved[0] = mean; n->saved[1] = invstd; }
    return y;
}

/* ---- batchnorm2d + residual + relu, fused -------------------------------------- */

static int bn_relu_backward(struct ag_ctx *c, struct ag_node *n) {
    struct tensor *x = n->in[0], *res = n->in[3];
    int nn = x->shape[0], ch = x->shape[1], hw = x->shape[2] * x->shape[3], failed = 0;
    /* bn_relu(x, x) would give dx and dres one buffer: then both accumulate */
    bool acc_dx = true, acc_dres = true, alias = x == res;
    float *dx = grad_or_scratch(c, x, x->numel, alias ? NULL : &acc_dx);
    float *dres = grad_of(c, res, alias ? NULL : &acc_dres, &failed);
    float *dg = grad_or_scratch(c, n->in[1], (size_t)ch, NULL);
    float *db = grad_or_scratch(c, n->in[2], (size_t)ch, NULL);
    if (!dx || !dg || !db || failed) return -1;
    c->be->bn_relu_bwd(nn, ch, hw, x->data, n->out->data, n->out->grad->data, n->in[1]->data,
                       n->saved[0]->data, n->saved[1]->data, dx, acc_dx, dres, acc_dres, dg, db);
    return 0;
}

struct tensor *op_batchnorm2d_relu(struct ag_ctx *c, struct tensor *x, struct tensor *res,
                                   struct tensor *gamma, struct tensor *beta,
                                   struct tensor *running_mean, struct tensor *running_var,
                                   float momentum, float eps) {
    if (res && x && !tensor_same_shape(x, res)) {
        err_set("batchnorm2d_relu: input %s and residual %s differ in shape", SHAPE_STR(x), SHAPE_STR(res));
        return NULL;
    }
    if (!c->training || !c->be->bn_relu_fwd_train || !c->be->bn_relu_bwd) {
        /* evaluation, or a table without the fused entries: the same from the separate ops */
        struct tensor *y = op_batchnorm2d(c, x, gamma, beta, running_mean, running_var, momentum, eps);
        if (y && res) y = op_add(c, y, res);
        return y ? op_relu(c, y) : NULL;
    }
    if (bn_check("batchnorm2d_relu", true, x, gamma, beta, running_mean, running_var)) return NULL;
    int nn = x->shape[0], ch = x->shape[1], hw = x->shape[2] * x->shape[3];
    struct tensor *y = tensor_arena(&c->arena, 4, x->shape);
    struct tensor *mean = tensor_arena(&c->arena, 1, &ch), *invstd = tensor_arena(&c->arena, 1, &ch);
    if (!y || !mean || !invstd) return NULL;
    c->be->bn_relu_fwd_train(nn, ch, hw, x->data, res ? res->data : NULL, gamma->data, beta->data,
                             y->data, mean->data, invstd->data, running_mean->data,
                             running_var->data, momentum, eps);
    struct ag_node *n = ag_record(c, "batchnorm2d_relu", bn_relu_backward, y, 4,
                                  (struct tensor *[]){x, gamma, beta, res});
    if (n) { n->saved[0] = mean; n->saved[1] = invstd; }
    return y;
}

/* ---- relu, add ---------------------------------------------------------------- */

static int relu_backward(struct ag_ctx *c, struct ag_node *n) {
    int failed = 0;
    float *dx = grad_of(c, n->in[0], NULL, &failed);
    if (failed) return -1;
    if (dx) c->be->relu_bwd(n->out->numel, n->out->data, n->out->grad->data, dx);
    return 0;
}

struct tensor *op_relu(struct ag_ctx *c, struct tensor *x) {
    if (!x) { err_set("relu: input is NULL"); return NULL; }
    struct tensor *y = tensor_arena(&c->arena, x->ndim, x->shape);
    if (!y) return NULL;
    c->be->relu_fwd(x->numel, x->data, y->data);
    ag_record(c, "relu", relu_backward, y, 1, &x);
    return y;
}

/* d(a+b) passes the gradient unchanged to both; flatten is the same (a reshape). */
static int passthrough_backward(struct ag_ctx *c, struct ag_node *n) {
    for (int i = 0; i < 2; i++) {
        int failed = 0;
        float *d = grad_of(c, n->in[i], NULL, &failed);
        if (failed) return -1;
        if (d) c->be->axpy(n->out->numel, 1.0f, n->out->grad->data, d);
    }
    return 0;
}

struct tensor *op_add(struct ag_ctx *c, struct tensor *a, struct tensor *b) {
    if (!a || !b) { err_set("add: an input is NULL"); return NULL; }
    if (!tensor_same_shape(a, b)) {
        err_set("add: shapes %s and %s differ; add needs equal shapes (no broadcasting)", SHAPE_STR(a), SHAPE_STR(b));
        return NULL;
    }
    struct tensor *y = tensor_arena(&c->arena, a->ndim, a->shape);
    if (!y) return NULL;
    c->be->add_fwd(a->numel, a->data, b->data, y->data);
    ag_record(c, "add", passthrough_backward, y, 2, (struct tensor *[]){a, b});
    return y;
}

struct tensor *op_flatten(struct ag_ctx *c, struct tensor *x) {
    if (!x) { err_set("flatten: input is NULL"); return NULL; }
    int shape[2] = {x->shape[0], (int)(x->numel / (size_t)x->shape[0])};
    /* A copy rather than a view keeps every tensor owning its data and gradient. */
    struct tensor *y = tensor_arena(&c->arena, 2, shape);
    if (!y) return NULL;
    c->be->copy(y->data, x->data, x->numel * sizeof(float), COPY_D2D);
    ag_record(c, "flatten", passthrough_backward, y, 1, &x);
    return y;
}

/* ---- pooling ------------------------------------------------------------------ */

static int pool_geom_for(const char *op, const struct tensor *x, int size, int stride, int pad,
                         struct pool_geom *g) {
    if (need_rank(op, "input", x, 4)) return -1;
    if (size < 1 || stride < 1 || pad < 0 || 2 * pad > size)
        return err_set("%s: window %d, stride %d, padding %d invalid (window >= 1, stride >= 1, "
                       "0 <= padding <= window/2)", op, size, stride, pad);
    *g = (struct pool_geom){.n = x->shape[0], .c = x->shape[1], .h = x->shape[2], .w = x->shape[3],
                            .size = size, .stride = stride, .pad = pad};
    if (g->h + 2 * pad < size || g->w + 2 * pad < size)
        return err_set("%s: window %d is larger than the padded input %s", op, size, SHAPE_STR(x));
    g->oh = conv_out_size(g->h, size, stride, pad);
    g->ow = conv_out_size(g->w, size, stride, pad);
    return 0;
}

static int maxpool_backward(struct ag_ctx *c, struct ag_node *n) {
    int failed = 0;
    float *dx = grad_of(c, n->in[0], NULL, &failed);
    if (failed) return -1;
    if (dx) c->be->maxpool_bwd(&n->g.pool, n->aux, n->out->grad->data, dx);
    return 0;
}

struct tensor *op_maxpool2d(struct ag_ctx *c, struct tensor *x, int size, int stride, int pad) {
    struct pool_geom g;
    if (pool_geom_for("maxpool2d", x, size, stride, pad, &g)) return NULL;
    struct tensor *y = tensor_arena(&c->arena, 4, (int[]){g.n, g.c, g.oh, g.ow});
    int32_t *idx = y ? arena_alloc(&c->arena, y->numel * sizeof(int32_t)) : NULL;
    if (!idx) return NULL;
    c->be->maxpool_fwd(&g, x->data, y->data, idx);
    struct ag_node *n = ag_record(c, "maxpool2d", maxpool_backward, y, 1, &x);
    if (n) { n->g.pool = g; n->aux = idx; }
    return y;
}

static int avgpool_backward(struct ag_ctx *c, struct ag_node *n) {
    int failed = 0;
    float *dx = grad_of(c, n->in[0], NULL, &failed);
    if (failed) return -1;
    if (dx) c->be->avgpool_bwd(&n->g.pool, n->out->grad->data, dx);
    return 0;
}

struct tensor *op_avgpool2d(struct ag_ctx *c, struct tensor *x, int size, int stride, int pad) {
    struct pool_geom g;
    if (pool_geom_for("avgpool2d", x, size, stride, pad, &g)) return NULL;
    struct tensor *y = tensor_arena(&c->arena, 4, (int[]){g.n, g.c, g.oh, g.ow});
    if (!y) return NULL;
    c->be->avgpool_fwd(&g, x->data, y->data);
    struct ag_node *n = ag_record(c, "avgpool2d", avgpool_backward, y, 1, &x);
    if (n) n->g.pool = g;
    return y;
}

static int gap_backward(struct ag_ctx *c, struct ag_node *n) {
    struct tensor *x = n->in[0];
    int failed = 0;
    float *dx = grad_of(c, x, NULL, &failed);
    if (failed) return -1;
    if (dx) c->be->gap_bwd(x->shape[0], x->shape[1], x->shape[2] * x->shape[3], n->out->grad->data, dx);
    return 0;
}

struct tensor *op_global_avgpool(struct ag_ctx *c, struct tensor *x) {
    if (need_rank("global_avgpool", "input", x, 4)) return NULL;
    struct tensor *y = tensor_arena(&c->arena, 2, x->shape);
    if (!y) return NULL;
    c->be->gap_fwd(x->shape[0], x->shape[1], x->shape[2] * x->shape[3], x->data, y->data);
    ag_record(c, "global_avgpool", gap_backward, y, 1, &x);
    return y;
}

/* ---- loss, metrics, input ----------------------------------------------------- */

static int xent_backward(struct ag_ctx *c, struct ag_node *n) {
    struct tensor *logits = n->in[0];
    int failed = 0;
    float *dl = grad_of(c, logits, NULL, &failed);
    if (failed) return -1;
    if (dl)
        c->be->softmax_xent_bwd(logits->shape[0], logits->shape[1], n->saved[0]->data, n->aux,
                                n->out->grad->data, dl);
    return 0;
}

struct tensor *op_softmax_xent(struct ag_ctx *c, struct tensor *logits, const int32_t *labels) {
    if (need_rank("softmax_xent", "logits", logits, 2)) return NULL;
    if (!labels) { err_set("softmax_xent: labels are NULL"); return NULL; }
    struct tensor *probs = tensor_arena(&c->arena, 2, logits->shape);
    struct tensor *loss = tensor_arena(&c->arena, 1, (int[]){1});
    if (!probs || !loss) return NULL;
    c->be->softmax_xent_fwd(logits->shape[0], logits->shape[1], logits->data, labels, probs->data,
                            loss->data);
    struct ag_node *n = ag_record(c, "softmax_xent", xent_backward, loss, 1, &logits);
    if (n) { n->saved[0] = probs; n->aux = labels; }
    return loss;
}

int op_accuracy_count(struct ag_ctx *c, struct tensor *logits, const int32_t *labels) {
    if (need_rank("accuracy", "logits", logits, 2)) return -1;
    float *count = arena_alloc(&c->arena, sizeof(float));
    if (!count) return -1;
    c->be->argmax_correct(logits->shape[0], logits->shape[1], logits->data, labels, count);
    float host = 0;
    c->be->copy(&host, count, sizeof host, COPY_D2H);
    return (int)host;
}

struct tensor *op_normalize_u8(struct ag_ctx *c, const uint8_t *src, int n, int h, int w, int ch,
                               const float *mean, const float *std) {
    for (int i = 0; i < ch; i++)
        if (!(std[i] > 0)) { err_set("normalize_u8: std[%d] = %g, must be > 0", i, (double)std[i]); return NULL; }
    struct tensor *y = tensor_arena(&c->arena, 4, (int[]){n, ch, h, w});
    if (!y) return NULL;
    c->be->normalize_u8(n, h, w, ch, src, mean, std, y->data);
    return y;
}
