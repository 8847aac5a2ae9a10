/* tensors.c — the one walk over a model's layers that both exporters use: every
 * parameter and BN buffer under its PyTorch name, with a host copy of its value
 * (the naming rule is in export.h). */
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "export.h"

int export_torch_index(const struct nn_model *m, int layer) {
    int t = layer;
    for (int i = 0; i < layer && i < m->n_layers; i++)
        if (m->layers[i].kind == NN_GAP) t++;  /* AdaptiveAvgPool2d(1) + Flatten() */
    return t;
}

/* The model's own name of `t`: it is one of the model's parameters or buffers. */
static const char *nostall_name(const struct nn_model *m, const struct tensor *t) {
    const struct nn_params *ps = &m->ps;
    for (int i = 0; i < ps->n_params; i++)
        if (ps->params[i] == t) return ps->param_names[i];
    for (int i = 0; i < ps->n_buffers; i++)
        if (ps->buffers[i] == t) return ps->buffer_names[i];
    return NULL;
}

/* Appends "<prefix>.<what>"; t NULL is a num_batches_tracked (I64 scalar, 0). */
static int push(struct export_list *l, const struct nn_model *m, const char *prefix, const char *what,
                const struct tensor *t) {
    if (l->n == l->cap) {
        int cap = l->cap ? 2 * l->cap : 32;
        struct export_tensor *p = realloc(l->t, (size_t)cap * sizeof *p);
        if (!p) return err_set("out of host memory listing the model's tensors");
        l->t = p;
        l->cap = cap;
    }
    struct export_tensor *e = &l->t[l->n];
    memset(e, 0, sizeof *e);
    if (snprintf(e->name, sizeof e->name, "%s.%s", prefix, what) >= (int)sizeof e->name)
        return err_set("tensor name %s.%s is longer than %d bytes", prefix, what, EXPORT_NAME_LEN - 1);
    if (!t) {  /* num_batches_tracked */
        e->dtype = EXPORT_I64;
        e->numel = 1;
        if (!(e->host = calloc(1, sizeof(int64_t)))) return err_set("out of host memory");
        l->n++;
        return 0;
    }
    const char *own = nostall_name(m, t);
    if (!own) return err_set("%s: the tensor is not one of the model's parameters or buffers", e->name);
    snprintf(e->nostall, sizeof e->nostall, "%s", own);
    e->dtype = EXPORT_F32;
    e->src = t;
    e->ndim = t->ndim;
    memcpy(e->shape, t->shape, (size_t)t->ndim * sizeof *t->shape);
    e->numel = t->numel;
    if (!(e->host = malloc(t->numel * sizeof(float))))
        return err_set("out of host memory for %s (%zu floats)", e->name, t->numel);
    m->ps.be->copy(e->host, t->data, t->numel * sizeof(float), COPY_D2H);
    l->n++;
    return 0;
}

static int push_conv(struct export_list *l, const struct nn_model *m, const char *prefix, const struct nn_conv *c) {
    return push(l, m, prefix, "weight", c->w) || (c->b && push(l, m, prefix, "bias", c->b)) ? -1 : 0;
}

/* PyTorch's BatchNorm2d: weight (gamma), bias (beta), the running statistics, the count */
static int push_bn(struct export_list *l, const struct nn_model *m, const char *prefix, const struct nn_bn *b) {
    return push(l, m, prefix, "weight", b->gamma) || push(l, m, prefix, "bias", b->beta) ||
                   push(l, m, prefix, "running_mean", b->running_mean) ||
                   push(l, m, prefix, "running_var", b->running_var) ||
                   push(l, m, prefix, "num_batches_tracked", NULL)
               ? -1
               : 0;
}

/* A BasicBlock as scripts/torch_resnet_small.py's Block: conv1, bn1, conv2, bn2, and
 * the projection shortcut as the nn.Sequential `shortcut` (0: conv, 1: BN). */
static int push_block(struct export_list *l, const struct nn_model *m, const char *t, const struct nn_block *b) {
    char p[EXPORT_NAME_LEN];
#define SUB(what) (snprintf(p, sizeof p, "%s.%s", t, what), p)
    if (push_conv(l, m, SUB("conv1"), &b->conv1) || push_bn(l, m, SUB("bn1"), &b->bn1) ||
        push_conv(l, m, SUB("conv2"), &b->conv2) || push_bn(l, m, SUB("bn2"), &b->bn2))
        return -1;
    if (b->has_short && (push_conv(l, m, SUB("shortcut.0"), &b->short_conv) ||
                         push_bn(l, m, SUB("shortcut.1"), &b->short_bn)))
        return -1;
#undef SUB
    return 0;
}

static int walk(const struct nn_model *m, struct export_list *l) {
    for (int i = 0; i < m->n_layers; i++) {
        const struct nn_layer *ly = &m->layers[i];
        char t[16];
        snprintf(t, sizeof t, "%d", export_torch_index(m, i));
        int rc = 0;
        switch (ly->kind) {
        case NN_CONV: rc = push_conv(l, m, t, &ly->u.conv); break;
        case NN_BN: rc = push_bn(l, m, t, &ly->u.bn); break;
        case NN_LINEAR:
            rc = push(l, m, t, "weight", ly->u.linear.w) || push(l, m, t, "bias", ly->u.linear.b) ? -1 : 0;
            break;
        case NN_BLOCK: rc = push_block(l, m, t, &ly->u.block); break;
        case NN_RELU: case NN_MAXPOOL: case NN_AVGPOOL: case NN_GAP: case NN_FLATTEN: break; /* no tensors */
        default: rc = err_set("layer kind %d has no export; HINT: add it to src/export/tensors.c", (int)ly->kind);
        }
        if (rc) return err_wrap("layer %d (%s): ", i, ly->name);
    }
    /* every parameter and buffer, each once: a layer kind that grows a tensor this
     * walk doesn't know would otherwise be left out of the file silently */
    int f32 = 0;
    for (int i = 0; i < l->n; i++) f32 += l->t[i].dtype == EXPORT_F32;
    if (f32 != m->ps.n_params + m->ps.n_buffers)
        return err_set("the walk listed %d tensors, the model has %d parameters and %d buffers; "
                       "HINT: teach src/export/tensors.c the layer that owns the others",
                       f32, m->ps.n_params, m->ps.n_buffers);
    for (int i = 0; i < l->n; i++)
        for (int j = i + 1; j < l->n; j++)
            if (!strcmp(l->t[i].name, l->t[j].name) || (l->t[i].src && l->t[i].src == l->t[j].src))
                return err_set("%s is listed twice", l->t[j].name);
    return 0;
}

int export_list_build(const struct nn_model *m, struct export_list *l) {
    memset(l, 0, sizeof *l);
    if (!m->ps.be) return err_set("export: the model was not finalized (call nn_model_finalize)");
    m->ps.be->sync();  /* the device's last step is done before its values are read */
    if (walk(m, l)) {
        export_list_free(l);
        return -1;
    }
    return 0;
}

void export_list_free(struct export_list *l) {
    for (int i = 0; i < l->n; i++) free(l->t[i].host);
    free(l->t);
    memset(l, 0, sizeof *l);
}

const struct export_tensor *export_list_find(const struct export_list *l, const struct tensor *src) {
    for (int i = 0; i < l->n; i++)
        if (l->t[i].src == src) return &l->t[i];
    return NULL;
}
