/* schema.c — the config's keys: for each, its section, name, type, default, range,
 * enum values and a line of help (the row format is in schema.h). The parser in
 * config.c is driven by this table alone, so a new key is one row here. */
#include <limits.h>
#include <stddef.h>

#include "schema.h"

#define OFF(sec, key) offsetof(struct config, sec.key)
#define INT(sec, key, def, lo, hi, fl, help) \
    { #sec, #key, T_INT, def, lo, hi, 0, 0, fl, NULL, help, OFF(sec, key) }
#define FLOAT(sec, key, def, lo, hi, fl, help) \
    { #sec, #key, T_FLOAT, def, lo, hi, 0, 0, fl, NULL, help, OFF(sec, key) }
#define BOOL(sec, key, def, help) \
    { #sec, #key, T_BOOL, def, 0, 1, 0, 0, 0, NULL, help, OFF(sec, key) }
#define ENUM(sec, key, def, names, fl, help) \
    { #sec, #key, T_ENUM, def, 0, 0, 0, 0, fl, names, help, OFF(sec, key) }
#define STRING(sec, key, def, fl, help) \
    { #sec, #key, T_STRING, def, 0, 0, 0, 0, fl, NULL, help, OFF(sec, key) }
#define INT_LIST(sec, key, def, n_lo, n_hi, lo, hi, fl, help) \
    { #sec, #key, T_INT_LIST, def, lo, hi, n_lo, n_hi, fl, NULL, help, OFF(sec, key) }
#define FLOAT_LIST(sec, key, def, n_lo, n_hi, lo, hi, fl, help) \
    { #sec, #key, T_FLOAT_LIST, def, lo, hi, n_lo, n_hi, fl, NULL, help, OFF(sec, key) }
#define EMPTY "\"\""

/* Each name at its value's index; the NULL after the highest ends the list. */
static const char *const dataset_names[] = {
    [CFG_DATASET_FOLDER] = "folder", [CFG_DATASET_IDX] = "idx", [CFG_DATASET_PACKED] = "packed",
    NULL };
static const char *const size_names[] = {
    [CFG_SIZE_RESIZE] = "resize", [CFG_SIZE_REJECT] = "reject", NULL };
static const char *const bad_sample_names[] = {
    [CFG_BAD_SAMPLE_ERROR] = "error", [CFG_BAD_SAMPLE_SKIP] = "skip", NULL };
static const char *const cache_names[] = {
    [CFG_CACHE_NONE] = "none", [CFG_CACHE_MEMORY] = "memory", [CFG_CACHE_PACKED] = "packed",
    NULL };
static const char *const arch_names[] = {
    [CFG_ARCH_RESNET] = "resnet", [CFG_ARCH_CNN] = "cnn", [CFG_ARCH_MLP] = "mlp", NULL };
static const char *const schedule_names[] = {
    [CFG_SCHEDULE_CONSTANT] = "constant", [CFG_SCHEDULE_LINEAR] = "linear",
    [CFG_SCHEDULE_COSINE] = "cosine", NULL };
static const char *const optimizer_names[] = {
    [CFG_OPTIM_SGD] = "sgd", [CFG_OPTIM_ADAMW] = "adamw", NULL };
static const char *const device_names[] = {
    [CFG_DEVICE_AUTO] = "auto", [CFG_DEVICE_CPU] = "cpu", [CFG_DEVICE_CUDA] = "cuda", NULL };
static const char *const kernels_names[] = {
    [KF_LOOP] = "loop", [KF_VECTORIZED] = "vectorized", NULL };

/* Enum fields are written as int through the table. */
_Static_assert(sizeof(enum cfg_dataset) == sizeof(int), "enum size");
_Static_assert(sizeof(enum cfg_size_mismatch) == sizeof(int), "enum size");
_Static_assert(sizeof(enum cfg_bad_sample) == sizeof(int), "enum size");
_Static_assert(sizeof(enum cfg_cache) == sizeof(int), "enum size");
_Static_assert(sizeof(enum cfg_arch) == sizeof(int), "enum size");
_Static_assert(sizeof(enum cfg_schedule) == sizeof(int), "enum size");
_Static_assert(sizeof(enum cfg_optimizer) == sizeof(int), "enum size");
_Static_assert(sizeof(enum cfg_device) == sizeof(int), "enum size");
_Static_assert(sizeof(enum kernel_flavour) == sizeof(int), "enum size");

/* Rows of one section stay together: the printer and the error messages rely on it.
 * The defaults are the resnet_small recipe (docs/design.md). */
const struct key_spec cfg_keys[] = {
    ENUM(data, dataset, "folder", dataset_names, 0,
         "folder: a folder of images per class; idx: IDX files; packed: ./prepare's file"),
    STRING(data, path, "data/fashion-mnist", 0, "dataset root directory"),
    STRING(data, train_dir, "train", 0, "training split, relative to path"),
    STRING(data, test_dir, "test", 0, "test split, relative to path"),
    INT(data, classes, "10", 1, 100000, SHAPE, "number of classes"),
    INT(data, height, "28", 1, 4096, SHAPE, "image height the model sees, in pixels"),
    INT(data, width, "28", 1, 4096, SHAPE, "image width the model sees, in pixels"),
    INT(data, channels, "1", 1, 4, SHAPE, "1 (grayscale) or 3 (RGB)"),
    FLOAT_LIST(data, mean, "0.2860", 1, 4, 0, 1, 0,
               "per-channel mean of pixels scaled to 0..1, one per channel"),
    FLOAT_LIST(data, std, "0.3530", 1, 4, 0, 1, MIN_OPEN,
               "per-channel standard deviation of pixels scaled to 0..1"),
    ENUM(data, on_size_mismatch, "resize", size_names, 0,
         "an image of another size: resize it, or stop with an error"),
    ENUM(data, on_bad_sample, "error", bad_sample_names, 0,
         "an unreadable image: stop with an error naming it, or skip and count it"),

    INT(loader, batch, "128", 1, 65536, 0, "samples per training step"),
    INT(loader, workers, "2", 0, 64, 0, "decode threads; 0 = load on the training thread"),
    INT(loader, prefetch, "4", 1, 64, 0, "batch slots in the ring; 1 = no overlap"),
    BOOL(loader, pinned, "yes", "page-locked batch slots, for asynchronous copies"),
    BOOL(loader, overlap, "yes", "copy batches on their own stream during compute"),
    ENUM(loader, cache, "none", cache_names, 0,
         "none: decode every epoch; memory: keep decoded images; packed: mmap a file"),
    INT(loader, io_delay_us, "0", 0, 10000000, 0,
        "simulated storage latency per file, in microseconds"),
    INT(loader, seed, "0", 0, INT_MAX, 0, "seed of the shuffle and the augmentation"),
    BOOL(loader, drop_last, "no", "drop the last partial batch of each epoch"),
    INT(loader, crop_pad, "2", 0, 64, 0, "random crop with this much zero padding; 0 = off"),
    BOOL(loader, flip, "yes", "random horizontal flip"),

    ENUM(model, arch, "resnet", arch_names, SHAPE,
         "resnet uses widths and blocks, cnn uses layers, mlp uses hidden"),
    INT_LIST(model, widths, "16,32,64", 1, CFG_LIST_MAX, 1, 4096, SHAPE,
             "resnet: channels of each stage"),
    INT_LIST(model, blocks, "1,1,1", 1, CFG_LIST_MAX, 0, 64, SHAPE,
             "resnet: BasicBlocks of each stage, one per width"),
    STRING(model, layers, EMPTY, SHAPE, "cnn: the layer list (models/cnn.c; its tokens: ./train --help-config)"),
    INT_LIST(model, hidden, "256", 0, CFG_LIST_MAX, 1, 65536, SHAPE,
             "mlp: sizes of the hidden layers; \"\" = a linear model"),

    ENUM(optim, name, "sgd", optimizer_names, 0,
         "sgd (momentum, nesterov) or adamw (decoupled weight decay, beta1, beta2, eps)"),
    FLOAT(optim, lr, "0.1", 0, 10, MIN_OPEN, "peak learning rate"),
    FLOAT(optim, momentum, "0.9", 0, 1, MAX_OPEN, "SGD momentum"),
    BOOL(optim, nesterov, "yes", "Nesterov momentum"),
    FLOAT(optim, weight_decay, "5e-4", 0, 1, 0, "L2 weight decay"),
    ENUM(optim, schedule, "linear", schedule_names, 0,
         "after warmup: keep lr, or decay it linearly or by a cosine to 0"),
    FLOAT(optim, warmup, "0.2", 0, 1, 0, "fraction of the steps spent rising from 0 to lr"),
    FLOAT(optim, beta1, "0.9", 0, 1, MAX_OPEN, "adamw: decay of the first moment"),
    FLOAT(optim, beta2, "0.999", 0, 1, MAX_OPEN, "adamw: decay of the second moment"),
    FLOAT(optim, eps, "1e-8", 0, 1, MIN_OPEN, "adamw: added to the second moment's root"),

    INT(train, epochs, "1", 1, 100000, 0, "passes over the training split"),
    INT(train, max_steps, "0", 0, INT_MAX, 0, "stop after this many steps; 0 = no limit"),
    ENUM(train, device, "auto", device_names, 0, "auto: the GPU when there is one"),
    ENUM(train, kernels, "vectorized", kernels_names, 0,
         "loop: plain readable kernels; vectorized: the fast ones"),
    BOOL(train, tf32, "no", "allow TF32 tensor-core math on the GPU"),
    INT(train, eval_every, "1", 0, 100000, 0, "evaluate every N epochs; 0 = never"),
    STRING(train, checkpoint, EMPTY, 0, "checkpoint file, written each epoch; \"\" = none"),
    STRING(train, trace, EMPTY, 0, "Chrome trace-event JSON to write; \"\" = none"),
    STRING(train, metrics, EMPTY, 0,
           "CSV of loss, accuracy, images/s per step and per epoch (train.h); \"\" = none"),
    INT(train, log_every, "50", 1, 1000000, 0, "print progress every N steps"),
    INT(train, threads, "0", 0, 4096, 0, "CPU threads for the kernels; 0 = all cores"),

    INT(dist, bucket_kb, "256", 0, 1048576, 0,
        "data parallel: gradients all-reduced in buckets of this many KiB; 0 = one bucket"),
    BOOL(dist, overlap, "yes", "start each bucket's all-reduce during backward, as soon as it is final"),
    INT(dist, comm_latency_us, "0", 0, 10000000, 0, "simulated network: a fixed cost per all-reduce call"),
    FLOAT(dist, comm_gbps, "0", 0, 10000, 0, "simulated network: bandwidth in Gbit/s; 0 = no simulation"),
    INT(dist, timeout_s, "60", 1, 86400, 0, "stop the job when a rank waits this long for another"),
};

_Static_assert(sizeof cfg_keys / sizeof cfg_keys[0] == CFG_N_KEYS, "CFG_N_KEYS is the number of rows");
