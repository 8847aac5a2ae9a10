/* trace.h — a Chrome trace-event JSON writer, for Perfetto (ui.perfetto.dev) and
 * chrome://tracing.
 *
 * Events go into an in-memory buffer (one mutex, so loader workers and the training
 * thread may record at once) and the file is written by trace_close. Past
 * TRACE_MAX_EVENTS spans and counters, further ones are counted as dropped and the
 * file's "otherData" says how many. Names and categories are copied (cut to
 * TRACE_NAME_LEN-1 bytes), so they may be temporary strings.
 *
 * Every call accepts a NULL tracer and then does nothing, so the trainer records
 * unconditionally and tracing is off when no --trace file was given.
 *
 * Times are os_now_ns() nanoseconds (os.h); the file holds microseconds since
 * trace_open, with three decimals.
 */
#ifndef NS_TRACE_H
#define NS_TRACE_H

#include <stddef.h>
#include <stdint.h>

#define TRACE_MAX_EVENTS (1u << 20)
#define TRACE_NAME_LEN 32

struct trace;

/* Starts a trace to be written to `path` at trace_close. Fails now, with a message
 * naming the path, if it can't be written (PATH.tmp is created to find out). */
struct trace *trace_open(const char *path);
/* The same with another cap on spans + counters (tests; very long runs). */
struct trace *trace_open_max(const char *path, size_t max_events);

/* Writes {"traceEvents":[...], "displayTimeUnit":"ms", "otherData":{...}} to PATH.tmp,
 * renames it over PATH (so PATH is never half-written) and frees the tracer, also on
 * failure. Call it after every thread that records has stopped. 0, or -1 with err_set. */
int trace_close(struct trace *tr);

/* A complete ("X") event: `name` ran on thread `tid` from start_ns for dur_ns
 * (a negative duration, from clocks read in the wrong order, is recorded as 0). */
void trace_span(struct trace *tr, int tid, const char *name, const char *cat, int64_t start_ns,
                int64_t dur_ns);
/* A counter ("C") sample, e.g. ring occupancy: its own track named `name`. */
void trace_counter(struct trace *tr, const char *name, int64_t t_ns, double value);
/* Counter `name` can't exceed `max` (the ring's slots for "ring slots ready"): a
 * timeline draws its axis from 0 to max instead of to the largest sample seen. Written
 * as an "M" metadata event named "counter_max", args {"name": NAME, "value": MAX},
 * which trace viewers skip; never dropped. A later call for the same name wins. */
void trace_counter_max(struct trace *tr, const char *name, double max);
/* Names thread `tid` in the viewer ("M" metadata); never dropped. */
void trace_thread_name(struct trace *tr, int tid, const char *name);

/* One recorded event, as trace_for_each hands it out. name and cat point into the
 * tracer and are valid during the callback only. */
struct trace_record {
    char ph;            /* 'X' span, 'C' counter, 'M' thread name, 'R' a counter's max */
    int tid;            /* X and M */
    int64_t t_ns;       /* X and C: nanoseconds since trace_open */
    int64_t dur_ns;     /* X */
    double value;       /* C; R: the maximum */
    const char *name;   /* span or counter name (also for R); the thread's name for M */
    const char *cat;    /* X: its category; "" otherwise */
};

/* Calls fn on every event recorded so far, in recording order, and returns how many.
 * Read-only, for drawing the run before trace_close (trace.h's timeline). The tracer's lock is
 * held meanwhile: fn must not call trace functions on tr. */
size_t trace_for_each(struct trace *tr, void (*fn)(const struct trace_record *r, void *ctx), void *ctx);

/* Events recorded and dropped so far (0 for NULL). */
size_t trace_event_count(struct trace *tr);
size_t trace_dropped_count(struct trace *tr);



/* ---- a trace read back: the timeline ----
 * The trainer's trace holds, per training step, a "wait" span (blocked on the loader)
 * and a "compute" span on the training thread (tid 0), and per loader worker a "load
 * batch" span for its share of each batch (tids 1..N); devices with streams add lanes
 * of their own. A timeline gathers those events, from a live tracer or from a trace
 * file written earlier; the same events give the lab (./bench pipeline) its per-step
 * numbers: the median step and the share of step time spent waiting, after a warm-up.
 * viz.h draws a timeline. */
#define TIMELINE_NAME_LEN 32
#define TIMELINE_TRAINING_TID 0
/* a device's streams, after any number of loader workers */
#define TIMELINE_COPY_STREAM_TID 1000
#define TIMELINE_COMPUTE_STREAM_TID 1001
/* data parallel: the communication thread's buckets, the training thread's wait for them */
#define TIMELINE_COMM_TID 1002
#define TIMELINE_COMM_WAIT_TID 1003
/* data parallel: rank r's lanes in rank 0's trace are its own tids + r x this */
#define TIMELINE_RANK_TIDS 10000

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

/* A counter's declared maximum (trace_counter_max), e.g. the ring's slots. */
struct timeline_counter_max {
    double max;
    char name[TIMELINE_NAME_LEN];
};

struct timeline {
    struct timeline_span *spans;
    size_t n_spans, cap_spans;
    struct timeline_counter *counters;
    size_t n_counters, cap_counters;
    struct timeline_thread *threads;       /* names given with trace_thread_name */
    size_t n_threads, cap_threads;
    struct timeline_counter_max *maxima;   /* given with trace_counter_max */
    size_t n_maxima, cap_maxima;
};

/* Copies every event recorded so far (call it before trace_close). 0 or -1. */
int timeline_from_trace(struct timeline *tl, struct trace *tr);
/* Reads a Chrome trace-event JSON file as trace_close writes it (spans "X", counters
 * "C", thread names and counter maxima "M"; other events are skipped). 0, or -1 with err_set naming the
 * file and the byte where it stopped making sense. */
int timeline_load_json(struct timeline *tl, const char *path);
void timeline_free(struct timeline *tl);

/* Adding events by hand (tests, and the readers above). 0 or -1 (out of memory). */
int timeline_add_span(struct timeline *tl, int tid, const char *name, const char *cat, int64_t start_ns,
                      int64_t dur_ns);
int timeline_add_counter(struct timeline *tl, const char *name, int64_t t_ns, double value);
int timeline_add_thread(struct timeline *tl, int tid, const char *name);
/* A later maximum for the same counter replaces the earlier one. */
int timeline_add_counter_max(struct timeline *tl, const char *name, double max);
/* Counter `name`'s declared maximum, or 0 when none was given. */
double timeline_counter_max(const struct timeline *tl, const char *name);

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

/* Every step at once, for a caller that needs many (the drawing): arrays of n. */
struct timeline_steps { int n; int64_t *start, *wait, *compute, *end; };
int timeline_steps_collect(const struct timeline *tl, struct timeline_steps *st);
int timeline_steps_stats(const struct timeline_steps *st, int first, int count, struct timeline_step_stats *out);
void timeline_steps_free(struct timeline_steps *st);

/* The median of n values (the mean of the middle two for even n); 0 for n = 0.
 * Sorts v in place. */
double timeline_median(double *v, int n);

#endif
