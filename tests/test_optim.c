/* test_optim.c — SGD (momentum, Nesterov, weight decay) against hand values, and the
 * learning-rate schedule. */
#include <criterion/criterion.h>
#include <string.h>

#include "error.h"
#include "fixtures/flavours.h"
#include "nn.h"
#include "optim.h"

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
