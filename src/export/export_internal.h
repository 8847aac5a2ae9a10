/* export_internal.h — what the two exporters of src/export/ share: the metadata both
 * files carry, and writing a file whole or not at all. */
#ifndef NS_EXPORT_INTERNAL_H
#define NS_EXPORT_INTERNAL_H

#include <stddef.h>

#include "config.h"
#include "nn.h"

#define EXPORT_META_MAX 12
#define EXPORT_META_LEN 1200 /* a value: the longest is [model] layers (CFG_STR_MAX) */

/* Key/value pairs, the same in both formats (safetensors' __metadata__, ONNX's
 * metadata_props): producer, arch, model, input_shape, classes, mean, std, input. */
struct export_meta {
    int n;
    char key[EXPORT_META_MAX][32];
    char value[EXPORT_META_MAX][EXPORT_META_LEN];
};
void export_meta_fill(const struct nn_model *m, const struct config *cfg, struct export_meta *meta);

/* Writes head[0..head_len) then body[0..body_len) to PATH.tmp, flushes it, and renames
 * it over `path`; on failure removes PATH.tmp and returns -1 with err_set naming the
 * path, the failing call and errno's text. `what` names the format in messages. */
int export_write_file(const char *path, const char *what, const void *head, size_t head_len, const void *body,
                      size_t body_len);

#endif
