/* ring_check.h — the real ring (loader.c + feeder.c) on a CUDA table, checked by
 * device checksums. test_cuda runs it under Criterion; tests/tsan_cuda.c runs it
 * under ThreadSanitizer, where Criterion can't run (Criterion issue #274), so it
 * reports through its return value and err_set, not through asserts.
 *
 * Two epochs of a small PNG folder through the loader (two workers, three pinned or
 * pageable slots) and the feeder (overlap on or off), with a slow step on the
 * device for each batch: the step checksums the batch's device bytes, which must be
 * the bytes the host slot held when the batch was handed over. On the emulated
 * device every copy is made late on purpose (emu_set_copy_delay_us), so a feeder
 * that lets compute start before its copy, or hands a slot back to the workers
 * before the device is done with it, delivers changed bytes every time. The includer
 * declares cuda_spin_us and the checksums (cuda/cuda_backend.h). */
#ifndef NS_RING_CHECK_H
#define NS_RING_CHECK_H

#include <stdbool.h>
#include <stdint.h>

#include "data.h"
#include "error.h"
#include "feeder.h"
#include "loader.h"

enum { RING_CLASSES = 4, RING_PER_CLASS = 24, RING_H = 28, RING_W = 28, RING_BATCH = 8 };

/* The batches whose device bytes differ from the host's (*batches counts them
 * all), or -1 with err_set when the loader or feeder failed. */
static inline int ring_check(const struct backend *be, struct dataset *ds, bool pinned,
                             bool overlap, int *batches) {
    enum { MAX_BATCHES = 64 };
    struct loader_config lc;
    loader_config_default(&lc);
    lc.batch = RING_BATCH;
    lc.prefetch = 3;
    lc.workers = 2;
    lc.slot_alloc = feeder_slot_alloc;
    lc.slot_free = feeder_slot_free;
    lc.slot_ctx = feeder_slot_ctx(be, pinned);
    struct loader *ld = NULL;
    struct feeder *f = NULL;
    uint32_t *sums = NULL, got[2 * MAX_BATCHES], expect[2 * MAX_BATCHES];
    int nb = 0, bad = -1;
    *batches = 0;
    if (loader_create(&lc, ds, &ld) != 0 ||
        feeder_create(be, ld, lc.prefetch, data_sample_bytes(ds), lc.batch, overlap, &f) != 0 ||
        !(sums = be->alloc(sizeof(uint32_t) * 2 * MAX_BATCHES)))
        goto out;
    for (int epoch = 0; epoch < 2; epoch++) {
        if (feeder_start_epoch(f, epoch, 0) != 0) goto out;
        struct fed_batch fb;
        int rc;
        while ((rc = feeder_next(f, &fb)) == 1) {
            if (nb == MAX_BATCHES) {
                err_set("ring_check: more than %d batches", MAX_BATCHES);
                goto out;
            }
            const struct batch *b = fb.host;
            size_t image_bytes = (size_t)b->n * data_sample_bytes(ds);
            size_t label_bytes = (size_t)b->n * sizeof(int32_t);
            expect[2 * nb] = cuda_checksum_host(b->images, image_bytes);
            expect[2 * nb + 1] = cuda_checksum_host((const uint8_t *)b->labels, label_bytes);
            cuda_spin_us(1000); /* the step: slow, so the ring fills up behind it */
            cuda_checksum_u8(fb.images, image_bytes, sums + 2 * nb);
            cuda_checksum_u8((const uint8_t *)fb.labels, label_bytes, sums + 2 * nb + 1);
            feeder_done(f, &fb);
            nb++;
        }
        if (rc != 0) goto out;
    }
    be->copy(got, sums, sizeof(uint32_t) * 2 * (size_t)nb, COPY_D2H);
    bad = 0;
    for (int i = 0; i < nb; i++)
        bad += got[2 * i] != expect[2 * i] || got[2 * i + 1] != expect[2 * i + 1];
out:
    if (sums) be->free(sums);
    feeder_destroy(f);
    if (ld) loader_destroy(ld);
    *batches = nb;
    return bad;
}

#endif
