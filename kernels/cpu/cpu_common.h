/* cpu_common.h — the CPU kernels that the loop and vectorized tables share because
 * the two would be the same code: memory, elementwise ops the compiler already
 * vectorizes, the loss, and pooling (where the tables differ only in whether the
 * planes are spread over threads). Shapes as in backend.h. The threads themselves
 * (cpu_parallel) are thread_pool.h's; the tables are loop.c and vectorized.c. */
#ifndef NS_CPU_COMMON_H
#define NS_CPU_COMMON_H

#include "backend.h"

/* ---- memory: host memory, 64-byte aligned for the vector units ---- */
void *cpu_alloc(size_t bytes);
void cpu_free(void *p);
void cpu_zero(void *p, size_t bytes);
void cpu_copy(void *dst, const void *src, size_t bytes, enum copy_kind kind);
void cpu_sync(void);

/* ---- elementwise, n floats ---- */
void cpu_axpy(size_t n, float alpha, const float *x, float *y);
void cpu_relu_fwd(size_t n, const float *x, float *y);
void cpu_relu_bwd(size_t n, const float *y, const float *dy, float *dx);
void cpu_add_fwd(size_t n, const float *a, const float *b, float *y);
void cpu_adamw_step(size_t n, float *w, const float *g, float *m, float *v, float lr, float beta1, float beta2,
                    float eps, float weight_decay, float bc1, float bc2_sqrt);
void cpu_sgd_step(size_t n, float *w, const float *g, float *v, float lr, float momentum,
                  bool nesterov, float weight_decay);

/* ---- global average pool: x (n,c,hw) <-> y (n,c) ---- */
void cpu_gap_fwd(int n, int c, int hw, const float *x, float *y);
void cpu_gap_bwd(int n, int c, int hw, const float *dy, float *dx);

/* ---- loss: logits (n,k), labels (n) ---- */
void cpu_softmax_xent_fwd(int n, int k, const float *logits, const int32_t *labels,
                          float *probs, float *loss);
void cpu_softmax_xent_bwd(int n, int k, const float *probs, const int32_t *labels,
                          const float *dloss, float *dlogits);
void cpu_argmax_correct(int n, int k, const float *logits, const int32_t *labels,
                        float *correct);

/* ---- pooling over (n,c) planes; `threaded` spreads the planes over cpu_parallel's threads ---- */
void cpu_maxpool_fwd(const struct pool_geom *g, const float *x, float *y, int32_t *idx,
                     bool threaded);
void cpu_maxpool_bwd(const struct pool_geom *g, const int32_t *idx, const float *dy, float *dx,
                     bool threaded);
void cpu_avgpool_fwd(const struct pool_geom *g, const float *x, float *y, bool threaded);
void cpu_avgpool_bwd(const struct pool_geom *g, const float *dy, float *dx, bool threaded);

/* The entries above, in backend-table order, for a table's initializer. */
#define CPU_COMMON_MEMORY_ENTRIES \
    .alloc = cpu_alloc, .free = cpu_free, .copy = cpu_copy, .sync = cpu_sync

#define CPU_COMMON_SHARED_ENTRIES                                                        \
    .gap_fwd = cpu_gap_fwd, .gap_bwd = cpu_gap_bwd,                                      \
    .softmax_xent_fwd = cpu_softmax_xent_fwd, .softmax_xent_bwd = cpu_softmax_xent_bwd, \
    .argmax_correct = cpu_argmax_correct, .sgd_step = cpu_sgd_step, .adamw_step = cpu_adamw_step

/* The plain loops of the elementwise entries (the vectorized table has its own). */
#define CPU_COMMON_ELEMENTWISE_ENTRIES                                                   \
    .axpy = cpu_axpy, .relu_fwd = cpu_relu_fwd, .relu_bwd = cpu_relu_bwd,                \
    .add_fwd = cpu_add_fwd

#endif
