/* bench_ops.c — the kernel cases behind `./bench ops` (the short table) and
 * `./bench kernels` (bench_kernels.c: the full one, with peaks and dispatch cost).
 *
 *   int bench_ops(int argc, char **argv);   (bench.h; argv[0] = "ops")
 *
 * A case is one backend entry on one shape: every conv of resnet_small at the batch
 * size (forward and both backwards), square matmuls, relu/add/normalize over large
 * buffers and the batchnorm reductions. Both flavours of the device get identical
 * inputs; their outputs are compared BEFORE anything is timed, and a case whose
 * flavours disagree is flagged. Everything goes through the backend table (alloc,
 * copy, sync, the stage's events), so a device that fills a table runs here as is:
 * on a GPU the times come from events on the compute stream after a warm-up. */
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "bench.h"
#include "error.h"
#include "rng.h"

/* ---- the device under test ---- */

int kbench_device_open(const char *name, const char *who, struct kbench_device *d) {
    memset(d, 0, sizeof *d);
    if (!strcmp(name, "cpu")) {
        d->dev = DEV_CPU;
        d->loop = backend_get(DEV_CPU, KF_LOOP);
        d->vec = backend_get(DEV_CPU, KF_VECTORIZED);
        return 0;
    }
    if (strcmp(name, "cuda")) {
        fprintf(stderr, "%s: unknown device '%s' (cpu or cuda)\n", who, name);
        return -1;
    }
    char why[256] = "";
    if (backend_gpu_count(why, sizeof why) == 0) {
        fprintf(stderr, "%s: --device cuda is not available in this build/machine: %s\n", who, why);
        return -1;
    }
    d->dev = DEV_CUDA;
    d->loop = backend_get(DEV_CUDA, KF_LOOP);
    d->vec = d->loop ? backend_get(DEV_CUDA, KF_VECTORIZED) : NULL;
    if (!d->vec) {
        fprintf(stderr, "%s: --device cuda is not available in this build/machine: %s\n", who, err_get());
        return -1;
    }
    return 0;
}

void kbench_load_string(char *buf, size_t len) {
    FILE *f = fopen("/proc/loadavg", "r");
    double a = 0, b = 0, c = 0;
    if (f && fscanf(f, "%lf %lf %lf", &a, &b, &c) == 3) snprintf(buf, len, "%.2f %.2f %.2f", a, b, c);
    else snprintf(buf, len, "unknown");
    if (f) fclose(f);
}

/* ---- timing ---- */

/* Host clock around the call and the device's sync; device events when the backend
 * has them (a GPU's queue would otherwise time the launch, not the kernel). */
double kbench_time_once(const struct backend *be, void (*fn)(void *), void *arg) {
    const struct copy_stage *st = be->stage;
    if (st && st->event_create) {
        struct device_event *a = st->event_create(), *b = a ? st->event_create() : NULL;
        if (b) {
            st->event_record(a, STREAM_COMPUTE);
            fn(arg);
            st->event_record(b, STREAM_COMPUTE);
            st->event_sync(b);
            double s = 1e-3 * (double)st->event_elapsed_ms(a, b);
            st->event_destroy(a);
            st->event_destroy(b);
            return s;
        }
        if (a) st->event_destroy(a);
    }
    double t0 = bench_now_s();
    fn(arg);
    be->sync();
    return bench_now_s() - t0;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

double kbench_time_s(const struct backend *be, void (*fn)(void *), void *arg, double first_s, int *runs) {
    if (first_s > 1.0) {  /* the check run already took a second: it is the measurement */
        if (runs) *runs = 1;
        return first_s;
    }
    double t[15];
    int n = first_s > 0 ? (int)(0.5 / first_s) : 15;
    if (n < 3) n = 3;
    if (n > 15) n = 15;
    for (int i = 0; i < n; i++) t[i] = kbench_time_once(be, fn, arg);
    qsort(t, (size_t)n, sizeof *t, cmp_double);
    if (runs) *runs = n;
    return t[n / 2];
}

/* ---- the cases ---- */

enum fill { FILL_ZERO, FILL_RAND, FILL_POS, FILL_U8 };
#define KB_BUFS 8

struct kcase {
    char name[64];
    enum kbench_unit unit;
    double work;              /* flops or bytes per call */
    double reduce;            /* longest sum in an output: sets the tolerance */
    bool in_short;            /* also in ./bench ops */
    int loop_rows;            /* matmul: the loop flavour does only these rows, its time is scaled */
    size_t entry;             /* offsetof(struct backend, the entry): to spot shared code */
    int n_buf;
    size_t bytes[KB_BUFS];
    enum fill fill[KB_BUFS];
    bool check[KB_BUFS];
    void (*call)(const struct kcase *k, const struct backend *be, void *const *b, void *ws);
    struct conv_geom g;       /* conv */
    int m, n, c, hw;          /* gemm (m, n), bn (n, c, hw), normalize (n images of hw pixels) */
};

static void add_buf(struct kcase *k, size_t bytes, enum fill fill, bool check) {
    k->bytes[k->n_buf] = bytes;
    k->fill[k->n_buf] = fill;
    k->check[k->n_buf] = check;
    k->n_buf++;
}

// x (n,c,h,w), w (k,c,r,s) -> y (n,k,oh,ow)
static void call_conv_fwd(const struct kcase *k, const struct backend *be, void *const *b, void *ws) {
    be->conv2d_fwd(&k->g, b[0], b[1], NULL, b[2], ws);
}
// dy (n,k,oh,ow), w -> dx (n,c,h,w) =, as for a gradient's first writer in training
static void call_conv_bwd_data(const struct kcase *k, const struct backend *be, void *const *b, void *ws) {
    be->conv2d_bwd_data(&k->g, b[0], b[1], b[2], false, ws);
}
// x, dy -> dw (k,c,r,s) +=
static void call_conv_bwd_filter(const struct kcase *k, const struct backend *be, void *const *b, void *ws) {
    be->conv2d_bwd_filter(&k->g, b[0], b[1], b[2], NULL, ws);
}
// a (m,n) b (n,n) -> c (m,n)
static void call_gemm(const struct kcase *k, const struct backend *be, void *const *b, void *ws) {
    (void)ws;
    be->gemm(false, false, k->m, k->n, k->n, 1.0f, b[0], b[1], 0.0f, b[2]);
}
static void call_relu(const struct kcase *k, const struct backend *be, void *const *b, void *ws) {
    (void)ws;
    be->relu_fwd((size_t)k->n, b[0], b[1]);
}
static void call_add(const struct kcase *k, const struct backend *be, void *const *b, void *ws) {
    (void)ws;
    be->add_fwd((size_t)k->n, b[0], b[1], b[2]);
}
// uint8 (n,28,28,1) -> float (n,1,28,28)
static void call_normalize(const struct kcase *k, const struct backend *be, void *const *b, void *ws) {
    (void)ws;
    static const float mean[1] = {0.2860f}, std[1] = {0.3530f};
    be->normalize_u8(k->n, 28, 28, 1, b[0], mean, std, b[1]);
}
// x (n,c,hw) -> y, mean (c), invstd (c); running stats (c) updated
static void call_bn_fwd(const struct kcase *k, const struct backend *be, void *const *b, void *ws) {
    (void)ws;
    be->bn_fwd_train(k->n, k->c, k->hw, b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7], 0.1f, 1e-5f);
}
// x, dy (n,c,hw), gamma, mean, invstd (c) -> dx =, dgamma, dbeta (c) +=
static void call_bn_bwd(const struct kcase *k, const struct backend *be, void *const *b, void *ws) {
    (void)ws;
    be->bn_bwd(k->n, k->c, k->hw, b[0], b[1], b[2], b[3], b[4], b[5], false, b[6], b[7]);
}

static const char *const pass_name[] = {"fwd", "bwd-data", "bwd-filter"};

static void conv_case(struct kcase *k, int batch, const int *spec, int pass) {
    struct conv_geom g = {.n = batch, .c = spec[0], .h = spec[1], .w = spec[1], .k = spec[2], .r = spec[3],
                          .s = spec[3], .stride = spec[4], .pad = spec[3] / 2};
    g.oh = (g.h + 2 * g.pad - g.r) / g.stride + 1;
    g.ow = (g.w + 2 * g.pad - g.s) / g.stride + 1;
    size_t nx = (size_t)g.n * g.c * g.h * g.w * 4, nw = (size_t)g.k * g.c * g.r * g.s * 4,
           ny = (size_t)g.n * g.k * g.oh * g.ow * 4;
    memset(k, 0, sizeof *k);
    k->g = g;
    snprintf(k->name, sizeof k->name, "conv %dx%d %d->%d %dx%d /%d %s", g.r, g.s, g.c, g.k, g.h, g.w, g.stride,
             pass_name[pass]);
    k->unit = KB_FLOP;
    k->work = 2.0 * (double)(ny / 4) * g.c * g.r * g.s;
    k->in_short = true;
    if (pass == 0) {
        k->entry = offsetof(struct backend, conv2d_fwd);
        k->call = call_conv_fwd;
        k->reduce = (double)g.c * g.r * g.s;
        add_buf(k, nx, FILL_RAND, false);
        add_buf(k, nw, FILL_RAND, false);
        add_buf(k, ny, FILL_ZERO, true);
    } else if (pass == 1) {
        k->entry = offsetof(struct backend, conv2d_bwd_data);
        k->call = call_conv_bwd_data;
        k->reduce = (double)g.k * g.r * g.s;
        add_buf(k, ny, FILL_RAND, false);
        add_buf(k, nw, FILL_RAND, false);
        add_buf(k, nx, FILL_ZERO, true);
    } else {
        k->entry = offsetof(struct backend, conv2d_bwd_filter);
        k->call = call_conv_bwd_filter;
        k->reduce = (double)g.n * g.oh * g.ow;
        add_buf(k, nx, FILL_RAND, false);
        add_buf(k, ny, FILL_RAND, false);
        add_buf(k, nw, FILL_ZERO, true);
    }
}

/* The cases in table order; short = only the ./bench ops ones. Returns the count. */
static int build_cases(struct kcase *cases, int max, int batch, bool full) {
    /* every distinct conv of resnet_small: c, h, k, kernel, stride */
    static const int convs[][5] = {{1, 28, 16, 3, 1},  {16, 28, 16, 3, 1}, {16, 28, 32, 3, 2}, {32, 14, 32, 3, 1},
                                   {16, 28, 32, 1, 2}, {32, 14, 64, 3, 2}, {64, 7, 64, 3, 1},  {32, 14, 64, 1, 2}};
    int n = 0;
    for (size_t i = 0; i < sizeof convs / sizeof convs[0]; i++)
        for (int pass = 0; pass < 3 && n < max; pass++) conv_case(&cases[n++], batch, convs[i], pass);
    static const int sizes[] = {256, 512, 1024, 2048};
    for (int i = 0; i < 4 && n < max; i++) {
        if (!full && sizes[i] != 512) continue;
        struct kcase *k = &cases[n++];
        memset(k, 0, sizeof *k);
        size_t b = (size_t)sizes[i] * sizes[i] * 4;
        snprintf(k->name, sizeof k->name, "matmul %dx%dx%d", sizes[i], sizes[i], sizes[i]);
        k->unit = KB_FLOP;
        k->work = 2.0 * sizes[i] * (double)sizes[i] * sizes[i];
        k->reduce = sizes[i];
        k->in_short = sizes[i] == 512;
        k->entry = offsetof(struct backend, gemm);
        k->call = call_gemm;
        k->m = k->n = sizes[i];
        /* the textbook loop runs at well under a GFLOP/s once B leaves the cache: a whole
         * 2048 product would take a minute, a slice of rows shows the same rate */
        if (sizes[i] >= 1024) k->loop_rows = (128 * 1024) / sizes[i];
        add_buf(k, b, FILL_RAND, false);
        add_buf(k, b, FILL_RAND, false);
        add_buf(k, b, FILL_ZERO, true);
    }
    const int big = 8 << 20;  /* floats: 32 MB per buffer, past the per-core caches */
    if (n + 2 <= max) {
        struct kcase *k = &cases[n++];
        memset(k, 0, sizeof *k);
        snprintf(k->name, sizeof k->name, "relu 8M floats");
        k->unit = KB_BYTE;
        k->work = 2.0 * 4 * big;
        k->reduce = 1;
        k->in_short = true;
        k->entry = offsetof(struct backend, relu_fwd);
        k->call = call_relu;
        k->n = big;
        add_buf(k, (size_t)big * 4, FILL_RAND, false);
        add_buf(k, (size_t)big * 4, FILL_ZERO, true);
        k = &cases[n++];
        memset(k, 0, sizeof *k);
        snprintf(k->name, sizeof k->name, "add 8M floats");
        k->unit = KB_BYTE;
        k->work = 3.0 * 4 * big;
        k->reduce = 1;
        k->in_short = true;
        k->entry = offsetof(struct backend, add_fwd);
        k->call = call_add;
        k->n = big;
        add_buf(k, (size_t)big * 4, FILL_RAND, false);
        add_buf(k, (size_t)big * 4, FILL_RAND, false);
        add_buf(k, (size_t)big * 4, FILL_ZERO, true);
    }
    if (!full) return n;
    if (n < max) {
        struct kcase *k = &cases[n++];
        memset(k, 0, sizeof *k);
        k->n = 10240;  /* 28x28 images: 8M pixels */
        size_t px = (size_t)k->n * 28 * 28;
        snprintf(k->name, sizeof k->name, "normalize u8 %dx28x28", k->n);
        k->unit = KB_BYTE;
        k->work = 5.0 * (double)px;  /* a byte in, a float out */
        k->reduce = 1;
        k->entry = offsetof(struct backend, normalize_u8);
        k->call = call_normalize;
        add_buf(k, px, FILL_U8, false);
        add_buf(k, px * 4, FILL_ZERO, true);
    }
    /* resnet_small's largest and smallest batchnorm inputs */
    static const int bns[][2] = {{16, 28 * 28}, {64, 7 * 7}};
    for (int i = 0; i < 2; i++)
        for (int pass = 0; pass < 2 && n < max; pass++) {
            struct kcase *k = &cases[n++];
            memset(k, 0, sizeof *k);
            k->n = batch;
            k->c = bns[i][0];
            k->hw = bns[i][1];
            size_t x = (size_t)k->n * k->c * k->hw * 4, c = (size_t)k->c * 4;
            snprintf(k->name, sizeof k->name, "batchnorm %s %dx%dx%d", pass ? "bwd" : "fwd-train", k->n, k->c,
                     k->hw);
            k->unit = KB_BYTE;
            k->reduce = (double)k->n * k->hw;
            if (!pass) {
                /* the least a kernel must move: read x, write y */
                k->work = 2.0 * (double)x;
                k->entry = offsetof(struct backend, bn_fwd_train);
                k->call = call_bn_fwd;
                add_buf(k, x, FILL_RAND, false);  /* x */
                add_buf(k, c, FILL_POS, false);   /* gamma */
                add_buf(k, c, FILL_RAND, false);  /* beta */
                add_buf(k, x, FILL_ZERO, true);   /* y */
                add_buf(k, c, FILL_ZERO, true);   /* mean */
                add_buf(k, c, FILL_ZERO, true);   /* invstd */
                add_buf(k, c, FILL_ZERO, false);  /* running mean */
                add_buf(k, c, FILL_POS, false);   /* running var */
            } else {
                /* read x and dy, read and write dx */
                k->work = 4.0 * (double)x;
                k->entry = offsetof(struct backend, bn_bwd);
                k->call = call_bn_bwd;
                add_buf(k, x, FILL_RAND, false);  /* x */
                add_buf(k, x, FILL_RAND, false);  /* dy */
                add_buf(k, c, FILL_POS, false);   /* gamma */
                add_buf(k, c, FILL_RAND, false);  /* mean */
                add_buf(k, c, FILL_POS, false);   /* invstd */
                add_buf(k, x, FILL_ZERO, true);   /* dx */
                add_buf(k, c, FILL_ZERO, true);   /* dgamma */
                add_buf(k, c, FILL_ZERO, true);   /* dbeta */
            }
        }
    return n;
}

/* ---- running a case ---- */

static void *host_fill(size_t bytes, enum fill fill, uint64_t seed) {
    void *p = malloc(bytes ? bytes : 1);
    if (!p) return NULL;
    struct rng r = {seed};
    if (fill == FILL_ZERO) memset(p, 0, bytes);
    else if (fill == FILL_U8)
        for (size_t i = 0; i < bytes; i++) ((uint8_t *)p)[i] = (uint8_t)(rng_uniform(&r) * 256);
    else
        for (size_t i = 0; i < bytes / 4; i++)
            ((float *)p)[i] = fill == FILL_POS ? 0.5f + rng_uniform(&r) : rng_uniform(&r) * 2 - 1;
    return p;
}

struct flavour_run {
    const struct backend *be;
    const struct kcase *k;
    void *buf[KB_BUFS];
    void *ws;
};

static void run_flavour(void *arg) {
    struct flavour_run *f = arg;
    f->k->call(f->k, f->be, f->buf, f->ws);
}

static void free_run(struct flavour_run *f) {
    for (int i = 0; i < KB_BUFS; i++)
        if (f->buf[i]) f->be->free(f->buf[i]);
    if (f->ws) f->be->free(f->ws);
}

/* Device buffers for one flavour, from the host copies every flavour shares. */
static int alloc_run(struct flavour_run *f, const struct backend *be, const struct kcase *k, void *const *host) {
    memset(f, 0, sizeof *f);
    f->be = be;
    f->k = k;
    for (int i = 0; i < k->n_buf; i++) {
        if (!(f->buf[i] = be->alloc(k->bytes[i] ? k->bytes[i] : 1))) return -1;
        be->copy(f->buf[i], host[i], k->bytes[i], COPY_H2D);
    }
    size_t ws = k->call == call_conv_fwd || k->call == call_conv_bwd_data || k->call == call_conv_bwd_filter
                    ? be->conv2d_workspace(&k->g) : 0;
    if (ws && !(f->ws = be->alloc(ws))) return -1;
    be->sync();
    return 0;
}

/* max over i of |a-b| / max(1, |a|, |b|); infinite when either side is not finite */
static double max_rel(const float *a, const float *b, size_t n) {
    double worst = 0;
    for (size_t i = 0; i < n; i++) {
        if (!isfinite(a[i]) || !isfinite(b[i])) return INFINITY;
        double d = fabs((double)a[i] - b[i]) / fmax(1.0, fmax(fabs((double)a[i]), fabs((double)b[i])));
        if (d > worst) worst = d;
    }
    return worst;
}

static double compare_outputs(const struct kcase *k, struct flavour_run *f) {
    double worst = 0;
    for (int i = 0; i < k->n_buf; i++) {
        if (!k->check[i]) continue;
        float *a = malloc(k->bytes[i]), *b = malloc(k->bytes[i]);
        if (!a || !b) { free(a); free(b); return INFINITY; }
        f[0].be->copy(a, f[0].buf[i], k->bytes[i], COPY_D2H);
        f[1].be->copy(b, f[1].buf[i], k->bytes[i], COPY_D2H);
        double e = max_rel(a, b, k->bytes[i] / 4);
        if (!(e <= worst)) worst = e;
        free(a);
        free(b);
    }
    return worst;
}

static bool same_entry(const struct backend *a, const struct backend *b, size_t off) {
    return !memcmp((const char *)a + off, (const char *)b + off, sizeof(void (*)(void)));
}

static int run_case(const struct kbench_device *d, const struct kcase *k, struct kbench_result *r) {
    memset(r, 0, sizeof *r);
    memcpy(r->name, k->name, sizeof r->name);
    r->unit = k->unit;
    r->work = k->work;
    r->same_code = same_entry(d->loop, d->vec, k->entry);
    /* kl: the loop flavour's share of the case; C's first rows are A's first rows times B */
    struct kcase kl = *k;
    double scale = 1;
    if (k->loop_rows > 0 && k->loop_rows < k->m) {
        kl.m = k->loop_rows;
        kl.bytes[0] = kl.bytes[2] = (size_t)kl.m * k->n * sizeof(float);
        scale = (double)k->m / kl.m;
        snprintf(r->note, sizeof r->note, "loop: %d of %d rows, time scaled", kl.m, k->m);
    }
    void *host[KB_BUFS] = {0};
    struct flavour_run f[2];
    memset(f, 0, sizeof f);
    int rc = 0;
    for (int i = 0; i < k->n_buf && !rc; i++)
        if (!(host[i] = host_fill(k->bytes[i], k->fill[i], 1000 + (uint64_t)i))) rc = err_set("out of host memory");
    if (!rc) rc = alloc_run(&f[0], d->loop, &kl, host);
    if (!rc) rc = alloc_run(&f[1], d->vec, k, host);
    if (!rc) {
        /* the check run, which is also the warm-up */
        double first[2];
        for (int i = 0; i < 2; i++) first[i] = kbench_time_once(f[i].be, run_flavour, &f[i]);
        r->max_rel_err = compare_outputs(&kl, f);
        double tol = fmax(1e-4, 2e-5 * sqrt(k->reduce));
        r->agree = r->max_rel_err <= tol;
        r->t_loop_s = scale * kbench_time_s(d->loop, run_flavour, &f[0], first[0], &r->runs_loop);
        if (r->same_code) {
            r->t_vec_s = r->t_loop_s;
            r->runs_vec = r->runs_loop;
        } else {
            r->t_vec_s = kbench_time_s(d->vec, run_flavour, &f[1], first[1], &r->runs_vec);
        }
    }
    free_run(&f[0]);
    free_run(&f[1]);
    for (int i = 0; i < KB_BUFS; i++) free(host[i]);
    return rc;
}

int kbench_run_cases(const struct kbench_device *d, int batch, bool full, void (*row)(const struct kbench_result *r, void *ctx),
                 void *ctx) {
    struct kcase cases[64];
    int n = build_cases(cases, 64, batch, full), bad = 0;
    for (int i = 0; i < n; i++) {
        struct kbench_result r;
        if (run_case(d, &cases[i], &r)) {
            fprintf(stderr, "bench: %s: %s\n", cases[i].name, err_get());
            return -1;
        }
        bad += !r.agree;
        row(&r, ctx);
        fflush(stdout);
    }
    return bad;
}

/* ---- ./bench ops: the short table ---- */

static void short_row(const struct kbench_result *r, void *ctx) {
    (void)ctx;
    const char *unit = r->unit == KB_FLOP ? "GF/s" : "GB/s";
    printf("%-34s %10.2f %10.2f %8.1fx %7.2f %s %7.2f %s   %.1e%s%s%s%s\n", r->name, r->t_loop_s * 1e3,
           r->t_vec_s * 1e3, r->t_loop_s / r->t_vec_s, r->work / r->t_loop_s * 1e-9, unit,
           r->work / r->t_vec_s * 1e-9, unit, r->max_rel_err, r->same_code ? "  (same code)" : "",
           r->note[0] ? "  " : "", r->note, r->agree ? "" : "  FLAVOURS DISAGREE");
}

int kbench_parse_args(int argc, char **argv, const char *who, const char **device, int *batch) {
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--device") && i + 1 < argc) {
            *device = argv[++i];
        } else if (!strcmp(argv[i], "--batch") && i + 1 < argc) {
            *batch = atoi(argv[++i]);
            if (*batch < 1) { fprintf(stderr, "%s: --batch must be >= 1\n", who); return -1; }
        } else {
            fprintf(stderr, "%s: unknown argument '%s' (use --device cpu|cuda, --batch N)\n", who, argv[i]);
            return -1;
        }
    }
    return 0;
}

int bench_ops(int argc, char **argv) {
    const char *device = "cpu";
    int batch = 128;
    if (kbench_parse_args(argc, argv, "bench ops", &device, &batch)) return 2;
    struct kbench_device d;
    if (kbench_device_open(device, "bench ops", &d)) return 1;
    printf("nostall bench ops: %s kernels, loop vs vectorized, batch %d (times in ms, medians; "
           "./bench kernels adds peaks and dispatch cost)\n", device_name(d.dev), batch);
    printf("%-34s %10s %10s %9s %12s %12s   %s\n", "op", "loop", "vectorized", "speedup", "loop", "vec",
           "max rel err");
    int bad = kbench_run_cases(&d, batch, false, short_row, NULL);
    if (bad > 0) fprintf(stderr, "bench ops: %d case%s where the flavours disagree\n", bad, bad > 1 ? "s" : "");
    return bad ? 1 : 0;
}
