/* models.h — turn a [model] section into layers. */
#ifndef NS_MODELS_H
#define NS_MODELS_H

#include <stdio.h>

#include "config.h"
#include "nn.h"

/* Builds the model cfg describes for cfg->data's input and classes, initialised
 * from cfg->loader.seed. Errors name the [model] key at fault. */
int model_build(struct nn_model *m, const struct config *cfg);

/* The builders model_build dispatches to. */
int model_resnet(struct nn_model *m, const struct cfg_int_list *widths, const struct cfg_int_list *blocks,
                 int classes);
/* `spec` is a space-separated layer list, e.g. "conv3x3-32 bn relu maxpool2 gap linear";
 * tokens: convKxK-C[/S] (stride S, padding K/2), block-C[/S] (a BasicBlock), bn, relu,
 * maxpoolK, avgpoolK, gap, flatten, linear[-N] (N features; the last linear defaults to
 * the class count). The grammar is one table in models/cnn.c; the two functions after
 * this one read it out. */
int model_cnn(struct nn_model *m, const char *spec, int classes);
/* The token forms model_cnn accepts, with a line each and an example, for
 * ./train --help-config. */
void model_cnn_print_grammar(FILE *out);
/* Form i ("convKxK-C[/S]", ...) and, in *example if not NULL, a token of that form;
 * NULL past the last. */
const char *model_cnn_form(size_t i, const char **example);
int model_mlp(struct nn_model *m, const struct cfg_int_list *hidden, int classes);

#endif
