/* interop_adamw.c — nostall's AdamW, written out for PyTorch to check (make interop):
 * 20 steps of seeded gradients on 4099 seeded weights (not a multiple of 4) through
 * optim_init/optim_step on the CPU backend, as the trainer steps.
 *
 *   interop_adamw OUT.bin
 *
 * OUT.bin, little-endian: "NSADAMW\\0", u32 n, u32 steps, f64 lr, beta1, beta2, eps,
 * weight_decay; then n f32 initial weights, steps x n f32 gradients, n f32 final
 * weights. scripts/interop.py gives torch.optim.AdamW the same weights and gradients. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "config.h"
#include "error.h"
#include "nn.h"
#include "optim.h"
#include "testutil.h"

enum { STEPS = 20 };

int main(int argc, char **argv) {
    if (argc != 2) { fprintf(stderr, "usage: interop_adamw OUT.bin\n"); return 2; }
    struct config cfg;
    cfg_defaults(&cfg);
    const char *sets[] = {"optim.name=adamw", "optim.lr=0.01", "optim.weight_decay=0.05", "optim.beta1=0.85",
                          "optim.beta2=0.99", "optim.eps=1e-6"};
    for (size_t i = 0; i < sizeof sets / sizeof *sets; i++)
        if (cfg_set(&cfg, sets[i])) { fprintf(stderr, "interop_adamw: %s\n", err_get()); return 1; }
    struct nn_model m;
    nn_model_init(&m, 1, 1, 1, 0);
    struct optimizer o;
    if (nn_add_linear(&m, 4098, 1) || nn_model_finalize(&m, backend_get(DEV_CPU, KF_VECTORIZED)) ||
        optim_init(&o, &cfg, &m)) {
        fprintf(stderr, "interop_adamw: %s\n", err_get());
        return 1;
    }
    /* the weight (4098) and the bias (1): the parameters' values, not the flat buffer's padding */
    struct tensor *w = m.ps.params[0], *b = m.ps.params[1];
    size_t n = w->numel + b->numel;
    float *w0 = malloc(n * sizeof *w0), *g = malloc(STEPS * n * sizeof *g), *w1 = malloc(n * sizeof *w1);
    FILE *f = fopen(argv[1], "wb");
    if (!w0 || !g || !w1 || !f) { fprintf(stderr, "interop_adamw: can't write %s\n", argv[1]); return 1; }
    uint64_t seed = 2026;
    tu_fill(&seed, w0, n, -1, 1);
    tu_fill(&seed, g, STEPS * n, -1, 1);
    memcpy(w->data, w0, w->numel * sizeof(float));
    memcpy(b->data, w0 + w->numel, b->numel * sizeof(float));
    for (int s = 0; s < STEPS; s++) {
        memcpy(w->grad->data, g + (size_t)s * n, w->numel * sizeof(float));
        memcpy(b->grad->data, g + (size_t)s * n + w->numel, b->numel * sizeof(float));
        optim_step(&o, &m, (float)cfg.optim.lr); /* a constant rate: the schedule is the trainer's */
    }
    memcpy(w1, w->data, w->numel * sizeof(float));
    memcpy(w1 + w->numel, b->data, b->numel * sizeof(float));
    uint32_t head[2] = {(uint32_t)n, STEPS};
    double hyper[5] = {cfg.optim.lr, cfg.optim.beta1, cfg.optim.beta2, cfg.optim.eps, cfg.optim.weight_decay};
    fwrite("NSADAMW", 1, 8, f);
    fwrite(head, sizeof head, 1, f);
    fwrite(hyper, sizeof hyper, 1, f);
    fwrite(w0, sizeof *w0, n, f);
    fwrite(g, sizeof *g, STEPS * n, f);
    fwrite(w1, sizeof *w1, n, f);
    int bad = ferror(f) | fclose(f);
    optim_free(&o, &m);
    nn_model_free(&m);
    free(w0), free(g), free(w1);
    if (bad) { fprintf(stderr, "interop_adamw: writing %s failed\n", argv[1]); return 1; }
    return 0;
}
