/* timeline.h — a run's trace as a picture, and its per-step numbers.
 *
 * The trainer's trace (trace.h) holds, per training step, a "wait" span (blocked on
 * the loader) and a "compute" span on the training thread (tid 0), and per loader
 * worker a "load batch" span for its share of each batch (tids 1..N); devices with
 * streams add lanes of their own. A timeline gathers those events, either from a live
 * tracer or from a trace file written earlier, and draws a few steps as one lane per
 * thread or stream, so a stall is something you see: the training thread's red
 * waits lining up with the workers' loading.
 *
 * The same events give the lab (./bench pipeline) its per-step numbers: the median
 * step and the share of step time spent waiting, after a warm-up.
 */
#ifndef NS_TIMELINE_H
#define NS_TIMELINE_H

#include <stddef.h>
#include <stdint.h>

#include "svg.h"
#include "trace.h"

#define TIMELINE_NAME_LEN 32
#define TIMELINE_TRAINING_TID 0
/* a device's streams, after any number of loader workers */
#define TIMELINE_COPY_STREAM_TID 1000
#define TIMELINE_COMPUTE_STREAM_TID 1001

struct timeline_span {
    int tid;
    int64_t start_ns, dur_ns;              /* since the trace began */
    char name[TIMELINE_NAME_LEN];
    char cat[TIMELINE_NAME_LEN];
};

struct timeline_counter {
    int64_t t_ns;
    double value;
    char name[TIMELINE_NAME_LEN];
};

struct timeline_thread {
    int tid;
    char name[TIMELINE_NAME_LEN];
};

struct timeline {
    struct timeline_span *spans;
    size_t n_spans, cap_spans;
    struct timeline_counter *counters;
    size_t n_counters, cap_counters;
    struct timeline_thread *threads;       /* names given with trace_thread_name */
    size_t n_threads, cap_threads;
};

/* Copies every event recorded so far (call it before trace_close). 0 or -1. */
int timeline_from_trace(struct timeline *tl, struct trace *tr);
/* Reads a Chrome trace-event JSON file as trace_close writes it (spans "X", counters
 * "C", thread names "M"; other events are skipped). 0, or -1 with err_set naming the
 * file and the byte where it stopped making sense. */
int timeline_load_json(struct timeline *tl, const char *path);
void timeline_free(struct timeline *tl);

/* Adding events by hand (tests, and the readers above). 0 or -1 (out of memory). */
int timeline_add_span(struct timeline *tl, int tid, const char *name, const char *cat, int64_t start_ns,
                      int64_t dur_ns);
int timeline_add_counter(struct timeline *tl, const char *name, int64_t t_ns, double value);
int timeline_add_thread(struct timeline *tl, int tid, const char *name);

/* ---- steps ----
 * Step i (from 0) begins where the training thread's i-th "wait" span begins and
 * ends where the first "compute" span after it ends. */
int timeline_step_count(const struct timeline *tl);
/* 0, or -1 when there is no step i. */
int timeline_step(const struct timeline *tl, int i, int64_t *start_ns, int64_t *wait_ns, int64_t *compute_ns,
                  int64_t *end_ns);

struct timeline_step_stats {
    int steps;                  /* steps measured */
    double median_step_s;       /* wall time of the median step */
    double median_wait_s;
    double median_compute_s;
    double wait_share;          /* total wait / total step time over the measured steps */
    double total_s;             /* their summed wall time */
};

/* Over steps [first, first + count) (count <= 0: to the last step). 0, or -1 with
 * err_set when that range holds no step. */
int timeline_step_stats(const struct timeline *tl, int first, int count, struct timeline_step_stats *out);

/* The median of n values (the mean of the middle two for even n); 0 for n = 0.
 * Sorts v in place. */
double timeline_median(double *v, int n);

/* ---- drawing ---- */
struct timeline_options {
    int first_step;             /* first step drawn, from 0; < 0: the default (2, past the warm-up) */
    int steps;                  /* steps drawn; <= 0: the default (4) */
    const char *title;          /* NULL: "nostall timeline" */
    const char *subtitle;       /* NULL: none */
};

/* One panel per timeline, stacked, on one time scale (the longest window), with the
 * lanes every panel has: the training thread first, then the workers, streams and
 * other threads by id, then one lane per counter. titles[i] heads panel i.
 * 0, or -1 with err_set. */
int timeline_write_panels(const char *path, int n, const struct timeline *const *tls, const char *const *titles,
                          const struct timeline_options *opt);

/* ./train --timeline: the trace recorded so far as one panel. Call it before
 * trace_close. opt may be NULL. 0, or -1 with err_set. */
int timeline_write_svg(struct trace *tr, const char *path, const struct timeline_options *opt);

#endif
