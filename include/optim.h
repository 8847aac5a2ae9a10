/* optim.h — the optimizers (SGD with momentum, nesterov and weight decay; AdamW with
 * decoupled weight decay and bias correction), each one fused pass over the model's
 * flat buffers; learning-rate schedules. */
#ifndef NS_OPTIM_H
#define NS_OPTIM_H

#include <stdbool.h>

#include "config.h"
#include "nn.h"

struct sgd {
    float lr, momentum, weight_decay;
    bool nesterov;
};

/* One fused update over every parameter of the model (PyTorch's SGD, dampening 0). */
void optim_sgd_step(struct nn_model *m, const struct sgd *opt, float lr);

/* The optimizer the config's [optim] names, with its state beyond the model's flat
 * buffers: SGD's momentum is ps->v; AdamW's first moment is ps->v, its second `v2`
 * (ps->total floats on the model's device). */
struct optimizer {
    enum cfg_optimizer kind;
    struct sgd sgd;                  /* lr is the step's, given to optim_step */
    double beta1, beta2;             /* double: the bias corrections are computed in double */
    float eps, weight_decay;
    float *v2;                       /* AdamW's second moment; NULL for SGD */
    long steps;                      /* updates applied: AdamW's bias correction */
};

/* For m, finalized; allocates AdamW's second moment (zeroed). 0, or -1 with err_set. */
int optim_init(struct optimizer *o, const struct config *cfg, struct nn_model *m);
void optim_free(struct optimizer *o, struct nn_model *m);
/* One update of every parameter from its gradient, at learning rate lr. */
void optim_step(struct optimizer *o, struct nn_model *m, float lr);
const char *optim_name(const struct optimizer *o); /* "sgd", "adamw" */

/* Learning rate at `step` of `total`: linear warmup from 0 to base over the first
 * warmup*total steps, then constant, linear decay to 0, or cosine decay to 0 (the
 * config's optim.schedule, config.h). */
float optim_lr_at(enum cfg_schedule s, float base, float warmup, long step, long total);

#endif
