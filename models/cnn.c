/* cnn.c — a plain stack of layers given as one line, e.g.
 *   layers = conv3x3-32 bn relu maxpool2 conv3x3-64 bn relu maxpool2 gap linear
 *
 * The grammar is the table `forms` below: one row per kind of token, with how it is
 * written, what it adds, an example, and the function that reads it. model_cnn tries
 * the rows in order, its "unknown layer" error lists them, and ./train --help-config
 * prints them (model_cnn_print_grammar), so a new token is one function and one row. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "models.h"
#include "km_math.h"

/* The running shape while we build, so each layer knows its input size, and what a
 * token needs to know of the whole list. */
struct walk {
    int c, h, w;        /* an image's channels and size, while !flat */
    bool flat;          /* after gap, flatten or linear */
    int features;       /* when flat */
    int classes;        /* the last linear's default size */
    bool last_linear;   /* this token is the list's last linear */
};

/* A positive integer at s; its length, or -1. */
static int parse_int(const char *s, int *out) {
    char *end;
    long v = strtol(s, &end, 10);
    if (end == s || v < 1 || v > 1 << 20 || *s == '+' || *s == ' ') return -1;
    *out = (int)v;
    return (int)(end - s);
}

/* An optional "/S" at s, then the token's end: 0 with *stride set (1 without), or -1. */
static int parse_stride(const char *s, int *stride) {
    *stride = 1;
    if (!*s) return 0;
    if (*s != '/') return -1;
    int len = parse_int(s + 1, stride);
    return len < 0 || s[1 + len] ? -1 : 0;
}

/* Each reader returns 1 when tok is not its form (the next row is tried), 0 when it
 * added the layer, -1 (err_set) when tok is its form but wrong. */

static int read_conv(struct nn_model *m, const char *tok, struct walk *w) {
    int k, k2, c, stride, n = 0;
    if (strncmp(tok, "conv", 4)) return 1;
    if (sscanf(tok, "conv%dx%d-%d%n", &k, &k2, &c, &n) != 3 || parse_stride(tok + n, &stride))
        return err_set("expected convKxK-C or convKxK-C/S, e.g. conv3x3-32 or conv3x3-64/2");
    if (k != k2 || k < 1 || c < 1) return err_set("a square kernel and channels >= 1 are needed");
    if (w->flat) return err_set("a conv cannot follow gap/flatten/linear");
    if (nn_add_conv(m, w->c, c, k, stride, k / 2, false)) return -1;
    w->c = c;
    w->h = conv_out_size(w->h, k, stride, k / 2);
    w->w = conv_out_size(w->w, k, stride, k / 2);
    return 0;
}

static int read_block(struct nn_model *m, const char *tok, struct walk *w) {
    int c, stride, len;
    if (strncmp(tok, "block", 5)) return 1;
    if (tok[5] != '-' || (len = parse_int(tok + 6, &c)) < 0 || parse_stride(tok + 6 + len, &stride))
        return err_set("expected block-C or block-C/S, e.g. block-32/2");
    if (w->flat) return err_set("a block cannot follow gap/flatten/linear");
    if (nn_add_block(m, w->c, c, stride)) return -1;
    w->c = c;
    w->h = conv_out_size(w->h, 3, stride, 1);
    w->w = conv_out_size(w->w, 3, stride, 1);
    return 0;
}

static int read_bn(struct nn_model *m, const char *tok, struct walk *w) {
    if (strcmp(tok, "bn")) return 1;
    return w->flat ? err_set("bn needs an image input") : nn_add_bn(m, w->c);
}

static int read_relu(struct nn_model *m, const char *tok, struct walk *w) {
    (void)w;
    return strcmp(tok, "relu") ? 1 : nn_add_relu(m);
}

/* maxpoolK and avgpoolK: a K x K window, stride K, no padding. */
static int read_pool(struct nn_model *m, const char *tok, struct walk *w, const char *word) {
    int k, len;
    if (strncmp(tok, word, 7)) return 1;
    if ((len = parse_int(tok + 7, &k)) < 0 || tok[7 + len]) return err_set("expected e.g. %s2", word);
    if (w->flat) return err_set("pooling needs an image input");
    w->h /= k;
    w->w /= k;
    return word[0] == 'm' ? nn_add_maxpool(m, k, k, 0) : nn_add_avgpool(m, k, k, 0);
}

static int read_maxpool(struct nn_model *m, const char *tok, struct walk *w) {
    return read_pool(m, tok, w, "maxpool");
}

static int read_avgpool(struct nn_model *m, const char *tok, struct walk *w) {
    return read_pool(m, tok, w, "avgpool");
}

static int read_gap(struct nn_model *m, const char *tok, struct walk *w) {
    if (strcmp(tok, "gap")) return 1;
    if (w->flat) return err_set("the input is already flat");
    w->features = w->c;
    w->flat = true;
    return nn_add_gap(m);
}

static int read_flatten(struct nn_model *m, const char *tok, struct walk *w) {
    if (strcmp(tok, "flatten")) return 1;
    if (w->flat) return err_set("the input is already flat");
    w->features = w->c * w->h * w->w;
    w->flat = true;
    return nn_add_flatten(m);
}

static int read_linear(struct nn_model *m, const char *tok, struct walk *w) {
    int out = w->classes, len = 0;
    if (strncmp(tok, "linear", 6)) return 1;
    if (tok[6] && (tok[6] != '-' || (len = parse_int(tok + 7, &out)) < 0 || tok[7 + len]))
        return err_set("expected linear or linear-N, e.g. linear-128");
    if (!tok[6] && !w->last_linear) return err_set("only the last linear may omit its size");
    if (!w->flat) return err_set("add gap or flatten before linear");
    if (nn_add_linear(m, w->features, out)) return -1;
    w->features = out;
    return 0;
}

struct cnn_form {
    const char *form;      /* how it is written */
    const char *meaning;   /* what it adds */
    const char *example;   /* a token of this form (the tests build each one) */
    int (*read)(struct nn_model *m, const char *tok, struct walk *w);
};

static const struct cnn_form forms[] = {
    {"convKxK-C[/S]", "convolution: K x K kernel, C output channels, stride S (1), padding K/2, no bias",
     "conv3x3-32/2", read_conv},
    {"block-C[/S]", "residual BasicBlock (docs/design.md) to C channels, stride S (1)", "block-32/2", read_block},
    {"bn", "batch norm over the channels (with relu after it, one fused op)", "bn", read_bn},
    {"relu", "ReLU", "relu", read_relu},
    {"maxpoolK", "max pooling, K x K window, stride K", "maxpool2", read_maxpool},
    {"avgpoolK", "average pooling, K x K window, stride K", "avgpool2", read_avgpool},
    {"gap", "global average pooling: (n,c,h,w) -> (n,c)", "gap", read_gap},
    {"flatten", "(n,c,h,w) -> (n,c*h*w)", "flatten", read_flatten},
    {"linear[-N]", "fully connected to N features; the last linear may omit N (the class count)", "linear-128",
     read_linear},
};
#define N_FORMS (sizeof forms / sizeof forms[0])

/* "convKxK-C[/S], block-C[/S], ..." into buf. */
static void list_forms(char *buf, size_t len) {
    size_t at = 0;
    buf[0] = 0;
    for (size_t i = 0; i < N_FORMS && at < len; i++)
        at += (size_t)snprintf(buf + at, len - at, "%s%s", i ? ", " : "", forms[i].form);
}

void model_cnn_print_grammar(FILE *out) {
    fprintf(out, "[model] layers, for arch = cnn: tokens separated by spaces, e.g.\n"
                 "  layers = conv3x3-32 bn relu maxpool2 conv3x3-64 bn relu maxpool2 gap linear\n");
    for (size_t i = 0; i < N_FORMS; i++) {
        const struct cnn_form *f = &forms[i];
        if (strcmp(f->example, f->form)) fprintf(out, "  %-16s %s (e.g. %s)\n", f->form, f->meaning, f->example);
        else fprintf(out, "  %-16s %s\n", f->form, f->meaning);  /* a fixed word is its own example */
    }
    fprintf(out, "  The list must end in a linear layer with as many outputs as data.classes.\n");
}

const char *model_cnn_form(size_t i, const char **example) {
    if (i >= N_FORMS) return NULL;
    if (example) *example = forms[i].example;
    return forms[i].form;
}

int model_cnn(struct nn_model *m, const char *spec, int classes) {
    struct walk w = {m->in_c, m->in_h, m->in_w, false, 0, classes, false};
    char buf[CFG_STR_MAX];
    snprintf(buf, sizeof buf, "%s", spec);
    const char *last_linear = NULL;
    for (char *p = strstr(buf, "linear"); p; p = strstr(p + 1, "linear")) last_linear = p;
    int i = 0;
    for (char *save = NULL, *tok = strtok_r(buf, " \t", &save); tok; tok = strtok_r(NULL, " \t", &save), i++) {
        w.last_linear = tok == last_linear;
        int rc = 1;
        for (size_t f = 0; f < N_FORMS && rc == 1; f++) rc = forms[f].read(m, tok, &w);
        if (rc == 1) {
            char known[256];
            list_forms(known, sizeof known);
            rc = err_set("unknown layer; known: %s. HINT: ./train --help-config lists them with examples", known);
        }
        if (rc) return err_wrap("[model] layers, token %d '%s': ", i + 1, tok);
    }
    if (i == 0) return err_set("[model] layers is empty; e.g. layers = conv3x3-32 bn relu maxpool2 gap linear");
    if (!w.flat || w.features != classes)
        return err_set("[model] layers must end in a linear layer with %d outputs (the class count); "
                       "e.g. ... gap linear", classes);
    return 0;
}
