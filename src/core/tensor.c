/* tensor.c — tensors and the per-step arena.
 *
 * The arena is a bump allocator: arena_alloc moves a pointer, arena_reset moves it
 * back. A step that needs more than the block holds takes extra chunks for this
 * step only; the reset then frees them and regrows the block to the high-water
 * mark, so the first step sizes the arena and every later step allocates nothing. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "error.h"
#include "tensor.h"

#define ARENA_ALIGN 64

static size_t align_up(size_t n) { return (n + ARENA_ALIGN - 1) & ~(size_t)(ARENA_ALIGN - 1); }

static void *host_alloc(size_t bytes) {
    void *p = NULL;
    if (posix_memalign(&p, ARENA_ALIGN, bytes ? bytes : ARENA_ALIGN) != 0) {
        err_set("out of host memory: asked for %zu bytes", bytes);
        return NULL;
    }
    return p;
}

static void pool_init(struct arena_pool *p, void *(*alloc)(size_t), void (*release)(void *)) {
    memset(p, 0, sizeof *p);
    p->alloc = alloc;
    p->release = release;
}

static void pool_free_overflow(struct arena_pool *p) {
    for (int i = 0; i < p->n_overflow; i++) p->release(p->overflow[i]);
    p->n_overflow = 0;
    p->overflow_bytes = 0;
}

static void *pool_alloc(struct arena_pool *p, size_t bytes, long *n_sys) {
    bytes = align_up(bytes ? bytes : 1);
    if (p->used + bytes <= p->cap) {
        void *r = p->base + p->used;
        p->used += bytes;
        if (p->used + p->overflow_bytes > p->high_water) p->high_water = p->used + p->overflow_bytes;
        return r;
    }
    /* Block full: take a chunk for this step; the next reset folds it into the block. */
    if (p->n_overflow == p->cap_overflow) {
        int cap = p->cap_overflow ? 2 * p->cap_overflow : 16;
        void **o = realloc(p->overflow, (size_t)cap * sizeof *o);
        if (!o) { err_set("out of host memory growing the arena's chunk list"); return NULL; }
        p->overflow = o;
        p->cap_overflow = cap;
        (*n_sys)++;
    }
    void *chunk = p->alloc(bytes);
    if (!chunk) return NULL;
    (*n_sys)++;
    p->overflow[p->n_overflow++] = chunk;
    p->overflow_bytes += bytes;
    if (p->used + p->overflow_bytes > p->high_water) p->high_water = p->used + p->overflow_bytes;
    return chunk;
}

static int pool_reset(struct arena_pool *p, long *n_sys) {
    if (p->n_overflow) {
        pool_free_overflow(p);
        size_t want = p->high_water + p->high_water / 8;  /* a little slack for shape jitter */
        if (p->base) p->release(p->base);
        p->base = p->alloc(want);
        p->cap = p->base ? want : 0;
        (*n_sys)++;
        if (!p->base) return -1;
    }
    p->used = 0;
    return 0;
}

static void pool_destroy(struct arena_pool *p) {
    pool_free_overflow(p);
    free(p->overflow);
    if (p->base) p->release(p->base);
    memset(p, 0, sizeof *p);
}

int arena_init(struct arena *a, const struct backend *be, size_t initial_bytes) {
    memset(a, 0, sizeof *a);
    a->be = be;
    pool_init(&a->data, be->alloc, be->free);
    pool_init(&a->host, host_alloc, free);
    if (initial_bytes) {
        a->data.base = be->alloc(initial_bytes);
        if (!a->data.base) return err_wrap("creating the step arena: ");
        a->data.cap = initial_bytes;
        a->n_system_allocs++;
    }
    return 0;
}

void arena_free(struct arena *a) {
    pool_destroy(&a->data);
    pool_destroy(&a->host);
}

void *arena_alloc(struct arena *a, size_t bytes) { return pool_alloc(&a->data, bytes, &a->n_system_allocs); }

void arena_reset(struct arena *a) {
    /* A failed regrow leaves an empty block; the next step then runs on chunks and
     * retries, so a transient failure costs speed, not correctness. */
    pool_reset(&a->data, &a->n_system_allocs);
    pool_reset(&a->host, &a->n_system_allocs);
}

size_t tensor_numel(int ndim, const int *shape) {
    size_t n = 1;
    for (int i = 0; i < ndim; i++) n *= (size_t)shape[i];
    return n;
}

static int check_shape(int ndim, const int *shape) {
    char buf[64];
    if (ndim < 1 || ndim > TENSOR_MAX_DIMS)
        return err_set("tensor: %d dimensions asked for, nostall supports 1 to %d", ndim, TENSOR_MAX_DIMS);
    for (int i = 0; i < ndim; i++)
        if (shape[i] <= 0)
            return err_set("tensor: shape %s has a dimension <= 0 (dim %d); every dimension must be >= 1",
                           err_shape_str(ndim, shape, buf, sizeof buf), i);
    return 0;
}

static void header_init(struct tensor *t, int ndim, const int *shape, enum device dev) {
    memset(t, 0, sizeof *t);
    t->ndim = ndim;
    memcpy(t->shape, shape, (size_t)ndim * sizeof *shape);
    t->numel = tensor_numel(ndim, shape);
    t->dev = dev;
}

struct tensor *tensor_arena(struct arena *a, int ndim, const int *shape) {
    if (check_shape(ndim, shape)) return NULL;
    struct tensor *t = pool_alloc(&a->host, sizeof *t, &a->n_system_allocs);
    if (!t) return NULL;
    header_init(t, ndim, shape, a->be->dev);
    t->data = arena_alloc(a, t->numel * sizeof(float));
    return t->data ? t : NULL;
}

struct tensor *tensor_arena_zeros(struct arena *a, int ndim, const int *shape) {
    struct tensor *t = tensor_arena(a, ndim, shape);
    if (t) a->be->zero(t->data, t->numel * sizeof(float));
    return t;
}

struct tensor *tensor_new(const struct backend *be, int ndim, const int *shape) {
    if (check_shape(ndim, shape)) return NULL;
    struct tensor *t = malloc(sizeof *t);
    if (!t) { err_set("out of host memory for a tensor header"); return NULL; }
    header_init(t, ndim, shape, be->dev);
    t->data = be->alloc(t->numel * sizeof(float));
    if (!t->data) { free(t); return NULL; }
    be->zero(t->data, t->numel * sizeof(float));
    return t;
}

void tensor_free(const struct backend *be, struct tensor *t) {
    if (!t) return;
    be->free(t->data);
    free(t);
}

bool tensor_same_shape(const struct tensor *a, const struct tensor *b) {
    if (a->ndim != b->ndim) return false;
    for (int i = 0; i < a->ndim; i++)
        if (a->shape[i] != b->shape[i]) return false;
    return true;
}

const char *tensor_shape_str(const struct tensor *t, char *buf, size_t len) {
    return err_shape_str(t->ndim, t->shape, buf, len);
}
