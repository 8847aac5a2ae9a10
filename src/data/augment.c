/* augment.c — random crop with zero padding and horizontal flip, on uint8 HWC.
 *
 * The randomness is a pure function of (seed, epoch, sample index): a worker needs
 * no shared RNG state, and a sample is augmented the same way whichever worker (or
 * how many workers) handles it. */
#include <stdbool.h>
#include <string.h>

#include "data.h"
#include "rng.h"

uint64_t data_sample_key(uint64_t seed, uint64_t epoch, uint64_t index) {
    return rng_hash(rng_hash(rng_hash(seed) ^ epoch) ^ index);
}

struct data_crop data_augment_draw(const struct data_augment *aug, uint64_t key) {
    struct data_crop c = {0, 0, 0};
    if (aug->pad > 0) {
        uint64_t span = 2 * (uint64_t)aug->pad + 1;
        c.dy = (int)((key & 0xffff) % span) - aug->pad;
        c.dx = (int)(((key >> 16) & 0xffff) % span) - aug->pad;
    }
    if (aug->flip) c.flip = (int)((key >> 63) & 1);
    return c;
}

/* out(y, x) = padded(y + dy, flip ? w-1-x + dx : x + dx), zero outside the image. */
void data_augment_apply(uint8_t *dst, const uint8_t *src, int h, int w, int c,
                        struct data_crop crop) {
    size_t row = (size_t)w * (size_t)c;
    for (int y = 0; y < h; y++) {
        uint8_t *out = dst + (size_t)y * row;
        int sy = y + crop.dy;
        if (sy < 0 || sy >= h) {
            memset(out, 0, row);
            continue;
        }
        const uint8_t *in = src + (size_t)sy * row;
        if (!crop.flip) {
            /* the output row is a shifted copy: zeros, a run of source pixels, zeros */
            int x0 = crop.dx < 0 ? -crop.dx : 0;      /* first x with a source pixel */
            int x1 = crop.dx > 0 ? w - crop.dx : w;  /* one past the last */
            if (x0 > w) x0 = w;
            if (x1 < x0) x1 = x0;
            memset(out, 0, (size_t)x0 * c);
            memcpy(out + (size_t)x0 * c, in + (size_t)(x0 + crop.dx) * c, (size_t)(x1 - x0) * c);
            memset(out + (size_t)x1 * c, 0, (size_t)(w - x1) * c);
        } else {
            /* byte by byte: a memcpy call per pixel of one channel cost more than
             * decoding the PNG (bench loader, cache = memory) */
            for (int x = 0; x < w; x++) {
                int sx = w - 1 - x + crop.dx;
                bool inside = sx >= 0 && sx < w;
                for (int k = 0; k < c; k++) out[(size_t)x * c + k] = inside ? in[(size_t)sx * c + k] : 0;
            }
        }
    }
}
