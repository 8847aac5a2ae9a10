/* tensor.h — float32 tensors (up to 4-D, NCHW, contiguous) and the per-step arena.
 *
 * Two lifetimes:
 *  - parameters, their gradients, optimizer state, BN running stats: allocated once
 *    (tensor_new / param store in nn.h), freed at the end;
 *  - everything a step creates (activations, saved tensors, activation gradients,
 *    kernel workspaces): bump-allocated from the step's arena, dropped by arena_reset.
 */
#ifndef NS_TENSOR_H
#define NS_TENSOR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "backend.h"

#define TENSOR_MAX_DIMS 4

struct tensor {
    int ndim;
    int shape[TENSOR_MAX_DIMS];
    size_t numel;
    float *data;               /* on `dev`: host memory or device memory */
    enum device dev;
    bool requires_grad;        /* parameters, and anything computed from them */
    struct tensor *grad;       /* same shape; NULL until backward first touches it */
    struct ag_node *producer;  /* tape node that wrote this tensor, NULL for leaves */
    unsigned tape_gen;         /* tape generation that produced it (0 for leaves) */
};

/* --- the step arena ----------------------------------------------------------
 * One block, bump pointer. When a step asks for more than the block holds, the
 * extra comes from overflow chunks; at the next reset the block is regrown to
 * the high-water mark, so from the second step on there are no allocations. */
struct backend;

/* One bump-allocated region; `alloc`/`release` come from a backend (device memory)
 * or are malloc/free (the tensor headers, which always live on the host). */
struct arena_pool {
    void *(*alloc)(size_t bytes);
    void (*release)(void *p);
    char *base;
    size_t cap, used, high_water;
    void **overflow;           /* chunks taken this step because the block was full */
    size_t *overflow_size;
    int n_overflow, cap_overflow;
    size_t overflow_bytes;
};

struct arena {
    const struct backend *be;
    struct arena_pool data;    /* tensor data and kernel workspaces, on be's device */
    struct arena_pool host;    /* tensor headers */
    long n_system_allocs;      /* every malloc/cudaMalloc the arena made: tests count them */
};

int arena_init(struct arena *a, const struct backend *be, size_t initial_bytes);
void arena_free(struct arena *a);
/* `bytes` on the arena's device, 64-byte aligned; NULL (with err_set) if the system is out of memory. */
void *arena_alloc(struct arena *a, size_t bytes);
void arena_reset(struct arena *a);

/* A tensor from the arena; data is uninitialised. */
struct tensor *tensor_arena(struct arena *a, int ndim, const int *shape);
/* A tensor from the arena, zero-filled (gradients). */
struct tensor *tensor_arena_zeros(struct arena *a, int ndim, const int *shape);
/* A long-lived tensor on be's device, zero-filled; free with tensor_free. */
struct tensor *tensor_new(const struct backend *be, int ndim, const int *shape);
void tensor_free(const struct backend *be, struct tensor *t);

size_t tensor_numel(int ndim, const int *shape);
bool tensor_same_shape(const struct tensor *a, const struct tensor *b);
/* "[128,16,28,28]" */
const char *tensor_shape_str(const struct tensor *t, char *buf, size_t len);


#endif
