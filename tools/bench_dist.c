/* bench_dist.c — ./bench dist: data-parallel training measured on this machine, every
 * number from one run of this command (docs/distributed.md).
 *
 * resnet_small, compute-bound (pre-decoded images, one kernel thread per process):
 *   (a) scaling: 2 ranks under mpirun against two independent single processes run at
 *       the same time (the same contention for cores and memory, no communication),
 *       and against one process alone;
 *   (b) a simulated network sized so that the all-reduce is about 30% of a step: the
 *       step time spent waiting for it with dist.overlap off and on;
 *   (c) the same, overlap on, across dist.bucket_kb values.
 * Each row runs ./train as a child and reads its pipeline report; rows are repeated
 * `--rounds` times, interleaved, and the median is shown with the spread. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench.h"

#define MAX_ROUNDS 9
#define MPIRUN "OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 mpirun --oversubscribe -np 2 "

static int steps = 40, rounds = 1;

/* What one ./train report says. */
struct report { double rate, comm_share; bool ok; };

/* The report's steady rate ("N after the first 2 steps") and its all-reduce share. */
static struct report parse(const char *out) {
    struct report r = {0, 0, false};
    const char *p = strstr(out, "pipeline report");
    if (!p) return r;
    const char *t = strstr(p, "after the first");
    if (!t) return r;
    while (t > p && t[-1] != ';') t--; /* "; 1234 after the first 2 steps" */
    r.ok = sscanf(t, " %lf", &r.rate) == 1;
    const char *c = strstr(p, " all-reduce");
    double secs, pct;
    if (c && sscanf(c, " all-reduce %lf s %lf%%", &secs, &pct) == 2) r.comm_share = pct / 100;
    return r;
}

static char *run(const char *cmd) {
    FILE *p = popen(cmd, "r");
    if (!p) return NULL;
    size_t cap = 1 << 16, len = 0, got;
    char *out = malloc(cap);
    while (out && (got = fread(out + len, 1, cap - len - 1, p)) > 0) {
        len += got;
        if (cap - len < 4096) {
            char *o = realloc(out, cap *= 2);
            if (!o) { free(out); out = NULL; }
            else out = o;
        }
    }
    if (out) out[len] = 0;
    pclose(p);
    return out;
}

/* ./train on resnet_small with `extra`; prefix "" for one process, MPIRUN for 2 ranks. */
static struct report train(const char *prefix, const char *extra) {
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "%s./train configs/resnet_small.cfg --set train.threads=1 --set train.max_steps=%d "
             "--set train.eval_every=0 --set 'train.checkpoint=\"\"' --set loader.cache=packed --set loader.workers=1 "
             "%s 2>&1", prefix, steps, extra);
    char *out = run(cmd);
    struct report r = out ? parse(out) : (struct report){0};
    if (!r.ok) fprintf(stderr, "bench dist: no report from: %s\n%s\n", cmd, out ? out : "");
    free(out);
    return r;
}

/* Two single processes at once: the sum of their steady rates. */
static struct report two_alone(void) {
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "./train configs/resnet_small.cfg --set train.threads=1 --set train.max_steps=%d "
             "--set train.eval_every=0 --set 'train.checkpoint=\"\"' --set loader.cache=packed --set loader.workers=1",
             steps);
    char both[4500];
    snprintf(both, sizeof both, "(%s > /tmp/nostall-bench-a.txt 2>&1 & %s > /tmp/nostall-bench-b.txt 2>&1; wait); "
             "cat /tmp/nostall-bench-a.txt; echo ==== ; cat /tmp/nostall-bench-b.txt", cmd, cmd);
    char *out = run(both);
    struct report r = {0, 0, false};
    if (out) {
        char *split = strstr(out, "\n====");
        if (split) {
            *split = 0;
            struct report a = parse(out), b = parse(split + 5);
            r = (struct report){a.rate + b.rate, 0, a.ok && b.ok};
        }
    }
    if (!r.ok) fprintf(stderr, "bench dist: two independent processes gave no reports\n");
    free(out);
    return r;
}

static int cmp(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}
/* median, min, max of v[0..n) */
static void stats(const double *v, int n, double *med, double *lo, double *hi) {
    double s[MAX_ROUNDS];
    memcpy(s, v, (size_t)n * sizeof *v);
    qsort(s, (size_t)n, sizeof *s, cmp);
    *med = n % 2 ? s[n / 2] : (s[n / 2 - 1] + s[n / 2]) / 2;
    *lo = s[0];
    *hi = s[n - 1];
}

int bench_dist(int argc, char **argv) {
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--steps") && i + 1 < argc) steps = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--rounds") && i + 1 < argc) rounds = atoi(argv[++i]);
        else {
            fprintf(stderr, "usage: ./bench dist [--steps N (40)] [--rounds R (1, at most %d)]\n"
                            "  data-parallel scaling, overlap and bucket sizes on resnet_small (needs mpirun)\n",
                    MAX_ROUNDS);
            return 2;
        }
    }
    if (steps < 10 || rounds < 1 || rounds > MAX_ROUNDS) { fprintf(stderr, "bench dist: bad --steps or --rounds\n"); return 2; }
    if (system("command -v mpirun >/dev/null 2>&1") != 0) {
        fprintf(stderr, "bench dist: mpirun not found (make setup installs openmpi-bin)\n");
        return 1;
    }
    char load[64];
    kbench_load_string(load, sizeof load);
    printf("bench dist: resnet_small, batch 128 per process, %d steps a row, 1 kernel thread a process, images "
           "pre-decoded (loader.cache=packed); %d round%s, interleaved; load %s\n", steps, rounds,
           rounds > 1 ? "s" : "", load);

    /* (a) scaling, and the step time that sizes the simulated network */
    double alone[MAX_ROUNDS], indep[MAX_ROUNDS], ranks[MAX_ROUNDS];
    for (int r = 0; r < rounds; r++) {
        struct report a = train("", ""), b = two_alone(), c = train(MPIRUN, "");
        if (!a.ok || !b.ok || !c.ok) return 1;
        alone[r] = a.rate, indep[r] = b.rate, ranks[r] = 2 * c.rate;
    }
    double m1, l1, h1, m2, l2, h2, m3, l3, h3;
    stats(alone, rounds, &m1, &l1, &h1);
    stats(indep, rounds, &m2, &l2, &h2);
    stats(ranks, rounds, &m3, &l3, &h3);
    printf("\n(a) scaling (images/s of all processes; median, min-max)\n");
    printf("  one process alone                 %7.0f  (%.0f-%.0f)\n", m1, l1, h1);
    printf("  two independent processes at once %7.0f  (%.0f-%.0f)\n", m2, l2, h2);
    printf("  2 ranks, data parallel            %7.0f  (%.0f-%.0f)\n", m3, l3, h3);
    printf("  scaling efficiency: %.3f against two independent processes (goal >= 0.95), %.3f against one alone x 2\n",
           m3 / m2, m3 / (2 * m1));

    /* (b) a network whose transfer is ~30% of a step with overlap off: the all-reduce
     * takes 0.43 x the step's compute, bytes / bandwidth (plus a small latency a call) */
    double step_s = 128.0 / (m3 / 2), bytes = 77754.0 * 4; /* resnet_small's parameters */
    double gbps = bytes * 8 / (0.43 * step_s * 1e9);
    char net[256];
    snprintf(net, sizeof net, "--set dist.comm_gbps=%.4f --set dist.comm_latency_us=100", gbps);
    printf("\n(b) simulated network: %.4f Gbit/s and 100 us a call (the %.0f KB of gradients in %.0f ms, 0.43 x a %.0f ms "
           "step); share of step time waiting for the all-reduce\n", gbps, bytes / 1e3, 0.43 * step_s * 1e3, step_s * 1e3);
    static const int kbs[] = {0, 16, 64, 256};
    enum { NK = sizeof kbs / sizeof *kbs };
    double off[MAX_ROUNDS], on[NK][MAX_ROUNDS];
    for (int r = 0; r < rounds; r++) {
        char extra[512];
        snprintf(extra, sizeof extra, "%s --set dist.overlap=no --set dist.bucket_kb=64", net);
        struct report o = train(MPIRUN, extra);
        if (!o.ok) return 1;
        off[r] = o.comm_share;
        for (int k = 0; k < NK; k++) {
            snprintf(extra, sizeof extra, "%s --set dist.overlap=yes --set dist.bucket_kb=%d", net, kbs[k]);
            struct report x = train(MPIRUN, extra);
            if (!x.ok) return 1;
            on[k][r] = x.comm_share;
        }
    }
    double mo, lo, ho;
    stats(off, rounds, &mo, &lo, &ho);
    printf("  overlap off, 64 KiB buckets   %5.1f%%  (%.1f-%.1f)\n", 100 * mo, 100 * lo, 100 * ho);
    double m64 = 0;
    printf("\n(c) overlap on, by bucket size\n");
    for (int k = 0; k < NK; k++) {
        double m, l, h;
        stats(on[k], rounds, &m, &l, &h);
        if (kbs[k] == 64) m64 = m;
        printf("  dist.bucket_kb = %-4d %s %5.1f%%  (%.1f-%.1f); hides %.0f%% of the overlap-off wait\n", kbs[k],
               kbs[k] ? "    " : "(one)", 100 * m, 100 * l, 100 * h, mo > 0 ? 100 * (1 - m / mo) : 0);
    }
    printf("\noverlap hides %.0f%% of the exposed all-reduce at 64 KiB buckets (goal >= 70%%)\n",
           mo > 0 ? 100 * (1 - m64 / mo) : 0);
    return 0;
}
