/* config.h — experiment config files: INI sections, `key = value`, `#` comments.
 *
 *     [loader]
 *     workers  = 2        # 0 = load on the training thread
 *     cache    = memory
 *
 * Every key is one row of a schema table in src/config/config.c (section, key, type,
 * default, allowed values, help, field). The parser, the defaults, the printer, the
 * help text and the fingerprint are all driven by that table, so adding a key is
 * adding a row there and a field here.
 *
 * Value syntax, the same in a file and in `--set section.key=value`:
 *   int      128                         float   0.1, 5e-4 (finite)
 *   bool     yes/no, true/false, 1/0     enum    one of the listed names
 *   string   data/fashion-mnist          lists   16,32,64
 * A value may be wrapped in double quotes; quotes are needed only for an empty value
 * (`checkpoint = ""`), or one holding '#' or leading/trailing spaces. A value can't
 * contain a double quote of its own.
 *
 * Failures return -1 after err_set() (error.h) with "file:line: section.key: what was
 * wrong; what to do". A failed call leaves the struct untouched.
 */
#ifndef NS_CONFIG_H
#define NS_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "backend.h"

#define CFG_STR_MAX 1024   /* bytes of a string value, including its NUL */
#define CFG_LIST_MAX 8     /* entries of a list value */
#define CFG_LINE_MAX 4096  /* bytes of one line of a config file, without its newline */

/* The values of the enum keys. Where a module acts on a key's value, the config and
 * that module share one enum, declared by the lower of the two so that both can
 * include it (docs/design.md, "Layers"): train.kernels is backend.h's enum
 * kernel_flavour; the loader takes cfg_cache and cfg_bad_sample as they are (struct
 * loader_config), the optimizer cfg_schedule (optim_lr_at). */
enum cfg_dataset { CFG_DATASET_FOLDER, CFG_DATASET_IDX, CFG_DATASET_PACKED };
enum cfg_size_mismatch { CFG_SIZE_RESIZE, CFG_SIZE_REJECT };
enum cfg_bad_sample {
    CFG_BAD_SAMPLE_ERROR,  /* a sample that fails to read ends the epoch with its error */
    CFG_BAD_SAMPLE_SKIP,   /* it is left out of its batch (the batch is shorter), counted */
};
enum cfg_cache {
    CFG_CACHE_NONE,        /* read and decode every sample every epoch */
    CFG_CACHE_MEMORY,      /* keep each decoded sample in RAM after its first decode */
    CFG_CACHE_PACKED,      /* read pre-decoded samples from a memory-mapped packed file */
};
enum cfg_arch { CFG_ARCH_RESNET, CFG_ARCH_CNN, CFG_ARCH_MLP };
/* after the warmup: keep the rate, or decay it linearly or by a cosine to 0 */
enum cfg_schedule { CFG_SCHEDULE_CONSTANT, CFG_SCHEDULE_LINEAR, CFG_SCHEDULE_COSINE };
enum cfg_optimizer { CFG_OPTIM_SGD, CFG_OPTIM_ADAMW };
/* AUTO picks CUDA when a GPU is present; backend.h's enum device is what it resolves to. */
enum cfg_device { CFG_DEVICE_AUTO, CFG_DEVICE_CPU, CFG_DEVICE_CUDA };

struct cfg_int_list {
    int n;                  /* entries used, 0..CFG_LIST_MAX */
    int v[CFG_LIST_MAX];
};

struct cfg_float_list {
    int n;
    double v[CFG_LIST_MAX];
};

struct config {
    struct cfg_data {
        enum cfg_dataset dataset;
        char path[CFG_STR_MAX];       /* dataset root */
        char train_dir[CFG_STR_MAX];  /* relative to path */
        char test_dir[CFG_STR_MAX];
        int classes;
        int height, width;            /* every sample is brought to this size */
        int channels;                 /* 1 or 3 */
        struct cfg_float_list mean;   /* one per channel, on pixel values scaled to 0..1 */
        struct cfg_float_list std;
        enum cfg_size_mismatch on_size_mismatch;
        enum cfg_bad_sample on_bad_sample;
    } data;
    struct cfg_loader {
        int batch;
        int workers;                  /* 0 = load inline on the training thread */
        int prefetch;                 /* batch slots in the ring; 1 = no overlap */
        bool pinned;
        bool overlap;                 /* copy on its own stream */
        enum cfg_cache cache;
        int io_delay_us;              /* simulated storage latency per file */
        int seed;
        bool drop_last;
        int crop_pad;                 /* random crop with this much zero padding; 0 = off */
        bool flip;                    /* random horizontal flip */
    } loader;
    struct cfg_model {
        enum cfg_arch arch;
        struct cfg_int_list widths;   /* resnet: channels of each stage */
        struct cfg_int_list blocks;   /* resnet: BasicBlocks per stage */
        char layers[CFG_STR_MAX];     /* cnn: layer spec, parsed by models/cnn.c */
        struct cfg_int_list hidden;   /* mlp: hidden layer sizes; none = linear model */
    } model;
    struct cfg_optim {
        enum cfg_optimizer name;      /* sgd: momentum, nesterov; adamw: beta1, beta2, eps */
        double lr;                    /* peak learning rate */
        double momentum;
        bool nesterov;
        double weight_decay;
        enum cfg_schedule schedule;
        double warmup;                /* fraction of all steps spent rising from 0 to lr */
        double beta1, beta2, eps;     /* adamw */
    } optim;
    struct cfg_train {
        int epochs;
        int max_steps;                /* 0 = no limit */
        enum cfg_device device;
        enum kernel_flavour kernels;
        bool tf32;
        int eval_every;               /* epochs; 0 = never */
        char checkpoint[CFG_STR_MAX]; /* "" = no checkpoints */
        char trace[CFG_STR_MAX];      /* Chrome trace-event JSON; "" = off */
        char metrics[CFG_STR_MAX];    /* CSV of step and epoch rows (train.h); "" = off */
        int log_every;                /* steps */
        int threads;                  /* 0 = all cores */
    } train;
    struct cfg_dist {                 /* data parallel (docs/distributed.md) */
        int bucket_kb;                /* gradients all-reduced in buckets of this size; 0 = one */
        bool overlap;                 /* start a bucket as soon as its gradients are final */
        int comm_latency_us;          /* simulated network: a fixed cost per all-reduce call */
        double comm_gbps;             /*   and bytes / this bandwidth; 0 = no simulation */
        int timeout_s;                /* a rank waiting longer than this for another stops the job */
    } dist;
};

/* The built-in defaults: the resnet_small recipe (docs/design.md) on Fashion-MNIST. */
void cfg_defaults(struct config *cfg);

/* Defaults, then the file at `path`, then cfg_validate(). */
int cfg_load(struct config *cfg, const char *path);

/* Same as cfg_load for text already in memory; `name` stands for the file name in
 * messages. Any bytes are accepted (this is the fuzzing entry point). */
int cfg_load_text(struct config *cfg, const char *text, size_t len, const char *name);

/* One `--set` override, "section.key=value", checked like a file line. It doesn't run
 * the cross-key checks, since one override may need the next (widths, then blocks):
 * call cfg_validate(cfg, "--set") after the last one. */
int cfg_set(struct config *cfg, const char *assignment);

/* Checks between keys: mean/std have one entry per channel, channels is 1 or 3,
 * widths and blocks have the same length, cnn has layers. `where` starts messages. */
int cfg_validate(const struct config *cfg, const char *where);

/* The resolved config in the file format, one key per line with its help as a comment;
 * cfg_load of the output gives back an equal struct. */
void cfg_print(const struct config *cfg, FILE *out);

/* Every key with its type, default, allowed values and help (for --help). */
void cfg_print_help(FILE *out);

/* The value of "section.key" as it would be written in a file; -1 if no such key.
 * A value that doesn't fit in `len` bytes is cut short (the result is still a string). */
int cfg_format(const struct config *cfg, const char *key, char *buf, size_t len);

/* The name of value `value` of the enum key "section.key" ("loader.cache", 1 ->
 * "memory"); "?" for a key that isn't an enum or a value out of range. */
const char *cfg_enum_name(const char *key, int value);

/* The allowed range of key i of the key table (0, 1, ...), for tests that walk every
 * key: 1 for a number or a list of numbers (then `out` is filled), 0 for another key,
 * -1 past the last key. */
struct cfg_range {
    char key[64];             /* "section.key" */
    bool is_int, is_list;     /* a list's range is that of each entry */
    double min, max;
    bool min_open, max_open;  /* > min rather than >= min; < max rather than <= max */
};
int cfg_key_range(int i, struct cfg_range *out);

/* Field-by-field equality over every key. */
bool cfg_equal(const struct config *a, const struct config *b);

/* A hash of the keys that decide the model's parameter shapes: data.channels, height,
 * width, classes and all of [model]. Checkpoints store it and refuse to load into a
 * model whose fingerprint differs. Stable across runs and machines: it hashes the
 * values as cfg_print writes them. */
uint64_t cfg_fingerprint(const struct config *cfg);

#endif
