/* dataset.c — the common face of the readers: index checks, then the reader's table. */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "data.h"
#include "error.h"
#include "os.h"

static int check_index(const struct dataset *ds, int64_t i) {
    if (i < 0 || i >= ds->count)
        return err_set("%s: sample %" PRId64 " is out of range (the dataset has %" PRId64
                       " samples)", ds->path, i, ds->count);
    return 0;
}

int data_label(const struct dataset *ds, int64_t i) {
    if (check_index(ds, i)) return -1;
    return ds->reader->label(ds, i);
}

int data_read_sample(const struct dataset *ds, int64_t i, uint8_t *dst_hwc,
                     struct data_times *times) {
    struct data_times unused;
    if (check_index(ds, i)) return -1;
    if (!times) times = &unused;
    times->read_ns = times->decode_ns = 0;
    return ds->reader->read(ds, i, dst_hwc, times);
}

const char *data_sample_name(const struct dataset *ds, int64_t i, char *buf, size_t len) {
    if (i < 0 || i >= ds->count) return data_name_by_index(ds, i, buf, len);
    return ds->reader->sample_name(ds, i, buf, len);
}

int data_read_in_memory(const struct dataset *ds, int64_t i, uint8_t *dst_hwc, struct data_times *t) {
    int64_t t0 = os_now_ns();
    size_t n = data_sample_bytes(ds);
    memcpy(dst_hwc, ds->in_memory + (size_t)i * n, n);
    t->read_ns += os_now_ns() - t0;
    return 0;
}

const char *data_name_by_index(const struct dataset *ds, int64_t i, char *buf, size_t len) {
    snprintf(buf, len, "%s[%" PRId64 "]", ds->path, i);
    return buf;
}

const char *data_class_name(const struct dataset *ds, int c) {
    if (c < 0 || c >= ds->classes || !ds->reader->class_name) return NULL;
    return ds->reader->class_name(ds, c);
}

void data_close(struct dataset *ds) {
    if (ds) ds->reader->close(ds);
}
