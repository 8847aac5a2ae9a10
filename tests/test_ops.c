/* test_ops.c — every differentiable op, through the tape, on both CPU flavours:
 *  1. central finite differences agree with the analytic gradient of every input;
 *  2. the loop and vectorized flavours agree on the output and every gradient (1e-4).
 * One table of cases, looped over. */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "fixtures/flavours.h"
#include "ops.h"
#include "testutil.h"

#define MAX_IN 6

struct gc_case {
    const char *name;
    int n_in;
    int ndim[MAX_IN];
    int shape[MAX_IN][4];
    bool no_grad[MAX_IN];         /* inputs we don't differentiate (labels live outside) */
    enum { VALUES_SMOOTH, VALUES_AWAY_FROM_ZERO, VALUES_DISTINCT, VALUES_BN_RELU } values;
    struct tensor *(*fwd)(struct ag_ctx *c, struct tensor **in);
};

static const int32_t xent_labels[5] = {3, 0, 6, 6, 1};

static struct tensor *f_conv_s1p1(struct ag_ctx *c, struct tensor **in) { return op_conv2d(c, in[0], in[1], in[2], 1, 1); }
static struct tensor *f_conv_s2p0(struct ag_ctx *c, struct tensor **in) { return op_conv2d(c, in[0], in[1], NULL, 2, 0); }
static struct tensor *f_conv_k5p2(struct ag_ctx *c, struct tensor **in) { return op_conv2d(c, in[0], in[1], in[2], 1, 2); }
static struct tensor *f_conv_1x1s2(struct ag_ctx *c, struct tensor **in) { return op_conv2d(c, in[0], in[1], NULL, 2, 0); }
static struct tensor *f_linear(struct ag_ctx *c, struct tensor **in) { return op_linear(c, in[0], in[1], in[2]); }
static struct tensor *f_bn(struct ag_ctx *c, struct tensor **in) {
    return op_batchnorm2d(c, in[0], in[1], in[2], in[3], in[4], 0.1f, 1e-5f);
}
static struct tensor *f_bn_relu(struct ag_ctx *c, struct tensor **in) {
    return op_batchnorm2d_relu(c, in[0], NULL, in[1], in[2], in[3], in[4], 0.1f, 1e-5f);
}
static struct tensor *f_bn_add_relu(struct ag_ctx *c, struct tensor **in) {
    return op_batchnorm2d_relu(c, in[0], in[5], in[1], in[2], in[3], in[4], 0.1f, 1e-5f);
}
static struct tensor *f_relu(struct ag_ctx *c, struct tensor **in) { return op_relu(c, in[0]); }
static struct tensor *f_add(struct ag_ctx *c, struct tensor **in) { return op_add(c, in[0], in[1]); }
static struct tensor *f_max2(struct ag_ctx *c, struct tensor **in) { return op_maxpool2d(c, in[0], 2, 2, 0); }
static struct tensor *f_max3p1(struct ag_ctx *c, struct tensor **in) { return op_maxpool2d(c, in[0], 3, 2, 1); }
static struct tensor *f_avg2(struct ag_ctx *c, struct tensor **in) { return op_avgpool2d(c, in[0], 2, 2, 0); }
static struct tensor *f_avg3p1(struct ag_ctx *c, struct tensor **in) { return op_avgpool2d(c, in[0], 3, 2, 1); }
static struct tensor *f_gap(struct ag_ctx *c, struct tensor **in) { return op_global_avgpool(c, in[0]); }
static struct tensor *f_flatten(struct ag_ctx *c, struct tensor **in) { return op_flatten(c, in[0]); }
static struct tensor *f_xent(struct ag_ctx *c, struct tensor **in) { return op_softmax_xent(c, in[0], xent_labels); }

static const struct gc_case cases[] = {
    {"conv2d 3x3 s1 p1 bias, batch 3", 3, {4, 4, 1}, {{3, 3, 7, 6}, {4, 3, 3, 3}, {4}}, {0}, VALUES_SMOOTH, f_conv_s1p1},
    {"conv2d 3x3 s2 p0 no bias, batch 1", 2, {4, 4}, {{1, 2, 9, 9}, {3, 2, 3, 3}}, {0}, VALUES_SMOOTH, f_conv_s2p0},
    {"conv2d 5x5 s1 p2 bias, odd sizes", 3, {4, 4, 1}, {{2, 2, 6, 5}, {2, 2, 5, 5}, {2}}, {0}, VALUES_SMOOTH, f_conv_k5p2},
    {"conv2d 1x1 s2 (shortcut)", 2, {4, 4}, {{3, 4, 7, 7}, {5, 4, 1, 1}}, {0}, VALUES_SMOOTH, f_conv_1x1s2},
    /* resnet_small's widths: more output channels than one SIMD vector holds */
    {"conv2d 3x3 s2 16->32 (resnet stage)", 2, {4, 4}, {{2, 16, 9, 9}, {32, 16, 3, 3}}, {0}, VALUES_SMOOTH, f_conv_s2p0},
    {"conv2d 1x1 s2 32->64 (resnet shortcut)", 2, {4, 4}, {{2, 32, 7, 7}, {64, 32, 1, 1}}, {0}, VALUES_SMOOTH, f_conv_1x1s2},
    {"conv2d 3x3 s1 p1 48->40 bias (odd widths)", 3, {4, 4, 1}, {{1, 48, 5, 6}, {40, 48, 3, 3}, {40}}, {0}, VALUES_SMOOTH, f_conv_s1p1},
    {"linear", 3, {2, 2, 1}, {{3, 7}, {5, 7}, {5}}, {0}, VALUES_SMOOTH, f_linear},
    {"batchnorm2d (training)", 5, {4, 1, 1, 1, 1}, {{3, 4, 5, 3}, {4}, {4}, {4}, {4}}, {0, 0, 0, 1, 1},
     VALUES_SMOOTH, f_bn},
    {"batchnorm2d + relu (fused)", 5, {4, 1, 1, 1, 1}, {{3, 4, 5, 3}, {4}, {4}, {4}, {4}},
     {0, 0, 0, 1, 1}, VALUES_BN_RELU, f_bn_relu},
    {"batchnorm2d + residual + relu (fused)", 6, {4, 1, 1, 1, 1, 4},
     {{2, 3, 4, 5}, {3}, {3}, {3}, {3}, {2, 3, 4, 5}}, {0, 0, 0, 1, 1, 0}, VALUES_BN_RELU, f_bn_add_relu},
    {"relu", 1, {4}, {{2, 3, 4, 5}}, {0}, VALUES_AWAY_FROM_ZERO, f_relu},
    {"add", 2, {4, 4}, {{3, 2, 3, 5}, {3, 2, 3, 5}}, {0}, VALUES_SMOOTH, f_add},
    {"maxpool2d 2/2", 1, {4}, {{3, 2, 6, 7}}, {0}, VALUES_DISTINCT, f_max2},
    {"maxpool2d 3/2 pad 1", 1, {4}, {{1, 3, 7, 5}}, {0}, VALUES_DISTINCT, f_max3p1},
    {"avgpool2d 2/2", 1, {4}, {{3, 2, 6, 7}}, {0}, VALUES_SMOOTH, f_avg2},
    {"avgpool2d 3/2 pad 1", 1, {4}, {{1, 3, 7, 5}}, {0}, VALUES_SMOOTH, f_avg3p1},
    {"global_avgpool", 1, {4}, {{3, 4, 5, 5}}, {0}, VALUES_SMOOTH, f_gap},
    {"flatten", 1, {4}, {{3, 2, 3, 3}}, {0}, VALUES_SMOOTH, f_flatten},
    {"softmax_xent", 1, {2}, {{5, 7}}, {0}, VALUES_SMOOTH, f_xent},
};
#define N_CASES (int)(sizeof cases / sizeof cases[0])

/* What one flavour computed for one case: output and each input's gradient, on the host. */
struct result {
    float *out;
    size_t out_n;
    float *grad[MAX_IN];
    size_t in_n[MAX_IN];
};

static void fill_inputs(const struct gc_case *k, uint64_t seed, float **host, size_t *n) {
    uint64_t s = seed;
    for (int i = 0; i < k->n_in; i++) {
        n[i] = tensor_numel(k->ndim[i], k->shape[i]);
        host[i] = malloc(n[i] * sizeof(float));
        tu_fill(&s, host[i], n[i], -1.0f, 1.0f);
        if (k->values == VALUES_AWAY_FROM_ZERO)
            for (size_t j = 0; j < n[i]; j++) host[i][j] += host[i][j] < 0 ? -0.1f : 0.1f;
        if (k->values == VALUES_DISTINCT) {  /* a shuffled ramp: neighbours differ by >= 0.05 */
            for (size_t j = 0; j < n[i]; j++) host[i][j] = 0.05f * (float)j - 1.0f;
            for (size_t j = n[i] - 1; j > 0; j--) {
                size_t r = tu_rand_u32(&s) % (j + 1);
                float t = host[i][j]; host[i][j] = host[i][r]; host[i][r] = t;
            }
        }
    }
    /* BN then relu: finite differences must not step across the relu's kink, so the
     * normalized x stays away from 0 (x away from the channel mean, gamma >= 0.5) by
     * more than beta and the residual can move it */
    if (k->values == VALUES_BN_RELU) {
        for (size_t j = 0; j < n[0]; j++) host[0][j] += host[0][j] < 0 ? -0.5f : 0.5f;
        for (size_t j = 0; j < n[1]; j++) host[1][j] = 1.0f + 0.5f * host[1][j];
        for (size_t j = 0; j < n[2]; j++) host[2][j] *= 0.05f;
        if (k->n_in > 5)
            for (size_t j = 0; j < n[5]; j++) host[5][j] *= 0.03f;
    }
    /* BN: variance inputs must be positive */
    if (k->fwd == f_bn || k->fwd == f_bn_relu || k->fwd == f_bn_add_relu)
        for (size_t j = 0; j < n[4]; j++) host[4][j] = 1.0f + host[4][j] * host[4][j];
}

/* sum(out * r) in double: the scalar whose gradient we check */
static double weighted_sum(const struct tensor *out, const float *r) {
    double s = 0;
    for (size_t i = 0; i < out->numel; i++) s += (double)out->data[i] * r[i];
    return s;
}

static void run_case(const struct gc_case *k, const struct backend *be, struct result *res) {
    float *host[MAX_IN];
    size_t n[MAX_IN];
    fill_inputs(k, 42, host, n);

    struct ag_ctx c;
    cr_assert_eq(ag_ctx_init(&c, be), 0);
    struct tensor *in[MAX_IN] = {0};
    for (int i = 0; i < k->n_in; i++) {
        in[i] = tensor_new(be, k->ndim[i], k->shape[i]);
        cr_assert_not_null(in[i], "%s: %s", k->name, err_get());
        memcpy(in[i]->data, host[i], n[i] * sizeof(float));
        in[i]->requires_grad = !k->no_grad[i];
    }

    /* analytic: backward from out with upstream gradient r */
    struct tensor *out = k->fwd(&c, in);
    cr_assert_not_null(out, "%s (%s): %s", k->name, be->name, err_get());
    uint64_t s = 7;
    struct tensor *r = tensor_arena(&c.arena, out->ndim, out->shape);
    tu_fill(&s, r->data, r->numel, -1.0f, 1.0f);
    float *rcopy = malloc(r->numel * sizeof(float));
    memcpy(rcopy, r->data, r->numel * sizeof(float));
    res->out_n = out->numel;
    res->out = malloc(out->numel * sizeof(float));
    memcpy(res->out, out->data, out->numel * sizeof(float));
    cr_assert_eq(ag_backward_from(&c, out, r), 0, "%s (%s): %s", k->name, be->name, err_get());
    for (int i = 0; i < k->n_in; i++) {
        res->in_n[i] = n[i];
        res->grad[i] = NULL;
        if (k->no_grad[i]) continue;
        cr_assert_not_null(in[i]->grad, "%s (%s): input %d got no gradient", k->name, be->name, i);
        res->grad[i] = malloc(n[i] * sizeof(float));
        memcpy(res->grad[i], in[i]->grad->data, n[i] * sizeof(float));
    }
    ag_reset(&c);

    /* numeric: central differences on up to 24 coordinates of every input */
    const float eps = 5e-3f;
    c.grad_enabled = false;
    for (int i = 0; i < k->n_in; i++) {
        in[i]->grad = NULL;
        if (k->no_grad[i]) continue;
        size_t step = n[i] > 24 ? n[i] / 24 : 1;
        for (size_t j = (size_t)i % step; j < n[i]; j += step) {
            float keep = in[i]->data[j];
            in[i]->data[j] = keep + eps;
            double fp = weighted_sum(k->fwd(&c, in), rcopy);
            ag_reset(&c);
            in[i]->data[j] = keep - eps;
            double fm = weighted_sum(k->fwd(&c, in), rcopy);
            ag_reset(&c);
            in[i]->data[j] = keep;
            double numeric = (fp - fm) / (2.0 * eps), analytic = res->grad[i][j];
            double tol = 2e-3 + 5e-3 * fmax(fabs(numeric), fabs(analytic));
            cr_expect(fabs(numeric - analytic) <= tol,
                      "%s (%s): d/d input%d[%zu]: analytic %.6f, finite difference %.6f", k->name,
                      be->name, i, j, analytic, numeric);
        }
    }
    for (int i = 0; i < k->n_in; i++) { tensor_free(be, in[i]); free(host[i]); }
    free(rcopy);
    ag_ctx_free(&c);
}

static void free_result(struct result *r, int n_in) {
    free(r->out);
    for (int i = 0; i < n_in; i++) free(r->grad[i]);
}

Test(ops, gradients_match_finite_differences_and_flavours_agree) {
    for (int ci = 0; ci < N_CASES; ci++) {
        const struct gc_case *k = &cases[ci];
        struct result loop, vec;
        run_case(k, &cpu_loop_backend, &loop);
        run_case(k, &cpu_vectorized_backend, &vec);
        cr_expect_eq(loop.out_n, vec.out_n);
        double e = tu_max_rel_err(loop.out, vec.out, loop.out_n);
        cr_expect(e <= 1e-4, "%s: loop and vectorized outputs differ by %g", k->name, e);
        for (int i = 0; i < k->n_in; i++) {
            if (k->no_grad[i]) continue;
            e = tu_max_rel_err(loop.grad[i], vec.grad[i], loop.in_n[i]);
            cr_expect(e <= 1e-4, "%s: loop and vectorized gradients of input %d differ by %g", k->name, i, e);
        }
        free_result(&loop, k->n_in);
        free_result(&vec, k->n_in);
    }
}

/* A table without the fused bn_relu entries (a device that lacks them) gets the same
 * function, and the same gradients, from the separate ops. */
Test(ops, batchnorm2d_relu_without_the_fused_entries) {
    struct backend plain = cpu_vectorized_backend;
    plain.bn_relu_fwd_train = NULL;
    plain.bn_relu_bwd = NULL;
    for (int ci = 0; ci < N_CASES; ci++) {
        const struct gc_case *k = &cases[ci];
        if (k->fwd != f_bn_relu && k->fwd != f_bn_add_relu) continue;
        struct result fused, composed;
        run_case(k, &cpu_vectorized_backend, &fused);
        run_case(k, &plain, &composed);
        double e = tu_max_rel_err(fused.out, composed.out, fused.out_n);
        cr_expect(e <= 1e-5, "%s: fused and composed outputs differ by %g", k->name, e);
        for (int i = 0; i < k->n_in; i++) {
            if (k->no_grad[i]) continue;
            e = tu_max_rel_err(fused.grad[i], composed.grad[i], fused.in_n[i]);
            cr_expect(e <= 1e-5, "%s: fused and composed gradients of input %d differ by %g", k->name, i, e);
        }
        free_result(&fused, k->n_in);
        free_result(&composed, k->n_in);
    }
}

/* ---- errors ---- */

Test(ops, errors_name_the_op_and_the_shapes, .init = setup_flavours) {
    struct ag_ctx c;
    ag_ctx_init(&c, flavours[1]);
    struct tensor *x = host_tensor(c.be, 4, (int[]){2, 3, 5, 5}, 1);
    struct tensor *w = host_tensor(c.be, 4, (int[]){4, 2, 3, 3}, 2);
    cr_expect_null(op_conv2d(&c, x, w, NULL, 1, 1));
    cr_expect(strstr(err_get(), "conv2d") && strstr(err_get(), "[2,3,5,5]") && strstr(err_get(), "[4,2,3,3]"),
              "message: %s", err_get());
    struct tensor *flat = host_tensor(c.be, 2, (int[]){2, 6}, 3);
    cr_expect_null(op_conv2d(&c, flat, w, NULL, 1, 1));
    cr_expect(strstr(err_get(), "rank 2") && strstr(err_get(), "expected rank 4"), "message: %s", err_get());
    struct tensor *lw = host_tensor(c.be, 2, (int[]){3, 5}, 4);
    cr_expect_null(op_linear(&c, flat, lw, NULL));
    cr_expect(strstr(err_get(), "linear") && strstr(err_get(), "[2,6]") && strstr(err_get(), "[3,5]"),
              "message: %s", err_get());
    tensor_free(c.be, lw);
    cr_expect_null(op_add(&c, x, flat));
    cr_expect(strstr(err_get(), "add") && strstr(err_get(), "[2,3,5,5]") && strstr(err_get(), "[2,6]"),
              "message: %s", err_get());
    cr_expect_null(op_maxpool2d(&c, x, 7, 1, 0));
    cr_expect(strstr(err_get(), "maxpool2d"), "message: %s", err_get());
    cr_expect_null(tensor_new(c.be, 2, (int[]){3, 0}));
    cr_expect(strstr(err_get(), "[3,0]") && strstr(err_get(), "dimension"), "message: %s", err_get());
    cr_expect_null(tensor_new(c.be, 5, (int[]){1, 1, 1, 1, 1}));
    cr_expect(strstr(err_get(), "5 dimensions"), "message: %s", err_get());
    tensor_free(c.be, x);
    tensor_free(c.be, w);
    tensor_free(c.be, flat);
    ag_ctx_free(&c);
}
