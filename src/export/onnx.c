/* onnx.c — the model as an eval-mode ONNX graph (opset 13), written with the C code
 * protoc-c generates from the onnx.proto of Debian's python3-onnx (build/gen/, see the
 * Makefile). One node per operation of nn_forward, batch norm as BatchNormalization
 * nodes with the running statistics (not folded into the convolutions, so every
 * initializer is one of the model's tensors, bit for bit):
 *
 *   conv      Conv (kernel_shape, strides, pads; bias when the layer has one)
 *   bn        BatchNormalization (epsilon of the layer)
 *   relu      Relu
 *   maxpool   MaxPool (padding never wins a max, as in nostall)
 *   avgpool   AveragePool, count_include_pad=1 (nostall divides by size*size)
 *   gap       GlobalAveragePool, then Flatten: PyTorch's two modules
 *   flatten   Flatten (axis 1)
 *   linear    Gemm (transB=1: the weight is (out, in))
 *   block     Conv, BatchNormalization, Relu, Conv, BatchNormalization; the shortcut's
 *             Conv, BatchNormalization when it has one; Add; Relu
 *
 * Values are named after the PyTorch module that makes them ("3.conv1", "6.pool");
 * initializers carry their PyTorch names (export_list_build) and, as doc_string, the
 * model's own. Input "images" (N, C, H, W) float32, normalized (export.h); output
 * "logits" (N, classes). N is symbolic. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "export.h"
#include "export_internal.h"
#include "onnx.pb-c.h"
#include "os.h"

/* The graph under construction. Every allocation is recorded in `owned` and freed at
 * the end; the first failure sets `oom`, and the builders then return NULL. */
struct graph {
    Onnx__NodeProto **node;
    size_t n_node, cap_node;
    Onnx__TensorProto **init;
    size_t n_init, cap_init;
    void **owned;
    size_t n_owned, cap_owned;
    const struct export_list *list;
    bool oom;
};

/* Appends p to the array *arr of *n (capacity *cap) pointers. */
static int push_ptr(void ***arr, size_t *n, size_t *cap, void *p) {
    if (*n == *cap) {
        size_t c = *cap ? 2 * *cap : 64;
        void **a = realloc(*arr, c * sizeof *a);
        if (!a) return -1;
        *arr = a;
        *cap = c;
    }
    (*arr)[(*n)++] = p;
    return 0;
}

static void *g_alloc(struct graph *g, size_t bytes) {
    void *p = g->oom ? NULL : calloc(1, bytes ? bytes : 1);
    if (p && push_ptr(&g->owned, &g->n_owned, &g->cap_owned, p)) {
        free(p);
        p = NULL;
    }
    if (!p) g->oom = true;
    return p;
}

NS_PRINTF(2, 3) static char *g_printf(struct graph *g, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    char *s = n < 0 ? NULL : g_alloc(g, (size_t)n + 1);
    if (!s) return NULL;
    va_start(ap, fmt);
    vsnprintf(s, (size_t)n + 1, fmt, ap);
    va_end(ap);
    return s;
}

/* ---- attributes ---- */

static Onnx__AttributeProto *attr_new(struct graph *g, const char *name, Onnx__AttributeProto__AttributeType type) {
    Onnx__AttributeProto *a = g_alloc(g, sizeof *a);
    if (!a) return NULL;
    onnx__attribute_proto__init(a);
    a->name = g_printf(g, "%s", name);
    a->has_type = true;
    a->type = type;
    return a->name ? a : NULL;
}

static Onnx__AttributeProto *attr_int(struct graph *g, const char *name, int64_t v) {
    Onnx__AttributeProto *a = attr_new(g, name, ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INT);
    if (a) a->has_i = true, a->i = v;
    return a;
}

static Onnx__AttributeProto *attr_float(struct graph *g, const char *name, float v) {
    Onnx__AttributeProto *a = attr_new(g, name, ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__FLOAT);
    if (a) a->has_f = true, a->f = v;
    return a;
}

/* ints: the same value v for each of the n spatial entries (x, y; or the 4 pads) */
static Onnx__AttributeProto *attr_ints(struct graph *g, const char *name, int64_t v, size_t n) {
    Onnx__AttributeProto *a = attr_new(g, name, ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INTS);
    int64_t *vals = g_alloc(g, n * sizeof *vals);
    if (!a || !vals) return NULL;
    for (size_t i = 0; i < n; i++) vals[i] = v;
    a->n_ints = n;
    a->ints = vals;
    return a;
}

/* ---- nodes and initializers ---- */

/* Adds node `op` named `name`, whose one output is also `name`; inputs and attributes
 * are NULL-terminated lists. Returns the output's name, NULL on failure. */
static const char *node(struct graph *g, const char *op, char *name, const char *const *in,
                        Onnx__AttributeProto *const *attrs) {
    Onnx__NodeProto *nd = g_alloc(g, sizeof *nd);
    size_t n_in = 0, n_attr = 0;
    while (in[n_in]) n_in++;
    while (attrs && attrs[n_attr]) n_attr++;
    char **inputs = g_alloc(g, n_in * sizeof *inputs), **outputs = g_alloc(g, sizeof *outputs);
    Onnx__AttributeProto **at = g_alloc(g, n_attr * sizeof *at);
    if (!nd || !name || !inputs || !outputs || !at) return NULL;
    onnx__node_proto__init(nd);
    for (size_t i = 0; i < n_in; i++) inputs[i] = (char *)in[i];
    if (n_attr) memcpy(at, attrs, n_attr * sizeof *at); /* attrs may be NULL */
    outputs[0] = name;
    nd->n_input = n_in;
    nd->input = inputs;
    nd->n_output = 1;
    nd->output = outputs;
    nd->name = name;
    nd->op_type = g_printf(g, "%s", op);
    nd->n_attribute = n_attr;
    nd->attribute = at;
    if (!nd->op_type || push_ptr((void ***)&g->node, &g->n_node, &g->cap_node, nd)) return g->oom = true, NULL;
    return name;
}

/* The initializer of the model's tensor t (added once), by its PyTorch name. */
static const char *init(struct graph *g, const struct tensor *t) {
    const struct export_tensor *e = export_list_find(g->list, t);
    if (!e) {  /* export_list_build lists every tensor of the model: not reached */
        err_set("a tensor of the graph is missing from the export list");
        return NULL;
    }
    for (size_t i = 0; i < g->n_init; i++)
        if (!strcmp(g->init[i]->name, e->name)) return e->name;
    Onnx__TensorProto *tp = g_alloc(g, sizeof *tp);
    int64_t *dims = g_alloc(g, (size_t)e->ndim * sizeof *dims);
    unsigned char *raw = g_alloc(g, e->numel * 4);
    if (!tp || !dims || !raw) return NULL;
    onnx__tensor_proto__init(tp);
    for (int d = 0; d < e->ndim; d++) dims[d] = e->shape[d];
    for (size_t i = 0; i < e->numel; i++) {  /* raw_data is little-endian */
        uint32_t u;
        memcpy(&u, (const float *)e->host + i, 4);
        for (int b = 0; b < 4; b++) raw[4 * i + (size_t)b] = (unsigned char)(u >> (8 * b));
    }
    tp->n_dims = (size_t)e->ndim;
    tp->dims = dims;
    tp->has_data_type = true;
    tp->data_type = ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT;
    tp->name = (char *)e->name;
    tp->doc_string = g_printf(g, "nostall: %s", e->nostall);
    tp->has_raw_data = true;
    tp->raw_data = (ProtobufCBinaryData){.len = e->numel * 4, .data = raw};
    if (!tp->doc_string || push_ptr((void ***)&g->init, &g->n_init, &g->cap_init, tp)) return g->oom = true, NULL;
    return e->name;
}

/* ---- layers: each takes its input's name and returns its output's, NULL on failure ---- */

static const char *conv(struct graph *g, const char *name, const struct nn_conv *c, const char *x) {
    const char *w = init(g, c->w), *b = c->b ? init(g, c->b) : NULL;
    if (!x || !w || (c->b && !b)) return NULL;
    return node(g, "Conv", g_printf(g, "%s", name), (const char *[]){x, w, b, NULL},
                (Onnx__AttributeProto *[]){attr_ints(g, "kernel_shape", c->k, 2), attr_ints(g, "strides", c->stride, 2),
                                           attr_ints(g, "pads", c->pad, 4), NULL});
}

static const char *bn(struct graph *g, const char *name, const struct nn_bn *b, const char *x) {
    const char *in[] = {x, init(g, b->gamma), init(g, b->beta), init(g, b->running_mean), init(g, b->running_var), NULL};
    for (int i = 0; i < 5; i++)
        if (!in[i]) return NULL;
    return node(g, "BatchNormalization", g_printf(g, "%s", name), in,
                (Onnx__AttributeProto *[]){attr_float(g, "epsilon", b->eps), NULL});
}

static const char *op1(struct graph *g, const char *op, char *name, const char *x) {
    return x ? node(g, op, name, (const char *[]){x, NULL}, NULL) : NULL;
}

static const char *pool(struct graph *g, const char *name, const struct nn_layer *l, const char *x) {
    const struct nn_pool *p = &l->u.pool;
    bool avg = l->kind == NN_AVGPOOL;
    if (!x) return NULL;
    return node(g, avg ? "AveragePool" : "MaxPool", g_printf(g, "%s", name), (const char *[]){x, NULL},
                (Onnx__AttributeProto *[]){attr_ints(g, "kernel_shape", p->size, 2), attr_ints(g, "strides", p->stride, 2),
                                           attr_ints(g, "pads", p->pad, 4),
                                           avg ? attr_int(g, "count_include_pad", 1) : NULL, NULL});
}

static const char *block(struct graph *g, const char *t, const struct nn_block *b, const char *x) {
    const char *h = conv(g, g_printf(g, "%s.conv1", t), &b->conv1, x);
    h = bn(g, g_printf(g, "%s.bn1", t), &b->bn1, h);
    h = op1(g, "Relu", g_printf(g, "%s.relu1", t), h);
    h = conv(g, g_printf(g, "%s.conv2", t), &b->conv2, h);
    h = bn(g, g_printf(g, "%s.bn2", t), &b->bn2, h);
    const char *s = x;
    if (b->has_short) {
        s = conv(g, g_printf(g, "%s.shortcut.0", t), &b->short_conv, x);
        s = bn(g, g_printf(g, "%s.shortcut.1", t), &b->short_bn, s);
    }
    if (!h || !s) return NULL;
    h = node(g, "Add", g_printf(g, "%s.add", t), (const char *[]){h, s, NULL}, NULL);
    return op1(g, "Relu", g_printf(g, "%s.relu", t), h);
}

/* The nodes of the whole layer list, from "images"; NULL on failure. */
static const char *layers(struct graph *g, const struct nn_model *m) {
    const char *x = "images";
    for (int i = 0; i < m->n_layers && x; i++) {
        const struct nn_layer *l = &m->layers[i];
        int t = export_torch_index(m, i);
        char name[16];
        snprintf(name, sizeof name, "%d", t);
        switch (l->kind) {
        case NN_CONV: x = conv(g, name, &l->u.conv, x); break;
        case NN_BN: x = bn(g, name, &l->u.bn, x); break;
        case NN_RELU: x = op1(g, "Relu", g_printf(g, "%d", t), x); break;
        case NN_MAXPOOL: case NN_AVGPOOL: x = pool(g, name, l, x); break;
        case NN_GAP:  /* PyTorch's AdaptiveAvgPool2d(1) at t, Flatten() at t + 1 */
            x = op1(g, "GlobalAveragePool", g_printf(g, "%d", t), x);
            x = op1(g, "Flatten", g_printf(g, "%d", t + 1), x);
            break;
        case NN_FLATTEN: x = op1(g, "Flatten", g_printf(g, "%d", t), x); break;
        case NN_LINEAR: {
            const char *w = init(g, l->u.linear.w), *b = init(g, l->u.linear.b);
            x = w && b ? node(g, "Gemm", g_printf(g, "%d", t), (const char *[]){x, w, b, NULL},
                              (Onnx__AttributeProto *[]){attr_int(g, "transB", 1), NULL})
                       : NULL;
            break;
        }
        case NN_BLOCK: x = block(g, name, &l->u.block, x); break;
        default:
            err_set("layer %d (%s): kind %d has no ONNX export; HINT: add it to src/export/onnx.c", i, l->name,
                    (int)l->kind);
            return NULL;
        }
    }
    return x;
}

/* A float32 tensor type (N, d[0], ...): the batch dimension symbolic. */
static Onnx__ValueInfoProto *value_info(struct graph *g, const char *name, const int *d, int nd) {
    Onnx__ValueInfoProto *v = g_alloc(g, sizeof *v);
    Onnx__TypeProto *type = g_alloc(g, sizeof *type);
    Onnx__TypeProto__Tensor *tt = g_alloc(g, sizeof *tt);
    Onnx__TensorShapeProto *shape = g_alloc(g, sizeof *shape);
    Onnx__TensorShapeProto__Dimension **dims = g_alloc(g, (size_t)(nd + 1) * sizeof *dims);
    if (!v || !type || !tt || !shape || !dims) return NULL;
    onnx__value_info_proto__init(v);
    onnx__type_proto__init(type);
    onnx__type_proto__tensor__init(tt);
    onnx__tensor_shape_proto__init(shape);
    for (int i = 0; i <= nd; i++) {
        Onnx__TensorShapeProto__Dimension *dim = dims[i] = g_alloc(g, sizeof *dim);
        if (!dim) return NULL;
        onnx__tensor_shape_proto__dimension__init(dim);
        if (i == 0) {
            dim->value_case = ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_PARAM;
            dim->dim_param = g_printf(g, "N");
        } else {
            dim->value_case = ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_VALUE;
            dim->dim_value = d[i - 1];
        }
    }
    shape->n_dim = (size_t)nd + 1;
    shape->dim = dims;
    tt->has_elem_type = true;
    tt->elem_type = ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT;
    tt->shape = shape;
    type->value_case = ONNX__TYPE_PROTO__VALUE_TENSOR_TYPE;
    type->tensor_type = tt;
    v->type = type;
    v->name = g_printf(g, "%s", name);
    return v->name ? v : NULL;
}

/* The model around the graph: versions, producer, doc_string, metadata. */
static int model(struct graph *g, const struct nn_model *m, const struct config *cfg, Onnx__GraphProto *gp,
                 Onnx__ModelProto *mp) {
    struct export_meta *meta = g_alloc(g, sizeof *meta);
    Onnx__OperatorSetIdProto *opset = g_alloc(g, sizeof *opset), **opsets = g_alloc(g, sizeof *opsets);
    if (!meta || !opset || !opsets) return -1;
    export_meta_fill(m, cfg, meta);
    Onnx__StringStringEntryProto **props = g_alloc(g, (size_t)meta->n * sizeof *props);
    if (!props) return -1;
    for (int i = 0; i < meta->n; i++) {
        Onnx__StringStringEntryProto *p = props[i] = g_alloc(g, sizeof *p);
        if (!p) return -1;
        onnx__string_string_entry_proto__init(p);
        p->key = meta->key[i];
        p->value = meta->value[i];
    }
    onnx__operator_set_id_proto__init(opset);
    opset->domain = "";
    opset->has_version = true;
    opset->version = EXPORT_ONNX_OPSET;
    opsets[0] = opset;
    char mean[EXPORT_META_LEN], std[EXPORT_META_LEN];
    cfg_format(cfg, "data.mean", mean, sizeof mean);
    cfg_format(cfg, "data.std", std, sizeof std);
    mp->has_ir_version = true;
    mp->ir_version = EXPORT_ONNX_IR_VERSION;
    mp->n_opset_import = 1;
    mp->opset_import = opsets;
    mp->producer_name = "nostall";
    mp->graph = gp;
    mp->n_metadata_props = (size_t)meta->n;
    mp->metadata_props = props;
    mp->doc_string = g_printf(g,
        "nostall %s model in eval mode (batch norm with its running statistics). Input 'images': float32 "
        "(N, %d, %d, %d), already normalized: x = (pixel / 255 - mean[c]) / std[c] with mean = %s, std = %s "
        "(pixels 0..255, channel c). Output 'logits': float32 (N, %d), before softmax.",
        cfg_enum_name("model.arch", (int)cfg->model.arch), m->in_c, m->in_h, m->in_w, mean, std,
        cfg->data.classes);
    return mp->doc_string ? 0 : -1;
}

/* Builds the whole ModelProto into *mp (memory in g). 0, or -1 with err_set. */
static int build(struct graph *g, const struct nn_model *m, const struct config *cfg, Onnx__ModelProto *mp) {
    int out_nd, out_shape[4];
    if (nn_model_shapes(m, 1, NULL, &out_nd, out_shape)) return -1;
    if (out_nd != 2) return err_set("the model's output is (n,%d,%d,%d), not logits (n, classes)", out_shape[1],
                                    out_shape[2], out_shape[3]);
    const char *out = layers(g, m);
    if (!out) return g->oom ? err_set("out of host memory") : -1;  /* else layers() said why */
    g->node[g->n_node - 1]->output[0] = "logits";  /* the last node's output is the graph's */
    Onnx__GraphProto *gp = g_alloc(g, sizeof *gp);
    Onnx__ValueInfoProto **in = g_alloc(g, sizeof *in), **outs = g_alloc(g, sizeof *outs);
    if (!gp || !in || !outs) return err_set("out of host memory");
    onnx__graph_proto__init(gp);
    in[0] = value_info(g, "images", (int[]){m->in_c, m->in_h, m->in_w}, 3);
    outs[0] = value_info(g, "logits", &out_shape[1], 1);
    if (!in[0] || !outs[0] || model(g, m, cfg, gp, mp)) return err_set("out of host memory");
    gp->name = "nostall";
    gp->n_node = g->n_node;
    gp->node = g->node;
    gp->n_initializer = g->n_init;
    gp->initializer = g->init;
    gp->n_input = 1;
    gp->input = in;
    gp->n_output = 1;
    gp->output = outs;
    return 0;
}

int export_onnx(const struct nn_model *m, const struct config *cfg, const char *path) {
    struct export_list l;
    if (export_list_build(m, &l)) return err_wrap("exporting %s: ", path);
    struct graph g = {.list = &l};
    Onnx__ModelProto mp;
    onnx__model_proto__init(&mp);
    int rc = build(&g, m, cfg, &mp);
    if (!rc) {
        size_t len = onnx__model_proto__get_packed_size(&mp);
        uint8_t *buf = malloc(len ? len : 1);
        if (!buf) rc = err_set("out of host memory for %zu bytes", len);
        else {
            onnx__model_proto__pack(&mp, buf);
            rc = os_replace_file(path, buf, len, "ONNX model");
            free(buf);
        }
    }
    if (rc) err_wrap("exporting: ");
    for (size_t i = 0; i < g.n_owned; i++) free(g.owned[i]);
    free(g.owned);
    free(g.node);
    free(g.init);
    export_list_free(&l);
    return rc;
}
