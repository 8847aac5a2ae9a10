/* cnn.c — a plain stack of layers given as one line, e.g.
 *   layers = conv3x3-32 bn relu maxpool2 conv3x3-64 bn relu maxpool2 gap linear */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "models.h"
#include "km_math.h"

/* The running shape while we build, so each layer knows its input size. */
struct walk { int c, h, w; bool flat; int features; };

static int parse_int(const char *s, int *out) {
    char *end;
    long v = strtol(s, &end, 10);
    if (end == s || v < 1 || v > 1 << 20) return -1;
    *out = (int)v;
    return (int)(end - s);
}

static int add_token(struct nn_model *m, const char *tok, bool last_linear, int classes, struct walk *w) {
    int k, k2, c, stride = 1, n;
    if (sscanf(tok, "conv%dx%d-%d%n", &k, &k2, &c, &n) == 3) {
        if (k != k2 || k < 1 || c < 1) return err_set("a square kernel and channels >= 1 are needed");
        if (tok[n] == '/' && parse_int(tok + n + 1, &stride) < 0) return err_set("bad stride after '/'");
        if (w->flat) return err_set("a conv cannot follow gap/flatten/linear");
        if (nn_add_conv(m, w->c, c, k, stride, k / 2, false)) return -1;
        w->c = c;
        w->h = conv_out_size(w->h, k, stride, k / 2);
        w->w = conv_out_size(w->w, k, stride, k / 2);
        return 0;
    }
    if (!strcmp(tok, "bn")) return w->flat ? err_set("bn needs an image input") : nn_add_bn(m, w->c);
    if (!strcmp(tok, "relu")) return nn_add_relu(m);
    bool maxp = !strncmp(tok, "maxpool", 7), avgp = !strncmp(tok, "avgpool", 7);
    if (maxp || avgp) {
        int len = parse_int(tok + 7, &k);
        if (len < 0 || tok[7 + len]) return err_set("expected e.g. maxpool2");
        if (w->flat) return err_set("pooling needs an image input");
        w->h /= k;
        w->w /= k;
        return maxp ? nn_add_maxpool(m, k, k, 0) : nn_add_avgpool(m, k, k, 0);
    }
    if (!strcmp(tok, "gap") || !strcmp(tok, "flatten")) {
        if (w->flat) return err_set("the input is already flat");
        w->features = tok[0] == 'g' ? w->c : w->c * w->h * w->w;
        w->flat = true;
        return tok[0] == 'g' ? nn_add_gap(m) : nn_add_flatten(m);
    }
    if (!strncmp(tok, "linear", 6)) {
        int out = classes;
        if (tok[6] == '-' && parse_int(tok + 7, &out) < 0) return err_set("expected e.g. linear-128");
        if (tok[6] && tok[6] != '-') return err_set("expected linear or linear-N");
        if (!tok[6] && !last_linear) return err_set("only the last linear may omit its size");
        if (!w->flat) return err_set("add gap or flatten before linear");
        if (nn_add_linear(m, w->features, out)) return -1;
        w->features = out;
        return 0;
    }
    return err_set("unknown layer; known: convKxK-C[/S], bn, relu, maxpoolK, avgpoolK, gap, flatten, linear[-N]");
}

int model_cnn(struct nn_model *m, const char *spec, int classes) {
    struct walk w = {m->in_c, m->in_h, m->in_w, false, 0};
    char buf[CFG_STR_MAX];
    snprintf(buf, sizeof buf, "%s", spec);
    const char *last_linear = NULL;
    for (char *p = strstr(buf, "linear"); p; p = strstr(p + 1, "linear")) last_linear = p;
    int i = 0;
    for (char *save = NULL, *tok = strtok_r(buf, " \t", &save); tok; tok = strtok_r(NULL, " \t", &save), i++)
        if (add_token(m, tok, tok == last_linear, classes, &w))
            return err_wrap("[model] layers, token %d '%s': ", i + 1, tok);
    if (i == 0) return err_set("[model] layers is empty; e.g. layers = conv3x3-32 bn relu maxpool2 gap linear");
    if (!w.flat || w.features != classes)
        return err_set("[model] layers must end in a linear layer with %d outputs (the class count); "
                       "e.g. ... gap linear", classes);
    return 0;
}
