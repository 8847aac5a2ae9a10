/* trace.c — Chrome trace-event JSON (see trace.h and the format's spec, "Trace Event
 * Format", for the meaning of ph/ts/dur/pid/tid). */
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "error.h"
#include "os.h"
#include "trace.h"

#define TRACE_CAT_LEN 16
#define CHUNK_EVENTS 4096 /* events are stored in fixed chunks: appending never moves one */

struct trace_event {
    int64_t t_ns;      /* since trace_open */
    int64_t dur_ns;    /* X only */
    double value;      /* C only */
    int32_t tid;
    char ph;           /* 'X', 'C' or 'M' */
    char name[TRACE_NAME_LEN];
    char cat[TRACE_CAT_LEN];
};

struct trace {
    pthread_mutex_t lock;
    char path[PATH_MAX], tmp[PATH_MAX];
    FILE *f;               /* PATH.tmp, opened by trace_open so a bad path fails early */
    int64_t t0_ns;
    struct trace_event **chunks;
    size_t n_chunks, cap_chunks;
    size_t n;              /* events stored */
    size_t n_capped;       /* spans and counters stored: what max_events limits */
    size_t max_events, dropped;
};

struct trace *trace_open_max(const char *path, size_t max_events) {
    struct stat sb;
    if (stat(path, &sb) == 0 && S_ISDIR(sb.st_mode)) {
        err_set("trace file %s is a directory. HINT: give --trace a file name", path);
        return NULL;
    }
    struct trace *tr = calloc(1, sizeof *tr);
    if (!tr) { err_set("out of host memory for the tracer"); return NULL; }
    if ((size_t)snprintf(tr->path, sizeof tr->path, "%s", path) >= sizeof tr->path ||
        (size_t)snprintf(tr->tmp, sizeof tr->tmp, "%s.tmp", path) >= sizeof tr->tmp) {
        free(tr);
        err_set("trace file path is too long: %.60s...", path);
        return NULL;
    }
    unlink(tr->tmp); /* a stale temp from a killed run; "wx" then makes a fresh file */
    tr->f = fopen(tr->tmp, "wx");
    if (!tr->f) {
        int e = errno;
        err_set("trace file %s cannot be written: creating %s failed: %s. HINT: create the "
                "directory or choose another --trace path", path, tr->tmp, strerror(e));
        free(tr);
        return NULL;
    }
    pthread_mutex_init(&tr->lock, NULL);
    tr->max_events = max_events;
    tr->t0_ns = os_now_ns();
    return tr;
}

struct trace *trace_open(const char *path) { return trace_open_max(path, TRACE_MAX_EVENTS); }

/* Copies s, cut to fit, at a UTF-8 character boundary so the JSON stays valid. */
static void copy_name(char *dst, size_t len, const char *s) {
    if (!s) s = "";
    size_t n = strnlen(s, len - 1);
    if (s[n] != 0)
        while (n > 0 && ((unsigned char)s[n] & 0xC0) == 0x80) n--; /* a continuation byte */
    memcpy(dst, s, n);
    dst[n] = 0;
}

/* Room for one more event, or NULL when it must be dropped. Caller holds the lock.
 * Thread names are few and make the rest readable, so the cap doesn't apply to them. */
static struct trace_event *new_event(struct trace *tr, bool capped) {
    if (capped && tr->n_capped >= tr->max_events) goto drop;
    if (tr->n == tr->n_chunks * CHUNK_EVENTS) {
        if (tr->n_chunks == tr->cap_chunks) {
            size_t cap = tr->cap_chunks ? 2 * tr->cap_chunks : 16;
            struct trace_event **p = realloc(tr->chunks, cap * sizeof *p);
            if (!p) goto drop;
            tr->chunks = p;
            tr->cap_chunks = cap;
        }
        struct trace_event *chunk = malloc(CHUNK_EVENTS * sizeof *chunk);
        if (!chunk) goto drop;
        tr->chunks[tr->n_chunks++] = chunk;
    }
    struct trace_event *e = &tr->chunks[tr->n / CHUNK_EVENTS][tr->n % CHUNK_EVENTS];
    tr->n++;
    if (capped) tr->n_capped++;
    memset(e, 0, sizeof *e);
    return e;
drop:
    tr->dropped++;
    return NULL;
}

void trace_span(struct trace *tr, int tid, const char *name, const char *cat, int64_t start_ns,
                int64_t dur_ns) {
    if (!tr) return;
    pthread_mutex_lock(&tr->lock);
    struct trace_event *e = new_event(tr, true);
    if (e) {
        e->ph = 'X';
        e->tid = tid;
        e->t_ns = start_ns - tr->t0_ns;
        e->dur_ns = dur_ns > 0 ? dur_ns : 0;
        copy_name(e->name, sizeof e->name, name);
        copy_name(e->cat, sizeof e->cat, cat);
    }
    pthread_mutex_unlock(&tr->lock);
}

void trace_counter(struct trace *tr, const char *name, int64_t t_ns, double value) {
    if (!tr) return;
    pthread_mutex_lock(&tr->lock);
    struct trace_event *e = new_event(tr, true);
    if (e) {
        e->ph = 'C';
        e->t_ns = t_ns - tr->t0_ns;
        e->value = value;
        copy_name(e->name, sizeof e->name, name);
    }
    pthread_mutex_unlock(&tr->lock);
}

void trace_thread_name(struct trace *tr, int tid, const char *name) {
    if (!tr) return;
    pthread_mutex_lock(&tr->lock);
    struct trace_event *e = new_event(tr, false);
    if (e) {
        e->ph = 'M';
        e->tid = tid;
        copy_name(e->name, sizeof e->name, name);
    }
    pthread_mutex_unlock(&tr->lock);
}

void trace_counter_max(struct trace *tr, const char *name, double max) {
    if (!tr) return;
    pthread_mutex_lock(&tr->lock);
    struct trace_event *e = new_event(tr, false);  /* metadata, like a thread name: never dropped */
    if (e) {
        e->ph = 'R';
        e->value = max;
        copy_name(e->name, sizeof e->name, name);
    }
    pthread_mutex_unlock(&tr->lock);
}

size_t trace_event_count(struct trace *tr) {
    if (!tr) return 0;
    pthread_mutex_lock(&tr->lock);
    size_t n = tr->n;
    pthread_mutex_unlock(&tr->lock);
    return n;
}

size_t trace_dropped_count(struct trace *tr) {
    if (!tr) return 0;
    pthread_mutex_lock(&tr->lock);
    size_t n = tr->dropped;
    pthread_mutex_unlock(&tr->lock);
    return n;
}

size_t trace_for_each(struct trace *tr, void (*fn)(const struct trace_record *r, void *ctx), void *ctx) {
    if (!tr) return 0;
    pthread_mutex_lock(&tr->lock);
    size_t n = tr->n;
    for (size_t i = 0; i < n; i++) {
        const struct trace_event *e = &tr->chunks[i / CHUNK_EVENTS][i % CHUNK_EVENTS];
        struct trace_record r = {e->ph, e->tid, e->t_ns, e->dur_ns, e->value, e->name, e->cat};
        fn(&r, ctx);
    }
    pthread_mutex_unlock(&tr->lock);
    return n;
}

/* ---- writing the file ---- */

static void put_string(FILE *f, const char *s) {
    fputc('"', f);
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') fprintf(f, "\\%c", c);
        else if (c < 0x20) fprintf(f, "\\u%04x", c);
        else fputc(c, f);
    }
    fputc('"', f);
}

/* Nanoseconds as microseconds with three decimals, in integer arithmetic so nothing rounds. */
static void put_us(FILE *f, int64_t ns) {
    uint64_t a = ns < 0 ? -(uint64_t)ns : (uint64_t)ns;
    fprintf(f, "%s%" PRIu64 ".%03" PRIu64, ns < 0 ? "-" : "", a / 1000, a % 1000);
}

static void put_event(FILE *f, const struct trace_event *e) {
    /* a counter's maximum is metadata in the file: an "M" event viewers skip */
    fprintf(f, ",\n{\"ph\":\"%c\",\"pid\":1,\"tid\":%" PRId32, e->ph == 'R' ? 'M' : e->ph, e->tid);
    switch (e->ph) {
    case 'X':
        fputs(",\"ts\":", f);
        put_us(f, e->t_ns);
        fputs(",\"dur\":", f);
        put_us(f, e->dur_ns);
        fputs(",\"name\":", f);
        put_string(f, e->name);
        fputs(",\"cat\":", f);
        put_string(f, e->cat);
        break;
    case 'C':
        fputs(",\"ts\":", f);
        put_us(f, e->t_ns);
        fputs(",\"name\":", f);
        put_string(f, e->name);
        /* JSON has no NaN or infinity */
        fprintf(f, ",\"args\":{\"value\":%.17g}", isfinite(e->value) ? e->value : 0.0);
        break;
    case 'M':
        fputs(",\"name\":\"thread_name\",\"args\":{\"name\":", f);
        put_string(f, e->name);
        fputc('}', f);
        break;
    case 'R':
        fputs(",\"name\":\"counter_max\",\"args\":{\"name\":", f);
        put_string(f, e->name);
        fprintf(f, ",\"value\":%.17g}", isfinite(e->value) ? e->value : 0.0);
        break;
    }
    fputc('}', f);
}

static void write_json(struct trace *tr) {
    FILE *f = tr->f;
    fputs("{\"traceEvents\":[\n", f);
    fputs("{\"ph\":\"M\",\"pid\":1,\"tid\":0,\"name\":\"process_name\",\"args\":{\"name\":\"nostall\"}}", f);
    for (size_t i = 0; i < tr->n; i++) put_event(f, &tr->chunks[i / CHUNK_EVENTS][i % CHUNK_EVENTS]);
    fprintf(f, "\n],\n\"displayTimeUnit\":\"ms\",\n\"otherData\":{\"tool\":\"nostall\",\"events\":%zu,"
            "\"dropped_events\":%zu,\"max_events\":%zu", tr->n, tr->dropped, tr->max_events);
    if (tr->dropped)
        fprintf(f, ",\"note\":\"the event buffer was full: the last %zu spans and counters are "
                "missing\"", tr->dropped);
    fputs("}}\n", f);
}

int trace_close(struct trace *tr) {
    if (!tr) return 0;
    write_json(tr);
    int rc = 0, e = 0;
    if (fflush(tr->f) != 0 || ferror(tr->f)) { rc = -1; e = errno; }
    if (fclose(tr->f) != 0 && !rc) { rc = -1; e = errno; }
    if (rc)
        err_set("writing trace file %s failed: %s. HINT: free disk space or choose another --trace "
                "path", tr->tmp, strerror(e));
    else if (rename(tr->tmp, tr->path) != 0) {
        e = errno;
        rc = err_set("renaming %s over trace file %s failed: %s", tr->tmp, tr->path, strerror(e));
    }
    if (rc) unlink(tr->tmp);
    for (size_t i = 0; i < tr->n_chunks; i++) free(tr->chunks[i]);
    free(tr->chunks);
    pthread_mutex_destroy(&tr->lock);
    free(tr);
    return rc;
}
