/* loader.h — the asynchronous input pipeline (CPU side).
 *
 *   sampler -> N worker threads: read -> decode -> augment -> a slot of the ring
 *           -> consumer: loader_next_batch ... loader_release_batch
 *
 * The ring holds `prefetch` batch slots; batch b of an epoch always lives in slot
 * b % prefetch. Workers take work one sample at a time and block when the next
 * batch's slot is still held; the consumer blocks when its batch is not ready. One
 * mutex and condition variables, no polling. Every epoch visits every sample once
 * (or drops the last partial batch), in an order fixed by (seed, epoch), with
 * augmentation fixed by (seed, epoch, sample): batches are bit-identical whatever
 * the number of workers.
 *
 * One consumer thread calls next/release/start_epoch/destroy.
 */
#ifndef NS_LOADER_H
#define NS_LOADER_H

#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "data.h"

#define LOADER_MAX_WORKERS  64
#define LOADER_MAX_PREFETCH 64

struct loader_config {
    int batch;                /* samples per batch */
    int workers;              /* 0 = load inline on the consumer's thread */
    int prefetch;             /* ring slots, >= 1 */
    int shuffle;              /* 1: seeded shuffle per epoch; 0: dataset order */
    int drop_last;            /* 1: leave out the last batch when it is partial */
    int augment;              /* 1: random crop (crop_pad) and flip (flip) */
    int crop_pad;
    int flip;
    uint64_t seed;
    enum cfg_cache cache;     /* the config's loader.cache, as it is (config.h) */
    const char *packed_path;  /* cache = packed; NULL = "<dataset path>.packed" */
    unsigned io_delay_us;     /* simulated storage latency per file read (folder datasets) */
    enum cfg_bad_sample on_bad_sample; /* data.on_bad_sample (config.h) */
    /* Data parallel: this process is `rank` of `world` (world <= 1: alone). Every rank
     * draws the same permutation and takes positions rank, rank + world, ... of it;
     * the last count % world samples of the permutation are left out, so every rank has
     * count / world samples and the same number of batches. */
    int rank, world;
    /* Slot memory (images and labels of a batch): the CUDA backend passes pinned
     * memory here. NULL = malloc/free. */
    void *(*slot_alloc)(size_t bytes, void *ctx);
    void (*slot_free)(void *p, void *ctx);
    void *slot_ctx;
};

/* A worker's share of one batch: it filled `samples` of them between start and end
 * (monotonic ns; a worker's part of a batch is one stretch, since work is handed out
 * in order). For the trace's decode spans. */
struct loader_span {
    int64_t start_ns, end_ns;
    int samples;
};

struct batch {
    int n;                    /* samples in this batch (< batch for the last, or skips) */
    int height, width, channels;
    uint8_t *images;          /* n x height x width x channels, slot memory */
    int32_t *labels;          /* n, slot memory */
    int64_t epoch, index;     /* batch `index` of `epoch` */
    int slot;                 /* ring slot it lives in (the GPU path keys events on it) */
    int skipped;              /* samples left out (on_bad_sample = skip) */

    /* timings */
    int64_t wait_ns;          /* consumer blocked in loader_next_batch for it */
    int64_t read_ns;          /* summed over its samples: read (incl. io_delay_us) */
    int64_t decode_ns;        /*   decode */
    int64_t augment_ns;       /*   augment and copy into the slot */
    int ring_ready;           /* slots ready (this one included) when it was handed over */
    const struct loader_span *spans; /* [workers ? workers : 1]; samples == 0: did not help */
};

/* Totals per worker since loader_create, for the report and the bench. */
struct loader_worker_stats {
    int64_t samples;
    int64_t read_ns, decode_ns, augment_ns;
    int64_t cpu_ns;           /* the worker thread's CPU time (workers = 0: the consumer's
                                 CPU time spent loading) */
};

struct loader;

void loader_config_default(struct loader_config *cfg);

/* Checks cfg, allocates the ring, opens the packed file (cache = packed), starts the
 * workers. The dataset must outlive the loader. */
int loader_create(const struct loader_config *cfg, const struct dataset *ds, struct loader **out);
/* Stops the workers wherever they are (mid-epoch, ring full or empty), joins them
 * and frees everything. Takes at most one sample's read + decode per worker. */
void loader_destroy(struct loader *l);

/* Starts epoch `epoch` (any batches of the previous one are discarded). Every batch
 * handed out must have been released first. */
int loader_start_epoch(struct loader *l, int64_t epoch);
/* The same epoch, from batch first_batch on: resuming from a checkpoint taken after
 * first_batch batches gives exactly the batches the run would have seen. */
int loader_start_epoch_at(struct loader *l, int64_t epoch, int64_t first_batch);

/* 1: *out is the next batch; 0: the epoch is over; -1: error, err_get() names the
 * sample's file (the epoch is over too). The batch stays valid until released. */
int loader_next_batch(struct loader *l, const struct batch **out);
/* Gives the batch's slot back to the workers. */
void loader_release_batch(struct loader *l, const struct batch *b);
/* The error that ended this epoch, or NULL; valid until the next start_epoch. */
const char *loader_error(struct loader *l);

int64_t loader_batches_per_epoch(const struct loader *l);
int loader_workers(const struct loader *l);
/* worker in 0..max(workers,1)-1. */
int loader_worker_stats(struct loader *l, int worker, struct loader_worker_stats *out);
/* Samples skipped since loader_create (on_bad_sample = skip); the last one's error is
 * copied into last (may be NULL). */
int64_t loader_skipped(struct loader *l, char *last, size_t len);

#endif
