/* error.h — how nostall reports failure.
 * Functions return 0 / a pointer on success, and -1 / NULL on failure after
 * calling err_set() with a message that says what failed, where, and what to do.
 * The message is per thread, so loader workers and the trainer don't clobber it. */
#ifndef NS_ERROR_H
#define NS_ERROR_H

#include <stddef.h>

#if defined(__GNUC__)
#define NS_PRINTF(a, b) __attribute__((format(printf, a, b)))
#else
#define NS_PRINTF(a, b)
#endif

/* Sets this thread's error message; always returns -1 so callers can `return err_set(...)`. */
int err_set(const char *fmt, ...) NS_PRINTF(1, 2);
/* Prepends context ("loading checkpoint run.ckpt: ") to the current message; returns -1. */
int err_wrap(const char *fmt, ...) NS_PRINTF(1, 2);
const char *err_get(void);
void err_clear(void);

/* "[128,16,28,28]" — for messages that name shapes. */
const char *err_shape_str(int ndim, const int *shape, char *buf, size_t len);

#endif
