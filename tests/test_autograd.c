/* test_autograd.c — the tape: what backward needs, and no-grad mode, on both CPU flavours. */
#include <criterion/criterion.h>
#include <string.h>

#include "error.h"
#include "fixtures/flavours.h"
#include "ops.h"

Test(autograd, backward_needs_a_scalar_on_the_current_tape, .init = setup_flavours) {
    struct ag_ctx c;
    ag_ctx_init(&c, flavours[1]);
    struct tensor *x = host_tensor(c.be, 2, (int[]){3, 4}, 1);
    x->requires_grad = true;
    struct tensor *y = op_relu(&c, x);
    cr_assert_not_null(y);
    cr_expect_eq(ag_backward(&c, y), -1);
    cr_expect(strstr(err_get(), "scalar") && strstr(err_get(), "[3,4]"), "message: %s", err_get());
    ag_reset(&c);
    cr_expect_eq(ag_backward(&c, y), -1);
    cr_expect(strstr(err_get(), "tape is empty") && strstr(err_get(), "HINT"), "message: %s", err_get());
    /* a loss from an earlier step, with a new tape in place */
    struct tensor *z = op_relu(&c, x);
    cr_assert_not_null(z);
    cr_expect_eq(ag_backward(&c, y), -1);
    cr_expect(strstr(err_get(), "not produced on the current tape"), "message: %s", err_get());
    tensor_free(c.be, x);
    ag_ctx_free(&c);
}

Test(autograd, no_grad_mode_records_nothing, .init = setup_flavours) {
    struct ag_ctx c;
    ag_ctx_init(&c, flavours[0]);
    struct tensor *x = host_tensor(c.be, 2, (int[]){2, 2}, 1);
    x->requires_grad = true;
    c.grad_enabled = false;
    cr_assert_not_null(op_relu(&c, op_relu(&c, x)));
    cr_expect_eq(c.tape.n, 0);
    c.grad_enabled = true;
    cr_assert_not_null(op_relu(&c, x));
    cr_expect_eq(c.tape.n, 1);
    tensor_free(c.be, x);
    ag_ctx_free(&c);
}
