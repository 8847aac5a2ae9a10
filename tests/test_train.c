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

#include <stb_image_write.h>

#include "backend.h"
#include "checkpoint.h"
#include "config.h"
#include "error.h"
#include "models.h"
#include "report.h"
#include "testutil.h"

static char dir[64];

static void write_split(const char *split, int per_class, uint64_t seed) {
    char p[512];
    uint64_t s = seed;
    snprintf(p, sizeof p, "%s/%s", dir, split);
    mkdir(p, 0755);
    for (int k = 0; k < 4; k++) {
        snprintf(p, sizeof p, "%s/%s/class%d", dir, split, k);
        mkdir(p, 0755);
        for (int i = 0; i < per_class; i++) {
            unsigned char img[144];
            for (int q = 0; q < 144; q++) {
                int r = q / 12, c = q % 12, quad = (r >= 6) * 2 + (c >= 6);
                int v = (quad == k ? 170 : 40) + (int)(tu_rand_u32(&s) % 80);
                img[q] = (unsigned char)v;
            }
            snprintf(p, sizeof p, "%s/%s/class%d/%d.png", dir, split, k, i);
            cr_assert(stbi_write_png(p, 12, 12, 1, img, 12), "writing %s", p);
        }
    }
}

static void make_data(void) {
    snprintf(dir, sizeof dir, "build/test-train-XXXXXX");
    mkdir("build", 0755);
    cr_assert_not_null(mkdtemp(dir));
    write_split("train", 48, 1);
    write_split("test", 16, 2);
}

static void remove_data(void) {
    char cmd[512];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    cr_expect_eq(system(cmd), 0);
}

/* Runs ./train with smoke.cfg on our data plus `extra` args; output into *out (malloc'd). */
static int run_train(const char *extra, char **out) {
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "./train configs/smoke.cfg --set data.path=%s %s 2>&1", dir, extra);
    FILE *p = popen(cmd, "r");
    cr_assert_not_null(p);
    size_t cap = 1 << 16, len = 0;
    *out = malloc(cap);
    size_t got;
    while ((got = fread(*out + len, 1, cap - len - 1, p)) > 0) {
        len += got;
        if (cap - len < 4096) *out = realloc(*out, cap *= 2);
    }
    (*out)[len] = 0;
    int st = pclose(p);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static long file_bytes(const char *path, char **data) {
    FILE *f = fopen(path, "rb");
    if (!f) return -1;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    *data = malloc((size_t)n + 1);
    cr_assert_eq(fread(*data, 1, (size_t)n, f), (size_t)n);
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

Test(train, resume_gives_identical_weights) {
    char args[2048], *out, *a, *b;
    snprintf(args, sizeof args, "--set train.epochs=2 --set train.eval_every=0 --set train.checkpoint=%s/full.ckpt", dir);
    cr_assert_eq(run_train(args, &out), 0, "%s", out);
    free(out);
    snprintf(args, sizeof args,
             "--set train.epochs=2 --set train.max_steps=14 --set train.eval_every=0 --set train.checkpoint=%s/half.ckpt",
             dir);
    cr_assert_eq(run_train(args, &out), 0, "%s", out);
    free(out);
    snprintf(args, sizeof args, "--set train.epochs=2 --set train.eval_every=0 --set train.checkpoint=%s/half.ckpt "
                                "--resume %s/half.ckpt", dir, dir);
    cr_assert_eq(run_train(args, &out), 0, "%s", out);
    cr_expect(strstr(out, "resumed from"), "%s", out);
    free(out);
    char pa[128], pb[128];
    snprintf(pa, sizeof pa, "%s/full.ckpt", dir);
    snprintf(pb, sizeof pb, "%s/half.ckpt", dir);
    long na = file_bytes(pa, &a), nb = file_bytes(pb, &b);
    cr_assert(na > 0 && na == nb, "checkpoint sizes %ld and %ld", na, nb);
    cr_expect(memcmp(a, b, (size_t)na) == 0, "2 epochs straight and 14 steps + resume differ");
    free(a);
    free(b);
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
    cr_assert_eq(ckpt_load(good, &m, &st, cfg_fingerprint(&cfg)), 0, "%s", err_get());
    /* the classifier's bias: a NaN earlier would be squashed by ReLU (NaN > 0 is false) */
    m.ps.params[m.ps.n_params - 1]->data[0] = NAN;
    cr_assert_eq(ckpt_save(bad, &m, &st), 0, "%s", err_get());
    nn_model_free(&m);
}

Test(train, nan_loss_stops_and_keeps_the_checkpoint) {
    char args[2048], *out, *before, *after, ck[128], bad[128];
    snprintf(ck, sizeof ck, "%s/good.ckpt", dir);
    snprintf(bad, sizeof bad, "%s/poisoned.ckpt", dir);
    snprintf(args, sizeof args, "--set train.epochs=1 --set train.eval_every=0 --set train.checkpoint=%s", ck);
    cr_assert_eq(run_train(args, &out), 0, "%s", out);
    free(out);
    write_poisoned_copy(ck, bad);
    long n0 = file_bytes(ck, &before);
    snprintf(args, sizeof args, "--set train.checkpoint=%s --resume %s", ck, bad);
    int rc = run_train(args, &out);
    cr_expect_eq(rc, 3, "exit %d:\n%s", rc, out);
    cr_expect(strstr(out, "loss became NaN at step 12"), "%s", out);
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
    free(svg);
    cr_assert(file_bytes(path, &json) > 0, "no trace written");
    cr_expect(strstr(json, "\"traceEvents\""));
    cr_expect(strstr(json, "\"ph\":\"X\""), "no complete events");
    cr_expect(strstr(json, "\"ph\":\"C\""), "no counters");
    cr_expect(strstr(json, "\"ph\":\"M\"") && strstr(json, "training thread"), "no thread names");
    cr_expect(strstr(json, "\"wait\"") && strstr(json, "\"compute\""), "no wait/compute spans");
    free(json);
}
