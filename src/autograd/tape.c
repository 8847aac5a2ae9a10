/* tape.c — the autograd tape: record in forward order, replay backwards. */
#include <stdlib.h>
#include <string.h>

#include "autograd.h"
#include "error.h"

int ag_ctx_init(struct ag_ctx *c, const struct backend *be) {
    memset(c, 0, sizeof *c);
    c->be = be;
    c->grad_enabled = true;
    c->training = true;
    c->tape.gen = 1;
    return arena_init(&c->arena, be, 0);
}

void ag_ctx_free(struct ag_ctx *c) {
    arena_free(&c->arena);
    free(c->tape.nodes);
    memset(c, 0, sizeof *c);
}

void ag_reset(struct ag_ctx *c) {
    c->tape.n = 0;
    c->tape.gen++;
    arena_reset(&c->arena);
}

struct ag_node *ag_record(struct ag_ctx *c, const char *op,
                          int (*backward)(struct ag_ctx *, struct ag_node *),
                          struct tensor *out, int n_in, struct tensor *const *in) {
    bool needs = false;
    for (int i = 0; i < n_in; i++) needs |= in[i] && in[i]->requires_grad;
    out->tape_gen = c->tape.gen;
    if (!c->grad_enabled || !needs) return NULL;

    struct ag_tape *t = &c->tape;
    if (t->n == t->cap) {  /* grows during the first step only */
        int cap = t->cap ? 2 * t->cap : 64;
        struct ag_node *nodes = realloc(t->nodes, (size_t)cap * sizeof *nodes);
        if (!nodes) { err_set("%s: out of host memory growing the tape to %d nodes", op, cap); return NULL; }
        t->nodes = nodes;
        t->cap = cap;
        c->arena.n_system_allocs++;
    }
    struct ag_node *n = &t->nodes[t->n++];
    memset(n, 0, sizeof *n);
    n->op = op;
    n->backward = backward;
    for (int i = 0; i < n_in; i++) n->in[i] = in[i];
    n->out = out;
    out->requires_grad = true;
    out->producer = n;
    return n;
}

struct tensor *ag_grad(struct ag_ctx *c, struct tensor *t) {
    if (!t->grad) t->grad = tensor_arena_zeros(&c->arena, t->ndim, t->shape);
    return t->grad;
}

struct tensor *ag_grad_out(struct ag_ctx *c, struct tensor *t, bool *acc) {
    *acc = t->grad != NULL;
    if (!t->grad) t->grad = tensor_arena(&c->arena, t->ndim, t->shape);
    return t->grad;
}

static int walk_back(struct ag_ctx *c) {
    for (int i = c->tape.n - 1; i >= 0; i--) {
        struct ag_node *n = &c->tape.nodes[i];
        /* nothing downstream of it reached the loss: nothing to do */
        if (n->out->grad && n->backward(c, n)) return err_wrap("backward of %s (node %d): ", n->op, i);
        if (c->after_node) c->after_node(c->after_node_ctx, i);
    }
    return 0;
}

static int check_on_tape(struct ag_ctx *c, const struct tensor *t) {
    if (c->tape.n == 0)
        return err_set("backward: the tape is empty. HINT: call backward after the forward pass and "
                       "before ag_reset (the optimizer step resets the tape), with gradients enabled");
    /* Look t up by address before reading it: a tensor from an earlier step lives in
     * arena memory that ag_reset may have freed. */
    int i = c->tape.n - 1;
    while (i >= 0 && c->tape.nodes[i].out != t) i--;
    if (i < 0 || t->tape_gen != c->tape.gen || !t->producer)
        return err_set("backward: this tensor was not produced on the current tape (it is from an "
                       "earlier step, or from an op that needed no gradient). HINT: run the forward "
                       "pass again after ag_reset");
    return 0;
}

int ag_backward(struct ag_ctx *c, struct tensor *loss) {
    char buf[64];
    if (check_on_tape(c, loss)) return -1;
    if (loss->numel != 1)
        return err_set("backward: the loss must be a scalar, got shape %s. HINT: reduce it first "
                       "(softmax_xent returns the batch mean), or use ag_backward_from with an "
                       "upstream gradient", tensor_shape_str(loss, buf, sizeof buf));
    struct tensor *g = ag_grad(c, loss);
    if (!g) return -1;
    const float one = 1.0f;
    c->be->copy(g->data, &one, sizeof one, COPY_H2D);
    return walk_back(c);
}

int ag_backward_from(struct ag_ctx *c, struct tensor *out, const struct tensor *dout) {
    char a[64], b[64];
    if (check_on_tape(c, out)) return -1;
    if (!tensor_same_shape(out, dout))
        return err_set("backward: upstream gradient %s does not match the output %s",
                       tensor_shape_str(dout, a, sizeof a), tensor_shape_str(out, b, sizeof b));
    struct tensor *g = ag_grad(c, out);
    if (!g) return -1;
    c->be->axpy(g->numel, 1.0f, dout->data, g->data);
    return walk_back(c);
}

float ag_item(struct ag_ctx *c, const struct tensor *t) {
    float v = 0;
    c->be->copy(&v, t->data, sizeof v, COPY_D2H);
    return v;
}
