/* safetensors.c — the model's tensors in the safetensors format
 * (https://github.com/huggingface/safetensors, "Format"):
 *
 *   u64 little-endian   N, the header's length in bytes
 *   N bytes             a JSON object: for each tensor "name": {"dtype": "F32",
 *                       "shape": [...], "data_offsets": [begin, end]}, plus
 *                       "__metadata__": {string: string}; padded with spaces to a
 *                       multiple of 8, so the data starts 8-byte aligned
 *   the data            each tensor's bytes, little-endian, C order, one after the
 *                       other; offsets count from the data's start
 *
 * The file is written whole or not at all (os_replace_file). The I64 tensors (num_batches_tracked) come first, then the F32 ones in the walk's
 * order, so every tensor starts aligned to its element size. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "export.h"
#include "export_internal.h"
#include "os.h"

/* A growing string; a failed allocation is remembered and reported once at the end. */
struct sbuf {
    char *p;
    size_t n, cap;
    bool oom;
};

NS_PRINTF(2, 3) static void sb_printf(struct sbuf *s, const char *fmt, ...) {
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        size_t room = s->cap - s->n;
        int k = s->oom ? 0 : vsnprintf(s->p ? s->p + s->n : NULL, room, fmt, ap);
        va_end(ap);
        if (s->oom || k < 0) { s->oom = true; return; }
        if ((size_t)k < room) { s->n += (size_t)k; return; }
        size_t cap = s->cap ? 2 * s->cap : 4096;
        while (cap - s->n <= (size_t)k) cap *= 2;
        char *p = realloc(s->p, cap);
        if (!p) { s->oom = true; return; }
        s->p = p;
        s->cap = cap;
    }
}

/* A JSON string literal: quotes, backslashes and control characters escaped. */
static void sb_json_str(struct sbuf *s, const char *str) {
    sb_printf(s, "\"");
    for (const unsigned char *c = (const unsigned char *)str; *c; c++) {
        if (*c == '"' || *c == '\\') sb_printf(s, "\\%c", *c);
        else if (*c < 0x20) sb_printf(s, "\\u%04x", *c);
        else sb_printf(s, "%c", *c);
    }
    sb_printf(s, "\"");
}

static size_t elem_bytes(const struct export_tensor *e) { return e->dtype == EXPORT_I64 ? 8 : 4; }

/* Element i of e as little-endian bytes at out (the host may be big-endian). */
static void put_le(unsigned char *out, const struct export_tensor *e, size_t i) {
    uint64_t v;
    if (e->dtype == EXPORT_I64) {
        int64_t x = ((const int64_t *)e->host)[i];
        memcpy(&v, &x, 8);
    } else {
        uint32_t u;
        memcpy(&u, (const float *)e->host + i, 4);
        v = u;
    }
    for (size_t b = 0; b < elem_bytes(e); b++) out[b] = (unsigned char)(v >> (8 * b));
}

/* The tensors in file order: the I64 ones, then the F32 ones. */
static int file_order(const struct export_list *l, int *order) {
    int k = 0;
    for (int pass = 0; pass < 2; pass++)
        for (int i = 0; i < l->n; i++)
            if ((l->t[i].dtype == EXPORT_I64) == (pass == 0)) order[k++] = i;
    return k;
}

static void header(struct sbuf *s, const struct export_list *l, const int *order, const struct export_meta *meta) {
    sb_printf(s, "{\"__metadata__\":{\"format\":\"pt\"");
    for (int i = 0; i < meta->n; i++) {
        sb_printf(s, ",");
        sb_json_str(s, meta->key[i]);
        sb_printf(s, ":");
        sb_json_str(s, meta->value[i]);
    }
    /* "nostall:<PyTorch name>": "<nostall name>", for the tensors nostall has */
    for (int i = 0; i < l->n; i++) {
        if (!l->t[i].nostall[0]) continue;
        char key[EXPORT_NAME_LEN + 16];
        snprintf(key, sizeof key, "nostall:%s", l->t[i].name);
        sb_printf(s, ",");
        sb_json_str(s, key);
        sb_printf(s, ":");
        sb_json_str(s, l->t[i].nostall);
    }
    sb_printf(s, "}");
    size_t at = 0;
    for (int k = 0; k < l->n; k++) {
        const struct export_tensor *e = &l->t[order[k]];
        size_t bytes = e->numel * elem_bytes(e);
        sb_printf(s, ",");
        sb_json_str(s, e->name);
        sb_printf(s, ":{\"dtype\":\"%s\",\"shape\":[", e->dtype == EXPORT_I64 ? "I64" : "F32");
        for (int d = 0; d < e->ndim; d++) sb_printf(s, "%s%d", d ? "," : "", e->shape[d]);
        sb_printf(s, "],\"data_offsets\":[%zu,%zu]}", at, at + bytes);
        at += bytes;
    }
    sb_printf(s, "}");
    while (!s->oom && (s->n - 8) % 8) sb_printf(s, " ");  /* after the 8-byte length: see the top */
}

int export_safetensors(const struct nn_model *m, const struct config *cfg, const char *path) {
    struct export_list l;
    if (export_list_build(m, &l)) return err_wrap("exporting %s: ", path);
    int *order = malloc((size_t)(l.n ? l.n : 1) * sizeof *order);
    struct export_meta *meta = malloc(sizeof *meta);
    struct sbuf s = {0};
    unsigned char *file = NULL;  /* the length, the header, the data */
    int rc = -1;
    if (!order || !meta) { err_set("exporting %s: out of host memory", path); goto out; }
    file_order(&l, order);
    export_meta_fill(m, cfg, meta);
    sb_printf(&s, "%8s", "");  /* room for the length, filled in below */
    header(&s, &l, order, meta);
    size_t data_bytes = 0;
    for (int i = 0; i < l.n; i++) data_bytes += l.t[i].numel * elem_bytes(&l.t[i]);
    if (s.oom || !(file = malloc(s.n + data_bytes))) {
        err_set("exporting %s: out of host memory", path);
        goto out;
    }
    uint64_t hlen = s.n - 8;
    memcpy(file, s.p, s.n);
    for (int b = 0; b < 8; b++) file[b] = (unsigned char)(hlen >> (8 * b));
    size_t at = s.n;
    for (int k = 0; k < l.n; k++) {
        const struct export_tensor *e = &l.t[order[k]];
        for (size_t i = 0; i < e->numel; i++, at += elem_bytes(e)) put_le(file + at, e, i);
    }
    if ((rc = os_replace_file(path, file, at, "safetensors file"))) err_wrap("exporting: ");
out:
    free(file);
    free(s.p);
    free(meta);
    free(order);
    export_list_free(&l);
    return rc;
}
