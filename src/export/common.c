/* common.c — the metadata both exported formats carry. */
#include <stdio.h>
#include <string.h>

#include "error.h"
#include "export_internal.h"

static void meta_add(struct export_meta *meta, const char *key, const char *value) {
    if (meta->n == EXPORT_META_MAX) return;  /* the fixed set below fits: see EXPORT_META_MAX */
    snprintf(meta->key[meta->n], sizeof meta->key[0], "%s", key);
    snprintf(meta->value[meta->n], sizeof meta->value[0], "%s", value);
    meta->n++;
}

/* "0.286" or "0.485,0.456,0.406": the list as the config file writes it */
static void meta_add_key(struct export_meta *meta, const char *name, const struct config *cfg, const char *key) {
    char v[EXPORT_META_LEN];
    if (cfg_format(cfg, key, v, sizeof v)) snprintf(v, sizeof v, "?");
    meta_add(meta, name, v);
}

void export_meta_fill(const struct nn_model *m, const struct config *cfg, struct export_meta *meta) {
    char v[EXPORT_META_LEN];
    meta->n = 0;
    meta_add(meta, "producer", "nostall");
    meta_add(meta, "arch", cfg_enum_name("model.arch", (int)cfg->model.arch));
    /* the key that shapes the model, as in the config file */
    switch (cfg->model.arch) {
    case CFG_ARCH_RESNET:
        meta_add_key(meta, "model.widths", cfg, "model.widths");
        meta_add_key(meta, "model.blocks", cfg, "model.blocks");
        break;
    case CFG_ARCH_CNN: meta_add_key(meta, "model.layers", cfg, "model.layers"); break;
    case CFG_ARCH_MLP: meta_add_key(meta, "model.hidden", cfg, "model.hidden"); break;
    }
    snprintf(v, sizeof v, "%d,%d,%d", m->in_c, m->in_h, m->in_w);
    meta_add(meta, "input_shape", v);  /* C,H,W of one image */
    snprintf(v, sizeof v, "%d", cfg->data.classes);
    meta_add(meta, "classes", v);
    meta_add_key(meta, "mean", cfg, "data.mean");
    meta_add_key(meta, "std", cfg, "data.std");
    meta_add(meta, "input", "float32 NCHW, already normalized: x = (pixel / 255 - mean[c]) / std[c]");
}
