/* optim.h — SGD with momentum, nesterov and weight decay; learning-rate schedules. */
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

/* Learning rate at `step` of `total`: linear warmup from 0 to base over the first
 * warmup*total steps, then constant, linear decay to 0, or cosine decay to 0 (the
 * config's optim.schedule, config.h). */
float optim_lr_at(enum cfg_schedule s, float base, float warmup, long step, long total);

#endif
