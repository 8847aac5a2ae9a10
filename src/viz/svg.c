/* svg.c — the SVG writer behind the lab's pictures (viz.h). */
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "error.h"
#include "viz.h"

struct svg {
    FILE *f;
    char path[PATH_MAX], tmp[PATH_MAX];
};

/* Coordinates with two decimals; a NaN or infinity (a zero-length run, a division by
 * zero upstream) becomes 0 rather than a token no SVG reader accepts. */
static double fin(double v) { return isfinite(v) ? v : 0.0; }

static void put_escaped(FILE *f, const char *s) {
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        switch (c) {
        case '&': fputs("&amp;", f); break;
        case '<': fputs("&lt;", f); break;
        case '>': fputs("&gt;", f); break;
        case '"': fputs("&quot;", f); break;
        case '\'': fputs("&apos;", f); break;
        default:
            /* XML 1.0 allows no control characters but tab, newline and return */
            if (c < 0x20 && c != '\t' && c != '\n' && c != '\r') fputc(' ', f);
            else fputc(c, f);
        }
    }
}

struct svg *svg_open(const char *path, double width, double height) {
    struct svg *s = calloc(1, sizeof *s);
    if (!s) { err_set("out of host memory for an SVG writer"); return NULL; }
    if ((size_t)snprintf(s->path, sizeof s->path, "%s", path) >= sizeof s->path ||
        (size_t)snprintf(s->tmp, sizeof s->tmp, "%s.tmp", path) >= sizeof s->tmp) {
        free(s);
        err_set("SVG path is too long: %.60s...", path);
        return NULL;
    }
    s->f = fopen(s->tmp, "w");
    if (!s->f) {
        int e = errno;
        err_set("picture %s cannot be written: creating %s failed: %s. HINT: create the directory or "
                "choose another path", path, s->tmp, strerror(e));
        free(s);
        return NULL;
    }
    width = fin(width);
    height = fin(height);
    fprintf(s->f, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
                  "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%.0f\" height=\"%.0f\" "
                  "viewBox=\"0 0 %.0f %.0f\" font-family=\"DejaVu Sans, Helvetica, Arial, sans-serif\">\n",
            width, height, width, height);
    fprintf(s->f, "<rect x=\"0\" y=\"0\" width=\"%.0f\" height=\"%.0f\" fill=\"white\"/>\n", width, height);
    return s;
}

int svg_close(struct svg *s) {
    if (!s) return -1;
    fputs("</svg>\n", s->f);
    int rc = 0, e = 0;
    if (fflush(s->f) != 0 || ferror(s->f)) { rc = -1; e = errno; }
    if (fclose(s->f) != 0 && !rc) { rc = -1; e = errno; }
    if (rc) err_set("writing picture %s failed: %s. HINT: free disk space", s->tmp, strerror(e));
    else if (rename(s->tmp, s->path) != 0) {
        e = errno;
        rc = err_set("renaming %s over %s failed: %s", s->tmp, s->path, strerror(e));
    }
    if (rc) unlink(s->tmp);
    free(s);
    return rc;
}

void svg_discard(struct svg *s) {
    if (!s) return;
    fclose(s->f);
    unlink(s->tmp);
    free(s);
}

void svg_rect(struct svg *s, double x, double y, double w, double h, const char *fill, const char *tooltip) {
    fprintf(s->f, "<rect x=\"%.2f\" y=\"%.2f\" width=\"%.2f\" height=\"%.2f\" fill=\"", fin(x), fin(y),
            fmax(0, fin(w)), fmax(0, fin(h)));
    put_escaped(s->f, fill);
    if (!tooltip) { fputs("\"/>\n", s->f); return; }
    fputs("\"><title>", s->f);
    put_escaped(s->f, tooltip);
    fputs("</title></rect>\n", s->f);
}

void svg_line(struct svg *s, double x1, double y1, double x2, double y2, const char *stroke, double width,
              bool dash) {
    fprintf(s->f, "<line x1=\"%.2f\" y1=\"%.2f\" x2=\"%.2f\" y2=\"%.2f\" stroke-width=\"%.2f\"%s stroke=\"",
            fin(x1), fin(y1), fin(x2), fin(y2), fin(width), dash ? " stroke-dasharray=\"3,3\"" : "");
    put_escaped(s->f, stroke);
    fputs("\"/>\n", s->f);
}

void svg_polyline(struct svg *s, int n, const double *x, const double *y, const char *stroke, double width) {
    if (n < 2) return;
    fputs("<polyline fill=\"none\" points=\"", s->f);
    for (int i = 0; i < n; i++) fprintf(s->f, "%s%.2f,%.2f", i ? " " : "", fin(x[i]), fin(y[i]));
    fprintf(s->f, "\" stroke-width=\"%.2f\" stroke=\"", fin(width));
    put_escaped(s->f, stroke);
    fputs("\"/>\n", s->f);
}

void svg_circle(struct svg *s, double cx, double cy, double r, const char *fill, const char *stroke,
                const char *tooltip) {
    fprintf(s->f, "<circle cx=\"%.2f\" cy=\"%.2f\" r=\"%.2f\" fill=\"", fin(cx), fin(cy), fmax(0, fin(r)));
    put_escaped(s->f, fill);
    if (stroke) {
        fputs("\" stroke-width=\"1.5\" stroke=\"", s->f);
        put_escaped(s->f, stroke);
    }
    if (!tooltip) { fputs("\"/>\n", s->f); return; }
    fputs("\"><title>", s->f);
    put_escaped(s->f, tooltip);
    fputs("</title></circle>\n", s->f);
}

void svg_text(struct svg *s, double x, double y, double size, enum svg_anchor anchor, const char *fill,
              bool bold, const char *fmt, ...) {
    static const char *const anchors[] = {[SVG_START] = "start", [SVG_MIDDLE] = "middle", [SVG_END] = "end"};
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    fprintf(s->f, "<text x=\"%.2f\" y=\"%.2f\" font-size=\"%.1f\" text-anchor=\"%s\"%s fill=\"", fin(x), fin(y),
            fin(size), anchors[anchor], bold ? " font-weight=\"bold\"" : "");
    put_escaped(s->f, fill);
    fputs("\">", s->f);
    put_escaped(s->f, buf);
    fputs("</text>\n", s->f);
}

double svg_nice_step(double range, int ticks) {
    if (!(range > 0) || !isfinite(range) || ticks < 1) return 1;
    double raw = range / ticks, p = pow(10, floor(log10(raw))), m = raw / p;
    double step = (m < 1.5 ? 1 : m < 3.5 ? 2 : m < 7.5 ? 5 : 10) * p;
    /* never 0 or infinite (a range near the ends of the doubles), which would hang a
     * caller's tick loop */
    return step > 0 && isfinite(step) ? step : 1;
}

/* ---- the bar chart ---- */

#define BAR_W 960.0
#define BAR_LABEL_W 300.0   /* the row labels' column */
#define BAR_NOTE_W 210.0    /* room right of the longest bar for its numbers */
#define BAR_ROW 20.0
#define BAR_HEAD 24.0
#define BAR_TOP 78.0
#define BAR_VALUE_FILL "#4a78c2"
#define BAR_SHARE_FILL "#e8833a"

int svg_write_bar_chart(const char *path, const struct svg_bar_chart *c) {
    double most = 0;
    int heads = 0;
    for (int i = 0; i < c->n; i++) {
        if (isfinite(c->bars[i].value) && c->bars[i].value > most) most = c->bars[i].value;
        if (isfinite(c->bars[i].hi) && c->bars[i].hi > most) most = c->bars[i].hi;
        const char *g = c->bars[i].group, *prev = i ? c->bars[i - 1].group : NULL;
        if (g && (!prev || strcmp(g, prev))) heads++;
    }
    double step = svg_nice_step(most, 6), axis_max = step * ceil(most / step);
    if (!(axis_max > 0)) axis_max = 1;
    double x0 = BAR_LABEL_W, span = BAR_W - BAR_LABEL_W - BAR_NOTE_W;
    double height = BAR_TOP + heads * BAR_HEAD + c->n * BAR_ROW + 46;
    struct svg *s = svg_open(path, BAR_W, height);
    if (!s) return -1;

    svg_text(s, 12, 24, 16, SVG_START, "#222", true, "%s", c->title ? c->title : "");
    if (c->subtitle) svg_text(s, 12, 42, 11, SVG_START, "#666", false, "%s", c->subtitle);
    svg_rect(s, 12, 52, 12, 12, BAR_VALUE_FILL, NULL);
    svg_text(s, 30, 62, 11, SVG_START, "#222", false, "%s", c->value_unit);
    svg_rect(s, 170, 52, 12, 12, BAR_SHARE_FILL, NULL);
    svg_text(s, 188, 62, 11, SVG_START, "#222", false, "%s: the same share of the bar as of the step time",
             c->share_name);

    double y = BAR_TOP, top = y;
    for (double v = 0; v <= axis_max * (1 + 1e-9); v += step) {
        double x = x0 + span * v / axis_max;
        svg_line(s, x, top - 4, x, height - 40, "#e4e4e4", 1, false);
    }
    for (int i = 0; i < c->n; i++) {
        const struct svg_bar *b = &c->bars[i];
        const char *prev = i ? c->bars[i - 1].group : NULL;
        if (b->group && (!prev || strcmp(b->group, prev))) {
            svg_text(s, 12, y + 17, 12, SVG_START, "#222", true, "%s", b->group);
            y += BAR_HEAD;
        }
        double v = isfinite(b->value) && b->value > 0 ? b->value : 0;
        double share = isfinite(b->share) ? fmin(1, fmax(0, b->share)) : 0;
        double len = span * v / axis_max, cut = len * (1 - share);
        char tip[256];
        snprintf(tip, sizeof tip, "%s: %.1f %s, %.1f%% %s", b->label, v, c->value_unit, 100 * share,
                 c->share_name);
        svg_text(s, x0 - 8, y + 14, 11, SVG_END, "#222", false, "%s", b->label);
        svg_rect(s, x0, y + 3, cut, BAR_ROW - 6, BAR_VALUE_FILL, tip);
        svg_rect(s, x0 + cut, y + 3, len - cut, BAR_ROW - 6, BAR_SHARE_FILL, tip);
        bool spread = isfinite(b->lo) && isfinite(b->hi) && b->hi > b->lo && b->lo >= 0;
        if (spread) { /* the rounds' min-max: a whisker across the bar's end, with end ticks */
            double a = x0 + span * b->lo / axis_max, z = x0 + span * b->hi / axis_max, m = y + BAR_ROW / 2.0;
            svg_line(s, a, m, z, m, "#222", 1.5, false);
            svg_line(s, a, m - 4, a, m + 4, "#222", 1.5, false);
            svg_line(s, z, m - 4, z, m + 4, "#222", 1.5, false);
            if (z - x0 > len) len = z - x0;
        }
        if (spread)
            svg_text(s, x0 + len + 6, y + 14, 10.5, SVG_START, "#333", false, "%.0f (%.0f-%.0f)  (%.0f%% %s)", v,
                     b->lo, b->hi, 100 * share, c->share_name);
        else
            svg_text(s, x0 + len + 6, y + 14, 10.5, SVG_START, "#333", false, "%.0f  (%.0f%% %s)", v, 100 * share,
                     c->share_name);
        y += BAR_ROW;
    }
    svg_line(s, x0, y + 2, x0 + span, y + 2, "#888", 1, false);
    for (double v = 0; v <= axis_max * (1 + 1e-9); v += step)
        svg_text(s, x0 + span * v / axis_max, y + 16, 10, SVG_MIDDLE, "#555", false, "%g", v);
    svg_text(s, x0 + span / 2, y + 32, 11, SVG_MIDDLE, "#333", false, "%s", c->value_unit);
    return svg_close(s);
}
