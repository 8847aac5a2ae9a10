/* checkpoint.c — crash-safe save and fully validated load of a training run, and the
 * model reopened from it. The format is described in include/checkpoint.h. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "backend.h"
#include "checkpoint.h"
#include "error.h"
#include "models.h"
#include "os.h"

/* Fields are copied in host order; the format says little-endian, which every host
 * nostall targets (x86-64, ARM64) is. */
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "checkpoint.c writes host byte order and the format is little-endian"
#endif
_Static_assert(NN_NAME_LEN <= CKPT_NAME_BYTES, "a parameter name must fit the checkpoint's name field");

static const char CKPT_MAGIC[8] = {'N', 'S', 'C', 'K', 'P', 'T', '\r', '\n'};

#define PREFIX_BYTES 24   /* magic, version, n_sections, file_bytes */
#define SECTION_HEAD 16   /* tag, bytes */
#define ENTRY_BYTES (CKPT_NAME_BYTES + 16 + 32)
#define OPTIM_NAME 16
#define STATE_BYTES (8 + 4 * 8 + 8)
#define TEXT_ROOM (1 << 16) /* ckpt_file_bytes' allowance for the text sections */

enum section { SEC_CONFIG, SEC_CLASSES, SEC_TENSORS, SEC_OPTIM, SEC_STATE, N_SECTIONS };
static const char *const SECTION_TAGS[N_SECTIONS] = {"config", "classes", "tensors", "optim", "state"};
enum { KIND_PARAM = 0, KIND_BUFFER = 1, DTYPE_F32 = 0 };

#define HINT_DAMAGED "HINT: use an earlier copy of the checkpoint (or train again)"
#define HINT_MODEL "HINT: resume with the config that wrote this checkpoint, or start without --resume"

static uint32_t crc_of(const unsigned char *p, size_t n) {
    uLong crc = crc32(0L, Z_NULL, 0);
    while (n > 0) { /* zlib takes 32-bit lengths */
        uInt chunk = n > (1u << 30) ? (1u << 30) : (uInt)n;
        crc = crc32(crc, p, chunk);
        p += chunk;
        n -= chunk;
    }
    return (uint32_t)crc;
}

static size_t param_values(const struct nn_params *ps) {
    size_t n = 0;
    for (int i = 0; i < ps->n_params; i++) n += ps->params[i]->numel;
    return n;
}
static size_t buffer_values(const struct nn_params *ps) {
    size_t n = 0;
    for (int i = 0; i < ps->n_buffers; i++) n += ps->buffers[i]->numel;
    return n;
}

size_t ckpt_file_bytes(const struct nn_model *m) {
    const struct nn_params *ps = &m->ps;
    size_t tensors = (size_t)(ps->n_params + ps->n_buffers);
    return PREFIX_BYTES + N_SECTIONS * SECTION_HEAD + TEXT_ROOM + 4 + tensors * ENTRY_BYTES +
           (2 * param_values(ps) + buffer_values(ps)) * sizeof(float) + 32 + STATE_BYTES + 4;
}

/* ---- save: the file is built in a growing host buffer, then written in one go ---- */

struct out { unsigned char *p; size_t len, cap; int failed; };

static void put(struct out *o, const void *src, size_t n) {
    if (o->failed) return;
    if (o->len + n > o->cap) {
        size_t cap = o->cap ? o->cap : 4096;
        while (cap < o->len + n) cap *= 2;
        unsigned char *p = realloc(o->p, cap);
        if (!p) { o->failed = 1; return; }
        o->p = p;
        o->cap = cap;
    }
    memcpy(o->p + o->len, src, n);
    o->len += n;
}
static void put_u32(struct out *o, uint32_t x) { put(o, &x, sizeof x); }
static void put_u64(struct out *o, uint64_t x) { put(o, &x, sizeof x); }
static void put_name(struct out *o, const char *s, size_t field) {
    char name[CKPT_NAME_BYTES] = {0};
    memcpy(name, s, strnlen(s, field < sizeof name ? field : sizeof name));
    put(o, name, field);
}

/* A section is its tag and length, then its payload; the length is filled in at the end. */
static size_t begin_section(struct out *o, enum section s) {
    put_name(o, SECTION_TAGS[s], 8);
    size_t at = o->len;
    put_u64(o, 0);
    return at;
}
static void end_section(struct out *o, size_t at) {
    if (o->failed) return;
    uint64_t bytes = o->len - at - 8;
    memcpy(o->p + at, &bytes, sizeof bytes);
}

static void put_config(struct out *o, const struct config *cfg) {
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    if (!f) { o->failed = 1; return; }
    cfg_print(cfg, f);
    if (fclose(f)) o->failed = 1;
    put(o, text, len);
    free(text);
}

static void put_classes(struct out *o, const struct config *cfg, const char *const *names) {
    for (int c = 0; c < cfg->data.classes; c++) {
        char num[16];
        snprintf(num, sizeof num, "%d", c);
        const char *s = names && names[c] && names[c][0] ? names[c] : num;
        put(o, s, strcspn(s, "\r\n")); /* a line a name: a newline would split it */
        put(o, "\n", 1);
    }
}

static void put_entry(struct out *o, const char *name, uint32_t kind, const struct tensor *t) {
    put_name(o, name, CKPT_NAME_BYTES);
    uint32_t head[4] = {kind, DTYPE_F32, (uint32_t)t->ndim, 0};
    put(o, head, sizeof head);
    for (int d = 0; d < 4; d++) put_u64(o, d < t->ndim ? (uint64_t)t->shape[d] : 1);
}

/* Every parameter's slice of a flat device buffer (w or v), copied down via `host`. */
static void put_param_values(struct out *o, const struct nn_params *ps, const float *flat, float *host) {
    ps->be->copy(host, flat, ps->total * sizeof(float), COPY_D2H);
    for (int i = 0; i < ps->n_params; i++)
        put(o, host + (ps->params[i]->data - ps->w), ps->params[i]->numel * sizeof(float));
}

static void put_tensors(struct out *o, const struct nn_params *ps, float *host) {
    put_u32(o, (uint32_t)(ps->n_params + ps->n_buffers));
    for (int i = 0; i < ps->n_params; i++) put_entry(o, ps->param_names[i], KIND_PARAM, ps->params[i]);
    for (int i = 0; i < ps->n_buffers; i++) put_entry(o, ps->buffer_names[i], KIND_BUFFER, ps->buffers[i]);
    put_param_values(o, ps, ps->w, host);
    for (int i = 0; i < ps->n_buffers; i++) {
        size_t bytes = ps->buffers[i]->numel * sizeof(float);
        ps->be->copy(host, ps->buffers[i]->data, bytes, COPY_D2H);
        put(o, host, bytes);
    }
}

/* SGD's momentum, when the caller gives no optimizer. */
static struct ckpt_optim sgd_in(const struct nn_params *ps, const struct ckpt_state *st) {
    return (struct ckpt_optim){"sgd", 1, {"momentum", NULL}, {ps->v, NULL}, st ? (uint64_t)st->step : 0};
}

static void put_optim(struct out *o, const struct nn_params *ps, const struct ckpt_optim *opt, float *host) {
    put_name(o, opt->name, OPTIM_NAME);
    put_u64(o, opt->steps);
    put_u32(o, (uint32_t)opt->n_slots);
    put_u32(o, 0);
    for (int s = 0; s < opt->n_slots; s++) put_name(o, opt->slot_names[s], OPTIM_NAME);
    for (int s = 0; s < opt->n_slots; s++) put_param_values(o, ps, opt->slots[s], host);
}

static void put_state(struct out *o, const struct ckpt_state *st) {
    put_u64(o, st->fingerprint);
    int64_t pos[4] = {st->epoch, st->step, st->batch_in_epoch, st->epochs_done};
    put(o, pos, sizeof pos);
    put_u32(o, st->world_size ? st->world_size : 1);
    put_u32(o, 0);
}

/* The whole file in one host buffer, device data copied down, CRC appended. */
static unsigned char *serialize(const struct nn_model *m, const struct config *cfg, const char *const *names,
                                const struct ckpt_optim *opt, const struct ckpt_state *st, size_t *len) {
    const struct nn_params *ps = &m->ps;
    size_t largest = ps->total;
    for (int i = 0; i < ps->n_buffers; i++)
        if (ps->buffers[i]->numel > largest) largest = ps->buffers[i]->numel;
    float *host = malloc((largest ? largest : 1) * sizeof(float));
    struct out o = {0};
    if (!host) goto oom;
    /* the optimizer step may still be queued on a device stream */
    if (ps->be->sync) ps->be->sync();
    put(&o, CKPT_MAGIC, sizeof CKPT_MAGIC);
    put_u32(&o, CKPT_VERSION);
    put_u32(&o, N_SECTIONS);
    put_u64(&o, 0); /* file_bytes, below */
    size_t at = begin_section(&o, SEC_CONFIG);
    put_config(&o, cfg);
    end_section(&o, at);
    at = begin_section(&o, SEC_CLASSES);
    put_classes(&o, cfg, names);
    end_section(&o, at);
    at = begin_section(&o, SEC_TENSORS);
    put_tensors(&o, ps, host);
    end_section(&o, at);
    at = begin_section(&o, SEC_OPTIM);
    put_optim(&o, ps, opt, host);
    end_section(&o, at);
    at = begin_section(&o, SEC_STATE);
    put_state(&o, st);
    end_section(&o, at);
    if (o.failed) goto oom;
    uint64_t bytes = o.len + 4;
    memcpy(o.p + 16, &bytes, sizeof bytes);
    put_u32(&o, crc_of(o.p, o.len));
    if (o.failed) goto oom;
    free(host);
    *len = o.len;
    return o.p;
oom:
    free(host);
    free(o.p);
    err_set("out of host memory for a checkpoint of about %zu bytes", ckpt_file_bytes(m));
    return NULL;
}

int ckpt_save(const char *path, const struct nn_model *m, const struct config *cfg,
              const char *const *class_names, const struct ckpt_optim *opt, const struct ckpt_state *st) {
    if (!m->ps.be) return err_set("saving checkpoint %s: the model is not finalized", path);
    struct ckpt_optim sgd = sgd_in(&m->ps, st);
    if (!opt) opt = &sgd;
    if (opt->n_slots < 1 || opt->n_slots > CKPT_MAX_SLOTS)
        return err_set("saving checkpoint %s: %d optimizer slots (1..%d)", path, opt->n_slots, CKPT_MAX_SLOTS);
    size_t len;
    unsigned char *buf = serialize(m, cfg, class_names, opt, st, &len);
    if (!buf) return err_wrap("saving checkpoint %s: ", path);
    int rc = os_replace_file(path, buf, len, "checkpoint");
    free(buf);
    return rc;
}

int ckpt_check_writable(const char *path, size_t probe_bytes) {
    return os_check_writable(path, probe_bytes, "checkpoint");
}

/* ---- load ---- */

/* Reading is the one place untrusted sizes meet memory: every access goes through
 * take(), which refuses to go past the end. */
struct reader { const unsigned char *p; size_t at, len; };

static int take(struct reader *r, void *dst, size_t n) {
    if (n > r->len - r->at) return -1;
    memcpy(dst, r->p + r->at, n);
    r->at += n;
    return 0;
}

/* `count` floats, left in place (they may be unaligned: only memcpy-like copies read them). */
static const unsigned char *take_floats(struct reader *r, uint64_t count) {
    if (count > (r->len - r->at) / sizeof(float)) return NULL;
    const unsigned char *p = r->p + r->at;
    r->at += (size_t)count * sizeof(float);
    return p;
}

/* One tensor's entry, as the file has it. */
struct entry {
    char name[CKPT_NAME_BYTES + 1];
    uint32_t kind, dtype, ndim;
    int64_t dims[4];
    uint64_t numel;
};

/* Every section located and its fixed fields checked; the values stay in the file's buffer. */
struct parsed {
    struct reader sec[N_SECTIONS];  /* each section's payload */
    uint32_t n_tensors, n_params;
    uint64_t n_values, n_param_values; /* all tensors, parameters only */
    const unsigned char *values;    /* the tensors' values, in table order */
    char optim[OPTIM_NAME + 1];
    uint64_t optim_steps;
    uint32_t n_slots;
    const unsigned char *slots;     /* n_slots x n_param_values floats */
    struct ckpt_state st;
};

/* Magic, version, size and CRC: everything that says "this is an intact checkpoint"
 * before any field after the prefix is believed. */
static int check_envelope(const unsigned char *p, size_t len) {
    if (len == 0)
        return err_set("truncated: the file is empty (0 bytes); the save was interrupted or the "
                       "copy is incomplete. " HINT_DAMAGED);
    size_t cmp = len < sizeof CKPT_MAGIC ? len : sizeof CKPT_MAGIC;
    if (memcmp(p, CKPT_MAGIC, cmp) != 0)
        return err_set("not a nostall checkpoint (its first bytes are not the checkpoint magic). "
                       "HINT: check the path");
    if (len < PREFIX_BYTES + 4)
        return err_set("truncated: %zu bytes, shorter than the %d-byte header; the save was "
                       "interrupted or the copy is incomplete. " HINT_DAMAGED, len, PREFIX_BYTES + 4);
    uint32_t version;
    uint64_t file_bytes;
    memcpy(&version, p + 8, sizeof version);
    memcpy(&file_bytes, p + 16, sizeof file_bytes);
    if (version == 1)
        return err_set("format version 1: written before checkpoints described their model, and this "
                       "build reads version %d only. HINT: train again (or resume with the nostall "
                       "that wrote it)", CKPT_VERSION);
    if (version != CKPT_VERSION)
        return err_set("format version %u, this build reads version %d. HINT: use the nostall that "
                       "wrote it", version, CKPT_VERSION);
    if (file_bytes > len)
        return err_set("truncated: %zu of %llu bytes; the save was interrupted or the copy is "
                       "incomplete. " HINT_DAMAGED, len, (unsigned long long)file_bytes);
    if (file_bytes < len)
        return err_set("damaged: %zu bytes where the header says %llu. " HINT_DAMAGED, len,
                       (unsigned long long)file_bytes);
    uint32_t stored, computed = crc_of(p, len - 4);
    memcpy(&stored, p + len - 4, sizeof stored);
    if (stored != computed)
        return err_set("checksum mismatch: the file is damaged (stored crc32 %08x, computed %08x). "
                       HINT_DAMAGED, stored, computed);
    return 0;
}

/* The section table: each known section exactly once, in order, nothing after. */
static int find_sections(const unsigned char *p, size_t len, struct parsed *f) {
    uint32_t n;
    memcpy(&n, p + 12, sizeof n);
    if (n != N_SECTIONS)
        return err_set("damaged: %u sections where format %d has %d. " HINT_DAMAGED, n, CKPT_VERSION, N_SECTIONS);
    struct reader r = {p, PREFIX_BYTES, len - 4};
    for (int s = 0; s < N_SECTIONS; s++) {
        char tag[9] = {0};
        uint64_t bytes;
        if (take(&r, tag, 8) || take(&r, &bytes, 8))
            return err_set("damaged: section %d's header is cut short. " HINT_DAMAGED, s + 1);
        char want[8] = {0}; /* the whole field: the tag, then NULs */
        memcpy(want, SECTION_TAGS[s], strlen(SECTION_TAGS[s]));
        if (memcmp(tag, want, 8) != 0)
            return err_set("damaged or from a newer format: section %d is '%.8s' where '%s' belongs. "
                           HINT_DAMAGED, s + 1, tag, SECTION_TAGS[s]);
        if (bytes > r.len - r.at)
            return err_set("damaged: section '%s' claims %llu bytes, %zu remain. " HINT_DAMAGED, tag,
                           (unsigned long long)bytes, r.len - r.at);
        f->sec[s] = (struct reader){p + r.at, 0, (size_t)bytes};
        r.at += (size_t)bytes;
    }
    if (r.at != r.len)
        return err_set("damaged: %zu bytes after the last section. " HINT_DAMAGED, r.len - r.at);
    return 0;
}

static int take_entry(struct reader *r, uint32_t i, struct entry *e) {
    uint32_t head[4];
    memset(e, 0, sizeof *e);
    if (take(r, e->name, CKPT_NAME_BYTES) || take(r, head, sizeof head) || take(r, e->dims, sizeof e->dims))
        return err_set("damaged: the tensor table is cut short at entry %u. " HINT_DAMAGED, i);
    e->kind = head[0];
    e->dtype = head[1];
    e->ndim = head[2];
    if (e->kind > KIND_BUFFER || e->dtype != DTYPE_F32 || e->ndim < 1 || e->ndim > 4)
        return err_set("damaged: tensor %u '%s' has kind %u, dtype %u, %u dimensions (this build reads "
                       "f32 tensors of 1 to 4 dimensions). " HINT_DAMAGED, i, e->name, e->kind, e->dtype, e->ndim);
    e->numel = 1;
    for (int d = 0; d < 4; d++) {
        if (e->dims[d] < 1 || e->dims[d] > INT32_MAX || (d >= (int)e->ndim && e->dims[d] != 1))
            return err_set("damaged: tensor %u '%s' has dimension %d = %lld. " HINT_DAMAGED, i, e->name, d,
                           (long long)e->dims[d]);
        if (e->numel > (UINT64_MAX >> 2) / (uint64_t)e->dims[d])
            return err_set("damaged: tensor %u '%s' is too large. " HINT_DAMAGED, i, e->name);
        e->numel *= (uint64_t)e->dims[d];
    }
    return 0;
}

/* The tensor table: kinds in order (parameters, then buffers), sizes that fit the section. */
static int parse_tensors(struct parsed *f) {
    struct reader r = f->sec[SEC_TENSORS];
    if (take(&r, &f->n_tensors, 4))
        return err_set("damaged: the tensors section is cut short. " HINT_DAMAGED);
    if (f->n_tensors > (r.len - r.at) / ENTRY_BYTES)
        return err_set("damaged: %u tensors do not fit their section. " HINT_DAMAGED, f->n_tensors);
    f->n_params = 0;
    f->n_values = f->n_param_values = 0;
    for (uint32_t i = 0; i < f->n_tensors; i++) {
        struct entry e;
        if (take_entry(&r, i, &e)) return -1;
        if (e.kind == KIND_PARAM && f->n_params != i)
            return err_set("damaged: parameter %u '%s' comes after a buffer. " HINT_DAMAGED, i, e.name);
        size_t room = (r.len - r.at) / sizeof(float); /* so n_values fits the section */
        if (f->n_values > room || e.numel > room - f->n_values)
            return err_set("damaged: the values of tensor %u '%s' run past the section. " HINT_DAMAGED, i, e.name);
        f->n_values += e.numel;
        if (e.kind == KIND_PARAM) f->n_params++, f->n_param_values += e.numel;
    }
    if (!(f->values = take_floats(&r, f->n_values)) || r.at != r.len)
        return err_set("damaged: the tensors section holds %zu bytes, its table needs %zu. " HINT_DAMAGED,
                       r.len, r.at);
    return 0;
}

static int parse_optim(struct parsed *f) {
    struct reader r = f->sec[SEC_OPTIM];
    uint32_t reserved;
    memset(f->optim, 0, sizeof f->optim);
    if (take(&r, f->optim, OPTIM_NAME) || take(&r, &f->optim_steps, 8) || take(&r, &f->n_slots, 4) || take(&r, &reserved, 4))
        return err_set("damaged: the optim section is cut short. " HINT_DAMAGED);
    if (f->n_slots > 8)
        return err_set("damaged: %u optimizer slots (at most 8). " HINT_DAMAGED, f->n_slots);
    for (uint32_t s = 0; s < f->n_slots; s++) {
        char slot[OPTIM_NAME];
        if (take(&r, slot, OPTIM_NAME)) return err_set("damaged: the optim section is cut short. " HINT_DAMAGED);
    }
    if (!(f->slots = take_floats(&r, (uint64_t)f->n_slots * f->n_param_values)) || r.at != r.len)
        return err_set("damaged: the optim section holds %zu bytes where %u slots of %llu values need more "
                       "or fewer. " HINT_DAMAGED, r.len, f->n_slots, (unsigned long long)f->n_param_values);
    return 0;
}

static int parse_state(struct parsed *f) {
    struct reader r = f->sec[SEC_STATE];
    int64_t pos[4];
    uint32_t world[2];
    if (r.len != STATE_BYTES || take(&r, &f->st.fingerprint, 8) || take(&r, pos, sizeof pos) ||
        take(&r, world, sizeof world))
        return err_set("damaged: the state section is %zu bytes, not %d. " HINT_DAMAGED, r.len, STATE_BYTES);
    if (pos[0] < 0 || pos[1] < 0 || pos[2] < 0 || pos[3] < 0 || pos[0] > INT32_MAX || pos[3] > INT32_MAX ||
        world[0] < 1)
        return err_set("damaged: the state section holds a position out of range or no process. " HINT_DAMAGED);
    f->st = (struct ckpt_state){f->st.fingerprint, pos[0], pos[1], pos[2], pos[3], world[0]};
    return 0;
}

static int parse(const unsigned char *p, size_t len, struct parsed *f) {
    memset(f, 0, sizeof *f);
    if (check_envelope(p, len) || find_sections(p, len, f) || parse_tensors(f) || parse_optim(f) ||
        parse_state(f))
        return -1;
    return 0;
}

/* The file's tensor table against the model's tensors; names the first difference. */
static int check_model(const struct parsed *f, const struct nn_params *ps, const char *hint) {
    struct reader r = f->sec[SEC_TENSORS];
    r.at = 4;
    int n_model = ps->n_params + ps->n_buffers;
    for (uint32_t i = 0; i < f->n_tensors; i++) {
        struct entry e;
        take_entry(&r, i, &e); /* parse_tensors read it once already */
        if (i >= (uint32_t)n_model)
            return err_set("written by a different model: it has %u tensors, this model %d (the first extra "
                           "is '%s'). %s", f->n_tensors, n_model, e.name, hint);
        bool is_param = (int)i < ps->n_params;
        const char *name = is_param ? ps->param_names[i] : ps->buffer_names[i - ps->n_params];
        const struct tensor *t = is_param ? ps->params[i] : ps->buffers[i - ps->n_params];
        bool same = e.kind == (is_param ? KIND_PARAM : KIND_BUFFER) && e.ndim == (uint32_t)t->ndim;
        for (int d = 0; same && d < t->ndim; d++) same = e.dims[d] == t->shape[d];
        if (strcmp(e.name, name) != 0 || !same)
            return err_set("written by a different model: tensor %u is '%s' (%lld x %lld x %lld x %lld) in the "
                           "checkpoint, '%s' (%d-d, %zu values) in this model. %s", i, e.name,
                           (long long)e.dims[0], (long long)e.dims[1], (long long)e.dims[2],
                           (long long)e.dims[3], name, t->ndim, t->numel, hint);
    }
    if (f->n_tensors < (uint32_t)n_model)
        return err_set("written by a different model: it has %u tensors, this model %d. %s", f->n_tensors,
                       n_model, hint);
    return 0;
}

/* Weights and BN buffers (and, when opt, the optimizer's slots into its buffers) onto
 * the device. */
static void copy_in(const struct parsed *f, struct nn_params *ps, const struct ckpt_optim *opt) {
    const unsigned char *src = f->values;
    size_t value = 0; /* parameter i's first value in the file's slots */
    for (int i = 0; i < ps->n_params; i++) {
        size_t bytes = ps->params[i]->numel * sizeof(float), at = (size_t)(ps->params[i]->data - ps->w);
        ps->be->copy(ps->params[i]->data, src, bytes, COPY_H2D);
        for (int s = 0; opt && s < opt->n_slots; s++) /* slot s holds every parameter, in order */
            ps->be->copy(opt->slots[s] + at, f->slots + ((size_t)s * f->n_param_values + value) * sizeof(float), bytes,
                         COPY_H2D);
        src += bytes;
        value += ps->params[i]->numel;
    }
    for (int i = 0; i < ps->n_buffers; i++) {
        size_t bytes = ps->buffers[i]->numel * sizeof(float);
        ps->be->copy(ps->buffers[i]->data, src, bytes, COPY_H2D);
        src += bytes;
    }
    if (ps->be->sync) ps->be->sync();
}

int ckpt_load_mem(const void *data, size_t len, struct nn_model *m, struct ckpt_optim *opt, struct ckpt_state *st,
                  uint64_t expected_fingerprint) {
    struct nn_params *ps = &m->ps;
    if (!ps->be) return err_set("the model is not finalized");
    struct parsed f;
    if (parse(data, len, &f) || check_model(&f, ps, HINT_MODEL)) return -1;
    struct ckpt_optim sgd = sgd_in(ps, NULL);
    if (!opt) opt = &sgd;
    if (strcmp(f.optim, opt->name) != 0 || f.n_slots != (uint32_t)opt->n_slots)
        return err_set("holds the state of optimizer '%s' (%u slot%s); this run uses %s (%d). HINT: resume with "
                       "the optim.name that wrote it, or start without --resume", f.optim, f.n_slots,
                       f.n_slots == 1 ? "" : "s", opt->name, opt->n_slots);
    if (f.st.fingerprint != expected_fingerprint)
        return err_set("config fingerprint differs (checkpoint %016llx, this run %016llx): the "
                       "checkpoint was made with a different config (e.g. the [model] or [data] "
                       "section). " HINT_MODEL, (unsigned long long)f.st.fingerprint,
                       (unsigned long long)expected_fingerprint);
    copy_in(&f, ps, opt);
    opt->steps = f.optim_steps;
    *st = f.st;
    return 0;
}

void ckpt_info_free(struct ckpt_info *info) {
    if (info->class_names) free(info->class_names[0]);
    free(info->class_names);
    info->class_names = NULL;
}

/* The text sections: the config parsed (and validated), the class names split into lines. */
static int read_info(const struct parsed *f, struct ckpt_info *info) {
    memset(info, 0, sizeof *info);
    const struct reader *c = &f->sec[SEC_CONFIG], *k = &f->sec[SEC_CLASSES];
    if (cfg_load_text(&info->cfg, (const char *)c->p, c->len, "the checkpoint's config section") ||
        cfg_validate(&info->cfg, "the checkpoint's config section"))
        return err_wrap("damaged: ");
    int classes = info->cfg.data.classes, lines = 0;
    for (size_t i = 0; i < k->len; i++) lines += k->p[i] == '\n';
    if (lines != classes || (k->len && k->p[k->len - 1] != '\n') || memchr(k->p, 0, k->len))
        return err_set("damaged: the classes section has %d lines for %d classes. " HINT_DAMAGED, lines, classes);
    char *text = malloc(k->len + 1);
    info->class_names = calloc((size_t)classes, sizeof *info->class_names);
    if (!text || !info->class_names) {
        free(text);
        free(info->class_names);
        info->class_names = NULL;
        return err_set("out of host memory for %d class names", classes);
    }
    memcpy(text, k->p, k->len);
    text[k->len] = 0;
    for (int i = 0; i < classes; i++) {
        info->class_names[i] = text;
        text = strchr(text, '\n');
        *text++ = 0;
    }
    info->classes = classes;
    info->st = f->st;
    memcpy(info->optim, f->optim, sizeof info->optim - 1);
    info->n_tensors = f->n_tensors;
    info->n_values = f->n_values;
    return 0;
}

int ckpt_read_info_mem(const void *data, size_t len, struct ckpt_info *info) {
    struct parsed f;
    if (parse(data, len, &f)) return -1;
    return read_info(&f, info);
}

int ckpt_load(const char *path, struct nn_model *m, struct ckpt_optim *opt, struct ckpt_state *st,
              uint64_t expected_fingerprint) {
    unsigned char *buf = NULL;
    size_t len = 0;
    if (os_read_file(path, &buf, &len)) return err_wrap("loading checkpoint %s: ", path);
    int rc = ckpt_load_mem(buf, len, m, opt, st, expected_fingerprint);
    free(buf);
    return rc ? err_wrap("loading checkpoint %s: ", path) : 0;
}

int ckpt_open_model(const char *path, const struct backend *be, struct nn_model *m, struct ckpt_info *info) {
    unsigned char *buf = NULL;
    size_t len = 0;
    memset(m, 0, sizeof *m);
    if (os_read_file(path, &buf, &len)) return err_wrap("opening checkpoint %s: ", path);
    int rc = ckpt_open_model_mem(buf, len, be, m, info);
    free(buf);
    return rc ? err_wrap("opening checkpoint %s: ", path) : 0;
}

int ckpt_open_model_mem(const void *buf, size_t len, const struct backend *be, struct nn_model *m,
                        struct ckpt_info *info) {
    struct parsed f;
    memset(m, 0, sizeof *m);
    if (parse(buf, len, &f) || read_info(&f, info)) return -1;
    if (model_build(m, &info->cfg)) {
        err_wrap("rebuilding the model of its config: [model]: ");
        goto fail;
    }
    /* the file's tensors against the config's model before any device memory is taken */
    if (check_model(&f, &m->ps, "HINT: this nostall builds that config differently; use the nostall that "
                                "wrote it") ||
        nn_model_finalize(m, be))
        goto fail;
    copy_in(&f, &m->ps, NULL);
    return 0;
fail:
    nn_model_free(m);
    memset(m, 0, sizeof *m);
    ckpt_info_free(info);
    return -1;
}

int ckpt_read_info(const char *path, struct ckpt_info *info) {
    unsigned char *buf = NULL;
    size_t len = 0;
    if (os_read_file(path, &buf, &len)) return err_wrap("opening checkpoint %s: ", path);
    int rc = ckpt_read_info_mem(buf, len, info);
    free(buf);
    return rc ? err_wrap("opening checkpoint %s: ", path) : 0;
}
