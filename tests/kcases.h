/* kcases.h — the kernel cases test_kernels.c (the CPU tables) and test_cuda.c (the
 * CUDA tables, and the CUDA kernels' bodies on the CPU) share: what a case is, how
 * each backend entry lays out its buffers and is called, the case-table macros and
 * the cases both suites run, and the bits of a run both read. Included by those two
 * files only; each keeps its own runner and checks, and adds cases of its own.
 *
 * A NULL entry is "not supported by this table" (backend.h). The list of entries is
 * one for every table; a suite asks each table for the entry (`on`) and reports a
 * case it can't run there as skipped, naming the table (skip_unsupported), so an
 * entry a table lacks shows in the results instead of passing unchecked.
 *
 * Each includer defines, after including this:
 *  - table_alloc / table_free: memory for what an entry takes besides its float
 *    buffers (labels, max indices). test_cuda: the table's own memory; test_kernels:
 *    malloc, to the byte, where AddressSanitizer sees an overrun.
 *  - normalize_u8_layout / normalize_u8_call: its mean and std are host arrays
 *    (backend.h); test_kernels passes them as buffers of the case, test_cuda makes
 *    them in the call. */
#ifndef NS_KCASES_H
#define NS_KCASES_H

#include <criterion/criterion.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "error.h"
#include "km_math.h"
#include "testutil.h"

/* ---- one case: an entry, its sizes, its scalars ---- */

struct kcase;

enum role {
    IN,    /* random input; must come back unchanged */
    OUT,   /* forward output, or a gradient with acc = false: starts NaN, must be overwritten */
    INOUT, /* random, updated in place (running stats, optimizer state, gemm's C) */
    ACC,   /* gradient: starts random, must be accumulated into */
};

struct buf {
    const char *name;
    enum role role;
    size_t n;   /* floats; 0: the entry gets NULL */
    float lo, hi;
    bool exact; /* integers stored as floats (max indices, counts): test_cuda wants them exact */
};

enum { MAX_BUFS = 10 };

struct op {
    const char *name;
    /* fills b with the buffers the entry takes, in order; returns how many */
    int (*layout)(const struct kcase *c, struct buf *b);
    /* b: the buffers in be's memory, in layout order */
    void (*call)(const struct backend *be, const struct kcase *c, float **b, void *ws);
    /* be has the entry; NULL there means "not supported by this table" */
    bool (*on)(const struct backend *be);
    bool conv_ws; /* needs conv2d_workspace(&c->cg) bytes of scratch */
};

/* flags of an entry in KCASE_OPS */
enum {
    CONV_WS = 1,  /* it takes a conv workspace */
    OPTIONAL = 2, /* the ops do without it on a table that leaves it NULL (backend.h) */
};

/* every entry of struct backend that computes, with its flags. Criterion runs each
 * case in a fresh process image, where the parent's pointers don't hold, so a case
 * names its entry by index into ops[]. */
#define KCASE_OPS(X)                                                                        \
    X(gemm, 0) X(axpy, 0) X(conv2d_fwd, CONV_WS) X(conv2d_bwd_data, CONV_WS)                \
    X(conv2d_bwd_filter, CONV_WS) X(linear_fwd, 0) X(linear_bwd, 0)                         \
    X(bn_fwd_train, 0) X(bn_fwd_eval, 0) X(bn_bwd, 0)                                       \
    X(bn_relu_fwd_train, OPTIONAL) X(bn_relu_bwd, OPTIONAL) X(relu_fwd, 0) X(relu_bwd, 0)   \
    X(add_fwd, 0) X(maxpool_fwd, 0) X(maxpool_bwd, 0) X(avgpool_fwd, 0) X(avgpool_bwd, 0)   \
    X(gap_fwd, 0) X(gap_bwd, 0) X(softmax_xent_fwd, 0) X(softmax_xent_bwd, 0)               \
    X(argmax_correct, 0) X(normalize_u8, 0) X(sgd_step, 0)

#define OP_ENUM(id, flags) OP_##id,
enum op_id { KCASE_OPS(OP_ENUM) };

struct kcase {
    enum op_id op;
    int d[4];            /* sizes, meaning per op (see each layout) */
    struct conv_geom cg; /* conv ops; oh, ow filled in by case_complete */
    struct pool_geom pg; /* pool ops; oh, ow filled in by case_complete */
    bool ta, tb;         /* gemm */
    bool flag;           /* bias (conv, linear), nesterov (sgd), dx wanted (linear_bwd) */
    bool overwrite;      /* acc = false: the gradient starts as NaN and must be written whole */
    float s[3];          /* scalars per op */
    /* test_cuda's cases only */
    int shift;           /* buffers start this many floats into their block: misaligned */
    bool integers;       /* random inputs rounded down to integers: ties for max, argmax */
    float offset;        /* added to batch norm's x: a mean large against the spread */
};

static void case_complete(struct kcase *c) {
    if (c->cg.n) {
        c->cg.oh = conv_out_size(c->cg.h, c->cg.r, c->cg.stride, c->cg.pad);
        c->cg.ow = conv_out_size(c->cg.w, c->cg.s, c->cg.stride, c->cg.pad);
    }
    if (c->pg.n) {
        c->pg.oh = conv_out_size(c->pg.h, c->pg.size, c->pg.stride, c->pg.pad);
        c->pg.ow = conv_out_size(c->pg.w, c->pg.size, c->pg.stride, c->pg.pad);
    }
}

static const char *case_str(const char *op, const struct kcase *c, char *buf, size_t len) {
    const struct conv_geom *g = &c->cg;
    const struct pool_geom *p = &c->pg;
    int at;
    if (g->n)
        at = snprintf(buf, len, "%s n%d c%d %dx%d k%d %dx%d stride %d pad %d%s", op, g->n, g->c,
                      g->h, g->w, g->k, g->r, g->s, g->stride, g->pad, c->flag ? " +bias" : "");
    else if (p->n)
        at = snprintf(buf, len, "%s n%d c%d %dx%d size %d stride %d pad %d", op, p->n, p->c, p->h,
                      p->w, p->size, p->stride, p->pad);
    else
        at = snprintf(buf, len, "%s [%d,%d,%d,%d] ta%d tb%d flag%d s=(%g,%g,%g)", op, c->d[0],
                      c->d[1], c->d[2], c->d[3], c->ta, c->tb, c->flag, c->s[0], c->s[1], c->s[2]);
    if (at > 0 && (size_t)at < len)
        snprintf(buf + at, len - at, "%s%s%s%s", c->shift ? " misaligned" : "",
                 c->integers ? " integers" : "", c->offset != 0.0f ? " offset" : "",
                 c->overwrite ? " overwrite" : "");
    return buf;
}

#define BUF(name, role, n, lo, hi) ((struct buf){name, role, (size_t)(n), lo, hi, false})

static size_t conv_x_n(const struct conv_geom *g) { return (size_t)g->n * g->c * g->h * g->w; }
static size_t conv_y_n(const struct conv_geom *g) { return (size_t)g->n * g->k * g->oh * g->ow; }
static size_t conv_w_n(const struct conv_geom *g) { return (size_t)g->k * g->c * g->r * g->s; }
static size_t pool_x_n(const struct pool_geom *g) { return (size_t)g->n * g->c * g->h * g->w; }
static size_t pool_y_n(const struct pool_geom *g) { return (size_t)g->n * g->c * g->oh * g->ow; }

/* ---- what the includer defines (see the top) ---- */

static void *table_alloc(const struct backend *be, size_t bytes);
static void table_free(const struct backend *be, void *p);
static int normalize_u8_layout(const struct kcase *c, struct buf *b);
static void normalize_u8_call(const struct backend *be, const struct kcase *c, float **b,
                              void *ws);

/* `bytes` of host data copied into new table_alloc memory; free with table_free */
static void *table_copy_of(const struct backend *be, const void *host, size_t bytes) {
    void *d = table_alloc(be, bytes);
    be->copy(d, host, bytes, COPY_H2D);
    return d;
}

/* int32 labels in [0,k), the same on every call */
static void make_labels(int n, int k, int32_t *labels) {
    uint64_t seed = 0x1abe15;
    for (int i = 0; i < n; i++) labels[i] = (int32_t)(tu_rand_u32(&seed) % (uint32_t)k);
}

/* the same labels, in table_alloc memory */
static int32_t *labels_in(const struct backend *be, int n, int k) {
    int32_t *h = malloc(sizeof(int32_t) * (n ? n : 1));
    make_labels(n, k, h);
    int32_t *d = table_copy_of(be, h, sizeof(int32_t) * n);
    free(h);
    return d;
}

/* ---- the entries: layout + call ---- */

/* gemm: d = (m, n, k), s = (alpha, beta); with beta == 0, C starts as NaN */
static int gemm_layout(const struct kcase *c, struct buf *b) {
    int m = c->d[0], n = c->d[1], k = c->d[2];
    b[0] = BUF("a", IN, m * k, -1, 1);
    b[1] = BUF("b", IN, k * n, -1, 1);
    b[2] = BUF("c", c->s[1] == 0.0f ? OUT : INOUT, m * n, -1, 1);
    return 3;
}
static void gemm_call(const struct backend *be, const struct kcase *c, float **b, void *ws) {
    (void)ws;
    be->gemm(c->ta, c->tb, c->d[0], c->d[1], c->d[2], c->s[0], b[0], b[1], c->s[1], b[2]);
}

/* axpy: d = (n), s = (alpha) */
static int axpy_layout(const struct kcase *c, struct buf *b) {
    b[0] = BUF("x", IN, c->d[0], -1, 1);
    b[1] = BUF("y", ACC, c->d[0], -1, 1);
    return 2;
}
static void axpy_call(const struct backend *be, const struct kcase *c, float **b, void *ws) {
    (void)ws;
    be->axpy((size_t)c->d[0], c->s[0], b[0], b[1]);
}

/* conv: cg, flag = bias */
static int conv2d_fwd_layout(const struct kcase *c, struct buf *b) {
    b[0] = BUF("x", IN, conv_x_n(&c->cg), -1, 1);
    b[1] = BUF("w", IN, conv_w_n(&c->cg), -1, 1);
    b[2] = BUF("bias", IN, c->flag ? c->cg.k : 0, -1, 1);
    b[3] = BUF("y", OUT, conv_y_n(&c->cg), -1, 1);
    return 4;
}
static void conv2d_fwd_call(const struct backend *be, const struct kcase *c, float **b, void *ws) {
    be->conv2d_fwd(&c->cg, b[0], b[1], b[2], b[3], ws);
}
static int conv2d_bwd_data_layout(const struct kcase *c, struct buf *b) {
    b[0] = BUF("dy", IN, conv_y_n(&c->cg), -1, 1);
    b[1] = BUF("w", IN, conv_w_n(&c->cg), -1, 1);
    b[2] = BUF("dx", c->overwrite ? OUT : ACC, conv_x_n(&c->cg), -1, 1);
    return 3;
}
static void conv2d_bwd_data_call(const struct backend *be, const struct kcase *c, float **b,
                                 void *ws) {
    be->conv2d_bwd_data(&c->cg, b[0], b[1], b[2], !c->overwrite, ws);
}
static int conv2d_bwd_filter_layout(const struct kcase *c, struct buf *b) {
    b[0] = BUF("x", IN, conv_x_n(&c->cg), -1, 1);
    b[1] = BUF("dy", IN, conv_y_n(&c->cg), -1, 1);
    b[2] = BUF("dw", ACC, conv_w_n(&c->cg), -1, 1);
    b[3] = BUF("dbias", ACC, c->flag ? c->cg.k : 0, -1, 1);
    return 4;
}
static void conv2d_bwd_filter_call(const struct backend *be, const struct kcase *c, float **b,
                                   void *ws) {
    be->conv2d_bwd_filter(&c->cg, b[0], b[1], b[2], b[3], ws);
}

/* linear: d = (n, in, out), flag = bias (fwd) or dx wanted (bwd) */
static int linear_fwd_layout(const struct kcase *c, struct buf *b) {
    int n = c->d[0], in = c->d[1], out = c->d[2];
    b[0] = BUF("x", IN, n * in, -1, 1);
    b[1] = BUF("w", IN, out * in, -1, 1);
    b[2] = BUF("bias", IN, c->flag ? out : 0, -1, 1);
    b[3] = BUF("y", OUT, n * out, -1, 1);
    return 4;
}
static void linear_fwd_call(const struct backend *be, const struct kcase *c, float **b,
                            void *ws) {
    (void)ws;
    be->linear_fwd(c->d[0], c->d[1], c->d[2], b[0], b[1], b[2], b[3]);
}
static int linear_bwd_layout(const struct kcase *c, struct buf *b) {
    int n = c->d[0], in = c->d[1], out = c->d[2];
    b[0] = BUF("x", IN, n * in, -1, 1);
    b[1] = BUF("w", IN, out * in, -1, 1);
    b[2] = BUF("dy", IN, n * out, -1, 1);
    b[3] = BUF("dx", ACC, c->flag ? n * in : 0, -1, 1);
    b[4] = BUF("dw", ACC, out * in, -1, 1);
    b[5] = BUF("dbias", ACC, out, -1, 1);
    return 6;
}
static void linear_bwd_call(const struct backend *be, const struct kcase *c, float **b,
                            void *ws) {
    (void)ws;
    be->linear_bwd(c->d[0], c->d[1], c->d[2], b[0], b[1], b[2], b[3], b[4], b[5]);
}

/* batch norm: d = (n, c, hw), s = (momentum, eps), offset shifts x */
static int bn_fwd_train_layout(const struct kcase *c, struct buf *b) {
    size_t x = (size_t)c->d[0] * c->d[1] * c->d[2], ch = (size_t)c->d[1];
    b[0] = BUF("x", IN, x, -2 + c->offset, 3 + c->offset);
    b[1] = BUF("gamma", IN, ch, 0.5f, 1.5f);
    b[2] = BUF("beta", IN, ch, -1, 1);
    b[3] = BUF("y", OUT, x, 0, 0);
    b[4] = BUF("mean", OUT, ch, 0, 0);
    b[5] = BUF("invstd", OUT, ch, 0, 0);
    b[6] = BUF("running_mean", INOUT, ch, -1, 1);
    b[7] = BUF("running_var", INOUT, ch, 0.5f, 2);
    return 8;
}
static void bn_fwd_train_call(const struct backend *be, const struct kcase *c, float **b,
                              void *ws) {
    (void)ws;
    be->bn_fwd_train(c->d[0], c->d[1], c->d[2], b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7],
                     c->s[0], c->s[1]);
}
static int bn_fwd_eval_layout(const struct kcase *c, struct buf *b) {
    size_t x = (size_t)c->d[0] * c->d[1] * c->d[2], ch = (size_t)c->d[1];
    b[0] = BUF("x", IN, x, -2, 3);
    b[1] = BUF("gamma", IN, ch, 0.5f, 1.5f);
    b[2] = BUF("beta", IN, ch, -1, 1);
    b[3] = BUF("running_mean", IN, ch, -1, 1);
    b[4] = BUF("running_var", IN, ch, 0.1f, 2);
    b[5] = BUF("y", OUT, x, 0, 0);
    return 6;
}
static void bn_fwd_eval_call(const struct backend *be, const struct kcase *c, float **b, void *ws) {
    (void)ws;
    be->bn_fwd_eval(c->d[0], c->d[1], c->d[2], b[0], b[1], b[2], b[3], b[4], c->s[1], b[5]);
}
static int bn_bwd_layout(const struct kcase *c, struct buf *b) {
    size_t x = (size_t)c->d[0] * c->d[1] * c->d[2], ch = (size_t)c->d[1];
    b[0] = BUF("x", IN, x, -2, 3);
    b[1] = BUF("dy", IN, x, -1, 1);
    b[2] = BUF("gamma", IN, ch, 0.5f, 1.5f);
    b[3] = BUF("mean", IN, ch, -0.5f, 0.5f);
    b[4] = BUF("invstd", IN, ch, 0.5f, 2);
    b[5] = BUF("dx", c->overwrite ? OUT : ACC, x, -1, 1);
    b[6] = BUF("dgamma", ACC, ch, -1, 1);
    b[7] = BUF("dbeta", ACC, ch, -1, 1);
    return 8;
}
static void bn_bwd_call(const struct backend *be, const struct kcase *c, float **b, void *ws) {
    (void)ws;
    be->bn_bwd(c->d[0], c->d[1], c->d[2], b[0], b[1], b[2], b[3], b[4], b[5], !c->overwrite, b[6],
               b[7]);
}

/* batch norm + relu: d = (n, c, hw), s = (momentum, eps), flag = with a residual */
static int bn_relu_fwd_train_layout(const struct kcase *c, struct buf *b) {
    size_t x = (size_t)c->d[0] * c->d[1] * c->d[2], ch = (size_t)c->d[1];
    b[0] = BUF("x", IN, x, -2, 3);
    b[1] = BUF("res", IN, c->flag ? x : 0, -1, 1);
    b[2] = BUF("gamma", IN, ch, 0.5f, 1.5f);
    b[3] = BUF("beta", IN, ch, -1, 1);
    b[4] = BUF("y", OUT, x, 0, 0);
    b[5] = BUF("mean", OUT, ch, 0, 0);
    b[6] = BUF("invstd", OUT, ch, 0, 0);
    b[7] = BUF("running_mean", INOUT, ch, -1, 1);
    b[8] = BUF("running_var", INOUT, ch, 0.5f, 2);
    return 9;
}
static void bn_relu_fwd_train_call(const struct backend *be, const struct kcase *c, float **b,
                                   void *ws) {
    (void)ws;
    be->bn_relu_fwd_train(c->d[0], c->d[1], c->d[2], b[0], b[1], b[2], b[3], b[4], b[5], b[6],
                          b[7], b[8], c->s[0], c->s[1]);
}
/* y takes both signs, as a relu's output never does: the entry may only look at y > 0 */
static int bn_relu_bwd_layout(const struct kcase *c, struct buf *b) {
    size_t x = (size_t)c->d[0] * c->d[1] * c->d[2], ch = (size_t)c->d[1];
    b[0] = BUF("x", IN, x, -2, 3);
    b[1] = BUF("y", IN, x, -1, 1);
    b[2] = BUF("dy", IN, x, -1, 1);
    b[3] = BUF("gamma", IN, ch, 0.5f, 1.5f);
    b[4] = BUF("mean", IN, ch, -0.5f, 0.5f);
    b[5] = BUF("invstd", IN, ch, 0.5f, 2);
    b[6] = BUF("dx", c->overwrite ? OUT : ACC, x, -1, 1);
    b[7] = BUF("dres", c->overwrite ? OUT : ACC, c->flag ? x : 0, -1, 1);
    b[8] = BUF("dgamma", ACC, ch, -1, 1);
    b[9] = BUF("dbeta", ACC, ch, -1, 1);
    return 10;
}
static void bn_relu_bwd_call(const struct backend *be, const struct kcase *c, float **b,
                             void *ws) {
    (void)ws;
    be->bn_relu_bwd(c->d[0], c->d[1], c->d[2], b[0], b[1], b[2], b[3], b[4], b[5], b[6],
                    !c->overwrite, b[7], !c->overwrite, b[8], b[9]);
}

/* elementwise: d = (n) */
static int relu_fwd_layout(const struct kcase *c, struct buf *b) {
    b[0] = BUF("x", IN, c->d[0], -1, 1);
    b[1] = BUF("y", OUT, c->d[0], 0, 0);
    return 2;
}
static void relu_fwd_call(const struct backend *be, const struct kcase *c, float **b, void *ws) {
    (void)ws;
    be->relu_fwd((size_t)c->d[0], b[0], b[1]);
}
static int relu_bwd_layout(const struct kcase *c, struct buf *b) {
    b[0] = BUF("y", IN, c->d[0], -1, 1); /* negatives stand for zeros: both mean "off" */
    b[1] = BUF("dy", IN, c->d[0], -1, 1);
    b[2] = BUF("dx", ACC, c->d[0], -1, 1);
    return 3;
}
static void relu_bwd_call(const struct backend *be, const struct kcase *c, float **b, void *ws) {
    (void)ws;
    be->relu_bwd((size_t)c->d[0], b[0], b[1], b[2]);
}
static int add_fwd_layout(const struct kcase *c, struct buf *b) {
    b[0] = BUF("a", IN, c->d[0], -1, 1);
    b[1] = BUF("b", IN, c->d[0], -1, 1);
    b[2] = BUF("y", OUT, c->d[0], 0, 0);
    return 3;
}
static void add_fwd_call(const struct backend *be, const struct kcase *c, float **b, void *ws) {
    (void)ws;
    be->add_fwd((size_t)c->d[0], b[0], b[1], b[2]);
}


/* pooling: pg. The int32 max indices come back as floats (NaN where unwritten). */
static int maxpool_fwd_layout(const struct kcase *c, struct buf *b) {
    b[0] = BUF("x", IN, pool_x_n(&c->pg), -1, 1);
    b[1] = BUF("y", OUT, pool_y_n(&c->pg), 0, 0);
    b[2] = BUF("idx", OUT, pool_y_n(&c->pg), 0, 0);
    b[2].exact = true;
    return 3;
}
static void maxpool_fwd_call(const struct backend *be, const struct kcase *c, float **b,
                             void *ws) {
    (void)ws;
    size_t n = pool_y_n(&c->pg);
    int32_t *h = calloc(n + 1, sizeof *h);
    float *f = calloc(n + 1, sizeof *f);
    for (size_t i = 0; i < n; i++) h[i] = INT32_MIN;
    int32_t *idx = table_copy_of(be, h, n * sizeof *h);
    be->maxpool_fwd(&c->pg, b[0], b[1], idx);
    be->copy(h, idx, n * sizeof *h, COPY_D2H);
    for (size_t i = 0; i < n; i++) f[i] = h[i] == INT32_MIN ? NAN : (float)h[i];
    be->copy(b[2], f, n * sizeof *f, COPY_H2D);
    table_free(be, idx);
    free(h);
    free(f);
}
static int maxpool_bwd_layout(const struct kcase *c, struct buf *b) {
    b[0] = BUF("x", IN, pool_x_n(&c->pg), -1, 1);
    b[1] = BUF("dy", IN, pool_y_n(&c->pg), -1, 1);
    b[2] = BUF("dx", ACC, pool_x_n(&c->pg), -1, 1);
    return 3;
}
static void maxpool_bwd_call(const struct backend *be, const struct kcase *c, float **b,
                             void *ws) {
    (void)ws;
    size_t n = pool_y_n(&c->pg);
    float *y = table_alloc(be, n * sizeof(float));
    int32_t *idx = table_alloc(be, n * sizeof(int32_t));
    be->maxpool_fwd(&c->pg, b[0], y, idx);
    be->maxpool_bwd(&c->pg, idx, b[1], b[2]);
    table_free(be, y);
    table_free(be, idx);
}
static int avgpool_fwd_layout(const struct kcase *c, struct buf *b) {
    b[0] = BUF("x", IN, pool_x_n(&c->pg), -1, 1);
    b[1] = BUF("y", OUT, pool_y_n(&c->pg), 0, 0);
    return 2;
}
static void avgpool_fwd_call(const struct backend *be, const struct kcase *c, float **b,
                             void *ws) {
    (void)ws;
    be->avgpool_fwd(&c->pg, b[0], b[1]);
}
static int avgpool_bwd_layout(const struct kcase *c, struct buf *b) {
    b[0] = BUF("dy", IN, pool_y_n(&c->pg), -1, 1);
    b[1] = BUF("dx", ACC, pool_x_n(&c->pg), -1, 1);
    return 2;
}
static void avgpool_bwd_call(const struct backend *be, const struct kcase *c, float **b,
                             void *ws) {
    (void)ws;
    be->avgpool_bwd(&c->pg, b[0], b[1]);
}

/* global average pool: d = (n, c, hw) */
static int gap_fwd_layout(const struct kcase *c, struct buf *b) {
    b[0] = BUF("x", IN, c->d[0] * c->d[1] * c->d[2], -1, 1);
    b[1] = BUF("y", OUT, c->d[0] * c->d[1], 0, 0);
    return 2;
}
static void gap_fwd_call(const struct backend *be, const struct kcase *c, float **b, void *ws) {
    (void)ws;
    be->gap_fwd(c->d[0], c->d[1], c->d[2], b[0], b[1]);
}
static int gap_bwd_layout(const struct kcase *c, struct buf *b) {
    b[0] = BUF("dy", IN, c->d[0] * c->d[1], -1, 1);
    b[1] = BUF("dx", ACC, c->d[0] * c->d[1] * c->d[2], -1, 1);
    return 2;
}
static void gap_bwd_call(const struct backend *be, const struct kcase *c, float **b, void *ws) {
    (void)ws;
    be->gap_bwd(c->d[0], c->d[1], c->d[2], b[0], b[1]);
}

/* loss: d = (n, k) */
static int softmax_xent_fwd_layout(const struct kcase *c, struct buf *b) {
    b[0] = BUF("logits", IN, c->d[0] * c->d[1], -5, 5);
    b[1] = BUF("probs", OUT, c->d[0] * c->d[1], 0, 0);
    b[2] = BUF("loss", OUT, 1, 0, 0);
    return 3;
}
static void softmax_xent_fwd_call(const struct backend *be, const struct kcase *c, float **b,
                                  void *ws) {
    (void)ws;
    int32_t *labels = labels_in(be, c->d[0], c->d[1]);
    be->softmax_xent_fwd(c->d[0], c->d[1], b[0], labels, b[1], b[2]);
    table_free(be, labels);
}
static int softmax_xent_bwd_layout(const struct kcase *c, struct buf *b) {
    b[0] = BUF("probs", IN, c->d[0] * c->d[1], 0, 1);
    b[1] = BUF("dloss", IN, 1, 0.5f, 2);
    b[2] = BUF("dlogits", ACC, c->d[0] * c->d[1], -1, 1);
    return 3;
}
static void softmax_xent_bwd_call(const struct backend *be, const struct kcase *c, float **b,
                                  void *ws) {
    (void)ws;
    int32_t *labels = labels_in(be, c->d[0], c->d[1]);
    be->softmax_xent_bwd(c->d[0], c->d[1], b[0], labels, b[1], b[2]);
    table_free(be, labels);
}
static int argmax_correct_layout(const struct kcase *c, struct buf *b) {
    b[0] = BUF("logits", IN, c->d[0] * c->d[1], -1, 1);
    b[1] = BUF("correct", OUT, 1, 0, 0);
    b[1].exact = true;
    return 2;
}
static void argmax_correct_call(const struct backend *be, const struct kcase *c, float **b,
                                void *ws) {
    (void)ws;
    int32_t *labels = labels_in(be, c->d[0], c->d[1]);
    be->argmax_correct(c->d[0], c->d[1], b[0], labels, b[1]);
    table_free(be, labels);
}

/* sgd_step: d = (n), s = (lr, momentum, weight_decay), flag = nesterov */
static int sgd_step_layout(const struct kcase *c, struct buf *b) {
    b[0] = BUF("w", INOUT, c->d[0], -1, 1);
    b[1] = BUF("g", IN, c->d[0], -1, 1);
    b[2] = BUF("v", INOUT, c->d[0], -1, 1);
    return 3;
}
static void sgd_step_call(const struct backend *be, const struct kcase *c, float **b, void *ws) {
    (void)ws;
    be->sgd_step((size_t)c->d[0], b[0], b[1], b[2], c->s[0], c->s[1], c->flag, c->s[2]);
}

#define OP_ON(id, flags) \
    static bool id##_on(const struct backend *be) { return be->id != NULL; }
KCASE_OPS(OP_ON)

#define OP_ENTRY(id, flags) \
    [OP_##id] = {#id, id##_layout, id##_call, id##_on, ((flags) & CONV_WS) != 0},
static const struct op ops[] = {KCASE_OPS(OP_ENTRY)};

static const struct op *op_of(const struct kcase *c) { return &ops[c->op]; }

/* ---- entries a table doesn't support ---- */

/* The tables of all[n] that have o's entry go to have[] (their count is returned);
 * the names of those that leave it NULL to `lacking` ("" when none does). */
static int tables_with(const struct op *o, const struct backend *const *all, int n,
                       const struct backend **have, char *lacking, size_t len) {
    int k = 0;
    lacking[0] = '\0';
    for (int i = 0; i < n; i++) {
        size_t at = strlen(lacking);
        if (o->on(all[i])) have[k++] = all[i];
        else snprintf(lacking + at, len - at, "%s%s", at ? " and " : "", all[i]->name);
    }
    return k;
}

/* Ends the test as skipped: `op` is NULL on `lacking`. What ran before on other
 * tables keeps its verdict: a failed expectation still fails the test. test-emu.sh
 * tells these skips from the others by "not supported by". */
static void skip_unsupported(const char *op, const char *lacking) {
    cr_skip_test("%s is NULL on %s: not supported by that table (backend.h)", op, lacking);
}

/* Criterion lists skipped tests only with --verbose, and not in its synthesis: a
 * suite's POST_ALL hook calls this to name each one with its reason. (A test left
 * out by --filter counts as skipped too, with no reason: those aren't named.) */
static void report_skips(const char *suite, const struct criterion_global_stats *stats) {
    for (const struct criterion_suite_stats *s = stats->suites; s; s = s->next)
        for (const struct criterion_test_stats *t = s->tests; t; t = t->next)
            if (t->test_status == CR_STATUS_SKIPPED && t->message)
                printf("[SKIP] %s: %s::%s: %s\n", suite, t->test->category, t->test->name,
                       t->message);
}

/* Every memory entry and every entry a training step calls is filled; `all`: the
 * optional ones too (the CPU tables are the reference: they have every entry). */
static void expect_entries(const struct backend *be, bool all) {
    cr_expect(be->alloc && be->free && be->zero && be->copy && be->sync && be->conv2d_workspace,
              "%s lacks a memory entry", be->name);
#define EXPECT_ENTRY(id, flags) \
    cr_expect(be->id != NULL || (!all && ((flags) & OPTIONAL)), "%s lacks " #id, be->name);
    KCASE_OPS(EXPECT_ENTRY)
#undef EXPECT_ENTRY
}

/* ---- the case tables ---- */

#define GEMM(m, n, k, ta_, tb_, alpha, beta) \
    {.op = OP_gemm, .d = {m, n, k}, .ta = ta_, .tb = tb_, .s = {alpha, beta}}
#define SIZED(op_, a, b, c_, d_) {.op = OP_##op_, .d = {a, b, c_, d_}}
/* every geometry for all three conv entries, with and without bias; dx added to
 * and overwritten */
#define CONV_GEOM(n, c, h, w, k, r, s, st, pad) .cg = {n, c, h, w, k, r, s, st, pad, 0, 0}
#define CONV(...)                                                          \
    {.op = OP_conv2d_fwd, CONV_GEOM(__VA_ARGS__)},                         \
    {.op = OP_conv2d_fwd, CONV_GEOM(__VA_ARGS__), .flag = true},           \
    {.op = OP_conv2d_bwd_data, CONV_GEOM(__VA_ARGS__)},                    \
    {.op = OP_conv2d_bwd_data, CONV_GEOM(__VA_ARGS__), .overwrite = true}, \
    {.op = OP_conv2d_bwd_filter, CONV_GEOM(__VA_ARGS__)},                  \
    {.op = OP_conv2d_bwd_filter, CONV_GEOM(__VA_ARGS__), .flag = true}
/* with and without bias; backward with and without dx */
#define LINEAR(n, in, out)                                                 \
    {.op = OP_linear_fwd, .d = {n, in, out}},                              \
    {.op = OP_linear_fwd, .d = {n, in, out}, .flag = true},                \
    {.op = OP_linear_bwd, .d = {n, in, out}},                              \
    {.op = OP_linear_bwd, .d = {n, in, out}, .flag = true}
#define BN(n, c, hw)                                                       \
    {.op = OP_bn_fwd_train, .d = {n, c, hw}, .s = {0.1f, 1e-5f}},          \
    {.op = OP_bn_fwd_eval, .d = {n, c, hw}, .s = {0.1f, 1e-5f}},           \
    {.op = OP_bn_bwd, .d = {n, c, hw}},                                    \
    {.op = OP_bn_bwd, .d = {n, c, hw}, .overwrite = true}
/* with and without the residual; gradients added to and overwritten */
#define BN_RELU(n, c, hw)                                                             \
    {.op = OP_bn_relu_fwd_train, .d = {n, c, hw}, .s = {0.1f, 1e-5f}},               \
    {.op = OP_bn_relu_fwd_train, .d = {n, c, hw}, .s = {0.1f, 1e-5f}, .flag = true}, \
    {.op = OP_bn_relu_bwd, .d = {n, c, hw}},                                         \
    {.op = OP_bn_relu_bwd, .d = {n, c, hw}, .flag = true},                           \
    {.op = OP_bn_relu_bwd, .d = {n, c, hw}, .overwrite = true},                      \
    {.op = OP_bn_relu_bwd, .d = {n, c, hw}, .flag = true, .overwrite = true}
#define POOL_GEOM(n, c, h, w, size, st, pad) .pg = {n, c, h, w, size, st, pad, 0, 0}
#define POOL(...)                                                          \
    {.op = OP_maxpool_fwd, POOL_GEOM(__VA_ARGS__)},                        \
    {.op = OP_maxpool_bwd, POOL_GEOM(__VA_ARGS__)},                        \
    {.op = OP_avgpool_fwd, POOL_GEOM(__VA_ARGS__)},                        \
    {.op = OP_avgpool_bwd, POOL_GEOM(__VA_ARGS__)}
#define LOSS(n, k)                                                         \
    SIZED(softmax_xent_fwd, n, k, 0, 0),                                   \
    SIZED(softmax_xent_bwd, n, k, 0, 0), SIZED(argmax_correct, n, k, 0, 0)
#define SGD(n, lr, momentum, wd, nesterov) \
    {.op = OP_sgd_step, .d = {n}, .s = {lr, momentum, wd}, .flag = nesterov}

/* The cases both suites run, every entry of KCASE_OPS on small and odd shapes; each
 * suite's table starts with these and adds its own. A table without an entry skips
 * its cases (skip_unsupported). */
#define KCASES_SHARED                                                                    \
    GEMM(1, 1, 1, false, false, 1, 0),                                                   \
    GEMM(5, 7, 3, false, false, 1, 0),                                                   \
    GEMM(5, 7, 3, true, false, -1.5f, 0.5f),                                             \
    GEMM(4, 9, 6, false, true, 1, 0),                                                    \
    GEMM(7, 3, 11, true, true, 0.7f, 1),                                                 \
    GEMM(33, 17, 65, false, false, 1, 0.3f),                                             \
    GEMM(3, 4, 0, false, false, 1, 0), /* k = 0: C = 0 */                                \
    {.op = OP_axpy, .d = {1}, .s = {2}},                                                 \
    {.op = OP_axpy, .d = {1003}, .s = {-0.75f}},                                         \
    /*   n  c   h   w  k  r  s st pad */                                                 \
    CONV(1, 1,  5,  5, 1, 3, 3, 1, 1),                                                   \
    CONV(3, 3,  7,  9, 4, 3, 3, 2, 1),                                                   \
    CONV(3, 2,  8,  6, 5, 1, 1, 1, 0), /* pointwise: no im2col */                        \
    CONV(1, 5,  6,  6, 4, 1, 1, 1, 0), /* pointwise, batch 1 */                          \
    CONV(1, 4,  9,  7, 3, 1, 1, 2, 0), /* the resnet shortcut */                         \
    CONV(3, 3, 11, 10, 2, 5, 5, 1, 2),                                                   \
    CONV(3, 2,  6,  7, 3, 5, 3, 2, 2),                                                   \
    CONV(1, 2,  4,  5, 3, 3, 3, 2, 2), /* pad wider than half the kernel */              \
    CONV(3, 3,  5,  5, 2, 3, 3, 1, 0),                                                   \
    CONV(3, 2,  7,  7, 4, 3, 3, 2, 0),                                                   \
    /* big enough for the vectorized CPU kernels to go parallel over the batch */        \
    CONV(3, 16, 13, 13, 8, 3, 3, 1, 1),                                                  \
    CONV(3, 16, 20, 20, 16, 1, 1, 1, 0),                                                 \
    CONV(3, 8, 15, 17, 8, 5, 5, 2, 2),                                                   \
    LINEAR(1, 1, 1),                                                                     \
    LINEAR(3, 7, 5),                                                                     \
    LINEAR(5, 33, 10),                                                                   \
    BN(1, 1, 7),                                                                         \
    BN(2, 3, 1),                                                                         \
    BN(3, 4, 5),                                                                         \
    BN(3, 16, 49),                                                                       \
    BN(8, 16, 784), /* parallel over channels */                                         \
    BN_RELU(1, 1, 7),                                                                    \
    BN_RELU(3, 4, 5),                                                                    \
    BN_RELU(3, 16, 49),                                                                  \
    BN_RELU(8, 16, 784),                                                                 \
    SIZED(relu_fwd, 1, 0, 0, 0), SIZED(relu_fwd, 1001, 0, 0, 0),                         \
    SIZED(relu_bwd, 1, 0, 0, 0), SIZED(relu_bwd, 1001, 0, 0, 0),                         \
    SIZED(add_fwd, 1, 0, 0, 0), SIZED(add_fwd, 1001, 0, 0, 0),                           \
    /*   n  c  h  w size st pad */                                                       \
    POOL(1, 1, 4, 4, 2, 2, 0),                                                           \
    POOL(3, 2, 7, 9, 3, 2, 1),                                                           \
    POOL(3, 3, 5, 5, 3, 1, 1),                                                           \
    POOL(1, 2, 6, 5, 2, 1, 0),                                                           \
    POOL(3, 2, 7, 7, 3, 3, 0), /* the last row and column fall outside every window */   \
    POOL(1, 2, 6, 6, 5, 2, 2),                                                           \
    POOL(8, 16, 28, 28, 3, 2, 1), /* parallel over planes */                             \
    SIZED(gap_fwd, 1, 1, 1, 0), SIZED(gap_bwd, 1, 1, 1, 0),                              \
    SIZED(gap_fwd, 3, 5, 49, 0), SIZED(gap_bwd, 3, 5, 49, 0),                            \
    SIZED(gap_fwd, 2, 3, 7, 0), SIZED(gap_bwd, 2, 3, 7, 0),                              \
    LOSS(1, 1),                                                                          \
    LOSS(1, 3),                                                                          \
    LOSS(3, 10),                                                                         \
    LOSS(5, 7),                                                                          \
    SIZED(normalize_u8, 1, 2, 3, 1),                                                     \
    SIZED(normalize_u8, 3, 5, 7, 3),                                                     \
    SIZED(normalize_u8, 2, 28, 28, 1),                                                   \
    SIZED(normalize_u8, 32, 32, 32, 3), /* parallel over images */                       \
    SGD(1003, 0.1f, 0.9f, 5e-4f, true),                                                  \
    SGD(1003, 0.1f, 0.9f, 5e-4f, false),                                                 \
    SGD(7, 0.5f, 0, 0, false)

/* ---- one case run on one table ---- */

struct run {
    int nb;
    struct buf spec[MAX_BUFS];
    float *data[MAX_BUFS];  /* what the entry left, on the host */
    float *start[MAX_BUFS]; /* what it got, kept aside */
    /* test_cuda's runs only: the guard zones after the buffers and the workspace */
    bool guard_ok[MAX_BUFS];
    bool ws_guard_ok;
};

/* the seed of a case's random inputs: the same on every table and in every run */
static uint64_t case_seed(const struct kcase *c) {
    char name[256];
    uint64_t h = 1469598103934665603ull; /* FNV-1a of the description */
    for (const char *p = case_str(op_of(c)->name, c, name, sizeof name); *p; p++)
        h = (h ^ (uint8_t)*p) * 1099511628211ull;
    return h | 1; /* xorshift must not start at 0 */
}

static void run_free(struct run *r) {
    for (int i = 0; i < r->nb; i++) {
        free(r->data[i]);
        free(r->start[i]);
    }
}

/* how far a table may stray from the reference, relative (tu_max_rel_err) */
static const double AGREE_TOL = 1e-4;

#endif
