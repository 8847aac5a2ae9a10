/* test_train.c — ./train end to end, driven through the CLI on a tiny synthetic
 * dataset (4 classes of 12x12 PNGs: class k is bright in quadrant k). */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "backend.h"
#include "checkpoint.h"
#include "config.h"
#include "error.h"
#include "loader.h"
#include "models.h"
#include "optim.h"
#include "report.h"
#include "train.h"
#include "testutil.h"
#include "fixtures/smoke.h"

static char dir[64];

static void make_data(void) {
    snprintf(dir, sizeof dir, "build/test-train-XXXXXX");
    mkdir("build", 0755);
    cr_assert_not_null(mkdtemp(dir));
    smoke_write_split(dir, "train", 48, 1);
    smoke_write_split(dir, "test", 16, 2);
}

static void remove_data(void) {
    char cmd[512];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    cr_expect_eq(system(cmd), 0);
}

/* Runs ./train with smoke.cfg on our data plus `extra` args; output into *out (malloc'd). */
static int run_train(const char *extra, char **out) {
    char cmd[4096];
    snprintf(cmd, sizeof cmd, "./train configs/smoke.cfg --set data.path=%s %s", dir, extra);
    return smoke_run(cmd, out);
}

/* The file's n bytes, and a NUL after them so text can be searched. */
static long file_bytes(const char *path, char **data) {
    FILE *f = fopen(path, "rb");
    if (!f) return -1;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    *data = malloc((size_t)n + 1);
    cr_assert_eq(fread(*data, 1, (size_t)n, f), (size_t)n);
    (*data)[n] = 0;
    fclose(f);
    return n;
}

TestSuite(train, .init = make_data, .fini = remove_data, .timeout = 120);

Test(train, smoke_run_learns_and_reports) {
    char *out, args[256], ck[160];
    /* a checkpoint in folders that don't exist yet: a fresh checkout's runs/ */
    snprintf(ck, sizeof ck, "%s/runs/new/run.ckpt", dir);
    snprintf(args, sizeof args, "--set train.checkpoint=%s", ck);
    int rc = run_train(args, &out);
    cr_expect_eq(access(ck, R_OK), 0, "no checkpoint at %s", ck);
    cr_assert_eq(rc, 0, "exit %d, output:\n%s", rc, out);
    cr_expect_null(strchr(out, '\r'), "non-TTY output has a carriage return");
    cr_expect(strstr(out, "total parameters"), "no layer table:\n%s", out);
    cr_expect(strstr(out, "verdict:") && strstr(out, "next:"), "no pipeline report:\n%s", out);
    /* the whole run's rate, then the steady rate without the arena-sizing first steps */
    const char *tp = strstr(out, "throughput");
    double whole = 0, steady = 0, warm = -1;
    int warm_steps = 0;
    cr_assert(tp && sscanf(tp, "throughput %lf images/s; %lf after the first %d steps (%lf ms", &whole, &steady,
                           &warm_steps, &warm) == 4, "no steady-state throughput:\n%s", out);
    cr_expect(whole > 0 && steady > 0 && warm >= 0 && warm_steps == RUN_WARM_STEPS, "%s", tp);
    /* the last epoch's test accuracy: well above chance (25%) */
    const char *last = NULL;
    for (const char *p = strstr(out, "test loss"); p; p = strstr(p + 1, "test loss")) last = p;
    cr_assert_not_null(last, "no evaluation line:\n%s", out);
    double tl, ta;
    cr_assert_eq(sscanf(last, "test loss %lf acc %lf%%", &tl, &ta), 2);
    cr_expect(ta > 70.0, "test accuracy %.1f%% is too close to chance:\n%s", ta, out);
    /* training loss falls from the first epoch to the last */
    double l1 = -1, l3 = -1;
    const char *e1 = strstr(out, "epoch 1: train loss"), *e3 = strstr(out, "epoch 3: train loss");
    cr_assert(e1 && e3, "missing epoch lines:\n%s", out);
    sscanf(e1, "epoch 1: train loss %lf", &l1);
    sscanf(e3, "epoch 3: train loss %lf", &l3);
    cr_expect(l3 < l1, "loss did not fall: %f -> %f", l1, l3);
    free(out);
}

/* 2 epochs straight against 14 steps, then --resume: the same tensors, optimizer state
 * and position, byte for byte, with `optim` (SGD, or AdamW with its two moments). */
static void expect_exact_resume(const char *optim, const char *tag) {
    char args[2048], *out, *a, *b;
    snprintf(args, sizeof args, "%s --set train.epochs=2 --set train.eval_every=0 --set train.checkpoint=%s/full%s.ckpt",
             optim, dir, tag);
    cr_assert_eq(run_train(args, &out), 0, "%s", out);
    free(out);
    snprintf(args, sizeof args,
             "%s --set train.epochs=2 --set train.max_steps=14 --set train.eval_every=0 --set train.checkpoint=%s/half%s.ckpt",
             optim, dir, tag);
    cr_assert_eq(run_train(args, &out), 0, "%s", out);
    free(out);
    snprintf(args, sizeof args, "%s --set train.epochs=2 --set train.eval_every=0 --set train.checkpoint=%s/half%s.ckpt "
                                "--resume %s/half%s.ckpt", optim, dir, tag, dir, tag);
    cr_assert_eq(run_train(args, &out), 0, "%s", out);
    cr_expect(strstr(out, "resumed from"), "%s", out);
    free(out);
    char pa[128], pb[128];
    snprintf(pa, sizeof pa, "%s/full%s.ckpt", dir, tag);
    snprintf(pb, sizeof pb, "%s/half%s.ckpt", dir, tag);
    long na = file_bytes(pa, &a), nb = file_bytes(pb, &b);
    /* from the classes section on (tensors, optimizer, state): the config sections
     * differ in train.checkpoint, by design */
    const char *ca = memmem(a, (size_t)na, "classes\0", 8), *cb = memmem(b, (size_t)nb, "classes\0", 8);
    cr_assert(ca && cb, "no classes section");
    long ra = na - (ca - a) - 4, rb = nb - (cb - b) - 4; /* less the CRC */
    cr_assert(ra > 0 && ra == rb, "checkpoint sizes %ld and %ld", ra, rb);
    cr_expect(memcmp(ca, cb, (size_t)ra) == 0, "%s: 2 epochs straight and 14 steps + resume differ", optim);
    free(a);
    free(b);
}

Test(train, resume_gives_identical_weights) { expect_exact_resume("", ""); }

Test(train, resume_with_adamw_is_exact_and_another_optimizer_is_refused) {
    expect_exact_resume("--set optim.name=adamw --set optim.lr=0.01", "-adamw");
    char args[1024], *out;
    snprintf(args, sizeof args, "--set train.epochs=2 --resume %s/half-adamw.ckpt", dir);
    cr_expect_eq(run_train(args, &out), 1, "%s", out);
    cr_expect(strstr(out, "holds the state of optimizer 'adamw' (2 slots); this run uses sgd (1)"), "%s", out);
    free(out);
}

/* A checkpoint with a NaN weight: resuming from it must stop at the first
 * step with the step named, exit 3, and leave the configured checkpoint alone. */
static void write_poisoned_copy(const char *good, const char *bad) {
    struct config cfg;
    cr_assert_eq(cfg_load(&cfg, "configs/smoke.cfg"), 0, "%s", err_get());
    struct nn_model m;
    struct ckpt_state st;
    cr_assert_eq(model_build(&m, &cfg), 0, "%s", err_get());
    cr_assert_eq(nn_model_finalize(&m, &cpu_vectorized_backend), 0);
    cr_assert_eq(ckpt_load(good, &m, NULL, &st, cfg_fingerprint(&cfg)), 0, "%s", err_get());
    /* the classifier's bias: a NaN earlier would be squashed by ReLU (NaN > 0 is false) */
    m.ps.params[m.ps.n_params - 1]->data[0] = NAN;
    cr_assert_eq(ckpt_save(bad, &m, &cfg, NULL, NULL, &st), 0, "%s", err_get());
    nn_model_free(&m);
}

Test(train, nan_loss_stops_and_keeps_the_checkpoint) {
    char args[2048], *out, *before, *after, ck[128], bad[128], csv[128], svg[128];
    snprintf(ck, sizeof ck, "%s/good.ckpt", dir);
    snprintf(bad, sizeof bad, "%s/poisoned.ckpt", dir);
    snprintf(csv, sizeof csv, "%s/nan.csv", dir);
    snprintf(svg, sizeof svg, "%s/nan.svg", dir);
    snprintf(args, sizeof args, "--set train.epochs=1 --set train.eval_every=0 --set train.checkpoint=%s --metrics %s",
             ck, csv);
    cr_assert_eq(run_train(args, &out), 0, "%s", out);
    free(out);
    write_poisoned_copy(ck, bad);
    long n0 = file_bytes(ck, &before);
    /* the curves are still drawn, from the rows written before */
    snprintf(args, sizeof args, "--set train.checkpoint=%s --resume %s --metrics %s --curves %s", ck, bad, csv, svg);
    int rc = run_train(args, &out);
    cr_expect_eq(rc, 3, "exit %d:\n%s", rc, out);
    cr_expect(strstr(out, "loss became NaN at step 12"), "%s", out);
    cr_expect_eq(access(svg, R_OK), 0, "no curves after the divergence:\n%s", out);
    long n1 = file_bytes(ck, &after);
    cr_expect(n0 == n1 && memcmp(before, after, (size_t)n0) == 0, "the last good checkpoint changed");
    free(out);
    free(before);
    free(after);
}

Test(train, bad_config_and_bad_resume_are_clear_errors) {
    char *out, args[2048];
    int rc = run_train("--set loader.wokers=2", &out);
    cr_expect_eq(rc, 2);
    cr_expect(strstr(out, "did you mean") && strstr(out, "workers"), "%s", out);
    free(out);
    rc = run_train("--set train.device=gpu", &out);
    cr_expect_eq(rc, 2);
    cr_expect(strstr(out, "train.device"), "%s", out);
    free(out);
    snprintf(args, sizeof args, "--resume %s/train/class0/0.png", dir);
    rc = run_train(args, &out);
    cr_expect_eq(rc, 1, "%s", out);
    cr_expect(strstr(out, "--resume"), "%s", out);
    free(out);
    rc = run_train("--curves x.svg", &out);
    cr_expect_eq(rc, 2);
    cr_expect(strstr(out, "--curves") && strstr(out, "--metrics"), "%s", out);
    free(out);
}

/* --help-config: the key table, then the cnn grammar from models/cnn.c's table. */
Test(train, help_config_prints_the_keys_then_the_cnn_layer_grammar) {
    char *out;
    cr_assert_eq(smoke_run("./train --help-config", &out), 0, "%s", out);
    const char *keys = strstr(out, "[loader]"), *grammar = strstr(out, "[model] layers, for arch = cnn");
    cr_expect(keys && grammar && keys < grammar, "the keys, then the grammar:\n%s", out);
    const char *form;
    for (size_t i = 0; (form = model_cnn_form(i, NULL)); i++)
        cr_expect(grammar && strstr(grammar, form), "%s is not in the grammar's help", form);
    free(out);
}

Test(train, trace_has_the_event_kinds_and_thread_names) {
    char args[2048], *out, *json, path[128];
    snprintf(path, sizeof path, "%s/run.json", dir);
    snprintf(args, sizeof args, "--set train.epochs=1 --set train.eval_every=0 --trace %s --timeline %s.svg", path, path);
    cr_assert_eq(run_train(args, &out), 0, "%s", out);
    free(out);
    char svgp[160], *svg;
    snprintf(svgp, sizeof svgp, "%s.svg", path);
    cr_assert(file_bytes(svgp, &svg) > 0, "no timeline written");
    cr_expect(strstr(svg, "<svg") && strstr(svg, "training thread") && strstr(svg, "loader worker 1"), "timeline lanes");
    cr_expect(strstr(svg, ">ring slots ready (0..2)<"), "the ring's axis runs to smoke.cfg's prefetch 2");
    free(svg);
    cr_assert(file_bytes(path, &json) > 0, "no trace written");
    cr_expect(strstr(json, "\"traceEvents\""));
    cr_expect(strstr(json, "\"ph\":\"X\""), "no complete events");
    cr_expect(strstr(json, "\"ph\":\"C\""), "no counters");
    cr_expect(strstr(json, "\"ph\":\"M\"") && strstr(json, "training thread"), "no thread names");
    cr_expect(strstr(json, "\"wait\"") && strstr(json, "\"compute\""), "no wait/compute spans");
    cr_expect(strstr(json, "\"name\":\"counter_max\",\"args\":{\"name\":\"ring slots ready\",\"value\":2}"),
              "the ring's size, loader.prefetch, as the ring counter's maximum");
    /* the loss and the rate, once per step: 192 images in batches of 16 */
    int losses = 0, rates = 0;
    for (const char *p = strstr(json, "\"ph\":\"C\""); p; p = strstr(p + 1, "\"ph\":\"C\"")) {
        static const char loss[] = "\"name\":\"loss\"", rate[] = "\"name\":\"images/s\"";
        const char *name = strstr(p, "\"name\":\"");
        losses += name && !strncmp(name, loss, strlen(loss));
        rates += name && !strncmp(name, rate, strlen(rate));
    }
    cr_expect_eq(losses, 12, "a loss counter per step");
    cr_expect_eq(rates, 12, "an images/s counter per step");
    free(json);
}

/* ---- the metrics file (train.h's layout) ---- */

/* One row of it, every cell as text ("" when empty). */
#define METRICS_COLS 11
struct mrow { char cell[METRICS_COLS][32]; };

/* Reads the metrics file at path: its rows (up to cap) after checking the header
 * line; returns how many. Each row must have every column. */
static int read_metrics(const char *path, struct mrow *rows, int cap) {
    FILE *f = fopen(path, "r");
    cr_assert_not_null(f, "no metrics file %s", path);
    char line[512];
    cr_assert_not_null(fgets(line, sizeof line, f));
    cr_expect_str_eq(line, METRICS_HEADER "\n");
    int n = 0;
    while (n < cap && fgets(line, sizeof line, f)) {
        line[strcspn(line, "\n")] = 0;
        int c = 0;
        for (char *p = line, *comma; c < METRICS_COLS; p = comma + 1) {
            comma = strchr(p, ',');
            snprintf(rows[n].cell[c++], sizeof rows[n].cell[0], "%.*s", comma ? (int)(comma - p) : (int)strlen(p), p);
            if (!comma) break;
        }
        cr_assert_eq(c, METRICS_COLS, "row %d has %d cells: %s", n + 1, c, line);
        n++;
    }
    fclose(f);
    return n;
}

enum { M_KIND, M_STEP, M_EPOCH, M_BATCH, M_LR, M_LOSS, M_ACC, M_RATE, M_WAIT, M_TEST_LOSS, M_TEST_ACC };
static double num(const struct mrow *r, int c) { return atof(r->cell[c]); }
static bool is_step(const struct mrow *r) { return !strcmp(r->cell[M_KIND], "step"); }

/* Reads --metrics' CSV: the step and learning-rate columns of the step rows, up to
 * `cap` of them. */
static int read_lr_column(const char *path, long *step, double *lr, int cap) {
    static struct mrow rows[512];
    int n = read_metrics(path, rows, 512), k = 0;
    for (int i = 0; i < n && k < cap; i++) {
        if (!is_step(&rows[i])) continue;
        step[k] = atol(rows[i].cell[M_STEP]);
        lr[k++] = num(&rows[i], M_LR);
    }
    return k;
}

/* The trainer's seam with the LR schedule: the schedule spans every step of the run
 * (epochs x batches per epoch) and is fed the global step, so the rate keeps falling
 * across an epoch boundary and ends one step short of 0. smoke.cfg: 192 images,
 * batch 16, 3 epochs, linear decay after a 10% warm-up. */
Test(train, every_step_gets_the_learning_rate_of_its_global_step) {
    struct config cfg;
    cr_assert_eq(cfg_load(&cfg, "configs/smoke.cfg"), 0, "%s", err_get());
    const long per_epoch = 192 / cfg.loader.batch, total = per_epoch * cfg.train.epochs;
    enum cfg_schedule sched = cfg.optim.schedule;
    float base = (float)cfg.optim.lr, warmup = (float)cfg.optim.warmup;
    char args[512], path[160], *out;
    long step[128];
    double lr[128];
    for (int cut = 0; cut < 2; cut++) {
        /* cut: max_steps stops the run early, but the schedule still spans the whole run */
        long steps = cut ? total / 2 + 1 : total;
        snprintf(path, sizeof path, "%s/metrics%d.csv", dir, cut);
        snprintf(args, sizeof args, "--set train.eval_every=0 --set train.max_steps=%ld --metrics %s",
                 cut ? steps : 0, path);
        cr_assert_eq(run_train(args, &out), 0, "%s", out);
        free(out);
        int n = read_lr_column(path, step, lr, 128);
        cr_assert_eq(n, steps, "%d steps recorded, expected %ld", n, steps);
        for (int k = 0; k < n; k++) {
            cr_expect_eq(step[k], k);
            double want = optim_lr_at(sched, base, warmup, k, total);
            cr_expect(fabs(lr[k] - want) <= 1e-6 * base, "step %d: lr %.9g, the schedule gives %.9g", k, lr[k], want);
        }
        cr_expect_eq(lr[0], 0.0, "the warm-up starts from 0");
        /* after the warm-up, every step lowers the rate, across epoch boundaries too */
        for (int k = (int)ceil(warmup * (double)total) + 1; k < n; k++)
            cr_expect(lr[k] < lr[k - 1], "lr rose from step %d (%.9g) to %d (%.9g)", k - 1, lr[k - 1], k, lr[k]);
        if (!cut) cr_expect(lr[n - 1] > 0 && lr[n - 1] < 0.1 * base, "last lr %.9g", lr[n - 1]);
    }
}

/* Every [loader] key reaches the loader: a value the trainer dropped on the way would
 * leave the loader on its default. Both values of each switch are tried. */
Test(train, loader_keys_reach_the_loader) {
    for (int v = 0; v < 2; v++) {
        struct config cfg;
        cfg_defaults(&cfg);
        cfg.loader.flip = v;
        cfg.loader.crop_pad = 3 + v;
        cfg.loader.batch = 40 + v;
        cfg.loader.workers = 3 + v;
        cfg.loader.prefetch = 5 + v;
        cfg.loader.seed = 77 + v;
        cfg.loader.io_delay_us = 100 + v;
        cfg.loader.drop_last = v;
        cfg.loader.cache = v ? CFG_CACHE_MEMORY : CFG_CACHE_PACKED;
        cfg.data.on_bad_sample = v ? CFG_BAD_SAMPLE_SKIP : CFG_BAD_SAMPLE_ERROR;
        struct loader_config lc;
        train_loader_config(&cfg, true, &lc);
        cr_expect_eq(lc.flip, v);
        cr_expect_eq(lc.crop_pad, 3 + v);
        cr_expect_eq(lc.batch, 40 + v);
        cr_expect_eq(lc.workers, 3 + v);
        cr_expect_eq(lc.prefetch, 5 + v);
        cr_expect_eq(lc.seed, (uint64_t)(77 + v));
        cr_expect_eq(lc.io_delay_us, (unsigned)(100 + v));
        cr_expect_eq(lc.drop_last, v);
        cr_expect_eq(lc.cache, v ? CFG_CACHE_MEMORY : CFG_CACHE_PACKED);
        cr_expect_eq(lc.on_bad_sample, v ? CFG_BAD_SAMPLE_SKIP : CFG_BAD_SAMPLE_ERROR);
        cr_expect(lc.augment && lc.shuffle, "a training loader shuffles and augments");
        train_loader_config(&cfg, false, &lc);
        cr_expect(!lc.augment && !lc.shuffle && !lc.drop_last, "an evaluation loader neither shuffles nor augments");
    }
}

/* TF Profiler's thresholds on the input-bound share: under 5% not input-bound, 5% to
 * 20% moderately, over 20% highly. */
Test(report, verdicts_change_at_5_and_20_percent) {
    cr_expect_eq(report_classify(0.0), INPUT_NOT_BOUND);
    cr_expect_eq(report_classify(0.0499), INPUT_NOT_BOUND);
    cr_expect_eq(report_classify(0.05), INPUT_MODERATELY);
    cr_expect_eq(report_classify(0.12), INPUT_MODERATELY);
    cr_expect_eq(report_classify(0.20), INPUT_MODERATELY);
    cr_expect_eq(report_classify(0.2001), INPUT_HIGHLY);
    cr_expect_eq(report_classify(0.9), INPUT_HIGHLY);
}

/* A short run's metrics: a step row per step and an epoch row per epoch, in the
 * columns train.h documents, with the numbers the epoch lines print; --curves draws
 * them. smoke.cfg: 3 epochs of 12 steps of 16 images, evaluated after each epoch on
 * 64 test images. */
Test(train, metrics_have_a_row_per_step_and_per_epoch) {
    char args[512], csv[128], svg[128], *out;
    snprintf(csv, sizeof csv, "%s/m.csv", dir);
    snprintf(svg, sizeof svg, "%s/m.svg", dir);
    snprintf(args, sizeof args, "--metrics %s --curves %s", csv, svg);
    cr_assert_eq(run_train(args, &out), 0, "%s", out);
    static struct mrow rows[64];
    int n = read_metrics(csv, rows, 64), steps = 0, epochs = 0;
    cr_assert_eq(n, 36 + 3, "rows: %d", n);
    for (int i = 0; i < n; i++) {
        const struct mrow *r = &rows[i];
        double loss = num(r, M_LOSS), acc = num(r, M_ACC), rate = num(r, M_RATE), wait = num(r, M_WAIT);
        cr_expect(loss > 0 && isfinite(loss) && acc >= 0 && acc <= 1 && rate > 0 && wait >= 0 && wait <= 1,
                  "row %d: loss %g, accuracy %g, %g images/s, wait %g", i + 2, loss, acc, rate, wait);
        if (is_step(r)) {
            cr_expect_eq(atol(r->cell[M_STEP]), steps);
            cr_expect_eq(atol(r->cell[M_EPOCH]), steps / 12 + 1);
            cr_expect_eq(atol(r->cell[M_BATCH]), steps % 12);
            cr_expect(r->cell[M_LR][0] && !r->cell[M_TEST_LOSS][0] && !r->cell[M_TEST_ACC][0], "row %d", i + 2);
            cr_expect_float_eq(acc * 16, round(acc * 16), 1e-9, "a batch's accuracy is k/16: %g", acc);
            steps++;
            continue;
        }
        cr_assert_str_eq(r->cell[M_KIND], "epoch");
        epochs++;
        cr_expect_eq(steps % 12, 0, "epoch row %d after %d steps", epochs, steps);
        cr_expect_eq(atol(r->cell[M_STEP]), steps, "an epoch row's step is the steps done");
        cr_expect_eq(atol(r->cell[M_EPOCH]), epochs);
        cr_expect_eq(atol(r->cell[M_BATCH]), 12);
        cr_expect(!r->cell[M_LR][0], "an epoch row has no learning rate");
        /* the epoch's line says the same */
        char head[32], want[64];
        snprintf(head, sizeof head, "epoch %d: train loss", epochs);
        const char *line = strstr(out, head);
        cr_assert_not_null(line, "%s", out);
        double tl, ta, el, ips, l, a;
        double waiting = -1;
        cr_assert_eq(sscanf(line + strlen(head), "%lf acc %lf%%, %lf images/s, %lf s, waiting %lf%%; test loss %lf acc",
                            &l, &a, &ips, &el, &waiting, &tl), 6, "%.120s", line);
        cr_expect(fabs(waiting - 100 * wait) <= 0.05 + 1e-9, "waiting %g%% printed, %g in the file", waiting, wait);
        cr_expect(fabs(l - loss) <= 0.5e-4 + 1e-9 && fabs(a - 100 * acc) <= 0.5e-2 + 1e-9, "%s vs %.120s", r->cell[M_LOSS], line);
        cr_expect(fabs(ips - rate) <= 0.5 + 1e-9, "images/s %g printed, %g in the file", ips, rate);
        cr_expect(fabs(tl - num(r, M_TEST_LOSS)) <= 0.5e-4 + 1e-9);
        ta = num(r, M_TEST_ACC);
        snprintf(want, sizeof want, "test loss %.4f acc %.2f%%\n", tl, 100 * ta);
        cr_expect(strstr(line, want) && strstr(line, want) < strchr(line, '\n') + 1,
                  "the file's test accuracy %s is not the printed one: %.120s", r->cell[M_TEST_ACC], line);
    }
    cr_expect_eq(epochs, 3);
    char *pic;
    cr_assert(file_bytes(svg, &pic) > 0, "no curves drawn");
    int lines = 0;
    for (const char *p = strstr(pic, "<polyline"); p; p = strstr(p + 1, "<polyline")) lines++;
    cr_expect_eq(lines, 3, "each step's loss, its running mean and the accuracy's");
    cr_expect(strstr(pic, "epoch 3: test accuracy"), "no test dot for epoch 3");
    free(pic);
    free(out);
}

/* Interrupted by max_steps in the second epoch, then resumed: the second run appends
 * after the first one's rows, so every step is there once, in order. A file written in
 * another layout is refused rather than appended to. */
Test(train, a_resumed_run_appends_its_metrics) {
    char args[1024], csv[128], *out, *text;
    snprintf(csv, sizeof csv, "%s/resumed.csv", dir);
    snprintf(args, sizeof args, "--set train.eval_every=0 --set train.max_steps=14 --set train.checkpoint=%s/r.ckpt "
                                "--metrics %s", dir, csv);
    cr_assert_eq(run_train(args, &out), 0, "%s", out);
    free(out);
    snprintf(args, sizeof args, "--set train.eval_every=0 --set train.checkpoint=%s/r.ckpt --resume %s/r.ckpt "
                                "--metrics %s", dir, dir, csv);
    cr_assert_eq(run_train(args, &out), 0, "%s", out);
    /* the resumed epoch's line says its numbers cover only the batches after the checkpoint */
    cr_expect(strstr(out, "epoch 2: train loss") && strstr(out, "(batches 3-12 only: resumed mid-epoch)"), "%s", out);
    cr_expect(!strstr(out, "epoch 3: train loss") || !strstr(strstr(out, "epoch 3: train loss"), "resumed mid-epoch"),
              "only the resumed epoch has the note:\n%s", out);
    free(out);
    cr_assert(file_bytes(csv, &text) > 0);
    cr_expect_eq(strstr(text + 1, "kind,"), NULL, "a second header");
    free(text);
    static struct mrow rows[64];
    int n = read_metrics(csv, rows, 64), steps = 0;
    /* epoch rows: epoch 1, epoch 2 cut at batch 2, the rest of epoch 2, epoch 3 */
    static const long epoch_at[][3] = {{12, 1, 12}, {14, 2, 2}, {24, 2, 12}, {36, 3, 12}};
    int e = 0;
    for (int i = 0; i < n; i++) {
        const struct mrow *r = &rows[i];
        if (is_step(r)) {
            cr_expect_eq(atol(r->cell[M_STEP]), steps++, "row %d", i + 2);
            continue;
        }
        cr_assert(e < 4, "too many epoch rows");
        cr_expect(atol(r->cell[M_STEP]) == epoch_at[e][0] && atol(r->cell[M_EPOCH]) == epoch_at[e][1] &&
                  atol(r->cell[M_BATCH]) == epoch_at[e][2], "epoch row %d: step %s, epoch %s, batch %s", e + 1,
                  r->cell[M_STEP], r->cell[M_EPOCH], r->cell[M_BATCH]);
        cr_expect(!r->cell[M_TEST_LOSS][0], "eval_every = 0: no test numbers");
        e++;
    }
    cr_expect_eq(steps, 36);
    cr_expect_eq(e, 4);
    /* the layout before this one: refused, naming the file */
    char old[128];
    snprintf(old, sizeof old, "%s/old.csv", dir);
    FILE *f = fopen(old, "w");
    fputs("step,epoch,batch,lr,loss,correct,images\n0,1,0,0,2.3,2,16\n", f);
    fclose(f);
    snprintf(args, sizeof args, "--set train.eval_every=0 --resume %s/r.ckpt --metrics %s", dir, old);
    cr_expect_eq(run_train(args, &out), 1, "%s", out);
    cr_expect(strstr(out, old) && strstr(out, "header"), "%s", out);
    free(out);
}

/* max_steps cuts the run: the progress lines count to the run's last step, not the
 * epoch's, and name the epochs the run will do; smoke.cfg has 12 steps an epoch and
 * logs every 4. */
Test(train, progress_counts_to_max_steps) {
    char *out;
    cr_assert_eq(run_train("--set train.max_steps=17 --set train.eval_every=0 --set 'train.checkpoint=\"\"'", &out), 0,
                 "%s", out);
    cr_expect(strstr(out, "epoch 1/2 step 12/12"), "%s", out);
    cr_expect(strstr(out, "epoch 2/2 step 4/5") && strstr(out, "epoch 2/2 step 5/5"), "%s", out);
    cr_expect(!strstr(out, "/3 step") && !strstr(out, "epoch 2/2 step 8"), "counted past max_steps:\n%s", out);
    cr_expect(strstr(out, "kernels: cpu-vectorized") && strstr(out, "OpenMP threads"), "%s", out);
    free(out);
    cr_assert_eq(run_train("--set train.max_steps=3 --set train.kernels=loop --set train.eval_every=0 "
                           "--set 'train.checkpoint=\"\"'", &out), 0, "%s", out);
    cr_expect(strstr(out, "epoch 1/1 step 3/3"), "%s", out);
    cr_expect(strstr(out, "kernels: cpu-loop, one thread"), "the loop kernels use no OpenMP:\n%s", out);
    free(out);
}

/* ---- the steady-state report, fed synthetic steps ---- */

/* n steps of 100 ms, each waiting `wait` of it, booked under phase ph. */
static void steps(struct run_totals *t, enum run_phase ph, int n, double wait) {
    for (int i = 0; i < n; i++) {
        int64_t wall = 100000000, w = (int64_t)(wait * (double)wall);
        report_count_step(t, ph, &(struct run_span){1, 128, wall, w, 0, wall - w});
    }
}

static struct run_totals totals(int cores) {
    struct run_totals t;
    memset(&t, 0, sizeof t);
    t.cores = cores;
    return t;
}

/* The run: 3 epochs with cache = memory, the first one waiting 41%, the next
 * two never: the verdict is on the steady state, the first epoch reported apart. */
Test(report, a_memory_caches_first_epoch_is_warm_up_not_the_verdict) {
    struct run_totals t = totals(2);
    steps(&t, RUN_CACHE_FILL, 40, 0.413);
    steps(&t, RUN_RING_FILL, 1, 0.5);
    steps(&t, RUN_STEADY, 39, 0.0);
    steps(&t, RUN_RING_FILL, 1, 0.5);
    steps(&t, RUN_STEADY, 39, 0.0);
    struct report_verdict v;
    report_judge(&t, &v);
    cr_expect(v.steady && v.share == 0 && v.bound == INPUT_NOT_BOUND && !v.borderline, "share %g", v.share);
    cr_expect_eq(t.steps, 120);
    cr_expect_eq(t.phase[RUN_STEADY].steps, 78);
    cr_expect_eq(t.phase[RUN_CACHE_FILL].steps, 40);
    cr_expect(report_share(t.wait_ns, t.wall_ns) > 0.1, "the whole run still counts the warm-up");
    char buf[4096];
    FILE *f = fmemopen(buf, sizeof buf, "w");
    struct config cfg;
    cfg_defaults(&cfg);
    cfg_set(&cfg, "loader.cache=memory");
    report_print(f, &t, &cfg);
    fclose(f);
    cr_expect(strstr(buf, "verdict: not input-bound in the steady state (0.0%"), "%s", buf);
    cr_expect(strstr(buf, "warm-up") && strstr(buf, "the memory cache's first epoch (40,"), "%s", buf);
    cr_expect(strstr(buf, "nothing to do here"), "%s", buf);
    cr_expect(!strstr(buf, "cache=memory or") && !strstr(buf, "try loader.cache=memory"), "%s", buf);
}

/* A run that never left its warm-up is judged whole, and says so. */
Test(report, no_steady_state_judges_the_whole_run) {
    struct run_totals t = totals(2);
    steps(&t, RUN_CACHE_FILL, 30, 0.4);
    struct report_verdict v;
    report_judge(&t, &v);
    cr_expect(!v.steady && v.bound == INPUT_HIGHLY && v.windows == 0);
    struct config cfg;
    cfg_defaults(&cfg);
    cfg_set(&cfg, "loader.cache=memory");
    char advice[640];
    report_advice(&t, &cfg, advice, sizeof advice);
    cr_expect(strstr(advice, "memory cache's first epoch") && strstr(advice, "more than one epoch"), "%s", advice);
}

/* Windows: a steady state of any length ends in RUN_WINDOWS..2 x RUN_WINDOWS windows of
 * equal length, in order, which add up to it. */
Test(report, the_steady_state_is_cut_into_equal_windows) {
    static const int lengths[] = {3, 5, 12, 80, 81, 500, 4000};
    for (size_t k = 0; k < sizeof lengths / sizeof *lengths; k++) {
        struct run_totals t = totals(2);
        for (int i = 0; i < lengths[k]; i++) steps(&t, RUN_STEADY, 1, i < lengths[k] / 2 ? 0.0 : 0.3);
        struct run_span sum = {0};
        for (int i = 0; i < t.n_win; i++) {
            sum.steps += t.win[i].steps, sum.wait_ns += t.win[i].wait_ns;
            cr_expect(t.win[i].steps == t.win_steps || i == t.n_win - 1, "window %d of %d", i, lengths[k]);
        }
        cr_expect(sum.steps == lengths[k] && sum.wait_ns == t.phase[RUN_STEADY].wait_ns, "%d steps", lengths[k]);
        cr_expect(t.win_steps >= RUN_WINDOW_MIN_STEPS && t.n_win <= 2 * RUN_WINDOWS, "%d steps", lengths[k]);
        if (lengths[k] >= RUN_WINDOWS * RUN_WINDOW_MIN_STEPS)
            cr_expect(t.n_win >= RUN_WINDOWS, "%d steps: %d windows", lengths[k], t.n_win);
        /* first half waits 0, second 30%: later windows wait at least as much as earlier ones */
        for (int i = 1; i < t.n_win; i++)
            cr_expect(t.win[i].wait_ns * t.win[i - 1].steps >= t.win[i - 1].wait_ns * t.win[i].steps,
                      "window %d out of order (%d steps)", i, lengths[k]);
    }
}

/* "borderline" only when the windows fall on both sides of a threshold. */
Test(report, borderline_only_when_the_windows_straddle_a_threshold) {
    struct run_totals t = totals(2);
    for (int w = 0; w < 8; w++) steps(&t, RUN_STEADY, RUN_WINDOW_MIN_STEPS, w % 2 ? 0.07 : 0.03);
    struct report_verdict v;
    report_judge(&t, &v);
    cr_expect(v.borderline && v.windows == 8, "windows %d", v.windows);
    cr_expect(fabs(v.lo - 0.03) < 1e-6 && fabs(v.hi - 0.07) < 1e-6, "%g..%g", v.lo, v.hi);
    char words[96], advice[640];
    cr_expect_str_eq(report_verdict_words(&v, words, sizeof words),
                     "borderline (between not input-bound and moderately input-bound)");
    struct config cfg;
    cfg_defaults(&cfg);
    report_advice(&t, &cfg, advice, sizeof advice);
    cr_expect(strstr(advice, "nothing to change") && strstr(advice, "3.0% to 7.0%"), "%s", advice);

    struct run_totals u = totals(2); /* 3% and 4.5%: both under 5%, not borderline */
    for (int w = 0; w < 8; w++) steps(&u, RUN_STEADY, RUN_WINDOW_MIN_STEPS, w % 2 ? 0.045 : 0.03);
    report_judge(&u, &v);
    cr_expect(!v.borderline && v.bound == INPUT_NOT_BOUND);
    struct run_totals one = totals(2); /* one window is no spread */
    steps(&one, RUN_STEADY, RUN_WINDOW_MIN_STEPS + 2, 0.06);
    report_judge(&one, &v);
    cr_expect(!v.borderline && v.windows == 0 && v.bound == INPUT_MODERATELY);
}

/* The advice never suggests what is already set, and suggests more workers than cores
 * only when the loader waits on storage (reads don't use a core). Every combination of
 * the loader's knobs, at three waiting shares and two core counts. */
Test(report, advice_never_repeats_a_setting_and_knows_the_cores) {
    static const char *const caches[] = {"none", "memory", "packed"};
    static const int workers[] = {0, 1, 2, 4, 16}, prefetch[] = {1, 4, 8, 32}, delays[] = {0, 200, 1000},
                     cores[] = {2, 8};
    static const double waits[] = {0.01, 0.1, 0.5}, loader_cpu[] = {0.02, 0.4};
    int checked = 0;
    for (int c = 0; c < 3; c++) for (int w = 0; w < 5; w++) for (int p = 0; p < 4; p++) for (int d = 0; d < 3; d++)
    for (int k = 0; k < 2; k++) for (int s = 0; s < 3; s++) for (int u = 0; u < 2; u++) {
        struct config cfg;
        cfg_defaults(&cfg);
        char a[64];
        snprintf(a, sizeof a, "loader.cache=%s", caches[c]);
        cr_assert_eq(cfg_set(&cfg, a), 0);
        snprintf(a, sizeof a, "loader.workers=%d", workers[w]);
        cr_assert_eq(cfg_set(&cfg, a), 0);
        snprintf(a, sizeof a, "loader.prefetch=%d", prefetch[p]);
        cr_assert_eq(cfg_set(&cfg, a), 0);
        snprintf(a, sizeof a, "loader.io_delay_us=%d", delays[d]);
        cr_assert_eq(cfg_set(&cfg, a), 0);
        struct run_totals t = totals(cores[k]);
        steps(&t, RUN_STEADY, 80, waits[s]);
        t.process_cpu_ns = 1000000000;
        t.loader_cpu_ns = (int64_t)(loader_cpu[u] * 1e9);
        char advice[640];
        report_advice(&t, &cfg, advice, sizeof advice);
        /* every KEY=VALUE it names must change the config */
        for (const char *q = advice; (q = strstr(q, "try ")); q += 4)
            for (const char *x = q + 4; *x && *x != ':' && *x != ';' && *x != '('; x++) {
                if (strncmp(x, "loader.", 7) && strncmp(x, "train.", 6)) continue;
                char kv[64];
                int n = 0;
                while (x[n] && !strchr(" ,):;", x[n]) && n < 63) kv[n] = x[n], n++;
                kv[n] = 0;
                x += n - 1;
                if (!strchr(kv, '=')) continue;
                struct config after = cfg;
                cr_assert_eq(cfg_set(&after, kv), 0, "%s in: %s", kv, advice);
                cr_expect(!cfg_equal(&after, &cfg), "suggests %s, already set: %s", kv, advice);
                int nw;
                if (sscanf(kv, "loader.workers=%d", &nw) == 1 && nw > cores[k])
                    cr_expect(delays[d] > 0 && c != 2, "%d workers on %d cores without storage latency: %s", nw,
                              cores[k], advice);
                checked++;
            }
    }
    cr_expect(checked > 100, "only %d suggestions checked", checked);
}

Test(report, help_explains_every_row) {
    char buf[8192];
    FILE *f = fmemopen(buf, sizeof buf, "w");
    report_help(f);
    fclose(f);
    static const char *const rows[] = {"waiting", "copy h2d", "compute", "other", "warm-up", "throughput",
                                       "loader CPU", "verdict", "next", "borderline"};
    for (size_t i = 0; i < sizeof rows / sizeof *rows; i++) cr_expect(strstr(buf, rows[i]), "no %s", rows[i]);
}
