/* train.h — the training loop behind ./train. */
#ifndef NS_TRAIN_H
#define NS_TRAIN_H

#include <signal.h>
#include <stdbool.h>
#include <stdio.h>

#include "config.h"
#include "report.h"

struct train_options {
    const char *resume;                 /* checkpoint to continue from, or NULL */
    const char *metrics;                /* if not NULL: a CSV file, one line per step (step, epoch, batch,
                                           lr, loss, correct, images); a resumed run appends */
    bool tty;                           /* redraw a progress bar in place */
    FILE *out;                          /* progress, tables, report */
    volatile sig_atomic_t *stop;        /* set by SIGINT/SIGTERM: finish the step, save, stop */
    bool quiet;                         /* no config, table, progress or report (benchmarks) */
    struct run_totals *totals;          /* if not NULL: the report's numbers for the caller */
};

/* Exit codes of ./train, so scripts can tell what happened. */
enum train_status {
    TRAIN_OK = 0,
    TRAIN_ERROR = 1,        /* bad config, data, checkpoint, I/O: the message says which */
    TRAIN_DIVERGED = 3,     /* NaN/inf loss: stopped, last good checkpoint kept */
    TRAIN_INTERRUPTED = 130 /* SIGINT/SIGTERM: checkpoint written, resume with --resume */
};

/* The loader settings cfg gives a training (train) or evaluation loader, less the slot
 * memory hooks, which depend on the device. */
struct loader_config;
void train_loader_config(const struct config *cfg, bool train, struct loader_config *lc);

/* What ./train sets up, for the tools that use a trained model (./eval, ./predict):
 * the backend train.device and train.kernels choose (a line on `out` says what auto
 * picked); one split of cfg's dataset (`split` is data.train_dir or data.test_dir, or
 * any folder name under data.path), checked against [data]'s shape and classes; and
 * its loader with the batches on be's device (train: shuffled and augmented). */
struct backend;
struct dataset;
struct loader;
struct feeder;
const struct backend *train_pick_backend(const struct config *cfg, FILE *out);
int train_open_split(const struct config *cfg, const char *split, struct dataset **ds);
int train_make_feed(const struct config *cfg, const struct backend *be, const struct dataset *ds, bool train,
                    struct loader **ld, struct feeder **feed);

/* Runs the whole experiment cfg describes. Prints the resolved config, the layer
 * table, progress, per-epoch metrics and the pipeline report to opt->out. */
enum train_status train_run(const struct config *cfg, const struct train_options *opt);

#endif
