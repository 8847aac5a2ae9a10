/* common.c — the metadata both exported formats carry, and writing a file whole. */
#include <errno.h>
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

int export_write_file(const char *path, const char *what, const void *head, size_t head_len, const void *body,
                      size_t body_len) {
    char tmp[4096];
    if (snprintf(tmp, sizeof tmp, "%s.tmp", path) >= (int)sizeof tmp)
        return err_set("%s: the path is too long (%zu bytes)", path, strlen(path));
    FILE *f = fopen(tmp, "wb");
    if (!f)
        return err_set("writing the %s file %s: fopen: %s; HINT: check that the directory exists and is "
                       "writable", what, tmp, strerror(errno));
    int ok = fwrite(head, 1, head_len, f) == head_len && (!body_len || fwrite(body, 1, body_len, f) == body_len);
    int e = errno;
    if (fclose(f) != 0 && ok) { ok = 0; e = errno; }
    if (!ok) {
        remove(tmp);
        return err_set("writing the %s file %s: %s; HINT: check the free disk space", what, tmp, strerror(e));
    }
    if (rename(tmp, path)) {
        e = errno;
        remove(tmp);
        return err_set("writing the %s file %s: rename from %s: %s; HINT: is %s a directory?", what, path, tmp,
                       strerror(e), path);
    }
    return 0;
}
