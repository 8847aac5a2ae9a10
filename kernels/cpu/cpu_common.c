/* cpu_common.c — the CPU kernels both tables share (see cpu_common.h): memory, the
 * plain elementwise loops, global average pool, the loss, and pooling. The threads
 * that pooling (and the vectorized table) spread work over are in thread_pool.c. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "cpu_common.h"
#include "error.h"
#include "km_elem.h"
#include "km_math.h"
#include "thread_pool.h"

/* ---- memory ---- */

enum { CPU_ALIGN = 64 };
enum { HUGE_PAGE = 2 << 20, HUGE_MIN = 8 << 20 }; /* bytes */

void *cpu_alloc(size_t bytes) {
    if (bytes > SIZE_MAX - CPU_ALIGN) {
        err_set("cpu_alloc: %zu bytes is more than this machine can address; "
                "check the size computation of the caller", bytes);
        return NULL;
    }
    /* aligned_alloc wants a whole number of alignments; 0 bytes still gets a
     * unique pointer, as malloc would give. */
    size_t align = bytes >= HUGE_MIN ? HUGE_PAGE : CPU_ALIGN;
    size_t rounded = bytes == 0 ? align : (bytes + align - 1) / align * align;
    void *p = aligned_alloc(align, rounded);
    /* The step arena and the parameters: 2 MB pages where the kernel has them to give
     * (transparent_hugepage = madvise). The kernels sweep tensors far larger than
     * the TLB covers with 4 KB pages, and under KVM each TLB miss walks two page
     * tables. Advice only: nothing fails without it. */
    if (p && align == HUGE_PAGE) madvise(p, rounded, MADV_HUGEPAGE);
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
    for (size_t i = 0; i < n; i++) y[i] = km_relu(x[i]);
}

// y (n), dy (n) -> dx (n) +=
void cpu_relu_bwd(size_t n, const float *y, const float *dy, float *dx) {
    for (size_t i = 0; i < n; i++) dx[i] += km_relu_grad(y[i], dy[i]);
}

// a (n), b (n) -> y (n)
void cpu_add_fwd(size_t n, const float *a, const float *b, float *y) {
    for (size_t i = 0; i < n; i++) y[i] = a[i] + b[i];
}

// w, g, v (n): w and v updated in place
void cpu_sgd_step(size_t n, float *w, const float *g, float *v, float lr, float momentum,
                  bool nesterov, float weight_decay) {
    for (size_t i = 0; i < n; i++)
        km_sgd_update(&w[i], g[i], &v[i], lr, momentum, nesterov, weight_decay);
}

// w, g, m, v (n): w, m and v updated in place
void cpu_adamw_step(size_t n, float *w, const float *g, float *m, float *v, float lr, float beta1, float beta2,
                    float eps, float weight_decay, float bc1, float bc2_sqrt) {
    for (size_t i = 0; i < n; i++)
        km_adamw_update(&w[i], g[i], &m[i], &v[i], lr, beta1, beta2, eps, weight_decay, bc1, bc2_sqrt);
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
    for (int i = 0; i < n; i++) total += km_softmax_xent_row(k, logits, labels, probs, i);
    *loss = (float)(total / n);
}

// probs (n,k), labels (n), dloss (scalar) -> dlogits (n,k) +=
void cpu_softmax_xent_bwd(int n, int k, const float *probs, const int32_t *labels,
                          const float *dloss, float *dlogits) {
    float scale = *dloss / (float)n;
    for (int i = 0; i < n; i++)
        for (int j = 0; j < k; j++)
            dlogits[(size_t)i * k + j] += km_softmax_xent_grad_at(k, probs, labels, scale, i, j);
}

// logits (n,k), labels (n) -> *correct (scalar)
void cpu_argmax_correct(int n, int k, const float *logits, const int32_t *labels,
                        float *correct) {
    int hits = 0;
    for (int i = 0; i < n; i++) hits += km_argmax_row(k, logits, i) == labels[i];
    *correct = (float)hits;
}

/* ---- pooling: one (h,w) plane -> one (oh,ow) plane ---- */

// x (h,w) -> y (oh,ow), idx (oh,ow) = flat h*w index of each max
static void maxpool_plane_fwd(const struct pool_geom *g, const float *x, float *y, int32_t *idx) {
    for (int oy = 0; oy < g->oh; oy++)
        for (int ox = 0; ox < g->ow; ox++)
            y[oy * g->ow + ox] = km_maxpool_window(g, x, oy, ox, &idx[oy * g->ow + ox]);
}

// idx (oh,ow), dy (oh,ow) -> dx (h,w) +=; a scatter: the same sums, in the same order, as
// the gather of km_maxpool_bwd_at that the GPU runs, without its search for the windows
static void maxpool_plane_bwd(const struct pool_geom *g, const int32_t *idx, const float *dy,
                           float *dx) {
    for (int o = 0; o < g->oh * g->ow; o++)
        if (idx[o] >= 0) dx[idx[o]] += dy[o];
}

// x (h,w) -> y (oh,ow); padded taps count as zeros in the size*size divisor
static void avgpool_plane_fwd(const struct pool_geom *g, const float *x, float *y) {
    for (int oy = 0; oy < g->oh; oy++)
        for (int ox = 0; ox < g->ow; ox++) y[oy * g->ow + ox] = km_avgpool_window(g, x, oy, ox);
}

// dy (oh,ow) -> dx (h,w) +=; a scatter, as maxpool_plane_bwd (km_avgpool_bwd_at on the GPU)
static void avgpool_plane_bwd(const struct pool_geom *g, const float *dy, float *dx) {
    for (int oy = 0; oy < g->oh; oy++)
        for (int ox = 0; ox < g->ow; ox++) {
            float share = dy[oy * g->ow + ox] / (float)(g->size * g->size);
            for (int ky = 0; ky < g->size; ky++)
                for (int kx = 0; kx < g->size; kx++) {
                    int iy = km_conv_in_pos(oy, ky, g->stride, g->pad);
                    int ix = km_conv_in_pos(ox, kx, g->stride, g->pad);
                    if (km_in_range(iy, g->h) && km_in_range(ix, g->w)) dx[iy * g->w + ix] += share;
                }
        }
}

/* ---- pooling: every (n,c) plane, spread over the threads if `threaded` ---- */

enum { POOL_PLANES = 16 }; /* planes per task */

struct pool_job {
    const struct pool_geom *g;
    const float *x, *dy;
    const int32_t *idx_in;
    float *y, *dx;
    int32_t *idx;
    int kind; /* 0 max fwd, 1 max bwd, 2 avg fwd, 3 avg bwd */
};

static void pool_planes(void *ctx, int task, int thread) {
    (void)thread;
    const struct pool_job *j = ctx;
    const struct pool_geom *g = j->g;
    size_t in_plane = (size_t)g->h * g->w, out_plane = (size_t)g->oh * g->ow;
    long end = (long)g->n * g->c, p = (long)task * POOL_PLANES;
    for (long stop = p + POOL_PLANES < end ? p + POOL_PLANES : end; p < stop; p++) {
        size_t in = (size_t)p * in_plane, out = (size_t)p * out_plane;
        if (j->kind == 0) maxpool_plane_fwd(g, j->x + in, j->y + out, j->idx + out);
        else if (j->kind == 1) maxpool_plane_bwd(g, j->idx_in + out, j->dy + out, j->dx + in);
        else if (j->kind == 2) avgpool_plane_fwd(g, j->x + in, j->y + out);
        else avgpool_plane_bwd(g, j->dy + out, j->dx + in);
    }
}

static void pool_run(struct pool_job *j, bool threaded) {
    long planes = (long)j->g->n * j->g->c;
    int tasks = (int)((planes + POOL_PLANES - 1) / POOL_PLANES);
    cpu_parallel(tasks, threaded ? cpu_threads() : 1, pool_planes, j);
}

// x (n,c,h,w) -> y (n,c,oh,ow), idx (n,c,oh,ow)
void cpu_maxpool_fwd(const struct pool_geom *g, const float *x, float *y, int32_t *idx,
                     bool threaded) {
    pool_run(&(struct pool_job){.g = g, .x = x, .y = y, .idx = idx, .kind = 0}, threaded);
}

// idx (n,c,oh,ow), dy (n,c,oh,ow) -> dx (n,c,h,w) +=
void cpu_maxpool_bwd(const struct pool_geom *g, const int32_t *idx, const float *dy, float *dx,
                     bool threaded) {
    pool_run(&(struct pool_job){.g = g, .idx_in = idx, .dy = dy, .dx = dx, .kind = 1}, threaded);
}

// x (n,c,h,w) -> y (n,c,oh,ow)
void cpu_avgpool_fwd(const struct pool_geom *g, const float *x, float *y, bool threaded) {
    pool_run(&(struct pool_job){.g = g, .x = x, .y = y, .kind = 2}, threaded);
}

// dy (n,c,oh,ow) -> dx (n,c,h,w) +=
void cpu_avgpool_bwd(const struct pool_geom *g, const float *dy, float *dx, bool threaded) {
    pool_run(&(struct pool_job){.g = g, .dy = dy, .dx = dx, .kind = 3}, threaded);
}
