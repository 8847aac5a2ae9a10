/* report.c — the pipeline report printed at the end of every run. */
#include <math.h>
#include <stdio.h>

#include "report.h"

double report_share(int64_t part, int64_t whole) { return whole > 0 ? (double)part / (double)whole : 0.0; }

double report_rate(int64_t images, int64_t ns) { return ns > 0 ? (double)images / ((double)ns * 1e-9) : 0.0; }

enum input_bound report_classify(double input_share) {
    return input_share < 0.05 ? INPUT_NOT_BOUND : input_share <= 0.20 ? INPUT_MODERATELY : INPUT_HIGHLY;
}

const char *report_bound_name(enum input_bound b) {
    static const char *const names[] = {
        [INPUT_NOT_BOUND] = "not input-bound",
        [INPUT_MODERATELY] = "moderately input-bound",
        [INPUT_HIGHLY] = "highly input-bound",
    };
    return names[b];
}

/* The advice follows the article's order of causes: first make the loader keep up
 * (workers, prefetch, decoded-image cache), then the copies, then the kernels. */
const char *report_advice(const struct run_totals *t, const struct config *cfg, char *buf, size_t len) {
    const struct cfg_loader *l = &cfg->loader;
    double input = report_share(t->wait_ns + t->h2d_ns, t->wall_ns);
    double loader_cpu = report_share(t->loader_cpu_ns, t->process_cpu_ns);
    double comm = report_share(t->comm_wait_ns, t->wall_ns);
    if (t->world > 1 && comm >= 0.05 && comm >= input) { /* the step waits on the network more than on data */
        if (!cfg->dist.overlap)
            snprintf(buf, len, "communication-bound (%.0f%% of step time waiting for the gradients' all-reduce): "
                               "try dist.overlap=yes, so buckets travel while backward runs", 100 * comm);
        else if (cfg->dist.comm_latency_us > 0 && cfg->dist.bucket_kb > 0)
            snprintf(buf, len, "communication-bound (%.0f%% of step time waiting for the all-reduce): every bucket "
                               "pays the network's latency; try a larger dist.bucket_kb (now %d)", 100 * comm,
                     cfg->dist.bucket_kb);
        else
            snprintf(buf, len, "communication-bound (%.0f%% of step time waiting for the all-reduce): the network is "
                               "slower than backward; a larger batch per rank sends as much per step for more "
                               "compute", 100 * comm);
    } else if (report_classify(input) != INPUT_NOT_BOUND) {
        if (l->workers == 0)
            snprintf(buf, len, "try loader.workers=2: loading runs on the training thread, so compute waits for "
                               "every read and decode");
        else if (l->io_delay_us > 0 && l->prefetch < 8)
            snprintf(buf, len, "storage latency dominates: raise loader.prefetch (now %d) and loader.workers "
                               "(now %d) so more reads are in flight, or cache=memory to read each file once",
                     l->prefetch, l->workers);
        else if (l->cache == CFG_CACHE_NONE)
            snprintf(buf, len, "try loader.cache=memory (decode each image once) or cache=packed (pre-decoded "
                               "file); decoding every epoch costs the workers most of their time");
        else if (l->prefetch < 2)
            snprintf(buf, len, "try loader.prefetch=4: with one slot the workers can't fill the next batch "
                               "while this one computes");
        else if (t->on_gpu && t->h2d_ns > t->wait_ns && !l->pinned)
            snprintf(buf, len, "copies dominate: try loader.pinned=yes (pageable copies are synchronous and slower)");
        else if (t->on_gpu && t->h2d_ns > t->wait_ns && !l->overlap)
            snprintf(buf, len, "copies dominate: try loader.overlap=yes (copy on its own stream)");
        else
            snprintf(buf, len, "try more loader.workers (now %d) if cores are free", l->workers);
    } else if (!t->on_gpu && l->workers > 0 && loader_cpu > 0.15 && l->workers + 1 > t->cores) {
        snprintf(buf, len, "CPU contention: the loader used %.0f%% of all CPU time on %d cores, which compute "
                           "would otherwise have had; try loader.cache=packed or memory to cut decode work",
                 100 * loader_cpu, t->cores);
    } else if (cfg->train.kernels == KF_LOOP) {
        snprintf(buf, len, "compute-bound with the loop kernels: try train.kernels=vectorized");
    } else {
        snprintf(buf, len, "compute-bound: the input pipeline keeps up; speed now comes from the kernels, the "
                           "batch size or the model");
    }
    return buf;
}

static void line(FILE *f, const char *name, int64_t ns, int64_t wall) {
    fprintf(f, "  %-10s %9.2f s  %5.1f%%\n", name, (double)ns * 1e-9, 100 * report_share(ns, wall));
}

void report_print(FILE *f, const struct run_totals *t, const struct config *cfg) {
    int64_t other = t->wall_ns - t->wait_ns - t->h2d_ns - t->compute_ns;
    if (other < 0) other = 0;
    double input = report_share(t->wait_ns + t->h2d_ns, t->wall_ns);
    char advice[512];
    fprintf(f, "\npipeline report (%lld steps, %lld images, %.1f s of training steps)\n", (long long)t->steps,
            (long long)t->images, (double)t->wall_ns * 1e-9);
    line(f, "waiting", t->wait_ns, t->wall_ns);
    line(f, "copy h2d", t->h2d_ns, t->wall_ns);
    line(f, "compute", t->compute_ns, t->wall_ns);
    if (t->world > 1) { /* inside compute: what backward did not hide of the gradients' all-reduce */
        line(f, " all-reduce", t->comm_wait_ns, t->wall_ns);
        fprintf(f, "    (the step waited for it after backward; all-reduce took %.2f s in all, %.0f%% hidden "
                   "behind backward)\n", (double)t->comm_ns * 1e-9,
                t->comm_ns > 0 ? fmax(0.0, 100.0 * (1 - report_share(t->comm_wait_ns, t->comm_ns))) : 0.0);
    }
    line(f, "other", other, t->wall_ns);
    fprintf(f, "  throughput %.0f images/s", report_rate(t->images, t->wall_ns));
    if (t->world > 1) fprintf(f, " on this rank, %.0f for the %d ranks", t->world * report_rate(t->images, t->wall_ns), t->world);
    if (t->steps > RUN_WARM_STEPS)
        fprintf(f, "; %.0f after the first %d steps (%.0f ms: the step arena sizing itself)",
                report_rate(t->images - t->warm_images, t->wall_ns - t->warm_ns), RUN_WARM_STEPS,
                (double)t->warm_ns * 1e-6);
    fputc('\n', f);
    fprintf(f, "  loader CPU %.1f%% of the process's CPU time (%d cores)\n",
            100 * report_share(t->loader_cpu_ns, t->process_cpu_ns), t->cores);
    fprintf(f, "verdict: %s (%.1f%% of step time waiting for input)\n",
            report_bound_name(report_classify(input)), 100 * input);
    fprintf(f, "next: %s\n", report_advice(t, cfg, advice, sizeof advice));
}
