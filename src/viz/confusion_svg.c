/* confusion_svg.c — a confusion matrix as a picture: one cell per (label, prediction),
 * shaded by the share of the label's images it holds, with the count written in. */
#include <stdint.h>
#include <stdio.h>

#include "error.h"
#include "viz.h"

/* White (0) to dark blue (1); text turns white on the dark half. */
static void shade(double share, char *fill, size_t len) {
    int r = (int)(255 - share * (255 - 8)), g = (int)(255 - share * (255 - 48)), b = (int)(255 - share * (255 - 107));
    snprintf(fill, len, "#%02x%02x%02x", r, g, b);
}

int confusion_write_svg(const char *path, int classes, const int64_t *counts, const char *const *names,
                        const char *title, const char *subtitle) {
    if (classes < 1 || classes > 100)
        return err_set("confusion matrix %s: %d classes; a picture is drawn for 1 to 100", path, classes);
    double cell = classes <= 12 ? 44 : classes <= 30 ? 22 : 10, left = 150, top = 110;
    double side = cell * classes;
    struct svg *s = svg_open(path, left + side + 40, top + side + 60);
    if (!s) return -1;
    svg_text(s, 20, 28, 16, SVG_START, "#222", true, "%s", title ? title : "confusion matrix");
    if (subtitle) svg_text(s, 20, 48, 11, SVG_START, "#555", false, "%s", subtitle);
    svg_text(s, left + side / 2, top - 36, 12, SVG_MIDDLE, "#222", true, "predicted class");
    svg_text(s, 20, top - 12, 12, SVG_START, "#222", true, "true class");
    for (int t = 0; t < classes; t++) {
        int64_t row = 0;
        for (int p = 0; p < classes; p++) row += counts[(size_t)t * classes + p];
        double y = top + t * cell;
        if (cell >= 20) {
            svg_text(s, left - 6, y + cell / 2 + 4, 11, SVG_END, "#222", false, "%.22s", names[t]);
            svg_text(s, left + t * cell + cell / 2, top - 8, 9, SVG_MIDDLE, "#222", false, "%.6s", names[t]);
        }
        for (int p = 0; p < classes; p++) {
            int64_t n = counts[(size_t)t * classes + p];
            double share = row ? (double)n / (double)row : 0;
            char fill[16], tip[160];
            shade(share, fill, sizeof fill);
            snprintf(tip, sizeof tip, "true %s, predicted %s: %lld of %lld (%.1f%%)", names[t], names[p],
                     (long long)n, (long long)row, 100 * share);
            svg_rect(s, left + p * cell, y, cell - 1, cell - 1, fill, tip);
            if (cell >= 20 && n)
                svg_text(s, left + p * cell + cell / 2, y + cell / 2 + 4, cell >= 40 ? 11 : 8, SVG_MIDDLE,
                         share > 0.5 ? "#fff" : "#222", p == t, "%lld", (long long)n);
        }
    }
    svg_text(s, left, top + side + 24, 10, SVG_START, "#555", false,
             "each row is one true class; a cell's shade is its share of that row's images");
    return svg_close(s);
}
