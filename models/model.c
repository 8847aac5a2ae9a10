/* model.c — [model] arch -> builder. */
#include "error.h"
#include "models.h"

int model_build(struct nn_model *m, const struct config *cfg) {
    nn_model_init(m, cfg->data.channels, cfg->data.height, cfg->data.width, (uint64_t)cfg->loader.seed);
    int rc;
    switch (cfg->model.arch) {
    case CFG_ARCH_RESNET: rc = model_resnet(m, &cfg->model.widths, &cfg->model.blocks, cfg->data.classes); break;
    case CFG_ARCH_CNN: rc = model_cnn(m, cfg->model.layers, cfg->data.classes); break;
    default: rc = model_mlp(m, &cfg->model.hidden, cfg->data.classes); break;
    }
    if (!rc) rc = nn_model_shapes(m, 1, NULL, NULL, NULL);
    if (rc) nn_model_free(m);
    return rc;
}
