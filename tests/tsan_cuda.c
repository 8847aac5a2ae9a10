/* tsan_cuda.c — the threaded part of test_cuda, without Criterion, for ThreadSanitizer
 * (make test-tsan-cuda; Criterion itself can't start under it, its issue #274).
 *
 * On the emulated device the streams are threads, so this is where a race between
 * the host, the loader's workers and the device shows: the real ring (loader.c and
 * feeder.c, ring_check.h) in all four pinned/overlap settings with late copies, then
 * two training steps of resnet_small on each CUDA table (kernels on the compute
 * stream's thread, blocks as fibers, results read back by the host). Exit status 0
 * when every batch arrived intact and the losses are finite; ThreadSanitizer's own
 * reports go where TSAN_OPTIONS says. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "autograd.h"
#include "backend.h"
#include "cuda/cuda_backend.h"
#include "emu.h"
#include "error.h"
#include "fixtures/datagen.h"
#include "models.h"
#include "nn.h"
#include "ops.h"
#include "optim.h"
#include "ring_check.h"
#include "testutil.h"

static int failures;

static void check(bool ok, const char *what) {
    printf("tsan_cuda: %-60s %s\n", what, ok ? "ok" : "FAILED");
    if (!ok) {
        failures++;
        if (err_get()[0]) printf("tsan_cuda:   %s\n", err_get());
    }
}

/* Two SGD steps of a narrow resnet_small (widths 4, 8, 8: the kernels are not what
 * this checks, and they are slow under ThreadSanitizer) on 2 random images; the
 * second step's loss. */
static float two_steps(const struct backend *be) {
    enum { N = 2, H = 28, W = 28, CLASSES = 10 };
    struct nn_model m;
    struct ag_ctx c;
    nn_model_init(&m, 1, H, W, 0);
    struct cfg_int_list narrow = {3, {4, 8, 8}}, blocks = {3, {1, 1, 1}};
    if (model_resnet(&m, &narrow, &blocks, CLASSES) != 0 || nn_model_finalize(&m, be) != 0 ||
        ag_ctx_init(&c, be) != 0)
        return NAN;
    uint8_t img[N * H * W];
    int32_t lab[N];
    uint64_t seed = 2024;
    for (size_t i = 0; i < sizeof img; i++) img[i] = (uint8_t)tu_rand_u32(&seed);
    for (int i = 0; i < N; i++) lab[i] = i % CLASSES;
    uint8_t *dimg = be->alloc(sizeof img);
    int32_t *dlab = be->alloc(sizeof lab);
    float loss = NAN;
    if (dimg && dlab) {
        be->copy(dimg, img, sizeof img, COPY_H2D);
        be->copy(dlab, lab, sizeof lab, COPY_H2D);
        const float mean = 0.2860f, std = 0.3530f;
        struct sgd opt = {.lr = 0.1f, .momentum = 0.9f, .weight_decay = 5e-4f, .nesterov = true};
        for (int step = 0; step < 2; step++) {
            struct tensor *x = op_normalize_u8(&c, dimg, N, H, W, 1, &mean, &std);
            struct tensor *logits = x ? nn_forward(&m, &c, x) : NULL;
            struct tensor *l = logits ? op_softmax_xent(&c, logits, dlab) : NULL;
            if (!l) break;
            loss = ag_item(&c, l);
            nn_zero_grad(&m);
            if (ag_backward(&c, l) != 0) {
                loss = NAN;
                break;
            }
            optim_sgd_step(&m, &opt, opt.lr);
            ag_reset(&c);
        }
    }
    if (dimg) be->free(dimg);
    if (dlab) be->free(dlab);
    ag_ctx_free(&c);
    nn_model_free(&m);
    return loss;
}

int main(void) {
    const struct backend *vec = backend_get(DEV_CUDA, KF_VECTORIZED);
    const struct backend *loop = backend_get(DEV_CUDA, KF_LOOP);
    check(vec && loop, "the emulated device's tables");
    if (!vec || !loop) return 1;

    char *dir = dg_tmpdir();
    struct data_folder_options fo = {RING_H, RING_W, 1, 0};
    struct dataset *ds = NULL;
    check(dir && dg_make_folder(dir, RING_CLASSES, RING_PER_CLASS, RING_H, RING_W, 1) > 0 &&
              data_open_folder(dir, &fo, &ds) == 0,
          "a PNG folder for the ring");
    if (ds) {
        emu_set_copy_delay_us(3000);
        for (int pinned = 0; pinned < 2; pinned++)
            for (int overlap = 0; overlap < 2; overlap++) {
                char what[96];
                int batches, bad = ring_check(vec, ds, pinned, overlap, &batches);
                snprintf(what, sizeof what, "ring, %s slots, overlap %s: %d of %d batches changed",
                         pinned ? "pinned" : "pageable", overlap ? "on" : "off", bad, batches);
                check(bad == 0 && batches > 0, what);
            }
        emu_set_copy_delay_us(0);
        data_close(ds);
    }
    if (dir) {
        dg_rm_tree(dir);
        free(dir);
    }
    const struct backend *tables[] = {loop, vec};
    for (int i = 0; i < 2; i++) {
        char what[96];
        float loss = two_steps(tables[i]);
        snprintf(what, sizeof what, "two steps of a narrow resnet_small on %s: loss %.4f", tables[i]->name,
                 (double)loss);
        check(isfinite(loss), what);
    }
    check(cuda_backend_error() == NULL, "no CUDA error recorded");
    printf("tsan_cuda: %s\n", failures ? "FAILED" : "every check passed");
    return failures ? 1 : 0;
}
