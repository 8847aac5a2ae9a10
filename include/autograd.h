/* autograd.h — the tape and the reverse walk.
 *
 * Every op run with gradients enabled appends one node: its inputs, output, the
 * tensors it saved for backward, and its backward function. ag_backward walks the
 * nodes in reverse; each backward ACCUMULATES (+=) into its inputs' gradients, so
 * a tensor used twice (the residual fan-out) receives the sum of both paths. */
#ifndef NS_AUTOGRAD_H
#define NS_AUTOGRAD_H

#include <stdbool.h>

#include "backend.h"
#include "tensor.h"

#define AG_MAX_INPUTS 5
#define AG_MAX_SAVED 3

struct ag_ctx;
struct ag_node {
    const char *op;                                   /* "conv2d", "relu", ... for messages */
    int (*backward)(struct ag_ctx *c, struct ag_node *n);
    struct tensor *in[AG_MAX_INPUTS];                 /* NULL where an input is absent (bias) */
    struct tensor *out;
    struct tensor *saved[AG_MAX_SAVED];               /* e.g. softmax probs, BN mean/invstd */
    const void *aux;                                  /* e.g. int32 argmax indices, labels */
    union {                                           /* the op's non-tensor arguments */
        struct conv_geom conv;
        struct pool_geom pool;
    } g;
};

struct ag_tape {
    struct ag_node *nodes;
    int n, cap;
    unsigned gen;          /* bumped by every reset: tensors from older steps are stale */
};

/* Everything an op needs: which kernels, where step memory comes from, the tape. */
struct ag_ctx {
    const struct backend *be;
    struct arena arena;
    struct ag_tape tape;
    bool grad_enabled;     /* false: no tape, no gradients (evaluation) */
    bool training;         /* batchnorm uses batch statistics and updates running ones */
    /* Called by backward after node `index` (from the last to 0), whether it ran or had
     * nothing to do: data-parallel training starts a gradient bucket once every node
     * reading its parameters is done. NULL: no call. */
    void (*after_node)(void *ctx, int index);
    void *after_node_ctx;
};

int ag_ctx_init(struct ag_ctx *c, const struct backend *be);
void ag_ctx_free(struct ag_ctx *c);

/* Drops the tape and every step tensor; call after the optimizer step. */
void ag_reset(struct ag_ctx *c);

/* Backward from a scalar loss (1 element) produced on the current tape. */
int ag_backward(struct ag_ctx *c, struct tensor *loss);
/* Backward from any output with a given upstream gradient `dout` (same shape,
 * on the device), like PyTorch's y.backward(gradient): gradient checks use it. */
int ag_backward_from(struct ag_ctx *c, struct tensor *out, const struct tensor *dout);

/* For op implementations: append a node (NULL when gradients are off or no input
 * needs them) and mark `out` as produced by it. */
struct ag_node *ag_record(struct ag_ctx *c, const char *op,
                          int (*backward)(struct ag_ctx *, struct ag_node *),
                          struct tensor *out, int n_in, struct tensor *const *in);
/* The gradient of t, created zero-filled from the arena on first use. */
struct tensor *ag_grad(struct ag_ctx *c, struct tensor *t);
/* The same for a kernel that can overwrite (an `acc` entry in backend.h): on
 * first use the gradient comes from the arena NOT zeroed and *acc = false, so the
 * kernel must write all of it; afterwards *acc = true. Saves a zero-fill and a
 * read of the zeros on every activation gradient with one writer. */
struct tensor *ag_grad_out(struct ag_ctx *c, struct tensor *t, bool *acc);

/* Copies a 1-element tensor to the host. */
float ag_item(struct ag_ctx *c, const struct tensor *t);

#endif
