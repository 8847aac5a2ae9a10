/* eval.c — ./eval CHECKPOINT [DATA] [--set section.key=value]... [--device auto|cpu|cuda]
 *                 [--limit N] [--json FILE] [--confusion FILE.svg] [--logits FILE]
 * How good a trained model is: loss, accuracy, per-class accuracy and the confusion
 * matrix of the checkpoint's model on DATA — `test` (the default) or `train`, the
 * splits of the dataset it was trained on, or any folder with one subfolder per class
 * named as in training. It runs the trainer's own test pass (evaluate.h) through the
 * loader, so it gives the trainer's test accuracy exactly. Exit 0, 1 on an error, 2
 * on a bad command line. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "data.h"
#include "error.h"
#include "evaluate.h"
#include "loader.h"
#include "os.h"
#include "train.h"
#include "viz.h"

#define MAX_SETS 64

/* The report's stream: standard output, or standard error when --json - takes it. */
static FILE *out;

static void usage(FILE *f) {
    fprintf(f, "usage: ./eval CHECKPOINT [test|train|FOLDER] [--set section.key=value]... [--device auto|cpu|cuda]\n"
               "              [--limit N] [--json FILE] [--confusion FILE.svg] [--logits FILE]\n"
               "  DATA          test (default) or train: that split of the dataset the model was trained on;\n"
               "                or a folder with one subfolder per class, named as the checkpoint's classes\n"
               "  --set         how to run: loader.*, train.kernels, train.device, data.path (not the model)\n"
               "  --limit N     the first N images only\n"
               "  --json FILE   the results as JSON (- for standard output)\n"
               "  --confusion   the confusion matrix as an SVG picture\n"
               "  --logits FILE the images, labels and logits, binary (docs/export.md): for interop checks\n");
}

struct run {
    const struct eval_model *em;
    const struct dataset *ds;
    int64_t total, done;
    int64_t start_ns, last_ns;
    bool tty;
    /* --logits: every image, label and row of logits, kept until the end */
    bool keep;
    uint8_t *images;
    int32_t *labels;
    float *logits;
    size_t cap;
};

/* Grows the --logits buffers to `need` images; -1 when out of memory. */
static int reserve(struct run *r, size_t need, size_t sample, int classes) {
    if (need <= r->cap) return 0;
    size_t cap = r->cap ? r->cap * 2 : 1024;
    while (cap < need) cap *= 2;
    uint8_t *im = realloc(r->images, cap * sample);
    if (im) r->images = im;
    int32_t *lb = realloc(r->labels, cap * sizeof *lb);
    if (lb) r->labels = lb;
    float *lg = realloc(r->logits, cap * (size_t)classes * sizeof *lg);
    if (lg) r->logits = lg;
    if (!im || !lb || !lg) return err_set("out of host memory keeping %zu images for --logits", need);
    r->cap = cap;
    return 0;
}

/* After each batch: the progress line, and what --logits keeps (images as CHW). */
static int on_batch(void *ctx, const struct batch *b, int n, const float *logits) {
    struct run *r = ctx;
    int classes = r->em->info.classes, h = b->height, w = b->width, ch = b->channels;
    if (r->keep) {
        size_t sample = (size_t)h * w * ch;
        if (reserve(r, (size_t)r->done + n, sample, classes)) return -1;
        for (int i = 0; i < n; i++) {
            const uint8_t *src = b->images + (size_t)i * sample;
            uint8_t *dst = r->images + ((size_t)r->done + i) * sample;
            for (int c = 0; c < ch; c++)
                for (int p = 0; p < h * w; p++) dst[(size_t)c * h * w + p] = src[(size_t)p * ch + c];
            r->labels[r->done + i] = b->labels[i];
        }
        memcpy(r->logits + (size_t)r->done * classes, logits, (size_t)n * classes * sizeof *logits);
    }
    r->done += n;
    int64_t now = os_now_ns();
    if (r->done == r->total || now - r->last_ns > (r->tty ? 200000000 : 5000000000)) {
        double s = (double)(now - r->start_ns) * 1e-9;
        fprintf(out, r->tty ? "\r\033[Keval: %lld/%lld images, %.1f s" : "eval: %lld/%lld images, %.1f s\n",
                (long long)r->done, (long long)r->total, s);
        if (r->tty && r->done == r->total) fputc('\n', out);
        fflush(out);
        r->last_ns = now;
    }
    return 0;
}

/* DATA: a split of the training dataset, or a folder of class subfolders. */
static int open_data(const struct config *cfg, const char *what, struct dataset **ds) {
    if (!strcmp(what, "test")) return train_open_split(cfg, cfg->data.test_dir, ds);
    if (!strcmp(what, "train")) return train_open_split(cfg, cfg->data.train_dir, ds);
    struct stat sb;
    if (stat(what, &sb) || !S_ISDIR(sb.st_mode))
        return err_set("DATA '%s' is neither test, train nor a folder. HINT: give a folder with one subfolder "
                       "per class", what);
    const struct cfg_data *d = &cfg->data;
    struct data_folder_options fo = {d->height, d->width, d->channels, d->on_size_mismatch == CFG_SIZE_RESIZE};
    return data_open_folder(what, &fo, ds);
}

/* A dataset's labels must mean what they meant in training: same class names, in order. */
static int check_classes(const struct dataset *ds, const struct ckpt_info *info) {
    if (ds->classes > info->classes)
        return err_set("%s has %d classes, the model %d. HINT: give a folder with the model's classes as "
                       "subfolders", ds->path, ds->classes, info->classes);
    for (int c = 0; c < ds->classes; c++) {
        const char *name = data_class_name(ds, c);
        if (name && strcmp(name, info->class_names[c]) != 0)
            return err_set("%s: class %d is '%s' where the model's class %d is '%s'. HINT: name the subfolders "
                           "as the classes the model was trained on (./eval --json lists them), all of them, "
                           "so that they sort into the same order", ds->path, c, name, c, info->class_names[c]);
    }
    return 0;
}

static void print_table(const struct eval_result *r, char **names) {
    int k = r->classes;
    fprintf(out, "loss %.4f, accuracy %.2f%% (%lld of %lld)\n\n", r->seen ? r->loss_sum / (double)r->seen : 0,
           r->seen ? 100.0 * (double)r->right / (double)r->seen : 0, (long long)r->right, (long long)r->seen);
    fprintf(out, "%-22s %7s %9s   %s\n", "class", "images", "accuracy", "most often taken for");
    for (int t = 0; t < k; t++) {
        const int64_t *row = r->confusion + (size_t)t * k;
        int64_t n = 0;
        int worst = -1;
        for (int p = 0; p < k; p++) {
            n += row[p];
            if (p != t && row[p] && (worst < 0 || row[p] > row[worst])) worst = p;
        }
        if (!n) continue;
        fprintf(out, "%-22.22s %7lld %8.1f%%   ", names[t], (long long)n, 100.0 * (double)row[t] / (double)n);
        if (worst >= 0) fprintf(out, "%s (%.1f%%)\n", names[worst], 100.0 * (double)row[worst] / (double)n);
        else fprintf(out, "-\n");
    }
    if (k > 20) return;
    fprintf(out, "\nconfusion matrix: a row per true class, a column per prediction\n%-14s", "");
    for (int p = 0; p < k; p++) fprintf(out, " %6d", p);
    for (int t = 0; t < k; t++) {
        fprintf(out, "\n%2d %-11.11s", t, names[t]);
        for (int p = 0; p < k; p++) fprintf(out, " %6lld", (long long)r->confusion[(size_t)t * k + p]);
    }
    fprintf(out, "\n");
}

static int write_json(const char *path, const char *ckpt, const char *data, const struct eval_result *r,
                      char **names) {
    FILE *f = strcmp(path, "-") ? fopen(path, "w") : stdout;
    if (!f) return err_set("--json %s: cannot create it: %s", path, strerror(errno));
    int k = r->classes;
    fprintf(f, "{\n  \"checkpoint\": ");
    eval_json_string(f, ckpt);
    fprintf(f, ",\n  \"data\": ");
    eval_json_string(f, data);
    fprintf(f, ",\n  \"images\": %lld,\n  \"correct\": %lld,\n  \"loss\": ", (long long)r->seen, (long long)r->right);
    eval_json_number(f, r->seen ? r->loss_sum / (double)r->seen : 0); /* a diverged model's loss is NaN */
    fprintf(f, ",\n  \"accuracy\": %.6f,\n  \"classes\": [", r->seen ? (double)r->right / (double)r->seen : 0);
    for (int t = 0; t < k; t++) {
        int64_t n = 0;
        for (int p = 0; p < k; p++) n += r->confusion[(size_t)t * k + p];
        fprintf(f, "%s\n    {\"name\": ", t ? "," : "");
        eval_json_string(f, names[t]);
        fprintf(f, ", \"images\": %lld, \"correct\": %lld, \"accuracy\": %.6f}", (long long)n,
                (long long)r->confusion[(size_t)t * k + t], n ? (double)r->confusion[(size_t)t * k + t] / (double)n : 0);
    }
    fprintf(f, "\n  ],\n  \"confusion\": [");
    for (int t = 0; t < k; t++) {
        fprintf(f, "%s\n    [", t ? "," : "");
        for (int p = 0; p < k; p++) fprintf(f, "%s%lld", p ? ", " : "", (long long)r->confusion[(size_t)t * k + p]);
        fprintf(f, "]");
    }
    fprintf(f, "\n  ]\n}\n");
    if (f != stdout ? fclose(f) : fflush(f)) return err_set("--json %s: writing failed: %s", path, strerror(errno));
    return 0;
}

/* "NSLOGITS", u32 n, channels, height, width, classes; n CHW uint8 images; n int32
 * labels; n x classes float32 logits; little-endian. */
static int write_logits(const char *path, const struct run *r, const struct dataset *ds, int classes) {
    FILE *f = fopen(path, "wb");
    if (!f) return err_set("--logits %s: cannot create it: %s", path, strerror(errno));
    uint32_t head[5] = {(uint32_t)r->done, (uint32_t)ds->channels, (uint32_t)ds->height, (uint32_t)ds->width,
                        (uint32_t)classes};
    size_t n = (size_t)r->done;
    fwrite("NSLOGITS", 1, 8, f);
    fwrite(head, sizeof head, 1, f);
    fwrite(r->images, data_sample_bytes(ds), n, f);
    fwrite(r->labels, sizeof *r->labels, n, f);
    fwrite(r->logits, sizeof *r->logits * (size_t)classes, n, f);
    if (ferror(f) | fclose(f)) return err_set("--logits %s: writing failed: %s", path, strerror(errno));
    return 0;
}

int main(int argc, char **argv) {
    if (argc >= 2 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"))) { usage(stdout); return 0; }
    if (argc < 2 || argv[1][0] == '-') { usage(stderr); return 2; }
    const char *ckpt = argv[1], *data = "test", *json = NULL, *svg = NULL, *logits = NULL;
    const char *sets[MAX_SETS];
    char device[64];
    int n_sets = 0;
    long long limit = 0;
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (a[0] != '-' && i == 2) { data = a; continue; }
        if (!v || n_sets == MAX_SETS) {
            fprintf(stderr, "error: %s '%s'\n", a[0] == '-' ? "missing value after" : "unknown argument", a);
            usage(stderr);
            return 2;
        }
        if (!strcmp(a, "--set")) sets[n_sets++] = v;
        else if (!strcmp(a, "--device")) snprintf(device, sizeof device, "train.device=%s", v), sets[n_sets++] = device;
        else if (!strcmp(a, "--json")) json = v;
        else if (!strcmp(a, "--confusion")) svg = v;
        else if (!strcmp(a, "--logits")) logits = v;
        else if (!strcmp(a, "--limit") && (limit = atoll(v)) > 0) {}
        else { fprintf(stderr, "error: bad argument '%s %s'\n", a, v); usage(stderr); return 2; }
        i++;
    }

    out = json && !strcmp(json, "-") ? stderr : stdout;
    struct eval_model em;
    if (eval_model_open(&em, ckpt, sets, n_sets, out)) { fprintf(stderr, "error: %s\n", err_get()); return 1; }
    const struct config *cfg = &em.info.cfg;
    int k = em.info.classes, rc = 1;
    struct dataset *ds = NULL;
    struct loader *ld = NULL;
    struct feeder *feed = NULL;
    struct eval_result r = {.classes = k, .confusion = calloc((size_t)k * k, sizeof(int64_t))};
    struct run run = {.em = &em, .tty = isatty(fileno(out)), .keep = logits != NULL};
    fprintf(out, "checkpoint %s: %s model, %zu parameters, %dx%dx%d images, %d classes; trained %lld steps (%lld epochs)\n",
           ckpt, cfg_enum_name("model.arch", cfg->model.arch), nn_param_count(&em.m), cfg->data.channels,
           cfg->data.height, cfg->data.width, k, (long long)em.info.st.step, (long long)em.info.st.epochs_done);
    fprintf(out, "kernels: %s\n", em.be->name);
    if (!r.confusion) { err_set("out of host memory for a %d-class confusion matrix", k); goto out; }
    if (open_data(cfg, data, &ds) || check_classes(ds, &em.info) ||
        train_make_feed(cfg, em.be, ds, false, &ld, &feed))
        goto out;
    run.ds = ds;
    run.total = limit && limit < ds->count ? limit : ds->count;
    fprintf(out, "data: %s, %lld of its %lld images\n", ds->path, (long long)run.total, (long long)ds->count);
    run.start_ns = run.last_ns = os_now_ns();
    if (eval_pass(&em.ctx, &em.m, feed, em.mean, em.std, limit, &r, on_batch, &run)) goto out;
    int64_t skipped = loader_skipped(ld, NULL, 0);
    if (skipped) fprintf(out, "skipped %lld unreadable images (data.on_bad_sample = skip)\n", (long long)skipped);
    print_table(&r, em.info.class_names);
    if (json && write_json(json, ckpt, ds->path, &r, em.info.class_names)) goto out;
    if (svg) {
        char sub[512];
        snprintf(sub, sizeof sub, "%s on %s: %lld images, accuracy %.2f%%", ckpt, ds->path, (long long)r.seen,
                 r.seen ? 100.0 * (double)r.right / (double)r.seen : 0);
        if (confusion_write_svg(svg, k, r.confusion, (const char *const *)em.info.class_names, NULL, sub)) goto out;
        fprintf(out, "confusion matrix drawn to %s\n", svg);
    }
    if (logits && write_logits(logits, &run, ds, k)) goto out;
    rc = 0;
out:
    if (rc) fprintf(stderr, "error: %s\n", err_get());
    feeder_destroy(feed);
    loader_destroy(ld);
    data_close(ds);
    free(r.confusion);
    free(run.images);
    free(run.labels);
    free(run.logits);
    eval_model_close(&em);
    return rc;
}
