/* bench_train.c — `./bench train`: how fast resnet_small trains on the CPU.
 *
 *   int bench_train(int argc, char **argv);   (bench.h; argv[0] = "train")
 *
 * compute-only  the trainer's step (normalize -> forward -> xent -> backward -> SGD ->
 *               arena reset) through the same ops, tape and optimizer, on a few
 *               batches read once from the packed file: no loader, no disk, no decode.
 * end to end    train_run itself on the config as given (PNG folder, loader workers),
 *               cut to --e2e-steps steps with no evaluation and no checkpoint; the
 *               trainer's own totals give images/s, after its first RUN_WARM_STEPS
 *               steps (they size the step arena; compute-only leaves them out too).
 * Both are measured in rounds, one of each per round (compute at every batch size,
 * then end to end), and the median of the rounds is printed: on a machine shared with
 * other jobs, load that comes and goes then hits every variant alike.
 * Then the per-op shares: a compute-only run at batch 128 through a copy of the backend
 * table whose entries time themselves, and the minor page faults and arena allocations
 * per steady-state step. */
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "backend.h"
#include "bench.h"
#include "config.h"
#include "data.h"
#include "error.h"
#include "models.h"
#include "ops.h"
#include "optim.h"
#include "report.h"
#include "train.h"

enum { MAX_BATCHES = 8, MAX_ROUNDS = 64, BATCHES_IN_MEMORY = 4 };

/* ---- a backend table whose entries time themselves ---- */

#define TIMED_ENTRIES(X)                                                                        \
    X(conv2d_fwd) X(conv2d_bwd_data) X(conv2d_bwd_filter) X(bn_fwd_train) X(bn_bwd)            \
    X(bn_relu_fwd_train) X(bn_relu_bwd) X(relu_fwd) X(relu_bwd) X(add_fwd) X(axpy) X(linear_fwd) X(linear_bwd) X(gap_fwd)          \
    X(gap_bwd) X(softmax_xent_fwd) X(softmax_xent_bwd) X(argmax_correct) X(normalize_u8)       \
    X(sgd_step) X(zero) X(copy)

#define ENTRY_ENUM(e) E_##e,
enum entry_id { TIMED_ENTRIES(ENTRY_ENUM) E_COUNT };
#define ENTRY_NAME(e) [E_##e] = #e,
static const char *const entry_names[E_COUNT] = {TIMED_ENTRIES(ENTRY_NAME)};

static const struct backend *inner;     /* the table being timed */
static double entry_s[E_COUNT];
static long entry_calls[E_COUNT];

static void book(enum entry_id e, double t0) {
    entry_s[e] += bench_now_s() - t0;
    entry_calls[e]++;
}

/* One wrapper per entry: the parameter list, and the arguments to pass on. */
#define TIMED(e, params, args)                 \
    static void timed_##e params {             \
        double t0 = bench_now_s();             \
        inner->e args;                         \
        book(E_##e, t0);                       \
    }
TIMED(conv2d_fwd, (const struct conv_geom *g, const float *x, const float *w, const float *b, float *y, void *ws),
      (g, x, w, b, y, ws))
TIMED(conv2d_bwd_data,
      (const struct conv_geom *g, const float *dy, const float *w, float *dx, bool acc, void *ws),
      (g, dy, w, dx, acc, ws))
TIMED(conv2d_bwd_filter,
      (const struct conv_geom *g, const float *x, const float *dy, float *dw, float *db, void *ws),
      (g, x, dy, dw, db, ws))
TIMED(bn_fwd_train,
      (int n, int c, int hw, const float *x, const float *ga, const float *be, float *y, float *mean,
       float *is, float *rm, float *rv, float mom, float eps),
      (n, c, hw, x, ga, be, y, mean, is, rm, rv, mom, eps))
TIMED(bn_bwd,
      (int n, int c, int hw, const float *x, const float *dy, const float *ga, const float *mean,
       const float *is, float *dx, bool acc, float *dg, float *db),
      (n, c, hw, x, dy, ga, mean, is, dx, acc, dg, db))
TIMED(bn_relu_fwd_train,
      (int n, int c, int hw, const float *x, const float *res, const float *ga, const float *be, float *y,
       float *mean, float *is, float *rm, float *rv, float mom, float eps),
      (n, c, hw, x, res, ga, be, y, mean, is, rm, rv, mom, eps))
TIMED(bn_relu_bwd,
      (int n, int c, int hw, const float *x, const float *y, const float *dy, const float *ga,
       const float *mean, const float *is, float *dx, bool acc_dx, float *dres, bool acc_dres,
       float *dg, float *db),
      (n, c, hw, x, y, dy, ga, mean, is, dx, acc_dx, dres, acc_dres, dg, db))
TIMED(relu_fwd, (size_t n, const float *x, float *y), (n, x, y))
TIMED(relu_bwd, (size_t n, const float *y, const float *dy, float *dx), (n, y, dy, dx))
TIMED(add_fwd, (size_t n, const float *a, const float *b, float *y), (n, a, b, y))
TIMED(axpy, (size_t n, float alpha, const float *x, float *y), (n, alpha, x, y))
TIMED(linear_fwd, (int n, int in, int out, const float *x, const float *w, const float *b, float *y),
      (n, in, out, x, w, b, y))
TIMED(linear_bwd,
      (int n, int in, int out, const float *x, const float *w, const float *dy, float *dx, float *dw,
       float *db),
      (n, in, out, x, w, dy, dx, dw, db))
TIMED(gap_fwd, (int n, int c, int hw, const float *x, float *y), (n, c, hw, x, y))
TIMED(gap_bwd, (int n, int c, int hw, const float *dy, float *dx), (n, c, hw, dy, dx))
TIMED(softmax_xent_fwd, (int n, int k, const float *lg, const int32_t *lb, float *p, float *loss),
      (n, k, lg, lb, p, loss))
TIMED(softmax_xent_bwd, (int n, int k, const float *p, const int32_t *lb, const float *dl, float *dlg),
      (n, k, p, lb, dl, dlg))
TIMED(argmax_correct, (int n, int k, const float *lg, const int32_t *lb, float *c), (n, k, lg, lb, c))
TIMED(normalize_u8,
      (int n, int h, int w, int c, const uint8_t *src, const float *mean, const float *std, float *dst),
      (n, h, w, c, src, mean, std, dst))
TIMED(sgd_step, (size_t n, float *w, const float *g, float *v, float lr, float mom, bool nest, float wd),
      (n, w, g, v, lr, mom, nest, wd))
TIMED(zero, (void *p, size_t bytes), (p, bytes))
TIMED(copy, (void *dst, const void *src, size_t bytes, enum copy_kind kind), (dst, src, bytes, kind))
#undef TIMED

static struct backend timed_table(const struct backend *be) {
    inner = be;
    struct backend t = *be;
    t.conv2d_fwd = timed_conv2d_fwd;
    t.conv2d_bwd_data = timed_conv2d_bwd_data;
    t.conv2d_bwd_filter = timed_conv2d_bwd_filter;
    t.bn_fwd_train = timed_bn_fwd_train;
    t.bn_bwd = timed_bn_bwd;
    /* a table without the fused entries stays without them */
    if (be->bn_relu_fwd_train) t.bn_relu_fwd_train = timed_bn_relu_fwd_train;
    if (be->bn_relu_bwd) t.bn_relu_bwd = timed_bn_relu_bwd;
    t.relu_fwd = timed_relu_fwd;
    t.relu_bwd = timed_relu_bwd;
    t.add_fwd = timed_add_fwd;
    t.axpy = timed_axpy;
    t.linear_fwd = timed_linear_fwd;
    t.linear_bwd = timed_linear_bwd;
    t.gap_fwd = timed_gap_fwd;
    t.gap_bwd = timed_gap_bwd;
    t.softmax_xent_fwd = timed_softmax_xent_fwd;
    t.softmax_xent_bwd = timed_softmax_xent_bwd;
    t.argmax_correct = timed_argmax_correct;
    t.normalize_u8 = timed_normalize_u8;
    t.sgd_step = timed_sgd_step;
    t.zero = timed_zero;
    t.copy = timed_copy;
    return t;
}

/* ---- compute-only: the trainer's step on batches already in memory ---- */

struct session {
    int batch;
    struct nn_model model;
    struct ag_ctx ctx;
    struct sgd sgd;
    float mean[4], std[4];
    int h, w, ch;
    uint8_t *images;          /* BATCHES_IN_MEMORY batches, HWC */
    int32_t *labels;
    long steps;
    float last_loss;
};

static int session_open(struct session *s, const struct config *cfg, const struct backend *be,
                        const struct dataset *ds, int batch) {
    memset(s, 0, sizeof *s);
    s->batch = batch;
    s->h = ds->height, s->w = ds->width, s->ch = ds->channels;
    for (int i = 0; i < s->ch; i++) {
        s->mean[i] = (float)cfg->data.mean.v[i];
        s->std[i] = (float)cfg->data.std.v[i];
    }
    /* a tenth of the peak rate: the bench repeats a few batches, and must not diverge */
    s->sgd = (struct sgd){(float)cfg->optim.lr * 0.1f, (float)cfg->optim.momentum,
                          (float)cfg->optim.weight_decay, cfg->optim.nesterov};
    size_t n = (size_t)BATCHES_IN_MEMORY * batch, bytes = data_sample_bytes(ds);
    if ((int64_t)n > ds->count) return err_set("%s has %lld samples, the bench needs %zu", ds->path,
                                               (long long)ds->count, n);
    s->images = malloc(n * bytes);
    s->labels = malloc(n * sizeof *s->labels);
    if (!s->images || !s->labels) return err_set("out of memory for %zu bench samples", n);
    for (size_t i = 0; i < n; i++) {
        if (data_read_sample(ds, (int64_t)i, s->images + i * bytes, NULL)) return -1;
        s->labels[i] = data_label(ds, (int64_t)i);
    }
    if (model_build(&s->model, cfg)) return -1;
    if (nn_model_finalize(&s->model, be) || ag_ctx_init(&s->ctx, be)) return -1;
    return 0;
}

static void session_close(struct session *s) {
    ag_ctx_free(&s->ctx);
    nn_model_free(&s->model);
    free(s->images);
    free(s->labels);
}

/* The trainer's train_step, line for line. */
static int session_step(struct session *s) {
    struct ag_ctx *c = &s->ctx;
    size_t at = (size_t)(s->steps++ % BATCHES_IN_MEMORY) * s->batch;
    const uint8_t *img = s->images + at * (size_t)(s->h * s->w * s->ch);
    const int32_t *lab = s->labels + at;
    struct tensor *x = op_normalize_u8(c, img, s->batch, s->h, s->w, s->ch, s->mean, s->std);
    struct tensor *logits = x ? nn_forward(&s->model, c, x) : NULL;
    struct tensor *loss = logits ? op_softmax_xent(c, logits, lab) : NULL;
    if (!loss) return -1;
    if (op_accuracy_count(c, logits, lab) < 0) return -1;
    s->last_loss = ag_item(c, loss);
    nn_zero_grad(&s->model);
    if (ag_backward(c, loss)) return -1;
    optim_sgd_step(&s->model, &s->sgd, s->sgd.lr);
    ag_reset(c);
    return 0;
}

struct rate {
    double images_per_s;
    double cpu_ms_per_image;  /* process CPU time: spinning threads count too */
    double faults_per_step;
    double allocs_per_step;   /* the arena's malloc count */
};

static double cpu_now_s(void) { return (double)os_clock_ns(CLOCK_PROCESS_CPUTIME_ID) * 1e-9; }

/* Steps for at least `seconds` (and 3 steps) after 2 untimed ones. */
static int session_rate(struct session *s, double seconds, struct rate *r) {
    for (int i = 0; i < 2; i++)
        if (session_step(s)) return -1;
    struct rusage ru0, ru1;
    getrusage(RUSAGE_SELF, &ru0);
    long allocs0 = s->ctx.arena.n_system_allocs, steps = 0;
    double t0 = bench_now_s(), cpu0 = cpu_now_s(), el;
    do {
        if (session_step(s)) return -1;
        steps++;
        el = bench_now_s() - t0;
    } while (el < seconds || steps < 3);
    getrusage(RUSAGE_SELF, &ru1);
    r->images_per_s = (double)steps * s->batch / el;
    r->cpu_ms_per_image = (cpu_now_s() - cpu0) * 1e3 / ((double)steps * s->batch);
    r->faults_per_step = (double)(ru1.ru_minflt - ru0.ru_minflt) / (double)steps;
    r->allocs_per_step = (double)(s->ctx.arena.n_system_allocs - allocs0) / (double)steps;
    return 0;
}

/* ---- end to end: the trainer itself ---- */

struct e2e {
    double images_per_s;       /* after the run's first RUN_WARM_STEPS steps, as compute-only */
    double whole_per_s;        /* every step, the warm-up included */
    double wait_share, loader_cpu_share;
};

static int run_e2e(const struct config *base, int steps, struct e2e *r) {
    struct config cfg = *base;
    char max_steps[64];
    snprintf(max_steps, sizeof max_steps, "train.max_steps=%d", steps);
    if (cfg_set(&cfg, max_steps) || cfg_set(&cfg, "train.eval_every=0") ||
        cfg_set(&cfg, "train.checkpoint=\"\"") || cfg_set(&cfg, "train.trace=\"\""))
        return -1;
    struct run_totals tot;
    memset(&tot, 0, sizeof tot);
    struct train_options opt = {.quiet = true, .totals = &tot};
    if (train_run(&cfg, &opt) != TRAIN_OK) return err_wrap("end-to-end run: ");
    r->images_per_s = report_rate(tot.images - tot.warm_images, tot.wall_ns - tot.warm_ns);
    r->whole_per_s = report_rate(tot.images, tot.wall_ns);
    r->wait_share = report_share(tot.wait_ns, tot.wall_ns);
    r->loader_cpu_share = report_share(tot.loader_cpu_ns, tot.process_cpu_ns);
    return 0;
}

/* ---- reporting ---- */

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(const double *v, int n) {
    double s[MAX_ROUNDS];
    memcpy(s, v, (size_t)n * sizeof *s);
    qsort(s, (size_t)n, sizeof *s, cmp_double);
    return n % 2 ? s[n / 2] : 0.5 * (s[n / 2 - 1] + s[n / 2]);
}

static void print_rounds(const double *v, int n) {
    printf("  (");
    for (int i = 0; i < n; i++) printf("%s%.0f", i ? " " : "", v[i]);
    printf(")\n");
}

static int profile_ops(const struct config *cfg, const struct backend *be, const struct dataset *ds,
                       int batch, int steps) {
    struct backend timed = timed_table(be);
    struct session s;
    if (session_open(&s, cfg, &timed, ds, batch)) { session_close(&s); return -1; }
    for (int i = 0; i < 2; i++)
        if (session_step(&s)) { session_close(&s); return -1; }
    memset(entry_s, 0, sizeof entry_s);
    memset(entry_calls, 0, sizeof entry_calls);
    double t0 = bench_now_s();
    for (int i = 0; i < steps; i++)
        if (session_step(&s)) { session_close(&s); return -1; }
    double step_s = (bench_now_s() - t0) / steps, kernels_s = 0;
    session_close(&s);
    int order[E_COUNT];
    for (int e = 0; e < E_COUNT; e++) order[e] = e;
    for (int i = 1; i < E_COUNT; i++)  /* by time, longest first */
        for (int j = i; j > 0 && entry_s[order[j]] > entry_s[order[j - 1]]; j--) {
            int t = order[j]; order[j] = order[j - 1]; order[j - 1] = t;
        }
    printf("\nper-op time at batch %d (%s, %d steps, %.2f ms/step, %.0f images/s with timers on):\n", batch,
           be->name, steps, step_s * 1e3, batch / step_s);
    printf("| backend entry | calls/step | ms/step | share of step |\n| --- | ---: | ---: | ---: |\n");
    for (int i = 0; i < E_COUNT; i++) {
        int e = order[i];
        if (!entry_calls[e]) continue;
        double per = entry_s[e] / steps;
        kernels_s += per;
        printf("| %s | %.0f | %.2f | %.1f%% |\n", entry_names[e], (double)entry_calls[e] / steps, per * 1e3,
               100 * per / step_s);
    }
    printf("| (outside the kernels: tape, arena, ops) | | %.2f | %.1f%% |\n", (step_s - kernels_s) * 1e3,
           100 * (step_s - kernels_s) / step_s);
    return 0;
}

/* "1.23": the 1-minute load average, to say how busy the machine was */
static void load_average(char *buf, size_t len) {
    FILE *f = fopen("/proc/loadavg", "r");
    if (!f || !fgets(buf, (int)len, f)) snprintf(buf, len, "?");
    else buf[strcspn(buf, " ")] = 0;
    if (f) fclose(f);
}

static int parse_batches(const char *s, int *out) {
    int n = 0;
    while (*s && n < MAX_BATCHES) {
        char *end;
        long v = strtol(s, &end, 10);
        if (end == s || v < 1 || v > 4096) return -1;
        out[n++] = (int)v;
        s = *end == ',' ? end + 1 : end;
        if (*end && *end != ',') return -1;
    }
    return n;
}

static void usage(FILE *f) {
    fprintf(f, "usage: ./bench train [--config FILE] [--set section.key=value]... [--batches 32,128,256]\n"
               "                     [--rounds N] [--seconds S] [--e2e-steps N] [--profile-steps N]\n"
               "  compute-only images/s at each batch size (S seconds each, median of N rounds),\n"
               "  end-to-end images/s of the trainer (--e2e-steps 0 skips it), per-op shares at\n"
               "  batch 128 (--profile-steps 0 skips them), minor faults and allocations per step.\n");
}

int bench_train(int argc, char **argv) {
    const char *path = "configs/resnet_small.cfg";
    int batches[MAX_BATCHES] = {32, 128, 256}, n_batches = 3, rounds = 3, e2e_steps = 200, profile_steps = 20;
    double seconds = 2.0;
    const char *sets[32];
    int n_sets = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        bool ok = v != NULL;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) { usage(stdout); return 0; }
        if (ok && !strcmp(a, "--config")) path = v;
        else if (ok && !strcmp(a, "--set") && n_sets < 32) sets[n_sets++] = v;
        else if (ok && !strcmp(a, "--batches")) ok = (n_batches = parse_batches(v, batches)) > 0;
        else if (ok && !strcmp(a, "--rounds")) ok = (rounds = atoi(v)) >= 1 && rounds <= MAX_ROUNDS;
        else if (ok && !strcmp(a, "--seconds")) ok = (seconds = atof(v)) > 0;
        else if (ok && !strcmp(a, "--e2e-steps")) ok = (e2e_steps = atoi(v)) >= 0;
        else if (ok && !strcmp(a, "--profile-steps")) ok = (profile_steps = atoi(v)) >= 0;
        else ok = false;
        if (!ok) {
            fprintf(stderr, "bench train: bad or unknown argument '%s'\n", a);
            usage(stderr);
            return 2;
        }
        i++;
    }
    struct config cfg;
    if (cfg_load(&cfg, path)) { fprintf(stderr, "bench train: %s\n", err_get()); return 2; }
    for (int i = 0; i < n_sets; i++)
        if (cfg_set(&cfg, sets[i])) { fprintf(stderr, "bench train: %s\n", err_get()); return 2; }
    if (cfg_validate(&cfg, "--set")) { fprintf(stderr, "bench train: %s\n", err_get()); return 2; }
    if (cfg.train.threads > 0) omp_set_num_threads(cfg.train.threads);
    const struct backend *be = backend_get(DEV_CPU, cfg.train.kernels);
    if (!be) { fprintf(stderr, "bench train: %s\n", err_get()); return 1; }

    char packed[2 * CFG_STR_MAX + 16];
    snprintf(packed, sizeof packed, "%s/%s.packed", cfg.data.path, cfg.data.train_dir);
    struct dataset *ds;
    if (data_open_packed(packed, &ds)) {
        fprintf(stderr, "bench train: %s\n  HINT: run `make data` first\n", err_get());
        return 1;
    }
    struct session s[MAX_BATCHES];
    int opened = 0, rc = 0;
    for (; opened < n_batches && !rc; opened++) {
        struct config c = cfg;
        c.loader.batch = batches[opened];
        rc = session_open(&s[opened], &c, be, ds, batches[opened]);
    }
    char load0[32], load1[32];
    load_average(load0, sizeof load0);
    printf("nostall bench train: %s, %s, %d OpenMP threads; compute-only = the trainer's step on %d\n"
           "batches in memory, %.1f s per measurement; end to end = train_run, %d steps, config as given;\n"
           "%d rounds, median (each round's values in parentheses)\n\n",
           path, be->name, omp_get_max_threads(), BATCHES_IN_MEMORY, seconds, e2e_steps, rounds);
    double ips[MAX_BATCHES][MAX_ROUNDS], faults[MAX_BATCHES][MAX_ROUNDS], cpu[MAX_BATCHES][MAX_ROUNDS];
    double allocs[MAX_BATCHES] = {0};
    double e2e_ips[MAX_ROUNDS], e2e_whole[MAX_ROUNDS], e2e_wait[MAX_ROUNDS], e2e_loader[MAX_ROUNDS];
    for (int r = 0; r < rounds && !rc; r++) {
        for (int b = 0; b < n_batches && !rc; b++) {
            struct rate rt = {0};
            rc = session_rate(&s[b], seconds, &rt);
            ips[b][r] = rt.images_per_s;
            faults[b][r] = rt.faults_per_step;
            cpu[b][r] = rt.cpu_ms_per_image;
            allocs[b] += rt.allocs_per_step;
        }
        struct e2e e = {0};
        if (!rc && e2e_steps > 0) rc = run_e2e(&cfg, e2e_steps, &e);
        e2e_ips[r] = e.images_per_s, e2e_whole[r] = e.whole_per_s, e2e_wait[r] = e.wait_share, e2e_loader[r] = e.loader_cpu_share;
    }
    int at128 = -1;
    for (int b = 0; b < n_batches && !rc; b++) {
        if (batches[b] == 128) at128 = b;
        printf("compute-only  batch %4d: %7.0f images/s, %.3f CPU-ms/image, %.1f minor faults/step, "
               "%.1f arena allocations/step", batches[b], median(ips[b], rounds), median(cpu[b], rounds),
               median(faults[b], rounds), allocs[b] / rounds);
        print_rounds(ips[b], rounds);
        if (s[b].last_loss != s[b].last_loss) printf("  (the loss went NaN: timings of NaN arithmetic)\n");
    }
    if (!rc && at128 >= 0 && n_batches > 1)
        for (int b = 0; b < n_batches; b++)
            if (b != at128)
                printf("batch %d / batch 128: %.0f%%\n", batches[b],
                       100 * median(ips[b], rounds) / median(ips[at128], rounds));
    if (!rc && e2e_steps > 0) {
        printf("end to end    batch %4d: %7.0f images/s (%s, cache %s, %d workers), waiting %.1f%% of step time,"
               " loader %.0f%% of CPU time", cfg.loader.batch, median(e2e_ips, rounds),
               cfg_enum_name("data.dataset", cfg.data.dataset), cfg_enum_name("loader.cache", cfg.loader.cache),
               cfg.loader.workers, 100 * median(e2e_wait, rounds), 100 * median(e2e_loader, rounds));
        print_rounds(e2e_ips, rounds);
        printf("              (after the run's first %d steps, as compute-only; with them, as the trainer "
               "reports its whole run: %.0f images/s)\n", RUN_WARM_STEPS, median(e2e_whole, rounds));
        for (int b = 0; b < n_batches; b++)
            if (batches[b] == cfg.loader.batch)
                printf("end to end / compute-only at batch %d: %.0f%%\n", cfg.loader.batch,
                       100 * median(e2e_ips, rounds) / median(ips[b], rounds));
    }
    for (int b = 0; b < opened; b++) session_close(&s[b]);
    if (!rc && profile_steps > 0) rc = profile_ops(&cfg, be, ds, 128, profile_steps);
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    load_average(load1, sizeof load1);
    if (!rc)
        printf("\npeak RSS of this bench process (every batch size at once): %.0f MB\n"
               "load average (1 min) at the start and the end: %s, %s\n", ru.ru_maxrss / 1024.0, load0, load1);
    data_close(ds);
    if (rc) fprintf(stderr, "bench train: %s\n", err_get());
    return rc ? 1 : 0;
}
