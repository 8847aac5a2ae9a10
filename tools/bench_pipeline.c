/* bench_pipeline.c — `./bench pipeline`: the pipeline-stall lab, and
 * `./bench timeline`: any --trace file drawn as a timeline.
 *
 *   int bench_pipeline(int argc, char **argv);   (bench.h; argv[0] = "pipeline")
 *   int bench_timeline(int argc, char **argv);   (bench.h; argv[0] = "timeline")
 *
 * The lab trains resnet_small in this process (train_run, quiet) once per setting of
 * the loader's knobs: workers {0, 1, 2} x prefetch {1, 4} x cache {none, memory,
 * packed} x io_delay_us {0, 200, 1000}, leaving out the combinations that can't
 * differ (prefetch without workers: nothing loads ahead; io_delay_us with the packed
 * cache: there are no file reads to delay). On a GPU it adds pinned x overlap.
 *
 * Each run is two epochs over a subset of Fashion-MNIST's training split of exactly
 * --epoch-steps batches (links to the prepared PNGs, and its packed file, under
 * build/lab-data). The first epoch warms everything up, the memory cache included;
 * the second is measured from its second step on, so an epoch's start (the ring
 * empty) is left out too. Each run's trace gives the per-step numbers: images/s of
 * the median step, and the share of step time spent waiting for input. Then the
 * loop and vectorized kernels, and resnet_small against a twice-as-wide copy, on one
 * fast pipeline setting. --rounds N measures every setting N times, interleaved (each
 * round runs every setting once), and each row is its median round with the rounds'
 * spread: a burst of other jobs' load moves one round, not one row.
 *
 * Writes docs/NAME.md, docs/img/NAME.svg (bar chart) and docs/img/NAME-timeline.svg
 * (a stalled and a fixed run on one time scale, a much faster one on its own: viz.h);
 * NAME is stall-lab unless --name. */
#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "backend.h"
#include "bench.h"
#include "config.h"
#include "data.h"
#include "error.h"
#include "report.h"
#include "train.h"
#include "viz.h"
#include "viz.h"

#define LAB_DIR "build/lab-data"
#define MAX_ROWS 192   /* every round of every setting, before rounds are folded into one row */

struct setting {
    int workers, prefetch;
    enum cfg_cache cache;
    int io_delay_us;
    bool pinned, overlap;        /* GPU rows */
    enum kernel_flavour kernels;
    const char *widths;          /* model.widths, or NULL for the config's */
};

struct row {
    struct setting s;
    const char *part;            /* "pipeline", "kernels", "model", "gpu" */
    struct timeline_step_stats st;
    struct run_totals tot;
    double images_per_s;         /* batch / median step */
    int rounds;                  /* rounds folded into this row: it is their median round */
    double ips_lo, ips_hi;       /* images/s: the slowest and fastest round */
    double wait_lo, wait_hi;     /* waiting share: the least and most of the rounds */
    char verdict[32];
    char advice[512];
    char trace[PATH_MAX];
};

struct lab {
    struct config base;
    const char *config;          /* its file, for the headings */
    const char *name;            /* of the files written */
    char command[512];           /* as it was typed, for the page it writes */
    const char *device;          /* "cpu" or "cuda" */
    int epoch_steps;
    int rounds;                  /* --rounds: each setting measured this many times, interleaved */
    int runs;                    /* training runs so far: each gets a trace file of its own */
    bool quick;
    char subset[PATH_MAX];
    struct row rows[MAX_ROWS];
    int n;
};

/* a setting's values as the config spells them */
static const char *cache_name(enum cfg_cache c) { return cfg_enum_name("loader.cache", (int)c); }
static const char *kernels_name(enum kernel_flavour k) { return cfg_enum_name("train.kernels", (int)k); }

/* ---- the subset of the training split ---- */

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* Sorted names in dir (subfolders when dirs, else files); *n of them, malloc'd. */
static char **list_dir(const char *dir, bool dirs, int *n) {
    DIR *d = opendir(dir);
    *n = 0;
    if (!d) {
        err_set("%s cannot be read: %s. HINT: run `make data` to prepare Fashion-MNIST", dir, strerror(errno));
        return NULL;
    }
    int cap = 64;
    char **v = malloc((size_t)cap * sizeof *v);
    struct dirent *e;
    while (v && (e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        char p[PATH_MAX];
        struct stat sb;
        snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
        if (stat(p, &sb) || (bool)S_ISDIR(sb.st_mode) != dirs) continue;
        if (*n == cap) {
            char **more = realloc(v, (size_t)(cap *= 2) * sizeof *v);
            if (!more) break;
            v = more;
        }
        v[(*n)++] = strdup(e->d_name);
    }
    closedir(d);
    if (!v) { err_set("out of host memory listing %s", dir); return NULL; }
    qsort(v, (size_t)*n, sizeof *v, cmp_str);
    return v;
}

static void free_list(char **v, int n) {
    for (int i = 0; i < n; i++) free(v[i]);
    free(v);
}

/* dst/<class>/ gets links to `total` files of src/<class>/, spread evenly over classes. */
static int link_split(const char *src, const char *dst, int total) {
    int nc;
    char **classes = list_dir(src, true, &nc);
    if (!classes) return -1;
    int rc = nc ? 0 : err_set("%s has no class folders. HINT: run `make data`", src);
    for (int k = 0; k < nc && !rc; k++) {
        char sdir[PATH_MAX], ddir[PATH_MAX];
        snprintf(sdir, sizeof sdir, "%s/%s", src, classes[k]);
        snprintf(ddir, sizeof ddir, "%s/%s", dst, classes[k]);
        int nf, want = total / nc + (k < total % nc);
        char **files = list_dir(sdir, false, &nf);
        if (!files) { rc = -1; break; }
        if (nf < want) rc = err_set("%s has %d images, the lab needs %d", sdir, nf, want);
        if (!rc) rc = os_mkdir_p(ddir);
        for (int i = 0; i < want && !rc; i++) {
            char from[PATH_MAX * 2], to[PATH_MAX * 2], abs[PATH_MAX];
            snprintf(from, sizeof from, "%s/%s", sdir, files[i]);
            snprintf(to, sizeof to, "%s/%s", ddir, files[i]);
            if (!realpath(from, abs)) rc = err_set("%s: %s", from, strerror(errno));
            else if (symlink(abs, to) && errno != EEXIST) rc = err_set("linking %s: %s", to, strerror(errno));
        }
        free_list(files, nf);
    }
    free_list(classes, nc);
    return rc;
}

/* Packs a linked folder into FOLDER.packed, for cache = packed. */
static int pack_split(const struct cfg_data *d, const char *folder) {
    char packed[PATH_MAX + 16];
    snprintf(packed, sizeof packed, "%s.packed", folder);
    struct data_folder_options fo = {d->height, d->width, d->channels, d->on_size_mismatch == CFG_SIZE_RESIZE};
    struct dataset *ds;
    if (data_open_folder(folder, &fo, &ds)) return -1;
    int rc = data_pack(ds, packed, NULL);
    data_close(ds);
    return rc;
}

static int prepare_subset(struct lab *lab) {
    const struct cfg_data *d = &lab->base.data;
    int total = lab->epoch_steps * lab->base.loader.batch, total_test = 10 * d->classes;
    snprintf(lab->subset, sizeof lab->subset, LAB_DIR "/subset-%d", total);
    char train[PATH_MAX + 16], test[PATH_MAX + 16], src[PATH_MAX * 2], packed[PATH_MAX + 32];
    snprintf(train, sizeof train, "%s/train", lab->subset);
    snprintf(test, sizeof test, "%s/test", lab->subset);
    struct data_packed_info a, b;
    snprintf(packed, sizeof packed, "%s.packed", train);
    bool have = data_packed_verify(packed, &a) == 0 && a.count == total;
    snprintf(packed, sizeof packed, "%s.packed", test);
    if (have && data_packed_verify(packed, &b) == 0 && b.count == total_test) return 0;  /* an earlier run's */
    snprintf(src, sizeof src, "%s/%s", d->path, d->train_dir);
    if (os_mkdir_p(train) || link_split(src, train, total)) return -1;
    snprintf(src, sizeof src, "%s/%s", d->path, d->test_dir);
    if (os_mkdir_p(test) || link_split(src, test, total_test)) return -1;
    return pack_split(d, train) || pack_split(d, test) ? -1 : 0;
}

/* ---- one run ---- */

static int set(struct config *cfg, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int set(struct config *cfg, const char *fmt, ...) {
    char a[PATH_MAX + 64];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(a, sizeof a, fmt, ap);
    va_end(ap);
    return cfg_set(cfg, a);
}

static int run_setting(struct lab *lab, const struct setting *s, const char *part, int steps, int first, int count) {
    if (lab->n == MAX_ROWS) return err_set("too many lab rows");
    struct row *r = &lab->rows[lab->n];
    memset(r, 0, sizeof *r);
    r->s = *s;
    r->part = part;
    os_mkdir_p(LAB_DIR "/traces");
    snprintf(r->trace, sizeof r->trace, LAB_DIR "/traces/run-%03d.json", lab->runs++);
    struct config cfg = lab->base;
    int rc = set(&cfg, "data.path=%s", lab->subset) || set(&cfg, "data.dataset=folder") ||
             set(&cfg, "train.epochs=2") || set(&cfg, "train.max_steps=%d", steps) ||
             set(&cfg, "train.eval_every=0") || set(&cfg, "train.checkpoint=\"\"") ||
             set(&cfg, "train.trace=%s", r->trace) || set(&cfg, "train.device=%s", lab->device) ||
             set(&cfg, "train.kernels=%s", kernels_name(s->kernels)) ||
             set(&cfg, "loader.workers=%d", s->workers) || set(&cfg, "loader.prefetch=%d", s->prefetch) ||
             set(&cfg, "loader.cache=%s", cache_name(s->cache)) ||
             set(&cfg, "loader.io_delay_us=%d", s->io_delay_us) ||
             set(&cfg, "loader.pinned=%s", s->pinned ? "yes" : "no") ||
             set(&cfg, "loader.overlap=%s", s->overlap ? "yes" : "no") ||
             (s->widths && set(&cfg, "model.widths=%s", s->widths)) || cfg_validate(&cfg, "bench pipeline");
    if (rc) return -1;
    struct train_options opt = {.quiet = true, .totals = &r->tot};
    if (train_run(&cfg, &opt) != TRAIN_OK) return err_set("the training run failed (see above)");
    struct timeline tl;
    if (timeline_load_json(&tl, r->trace)) return -1;
    int have = timeline_step_count(&tl);
    rc = have < steps ? err_set("the run's trace has %d steps, expected %d", have, steps)
                      : timeline_step_stats(&tl, first, count, &r->st);
    timeline_free(&tl);
    if (rc) return -1;
    r->images_per_s = r->st.median_step_s > 0 ? cfg.loader.batch / r->st.median_step_s : 0;
    r->rounds = 1;
    r->ips_lo = r->ips_hi = r->images_per_s;
    r->wait_lo = r->wait_hi = r->st.wait_share;
    /* the report's verdict and advice for the measured window; copies to a device (0 on
     * the CPU) are the run's total, spread evenly over its steps */
    struct run_totals t = r->tot;
    t.wall_ns = (int64_t)(r->st.total_s * 1e9);
    t.wait_ns = (int64_t)(r->st.wait_share * r->st.total_s * 1e9);
    t.h2d_ns = r->tot.steps ? r->tot.h2d_ns / r->tot.steps * r->st.steps : 0;
    /* the report judges its steady state: here, the measured window, in one piece */
    t.phase[RUN_STEADY] = (struct run_span){r->st.steps, (int64_t)r->st.steps * cfg.loader.batch, t.wall_ns,
                                            t.wait_ns, t.h2d_ns, 0};
    t.n_win = 0;
    double input = report_share(t.wait_ns + t.h2d_ns, t.wall_ns);
    snprintf(r->verdict, sizeof r->verdict, "%s", report_bound_name(report_classify(input)));
    report_advice(&t, &cfg, r->advice, sizeof r->advice);
    lab->n++;
    return 0;
}

static void setting_words(const struct setting *s, char *buf, size_t len) {
    if (s->workers) snprintf(buf, len, "workers %d, prefetch %d", s->workers, s->prefetch);
    else snprintf(buf, len, "workers 0 (inline)");
}

static void print_row(const struct row *r) {
    char w[64];
    setting_words(&r->s, w, sizeof w);
    char io[16];
    snprintf(io, sizeof io, r->s.cache == CFG_CACHE_PACKED ? "-" : "%d", r->s.io_delay_us);
    printf("%-10s %-7s %-22s %6s %9.0f %9.1f %9.1f %9.1f %8.1f%% %8.1f%%  %s\n",
           kernels_name(r->s.kernels), cache_name(r->s.cache), w, io,
           r->images_per_s, r->st.median_step_s * 1e3, r->st.median_wait_s * 1e3, r->st.median_compute_s * 1e3,
           100 * r->st.wait_share, 100 * report_loader_cpu(&r->tot), r->verdict);
    fflush(stdout);
}

/* ---- the settings ---- */

/* Rows first..first + rounds x n_settings - 1 hold `rounds` rounds of n_settings settings
 * (round-major, so each round ran every setting once, interleaved). Each setting
 * becomes one row: its median round (by step time; of two, the faster), with the
 * rounds' spread of images/s and waiting share. */
static void fold_rounds(struct lab *lab, int first, int n_settings, int rounds) {
    if (rounds < 1) return;
    static struct row folded[MAX_ROWS];
    for (int k = 0; k < n_settings; k++) {
        int order[MAX_ROWS] = {0}, n = 0;
        for (int r = 0; r < rounds; r++) order[n++] = first + r * n_settings + k;
        for (int i = 1; i < n; i++) /* insertion sort by median step time */
            for (int j = i; j > 0 && lab->rows[order[j]].st.median_step_s < lab->rows[order[j - 1]].st.median_step_s; j--) {
                int x = order[j];
                order[j] = order[j - 1];
                order[j - 1] = x;
            }
        struct row m = lab->rows[order[(n - 1) / 2]];
        m.rounds = n;
        for (int i = 0; i < n; i++) {
            const struct row *o = &lab->rows[order[i]];
            if (o->images_per_s < m.ips_lo) m.ips_lo = o->images_per_s;
            if (o->images_per_s > m.ips_hi) m.ips_hi = o->images_per_s;
            if (o->st.wait_share < m.wait_lo) m.wait_lo = o->st.wait_share;
            if (o->st.wait_share > m.wait_hi) m.wait_hi = o->st.wait_share;
        }
        folded[k] = m;
    }
    for (int k = 0; k < n_settings; k++) lab->rows[first + k] = folded[k];
    lab->n = first + n_settings;
}

/* Runs the settings in rounds, alternating (A, B, A, B), and folds each setting's rounds
 * into one row: a burst of other jobs' load then costs one round, not the comparison,
 * and the spread shows how much the machine moved. */
static int run_rounds(struct lab *lab, const char *part, const struct setting *s, int n_settings, int rounds,
                      int steps, int first_step, int count) {
    int first = lab->n;
    if (first + rounds * n_settings > MAX_ROWS) return err_set("too many lab rows: %d rounds of %d", rounds, n_settings);
    for (int r = 0; r < rounds; r++)
        for (int k = 0; k < n_settings; k++) {
            if (run_setting(lab, &s[k], part, steps, first_step, count)) return -1;
            if (s[k].widths) printf("model.widths=%-9s ", s[k].widths);
            print_row(&lab->rows[lab->n - 1]);
        }
    fold_rounds(lab, first, n_settings, rounds);
    if (rounds > 1) printf("(%d interleaved rounds of each; the rows above fold into their median round)\n", rounds);
    return 0;
}

/* The fixed loader of the lab's teaching pair: enough workers and slots to keep up with
 * compute at 1 ms per file (2 workers did once, until the kernels got faster). */
enum { FIXED_WORKERS = 4, FIXED_PREFETCH = 8 };

static int pipeline_rows(struct lab *lab) {
    int e = lab->epoch_steps, steps = 2 * e, first = e + 1, count = e - 1;
    static const int pairs[][2] = {{0, 1}, {1, 1}, {1, 4}, {2, 1}, {2, 4}, {FIXED_WORKERS, FIXED_PREFETCH}};
    static const int delays[] = {0, 200, 1000};
    struct setting set[MAX_ROWS];
    int n = 0;
    for (int c = CFG_CACHE_NONE; c <= CFG_CACHE_PACKED; c++)
        for (int d = 0; d < 3; d++)
            for (int p = 0; p < 6; p++) {
                /* packed reads no files: no delay to add; a warm memory cache reads none either,
                 * so it gets the fast and the slowest storage only */
                if ((c == CFG_CACHE_PACKED && d > 0) || (c == CFG_CACHE_MEMORY && d == 1)) continue;
                struct setting s = {pairs[p][0], pairs[p][1], (enum cfg_cache)c, delays[d], true, true,
                                    KF_VECTORIZED, NULL};
                if (lab->quick) {
                    /* the teaching pairs: naive and fixed, on slow storage, and each cache */
                    bool naive = s.workers == 0, fixed = s.workers == FIXED_WORKERS && s.prefetch == FIXED_PREFETCH;
                    if (!(naive || fixed) || (c != CFG_CACHE_PACKED && s.io_delay_us == 200) ||
                        (c == CFG_CACHE_MEMORY && s.io_delay_us == 0))
                        continue;
                }
                set[n++] = s;
            }
    return run_rounds(lab, "pipeline", set, n, lab->rounds, steps, first, count);
}

static int gpu_rows(struct lab *lab) {
    int e = lab->epoch_steps;
    for (int pinned = 1; pinned >= 0; pinned--)
        for (int overlap = 1; overlap >= 0; overlap--) {
            struct setting s = {2, 4, CFG_CACHE_PACKED, 0, pinned, overlap, KF_VECTORIZED, NULL};
            if (run_setting(lab, &s, "gpu", 2 * e, e + 1, e - 1)) return -1;
            print_row(&lab->rows[lab->n - 1]);
        }
    return 0;
}

/* Both kernel flavours on the same (fast) pipeline: one warm-up step, then three. */
static int kernel_rows(struct lab *lab) {
    struct setting s[2] = {{2, 4, CFG_CACHE_PACKED, 0, true, true, KF_LOOP, NULL},
                           {2, 4, CFG_CACHE_PACKED, 0, true, true, KF_VECTORIZED, NULL}};
    return run_rounds(lab, "kernels", s, 2, lab->rounds > 2 ? lab->rounds : 2, 4, 1, 3);
}

/* The model the article lists last: resnet_small, and the same net twice as wide (about
 * four times the FLOPs), on the same pipeline. */
static int model_rows(struct lab *lab) {
    struct setting s[2] = {{2, 4, CFG_CACHE_PACKED, 0, true, true, KF_VECTORIZED, "16,32,64"},
                           {2, 4, CFG_CACHE_PACKED, 0, true, true, KF_VECTORIZED, "32,64,128"}};
    return run_rounds(lab, "model", s, 2, lab->rounds > 3 ? lab->rounds : 3, 4, 1, 3);
}

/* ---- what it writes ---- */

static const struct row *find_row(const struct lab *lab, int workers, int prefetch, enum cfg_cache cache, int io) {
    for (int i = 0; i < lab->n; i++) {
        const struct setting *s = &lab->rows[i].s;
        if (!strcmp(lab->rows[i].part, "pipeline") && s->workers == workers && s->prefetch == prefetch &&
            s->cache == cache && s->io_delay_us == io)
            return &lab->rows[i];
    }
    return NULL;
}

static void cpu_model(char *buf, size_t len) {
    snprintf(buf, len, "unknown CPU");
    FILE *f = fopen("/proc/cpuinfo", "r");
    char line[512];
    while (f && fgets(line, sizeof line, f)) {
        char *c = strchr(line, ':');
        if (!strncmp(line, "model name", 10) && c) {
            c += 2;
            c[strcspn(c, "\n")] = 0;
            snprintf(buf, len, "%s", c);
            break;
        }
    }
    if (f) fclose(f);
}

static int write_pictures(const struct lab *lab, const char *img_dir, const char *machine) {
    struct svg_bar bars[MAX_ROWS];
    char labels[MAX_ROWS][64], groups[MAX_ROWS][64];
    int n = 0;
    for (int i = 0; i < lab->n; i++) {
        const struct row *r = &lab->rows[i];
        if (strcmp(r->part, "pipeline")) continue;
        setting_words(&r->s, labels[n], sizeof labels[n]);
        if (r->s.cache == CFG_CACHE_PACKED) snprintf(groups[n], sizeof groups[n], "cache = packed (no file reads)");
        else snprintf(groups[n], sizeof groups[n], "cache = %s, io_delay_us = %d", cache_name(r->s.cache),
                      r->s.io_delay_us);
        bars[n] = (struct svg_bar){groups[n], labels[n], r->images_per_s, r->st.wait_share,
                                   r->rounds > 1 ? r->ips_lo : 0, r->rounds > 1 ? r->ips_hi : 0};
        n++;
    }
    char path[PATH_MAX + 32], title[128];
    snprintf(title, sizeof title, "pipeline-stall lab: %s, batch %d, %s", lab->config, lab->base.loader.batch,
             lab->device);
    struct svg_bar_chart chart = {title, machine, "images/s", "waiting for input", bars, n};
    snprintf(path, sizeof path, "%s/%s.svg", img_dir, lab->name);
    if (svg_write_bar_chart(path, &chart)) return -1;

    /* the same slow storage three ways: inline, the fixed loader's workers ahead of
     * compute, and the same workers over the memory cache (warm in the measured epoch) */
    const struct row *pick[3] = {find_row(lab, 0, 1, CFG_CACHE_NONE, 1000),
                                 find_row(lab, FIXED_WORKERS, FIXED_PREFETCH, CFG_CACHE_NONE, 1000),
                                 find_row(lab, FIXED_WORKERS, FIXED_PREFETCH, CFG_CACHE_MEMORY, 1000)};
    char fixed[2][96];
    snprintf(fixed[0], sizeof fixed[0], "workers %d, prefetch %d, cache none, io_delay_us 1000", FIXED_WORKERS,
             FIXED_PREFETCH);
    snprintf(fixed[1], sizeof fixed[1], "workers %d, prefetch %d, cache memory, io_delay_us 1000", FIXED_WORKERS,
             FIXED_PREFETCH);
    const char *const titles[3] = {"workers 0: loaded inline, cache none, io_delay_us 1000", fixed[0], fixed[1]};
    struct timeline tls[3];
    const struct timeline *ptr[3];
    const char *names[3];
    int n_tl = 0, rc = 0;
    for (int i = 0; i < 3 && !rc; i++) {
        if (!pick[i]) continue;
        if ((rc = timeline_load_json(&tls[n_tl], pick[i]->trace))) break;
        /* without workers the batch is loaded on the training thread; the trainer books
         * that span under id 1, which has no thread name of its own */
        if (pick[i]->s.workers == 0) timeline_add_thread(&tls[n_tl], 1, "loading, on the training thread");
        ptr[n_tl] = &tls[n_tl];
        names[n_tl++] = titles[i];
    }
    struct timeline_options o = {lab->epoch_steps + 1, 3, "one slow storage (1 ms per file), three loaders", machine};
    snprintf(path, sizeof path, "%s/%s-timeline.svg", img_dir, lab->name);
    if (!rc && n_tl) rc = timeline_write_panels(path, n_tl, ptr, names, &o);
    for (int i = 0; i < n_tl; i++) timeline_free(&tls[i]);
    return rc;
}

static void md_row(FILE *f, const struct row *r) {
    char w[64], io[16];
    setting_words(&r->s, w, sizeof w);
    snprintf(io, sizeof io, r->s.cache == CFG_CACHE_PACKED ? "-" : "%d", r->s.io_delay_us);
    fprintf(f, "| %s | %s | %s | %s |", kernels_name(r->s.kernels), cache_name(r->s.cache), w, io);
    if (!strcmp(r->part, "gpu")) fprintf(f, " %s / %s |", r->s.pinned ? "yes" : "no", r->s.overlap ? "yes" : "no");
    if (!strcmp(r->part, "model")) fprintf(f, " %s |", r->s.widths);
    /* with rounds: the median round, and the rounds' range after it */
    if (r->rounds > 1) fprintf(f, " %.0f (%.0f-%.0f) |", r->images_per_s, r->ips_lo, r->ips_hi);
    else fprintf(f, " %.0f |", r->images_per_s);
    fprintf(f, " %.1f | %.1f | %.1f |", r->st.median_step_s * 1e3, r->st.median_wait_s * 1e3,
            r->st.median_compute_s * 1e3);
    if (r->rounds > 1) fprintf(f, " %.1f%% (%.1f-%.1f) |", 100 * r->st.wait_share, 100 * r->wait_lo, 100 * r->wait_hi);
    else fprintf(f, " %.1f%% |", 100 * r->st.wait_share);
    fprintf(f, " %.1f%% | %s | %s |\n", 100 * report_loader_cpu(&r->tot), r->verdict, r->advice);
}

static void md_table(FILE *f, const struct lab *lab, const char *part) {
    bool gpu = !strcmp(part, "gpu"), model = !strcmp(part, "model");
    fprintf(f, "| kernels | cache | loader | io_delay_us |%s images/s | step ms | wait ms | compute ms | "
               "waiting | loader CPU | verdict | next |\n",
            gpu ? " pinned / overlap |" : model ? " model.widths |" : "");
    fprintf(f, "|---|---|---|---:|%s---:|---:|---:|---:|---:|---:|---|---|\n", gpu || model ? "---|" : "");
    for (int i = 0; i < lab->n; i++)
        if (!strcmp(lab->rows[i].part, part)) md_row(f, &lab->rows[i]);
}

static int write_markdown(const struct lab *lab, const char *path, const char *machine, const char *load0,
                          const char *load1, double seconds, const char *gpu_note) {
    FILE *f = fopen(path, "w");
    if (!f) return err_set("%s cannot be written: %s", path, strerror(errno));
    time_t now = time(NULL);
    char when[64];
    strftime(when, sizeof when, "%Y-%m-%d %H:%M %Z", localtime(&now));
    int e = lab->epoch_steps;
    fprintf(f, "# The pipeline-stall lab, measured: %s\n\n"
               "Written by `%s` (`make stall-lab` runs it) on %s; do not edit by hand, run it again. The\n"
               "explanations are in [the guide](guide.md).\n\n",
            lab->config, lab->command, when);
    fprintf(f, "- machine: %s\n- load average (1, 5, 15 min) before: %s; after: %s. The machine is shared: "
               "other jobs' load slows every row alike as long as it stays steady, and a row taken during "
               "a burst comes out slow.\n",
            machine, load0, load1);
    fprintf(f, "- each row: `%s` (batch %d) trained for %d steps on a %d-image subset of Fashion-MNIST "
               "(`%s`), two epochs of %d steps; the first epoch warms up (thread pools, arena, the memory "
               "cache), and steps %d-%d of the second are measured, from each run's trace.\n",
            lab->config, lab->base.loader.batch, 2 * e, e * lab->base.loader.batch, lab->subset, e, e + 2, 2 * e);
    fprintf(f, "- images/s: the batch over the median step; step, wait and compute ms: medians per step; "
               "waiting: time blocked on the loader over the measured steps' wall time (the verdict uses TF Profiler's 5%% and 20%%); loader CPU: the "
               "loader's CPU time over the process's (after a memory cache's first epoch). `next` is the advice "
               "`./train` prints for those numbers.\n- rounds: %d, interleaved (every setting once a round); "
               "a row is its median round, with the rounds' range of images/s and waiting in brackets.\n"
               "- the lab took %.0f s.\n\n",
            lab->rounds, seconds);
    fprintf(f, "## The input pipeline (vectorized kernels, %s)\n\n", lab->device);
    md_table(f, lab, "pipeline");
    const struct row *slow = NULL, *fast = NULL;
    for (int i = 0; i < lab->n; i++) {
        const struct row *r = &lab->rows[i];
        if (strcmp(r->part, "pipeline")) continue;
        if (!slow || r->images_per_s < slow->images_per_s) slow = r;
        if (!fast || r->images_per_s > fast->images_per_s) fast = r;
    }
    if (slow && fast) {
        char ws[64], wf[64];
        setting_words(&slow->s, ws, sizeof ws);
        setting_words(&fast->s, wf, sizeof wf);
        fprintf(f, "\nSlowest: cache %s, io_delay_us %d, %s: %.0f images/s, %.0f%% waiting. Fastest: cache %s, "
                   "io_delay_us %d, %s: %.0f images/s (%.1fx).\n",
                cache_name(slow->s.cache), slow->s.io_delay_us, ws, slow->images_per_s, 100 * slow->st.wait_share,
                cache_name(fast->s.cache), fast->s.io_delay_us, wf, fast->images_per_s,
                slow->images_per_s > 0 ? fast->images_per_s / slow->images_per_s : 0.0);
        /* the compute of one step is the same work in every row: its spread is the machine */
        double lo = 1e30, hi = 0;
        for (int i = 0; i < lab->n; i++) {
            const struct row *r = &lab->rows[i];
            if (strcmp(r->part, "pipeline") || r->st.wait_share >= 0.05) continue;
            if (r->st.median_compute_s < lo) lo = r->st.median_compute_s;
            if (r->st.median_compute_s > hi) hi = r->st.median_compute_s;
        }
        if (hi > 0)
            fprintf(f, "The same step computed in %.0f to %.0f ms across the rows that hardly waited: that spread "
                       "is other jobs' load, not the knobs, so read differences smaller than it as noise and "
                       "compare the wait column, which the knobs do control.\n",
                    lo * 1e3, hi * 1e3);
    }
    fprintf(f, "\n![images/s per setting, the waiting share in orange](img/%s.svg)\n\n"
               "![steps %d-%d of one slow storage, read inline, by the fixed loader's workers, and through the memory cache]"
               "(img/%s-timeline.svg)\n\n",
            lab->name, e + 2, e + 4, lab->name);
    fprintf(f, "## Loop against vectorized kernels, end to end\n\nThe same pipeline (workers 2, prefetch 4, "
               "packed), one warm-up step, then three measured; run in %d interleaved rounds, each row is its "
               "median round (of two, the faster), the rounds' range in brackets.\n\n", lab->rounds > 2 ? lab->rounds : 2);
    md_table(f, lab, "kernels");
    fprintf(f, "\n## Model size\n\nresnet_small and the same network twice as wide (about four times the "
               "FLOPs per image), same pipeline, one warm-up step, then three measured; %d interleaved rounds, "
               "each row is its median round, the rounds' range in brackets.\n\n", lab->rounds > 3 ? lab->rounds : 3);
    if (lab->base.model.arch == CFG_ARCH_RESNET) md_table(f, lab, "model");
    else fprintf(f, "Only for resnet configs.\n");
    fprintf(f, "\n## GPU: pinned memory and copy overlap\n\n");
    if (gpu_note) fprintf(f, "Not measured: %s.\n", gpu_note);
    else md_table(f, lab, "gpu");
    fprintf(f, "\n## Run it yourself\n\n    make lab                    # every lab number and picture the docs show\n"
               "    make stall-lab              # ./bench pipeline, then the PNGs\n"
               "    ./bench pipeline --quick    # the teaching rows only\n"
               "    ./bench pipeline --help\n");
    bool bad = ferror(f);
    if (fclose(f) || bad) return err_set("writing %s failed", path);
    return 0;
}

/* A row's name in the keys file: part and setting, e.g. none-1000-w4p8, packed-w0,
 * kernels-loop, model-32-64-128. */
static void row_key(const struct row *r, char *buf, size_t len) {
    char w[32];
    if (r->s.workers) snprintf(w, sizeof w, "w%dp%d", r->s.workers, r->s.prefetch);
    else snprintf(w, sizeof w, "w0");
    if (!strcmp(r->part, "kernels")) snprintf(buf, len, "kernels-%s", kernels_name(r->s.kernels));
    else if (!strcmp(r->part, "model")) {
        snprintf(buf, len, "model-%s", r->s.widths);
        for (char *c = buf; *c; c++) if (*c == ',') *c = '-';
    } else if (!strcmp(r->part, "gpu"))
        snprintf(buf, len, "gpu-pinned-%s-overlap-%s", r->s.pinned ? "yes" : "no", r->s.overlap ? "yes" : "no");
    else if (r->s.cache == CFG_CACHE_PACKED) snprintf(buf, len, "packed-%s", w);
    else snprintf(buf, len, "%s-%d-%s", cache_name(r->s.cache), r->s.io_delay_us, w);
}

/* DIR/runs/NAME.keys: the lab's stamp and every row's numbers as NAME.KEY=value, one a
 * line, as the pages print them. The docs quote them between <!-- lab:KEY --> markers
 * and `make docs-check` compares the two (scripts/docs-check.sh). */
static int write_keys(const struct lab *lab, const char *path, const char *machine, const char *load0,
                      const char *load1, double seconds, const char *when) {
    FILE *f = fopen(path, "w");
    if (!f) return err_set("%s cannot be written: %s. HINT: is the folder there and writable?", path, strerror(errno));
    const char *n = lab->name;
    fprintf(f, "# written by `%s`; do not edit by hand\n", lab->command);
    fprintf(f, "%s.when=%s\n%s.machine=%s\n%s.load_before=%s\n%s.load_after=%s\n%s.seconds=%.0f\n%s.rounds=%d\n",
            n, when, n, machine, n, load0, n, load1, n, seconds, n, lab->rounds);
    for (int i = 0; i < lab->n; i++) {
        const struct row *r = &lab->rows[i];
        char k[96];
        row_key(r, k, sizeof k);
        fprintf(f, "%s.%s.images_s=%.0f\n%s.%s.images_s_range=%.0f-%.0f\n", n, k, r->images_per_s, n, k, r->ips_lo,
                r->ips_hi);
        fprintf(f, "%s.%s.step_ms=%.1f\n%s.%s.wait_ms=%.1f\n%s.%s.compute_ms=%.1f\n", n, k, r->st.median_step_s * 1e3,
                n, k, r->st.median_wait_s * 1e3, n, k, r->st.median_compute_s * 1e3);
        fprintf(f, "%s.%s.waiting=%.1f%%\n%s.%s.waiting_range=%.1f-%.1f%%\n", n, k, 100 * r->st.wait_share, n, k,
                100 * r->wait_lo, 100 * r->wait_hi);
        fprintf(f, "%s.%s.loader_cpu=%.1f%%\n%s.%s.verdict=%s\n", n, k, 100 * report_loader_cpu(&r->tot), n, k,
                r->verdict);
    }
    bool bad = ferror(f);
    if (fclose(f) || bad) return err_set("writing %s failed. HINT: is the disk full?", path);
    return 0;
}

/* ---- the commands ---- */

static void pipeline_usage(FILE *f) {
    fprintf(f, "usage: ./bench pipeline [--config FILE] [--epoch-steps N] [--quick] [--device auto|cpu|cuda]\n"
               "                        [--out DIR] [--name NAME] [--no-docs] [--rounds N]\n"
               "  short training runs (default configs/resnet_small.cfg) over workers x prefetch x cache x io_delay_us (and on a GPU,\n"
               "  pinned x overlap), then loop vs vectorized kernels; one table, plus DIR/NAME.md,\n"
               "  DIR/img/NAME.svg and DIR/img/NAME-timeline.svg (DIR: docs, NAME: stall-lab by default)\n"
               "  --epoch-steps N   steps per epoch of the subset (default 8): runs are 2N steps, N-1 measured\n"
               "  --quick           only the teaching rows (naive and fixed loaders, each cache)\n"
               "  --rounds N        measure every setting N times, interleaved; rows show the median round and\n"
               "                    the rounds' range (default 1)\n"
               "  also writes DIR/runs/NAME.keys: every row's numbers as key=value, for make docs-check\n");
}

int bench_pipeline(int argc, char **argv) {
    const char *config = "configs/resnet_small.cfg", *out = "docs", *device = "auto";
    struct lab *lab = calloc(1, sizeof *lab);
    if (!lab) return 1;
    lab->epoch_steps = 8;
    lab->rounds = 1;
    lab->name = "stall-lab";
    snprintf(lab->command, sizeof lab->command, "./bench pipeline");
    for (int i = 1; i < argc; i++) {
        size_t at = strlen(lab->command);
        snprintf(lab->command + at, sizeof lab->command - at, " %s", argv[i]);
    }
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) { pipeline_usage(stdout); free(lab); return 0; }
        else if (!strcmp(a, "--quick")) lab->quick = true;
        else if (!strcmp(a, "--no-docs")) out = NULL;
        else if (!strcmp(a, "--config") && v) config = argv[++i];
        else if (!strcmp(a, "--out") && v) out = argv[++i];
        else if (!strcmp(a, "--name") && v) lab->name = argv[++i];
        else if (!strcmp(a, "--device") && v) device = argv[++i];
        else if (!strcmp(a, "--epoch-steps") && v) lab->epoch_steps = atoi(argv[++i]);
        else if (!strcmp(a, "--rounds") && v) lab->rounds = atoi(argv[++i]);
        else { pipeline_usage(stderr); free(lab); return 2; }
    }
    if (lab->rounds < 1 || lab->rounds > 5) {
        fprintf(stderr, "bench pipeline: --rounds must be in 1..5\n");
        free(lab);
        return 2;
    }
    if (lab->epoch_steps < 2 || lab->epoch_steps > 1000) {
        fprintf(stderr, "bench pipeline: --epoch-steps must be in 2..1000\n");
        free(lab);
        return 2;
    }
    char why[256] = "";
    bool gpu = backend_gpu_count(why, sizeof why) > 0 && backend_get(DEV_CUDA, KF_VECTORIZED) != NULL;
    if (!gpu && why[0] == 0) snprintf(why, sizeof why, "%s", err_get());
    if (!strcmp(device, "cuda") && !gpu) {
        fprintf(stderr, "bench pipeline: --device cuda is not available in this build/machine: %s\n", why);
        free(lab);
        return 1;
    }
    if (strcmp(device, "auto") && strcmp(device, "cpu") && strcmp(device, "cuda")) {
        fprintf(stderr, "bench pipeline: --device must be auto, cpu or cuda\n");
        free(lab);
        return 2;
    }
    if (!strcmp(device, "cpu")) gpu = false;
    lab->device = gpu ? "cuda" : "cpu";
    lab->config = config;
    if (cfg_load(&lab->base, config) || prepare_subset(lab)) {
        fprintf(stderr, "bench pipeline: %s\n", err_get());
        free(lab);
        return 1;
    }
    char machine[256], model[160], load0[64], load1[64];
    cpu_model(model, sizeof model);
    snprintf(machine, sizeof machine, "%s, %ld CPUs%s", model, sysconf(_SC_NPROCESSORS_ONLN), gpu ? ", GPU" : "");
    kbench_load_string(load0, sizeof load0);
    double t0 = bench_now_s();
    printf("nostall bench pipeline: %s on %s; %s; load average %s\n", config, lab->device, machine, load0);
    printf("each row: %d steps (2 epochs of a %d-image subset), steps %d-%d measured\n", 2 * lab->epoch_steps,
           lab->epoch_steps * lab->base.loader.batch, lab->epoch_steps + 2, 2 * lab->epoch_steps);
    printf("%-10s %-7s %-22s %6s %9s %9s %9s %9s %9s %9s  %s\n", "kernels", "cache", "loader", "io us",
           "images/s", "step ms", "wait ms", "compute", "waiting", "ldr CPU", "verdict");
    printf("(per step, medians over the measured steps; waiting = share of their time; ldr CPU = the loader's share "
           "of the process's CPU time)\n");
    int rc = pipeline_rows(lab);
    if (!rc && gpu) rc = gpu_rows(lab);
    if (!rc) rc = kernel_rows(lab);
    if (!rc && lab->base.model.arch == CFG_ARCH_RESNET) rc = model_rows(lab);
    const char *gpu_note = NULL;
    char note[400];
    if (!gpu) {
        snprintf(note, sizeof note, "no GPU in this session (%s)", why);
        gpu_note = note;
        printf("GPU rows (pinned x overlap): not measured: %s\n", note);
    }
    kbench_load_string(load1, sizeof load1);
    double seconds = bench_now_s() - t0;
    printf("load average after: %s; %.0f s\n", load1, seconds);
    if (!rc && out) {
        char img[PATH_MAX], md[PATH_MAX + 16], keys[PATH_MAX + 32], runs[PATH_MAX + 16], when[32], caption[512];
        time_t now = time(NULL);
        strftime(when, sizeof when, "%Y-%m-%d %H:%M %Z", localtime(&now));
        snprintf(caption, sizeof caption, "%s; load average %.4s before, %.4s after; %s", machine, load0, load1,
                 when);
        snprintf(img, sizeof img, "%s/img", out);
        snprintf(md, sizeof md, "%s/%s.md", out, lab->name);
        snprintf(runs, sizeof runs, "%s/runs", out);
        snprintf(keys, sizeof keys, "%s/%s.keys", runs, lab->name);
        rc = os_mkdir_p(img) || os_mkdir_p(runs) || write_pictures(lab, img, caption) ||
             write_markdown(lab, md, machine, load0, load1, seconds, gpu_note) ||
             write_keys(lab, keys, machine, load0, load1, seconds, when);
        if (!rc) printf("wrote %s, %s, %s/%s.svg, %s/%s-timeline.svg\n", md, keys, img, lab->name, img, lab->name);
    }
    if (rc) fprintf(stderr, "bench pipeline: %s\n", err_get());
    free(lab);
    return rc ? 1 : 0;
}

int bench_timeline(int argc, char **argv) {
    const char *out = NULL, *title = NULL, *files[8];
    struct timeline_options o = {-1, 0, NULL, NULL};
    int n = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "-o") && v) out = argv[++i];
        else if (!strcmp(a, "--first-step") && v) o.first_step = atoi(argv[++i]) - 1;
        else if (!strcmp(a, "--steps") && v) o.steps = atoi(argv[++i]);
        else if (!strcmp(a, "--title") && v) title = argv[++i];
        else if (a[0] != '-' && n < 8) files[n++] = a;
        else n = -1000;
    }
    if (n < 1 || !out) {
        fprintf(stderr, "usage: ./bench timeline TRACE.json [TRACE2.json ...] -o OUT.svg [--first-step N] "
                        "[--steps N] [--title TEXT]\n"
                        "  draws --trace files as timelines, one panel each, on one time scale (a panel under an "
                        "eighth\n  of the longest gets its own, said in its header); steps count from 1 (default: "
                        "4 steps from step 3)\n");
        return 2;
    }
    o.title = title;
    struct timeline tls[8];
    const struct timeline *ptr[8];
    int rc = 0, loaded = 0;
    for (; loaded < n && !rc; loaded++) {
        rc = timeline_load_json(&tls[loaded], files[loaded]);
        ptr[loaded] = &tls[loaded];
    }
    if (rc) loaded--;
    if (!rc) rc = timeline_write_panels(out, n, ptr, files, &o);
    for (int i = 0; i < loaded; i++) timeline_free(&tls[i]);
    if (rc) { fprintf(stderr, "bench timeline: %s\n", err_get()); return 1; }
    printf("wrote %s\n", out);
    return 0;
}
