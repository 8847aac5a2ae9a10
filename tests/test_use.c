/* test_use.c — using a trained model: ./eval gives the trainer's test numbers, ./predict
 * gives eval's answers image by image, a bad image is named and the rest answered, and
 * a truncated or foreign checkpoint is refused. Driven through the CLI on the smoke
 * dataset (tests/fixtures/smoke.h), one model trained once for the whole suite. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "evaluate.h"
#include "testutil.h"
#include "fixtures/datagen.h"
#include "fixtures/smoke.h"

#define PER_CLASS 64 /* test images a class: 256 in all */

static char dir[64], ckpt[128], train_out[1 << 14];

static void trained_model(void) {
    snprintf(dir, sizeof dir, "build/test-use-XXXXXX");
    mkdir("build", 0755);
    cr_assert_not_null(mkdtemp(dir));
    smoke_write_split(dir, "train", 48, 1);
    smoke_write_split(dir, "test", PER_CLASS, 2);
    snprintf(ckpt, sizeof ckpt, "%s/run.ckpt", dir);
    char cmd[1024], *out;
    snprintf(cmd, sizeof cmd, "./train configs/smoke.cfg --set data.path=%s --set train.epochs=2 "
                              "--set train.checkpoint=%s", dir, ckpt);
    int rc = smoke_run(cmd, &out);
    snprintf(train_out, sizeof train_out, "%s", out);
    free(out);
    cr_assert_eq(rc, 0, "training failed:\n%s", train_out);
}

static void remove_all(void) {
    char cmd[256];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    cr_expect_eq(system(cmd), 0);
}

TestSuite(use, .init = trained_model, .fini = remove_all, .timeout = 120);

/* The last "test loss L acc A%" of the training output. */
static void last_test_numbers(char *loss, char *acc) {
    const char *p = train_out, *last = NULL;
    while ((p = strstr(p, "test loss "))) last = p++;
    cr_assert_not_null(last, "no test numbers in:\n%s", train_out);
    cr_assert_eq(sscanf(last, "test loss %15s acc %15[0-9.]", loss, acc), 2, "%s", last);
}

Test(use, eval_gives_the_trainers_last_test_numbers_exactly) {
    char loss[16], acc[16], cmd[512], *out, want[64];
    last_test_numbers(loss, acc);
    snprintf(cmd, sizeof cmd, "./eval %s --json %s/eval.json", ckpt, dir);
    cr_assert_eq(smoke_run(cmd, &out), 0, "%s", out);
    snprintf(want, sizeof want, "loss %s, accuracy %s%%", loss, acc);
    cr_expect(strstr(out, want), "training said '%s'; eval said:\n%s", want, out);
    cr_expect(strstr(out, "class3") && strstr(out, "confusion matrix"), "%s", out);
    free(out);
    /* the JSON holds the same count */
    char path[128];
    snprintf(path, sizeof path, "%s/eval.json", dir);
    size_t len;
    char *json = (char *)dg_read_file(path, &len);
    cr_assert_not_null(json, "no JSON in %s", path);
    long images = -1, correct = -1;
    const char *p = strstr(json, "\"images\": "), *q = strstr(json, "\"correct\": ");
    cr_assert(p && q, "%s", json);
    sscanf(p, "\"images\": %ld", &images);
    sscanf(q, "\"correct\": %ld", &correct);
    cr_expect_eq(images, 4 * PER_CLASS);
    char from_json[16];
    snprintf(from_json, sizeof from_json, "%.2f", 100.0 * (double)correct / (double)images);
    cr_expect_str_eq(from_json, acc);
    free(json);
}

/* eval --logits: the images' logits, as the loader fed them. */
struct logits { uint32_t n, classes; int32_t *labels; float *z; };

static struct logits read_logits(const char *path) {
    size_t len;
    unsigned char *b = dg_read_file(path, &len);
    struct logits l;
    uint32_t head[5];
    cr_assert(len > 28 && !memcmp(b, "NSLOGITS", 8), "%s is not a logits file", path);
    memcpy(head, b + 8, sizeof head);
    l.n = head[0];
    l.classes = head[4];
    size_t images = (size_t)head[0] * head[1] * head[2] * head[3];
    cr_assert_eq(len, 28 + images + (size_t)l.n * 4 + (size_t)l.n * l.classes * 4, "size of %s", path);
    l.labels = malloc((size_t)l.n * 4);
    l.z = malloc((size_t)l.n * l.classes * 4);
    memcpy(l.labels, b + 28 + images, (size_t)l.n * 4);
    memcpy(l.z, b + 28 + images + (size_t)l.n * 4, (size_t)l.n * l.classes * 4);
    free(b);
    return l;
}

/* predict --json's answers, in order: class and probability of the top one, or -1 for an error. */
static int read_answers(const char *path, int *cls, double *prob, int cap) {
    size_t len;
    char *json = (char *)dg_read_file(path, &len);
    cr_assert_not_null(json, "no answers in %s", path);
    int n = 0;
    for (const char *p = strstr(json, "{\"image\""); p && n < cap; p = strstr(p + 1, "{\"image\""), n++) {
        const char *next = strstr(p + 1, "{\"image\""), *top = strstr(p, "\"class\": "), *err = strstr(p, "\"error\"");
        cls[n] = -1;
        prob[n] = 0;
        if (err && (!next || err < next)) continue;
        cr_assert(top && (!next || top < next), "answer %d has neither top nor error", n);
        sscanf(top, "\"class\": %d", &cls[n]);
        sscanf(strstr(top, "\"probability\": "), "\"probability\": %lf", &prob[n]);
    }
    free(json);
    return n;
}

/* The softmax probability of the argmax, as predict computes it. */
static double top_probability(const float *z, int classes) {
    int best = eval_argmax(z, classes);
    double sum = 0;
    for (int k = 0; k < classes; k++) sum += exp((double)z[k] - (double)z[best]);
    return 1.0 / sum;
}

/* A list of the test images in the dataset's order (class by class, natural order),
 * with `extra` (if not NULL) put in after the first `at` of them. */
static void write_list(const char *list, const char *extra, int at) {
    FILE *f = fopen(list, "w");
    cr_assert_not_null(f);
    for (int i = 0, k = 0; k < 4; k++)
        for (int j = 0; j < PER_CLASS; j++, i++) {
            if (extra && i == at) fprintf(f, "%s\n", extra);
            fprintf(f, "%s/test/class%d/%d.png\n", dir, k, j);
        }
    fclose(f);
}

static void expect_same_answers(const struct logits *l, const int *cls, const double *prob, int skip_at) {
    for (uint32_t i = 0, a = 0; i < l->n; i++, a++) {
        if ((int)i == skip_at) a++;
        const float *z = l->z + (size_t)i * l->classes;
        cr_expect_eq(cls[a], eval_argmax(z, (int)l->classes), "image %u: predict says %d", i, cls[a]);
        cr_expect(fabs(prob[a] - top_probability(z, (int)l->classes)) < 2e-6, "image %u: probability %f vs %f", i,
                  prob[a], top_probability(z, (int)l->classes));
    }
}

Test(use, predict_answers_each_image_as_eval_does) {
    char cmd[1024], *out, path[128], list[128], json[128];
    snprintf(path, sizeof path, "%s/test.logits", dir);
    snprintf(cmd, sizeof cmd, "./eval %s test --logits %s", ckpt, path);
    cr_assert_eq(smoke_run(cmd, &out), 0, "%s", out);
    free(out);
    struct logits l = read_logits(path);
    cr_assert_eq(l.n, 4 * PER_CLASS);
    snprintf(list, sizeof list, "%s/list.txt", dir);
    snprintf(json, sizeof json, "%s/predict.json", dir);
    write_list(list, NULL, 0);
    snprintf(cmd, sizeof cmd, "./predict %s --list %s --top 2 --json %s", ckpt, list, json);
    cr_assert_eq(smoke_run(cmd, &out), 0, "%s", out);
    free(out);
    int cls[4 * PER_CLASS + 1];
    double prob[4 * PER_CLASS + 1];
    cr_assert_eq(read_answers(json, cls, prob, 4 * PER_CLASS), 4 * PER_CLASS);
    expect_same_answers(&l, cls, prob, -1);
    /* and the labels eval saw are the folders' */
    for (uint32_t i = 0; i < l.n; i++) cr_expect_eq(l.labels[i], (int32_t)(i / PER_CLASS));
    free(l.labels);
    free(l.z);
}

Test(use, a_bad_image_is_named_and_the_others_are_answered) {
    char cmd[1024], *out, path[128], bad[128], list[128], json[128];
    snprintf(path, sizeof path, "%s/test.logits", dir);
    snprintf(cmd, sizeof cmd, "./eval %s --logits %s", ckpt, path);
    cr_assert_eq(smoke_run(cmd, &out), 0, "%s", out);
    free(out);
    struct logits l = read_logits(path);
    snprintf(bad, sizeof bad, "%s/corrupt.png", dir);
    FILE *f = fopen(bad, "w");
    fputs("\x89PNG\r\n\x1a\n this is not the rest of a PNG", f);
    fclose(f);
    snprintf(list, sizeof list, "%s/list.txt", dir);
    snprintf(json, sizeof json, "%s/predict.json", dir);
    write_list(list, bad, 100);
    snprintf(cmd, sizeof cmd, "./predict %s --json %s - < %s", ckpt, json, list);
    cr_expect_eq(smoke_run(cmd, &out), 1, "some images failed: exit 1\n%s", out);
    cr_expect(strstr(out, "corrupt.png") && strstr(out, "1 of 257 images could not be read"), "%s", out);
    free(out);
    int cls[4 * PER_CLASS + 1];
    double prob[4 * PER_CLASS + 1];
    cr_assert_eq(read_answers(json, cls, prob, 4 * PER_CLASS + 1), 4 * PER_CLASS + 1);
    cr_expect_eq(cls[100], -1, "the corrupt image got an answer");
    expect_same_answers(&l, cls, prob, 100);
    free(l.labels);
    free(l.z);
}

Test(use, truncated_foreign_or_missing_checkpoints_are_refused) {
    char cmd[1024], *out, cut[128], foreign[128];
    size_t len;
    unsigned char *b = dg_read_file(ckpt, &len);
    snprintf(cut, sizeof cut, "%s/cut.ckpt", dir);
    dg_write_file(cut, b, len / 3);
    free(b);
    snprintf(foreign, sizeof foreign, "configs/smoke.cfg");
    const char *tools[] = {"./eval %s", "./predict %s x.png"};
    for (int t = 0; t < 2; t++) {
        const char *cases[][2] = {{cut, "truncated"}, {foreign, "not a nostall checkpoint"},
                                  {"nothing/here.ckpt", "No such file"}};
        for (int c = 0; c < 3; c++) {
            char tool[256];
            snprintf(tool, sizeof tool, tools[t], cases[c][0]);
            snprintf(cmd, sizeof cmd, "%s", tool);
            cr_expect_eq(smoke_run(cmd, &out), 1, "%s: exit code\n%s", cmd, out);
            cr_expect(strstr(out, cases[c][1]) && strstr(out, cases[c][0]), "%s:\n%s", cmd, out);
            free(out);
        }
    }
    /* a --set that would change what the model computes is refused, not applied */
    const char *changes[] = {"data.classes=5", "data.mean=0.3", "model.arch=mlp"};
    for (int i = 0; i < 3; i++) {
        snprintf(cmd, sizeof cmd, "./eval %s --set %s", ckpt, changes[i]);
        cr_expect_eq(smoke_run(cmd, &out), 1, "%s", out);
        cr_expect(strstr(out, "would change what the model computes"), "%s:\n%s", changes[i], out);
        free(out);
    }
}

Test(use, json_to_standard_output_is_json_alone) {
    char cmd[1024], *out;
    /* in a subshell: smoke_run adds 2>&1 after it, and the report must stay on stderr */
    snprintf(cmd, sizeof cmd, "(./eval %s --set loader.workers=0 --json - 2>/dev/null)", ckpt);
    cr_assert_eq(smoke_run(cmd, &out), 0, "%s", out);
    cr_expect(out[0] == '{' && strstr(out, "\"confusion\"") && out[strlen(out) - 2] == '}', "%s", out);
    free(out);
    snprintf(cmd, sizeof cmd, "(./predict %s %s/test/class2/0.png --json - 2>/dev/null)", ckpt, dir);
    cr_assert_eq(smoke_run(cmd, &out), 0, "%s", out);
    cr_expect(out[0] == '[' && strstr(out, "\"probability\"") && out[strlen(out) - 2] == ']', "%s", out);
    free(out);
}
