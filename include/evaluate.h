/* evaluate.h — a model's pass over a split, without gradients: the trainer's test pass
 * and ./eval are this one function, so ./eval of a checkpoint reproduces the trainer's
 * test accuracy exactly (same device, kernels and batch size: the same logits). */
#ifndef NS_EVALUATE_H
#define NS_EVALUATE_H

#include <stdint.h>

#include <stdio.h>

#include "autograd.h"
#include "checkpoint.h"
#include "feeder.h"
#include "nn.h"

/* A trained model ready to use (./eval, ./predict, ./export): the checkpoint's config
 * with the caller's assignments applied, the device that config picks, the model
 * loaded there. */
struct eval_model {
    struct ckpt_info info;    /* info.cfg: the checkpoint's config, the assignments applied */
    const struct backend *be;
    struct nn_model m;
    struct ag_ctx ctx;
    float mean[4], std[4];    /* data.mean/std per channel */
};

/* Opens `path`. `sets` are "section.key=value" assignments of how the model runs and
 * where its data is (loader.*, train.device/kernels/threads/tf32, data.path, ...); any
 * other key (the model, the input shape, the classes, mean/std) is refused. The device choice is printed to `out`.
 * On failure nothing needs closing. */
int eval_model_open(struct eval_model *em, const char *path, const char *const *sets, int n_sets, FILE *out);
void eval_model_close(struct eval_model *em);

/* s as a JSON string, quoted and escaped; x as a JSON number (null when not finite). */
void eval_json_string(FILE *f, const char *s);
void eval_json_number(FILE *f, double x);

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
