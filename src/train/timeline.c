/* timeline.c — a trace's events, its steps, and the SVG timeline (timeline.h). */
#include <errno.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "timeline.h"

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

void timeline_free(struct timeline *tl) {
    free(tl->spans);
    free(tl->counters);
    free(tl->threads);
    memset(tl, 0, sizeof *tl);
}

struct from_trace { struct timeline *tl; int failed; };

static void add_record(const struct trace_record *r, void *ctx) {
    struct from_trace *ft = ctx;
    if (ft->failed) return;
    if (r->ph == 'X') ft->failed = timeline_add_span(ft->tl, r->tid, r->name, r->cat, r->t_ns, r->dur_ns);
    else if (r->ph == 'C') ft->failed = timeline_add_counter(ft->tl, r->name, r->t_ns, r->value);
    else if (r->ph == 'M') ft->failed = timeline_add_thread(ft->tl, r->tid, r->name);
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

struct steps { int n; int64_t *start, *wait, *compute, *end; };

static void steps_free(struct steps *st) {
    free(st->start);
    memset(st, 0, sizeof *st);
}

/* Each wait, paired with the first compute that starts at or after it and before the
 * next wait; a wait without its compute (a run cut off) is no step. */
static int steps_collect(const struct timeline *tl, struct steps *st) {
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
    struct steps st;
    if (steps_collect(tl, &st)) return 0;
    int n = st.n;
    steps_free(&st);
    return n;
}

int timeline_step(const struct timeline *tl, int i, int64_t *start_ns, int64_t *wait_ns, int64_t *compute_ns,
                  int64_t *end_ns) {
    struct steps st;
    if (steps_collect(tl, &st)) return -1;
    int rc = i >= 0 && i < st.n ? 0 : -1;
    if (!rc) {
        if (start_ns) *start_ns = st.start[i];
        if (wait_ns) *wait_ns = st.wait[i];
        if (compute_ns) *compute_ns = st.compute[i];
        if (end_ns) *end_ns = st.end[i];
    }
    steps_free(&st);
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

static int stats_of(const struct steps *st, int first, int count, struct timeline_step_stats *out) {
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
    struct steps st;
    if (steps_collect(tl, &st)) return -1;
    int rc = stats_of(&st, first, count, out);
    steps_free(&st);
    return rc;
}

/* ---- drawing ---- */

#define TL_W 1100.0
#define TL_LABEL_W 200.0
#define TL_RIGHT 20.0
#define TL_LANE 24.0
#define TL_BAR 16.0
#define TL_LEGEND_H 70.0
#define TL_PANEL_HEAD 40.0
#define TL_AXIS_H 34.0
#define TL_PANEL_GAP 14.0
#define TL_MAX_LANES 80

static const char *span_fill(const struct timeline_span *s) {
    if (!strncmp(s->name, "wait", 4)) return "#d64541";
    if (!strncmp(s->name, "compute", 7)) return "#3d6fb6";
    if (!strncmp(s->name, "load", 4) || !strcmp(s->cat, "loader")) return "#4aa564";
    if (strstr(s->name, "h2d") || strstr(s->name, "copy")) return "#8e5ea2";
    return "#9a9a9a";
}

struct lane {
    bool counter;
    int tid;                          /* thread lanes */
    char name[TIMELINE_NAME_LEN];     /* counter lanes: the counter's name */
};

static const char *thread_name(const struct timeline *tl, int tid) {
    for (size_t i = 0; i < tl->n_threads; i++)
        if (tl->threads[i].tid == tid) return tl->threads[i].name;
    return NULL;
}

static int cmp_lane(const void *a, const void *b) {
    const struct lane *x = a, *y = b;
    if (x->counter != y->counter) return x->counter - y->counter;
    if (x->counter) return strcmp(x->name, y->name);
    return (x->tid > y->tid) - (x->tid < y->tid);
}

/* Every thread with a span, the training thread first, then every counter. */
static int collect_lanes(const struct timeline *tl, struct lane *lanes) {
    int n = 0;
    for (size_t i = 0; i < tl->n_spans && n < TL_MAX_LANES; i++) {
        int k = 0;
        while (k < n && !(!lanes[k].counter && lanes[k].tid == tl->spans[i].tid)) k++;
        if (k == n) lanes[n++] = (struct lane){false, tl->spans[i].tid, ""};
    }
    for (size_t i = 0; i < tl->n_counters && n < TL_MAX_LANES; i++) {
        int k = 0;
        while (k < n && !(lanes[k].counter && !strcmp(lanes[k].name, tl->counters[i].name))) k++;
        if (k == n) {
            lanes[n] = (struct lane){true, 0, ""};
            copy_name(lanes[n].name, tl->counters[i].name);
            n++;
        }
    }
    qsort(lanes, (size_t)n, sizeof *lanes, cmp_lane);
    return n;
}

/* The stretch of time a panel shows: opt's steps, or everything when there are none. */
struct window {
    int64_t t0, t1;
    int first, count;                 /* steps drawn */
    struct steps st;
    struct timeline_step_stats stats; /* over the drawn steps */
    bool has_stats;
};

static int find_window(const struct timeline *tl, const struct timeline_options *o, struct window *w) {
    memset(w, 0, sizeof *w);
    if (steps_collect(tl, &w->st)) return -1;
    int want = o && o->steps > 0 ? o->steps : 4, first = o && o->first_step >= 0 ? o->first_step : 2;
    if (w->st.n > 0) {
        if (want > w->st.n) want = w->st.n;
        if (first + want > w->st.n) first = w->st.n - want;
        w->first = first;
        w->count = want;
        w->t0 = w->st.start[first];
        w->t1 = w->st.end[first + want - 1];
        w->has_stats = stats_of(&w->st, first, want, &w->stats) == 0;
        return 0;
    }
    w->t0 = INT64_MAX;
    w->t1 = INT64_MIN;
    for (size_t i = 0; i < tl->n_spans; i++) {
        const struct timeline_span *s = &tl->spans[i];
        if (s->start_ns < w->t0) w->t0 = s->start_ns;
        if (s->start_ns + s->dur_ns > w->t1) w->t1 = s->start_ns + s->dur_ns;
    }
    for (size_t i = 0; i < tl->n_counters; i++) {
        if (tl->counters[i].t_ns < w->t0) w->t0 = tl->counters[i].t_ns;
        if (tl->counters[i].t_ns > w->t1) w->t1 = tl->counters[i].t_ns;
    }
    if (w->t0 > w->t1) w->t0 = w->t1 = 0;
    return 0;
}

static double panel_height(int lanes) { return TL_PANEL_HEAD + lanes * TL_LANE + TL_AXIS_H + TL_PANEL_GAP; }

static void draw_counter(struct svg *s, const struct timeline *tl, const char *name, const struct window *w,
                         double x0, double y, double px_per_ns) {
    double most = 0;
    for (size_t i = 0; i < tl->n_counters; i++)
        if (!strcmp(tl->counters[i].name, name) && tl->counters[i].value > most) most = tl->counters[i].value;
    if (!(most > 0)) most = 1;
    /* a step line through the samples in the window, from the last one before it */
    size_t n = 0, cap = 64;
    double *xs = malloc(cap * sizeof *xs), *ys = malloc(cap * sizeof *ys);
    double last = 0, bottom = y + TL_LANE - 4, h = TL_LANE - 8;
    bool started = false;
    for (size_t i = 0; xs && ys && i < tl->n_counters; i++) {
        const struct timeline_counter *c = &tl->counters[i];
        if (strcmp(c->name, name)) continue;
        if (c->t_ns < w->t0) { last = c->value; continue; }
        if (c->t_ns > w->t1) continue;
        if (n + 3 > cap) {
            cap *= 2;
            double *nx = realloc(xs, cap * sizeof *xs), *ny = nx ? realloc(ys, cap * sizeof *ys) : NULL;
            if (!nx || !ny) { free(nx ? nx : xs); free(ny ? ny : ys); xs = ys = NULL; break; }
            xs = nx;
            ys = ny;
        }
        double x = x0 + (double)(c->t_ns - w->t0) * px_per_ns;
        if (!started) { xs[n] = x0; ys[n++] = bottom - h * last / most; started = true; }
        xs[n] = x; ys[n++] = bottom - h * last / most;
        xs[n] = x; ys[n++] = bottom - h * c->value / most;
        last = c->value;
    }
    if (xs && ys) {
        if (!started) { xs[n] = x0; ys[n++] = bottom - h * last / most; }
        xs[n] = x0 + (double)(w->t1 - w->t0) * px_per_ns;
        ys[n++] = bottom - h * last / most;
        svg_polyline(s, (int)n, xs, ys, "#555", 1.5);
    }
    free(xs);
    free(ys);
    svg_text(s, x0 - 8, y + 15, 11, SVG_END, "#444", false, "%s (0..%g)", name, most);
}

static void draw_panel(struct svg *s, const struct timeline *tl, const char *title, const struct window *w,
                       const struct lane *lanes, int n_lanes, double y, double px_per_ns, double axis_ns) {
    double x0 = TL_LABEL_W;
    svg_text(s, 12, y + 18, 13, SVG_START, "#222", true, "%s", title ? title : "");
    if (w->has_stats)
        svg_text(s, TL_W - TL_RIGHT, y + 18, 11.5, SVG_END, "#333", false,
                 "steps %d-%d: median step %.1f ms, %.0f%% of step time waiting for input", w->first + 1,
                 w->first + w->count, w->stats.median_step_s * 1e3, 100 * w->stats.wait_share);
    double top = y + TL_PANEL_HEAD, bottom = top + n_lanes * TL_LANE;
    double labelled = -1e9;
    for (int i = 0; i < w->count; i++) {
        double x = x0 + (double)(w->st.start[w->first + i] - w->t0) * px_per_ns;
        svg_line(s, x, top - 12, x, bottom, "#bbbbbb", 1, true);
        if (x - labelled < 44) continue;  /* steps too short to label each one */
        svg_text(s, x + 3, top - 3, 10, SVG_START, "#777", false, "step %d", w->first + i + 1);
        labelled = x;
    }
    for (int k = 0; k < n_lanes; k++) {
        double ly = top + k * TL_LANE;
        svg_rect(s, x0, ly + 1, TL_W - TL_RIGHT - x0, TL_LANE - 2, k % 2 ? "#fafafa" : "#f2f2f2", NULL);
        if (lanes[k].counter) { draw_counter(s, tl, lanes[k].name, w, x0, ly, px_per_ns); continue; }
        const char *name = thread_name(tl, lanes[k].tid);
        if (name && name[0]) svg_text(s, x0 - 8, ly + 16, 11, SVG_END, "#222", false, "%s", name);
        else svg_text(s, x0 - 8, ly + 16, 11, SVG_END, "#222", false, "thread %d", lanes[k].tid);
        for (size_t i = 0; i < tl->n_spans; i++) {
            const struct timeline_span *sp = &tl->spans[i];
            int64_t a = sp->start_ns, b = sp->start_ns + sp->dur_ns;
            if (sp->tid != lanes[k].tid || b < w->t0 || a > w->t1) continue;
            if (a < w->t0) a = w->t0;
            if (b > w->t1) b = w->t1;
            double x = x0 + (double)(a - w->t0) * px_per_ns, len = (double)(b - a) * px_per_ns;
            char tip[96];
            snprintf(tip, sizeof tip, "%s: %.2f ms", sp->name, (double)sp->dur_ns * 1e-6);
            /* at least a pixel wide, or a short span would vanish; a hairline gap between
             * long ones, so back-to-back steps stay apart */
            svg_rect(s, x, ly + (TL_LANE - TL_BAR) / 2, len < 1 ? 1 : len > 4 ? len - 1 : len, TL_BAR,
                     span_fill(sp), tip);
        }
    }
    double step_ms = svg_nice_step(axis_ns * 1e-6, 8);
    svg_line(s, x0, bottom + 2, TL_W - TL_RIGHT, bottom + 2, "#888", 1, false);
    for (double ms = 0; ms * 1e6 <= axis_ns * (1 + 1e-9); ms += step_ms) {
        double x = x0 + ms * 1e6 * px_per_ns;
        svg_line(s, x, bottom + 2, x, bottom + 6, "#888", 1, false);
        svg_text(s, x, bottom + 18, 10, SVG_MIDDLE, "#555", false, "%g ms", ms);
    }
}

static void draw_legend(struct svg *s, const struct timeline_options *o) {
    svg_text(s, 12, 24, 16, SVG_START, "#222", true, "%s", o && o->title ? o->title : "nostall timeline");
    if (o && o->subtitle) svg_text(s, 12, 42, 11, SVG_START, "#666", false, "%s", o->subtitle);
    static const struct { const char *fill, *what; } keys[] = {
        {"#d64541", "wait: training thread blocked on the loader"},
        {"#3d6fb6", "compute: forward, backward, SGD"},
        {"#4aa564", "load batch: read, decode, augment"},
        {"#8e5ea2", "copy to the device"},
    };
    double x = 12;
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) {
        svg_rect(s, x, 52, 12, 12, keys[i].fill, NULL);
        svg_text(s, x + 17, 62, 11, SVG_START, "#222", false, "%s", keys[i].what);
        x += 17 + 6.2 * (double)strlen(keys[i].what) + 22;
    }
}

int timeline_write_panels(const char *path, int n, const struct timeline *const *tls, const char *const *titles,
                          const struct timeline_options *opt) {
    if (n < 1) return err_set("timeline: nothing to draw");
    struct window *w = calloc((size_t)n, sizeof *w);
    struct lane(*lanes)[TL_MAX_LANES] = calloc((size_t)n, sizeof *lanes);
    int *n_lanes = calloc((size_t)n, sizeof *n_lanes);
    int rc = w && lanes && n_lanes ? 0 : err_set("out of host memory drawing a timeline");
    double height = TL_LEGEND_H;
    int64_t longest = 1;
    for (int i = 0; !rc && i < n; i++) {
        if ((rc = find_window(tls[i], opt, &w[i]))) break;
        n_lanes[i] = collect_lanes(tls[i], lanes[i]);
        height += panel_height(n_lanes[i]);
        if (w[i].t1 - w[i].t0 > longest) longest = w[i].t1 - w[i].t0;
    }
    struct svg *s = rc ? NULL : svg_open(path, TL_W, height);
    if (s) {
        double px_per_ns = (TL_W - TL_RIGHT - TL_LABEL_W) / (double)longest, y = TL_LEGEND_H;
        draw_legend(s, opt);
        for (int i = 0; i < n; i++) {
            draw_panel(s, tls[i], titles ? titles[i] : NULL, &w[i], lanes[i], n_lanes[i], y, px_per_ns,
                       (double)longest);
            y += panel_height(n_lanes[i]);
        }
        rc = svg_close(s);
    } else if (!rc) {
        rc = -1;
    }
    for (int i = 0; w && i < n; i++) steps_free(&w[i].st);
    free(w);
    free(lanes);
    free(n_lanes);
    return rc;
}

int timeline_write_svg(struct trace *tr, const char *path, const struct timeline_options *opt) {
    struct timeline tl;
    if (timeline_from_trace(&tl, tr)) return -1;
    const struct timeline *one = &tl;
    const char *title = "this run";
    int rc = timeline_write_panels(path, 1, &one, &title, opt);
    timeline_free(&tl);
    return rc;
}
