/* testutil.h — small helpers shared by the Criterion suites. */
#ifndef NS_TESTUTIL_H
#define NS_TESTUTIL_H

#include <math.h>
#include <stddef.h>
#include <stdint.h>

/* Deterministic xorshift RNG so every test run sees the same numbers. */
static inline uint32_t tu_rand_u32(uint64_t *s) {
    *s ^= *s << 13; *s ^= *s >> 7; *s ^= *s << 17;
    return (uint32_t)(*s >> 32);
}
/* uniform in [lo, hi) */
static inline float tu_uniform(uint64_t *s, float lo, float hi) {
    return lo + (hi - lo) * (float)(tu_rand_u32(s) >> 8) / (float)(1u << 24);
}
static inline void tu_fill(uint64_t *s, float *x, size_t n, float lo, float hi) {
    for (size_t i = 0; i < n; i++) x[i] = tu_uniform(s, lo, hi);
}
/* max over i of |a-b| / max(1, |a|, |b|): relative error with an absolute floor of 1;
 * infinity as soon as either side is NaN or infinite (an unwritten or blown-up element) */
static inline double tu_max_rel_err(const float *a, const float *b, size_t n) {
    double worst = 0;
    for (size_t i = 0; i < n; i++) {
        if (!isfinite(a[i]) || !isfinite(b[i])) return INFINITY;
        double d = fabs((double)a[i] - (double)b[i]);
        double m = fmax(1.0, fmax(fabs((double)a[i]), fabs((double)b[i])));
        if (d / m > worst) worst = d / m;
    }
    return worst;
}
/* max |a-b| / max |ref|: the error relative to the tensor's own scale, so a gradient
 * whose elements are all far below 1 is held to the same relative standard as one
 * near 1 (an absolute floor would let a several-percent error in it pass). Plain
 * max |a-b| when ref is all zeros; infinity as soon as either side is NaN or
 * infinite. */
static inline double tu_tensor_rel_err(const float *ref, const float *got, size_t n) {
    double diff = 0, scale = 0;
    for (size_t i = 0; i < n; i++) {
        if (!isfinite(ref[i]) || !isfinite(got[i])) return INFINITY;
        diff = fmax(diff, fabs((double)ref[i] - (double)got[i]));
        scale = fmax(scale, fabs((double)ref[i]));
    }
    return scale > 0 ? diff / scale : diff;
}

#endif
