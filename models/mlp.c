/* mlp.c — flatten, then linear -> ReLU per hidden size, then linear to the classes. */
#include "models.h"

int model_mlp(struct nn_model *m, const struct cfg_int_list *hidden, int classes) {
    int in = m->in_c * m->in_h * m->in_w;
    if (nn_add_flatten(m)) return -1;
    for (int i = 0; i < hidden->n; i++) {
        if (nn_add_linear(m, in, hidden->v[i]) || nn_add_relu(m)) return -1;
        in = hidden->v[i];
    }
    return nn_add_linear(m, in, classes);
}
