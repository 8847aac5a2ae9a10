/* os.h — what nostall needs from the operating system, in one place for every layer
 * (kernels included): the clocks (one monotonic clock that every timing, trace and
 * timeline reads; CPU-time clocks), and folder creation. */
#ifndef NS_OS_H
#define NS_OS_H

#include <stdint.h>
#include <time.h>

/* Clock `id` in nanoseconds (-1 if it can't be read): CLOCK_PROCESS_CPUTIME_ID for the
 * process's CPU time, CLOCK_THREAD_CPUTIME_ID for this thread's, or a thread's clock
 * from pthread_getcpuclockid. */
static inline int64_t os_clock_ns(clockid_t id) {
    struct timespec ts;
    if (clock_gettime(id, &ts) != 0) return -1;
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* Wall time: CLOCK_MONOTONIC in nanoseconds. Inline: the thread pool reads it in its
 * spin loop. */
static inline int64_t os_now_ns(void) { return os_clock_ns(CLOCK_MONOTONIC); }

/* Creates folder `path` and every missing folder above it ("mkdir -p"). 0, or -1 with
 * err_set naming the folder that could not be made (a file in the way, no permission). */
int os_mkdir_p(const char *path);

#endif
