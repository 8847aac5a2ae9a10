/* test_trace.c — the trace file is valid JSON with the events that were recorded,
 * whatever threads recorded them; a NULL tracer does nothing; bad paths fail early. */
#include <criterion/criterion.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "error.h"
#include "os.h"
#include "trace.h"

/* ---- a small JSON parser (RFC 8259), enough to check what we write ---- */

enum jtype { J_NULL, J_BOOL, J_NUM, J_STR, J_ARR, J_OBJ };

struct jv {
    enum jtype type;
    double num;          /* J_NUM, J_BOOL */
    char *str;           /* J_STR, decoded */
    int n;               /* J_ARR, J_OBJ: items */
    char **keys;         /* J_OBJ */
    struct jv **items;
};

struct jp { const char *s; size_t at; };

static void jv_free(struct jv *v) {
    if (!v) return;
    for (int i = 0; i < v->n; i++) {
        if (v->keys) free(v->keys[i]);
        jv_free(v->items[i]);
    }
    free(v->keys);
    free(v->items);
    free(v->str);
    free(v);
}

static void skip_ws(struct jp *p) {
    while (p->s[p->at] && strchr(" \t\n\r", p->s[p->at])) p->at++;
}

static int hex4(const char *s) {
    int x = 0;
    for (int i = 0; i < 4; i++) {
        char c = s[i];
        int d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10
              : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
        if (d < 0) return -1;
        x = x * 16 + d;
    }
    return x;
}

/* A string starting at the opening quote; decoded into a new buffer, or NULL. */
static char *parse_string(struct jp *p) {
    if (p->s[p->at] != '"') return NULL;
    p->at++;
    size_t cap = 16, n = 0;
    char *out = malloc(cap);
    for (;;) {
        if (n + 4 >= cap) out = realloc(out, cap *= 2);
        unsigned char c = (unsigned char)p->s[p->at++];
        if (c == '"') break;
        if (c < 0x20) { free(out); return NULL; } /* control characters must be escaped (and ends the input at NUL) */
        if (c != '\\') { out[n++] = (char)c; continue; }
        char e = p->s[p->at++];
        const char *from = "\"\\/bfnrt", *to = "\"\\/\b\f\n\r\t";
        if (e && strchr(from, e)) { out[n++] = to[strchr(from, e) - from]; continue; }
        if (e != 'u') { free(out); return NULL; }
        int u = hex4(p->s + p->at);
        if (u < 0) { free(out); return NULL; }
        p->at += 4;
        if (u < 0x80) out[n++] = (char)u; /* the writer escapes only control characters */
        else { out[n++] = '?'; }
    }
    out[n] = 0;
    return out;
}

static struct jv *parse_value(struct jp *p, int depth);

static struct jv *parse_items(struct jp *p, int depth, struct jv *v, char close) {
    p->at++;
    skip_ws(p);
    if (p->s[p->at] == close) { p->at++; return v; }
    for (;;) {
        v->items = realloc(v->items, (size_t)(v->n + 1) * sizeof *v->items);
        if (v->type == J_OBJ) {
            v->keys = realloc(v->keys, (size_t)(v->n + 1) * sizeof *v->keys);
            skip_ws(p);
            char *key = parse_string(p);
            skip_ws(p);
            if (!key || p->s[p->at] != ':') { free(key); jv_free(v); return NULL; }
            p->at++;
            v->keys[v->n] = key;
        }
        struct jv *item = parse_value(p, depth + 1);
        if (!item) {
            if (v->type == J_OBJ) free(v->keys[v->n]);
            jv_free(v);
            return NULL;
        }
        v->items[v->n++] = item;
        skip_ws(p);
        char c = p->s[p->at++];
        if (c == close) return v;
        if (c != ',') { jv_free(v); return NULL; }
    }
}

static struct jv *parse_value(struct jp *p, int depth) {
    if (depth > 64) return NULL;
    skip_ws(p);
    struct jv *v = calloc(1, sizeof *v);
    const char *s = p->s + p->at;
    if (*s == '{') { v->type = J_OBJ; return parse_items(p, depth, v, '}'); }
    if (*s == '[') { v->type = J_ARR; return parse_items(p, depth, v, ']'); }
    if (*s == '"') {
        v->type = J_STR;
        if (!(v->str = parse_string(p))) { free(v); return NULL; }
        return v;
    }
    const char *lits[] = {"null", "true", "false"};
    for (int i = 0; i < 3; i++)
        if (strncmp(s, lits[i], strlen(lits[i])) == 0) {
            v->type = i ? J_BOOL : J_NULL;
            v->num = i == 1;
            p->at += strlen(lits[i]);
            return v;
        }
    /* number: -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)? */
    size_t i = 0;
    if (s[i] == '-') i++;
    if (s[i] == '0') i++;
    else if (s[i] >= '1' && s[i] <= '9') while (s[i] >= '0' && s[i] <= '9') i++;
    else { free(v); return NULL; }
    if (s[i] == '.') {
        if (!(s[++i] >= '0' && s[i] <= '9')) { free(v); return NULL; }
        while (s[i] >= '0' && s[i] <= '9') i++;
    }
    if (s[i] == 'e' || s[i] == 'E') {
        i++;
        if (s[i] == '+' || s[i] == '-') i++;
        if (!(s[i] >= '0' && s[i] <= '9')) { free(v); return NULL; }
        while (s[i] >= '0' && s[i] <= '9') i++;
    }
    v->type = J_NUM;
    v->num = strtod(s, NULL);
    p->at += i;
    return v;
}

/* The whole text must be one value and nothing else. */
static struct jv *parse_json(const char *text) {
    struct jp p = {text, 0};
    struct jv *v = parse_value(&p, 0);
    if (!v) return NULL;
    skip_ws(&p);
    if (text[p.at]) { jv_free(v); return NULL; }
    return v;
}

static struct jv *get(const struct jv *obj, const char *key) {
    if (!obj || obj->type != J_OBJ) return NULL;
    for (int i = 0; i < obj->n; i++)
        if (strcmp(obj->keys[i], key) == 0) return obj->items[i];
    return NULL;
}
static const char *get_str(const struct jv *obj, const char *key) {
    struct jv *v = get(obj, key);
    return v && v->type == J_STR ? v->str : NULL;
}

Test(json_validator, accepts_json_and_refuses_the_rest) {
    const char *good[] = {"{}", "[]", " {\"a\" : [1, -2.5e3, true, null, \"x\\u0041\\n\"]} ", "0", "\"\""};
    const char *bad[] = {"", "{", "[1,]", "{\"a\":1,}", "01", "1.", "\"a\nb\"", "[1 2]", "{a:1}",
                         "\"\\x\"", "{} {}", "nul", "-", "[\"abc]"};
    for (size_t i = 0; i < sizeof good / sizeof *good; i++) {
        struct jv *v = parse_json(good[i]);
        cr_expect_not_null(v, "refused valid JSON: %s", good[i]);
        jv_free(v);
    }
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        struct jv *v = parse_json(bad[i]);
        cr_expect_null(v, "accepted invalid JSON: %s", bad[i]);
        jv_free(v);
    }
}

/* ---- helpers ---- */

static char dir[64], path[128];

static void make_dir(void) {
    strcpy(dir, "/tmp/ns_trace_XXXXXX");
    cr_assert_not_null(mkdtemp(dir));
    snprintf(path, sizeof path, "%s/run.json", dir);
}
static void remove_dir(void) {
    char p[160];
    unlink(path);
    snprintf(p, sizeof p, "%s.tmp", path);
    unlink(p);
    rmdir(dir);
}

/* Reads and parses the trace file; checks the top-level shape every trace has. */
static struct jv *load_trace(const char *p) {
    FILE *f = fopen(p, "rb");
    cr_assert_not_null(f, "the trace file %s was not written", p);
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    rewind(f);
    char *text = malloc((size_t)len + 1);
    cr_assert_eq(fread(text, 1, (size_t)len, f), (size_t)len);
    text[len] = 0;
    fclose(f);
    struct jv *root = parse_json(text);
    cr_assert_not_null(root, "the trace is not valid JSON; it begins: %.200s", text);
    free(text);
    cr_assert(get(root, "traceEvents") && get(root, "traceEvents")->type == J_ARR);
    cr_expect_str_eq(get_str(root, "displayTimeUnit"), "ms");
    cr_assert(get(root, "otherData") && get(root, "otherData")->type == J_OBJ);
    return root;
}

static int count_ph(const struct jv *root, const char *ph) {
    const struct jv *ev = get(root, "traceEvents");
    int n = 0;
    for (int i = 0; i < ev->n; i++) n += strcmp(get_str(ev->items[i], "ph"), ph) == 0;
    return n;
}

/* ---- tests ---- */

TestSuite(trace, .init = make_dir, .fini = remove_dir);

#define THREADS 4
#define SPANS 20000

struct worker_arg { struct trace *tr; int tid; };

static void *record(void *p) {
    struct worker_arg *a = p;
    char name[32];
    snprintf(name, sizeof name, "worker %d", a->tid);
    trace_thread_name(a->tr, a->tid, name);
    for (int i = 0; i < SPANS; i++) {
        int64_t t = os_now_ns();
        trace_span(a->tr, a->tid, i % 2 ? "decode" : "read", "loader", t, os_now_ns() - t);
        if (i % 10 == 0) trace_counter(a->tr, "ring occupancy", t, i % 5);
    }
    return NULL;
}

Test(trace, four_threads_at_once_give_a_valid_complete_file) {
    struct trace *tr = trace_open(path);
    cr_assert_not_null(tr, "%s", err_get());
    trace_thread_name(tr, 0, "trainer");
    pthread_t th[THREADS];
    struct worker_arg args[THREADS];
    for (int i = 0; i < THREADS; i++) {
        args[i] = (struct worker_arg){tr, i + 1};
        cr_assert_eq(pthread_create(&th[i], NULL, record, &args[i]), 0);
    }
    for (int i = 0; i < 100; i++) trace_span(tr, 0, "compute", "train", os_now_ns(), 1000);
    for (int i = 0; i < THREADS; i++) pthread_join(th[i], NULL);
    cr_assert_eq(access(path, F_OK), -1, "the trace appeared before trace_close");
    cr_assert_eq(trace_close(tr), 0, "%s", err_get());

    struct jv *root = load_trace(path);
    cr_expect_eq(count_ph(root, "X"), THREADS * SPANS + 100);
    cr_expect_eq(count_ph(root, "C"), THREADS * SPANS / 10);
    cr_expect_eq(count_ph(root, "M"), 1 + 1 + THREADS); /* process name, trainer, workers */
    int spans_of[THREADS + 1] = {0}, named[THREADS + 1] = {0};
    const struct jv *ev = get(root, "traceEvents");
    for (int i = 0; i < ev->n; i++) {
        const struct jv *e = ev->items[i];
        const char *ph = get_str(e, "ph");
        int tid = (int)get(e, "tid")->num;
        cr_assert(tid >= 0 && tid <= THREADS, "event %d has tid %d", i, tid);
        cr_assert(get(e, "pid") && get(e, "name"), "event %d lacks pid or name", i);
        if (strcmp(ph, "X") == 0) {
            cr_assert(get(e, "ts") && get(e, "ts")->type == J_NUM, "span %d has no ts", i);
            cr_assert(get(e, "dur")->type == J_NUM && get(e, "dur")->num >= 0, "span %d: duration %g", i,
                      get(e, "dur")->num);
            spans_of[tid]++;
        } else if (strcmp(ph, "C") == 0) {
            cr_assert_eq(get(get(e, "args"), "value")->type, J_NUM);
        } else if (strcmp(get_str(e, "name"), "thread_name") == 0) {
            char want[32];
            snprintf(want, sizeof want, tid ? "worker %d" : "trainer", tid);
            cr_expect_str_eq(get_str(get(e, "args"), "name"), want);
            named[tid]++;
        }
    }
    for (int t = 0; t <= THREADS; t++) {
        cr_expect_eq(spans_of[t], t ? SPANS : 100, "thread %d", t);
        cr_expect_eq(named[t], 1, "thread %d named %d times", t, named[t]);
    }
    const struct jv *other = get(root, "otherData");
    cr_expect_eq(get(other, "dropped_events")->num, 0);
    cr_expect_eq(get(other, "events")->num, THREADS * SPANS + THREADS * SPANS / 10 + 100 + 1 + THREADS);
    jv_free(root);
    char tmp[160];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    cr_expect_neq(access(tmp, F_OK), 0, "the temp file is left behind");
}

Test(trace, times_are_microseconds_and_names_are_escaped) {
    struct trace *tr = trace_open(path);
    cr_assert_not_null(tr, "%s", err_get());
    const char *odd = "a \"quoted\" \\ name\twith\nnewline";
    char long_utf8[64] = "";
    for (int i = 0; i < 20; i++) strcat(long_utf8, "\xc3\xa9"); /* "é" x 20: 40 bytes */
    trace_thread_name(tr, 1, odd);
    trace_thread_name(tr, 2, long_utf8);
    int64_t t = os_now_ns();
    trace_span(tr, 1, odd, "c\"at", t, 2500);
    trace_span(tr, 1, "later", "c", t + 1500, -7); /* negative duration -> 0 */
    trace_counter(tr, "nan", t, NAN);
    cr_assert_eq(trace_close(tr), 0, "%s", err_get());

    struct jv *root = load_trace(path);
    const struct jv *ev = get(root, "traceEvents");
    const struct jv *first = NULL, *later = NULL, *counter = NULL;
    int cut_ok = 0;
    for (int i = 0; i < ev->n; i++) {
        const struct jv *e = ev->items[i];
        const char *name = get_str(e, "name");
        if (strcmp(name, odd) == 0) first = e;
        if (strcmp(name, "later") == 0) later = e;
        if (strcmp(name, "nan") == 0) counter = e;
        const char *tname = get_str(get(e, "args"), "name");
        if (tname && get(e, "tid")->num == 2)
            cut_ok = strlen(tname) == 30 && memcmp(tname, long_utf8, 30) == 0; /* 15 whole "é" */
    }
    cr_assert(first && later, "the spans were not found by their names");
    cr_expect_str_eq(get_str(first, "cat"), "c\"at");
    cr_expect_eq(get(first, "dur")->num, 2.5);
    cr_expect_eq(get(later, "dur")->num, 0);
    cr_expect(fabs(get(later, "ts")->num - get(first, "ts")->num - 1.5) < 1e-9, "ts %f vs %f",
              get(later, "ts")->num, get(first, "ts")->num);
    cr_expect(cut_ok, "a long UTF-8 name was not cut at a character boundary");
    /* spans and counters share one time base: both are made relative to trace_open */
    cr_assert_not_null(counter, "the counter was not found");
    cr_expect_eq(get(counter, "ts")->num, get(first, "ts")->num, "counter at %f us, span at %f us, same instant",
                 get(counter, "ts")->num, get(first, "ts")->num);
    cr_expect(get(first, "ts")->num >= 0 && get(first, "ts")->num < 60e6, "ts %f us is not since trace_open",
              get(first, "ts")->num);
    jv_free(root);
}

Test(trace, past_the_cap_events_are_counted_and_reported) {
    struct trace *tr = trace_open_max(path, 10);
    cr_assert_not_null(tr, "%s", err_get());
    for (int i = 0; i < 25; i++) trace_span(tr, 0, "step", "train", os_now_ns(), 10);
    trace_thread_name(tr, 0, "trainer"); /* after the cap: names are still kept */
    cr_expect_eq(trace_dropped_count(tr), 15);
    cr_expect_eq(trace_event_count(tr), 11);
    cr_assert_eq(trace_close(tr), 0, "%s", err_get());
    struct jv *root = load_trace(path);
    cr_expect_eq(count_ph(root, "X"), 10);
    cr_expect_eq(count_ph(root, "M"), 2);
    const struct jv *other = get(root, "otherData");
    cr_expect_eq(get(other, "dropped_events")->num, 15);
    cr_expect(get_str(other, "note") && strstr(get_str(other, "note"), "15"), "no note on the drop");
    jv_free(root);
}

Test(trace, a_null_tracer_does_nothing) {
    trace_span(NULL, 0, "x", "y", 0, 1);
    trace_counter(NULL, "x", 0, 1);
    trace_thread_name(NULL, 0, "x");
    cr_expect_eq(trace_event_count(NULL), 0);
    cr_expect_eq(trace_dropped_count(NULL), 0);
    cr_expect_eq(trace_close(NULL), 0);
    cr_expect_gt(os_now_ns(), 0);
}

Test(trace, an_unwritable_path_fails_at_open) {
    cr_expect_null(trace_open("/nonexistent-dir/run.json"));
    cr_expect(strstr(err_get(), "/nonexistent-dir/run.json") && strstr(err_get(), "cannot be written") &&
              strstr(err_get(), "No such file"), "message: %s", err_get());
    /* root ignores permission bits; a path under a regular file fails for everyone */
    char plain[160], under[200];
    snprintf(plain, sizeof plain, "%s/plain", dir);
    FILE *f = fopen(plain, "w");
    fclose(f);
    snprintf(under, sizeof under, "%s/run.json", plain);
    cr_expect_null(trace_open(under));
    cr_expect(strstr(err_get(), "Not a directory"), "message: %s", err_get());
    cr_expect_null(trace_open(dir));
    cr_expect(strstr(err_get(), "is a directory"), "message: %s", err_get());
    unlink(plain);
}
