/* curves_svg.c — a run's loss and accuracy curves from its metrics file (viz.h; the
 * file's layout is in train.h): each step's loss, running means, and every epoch's
 * training and test numbers as dots, in two panels over the steps trained. */
#include <errno.h>
#include <float.h>
#include <limits.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "viz.h"

/* ---- reading the file ---- */

struct step_row { double x, loss, acc; };   /* x: steps done after this one */
struct epoch_row {
    double x;                               /* steps done at the epoch's end */
    int epoch;
    double loss, acc;                       /* the epoch's training means */
    bool tested;
    double test_loss, test_acc;
};

struct curves {
    struct step_row *steps;
    int n_steps, cap_steps;
    struct epoch_row *epochs;
    int n_epochs, cap_epochs;
};

/* The columns the picture needs, found by name in the header. */
enum column { COL_KIND, COL_STEP, COL_EPOCH, COL_LOSS, COL_ACCURACY, COL_TEST_LOSS, COL_TEST_ACCURACY, N_COLS };
static const char *const column_names[N_COLS] = {
    [COL_KIND] = "kind", [COL_STEP] = "step", [COL_EPOCH] = "epoch", [COL_LOSS] = "loss",
    [COL_ACCURACY] = "accuracy", [COL_TEST_LOSS] = "test_loss", [COL_TEST_ACCURACY] = "test_accuracy",
};

/* What a number column may hold: [lo, hi], whole numbers only where `whole`. */
static const struct { double lo, hi; bool whole; const char *what; } column_range[N_COLS] = {
    [COL_STEP] = {0, 9007199254740992.0, true, "a whole number >= 0"},  /* to 2^53, exact in a double */
    [COL_EPOCH] = {1, INT_MAX, true, "a whole number >= 1"},
    [COL_LOSS] = {0, DBL_MAX, false, "a number >= 0"},
    [COL_ACCURACY] = {0, 1, false, "a share from 0 to 1"},
    [COL_TEST_LOSS] = {0, DBL_MAX, false, "a number >= 0"},
    [COL_TEST_ACCURACY] = {0, 1, false, "a share from 0 to 1"},
};

#define MAX_FIELDS 64

/* Cuts `line` at its commas, in place; the number of fields, or MAX_FIELDS + 1 when
 * there are more. */
static int split(char *line, char **field) {
    int n = 0;
    for (char *p = line;; p++) {
        if (n == MAX_FIELDS) return MAX_FIELDS + 1;
        field[n++] = p;
        p = strchr(p, ',');
        if (!p) return n;
        *p = 0;
    }
}

/* A cell of number column c, in its column's range. */
static int number(const char *path, long line, enum column c, const char *text, double *v) {
    char *end;
    errno = 0;
    *v = strtod(text, &end);
    if (!text[0] || *end || errno == ERANGE || !(*v >= column_range[c].lo && *v <= column_range[c].hi) ||
        (column_range[c].whole && *v != floor(*v)))
        return err_set("%s:%ld: %s is '%s', not %s. HINT: the file should be as train.metrics writes it "
                       "(include/train.h)", path, line, column_names[c], text, column_range[c].what);
    return 0;
}

static int add_step(struct curves *cv, struct step_row r) {
    /* a resumed run went back: its rows replace those from its first step on */
    while (cv->n_steps && cv->steps[cv->n_steps - 1].x >= r.x) cv->n_steps--;
    while (cv->n_epochs && cv->epochs[cv->n_epochs - 1].x >= r.x) cv->n_epochs--;
    if (cv->n_steps == cv->cap_steps) {
        int cap = cv->cap_steps ? 2 * cv->cap_steps : 256;
        struct step_row *p = realloc(cv->steps, (size_t)cap * sizeof *p);
        if (!p) return err_set("out of host memory reading a metrics file");
        cv->steps = p;
        cv->cap_steps = cap;
    }
    cv->steps[cv->n_steps++] = r;
    return 0;
}

static int add_epoch(struct curves *cv, struct epoch_row r) {
    while (cv->n_epochs && cv->epochs[cv->n_epochs - 1].x >= r.x) cv->n_epochs--;
    if (cv->n_epochs == cv->cap_epochs) {
        int cap = cv->cap_epochs ? 2 * cv->cap_epochs : 16;
        struct epoch_row *p = realloc(cv->epochs, (size_t)cap * sizeof *p);
        if (!p) return err_set("out of host memory reading a metrics file");
        cv->epochs = p;
        cv->cap_epochs = cap;
    }
    cv->epochs[cv->n_epochs++] = r;
    return 0;
}

/* One data row: cells by the header's column indices `at`, `n` fields expected. */
static int parse_row(struct curves *cv, const char *path, long line, char *text, const int *at, int n) {
    char *f[MAX_FIELDS];
    int got = split(text, f);
    if (got != n)
        return err_set("%s:%ld: %s%d fields where the header has %d. HINT: the file should be as train.metrics "
                       "writes it (include/train.h)", path, line, got > MAX_FIELDS ? "more than " : "",
                       got > MAX_FIELDS ? MAX_FIELDS : got, n);
    const char *kind = f[at[COL_KIND]];
    bool is_step = !strcmp(kind, "step");
    if (!is_step && strcmp(kind, "epoch"))
        return err_set("%s:%ld: kind is '%s', neither step nor epoch", path, line, kind);
    double step, epoch, loss, acc;
    if (number(path, line, COL_STEP, f[at[COL_STEP]], &step) || number(path, line, COL_LOSS, f[at[COL_LOSS]], &loss) ||
        number(path, line, COL_ACCURACY, f[at[COL_ACCURACY]], &acc))
        return -1;
    if (is_step) return add_step(cv, (struct step_row){step + 1, loss, acc});
    if (number(path, line, COL_EPOCH, f[at[COL_EPOCH]], &epoch)) return -1;
    struct epoch_row r = {step, (int)epoch, loss, acc, false, 0, 0};
    const char *tl = f[at[COL_TEST_LOSS]], *ta = f[at[COL_TEST_ACCURACY]];
    if (tl[0] || ta[0]) {  /* both or neither */
        if (number(path, line, COL_TEST_LOSS, tl, &r.test_loss) ||
            number(path, line, COL_TEST_ACCURACY, ta, &r.test_acc))
            return -1;
        r.tested = true;
    }
    return add_epoch(cv, r);
}

/* The header's column index of every column the picture needs. */
static int parse_header(const char *path, char *text, int *at, int *n) {
    char *f[MAX_FIELDS];
    *n = split(text, f);
    if (*n > MAX_FIELDS) return err_set("%s:1: more than %d columns in the header", path, MAX_FIELDS);
    for (int c = 0; c < N_COLS; c++) {
        at[c] = -1;
        for (int k = 0; k < *n; k++)
            if (!strcmp(f[k], column_names[c])) at[c] = k;
        if (at[c] < 0)
            return err_set("%s:1: the header has no column '%s', so this is not a metrics file as train.metrics "
                           "writes it. HINT: write one with ./train CONFIG --metrics FILE.csv (layout in "
                           "include/train.h)", path, column_names[c]);
    }
    return 0;
}

static int read_curves(const char *path, struct curves *cv) {
    memset(cv, 0, sizeof *cv);
    FILE *f = fopen(path, "r");
    if (!f) return err_set("metrics file %s cannot be read: %s. HINT: give the train.metrics file of a run", path,
                           strerror(errno));
    char *text = NULL;
    size_t cap = 0;
    ssize_t len;
    long line = 0;
    int at[N_COLS], n = 0, rc = 0;
    while (!rc && (len = getline(&text, &cap, f)) >= 0) {
        line++;
        bool whole = len > 0 && text[len - 1] == '\n';
        while (len > 0 && (text[len - 1] == '\n' || text[len - 1] == '\r')) text[--len] = 0;
        if (line == 1) { rc = parse_header(path, text, at, &n); continue; }
        if (!len) continue;
        rc = parse_row(cv, path, line, text, at, n);
        /* the last line, cut short: a run killed while writing it */
        if (rc && !whole) { rc = 0; break; }
    }
    if (!rc && ferror(f)) rc = err_set("reading metrics file %s failed: %s", path, strerror(errno));
    if (!rc && line == 0) rc = err_set("%s: the file is empty, with no header. HINT: give the train.metrics file "
                                       "of a run", path);
    if (!rc && cv->n_steps == 0)
        rc = err_set("%s: no step rows, nothing to draw. HINT: the run stopped before its first step", path);
    free(text);
    fclose(f);
    if (rc) { free(cv->steps); free(cv->epochs); }
    return rc;
}

/* ---- drawing ---- */

#define CV_W 960.0
#define CV_LEFT 70.0          /* room for the y tick labels */
#define CV_RIGHT 24.0
#define CV_TOP 96.0           /* below the title and the legend */
#define CV_PLOT_H 230.0
#define CV_GAP 84.0           /* below a panel: its x tick labels, its axis name, the next title */
#define CV_H (CV_TOP + 2 * CV_PLOT_H + CV_GAP + 48.0)
#define CV_RAW "#a9c4ea"      /* each step, light */
#define CV_TRAIN "#1f4e9c"    /* running means and the epochs' training numbers */
#define CV_TEST "#e8833a"     /* the test split */

/* A panel: its plot area and value range. */
struct panel {
    double top, x0, w, h;
    double x_max, y_max;
};

static double px(const struct panel *p, double x) { return p->x0 + p->w * x / p->x_max; }
static double py(const struct panel *p, double y) { return p->top + p->h * (1 - y / p->y_max); }

/* Centred running mean of v[0..n) over `window` values (fewer at the ends). */
static void running_mean(const double *v, int n, int window, double *out) {
    int half = window / 2;
    double sum = 0;
    int lo = 0, hi = 0;  /* the window is v[lo..hi) */
    for (int i = 0; i < n; i++) {
        int want_lo = i - half < 0 ? 0 : i - half, want_hi = i + half + 1 > n ? n : i + half + 1;
        while (hi < want_hi) sum += v[hi++];
        while (lo < want_lo) sum -= v[lo++];
        out[i] = sum / (hi - lo);
    }
}

/* Background, the y grid with its labels, the epochs' boundaries and names, the x
 * axis; `unit` follows each y label ("%" or ""). */
static void draw_frame(struct svg *s, const struct panel *p, const struct curves *cv, const char *title,
                       double y_step, double y_scale, const char *unit) {
    svg_text(s, p->x0, p->top - 10, 13, SVG_START, "#222", true, "%s", title);
    svg_rect(s, p->x0, p->top, p->w, p->h, "#fafafa", NULL);
    /* ticks counted, not summed: a range that overflows to inf can't loop forever */
    for (int k = 0; k <= 50 && k * y_step <= p->y_max * (1 + 1e-9); k++) {
        double y = k * y_step;
        svg_line(s, p->x0, py(p, y), p->x0 + p->w, py(p, y), "#e4e4e4", 1, false);
        svg_text(s, p->x0 - 6, py(p, y) + 4, 10, SVG_END, "#555", false, "%g%s", y * y_scale, unit);
    }
    double prev = 0;  /* where the epoch began */
    for (int e = 0; e < cv->n_epochs; e++) {
        double a = px(p, prev), b = px(p, cv->epochs[e].x);
        svg_line(s, b, p->top, b, p->top + p->h, "#bbbbbb", 1, true);
        if (b - a >= 48) svg_text(s, (a + b) / 2, p->top + 12, 10, SVG_MIDDLE, "#777", false, "epoch %d",
                                  cv->epochs[e].epoch);
        prev = cv->epochs[e].x;
    }
    double bottom = p->top + p->h, x_step = svg_nice_step(p->x_max, 8);
    svg_line(s, p->x0, bottom, p->x0 + p->w, bottom, "#888", 1, false);
    for (int k = 0; k <= 50 && k * x_step <= p->x_max * (1 + 1e-9); k++) {
        double x = k * x_step;
        svg_line(s, px(p, x), bottom, px(p, x), bottom + 4, "#888", 1, false);
        svg_text(s, px(p, x), bottom + 16, 10, SVG_MIDDLE, "#555", false, "%g", x);
    }
    svg_text(s, p->x0 + p->w / 2, bottom + 32, 11, SVG_MIDDLE, "#333", false, "steps trained");
}

/* An epoch's training number (a hollow dot) or test number (a filled one). */
static void epoch_dot(struct svg *s, const struct panel *p, const struct epoch_row *e, double y, bool test,
                      const char *what, double shown, const char *unit) {
    char tip[96];
    snprintf(tip, sizeof tip, "epoch %d: %s %s %.4g%s", e->epoch, test ? "test" : "train", what, shown, unit);
    if (test) svg_circle(s, px(p, e->x), py(p, y), 4, CV_TEST, NULL, tip);
    else svg_circle(s, px(p, e->x), py(p, y), 4, "white", CV_TRAIN, tip);
}

static void draw_legend(struct svg *s, int window) {
    double y = 62;
    svg_line(s, 12, y - 4, 34, y - 4, CV_RAW, 1.5, false);
    svg_text(s, 40, y, 11, SVG_START, "#222", false, "each step");
    svg_line(s, 120, y - 4, 142, y - 4, CV_TRAIN, 2, false);
    svg_text(s, 148, y, 11, SVG_START, "#222", false, "running mean over %d step%s", window, window > 1 ? "s" : "");
    svg_circle(s, 336, y - 4, 4, "white", CV_TRAIN, NULL);
    svg_text(s, 346, y, 11, SVG_START, "#222", false, "the epoch's training mean");
    svg_circle(s, 528, y - 4, 4, CV_TEST, NULL, NULL);
    svg_text(s, 538, y, 11, SVG_START, "#222", false, "the test split, after the epoch");
}

static int draw(const char *path, const char *csv, const struct curves *cv) {
    if (cv->n_steps < 1) return err_set("%s: no step rows, nothing to draw", csv);
    int n = cv->n_steps, window = n / CURVES_SMOOTH_DIVISOR > 1 ? n / CURVES_SMOOTH_DIVISOR : 1;
    double *x = malloc((size_t)n * sizeof *x), *v = malloc((size_t)n * sizeof *v),
           *mean = malloc((size_t)n * sizeof *mean), *y = malloc((size_t)n * sizeof *y);
    struct svg *s = x && v && mean && y ? svg_open(path, CV_W, CV_H) : NULL;
    if (!s) {
        if (!(x && v && mean && y)) err_set("out of host memory drawing %s", path);
        free(x);
        free(v);
        free(mean);
        free(y);
        return -1;
    }
    double x_max = cv->steps[n - 1].x, loss_max = 0;
    for (int i = 0; i < n; i++) loss_max = fmax(loss_max, cv->steps[i].loss);
    for (int e = 0; e < cv->n_epochs; e++) {
        x_max = fmax(x_max, cv->epochs[e].x);
        loss_max = fmax(loss_max, fmax(cv->epochs[e].loss, cv->epochs[e].tested ? cv->epochs[e].test_loss : 0));
    }
    double loss_step = svg_nice_step(loss_max, 5);
    struct panel loss = {CV_TOP, CV_LEFT, CV_W - CV_LEFT - CV_RIGHT, CV_PLOT_H, x_max,
                         loss_step * fmax(1, ceil(loss_max / loss_step))};
    struct panel acc = loss;
    acc.top = CV_TOP + CV_PLOT_H + CV_GAP;
    acc.y_max = 1;

    svg_text(s, 12, 24, 16, SVG_START, "#222", true, "nostall training curves");
    svg_text(s, 12, 42, 11, SVG_START, "#666", false, "%s: %d steps, %d epoch rows", csv, n, cv->n_epochs);
    draw_legend(s, window);

    /* loss: each step light, the running mean dark, the epochs' dots on top */
    draw_frame(s, &loss, cv, "loss (cross-entropy)", loss_step, 1, "");
    for (int i = 0; i < n; i++) {
        x[i] = px(&loss, cv->steps[i].x);
        v[i] = cv->steps[i].loss;
        y[i] = py(&loss, v[i]);
    }
    svg_polyline(s, n, x, y, CV_RAW, 1);
    running_mean(v, n, window, mean);
    for (int i = 0; i < n; i++) y[i] = py(&loss, mean[i]);
    svg_polyline(s, n, x, y, CV_TRAIN, 2);
    for (int e = 0; e < cv->n_epochs; e++) {
        const struct epoch_row *r = &cv->epochs[e];
        epoch_dot(s, &loss, r, r->loss, false, "loss", r->loss, "");
        if (r->tested) epoch_dot(s, &loss, r, r->test_loss, true, "loss", r->test_loss, "");
    }

    /* accuracy: the running mean, then the epochs' dots */
    draw_frame(s, &acc, cv, "accuracy", 0.2, 100, "%");
    for (int i = 0; i < n; i++) v[i] = cv->steps[i].acc;
    running_mean(v, n, window, mean);
    for (int i = 0; i < n; i++) y[i] = py(&acc, mean[i]);
    svg_polyline(s, n, x, y, CV_TRAIN, 2);
    for (int e = 0; e < cv->n_epochs; e++) {
        const struct epoch_row *r = &cv->epochs[e];
        epoch_dot(s, &acc, r, r->acc, false, "accuracy", 100 * r->acc, "%");
        if (r->tested) epoch_dot(s, &acc, r, r->test_acc, true, "accuracy", 100 * r->test_acc, "%");
    }
    free(x);
    free(v);
    free(mean);
    free(y);
    return svg_close(s);
}

int curves_write_svg(const char *metrics_csv, const char *out_svg) {
    struct curves cv;
    if (read_curves(metrics_csv, &cv)) return -1;
    int rc = draw(out_svg, metrics_csv, &cv);
    free(cv.steps);
    free(cv.epochs);
    return rc;
}
