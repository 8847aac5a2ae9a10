/* bench.c — ./bench SUBCOMMAND: measurements that print ratios taken in one run.
 * Not tests: nothing here asserts a time. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bench.h"
#include "error.h"
#include "viz.h"

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

double bench_median_s(void (*fn)(void *), void *arg, int reps) {
    double t[64];
    if (reps > 64) reps = 64;
    fn(arg);  /* warm-up: page faults, caches, thread pools */
    for (int i = 0; i < reps; i++) {
        double t0 = bench_now_s();
        fn(arg);
        t[i] = bench_now_s() - t0;
    }
    qsort(t, (size_t)reps, sizeof *t, cmp_double);
    return t[reps / 2];
}

static void usage(FILE *f) {
    fprintf(f, "usage: ./bench ops [--device cpu|cuda] [--batch N]       loop vs vectorized kernels, short table\n"
               "       ./bench kernels [--device cpu|cuda] [--batch N]   the same with %% of measured peaks, dispatch cost\n"
               "       ./bench pipeline [options]            the pipeline-stall lab (see ./bench pipeline --help)\n"
               "       ./bench timeline TRACE.json... -o OUT.svg   draw --trace files as timelines\n"
               "       ./bench curves METRICS.csv -o OUT.svg       draw a --metrics file as curves\n"
               "       ./bench dist [--steps N] [--rounds R]  data-parallel scaling and overlap (mpirun)\n"
               "       ./bench loader [options]              the input pipeline alone (see ./bench loader --help)\n"
               "       ./bench train [options]               resnet_small training speed (see ./bench train --help)\n");
}

/* ./bench curves METRICS.csv -o OUT.svg: what ./train --curves draws, from a metrics
 * file written earlier (viz.h). */
static int bench_curves(int argc, char **argv) {
    if (argc != 4 || strcmp(argv[2], "-o")) {
        fprintf(stderr, "usage: ./bench curves METRICS.csv -o OUT.svg\n"
                        "  draws a train.metrics file (./train --metrics) as loss and accuracy curves\n");
        return 2;
    }
    if (curves_write_svg(argv[1], argv[3])) {
        fprintf(stderr, "bench curves: %s\n", err_get());
        return 1;
    }
    printf("wrote %s\n", argv[3]);
    return 0;
}

int main(int argc, char **argv) {
    if (argc < 2) { usage(stderr); return 2; }
    if (!strcmp(argv[1], "ops")) return bench_ops(argc - 1, argv + 1);
    if (!strcmp(argv[1], "loader")) return bench_loader(argc - 1, argv + 1);
    if (!strcmp(argv[1], "kernels")) return bench_kernels(argc - 1, argv + 1);
    if (!strcmp(argv[1], "pipeline")) return bench_pipeline(argc - 1, argv + 1);
    if (!strcmp(argv[1], "timeline")) return bench_timeline(argc - 1, argv + 1);
    if (!strcmp(argv[1], "curves")) return bench_curves(argc - 1, argv + 1);
    if (!strcmp(argv[1], "dist")) return bench_dist(argc - 1, argv + 1);
    if (!strcmp(argv[1], "train")) return bench_train(argc - 1, argv + 1);
    if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) { usage(stdout); return 0; }
    fprintf(stderr, "bench: unknown subcommand '%s'\n", argv[1]);
    usage(stderr);
    return 2;
}
