/* test_optim.c — SGD (momentum, Nesterov, weight decay) against hand values, and the
 * learning-rate schedule. */
#include <criterion/criterion.h>
#include <math.h>
#include <string.h>

#include "error.h"
#include "fixtures/flavours.h"
#include "nn.h"
#include "optim.h"
#include "testutil.h"

Test(optim, sgd_momentum_nesterov_weight_decay_match_hand_values, .init = setup_flavours) {
    for (int f = 0; f < 2; f++) {
        struct nn_model m;
        nn_model_init(&m, 1, 1, 1, 0);
        cr_assert_eq(nn_add_linear(&m, 1, 1), 0);
        cr_assert_eq(nn_model_finalize(&m, flavours[f]), 0);
        struct tensor *w = m.layers[0].u.linear.w, *b = m.layers[0].u.linear.b;
        w->data[0] = 1.0f;
        b->data[0] = 0.5f;
        struct sgd opt = {.lr = 0.1f, .momentum = 0.9f, .weight_decay = 0.01f, .nesterov = true};
        for (int step = 0; step < 2; step++) {
            w->grad->data[0] = 0.2f;
            b->grad->data[0] = -0.1f;
            optim_sgd_step(&m, &opt, opt.lr);
        }
        /* by hand: g' = g + wd*w; v = 0.9 v + g'; w -= lr (g' + 0.9 v), twice */
        cr_expect(fabs(w->data[0] - 0.90326581) < 1e-6, "%s: w = %.8f", flavours[f]->name, w->data[0]);
        cr_expect(fabs(b->data[0] - 0.543760705) < 1e-6, "%s: b = %.8f", flavours[f]->name, b->data[0]);
        nn_model_free(&m);
    }
}

/* AdamW over 20 steps of seeded gradients, against the same update in double (PyTorch's
 * formula: decoupled decay, bias-corrected moments), for both CPU tables; the state
 * comes from optim_init/optim_step as the trainer uses them. */
Test(optim, adamw_matches_a_double_reference_over_20_steps, .init = setup_flavours) {
    struct config cfg;
    cfg_defaults(&cfg);
    cr_assert_eq(cfg_set(&cfg, "optim.name=adamw"), 0, "%s", err_get());
    cr_assert_eq(cfg_set(&cfg, "optim.weight_decay=0.05"), 0, "%s", err_get());
    const double lr = 0.01, b1 = 0.9, b2 = 0.999, eps = 1e-8, wd = 0.05;
    for (int f = 0; f < 2; f++) {
        struct nn_model m;
        nn_model_init(&m, 1, 1, 1, 0);
        cr_assert_eq(nn_add_linear(&m, 7, 5), 0);
        cr_assert_eq(nn_model_finalize(&m, flavours[f]), 0);
        struct optimizer o;
        cr_assert_eq(optim_init(&o, &cfg, &m), 0, "%s", err_get());
        size_t n = m.ps.total;
        double w[64], mm[64] = {0}, vv[64] = {0};
        cr_assert_leq(n, 64);
        uint64_t seed = 11;
        for (size_t i = 0; i < n; i++) w[i] = m.ps.w[i] = tu_uniform(&seed, -1, 1);
        for (int t = 1; t <= 20; t++) {
            for (size_t i = 0; i < n; i++) {
                float g = tu_uniform(&seed, -1, 1);
                m.ps.g[i] = g;
                w[i] *= 1 - lr * wd;
                mm[i] = b1 * mm[i] + (1 - b1) * g;
                vv[i] = b2 * vv[i] + (1 - b2) * (double)g * g;
                w[i] -= lr / (1 - pow(b1, t)) * mm[i] / (sqrt(vv[i]) / sqrt(1 - pow(b2, t)) + eps);
            }
            optim_step(&o, &m, (float)lr);
        }
        double worst = 0;
        for (size_t i = 0; i < n; i++) worst = fmax(worst, fabs(m.ps.w[i] - w[i]));
        /* float rounding over 20 steps of weights of order 1: a few 1e-7 each */
        cr_expect_lt(worst, 5e-6, "%s: AdamW is %g from the double reference after 20 steps", flavours[f]->name, worst);
        cr_expect_eq(o.steps, 20);
        optim_free(&o, &m);
        nn_model_free(&m);
    }
}

Test(optim, lr_schedule_warms_up_then_decays) {
    cr_expect_float_eq(optim_lr_at(CFG_SCHEDULE_LINEAR, 0.1f, 0.2f, 0, 100), 0.0f, 1e-7);
    cr_expect_float_eq(optim_lr_at(CFG_SCHEDULE_LINEAR, 0.1f, 0.2f, 10, 100), 0.05f, 1e-6);
    cr_expect_float_eq(optim_lr_at(CFG_SCHEDULE_LINEAR, 0.1f, 0.2f, 20, 100), 0.1f, 1e-6);
    cr_expect_float_eq(optim_lr_at(CFG_SCHEDULE_LINEAR, 0.1f, 0.2f, 60, 100), 0.05f, 1e-6);
    cr_expect_float_eq(optim_lr_at(CFG_SCHEDULE_CONSTANT, 0.1f, 0.0f, 99, 100), 0.1f, 1e-7);
    cr_expect_float_eq(optim_lr_at(CFG_SCHEDULE_COSINE, 0.1f, 0.0f, 50, 100), 0.05f, 1e-6);
}

/* The block's input feeds the main path and the shortcut: its gradient must be the
 * sum of the main path's gradient and the shortcut's (the upstream gradient itself). */
