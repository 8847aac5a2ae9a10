/* vec.h — what the files of the vectorized CPU table share (kernels/cpu/ only):
 * when a kernel goes on more than one thread, asking ahead for the planes it will
 * read, the SIMD vocabulary (GCC's target clones, the vector type of 16 floats, lane
 * masks, SHUFFLE2), small integer helpers, and the entries each file gives the table.
 * The files: vectorized.c holds the table, cpu_vectorized_backend, and its short
 * entries (memory, gemm and linear through OpenBLAS, elementwise, pooling, input);
 * vec_conv.c the convolutions; vec_bn.c batch norm.
 * Include it after every other header: from its SIMD section on, GCC contracts
 * a*b + c into fused multiply-adds. */
#ifndef NS_CPU_VEC_H
#define NS_CPU_VEC_H

#include <stddef.h>

#include "backend.h"
#include "thread_pool.h"

/* ---- threads ----
 * Waking the thread pool's threads costs microseconds, and far more when they share
 * the cores with another busy process: on small problems one thread wins. */
enum { PAR_MIN_WORK = 1 << 16 }; /* multiply-adds, or elements touched */

static inline int threads_for(double work) { return work >= PAR_MIN_WORK ? cpu_threads() : 1; }

/* ---- asking ahead ----
 * Most kernels here walk one channel's plane of each image in turn, planes that lie
 * c*h*w floats apart: each a short stream that the hardware prefetcher meets too late
 * (it doesn't cross 4 KB pages). The tensors are too big to stay in cache between
 * ops, so each plane's first reads would wait on memory. The kernels ask for the
 * planes they will read (or write) AHEAD_FLOATS on while they work on this one. */
enum { AHEAD_FLOATS = 1024 }; /* about 4 KB of each tensor */

/* planes of hw floats ahead: at least one, more when they are short */
static inline int planes_ahead(int hw) { return hw >= AHEAD_FLOATS ? 1 : AHEAD_FLOATS / hw; }

static inline void prefetch_read(const float *row, int n) {
    for (int q = 0; q < n; q += 16) __builtin_prefetch(row + q, 0, 3);
}
static inline void prefetch_write(float *row, int n) {
    for (int q = 0; q < n; q += 16) __builtin_prefetch(row + q, 1, 3);
}

/* ---- SIMD ----
 * The build targets plain x86-64 (SSE2). The hot loops are compiled three times,
 * for AVX-512, for AVX2+FMA and for the baseline, and the dynamic loader picks the
 * best one this CPU runs (GCC's target_clones). They are written with GCC's vector
 * type of 16 floats: one AVX-512 register, two AVX ones or four SSE ones.
 * Not under ThreadSanitizer: the loader calls the clones' resolvers before the
 * sanitizer's runtime is up, and the instrumented resolver crashes there. */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && !defined(__SANITIZE_THREAD__)
#define SIMD_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define SIMD_CLONES
#endif

/* GCC's -std=c11 turns off the contraction of a*b + c into one fused multiply-add;
 * the kernels after it want it (one instruction instead of two, and one rounding).
 * Clang contracts within an expression by default. */
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("fp-contract=fast")
#endif

typedef float vec __attribute__((vector_size(64)));
/* the same, at any float's address: loads and stores through it are unaligned */
typedef float vec_at __attribute__((vector_size(64), aligned(4), may_alias));
#define VEC_AT(p) (*(vec_at *)(p))
enum { VL = 16 }; /* floats in a vec */

/* Lane numbers, and vector v with its lanes from n on cleared (n may be <= 0 or >= VL). */
typedef int ivec __attribute__((vector_size(64)));
static const ivec LANES = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15};
#define FIRST_LANES(v, n) ((vec)((ivec)(v) & (LANES < (n))))

/* SHUFFLE2(a, b, idx): lane i is lane idx[i] of a, or of b for idx[i] in VL..2*VL-1.
 * GCC's __builtin_shuffle. Clang lacks it, and its __builtin_shufflevector takes only
 * constant indices (transpose16's come from a table), so clang (the fuzz build) goes
 * lane by lane: the same result, and gcc's code is untouched. */
#if defined(__GNUC__) && !defined(__clang__)
#define SHUFFLE2(a, b, idx) __builtin_shuffle(a, b, idx)
#else /* a statement expression: a function taking vec by value trips clang's -Wpsabi */
#define SHUFFLE2(a, b, idx)                                              \
    ({                                                                   \
        vec a_ = (a), b_ = (b), r_ = {0};                                \
        ivec i_ = (idx);                                                 \
        for (int k_ = 0; k_ < VL; k_++)                                  \
            r_[k_] = i_[k_] < VL ? a_[i_[k_]] : b_[i_[k_] - VL];         \
        r_;                                                              \
    })
#endif

static inline size_t round_up(size_t n, size_t to) { return (n + to - 1) / to * to; }
static inline int min_int(int a, int b) { return a < b ? a : b; }
static inline int max_int(int a, int b) { return a > b ? a : b; }
static inline size_t max_size(size_t a, size_t b) { return a > b ? a : b; }

/* Division rounding down, and its remainder: -1 = 2*(-1) + 1. */
static inline int floor_div(int a, int b) { return a >= 0 ? a / b : -((-a + b - 1) / b); }
static inline int floor_mod(int a, int b) { return a - floor_div(a, b) * b; }

/* ---- the entries that the table in vectorized.c takes from the other files, or
 * they from it; shapes and arguments as in backend.h ---- */

/* vectorized.c: zeroes `bytes` at p, in blocks spread over the threads */
void vec_zero(void *p, size_t bytes);

/* vec_conv.c */
size_t vec_conv2d_workspace(const struct conv_geom *g);
void vec_conv2d_fwd(const struct conv_geom *g, const float *x, const float *w,
                    const float *bias, float *y, void *ws);
void vec_conv2d_bwd_data(const struct conv_geom *g, const float *dy, const float *w,
                         float *dx, bool acc, void *ws);
void vec_conv2d_bwd_filter(const struct conv_geom *g, const float *x, const float *dy,
                           float *dw, float *dbias, void *ws);

/* vec_bn.c */
void vec_bn_fwd_train(int n, int c, int hw, const float *x, const float *gamma,
                      const float *beta, float *y, float *mean, float *invstd,
                      float *running_mean, float *running_var, float momentum, float eps);
void vec_bn_relu_fwd_train(int n, int c, int hw, const float *x, const float *res,
                           const float *gamma, const float *beta, float *y, float *mean,
                           float *invstd, float *running_mean, float *running_var,
                           float momentum, float eps);
void vec_bn_fwd_eval(int n, int c, int hw, const float *x, const float *gamma,
                     const float *beta, const float *running_mean, const float *running_var,
                     float eps, float *y);
void vec_bn_bwd(int n, int c, int hw, const float *x, const float *dy, const float *gamma,
                const float *mean, const float *invstd, float *dx, bool acc_dx, float *dgamma,
                float *dbeta);
void vec_bn_relu_bwd(int n, int c, int hw, const float *x, const float *y, const float *dy,
                     const float *gamma, const float *mean, const float *invstd, float *dx,
                     bool acc_dx, float *dres, bool acc_dres, float *dgamma, float *dbeta);

#endif
