/* os.h — what nostall needs from the operating system, in one place for every layer
 * (kernels included): the clocks (one monotonic clock that every timing, trace and
 * timeline reads; CPU-time clocks), folder creation, and files written so that a crash
 * never leaves half of one. */
#ifndef NS_OS_H
#define NS_OS_H

#include <stddef.h>
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

/* Durable files; `what` names the file in messages ("checkpoint", "ONNX model").
 * os_replace_file writes PATH.tmp, fsyncs it, renames it over PATH and fsyncs the
 * directory, so at every instant PATH is either the old file or the new one, complete.
 * On failure PATH is untouched, PATH.tmp is removed, and the message names the path,
 * the failing call, errno's text and, for a full disk or a permission problem, a HINT;
 * except when only the last step, the directory's fsync, fails: PATH is then the new
 * file, and the message says it may not survive a power loss. */
int os_replace_file(const char *path, const void *buf, size_t len, const char *what);
/* Before a long run: PATH's directory exists and is writable, PATH is not a directory,
 * and probe_bytes of disk can be reserved (a probe PATH.tmp is allocated and removed;
 * 0 skips that). 0, or -1 with err_set. */
int os_check_writable(const char *path, size_t probe_bytes, const char *what);
/* The whole of a regular file into malloc'd memory (*len may be short if the file
 * shrank meanwhile). 0, or -1 with a message that doesn't repeat the path. */
int os_read_file(const char *path, unsigned char **out, size_t *len);

#endif
