/* bench_kernels.c — `./bench kernels [--device cpu|cuda] [--batch N]`: the loop and
 * vectorized kernels against the machine's own peaks, and what one call costs.
 *
 *   int bench_kernels(int argc, char **argv);   (bench.h; argv[0] = "kernels")
 *
 * 1. Peaks, measured here and now rather than taken from a data sheet:
 *      CPU  FLOP/s of a register-blocked FMA loop (AVX-512, AVX2 or plain C, whichever
 *           this CPU runs), on one thread and on all; bytes/s of a 256 MB memcpy.
 *      GPU  the vectorized table's GEMM (cuBLAS) at 8192, and a device-to-device copy.
 *    A peak is the best of its runs: other jobs on the machine only ever lower it.
 * 2. Every case of bench_ops.c (checked, then timed; medians) with its rate as a share
 *    of the matching peak: GFLOP/s for the convolutions and matmuls, GB/s for the
 *    elementwise kernels and batchnorm. The loop flavour runs on one thread, so its
 *    share of an all-core peak is at most 1/cores.
 * 3. Dispatch cost: y = a + b over one buffer as one op call, one per row, one per
 *    element through the op layer (shape checks, arena, tape; on a GPU, one kernel
 *    launch each), and one bare kernel call per element. */
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "autograd.h"
#include "bench.h"
#include "error.h"
#include "ops.h"
#include "rng.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define KB_X86 1
#endif

/* ---- the CPU's FLOP peak: 12 independent FMA chains per thread, enough to keep two
 * FMA units with a 4-cycle latency busy, all in registers. ---- */

#define CHAINS(X) X(0) X(1) X(2) X(3) X(4) X(5) X(6) X(7) X(8) X(9) X(10) X(11)
#define FMA_CHAINS 12

#ifdef KB_X86
__attribute__((target("avx512f"))) static float fma_avx512(long iters) {
    __m512 m = _mm512_set1_ps(0.9999999f), c = _mm512_set1_ps(1e-7f);
#define DECL(i) __m512 a##i = _mm512_set1_ps((float)(i));
#define STEP(i) a##i = _mm512_fmadd_ps(a##i, m, c);
#define SUM(i) s = _mm512_add_ps(s, a##i);
    CHAINS(DECL)
    for (long k = 0; k < iters; k++) { CHAINS(STEP) }
    __m512 s = _mm512_setzero_ps();
    CHAINS(SUM)
    float out[16];
    _mm512_storeu_ps(out, s);
    return out[0];
#undef DECL
#undef STEP
#undef SUM
}

__attribute__((target("avx2,fma"))) static float fma_avx2(long iters) {
    __m256 m = _mm256_set1_ps(0.9999999f), c = _mm256_set1_ps(1e-7f);
#define DECL(i) __m256 a##i = _mm256_set1_ps((float)(i));
#define STEP(i) a##i = _mm256_fmadd_ps(a##i, m, c);
#define SUM(i) s = _mm256_add_ps(s, a##i);
    CHAINS(DECL)
    for (long k = 0; k < iters; k++) { CHAINS(STEP) }
    __m256 s = _mm256_setzero_ps();
    CHAINS(SUM)
    float out[8];
    _mm256_storeu_ps(out, s);
    return out[0];
#undef DECL
#undef STEP
#undef SUM
}
#endif

/* Any other CPU: 8-wide multiply-adds the compiler vectorizes as it can. */
static float fma_generic(long iters) {
    float a[FMA_CHAINS][8];
    for (int i = 0; i < FMA_CHAINS; i++)
        for (int l = 0; l < 8; l++) a[i][l] = (float)i;
    for (long k = 0; k < iters; k++)
        for (int i = 0; i < FMA_CHAINS; i++) {
#pragma omp simd
            for (int l = 0; l < 8; l++) a[i][l] = a[i][l] * 0.9999999f + 1e-7f;
        }
    float s = 0;
    for (int i = 0; i < FMA_CHAINS; i++) s += a[i][0];
    return s;
}

struct fma_kernel {
    const char *name;
    int lanes;
    float (*fn)(long iters);
};

static struct fma_kernel pick_fma(void) {
#ifdef KB_X86
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f")) return (struct fma_kernel){"AVX-512 FMA", 16, fma_avx512};
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
        return (struct fma_kernel){"AVX2 FMA", 8, fma_avx2};
#endif
    return (struct fma_kernel){"plain C multiply-add", 8, fma_generic};
}

static volatile float sink;

/* GFLOP/s of `threads` threads each running the kernel for iters iterations. */
static double fma_rate(const struct fma_kernel *k, int threads, long iters) {
    double t0 = bench_now_s();
#pragma omp parallel num_threads(threads)
    {
        float v = k->fn(iters);
#pragma omp atomic
        sink += v;
    }
    double t = bench_now_s() - t0;
    return (double)threads * (double)iters * FMA_CHAINS * k->lanes * 2 / t * 1e-9;
}

static double best_fma_rate(const struct fma_kernel *k, int threads) {
    long iters = 1 << 16;
    double r = fma_rate(k, threads, iters);  /* also wakes the threads up */
    double per_iter_s = (double)FMA_CHAINS * k->lanes * 2 * threads / (r * 1e9);
    iters = (long)(0.1 / per_iter_s / threads);  /* ~0.1 s per run */
    if (iters < 1024) iters = 1024;
    double best = 0;
    for (int i = 0; i < 5; i++) best = fmax(best, fma_rate(k, threads, iters));
    return best;
}

/* GB/s (bytes read + written) of copying `bytes` split over `threads` threads. */
static double best_memcpy_rate(char *dst, const char *src, size_t bytes, int threads) {
    double best = 0;
    for (int r = 0; r < 5; r++) {
        double t0 = bench_now_s();
#pragma omp parallel num_threads(threads)
        {
            int i = omp_get_thread_num(), n = omp_get_num_threads();
            size_t chunk = bytes / (size_t)n, at = (size_t)i * chunk;
            memcpy(dst + at, src + at, i == n - 1 ? bytes - at : chunk);
        }
        best = fmax(best, 2.0 * (double)bytes / (bench_now_s() - t0) * 1e-9);
    }
    return best;
}

struct peaks {
    double gflops, gbytes;          /* what shares are taken of */
    char flop_how[160], byte_how[200];
};

static int cpu_peaks(struct peaks *p) {
    int cores = omp_get_max_threads();
    struct fma_kernel k = pick_fma();
    double one = best_fma_rate(&k, 1), all = cores > 1 ? best_fma_rate(&k, cores) : one;
    p->gflops = fmax(one, all);
    snprintf(p->flop_how, sizeof p->flop_how, "%s loop: %.1f GFLOP/s on 1 thread, %.1f on %d", k.name, one, all,
             cores);
    /* two sizes: the kernels' own working set (32 MB buffers, which a large last-level
     * cache may hold) and one past any cache; the faster is the ceiling the kernels
     * below can reach */
    static const size_t sizes[] = {(size_t)32 << 20, (size_t)256 << 20};
    char *a = malloc(sizes[1]), *b = malloc(sizes[1]);
    if (!a || !b) {
        free(a);
        free(b);
        return err_set("out of host memory for the 256 MB memcpy");
    }
    memset(a, 1, sizes[1]);  /* touch every page before timing */
    memset(b, 2, sizes[1]);
    double rate[2][2];
    for (int i = 0; i < 2; i++) {
        rate[i][0] = best_memcpy_rate(b, a, sizes[i], 1);
        rate[i][1] = cores > 1 ? best_memcpy_rate(b, a, sizes[i], cores) : rate[i][0];
    }
    free(a);
    free(b);
    p->gbytes = fmax(fmax(rate[0][0], rate[0][1]), fmax(rate[1][0], rate[1][1]));
    snprintf(p->byte_how, sizeof p->byte_how, "memcpy, read + written: 32 MB %.1f GB/s on 1 thread, %.1f on %d; "
             "256 MB %.1f and %.1f", rate[0][0], rate[0][1], cores, rate[1][0], rate[1][1]);
    return 0;
}

/* ---- a GPU's peaks, through its table: a large GEMM and a device-to-device copy ---- */

struct gemm_job { const struct backend *be; int n; float *a, *b, *c; };
static void run_big_gemm(void *arg) {
    struct gemm_job *j = arg;
    j->be->gemm(false, false, j->n, j->n, j->n, 1.0f, j->a, j->b, 0.0f, j->c);
}
struct copy_job { const struct backend *be; void *dst, *src; size_t bytes; };
static void run_d2d(void *arg) {
    struct copy_job *j = arg;
    j->be->copy(j->dst, j->src, j->bytes, COPY_D2D);
}

static double best_of(const struct backend *be, void (*fn)(void *), void *arg) {
    kbench_time_once(be, fn, arg);  /* warm-up: library handles, clocks */
    double best = INFINITY;
    for (int i = 0; i < 5; i++) best = fmin(best, kbench_time_once(be, fn, arg));
    return best;
}

static int device_peaks(const struct backend *be, struct peaks *p) {
    int n = 8192;
    size_t mat = (size_t)n * n * sizeof(float), copy = (size_t)1 << 30;
    struct gemm_job g = {be, n, be->alloc(mat), be->alloc(mat), be->alloc(mat)};
    struct copy_job c = {be, be->alloc(copy), be->alloc(copy), copy};
    int rc = g.a && g.b && g.c && c.dst && c.src ? 0 : -1;
    if (!rc) {
        be->zero(g.a, mat);
        be->zero(g.b, mat);
        be->zero(c.src, copy);
        p->gflops = 2.0 * n * (double)n * n / best_of(be, run_big_gemm, &g) * 1e-9;
        p->gbytes = 2.0 * (double)copy / best_of(be, run_d2d, &c) * 1e-9;
        snprintf(p->flop_how, sizeof p->flop_how, "%s GEMM %dx%dx%d: %.0f GFLOP/s", be->name, n, n, n, p->gflops);
        snprintf(p->byte_how, sizeof p->byte_how, "device-to-device copy of 1 GiB: %.0f GB/s (read + written)",
                 p->gbytes);
    }
    void *bufs[] = {g.a, g.b, g.c, c.dst, c.src};
    for (int i = 0; i < 5; i++)
        if (bufs[i]) be->free(bufs[i]);
    return rc;
}

/* ---- the full table ---- */

static void full_row(const struct kbench_result *r, void *ctx) {
    const struct peaks *p = ctx;
    double peak = r->unit == KB_FLOP ? p->gflops : p->gbytes;
    double rl = r->work / r->t_loop_s * 1e-9, rv = r->work / r->t_vec_s * 1e-9;
    const char *unit = r->unit == KB_FLOP ? "GF/s" : "GB/s";
    printf("%-34s %9.2f %9.2f %7.1fx %8.2f %s %8.2f %s %7.1f%% %7.1f%%  %.1e%s%s%s%s\n", r->name,
           r->t_loop_s * 1e3, r->t_vec_s * 1e3, r->t_loop_s / r->t_vec_s, rl, unit, rv, unit, 100 * rl / peak,
           100 * rv / peak, r->max_rel_err, r->same_code ? "  same code" : "", r->note[0] ? "  " : "", r->note,
           r->agree ? "" : "  FLAVOURS DISAGREE");
}

/* ---- dispatch cost ---- */

enum dispatch_way { WAY_OP_CHUNKS, WAY_BARE_ELEMENTS };

struct dispatch_job {
    struct ag_ctx *ctx;
    enum dispatch_way way;
    float *a, *b, *y;  /* on the device */
    size_t n, chunk;
};

/* A tensor header over part of a device buffer: the op layer sees a 1-D tensor. */
static struct tensor view(const struct backend *be, float *data, size_t n) {
    struct tensor t;
    memset(&t, 0, sizeof t);
    t.ndim = 1;
    t.shape[0] = (int)n;
    t.numel = n;
    t.data = data;
    t.dev = be->dev;
    return t;
}

/* copy_out: also gather the outputs into y (the check run only). */
static int run_dispatch(struct dispatch_job *j, bool copy_out) {
    const struct backend *be = j->ctx->be;
    if (j->way == WAY_BARE_ELEMENTS) {
        for (size_t i = 0; i < j->n; i++) be->add_fwd(1, j->a + i, j->b + i, j->y + i);
        return 0;
    }
    for (size_t i = 0; i < j->n; i += j->chunk) {
        struct tensor ta = view(be, j->a + i, j->chunk), tb = view(be, j->b + i, j->chunk);
        struct tensor *out = op_add(j->ctx, &ta, &tb);
        if (!out) return -1;
        if (copy_out) be->copy(j->y + i, out->data, j->chunk * sizeof(float), COPY_D2D);
    }
    ag_reset(j->ctx);
    return 0;
}

static void run_dispatch_timed(void *arg) { run_dispatch(arg, false); }

static int dispatch_table(const struct backend *be) {
    const size_t n = (size_t)1 << 20;
    struct ag_ctx ctx;
    if (ag_ctx_init(&ctx, be)) return -1;
    ctx.grad_enabled = false;
    float *host = malloc(3 * n * sizeof *host);
    float *a = be->alloc(n * sizeof *a), *b = be->alloc(n * sizeof *b), *y = be->alloc(n * sizeof *y);
    int rc = host && a && b && y ? 0 : err_set("out of memory for the dispatch buffers");
    if (!rc) {
        struct rng r = {7};
        for (size_t i = 0; i < 2 * n; i++) host[i] = rng_uniform(&r);
        be->copy(a, host, n * sizeof *a, COPY_H2D);
        be->copy(b, host + n, n * sizeof *b, COPY_H2D);
    }
    static const struct { const char *what; enum dispatch_way way; size_t chunk; } ways[] = {
        {"one op_add over the whole buffer", WAY_OP_CHUNKS, 0},
        {"op_add per row of 256", WAY_OP_CHUNKS, 256},
        {"op_add per element", WAY_OP_CHUNKS, 1},
        {"add kernel per element, no op layer", WAY_BARE_ELEMENTS, 1},
    };
    printf("\ndispatch cost: y = a + b over %zu floats with %s, as one call or many%s\n", n, be->name,
           be->dev == DEV_CUDA ? " (each call is one kernel launch)" : "");
    printf("%-40s %8s %10s %12s %18s %10s\n", "way", "calls", "total ms", "us per call", "overhead per call",
           "vs one");
    double t_one = 0;
    for (size_t w = 0; !rc && w < sizeof ways / sizeof ways[0]; w++) {
        struct dispatch_job j = {&ctx, ways[w].way, a, b, y, n, ways[w].chunk ? ways[w].chunk : n};
        be->zero(y, n * sizeof *y);
        /* the check run: every element must come out as a + b */
        if ((rc = run_dispatch(&j, true))) break;
        be->sync();
        be->copy(host + 2 * n, y, n * sizeof *y, COPY_D2H);
        for (size_t i = 0; i < n; i++)
            if (host[2 * n + i] != host[i] + host[n + i]) {
                rc = err_set("dispatch: '%s' gave a wrong sum at element %zu", ways[w].what, i);
                break;
            }
        if (rc) break;
        double first = kbench_time_once(be, run_dispatch_timed, &j);
        double t = kbench_time_s(be, run_dispatch_timed, &j, first, NULL);
        size_t calls = n / j.chunk;
        if (w == 0) t_one = t;
        if (w == 0)
            printf("%-40s %8zu %10.3f %12.3f %18s %9.1fx\n", ways[w].what, calls, t * 1e3, t * 1e6 / (double)calls,
                   "-", 1.0);
        else
            printf("%-40s %8zu %10.3f %12.4f %15.4f us %9.1fx\n", ways[w].what, calls, t * 1e3,
                   t * 1e6 / (double)calls, fmax(0, t - t_one) * 1e6 / (double)calls, t / t_one);
    }
    free(host);
    if (a) be->free(a);
    if (b) be->free(b);
    if (y) be->free(y);
    ag_ctx_free(&ctx);
    return rc;
}

int bench_kernels(int argc, char **argv) {
    const char *device = "cpu";
    int batch = 128;
    if (argc > 1 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"))) {
        printf("usage: ./bench kernels [--device cpu|cuda] [--batch N]\n"
               "  loop vs vectorized kernels with GFLOP/s or GB/s as a share of peaks this run measures,\n"
               "  and the per-call cost of dispatching elementwise work one element or row at a time\n");
        return 0;
    }
    if (kbench_parse_args(argc, argv, "bench kernels", &device, &batch)) return 2;
    struct kbench_device d;
    if (kbench_device_open(device, "bench kernels", &d)) return 1;
    char load[64];
    kbench_load_string(load, sizeof load);
    printf("nostall bench kernels: %s, loop vs vectorized, batch %d; %ld online CPUs, %d OpenMP threads\n",
           device_name(d.dev), batch, sysconf(_SC_NPROCESSORS_ONLN), omp_get_max_threads());
    printf("load average before: %s\n", load);
    if (atof(load) > (double)sysconf(_SC_NPROCESSORS_ONLN) - 0.5)
        printf("note: the machine is busy; a multi-threaded kernel waits at its barriers for a thread whose core "
               "another job holds,\n      which shows as times near whole scheduler ticks (e.g. 4, 8, 12 ms)\n");
    struct peaks p;
    if (d.dev == DEV_CPU ? cpu_peaks(&p) : device_peaks(d.vec, &p)) {
        fprintf(stderr, "bench kernels: measuring the peaks: %s\n", err_get());
        return 1;
    }
    printf("peak FLOP/s: %.1f GFLOP/s (%s)\n", p.gflops, p.flop_how);
    printf("peak bytes/s: %.1f GB/s (%s)\n", p.gbytes, p.byte_how);
    printf("(times: medians in ms; rates: GFLOP/s for conv and matmul, GB/s for the rest, as a share of the "
           "peak above;\n the loop flavour runs on one thread; a GB/s share past 100%% means the buffers stayed in "
           "a cache the copy did not)\n\n");
    printf("%-34s %9s %9s %8s %13s %13s %8s %8s  %s\n", "kernel", "loop ms", "vec ms", "speedup", "loop rate",
           "vec rate", "loop %pk", "vec %pk", "max rel err");
    int bad = kbench_run_cases(&d, batch, true, full_row, &p);
    if (bad < 0) return 1;
    if (dispatch_table(d.vec)) {
        fprintf(stderr, "bench kernels: %s\n", err_get());
        return 1;
    }
    kbench_load_string(load, sizeof load);
    printf("\nload average after: %s\n", load);
    if (bad) fprintf(stderr, "bench kernels: %d case%s where the flavours disagree\n", bad, bad > 1 ? "s" : "");
    return bad ? 1 : 0;
}
