/* feeder.h — batches on the compute device: the loader's copy stage.
 *
 * On the CPU the loader's slots already are where compute reads, so a batch is used
 * in place. On a device with its own memory (backend->stage != NULL) each ring slot
 * has a twin buffer on the device; the batch travels as uint8 (a quarter of float32's
 * bytes) with cudaMemcpyAsync, on the copy stream when overlap is on, and the
 * compute stream waits for it with an event, not the host:
 *
 *   host:     next_batch(i+1)  copy(i+1) -> copy stream     launch step i     sync
 *   copy:                      [== h2d i+1 ==]
 *   compute:                   [=========== step i ===========]
 *
 * With overlap the feeder runs one batch ahead (it holds two ring slots), so the
 * copy of batch i+1 runs while batch i computes. A slot goes back to the workers
 * only after the device has finished reading its twin. */
#ifndef NS_FEEDER_H
#define NS_FEEDER_H

#include <stdbool.h>
#include <stdint.h>

#include "backend.h"
#include "loader.h"

struct fed_batch {
    const struct batch *host;  /* the loader's batch: n, shape, labels, timings */
    const uint8_t *images;     /* n x h x w x c uint8, on the compute device */
    const int32_t *labels;     /* n, on the compute device */
    int64_t wait_ns;           /* the training thread blocked on the ring for it */
};

struct feeder;

/* Slot memory for loader_config.slot_alloc/slot_free: pinned host memory when the
 * backend has a copy stage and `pinned` is set, malloc otherwise. Pass the value of
 * feeder_slot_ctx as loader_config.slot_ctx. */
void *feeder_slot_alloc(size_t bytes, void *ctx);
void feeder_slot_free(void *p, void *ctx);
void *feeder_slot_ctx(const struct backend *be, bool pinned);

/* prefetch, batch and the sample size (h*w*c bytes) must match the loader's. overlap: copy on its own stream,
 * one batch ahead (needs prefetch >= 2; with 1 slot it copies on the compute stream).
 * *out is set on success only (NULL on failure), so a caller may always destroy it. */
int feeder_create(const struct backend *be, struct loader *ld, int prefetch, size_t sample_bytes, int batch,
                  bool overlap, struct feeder **out);
/* The feeder's host allocations go through this (calloc), so a test can make one fail. */
extern void *(*feeder_host_calloc)(size_t n, size_t size);
void feeder_destroy(struct feeder *f);

int feeder_start_epoch(struct feeder *f, int64_t epoch, int64_t first_batch);
/* 1: *out is ready to compute on (queued behind its copy); 0: epoch over; -1: error. */
int feeder_next(struct feeder *f, struct fed_batch *out);
/* Call after the step's work on `fb` is queued: marks the slot consumed when the
 * device gets there, and returns slots whose work is done to the loader. */
void feeder_done(struct feeder *f, const struct fed_batch *fb);
/* Time of the batches done since the last call: the copy (device events; 0 on the
 * CPU) and the compute between feeder_next and feeder_done (device events on a
 * device, the host clock on the CPU, where kernels are synchronous). */
void feeder_take_times(struct feeder *f, int64_t *h2d_ns, int64_t *compute_ns);

/* Where the device ran the last batch given to feeder_done, on the host's clock
 * (os_now_ns): its copy and its compute, from the same events, placed against an
 * anchor event the host waited for at the start of the epoch. They are the trace's
 * stream lanes. False on the CPU, which has no streams. */
struct device_spans { int64_t copy_start_ns, copy_ns, compute_start_ns, compute_ns; };
bool feeder_last_spans(const struct feeder *f, struct device_spans *out);

#endif
