/* test_cuda.c — the CUDA tables against the CPU, and the copy stage.
 *
 *  - cuda_ops: one test per backend entry. Each runs every case of that entry
 *    (odd sizes, stride 1/2, pad 0/1/2, kernel 1/3/5, batch 1 and 3, shapes of
 *    resnet_small, misaligned pointers, ties) on the CPU loop table and on both
 *    CUDA tables, from the same random inputs, and wants agreement to 1e-4
 *    relative. Every buffer lives in the table's own memory with a guard zone
 *    after it that must come back untouched; forward outputs start as NaN, so an
 *    element a kernel forgets shows; gradients start at random values, so a
 *    kernel that overwrites instead of accumulating disagrees with the CPU; a
 *    gradient the entry is told to overwrite (acc = false: the `overwrite` cases
 *    of conv2d_bwd_data and bn_bwd) starts as NaN like a forward output, so a
 *    kernel that still reads it, or skips an element, shows;
 *    inputs must come back bit for bit; the workspace starts as NaN bytes and has
 *    its own guard; and a second run of the same case must give the same bits.
 *    An entry a CUDA table leaves NULL is "not supported" there (backend.h): the
 *    test checks the other table and reports itself skipped, naming the table
 *    (the fused batch norm + ReLU, which neither has, is skipped outright).
 *  - cuda_bodies: no GPU needed, and built and run without CUDA too. The
 *    per-element bodies the CUDA kernels call (kernels/km_elem.h: gemm, direct and
 *    im2col convolution, pooling, batch norm) run here over every element, as a CPU
 *    table, through the same cases and checks against the CPU loop table; and the
 *    window arithmetic against brute force. The loop table runs most of these
 *    bodies itself (all but im2col and batch norm's per-element ones), so for
 *    those this checks the CUDA-side wiring; test_kernels checks the bodies
 *    against the vectorized table and finite differences. Batch norm's backward
 *    dx body, which no CPU table calls, is also checked element by element
 *    against both CPU tables, to a tolerance relative to each element's terms.
 *  - cuda: the tables fill every entry a training step calls; the copy stage
 *    moves bytes unchanged from pinned and pageable memory on either stream;
 *    events order the streams; a ring of two slots with a slow consumer never
 *    overwrites a slot the device still reads; out-of-memory and device faults
 *    are reported; a context that fails partway names the call and frees what it
 *    made (the emulated device); cuDNN's failures move convolutions to im2col +
 *    cuBLAS (a cuDNN build); TF32 switches; a whole training step of resnet_small
 *    matches the CPU's.
 *
 * Without a usable GPU (no driver, no device, or a build without CUDA), every
 * test that needs one reports itself skipped and says why; one test checks the
 * error backend_get gives then. */
#include <criterion/criterion.h>
#include <math.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "autograd.h"
#include "backend.h"
#include "checkpoint.h"
#include "config.h"
#include "data.h"
#include "error.h"
#include "evaluate.h"
#include "feeder.h"
#include "fixtures/datagen.h"
#include "kcases.h"
#include "km_elem.h"
#include "km_math.h"
#include "models.h"
#include "nn.h"
#include "ops.h"
#include "optim.h"
#include "testutil.h"
#include "train.h"

#ifdef NS_HAVE_CUDA
#include "cuda/cuda_backend.h"
#if NS_EMU
#include "emu.h"
#endif
#else
/* A build without CUDA: every test skips before it could call these. */
static inline void cuda_set_tf32(bool on) { (void)on; }
static inline const char *cuda_backend_error(void) { return NULL; }
static inline int cuda_backend_check(void) { return 0; }
static inline void cuda_spin_us(unsigned us) { (void)us; }
static inline void cuda_checksum_u8(const uint8_t *d, size_t n, uint32_t *out) { (void)d, (void)n, (void)out; }
static inline uint32_t cuda_checksum_host(const uint8_t *b, size_t n) { (void)b, (void)n; return 0; }
static inline void cuda_set_conv_chunk_bytes(size_t bytes) { (void)bytes; }
static inline bool cuda_has_cudnn(void) { return false; }
#endif

#include "ring_check.h"

/* ---- the GPU, or a skip that says why ---- */

static void need_gpu(void) {
    char why[256] = "";
    if (backend_gpu_count(why, sizeof why) == 0) cr_skip_test("no usable GPU: %s", why);
}

/* Criterion lists skipped tests only with --verbose; `make test` runs it without,
 * so the reason is also said here, after every test has run (this runs in the
 * runner process, so it must not touch the GPU before the tests fork): once for
 * the lack of a GPU, else for each test (an entry a CUDA table leaves NULL). */
ReportHook(POST_ALL)(struct criterion_global_stats *stats) {
    char why[256] = "";
    if (stats->tests_skipped == 0) return;
    if (backend_gpu_count(why, sizeof why) == 0)
        printf("[SKIP] test_cuda: %zu tests skipped: no usable GPU: %s\n", stats->tests_skipped,
               why);
    else
        report_skips("test_cuda", stats);
}

static const struct backend *cuda_table(enum kernel_flavour fl) {
    const struct backend *be = backend_get(DEV_CUDA, fl);
    cr_assert_not_null(be, "backend_get(cuda, %s) with a GPU present: %s", kernel_flavour_name(fl),
                       err_get());
    return be;
}

static void expect_no_cuda_error(const char *what) {
    const char *e = cuda_backend_error();
    cr_expect(e == NULL, "%s: the CUDA backend recorded an error: %s", what, e ? e : "");
}

/* ---- what kcases.h leaves to this suite ---- */

/* labels, max indices, the workspace and u8 images: in the table's own memory */
static void *table_alloc(const struct backend *be, size_t bytes) {
    void *d = be->alloc(bytes ? bytes : 1);
    cr_assert_not_null(d, "%s: alloc of %zu bytes: %s", be->name, bytes, err_get());
    return d;
}
static void table_free(const struct backend *be, void *p) { be->free(p); }

/* normalize_u8: d = (n, h, w, c). mean and std are host arrays (backend.h), so they
 * are made here rather than being buffers of the table. */
static int normalize_u8_layout(const struct kcase *c, struct buf *b) {
    b[0] = BUF("dst", OUT, c->d[0] * c->d[1] * c->d[2] * c->d[3], 0, 0);
    return 1;
}
static void normalize_u8_call(const struct backend *be, const struct kcase *c, float **b,
                              void *ws) {
    (void)ws;
    size_t n = (size_t)c->d[0] * c->d[1] * c->d[2] * c->d[3];
    int ch = c->d[3];
    uint8_t *src = malloc(n ? n : 1);
    float *mean = malloc(sizeof(float) * ch), *std = malloc(sizeof(float) * ch);
    uint64_t seed = 0xb17e5;
    for (size_t i = 0; i < n; i++) src[i] = (uint8_t)tu_rand_u32(&seed);
    tu_fill(&seed, mean, ch, 0, 1);
    tu_fill(&seed, std, ch, 0.2f, 1);
    uint8_t *dsrc = table_copy_of(be, src, n);
    be->normalize_u8(c->d[0], c->d[1], c->d[2], ch, dsrc, mean, std, b[0]);
    table_free(be, dsrc);
    free(src);
    free(mean);
    free(std);
}

/* ---- the cases: the shared ones, and the CUDA tables' own ---- */

#define MISALIGNED(op_, n) {.op = OP_##op_, .d = {n}, .s = {0.5f}, .shift = 1}

enum { BIG = (1 << 20) + 3 }; /* many blocks, and a tail after the last float4 */

static struct kcase cases[] = {
    KCASES_SHARED,
    GEMM(3, 4, 0, false, false, 1, 0.5f), /* k = 0: C = beta C */
    GEMM(129, 257, 65, false, false, 1, 0),
    GEMM(129, 257, 65, true, false, 1, 1),
    GEMM(129, 257, 65, false, true, 2, 0),
    GEMM(129, 257, 65, true, true, 1, -1),
    GEMM(1, 1000, 3, false, false, 1, 0),
    {.op = OP_axpy, .d = {BIG}, .s = {0.25f}},
    MISALIGNED(axpy, 1027),
    /*   n  c   h   w  k  r  s st pad */
    CONV(1, 3,  9,  9, 2, 5, 5, 2, 1),
    /* resnet_small's layers at batch 8 */
    CONV(8, 1, 28, 28, 16, 3, 3, 1, 1),
    CONV(8, 16, 28, 28, 32, 3, 3, 2, 1),
    CONV(8, 32, 14, 14, 64, 1, 1, 2, 0),
    CONV(8, 64, 7, 7, 64, 3, 3, 1, 1),
    /* and at its batch, 128: the im2col chunks and grids of a real step */
    CONV(128, 1, 28, 28, 16, 3, 3, 1, 1),
    CONV(128, 16, 28, 28, 32, 3, 3, 2, 1),
    LINEAR(64, 300, 10),
    BN(3, 5, 10007), /* slices of a channel that don't divide evenly */
    BN(128, 16, 784), /* resnet_small's stem at batch 128: 49 slices per channel */
    BN(256, 3, 784), /* past BN_MAX_CHUNKS: 98 slices wanted, 64 made, each longer */
    {.op = OP_bn_fwd_train, .d = {3, 4, 999}, .s = {0.1f, 1e-5f}, .offset = 50},
    SIZED(relu_fwd, BIG, 0, 0, 0), SIZED(relu_bwd, BIG, 0, 0, 0), SIZED(add_fwd, BIG, 0, 0, 0),
    MISALIGNED(relu_fwd, 1027), MISALIGNED(relu_bwd, 1027), MISALIGNED(add_fwd, 1027),
    POOL(2, 3, 28, 28, 2, 2, 0),
    {.op = OP_maxpool_fwd, .pg = {3, 2, 9, 9, 3, 1, 1, 0, 0}, .integers = true}, /* ties */
    {.op = OP_maxpool_bwd, .pg = {3, 2, 9, 9, 3, 1, 1, 0, 0}, .integers = true},
    SIZED(gap_fwd, 128, 64, 49, 0), SIZED(gap_bwd, 128, 64, 49, 0),
    SIZED(gap_fwd, 3, 7, 1000, 0), SIZED(gap_bwd, 3, 7, 1000, 0),
    LOSS(128, 10),
    LOSS(5, 100),  /* more classes than a warp has lanes */
    LOSS(3, 1000),
    {.op = OP_argmax_correct, .d = {200, 6}, .integers = true}, /* ties: the first max wins */
    SIZED(normalize_u8, 2, 5, 7, 70), /* more channels than one launch takes */
    SIZED(normalize_u8, 128, 28, 28, 1),
    SGD(BIG, 0.1f, 0.9f, 5e-4f, true),
    {.op = OP_sgd_step, .d = {1027}, .s = {0.1f, 0.9f, 5e-4f}, .flag = true, .shift = 1},
};

/* ---- running one case on one table, in the table's memory ---- */

enum { GUARD = 64 };                    /* floats after every buffer that nothing may touch */
static const uint32_t GUARD_BITS = 0x7fc0beefu; /* a NaN no kernel computes */

static float *guard_pattern(void) {
    static float g[GUARD];
    for (int i = 0; i < GUARD; i++) memcpy(&g[i], &GUARD_BITS, sizeof(float));
    return g;
}

static bool guard_intact(const float *after) {
    return memcmp(after, guard_pattern(), sizeof(float) * GUARD) == 0;
}

/* Inputs are drawn in the same order on every table, so every run sees the same. */
static void run_case(const struct kcase *c, const struct backend *be, struct run *r) {
    uint64_t seed = case_seed(c);
    r->nb = op_of(c)->layout(c, r->spec);
    float *raw[MAX_BUFS] = {0}, *dev[MAX_BUFS] = {0};
    for (int i = 0; i < r->nb; i++) {
        const struct buf *s = &r->spec[i];
        r->data[i] = r->start[i] = NULL;
        r->guard_ok[i] = true;
        if (s->n == 0) continue;
        r->data[i] = malloc((s->n + GUARD) * sizeof(float));
        r->start[i] = malloc(s->n * sizeof(float));
        tu_fill(&seed, r->data[i], s->n, s->lo, s->hi);
        if (c->integers) for (size_t j = 0; j < s->n; j++) r->data[i][j] = floorf(r->data[i][j]);
        if (s->role == OUT) for (size_t j = 0; j < s->n; j++) r->data[i][j] = NAN;
        memcpy(r->start[i], r->data[i], s->n * sizeof(float));
        memcpy(r->data[i] + s->n, guard_pattern(), sizeof(float) * GUARD);
        raw[i] = be->alloc((c->shift + s->n + GUARD) * sizeof(float));
        cr_assert_not_null(raw[i], "%s: alloc: %s", be->name, err_get());
        dev[i] = raw[i] + c->shift;
        be->copy(dev[i], r->data[i], (s->n + GUARD) * sizeof(float), COPY_H2D);
    }
    size_t ws_bytes = op_of(c)->conv_ws ? be->conv2d_workspace(&c->cg) : 0;
    size_t ws_total = ws_bytes + GUARD * sizeof(float);
    unsigned char *ws_host = malloc(ws_total);
    memset(ws_host, 0xff, ws_bytes); /* all-ones bytes are NaN floats: "undefined on entry" */
    memcpy(ws_host + ws_bytes, guard_pattern(), sizeof(float) * GUARD);
    void *ws = table_copy_of(be, ws_host, ws_total);

    op_of(c)->call(be, c, dev, ws);

    be->copy(ws_host, ws, ws_total, COPY_D2H);
    r->ws_guard_ok = guard_intact((const float *)(ws_host + ws_bytes));
    table_free(be, ws);
    free(ws_host);
    for (int i = 0; i < r->nb; i++) {
        if (!raw[i]) continue;
        be->copy(r->data[i], dev[i], (r->spec[i].n + GUARD) * sizeof(float), COPY_D2H);
        r->guard_ok[i] = guard_intact(r->data[i] + r->spec[i].n);
        be->free(raw[i]);
    }
}

static size_t first_difference(const float *a, const float *b, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (memcmp(&a[i], &b[i], sizeof(float)) != 0) return i;
    return n;
}

/* Everything the CUDA run `got` must satisfy, against the CPU reference `ref`. */
static void compare_runs(const char *name, const char *table, const struct run *ref,
                         const struct run *got) {
    cr_expect(got->ws_guard_ok, "%s on %s: wrote past the end of its workspace", name, table);
    for (int i = 0; i < got->nb; i++) {
        const struct buf *s = &got->spec[i];
        if (s->n == 0) continue;
        cr_expect(got->guard_ok[i], "%s on %s: wrote past the end of %s", name, table, s->name);
        if (s->role == IN) {
            size_t at = first_difference(got->data[i], got->start[i], s->n);
            cr_expect(at == s->n, "%s on %s: input %s was modified (first at %zu)", name, table,
                      s->name, at);
            continue;
        }
        double err = tu_tensor_rel_err(ref->data[i], got->data[i], s->n);
        if (s->exact) {
            size_t at = first_difference(ref->data[i], got->data[i], s->n);
            cr_expect(at == s->n, "%s on %s: %s differs at %zu: cpu %g, cuda %g", name, table,
                      s->name, at, at < s->n ? ref->data[i][at] : 0.0,
                      at < s->n ? got->data[i][at] : 0.0);
        } else {
            cr_expect(err <= AGREE_TOL, "%s on %s: %s differs from the CPU, rel err %g%s",
                      name, table, s->name, err,
                      isinf(err) ? " (NaN or inf: an element unwritten, or overflow)" : "");
        }
    }
}

/* Two runs of one case on one table give the same bits (no atomics, deterministic
 * cuDNN algorithms): a seeded training run is reproducible. */
static void compare_repeat(const char *name, const char *table, const struct run *a,
                           const struct run *b) {
    for (int i = 0; i < a->nb; i++) {
        const struct buf *s = &a->spec[i];
        if (s->n == 0 || s->role == IN) continue;
        size_t at = first_difference(a->data[i], b->data[i], s->n);
        cr_expect(at == s->n, "%s on %s: a second run gives different bits in %s (first at %zu)",
                  name, table, s->name, at);
    }
}

static void check_case_on(const struct kcase *c, const char *name, const struct backend *be,
                          const struct run *ref) {
    struct run got, again;
    run_case(c, be, &got);
    expect_no_cuda_error(name);
    compare_runs(name, be->name, ref, &got);
    run_case(c, be, &again);
    compare_repeat(name, be->name, &got, &again);
    run_free(&got);
    run_free(&again);
}

/* im2col works on chunks of images; with cuDNN this changes nothing */
static size_t conv_image_bytes(const struct conv_geom *g) {
    return ((size_t)g->c * g->r * g->s + g->k) * g->oh * g->ow * sizeof(float);
}

static void check_op(enum op_id op) {
    need_gpu();
    const struct backend *all[] = {cuda_table(KF_LOOP), cuda_table(KF_VECTORIZED)}, *tables[2];
    char lacking[128];
    int n = tables_with(&ops[op], all, 2, tables, lacking, sizeof lacking);
    if (n == 0) skip_unsupported(ops[op].name, lacking);
    int ran = 0;
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        if (cases[k].op != op) continue;
        struct kcase c = cases[k];
        case_complete(&c);
        char name[256];
        case_str(op_of(&c)->name, &c, name, sizeof name);
        struct run ref;
        run_case(&c, &cpu_loop_backend, &ref);
        for (int t = 0; t < n; t++) check_case_on(&c, name, tables[t], &ref);
        if (op_of(&c)->conv_ws && !cuda_has_cudnn() && ops[op].on(all[1])) {
            /* one image per chunk, then two and a half images' worth: uneven chunks */
            size_t sizes[] = {1, conv_image_bytes(&c.cg) * 5 / 2};
            for (int s = 0; s < 2; s++) {
                char chunked[300];
                snprintf(chunked, sizeof chunked, "%s (chunks of %zu bytes)", name, sizes[s]);
                cuda_set_conv_chunk_bytes(sizes[s]);
                check_case_on(&c, chunked, all[1], &ref);
            }
            cuda_set_conv_chunk_bytes((size_t)64 << 20);
        }
        run_free(&ref);
        ran++;
    }
    cr_assert(ran > 0, "no cases for this entry");
    if (n < 2) skip_unsupported(ops[op].name, lacking); /* checked on the other table only */
}

#define OP_TEST(id, flags) Test(cuda_ops, id) { check_op(OP_##id); }
KCASE_OPS(OP_TEST)

/* ---- the kernels' bodies, run on the CPU ----
 * A CPU table whose gemm, convolution, pooling and batch norm entries do what a CUDA
 * grid does: for every flat index o of the output (or every channel), split o into
 * coordinates with km_unflatten2/3/4 as the kernel does, and call the same km_elem.h
 * function a CUDA thread calls for it. The CPU loop table it is compared with calls
 * the direct bodies from nested loops, so the split is checked too. */

static void body_gemm(bool ta, bool tb, int m, int n, int k, float alpha, const float *a,
                      const float *b, float beta, float *c) {
    for (size_t o = 0; o < (size_t)m * n; o++) {
        int i, j;
        km_unflatten2(o, n, &i, &j);
        c[o] = km_gemm_at(ta, tb, m, n, k, alpha, a, b, beta, c, i, j);
    }
}
static size_t body_no_workspace(const struct conv_geom *g) { (void)g; return 0; }
static void body_conv2d_fwd(const struct conv_geom *g, const float *x, const float *w,
                            const float *bias, float *y, void *ws) {
    (void)ws;
    for (size_t o = 0; o < conv_y_n(g); o++) {
        int b, ko, oy, ox;
        km_unflatten4(o, g->k, g->oh, g->ow, &b, &ko, &oy, &ox);
        y[o] = km_conv_fwd_at(g, x, w, bias, b, ko, oy, ox);
    }
}
static void body_conv2d_bwd_data(const struct conv_geom *g, const float *dy, const float *w,
                                 float *dx, bool acc, void *ws) {
    (void)ws;
    for (size_t o = 0; o < conv_x_n(g); o++) {
        int b, ci, iy, ix;
        km_unflatten4(o, g->c, g->h, g->w, &b, &ci, &iy, &ix);
        dx[o] = km_conv_bwd_data_at(g, dy, w, acc ? dx[o] : 0.0f, b, ci, iy, ix);
    }
}
/* the im2col path's bias gradient (cu_bias_grad): each channel's sum, then added */
static void body_bias_grad(const struct conv_geom *g, const float *dy, float *dbias) {
    size_t ohow = (size_t)g->oh * g->ow;
    for (int ko = 0; ko < g->k; ko++) {
        float sum = 0.0f;
        for (int b = 0; b < g->n; b++)
            for (size_t p = 0; p < ohow; p++) sum += dy[((size_t)b * g->k + ko) * ohow + p];
        dbias[ko] += sum;
    }
}
static void body_conv2d_bwd_filter(const struct conv_geom *g, const float *x, const float *dy,
                                   float *dw, float *dbias, void *ws) {
    (void)ws;
    for (size_t o = 0; o < conv_w_n(g); o++) {
        int ko, ci, ky, kx;
        km_unflatten4(o, g->c, g->r, g->s, &ko, &ci, &ky, &kx);
        dw[o] = km_conv_bwd_filter_at(g, x, dy, dw[o], ko, ci, ky, kx);
    }
    if (dbias)
        for (int ko = 0; ko < g->k; ko++)
            dbias[ko] = km_bias_grad_at(g->n, g->k, g->oh * g->ow, dy, dbias[ko], ko);
}

/* The im2col path of cuda_conv_im2col.cu, two images per chunk (so a batch of 3
 * ends in a short chunk), its gemms by the CPU loop table. */
enum { BODY_CHUNK = 2 };
static size_t body_crs(const struct conv_geom *g) { return (size_t)g->c * g->r * g->s; }
static size_t body_im2col_workspace(const struct conv_geom *g) {
    return BODY_CHUNK * (body_crs(g) + g->k) * g->oh * g->ow * sizeof(float);
}
/* im2col_kernel: col (c*r*s, nb*oh*ow) of images [b0, b0+nb) */
static void body_im2col(const struct conv_geom *g, int b0, int nb, const float *x, float *col) {
    for (size_t o = 0; o < body_crs(g) * nb * g->oh * g->ow; o++) {
        int row, bl, oy, ox, ci, ky, kx;
        km_unflatten4(o, nb, g->oh, g->ow, &row, &bl, &oy, &ox);
        km_unflatten3((size_t)row, g->r, g->s, &ci, &ky, &kx);
        col[o] = km_im2col_at(g, x, ci, ky, kx, b0 + bl, oy, ox);
    }
}
/* gather_dy_kernel: dy of images [b0, b0+nb) -> yp (k, nb*oh*ow) */
static void body_gather_dy(const struct conv_geom *g, int b0, int nb, const float *dy, float *yp) {
    size_t image = (size_t)g->k * g->oh * g->ow;
    for (size_t o = 0; o < nb * image; o++) {
        int bl, ko, p;
        km_unflatten3(o, g->k, g->oh * g->ow, &bl, &ko, &p);
        yp[km_chunk_kp_index(g, nb, bl, ko, p)] = dy[b0 * image + o];
    }
}
static void body_im2col_fwd(const struct conv_geom *g, const float *x, const float *w,
                            const float *bias, float *y, void *ws) {
    size_t ohow = (size_t)g->oh * g->ow, image = g->k * ohow;
    float *col = ws, *yp = col + body_crs(g) * BODY_CHUNK * ohow;
    for (int b0 = 0; b0 < g->n; b0 += BODY_CHUNK) {
        int nb = g->n - b0 < BODY_CHUNK ? g->n - b0 : BODY_CHUNK, cols = (int)(nb * ohow);
        body_im2col(g, b0, nb, x, col);
        cpu_loop_backend.gemm(false, false, g->k, cols, (int)body_crs(g), 1.0f, w, col, 0.0f, yp);
        for (size_t o = 0; o < nb * image; o++) { /* scatter_y_kernel */
            int bl, ko, p;
            km_unflatten3(o, g->k, g->oh * g->ow, &bl, &ko, &p);
            y[b0 * image + o] = yp[km_chunk_kp_index(g, nb, bl, ko, p)] + (bias ? bias[ko] : 0.0f);
        }
    }
}
static void body_im2col_bwd_data(const struct conv_geom *g, const float *dy, const float *w,
                                 float *dx, bool acc, void *ws) {
    size_t ohow = (size_t)g->oh * g->ow, ximage = (size_t)g->c * g->h * g->w;
    float *col = ws, *yp = col + body_crs(g) * BODY_CHUNK * ohow;
    for (int b0 = 0; b0 < g->n; b0 += BODY_CHUNK) {
        int nb = g->n - b0 < BODY_CHUNK ? g->n - b0 : BODY_CHUNK, cols = (int)(nb * ohow);
        body_gather_dy(g, b0, nb, dy, yp);
        cpu_loop_backend.gemm(true, false, (int)body_crs(g), cols, g->k, 1.0f, w, yp, 0.0f, col);
        for (size_t o = 0; o < nb * ximage; o++) { /* col2im_kernel */
            int bl, ci, iy, ix;
            km_unflatten4(o, g->c, g->h, g->w, &bl, &ci, &iy, &ix);
            float v = km_col2im_at(g, nb, col, bl, ci, iy, ix);
            dx[b0 * ximage + o] = acc ? dx[b0 * ximage + o] + v : v;
        }
    }
}
static void body_im2col_bwd_filter(const struct conv_geom *g, const float *x, const float *dy,
                                   float *dw, float *dbias, void *ws) {
    size_t ohow = (size_t)g->oh * g->ow;
    float *col = ws, *yp = col + body_crs(g) * BODY_CHUNK * ohow;
    for (int b0 = 0; b0 < g->n; b0 += BODY_CHUNK) {
        int nb = g->n - b0 < BODY_CHUNK ? g->n - b0 : BODY_CHUNK, cols = (int)(nb * ohow);
        body_im2col(g, b0, nb, x, col);
        body_gather_dy(g, b0, nb, dy, yp);
        cpu_loop_backend.gemm(false, true, g->k, (int)body_crs(g), cols, 1.0f, yp, col, 1.0f, dw);
    }
    if (dbias) body_bias_grad(g, dy, dbias);
}

static void body_maxpool_fwd(const struct pool_geom *g, const float *x, float *y, int32_t *idx) {
    for (size_t o = 0; o < pool_y_n(g); o++) {
        int b, ch, oy, ox;
        km_unflatten4(o, g->c, g->oh, g->ow, &b, &ch, &oy, &ox);
        y[o] = km_maxpool_fwd_at(g, x, b, ch, oy, ox, &idx[o]);
    }
}
static void body_maxpool_bwd(const struct pool_geom *g, const int32_t *idx, const float *dy,
                             float *dx) {
    for (size_t i = 0; i < pool_x_n(g); i++) {
        int b, ch, iy, ix;
        km_unflatten4(i, g->c, g->h, g->w, &b, &ch, &iy, &ix);
        dx[i] = km_maxpool_bwd_at(g, idx, dy, dx[i], b, ch, iy, ix);
    }
}
static void body_avgpool_fwd(const struct pool_geom *g, const float *x, float *y) {
    for (size_t o = 0; o < pool_y_n(g); o++) {
        int b, ch, oy, ox;
        km_unflatten4(o, g->c, g->oh, g->ow, &b, &ch, &oy, &ox);
        y[o] = km_avgpool_fwd_at(g, x, b, ch, oy, ox);
    }
}
static void body_avgpool_bwd(const struct pool_geom *g, const float *dy, float *dx) {
    for (size_t i = 0; i < pool_x_n(g); i++) {
        int b, ch, iy, ix;
        km_unflatten4(i, g->c, g->h, g->w, &b, &ch, &iy, &ix);
        dx[i] = km_avgpool_bwd_at(g, dy, dx[i], b, ch, iy, ix);
    }
}

/* batch norm as cuda_loop.cu runs it: a pass per channel, then a pass per element */
static void body_bn_fwd_train(int n, int c, int hw, const float *x, const float *gamma,
                              const float *beta, float *y, float *mean, float *invstd,
                              float *running_mean, float *running_var, float momentum,
                              float eps) {
    for (int ch = 0; ch < c; ch++)
        km_bn_stats_at(n, c, hw, x, mean, invstd, running_mean, running_var, momentum, eps, ch);
    for (size_t o = 0; o < (size_t)n * c * hw; o++) {
        int i, ch, j;
        km_unflatten3(o, c, hw, &i, &ch, &j);
        y[o] = km_bn_apply_at(c, hw, x, mean, invstd, gamma, beta, i, ch, j);
    }
}
static void body_bn_fwd_eval(int n, int c, int hw, const float *x, const float *gamma,
                             const float *beta, const float *running_mean,
                             const float *running_var, float eps, float *y) {
    for (size_t o = 0; o < (size_t)n * c * hw; o++) {
        int i, ch, j;
        km_unflatten3(o, c, hw, &i, &ch, &j);
        y[o] = km_bn_eval_at(c, hw, x, gamma, beta, running_mean, running_var, eps, i, ch, j);
    }
}
/* cuda_loop.cu's bn_bwd_sums_kernel: sums (c,2) = (sum dy, sum dy*xhat), in float */
static void body_bn_bwd_sums(int n, int c, int hw, const float *x, const float *dy,
                             const float *mean, const float *invstd, float *sums) {
    for (int ch = 0; ch < c; ch++) {
        double sum_dy, sum_dy_xhat;
        km_bn_bwd_sums_at(n, c, hw, x, dy, mean, invstd, ch, &sum_dy, &sum_dy_xhat);
        sums[2 * ch] = (float)sum_dy;
        sums[2 * ch + 1] = (float)sum_dy_xhat;
    }
}
static void body_bn_bwd(int n, int c, int hw, const float *x, const float *dy,
                        const float *gamma, const float *mean, const float *invstd, float *dx,
                        bool acc_dx, float *dgamma, float *dbeta) {
    float *sums = malloc(sizeof(float) * 2 * (size_t)(c ? c : 1));
    cr_assert_not_null(sums);
    body_bn_bwd_sums(n, c, hw, x, dy, mean, invstd, sums);
    for (int ch = 0; ch < c; ch++) {
        dgamma[ch] += sums[2 * ch + 1];
        dbeta[ch] += sums[2 * ch];
    }
    for (size_t o = 0; o < (size_t)n * c * hw; o++) {
        int i, ch, j;
        km_unflatten3(o, c, hw, &i, &ch, &j);
        float v = km_bn_bwd_dx_at(c, hw, (long)n * hw, x, dy, gamma, mean, invstd, sums, i, ch, j);
        dx[o] = acc_dx ? dx[o] + v : v;
    }
    free(sums);
}

/* the CPU loop table with the bodies' entries; im2col: its convolutions instead */
static struct backend bodies_table(bool im2col) {
    struct backend b = cpu_loop_backend;
    b.name = im2col ? "cuda-im2col-bodies-on-cpu" : "cuda-bodies-on-cpu";
    b.gemm = body_gemm;
    b.conv2d_workspace = im2col ? body_im2col_workspace : body_no_workspace;
    b.conv2d_fwd = im2col ? body_im2col_fwd : body_conv2d_fwd;
    b.conv2d_bwd_data = im2col ? body_im2col_bwd_data : body_conv2d_bwd_data;
    b.conv2d_bwd_filter = im2col ? body_im2col_bwd_filter : body_conv2d_bwd_filter;
    b.maxpool_fwd = body_maxpool_fwd;
    b.maxpool_bwd = body_maxpool_bwd;
    b.avgpool_fwd = body_avgpool_fwd;
    b.avgpool_bwd = body_avgpool_bwd;
    b.bn_fwd_train = body_bn_fwd_train;
    b.bn_fwd_eval = body_bn_fwd_eval;
    b.bn_bwd = body_bn_bwd;
    return b;
}

static void check_bodies(enum op_id op) {
    struct backend direct = bodies_table(false), im2col = bodies_table(true);
    int ran = 0;
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        if (cases[k].op != op) continue;
        struct kcase c = cases[k];
        case_complete(&c);
        char name[256];
        case_str(op_of(&c)->name, &c, name, sizeof name);
        struct run ref, got;
        run_case(&c, &cpu_loop_backend, &ref);
        run_case(&c, &direct, &got);
        compare_runs(name, direct.name, &ref, &got);
        run_free(&got);
        if (op_of(&c)->conv_ws) {
            run_case(&c, &im2col, &got);
            compare_runs(name, im2col.name, &ref, &got);
            run_free(&got);
        }
        run_free(&ref);
        ran++;
    }
    cr_assert(ran > 0, "no cases for this entry");
}

#define BODY_OPS(X) X(gemm) X(conv2d_fwd) X(conv2d_bwd_data) X(conv2d_bwd_filter) \
    X(maxpool_fwd) X(maxpool_bwd) X(avgpool_fwd) X(avgpool_bwd) \
    X(bn_fwd_train) X(bn_fwd_eval) X(bn_bwd)
#define BODY_TEST(id) Test(cuda_bodies, id) { check_bodies(OP_##id); }
BODY_OPS(BODY_TEST)

/* ---- batch norm's backward dx body, element by element, against both CPU tables ----
 * km_bn_bwd_dx_at is what every thread of the last pass of bn_bwd runs on the GPU, from
 * the sums (c,2) = (sum dy, sum dy*xhat) per channel that an earlier pass left in
 * scratch. No CPU table calls it (they call km_bn_dx), so it is run here, with its sums
 * made both ways the CUDA tables make them: cuda_loop.cu's km_bn_bwd_sums_at in double
 * (body_bn_bwd_sums), and cuda_vectorized.cu's float partial sums over slices of the
 * channel (km_bn_at), added up in double (bn_vec_style_sums). The bn_bwd table test
 * above measures errors against max(1, |a|, |b|), under which a wrong dx of a small dy
 * passes; here each element's error is measured against the size of the terms it is
 * made of, gamma*invstd/m * (m|dy| + sum|dy| + |xhat| sum|dy*xhat|), the scale that
 * float rounding in either sum can reach, so the check holds at any scale of dy. */

enum { BN_VEC_CHUNKS = 5, BN_VEC_THREADS = 8 };

/* bn_bwd_partial_kernel with BN_VEC_CHUNKS blocks of BN_VEC_THREADS threads per channel
 * (each thread's run of elements summed in float, as the block's are), then
 * bn_bwd_finish_kernel's sum of the partials in double */
static void bn_vec_style_sums(int n, int c, int hw, const float *x, const float *dy,
                              const float *mean, const float *invstd, float *sums) {
    size_t m = (size_t)n * hw;
    for (int ch = 0; ch < c; ch++) {
        double sum_dy = 0.0, sum_dy_xhat = 0.0;
        for (int chunk = 0; chunk < BN_VEC_CHUNKS; chunk++) {
            float s = 0.0f, sx = 0.0f;
            for (int t = 0; t < BN_VEC_THREADS; t++)
                for (size_t e = (size_t)chunk * BN_VEC_THREADS + t; e < m;
                     e += (size_t)BN_VEC_CHUNKS * BN_VEC_THREADS) {
                    size_t at = km_bn_at(e, ch, c, hw);
                    s += dy[at];
                    sx += dy[at] * ((x[at] - mean[ch]) * invstd[ch]);
                }
            sum_dy += s;
            sum_dy_xhat += sx;
        }
        sums[2 * ch] = (float)sum_dy;
        sums[2 * ch + 1] = (float)sum_dy_xhat;
    }
}

/* largest |got - want| / scale allowed, scale as above: float32 rounding, with room */
static const double BN_DX_TOL = 1e-5;

struct bn_shape {
    int n, c, hw;
    float dy_scale; /* dy = dy_scale * (uniform(-1,1) + an offset per channel) */
};

Test(cuda_bodies, bn_bwd_dx_body_matches_both_cpu_tables_elementwise) {
    static const struct bn_shape shapes[] = {
        {2, 3, 1, 1.0f},     /* one pixel: m = 2, xhat = +-1 */
        {3, 4, 7, 1.0f},
        {2, 5, 49, 1e-3f},   /* a small gradient */
        {4, 3, 257, 1.0f},
        {3, 2, 1001, 1e-4f}, /* smaller still, over a long channel */
        {5, 6, 15, 1.0f},
    };
    const struct backend *tables[] = {backend_get(DEV_CPU, KF_LOOP),
                                      backend_get(DEV_CPU, KF_VECTORIZED)};
    for (int t = 0; t < 2; t++) cr_assert_not_null(tables[t], "backend_get(cpu): %s", err_get());
    uint64_t seed = 0xb17d7;
    for (size_t si = 0; si < sizeof shapes / sizeof shapes[0]; si++) {
        const struct bn_shape *sh = &shapes[si];
        int n = sh->n, c = sh->c, hw = sh->hw;
        size_t total = (size_t)n * c * hw;
        long m = (long)n * hw;
        float *x = malloc(sizeof(float) * total), *dy = malloc(sizeof(float) * total);
        float *dx = malloc(sizeof(float) * total), *body = malloc(sizeof(float) * total);
        float *gamma = malloc(sizeof(float) * c), *mean = malloc(sizeof(float) * c);
        float *invstd = malloc(sizeof(float) * c), *sums = malloc(sizeof(float) * 2 * c);
        float *dgamma = malloc(sizeof(float) * c), *dbeta = malloc(sizeof(float) * c);
        double *abs_dy = malloc(sizeof(double) * c), *abs_dy_xhat = malloc(sizeof(double) * c);
        tu_fill(&seed, x, total, -2, 3);
        tu_fill(&seed, gamma, c, 0.5f, 1.5f);
        for (int ch = 0; ch < c; ch++) {
            /* each channel its own offset: sum dy and sum dy*xhat far apart */
            float shift = tu_uniform(&seed, -1, 1), off = tu_uniform(&seed, -0.5f, 0.5f);
            double s = 0.0, ss = 0.0;
            for (int i = 0; i < n; i++)
                for (int j = 0; j < hw; j++) {
                    size_t at = km_idx3(i, ch, j, c, hw);
                    x[at] += shift;
                    dy[at] = sh->dy_scale * (tu_uniform(&seed, -1, 1) + off);
                    s += x[at];
                }
            /* the statistics the forward pass would have left */
            mean[ch] = (float)(s / m);
            for (int i = 0; i < n; i++)
                for (int j = 0; j < hw; j++) {
                    double d = x[km_idx3(i, ch, j, c, hw)] - (double)mean[ch];
                    ss += d * d;
                }
            invstd[ch] = (float)(1.0 / sqrt(ss / m + 1e-5));
            abs_dy[ch] = abs_dy_xhat[ch] = 0.0;
            for (int i = 0; i < n; i++)
                for (int j = 0; j < hw; j++) {
                    size_t at = km_idx3(i, ch, j, c, hw);
                    double xhat = ((double)x[at] - mean[ch]) * invstd[ch];
                    abs_dy[ch] += fabs(dy[at]);
                    abs_dy_xhat[ch] += fabs(dy[at] * xhat);
                }
        }
        for (int way = 0; way < 2; way++) {
            const char *way_name = way == 0 ? "cuda_loop sums" : "cuda_vectorized sums";
            (way == 0 ? body_bn_bwd_sums : bn_vec_style_sums)(n, c, hw, x, dy, mean, invstd, sums);
            for (int i = 0; i < n; i++)
                for (int ch = 0; ch < c; ch++)
                    for (int j = 0; j < hw; j++) {
                        size_t at = km_idx3(i, ch, j, c, hw);
                        body[at] = km_bn_bwd_dx_at(c, hw, m, x, dy, gamma, mean, invstd, sums, i,
                                                   ch, j);
                    }
            for (int t = 0; t < 2; t++) {
                for (size_t o = 0; o < total; o++) dx[o] = NAN; /* overwritten, never read */
                for (int ch = 0; ch < c; ch++) dgamma[ch] = dbeta[ch] = 0.0f;
                tables[t]->bn_bwd(n, c, hw, x, dy, gamma, mean, invstd, dx, false, dgamma, dbeta);
                /* the sums' layout: the CPU's dbeta is sum dy, its dgamma sum dy*xhat */
                for (int ch = 0; ch < c; ch++) {
                    double eb = fabs(dbeta[ch] - sums[2 * ch]) / abs_dy[ch];
                    double eg = fabs(dgamma[ch] - sums[2 * ch + 1]) / abs_dy_xhat[ch];
                    cr_expect(eb <= BN_DX_TOL && eg <= BN_DX_TOL,
                              "bn_bwd (n %d, c %d, hw %d), %s, channel %d: sums (%g, %g) but "
                              "%s's dbeta %g, dgamma %g", n, c, hw, way_name, ch, sums[2 * ch],
                              sums[2 * ch + 1], tables[t]->name, dbeta[ch], dgamma[ch]);
                }
                double worst = 0.0;
                size_t worst_at = 0;
                for (size_t o = 0; o < total; o++) {
                    int ch = (int)(o / hw % c);
                    double xhat = ((double)x[o] - mean[ch]) * invstd[ch];
                    double scale = fabs((double)gamma[ch] * invstd[ch] / m) *
                                   (m * fabs(dy[o]) + abs_dy[ch] + fabs(xhat) * abs_dy_xhat[ch]);
                    double err = fabs((double)body[o] - dx[o]);
                    err = isfinite(body[o]) && isfinite(dx[o]) ? (scale > 0 ? err / scale : err)
                                                               : INFINITY;
                    if (!(err <= worst)) {
                        worst = err;
                        worst_at = o;
                    }
                }
                cr_expect(worst <= BN_DX_TOL,
                          "bn_bwd (n %d, c %d, hw %d, dy scale %g), %s: km_bn_bwd_dx_at differs "
                          "from %s at %zu: %.9g vs %.9g (error %.3g of the terms' size, allowed "
                          "%g)", n, c, hw, sh->dy_scale, way_name, tables[t]->name, worst_at,
                          body[worst_at], dx[worst_at], worst, BN_DX_TOL);
            }
        }
        free(x), free(dy), free(dx), free(body), free(gamma), free(mean), free(invstd);
        free(sums), free(dgamma), free(dbeta), free(abs_dy), free(abs_dy_xhat);
    }
}

/* km_conv_out_pos and km_window_cover against their definitions, by brute force */
Test(cuda_bodies, window_arithmetic) {
    for (int in = 1; in <= 9; in++)
        for (int size = 1; size <= 5; size++)
            for (int stride = 1; stride <= 3; stride++)
                for (int pad = 0; pad <= 2; pad++) {
                    if (in + 2 * pad < size) continue;
                    int out = conv_out_size(in, size, stride, pad);
                    for (int i = 0; i < in; i++) {
                        for (int t = 0; t < size; t++) {
                            int want = -1;
                            for (int o = 0; o < out; o++)
                                if (km_conv_in_pos(o, t, stride, pad) == i) want = o;
                            cr_expect_eq(km_conv_out_pos(i, t, stride, pad, out), want,
                                         "conv_out_pos(i %d, t %d, stride %d, pad %d, out %d)", i,
                                         t, stride, pad, out);
                        }
                        int lo, hi, first = -1, last = -1;
                        km_window_cover(i, size, stride, pad, out, &lo, &hi);
                        for (int o = 0; o < out; o++) {
                            int start = km_conv_in_pos(o, 0, stride, pad);
                            if (start <= i && i < start + size) {
                                if (first < 0) first = o;
                                last = o;
                            }
                        }
                        bool ok = first < 0 ? lo == hi : lo == first && hi == last + 1;
                        cr_expect(ok, "window_cover(i %d, size %d, stride %d, pad %d, out %d) = "
                                  "[%d,%d), want [%d,%d]", i, size, stride, pad, out, lo, hi,
                                  first, last);
                    }
                }
}

/* ---- the tables ---- */

Test(cuda, tables_fill_every_entry) {
    need_gpu();
    for (int f = 0; f < 2; f++) {
        const struct backend *be = cuda_table(f == 0 ? KF_LOOP : KF_VECTORIZED);
        cr_expect_eq(be->dev, DEV_CUDA);
        cr_expect_str_eq(be->name, f == 0 ? "cuda-loop" : "cuda-vectorized");
        cr_expect_eq((int)be->flavour, f == 0 ? KF_LOOP : KF_VECTORIZED);
        expect_entries(be, false);
        const struct copy_stage *s = be->stage;
        cr_assert_not_null(s, "%s has no copy stage", be->name);
        cr_expect(s->pinned_alloc && s->pinned_free && s->copy_h2d_async && s->event_create &&
                      s->event_destroy && s->event_record && s->stream_wait_event && s->event_done &&
                      s->event_sync && s->event_elapsed_ms && s->range_push && s->range_pop,
                  "%s: a copy-stage entry is missing", be->name);
    }
}

/* On a machine without a GPU (this test's only job), device = cuda is a clear error. */
Test(cuda, backend_get_without_gpu_is_a_clear_error) {
    char why[256] = "";
#if NS_EMU
    setenv("NS_EMU_NO_DEVICE", "1", 1); /* the emulated device can be switched off */
#endif
    if (backend_gpu_count(why, sizeof why) > 0) cr_skip_test("a GPU is present: nothing to check");
    cr_assert(why[0] != '\0', "backend_gpu_count gives 0 GPUs and no reason");
    err_clear();
    cr_expect_null(backend_get(DEV_CUDA, KF_VECTORIZED));
    const char *e = err_get();
    cr_expect(e && strstr(e, "device = cuda") &&
                  (strstr(e, "no usable GPU") || strstr(e, "no CUDA support")),
              "unclear error: %s", e ? e : "(none)");
}

/* ---- memory entries ---- */

Test(cuda, alloc_failure_names_the_size_and_free_memory) {
    need_gpu();
    const struct backend *be = cuda_table(KF_VECTORIZED);
    err_clear();
    size_t huge = (size_t)1 << 50;
    cr_expect_null(be->alloc(huge));
    const char *e = err_get();
    char size[32];
    snprintf(size, sizeof size, "%zu bytes", huge);
    cr_expect(e && strstr(e, size) && strstr(e, "free"), "unhelpful message: %s", e ? e : "");
    expect_no_cuda_error("a failed alloc"); /* it returned NULL; nothing is sticky */
    float *ok = be->alloc(16);
    cr_expect_not_null(ok, "alloc after an out-of-memory failure: %s", err_get());
    be->free(ok);
}

Test(cuda, zero_and_copy_in_every_direction) {
    need_gpu();
    const struct backend *be = cuda_table(KF_LOOP);
    enum { N = 100003 };
    float *h = malloc(N * sizeof(float)), *back = malloc(N * sizeof(float));
    uint64_t seed = 7;
    tu_fill(&seed, h, N, -1, 1);
    float *a = be->alloc(N * sizeof(float)), *b = be->alloc(N * sizeof(float));
    cr_assert(a && b, "%s", err_get());
    be->copy(a, h, N * sizeof(float), COPY_H2D);
    be->copy(b, a, N * sizeof(float), COPY_D2D);
    be->copy(back, b, N * sizeof(float), COPY_D2H);
    cr_expect(memcmp(back, h, N * sizeof(float)) == 0, "H2D, D2D, D2H changed the bytes");
    be->zero(b + 1, (N - 2) * sizeof(float));
    be->copy(back, b, N * sizeof(float), COPY_D2H);
    bool zeroed = back[0] == h[0] && back[N - 1] == h[N - 1];
    for (size_t i = 1; i + 1 < N; i++) zeroed &= back[i] == 0.0f;
    cr_expect(zeroed, "zero cleared the wrong range");

    /* copy from page-locked memory returns when the source may be reused, like memcpy */
    float *pinned = be->stage->pinned_alloc(N * sizeof(float));
    cr_assert_not_null(pinned, "%s", err_get());
    memcpy(pinned, h, N * sizeof(float));
    cuda_spin_us(20000); /* the compute stream is busy: the copy queues behind */
    be->copy(a, pinned, N * sizeof(float), COPY_H2D);
    memset(pinned, 0, N * sizeof(float));
    be->copy(back, a, N * sizeof(float), COPY_D2H);
    cr_expect(memcmp(back, h, N * sizeof(float)) == 0,
              "copy from pinned memory returned before it had read the source");
    be->stage->pinned_free(pinned);
    be->free(a);
    be->free(b);
    free(h);
    free(back);
    expect_no_cuda_error("memory entries");
}

/* ---- the copy stage ---- */

/* Bytes copied from pinned or pageable memory, on either stream, arrive unchanged. */
Test(cuda, copy_stage_delivers_identical_bytes) {
    need_gpu();
    const struct backend *be = cuda_table(KF_VECTORIZED);
    const struct copy_stage *st = be->stage;
    size_t bytes = (1 << 20) + 13;
    uint8_t *expect = malloc(bytes), *back = malloc(bytes);
    uint64_t seed = 42;
    for (size_t i = 0; i < bytes; i++) expect[i] = (uint8_t)tu_rand_u32(&seed);
    uint8_t *dev = be->alloc(bytes);
    uint32_t *sum = be->alloc(sizeof *sum), got_sum = 0;
    cr_assert(dev && sum, "%s", err_get());
    struct device_event *start = st->event_create(), *end = st->event_create();
    cr_assert(start && end, "%s", err_get());
    for (int pinned = 0; pinned < 2; pinned++)
        for (int s = STREAM_COMPUTE; s <= STREAM_COPY; s++) {
            const char *what = pinned ? "pinned" : "pageable";
            const char *stream = s == STREAM_COPY ? "copy stream" : "compute stream";
            uint8_t *src = pinned ? st->pinned_alloc(bytes) : malloc(bytes);
            cr_assert_not_null(src, "%s", err_get());
            memcpy(src, expect, bytes);
            be->zero(dev, bytes);
            be->sync();
            st->range_push("copy");
            st->event_record(start, (enum stream_id)s);
            st->copy_h2d_async(dev, src, bytes, (enum stream_id)s);
            st->event_record(end, (enum stream_id)s);
            st->range_pop();
            st->stream_wait_event(STREAM_COMPUTE, end); /* what the trainer does */
            cuda_checksum_u8(dev, bytes, sum);
            be->copy(&got_sum, sum, sizeof got_sum, COPY_D2H);
            be->copy(back, dev, bytes, COPY_D2H);
            cr_expect(memcmp(back, expect, bytes) == 0, "%s memory on the %s: bytes differ", what,
                      stream);
            cr_expect_eq(got_sum, cuda_checksum_host(expect, bytes),
                         "%s on the %s: the device saw checksum %u, the host %u", what, stream,
                         got_sum, cuda_checksum_host(expect, bytes));
            st->event_sync(end);
            cr_expect(st->event_done(end), "event_done after event_sync");
            float ms = st->event_elapsed_ms(start, end);
            cr_expect(ms >= 0.0f && ms < 10000.0f, "%s on the %s: %g ms for 1 MiB", what, stream,
                      (double)ms);
            if (pinned) st->pinned_free(src);
            else free(src);
        }
    st->event_destroy(start);
    st->event_destroy(end);
    be->free(dev);
    be->free(sum);
    free(expect);
    free(back);
    expect_no_cuda_error("copy stage");
}

/* A copy-stream copy that waits on a compute-stream event starts after it. */
Test(cuda, events_order_the_streams) {
    need_gpu();
    const struct backend *be = cuda_table(KF_VECTORIZED);
    const struct copy_stage *st = be->stage;
    struct device_event *begin = st->event_create(), *busy = st->event_create(),
                        *copied = st->event_create();
    cr_assert(begin && busy && copied, "%s", err_get());
    size_t bytes = 4096;
    uint8_t *src = st->pinned_alloc(bytes), *dev = be->alloc(bytes);
    cr_assert(src && dev, "%s", err_get());
    memset(src, 1, bytes);

    st->event_record(begin, STREAM_COMPUTE);
    cuda_spin_us(50000);
    st->event_record(busy, STREAM_COMPUTE);
    cr_expect(!st->event_done(busy), "event_done is true while the compute stream still spins");
    st->stream_wait_event(STREAM_COPY, busy);
    st->copy_h2d_async(dev, src, bytes, STREAM_COPY);
    st->event_record(copied, STREAM_COPY);
    cr_expect(!st->event_done(copied), "the copy finished before the event it waits on");
    st->event_sync(copied);
    cr_expect(st->event_done(busy) && st->event_done(copied));
    float spun = st->event_elapsed_ms(begin, busy), total = st->event_elapsed_ms(begin, copied);
    cr_expect(spun >= 40.0f, "a 50 ms spin measured %g ms", (double)spun);
    cr_expect(total >= spun, "the copy ended (%g ms) before the event it waited on (%g ms)",
              (double)total, (double)spun);
    st->pinned_free(src);
    be->free(dev);
    st->event_destroy(begin);
    st->event_destroy(busy);
    st->event_destroy(copied);
    expect_no_cuda_error("events");
}

/* The ring protocol of docs/design.md with two slots and a slow consumer: the host
 * refills a slot only after the event recorded after its last use on the device
 * has completed. The device checksums every batch it received; each must be the
 * checksum of the batch the host wrote for that step. Run with pinned and
 * pageable slots, copying on the copy stream (overlap) and on the compute stream.
 * `careless` drops the waits: it then usually fails, which shows the test can see
 * a race (logged, not asserted: a race is not certain to happen). */
static int ring_mismatches(const struct backend *be, bool pinned, enum stream_id copy_on,
                           bool careless) {
    enum { SLOTS = 2, STEPS = 12 };
    const struct copy_stage *st = be->stage;
    size_t bytes = (256 << 10) + 7;
    uint8_t *slot[SLOTS];
    void *dev_in[SLOTS];
    struct device_event *copied[SLOTS], *consumed[SLOTS];
    bool pending[SLOTS] = {false, false};
    uint32_t *sums = be->alloc(sizeof(uint32_t) * STEPS), got[STEPS], expect[STEPS];
    cr_assert_not_null(sums, "%s", err_get());
    for (int k = 0; k < SLOTS; k++) {
        slot[k] = pinned ? st->pinned_alloc(bytes) : malloc(bytes);
        dev_in[k] = be->alloc(bytes);
        copied[k] = st->event_create();
        consumed[k] = st->event_create();
        cr_assert(slot[k] && dev_in[k] && copied[k] && consumed[k], "%s", err_get());
    }
    for (int s = 0; s < STEPS; s++) {
        int k = s % SLOTS;
        if (pending[k] && !careless) {
            if (s % 4 < 2) st->event_sync(consumed[k]); /* both ways a waiter may wait */
            else
                while (!st->event_done(consumed[k])) sched_yield();
        }
        uint64_t seed = 0x5eed0000u + (uint64_t)s;
        for (size_t i = 0; i < bytes; i++) slot[k][i] = (uint8_t)tu_rand_u32(&seed);
        expect[s] = cuda_checksum_host(slot[k], bytes);
        st->copy_h2d_async(dev_in[k], slot[k], bytes, copy_on);
        st->event_record(copied[k], copy_on);
        st->stream_wait_event(STREAM_COMPUTE, copied[k]);
        cuda_spin_us(3000); /* the slow step that reads the batch */
        cuda_checksum_u8(dev_in[k], bytes, sums + s);
        st->event_record(consumed[k], STREAM_COMPUTE);
        pending[k] = true;
    }
    be->copy(got, sums, sizeof got, COPY_D2H);
    int bad = 0;
    for (int s = 0; s < STEPS; s++) bad += got[s] != expect[s];
    for (int k = 0; k < SLOTS; k++) {
        if (pinned) st->pinned_free(slot[k]);
        else free(slot[k]);
        be->free(dev_in[k]);
        st->event_destroy(copied[k]);
        st->event_destroy(consumed[k]);
    }
    be->free(sums);
    return bad;
}

Test(cuda, ring_slots_are_not_overwritten_while_the_device_reads_them) {
    need_gpu();
    const struct backend *be = cuda_table(KF_VECTORIZED);
    for (int pinned = 0; pinned < 2; pinned++)
        for (int s = STREAM_COMPUTE; s <= STREAM_COPY; s++) {
            int bad = ring_mismatches(be, pinned, (enum stream_id)s, false);
            cr_expect_eq(bad, 0, "%s slots, copies on the %s stream: %d of 12 batches arrived "
                         "changed", pinned ? "pinned" : "pageable", s ? "copy" : "compute", bad);
        }
    int careless = ring_mismatches(be, true, STREAM_COPY, true);
    cr_log_info("without the waits, %d of 12 batches arrived changed (the check can see a race "
                "when this is > 0)", careless);
    expect_no_cuda_error("ring");
}

/* ---- the real ring: loader.c and feeder.c on this device (ring_check.h) ---- */

Test(cuda, the_loader_and_feeder_deliver_every_batch_intact_on_the_device) {
    need_gpu();
    const struct backend *be = cuda_table(KF_VECTORIZED);
    char *dir = dg_tmpdir();
    cr_assert_not_null(dir);
    cr_assert_eq(dg_make_folder(dir, RING_CLASSES, RING_PER_CLASS, RING_H, RING_W, 1),
                 RING_CLASSES * RING_PER_CLASS);
    struct data_folder_options fo = {RING_H, RING_W, 1, 0};
    struct dataset *ds;
    cr_assert_eq(data_open_folder(dir, &fo, &ds), 0, "%s", err_get());
#if NS_EMU
    emu_set_copy_delay_us(3000); /* a late DMA engine: a missing wait shows every time */
#endif
    for (int pinned = 0; pinned < 2; pinned++)
        for (int overlap = 0; overlap < 2; overlap++) {
            int batches = 0, bad = ring_check(be, ds, pinned, overlap, &batches);
            cr_assert_geq(bad, 0, "%s", err_get());
            cr_expect_eq(batches, 2 * RING_CLASSES * RING_PER_CLASS / RING_BATCH);
            cr_expect_eq(bad, 0, "%s slots, overlap %s: %d of %d batches reached the device "
                         "changed", pinned ? "pinned" : "pageable", overlap ? "on" : "off", bad,
                         batches);
        }
#if NS_EMU
    emu_set_copy_delay_us(0);
    struct emu_counts n = emu_get_counts();
    cr_log_info("the emulated device ran %llu launches and %llu copies", (unsigned long long)n.launches,
                (unsigned long long)n.copies);
#endif
    expect_no_cuda_error("the real ring");
    data_close(ds);
    dg_rm_tree(dir);
    free(dir);
}

/* ---- errors ---- */

/* A kernel that faults can't return an error: the backend records the first one,
 * with the call that saw it, for cuda_backend_error and cuda_backend_check. */
Test(cuda, a_device_fault_is_recorded_and_reported) {
    need_gpu();
    const struct backend *be = cuda_table(KF_LOOP);
    float *y = be->alloc(1024 * sizeof(float));
    cr_assert_not_null(y, "%s", err_get());
    cr_expect_null(cuda_backend_error(), "an error before the fault: %s", cuda_backend_error());
    be->relu_fwd(1024, (const float *)(uintptr_t)0x1000, y); /* not a device address */
    be->sync();
    const char *e = cuda_backend_error();
    cr_assert_not_null(e, "a kernel read address 0x1000 and nothing was recorded");
    cr_expect(strstr(e, ".cu:") != NULL, "the error names no file:line: %s", e);
    err_clear();
    cr_expect_eq(cuda_backend_check(), -1);
    cr_expect(strstr(err_get(), e) != NULL, "cuda_backend_check's error: %s", err_get());
}

#if NS_EMU
/* context_init makes, in turn, the device current, two streams, a cuBLAS handle set
 * up on the compute stream, and a scratch buffer (and a cuDNN handle in a cuDNN
 * build, which can't fail it). When any step fails, cuda_backend_get must return
 * NULL naming the call that failed, and leave no stream, handle or device memory
 * behind. The emulated runtime fails the chosen call (emu_fail_call); the reset
 * lets one process make the context many times. */
Test(cuda, a_context_that_fails_partway_names_the_call_and_frees_what_it_made) {
    need_gpu();
    static const struct {
        const char *api;
        int after; /* calls of api let through first */
    } steps[] = {
        {"cudaSetDevice", 0},    {"cudaDeviceGetAttribute", 0}, {"cudaStreamCreateWithFlags", 0},
        {"cudaStreamCreateWithFlags", 1}, {"cublasCreate", 0},  {"cublasSetStream", 0},
        {"cublasSetMathMode", 0}, {"cudaMalloc", 0},
    };
    int streams, blas;
    size_t bytes;
    for (size_t i = 0; i < sizeof steps / sizeof steps[0]; i++) {
        cuda_backend_reset_for_tests();
        emu_fail_call(steps[i].api, steps[i].after);
        err_clear();
        const char *what = steps[i].api;
        int nth = steps[i].after + 1;
        cr_expect_null(cuda_backend_get(KF_VECTORIZED), "%s call %d failed, and still a table",
                       what, nth);
        const char *e = err_get();
        cr_expect(e && strstr(e, what) && strstr(e, "failed"),
                  "%s call %d failed: the error doesn't name it: %s", what, nth, e ? e : "(none)");
        emu_live_objects(&streams, &blas, &bytes);
        cr_expect(streams == 0 && blas == 0 && bytes == 0,
                  "%s call %d failed: left behind %d streams, %d cuBLAS handles, %zu bytes of "
                  "device memory", what, nth, streams, blas, bytes);
        err_clear(); /* the failure is kept: a second call says the same */
        cr_expect_null(cuda_backend_get(KF_LOOP));
        cr_expect(strstr(err_get(), what), "the second call's error: %s", err_get());
    }
    /* nothing failing: made whole, usable, and freed whole by the reset */
    cuda_backend_reset_for_tests();
    emu_fail_call(NULL, 0);
    const struct backend *be = cuda_backend_get(KF_VECTORIZED);
    cr_assert_not_null(be, "with nothing failing: %s", err_get());
    emu_live_objects(&streams, &blas, &bytes);
    cr_expect(streams == 2 && blas == 1 && bytes >= (1 << 20),
              "a made context: %d streams, %d cuBLAS handles, %zu device bytes", streams, blas,
              bytes);
    float in[4] = {1, 2, 3, 4}, out[4] = {0};
    float *d = be->alloc(sizeof in);
    cr_assert_not_null(d, "%s", err_get());
    be->copy(d, in, sizeof in, COPY_H2D);
    be->relu_fwd(4, d, d);
    be->copy(out, d, sizeof out, COPY_D2H);
    cr_expect(memcmp(in, out, sizeof in) == 0, "relu of 1..4 on the remade context");
    be->free(d);
    expect_no_cuda_error("a remade context");
    cuda_backend_reset_for_tests();
    emu_live_objects(&streams, &blas, &bytes);
    cr_expect(streams == 0 && blas == 0 && bytes == 0,
              "after the reset: %d streams, %d cuBLAS handles, %zu device bytes", streams, blas,
              bytes);
}
#endif

#if NS_HAVE_CUDNN && !NS_EMU
/* cuDNN is a soft dependency (cuda_conv_cudnn.cu): when it can't plan or run a
 * shape, that shape goes to im2col + cuBLAS; when cuDNN itself is broken, every
 * shape does; either way one line on stderr says why, nothing is recorded as an
 * error, and the results still match the CPU. Real failures can't be had on
 * demand, so cuda_dnn_fail_next_for_tests makes the next initialisation, plan or
 * convolution call fail as if cuDNN had returned the status. A cuDNN build on a GPU
 * only; the emulated device has no cuDNN. */

/* stderr goes to a file until stderr_restore, which returns what was written */
static FILE *stderr_capture(int *saved) {
    fflush(stderr);
    FILE *f = tmpfile();
    cr_assert_not_null(f);
    *saved = dup(2);
    dup2(fileno(f), 2);
    return f;
}
static char *stderr_restore(FILE *f, int saved) {
    fflush(stderr);
    dup2(saved, 2);
    close(saved);
    fseek(f, 0, SEEK_END);
    long n = ftell(f) > 0 ? ftell(f) : 0;
    rewind(f);
    char *text = calloc((size_t)n + 1, 1);
    size_t got = fread(text, 1, (size_t)n, f);
    text[got] = '\0';
    fclose(f);
    return text;
}

static int count_of(const char *text, const char *what) {
    int n = 0;
    for (const char *p = text; (p = strstr(p, what)); p += strlen(what)) n++;
    return n;
}

/* the three conv entries of shape g (with bias, dx both added to and overwritten)
 * on the vectorized table, against the CPU */
static void check_conv_shape(const struct backend *be, struct conv_geom g) {
    struct kcase cs[] = {
        {.op = OP_conv2d_fwd, .cg = g, .flag = true},
        {.op = OP_conv2d_bwd_data, .cg = g},
        {.op = OP_conv2d_bwd_data, .cg = g, .overwrite = true},
        {.op = OP_conv2d_bwd_filter, .cg = g, .flag = true},
    };
    for (size_t i = 0; i < sizeof cs / sizeof cs[0]; i++) {
        case_complete(&cs[i]);
        char name[256];
        case_str(op_of(&cs[i])->name, &cs[i], name, sizeof name);
        struct run ref;
        run_case(&cs[i], &cpu_loop_backend, &ref);
        check_case_on(&cs[i], name, be, &ref);
        run_free(&ref);
    }
}

Test(cuda, conv_falls_back_to_im2col_when_cudnn_fails) {
    need_gpu();
    const struct backend *be = cuda_table(KF_VECTORIZED);
    cr_assert(cuda_has_cudnn(), "a cuDNN build on a GPU doesn't use cuDNN: its stderr says why");
    /*                    n  c   h   w   k  r  s st pad */
    struct conv_geom a = {8, 16, 28, 28, 32, 3, 3, 2, 1, 0, 0};
    struct conv_geom b = {8, 32, 14, 14, 64, 1, 1, 2, 0, 0, 0};
    struct conv_geom c = {8, 64, 7, 7, 64, 3, 3, 1, 1, 0, 0};
    static const char *const FELL = "using the im2col + cuBLAS convolution";
    int saved;
    FILE *f = stderr_capture(&saved);
    /* a plan that fails: shape a only */
    cuda_dnn_fail_next_for_tests(CUDA_DNN_AT_PLAN, 3000 /* CUDNN_STATUS_NOT_SUPPORTED */);
    check_conv_shape(be, a);
    bool on_after_plan = cuda_has_cudnn();
    /* a call that fails after its workspace was sized for cuDNN: shape b only */
    cuda_dnn_fail_next_for_tests(CUDA_DNN_AT_CALL, 3000);
    check_conv_shape(be, b);
    bool on_after_call = cuda_has_cudnn();
    check_conv_shape(be, c); /* still cuDNN's */
    /* a sub-library that can't be loaded: every shape, from then on */
    cuda_dnn_fail_next_for_tests(CUDA_DNN_AT_CALL, 1008 /* SUBLIBRARY_LOADING_FAILED */);
    struct conv_geom d = {3, 5, 9, 9, 4, 3, 3, 1, 1, 0, 0};
    check_conv_shape(be, d);
    bool on_after_library = cuda_has_cudnn();
    check_conv_shape(be, c);
    char *said = stderr_restore(f, saved);
    cr_expect(on_after_plan && on_after_call, "one shape's failure turned cuDNN off");
    cr_expect(!on_after_library, "a sub-library failure left cuDNN on");
    cr_expect(count_of(said, FELL) == 3, "want one line per fallback, three in all; stderr:\n%s",
              said);
    cr_expect(count_of(said, "for this shape") == 2 && count_of(said, "for every shape") == 1 &&
                  strstr(said, "cuDNN can't plan conv2d 8x16x28x28 k32 3x3/2 pad 1") &&
                  strstr(said, "cuDNN can't run conv2d fwd 8x32x14x14 k64 1x1/2 pad 0") &&
                  count_of(said, "CUDNN_STATUS_NOT_SUPPORTED") == 2 &&
                  strstr(said, "CUDNN_STATUS_SUBLIBRARY_LOADING_FAILED"),
              "unclear fallback lines:\n%s", said);
    free(said);
    /* cuDNN failing at the context's start: the context is made without it */
    cuda_backend_reset_for_tests();
    cuda_dnn_fail_next_for_tests(CUDA_DNN_AT_INIT, 1008);
    f = stderr_capture(&saved);
    be = backend_get(DEV_CUDA, KF_VECTORIZED);
    said = stderr_restore(f, saved);
    cr_assert_not_null(be, "cuDNN failing made the context fail: %s", err_get());
    cr_expect(!cuda_has_cudnn(), "cuDNN failed at cudnnCreate and is still in use");
    cr_expect(count_of(said, FELL) == 1 && strstr(said, "cudnnCreate"),
              "want one line naming cudnnCreate:\n%s", said);
    free(said);
    check_conv_shape(be, a);
    check_conv_shape(be, c);
}
#endif

/* ---- TF32 ---- */

Test(cuda, tf32_is_off_by_default_and_switches) {
    need_gpu();
    const struct backend *be = cuda_table(KF_VECTORIZED);
    struct kcase gemm = GEMM(256, 256, 512, false, false, 1, 0);
    struct kcase conv = {.op = OP_conv2d_fwd, .cg = {8, 64, 14, 14, 64, 3, 3, 1, 1, 0, 0}};
    case_complete(&conv);
    const struct kcase *cs[] = {&gemm, &conv};
    for (int i = 0; i < 2; i++) {
        struct run ref, off, on, off_again;
        run_case(cs[i], &cpu_vectorized_backend, &ref);
        run_case(cs[i], be, &off);
        cuda_set_tf32(true);
        run_case(cs[i], be, &on);
        cuda_set_tf32(false);
        run_case(cs[i], be, &off_again);
        int y = off.nb - 1;
        double e_off = tu_tensor_rel_err(ref.data[y], off.data[y], off.spec[y].n);
        double e_on = tu_tensor_rel_err(ref.data[y], on.data[y], on.spec[y].n);
        double e_again = tu_tensor_rel_err(ref.data[y], off_again.data[y], off.spec[y].n);
        const char *what = i == 0 ? "gemm" : "conv";
        cr_expect(e_off <= AGREE_TOL, "%s without TF32 (the default): rel err %g", what, e_off);
        cr_expect(e_on <= 2e-2, "%s with TF32: rel err %g", what, e_on);
        cr_expect(e_again <= AGREE_TOL, "%s after switching TF32 off again: rel err %g", what,
                  e_again);
        /* TF32 keeps 10 of float's 23 mantissa bits: switched on, the result must move
         * away from float32's by far more than float32's own rounding, or set_tf32 did
         * nothing. cuDNN may pick an algorithm without tensor cores for a convolution,
         * so there only cuBLAS's gemm (and the im2col convolution, built on it) must. */
        if (i == 0 || !cuda_has_cudnn())
            cr_expect(e_on >= 1e-4 && e_on >= 10 * e_off,
                      "%s: TF32 on changed nothing (rel err %g on, %g off): is it switched?",
                      what, e_on, e_off);
        cr_log_info("%s: rel err against the CPU %g without TF32, %g with", what, e_off, e_on);
        run_free(&ref);
        run_free(&off);
        run_free(&on);
        run_free(&off_again);
    }
    expect_no_cuda_error("tf32");
}

/* ---- a whole training step ---- */

struct step_result {
    float loss[2];
    float *w, *g, *v; /* flat, after the second step's backward (g) and update (w, v) */
    float *buffers;   /* BN running statistics, concatenated */
    size_t total, nbuf;
    long allocs[2];   /* the arena's system allocations after steps 1 and 2 */
    int np, nb;       /* parameter tensors and buffers: where each starts, its size */
    size_t poff[64], pnumel[64], boff[64], bnumel[64];
};

/* The worst per-tensor relative error over the n tensors of ref/got (numel[i]
 * floats from off[i]); *which is the index of that tensor. */
static double worst_tensor_err(const float *ref, const float *got, const size_t *off,
                               const size_t *numel, int n, int *which) {
    double worst = 0;
    *which = 0;
    for (int i = 0; i < n; i++) {
        double e = tu_tensor_rel_err(ref + off[i], got + off[i], numel[i]);
        if (e > worst || isinf(e)) worst = e, *which = i;
    }
    return worst;
}

/* Two SGD steps of resnet_small (docs/design.md) on a batch of 8 random images. */
static void resnet_steps(const struct backend *be, struct step_result *out) {
    enum { N = 8, H = 28, W = 28, CLASSES = 10 };
    struct nn_model m;
    nn_model_init(&m, 1, H, W, 0);
    struct cfg_int_list widths = {3, {16, 32, 64}}, blocks = {3, {1, 1, 1}};
    cr_assert_eq(model_resnet(&m, &widths, &blocks, CLASSES), 0, "%s", err_get());
    cr_assert_eq(nn_model_finalize(&m, be), 0, "%s: %s", be->name, err_get());
    struct ag_ctx c;
    cr_assert_eq(ag_ctx_init(&c, be), 0, "%s", err_get());

    uint8_t img[N * H * W];
    uint64_t seed = 2024;
    for (size_t i = 0; i < sizeof img; i++) img[i] = (uint8_t)tu_rand_u32(&seed);
    uint8_t *dimg = table_copy_of(be, img, sizeof img);
    int32_t *labels = labels_in(be, N, CLASSES);
    const float mean = 0.2860f, std = 0.3530f;
    struct sgd opt = {.lr = 0.1f, .momentum = 0.9f, .weight_decay = 5e-4f, .nesterov = true};
    for (int step = 0; step < 2; step++) {
        struct tensor *x = op_normalize_u8(&c, dimg, N, H, W, 1, &mean, &std);
        struct tensor *logits = x ? nn_forward(&m, &c, x) : NULL;
        struct tensor *loss = logits ? op_softmax_xent(&c, logits, labels) : NULL;
        cr_assert_not_null(loss, "%s: %s", be->name, err_get());
        out->loss[step] = ag_item(&c, loss);
        nn_zero_grad(&m);
        cr_assert_eq(ag_backward(&c, loss), 0, "%s: %s", be->name, err_get());
        if (step == 1) {
            out->total = m.ps.total;
            out->g = malloc(sizeof(float) * m.ps.total);
            be->copy(out->g, m.ps.g, sizeof(float) * m.ps.total, COPY_D2H);
        }
        optim_sgd_step(&m, &opt, opt.lr);
        ag_reset(&c);
        out->allocs[step] = c.arena.n_system_allocs;
    }
    out->w = malloc(sizeof(float) * m.ps.total);
    out->v = malloc(sizeof(float) * m.ps.total);
    be->copy(out->w, m.ps.w, sizeof(float) * m.ps.total, COPY_D2H);
    be->copy(out->v, m.ps.v, sizeof(float) * m.ps.total, COPY_D2H);
    cr_assert(m.ps.n_params <= 64 && m.ps.n_buffers <= 64);
    out->np = m.ps.n_params;
    out->nb = m.ps.n_buffers;
    for (int i = 0; i < m.ps.n_params; i++) {
        out->poff[i] = (size_t)(m.ps.params[i]->data - m.ps.w);
        out->pnumel[i] = m.ps.params[i]->numel;
    }
    out->nbuf = 0;
    for (int i = 0; i < m.ps.n_buffers; i++) {
        out->boff[i] = out->nbuf;
        out->nbuf += out->bnumel[i] = m.ps.buffers[i]->numel;
    }
    out->buffers = malloc(sizeof(float) * (out->nbuf ? out->nbuf : 1));
    size_t at = 0;
    for (int i = 0; i < m.ps.n_buffers; i++) {
        const struct tensor *t = m.ps.buffers[i];
        be->copy(out->buffers + at, t->data, sizeof(float) * t->numel, COPY_D2H);
        at += t->numel;
    }
    table_free(be, dimg);
    table_free(be, labels);
    ag_ctx_free(&c);
    nn_model_free(&m);
}

static void step_result_free(struct step_result *r) {
    free(r->w);
    free(r->g);
    free(r->v);
    free(r->buffers);
}

/* Two steps of a whole network compare less tightly than one kernel (AGREE_TOL):
 * the CPU tables fuse batch norm with the ReLU after it and the CUDA tables don't,
 * and a BN output within rounding of 0 then goes through the ReLU on one side and
 * not the other. That one element moves its channel's sum of dy by about 1/m of
 * the sum (m = n*h*w samples), a few 1e-3 of the tensor's scale at batch 8: seen
 * as 3e-3 in cuda-loop's gradients on the emulated device. A kernel error of a few
 * percent in any tensor, however small its values, still fails. */
static const double STEP_TOL = 1e-2;

Test(cuda, a_resnet_small_training_step_matches_the_cpu) {
    need_gpu();
    struct step_result ref;
    resnet_steps(&cpu_vectorized_backend, &ref);
    for (int f = 0; f < 2; f++) {
        const struct backend *be = cuda_table(f == 0 ? KF_LOOP : KF_VECTORIZED);
        struct step_result got;
        resnet_steps(be, &got);
        expect_no_cuda_error(be->name);
        cr_assert_eq(got.total, ref.total);
        for (int s = 0; s < 2; s++)
            cr_expect(fabsf(got.loss[s] - ref.loss[s]) <= 1e-4f * fmaxf(1.0f, fabsf(ref.loss[s])),
                      "%s: step %d loss %.7f, cpu %.7f", be->name, s + 1, (double)got.loss[s],
                      (double)ref.loss[s]);
        /* each tensor against its own scale (testutil.h), the worst one named */
        int wg, ww, wv, wb;
        double eg = worst_tensor_err(ref.g, got.g, ref.poff, ref.pnumel, ref.np, &wg);
        double ew = worst_tensor_err(ref.w, got.w, ref.poff, ref.pnumel, ref.np, &ww);
        double ev = worst_tensor_err(ref.v, got.v, ref.poff, ref.pnumel, ref.np, &wv);
        double eb = worst_tensor_err(ref.buffers, got.buffers, ref.boff, ref.bnumel, ref.nb, &wb);
        cr_expect(eg <= STEP_TOL, "%s: gradients of step 2 differ: rel err %g in parameter %d",
                  be->name, eg, wg);
        cr_expect(ew <= STEP_TOL, "%s: weights after step 2 differ: rel err %g in parameter %d",
                  be->name, ew, ww);
        cr_expect(ev <= STEP_TOL, "%s: momentum after step 2 differs: rel err %g in parameter %d",
                  be->name, ev, wv);
        cr_expect(eb <= STEP_TOL, "%s: BN running statistics differ: rel err %g in buffer %d",
                  be->name, eb, wb);
        cr_expect_eq(got.allocs[1], got.allocs[0],
                     "%s: the arena allocated device memory in the second step (%ld -> %ld)",
                     be->name, got.allocs[0], got.allocs[1]);
        cr_log_info("%s: loss %.6f/%.6f (cpu %.6f/%.6f), worst tensor's rel err: grads %g, "
                    "weights %g", be->name, (double)got.loss[0], (double)got.loss[1],
                    (double)ref.loss[0], (double)ref.loss[1], eg, ew);
        step_result_free(&got);
    }
    step_result_free(&ref);
}

/* ---- using a trained model on the device (./eval, ./predict) ---- */

struct logit_log { float *z; size_t n, cap; };

static int keep_logits(void *ctx, const struct batch *b, int n, const float *logits) {
    struct logit_log *l = ctx;
    (void)b;
    cr_assert_leq(l->n + (size_t)n * 4, l->cap);
    memcpy(l->z + l->n, logits, (size_t)n * 4 * sizeof(float));
    l->n += (size_t)n * 4;
    return 0;
}

/* One checkpoint, reopened on the CPU and on each CUDA table, run over the same folder
 * through the loader and the copy stage: the path ./eval and the trainer's test pass
 * take, with the logits checked image by image. */
Test(cuda, a_checkpoint_reopened_on_the_device_evaluates_as_on_the_cpu) {
    need_gpu();
    char *dir = dg_tmpdir();
    cr_assert_not_null(dir);
    char data[600], ckpt[600];
    snprintf(data, sizeof data, "%s/test", dir);
    snprintf(ckpt, sizeof ckpt, "%s/model.ckpt", dir);
    cr_assert_eq(dg_make_folder(data, 4, 10, 8, 8, 1), 40);
    struct config cfg;
    cfg_defaults(&cfg);
    const char *sets[] = {"model.arch=cnn", "model.layers=conv3x3-6 bn relu maxpool2 conv3x3-8 bn relu gap linear",
                          "data.height=8", "data.width=8", "data.classes=4", "loader.batch=16", "loader.workers=1"};
    for (size_t i = 0; i < sizeof sets / sizeof *sets; i++) cr_assert_eq(cfg_set(&cfg, sets[i]), 0, "%s", err_get());
    struct nn_model m;
    memset(&m, 0, sizeof m);
    cr_assert_eq(model_build(&m, &cfg), 0, "%s", err_get());
    cr_assert_eq(nn_model_finalize(&m, &cpu_vectorized_backend), 0, "%s", err_get());
    uint64_t seed = 3;
    for (int i = 0; i < m.ps.n_buffers; i++) tu_fill(&seed, m.ps.buffers[i]->data, m.ps.buffers[i]->numel, 0.5f, 1.5f);
    struct ckpt_state st = {.world_size = 1};
    cr_assert_eq(ckpt_save(ckpt, &m, &cfg, NULL, NULL, &st), 0, "%s", err_get());
    nn_model_free(&m);
    struct data_folder_options fo = {8, 8, 1, 0};
    struct dataset *ds;
    cr_assert_eq(data_open_folder(data, &fo, &ds), 0, "%s", err_get());
    float mean[1] = {0.5f}, std[1] = {0.25f};
    struct logit_log logs[3];
    struct eval_result res[3];
    const struct backend *tables[3] = {&cpu_vectorized_backend, cuda_table(KF_LOOP), cuda_table(KF_VECTORIZED)};
    for (int t = 0; t < 3; t++) {
        const struct backend *be = tables[t];
        struct nn_model dm;
        struct ckpt_info info;
        struct ag_ctx c;
        struct loader *ld;
        struct feeder *feed;
        cr_assert_eq(ckpt_open_model(ckpt, be, &dm, &info), 0, "%s: %s", be->name, err_get());
        cr_assert_eq(ag_ctx_init(&c, be), 0, "%s", err_get());
        cr_assert_eq(train_make_feed(&cfg, be, ds, false, &ld, &feed), 0, "%s", err_get());
        logs[t] = (struct logit_log){malloc(40 * 4 * sizeof(float)), 0, 40 * 4};
        res[t] = (struct eval_result){.classes = 4};
        cr_assert_eq(eval_pass(&c, &dm, feed, mean, std, 0, &res[t], keep_logits, &logs[t]), 0, "%s: %s",
                     be->name, err_get());
        expect_no_cuda_error(be->name);
        cr_expect_eq(res[t].seen, 40, "%s", be->name);
        feeder_destroy(feed);
        loader_destroy(ld);
        ag_ctx_free(&c);
        ckpt_info_free(&info);
        nn_model_free(&dm);
    }
    for (int t = 1; t < 3; t++) {
        double err = tu_tensor_rel_err(logs[0].z, logs[t].z, logs[0].n);
        cr_expect_leq(err, 1e-4, "%s: logits differ from the CPU's by %g of their scale", tables[t]->name, err);
        cr_expect(fabs(res[t].loss_sum - res[0].loss_sum) <= 1e-3 * fmax(1, fabs(res[0].loss_sum)),
                  "%s: loss sum %f, cpu %f", tables[t]->name, res[t].loss_sum, res[0].loss_sum);
        cr_log_info("%s: logits within %.2g of the cpu's scale; %lld of 40 right (cpu %lld)", tables[t]->name, err,
                    (long long)res[t].right, (long long)res[0].right);
    }
    for (int t = 0; t < 3; t++) free(logs[t].z);
    data_close(ds);
    dg_rm_tree(dir);
    free(dir);
}

/* The fused AdamW step on each CUDA table against the CPU's, over a length that is not a
 * multiple of 4 (the vectorized table's float4 path and its tail), three steps. */
Test(cuda, adamw_step_matches_the_cpu) {
    need_gpu();
    enum { N = 1003 };
    static float w0[N], g[3][N];
    uint64_t seed = 9;
    tu_fill(&seed, w0, N, -1, 1);
    for (int s = 0; s < 3; s++) tu_fill(&seed, g[s], N, -1, 1);
    float ref[N], mref[N] = {0}, vref[N] = {0};
    memcpy(ref, w0, sizeof ref);
    for (int s = 0; s < 3; s++)
        cpu_vectorized_backend.adamw_step(N, ref, g[s], mref, vref, 0.01f, 0.9f, 0.999f, 1e-8f, 0.05f,
                                          1.0f - powf(0.9f, (float)(s + 1)), sqrtf(1.0f - powf(0.999f, (float)(s + 1))));
    for (int f = 0; f < 2; f++) {
        const struct backend *be = cuda_table(f == 0 ? KF_LOOP : KF_VECTORIZED);
        float *dw = table_alloc(be, sizeof w0), *dg = table_alloc(be, sizeof w0), *dm = table_alloc(be, sizeof w0),
              *dv = table_alloc(be, sizeof w0), got[N];
        be->copy(dw, w0, sizeof w0, COPY_H2D);
        be->zero(dm, sizeof w0);
        be->zero(dv, sizeof w0);
        for (int s = 0; s < 3; s++) {
            be->copy(dg, g[s], sizeof w0, COPY_H2D);
            be->adamw_step(N, dw, dg, dm, dv, 0.01f, 0.9f, 0.999f, 1e-8f, 0.05f, 1.0f - powf(0.9f, (float)(s + 1)),
                           sqrtf(1.0f - powf(0.999f, (float)(s + 1))));
        }
        be->copy(got, dw, sizeof got, COPY_D2H);
        expect_no_cuda_error(be->name);
        double err = tu_tensor_rel_err(ref, got, N);
        cr_expect_leq(err, 1e-6, "%s: AdamW differs from the CPU's by %g of the weights' scale", be->name, err);
        table_free(be, dw), table_free(be, dg), table_free(be, dm), table_free(be, dv);
    }
}
