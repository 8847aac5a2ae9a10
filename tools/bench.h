/* bench.h — the ./bench subcommands and the timing helpers they share. */
#ifndef NS_BENCH_H
#define NS_BENCH_H

#include <stdbool.h>
#include <stddef.h>

#include "backend.h"
#include "os.h"

int bench_ops(int argc, char **argv);
int bench_loader(int argc, char **argv);
int bench_train(int argc, char **argv);
int bench_kernels(int argc, char **argv);
int bench_pipeline(int argc, char **argv);
int bench_timeline(int argc, char **argv);
int bench_dist(int argc, char **argv);

static inline double bench_now_s(void) { return (double)os_now_ns() * 1e-9; }
/* Median seconds of `reps` calls of fn(arg), after one warm-up call. */
double bench_median_s(void (*fn)(void *), void *arg, int reps);

/* ---- kernel cases (bench_ops.c), shared by ./bench ops and ./bench kernels ---- */

/* The two flavours of one device. */
struct kbench_device {
    enum device dev;
    const struct backend *loop, *vec;
};
/* name "cpu" or "cuda"; -1 after saying on stderr why this build or machine can't. */
int kbench_device_open(const char *name, const char *who, struct kbench_device *d);
/* --device NAME and --batch N; -1 after a message on stderr. */
int kbench_parse_args(int argc, char **argv, const char *who, const char **device, int *batch);

enum kbench_unit { KB_FLOP, KB_BYTE };

struct kbench_result {
    char name[64];
    enum kbench_unit unit;
    double work;                 /* flops or bytes one call does or moves */
    double t_loop_s, t_vec_s;    /* medians */
    int runs_loop, runs_vec;
    double max_rel_err;          /* between the flavours' outputs on the same inputs */
    bool agree;                  /* within float32 tolerance for the sums involved */
    bool same_code;              /* both tables point at one function */
    char note[64];               /* e.g. the loop flavour timed on a slice */
};

/* Checks, then times, every case (full: ./bench kernels' list; else ./bench ops'),
 * calling row() as each finishes. The number of cases whose flavours disagree, or
 * -1 on error. */
int kbench_run_cases(const struct kbench_device *d, int batch, bool full,
                 void (*row)(const struct kbench_result *r, void *ctx), void *ctx);
/* Seconds of one call of fn(arg) on be's device: device events when the backend has
 * them, else the host clock around the call and be->sync(). */
double kbench_time_once(const struct backend *be, void (*fn)(void *), void *arg);
/* Median seconds of fn(arg) on be's device, after a first call of first_s seconds
 * (which was the warm-up, or the measurement itself past a second). */
double kbench_time_s(const struct backend *be, void (*fn)(void *), void *arg, double first_s, int *runs);
/* "1.23 0.98 0.80": /proc/loadavg's 1, 5 and 15 minute load averages. */
void kbench_load_string(char *buf, size_t len);

#endif
