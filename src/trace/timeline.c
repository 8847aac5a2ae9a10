/* timeline.c — a trace read back: its events (from a live tracer or a trace file),
 * and the training steps and their statistics (trace.h). The drawing is src/viz/. */
#include <errno.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "trace.h"

/* ---- the event lists ---- */

static void copy_name(char *dst, const char *src) {
    snprintf(dst, TIMELINE_NAME_LEN, "%s", src ? src : "");
}

/* Room for one more element of an array that doubles as it grows. */
static void *grow(void *p, size_t *cap, size_t n, size_t size) {
    if (n < *cap) return p;
    size_t c = *cap ? 2 * *cap : 256;
    void *q = realloc(p, c * size);
    if (!q) { err_set("out of host memory for a timeline of %zu events", n); return NULL; }
    *cap = c;
    return q;
}

int timeline_add_span(struct timeline *tl, int tid, const char *name, const char *cat, int64_t start_ns,
                      int64_t dur_ns) {
    struct timeline_span *p = grow(tl->spans, &tl->cap_spans, tl->n_spans, sizeof *p);
    if (!p) return -1;
    tl->spans = p;
    struct timeline_span *e = &p[tl->n_spans++];
    e->tid = tid;
    e->start_ns = start_ns;
    e->dur_ns = dur_ns > 0 ? dur_ns : 0;
    copy_name(e->name, name);
    copy_name(e->cat, cat);
    return 0;
}

int timeline_add_counter(struct timeline *tl, const char *name, int64_t t_ns, double value) {
    struct timeline_counter *p = grow(tl->counters, &tl->cap_counters, tl->n_counters, sizeof *p);
    if (!p) return -1;
    tl->counters = p;
    struct timeline_counter *e = &p[tl->n_counters++];
    e->t_ns = t_ns;
    e->value = value;
    copy_name(e->name, name);
    return 0;
}

/* A later name for the same thread replaces the earlier one. */
int timeline_add_thread(struct timeline *tl, int tid, const char *name) {
    for (size_t i = 0; i < tl->n_threads; i++)
        if (tl->threads[i].tid == tid) { copy_name(tl->threads[i].name, name); return 0; }
    struct timeline_thread *p = grow(tl->threads, &tl->cap_threads, tl->n_threads, sizeof *p);
    if (!p) return -1;
    tl->threads = p;
    p[tl->n_threads].tid = tid;
    copy_name(p[tl->n_threads].name, name);
    tl->n_threads++;
    return 0;
}

/* A later maximum for the same counter replaces the earlier one, as thread names do. */
int timeline_add_counter_max(struct timeline *tl, const char *name, double max) {
    char cut[TIMELINE_NAME_LEN];  /* compared as stored: cut like the counters' names */
    copy_name(cut, name);
    for (size_t i = 0; i < tl->n_maxima; i++)
        if (!strcmp(tl->maxima[i].name, cut)) { tl->maxima[i].max = max; return 0; }
    struct timeline_counter_max *p = grow(tl->maxima, &tl->cap_maxima, tl->n_maxima, sizeof *p);
    if (!p) return -1;
    tl->maxima = p;
    p[tl->n_maxima].max = max;
    copy_name(p[tl->n_maxima].name, cut);
    tl->n_maxima++;
    return 0;
}

double timeline_counter_max(const struct timeline *tl, const char *name) {
    for (size_t i = 0; i < tl->n_maxima; i++)
        if (!strcmp(tl->maxima[i].name, name)) return tl->maxima[i].max;
    return 0;
}

void timeline_free(struct timeline *tl) {
    free(tl->spans);
    free(tl->counters);
    free(tl->threads);
    free(tl->maxima);
    memset(tl, 0, sizeof *tl);
}

struct from_trace { struct timeline *tl; int failed; };

static void add_record(const struct trace_record *r, void *ctx) {
    struct from_trace *ft = ctx;
    if (ft->failed) return;
    if (r->ph == 'X') ft->failed = timeline_add_span(ft->tl, r->tid, r->name, r->cat, r->t_ns, r->dur_ns);
    else if (r->ph == 'C') ft->failed = timeline_add_counter(ft->tl, r->name, r->t_ns, r->value);
    else if (r->ph == 'M') ft->failed = timeline_add_thread(ft->tl, r->tid, r->name);
    else if (r->ph == 'R') ft->failed = timeline_add_counter_max(ft->tl, r->name, r->value);
}

int timeline_from_trace(struct timeline *tl, struct trace *tr) {
    memset(tl, 0, sizeof *tl);
    struct from_trace ft = {tl, 0};
    trace_for_each(tr, add_record, &ft);
    if (ft.failed) { timeline_free(tl); return -1; }
    return 0;
}

/* ---- reading a trace file ----
 * A small JSON reader (RFC 8259) that keeps only what a timeline needs and skips
 * every other key and value, so traces from other tools with extra fields load too. */

struct jr {
    const char *s;
    size_t at;
    const char *path;
};

static int jr_fail(struct jr *p, const char *what) {
    return err_set("%s: %s at byte %zu; not a Chrome trace-event JSON file as ./train --trace writes. HINT: "
                   "pass the .json of --trace", p->path, what, p->at);
}

static void jr_ws(struct jr *p) {
    while (p->s[p->at] == ' ' || p->s[p->at] == '\n' || p->s[p->at] == '\r' || p->s[p->at] == '\t') p->at++;
}

static bool jr_eat(struct jr *p, char c) {
    jr_ws(p);
    if (p->s[p->at] != c) return false;
    p->at++;
    return true;
}

/* A string, decoded into buf (cut to len-1 bytes; \u escapes beyond ASCII become '?'). */
static int jr_string(struct jr *p, char *buf, size_t len) {
    if (!jr_eat(p, '"')) return jr_fail(p, "expected a string");
    size_t n = 0;
    for (;;) {
        unsigned char c = (unsigned char)p->s[p->at];
        if (c == 0) return jr_fail(p, "unterminated string");
        if (c < 0x20) return jr_fail(p, "control character in a string");
        p->at++;
        if (c == '"') break;
        if (c == '\\') {
            char e = p->s[p->at++];
            const char *from = "\"\\/bfnrt", *to = "\"\\/\b\f\n\r\t", *hit = e ? strchr(from, e) : NULL;
            if (hit) c = (unsigned char)to[hit - from];
            else if (e == 'u') {
                unsigned u = 0;
                for (int i = 0; i < 4; i++) {
                    char h = p->s[p->at++];
                    int d = h >= '0' && h <= '9' ? h - '0' : h >= 'a' && h <= 'f' ? h - 'a' + 10
                          : h >= 'A' && h <= 'F' ? h - 'A' + 10 : -1;
                    if (d < 0) return jr_fail(p, "bad \\u escape");
                    u = u * 16 + (unsigned)d;
                }
                c = u < 0x80 ? (unsigned char)u : '?';
            } else {
                return jr_fail(p, "bad escape in a string");
            }
        }
        if (n + 1 < len) buf[n++] = (char)c;
    }
    if (len) buf[n] = 0;
    return 0;
}

static int jr_number(struct jr *p, double *v) {
    jr_ws(p);
    const char *s = p->s + p->at;
    if (!(*s == '-' || (*s >= '0' && *s <= '9'))) return jr_fail(p, "expected a number");
    char *end;
    errno = 0;
    *v = strtod(s, &end);
    if (end == s || errno == ERANGE || !isfinite(*v)) return jr_fail(p, "bad number");
    p->at += (size_t)(end - s);
    return 0;
}

static int jr_skip(struct jr *p, int depth) {
    if (depth > 64) return jr_fail(p, "nested too deeply");
    jr_ws(p);
    char c = p->s[p->at];
    char scratch[2];
    if (c == '"') return jr_string(p, scratch, sizeof scratch);
    if (c == '{' || c == '[') {
        char close = c == '{' ? '}' : ']';
        p->at++;
        if (jr_eat(p, close)) return 0;
        do {
            if (c == '{' && (jr_string(p, scratch, sizeof scratch) || (!jr_eat(p, ':') && jr_fail(p, "expected ':'"))))
                return -1;
            if (jr_skip(p, depth + 1)) return -1;
        } while (jr_eat(p, ','));
        return jr_eat(p, close) ? 0 : jr_fail(p, "expected ',' or the end of a list");
    }
    static const char *lits[] = {"true", "false", "null"};
    for (int i = 0; i < 3; i++)
        if (!strncmp(p->s + p->at, lits[i], strlen(lits[i]))) { p->at += strlen(lits[i]); return 0; }
    double v;
    return jr_number(p, &v);
}

struct jr_event {
    char ph[4], name[TIMELINE_NAME_LEN], cat[TIMELINE_NAME_LEN], arg_name[TIMELINE_NAME_LEN];
    double tid, ts, dur, value;
};

static int jr_args(struct jr *p, struct jr_event *e) {
    if (!jr_eat(p, '{')) return jr_skip(p, 1);
    if (jr_eat(p, '}')) return 0;
    do {
        char key[16];
        if (jr_string(p, key, sizeof key)) return -1;
        if (!jr_eat(p, ':')) return jr_fail(p, "expected ':'");
        int rc = !strcmp(key, "name") ? jr_string(p, e->arg_name, sizeof e->arg_name)
               : !strcmp(key, "value") ? jr_number(p, &e->value) : jr_skip(p, 2);
        if (rc) return -1;
    } while (jr_eat(p, ','));
    return jr_eat(p, '}') ? 0 : jr_fail(p, "expected ',' or '}'");
}

static int64_t us_to_ns(double us) { return (int64_t)llround(us * 1000.0); }

static int jr_event(struct jr *p, struct timeline *tl) {
    struct jr_event e;
    memset(&e, 0, sizeof e);
    if (!jr_eat(p, '{')) return jr_skip(p, 1);  /* not an event object: not ours to judge */
    if (!jr_eat(p, '}')) {
        do {
            char key[16];
            if (jr_string(p, key, sizeof key)) return -1;
            if (!jr_eat(p, ':')) return jr_fail(p, "expected ':'");
            int rc;
            if (!strcmp(key, "ph")) rc = jr_string(p, e.ph, sizeof e.ph);
            else if (!strcmp(key, "name")) rc = jr_string(p, e.name, sizeof e.name);
            else if (!strcmp(key, "cat")) rc = jr_string(p, e.cat, sizeof e.cat);
            else if (!strcmp(key, "tid")) rc = jr_number(p, &e.tid);
            else if (!strcmp(key, "ts")) rc = jr_number(p, &e.ts);
            else if (!strcmp(key, "dur")) rc = jr_number(p, &e.dur);
            else if (!strcmp(key, "args")) rc = jr_args(p, &e);
            else rc = jr_skip(p, 2);
            if (rc) return -1;
        } while (jr_eat(p, ','));
        if (!jr_eat(p, '}')) return jr_fail(p, "expected ',' or '}' in an event");
    }
    int tid = fabs(e.tid) < 1e9 ? (int)e.tid : 0;
    if (!strcmp(e.ph, "X")) return timeline_add_span(tl, tid, e.name, e.cat, us_to_ns(e.ts), us_to_ns(e.dur));
    if (!strcmp(e.ph, "C")) return timeline_add_counter(tl, e.name, us_to_ns(e.ts), e.value);
    if (!strcmp(e.ph, "M") && !strcmp(e.name, "thread_name")) return timeline_add_thread(tl, tid, e.arg_name);
    if (!strcmp(e.ph, "M") && !strcmp(e.name, "counter_max")) return timeline_add_counter_max(tl, e.arg_name, e.value);
    return 0;
}

static char *read_whole_file(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        err_set("trace file %s cannot be read: %s", path, strerror(errno));
        return NULL;
    }
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap);
    while (buf) {
        n += fread(buf + n, 1, cap - n - 1, f);
        if (n < cap - 1) break;
        char *more = realloc(buf, cap *= 2);
        if (!more) free(buf);
        buf = more;
    }
    bool bad = ferror(f);
    fclose(f);
    if (!buf) { err_set("out of host memory reading trace file %s", path); return NULL; }
    if (bad) { free(buf); err_set("reading trace file %s failed", path); return NULL; }
    buf[n] = 0;
    if (strlen(buf) != n) { free(buf); err_set("trace file %s holds a NUL byte: not JSON", path); return NULL; }
    return buf;
}

int timeline_load_json(struct timeline *tl, const char *path) {
    memset(tl, 0, sizeof *tl);
    char *text = read_whole_file(path);
    if (!text) return -1;
    struct jr p = {text, 0, path};
    int rc = 0;
    bool found = false;
    if (!jr_eat(&p, '{')) rc = jr_fail(&p, "expected '{'");
    else if (!jr_eat(&p, '}')) {
        do {
            char key[32];
            if ((rc = jr_string(&p, key, sizeof key))) break;
            if (!jr_eat(&p, ':')) { rc = jr_fail(&p, "expected ':'"); break; }
            if (strcmp(key, "traceEvents")) { if ((rc = jr_skip(&p, 1))) break; continue; }
            found = true;
            if (!jr_eat(&p, '[')) { rc = jr_fail(&p, "traceEvents is not a list"); break; }
            if (jr_eat(&p, ']')) continue;
            do rc = jr_event(&p, tl);
            while (!rc && jr_eat(&p, ','));
            if (!rc && !jr_eat(&p, ']')) rc = jr_fail(&p, "expected ',' or ']' after an event");
        } while (!rc && jr_eat(&p, ','));
        if (!rc && !jr_eat(&p, '}')) rc = jr_fail(&p, "expected ',' or '}'");
    }
    if (!rc && !found) rc = jr_fail(&p, "no \"traceEvents\" list");
    free(text);
    if (rc) timeline_free(tl);
    return rc;
}

/* ---- steps ---- */

static int cmp_int64(const void *a, const void *b) {
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

/* Training-thread spans of one name, as sorted (start, end) pairs; n returned in *n. */
static int64_t *named_spans(const struct timeline *tl, const char *name, int *n) {
    *n = 0;
    int64_t *v = malloc((tl->n_spans ? tl->n_spans : 1) * 2 * sizeof *v);
    if (!v) { err_set("out of host memory"); return NULL; }
    for (size_t i = 0; i < tl->n_spans; i++) {
        const struct timeline_span *s = &tl->spans[i];
        if (s->tid != TIMELINE_TRAINING_TID || strcmp(s->name, name)) continue;
        v[2 * *n] = s->start_ns;
        v[2 * *n + 1] = s->start_ns + s->dur_ns;
        (*n)++;
    }
    qsort(v, (size_t)*n, 2 * sizeof *v, cmp_int64);
    return v;
}

void timeline_steps_free(struct timeline_steps *st) {
    free(st->start);
    memset(st, 0, sizeof *st);
}

/* Each wait, paired with the first compute that starts at or after it and before the
 * next wait; a wait without its compute (a run cut off) is no step. */
int timeline_steps_collect(const struct timeline *tl, struct timeline_steps *st) {
    memset(st, 0, sizeof *st);
    int nw, nc;
    int64_t *w = named_spans(tl, "wait", &nw), *c = w ? named_spans(tl, "compute", &nc) : NULL;
    int64_t *mem = c ? malloc(((size_t)nw + 1) * 4 * sizeof *mem) : NULL;
    if (!mem) { free(w); free(c); return err_set("out of host memory counting steps"); }
    st->start = mem;
    st->wait = mem + nw + 1;
    st->compute = mem + 2 * (nw + 1);
    st->end = mem + 3 * (nw + 1);
    int j = 0;
    for (int i = 0; i < nw; i++) {
        int64_t ws = w[2 * i], we = w[2 * i + 1], next = i + 1 < nw ? w[2 * i + 2] : INT64_MAX;
        while (j < nc && c[2 * j] < ws) j++;
        if (j == nc || c[2 * j] >= next) continue;
        st->start[st->n] = ws;
        st->wait[st->n] = we - ws;
        st->compute[st->n] = c[2 * j + 1] - c[2 * j];
        st->end[st->n] = c[2 * j + 1];
        st->n++;
        j++;
    }
    free(w);
    free(c);
    return 0;
}

int timeline_step_count(const struct timeline *tl) {
    struct timeline_steps st;
    if (timeline_steps_collect(tl, &st)) return 0;
    int n = st.n;
    timeline_steps_free(&st);
    return n;
}

int timeline_step(const struct timeline *tl, int i, int64_t *start_ns, int64_t *wait_ns, int64_t *compute_ns,
                  int64_t *end_ns) {
    struct timeline_steps st;
    if (timeline_steps_collect(tl, &st)) return -1;
    int rc = i >= 0 && i < st.n ? 0 : -1;
    if (!rc) {
        if (start_ns) *start_ns = st.start[i];
        if (wait_ns) *wait_ns = st.wait[i];
        if (compute_ns) *compute_ns = st.compute[i];
        if (end_ns) *end_ns = st.end[i];
    }
    timeline_steps_free(&st);
    return rc;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

double timeline_median(double *v, int n) {
    if (n <= 0) return 0;
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

int timeline_steps_stats(const struct timeline_steps *st, int first, int count, struct timeline_step_stats *out) {
    memset(out, 0, sizeof *out);
    if (first < 0) first = 0;
    int last = count > 0 && first + count < st->n ? first + count : st->n;
    int n = last - first;
    if (n <= 0) return err_set("the trace has %d training steps; none from step %d on", st->n, first);
    double *v = malloc((size_t)n * 3 * sizeof *v);
    if (!v) return err_set("out of host memory");
    double sum_wall = 0, sum_wait = 0;
    for (int i = 0; i < n; i++) {
        int k = first + i;
        v[i] = (double)(st->end[k] - st->start[k]) * 1e-9;
        v[n + i] = (double)st->wait[k] * 1e-9;
        v[2 * n + i] = (double)st->compute[k] * 1e-9;
        sum_wall += v[i];
        sum_wait += v[n + i];
    }
    out->steps = n;
    out->total_s = sum_wall;
    out->wait_share = sum_wall > 0 ? sum_wait / sum_wall : 0;
    out->median_step_s = timeline_median(v, n);
    out->median_wait_s = timeline_median(v + n, n);
    out->median_compute_s = timeline_median(v + 2 * n, n);
    free(v);
    return 0;
}

int timeline_step_stats(const struct timeline *tl, int first, int count, struct timeline_step_stats *out) {
    struct timeline_steps st;
    if (timeline_steps_collect(tl, &st)) return -1;
    int rc = timeline_steps_stats(&st, first, count, out);
    timeline_steps_free(&st);
    return rc;
}
