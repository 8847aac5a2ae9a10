/* bench_ops.c — ./bench ops: the loop and vectorized kernels on resnet_small's shapes.
 * Each pair is checked against each other before it is timed. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "bench.h"
#include "error.h"
#include "rng.h"

struct conv_job {
    const struct backend *be;
    struct conv_geom g;
    int pass;  /* 0 forward, 1 backward-data, 2 backward-filter */
    float *x, *w, *y, *dx, *dw;
    void *ws;
};

static void run_conv(void *arg) {
    struct conv_job *j = arg;
    if (j->pass == 0) j->be->conv2d_fwd(&j->g, j->x, j->w, NULL, j->y, j->ws);
    else if (j->pass == 1) j->be->conv2d_bwd_data(&j->g, j->y, j->w, j->dx, j->ws);
    else j->be->conv2d_bwd_filter(&j->g, j->x, j->y, j->dw, NULL, j->ws);
}

struct gemm_job { const struct backend *be; int n; float *a, *b, *c; };
static void run_gemm(void *arg) {
    struct gemm_job *j = arg;
    j->be->gemm(false, false, j->n, j->n, j->n, 1.0f, j->a, j->b, 0.0f, j->c);
}

struct ew_job { const struct backend *be; size_t n; float *a, *b, *y; int op; };
static void run_ew(void *arg) {
    struct ew_job *j = arg;
    if (j->op == 0) j->be->relu_fwd(j->n, j->a, j->y);
    else j->be->add_fwd(j->n, j->a, j->b, j->y);
}

static float *rand_buf(size_t n, uint64_t seed) {
    float *p = malloc(n * sizeof *p);
    if (!p) { fprintf(stderr, "bench: out of memory (%zu floats)\n", n); exit(1); }
    struct rng r = {seed};
    for (size_t i = 0; i < n; i++) p[i] = rng_uniform(&r) * 2 - 1;
    return p;
}

static double max_rel(const float *a, const float *b, size_t n) {
    double worst = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - b[i]) / fmax(1.0, fmax(fabs((double)a[i]), fabs((double)b[i])));
        if (!(d <= worst)) worst = d;
    }
    return worst;
}

static void row(const char *name, double flops, double t_loop, double t_vec, double err) {
    printf("%-34s %10.2f %10.2f %9.1fx %9.2f %9.2f   %.1e\n", name, t_loop * 1e3, t_vec * 1e3, t_loop / t_vec,
           flops / t_loop * 1e-9, flops / t_vec * 1e-9, err);
}

int bench_ops(int argc, char **argv) {
    int batch = 128;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--device") && i + 1 < argc) {
            if (strcmp(argv[++i], "cpu")) {
                fprintf(stderr, "bench ops: device '%s' is not available in this build (cpu only)\n", argv[i]);
                return 2;
            }
        } else if (!strcmp(argv[i], "--batch") && i + 1 < argc) {
            batch = atoi(argv[++i]);
            if (batch < 1) { fprintf(stderr, "bench ops: --batch must be >= 1\n"); return 2; }
        } else {
            fprintf(stderr, "bench ops: unknown argument '%s' (use --device cpu, --batch N)\n", argv[i]);
            return 2;
        }
    }
    const struct backend *lp = &cpu_loop_backend, *vec = &cpu_vectorized_backend;
    /* every distinct conv of resnet_small: c, h, k, kernel, stride */
    static const int convs[][5] = {{1, 28, 16, 3, 1},  {16, 28, 16, 3, 1}, {16, 28, 32, 3, 2}, {32, 14, 32, 3, 1},
                                   {16, 28, 32, 1, 2}, {32, 14, 64, 3, 2}, {64, 7, 64, 3, 1},  {32, 14, 64, 1, 2}};
    printf("nostall bench ops: CPU kernels, loop vs vectorized, batch %d (times in ms; GFLOP/s)\n", batch);
    printf("%-34s %10s %10s %10s %9s %9s   %s\n", "op", "loop", "vectorized", "speedup", "loop GF", "vec GF",
           "max rel err");
    static const char *pass_name[] = {"fwd", "bwd-data", "bwd-filter"};
    for (size_t i = 0; i < sizeof convs / sizeof convs[0]; i++) {
        struct conv_geom g = {.n = batch, .c = convs[i][0], .h = convs[i][1], .w = convs[i][1], .k = convs[i][2],
                              .r = convs[i][3], .s = convs[i][3], .stride = convs[i][4], .pad = convs[i][3] / 2};
        g.oh = (g.h + 2 * g.pad - g.r) / g.stride + 1;
        g.ow = (g.w + 2 * g.pad - g.s) / g.stride + 1;
        size_t nx = (size_t)g.n * g.c * g.h * g.w, nw = (size_t)g.k * g.c * g.r * g.s;
        size_t ny = (size_t)g.n * g.k * g.oh * g.ow;
        double flops = 2.0 * (double)ny * g.c * g.r * g.s;
        for (int pass = 0; pass < 3; pass++) {
            struct conv_job j[2];
            for (int f = 0; f < 2; f++) {
                const struct backend *be = f ? vec : lp;
                size_t wsz = be->conv2d_workspace(&g);
                j[f] = (struct conv_job){be, g, pass, rand_buf(nx, 1), rand_buf(nw, 2), rand_buf(ny, 3),
                                         calloc(nx, sizeof(float)), calloc(nw, sizeof(float)), malloc(wsz ? wsz : 1)};
                run_conv(&j[f]);  /* the check run: outputs from identical inputs */
            }
            float *out0 = pass == 0 ? j[0].y : pass == 1 ? j[0].dx : j[0].dw;
            float *out1 = pass == 0 ? j[1].y : pass == 1 ? j[1].dx : j[1].dw;
            double err = max_rel(out0, out1, pass == 0 ? ny : pass == 1 ? nx : nw);
            double t_loop = bench_median_s(run_conv, &j[0], 1), t_vec = bench_median_s(run_conv, &j[1], 5);
            char name[64];
            snprintf(name, sizeof name, "conv %dx%d %d->%d %dx%d /%d %s", g.r, g.s, g.c, g.k, g.h, g.w, g.stride,
                     pass_name[pass]);
            row(name, flops, t_loop, t_vec, err);
            for (int f = 0; f < 2; f++) {
                free(j[f].x); free(j[f].w); free(j[f].y); free(j[f].dx); free(j[f].dw); free(j[f].ws);
            }
        }
    }
    {
        int n = 512;
        struct gemm_job j[2];
        for (int f = 0; f < 2; f++)
            j[f] = (struct gemm_job){f ? vec : lp, n, rand_buf((size_t)n * n, 4), rand_buf((size_t)n * n, 5),
                                     calloc((size_t)n * n, sizeof(float))};
        run_gemm(&j[0]);
        run_gemm(&j[1]);
        double err = max_rel(j[0].c, j[1].c, (size_t)n * n);
        row("matmul 512x512x512", 2.0 * n * n * n, bench_median_s(run_gemm, &j[0], 1),
            bench_median_s(run_gemm, &j[1], 5), err);
        for (int f = 0; f < 2; f++) { free(j[f].a); free(j[f].b); free(j[f].c); }
    }
    for (int op = 0; op < 2; op++) {
        size_t n = 8u << 20;
        struct ew_job j[2];
        for (int f = 0; f < 2; f++)
            j[f] = (struct ew_job){f ? vec : lp, n, rand_buf(n, 6), rand_buf(n, 7), calloc(n, sizeof(float)), op};
        run_ew(&j[0]);
        run_ew(&j[1]);
        double err = max_rel(j[0].y, j[1].y, n);
        double t_loop = bench_median_s(run_ew, &j[0], 5), t_vec = bench_median_s(run_ew, &j[1], 5);
        double bytes = (op ? 3.0 : 2.0) * 4.0 * (double)n;
        printf("%-34s %10.2f %10.2f %9.1fx %8.1f GB/s %6.1f GB/s  %.1e\n", op ? "add 8M floats" : "relu 8M floats",
               t_loop * 1e3, t_vec * 1e3, t_loop / t_vec, bytes / t_loop * 1e-9, bytes / t_vec * 1e-9, err);
        for (int f = 0; f < 2; f++) { free(j[f].a); free(j[f].b); free(j[f].y); }
    }
    return 0;
}
