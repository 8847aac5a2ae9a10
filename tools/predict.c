/* predict.c — ./predict CHECKPOINT IMAGE... [--list FILE] [--top K] [--json FILE]
 *                      [--set section.key=value]... [--device auto|cpu|cuda]
 * The checkpoint's model on image files: the top K classes with their probabilities,
 * per image. Any PNG, JPEG or BMP of any size: it is decoded, converted to the model's
 * channels and resized by the function the folder reader uses in training
 * (data_load_image). IMAGE `-`, or --list FILE, reads paths one per line. An image that
 * can't be read is reported by name and the others still get their answer; the exit
 * code is 0 when all were answered, 1 when some were not, 2 on a bad command line. */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "data.h"
#include "error.h"
#include "evaluate.h"
#include "ops.h"

#define MAX_SETS 64
#define MAX_TOP 20

static void usage(FILE *f) {
    fprintf(f, "usage: ./predict CHECKPOINT IMAGE... [--list FILE] [--top K] [--json FILE]\n"
               "                 [--set section.key=value]... [--device auto|cpu|cuda]\n"
               "  IMAGE        a PNG, JPEG or BMP file of any size; - reads paths from standard input\n"
               "  --list FILE  paths, one per line (- for standard input)\n"
               "  --top K      classes shown per image (default 3)\n"
               "  --json FILE  the answers as JSON (- for standard output)\n");
}

struct paths { char **v; int n, cap; };

static int add_path(struct paths *p, const char *s) {
    if (p->n == p->cap) {
        int cap = p->cap ? 2 * p->cap : 64;
        char **v = realloc(p->v, (size_t)cap * sizeof *v);
        if (!v) return err_set("out of host memory for the image list");
        p->v = v;
        p->cap = cap;
    }
    if (!(p->v[p->n] = strdup(s))) return err_set("out of host memory for the image list");
    p->n++;
    return 0;
}

static void free_paths(struct paths *p) {
    for (int i = 0; i < p->n; i++) free(p->v[i]);
    free(p->v);
}

/* Paths one per line; blank lines are skipped, trailing \r is dropped. */
static int read_list(struct paths *p, const char *file) {
    FILE *f = strcmp(file, "-") ? fopen(file, "r") : stdin;
    if (!f) return err_set("--list %s: cannot open it: %s", file, strerror(errno));
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    int rc = 0;
    while (!rc && (n = getline(&line, &cap, f)) >= 0) {
        while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r')) line[--n] = 0;
        if (n > 0) rc = add_path(p, line);
    }
    free(line);
    if (f != stdin) fclose(f);
    return rc;
}

/* One image's answer: softmax in double over its logits, the top k. */
struct answer { int cls[MAX_TOP]; double prob[MAX_TOP]; };

static void top_k(const float *z, int classes, int k, struct answer *a) {
    double mx = z[eval_argmax(z, classes)], sum = 0;
    for (int c = 0; c < classes; c++) sum += exp((double)z[c] - mx);
    for (int j = 0; j < k; j++) {
        int best = -1;
        for (int c = 0; c < classes; c++) {
            bool taken = false;
            for (int i = 0; i < j; i++) taken |= a->cls[i] == c;
            if (!taken && (best < 0 || z[c] > z[best])) best = c;
        }
        a->cls[j] = best;
        a->prob[j] = exp((double)z[best] - mx) / sum;
    }
}

/* The model on images[0..n) (HWC uint8, already decoded): logits into `out`. */
static int forward(struct eval_model *em, const uint8_t *host, uint8_t *dev, int n, float *out) {
    const struct config *cfg = &em->info.cfg;
    struct ag_ctx *c = &em->ctx;
    int h = cfg->data.height, w = cfg->data.width, ch = cfg->data.channels;
    size_t bytes = (size_t)n * h * w * ch;
    em->be->copy(dev, host, bytes, COPY_H2D);
    c->grad_enabled = false;
    c->training = false;
    struct tensor *x = op_normalize_u8(c, dev, n, h, w, ch, em->mean, em->std);
    struct tensor *logits = x ? nn_forward(&em->m, c, x) : NULL;
    if (logits) em->be->copy(out, logits->data, (size_t)n * em->info.classes * sizeof(float), COPY_D2H);
    ag_reset(c);
    if (!logits || (em->be->check && em->be->check())) return -1;
    return 0;
}

int main(int argc, char **argv) {
    if (argc >= 2 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"))) { usage(stdout); return 0; }
    if (argc < 3 || argv[1][0] == '-') { usage(stderr); return 2; }
    const char *ckpt = argv[1], *json = NULL, *sets[MAX_SETS];
    char device[64];
    int n_sets = 0, top = 3;
    struct paths paths = {0};
    int bad = 0;
    for (int i = 2; i < argc && !bad; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        int rc = 0;
        if (!strcmp(a, "-")) { rc = read_list(&paths, "-"); }
        else if (a[0] != '-') { rc = add_path(&paths, a); }
        else if (!v || n_sets == MAX_SETS) rc = err_set("missing value after '%s'", a);
        else {
            if (!strcmp(a, "--set")) sets[n_sets++] = v;
            else if (!strcmp(a, "--device")) snprintf(device, sizeof device, "train.device=%s", v), sets[n_sets++] = device;
            else if (!strcmp(a, "--list")) rc = read_list(&paths, v);
            else if (!strcmp(a, "--json")) json = v;
            else if (!strcmp(a, "--top") && (top = atoi(v)) >= 1 && top <= MAX_TOP) {}
            else rc = err_set("bad argument '%s %s' (--top takes 1..%d)", a, v, MAX_TOP);
            i++;
        }
        bad = rc != 0;
    }
    if (!bad && paths.n == 0) bad = err_set("no images given");
    if (bad) {
        fprintf(stderr, "error: %s\n", err_get());
        usage(stderr);
        free_paths(&paths);
        return 2;
    }

    struct eval_model em;
    if (eval_model_open(&em, ckpt, sets, n_sets, stderr)) {
        fprintf(stderr, "error: %s\n", err_get());
        free_paths(&paths);
        return 1;
    }
    const struct config *cfg = &em.info.cfg;
    int classes = em.info.classes, batch = cfg->loader.batch < paths.n ? cfg->loader.batch : paths.n;
    if (top > classes) top = classes;
    size_t sample = (size_t)cfg->data.height * cfg->data.width * cfg->data.channels;
    uint8_t *images = malloc((size_t)batch * sample), *dev = em.be->alloc((size_t)batch * sample);
    float *logits = malloc((size_t)batch * classes * sizeof *logits);
    int *which = malloc((size_t)batch * sizeof *which);       /* path index of each decoded image */
    char **errors = calloc((size_t)paths.n, sizeof *errors);  /* per path: NULL, or why it failed */
    struct answer *answers = calloc((size_t)paths.n, sizeof *answers);
    FILE *jf = NULL;
    int failed = 0, rc = 1;
    if (!images || !dev || !logits || !which || !errors || !answers) {
        fprintf(stderr, "error: out of memory for a batch of %d images\n", batch);
        goto out;
    }
    if (json && !(jf = strcmp(json, "-") ? fopen(json, "w") : stdout)) {
        fprintf(stderr, "error: --json %s: cannot create it: %s\n", json, strerror(errno));
        goto out;
    }
    /* Decode up to a batch of readable images, run them, answer; a bad file gets its
     * error and takes no place in the batch. */
    for (int next = 0; next < paths.n;) {
        int n = 0;
        for (; next < paths.n && n < batch; next++) {
            if (data_load_image(paths.v[next], cfg->data.height, cfg->data.width, cfg->data.channels, 1,
                                images + (size_t)n * sample)) {
                errors[next] = strdup(err_get());
                failed++;
                continue;
            }
            which[n++] = next;
        }
        if (n && forward(&em, images, dev, n, logits)) {
            fprintf(stderr, "error: running the model: %s\n", err_get());
            goto out;
        }
        for (int i = 0; i < n; i++) top_k(logits + (size_t)i * classes, classes, top, &answers[which[i]]);
    }
    for (int p = 0; p < paths.n; p++) {
        if (errors[p]) { fprintf(stderr, "error: %s\n", errors[p]); continue; } /* the message names the file */
        FILE *txt = jf == stdout ? stderr : stdout; /* --json - takes standard output */
        fprintf(txt, "%s:", paths.v[p]);
        for (int j = 0; j < top; j++)
            fprintf(txt, "%s %s %.1f%%", j ? "," : "", em.info.class_names[answers[p].cls[j]], 100 * answers[p].prob[j]);
        fprintf(txt, "\n");
    }
    if (jf) {
        fprintf(jf, "[");
        for (int p = 0; p < paths.n; p++) {
            fprintf(jf, "%s\n  {\"image\": ", p ? "," : "");
            eval_json_string(jf, paths.v[p]);
            if (errors[p]) {
                fprintf(jf, ", \"error\": ");
                eval_json_string(jf, errors[p]);
            } else {
                fprintf(jf, ", \"top\": [");
                for (int j = 0; j < top; j++) {
                    fprintf(jf, "%s{\"class\": %d, \"name\": ", j ? ", " : "", answers[p].cls[j]);
                    eval_json_string(jf, em.info.class_names[answers[p].cls[j]]);
                    fprintf(jf, ", \"probability\": ");
                    eval_json_number(jf, answers[p].prob[j]);
                    fputc('}', jf);
                }
                fprintf(jf, "]");
            }
            fprintf(jf, "}");
        }
        fprintf(jf, "\n]\n");
    }
    if (failed) fprintf(stderr, "%d of %d images could not be read; the others were answered\n", failed, paths.n);
    rc = failed ? 1 : 0;
out:
    if (jf && (jf != stdout ? fclose(jf) : fflush(jf))) {
        fprintf(stderr, "error: --json %s: writing failed: %s\n", json, strerror(errno));
        rc = 1;
    }
    if (dev) em.be->free(dev);
    free(images);
    free(logits);
    free(which);
    for (int p = 0; errors && p < paths.n; p++) free(errors[p]);
    free(errors);
    free(answers);
    free_paths(&paths);
    eval_model_close(&em);
    return rc;
}
