/* cpu_common.c — the CPU kernels both tables share (see cpu_common.h). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cpu_common.h"
#include "error.h"
#include "math.h"

/* ---- memory ---- */

enum { CPU_ALIGN = 64 };

void *cpu_alloc(size_t bytes) {
    if (bytes > SIZE_MAX - CPU_ALIGN) {
        err_set("cpu_alloc: %zu bytes is more than this machine can address; "
                "check the size computation of the caller", bytes);
        return NULL;
    }
    /* aligned_alloc wants a whole number of alignments; 0 bytes still gets a
     * unique pointer, as malloc would give. */
    size_t rounded = bytes == 0 ? CPU_ALIGN : (bytes + CPU_ALIGN - 1) / CPU_ALIGN * CPU_ALIGN;
    void *p = aligned_alloc(CPU_ALIGN, rounded);
    if (!p)
        err_set("cpu_alloc: out of host memory allocating %zu bytes; "
                "try a smaller batch or model", bytes);
    return p;
}

void cpu_free(void *p) { free(p); }

void cpu_zero(void *p, size_t bytes) { memset(p, 0, bytes); }

void cpu_copy(void *dst, const void *src, size_t bytes, enum copy_kind kind) {
    (void)kind; /* host to host whichever way it is called */
    memcpy(dst, src, bytes);
}

void cpu_sync(void) {}

/* ---- elementwise ---- */

// x (n), y (n): y += alpha*x
void cpu_axpy(size_t n, float alpha, const float *x, float *y) {
    for (size_t i = 0; i < n; i++) y[i] += alpha * x[i];
}

// x (n) -> y (n)
void cpu_relu_fwd(size_t n, const float *x, float *y) {
    for (size_t i = 0; i < n; i++) y[i] = ns_relu(x[i]);
}

// y (n), dy (n) -> dx (n) +=
void cpu_relu_bwd(size_t n, const float *y, const float *dy, float *dx) {
    for (size_t i = 0; i < n; i++) dx[i] += ns_relu_grad(y[i], dy[i]);
}

// a (n), b (n) -> y (n)
void cpu_add_fwd(size_t n, const float *a, const float *b, float *y) {
    for (size_t i = 0; i < n; i++) y[i] = a[i] + b[i];
}

// w, g, v (n): w and v updated in place
void cpu_sgd_step(size_t n, float *w, const float *g, float *v, float lr, float momentum,
                  bool nesterov, float weight_decay) {
    for (size_t i = 0; i < n; i++)
        ns_sgd_update(&w[i], g[i], &v[i], lr, momentum, nesterov, weight_decay);
}

/* ---- global average pool ---- */

// x (n,c,hw) -> y (n,c)
void cpu_gap_fwd(int n, int c, int hw, const float *x, float *y) {
    for (size_t p = 0; p < (size_t)n * c; p++) {
        float sum = 0.0f;
        for (int j = 0; j < hw; j++) sum += x[p * hw + j];
        y[p] = sum / (float)hw;
    }
}

// dy (n,c) -> dx (n,c,hw) +=
void cpu_gap_bwd(int n, int c, int hw, const float *dy, float *dx) {
    for (size_t p = 0; p < (size_t)n * c; p++) {
        float share = dy[p] / (float)hw;
        for (int j = 0; j < hw; j++) dx[p * hw + j] += share;
    }
}

/* ---- loss ---- */

// logits (n,k), labels (n) -> probs (n,k), *loss (scalar)
void cpu_softmax_xent_fwd(int n, int k, const float *logits, const int32_t *labels,
                          float *probs, float *loss) {
    double total = 0.0;
    for (int i = 0; i < n; i++) {
        const float *row = logits + (size_t)i * k;
        float *p = probs + (size_t)i * k;
        /* Subtracting the row max keeps exp() from overflowing. */
        float max = row[0];
        for (int j = 1; j < k; j++) max = fmaxf(max, row[j]);
        double sum = 0.0;
        for (int j = 0; j < k; j++) {
            p[j] = expf(row[j] - max);
            sum += p[j];
        }
        for (int j = 0; j < k; j++) p[j] = (float)(p[j] / sum);
        /* -log p[label], computed from the logits so a tiny p can't underflow to log(0) */
        total += log(sum) + max - row[labels[i]];
    }
    *loss = (float)(total / n);
}

// probs (n,k), labels (n), dloss (scalar) -> dlogits (n,k) +=
void cpu_softmax_xent_bwd(int n, int k, const float *probs, const int32_t *labels,
                          const float *dloss, float *dlogits) {
    float scale = *dloss / (float)n;
    for (int i = 0; i < n; i++)
        for (int j = 0; j < k; j++) {
            size_t at = (size_t)i * k + j;
            float onehot = j == labels[i] ? 1.0f : 0.0f;
            dlogits[at] += scale * (probs[at] - onehot);
        }
}

// logits (n,k), labels (n) -> *correct (scalar)
void cpu_argmax_correct(int n, int k, const float *logits, const int32_t *labels,
                        float *correct) {
    int hits = 0;
    for (int i = 0; i < n; i++) {
        const float *row = logits + (size_t)i * k;
        int best = 0;
        for (int j = 1; j < k; j++)
            if (row[j] > row[best]) best = j;
        hits += best == labels[i];
    }
    *correct = (float)hits;
}

/* ---- pooling: one (h,w) plane -> one (oh,ow) plane ---- */

// x (h,w) -> y (oh,ow), idx (oh,ow) = flat h*w index of each max
static void maxpool_plane_fwd(const struct pool_geom *g, const float *x, float *y, int32_t *idx) {
    for (int oy = 0; oy < g->oh; oy++)
        for (int ox = 0; ox < g->ow; ox++) {
            float best = 0.0f;
            int32_t at = -1; /* stays -1 only for a window wholly in the padding */
            for (int ky = 0; ky < g->size; ky++)
                for (int kx = 0; kx < g->size; kx++) {
                    int iy = ns_conv_in_pos(oy, ky, g->stride, g->pad);
                    int ix = ns_conv_in_pos(ox, kx, g->stride, g->pad);
                    if (!ns_in_range(iy, g->h) || !ns_in_range(ix, g->w)) continue;
                    int32_t here = iy * g->w + ix;
                    if (at < 0 || x[here] > best) {
                        best = x[here];
                        at = here;
                    }
                }
            y[oy * g->ow + ox] = best;
            idx[oy * g->ow + ox] = at;
        }
}

// idx (oh,ow), dy (oh,ow) -> dx (h,w) +=
static void maxpool_plane_bwd(const struct pool_geom *g, const int32_t *idx, const float *dy,
                           float *dx) {
    for (int o = 0; o < g->oh * g->ow; o++)
        if (idx[o] >= 0) dx[idx[o]] += dy[o];
}

// x (h,w) -> y (oh,ow); padded taps count as zeros in the size*size divisor
static void avgpool_plane_fwd(const struct pool_geom *g, const float *x, float *y) {
    for (int oy = 0; oy < g->oh; oy++)
        for (int ox = 0; ox < g->ow; ox++) {
            float sum = 0.0f;
            for (int ky = 0; ky < g->size; ky++)
                for (int kx = 0; kx < g->size; kx++) {
                    int iy = ns_conv_in_pos(oy, ky, g->stride, g->pad);
                    int ix = ns_conv_in_pos(ox, kx, g->stride, g->pad);
                    if (ns_in_range(iy, g->h) && ns_in_range(ix, g->w)) sum += x[iy * g->w + ix];
                }
            y[oy * g->ow + ox] = sum / (float)(g->size * g->size);
        }
}

// dy (oh,ow) -> dx (h,w) +=
static void avgpool_plane_bwd(const struct pool_geom *g, const float *dy, float *dx) {
    for (int oy = 0; oy < g->oh; oy++)
        for (int ox = 0; ox < g->ow; ox++) {
            float share = dy[oy * g->ow + ox] / (float)(g->size * g->size);
            for (int ky = 0; ky < g->size; ky++)
                for (int kx = 0; kx < g->size; kx++) {
                    int iy = ns_conv_in_pos(oy, ky, g->stride, g->pad);
                    int ix = ns_conv_in_pos(ox, kx, g->stride, g->pad);
                    if (ns_in_range(iy, g->h) && ns_in_range(ix, g->w)) dx[iy * g->w + ix] += share;
                }
        }
}

/* ---- pooling: every (n,c) plane, spread over OpenMP threads if `threaded` ---- */

// x (n,c,h,w) -> y (n,c,oh,ow), idx (n,c,oh,ow)
void cpu_maxpool_fwd(const struct pool_geom *g, const float *x, float *y, int32_t *idx,
                     bool threaded) {
    long planes = (long)g->n * g->c;
    size_t in_plane = (size_t)g->h * g->w, out_plane = (size_t)g->oh * g->ow;
#pragma omp parallel for if (threaded) schedule(static)
    for (long p = 0; p < planes; p++)
        maxpool_plane_fwd(g, x + p * in_plane, y + p * out_plane, idx + p * out_plane);
}

// idx (n,c,oh,ow), dy (n,c,oh,ow) -> dx (n,c,h,w) +=
void cpu_maxpool_bwd(const struct pool_geom *g, const int32_t *idx, const float *dy, float *dx,
                     bool threaded) {
    long planes = (long)g->n * g->c;
    size_t in_plane = (size_t)g->h * g->w, out_plane = (size_t)g->oh * g->ow;
#pragma omp parallel for if (threaded) schedule(static)
    for (long p = 0; p < planes; p++)
        maxpool_plane_bwd(g, idx + p * out_plane, dy + p * out_plane, dx + p * in_plane);
}

// x (n,c,h,w) -> y (n,c,oh,ow)
void cpu_avgpool_fwd(const struct pool_geom *g, const float *x, float *y, bool threaded) {
    long planes = (long)g->n * g->c;
    size_t in_plane = (size_t)g->h * g->w, out_plane = (size_t)g->oh * g->ow;
#pragma omp parallel for if (threaded) schedule(static)
    for (long p = 0; p < planes; p++) avgpool_plane_fwd(g, x + p * in_plane, y + p * out_plane);
}

// dy (n,c,oh,ow) -> dx (n,c,h,w) +=
void cpu_avgpool_bwd(const struct pool_geom *g, const float *dy, float *dx, bool threaded) {
    long planes = (long)g->n * g->c;
    size_t in_plane = (size_t)g->h * g->w, out_plane = (size_t)g->oh * g->ow;
#pragma omp parallel for if (threaded) schedule(static)
    for (long p = 0; p < planes; p++) avgpool_plane_bwd(g, dy + p * out_plane, dx + p * in_plane);
}
