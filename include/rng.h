/* rng.h — a small seeded RNG (splitmix64) for initialisation and tests.
 * Counter-based use: rng_hash(seed ^ index) gives independent streams per index. */
#ifndef NS_RNG_H
#define NS_RNG_H

#include <math.h>
#include <stddef.h>
#include <stdint.h>

struct rng { uint64_t state; };

static inline uint64_t rng_hash(uint64_t x) {
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}
/* FNV-1a over n bytes, continuing from h (start with RNG_FNV_START): the fingerprint of
 * a text or a buffer (a config, a file listing, the parameters the ranks compare). */
#define RNG_FNV_START 0xcbf29ce484222325ull
static inline uint64_t rng_fnv1a(uint64_t h, const void *p, size_t n) {
    for (size_t i = 0; i < n; i++) h = (h ^ ((const unsigned char *)p)[i]) * 0x100000001b3ull;
    return h;
}
static inline uint64_t rng_next(struct rng *r) { return rng_hash(r->state++); }
/* uniform in [0, 1) with 24 bits, exactly representable as float */
static inline float rng_uniform(struct rng *r) { return (float)(rng_next(r) >> 40) / 16777216.0f; }
/* standard normal, Box-Muller */
static inline float rng_normal(struct rng *r) {
    double u1 = ((double)(rng_next(r) >> 11) + 1.0) / 9007199254740993.0;  /* (0,1] */
    double u2 = (double)(rng_next(r) >> 11) / 9007199254740992.0;
    return (float)(sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2));
}

#endif
