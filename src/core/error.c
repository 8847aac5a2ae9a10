/* error.c — per-thread error messages (see error.h). */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "error.h"

static _Thread_local char err_buf[1024];

int err_set(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err_buf, sizeof err_buf, fmt, ap);
    va_end(ap);
    return -1;
}

int err_wrap(const char *fmt, ...) {
    char prefix[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof prefix, fmt, ap);
    va_end(ap);
    /* shift the old message right and put the prefix in front, truncating the tail */
    size_t pl = strlen(prefix), ol = strlen(err_buf);
    if (pl + ol >= sizeof err_buf) ol = sizeof err_buf - 1 - pl;
    memmove(err_buf + pl, err_buf, ol);
    memcpy(err_buf, prefix, pl);
    err_buf[pl + ol] = 0;
    return -1;
}

const char *err_get(void) { return err_buf[0] ? err_buf : "unknown error"; }

void err_clear(void) { err_buf[0] = 0; }

const char *err_shape_str(int ndim, const int *shape, char *buf, size_t len) {
    size_t at = 0;
    at += (size_t)snprintf(buf, len, "[");
    for (int i = 0; i < ndim && at < len; i++)
        at += (size_t)snprintf(buf + at, len - at, i ? ",%d" : "%d", shape[i]);
    if (at < len) snprintf(buf + at, len - at, "]");
    return buf;
}
