/* export_internal.h — what the two exporters of src/export/ share: the metadata both
 * files carry. (Files are written whole or not at all by os.h's os_replace_file.) */
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

#endif
