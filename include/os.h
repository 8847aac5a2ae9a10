/* os.h — what nostall needs from the operating system, in one place for every layer
 * (kernels included): the one monotonic clock that every timing, trace and timeline
 * reads, and folder creation. */
#ifndef NS_OS_H
#define NS_OS_H

#include <stdint.h>
#include <time.h>

/* CLOCK_MONOTONIC in nanoseconds. Inline: the thread pool reads it in its spin loop. */
static inline int64_t os_now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* Creates folder `path` and every missing folder above it ("mkdir -p"). 0, or -1 with
 * err_set naming the folder that could not be made (a file in the way, no permission). */
int os_mkdir_p(const char *path);

#endif
