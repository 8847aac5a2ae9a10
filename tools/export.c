/* export.c — ./export CHECKPOINT --format onnx|safetensors OUT
 * Writes the model a checkpoint holds for other frameworks (docs/export.md): its
 * weights and BN statistics as safetensors, named for PyTorch's load_state_dict, or
 * its eval-mode graph as ONNX. Exit codes: 0 written, 1 error, 2 bad command line. */
#include <stdio.h>
#include <string.h>

#include "backend.h"
#include "checkpoint.h"
#include "config.h"
#include "error.h"
#include "export.h"
#include "nn.h"

static void usage(FILE *f) {
    fprintf(f, "usage: ./export CHECKPOINT --format onnx|safetensors OUT\n"
               "  onnx         the eval-mode graph (opset %d): input 'images' float32 (N,C,H,W),\n"
               "               normalized as in training; output 'logits' (N, classes)\n"
               "  safetensors  every parameter and BN buffer, named for PyTorch's load_state_dict\n",
            EXPORT_ONNX_OPSET);
}

/* The checkpoint's model on the CPU, and the config it was trained with (the file
 * carries it: checkpoint.h). */
static int open_model(const char *ckpt, struct nn_model *m, struct config *cfg) {
    const struct backend *be = backend_get(DEV_CPU, KF_VECTORIZED);
    static struct ckpt_info info;  /* a whole config: not on the stack */
    if (!be || ckpt_open_model(ckpt, be, m, &info)) return -1;
    *cfg = info.cfg;
    ckpt_info_free(&info);
    return 0;
}

int main(int argc, char **argv) {
    if (argc >= 2 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"))) { usage(stdout); return 0; }
    const char *ckpt = NULL, *format = NULL, *out = NULL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--format") && v) format = v, i++;
        else if (a[0] == '-') {
            fprintf(stderr, "error: %s '%s'\n", v ? "unknown option" : "missing value after", a);
            usage(stderr);
            return 2;
        } else if (!ckpt) ckpt = a;
        else if (!out) out = a;
        else {
            fprintf(stderr, "error: unexpected argument '%s'\n", a);
            usage(stderr);
            return 2;
        }
    }
    bool onnx = format && !strcmp(format, "onnx"), st = format && !strcmp(format, "safetensors");
    if (!ckpt || !out || !(onnx || st)) {
        fprintf(stderr, "error: %s\n", !ckpt ? "no CHECKPOINT given" : !out ? "no OUT file given"
                                       : "--format must be onnx or safetensors");
        usage(stderr);
        return 2;
    }
    struct nn_model m;
    static struct config cfg;
    if (open_model(ckpt, &m, &cfg)) {
        fprintf(stderr, "error: %s\n", err_get());
        return 1;
    }
    int rc = onnx ? export_onnx(&m, &cfg, out) : export_safetensors(&m, &cfg, out);
    if (rc) fprintf(stderr, "error: %s\n", err_get());
    else printf("export: %s -> %s (%s, %zu parameters)\n", ckpt, out, format, nn_param_count(&m));
    nn_model_free(&m);
    return rc ? 1 : 0;
}
