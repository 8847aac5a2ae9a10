/* sgd.c — the optimizer step and learning-rate schedules. */
#include <math.h>

#include "optim.h"

void optim_sgd_step(struct nn_model *m, const struct sgd *opt, float lr) {
    struct nn_params *ps = &m->ps;
    ps->be->sgd_step(ps->total, ps->w, ps->g, ps->v, lr, opt->momentum, opt->nesterov, opt->weight_decay);
}

float optim_lr_at(enum cfg_schedule s, float base, float warmup, long step, long total) {
    if (total <= 0) return base;
    double t = (double)step / (double)total;  /* progress in [0, 1) */
    if (warmup > 0 && t < warmup) return (float)(base * t / warmup);
    if (s == CFG_SCHEDULE_CONSTANT) return base;
    double rest = warmup < 1 ? (t - warmup) / (1.0 - warmup) : 1.0;  /* progress after warmup */
    if (s == CFG_SCHEDULE_LINEAR) return (float)(base * (1.0 - rest));
    return (float)(base * 0.5 * (1.0 + cos(3.14159265358979323846 * rest)));
}
