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
 * Times are CLOCK_MONOTONIC nanoseconds (trace_now_ns); the file holds microseconds
 * since trace_open, with three decimals.
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
/* Names thread `tid` in the viewer ("M" metadata); never dropped. */
void trace_thread_name(struct trace *tr, int tid, const char *name);

/* One recorded event, as trace_for_each hands it out. name and cat point into the
 * tracer and are valid during the callback only. */
struct trace_record {
    char ph;            /* 'X' span, 'C' counter, 'M' thread name */
    int tid;            /* X and M */
    int64_t t_ns;       /* X and C: nanoseconds since trace_open */
    int64_t dur_ns;     /* X */
    double value;       /* C */
    const char *name;   /* span or counter name; the thread's name for M */
    const char *cat;    /* X: its category; "" otherwise */
};

/* Calls fn on every event recorded so far, in recording order, and returns how many.
 * Read-only, for drawing the run before trace_close (timeline.h). The tracer's lock is
 * held meanwhile: fn must not call trace functions on tr. */
size_t trace_for_each(struct trace *tr, void (*fn)(const struct trace_record *r, void *ctx), void *ctx);

/* Events recorded and dropped so far (0 for NULL). */
size_t trace_event_count(struct trace *tr);
size_t trace_dropped_count(struct trace *tr);

/* CLOCK_MONOTONIC in nanoseconds. */
int64_t trace_now_ns(void);

#endif
