/* checkpoint.h — save and resume a training run, crash-safely.
 *
 * A checkpoint holds the weights, the SGD momentum, the BN running statistics and
 * the training position (struct ckpt_state). Gradients are not saved: every step
 * recomputes them from zero.
 *
 * File format, version 1. All fields little-endian, no padding between them:
 *
 *   magic        8 bytes  "NSCKPT\r\n" (the \r\n catches text-mode line-ending damage)
 *   version      u32      CKPT_VERSION
 *   reserved     u32      0
 *   file_bytes   u64      size of the whole file, CRC included (detects truncation)
 *   state        fingerprint u64 (the caller's hash of the config sections that must
 *                match to resume), 4 x i64 (epoch, step, batch_in_epoch, epochs_done),
 *                CKPT_RNG_STATES x u64, CKPT_METRICS x f64
 *   n_params u32, n_buffers u32, total u64 (floats in each flat buffer, padding included)
 *   n_params  x { name: CKPT_NAME_BYTES bytes, NUL-padded; numel u64 }
 *   n_buffers x { name: CKPT_NAME_BYTES bytes, NUL-padded; numel u64 }
 *   weights      total f32     (the model's flat ps.w, as laid out by nn_model_finalize)
 *   momentum     total f32     (ps.v)
 *   buffers      each buffer's numel f32, in order
 *   crc32        u32      zlib crc32 of every byte before it
 *
 * Saving writes PATH.tmp, fsyncs it, renames it over PATH and fsyncs the directory,
 * so at every instant PATH is either the old checkpoint or the new one, complete.
 * Loading validates the whole file in host memory before it touches the model, so a
 * refused file leaves the model (and the state) exactly as they were.
 */
#ifndef NS_CHECKPOINT_H
#define NS_CHECKPOINT_H

#include <stddef.h>
#include <stdint.h>

#include "nn.h"

#define CKPT_VERSION 1
#define CKPT_NAME_BYTES 48
#define CKPT_RNG_STATES 4
#define CKPT_METRICS 8

/* Where training stands. The trainer decides what each rng/metrics slot means
 * (e.g. rng[0] = loader shuffle, rng[1] = augmentation; metrics = running totals
 * of the report such as seconds waiting, seconds computing, images seen). */
struct ckpt_state {
    uint64_t fingerprint;     /* the caller's hash of the config sections that must match */
    int64_t epoch;            /* epoch in progress, from 0 */
    int64_t step;             /* optimizer steps taken in the whole run */
    int64_t batch_in_epoch;   /* batches of `epoch` already trained: resume skips them */
    int64_t epochs_done;      /* completed epochs */
    uint64_t rng[CKPT_RNG_STATES];
    double metrics[CKPT_METRICS];
};

/* Writes m's weights, momentum and BN buffers plus *st (fingerprint included) to `path` (see above). m must be
 * finalized. On failure PATH is untouched (the old checkpoint survives), PATH.tmp is
 * removed, and the message names the path, the failing call and errno's text. */
int ckpt_save(const char *path, const struct nn_model *m, const struct ckpt_state *st);

/* Reads `path` into m and *st. Refuses, with a message saying which check failed and
 * what to do, a missing or unreadable file, a file that is not a checkpoint, another
 * format version, a truncated or damaged file (size, CRC), a different model layout
 * (naming the first differing parameter or buffer), and a fingerprint other than
 * `expected_fingerprint`. On success st->fingerprint is that value. On refusal neither m nor *st is modified. */
int ckpt_load(const char *path, struct nn_model *m, struct ckpt_state *st,
              uint64_t expected_fingerprint);

/* The same checks and effect as ckpt_load, on a checkpoint already in memory (used by
 * ckpt_load, and by the fuzzer). Never reads outside buf[0..len). */
int ckpt_load_mem(const void *buf, size_t len, struct nn_model *m, struct ckpt_state *st,
                  uint64_t expected_fingerprint);

/* Size in bytes of m's checkpoint file (m finalized). */
size_t ckpt_file_bytes(const struct nn_model *m);

/* Before training: checks that a checkpoint can be saved at `path` — its directory
 * exists and is writable, PATH is not a directory, and `probe_bytes` of disk space can
 * be reserved (a probe file PATH.tmp is allocated and removed). Pass
 * ckpt_file_bytes(m), or 0 to skip the space check. */
int ckpt_check_writable(const char *path, size_t probe_bytes);

#endif
