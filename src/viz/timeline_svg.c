/* timeline_svg.c — a trace as a picture: one lane per thread, stream and counter over a
 * few training steps, so a stall is something you see (viz.h). */
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "viz.h"

/* ---- drawing ---- */

#define TL_W 1100.0
#define TL_LABEL_W 200.0
#define TL_RIGHT 20.0
#define TL_LANE 24.0
#define TL_BAR 16.0
#define TL_LEGEND_H 70.0
#define TL_PANEL_HEAD 40.0
#define TL_AXIS_H 34.0
#define TL_PANEL_GAP 14.0
#define TL_MAX_LANES 80
/* A panel whose window is shorter than the longest one over this factor gets its own
 * time scale (said in its header): on the shared one it would be a sliver. */
#define TL_OWN_SCALE_FACTOR 8

static const char *span_fill(const struct timeline_span *s) {
    /* data parallel: a bucket on the communication thread, the wait for the last ones */
    if (!strcmp(s->cat, "comm")) return !strncmp(s->name, "wait", 4) ? "#e08a2c" : "#c9b27c";
    if (!strncmp(s->name, "wait", 4)) return "#d64541";
    if (!strncmp(s->name, "compute", 7)) return "#3d6fb6";
    if (!strncmp(s->name, "load", 4) || !strcmp(s->cat, "loader")) return "#4aa564";
    if (strstr(s->name, "h2d") || strstr(s->name, "copy")) return "#8e5ea2";
    return "#9a9a9a";
}

struct lane {
    bool counter;
    int tid;                          /* thread lanes */
    char name[TIMELINE_NAME_LEN];     /* counter lanes: the counter's name */
};

static const char *thread_name(const struct timeline *tl, int tid) {
    for (size_t i = 0; i < tl->n_threads; i++)
        if (tl->threads[i].tid == tid) return tl->threads[i].name;
    return NULL;
}

static int cmp_lane(const void *a, const void *b) {
    const struct lane *x = a, *y = b;
    if (x->counter != y->counter) return x->counter - y->counter;
    if (x->counter) return strcmp(x->name, y->name);
    return (x->tid > y->tid) - (x->tid < y->tid);
}

/* Every thread with a span, the training thread first, then every counter. */
static int collect_lanes(const struct timeline *tl, struct lane *lanes) {
    int n = 0;
    for (size_t i = 0; i < tl->n_spans && n < TL_MAX_LANES; i++) {
        int k = 0;
        while (k < n && !(!lanes[k].counter && lanes[k].tid == tl->spans[i].tid)) k++;
        if (k == n) lanes[n++] = (struct lane){false, tl->spans[i].tid, ""};
    }
    for (size_t i = 0; i < tl->n_counters && n < TL_MAX_LANES; i++) {
        int k = 0;
        while (k < n && !(lanes[k].counter && !strcmp(lanes[k].name, tl->counters[i].name))) k++;
        if (k == n) {
            lanes[n] = (struct lane){true, 0, ""};
            snprintf(lanes[n].name, sizeof lanes[n].name, "%s", tl->counters[i].name);
            n++;
        }
    }
    qsort(lanes, (size_t)n, sizeof *lanes, cmp_lane);
    return n;
}

/* The stretch of time a panel shows: opt's steps, or everything when there are none. */
struct window {
    int64_t t0, t1;
    int first, count;                 /* steps drawn */
    struct timeline_steps st;
    struct timeline_step_stats stats; /* over the drawn steps */
    bool has_stats;
};

static int find_window(const struct timeline *tl, const struct timeline_options *o, struct window *w) {
    memset(w, 0, sizeof *w);
    if (timeline_steps_collect(tl, &w->st)) return -1;
    int want = o && o->steps > 0 ? o->steps : 4, first = o && o->first_step >= 0 ? o->first_step : 2;
    if (w->st.n > 0) {
        if (want > w->st.n) want = w->st.n;
        if (first + want > w->st.n) first = w->st.n - want;
        w->first = first;
        w->count = want;
        w->t0 = w->st.start[first];
        w->t1 = w->st.end[first + want - 1];
        w->has_stats = timeline_steps_stats(&w->st, first, want, &w->stats) == 0;
        return 0;
    }
    w->t0 = INT64_MAX;
    w->t1 = INT64_MIN;
    for (size_t i = 0; i < tl->n_spans; i++) {
        const struct timeline_span *s = &tl->spans[i];
        if (s->start_ns < w->t0) w->t0 = s->start_ns;
        if (s->start_ns + s->dur_ns > w->t1) w->t1 = s->start_ns + s->dur_ns;
    }
    for (size_t i = 0; i < tl->n_counters; i++) {
        if (tl->counters[i].t_ns < w->t0) w->t0 = tl->counters[i].t_ns;
        if (tl->counters[i].t_ns > w->t1) w->t1 = tl->counters[i].t_ns;
    }
    if (w->t0 > w->t1) w->t0 = w->t1 = 0;
    return 0;
}

static double panel_height(int lanes) { return TL_PANEL_HEAD + lanes * TL_LANE + TL_AXIS_H + TL_PANEL_GAP; }

static void draw_counter(struct svg *s, const struct timeline *tl, const char *name, const struct window *w,
                         double x0, double y, double px_per_ns) {
    /* the axis runs from 0 to the counter's declared maximum (the ring's slots), or to
     * the largest sample when none was declared or a sample went past it */
    double most = timeline_counter_max(tl, name);
    for (size_t i = 0; i < tl->n_counters; i++)
        if (!strcmp(tl->counters[i].name, name) && tl->counters[i].value > most) most = tl->counters[i].value;
    if (!(most > 0)) most = 1;
    /* a step line through the samples in the window, from the last one before it */
    size_t n = 0, cap = 64;
    double *xs = malloc(cap * sizeof *xs), *ys = malloc(cap * sizeof *ys);
    double last = 0, bottom = y + TL_LANE - 4, h = TL_LANE - 8;
    bool started = false;
    for (size_t i = 0; xs && ys && i < tl->n_counters; i++) {
        const struct timeline_counter *c = &tl->counters[i];
        if (strcmp(c->name, name)) continue;
        if (c->t_ns < w->t0) { last = c->value; continue; }
        if (c->t_ns > w->t1) continue;
        if (n + 3 > cap) {
            cap *= 2;
            double *nx = realloc(xs, cap * sizeof *xs), *ny = nx ? realloc(ys, cap * sizeof *ys) : NULL;
            if (!nx || !ny) { free(nx ? nx : xs); free(ny ? ny : ys); xs = ys = NULL; break; }
            xs = nx;
            ys = ny;
        }
        double x = x0 + (double)(c->t_ns - w->t0) * px_per_ns;
        if (!started) { xs[n] = x0; ys[n++] = bottom - h * last / most; started = true; }
        xs[n] = x; ys[n++] = bottom - h * last / most;
        xs[n] = x; ys[n++] = bottom - h * c->value / most;
        last = c->value;
    }
    if (xs && ys) {
        if (!started) { xs[n] = x0; ys[n++] = bottom - h * last / most; }
        xs[n] = x0 + (double)(w->t1 - w->t0) * px_per_ns;
        ys[n++] = bottom - h * last / most;
        svg_polyline(s, (int)n, xs, ys, "#555", 1.5);
    }
    free(xs);
    free(ys);
    svg_text(s, x0 - 8, y + 15, 11, SVG_END, "#444", false, "%s (0..%g)", name, most);
}

/* `zoom` > 1: the panel has its own time scale, zoom times the shared one's pixels per
 * nanosecond, and its header says so. */
static void draw_panel(struct svg *s, const struct timeline *tl, const char *title, const struct window *w,
                       const struct lane *lanes, int n_lanes, double y, double px_per_ns, double axis_ns,
                       double zoom) {
    double x0 = TL_LABEL_W;
    svg_text(s, 12, y + 18, 13, SVG_START, "#222", true, "%s", title ? title : "");
    if (zoom > 1)
        svg_text(s, 12, y + 33, 10.5, SVG_START, "#b35900", false, "own time scale: zoomed %.0fx", zoom);
    if (w->has_stats)
        svg_text(s, TL_W - TL_RIGHT, y + 18, 11.5, SVG_END, "#333", false,
                 "steps %d-%d: median step %.1f ms, %.0f%% of step time waiting for input", w->first + 1,
                 w->first + w->count, w->stats.median_step_s * 1e3, 100 * w->stats.wait_share);
    double top = y + TL_PANEL_HEAD, bottom = top + n_lanes * TL_LANE;
    double labelled = -1e9;
    for (int i = 0; i < w->count; i++) {
        double x = x0 + (double)(w->st.start[w->first + i] - w->t0) * px_per_ns;
        svg_line(s, x, top - 12, x, bottom, "#bbbbbb", 1, true);
        if (x - labelled < 44) continue;  /* steps too short to label each one */
        svg_text(s, x + 3, top - 3, 10, SVG_START, "#777", false, "step %d", w->first + i + 1);
        labelled = x;
    }
    for (int k = 0; k < n_lanes; k++) {
        double ly = top + k * TL_LANE;
        svg_rect(s, x0, ly + 1, TL_W - TL_RIGHT - x0, TL_LANE - 2, k % 2 ? "#fafafa" : "#f2f2f2", NULL);
        if (lanes[k].counter) { draw_counter(s, tl, lanes[k].name, w, x0, ly, px_per_ns); continue; }
        const char *name = thread_name(tl, lanes[k].tid);
        if (name && name[0]) svg_text(s, x0 - 8, ly + 16, 11, SVG_END, "#222", false, "%s", name);
        else svg_text(s, x0 - 8, ly + 16, 11, SVG_END, "#222", false, "thread %d", lanes[k].tid);
        for (size_t i = 0; i < tl->n_spans; i++) {
            const struct timeline_span *sp = &tl->spans[i];
            int64_t a = sp->start_ns, b = sp->start_ns + sp->dur_ns;
            if (sp->tid != lanes[k].tid || b < w->t0 || a > w->t1) continue;
            if (a < w->t0) a = w->t0;
            if (b > w->t1) b = w->t1;
            double x = x0 + (double)(a - w->t0) * px_per_ns, len = (double)(b - a) * px_per_ns;
            char tip[96];
            snprintf(tip, sizeof tip, "%s: %.2f ms", sp->name, (double)sp->dur_ns * 1e-6);
            /* at least a pixel wide, or a short span would vanish; a hairline gap between
             * long ones, so back-to-back steps stay apart */
            svg_rect(s, x, ly + (TL_LANE - TL_BAR) / 2, len < 1 ? 1 : len > 4 ? len - 1 : len, TL_BAR,
                     span_fill(sp), tip);
        }
    }
    double step_ms = svg_nice_step(axis_ns * 1e-6, 8);
    svg_line(s, x0, bottom + 2, TL_W - TL_RIGHT, bottom + 2, "#888", 1, false);
    for (double ms = 0; ms * 1e6 <= axis_ns * (1 + 1e-9); ms += step_ms) {
        double x = x0 + ms * 1e6 * px_per_ns;
        svg_line(s, x, bottom + 2, x, bottom + 6, "#888", 1, false);
        svg_text(s, x, bottom + 18, 10, SVG_MIDDLE, "#555", false, "%g ms", ms);
    }
}

static void draw_legend(struct svg *s, const struct timeline_options *o) {
    svg_text(s, 12, 24, 16, SVG_START, "#222", true, "%s", o && o->title ? o->title : "nostall timeline");
    if (o && o->subtitle) svg_text(s, 12, 42, 11, SVG_START, "#666", false, "%s", o->subtitle);
    static const struct { const char *fill, *what; } keys[] = {
        {"#d64541", "wait: training thread blocked on the loader"},
        {"#3d6fb6", "compute: forward, backward, SGD"},
        {"#4aa564", "load batch: read, decode, augment"},
        {"#8e5ea2", "copy to the device"},
    };
    double x = 12;
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) {
        svg_rect(s, x, 52, 12, 12, keys[i].fill, NULL);
        svg_text(s, x + 17, 62, 11, SVG_START, "#222", false, "%s", keys[i].what);
        x += 17 + 6.2 * (double)strlen(keys[i].what) + 22;
    }
}

int timeline_write_panels(const char *path, int n, const struct timeline *const *tls, const char *const *titles,
                          const struct timeline_options *opt) {
    if (n < 1) return err_set("timeline: nothing to draw");
    struct window *w = calloc((size_t)n, sizeof *w);
    struct lane(*lanes)[TL_MAX_LANES] = calloc((size_t)n, sizeof *lanes);
    int *n_lanes = calloc((size_t)n, sizeof *n_lanes);
    int rc = w && lanes && n_lanes ? 0 : err_set("out of host memory drawing a timeline");
    double height = TL_LEGEND_H;
    int64_t longest = 1;
    for (int i = 0; !rc && i < n; i++) {
        if ((rc = find_window(tls[i], opt, &w[i]))) break;
        n_lanes[i] = collect_lanes(tls[i], lanes[i]);
        height += panel_height(n_lanes[i]);
        if (w[i].t1 - w[i].t0 > longest) longest = w[i].t1 - w[i].t0;
    }
    struct svg *s = rc ? NULL : svg_open(path, TL_W, height);
    if (s) {
        double plot_w = TL_W - TL_RIGHT - TL_LABEL_W, y = TL_LEGEND_H;
        draw_legend(s, opt);
        for (int i = 0; i < n; i++) {
            /* one time scale for all, so panels compare at a glance, except for a panel
             * much shorter than the longest: it is drawn across the whole width (an
             * empty one, with nothing to zoom into, stays on the shared scale) */
            int64_t span = w[i].t1 - w[i].t0 > 0 ? w[i].t1 - w[i].t0 : 1;
            bool own = w[i].t1 > w[i].t0 && span * TL_OWN_SCALE_FACTOR < longest;
            double axis_ns = (double)(own ? span : longest);
            draw_panel(s, tls[i], titles ? titles[i] : NULL, &w[i], lanes[i], n_lanes[i], y, plot_w / axis_ns,
                       axis_ns, own ? (double)longest / (double)span : 1);
            y += panel_height(n_lanes[i]);
        }
        rc = svg_close(s);
    } else if (!rc) {
        rc = -1;
    }
    for (int i = 0; w && i < n; i++) timeline_steps_free(&w[i].st);
    free(w);
    free(lanes);
    free(n_lanes);
    return rc;
}

int timeline_write_svg(const char *trace_path, const char *svg_path, const struct timeline_options *opt) {
    struct timeline tl;
    if (timeline_load_json(&tl, trace_path)) return -1;
    const struct timeline *one = &tl;
    const char *title = "this run";
    int rc = timeline_write_panels(svg_path, 1, &one, &title, opt);
    timeline_free(&tl);
    return rc;
}
