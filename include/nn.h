/* nn.h — layers built from ops, and a model as a list of layers.
 *
 * Parameters are created on the host (He initialisation from a seeded RNG), then
 * nn_model_finalize packs them into three flat buffers on the device — weights,
 * gradients, momentum — so the optimizer is one fused pass over all of them and a
 * checkpoint is one block. BN running statistics are buffers: saved, not trained. */
#ifndef NS_NN_H
#define NS_NN_H

#include <stdio.h>

#include "autograd.h"
#include "rng.h"

#define NN_NAME_LEN 48

struct nn_params {
    struct tensor **params;         /* trainable, each with ->grad */
    char (*param_names)[NN_NAME_LEN];
    int n_params, cap_params;
    struct tensor **buffers;        /* BN running mean/var */
    char (*buffer_names)[NN_NAME_LEN];
    int n_buffers, cap_buffers;
    const struct backend *be;       /* set by finalize */
    float *w, *g, *v;               /* flat device buffers, `total` floats each */
    size_t total;
};

struct nn_conv { struct tensor *w, *b; int cin, cout, k, stride, pad; };
struct nn_bn { struct tensor *gamma, *beta, *running_mean, *running_var; int c; float momentum, eps; };
struct nn_linear { struct tensor *w, *b; int in, out; };
struct nn_pool { int size, stride, pad; };
/* conv3x3(s) -> BN -> ReLU -> conv3x3 -> BN, + shortcut (identity, or conv1x1(s) -> BN), -> ReLU */
struct nn_block {
    struct nn_conv conv1, conv2, short_conv;
    struct nn_bn bn1, bn2, short_bn;
    bool has_short;
};

enum nn_kind { NN_CONV, NN_BN, NN_RELU, NN_MAXPOOL, NN_AVGPOOL, NN_GAP, NN_FLATTEN, NN_LINEAR, NN_BLOCK };

struct nn_layer {
    enum nn_kind kind;
    char name[NN_NAME_LEN];
    union {
        struct nn_conv conv;
        struct nn_bn bn;
        struct nn_linear linear;
        struct nn_pool pool;
        struct nn_block block;
    } u;
};

struct nn_model {
    struct nn_layer *layers;
    int n_layers, cap_layers;
    struct nn_params ps;
    struct rng rng;           /* initialisation */
    int in_c, in_h, in_w;     /* input shape (channels, height, width) */
};

void nn_model_init(struct nn_model *m, int in_c, int in_h, int in_w, uint64_t seed);
void nn_model_free(struct nn_model *m);

/* Builders; each returns 0 or -1 (err_set). Shapes are checked at nn_model_shapes. */
int nn_add_conv(struct nn_model *m, int cin, int cout, int k, int stride, int pad, bool bias);
int nn_add_bn(struct nn_model *m, int c);
int nn_add_relu(struct nn_model *m);
int nn_add_maxpool(struct nn_model *m, int size, int stride, int pad);
int nn_add_avgpool(struct nn_model *m, int size, int stride, int pad);
int nn_add_gap(struct nn_model *m);
int nn_add_flatten(struct nn_model *m);
int nn_add_linear(struct nn_model *m, int in, int out);
int nn_add_block(struct nn_model *m, int cin, int cout, int stride);

/* Moves parameters to be's device in flat buffers; after this the model can run. */
int nn_model_finalize(struct nn_model *m, const struct backend *be);

/* x (n, in_c, in_h, in_w) -> logits */
struct tensor *nn_forward(struct nn_model *m, struct ag_ctx *c, struct tensor *x);

/* Walks the layers on shapes only: fills out_shape (rank 2 or 4) of the last layer,
 * and prints a table of layers, output shapes and parameter counts to `f` if not NULL.
 * Errors (a linear after a conv without flatten, a channel mismatch...) name the layer. */
int nn_model_shapes(const struct nn_model *m, int batch, FILE *f, int *out_ndim, int out_shape[4]);
size_t nn_param_count(const struct nn_model *m);

/* Zeroes every gradient (one memset over the flat buffer). */
void nn_zero_grad(struct nn_model *m);

#endif
