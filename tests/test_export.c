/* test_export.c — the exported files read back: safetensors (the JSON header parsed by
 * a strict little parser, every tensor's bytes against the model's, names unique,
 * offsets contiguous) and ONNX (unpacked with protobuf-c's generated code: the op
 * types node by node, the wiring, every initializer against the model's tensor), for
 * the resnet_small, cnn and mlp configs. The numbers against onnxruntime and PyTorch
 * are `make interop`'s (scripts/interop.py). */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "backend.h"
#include "checkpoint.h"
#include "config.h"
#include "error.h"
#include "export.h"
#include "models.h"
#include "nn.h"
#include "onnx.pb-c.h"
#include "testutil.h"

/* ---- helpers ---- */

static char dir[64];
static void make_dir(void) {
    strcpy(dir, "/tmp/ns_export_XXXXXX");
    cr_assert_not_null(mkdtemp(dir));
}
static void remove_dir(void) {
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    cr_assert_eq(system(cmd), 0);
}

/* The model of configs/NAME.cfg on the vectorized CPU table, its BN running
 * statistics and biases random (not their 0/1 initial values), so a swapped mean and
 * variance, or gamma and beta, would show. */
static void build(const char *name, struct config *cfg, struct nn_model *m) {
    char path[64];
    snprintf(path, sizeof path, "configs/%s.cfg", name);
    cr_assert_eq(cfg_load(cfg, path), 0, "%s", err_get());
    cr_assert_eq(model_build(m, cfg), 0, "%s", err_get());
    uint64_t s = 77;
    for (int i = 0; i < m->ps.n_buffers; i++) tu_fill(&s, m->ps.buffers[i]->data, m->ps.buffers[i]->numel, 0.1f, 2.0f);
    for (int i = 0; i < m->ps.n_params; i++)
        if (strstr(m->ps.param_names[i], "bias") || strstr(m->ps.param_names[i], "bn"))
            tu_fill(&s, m->ps.params[i]->data, m->ps.params[i]->numel, -1.0f, 1.0f);
    cr_assert_eq(nn_model_finalize(m, &cpu_vectorized_backend), 0, "%s", err_get());
}

static unsigned char *read_all(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    cr_assert_not_null(f, "%s: cannot open", path);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *buf = malloc((size_t)n + 1);
    cr_assert_eq(fread(buf, 1, (size_t)n, f), (size_t)n);
    fclose(f);
    *len = (size_t)n;
    return buf;
}

/* The model's tensor t on the host. */
static float *values(const struct nn_model *m, const struct tensor *t) {
    float *v = malloc(t->numel * sizeof *v);
    m->ps.be->copy(v, t->data, t->numel * sizeof *v, COPY_D2H);
    return v;
}

static int bn_count(const struct nn_model *m) {
    int n = 0;
    for (int i = 0; i < m->ps.n_buffers; i++) n += strstr(m->ps.buffer_names[i], "running_mean") != NULL;
    return n;
}

/* ---- a strict parser for the safetensors header (objects, arrays, strings, integers) ---- */

struct st_entry { char name[EXPORT_NAME_LEN]; char dtype[8]; int ndim; long shape[4]; long begin, end; };
struct st_header {
    struct st_entry e[256];
    int n;
    char meta_key[512][128], meta_value[512][256];
    int n_meta;
};
struct js { const char *p, *end; };

static void ws(struct js *j) { while (j->p < j->end && strchr(" \t\r\n", *j->p)) j->p++; }
static bool lit(struct js *j, char c) {
    ws(j);
    if (j->p < j->end && *j->p == c) { j->p++; return true; }
    return false;
}
/* a string without escapes other than \" and \\ (all the exporter writes for these names) */
static bool str(struct js *j, char *out, size_t cap) {
    if (!lit(j, '"')) return false;
    size_t n = 0;
    while (j->p < j->end && *j->p != '"') {
        if (*j->p == '\\') j->p++;
        if (j->p >= j->end || n + 1 >= cap) return false;
        out[n++] = *j->p++;
    }
    out[n] = 0;
    return j->p++ < j->end;
}
static bool integer(struct js *j, long *v) {
    ws(j);
    char *e;
    *v = strtol(j->p, &e, 10);
    if (e == j->p || e > j->end) return false;
    j->p = e;
    return true;
}
static bool int_array(struct js *j, long *v, int cap, int *n) {
    *n = 0;
    if (!lit(j, '[')) return false;
    if (lit(j, ']')) return true;
    do {
        if (*n == cap || !integer(j, &v[(*n)++])) return false;
    } while (lit(j, ','));
    return lit(j, ']');
}
static bool tensor_entry(struct js *j, struct st_entry *e) {
    bool dtype = false, shape = false, offsets = false;
    if (!lit(j, '{')) return false;
    do {
        char key[32];
        long off[2];
        int n;
        if (!str(j, key, sizeof key) || !lit(j, ':')) return false;
        if (!strcmp(key, "dtype") && !dtype) dtype = str(j, e->dtype, sizeof e->dtype);
        else if (!strcmp(key, "shape") && !shape) shape = int_array(j, e->shape, 4, &e->ndim);
        else if (!strcmp(key, "data_offsets") && !offsets) {
            offsets = int_array(j, off, 2, &n) && n == 2;
            e->begin = off[0];
            e->end = off[1];
        } else return false;
    } while (lit(j, ','));
    return lit(j, '}') && dtype && shape && offsets;
}
static bool parse_header(const char *text, size_t len, struct st_header *h) {
    struct js j = {text, text + len};
    h->n = h->n_meta = 0;
    if (!lit(&j, '{')) return false;
    do {
        char key[EXPORT_NAME_LEN];
        if (!str(&j, key, sizeof key) || !lit(&j, ':')) return false;
        if (!strcmp(key, "__metadata__")) {
            if (!lit(&j, '{')) return false;
            do {
                if (h->n_meta == 512 || !str(&j, h->meta_key[h->n_meta], 128) || !lit(&j, ':') ||
                    !str(&j, h->meta_value[h->n_meta], 256))
                    return false;
                h->n_meta++;
            } while (lit(&j, ','));
            if (!lit(&j, '}')) return false;
        } else {
            if (h->n == 256) return false;
            snprintf(h->e[h->n].name, EXPORT_NAME_LEN, "%s", key);
            if (!tensor_entry(&j, &h->e[h->n++])) return false;
        }
    } while (lit(&j, ','));
    if (!lit(&j, '}')) return false;
    ws(&j);
    return j.p == j.end;  /* nothing after the object but the padding spaces */
}
static const char *meta(const struct st_header *h, const char *key) {
    for (int i = 0; i < h->n_meta; i++)
        if (!strcmp(h->meta_key[i], key)) return h->meta_value[i];
    return NULL;
}
static const struct st_entry *entry(const struct st_header *h, const char *name) {
    for (int i = 0; i < h->n; i++)
        if (!strcmp(h->e[i].name, name)) return &h->e[i];
    return NULL;
}

/* ---- safetensors ---- */

/* Exports configs/NAME.cfg's model, parses it back and checks it whole; `names` are
 * PyTorch names that must be there. */
static void check_safetensors(const char *name, const char *const *names) {
    struct config cfg;
    struct nn_model m;
    build(name, &cfg, &m);
    char path[128];
    snprintf(path, sizeof path, "%s/%s.safetensors", dir, name);
    cr_assert_eq(export_safetensors(&m, &cfg, path), 0, "%s", err_get());
    size_t len;
    unsigned char *buf = read_all(path, &len);
    cr_assert_geq(len, 8);
    uint64_t hlen = 0;
    for (int b = 0; b < 8; b++) hlen |= (uint64_t)buf[b] << (8 * b);
    cr_assert_leq(8 + hlen, len);
    cr_expect_eq(hlen % 8, 0, "%s: header of %lu bytes is not padded to 8", name, (unsigned long)hlen);
    static struct st_header h;
    cr_assert(parse_header((const char *)buf + 8, hlen, &h), "%s: the header is not the expected JSON", name);
    const unsigned char *data = buf + 8 + hlen;
    size_t data_len = len - 8 - hlen;

    /* every parameter and buffer, plus one num_batches_tracked per BN */
    cr_expect_eq(h.n, m.ps.n_params + m.ps.n_buffers + bn_count(&m), "%s: %d tensors", name, h.n);
    for (int i = 0; i < h.n; i++)
        for (int k = i + 1; k < h.n; k++) cr_expect_str_neq(h.e[i].name, h.e[k].name, "%s twice", h.e[i].name);
    /* offsets: in order, contiguous from 0 to the end of the file, each of its size */
    long at = 0;
    for (int i = 0; i < h.n; i++) {
        const struct st_entry *e = &h.e[i];
        long numel = 1;
        for (int d = 0; d < e->ndim; d++) numel *= e->shape[d];
        long size = !strcmp(e->dtype, "I64") ? 8 : 4;
        cr_expect_eq(e->begin, at, "%s: begins at %ld, the previous ends at %ld", e->name, e->begin, at);
        cr_expect_eq(e->end - e->begin, numel * size, "%s: %ld bytes for %ld elements", e->name, e->end - e->begin, numel);
        cr_expect_eq(e->begin % size, 0, "%s: not aligned", e->name);
        at = e->end;
    }
    cr_expect_eq((size_t)at, data_len, "%s: the data is %zu bytes, the offsets end at %ld", name, data_len, at);

    /* each of the model's tensors: shape, bytes, and its nostall name in the metadata */
    struct export_list l;
    cr_assert_eq(export_list_build(&m, &l), 0, "%s", err_get());
    for (int i = 0; i < l.n; i++) {
        const struct export_tensor *t = &l.t[i];
        const struct st_entry *e = entry(&h, t->name);
        cr_assert_not_null(e, "%s missing", t->name);
        if (!t->src) {
            cr_expect_str_eq(e->dtype, "I64");
            cr_expect_eq(e->ndim, 0, "%s: num_batches_tracked is a scalar", t->name);
            continue;
        }
        cr_expect_str_eq(e->dtype, "F32", "%s", t->name);
        cr_expect_eq(e->ndim, t->src->ndim, "%s: rank", t->name);
        for (int d = 0; d < e->ndim; d++) cr_expect_eq(e->shape[d], t->src->shape[d], "%s: dim %d", t->name, d);
        float *v = values(&m, t->src);
        cr_expect_eq(memcmp(data + e->begin, v, t->src->numel * 4), 0, "%s: the bytes differ from the model's", t->name);
        free(v);
        char key[EXPORT_NAME_LEN + 16];
        snprintf(key, sizeof key, "nostall:%s", t->name);
        cr_expect(meta(&h, key) && !strcmp(meta(&h, key), t->nostall), "%s: metadata %s", t->name, key);
    }
    for (int i = 0; names[i]; i++) cr_expect_not_null(entry(&h, names[i]), "%s: no %s", name, names[i]);
    cr_expect_str_eq(meta(&h, "format"), "pt");
    cr_expect_str_eq(meta(&h, "mean"), "0.286");
    cr_expect_str_eq(meta(&h, "std"), "0.353");
    cr_expect_str_eq(meta(&h, "classes"), "10");
    cr_expect_str_eq(meta(&h, "input_shape"), "1,28,28");
    export_list_free(&l);
    free(buf);
    nn_model_free(&m);
}

TestSuite(export, .init = make_dir, .fini = remove_dir);

Test(export, safetensors_resnet_small_reads_back_with_pytorch_names) {
    check_safetensors("resnet_small",
                      (const char *const[]){"0.weight", "1.weight", "1.bias", "1.running_mean", "1.running_var",
                                            "1.num_batches_tracked", "3.conv1.weight", "3.bn2.running_var",
                                            "4.shortcut.0.weight", "4.shortcut.1.num_batches_tracked",
                                            "5.shortcut.1.running_mean", "8.weight", "8.bias", NULL});
}

/* cnn: conv0 bn1 relu2 maxpool3 conv4 bn5 relu6 maxpool7 gap8 linear9; the linear is 10 */
Test(export, safetensors_cnn_shifts_the_index_after_gap) {
    check_safetensors("cnn_small", (const char *const[]){"0.weight", "1.running_var", "4.weight", "5.bias",
                                                         "10.weight", "10.bias", NULL});
}

/* mlp: flatten0 linear1 relu2 linear3, no gap: the indices are nostall's */
Test(export, safetensors_mlp) {
    check_safetensors("mlp", (const char *const[]){"1.weight", "1.bias", "3.weight", "3.bias", NULL});
}

Test(export, torch_index_counts_gap_twice) {
    struct config cfg;
    struct nn_model m;
    cr_assert_eq(cfg_load(&cfg, "configs/resnet_small.cfg"), 0, "%s", err_get());
    cr_assert_eq(model_build(&m, &cfg), 0, "%s", err_get());
    /* conv0 bn1 relu2 block3 block4 block5 gap6 linear7 */
    int want[] = {0, 1, 2, 3, 4, 5, 6, 8};
    cr_assert_eq(m.n_layers, 8);
    for (int i = 0; i < 8; i++) cr_expect_eq(export_torch_index(&m, i), want[i], "layer %d", i);
    nn_model_free(&m);
}

/* ---- ONNX ---- */

/* Exports configs/NAME.cfg's model to ONNX and checks the file: versions, the op type
 * of every node in order (`ops`, space-separated), the wiring, the initializers. */
static void check_onnx(const char *name, const char *ops) {
    struct config cfg;
    struct nn_model m;
    build(name, &cfg, &m);
    char path[128];
    snprintf(path, sizeof path, "%s/%s.onnx", dir, name);
    cr_assert_eq(export_onnx(&m, &cfg, path), 0, "%s", err_get());
    size_t len;
    unsigned char *buf = read_all(path, &len);
    Onnx__ModelProto *mp = onnx__model_proto__unpack(NULL, len, buf);
    cr_assert_not_null(mp, "%s: protobuf-c cannot unpack the file", name);
    cr_expect_eq(mp->ir_version, EXPORT_ONNX_IR_VERSION);
    cr_assert_eq(mp->n_opset_import, 1);
    cr_expect_eq(mp->opset_import[0]->version, EXPORT_ONNX_OPSET);
    cr_expect(strstr(mp->doc_string, "normalized") != NULL, "the doc_string says where normalization lives");
    const Onnx__GraphProto *g = mp->graph;
    cr_assert_not_null(g);

    /* the op types, node by node */
    char want[512];
    snprintf(want, sizeof want, "%s", ops);
    size_t k = 0;
    for (char *save = NULL, *op = strtok_r(want, " ", &save); op; op = strtok_r(NULL, " ", &save), k++) {
        cr_assert_lt(k, g->n_node, "%s: %zu nodes, more expected", name, g->n_node);
        cr_expect_str_eq(g->node[k]->op_type, op, "%s: node %zu (%s)", name, k, g->node[k]->name);
    }
    cr_expect_eq(k, g->n_node, "%s: %zu nodes, %zu expected", name, g->n_node, k);

    /* input and output */
    cr_assert_eq(g->n_input, 1);
    cr_assert_eq(g->n_output, 1);
    cr_expect_str_eq(g->input[0]->name, "images");
    cr_expect_str_eq(g->output[0]->name, "logits");
    const Onnx__TensorShapeProto *in = g->input[0]->type->tensor_type->shape;
    cr_assert_eq(in->n_dim, 4);
    cr_expect_str_eq(in->dim[0]->dim_param, "N");
    cr_expect_eq(in->dim[1]->dim_value, 1);
    cr_expect_eq(in->dim[3]->dim_value, 28);
    cr_expect_eq(g->output[0]->type->tensor_type->shape->dim[1]->dim_value, 10);

    /* wiring: every input is the graph's, an initializer or an earlier node's output */
    for (size_t n = 0; n < g->n_node; n++)
        for (size_t i = 0; i < g->node[n]->n_input; i++) {
            const char *x = g->node[n]->input[i];
            bool found = !strcmp(x, "images");
            for (size_t t = 0; t < g->n_initializer && !found; t++) found = !strcmp(g->initializer[t]->name, x);
            for (size_t p = 0; p < n && !found; p++) found = !strcmp(g->node[p]->output[0], x);
            cr_expect(found, "%s: node %s reads %s, which nothing before it makes", name, g->node[n]->name, x);
        }
    cr_expect_str_eq(g->node[g->n_node - 1]->output[0], "logits");
    /* parameters in the places the operators expect them: a swapped running mean and
     * variance would be wired correctly and still be wrong */
    static const char *const bn_in[] = {NULL, ".weight", ".bias", ".running_mean", ".running_var"};
    for (size_t n = 0; n < g->n_node; n++) {
        const Onnx__NodeProto *nd = g->node[n];
        bool is_bn = !strcmp(nd->op_type, "BatchNormalization");
        if (!is_bn && strcmp(nd->op_type, "Conv") && strcmp(nd->op_type, "Gemm")) continue;
        cr_assert_geq(nd->n_input, is_bn ? 5 : 2, "%s: inputs", nd->name);
        for (size_t i = 1; i < nd->n_input; i++) {
            const char *want = is_bn ? bn_in[i] : i == 1 ? ".weight" : ".bias", *x = nd->input[i];
            cr_expect(strlen(x) > strlen(want) && !strcmp(x + strlen(x) - strlen(want), want),
                      "%s: input %zu is %s, a %s expected", nd->name, i, x, want);
        }
    }

    /* the initializers: every parameter and buffer, bit for bit */
    cr_expect_eq(g->n_initializer, (size_t)(m.ps.n_params + m.ps.n_buffers));
    struct export_list l;
    cr_assert_eq(export_list_build(&m, &l), 0, "%s", err_get());
    for (int i = 0; i < l.n; i++) {
        const struct export_tensor *t = &l.t[i];
        if (!t->src) continue;
        const Onnx__TensorProto *tp = NULL;
        for (size_t j = 0; j < g->n_initializer; j++)
            if (!strcmp(g->initializer[j]->name, t->name)) tp = g->initializer[j];
        cr_assert_not_null(tp, "%s: no initializer %s", name, t->name);
        cr_expect_eq(tp->data_type, ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT);
        cr_assert_eq(tp->n_dims, (size_t)t->src->ndim, "%s: rank", t->name);
        for (size_t d = 0; d < tp->n_dims; d++) cr_expect_eq(tp->dims[d], t->src->shape[d], "%s: dim %zu", t->name, d);
        cr_assert_eq(tp->raw_data.len, t->src->numel * 4, "%s: raw_data bytes", t->name);
        float *v = values(&m, t->src);
        cr_expect_eq(memcmp(tp->raw_data.data, v, tp->raw_data.len), 0, "%s: values differ from the model's", t->name);
        free(v);
    }
    export_list_free(&l);
    onnx__model_proto__free_unpacked(mp, NULL);
    free(buf);
    nn_model_free(&m);
}

Test(export, onnx_resnet_small) {
    check_onnx("resnet_small",
               "Conv BatchNormalization Relu "
               "Conv BatchNormalization Relu Conv BatchNormalization Add Relu "  /* 16->16, identity */
               "Conv BatchNormalization Relu Conv BatchNormalization Conv BatchNormalization Add Relu "
               "Conv BatchNormalization Relu Conv BatchNormalization Conv BatchNormalization Add Relu "
               "GlobalAveragePool Flatten Gemm");
}

Test(export, onnx_cnn) {
    check_onnx("cnn_small", "Conv BatchNormalization Relu MaxPool Conv BatchNormalization Relu MaxPool "
                            "GlobalAveragePool Flatten Gemm");
}

Test(export, onnx_mlp) { check_onnx("mlp", "Flatten Gemm Relu Gemm"); }

/* A path that can't be written: an error naming it, and no PATH.tmp left behind. */
Test(export, unwritable_path_is_refused_cleanly) {
    struct config cfg;
    struct nn_model m;
    build("mlp", &cfg, &m);
    char path[128], tmp[160];
    snprintf(path, sizeof path, "%s/no/such/dir/m.onnx", dir);
    cr_expect_eq(export_onnx(&m, &cfg, path), -1);
    cr_expect(strstr(err_get(), path) != NULL, "the message names the path: %s", err_get());
    cr_expect(strstr(err_get(), "HINT") != NULL, "the message says what to do: %s", err_get());
    snprintf(path, sizeof path, "%s", dir);  /* a directory: the rename fails */
    cr_expect_eq(export_safetensors(&m, &cfg, path), -1);
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    cr_expect_neq(access(tmp, F_OK), 0, "%s was left behind", tmp);
    nn_model_free(&m);
}

/* A model that wasn't finalized has no values to write. */
Test(export, unfinalized_model_is_refused) {
    struct config cfg;
    struct nn_model m;
    cr_assert_eq(cfg_load(&cfg, "configs/mlp.cfg"), 0, "%s", err_get());
    cr_assert_eq(model_build(&m, &cfg), 0, "%s", err_get());
    char path[128];
    snprintf(path, sizeof path, "%s/m.safetensors", dir);
    cr_expect_eq(export_safetensors(&m, &cfg, path), -1);
    cr_expect(strstr(err_get(), "finalize") != NULL, "%s", err_get());
    nn_model_free(&m);
}

/* ./export's path: the model reopened from a checkpoint (ckpt_open_model, with the
 * config the file carries) exports byte for byte the file the model itself does. */
Test(export, a_checkpoint_reopened_exports_the_same_bytes) {
    struct config cfg;
    struct nn_model m, back;
    build("cnn_small", &cfg, &m);
    char ckpt[128], a[128], b[128];
    snprintf(ckpt, sizeof ckpt, "%s/m.ckpt", dir);
    snprintf(a, sizeof a, "%s/a.safetensors", dir);
    snprintf(b, sizeof b, "%s/b.safetensors", dir);
    struct ckpt_state st = {.fingerprint = cfg_fingerprint(&cfg), .world_size = 1};
    cr_assert_eq(ckpt_save(ckpt, &m, &cfg, NULL, NULL, &st), 0, "%s", err_get());
    static struct ckpt_info info;
    cr_assert_eq(ckpt_open_model(ckpt, &cpu_vectorized_backend, &back, &info), 0, "%s", err_get());
    cr_assert_eq(export_safetensors(&m, &cfg, a), 0, "%s", err_get());
    cr_assert_eq(export_safetensors(&back, &info.cfg, b), 0, "%s", err_get());
    size_t la, lb;
    unsigned char *da = read_all(a, &la), *db = read_all(b, &lb);
    cr_expect(la == lb && !memcmp(da, db, la), "the reopened model's file differs");
    for (int k = 0; k < 2; k++) {
        snprintf(a, sizeof a, "%s/%c.onnx", dir, 'a' + k);
        cr_assert_eq(export_onnx(k ? &back : &m, k ? &info.cfg : &cfg, a), 0, "%s", err_get());
    }
    free(da);
    free(db);
    da = read_all(a, &la);
    a[strlen(a) - 6] = 'a';
    db = read_all(a, &lb);
    cr_expect(la == lb && !memcmp(da, db, la), "the reopened model's ONNX file differs");
    free(da);
    free(db);
    ckpt_info_free(&info);
    nn_model_free(&back);
    nn_model_free(&m);
}
