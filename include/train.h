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

/* ---- the metrics file (train.metrics, ./train --metrics FILE.csv) ----
 * A CSV file with one header line and two kinds of row, told apart by the first
 * column; a cell that doesn't apply to a row's kind is empty:
 *
 *   kind,step,epoch,batch,lr,loss,accuracy,images_per_s,wait_share,test_loss,test_accuracy
 *   step,0,1,0,0,2.660061,0.078125,621.6,0.0171,,
 *   ...
 *   epoch,469,1,469,,0.749218,0.735250,1409.4,0.0001,0.466169,0.837200
 *
 * (the first and the 470th row of docs/runs/curves-2-epochs.csv)
 *
 *   kind          "step" after every training step, "epoch" at every epoch's end
 *   step          step rows: the global step, from 0 (the one the LR schedule is fed);
 *                 epoch rows: the steps done by then, i.e. the next step's number
 *   epoch         from 1, as the progress lines count
 *   batch         step rows: the batch in its epoch, from 0; epoch rows: the batches
 *                 done in the epoch
 *   lr            step rows: the learning rate the step used; epoch rows: empty
 *   loss          the step's mean cross-entropy; epoch rows: the mean over the epoch's
 *                 steps (the epoch line's "train loss"; in an epoch a run resumed in,
 *                 over the steps since the resume, as that line says)
 *   accuracy      the share (0..1) of the batch, or of the epoch's training images,
 *                 classified right before the update
 *   images_per_s  the batch's images over the step's wall time; epoch rows: the epoch's
 *                 images over its wall time (the epoch line's images/s)
 *   wait_share    the share (0..1) of that wall time blocked on the loader
 *   test_loss, test_accuracy
 *                 epoch rows when the test split was evaluated (train.eval_every);
 *                 empty otherwise
 *
 * Rows are written as they happen (epoch rows flushed at once), so an interrupted or
 * diverged run leaves every row up to its last step. A fresh run overwrites the file;
 * a resumed one (--resume) appends, after checking that the file's header is this
 * one. viz.h's curves_write_svg draws the file. */
#define METRICS_HEADER "kind,step,epoch,batch,lr,loss,accuracy,images_per_s,wait_share,test_loss,test_accuracy"

enum metrics_kind { METRICS_STEP, METRICS_EPOCH };

struct metrics_row {
    enum metrics_kind kind;
    long step;
    int epoch;
    long batch;
    double lr;                          /* step rows */
    double loss, accuracy, images_per_s, wait_share;
    bool tested;                        /* epoch rows: test_loss and test_accuracy are set */
    double test_loss, test_accuracy;
};

/* Opens path for the rows: overwritten with a header, or with `append` (a resumed run)
 * added to after the rows there (a missing or empty file gets the header first).
 * 0, or -1 with err_set naming the file. */
int metrics_open(const char *path, bool append, FILE **out);
/* One row in the layout above; a write error shows at metrics_close. */
void metrics_write(FILE *f, const struct metrics_row *r);
/* Closes f; 0, or -1 with err_set naming path when a write or the close failed. */
int metrics_close(FILE *f, const char *path);

#endif
