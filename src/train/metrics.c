/* metrics.c — the metrics CSV (train.metrics): its header, its two kinds of row, and
 * the check that a resumed run appends to a file of the same layout (train.h). */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "error.h"
#include "train.h"

int metrics_open(const char *path, bool append, FILE **out) {
    *out = NULL;
    /* "a+": writes go to the end, reads (the header check) start at the beginning */
    FILE *f = fopen(path, append ? "a+" : "w");
    if (!f)
        return err_set("metrics file %s cannot be written: %s. HINT: create its folder or choose another "
                       "train.metrics path", path, strerror(errno));
    char first[sizeof METRICS_HEADER + 2];
    if (append && fseek(f, 0, SEEK_END) == 0 && ftell(f) > 0) {
        rewind(f);
        bool same = fgets(first, sizeof first, f) && !strcmp(first, METRICS_HEADER "\n");
        if (!same) {
            fclose(f);
            return err_set("metrics file %s: its first line is not the header this version writes (%s), so "
                           "the resumed run's rows can't be appended to it. HINT: give the resumed run "
                           "another train.metrics file, or move this one away", path, METRICS_HEADER);
        }
        /* a run killed mid-write leaves half a row at the end: cut it, so the rows
         * appended now start on a line of their own */
        long end = (fseek(f, 0, SEEK_END), ftell(f)), keep = end;
        while (keep > 0 && fseek(f, keep - 1, SEEK_SET) == 0 && fgetc(f) != '\n') keep--;
        if (keep < end && (fflush(f) || ftruncate(fileno(f), keep))) {
            int e = errno;
            fclose(f);
            return err_set("metrics file %s: cutting its unfinished last row failed: %s", path, strerror(e));
        }
        fseek(f, 0, SEEK_END);
    } else {
        fputs(METRICS_HEADER "\n", f);
    }
    *out = f;
    return 0;
}

void metrics_write(FILE *f, const struct metrics_row *r) {
    if (r->kind == METRICS_STEP) {
        fprintf(f, "step,%ld,%d,%ld,%.9g,%.6f,%.6f,%.1f,%.4f,,\n", r->step, r->epoch, r->batch, r->lr, r->loss,
                r->accuracy, r->images_per_s, r->wait_share);
        return;
    }
    fprintf(f, "epoch,%ld,%d,%ld,,%.6f,%.6f,%.1f,%.4f,", r->step, r->epoch, r->batch, r->loss, r->accuracy,
            r->images_per_s, r->wait_share);
    if (r->tested) fprintf(f, "%.6f,%.6f\n", r->test_loss, r->test_accuracy);
    else fputs(",\n", f);
    /* an epoch's row is on disk at once, for whoever follows the file as it grows */
    fflush(f);
}

int metrics_close(FILE *f, const char *path) {
    if (!f) return 0;
    int failed = ferror(f), e = errno;
    if (fclose(f) != 0 && !failed) failed = 1, e = errno;
    if (failed) return err_set("writing metrics file %s failed: %s. HINT: free disk space", path, strerror(e));
    return 0;
}
