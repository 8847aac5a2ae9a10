/* checkpoint.h — save and resume a training run crash-safely, and reopen the model it
 * trained without the config file it came from.
 *
 * A checkpoint describes itself: the config the run was trained with (as text, so the
 * model can be rebuilt), the class names, every tensor with its name and shape, the
 * optimizer's state and where training stands. Gradients are not saved: every step
 * recomputes them from zero.
 *
 * File format, version 2. All fields little-endian, no padding between them:
 *
 *   magic        8 bytes  "NSCKPT\r\n" (the \r\n catches text-mode line-ending damage)
 *   version      u32      CKPT_VERSION
 *   n_sections   u32
 *   file_bytes   u64      size of the whole file, CRC included (detects truncation)
 *   n_sections x { tag: 8 bytes, ASCII, NUL-padded; bytes: u64; payload: `bytes` bytes }
 *   crc32        u32      zlib crc32 of every byte before it
 *
 * The sections, each exactly once, in this order (an unknown tag is refused: it comes
 * from a newer format, and skipping it could resume wrongly):
 *   "config"   the run's resolved config, as cfg_print writes it (text). It names the
 *              architecture, the input (height, width, channels), mean/std and the
 *              class count: what it takes to rebuild the model.
 *   "classes"  the class names, one per line, in label order (a dataset without names
 *              gets "0", "1", ...).
 *   "tensors"  u32 count, then count x { name: CKPT_NAME_BYTES bytes, NUL-padded;
 *              kind u32 (0 parameter, 1 buffer); dtype u32 (0 = f32: the stored
 *              precision, whatever the training precision); ndim u32 (1..4);
 *              reserved u32; dims: 4 x i64 (unused = 1) }, then each tensor's values
 *              in table order. Parameters come first, in the model's order.
 *   "optim"    name: 16 bytes NUL-padded ("sgd"); steps u64 (updates applied: the run's step);
 *              n_slots u32; reserved u32; n_slots x { slot name: 16 bytes }, then per
 *              slot the state of every parameter in table order, f32 (SGD: one slot,
 *              "momentum").
 *   "state"    fingerprint u64 (the hash of the config keys that must match to resume),
 *              epoch, step, batch_in_epoch, epochs_done: i64; world_size u32; reserved u32.
 *              The shuffle and the augmentation are drawn from (loader.seed, epoch,
 *              sample index), so the position is the whole RNG state.
 *
 * Saving writes PATH.tmp, fsyncs it, renames it over PATH and fsyncs the directory,
 * so at every instant PATH is either the old checkpoint or the new one, complete.
 * Loading validates the whole file in host memory before it touches the model, so a
 * refused file leaves the model (and the state) exactly as they were. Version 1 files
 * (before the format described itself) are refused with a message that says so.
 */
#ifndef NS_CHECKPOINT_H
#define NS_CHECKPOINT_H

#include <stddef.h>
#include <stdint.h>

#include "backend.h"
#include "config.h"
#include "nn.h"

#define CKPT_VERSION 2
#define CKPT_NAME_BYTES 48

/* Where training stands. */
struct ckpt_state {
    uint64_t fingerprint;     /* the caller's hash of the config sections that must match */
    int64_t epoch;            /* epoch in progress, from 0 */
    int64_t step;             /* optimizer steps taken in the whole run */
    int64_t batch_in_epoch;   /* batches of `epoch` already trained: resume skips them */
    int64_t epochs_done;      /* completed epochs */
    uint32_t world_size;      /* processes that trained it (1: not data-parallel) */
};

/* What the file says of the model: enough to use it without its config file. */
struct ckpt_info {
    struct config cfg;        /* the config it was trained with */
    int classes;
    char **class_names;       /* classes names, in label order */
    struct ckpt_state st;
    char optim[16];           /* the optimizer whose state it holds */
    size_t n_tensors, n_values; /* tensors and float values of the model */
};
void ckpt_info_free(struct ckpt_info *info);

/* An optimizer's state beyond the weights: named slots, each a flat buffer on the
 * model's device laid out as ps->w (one value per parameter value), and its step count.
 * NULL where one is asked for: SGD, its momentum in ps->v, steps = the state's step. */
struct ckpt_optim {
    const char *name;          /* "sgd", "adamw" */
    int n_slots;               /* 1..CKPT_MAX_SLOTS */
    const char *slot_names[2];
    float *slots[2];
    uint64_t steps;            /* updates applied (AdamW's bias correction counts them) */
};
#define CKPT_MAX_SLOTS 2

/* Writes m's weights, BN buffers and optimizer state (opt, or NULL: SGD), cfg as text,
 * the class names (NULL: "0", "1", ...; else cfg->data.classes of them) and *st to
 * `path` (see above).
 * m must be finalized. On failure PATH is untouched (the old checkpoint survives),
 * PATH.tmp is removed, and the message names the path, the failing call and errno's text. */
int ckpt_save(const char *path, const struct nn_model *m, const struct config *cfg,
              const char *const *class_names, const struct ckpt_optim *opt, const struct ckpt_state *st);

/* --resume: reads `path` into m (built from the same config), the optimizer's slots
 * into opt's buffers and its step count (opt NULL: SGD's momentum into ps->v), and *st.
 * Refuses another optimizer (or another number of slots), and, with a
 * message saying which check failed and what to do, a missing or unreadable file, a
 * file that is not a checkpoint, another format version, a truncated or damaged file
 * (size, CRC, a section cut short), a different model (naming the first differing
 * tensor or shape), and a fingerprint other than `expected_fingerprint`. On refusal
 * neither m nor *st is modified. */
int ckpt_load(const char *path, struct nn_model *m, struct ckpt_optim *opt, struct ckpt_state *st,
              uint64_t expected_fingerprint);
/* The same on a checkpoint already in memory (ckpt_load and the fuzzer use it). Never
 * reads outside buf[0..len). */
int ckpt_load_mem(const void *buf, size_t len, struct nn_model *m, struct ckpt_optim *opt, struct ckpt_state *st,
                  uint64_t expected_fingerprint);

/* For eval, predict and export: rebuilds the model the checkpoint's config describes,
 * finalizes it on `be`, loads its weights and BN statistics, and fills *info (free it
 * with ckpt_info_free; on failure there is nothing to free and m is empty). */
int ckpt_open_model(const char *path, const struct backend *be, struct nn_model *m, struct ckpt_info *info);
/* The same on a checkpoint already in memory (a tool that read it once to choose the
 * device from its config). */
int ckpt_open_model_mem(const void *buf, size_t len, const struct backend *be, struct nn_model *m,
                        struct ckpt_info *info);

/* Reads every section of a checkpoint into *info without building a model: the tools
 * read the config first, to choose the device. ckpt_read_info_mem does it on a file in
 * memory (the fuzzer's second entry). Free *info with ckpt_info_free. */
int ckpt_read_info(const char *path, struct ckpt_info *info);
int ckpt_read_info_mem(const void *buf, size_t len, struct ckpt_info *info);

/* About the size in bytes of m's checkpoint file (m finalized), for the disk-space
 * check: the values exactly, plus 64 KiB for the text sections (a config is about 4 KiB;
 * thousands of long class names would need more). */
size_t ckpt_file_bytes(const struct nn_model *m);

/* Before training: checks that a checkpoint can be saved at `path` — its directory
 * exists and is writable, PATH is not a directory, and `probe_bytes` of disk space can
 * be reserved (a probe file PATH.tmp is allocated and removed). Pass
 * ckpt_file_bytes(m), or 0 to skip the space check. */
int ckpt_check_writable(const char *path, size_t probe_bytes);

#endif
