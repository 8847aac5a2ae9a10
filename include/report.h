/* report.h — where the time went, and what to try next.
 *
 * The trainer sums, over the run, the wall time of every step split into
 *   wait     the training thread blocked on the loader's ring
 *   h2d      copying the batch to the device (0 on the CPU)
 *   compute  forward, backward and the optimizer step
 *   other    the rest of the step: handing the batch back, the trace and metrics
 *            rows, the progress line
 * and the CPU time the loader's workers burned. The verdict uses TF Profiler's
 * thresholds on the input-bound share (wait + h2d): < 5% not input-bound, 5-20%
 * moderately, > 20% highly. Waiting alone understates the loader's cost when its
 * workers share the cores with compute, so the report also names CPU contention.
 *
 * The verdict is on the steady state: a run's first steps, the first step of every
 * epoch (the loader starts each epoch with an empty ring) and, with cache = memory,
 * the process's first epoch (every image decoded once, into the cache) are warm-up,
 * reported apart. The steady state is also cut into consecutive windows; when their
 * shares fall on both sides of a threshold the verdict is "borderline", with the
 * spread, instead of a class the machine's load could flip. */
#ifndef NS_REPORT_H
#define NS_REPORT_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "config.h"

/* A stretch of steps: how many, their images, and their wall time and its parts. */
struct run_span {
    int64_t steps, images;
    int64_t wall_ns, wait_ns, h2d_ns, compute_ns;
};

/* Which part of the run a step belongs to; a step gets the first that applies. */
enum run_phase {
    RUN_CACHE_FILL,  /* cache = memory, the process's first epoch: each image decoded into the cache */
    RUN_START,       /* the run's first RUN_WARM_STEPS steps: the step arena's first touch, the ring's first fill */
    RUN_RING_FILL,   /* the first step of a later epoch: the loader starts every epoch with an empty ring */
    RUN_STEADY,      /* every other step */
    RUN_PHASES
};

enum {
    RUN_WARM_STEPS = 2,
    RUN_WINDOWS = 8,          /* the steady state is judged in up to 2 x RUN_WINDOWS windows... */
    RUN_WINDOW_MIN_STEPS = 5, /* ...of at least this many steps (doubled whenever they fill up) */
};

struct run_totals {
    int64_t wall_ns, wait_ns, h2d_ns, compute_ns;  /* the whole run */
    int64_t comm_ns;          /* data parallel: the communication thread's time on gradient all-reduces */
    int64_t comm_wait_ns;     /*   and the part the step waited for after backward (part of compute) */
    int world;                /* processes training together (0 or 1: alone) */
    int64_t images, steps;
    /* The run's first RUN_WARM_STEPS steps, also counted above: the step arena
     * grows to its high-water mark and first touches its memory (page faults;
     * under a hypervisor, the host backing fresh pages), a one-off cost that the
     * steady-state rate leaves out. */
    int64_t warm_ns, warm_images;
    struct run_span phase[RUN_PHASES];  /* the same steps, split by phase */
    struct run_span win[2 * RUN_WINDOWS]; /* the steady state in windows of win_steps steps, in order */
    int64_t win_steps;        /* 0 until the first steady step */
    int n_win;                /* windows begun (the last one may be partial) */
    int epochs_seen;          /* epochs this process has stepped in (a resumed run counts from its own) */
    int64_t loader_cpu_ns;    /* worker threads' CPU time (or inline loading time) */
    int64_t process_cpu_ns;   /* the whole process's CPU time over the same stretch */
    int64_t loader_cpu_cold_ns, process_cpu_cold_ns; /* of those, the memory cache's first epoch's (0: none) */
    int cores;                /* online CPUs */
    bool on_gpu;
};

enum input_bound { INPUT_NOT_BOUND, INPUT_MODERATELY, INPUT_HIGHLY };

/* What the report concludes about the input pipeline. */
struct report_verdict {
    bool steady;              /* false: no steady step at all, so this is the whole run's */
    double share;             /* input-bound share (wait + h2d over wall) of the steady state */
    double lo, hi;            /* the smallest and largest share of its full windows (= share without) */
    int windows;              /* full windows measured (0: too short for a spread) */
    enum input_bound bound;   /* the class of share */
    bool borderline;          /* lo and hi fall in different classes */
};

double report_share(int64_t part, int64_t whole);
/* images per second of wall time; 0 for no time */
double report_rate(int64_t images, int64_t ns);
enum input_bound report_classify(double input_share);
/* The verdict in words: "not input-bound", "moderately input-bound", "highly input-bound". */
const char *report_bound_name(enum input_bound b);
/* Counts one finished step into t: its phase, the whole run, and the steady state's windows. */
void report_count_step(struct run_totals *t, enum run_phase ph, const struct run_span *step);
/* The stretch the verdict is about: the steady state, or the whole run when it has none. */
struct run_span report_judged(const struct run_totals *t);
void report_judge(const struct run_totals *t, struct report_verdict *v);
/* The verdict as the report's line says it, e.g. "not input-bound" or
 * "borderline (not input-bound to moderately input-bound)". */
const char *report_verdict_words(const struct report_verdict *v, char *buf, size_t len);
/* The loader's share of the process's CPU time in the steady state: after the memory
 * cache's first epoch when there was one, else over the whole run. */
double report_loader_cpu(const struct run_totals *t);
/* The knob to try next, in words, given the settings and what the timings show; never
 * a setting already in place, and "nothing to do here" when that is the answer. */
const char *report_advice(const struct run_totals *t, const struct config *cfg, char *buf, size_t len);
void report_print(FILE *f, const struct run_totals *t, const struct config *cfg);
/* ./train --help-report: every line of the report, explained. */
void report_help(FILE *f);

#endif
