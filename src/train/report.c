/* report.c — the pipeline report printed at the end of every run. */
#include <math.h>
#include <stdio.h>
#include <string.h>

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

/* ---- counting ------------------------------------------------------------------ */

static void span_add(struct run_span *to, const struct run_span *s) {
    to->steps += s->steps;
    to->images += s->images;
    to->wall_ns += s->wall_ns;
    to->wait_ns += s->wait_ns;
    to->h2d_ns += s->h2d_ns;
    to->compute_ns += s->compute_ns;
}

/* The input-bound share of a stretch: waiting for the loader plus copying to the device. */
static double input_share(const struct run_span *s) { return report_share(s->wait_ns + s->h2d_ns, s->wall_ns); }

void report_count_step(struct run_totals *t, enum run_phase ph, const struct run_span *step) {
    if (t->steps < RUN_WARM_STEPS) t->warm_ns += step->wall_ns, t->warm_images += step->images;
    t->wall_ns += step->wall_ns;
    t->wait_ns += step->wait_ns;
    t->h2d_ns += step->h2d_ns;
    t->compute_ns += step->compute_ns;
    t->images += step->images;
    t->steps += step->steps;
    if (ph < 0 || ph >= RUN_PHASES) ph = RUN_STEADY;
    int64_t before = t->phase[RUN_STEADY].steps;
    span_add(&t->phase[ph], step);
    if (ph != RUN_STEADY) return;
    /* Windows of win_steps consecutive steady steps. When all 2 x RUN_WINDOWS are used,
     * neighbours merge pairwise and the windows double, so any length of run ends with
     * RUN_WINDOWS to 2 x RUN_WINDOWS windows of equal length (the last one partial). */
    if (t->win_steps == 0) t->win_steps = RUN_WINDOW_MIN_STEPS;
    int64_t k = before / t->win_steps;
    if (k == 2 * RUN_WINDOWS) {
        for (int i = 0; i < RUN_WINDOWS; i++) {
            struct run_span m = t->win[2 * i];
            span_add(&m, &t->win[2 * i + 1]);
            t->win[i] = m;
        }
        memset(&t->win[RUN_WINDOWS], 0, RUN_WINDOWS * sizeof t->win[0]);
        t->win_steps *= 2;
        k = before / t->win_steps;
    }
    span_add(&t->win[k], step);
    t->n_win = (int)k + 1;
}

/* ---- judging ------------------------------------------------------------------- */

struct run_span report_judged(const struct run_totals *t) {
    if (t->phase[RUN_STEADY].steps > 0) return t->phase[RUN_STEADY];
    return (struct run_span){t->steps, t->images, t->wall_ns, t->wait_ns, t->h2d_ns, t->compute_ns};
}

void report_judge(const struct run_totals *t, struct report_verdict *v) {
    struct run_span s = report_judged(t);
    memset(v, 0, sizeof *v);
    v->steady = t->phase[RUN_STEADY].steps > 0;
    v->share = input_share(&s);
    v->lo = v->hi = v->share;
    v->bound = report_classify(v->share);
    if (!v->steady) return;
    /* only full windows: a partial one is fewer steps, so noisier */
    for (int i = 0; i < t->n_win; i++) {
        if (t->win[i].steps < t->win_steps) continue;
        double w = input_share(&t->win[i]);
        if (v->windows == 0 || w < v->lo) v->lo = w;
        if (v->windows == 0 || w > v->hi) v->hi = w;
        v->windows++;
    }
    if (v->windows < 2) { /* one window is no spread */
        v->lo = v->hi = v->share;
        v->windows = 0;
    }
    v->borderline = report_classify(v->lo) != report_classify(v->hi);
}

const char *report_verdict_words(const struct report_verdict *v, char *buf, size_t len) {
    if (v->borderline)
        snprintf(buf, len, "borderline (between %s and %s)", report_bound_name(report_classify(v->lo)),
                 report_bound_name(report_classify(v->hi)));
    else
        snprintf(buf, len, "%s", report_bound_name(v->bound));
    return buf;
}

double report_loader_cpu(const struct run_totals *t) {
    if (t->process_cpu_cold_ns > 0 && t->process_cpu_ns > t->process_cpu_cold_ns)
        return report_share(t->loader_cpu_ns - t->loader_cpu_cold_ns, t->process_cpu_ns - t->process_cpu_cold_ns);
    return report_share(t->loader_cpu_ns, t->process_cpu_ns);
}

/* ---- advice -------------------------------------------------------------------- */

/* Data parallel: the step waits on the network more than on data. */
static bool comm_advice(const struct run_totals *t, const struct config *cfg, double input, char *buf, size_t len) {
    double comm = report_share(t->comm_wait_ns, t->wall_ns);
    if (t->world <= 1 || comm < 0.05 || comm < input) return false;
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
    return true;
}

/* Workers for a loader that decodes, or only copies, on the CPU: half the cores, the
 * other half left to compute (1 on 2 cores). */
static int half_cores(const struct run_totals *t) { return t->cores > 2 ? t->cores / 2 : 1; }

/* The loader is behind: what to change, never a setting already in place. Storage-bound
 * (the simulated latency per file is more than the CPU the loader spends per image):
 * reads wait without using a core, so workers beyond the cores help. CPU-bound:
 * workers beyond the cores only take CPU from compute, so the cure is less work. */
static void input_advice(const struct run_totals *t, const struct config *cfg, const struct report_verdict *v,
                         char *buf, size_t len) {
    const struct cfg_loader *l = &cfg->loader;
    int cores = t->cores > 0 ? t->cores : 1;
    double cpu_us = t->images > 0 ? (double)t->loader_cpu_ns * 1e-3 / (double)t->images : 0;
    /* a warm memory cache reads no files; only its first epoch (not in the steady state) does */
    bool reads_files = l->cache == CFG_CACHE_NONE || (l->cache == CFG_CACHE_MEMORY && !v->steady);
    bool storage = reads_files && l->io_delay_us > 0 && (double)l->io_delay_us > cpu_us;
    if (!v->steady && l->cache == CFG_CACHE_MEMORY) {
        snprintf(buf, len, "the whole run was the memory cache's first epoch (warm-up: every image read and "
                           "decoded once); later epochs read memory, so train more than one epoch before "
                           "judging the loader");
    } else if (l->workers == 0 && storage) {
        /* twice the cores (4 on 2), and a ring of two slots a worker */
        int w = 2 * cores > 4 ? 2 * cores : 4;
        char ring[64] = "";
        if (l->prefetch < 2 * w) snprintf(ring, sizeof ring, " and loader.prefetch=%d", 2 * w);
        snprintf(buf, len, "try loader.workers=%d%s: loading runs on the training thread, which waits for every "
                           "file read (%d us each); reads don't use a core, so workers beyond the %d cores help "
                           "too", w, ring, l->io_delay_us, cores);
    } else if (l->workers == 0) {
        snprintf(buf, len, "try loader.workers=%d: loading runs on the training thread, so compute waits for "
                           "every decode (%.0f us of CPU an image)", half_cores(t), cpu_us);
    } else if (storage) {
        int w = l->workers * 2 > 4 ? l->workers * 2 : 4, p = l->prefetch > 2 * w ? l->prefetch : 2 * w;
        snprintf(buf, len, "storage latency dominates (%d us a file, %.0f us of CPU an image): reads wait "
                           "without using a core, so try loader.workers=%d (now %d; more than the %d cores is "
                           "fine) and loader.prefetch=%d (now %d)%s", l->io_delay_us, cpu_us, w, l->workers,
                 cores, p, l->prefetch, l->cache == CFG_CACHE_NONE ? ", or loader.cache=memory to read each "
                                                                     "file once" : "");
    } else if (l->cache == CFG_CACHE_NONE) {
        snprintf(buf, len, "decoding is CPU-bound (%.0f us of CPU an image): try loader.cache=memory (decode each "
                           "image once) or loader.cache=packed (a pre-decoded file); more workers than the %d "
                           "cores would only take CPU from compute", cpu_us, cores);
    } else if (l->prefetch < 2) {
        snprintf(buf, len, "try loader.prefetch=4: with one slot the workers can't fill the next batch "
                           "while this one computes");
    } else if (t->on_gpu && t->h2d_ns > t->wait_ns && !l->pinned) {
        snprintf(buf, len, "copies dominate: try loader.pinned=yes (pageable copies are synchronous and slower)");
    } else if (t->on_gpu && t->h2d_ns > t->wait_ns && !l->overlap) {
        snprintf(buf, len, "copies dominate: try loader.overlap=yes (copy on its own stream)");
    } else if (l->workers + 1 < cores) {
        snprintf(buf, len, "try loader.workers=%d (now %d): %d cores, and the loader has cores to spare",
                 l->workers + 1, l->workers, cores);
    } else {
        snprintf(buf, len, "nothing left to try in the loader's knobs on %d cores: it reads decoded images "
                           "(cache=%s) with %d workers and %d slots; what is left is the per-image work "
                           "(augmenting, copying) sharing the cores with compute: more cores, or lighter "
                           "augmentation", cores, cfg_enum_name("loader.cache", (int)l->cache), l->workers,
                 l->prefetch);
    }
}

/* The advice follows the article's order of causes: first make the loader keep up
 * (workers, prefetch, decoded-image cache), then the copies, then the kernels. */
const char *report_advice(const struct run_totals *t, const struct config *cfg, char *buf, size_t len) {
    const struct cfg_loader *l = &cfg->loader;
    struct report_verdict v;
    report_judge(t, &v);
    double loader_cpu = report_loader_cpu(t);
    if (comm_advice(t, cfg, v.share, buf, len)) return buf;
    if (v.borderline && v.lo < 0.05) {
        snprintf(buf, len, "nothing to change on this evidence: the steady state's windows waited %.1f%% to "
                           "%.1f%%, across the 5%% threshold, so the machine's load decides the class; run "
                           "longer or on a quieter machine before turning a knob", 100 * v.lo, 100 * v.hi);
    } else if (v.bound != INPUT_NOT_BOUND) {
        input_advice(t, cfg, &v, buf, len);
    } else if (!t->on_gpu && l->workers > 0 && loader_cpu > 0.15 && l->workers + 1 > t->cores &&
               l->cache == CFG_CACHE_NONE) {
        snprintf(buf, len, "CPU contention: the loader used %.0f%% of all CPU time on %d cores, which compute "
                           "would otherwise have had; try loader.cache=packed or memory to cut decode work",
                 100 * loader_cpu, t->cores);
    } else if (!t->on_gpu && l->workers > half_cores(t) && loader_cpu > 0.15 && l->workers + 1 > t->cores) {
        snprintf(buf, len, "CPU contention: the loader used %.0f%% of all CPU time on %d cores though it reads "
                           "decoded images (cache=%s); try loader.workers=%d to give compute its cores back",
                 100 * loader_cpu, t->cores, cfg_enum_name("loader.cache", (int)l->cache), half_cores(t));
    } else if (cfg->train.kernels == KF_LOOP) {
        snprintf(buf, len, "compute-bound with the loop kernels: try train.kernels=vectorized");
    } else {
        snprintf(buf, len, "nothing to do here in the input pipeline: it keeps up (%.1f%% of the steady state "
                           "waiting); speed now comes from the kernels, the batch size or the model", 100 * v.share);
    }
    return buf;
}

/* ---- printing ------------------------------------------------------------------ */

static void line(FILE *f, const char *name, int64_t ns, int64_t wall, int64_t all_ns, int64_t all_wall) {
    fprintf(f, "  %-11s %9.2f s %6.1f%%   %9.2f s %6.1f%%\n", name, (double)ns * 1e-9, 100 * report_share(ns, wall),
            (double)all_ns * 1e-9, 100 * report_share(all_ns, all_wall));
}

static int64_t other_ns(const struct run_span *s) {
    int64_t o = s->wall_ns - s->wait_ns - s->h2d_ns - s->compute_ns;
    return o > 0 ? o : 0;
}

/* The warm-up steps, each phase apart. */
static void print_warm_up(FILE *f, const struct run_totals *t) {
    static const char *const what[RUN_STEADY] = {
        [RUN_CACHE_FILL] = "the memory cache's first epoch",
        [RUN_START] = "the run's first steps",
        [RUN_RING_FILL] = "each later epoch's first step, the ring filling",
    };
    int64_t steps = 0, wall = 0, wait = 0;
    for (int p = 0; p < RUN_STEADY; p++)
        steps += t->phase[p].steps, wall += t->phase[p].wall_ns, wait += t->phase[p].wait_ns;
    if (!steps) return;
    fprintf(f, "  warm-up     %lld step%s, %.2f s, %.1f%% of it waiting:", (long long)steps, steps == 1 ? "" : "s",
            (double)wall * 1e-9, 100 * report_share(wait, wall));
    const char *sep = " ";
    for (int p = 0; p < RUN_STEADY; p++) {
        const struct run_span *s = &t->phase[p];
        if (!s->steps) continue;
        fprintf(f, "%s%s (%lld, %.2f s, %.1f%% waiting)", sep, what[p], (long long)s->steps, (double)s->wall_ns * 1e-9,
                100 * report_share(s->wait_ns, s->wall_ns));
        sep = "; ";
    }
    fputc('\n', f);
}

static void print_throughput(FILE *f, const struct run_totals *t, const struct run_span *st, bool steady) {
    fprintf(f, "  throughput %.0f images/s", report_rate(t->images, t->wall_ns));
    if (t->world > 1) fprintf(f, " on this rank, %.0f for the %d ranks", t->world * report_rate(t->images, t->wall_ns), t->world);
    if (t->steps > RUN_WARM_STEPS) {
        fprintf(f, "; %.0f after the first %d steps (%.0f ms", report_rate(t->images - t->warm_images, t->wall_ns - t->warm_ns),
                RUN_WARM_STEPS, (double)t->warm_ns * 1e-6);
        /* the first steps' cost is only warm-up where they took longer than steady ones */
        double typical = steady && st->steps ? (double)st->wall_ns / (double)st->steps * RUN_WARM_STEPS : 0;
        double extra = (double)t->warm_ns - typical;
        if (typical > 0 && extra > 0.1 * (double)t->warm_ns)
            fprintf(f, ", %.0f ms more than %d steady steps: the step arena's first touch of its memory and the "
                       "ring's first fill)", extra * 1e-6, RUN_WARM_STEPS);
        else if (typical > 0)
            fprintf(f, ", about %d steady steps: no warm-up cost to speak of)", RUN_WARM_STEPS);
        else
            fputc(')', f);
    }
    if (steady) fprintf(f, "; %.0f in the steady state", report_rate(st->images, st->wall_ns));
    fputc('\n', f);
}

void report_print(FILE *f, const struct run_totals *t, const struct config *cfg) {
    struct run_span all = {t->steps, t->images, t->wall_ns, t->wait_ns, t->h2d_ns, t->compute_ns};
    struct run_span st = report_judged(t);
    struct report_verdict v;
    report_judge(t, &v);
    char advice[640], words[96], head[48];
    fprintf(f, "\npipeline report (%lld steps, %lld images, %.1f s of training steps; ./train --help-report "
               "explains each line)\n", (long long)t->steps, (long long)t->images, (double)t->wall_ns * 1e-9);
    snprintf(head, sizeof head, v.steady ? "steady state (%lld steps)" : "no steady state", (long long)st.steps);
    fprintf(f, "  %-11s %-20s   %s\n", "", head, "whole run");
    line(f, "waiting", st.wait_ns, st.wall_ns, t->wait_ns, t->wall_ns);
    line(f, "copy h2d", st.h2d_ns, st.wall_ns, t->h2d_ns, t->wall_ns);
    line(f, "compute", st.compute_ns, st.wall_ns, t->compute_ns, t->wall_ns);
    if (t->world > 1) { /* inside compute: what backward did not hide of the gradients' all-reduce */
        line(f, " all-reduce", t->comm_wait_ns, t->wall_ns, t->comm_wait_ns, t->wall_ns);
        fprintf(f, "    (the step waited for it after backward; all-reduce took %.2f s in all, %.0f%% hidden "
                   "behind backward)\n", (double)t->comm_ns * 1e-9,
                t->comm_ns > 0 ? fmax(0.0, 100.0 * (1 - report_share(t->comm_wait_ns, t->comm_ns))) : 0.0);
    }
    line(f, "other", other_ns(&st), st.wall_ns, other_ns(&all), t->wall_ns);
    print_warm_up(f, t);
    print_throughput(f, t, &st, v.steady);
    if (t->process_cpu_cold_ns > 0)
        fprintf(f, "  loader CPU %.1f%% of the process's CPU time after the memory cache's first epoch (%.1f%% over "
                   "the whole run; %d cores)\n", 100 * report_loader_cpu(t),
                100 * report_share(t->loader_cpu_ns, t->process_cpu_ns), t->cores);
    else
        fprintf(f, "  loader CPU %.1f%% of the process's CPU time (%d cores)\n",
                100 * report_share(t->loader_cpu_ns, t->process_cpu_ns), t->cores);
    report_verdict_words(&v, words, sizeof words);
    fprintf(f, "verdict: %s %s (%.1f%% of step time waiting for input", words,
            v.steady ? "in the steady state" : "over the whole run, all of it warm-up", 100 * v.share);
    if (v.windows)
        fprintf(f, "; %d windows of %lld steps: %.1f%% to %.1f%%", v.windows, (long long)t->win_steps, 100 * v.lo,
                100 * v.hi);
    fprintf(f, ")");
    if (v.steady && st.steps < t->steps)
        fprintf(f, "; the whole run, warm-up included: %.1f%%", 100 * input_share(&all));
    fputc('\n', f);
    fprintf(f, "next: %s\n", report_advice(t, cfg, advice, sizeof advice));
}

void report_help(FILE *f) {
    fprintf(f,
        "The pipeline report, line by line (include/report.h, docs/guide.md):\n\n"
        "  steady state / whole run\n"
        "      two columns: the steps after the warm-up (below), and every step of the run.\n"
        "      Each row is seconds of step wall time and its share of the column's wall time.\n"
        "  waiting     the training thread blocked on the loader's ring: the batch was not ready.\n"
        "  copy h2d    copying the batch to the device (0 on the CPU).\n"
        "  compute     normalize, forward, loss, backward, the optimizer step, the arena reset.\n"
        "   all-reduce (several processes) the part of compute spent waiting for the gradients'\n"
        "              all-reduce after backward, and how much of it backward hid.\n"
        "  other       the rest of each step's wall time: handing the batch back to the loader,\n"
        "              the trace and metrics rows, the progress line. A few tenths of a percent;\n"
        "              more means the bookkeeping (a slow disk for --metrics or --trace) costs.\n"
        "  warm-up     steps left out of the steady state, each kind apart: the run's first %d\n"
        "              (the step arena touching its memory, the ring's first fill); the first step\n"
        "              of each later epoch (the loader starts every epoch with an empty ring);\n"
        "              with loader.cache = memory, this process's first epoch (each image read and\n"
        "              decoded once into the cache).\n"
        "  throughput  images/s over the whole run; after the first %d steps (and how much longer\n"
        "              those took than steady steps: their warm-up cost, if any); in the steady state.\n"
        "  loader CPU  the loader's CPU time (workers, or inline loading) over the process's: on a\n"
        "              CPU, time the workers take from compute even when nothing waits.\n"
        "  verdict     TF Profiler's thresholds on the steady state's waiting + copy share: under\n"
        "              5%% not input-bound, 5-20%% moderately, over 20%% highly. The steady state is\n"
        "              also cut into windows of at least %d steps; when the windows' shares fall on\n"
        "              both sides of a threshold the verdict is \"borderline\", with that spread:\n"
        "              the machine's load, not the settings, decides the class.\n"
        "  next        the one knob to try next, in the article's order (loader, copies, kernels,\n"
        "              model); never a setting already in place. It knows the cores, and whether\n"
        "              the loader waits on storage (reads don't use a core: more workers than\n"
        "              cores help) or on decoding (CPU work: cache instead). \"nothing to do here\"\n"
        "              is an answer too.\n",
        RUN_WARM_STEPS, RUN_WARM_STEPS, RUN_WINDOW_MIN_STEPS);
}
