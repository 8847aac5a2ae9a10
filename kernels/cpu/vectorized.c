/* vectorized.c — the fast CPU backend: convolutions as shifted GEMMs on a grid
 * (no im2col) in explicit SIMD, batch norm and the elementwise ops in SIMD, all of
 * it spread over cpu_parallel's threads (chunks of the batch, channels, blocks);
 * OpenBLAS for the plain gemm and linear entries.
 * It computes what loop.c computes, to float32 tolerance (tests/test_kernels.c).
 *
 * OpenBLAS is called only from the caller's thread, outside any cpu_parallel job,
 * and threads itself as it sees fit; the convolutions don't use it (see
 * "convolution" below for why). */
#include <cblas.h>
#include <string.h>

#include "cpu_common.h"
#include "ns_math.h"

/* ---- threads ----
 * Waking the pool's threads costs microseconds, and far more when they share the
 * cores with another busy process: on small problems one thread wins. */
enum { PAR_MIN_WORK = 1 << 16 }; /* multiply-adds, or elements touched */

static int threads_for(double work) { return work >= PAR_MIN_WORK ? cpu_threads() : 1; }

/* ---- memory ----
 * Gradients that more than one backward adds to, and those of kernels that can
 * only add, are zeroed before their first use: in blocks, on all threads, rather
 * than as one memset on one. (The first writer of the others overwrites instead,
 * the `acc` flags of backend.h.) */
enum { ZERO_BLOCK = 1 << 18 };

struct zero_job { char *p; size_t bytes; };

static void zero_block(void *ctx, int task, int thread) {
    (void)thread;
    const struct zero_job *j = ctx;
    size_t at = (size_t)task * ZERO_BLOCK;
    memset(j->p + at, 0, j->bytes - at < ZERO_BLOCK ? j->bytes - at : ZERO_BLOCK);
}

static void vec_zero(void *p, size_t bytes) {
    struct zero_job j = {p, bytes};
    cpu_parallel((int)((bytes + ZERO_BLOCK - 1) / ZERO_BLOCK), threads_for((double)bytes / 4), zero_block, &j);
}

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

/* ---- dense ---- */

// op(a) (m,k), op(b) (k,n) -> c (m,n) = alpha*op(a)op(b) + beta*c
static void vec_gemm(bool ta, bool tb, int m, int n, int k, float alpha, const float *a,
                     const float *b, float beta, float *c) {
    if (m == 0 || n == 0) return;
    /* leading dimensions of A and B as stored; BLAS wants at least 1 even when k == 0 */
    int lda = ta ? m : (k > 0 ? k : 1);
    int ldb = tb ? (k > 0 ? k : 1) : n;
    cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans,
                m, n, k, alpha, a, lda, b, ldb, beta, c, n);
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
 * the kernels below want it (one instruction instead of two, and one rounding).
 * Clang contracts within an expression by default. */
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("fp-contract=fast")
#endif

typedef float vec __attribute__((vector_size(64)));
/* the same, at any float's address: loads and stores through it are unaligned */
typedef float vec_at __attribute__((vector_size(64), aligned(4), may_alias));
#define VEC_AT(p) (*(vec_at *)(p))
enum { VL = 16 }; /* floats in a vec */

static inline size_t round_up(size_t n, size_t to) { return (n + to - 1) / to * to; }
static inline int min_int(int a, int b) { return a < b ? a : b; }
static inline int max_int(int a, int b) { return a > b ? a : b; }
static inline size_t max_size(size_t a, size_t b) { return a > b ? a : b; }

/* Division rounding down, and its remainder: -1 = 2*(-1) + 1. */
static inline int floor_div(int a, int b) { return a >= 0 ? a / b : -((-a + b - 1) / b); }
static inline int floor_mod(int a, int b) { return a - floor_div(a, b) * b; }

/* ---- convolution: shifted GEMMs on a grid, no im2col ----
 *
 * im2col copies every input pixel r*s times into a column matrix, and OpenBLAS
 * copies that again to pack it; on resnet_small's small planes those copies cost
 * more than the multiply-adds. Here no column matrix is built.
 *
 * The grid: each image gets gy x gx cells, its oh x ow outputs plus a margin of
 * zeros, and the images of a chunk of the batch follow each other, so one flat
 * index q runs over them all. The input is split into its stride phases (stride 1:
 * the input itself; stride 2: even/odd rows times even/odd columns), and each
 * phase of each channel is laid on the same grid. Tap (ky,kx) of output cell q
 * then reads one phase plane at q + off, one fixed offset off = dy*gx + dx per
 * tap, and the reads that fall into the padding land on the margin's zeros:
 *
 *   fwd         y[k][q]       = sum over (c,tap)          w[k][c][tap] * plane(c,tap)[q + off(tap)]
 *   bwd_data    dx_ph[c][q]  += sum over (k, taps of ph)  w[k][c][tap] * dy[k][q - off(tap)]
 *   bwd_filter  dw[k][c][tap] += sum over q               dy[k][q] * plane(c,tap)[q + off(tap)]
 *
 * The first two are GEMMs whose right-hand rows are shifted views of the planes
 * (gemm_tile). The third sums over long rows of cells; it takes dy transposed to
 * (cells, channels), so one vector holds 16 output channels of a cell and each row
 * value is broadcast against it, with no horizontal sums (dot_tile). The margin is
 * wide enough that every read that must see a zero does: gx >= ow + dx_max for
 * reads past the right edge, and gx >= (columns of a phase holding data) - dx_min
 * so a negative offset into the row before lands on zeros too; gy alike. A chunk
 * is sized so its planes stay in L2 while the tiles sweep over them. */

enum { MR = 8, QV = 3, QT = VL * QV }; /* gemm_tile: MR output rows x QT cells */
enum { DJ = 8 };                      /* dot_tile: DJ rows of dw x VL channels */
enum { DOT_FLOATS = 1 << 12 };        /* dt per dot_tile call: 16 KB, in L1 */
enum { CHUNK_FLOATS = 1 << 16 };      /* a chunk's planes, both sides of bwd_filter: 256 KB,
                                         * an eighth of L2 (1 << 15 and 1 << 17 were slower) */
enum { CONV_SHARES = 8 };             /* bwd_filter's partial sums of dw */

struct conv_plan {
    int gy, gx;        /* grid cells per image */
    int npy, npx;      /* stride phases in use along y and x */
    int a0;            /* the first phase's residue; phase index = (residue - a0) mod stride */
    int chunk;         /* images per chunk */
    size_t img;        /* gy*gx */
    size_t guard;      /* zeros around a chunk's cells in each plane, for shifted reads */
    size_t plane;      /* floats per plane of a chunk buffer: guard, cells, guard */
};

/* Pixels along one axis of a phase holding data: stride*i + residue < in. */
static int phase_len(int in, int stride, int residue) {
    return in > residue ? (in - residue + stride - 1) / stride : 0;
}

/* Grid cells along one axis; *reach = the largest |shift| of a tap. */
static int grid_len(int in, int out, int taps, int stride, int pad, int *reach) {
    int lo = floor_div(-pad, stride), hi = floor_div(taps - 1 - pad, stride);
    int data = 0;
    for (int t = 0; t < taps && t < stride; t++)
        data = max_int(data, phase_len(in, stride, floor_mod(t - pad, stride)));
    *reach = max_int(hi, -lo);
    return max_int(out + max_int(hi, 0), data + max_int(-lo, 0));
}

static void conv_plan(const struct conv_geom *g, struct conv_plan *p) {
    int reach_y, reach_x;
    p->gy = grid_len(g->h, g->oh, g->r, g->stride, g->pad, &reach_y);
    p->gx = grid_len(g->w, g->ow, g->s, g->stride, g->pad, &reach_x);
    p->npy = min_int(g->r, g->stride);
    p->npx = min_int(g->s, g->stride);
    p->a0 = floor_mod(-g->pad, g->stride);
    p->img = (size_t)p->gy * p->gx;
    p->guard = round_up(QT + (size_t)max_int(reach_y, reach_x) * (p->gx + 1), VL);
    /* bwd_filter holds both sides; CONV_SHARES chunks at least, so that a thread
     * held up by another job leaves work for the others to take */
    size_t per_image = ((size_t)g->c * p->npy * p->npx + g->k) * p->img;
    size_t fit = CHUNK_FLOATS / per_image, spread = (size_t)g->n / CONV_SHARES;
    p->chunk = (int)(fit < spread ? fit : spread);
    if (p->chunk < 1) p->chunk = 1;
    p->plane = 2 * p->guard + round_up((size_t)p->chunk * p->img, VL);
}

static int conv_chunks(const struct conv_geom *g, const struct conv_plan *p) {
    return (g->n + p->chunk - 1) / p->chunk;
}

static int conv_threads(const struct conv_geom *g) {
    return threads_for((double)g->n * g->k * g->c * g->r * g->s * g->oh * g->ow);
}

/* The phase plane tap (ky,kx) reads, and its offset on the grid. */
static int tap_phase(const struct conv_geom *g, const struct conv_plan *p, int ky, int kx,
                     ptrdiff_t *off) {
    int ty = ky - g->pad, tx = kx - g->pad, st = g->stride;
    *off = (ptrdiff_t)floor_div(ty, st) * p->gx + floor_div(tx, st);
    return floor_mod(floor_mod(ty, st) - p->a0, st) * p->npx + floor_mod(floor_mod(tx, st) - p->a0, st);
}

/* The residues (row, column) of phase plane ph. */
static void phase_residues(const struct conv_geom *g, const struct conv_plan *p, int ph, int *ry,
                           int *rx) {
    *ry = (p->a0 + ph / p->npx) % g->stride;
    *rx = (p->a0 + ph % p->npx) % g->stride;
}

/* The workspace: weights packed for gemm_tile, row offsets, and bwd_filter's dw
 * partials, shared; then one slot per thread for a chunk's input and dy planes. */
struct conv_ws {
    float *packed;
    ptrdiff_t *off;
    float *partials;
    float *slots;
    size_t slot;
};

/* A bwd_filter partial: dw^T, (c*r*s rows rounded up to DJ, k rounded up to VL). */
static size_t conv_partial_floats(const struct conv_geom *g) {
    return round_up((size_t)g->c * g->r * g->s, DJ) * round_up(g->k, VL);
}

static size_t conv_ws_layout(const struct conv_geom *g, const struct conv_plan *p, void *ws,
                             struct conv_ws *cw) {
    size_t taps = (size_t)g->r * g->s, in_planes = (size_t)g->c * p->npy * p->npx;
    size_t rows = (size_t)max_int(g->c, g->k) * taps; /* J of fwd or of bwd_data */
    size_t packed = round_up(round_up((size_t)max_int(g->c, g->k), MR) * rows, VL);
    size_t offs = round_up(rows * sizeof(ptrdiff_t), 64) / sizeof(float);
    size_t partials = conv_partial_floats(g) * CONV_SHARES;
    /* fwd: the input planes; bwd_data: dy's; bwd_filter: the input planes and dy^T */
    size_t dy_t = (size_t)p->chunk * p->img * round_up(g->k, VL);
    size_t slot = round_up(in_planes * p->plane + max_size(g->k * p->plane, dy_t), VL);
    if (cw) {
        cw->packed = ws;
        cw->off = (ptrdiff_t *)(cw->packed + packed);
        cw->partials = cw->packed + packed + offs;
        cw->slots = cw->partials + partials;
        cw->slot = slot;
    }
    return (packed + offs + partials + slot * cpu_threads()) * sizeof(float);
}

static size_t vec_conv2d_workspace(const struct conv_geom *g) {
    struct conv_plan p;
    conv_plan(g, &p);
    return conv_ws_layout(g, &p, NULL, NULL);
}

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

// src (h,w) one plane -> dst (gy,gx): dst(i,j) = src(stride*i + ry, stride*j + rx), 0 outside.
// With odd (stride 2, rx = 0): odd(i,j) = src(2i + ry, 2j + 1) too, both column phases
// from one read of each row (read phase by phase, a row's lines came in twice).
// A row goes by whole vectors: its data, zeros past it, and up to VL - 1 floats past
// the row's end, which the next row (or the plane's trailing guard) overwrites. The
// reads run up to a vector past a row's data too, into the next row, so a row whose
// reads would pass `end` (the last readable float + 1) goes one float at a time.
SIMD_CLONES
static void to_grid(const float *src, const float *end, int h, int w, int stride, int ry, int rx,
                    const struct conv_plan *p, float *dst, float *odd) {
    static const ivec even_of = {0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30};
    static const ivec odd_of = {1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31};
    int cols = min_int(phase_len(w, stride, rx), p->gx);
    int odd_cols = odd ? min_int(phase_len(w, 2, 1), p->gx) : 0;
    const vec zero = {0};
    for (int i = 0; i < p->gy; i++, dst += p->gx, odd = odd ? odd + p->gx : NULL) {
        int y = stride * i + ry, n = y < h ? cols : 0, m = y < h ? odd_cols : 0;
        const float *row = src + (size_t)(y < h ? y : 0) * w + rx;
        if (stride <= 2 && row + (size_t)stride * round_up(n, VL) <= end) {
            for (int j = 0; j < p->gx; j += VL) {
                if (j >= n) { /* m <= n: a row has no more odd columns than even */
                    VEC_AT(dst + j) = zero;
                    if (odd) VEC_AT(odd + j) = zero;
                } else if (stride == 1) {
                    VEC_AT(dst + j) = FIRST_LANES(VEC_AT(row + j), n - j);
                } else {
                    vec a = VEC_AT(row + 2 * j), b = VEC_AT(row + 2 * j + VL);
                    VEC_AT(dst + j) = FIRST_LANES(SHUFFLE2(a, b, even_of), n - j);
                    if (odd) VEC_AT(odd + j) = FIRST_LANES(SHUFFLE2(a, b, odd_of), m - j);
                }
            }
            continue;
        }
        for (int j = 0; j < p->gx; j++) {
            dst[j] = j < n ? row[(size_t)j * stride] : 0.0f;
            if (odd) odd[j] = j < m ? row[2 * j + 1] : 0.0f;
        }
    }
}

// planes (n, count, h, w), images b0..b0+nb -> buf (count, plane): each on the grid
// through to_grid's phase (stride, ry, rx), zeros in the guards
// With odd != 0 (stride 2, rx = 0) the odd columns' phase too, its plane odd floats on.
static void chunk_planes(const float *planes, int count, int h, int w, int stride, int ry, int rx,
                         int b0, int nb, const struct conv_plan *p, float *buf, size_t buf_stride,
                         ptrdiff_t odd) {
    size_t used = p->guard + (size_t)nb * p->img;
    const float *end = planes + (size_t)(b0 + nb) * count * h * w;
    int la = planes_ahead(h * w);
    for (int c = 0; c < count; c++) {
        float *plane = buf + (size_t)c * buf_stride;
        for (int b = 0; b < nb; b++) {
            int t = (c * nb + b + la) / nb, u = (c * nb + b + la) % nb; /* la planes on */
            if (t < count) prefetch_read(planes + ((size_t)(b0 + u) * count + t) * h * w, h * w);
            to_grid(planes + ((size_t)(b0 + b) * count + c) * h * w, end, h, w, stride, ry, rx, p,
                    plane + p->guard + b * p->img, odd ? plane + odd + p->guard + b * p->img : NULL);
        }
        for (int k = 0; k < (odd ? 2 : 1); k++, plane += odd) { /* the guards */
            memset(plane, 0, sizeof(float) * p->guard);
            memset(plane + used, 0, sizeof(float) * (p->plane - used));
        }
    }
}

// x (n,c,h,w), images b0.. -> buf (c, phases, plane): every phase plane of every channel
static void chunk_input(const struct conv_geom *g, const struct conv_plan *p, const float *x,
                        int b0, int nb, float *buf) {
    int phases = p->npy * p->npx;
    /* stride 2, both column phases in use: a pass per row phase does both. Phase
     * (residues ry, rx) is number ((ry - a0) mod 2) * 2 + ((rx - a0) mod 2). */
    bool pairs = g->stride == 2 && p->npx == 2;
    for (int ph = 0; ph < phases; ph += pairs ? 2 : 1) {
        int ry, rx;
        phase_residues(g, p, ph, &ry, &rx);
        /* channel c's plane of phase ph sits at (c*phases + ph) * plane */
        int at = pairs ? ph + p->a0 : ph; /* the even columns' phase */
        ptrdiff_t odd = pairs ? (ptrdiff_t)(1 - 2 * p->a0) * (ptrdiff_t)p->plane : 0;
        chunk_planes(x, g->c, g->h, g->w, g->stride, ry, pairs ? 0 : rx, b0, nb, p,
                     buf + at * p->plane, phases * p->plane, odd);
    }
}

/* Where a tile's cells go: cell (image b, i, j) with i < ni, j < nj is pixel
 * (stride*i + ry, stride*j + rx) of an (h,w) plane. */
struct cell_map { int stride, ry, rx, ni, nj, h, w; };

// t (rows, QT): cells q0.. of a chunk of `cells` cells -> dense (images, channels, h, w),
// starting at the chunk's first image and the tile's first row: += t, or = t + bias
SIMD_CLONES
static void tile_out(const float *t, int rows, size_t q0, size_t cells, const struct conv_plan *p,
                     const struct cell_map *m, float *dense, int channels, const float *bias,
                     bool add) {
    size_t stop = q0 + QT < cells ? q0 + QT : cells, hw = (size_t)m->h * m->w;
    size_t b = q0 / p->img, r = q0 % p->img; /* where the tile starts; then followed along */
    int i = (int)(r / p->gx), j = (int)(r % p->gx), st = m->stride;
    /* a grid without a margin (a 1x1 conv) is the dense plane itself: whole rows in one go */
    bool rows_meet = st == 1 && m->nj == p->gx && m->w == p->gx;
    for (size_t q = q0; q < stop;) {
        int run = rows_meet && i < m->ni ? (m->ni - i) * p->gx - j : p->gx - j;
        int seg = (int)(stop - q < (size_t)run ? stop - q : (size_t)run);
        if (i < m->ni && j < m->nj) {
            int n = rows_meet ? seg : min_int(seg, m->nj - j);
            const float *from = t + (q - q0);
            size_t at = (size_t)(st * i + m->ry) * m->w + st * j + m->rx; /* in the plane */
            float *to = dense + b * channels * hw + at;
            /* `=` by whole vectors where they stay in the plane: the floats past n land
             * on pixels of later cells of it (this thread's image), which later segments
             * write over */
            bool whole = st == 1 && !add && at + round_up(n, VL) <= hw;
            for (int row = 0; row < rows; row++, from += QT, to += hw) {
                float shift = bias ? bias[row] : 0.0f;
                if (whole)
                    for (int u = 0; u < n; u += VL) VEC_AT(to + u) = VEC_AT(from + u) + shift;
                else if (st == 1 && add)
#pragma omp simd
                    for (int u = 0; u < n; u++) to[u] += from[u];
                else if (st == 1)
#pragma omp simd
                    for (int u = 0; u < n; u++) to[u] = from[u] + shift;
                else if (st == 2 && add) /* bwd_data of a strided conv: one phase of dx */
#pragma omp simd
                    for (int u = 0; u < n; u++) to[2 * u] += from[u];
                else if (st == 2)
#pragma omp simd
                    for (int u = 0; u < n; u++) to[2 * u] = from[u];
                else
                    for (int u = 0; u < n; u++) to[u * st] = (add ? to[u * st] : 0.0f) + from[u];
            }
        }
        q += seg;
        j += seg;
        if (j >= p->gx) i += j / p->gx, j %= p->gx;
        if (i >= p->gy) i -= p->gy, b++;
    }
}

// t (MR, QT) = sum over j < J of a[j] (MR weights, one per row) times the QT cells
// of row j, which starts at base + off[j]
SIMD_CLONES
static void gemm_tile(int J, const float *a, const float *base, const ptrdiff_t *off, float *t) {
    vec acc[MR][QV];
#pragma GCC unroll 8
    for (int i = 0; i < MR; i++)
#pragma GCC unroll 4
        for (int v = 0; v < QV; v++) acc[i][v] = (vec){0};
    for (int j = 0; j < J; j++, a += MR) {
        const float *row = base + off[j];
        vec x[QV];
#pragma GCC unroll 4
        for (int v = 0; v < QV; v++) x[v] = VEC_AT(row + v * VL);
#pragma GCC unroll 8
        for (int i = 0; i < MR; i++)
#pragma GCC unroll 4
            for (int v = 0; v < QV; v++) acc[i][v] += x[v] * a[i];
    }
#pragma GCC unroll 8
    for (int i = 0; i < MR; i++)
#pragma GCC unroll 4
        for (int v = 0; v < QV; v++) VEC_AT(t + i * QT + v * VL) = acc[i][v];
}

// s (DJ rows, ld apart; nv*VL channels) += sum over cells q < len of dt[q] (output
// channels, ld apart) * r[j][q]: nv vectors of channels of DJ rows of dw^T at once.
// With nv = 2 each broadcast row value feeds two multiply-adds: 10 loads per 16 of
// them instead of 9 per 8, and 16 sums in flight hide the adds' latency.
static inline __attribute__((always_inline)) void dot_tile_n(size_t len, const float *dt, size_t ld,
                                                             const float *const *r, float *s, const int nv) {
    vec acc[DJ][2];
#pragma GCC unroll 8
    for (int j = 0; j < DJ; j++)
        for (int v = 0; v < nv; v++) acc[j][v] = (vec){0};
    for (size_t q = 0; q < len; q++) {
        vec d[2];
        for (int v = 0; v < nv; v++) d[v] = VEC_AT(dt + q * ld + v * VL);
#pragma GCC unroll 8
        for (int j = 0; j < DJ; j++) {
            float b = r[j][q];
            for (int v = 0; v < nv; v++) acc[j][v] += d[v] * b;
        }
    }
#pragma GCC unroll 8
    for (int j = 0; j < DJ; j++)
        for (int v = 0; v < nv; v++) VEC_AT(s + j * ld + v * VL) += acc[j][v];
}
SIMD_CLONES
static void dot_tile(size_t len, const float *dt, size_t ld, const float *const *r, float *s) {
    dot_tile_n(len, dt, ld, r, s, 1);
}
SIMD_CLONES
static void dot_tile2(size_t len, const float *dt, size_t ld, const float *const *r, float *s) {
    dot_tile_n(len, dt, ld, r, s, 2);
}

// w (m, J) row-major -> packed (ceil(m/MR), J, MR), zero rows past m
static void pack_rows(const float *w, int m, int J, float *packed) {
    for (int i = 0; i < (int)round_up(m, MR); i++)
        for (int j = 0; j < J; j++)
            packed[((size_t)(i / MR) * J + j) * MR + i % MR] = i < m ? w[(size_t)i * J + j] : 0.0f;
}

/* One convolution call, as the tasks of cpu_parallel see it: a task is a chunk of
 * the batch (bwd_filter: a fixed share of the chunks). */
struct conv_job {
    const struct conv_geom *g;
    struct conv_plan p;
    struct conv_ws cw;
    const float *x, *dy, *bias;
    float *y, *dx, *dw;
    int J;            /* gemm/dot rows: c*r*s (fwd, bwd_filter) */
    bool acc;         /* bwd_data: dx += (else dx =) */
    int *first;       /* bwd_data: each phase's first row, phases + 1 entries */
};

static void conv_job_init(struct conv_job *j, const struct conv_geom *g, void *ws) {
    memset(j, 0, sizeof *j);
    j->g = g;
    conv_plan(g, &j->p);
    conv_ws_layout(g, &j->p, ws, &j->cw);
    j->J = g->c * g->r * g->s;
}

/* Row j = (c, ky, kx) of fwd and bwd_filter: tap (ky,kx) of channel c's phase plane. */
static void conv_input_rows(struct conv_job *j) {
    const struct conv_geom *g = j->g;
    int phases = j->p.npy * j->p.npx;
    for (int c = 0, r = 0; c < g->c; c++)
        for (int ky = 0; ky < g->r; ky++)
            for (int kx = 0; kx < g->s; kx++, r++) {
                ptrdiff_t off;
                int ph = tap_phase(g, &j->p, ky, kx, &off);
                j->cw.off[r] = (ptrdiff_t)((size_t)c * phases + ph) * j->p.plane + j->p.guard + off;
            }
}

static void conv_fwd_chunk(void *ctx, int ch, int thread) {
    struct conv_job *j = ctx;
    const struct conv_geom *g = j->g;
    const struct conv_plan *p = &j->p;
    float *buf = j->cw.slots + thread * j->cw.slot, t[MR * QT + VL]; /* + tile_out's overreach */
    int b0 = ch * p->chunk, nb = min_int(p->chunk, g->n - b0);
    size_t cells = (size_t)nb * p->img;
    struct cell_map out = {1, 0, 0, g->oh, g->ow, g->oh, g->ow};
    chunk_input(g, p, j->x, b0, nb, buf);
    for (size_t q = 0; q < cells; q += QT)
        for (int k0 = 0; k0 < g->k; k0 += MR) {
            gemm_tile(j->J, j->cw.packed + (size_t)k0 * j->J, buf + q, j->cw.off, t);
            tile_out(t, min_int(MR, g->k - k0), q, cells, p, &out,
                     j->y + ((size_t)b0 * g->k + k0) * g->oh * g->ow, g->k,
                     j->bias ? j->bias + k0 : NULL, false);
        }
}

// x (n,c,h,w), w (k,c,r,s), bias (k) or NULL -> y (n,k,oh,ow)
static void vec_conv2d_fwd(const struct conv_geom *g, const float *x, const float *w,
                           const float *bias, float *y, void *ws) {
    struct conv_job j;
    conv_job_init(&j, g, ws);
    j.x = x, j.bias = bias, j.y = y;
    pack_rows(w, g->k, j.J, j.cw.packed);
    conv_input_rows(&j);
    cpu_parallel(conv_chunks(g, &j.p), conv_threads(g), conv_fwd_chunk, &j);
}

/* bwd_data's rows for phase ph: (k, each tap of ph), from row `first` on. The packed
 * weights are w^T by blocks of MR input channels: (ceil(c/MR), k*r*s, MR), every
 * phase's rows one after the other; returns how many rows phase ph has. */
static int bwd_data_rows(struct conv_job *j, const float *w, int ph, int first) {
    const struct conv_geom *g = j->g;
    int taps = g->r * g->s, rows = g->k * taps, J = 0;
    for (int k = 0; k < g->k; k++)
        for (int t = 0; t < taps; t++) {
            ptrdiff_t off;
            if (tap_phase(g, &j->p, t / g->s, t % g->s, &off) != ph) continue;
            for (int c = 0; c < (int)round_up(g->c, MR); c++)
                j->cw.packed[((size_t)(c / MR) * rows + first + J) * MR + c % MR] =
                    c < g->c ? w[((size_t)k * g->c + c) * taps + t] : 0.0f;
            j->cw.off[first + J++] = (ptrdiff_t)k * j->p.plane + j->p.guard - off;
        }
    return J;
}

static void conv_bwd_data_chunk(void *ctx, int ch, int thread) {
    struct conv_job *j = ctx;
    const struct conv_geom *g = j->g;
    const struct conv_plan *p = &j->p;
    float *buf = j->cw.slots + thread * j->cw.slot, t[MR * QT + VL]; /* + tile_out's overreach */
    int b0 = ch * p->chunk, nb = min_int(p->chunk, g->n - b0), rows = g->k * g->r * g->s;
    size_t cells = (size_t)nb * p->img;
    chunk_planes(j->dy, g->k, g->oh, g->ow, 1, 0, 0, b0, nb, p, buf, p->plane, 0);
    for (int ph = 0; ph < p->npy * p->npx; ph++) {
        struct cell_map m = {g->stride, 0, 0, 0, 0, g->h, g->w};
        phase_residues(g, p, ph, &m.ry, &m.rx);
        m.ni = phase_len(g->h, g->stride, m.ry);
        m.nj = phase_len(g->w, g->stride, m.rx);
        int first = j->first[ph], J = j->first[ph + 1] - first;
        for (size_t q = 0; q < cells; q += QT)
            for (int c0 = 0; c0 < g->c; c0 += MR) {
                const float *a = j->cw.packed + ((size_t)(c0 / MR) * rows + first) * MR;
                gemm_tile(J, a, buf + q, j->cw.off + first, t);
                tile_out(t, min_int(MR, g->c - c0), q, cells, p, &m,
                         j->dx + ((size_t)b0 * g->c + c0) * g->h * g->w, g->c, NULL, j->acc);
            }
    }
}

// dy (n,k,oh,ow), w (k,c,r,s) -> dx (n,c,h,w) += (= when !acc)
// Each dx pixel is one cell of its phase's grid, written once by one tile; pixels of
// no phase (a 1x1 conv of stride 2 never reads the odd ones) get no gradient, so
// there `=` needs a zero-fill first.
static void vec_conv2d_bwd_data(const struct conv_geom *g, const float *dy, const float *w,
                                float *dx, bool acc, void *ws) {
    struct conv_job j;
    conv_job_init(&j, g, ws);
    if (!acc && (j.p.npy < g->stride || j.p.npx < g->stride)) {
        vec_zero(dx, sizeof(float) * g->n * g->c * g->h * g->w);
        acc = true;
    }
    j.dy = dy, j.dx = dx, j.acc = acc;
    int phases = j.p.npy * j.p.npx, first[phases + 1];
    first[0] = 0;
    for (int ph = 0; ph < phases; ph++) first[ph + 1] = first[ph] + bwd_data_rows(&j, w, ph, first[ph]);
    j.first = first;
    cpu_parallel(conv_chunks(g, &j.p), conv_threads(g), conv_bwd_data_chunk, &j);
}

/* bwd_filter's task `share` sums chunks share, share + shares, ... into partial dw
 * number `share`; the partials are added up in order afterwards. Which chunks land
 * in which partial, and so the float rounding, depends neither on which thread runs
 * which task nor on how many threads there are: a seeded run gives the same weights
 * every time, on any number of threads. */
static int conv_shares(const struct conv_geom *g, const struct conv_plan *p) {
    return min_int(conv_chunks(g, p), CONV_SHARES);
}

static float *conv_partial(const struct conv_job *j, int share) {
    return j->cw.partials + (size_t)share * conv_partial_floats(j->g);
}

/* m (VL rows of VL) -> its transpose, in four rounds: round s swaps the s x s blocks
 * off the diagonal of every 2s x 2s block (s = 8, 4, 2, 1): rows r and r + s trade
 * halves. A shuffle index past 15 picks from the second operand. */
static inline __attribute__((always_inline)) void transpose16(vec *m) {
    static const ivec lo[4] = {{0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23},
                               {0, 1, 2, 3, 16, 17, 18, 19, 8, 9, 10, 11, 24, 25, 26, 27},
                               {0, 1, 16, 17, 4, 5, 20, 21, 8, 9, 24, 25, 12, 13, 28, 29},
                               {0, 16, 2, 18, 4, 20, 6, 22, 8, 24, 10, 26, 12, 28, 14, 30}};
    static const ivec hi[4] = {{8, 9, 10, 11, 12, 13, 14, 15, 24, 25, 26, 27, 28, 29, 30, 31},
                               {4, 5, 6, 7, 20, 21, 22, 23, 12, 13, 14, 15, 28, 29, 30, 31},
                               {2, 3, 18, 19, 6, 7, 22, 23, 10, 11, 26, 27, 14, 15, 30, 31},
                               {1, 17, 3, 19, 5, 21, 7, 23, 9, 25, 11, 27, 13, 29, 15, 31}};
#pragma GCC unroll 4
    for (int round = 0, s = VL / 2; round < 4; round++, s /= 2)
#pragma GCC unroll 16
        for (int r = 0; r < VL; r++)
            if (!(r & s)) {
                vec a = m[r], b = m[r + s];
                m[r] = SHUFFLE2(a, b, lo[round]);
                m[r + s] = SHUFFLE2(a, b, hi[round]);
            }
}

// dy (n,k,oh,ow), images b0.. -> dt (cells, kp): dt[q][k] = dy of channel k at cell q of
// the grid, 0 on the margin's cells and for k >= the channels
// By blocks of VL channels x VL pixels, transposed in registers: a pixel at a time,
// each of its channels' loads came from a different plane and waited on memory. A
// plane's last block overlaps the one before it; channels past the last whole block
// (or all, on planes of fewer than VL pixels) go one at a time.
SIMD_CLONES
static void chunk_dy_t(const struct conv_geom *g, const struct conv_plan *p, const float *dy,
                       int b0, int nb, int kp, float *dt) {
    int plane = g->oh * g->ow, blocked = plane >= VL ? g->k / VL * VL : 0;
    for (int b = 0; b < nb; b++) {
        const float *img = dy + (size_t)(b0 + b) * g->k * plane;
        float *grid = dt + (size_t)b * p->img * kp;
        for (int i = 0; i < p->gy; i++) /* the margin */
            for (int j = i < g->oh ? g->ow : 0; j < p->gx; j++)
                memset(grid + ((size_t)i * p->gx + j) * kp, 0, sizeof(float) * kp);
        for (int k0 = 0; k0 < blocked; k0 += VL)
            for (int at = 0; at < plane; at += VL) {
                int a = min_int(at, plane - VL), i = a / g->ow, j = a % g->ow;
                vec m[VL];
                if (b + 1 < nb) /* the next image's block (see "asking ahead") */
                    for (int c = 0; c < VL; c++)
                        __builtin_prefetch(img + ((size_t)g->k + k0 + c) * plane + a, 0, 3);
                for (int c = 0; c < VL; c++) m[c] = VEC_AT(img + (size_t)(k0 + c) * plane + a);
                transpose16(m);
                for (int u = 0; u < VL; u++) {
                    VEC_AT(grid + ((size_t)i * p->gx + j) * kp + k0) = m[u];
                    if (++j == g->ow) j = 0, i++;
                }
            }
        if (blocked < kp)
            for (int i = 0; i < g->oh; i++)
                for (int j = 0; j < g->ow; j++) {
                    float *to = grid + ((size_t)i * p->gx + j) * kp;
                    int k = blocked;
                    for (const float *from = img + (size_t)i * g->ow + j; k < g->k; k++) to[k] = from[k * plane];
                    for (; k < kp; k++) to[k] = 0.0f;
                }
    }
}

static void conv_bwd_filter_share(void *ctx, int share, int thread) {
    struct conv_job *j = ctx;
    const struct conv_geom *g = j->g;
    const struct conv_plan *p = &j->p;
    int J = j->J, kp = (int)round_up(g->k, VL);
    float *xs = j->cw.slots + thread * j->cw.slot;
    float *dt = xs + (size_t)g->c * p->npy * p->npx * p->plane, *part = conv_partial(j, share);
    memset(part, 0, sizeof(float) * conv_partial_floats(g));
    for (int ch = share; ch < conv_chunks(g, p); ch += conv_shares(g, p)) {
        int b0 = ch * p->chunk, nb = min_int(p->chunk, g->n - b0);
        chunk_input(g, p, j->x, b0, nb, xs);
        chunk_dy_t(g, p, j->dy, b0, nb, kp, dt);
        /* a tile past the last row repeats it, into rows of the partial that are dropped;
         * blocks of cells keep their slice of dt in L1 across the tiles */
        size_t cells = (size_t)nb * p->img, block = DOT_FLOATS / kp;
        for (size_t q0 = 0; q0 < cells; q0 += block)
            for (int k0 = 0, nv; k0 < kp; k0 += nv * VL) {
                nv = kp - k0 >= 2 * VL ? 2 : 1; /* 32 channels a tile where there are */
                for (int j0 = 0; j0 < J; j0 += DJ) {
                    const float *r[DJ];
                    for (int c = 0; c < DJ; c++) r[c] = xs + j->cw.off[min_int(j0 + c, J - 1)] + q0;
                    size_t len = cells - q0 < block ? cells - q0 : block;
                    (nv == 2 ? dot_tile2 : dot_tile)(len, dt + q0 * kp + k0, kp, r, part + (size_t)j0 * kp + k0);
                }
            }
    }
}

// row k of dw += the partials, in share order (so the bits don't depend on threads)
static void conv_bwd_filter_sum(void *ctx, int k, int thread) {
    (void)thread;
    const struct conv_job *j = ctx;
    int kp = (int)round_up(j->g->k, VL), shares = conv_shares(j->g, &j->p);
    for (int r = 0; r < j->J; r++) {
        float sum = j->dw[(size_t)k * j->J + r];
        for (int s = 0; s < shares; s++) sum += conv_partial(j, s)[(size_t)r * kp + k];
        j->dw[(size_t)k * j->J + r] = sum;
    }
}

// x (n,c,h,w), dy (n,k,oh,ow) -> dw (k,c,r,s) +=, dbias (k) += (if not NULL)
static void vec_conv2d_bwd_filter(const struct conv_geom *g, const float *x, const float *dy,
                                  float *dw, float *dbias, void *ws) {
    struct conv_job j;
    conv_job_init(&j, g, ws);
    j.x = x, j.dy = dy;
    conv_input_rows(&j);
    j.dw = dw;
    cpu_parallel(conv_shares(g, &j.p), conv_threads(g), conv_bwd_filter_share, &j);
    cpu_parallel(g->k, conv_threads(g), conv_bwd_filter_sum, &j);
    if (dbias)
        for (int i = 0; i < g->n; i++)
            for (int ko = 0; ko < g->k; ko++) {
                const float *plane = dy + ((size_t)i * g->k + ko) * g->oh * g->ow;
                float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
                for (int q = 0; q < g->oh * g->ow; q++) sum += plane[q];
                dbias[ko] += sum;
            }
}

/* ---- linear: gemms that OpenBLAS threads itself ---- */

// x (n,in), w (out,in), bias (out) or NULL -> y (n,out) = x w^T + bias
static void vec_linear_fwd(int n, int in, int out, const float *x, const float *w,
                           const float *bias, float *y) {
    if (bias)
        for (int i = 0; i < n; i++) memcpy(y + (size_t)i * out, bias, sizeof(float) * out);
    vec_gemm(false, true, n, out, in, 1.0f, x, w, bias ? 1.0f : 0.0f, y);
}

// x (n,in), w (out,in), dy (n,out) -> dx (n,in) +=, dw (out,in) +=, dbias (out) +=
// Any of dx, dw, dbias may be NULL when nobody wants that gradient.
static void vec_linear_bwd(int n, int in, int out, const float *x, const float *w,
                           const float *dy, float *dx, float *dw, float *dbias) {
    if (dx) vec_gemm(false, false, n, in, out, 1.0f, dy, w, 1.0f, dx);
    if (dw) vec_gemm(true, false, out, in, n, 1.0f, dy, x, 1.0f, dw);
    if (dbias)
        for (int i = 0; i < n; i++) cpu_axpy((size_t)out, 1.0f, dy + (size_t)i * out, dbias);
}

/* ---- batch norm, alone or fused with the ReLU after it: a task per channel ----
 * A channel's rows lie c*hw floats apart, one per image (see "asking ahead" above),
 * so the first pass asks for the next image's rows while it sums this one's, and
 * the second pass for the rows it will write. */

struct bn_job {
    int n, c, hw;
    const float *x, *res, *y_in, *dy, *gamma, *beta;
    const float *mean, *invstd;                 /* bwd: the saved statistics */
    const float *running_mean, *running_var;    /* eval */
    bool relu;
    float *y, *dx, *dres, *dgamma, *dbeta;
    bool acc_dx, acc_dres;                      /* bwd: += (else =) into dx, dres */
    float *save_mean, *save_invstd, *update_mean, *update_var; /* fwd_train */
    float momentum, eps;
};

/* A task is a block of neighbouring channels, one after the other. Two threads on
 * neighbouring channels would write the two ends of one cache line wherever a row
 * (hw floats) doesn't end on a line, 784 bytes at 14x14, and pass that line back and
 * forth between their cores; by blocks, they meet only at the blocks' edges. */
enum { BN_TASKS = 8 };

struct bn_blocks {
    void (*channel)(void *ctx, int ch, int thread);
    void *job;
    int c, per;
};

static void bn_block(void *ctx, int task, int thread) {
    const struct bn_blocks *b = ctx;
    for (int ch = task * b->per; ch < b->c && ch < (task + 1) * b->per; ch++) b->channel(b->job, ch, thread);
}

static void bn_parallel(struct bn_job *j, void (*channel)(void *ctx, int ch, int thread)) {
    struct bn_blocks b = {channel, j, j->c, (j->c + BN_TASKS - 1) / BN_TASKS};
    cpu_parallel((j->c + b.per - 1) / b.per, threads_for((double)j->n * j->c * j->hw), bn_block, &b);
}

// channel ch of x (n,c,hw) -> y = bn(x), or relu(bn(x) + res); mean, invstd; running
// statistics updated
// Mean and variance come from one pass of sums and sums of squares. Taken about
// the channel's first value rather than 0, those sums don't cancel catastrophically
// when the mean is large against the spread.
SIMD_CLONES
static void bn_train_channel(void *ctx, int ch, int thread) {
    (void)thread;
    const struct bn_job *j = ctx;
    long m = (long)j->n * j->hw;
    float shift = j->x[ns_idx3(0, ch, 0, j->c, j->hw)];
    double sum = 0.0, squares = 0.0;
    int la = planes_ahead(j->hw);
    size_t ahead = (size_t)la * j->c * j->hw;
    for (int i = 0; i < j->n; i++) {
        const float *row = j->x + ns_idx3(i, ch, 0, j->c, j->hw);
        float s = 0.0f, ss = 0.0f;
        if (i + la < j->n) prefetch_read(row + ahead, j->hw);
#pragma omp simd reduction(+ : s, ss)
        for (int q = 0; q < j->hw; q++) {
            float d = row[q] - shift;
            s += d;
            ss += d * d;
        }
        sum += s;
        squares += ss;
    }
    double shifted_mean = sum / m, var_d = squares / m - shifted_mean * shifted_mean;
    float var = var_d > 0.0 ? (float)var_d : 0.0f;
    float mu = (float)(shift + shifted_mean), is = 1.0f / sqrtf(var + j->eps);
    float gamma = j->gamma[ch], beta = j->beta[ch];
    for (int i = 0; i < j->n; i++) {
        size_t at = ns_idx3(i, ch, 0, j->c, j->hw);
        const float *row = j->x + at, *res = j->res ? j->res + at : NULL;
        float *out = j->y + at;
        if (i + la < j->n) {
            if (res) prefetch_read(res + ahead, j->hw);
            prefetch_write(out + ahead, j->hw);
        }
        if (res)
#pragma omp simd
            for (int q = 0; q < j->hw; q++)
                out[q] = ns_relu(ns_bn_normalize(row[q], mu, is, gamma, beta) + res[q]);
        else if (j->relu)
#pragma omp simd
            for (int q = 0; q < j->hw; q++)
                out[q] = ns_relu(ns_bn_normalize(row[q], mu, is, gamma, beta));
        else
#pragma omp simd
            for (int q = 0; q < j->hw; q++) out[q] = ns_bn_normalize(row[q], mu, is, gamma, beta);
    }
    j->save_mean[ch] = mu;
    j->save_invstd[ch] = is;
    j->update_mean[ch] = ns_running_update(j->update_mean[ch], mu, j->momentum);
    j->update_var[ch] = ns_running_update(j->update_var[ch], ns_unbiased_var(var, m), j->momentum);
}

// x (n,c,hw), gamma (c), beta (c) -> y (n,c,hw), mean (c), invstd (c);
// running_mean (c), running_var (c) updated in place
static void vec_bn_fwd_train(int n, int c, int hw, const float *x, const float *gamma,
                             const float *beta, float *y, float *mean, float *invstd,
                             float *running_mean, float *running_var, float momentum,
                             float eps) {
    struct bn_job j = {.n = n, .c = c, .hw = hw, .x = x, .gamma = gamma, .beta = beta, .y = y,
                       .save_mean = mean, .save_invstd = invstd, .update_mean = running_mean,
                       .update_var = running_var, .momentum = momentum, .eps = eps};
    bn_parallel(&j, bn_train_channel);
}

// x (n,c,hw), res (n,c,hw) or NULL, gamma (c), beta (c) -> y = relu(bn(x) + res),
// mean (c), invstd (c); running_mean (c), running_var (c) updated in place
static void vec_bn_relu_fwd_train(int n, int c, int hw, const float *x, const float *res,
                                  const float *gamma, const float *beta, float *y, float *mean,
                                  float *invstd, float *running_mean, float *running_var,
                                  float momentum, float eps) {
    struct bn_job j = {.n = n, .c = c, .hw = hw, .x = x, .res = res, .relu = true,
                       .gamma = gamma, .beta = beta, .y = y, .save_mean = mean,
                       .save_invstd = invstd, .update_mean = running_mean,
                       .update_var = running_var, .momentum = momentum, .eps = eps};
    bn_parallel(&j, bn_train_channel);
}

SIMD_CLONES
static void bn_eval_channel(void *ctx, int ch, int thread) {
    (void)thread;
    const struct bn_job *j = ctx;
    float mu = j->running_mean[ch], is = 1.0f / sqrtf(j->running_var[ch] + j->eps);
    float gamma = j->gamma[ch], beta = j->beta[ch];
    for (int i = 0; i < j->n; i++) {
        const float *row = j->x + ns_idx3(i, ch, 0, j->c, j->hw);
        float *out = j->y + ns_idx3(i, ch, 0, j->c, j->hw);
#pragma omp simd
        for (int q = 0; q < j->hw; q++) out[q] = ns_bn_normalize(row[q], mu, is, gamma, beta);
    }
}

// x (n,c,hw), gamma, beta, running_mean, running_var (c) -> y (n,c,hw)
static void vec_bn_fwd_eval(int n, int c, int hw, const float *x, const float *gamma,
                            const float *beta, const float *running_mean,
                            const float *running_var, float eps, float *y) {
    struct bn_job j = {.n = n, .c = c, .hw = hw, .x = x, .gamma = gamma, .beta = beta,
                       .running_mean = running_mean, .running_var = running_var, .y = y, .eps = eps};
    bn_parallel(&j, bn_eval_channel);
}

enum { BN_PIECE = 256 };

// channel ch: dx, dgamma, dbeta += batch norm's backward of g, where g = dy, or with
// the fused relu g = dy where y > 0 (and dres += g); dx, dres = when not acc_dx, acc_dres
SIMD_CLONES
static void bn_bwd_channel(void *ctx, int ch, int thread) {
    (void)thread;
    const struct bn_job *j = ctx;
    long m = (long)j->n * j->hw;
    float mu = j->mean[ch], is = j->invstd[ch], gamma = j->gamma[ch];
    double sum_g = 0.0, sum_g_xhat = 0.0;
    int la = planes_ahead(j->hw);
    size_t ahead = (size_t)la * j->c * j->hw;
    for (int i = 0; i < j->n; i++) {
        size_t at = ns_idx3(i, ch, 0, j->c, j->hw);
        const float *xr = j->x + at, *dyr = j->dy + at, *yr = j->y_in ? j->y_in + at : NULL;
        float s = 0.0f, sx = 0.0f;
        if (i + la < j->n) {
            prefetch_read(xr + ahead, j->hw);
            prefetch_read(dyr + ahead, j->hw);
            if (yr) prefetch_read(yr + ahead, j->hw);
        }
        if (yr)
#pragma omp simd reduction(+ : s, sx)
            for (int q = 0; q < j->hw; q++) {
                float g = ns_relu_grad(yr[q], dyr[q]);
                s += g;
                sx += g * (xr[q] - mu) * is;
            }
        else
#pragma omp simd reduction(+ : s, sx)
            for (int q = 0; q < j->hw; q++) {
                s += dyr[q];
                sx += dyr[q] * (xr[q] - mu) * is;
            }
        sum_g += s;
        sum_g_xhat += sx;
    }
    float sg = (float)sum_g, sgx = (float)sum_g_xhat;
    /* the second pass by pieces of a row, so that g lands in L1 first: straight in
     * dres where dres is overwritten, else in g[] */
    float g[BN_PIECE];
    for (int i = 0; i < j->n; i++)
        for (int q0 = 0; q0 < j->hw; q0 += BN_PIECE) {
            size_t at = ns_idx3(i, ch, q0, j->c, j->hw);
            int len = min_int(BN_PIECE, j->hw - q0);
            if (i + la < j->n) {
                prefetch_write(j->dx + at + ahead, len);
                if (j->dres) prefetch_write(j->dres + at + ahead, len);
            }
            const float *xr = j->x + at, *dyr = j->dy + at, *gr = dyr;
            float *dxr = j->dx + at, *dres = j->dres ? j->dres + at : NULL;
            if (j->y_in) {
                const float *yr = j->y_in + at;
                float *gw = dres && !j->acc_dres ? dres : g;
#pragma omp simd
                for (int q = 0; q < len; q++) gw[q] = ns_relu_grad(yr[q], dyr[q]);
                gr = gw;
            }
            if (dres && gr != dres)
#pragma omp simd
                for (int q = 0; q < len; q++) dres[q] += gr[q];
            if (j->acc_dx)
#pragma omp simd
                for (int q = 0; q < len; q++) dxr[q] += ns_bn_dx(gr[q], (xr[q] - mu) * is, gamma, is, m, sg, sgx);
            else
#pragma omp simd
                for (int q = 0; q < len; q++) dxr[q] = ns_bn_dx(gr[q], (xr[q] - mu) * is, gamma, is, m, sg, sgx);
        }
    j->dgamma[ch] += sgx;
    j->dbeta[ch] += sg;
}

// x, dy (n,c,hw), gamma, mean, invstd (c) -> dx (n,c,hw) += (= when !acc_dx),
// dgamma (c) +=, dbeta (c) +=
static void vec_bn_bwd(int n, int c, int hw, const float *x, const float *dy,
                       const float *gamma, const float *mean, const float *invstd, float *dx,
                       bool acc_dx, float *dgamma, float *dbeta) {
    struct bn_job j = {.n = n, .c = c, .hw = hw, .x = x, .dy = dy, .gamma = gamma, .mean = mean,
                       .invstd = invstd, .dx = dx, .acc_dx = acc_dx, .dgamma = dgamma,
                       .dbeta = dbeta};
    bn_parallel(&j, bn_bwd_channel);
}

// x, y, dy (n,c,hw), gamma, mean, invstd (c) -> dx (n,c,hw) +=, dres (n,c,hw) += (or NULL),
// each = instead when its acc flag is false; dgamma (c) +=, dbeta (c) +=
static void vec_bn_relu_bwd(int n, int c, int hw, const float *x, const float *y,
                            const float *dy, const float *gamma, const float *mean,
                            const float *invstd, float *dx, bool acc_dx, float *dres,
                            bool acc_dres, float *dgamma, float *dbeta) {
    struct bn_job j = {.n = n, .c = c, .hw = hw, .x = x, .y_in = y, .dy = dy, .gamma = gamma,
                       .mean = mean, .invstd = invstd, .dx = dx, .acc_dx = acc_dx, .dres = dres,
                       .acc_dres = acc_dres, .dgamma = dgamma, .dbeta = dbeta};
    bn_parallel(&j, bn_bwd_channel);
}

/* ---- elementwise: blocks of EW_BLOCK floats, a task each ---- */

enum { EW_BLOCK = 1 << 14 };

/* One block's body: a, b and y offset to the block; unused operands NULL. */
typedef void ew_body(size_t n, float alpha, const float *a, const float *b, float *y);

struct ew_job {
    ew_body *body;
    size_t n;
    float alpha;
    const float *a, *b;
    float *y;
};

static void ew_task(void *ctx, int task, int thread) {
    (void)thread;
    const struct ew_job *j = ctx;
    size_t lo = (size_t)task * EW_BLOCK, len = j->n - lo < EW_BLOCK ? j->n - lo : EW_BLOCK;
    j->body(len, j->alpha, j->a ? j->a + lo : NULL, j->b ? j->b + lo : NULL, j->y + lo);
}

static void ew_run(ew_body *body, size_t n, float alpha, const float *a, const float *b, float *y) {
    struct ew_job j = {body, n, alpha, a, b, y};
    cpu_parallel((int)((n + EW_BLOCK - 1) / EW_BLOCK), threads_for((double)n), ew_task, &j);
}

SIMD_CLONES
static void relu_body(size_t n, float alpha, const float *x, const float *unused, float *y) {
    (void)alpha, (void)unused;
#pragma omp simd
    for (size_t i = 0; i < n; i++) y[i] = ns_relu(x[i]);
}

SIMD_CLONES
static void relu_bwd_body(size_t n, float alpha, const float *y, const float *dy, float *dx) {
    (void)alpha;
#pragma omp simd
    for (size_t i = 0; i < n; i++) dx[i] += ns_relu_grad(y[i], dy[i]);
}

SIMD_CLONES
static void add_body(size_t n, float alpha, const float *a, const float *b, float *y) {
    (void)alpha;
#pragma omp simd
    for (size_t i = 0; i < n; i++) y[i] = a[i] + b[i];
}

SIMD_CLONES
static void axpy_body(size_t n, float alpha, const float *x, const float *unused, float *y) {
    (void)unused;
#pragma omp simd
    for (size_t i = 0; i < n; i++) y[i] += alpha * x[i];
}

// x (n) -> y (n)
static void vec_relu_fwd(size_t n, const float *x, float *y) { ew_run(relu_body, n, 0, x, NULL, y); }

// y (n), dy (n) -> dx (n) +=
static void vec_relu_bwd(size_t n, const float *y, const float *dy, float *dx) {
    ew_run(relu_bwd_body, n, 0, y, dy, dx);
}

// a (n), b (n) -> y (n)
static void vec_add_fwd(size_t n, const float *a, const float *b, float *y) {
    ew_run(add_body, n, 0, a, b, y);
}

// x (n), y (n): y += alpha*x
static void vec_axpy(size_t n, float alpha, const float *x, float *y) {
    ew_run(axpy_body, n, alpha, x, NULL, y);
}

/* ---- pooling: the bodies are in cpu_common.c, planes spread over the threads ---- */

static bool pool_parallel(const struct pool_geom *g) {
    return threads_for((double)g->n * g->c * g->oh * g->ow * g->size * g->size) > 1;
}

// x (n,c,h,w) -> y (n,c,oh,ow), idx (n,c,oh,ow)
static void vec_maxpool_fwd(const struct pool_geom *g, const float *x, float *y, int32_t *idx) {
    cpu_maxpool_fwd(g, x, y, idx, pool_parallel(g));
}

// idx (n,c,oh,ow), dy (n,c,oh,ow) -> dx (n,c,h,w) +=
static void vec_maxpool_bwd(const struct pool_geom *g, const int32_t *idx, const float *dy,
                            float *dx) {
    cpu_maxpool_bwd(g, idx, dy, dx, pool_parallel(g));
}

// x (n,c,h,w) -> y (n,c,oh,ow)
static void vec_avgpool_fwd(const struct pool_geom *g, const float *x, float *y) {
    cpu_avgpool_fwd(g, x, y, pool_parallel(g));
}

// dy (n,c,oh,ow) -> dx (n,c,h,w) +=
static void vec_avgpool_bwd(const struct pool_geom *g, const float *dy, float *dx) {
    cpu_avgpool_bwd(g, dy, dx, pool_parallel(g));
}

/* ---- input ---- */

struct normalize_job {
    int h, w, c;
    const uint8_t *src;
    const float *mean, *std;
    float *dst;
};

// image i: src (h,w,c) -> dst (c,h,w), a plane at a time, written contiguously
static void normalize_image(void *ctx, int i, int thread) {
    (void)thread;
    const struct normalize_job *j = ctx;
    size_t hw = (size_t)j->h * j->w;
    for (int ch = 0; ch < j->c; ch++) {
        const uint8_t *in = j->src + (size_t)i * hw * j->c + ch;
        float *out = j->dst + ns_idx3(i, ch, 0, j->c, (int)hw);
        for (size_t p = 0; p < hw; p++) out[p] = ns_normalize_u8(in[p * j->c], j->mean[ch], j->std[ch]);
    }
}

// src uint8 (n,h,w,c), mean (c), std (c) -> dst (n,c,h,w)
static void vec_normalize_u8(int n, int h, int w, int c, const uint8_t *src,
                             const float *mean, const float *std, float *dst) {
    struct normalize_job j = {h, w, c, src, mean, std, dst};
    cpu_parallel(n, threads_for((double)n * c * h * w), normalize_image, &j);
}

const struct backend cpu_vectorized_backend = {
    .name = "cpu-vectorized",
    .dev = DEV_CPU,
    .flavour = KF_VECTORIZED,
    CPU_COMMON_MEMORY_ENTRIES,
    CPU_COMMON_SHARED_ENTRIES,
    .zero = vec_zero,
    .axpy = vec_axpy,
    .relu_fwd = vec_relu_fwd,
    .relu_bwd = vec_relu_bwd,
    .add_fwd = vec_add_fwd,
    .gemm = vec_gemm,
    .conv2d_workspace = vec_conv2d_workspace,
    .conv2d_fwd = vec_conv2d_fwd,
    .conv2d_bwd_data = vec_conv2d_bwd_data,
    .conv2d_bwd_filter = vec_conv2d_bwd_filter,
    .linear_fwd = vec_linear_fwd,
    .linear_bwd = vec_linear_bwd,
    .bn_fwd_train = vec_bn_fwd_train,
    .bn_fwd_eval = vec_bn_fwd_eval,
    .bn_bwd = vec_bn_bwd,
    .bn_relu_fwd_train = vec_bn_relu_fwd_train,
    .bn_relu_bwd = vec_bn_relu_bwd,
    .maxpool_fwd = vec_maxpool_fwd,
    .maxpool_bwd = vec_maxpool_bwd,
    .avgpool_fwd = vec_avgpool_fwd,
    .avgpool_bwd = vec_avgpool_bwd,
    .normalize_u8 = vec_normalize_u8,
};
