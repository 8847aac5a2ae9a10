/* models.h — turn a [model] section into layers. */
#ifndef NS_MODELS_H
#define NS_MODELS_H

#include "config.h"
#include "nn.h"

/* Builds the model cfg describes for cfg->data's input and classes, initialised
 * from cfg->loader.seed. Errors name the [model] key at fault. */
int model_build(struct nn_model *m, const struct config *cfg);

/* The builders model_build dispatches to. */
int model_resnet(struct nn_model *m, const struct cfg_int_list *widths, const struct cfg_int_list *blocks,
                 int classes);
/* `spec` is a space-separated layer list, e.g. "conv3x3-32 bn relu maxpool2 gap linear";
 * tokens: convKxK-C[/S] (stride S, padding K/2), bn, relu, maxpoolK, avgpoolK, gap,
 * flatten, linear[-N] (N features; the last linear defaults to the class count). */
int model_cnn(struct nn_model *m, const char *spec, int classes);
int model_mlp(struct nn_model *m, const struct cfg_int_list *hidden, int classes);

#endif
