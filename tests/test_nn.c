/* test_nn.c — layers and models on both CPU flavours: batch norm against the textbook,
 * a residual block's gradient, a tiny net that learns (and an arena that stops
 * allocating), the layer table's shape errors, the cnn layer grammar (models/cnn.c). */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "fixtures/flavours.h"
#include "models.h"
#include "nn.h"
#include "ops.h"
#include "optim.h"

Test(nn, batchnorm_running_stats_and_eval_match_the_textbook, .init = setup_flavours) {
    for (int f = 0; f < 2; f++) {
        struct ag_ctx c;
        ag_ctx_init(&c, flavours[f]);
        const int n = 3, ch = 2, hw = 4;
        struct tensor *x = host_tensor(c.be, 4, (int[]){n, ch, 2, 2}, 5);
        struct tensor *gamma = host_tensor(c.be, 1, &ch, 6), *beta = host_tensor(c.be, 1, &ch, 7);
        struct tensor *rm = host_tensor(c.be, 1, &ch, 8), *rv = tensor_new(c.be, 1, &ch);
        rv->data[0] = 1.5f;
        rv->data[1] = 0.5f;
        float rm0[2] = {rm->data[0], rm->data[1]}, rv0[2] = {rv->data[0], rv->data[1]};
        struct tensor *y = op_batchnorm2d(&c, x, gamma, beta, rm, rv, 0.1f, 1e-5f);
        cr_assert_not_null(y, "%s", err_get());
        for (int k = 0; k < ch; k++) {
            double mean = 0, var = 0;
            for (int i = 0; i < n; i++) for (int j = 0; j < hw; j++) mean += x->data[(i * ch + k) * hw + j];
            mean /= n * hw;
            for (int i = 0; i < n; i++)
                for (int j = 0; j < hw; j++) var += pow(x->data[(i * ch + k) * hw + j] - mean, 2);
            var /= n * hw;
            for (int i = 0; i < n; i++)
                for (int j = 0; j < hw; j++) {
                    int at = (i * ch + k) * hw + j;
                    double want = (x->data[at] - mean) / sqrt(var + 1e-5) * gamma->data[k] + beta->data[k];
                    cr_expect(fabs(y->data[at] - want) < 1e-5, "%s: y[%d] %f want %f", c.be->name, at, y->data[at], want);
                }
            double want_rm = 0.9 * rm0[k] + 0.1 * mean, want_rv = 0.9 * rv0[k] + 0.1 * var * (n * hw) / (n * hw - 1);
            cr_expect(fabs(rm->data[k] - want_rm) < 1e-6, "%s: running_mean %f want %f", c.be->name, rm->data[k], want_rm);
            cr_expect(fabs(rv->data[k] - want_rv) < 1e-5, "%s: running_var %f want %f", c.be->name, rv->data[k], want_rv);
        }
        c.training = false;
        y = op_batchnorm2d(&c, x, gamma, beta, rm, rv, 0.1f, 1e-5f);
        cr_assert_not_null(y);
        for (int i = 0; i < n * ch * hw; i++) {
            int k = (i / hw) % ch;
            double want = (x->data[i] - rm->data[k]) / sqrt(rv->data[k] + 1e-5) * gamma->data[k] + beta->data[k];
            cr_expect(fabs(y->data[i] - want) < 1e-5, "%s eval: y[%d] %f want %f", c.be->name, i, y->data[i], want);
        }
        struct tensor *all[] = {x, gamma, beta, rm, rv};
        for (int i = 0; i < 5; i++) tensor_free(c.be, all[i]);
        ag_ctx_free(&c);
    }
}

Test(nn, residual_block_gradient_is_the_sum_of_both_paths, .init = setup_flavours) {
    for (int f = 0; f < 2; f++) {
        struct nn_model m;
        nn_model_init(&m, 3, 5, 5, 11);
        cr_assert_eq(nn_add_block(&m, 3, 3, 1), 0);
        cr_assert_eq(nn_model_finalize(&m, flavours[f]), 0);
        const struct nn_block *b = &m.layers[0].u.block;
        cr_assert(!b->has_short);
        struct ag_ctx c;
        ag_ctx_init(&c, flavours[f]);
        struct tensor *x = host_tensor(c.be, 4, (int[]){2, 3, 5, 5}, 3);
        x->requires_grad = true;
        struct tensor *y = nn_forward(&m, &c, x);
        cr_assert_not_null(y, "%s", err_get());
        struct tensor *dy = host_tensor(c.be, 4, y->shape, 4);
        cr_assert_eq(ag_backward_from(&c, y, dy), 0, "%s", err_get());
        float *total = malloc(x->numel * sizeof(float)), *dh = malloc(x->numel * sizeof(float));
        memcpy(total, x->grad->data, x->numel * sizeof(float));
        for (size_t i = 0; i < y->numel; i++) dh[i] = y->data[i] > 0 ? dy->data[i] : 0;  /* through the final relu */
        ag_reset(&c);
        x->grad = NULL;

        /* the main path alone, same parameters, upstream gradient dh */
        struct tensor *h = op_relu(&c, op_batchnorm2d(&c, op_conv2d(&c, x, b->conv1.w, NULL, 1, 1), b->bn1.gamma,
                                                      b->bn1.beta, b->bn1.running_mean, b->bn1.running_var, 0.1f, 1e-5f));
        h = op_batchnorm2d(&c, op_conv2d(&c, h, b->conv2.w, NULL, 1, 1), b->bn2.gamma, b->bn2.beta,
                           b->bn2.running_mean, b->bn2.running_var, 0.1f, 1e-5f);
        cr_assert_not_null(h, "%s", err_get());
        struct tensor *dht = tensor_arena(&c.arena, 4, h->shape);
        memcpy(dht->data, dh, h->numel * sizeof(float));
        cr_assert_eq(ag_backward_from(&c, h, dht), 0, "%s", err_get());
        for (size_t i = 0; i < x->numel; i++) dh[i] += x->grad->data[i];
        double e = tu_max_rel_err(total, dh, x->numel);
        cr_expect(e < 1e-5, "%s: block dx differs from main + shortcut by %g", c.be->name, e);
        free(total);
        free(dh);
        tensor_free(c.be, x);
        tensor_free(c.be, dy);
        ag_ctx_free(&c);
        nn_model_free(&m);
    }
}

/* 64 synthetic 8x8 images, 4 classes: class k is bright in quadrant k, plus noise. */
static void make_quadrants(float *x, int32_t *labels) {
    uint64_t s = 99;
    for (int i = 0; i < 64; i++) {
        int k = i % 4;
        labels[i] = k;
        for (int p = 0; p < 64; p++) {
            int r = p / 8, col = p % 8, q = (r >= 4) * 2 + (col >= 4);
            x[i * 64 + p] = (q == k ? 1.0f : 0.0f) + tu_uniform(&s, -0.3f, 0.3f);
        }
    }
}

static int train_tiny_net(const struct backend *be, long *allocs_after_first, long *allocs_at_end) {
    struct nn_model m;
    nn_model_init(&m, 1, 8, 8, 5);
    cr_assert(!nn_add_conv(&m, 1, 8, 3, 1, 1, true) && !nn_add_bn(&m, 8) && !nn_add_relu(&m) &&
              !nn_add_maxpool(&m, 2, 2, 0) && !nn_add_flatten(&m) && !nn_add_linear(&m, 8 * 4 * 4, 4));
    cr_assert_eq(nn_model_finalize(&m, be), 0);
    struct ag_ctx c;
    ag_ctx_init(&c, be);
    struct tensor *x = tensor_new(be, 4, (int[]){64, 1, 8, 8});
    int32_t labels[64];
    make_quadrants(x->data, labels);
    struct sgd opt = {.lr = 0.05f, .momentum = 0.9f, .nesterov = true, .weight_decay = 5e-4f};
    int reached = -1;
    for (int step = 0; step < 300 && reached < 0; step++) {
        nn_zero_grad(&m);
        struct tensor *logits = nn_forward(&m, &c, x);
        cr_assert_not_null(logits, "%s", err_get());
        if (op_accuracy_count(&c, logits, labels) == 64) reached = step;
        struct tensor *loss = op_softmax_xent(&c, logits, labels);
        cr_assert_eq(ag_backward(&c, loss), 0, "%s", err_get());
        optim_sgd_step(&m, &opt, opt.lr);
        ag_reset(&c);
        if (step == 0) *allocs_after_first = c.arena.n_system_allocs;
        *allocs_at_end = c.arena.n_system_allocs;
    }
    tensor_free(be, x);
    ag_ctx_free(&c);
    nn_model_free(&m);
    return reached;
}

Test(nn, tiny_net_fits_separable_classes_and_arena_stops_allocating, .init = setup_flavours) {
    for (int f = 0; f < 2; f++) {
        long first = -1, end = -2;
        int reached = train_tiny_net(flavours[f], &first, &end);
        cr_expect(reached >= 0, "%s: never reached 100%% training accuracy in 300 steps", flavours[f]->name);
        cr_expect(first > 0, "%s: the first step should size the arena", flavours[f]->name);
        cr_expect_eq(end, first, "%s: the arena allocated after the first step (%ld -> %ld)", flavours[f]->name,
                     first, end);
    }
}

Test(nn, layer_table_and_shape_errors) {
    struct nn_model m;
    nn_model_init(&m, 1, 28, 28, 0);
    cr_assert(!nn_add_conv(&m, 1, 16, 3, 1, 1, false) && !nn_add_bn(&m, 16) && !nn_add_relu(&m) &&
              !nn_add_block(&m, 16, 16, 1) && !nn_add_block(&m, 16, 32, 2) && !nn_add_block(&m, 32, 64, 2) &&
              !nn_add_gap(&m) && !nn_add_linear(&m, 64, 10));
    int nd, shape[4];
    cr_assert_eq(nn_model_shapes(&m, 128, NULL, &nd, shape), 0, "%s", err_get());
    cr_expect_eq(nd, 2);
    cr_expect(shape[0] == 128 && shape[1] == 10);
    cr_expect_eq(nn_param_count(&m), 77754, "resnet_small has %zu parameters", nn_param_count(&m));
    nn_model_free(&m);

    nn_model_init(&m, 1, 28, 28, 0);
    cr_assert(!nn_add_conv(&m, 1, 8, 3, 1, 1, false) && !nn_add_linear(&m, 8, 10));
    cr_expect_eq(nn_model_shapes(&m, 4, NULL, NULL, NULL), -1);
    cr_expect(strstr(err_get(), "linear") && strstr(err_get(), "flatten"), "message: %s", err_get());
    nn_model_free(&m);
}

/* ---- the cnn layer grammar (models/cnn.c) ---- */

/* Builds `spec` for a 1x12x12 input and 4 classes; 0, or -1 with err_get() saying why. */
static int build_cnn(const char *spec) {
    struct nn_model m;
    nn_model_init(&m, 1, 12, 12, 3);
    int rc = model_cnn(&m, spec, 4);
    if (!rc) rc = nn_model_shapes(&m, 2, NULL, NULL, NULL);
    nn_model_free(&m);
    return rc;
}

/* A token in the place its kind needs: before gap (an image stage), after gap (a flat
 * one), as the list's head (gap and flatten themselves) or its end (the last linear).
 * 0 when one of them builds. */
static int build_token(const char *tok) {
    static const char *const around[] = {"%s gap linear", "%s linear", "gap %s linear", "gap %s"};
    char spec[128];
    for (size_t i = 0; i < sizeof around / sizeof around[0]; i++) {
        snprintf(spec, sizeof spec, around[i], tok);
        if (!build_cnn(spec)) return 0;
    }
    return -1;
}

/* What ./train --help-config prints after the keys (tools/train.c), into buf. */
static void grammar_help(char *buf, size_t len) {
    FILE *f = fmemopen(buf, len, "w");
    cr_assert(f);
    model_cnn_print_grammar(f);
    cr_assert(ftell(f) < (long)len - 1, "the grammar's help is longer than the test's buffer");
    fclose(f);
}

/* A token of every branch of the parser, written out here by hand, with the form the
 * help must list it under. A form the table gains without a token here fails below. */
static const struct { const char *token, *form; } accepted[] = {
    {"conv3x3-8", "convKxK-C[/S]"}, {"conv5x5-8/2", "convKxK-C[/S]"}, {"conv1x1-4", "convKxK-C[/S]"},
    {"block-8", "block-C[/S]"},     {"block-16/2", "block-C[/S]"},    {"bn", "bn"},
    {"relu", "relu"},               {"maxpool2", "maxpoolK"},         {"avgpool3", "avgpoolK"},
    {"gap", "gap"},                 {"flatten", "flatten"},           {"linear-16", "linear[-N]"},
    {"linear", "linear[-N]"},
};
#define N_ACCEPTED (sizeof accepted / sizeof accepted[0])

Test(nn, the_help_lists_every_token_form_the_cnn_parser_accepts) {
    char help[8192], line[64];
    grammar_help(help, sizeof help);
    /* every token the parser takes is accepted, and its form has a line of the help */
    for (size_t i = 0; i < N_ACCEPTED; i++) {
        cr_expect_eq(build_token(accepted[i].token), 0, "'%s' refused: %s", accepted[i].token, err_get());
        snprintf(line, sizeof line, "\n  %s ", accepted[i].form);
        cr_expect(strstr(help, line), "the help has no line for %s (token '%s'):\n%s", accepted[i].form,
                  accepted[i].token, help);
    }
    /* every form of the table is printed, its example builds, and a token above covers it */
    size_t n = 0;
    const char *form, *example;
    for (; (form = model_cnn_form(n, &example)); n++) {
        snprintf(line, sizeof line, "\n  %s ", form);
        cr_expect(strstr(help, line), "form %s is not printed", form);
        cr_expect(strstr(help, example), "form %s: its example %s is not printed", form, example);
        cr_expect_eq(build_token(example), 0, "the example '%s' of %s is refused: %s", example, form, err_get());
        bool covered = false;
        for (size_t i = 0; i < N_ACCEPTED; i++) covered |= !strcmp(accepted[i].form, form);
        cr_expect(covered, "form %s has no token in this test's list", form);
    }
    cr_expect_gt(n, 0, "the grammar has no forms");
    /* and no form line but those: the lines between the header and the closing sentence */
    int form_lines = 0;
    for (const char *p = strstr(help, "\n  "); p; p = strstr(p + 1, "\n  ")) form_lines++;
    cr_expect_eq(form_lines, (int)n + 2, "a line per form, the example list and the closing line:\n%s", help);
}

Test(nn, cnn_tokens_of_no_form_or_a_broken_one_are_refused_by_name) {
    static const char *const unknown[] = {"dropout", "Relu", "sigmoid", "pool2", "lin"};
    for (size_t i = 0; i < sizeof unknown / sizeof unknown[0]; i++) {
        char spec[64];
        snprintf(spec, sizeof spec, "%s gap linear", unknown[i]);
        cr_expect_eq(build_cnn(spec), -1, "'%s' accepted", unknown[i]);
        cr_expect(strstr(err_get(), "unknown layer") && strstr(err_get(), unknown[i]), "%s", err_get());
        const char *form;
        for (size_t k = 0; (form = model_cnn_form(k, NULL)); k++)
            cr_expect(strstr(err_get(), form), "the error does not list %s: %s", form, err_get());
    }
    /* the right word, written wrong: the form's own message */
    static const char *const broken[] = {"conv3x3-8x", "conv3x5-8", "conv3x3-8/", "conv3x3-8/2/2", "conv3x3",
                                         "maxpool", "maxpool2x", "avgpool0", "linearx", "linear-", "linear-8x",
                                         "block", "block-", "block-8/", "block-8x"};
    for (size_t i = 0; i < sizeof broken / sizeof broken[0]; i++) {
        cr_expect_eq(build_token(broken[i]), -1, "'%s' accepted", broken[i]);
        cr_expect(!strstr(err_get(), "unknown layer"), "'%s': %s", broken[i], err_get());
    }
    cr_expect_eq(build_cnn("gap conv3x3-8 linear"), -1);
    cr_expect(strstr(err_get(), "token 2 'conv3x3-8'"), "%s", err_get());
    cr_expect_eq(build_cnn("flatten block-8 linear"), -1);
    cr_expect(strstr(err_get(), "block cannot follow"), "%s", err_get());
    cr_expect_eq(build_cnn("conv3x3-8 gap linear-4 linear-4"), 0, "%s", err_get());
    cr_expect_eq(build_cnn("conv3x3-8 gap linear linear-4"), -1, "only the last linear may omit its size");
}

/* resnet_small in one line of the cnn grammar: the same layers, parameter names,
 * shapes and (from the same seed) initial values as models/resnet.c builds. */
Test(nn, block_tokens_build_resnet_small_exactly) {
    struct nn_model a, b;
    nn_model_init(&a, 1, 28, 28, 9);
    nn_model_init(&b, 1, 28, 28, 9);
    struct cfg_int_list widths = {3, {16, 32, 64}}, blocks = {3, {1, 1, 1}};
    cr_assert_eq(model_resnet(&a, &widths, &blocks, 10), 0, "%s", err_get());
    cr_assert_eq(model_cnn(&b, "conv3x3-16 bn relu block-16 block-32/2 block-64/2 gap linear", 10), 0, "%s",
                 err_get());
    cr_assert_eq(nn_model_shapes(&b, 1, NULL, NULL, NULL), 0, "%s", err_get());
    cr_expect_eq(nn_param_count(&b), 77754);
    cr_assert_eq(a.n_layers, b.n_layers);
    cr_assert_eq(a.ps.n_params, b.ps.n_params);
    cr_assert_eq(a.ps.n_buffers, b.ps.n_buffers);
    for (int i = 0; i < a.ps.n_params; i++) {
        const struct tensor *p = a.ps.params[i], *q = b.ps.params[i];
        cr_expect_str_eq(a.ps.param_names[i], b.ps.param_names[i]);
        cr_assert_eq(p->numel, q->numel, "%s", a.ps.param_names[i]);
        cr_expect(!memcmp(p->data, q->data, p->numel * sizeof(float)), "%s differs", a.ps.param_names[i]);
    }
    nn_model_free(&a);
    nn_model_free(&b);
}
