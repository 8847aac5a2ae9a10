/* evaluate.c — the no-gradient pass over a split behind the trainer's test numbers and
 * ./eval; see include/evaluate.h. */
#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "evaluate.h"
#include "ops.h"
#include "os.h"
#include "train.h"

int eval_argmax(const float *z, int classes) {
    int best = 0;
    for (int k = 1; k < classes; k++)
        if (z[k] > z[best]) best = k;
    return best;
}

double eval_xent(const float *z, int classes, int label) {
    double mx = z[eval_argmax(z, classes)], sum = 0;
    for (int k = 0; k < classes; k++) sum += exp((double)z[k] - mx);
    return mx + log(sum) - (double)z[label];
}

/* One batch: forward, logits down to the host, counted. */
static int eval_batch(struct ag_ctx *c, struct nn_model *m, const struct fed_batch *fb, const float *mean,
                      const float *std, int n, float *host, struct eval_result *r) {
    const struct batch *b = fb->host;
    struct tensor *x = op_normalize_u8(c, fb->images, b->n, b->height, b->width, b->channels, mean, std);
    struct tensor *logits = x ? nn_forward(m, c, x) : NULL;
    if (!logits) return -1;
    int k = r->classes;
    if (logits->ndim != 2 || logits->shape[1] != k)
        return err_set("the model gives %d outputs per image, the data has %d classes", logits->shape[1], k);
    c->be->copy(host, logits->data, (size_t)n * (size_t)k * sizeof(float), COPY_D2H);
    if (c->be->check && c->be->check()) return -1; /* an asynchronous kernel failure */
    for (int i = 0; i < n; i++) {
        int label = b->labels[i], pred = eval_argmax(host + (size_t)i * k, k);
        if (label < 0 || label >= k) return err_set("label %d is outside the model's %d classes", label, k);
        r->loss_sum += eval_xent(host + (size_t)i * k, k, label);
        r->right += pred == label;
        if (r->confusion) r->confusion[(size_t)label * k + pred]++;
    }
    r->seen += n;
    return 0;
}

int eval_pass(struct ag_ctx *c, struct nn_model *m, struct feeder *feed, const float *mean, const float *std,
              int64_t limit, struct eval_result *r, eval_batch_fn on_batch, void *ctx) {
    c->grad_enabled = false;
    c->training = false;
    float *host = NULL;
    size_t cap = 0;
    int rc = feeder_start_epoch(feed, 0, 0);
    struct fed_batch fb;
    while (!rc && (!limit || r->seen < limit) && (rc = feeder_next(feed, &fb)) == 1) {
        const struct batch *b = fb.host;
        rc = 0;
        int n = limit && limit - r->seen < b->n ? (int)(limit - r->seen) : b->n;
        size_t need = (size_t)b->n * (size_t)r->classes;
        if (need > cap) {
            float *p = realloc(host, need * sizeof *p);
            if (!p) rc = err_set("out of host memory for %zu logits", need);
            else host = p, cap = need;
        }
        if (!rc) rc = eval_batch(c, m, &fb, mean, std, n, host, r);
        if (!rc && on_batch) rc = on_batch(ctx, b, n, host);
        feeder_done(feed, &fb);
        ag_reset(c);
    }
    /* stopped at `limit`: the rest of the epoch is dropped by the next start or destroy */
    c->grad_enabled = true;
    c->training = true;
    ag_reset(c);
    free(host);
    return rc < 0 ? -1 : 0;
}

int eval_model_open(struct eval_model *em, const char *path, const char *const *sets, int n_sets, FILE *out) {
    memset(em, 0, sizeof *em);
    /* read once: the config chooses the device, then the same bytes fill the model */
    unsigned char *buf = NULL;
    size_t len = 0;
    if (os_read_file(path, &buf, &len)) return err_wrap("opening checkpoint %s: ", path);
    if (ckpt_read_info_mem(buf, len, &em->info)) {
        free(buf);
        return err_wrap("opening checkpoint %s: ", path);
    }
    struct config *cfg = &em->info.cfg;
    /* how the model runs and where the data is may change; what it computes may not
     * (the model, the input shape, the classes, mean/std) */
    static const char *const may[] = {"loader.", "train.device=", "train.kernels=", "train.threads=", "train.tf32=",
                                      "data.path=", "data.train_dir=", "data.test_dir=", "data.dataset=",
                                      "data.on_bad_sample=", "data.on_size_mismatch="};
    for (int i = 0; i < n_sets; i++) {
        bool ok = false;
        for (size_t k = 0; k < sizeof may / sizeof *may; k++) ok |= !strncmp(sets[i], may[k], strlen(may[k]));
        if (!ok) {
            err_set("--set %s would change what the model computes (or is not a setting of how it runs); only "
                    "loader.*, train.device/kernels/threads/tf32 and data.path/train_dir/test_dir/dataset/"
                    "on_bad_sample/on_size_mismatch can change", sets[i]);
            goto fail;
        }
        if (cfg_set(cfg, sets[i])) goto fail;
    }
    if (cfg_validate(cfg, "--set")) goto fail;
    for (int c = 0; c < cfg->data.channels; c++) em->mean[c] = (float)cfg->data.mean.v[c], em->std[c] = (float)cfg->data.std.v[c];
    struct ckpt_info again;
    if (!(em->be = train_pick_backend(cfg, out))) goto fail;
    if (ckpt_open_model_mem(buf, len, em->be, &em->m, &again)) {
        err_wrap("opening checkpoint %s: ", path);
        goto fail;
    }
    ckpt_info_free(&again);
    free(buf);
    buf = NULL;
    if (ag_ctx_init(&em->ctx, em->be)) {
        nn_model_free(&em->m);
        goto fail;
    }
    return 0;
fail:
    free(buf);
    ckpt_info_free(&em->info);
    return -1;
}

void eval_model_close(struct eval_model *em) {
    ag_ctx_free(&em->ctx);
    nn_model_free(&em->m);
    ckpt_info_free(&em->info);
}

void eval_json_string(FILE *f, const char *s) {
    fputc('"', f);
    for (; *s; s++) {
        unsigned char ch = (unsigned char)*s;
        if (ch == '"' || ch == '\\') fprintf(f, "\\%c", ch);
        else if (ch < 0x20) fprintf(f, "\\u%04x", ch);
        else fputc(ch, f);
    }
    fputc('"', f);
}

void eval_json_number(FILE *f, double x) {
    if (isfinite(x)) fprintf(f, "%.6f", x);
    else fputs("null", f); /* JSON has no NaN or infinity */
}
