/* bench.h — the ./bench subcommands and the timing helpers they share. */
#ifndef NS_BENCH_H
#define NS_BENCH_H

#include <stddef.h>

int bench_ops(int argc, char **argv);
int bench_loader(int argc, char **argv);
int bench_train(int argc, char **argv);

double bench_now_s(void);
/* Median seconds of `reps` calls of fn(arg), after one warm-up call. */
double bench_median_s(void (*fn)(void *), void *arg, int reps);

#endif
