/* vec_conv.c — the vectorized table's convolutions (conv2d_fwd, conv2d_bwd_data,
 * conv2d_bwd_filter and conv2d_workspace): shifted GEMMs on a grid, no im2col, in
 * explicit SIMD, spread over cpu_parallel's threads by chunks of the batch. The table
 * and its other entries are in vectorized.c, batch norm in vec_bn.c; the SIMD types and
 * macros and the helpers these files share in vec.h.
 * They compute what loop.c computes, to float32 tolerance (tests/test_kernels.c). */
#include <string.h>

#include "vec.h"

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

size_t vec_conv2d_workspace(const struct conv_geom *g) {
    struct conv_plan p;
    conv_plan(g, &p);
    return conv_ws_layout(g, &p, NULL, NULL);
}

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
void vec_conv2d_fwd(const struct conv_geom *g, const float *x, const float *w,
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
void vec_conv2d_bwd_data(const struct conv_geom *g, const float *dy, const float *w,
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
                if (b + 1 < nb) /* the next image's block (see "asking ahead", vec.h) */
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
void vec_conv2d_bwd_filter(const struct conv_geom *g, const float *x, const float *dy,
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
