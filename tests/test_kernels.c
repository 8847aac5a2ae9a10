/* test_kernels.c — the CPU backends, entry by entry.
 *
 *  - loop_vs_vectorized: one table of cases, every backend entry on several
 *    shapes; both tables run on the same random inputs and must agree to 1e-4.
 *    Forward outputs start as NaN, so an element a kernel forgets to write shows;
 *    gradient outputs start at random values, and each backward entry is run a
 *    second time from zero to prove it adds into them rather than overwriting.
 *    A case whose entry a table leaves NULL is skipped, naming the table.
 *  - gradcheck: a second table, every backward entry against central finite
 *    differences of its forward entry, on both tables.
 *  - a few values worked out by hand, and the memory entries. */
#include <criterion/criterion.h>
#include <criterion/parameterized.h>
#include <omp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "error.h"
#include "kcases.h"
#include "km_math.h"
#include "testutil.h"

static const struct backend *const cpu_tables[] = {&cpu_loop_backend, &cpu_vectorized_backend};
enum { N_TABLES = sizeof cpu_tables / sizeof cpu_tables[0] };

/* a case skipped for an entry a table leaves NULL is said after the run */
ReportHook(POST_ALL)(struct criterion_global_stats *stats) { report_skips("test_kernels", stats); }

/* ---- what kcases.h leaves to this suite ---- */

/* labels and max indices in plain host memory, to the byte, for AddressSanitizer */
static void *table_alloc(const struct backend *be, size_t bytes) {
    (void)be;
    void *p = malloc(bytes ? bytes : 1);
    cr_assert_not_null(p, "malloc of %zu bytes", bytes);
    return p;
}
static void table_free(const struct backend *be, void *p) {
    (void)be;
    free(p);
}

/* normalize_u8: d = (n, h, w, c); mean and std are buffers of the case */
static int normalize_u8_layout(const struct kcase *c, struct buf *b) {
    b[0] = BUF("mean", IN, c->d[3], 0, 1);
    b[1] = BUF("std", IN, c->d[3], 0.2f, 1);
    b[2] = BUF("dst", OUT, c->d[0] * c->d[1] * c->d[2] * c->d[3], 0, 0);
    return 3;
}
static void normalize_u8_call(const struct backend *be, const struct kcase *c, float **b,
                              void *ws) {
    (void)ws;
    size_t n = (size_t)c->d[0] * c->d[1] * c->d[2] * c->d[3];
    uint8_t *src = malloc(n);
    uint64_t seed = 0xb17e5;
    for (size_t i = 0; i < n; i++) src[i] = (uint8_t)tu_rand_u32(&seed);
    be->normalize_u8(c->d[0], c->d[1], c->d[2], c->d[3], src, b[0], b[1], b[2]);
    free(src);
}

/* ---- the table: the shared cases, and the CPU's own ---- */

static struct kcase agree_cases[] = {
    KCASES_SHARED,
    /* more output channels than a vector holds (bwd_filter runs 16 at a time) */
    CONV(2, 3, 7, 7, 40, 3, 3, 1, 1),
    CONV(4, 16, 9, 9, 32, 3, 3, 2, 1),
    /* rows of resnet_small's width: 28 outputs, or 14 per column phase at stride 2,
     * fill no whole number of vectors (tile_out's overlapping last vector) */
    CONV(2, 3, 5, 28, 4, 3, 3, 1, 1),
    CONV(2, 3, 6, 28, 4, 3, 3, 2, 1),
    CONV(2, 3, 4, 19, 4, 3, 3, 1, 1),
    /* bwd_filter transposes dy by blocks of 16 channels x 16 pixels: a plane of fewer
     * pixels goes one at a time; 40 channels are two blocks and 8 one at a time */
    CONV(2, 4, 3, 3, 16, 3, 3, 1, 1),
    CONV(2, 3, 5, 7, 40, 3, 3, 1, 1),
};

/* ---- running one case on one table ---- */

/* Random inputs drawn in the same order whatever `grads_from_zero` says, so every
 * run of a case sees the same inputs. */
static void run_case(const struct kcase *c, const struct backend *be, bool grads_from_zero,
                     struct run *r) {
    uint64_t seed = case_seed(c);
    r->nb = op_of(c)->layout(c, r->spec);
    for (int i = 0; i < r->nb; i++) {
        const struct buf *s = &r->spec[i];
        r->data[i] = r->start[i] = NULL;
        if (s->n == 0) continue;
        r->data[i] = malloc(s->n * sizeof(float));
        r->start[i] = malloc(s->n * sizeof(float));
        tu_fill(&seed, r->data[i], s->n, s->lo, s->hi);
        if (s->role == OUT) for (size_t j = 0; j < s->n; j++) r->data[i][j] = NAN;
        if (s->role == ACC && grads_from_zero) memset(r->data[i], 0, s->n * sizeof(float));
        memcpy(r->start[i], r->data[i], s->n * sizeof(float));
    }
    size_t ws_bytes = op_of(c)->conv_ws ? be->conv2d_workspace(&c->cg) : 0;
    void *ws = malloc(ws_bytes ? ws_bytes : 1);
    memset(ws, 0xff, ws_bytes); /* all-ones bytes are NaN floats: "undefined on entry" */
    op_of(c)->call(be, c, r->data, ws);
    free(ws);
}

static bool all_finite(const float *x, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (!isfinite(x[i])) return false;
    return true;
}

ParameterizedTestParameters(kernels, loop_vs_vectorized) {
    return cr_make_param_array(struct kcase, agree_cases,
                               sizeof agree_cases / sizeof agree_cases[0]);
}

ParameterizedTest(struct kcase *param, kernels, loop_vs_vectorized) {
    struct kcase c = *param;
    case_complete(&c);
    char name[256], lacking[128];
    case_str(op_of(&c)->name, &c, name, sizeof name);
    const struct backend *have[N_TABLES];
    if (tables_with(op_of(&c), cpu_tables, N_TABLES, have, lacking, sizeof lacking) < N_TABLES)
        skip_unsupported(name, lacking);

    struct run lp, vec;
    run_case(&c, &cpu_loop_backend, false, &lp);
    run_case(&c, &cpu_vectorized_backend, false, &vec);
    bool has_grads = false;
    for (int i = 0; i < lp.nb; i++) {
        const struct buf *s = &lp.spec[i];
        if (s->n == 0) continue;
        if (s->role == IN) {
            cr_expect(memcmp(lp.data[i], lp.start[i], s->n * sizeof(float)) == 0 &&
                          memcmp(vec.data[i], vec.start[i], s->n * sizeof(float)) == 0,
                      "%s: input %s was modified", name, s->name);
            continue;
        }
        has_grads |= s->role == ACC;
        cr_expect(all_finite(lp.data[i], s->n), "%s: loop left %s unwritten or not finite",
                  name, s->name);
        cr_expect(all_finite(vec.data[i], s->n),
                  "%s: vectorized left %s unwritten or not finite", name, s->name);
        double err = tu_max_rel_err(lp.data[i], vec.data[i], s->n);
        cr_expect(err <= AGREE_TOL, "%s: %s differs, max rel err %g", name, s->name, err);
    }

    /* Accumulation: (result from a random start) - start == (result from zero). */
    if (has_grads)
        for (int t = 0; t < N_TABLES; t++) {
            struct run from_rand, from_zero;
            run_case(&c, cpu_tables[t], false, &from_rand);
            run_case(&c, cpu_tables[t], true, &from_zero);
            for (int i = 0; i < from_rand.nb; i++) {
                const struct buf *s = &from_rand.spec[i];
                if (s->role != ACC || s->n == 0) continue;
                for (size_t j = 0; j < s->n; j++) from_rand.data[i][j] -= from_rand.start[i][j];
                double err = tu_max_rel_err(from_rand.data[i], from_zero.data[i], s->n);
                cr_expect(err <= AGREE_TOL, "%s on %s: %s is overwritten, not accumulated (%g)",
                          name, cpu_tables[t]->name, s->name, err);
            }
            run_free(&from_rand);
            run_free(&from_zero);
        }
    run_free(&lp);
    run_free(&vec);
}

/* ---- gradcheck: every backward entry against finite differences ----
 * loss = sum_j out_j * r_j for a random r; the backward entries, given dout = r,
 * must give d loss / d input, which central differences estimate. */

struct fd_op {
    const char *name;
    int nin;
    const char *in_names[4];
    /* sizes of the inputs (0: passed as NULL) and of the output */
    void (*sizes)(const struct kcase *c, size_t *in_n, size_t *out_n);
    void (*fwd)(const struct backend *be, const struct kcase *c, float **in, float *out);
    /* grads start at zero; the entries add d loss / d in[i] into grad[i] */
    void (*bwd)(const struct backend *be, const struct kcase *c, float **in, const float *dout,
                float **grad);
};

static void fd_conv_sizes(const struct kcase *c, size_t *in_n, size_t *out_n) {
    in_n[0] = conv_x_n(&c->cg);
    in_n[1] = conv_w_n(&c->cg);
    in_n[2] = c->flag ? (size_t)c->cg.k : 0;
    *out_n = conv_y_n(&c->cg);
}
static void *conv_ws(const struct backend *be, const struct kcase *c) {
    size_t bytes = be->conv2d_workspace(&c->cg);
    return malloc(bytes ? bytes : 1);
}
static void fd_conv_fwd(const struct backend *be, const struct kcase *c, float **in, float *out) {
    void *ws = conv_ws(be, c);
    be->conv2d_fwd(&c->cg, in[0], in[1], in[2], out, ws);
    free(ws);
}
static void fd_conv_bwd(const struct backend *be, const struct kcase *c, float **in,
                        const float *dout, float **grad) {
    void *ws = conv_ws(be, c);
    be->conv2d_bwd_data(&c->cg, dout, in[1], grad[0], true, ws);
    be->conv2d_bwd_filter(&c->cg, in[0], dout, grad[1], grad[2], ws);
    free(ws);
}

/* d = (n, in, out) */
static void fd_linear_sizes(const struct kcase *c, size_t *in_n, size_t *out_n) {
    in_n[0] = (size_t)c->d[0] * c->d[1];
    in_n[1] = (size_t)c->d[2] * c->d[1];
    in_n[2] = c->flag ? (size_t)c->d[2] : 0;
    *out_n = (size_t)c->d[0] * c->d[2];
}
static void fd_linear_fwd(const struct backend *be, const struct kcase *c, float **in,
                          float *out) {
    be->linear_fwd(c->d[0], c->d[1], c->d[2], in[0], in[1], in[2], out);
}
static void fd_linear_bwd(const struct backend *be, const struct kcase *c, float **in,
                          const float *dout, float **grad) {
    be->linear_bwd(c->d[0], c->d[1], c->d[2], in[0], in[1], dout, grad[0], grad[1], grad[2]);
}

/* d = (n, c, hw); the output is y, the saved mean/invstd are a means to backward */
static void fd_bn_sizes(const struct kcase *c, size_t *in_n, size_t *out_n) {
    in_n[0] = *out_n = (size_t)c->d[0] * c->d[1] * c->d[2];
    in_n[1] = in_n[2] = (size_t)c->d[1];
}
static void bn_train_saving(const struct backend *be, const struct kcase *c, float **in,
                            float *y, float *mean, float *invstd) {
    float rmean[64] = {0}, rvar[64] = {0};
    be->bn_fwd_train(c->d[0], c->d[1], c->d[2], in[0], in[1], in[2], y, mean, invstd, rmean,
                     rvar, 0.1f, 1e-5f);
}
static void fd_bn_fwd(const struct backend *be, const struct kcase *c, float **in, float *out) {
    float mean[64], invstd[64];
    bn_train_saving(be, c, in, out, mean, invstd);
}
static void fd_bn_bwd(const struct backend *be, const struct kcase *c, float **in,
                      const float *dout, float **grad) {
    float mean[64], invstd[64];
    float *y = malloc((size_t)c->d[0] * c->d[1] * c->d[2] * sizeof *y);
    bn_train_saving(be, c, in, y, mean, invstd);
    be->bn_bwd(c->d[0], c->d[1], c->d[2], in[0], dout, in[1], mean, invstd, grad[0], true,
               grad[1], grad[2]);
    free(y);
}

/* d = (n, c, hw), flag = with a residual; inputs x, gamma, beta, res */
static void fd_bn_relu_sizes(const struct kcase *c, size_t *in_n, size_t *out_n) {
    fd_bn_sizes(c, in_n, out_n);
    in_n[3] = c->flag ? *out_n : 0;
}
static void bn_relu_saving(const struct backend *be, const struct kcase *c, float **in, float *y,
                           float *mean, float *invstd) {
    float rmean[64] = {0}, rvar[64] = {0};
    be->bn_relu_fwd_train(c->d[0], c->d[1], c->d[2], in[0], in[3], in[1], in[2], y, mean, invstd,
                          rmean, rvar, 0.1f, 1e-5f);
}
static void fd_bn_relu_fwd(const struct backend *be, const struct kcase *c, float **in,
                           float *out) {
    float mean[64], invstd[64];
    bn_relu_saving(be, c, in, out, mean, invstd);
}
static void fd_bn_relu_bwd(const struct backend *be, const struct kcase *c, float **in,
                           const float *dout, float **grad) {
    float mean[64], invstd[64];
    float *y = malloc((size_t)c->d[0] * c->d[1] * c->d[2] * sizeof *y);
    bn_relu_saving(be, c, in, y, mean, invstd);
    be->bn_relu_bwd(c->d[0], c->d[1], c->d[2], in[0], y, dout, in[1], mean, invstd, grad[0],
                    true, grad[3], true, grad[1], grad[2]);
    free(y);
}
/* Moves the inputs to where no finite-difference step crosses the relu's kink: x away
 * from its channel's mean, gamma >= 0.5, and beta and the residual small beside them. */
static void fd_bn_relu_prepare(float **in, const size_t *in_n) {
    for (size_t j = 0; j < in_n[0]; j++) in[0][j] += in[0][j] < 0 ? -0.5f : 0.5f;
    for (size_t j = 0; j < in_n[1]; j++) in[1][j] = 1.0f + 0.5f * in[1][j];
    for (size_t j = 0; j < in_n[2]; j++) in[2][j] *= 0.05f;
    for (size_t j = 0; j < in_n[3]; j++) in[3][j] *= 0.03f;
}

static void fd_pool_sizes(const struct kcase *c, size_t *in_n, size_t *out_n) {
    in_n[0] = pool_x_n(&c->pg);
    *out_n = pool_y_n(&c->pg);
}
static void maxpool_with_idx(const struct backend *be, const struct kcase *c, const float *x,
                             float *y, int32_t **idx) {
    *idx = malloc(pool_y_n(&c->pg) * sizeof **idx);
    be->maxpool_fwd(&c->pg, x, y, *idx);
}
static void fd_maxpool_fwd(const struct backend *be, const struct kcase *c, float **in,
                           float *out) {
    int32_t *idx;
    maxpool_with_idx(be, c, in[0], out, &idx);
    free(idx);
}
static void fd_maxpool_bwd(const struct backend *be, const struct kcase *c, float **in,
                           const float *dout, float **grad) {
    int32_t *idx;
    float *y = malloc(pool_y_n(&c->pg) * sizeof *y);
    maxpool_with_idx(be, c, in[0], y, &idx);
    be->maxpool_bwd(&c->pg, idx, dout, grad[0]);
    free(idx);
    free(y);
}
static void fd_avgpool_fwd(const struct backend *be, const struct kcase *c, float **in,
                           float *out) {
    be->avgpool_fwd(&c->pg, in[0], out);
}
static void fd_avgpool_bwd(const struct backend *be, const struct kcase *c, float **in,
                           const float *dout, float **grad) {
    (void)in;
    be->avgpool_bwd(&c->pg, dout, grad[0]);
}

/* gap: d = (n, c, hw) */
static void fd_gap_sizes(const struct kcase *c, size_t *in_n, size_t *out_n) {
    in_n[0] = (size_t)c->d[0] * c->d[1] * c->d[2];
    *out_n = (size_t)c->d[0] * c->d[1];
}
static void fd_gap_fwd(const struct backend *be, const struct kcase *c, float **in, float *out) {
    be->gap_fwd(c->d[0], c->d[1], c->d[2], in[0], out);
}
static void fd_gap_bwd(const struct backend *be, const struct kcase *c, float **in,
                       const float *dout, float **grad) {
    (void)in;
    be->gap_bwd(c->d[0], c->d[1], c->d[2], dout, grad[0]);
}

/* relu: d = (n) */
static void fd_relu_sizes(const struct kcase *c, size_t *in_n, size_t *out_n) {
    in_n[0] = *out_n = (size_t)c->d[0];
}
static void fd_relu_fwd(const struct backend *be, const struct kcase *c, float **in, float *out) {
    be->relu_fwd((size_t)c->d[0], in[0], out);
}
static void fd_relu_bwd(const struct backend *be, const struct kcase *c, float **in,
                        const float *dout, float **grad) {
    float *y = malloc((size_t)c->d[0] * sizeof *y);
    be->relu_fwd((size_t)c->d[0], in[0], y);
    be->relu_bwd((size_t)c->d[0], y, dout, grad[0]);
    free(y);
}

/* softmax cross-entropy: d = (n, k); the output is the loss */
static void fd_xent_sizes(const struct kcase *c, size_t *in_n, size_t *out_n) {
    in_n[0] = (size_t)c->d[0] * c->d[1];
    *out_n = 1;
}
static void xent_probs(const struct backend *be, const struct kcase *c, const float *logits,
                       float *probs, float *loss) {
    int32_t labels[64];
    make_labels(c->d[0], c->d[1], labels);
    be->softmax_xent_fwd(c->d[0], c->d[1], logits, labels, probs, loss);
}
static void fd_xent_fwd(const struct backend *be, const struct kcase *c, float **in, float *out) {
    float probs[256];
    xent_probs(be, c, in[0], probs, out);
}
static void fd_xent_bwd(const struct backend *be, const struct kcase *c, float **in,
                        const float *dout, float **grad) {
    float probs[256], loss;
    int32_t labels[64];
    xent_probs(be, c, in[0], probs, &loss);
    make_labels(c->d[0], c->d[1], labels);
    be->softmax_xent_bwd(c->d[0], c->d[1], probs, labels, dout, grad[0]);
}

/* each one with the names of its inputs */
#define FD_OPS(X)                                                     \
    X(conv, "x", "w", "bias") X(linear, "x", "w", "bias")             \
    X(bn, "x", "gamma", "beta") X(bn_relu, "x", "gamma", "beta", "res") \
    X(maxpool, "x") X(avgpool, "x")                                   \
    X(gap, "x") X(relu, "x") X(xent, "logits")
#define FD_ENUM(id, ...) FD_##id,
enum fd_id { FD_OPS(FD_ENUM) };
/* the pools share their sizes */
#define fd_maxpool_sizes fd_pool_sizes
#define fd_avgpool_sizes fd_pool_sizes
#define FD_ENTRY(id, ...)                                                                 \
    [FD_##id] = {#id, sizeof((const char *[]){__VA_ARGS__}) / sizeof(const char *),      \
                 {__VA_ARGS__}, fd_##id##_sizes, fd_##id##_fwd, fd_##id##_bwd},
static const struct fd_op fd_ops[] = {FD_OPS(FD_ENTRY)};

struct fdcase {
    enum fd_id op;
    struct kcase k;
};

static struct fdcase fd_cases[] = {
    {FD_conv, {.cg = {1, 2, 5, 5, 3, 3, 3, 1, 1, 0, 0}, .flag = true}},
    {FD_conv, {.cg = {3, 2, 6, 7, 2, 3, 3, 2, 1, 0, 0}}},
    {FD_conv, {.cg = {3, 3, 4, 5, 2, 1, 1, 1, 0, 0, 0}, .flag = true}},
    {FD_conv, {.cg = {3, 2, 7, 6, 2, 1, 1, 2, 0, 0, 0}}},
    {FD_conv, {.cg = {1, 1, 6, 6, 2, 5, 5, 2, 2, 0, 0}, .flag = true}},
    {FD_conv, {.cg = {1, 2, 4, 4, 18, 3, 3, 1, 1, 0, 0}}},
    {FD_linear, {.d = {3, 5, 4}, .flag = true}},
    {FD_linear, {.d = {1, 6, 3}}},
    {FD_bn, {.d = {3, 2, 4}}},
    {FD_bn, {.d = {2, 3, 1}}},
    {FD_bn_relu, {.d = {3, 2, 4}}},
    {FD_bn_relu, {.d = {3, 2, 4}, .flag = true}},
    {FD_maxpool, {.pg = {2, 2, 5, 6, 3, 2, 1, 0, 0}}},
    {FD_maxpool, {.pg = {1, 1, 4, 4, 2, 2, 0, 0, 0}}},
    {FD_avgpool, {.pg = {2, 2, 5, 6, 3, 2, 1, 0, 0}}},
    {FD_gap, {.d = {2, 3, 5}}},
    {FD_relu, {.d = {40}}},
    {FD_xent, {.d = {4, 5}}},
};

/* Distinct values spread over (-1, 1), none of them 0, shuffled: no two are
 * closer than 2/n, so a step smaller than 1/n can't swap a max or cross a kink. */
static void fill_distinct(uint64_t *seed, float *x, size_t n) {
    for (size_t i = 0; i < n; i++) x[i] = -1.0f + (2.0f * (float)i + 1.0f) / (float)n;
    for (size_t i = n; i > 1; i--) {
        size_t j = tu_rand_u32(seed) % i;
        float t = x[i - 1];
        x[i - 1] = x[j];
        x[j] = t;
    }
}

static double fd_loss(const struct fd_op *op, const struct backend *be, const struct kcase *c,
                      float **in, float *out, const float *r, size_t out_n) {
    op->fwd(be, c, in, out);
    double loss = 0.0;
    for (size_t j = 0; j < out_n; j++) loss += (double)out[j] * r[j];
    return loss;
}

ParameterizedTestParameters(kernels, gradcheck) {
    return cr_make_param_array(struct fdcase, fd_cases, sizeof fd_cases / sizeof fd_cases[0]);
}

ParameterizedTest(struct fdcase *param, kernels, gradcheck) {
    const struct fd_op *op = &fd_ops[param->op];
    struct kcase c = param->k;
    case_complete(&c);
    char name[256];
    case_str(op->name, &c, name, sizeof name);

    size_t in_n[4] = {0}, out_n, most = 1;
    op->sizes(&c, in_n, &out_n);
    for (int i = 0; i < op->nin; i++) most = in_n[i] > most ? in_n[i] : most;
    float step = fminf(1e-2f, 0.4f / (float)most);

    for (int t = 0; t < N_TABLES; t++) {
        const struct backend *be = cpu_tables[t];
        uint64_t seed = 0xfd0 + (uint64_t)param->op;
        float *in[4] = {0}, *grad[4] = {0};
        for (int i = 0; i < op->nin; i++) {
            if (!in_n[i]) continue;
            in[i] = malloc(in_n[i] * sizeof(float));
            grad[i] = calloc(in_n[i], sizeof(float));
            fill_distinct(&seed, in[i], in_n[i]);
        }
        if (param->op == FD_bn_relu) fd_bn_relu_prepare(in, in_n);
        float *out = malloc(out_n * sizeof *out), *r = malloc(out_n * sizeof *r);
        tu_fill(&seed, r, out_n, -1, 1);
        op->bwd(be, &c, in, r, grad);

        for (int i = 0; i < op->nin; i++) {
            double worst = 0.0;
            size_t worst_at = 0;
            for (size_t j = 0; j < in_n[i]; j++) {
                float keep = in[i][j];
                in[i][j] = keep + step;
                double up = fd_loss(op, be, &c, in, out, r, out_n);
                in[i][j] = keep - step;
                double down = fd_loss(op, be, &c, in, out, r, out_n);
                in[i][j] = keep;
                double numeric = (up - down) / (2.0 * step);
                double err = fabs(numeric - grad[i][j]) / fmax(1.0, fabs(grad[i][j]));
                if (!(err <= worst)) {
                    worst = err;
                    worst_at = j;
                }
            }
            cr_expect(worst <= 5e-3, "%s on %s: d/d%s[%zu] is %g, finite differences say so "
                      "only to %g", name, be->name, op->in_names[i], worst_at,
                      in_n[i] ? grad[i][worst_at] : 0.0f, worst);
        }
        for (int i = 0; i < op->nin; i++) {
            free(in[i]);
            free(grad[i]);
        }
        free(out);
        free(r);
    }
}

/* ---- values worked out by hand ---- */

static void expect_values(const char *what, const struct backend *be, const float *got,
                          const float *want, size_t n, double tol) {
    for (size_t i = 0; i < n; i++)
        cr_expect(fabs((double)got[i] - want[i]) <= tol * fmax(1.0, fabs(want[i])),
                  "%s on %s: [%zu] is %.7g, expected %.7g", what, be->name, i, got[i], want[i]);
}

Test(kernels, gemm_2x2_by_hand) {
    const float a[] = {1, 2, 3, 4}, b[] = {5, 6, 7, 8};
    for (int t = 0; t < N_TABLES; t++) {
        const struct backend *be = cpu_tables[t];
        float c[4] = {NAN, NAN, NAN, NAN};
        be->gemm(false, false, 2, 2, 2, 1.0f, a, b, 0.0f, c);
        expect_values("a b", be, c, (const float[]){19, 22, 43, 50}, 4, 1e-6);
        /* a^T b = [1 3; 2 4] b, times 2, plus c = 1 */
        float c2[4] = {1, 1, 1, 1};
        be->gemm(true, false, 2, 2, 2, 2.0f, a, b, 1.0f, c2);
        expect_values("2 a^T b + 1", be, c2, (const float[]){53, 61, 77, 89}, 4, 1e-6);
        /* a b^T = [1*5+2*6, 1*7+2*8; 3*5+4*6, 3*7+4*8] */
        float c3[4];
        be->gemm(false, true, 2, 2, 2, 1.0f, a, b, 0.0f, c3);
        expect_values("a b^T", be, c3, (const float[]){17, 23, 39, 53}, 4, 1e-6);
    }
}

/* x = [1 2 3; 4 5 6; 7 8 9]; the kernel has 1 at the top-left tap and 10 at the
 * centre, so y(i,j) = 10 x(i,j) + x(i-1,j-1) (a correlation, as in PyTorch). */
Test(kernels, conv_3x3_by_hand) {
    const float x[9] = {1, 2, 3, 4, 5, 6, 7, 8, 9};
    const float w[9] = {1, 0, 0, 0, 10, 0, 0, 0, 0};
    const float bias[1] = {0.5f};
    const float ones[9] = {1, 1, 1, 1, 1, 1, 1, 1, 1};
    struct conv_geom g = {1, 1, 3, 3, 1, 3, 3, 1, 1, 3, 3};
    struct conv_geom g2 = {1, 1, 3, 3, 1, 3, 3, 2, 1, 2, 2};
    for (int t = 0; t < N_TABLES; t++) {
        const struct backend *be = cpu_tables[t];
        void *ws = malloc(be->conv2d_workspace(&g) + 1);
        float y[9];
        be->conv2d_fwd(&g, x, w, bias, y, ws);
        expect_values("conv", be, y,
                      (const float[]){10.5f, 20.5f, 30.5f, 40.5f, 51.5f, 62.5f, 70.5f, 84.5f,
                                      95.5f},
                      9, 1e-6);
        /* dx(i,j) = 10 + (1 when output (i+1,j+1) exists) */
        float dx[9] = {0};
        be->conv2d_bwd_data(&g, ones, w, dx, true, ws);
        expect_values("conv dx", be, dx, (const float[]){11, 11, 10, 11, 11, 10, 10, 10, 10},
                      9, 1e-6);
        /* dw(r,s) = sum of x under tap (r,s) over all outputs: the centre sees all of x,
         * the top-left the 2x2 block x[0..1][0..1] */
        float dw[9] = {0}, db[1] = {0};
        be->conv2d_bwd_filter(&g, x, ones, dw, db, ws);
        cr_expect(fabsf(dw[4] - 45) < 1e-5f && fabsf(dw[0] - 12) < 1e-5f &&
                      fabsf(dw[8] - 28) < 1e-5f,
                  "conv dw on %s: centre %g (45), top-left %g (12), bottom-right %g (28)",
                  be->name, dw[4], dw[0], dw[8]);
        cr_expect(fabsf(db[0] - 9) < 1e-6f, "conv dbias on %s: %g, expected 9", be->name, db[0]);
        free(ws);
        /* stride 2 keeps the outputs at (0,0), (0,2), (2,0), (2,2) */
        ws = malloc(be->conv2d_workspace(&g2) + 1);
        float y2[4];
        be->conv2d_fwd(&g2, x, w, NULL, y2, ws);
        expect_values("conv stride 2", be, y2, (const float[]){10, 30, 70, 95}, 4, 1e-6);
        free(ws);
    }
}

/* The vectorized convolutions and batch norm split their work over threads, yet
 * give the same bits on one thread as on three: nothing they sum depends on who
 * summed what, so a seeded run trains the same weights on any machine. */
Test(kernels, vectorized_same_bits_on_any_thread_count) {
    const struct backend *be = &cpu_vectorized_backend;
    struct conv_geom g = {96, 8, 14, 14, 16, 3, 3, 2, 1, 7, 7};
    size_t nx = conv_x_n(&g), ny = conv_y_n(&g), nw = conv_w_n(&g);
    uint64_t seed = 0x7a3;
    float *x = malloc(nx * sizeof *x), *w = malloc(nw * sizeof *w), *dy = malloc(ny * sizeof *dy);
    tu_fill(&seed, x, nx, -1, 1);
    tu_fill(&seed, w, nw, -1, 1);
    tu_fill(&seed, dy, ny, -1, 1);
    int threads[2] = {1, 3};
    float *out[2][6];
    for (int t = 0; t < 2; t++) {
        omp_set_num_threads(threads[t]);
        void *ws = malloc(be->conv2d_workspace(&g));
        float *y = malloc(ny * sizeof *y), *dx = calloc(nx, sizeof *dx), *dw = calloc(nw, sizeof *dw);
        be->conv2d_fwd(&g, x, w, NULL, y, ws);
        be->conv2d_bwd_data(&g, dy, w, dx, false, ws);
        be->conv2d_bwd_filter(&g, x, dy, dw, NULL, ws);
        /* batch norm + relu over the conv's output, (n, k, oh*ow) */
        float gamma[16], beta[16], mean[16], invstd[16], rm[16] = {0}, rv[16] = {0};
        float dgamma[16] = {0}, dbeta[16] = {0};
        for (int c = 0; c < 16; c++) gamma[c] = 1.0f + 0.1f * (float)c, beta[c] = 0.05f * (float)c;
        float *z = malloc(ny * sizeof *z), *dbn = calloc(ny, sizeof *dbn);
        be->bn_relu_fwd_train(g.n, g.k, g.oh * g.ow, y, NULL, gamma, beta, z, mean, invstd, rm, rv,
                              0.1f, 1e-5f);
        be->bn_relu_bwd(g.n, g.k, g.oh * g.ow, y, z, dy, gamma, mean, invstd, dbn, false, NULL,
                        false, dgamma, dbeta);
        out[t][0] = y, out[t][1] = dx, out[t][2] = dw, out[t][3] = z, out[t][4] = dbn;
        out[t][5] = malloc(2 * 16 * sizeof(float));
        memcpy(out[t][5], dgamma, sizeof dgamma);
        memcpy(out[t][5] + 16, dbeta, sizeof dbeta);
        free(ws);
    }
    const char *names[6] = {"conv y", "conv dx", "conv dw", "bn_relu y", "bn_relu dx", "dgamma, dbeta"};
    size_t sizes[6] = {ny, nx, nw, ny, ny, 32};
    for (int i = 0; i < 6; i++) {
        cr_expect(memcmp(out[0][i], out[1][i], sizes[i] * sizeof(float)) == 0,
                  "%s differs between 1 and 3 threads", names[i]);
        free(out[0][i]);
        free(out[1][i]);
    }
    free(x);
    free(w);
    free(dy);
}

/* logits [0 0] label 0: probs (1/2, 1/2); [0 ln 3] label 1: probs (1/4, 3/4).
 * loss = (ln 2 - ln 3/4) / 2; dlogits = dloss/2 * (probs - onehot). */
Test(kernels, softmax_xent_by_hand) {
    const float logits[4] = {0, 0, 0, logf(3)};
    const int32_t labels[2] = {0, 1};
    for (int t = 0; t < N_TABLES; t++) {
        const struct backend *be = cpu_tables[t];
        float probs[4], loss, dlogits[4] = {1, 1, 1, 1}, dloss = 2;
        be->softmax_xent_fwd(2, 2, logits, labels, probs, &loss);
        expect_values("probs", be, probs, (const float[]){0.5f, 0.5f, 0.25f, 0.75f}, 4, 1e-6);
        float want = (float)((log(2.0) - log(0.75)) / 2);
        expect_values("loss", be, &loss, &want, 1, 1e-6);
        be->softmax_xent_bwd(2, 2, probs, labels, &dloss, dlogits);
        expect_values("dlogits", be, dlogits, (const float[]){0.5f, 1.5f, 1.25f, 0.75f}, 4, 1e-6);
        /* ties go to the first max: [1 1] is right for label 0, wrong for label 1 */
        const float tied[4] = {1, 1, 1, 1};
        float correct;
        be->argmax_correct(2, 2, tied, labels, &correct);
        cr_expect(correct == 1.0f, "argmax_correct on %s: %g, expected 1", be->name, correct);
    }
}

/* lr 0.5, momentum 0.9, nesterov, wd 0.1, w = 1, v = 0, g = 2 twice:
 *  step 1: g' = 2 + 0.1*1 = 2.1, v = 2.1, step = 2.1 + 0.9*2.1 = 3.99, w = -0.995
 *  step 2: g' = 2 - 0.0995 = 1.9005, v = 0.9*2.1 + 1.9005 = 3.7905,
 *          step = 1.9005 + 0.9*3.7905 = 5.31195, w = -0.995 - 2.655975 = -3.650975
 * and without nesterov the step is v: w = 1 - 1.05 = -0.05, then
 *  g' = 1.995, v = 1.89 + 1.995 = 3.885, w = -0.05 - 1.9425 = -1.9925 */
Test(kernels, sgd_two_steps_by_hand) {
    for (int t = 0; t < N_TABLES; t++) {
        const struct backend *be = cpu_tables[t];
        float w[2] = {1, 1}, g[2] = {2, 2}, v[2] = {0, 0};
        for (int step = 0; step < 2; step++) {
            be->sgd_step(1, &w[0], &g[0], &v[0], 0.5f, 0.9f, true, 0.1f);
            be->sgd_step(1, &w[1], &g[1], &v[1], 0.5f, 0.9f, false, 0.1f);
        }
        expect_values("sgd w", be, w, (const float[]){-3.650975f, -1.9925f}, 2, 1e-6);
        expect_values("sgd v", be, v, (const float[]){3.7905f, 3.885f}, 2, 1e-6);
    }
}

/* x (n=2, c=2, hw=2): channel 0 holds 1 2 3 6, channel 1 holds 10 10 10 14.
 *  channel 0: mean 3, biased var 14/4 = 3.5, unbiased 14/3
 *  channel 1: mean 11, biased var 12/4 = 3, unbiased 4
 * running stats from (0, 1) with momentum 0.1: mean 0.1*mean, var 0.9 + 0.1*unbiased. */
Test(kernels, bn_running_stats_by_hand) {
    const float x[8] = {1, 2, 10, 10, 3, 6, 10, 14};
    const float gamma[2] = {2, 1}, beta[2] = {1, 0}, eps = 1e-5f;
    for (int t = 0; t < N_TABLES; t++) {
        const struct backend *be = cpu_tables[t];
        float y[8], mean[2], invstd[2], rmean[2] = {0, 0}, rvar[2] = {1, 1};
        be->bn_fwd_train(2, 2, 2, x, gamma, beta, y, mean, invstd, rmean, rvar, 0.1f, eps);
        expect_values("bn mean", be, mean, (const float[]){3, 11}, 2, 1e-6);
        float is[2] = {1 / sqrtf(3.5f + eps), 1 / sqrtf(3.0f + eps)};
        expect_values("bn invstd", be, invstd, is, 2, 1e-6);
        expect_values("bn running_mean", be, rmean, (const float[]){0.3f, 1.1f}, 2, 1e-6);
        expect_values("bn running_var", be, rvar,
                      (const float[]){0.9f + 0.1f * 14.0f / 3.0f, 0.9f + 0.1f * 4.0f}, 2, 1e-6);
        float want_y[8];
        for (int i = 0; i < 8; i++) {
            int ch = (i / 2) % 2;
            want_y[i] = (x[i] - mean[ch]) * is[ch] * gamma[ch] + beta[ch];
        }
        expect_values("bn y", be, y, want_y, 8, 1e-5);
    }
}

Test(kernels, normalize_u8_by_hand) {
    /* one 1x2 image, 2 channels, HWC: pixel 0 = (0, 255), pixel 1 = (51, 102) */
    const uint8_t src[4] = {0, 255, 51, 102};
    const float mean[2] = {0.5f, 0.2f}, std[2] = {0.5f, 0.4f};
    for (int t = 0; t < N_TABLES; t++) {
        const struct backend *be = cpu_tables[t];
        float dst[4];
        be->normalize_u8(1, 1, 2, 2, src, mean, std, dst);
        /* CHW: channel 0 = (0 - .5)/.5, (.2 - .5)/.5; channel 1 = (1 - .2)/.4, (.4 - .2)/.4 */
        expect_values("normalize_u8", be, dst, (const float[]){-1, -0.6f, 2, 0.5f}, 4, 1e-6);
    }
}

/* ---- memory and the tables themselves ---- */

Test(kernels, memory_entries) {
    for (int t = 0; t < N_TABLES; t++) {
        const struct backend *be = cpu_tables[t];
        const size_t sizes[] = {0, 1, 63, 64, 65, 1000};
        for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
            unsigned char *p = be->alloc(sizes[i]);
            cr_assert(p, "%s: alloc(%zu) failed: %s", be->name, sizes[i], err_get());
            cr_expect((uintptr_t)p % 64 == 0, "%s: alloc(%zu) is not 64-byte aligned", be->name,
                      sizes[i]);
            unsigned char *q = be->alloc(sizes[i]);
            memset(p, 0xab, sizes[i]);
            be->copy(q, p, sizes[i], COPY_D2D);
            cr_expect(sizes[i] == 0 || memcmp(p, q, sizes[i]) == 0, "%s: copy", be->name);
            be->zero(q, sizes[i]);
            for (size_t j = 0; j < sizes[i]; j++) cr_expect(q[j] == 0, "%s: zero", be->name);
            be->sync();
            be->free(p);
            be->free(q);
        }
        err_clear();
        /* more than can be addressed: refused before the system allocator is asked,
         * which keeps this test quiet under AddressSanitizer */
        cr_expect(be->alloc(SIZE_MAX - 8) == NULL, "%s: absurd alloc succeeded", be->name);
        cr_expect(strstr(err_get(), "bytes") != NULL, "%s: alloc failure says \"%s\"", be->name,
                  err_get());
    }
}

/* The CPU tables are every other table's reference: no entry of theirs is NULL. */
Test(kernels, tables_are_complete) {
    for (int t = 0; t < N_TABLES; t++) {
        const struct backend *be = cpu_tables[t];
        expect_entries(be, true);
        cr_expect(be->dev == DEV_CPU, "%s: dev", be->name);
    }
    cr_expect(cpu_loop_backend.flavour == KF_LOOP);
    cr_expect(cpu_vectorized_backend.flavour == KF_VECTORIZED);
    cr_expect_str_eq(cpu_loop_backend.name, "cpu-loop");
    cr_expect_str_eq(cpu_vectorized_backend.name, "cpu-vectorized");
}
