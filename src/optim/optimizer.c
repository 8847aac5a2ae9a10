/* optimizer.c — the optimizer a config names (optim.h): SGD (sgd.c) or AdamW, as one
 * fused pass of the backend over the flat buffers. */
#include <math.h>
#include <string.h>

#include "error.h"
#include "optim.h"

int optim_init(struct optimizer *o, const struct config *cfg, struct nn_model *m) {
    const struct cfg_optim *c = &cfg->optim;
    memset(o, 0, sizeof *o);
    o->kind = c->name;
    o->sgd = (struct sgd){(float)c->lr, (float)c->momentum, (float)c->weight_decay, c->nesterov};
    o->beta1 = c->beta1;
    o->beta2 = c->beta2;
    o->eps = (float)c->eps;
    o->weight_decay = (float)c->weight_decay;
    if (o->kind != CFG_OPTIM_ADAMW) return 0;
    const struct backend *be = m->ps.be;
    if (!be->adamw_step) return err_set("optim.name = adamw: the %s kernels have no AdamW step", be->name);
    size_t bytes = (m->ps.total ? m->ps.total : 1) * sizeof(float);
    if (!(o->v2 = be->alloc(bytes))) return err_wrap("AdamW's second moment (%zu bytes): ", bytes);
    be->zero(o->v2, bytes);
    return 0;
}

void optim_free(struct optimizer *o, struct nn_model *m) {
    if (o->v2) m->ps.be->free(o->v2);
    o->v2 = NULL;
}

const char *optim_name(const struct optimizer *o) { return o->kind == CFG_OPTIM_ADAMW ? "adamw" : "sgd"; }

void optim_step(struct optimizer *o, struct nn_model *m, float lr) {
    o->steps++;
    if (o->kind != CFG_OPTIM_ADAMW) {
        optim_sgd_step(m, &o->sgd, lr);
        return;
    }
    /* the bias corrections of step t, in double as PyTorch computes them */
    double t = (double)o->steps;
    float bc1 = (float)(1.0 - pow(o->beta1, t)), bc2_sqrt = (float)sqrt(1.0 - pow(o->beta2, t));
    struct nn_params *ps = &m->ps;
    ps->be->adamw_step(ps->total, ps->w, ps->g, ps->v, o->v2, lr, (float)o->beta1, (float)o->beta2, o->eps,
                       o->weight_decay, bc1, bc2_sqrt);
}
