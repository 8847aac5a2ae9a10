/* viz.h — nostall's pictures: the pipeline lab's bar chart, the timeline of a trace
 * (trace.h) and the loss and accuracy curves of a run's metrics file, drawn with a
 * tiny SVG writer. No plotting dependency: rectangles, lines, circles, text and
 * polylines, written as they are drawn.
 *
 * Coordinates are pixels, origin top left, y down. Text passed in is escaped, and a
 * number that isn't finite is written as 0, so the file is well-formed XML whatever
 * is drawn. Like the trace, the file is written to PATH.tmp and renamed over PATH by
 * svg_close, so PATH is never half-written.
 */
#ifndef NS_VIZ_H
#define NS_VIZ_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "trace.h"

struct svg;

/* Starts a width x height picture with a white background. NULL with err_set when
 * PATH.tmp can't be created. */
struct svg *svg_open(const char *path, double width, double height);
/* Ends the document and renames it into place; frees s, also on failure. 0 or -1. */
int svg_close(struct svg *s);
/* Abandons the picture: removes PATH.tmp and frees s. */
void svg_discard(struct svg *s);

/* A filled rectangle; `tooltip` (may be NULL) shows when hovering in a browser. */
void svg_rect(struct svg *s, double x, double y, double w, double h, const char *fill, const char *tooltip);
/* A straight line; dashed when `dash`. */
void svg_line(struct svg *s, double x1, double y1, double x2, double y2, const char *stroke, double width,
              bool dash);
/* n points joined by straight segments. */
void svg_polyline(struct svg *s, int n, const double *x, const double *y, const char *stroke, double width);

/* A dot of radius r centred at (cx, cy), ringed with `stroke` unless it is NULL;
 * `tooltip` as for svg_rect. */
void svg_circle(struct svg *s, double cx, double cy, double r, const char *fill, const char *stroke,
                const char *tooltip);

enum svg_anchor { SVG_START, SVG_MIDDLE, SVG_END };
/* printf-style text with its baseline at y; `bold` for titles. */
void svg_text(struct svg *s, double x, double y, double size, enum svg_anchor anchor, const char *fill,
              bool bold, const char *fmt, ...) __attribute__((format(printf, 8, 9)));

/* ---- a horizontal bar chart, one bar per row ----
 * Each bar is `value` long (e.g. images/s); the last `share` of it (0..1, e.g. the
 * share of step time spent waiting for input) is drawn in a second colour. A row
 * whose `group` differs from the previous row's starts with that group as a heading. */
struct svg_bar {
    const char *group;   /* may be NULL */
    const char *label;
    double value;
    double share;
    double lo, hi;       /* the value's spread over rounds, drawn as a whisker; lo = hi = 0: none */
};

struct svg_bar_chart {
    const char *title;
    const char *subtitle;     /* may be NULL: e.g. the machine and its load */
    const char *value_unit;   /* "images/s" */
    const char *share_name;   /* "waiting for input" */
    const struct svg_bar *bars;
    int n;
};

/* 0, or -1 with err_set. */
int svg_write_bar_chart(const char *path, const struct svg_bar_chart *chart);

/* A round step for axis ticks: 1, 2 or 5 times a power of ten, so that about
 * `ticks` of them span `range`. */
double svg_nice_step(double range, int ticks);

/* ---- a confusion matrix (./eval --confusion) ----
 * counts: classes x classes, [true label][prediction]; names: one per class. Up to 100
 * classes. 0, or -1 with err_set. */
int confusion_write_svg(const char *path, int classes, const int64_t *counts, const char *const *names,
                        const char *title, const char *subtitle);

/* ---- a timeline (trace.h) as a picture ---- */
struct timeline_options {
    int first_step;             /* first step drawn, from 0; < 0: the default (2, past the warm-up) */
    int steps;                  /* steps drawn; <= 0: the default (4) */
    const char *title;          /* NULL: "nostall timeline" */
    const char *subtitle;       /* NULL: none */
};

/* One panel per timeline, stacked, with the lanes every panel has: the training
 * thread first, then the workers, streams and other threads by id, then one lane per
 * counter. titles[i] heads panel i.
 * Time scale: the panels share one, that of the longest window, so they compare at a
 * glance; a panel whose window is shorter than the longest over TL_OWN_SCALE_FACTOR
 * (8, timeline_svg.c) would be a sliver on it, so it is drawn across the whole width
 * on its own scale, and its header says "own time scale: zoomed Nx" (N: the longest
 * window over its own).
 * Counter lanes: a step line from 0 to the counter's maximum, given in its label as
 * "NAME (0..MAX)". MAX is the maximum the trace declared for that counter
 * (trace_counter_max: the trainer declares loader.prefetch for "ring slots ready", so
 * the ring's axis runs to its size) or the largest sample seen, whichever is larger;
 * a counter without a declared maximum (loss, images/s) runs to its largest sample.
 * 0, or -1 with err_set. */
int timeline_write_panels(const char *path, int n, const struct timeline *const *tls, const char *const *titles,
                          const struct timeline_options *opt);

/* ./train --timeline: the trace file a run wrote, as one panel. opt may be NULL.
 * 0, or -1 with err_set. */
int timeline_write_svg(const char *trace_path, const char *svg_path, const struct timeline_options *opt);

/* ---- the curves of a run: ./train --metrics FILE.csv --curves FILE.svg ----
 * Reads the metrics file train.metrics writes (its layout is in train.h: a header
 * naming the columns, then "step" and "epoch" rows; columns are found by name) and
 * draws two panels over the steps trained:
 *   loss      each step's loss (light), its running mean (dark), and per epoch the
 *             training mean (hollow dots) and the test split's loss (filled dots)
 *   accuracy  the running mean of the steps' accuracy, and per epoch the training and
 *             test accuracy as dots
 * The running mean is centred, over CURVES_SMOOTH_DIVISOR-th of the steps (at least 1).
 * A resumed run that repeats steps (it went back to an epoch's checkpoint) replaces
 * them: a step row whose step is not past the previous one drops the rows from there
 * on. A last line without its newline that doesn't parse (a run killed while writing)
 * is left out. 0, or -1 with err_set naming the file and the line that is wrong. */
#define CURVES_SMOOTH_DIVISOR 50
int curves_write_svg(const char *metrics_csv, const char *out_svg);

#endif
