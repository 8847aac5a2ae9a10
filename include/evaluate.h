/* evaluate.h — a model's pass over a split, without gradients: the trainer's test pass
 * and ./eval are this one function, so ./eval of a checkpoint reproduces the trainer's
 * test accuracy exactly (same device, kernels and batch size: the same logits). */
#ifndef NS_EVALUATE_H
#define NS_EVALUATE_H

#include <stdint.h>

#include "autograd.h"
#include "feeder.h"
#include "nn.h"

struct eval_result {
    int classes;
    int64_t seen, right;      /* images evaluated, argmax == label */
    double loss_sum;          /* summed cross-entropy, in double */
    int64_t *confusion;       /* NULL, or classes x classes counts: [label][prediction] */
};

/* Called after each batch with its first n images' logits on the host (n x classes). */
typedef int (*eval_batch_fn)(void *ctx, const struct batch *b, int n, const float *logits);

/* Runs m in eval mode (running BN statistics, no tape) over every batch `feed` gives
 * for epoch 0, at most `limit` images (0 = all), normalizing with mean/std per channel.
 * Loss and argmax are computed on the host from the logits (a tie goes to the lower
 * class). r->classes must be set; r's counts are added to. Returns 0, or -1 with the
 * loader's or a kernel's error. */
int eval_pass(struct ag_ctx *c, struct nn_model *m, struct feeder *feed, const float *mean, const float *std,
              int64_t limit, struct eval_result *r, eval_batch_fn on_batch, void *ctx);

/* The predicted class of one row of logits, and its cross-entropy for `label`. */
int eval_argmax(const float *logits, int classes);
double eval_xent(const float *logits, int classes, int label);

#endif
