/* export.h — a trained model written out for other frameworks (docs/export.md).
 *
 *   export_safetensors   every parameter and BN buffer, named as the matching PyTorch
 *                        nn.Sequential's state_dict, so load_state_dict(strict=True) of
 *                        scripts/torch_resnet_small.py's resnet_small() takes it
 *   export_onnx          the eval-mode graph (opset 13) that onnxruntime runs
 *
 * Both read the model through one walk, export_list_build: the list of the model's
 * tensors with their PyTorch names and host copies of their values. The ONNX graph
 * takes its initializers' names and values from that list.
 *
 * The PyTorch name of layer i of the model's list is "<t>.<what>", t the index of
 * the same module in the nn.Sequential. nostall's gap is two PyTorch modules
 * (AdaptiveAvgPool2d(1), Flatten()), every other layer one, so t = i + the number of
 * gap layers before i. Inside a block: conv1, bn1, conv2, bn2 keep their names;
 * short_conv is shortcut.0 and short_bn shortcut.1 (an nn.Sequential in PyTorch).
 * A BN's gamma/beta are weight/bias.
 *
 * Input of both: images as float32 (N, C, H, W), already normalized,
 * x = (pixel / 255 - mean[c]) / std[c], with mean and std of the config's [data]
 * (stored in each file's metadata). Output of the ONNX graph: logits (N, classes).
 */
#ifndef NS_EXPORT_H
#define NS_EXPORT_H

#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "nn.h"

#define EXPORT_NAME_LEN 96
#define EXPORT_ONNX_OPSET 13
#define EXPORT_ONNX_IR_VERSION 8   /* ONNX 1.12 (Debian 12's python3-onnx) */

enum export_dtype { EXPORT_F32, EXPORT_I64 };

/* One tensor of the exported model. */
struct export_tensor {
    char name[EXPORT_NAME_LEN];   /* PyTorch state_dict key, e.g. "4.shortcut.1.running_var" */
    char nostall[NN_NAME_LEN];    /* the model's own name ("block4.short_bn.running_var");
                                   * "" for num_batches_tracked, which nostall has not */
    enum export_dtype dtype;
    int ndim;                     /* 0 for a scalar */
    int shape[4];
    size_t numel;
    const struct tensor *src;     /* the model's tensor; NULL for num_batches_tracked */
    void *host;                   /* its value on the host: numel floats, or one int64 */
};

struct export_list {
    struct export_tensor *t;
    int n, cap;
};

/* Walks m's layers (m finalized) and lists every parameter and BN buffer under its
 * PyTorch name, in the order of PyTorch's state_dict, each BN followed by its
 * num_batches_tracked (I64, value 0: nostall keeps no count, and PyTorch reads it
 * only to train with momentum=None). Values are copied from the device after
 * be->sync. Fails (err_set) on a layer kind it can't name, or when a parameter or
 * buffer of the model is left out. On failure *l is empty. */
int export_list_build(const struct nn_model *m, struct export_list *l);
void export_list_free(struct export_list *l);
/* The entry of the model's tensor `src`; NULL if it is not listed. */
const struct export_tensor *export_list_find(const struct export_list *l, const struct tensor *src);

/* The index in the PyTorch nn.Sequential of layer `layer` of m's list (rule above). */
int export_torch_index(const struct nn_model *m, int layer);

/* Write the model to `path` (see above); cfg supplies the metadata: mean, std, the
 * input shape, the class count and the architecture. The file is written whole or not
 * at all (os_replace_file: PATH.tmp, fsync, rename). 0, or -1 with err_set naming PATH. */
int export_safetensors(const struct nn_model *m, const struct config *cfg, const char *path);
int export_onnx(const struct nn_model *m, const struct config *cfg, const char *path);

#endif
