/* nn.c — layers, the model list, parameter packing, shape walk. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "nn.h"
#include "km_math.h"
#include "ops.h"

#define PARAM_ALIGN 16 /* floats: each parameter starts on a 64-byte boundary */

enum init { INIT_ZERO, INIT_ONE, INIT_HE };

static int grow(void **arr, int *cap, int n, size_t elem) {
    if (n < *cap) return 0;
    int nc = *cap ? 2 * *cap : 16;
    void *p = realloc(*arr, (size_t)nc * elem);
    if (!p) return err_set("out of host memory building the model");
    *arr = p;
    *cap = nc;
    return 0;
}

/* A host tensor, initialised; it moves to the device at finalize. */
static struct tensor *host_tensor(struct nn_model *m, int ndim, const int *shape, enum init init, int fan_in) {
    struct tensor *t = calloc(1, sizeof *t);
    if (!t) { err_set("out of host memory for a parameter"); return NULL; }
    t->ndim = ndim;
    memcpy(t->shape, shape, (size_t)ndim * sizeof *shape);
    t->numel = tensor_numel(ndim, shape);
    t->dev = DEV_CPU;
    t->data = malloc(t->numel * sizeof(float));
    if (!t->data) { err_set("out of host memory for a parameter of %zu floats", t->numel); free(t); return NULL; }
    float he = sqrtf(2.0f / (float)(fan_in > 0 ? fan_in : 1));  /* He et al. 2015, fan-in mode */
    for (size_t i = 0; i < t->numel; i++)
        t->data[i] = init == INIT_ZERO ? 0.0f : init == INIT_ONE ? 1.0f : he * rng_normal(&m->rng);
    return t;
}

static struct tensor *new_param(struct nn_model *m, const char *layer, const char *what, int ndim,
                                const int *shape, enum init init, int fan_in) {
    struct nn_params *ps = &m->ps;
    if (grow((void **)&ps->params, &ps->cap_params, ps->n_params, sizeof *ps->params)) return NULL;
    int cap = ps->cap_params;
    char (*names)[NN_NAME_LEN] = realloc(ps->param_names, (size_t)cap * sizeof *names);
    if (!names) { err_set("out of host memory building the model"); return NULL; }
    ps->param_names = names;
    struct tensor *t = host_tensor(m, ndim, shape, init, fan_in);
    if (!t) return NULL;
    t->requires_grad = true;
    snprintf(ps->param_names[ps->n_params], NN_NAME_LEN, "%s.%s", layer, what);
    ps->params[ps->n_params++] = t;
    return t;
}

static struct tensor *new_buffer(struct nn_model *m, const char *layer, const char *what, int len, enum init init) {
    struct nn_params *ps = &m->ps;
    if (grow((void **)&ps->buffers, &ps->cap_buffers, ps->n_buffers, sizeof *ps->buffers)) return NULL;
    char (*names)[NN_NAME_LEN] = realloc(ps->buffer_names, (size_t)ps->cap_buffers * sizeof *names);
    if (!names) { err_set("out of host memory building the model"); return NULL; }
    ps->buffer_names = names;
    struct tensor *t = host_tensor(m, 1, &len, init, 0);
    if (!t) return NULL;
    snprintf(ps->buffer_names[ps->n_buffers], NN_NAME_LEN, "%s.%s", layer, what);
    ps->buffers[ps->n_buffers++] = t;
    return t;
}

static struct nn_layer *new_layer(struct nn_model *m, enum nn_kind kind, const char *prefix) {
    if (grow((void **)&m->layers, &m->cap_layers, m->n_layers, sizeof *m->layers)) return NULL;
    struct nn_layer *l = &m->layers[m->n_layers];
    memset(l, 0, sizeof *l);
    l->kind = kind;
    snprintf(l->name, sizeof l->name, "%s%d", prefix, m->n_layers);
    m->n_layers++;
    return l;
}

void nn_model_init(struct nn_model *m, int in_c, int in_h, int in_w, uint64_t seed) {
    memset(m, 0, sizeof *m);
    m->in_c = in_c;
    m->in_h = in_h;
    m->in_w = in_w;
    m->rng.state = seed;
}

/* ---- building blocks, shared by the layer list and the residual block ---- */

static int make_conv(struct nn_model *m, struct nn_conv *c, const char *name, int cin, int cout, int k,
                     int stride, int pad, bool bias) {
    if (cin < 1 || cout < 1 || k < 1 || stride < 1 || pad < 0)
        return err_set("%s: conv %d->%d, kernel %d, stride %d, padding %d is invalid", name, cin, cout, k,
                       stride, pad);
    *c = (struct nn_conv){.cin = cin, .cout = cout, .k = k, .stride = stride, .pad = pad};
    c->w = new_param(m, name, "weight", 4, (int[]){cout, cin, k, k}, INIT_HE, cin * k * k);
    if (!c->w) return -1;
    if (bias && !(c->b = new_param(m, name, "bias", 1, &cout, INIT_ZERO, 0))) return -1;
    return 0;
}

static int make_bn(struct nn_model *m, struct nn_bn *b, const char *name, int c) {
    if (c < 1) return err_set("%s: batchnorm over %d channels is invalid", name, c);
    *b = (struct nn_bn){.c = c, .momentum = 0.1f, .eps = 1e-5f};
    b->gamma = new_param(m, name, "weight", 1, &c, INIT_ONE, 0);
    b->beta = new_param(m, name, "bias", 1, &c, INIT_ZERO, 0);
    b->running_mean = new_buffer(m, name, "running_mean", c, INIT_ZERO);
    b->running_var = new_buffer(m, name, "running_var", c, INIT_ONE);
    return b->gamma && b->beta && b->running_mean && b->running_var ? 0 : -1;
}

static struct tensor *conv_forward(struct ag_ctx *c, const struct nn_conv *l, struct tensor *x) {
    return op_conv2d(c, x, l->w, l->b, l->stride, l->pad);
}

static struct tensor *bn_forward(struct ag_ctx *c, const struct nn_bn *l, struct tensor *x) {
    return op_batchnorm2d(c, x, l->gamma, l->beta, l->running_mean, l->running_var, l->momentum, l->eps);
}

/* relu(bn(x) + res), res may be NULL: one fused op */
static struct tensor *bn_relu_forward(struct ag_ctx *c, const struct nn_bn *l, struct tensor *x,
                                      struct tensor *res) {
    return op_batchnorm2d_relu(c, x, res, l->gamma, l->beta, l->running_mean, l->running_var, l->momentum,
                               l->eps);
}

int nn_add_conv(struct nn_model *m, int cin, int cout, int k, int stride, int pad, bool bias) {
    struct nn_layer *l = new_layer(m, NN_CONV, "conv");
    return l ? make_conv(m, &l->u.conv, l->name, cin, cout, k, stride, pad, bias) : -1;
}

int nn_add_bn(struct nn_model *m, int c) {
    struct nn_layer *l = new_layer(m, NN_BN, "bn");
    return l ? make_bn(m, &l->u.bn, l->name, c) : -1;
}

int nn_add_relu(struct nn_model *m) { return new_layer(m, NN_RELU, "relu") ? 0 : -1; }
int nn_add_gap(struct nn_model *m) { return new_layer(m, NN_GAP, "gap") ? 0 : -1; }
int nn_add_flatten(struct nn_model *m) { return new_layer(m, NN_FLATTEN, "flatten") ? 0 : -1; }

static int add_pool(struct nn_model *m, enum nn_kind kind, const char *name, int size, int stride, int pad) {
    if (size < 1 || stride < 1 || pad < 0 || 2 * pad > size)
        return err_set("%s: window %d, stride %d, padding %d is invalid", name, size, stride, pad);
    struct nn_layer *l = new_layer(m, kind, name);
    if (!l) return -1;
    l->u.pool = (struct nn_pool){size, stride, pad};
    return 0;
}

int nn_add_maxpool(struct nn_model *m, int size, int stride, int pad) {
    return add_pool(m, NN_MAXPOOL, "maxpool", size, stride, pad);
}

int nn_add_avgpool(struct nn_model *m, int size, int stride, int pad) {
    return add_pool(m, NN_AVGPOOL, "avgpool", size, stride, pad);
}

int nn_add_linear(struct nn_model *m, int in, int out) {
    if (in < 1 || out < 1) return err_set("linear: %d -> %d features is invalid", in, out);
    struct nn_layer *l = new_layer(m, NN_LINEAR, "linear");
    if (!l) return -1;
    struct nn_linear *lin = &l->u.linear;
    *lin = (struct nn_linear){.in = in, .out = out};
    lin->w = new_param(m, l->name, "weight", 2, (int[]){out, in}, INIT_HE, in);
    lin->b = new_param(m, l->name, "bias", 1, &out, INIT_ZERO, 0);
    return lin->w && lin->b ? 0 : -1;
}

int nn_add_block(struct nn_model *m, int cin, int cout, int stride) {
    struct nn_layer *l = new_layer(m, NN_BLOCK, "block");
    if (!l) return -1;
    struct nn_block *b = &l->u.block;
    char name[NN_NAME_LEN + 16];
#define SUB(what) (snprintf(name, sizeof name, "%s.%s", l->name, what), name)
    if (make_conv(m, &b->conv1, SUB("conv1"), cin, cout, 3, stride, 1, false) ||
        make_bn(m, &b->bn1, SUB("bn1"), cout) ||
        make_conv(m, &b->conv2, SUB("conv2"), cout, cout, 3, 1, 1, false) ||
        make_bn(m, &b->bn2, SUB("bn2"), cout))
        return -1;
    b->has_short = stride != 1 || cin != cout;
    if (b->has_short && (make_conv(m, &b->short_conv, SUB("short_conv"), cin, cout, 1, stride, 0, false) ||
                         make_bn(m, &b->short_bn, SUB("short_bn"), cout)))
        return -1;
#undef SUB
    return 0;
}

static struct tensor *block_forward(struct ag_ctx *c, const struct nn_block *b, struct tensor *x) {
    /* x feeds both paths: the tape gives it the sum of both gradients. The shortcut
     * goes first, so the backward (in reverse) reaches conv1 first: conv1's bwd_data,
     * which covers every pixel of dx, writes it, and the 1x1 shortcut, which covers a
     * quarter of them at stride 2, adds to it. The other way round dx was zeroed first
     * and conv1 read it back to add. */
    struct tensor *s = b->has_short ? conv_forward(c, &b->short_conv, x) : x;
    if (s && b->has_short) s = bn_forward(c, &b->short_bn, s);
    struct tensor *h = s ? conv_forward(c, &b->conv1, x) : NULL;
    if (h) h = bn_relu_forward(c, &b->bn1, h, NULL);
    if (h) h = conv_forward(c, &b->conv2, h);
    /* bn2, the shortcut added, relu: one op */
    return h ? bn_relu_forward(c, &b->bn2, h, s) : NULL;
}

/* ---- running the list ---- */

struct tensor *nn_forward(struct nn_model *m, struct ag_ctx *c, struct tensor *x) {
    if (!m->ps.be) { err_set("nn_forward: the model was not finalized (call nn_model_finalize)"); return NULL; }
    for (int i = 0; i < m->n_layers && x; i++) {
        struct nn_layer *l = &m->layers[i];
        int at = i;
        switch (l->kind) {
        case NN_CONV: x = conv_forward(c, &l->u.conv, x); break;
        case NN_BN:
            /* a BN with a ReLU after it runs as one fused op, which does the ReLU layer too */
            if (i + 1 < m->n_layers && m->layers[i + 1].kind == NN_RELU) {
                x = bn_relu_forward(c, &l->u.bn, x, NULL);
                i++;
            } else {
                x = bn_forward(c, &l->u.bn, x);
            }
            break;
        case NN_RELU: x = op_relu(c, x); break;
        case NN_MAXPOOL: x = op_maxpool2d(c, x, l->u.pool.size, l->u.pool.stride, l->u.pool.pad); break;
        case NN_AVGPOOL: x = op_avgpool2d(c, x, l->u.pool.size, l->u.pool.stride, l->u.pool.pad); break;
        case NN_GAP: x = op_global_avgpool(c, x); break;
        case NN_FLATTEN: x = op_flatten(c, x); break;
        case NN_LINEAR: x = op_linear(c, x, l->u.linear.w, l->u.linear.b); break;
        case NN_BLOCK: x = block_forward(c, &l->u.block, x); break;
        }
        if (!x) err_wrap("layer %d (%s): ", at, l->name);
    }
    return x;
}

/* ---- parameters on the device ---- */

int nn_model_finalize(struct nn_model *m, const struct backend *be) {
    struct nn_params *ps = &m->ps;
    if (ps->be) return err_set("nn_model_finalize: called twice");
    size_t total = 0;
    for (int i = 0; i < ps->n_params; i++)
        total += (ps->params[i]->numel + PARAM_ALIGN - 1) / PARAM_ALIGN * PARAM_ALIGN;
    size_t bytes = (total ? total : 1) * sizeof(float);
    ps->w = be->alloc(bytes);
    ps->g = be->alloc(bytes);
    ps->v = be->alloc(bytes);
    if (!ps->w || !ps->g || !ps->v) return err_wrap("allocating %zu parameters: ", total);
    be->zero(ps->w, bytes);
    be->zero(ps->g, bytes);
    be->zero(ps->v, bytes);
    ps->total = total;
    ps->be = be;
    size_t at = 0;
    for (int i = 0; i < ps->n_params; i++) {
        struct tensor *p = ps->params[i];
        be->copy(ps->w + at, p->data, p->numel * sizeof(float), COPY_H2D);
        free(p->data);
        p->data = ps->w + at;
        p->dev = be->dev;
        p->grad = calloc(1, sizeof *p->grad);
        if (!p->grad) return err_set("out of host memory for gradient headers");
        *p->grad = *p;
        p->grad->requires_grad = false;
        p->grad->data = ps->g + at;
        at += (p->numel + PARAM_ALIGN - 1) / PARAM_ALIGN * PARAM_ALIGN;
    }
    for (int i = 0; i < ps->n_buffers; i++) {
        struct tensor *b = ps->buffers[i];
        float *d = be->alloc(b->numel * sizeof(float));
        if (!d) return err_wrap("allocating buffer %s: ", ps->buffer_names[i]);
        be->copy(d, b->data, b->numel * sizeof(float), COPY_H2D);
        free(b->data);
        b->data = d;
        b->dev = be->dev;
    }
    return 0;
}

void nn_zero_grad(struct nn_model *m) { m->ps.be->zero(m->ps.g, m->ps.total * sizeof(float)); }

size_t nn_param_count(const struct nn_model *m) {
    size_t n = 0;
    for (int i = 0; i < m->ps.n_params; i++) n += m->ps.params[i]->numel;
    return n;
}

void nn_model_free(struct nn_model *m) {
    struct nn_params *ps = &m->ps;
    for (int i = 0; i < ps->n_params; i++) {
        if (!ps->be) free(ps->params[i]->data);
        free(ps->params[i]->grad);
        free(ps->params[i]);
    }
    for (int i = 0; i < ps->n_buffers; i++) {
        if (ps->be) ps->be->free(ps->buffers[i]->data);
        else free(ps->buffers[i]->data);
        free(ps->buffers[i]);
    }
    if (ps->be) {
        ps->be->free(ps->w);
        ps->be->free(ps->g);
        ps->be->free(ps->v);
    }
    free(ps->params);
    free(ps->param_names);
    free(ps->buffers);
    free(ps->buffer_names);
    free(m->layers);
    memset(m, 0, sizeof *m);
}

/* ---- the shape walk and the layer table ---- */

struct shape { int ndim, d[4]; };

static int conv_shape(const char *name, const struct nn_conv *c, struct shape *s) {
    if (s->ndim != 4 || s->d[1] != c->cin)
        return err_set("%s: expects (n,%d,h,w) input, gets %s input with %d channels%s", name, c->cin,
                       s->ndim == 4 ? "an image" : "a flat", s->ndim == 4 ? s->d[1] : s->d[1],
                       s->ndim == 4 ? "" : "; a conv cannot follow flatten/gap/linear");
    int oh = conv_out_size(s->d[2], c->k, c->stride, c->pad), ow = conv_out_size(s->d[3], c->k, c->stride, c->pad);
    if (s->d[2] + 2 * c->pad < c->k || s->d[3] + 2 * c->pad < c->k)
        return err_set("%s: kernel %d is larger than its %dx%d input (padding %d)", name, c->k, s->d[2],
                       s->d[3], c->pad);
    s->d[1] = c->cout;
    s->d[2] = oh;
    s->d[3] = ow;
    return 0;
}

static int layer_shape(const struct nn_layer *l, struct shape *s) {
    const char *name = l->name;
    switch (l->kind) {
    case NN_CONV: return conv_shape(name, &l->u.conv, s);
    case NN_BN:
        if (s->ndim != 4 || s->d[1] != l->u.bn.c)
            return err_set("%s: batchnorm over %d channels gets a %s input with %d channels", name, l->u.bn.c,
                           s->ndim == 4 ? "(n,c,h,w)" : "flat", s->d[1]);
        return 0;
    case NN_RELU: return 0;
    case NN_MAXPOOL:
    case NN_AVGPOOL: {
        const struct nn_pool *p = &l->u.pool;
        if (s->ndim != 4) return err_set("%s: pooling needs an (n,c,h,w) input", name);
        if (s->d[2] + 2 * p->pad < p->size || s->d[3] + 2 * p->pad < p->size)
            return err_set("%s: window %d is larger than its %dx%d input", name, p->size, s->d[2], s->d[3]);
        s->d[2] = conv_out_size(s->d[2], p->size, p->stride, p->pad);
        s->d[3] = conv_out_size(s->d[3], p->size, p->stride, p->pad);
        return 0;
    }
    case NN_GAP:
        if (s->ndim != 4) return err_set("%s: global average pool needs an (n,c,h,w) input", name);
        s->ndim = 2;
        return 0;
    case NN_FLATTEN:
        for (int i = 2; i < s->ndim; i++) s->d[1] *= s->d[i];
        s->ndim = 2;
        return 0;
    case NN_LINEAR:
        if (s->ndim != 2 || s->d[1] != l->u.linear.in)
            return err_set("%s: expects %d input features, gets %s%s", name, l->u.linear.in,
                           s->ndim == 2 ? "a different count" : "an image",
                           s->ndim == 2 ? "" : "; add gap or flatten before it");
        s->d[1] = l->u.linear.out;
        return 0;
    case NN_BLOCK: {
        const struct nn_block *b = &l->u.block;
        struct shape in = *s;
        if (conv_shape(name, &b->conv1, s) || conv_shape(name, &b->conv2, s)) return -1;
        if (b->has_short && conv_shape(name, &b->short_conv, &in)) return -1;
        return 0;
    }
    }
    return 0;
}

static size_t layer_params(const struct nn_layer *l) {
    const struct tensor *ts[10] = {0};
    switch (l->kind) {
    case NN_CONV: ts[0] = l->u.conv.w; ts[1] = l->u.conv.b; break;
    case NN_BN: ts[0] = l->u.bn.gamma; ts[1] = l->u.bn.beta; break;
    case NN_LINEAR: ts[0] = l->u.linear.w; ts[1] = l->u.linear.b; break;
    case NN_BLOCK: {
        const struct nn_block *b = &l->u.block;
        const struct tensor *all[] = {b->conv1.w, b->bn1.gamma, b->bn1.beta, b->conv2.w, b->bn2.gamma,
                                      b->bn2.beta, b->short_conv.w, b->short_bn.gamma, b->short_bn.beta};
        memcpy(ts, all, sizeof all);
        break;
    }
    default: break;
    }
    size_t n = 0;
    for (int i = 0; i < 10; i++) n += ts[i] ? ts[i]->numel : 0;
    return n;
}

static const char *kind_name(enum nn_kind k) {
    static const char *const names[] = {
        [NN_CONV] = "conv2d", [NN_BN] = "batchnorm2d", [NN_RELU] = "relu",
        [NN_MAXPOOL] = "maxpool2d", [NN_AVGPOOL] = "avgpool2d", [NN_GAP] = "global_avgpool",
        [NN_FLATTEN] = "flatten", [NN_LINEAR] = "linear", [NN_BLOCK] = "basic_block",
    };
    return names[k];
}

int nn_model_shapes(const struct nn_model *m, int batch, FILE *f, int *out_ndim, int out_shape[4]) {
    struct shape s = {4, {batch, m->in_c, m->in_h, m->in_w}};
    char buf[64];
    if (f) fprintf(f, "  %-10s %-16s %-18s %10s\n  %-10s %-16s %-18s %10s\n", "layer", "kind", "output", "params",
                   "input", "", err_shape_str(s.ndim, s.d, buf, sizeof buf), "");
    for (int i = 0; i < m->n_layers; i++) {
        const struct nn_layer *l = &m->layers[i];
        if (layer_shape(l, &s)) return -1;
        char detail[32] = "";
        if (l->kind == NN_CONV)
            snprintf(detail, sizeof detail, " %dx%d/%d", l->u.conv.k, l->u.conv.k, l->u.conv.stride);
        else if (l->kind == NN_BLOCK)
            snprintf(detail, sizeof detail, " %d->%d/%d", l->u.block.conv1.cin, l->u.block.conv1.cout,
                     l->u.block.conv1.stride);
        char kind[48];
        snprintf(kind, sizeof kind, "%s%s", kind_name(l->kind), detail);
        if (f) fprintf(f, "  %-10s %-16s %-18s %10zu\n", l->name, kind, err_shape_str(s.ndim, s.d, buf, sizeof buf),
                       layer_params(l));
    }
    if (f) fprintf(f, "  total parameters: %zu\n", nn_param_count(m));
    if (out_ndim) *out_ndim = s.ndim;
    if (out_shape) memcpy(out_shape, s.d, sizeof s.d);
    return 0;
}
