/* report.h — where the time went, and what to try next.
 *
 * The trainer sums, over the run, the wall time of every step split into
 *   wait     the training thread blocked on the loader's ring
 *   h2d      copying the batch to the device (0 on the CPU)
 *   compute  forward, backward and the optimizer step
 *   other    everything else (logging, bookkeeping)
 * and the CPU time the loader's workers burned. The verdict uses TF Profiler's
 * thresholds on the input-bound share (wait + h2d): < 5% not input-bound, 5-20%
 * moderately, > 20% highly. Waiting alone understates the loader's cost when its
 * workers share the cores with compute, so the report also names CPU contention. */
#ifndef NS_REPORT_H
#define NS_REPORT_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "config.h"

struct run_totals {
    int64_t wall_ns, wait_ns, h2d_ns, compute_ns;
    int64_t comm_ns;          /* data parallel: the communication thread's time on gradient all-reduces */
    int64_t comm_wait_ns;     /*   and the part the step waited for after backward (part of compute) */
    int world;                /* processes training together (0 or 1: alone) */
    int64_t images, steps;
    /* The run's first RUN_WARM_STEPS steps, also counted above: the step arena
     * grows to its high-water mark and first touches its memory (page faults;
     * under a hypervisor, the host backing fresh pages), a one-off cost that the
     * steady-state rate leaves out. */
    int64_t warm_ns, warm_images;
    int64_t loader_cpu_ns;    /* worker threads' CPU time (or inline loading time) */
    int64_t process_cpu_ns;   /* the whole process's CPU time over the same stretch */
    int cores;                /* online CPUs */
    bool on_gpu;
};

enum { RUN_WARM_STEPS = 2 };

enum input_bound { INPUT_NOT_BOUND, INPUT_MODERATELY, INPUT_HIGHLY };

double report_share(int64_t part, int64_t whole);
/* images per second of wall time; 0 for no time */
double report_rate(int64_t images, int64_t ns);
enum input_bound report_classify(double input_share);
/* The verdict in words: "not input-bound", "moderately input-bound", "highly input-bound". */
const char *report_bound_name(enum input_bound b);
/* The knob to try next, in words, given the settings and what the timings show. */
const char *report_advice(const struct run_totals *t, const struct config *cfg, char *buf, size_t len);
void report_print(FILE *f, const struct run_totals *t, const struct config *cfg);

#endif
