/* config.c — the config's INI parser (see config.h); the rows of its keys are in schema.c.
 *
 * Everything below is driven by cfg_keys[]: one row per key. Text is never copied into
 * fixed buffers without a length check; the parser works on (pointer, length) slices
 * of the input, so any byte sequence either parses or yields an error message. */
#include <assert.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "error.h"
#include "rng.h"
#include "schema.h"

/* A config file bigger than this is almost surely the wrong file. */
#define CFG_FILE_MAX (1u << 20)

/* ---- text helpers ---------------------------------------------------------- */

/* A piece of the input: not NUL-terminated. */
struct slice {
    const char *p;
    size_t n;
};

static struct slice slice_of(const char *z) { return (struct slice){ z, strlen(z) }; }

static bool is_blank(char c) { return c == ' ' || c == '\t'; }

static struct slice trim(struct slice s) {
    while (s.n && is_blank(s.p[0])) s.p++, s.n--;
    while (s.n && is_blank(s.p[s.n - 1])) s.n--;
    return s;
}

static bool slice_eq(struct slice s, const char *z) {
    return strlen(z) == s.n && memcmp(s.p, z, s.n) == 0;
}

static char lower(char c) { return c >= 'A' && c <= 'Z' ? (char)(c - 'A' + 'a') : c; }

static bool slice_eq_nocase(struct slice s, const char *z) {
    if (strlen(z) != s.n) return false;
    for (size_t i = 0; i < s.n; i++)
        if (lower(s.p[i]) != z[i]) return false;
    return true;
}

/* The index of the first `c` in s, or s.n. */
static size_t find_char(struct slice s, char c) {
    const char *at = s.n ? memchr(s.p, c, s.n) : NULL;
    return at ? (size_t)(at - s.p) : s.n;
}

/* User text echoed in a message, cut to a readable length. */
#define SHOWN_CAP 72
static const char *shown(struct slice s, char buf[SHOWN_CAP]) {
    size_t keep = s.n < SHOWN_CAP ? s.n : SHOWN_CAP - 4; /* room for "..." and NUL */
    memcpy(buf, s.p, keep);
    strcpy(buf + keep, keep < s.n ? "..." : "");
    return buf;
}

/* Appends to a NUL-terminated buffer of `cap` bytes, cutting what doesn't fit. */
NS_PRINTF(3, 4) static void append(char *buf, size_t cap, const char *fmt, ...) {
    size_t used = strlen(buf);
    if (used + 1 >= cap) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf + used, cap - used, fmt, ap);
    va_end(ap);
}

/* Levenshtein distance, but only as far as the caller cares: anything above 2
 * comes back as 3, which also bounds the work on a very long misspelling. */
static int edit_distance(struct slice a, const char *b) {
    enum { FAR = 3, LEN = 64 };
    size_t bn = strlen(b);
    if (a.n > bn + 2 || bn > a.n + 2 || bn >= LEN) return FAR;
    int prev[LEN], cur[LEN];
    for (size_t j = 0; j <= bn; j++) prev[j] = (int)j;
    for (size_t i = 1; i <= a.n; i++) {
        cur[0] = (int)i;
        for (size_t j = 1; j <= bn; j++) {
            int sub = prev[j - 1] + (a.p[i - 1] != b[j - 1]);
            int del = prev[j] + 1, ins = cur[j - 1] + 1;
            cur[j] = sub < del ? (sub < ins ? sub : ins) : (del < ins ? del : ins);
        }
        memcpy(prev, cur, (bn + 1) * sizeof prev[0]);
    }
    return prev[bn] > FAR ? FAR : prev[bn];
}

/* ---- the table ----------------------------------------------------------- */

/* The table's spelling of section `name`, or NULL. */
static const char *find_section(struct slice name) {
    for (size_t i = 0; i < CFG_N_KEYS; i++)
        if (slice_eq(name, cfg_keys[i].section)) return cfg_keys[i].section;
    return NULL;
}

/* section NULL: any section. */
static const struct key_spec *find_key(const char *section, struct slice name) {
    for (size_t i = 0; i < CFG_N_KEYS; i++)
        if ((!section || !strcmp(cfg_keys[i].section, section)) && slice_eq(name, cfg_keys[i].name))
            return &cfg_keys[i];
    return NULL;
}

static const struct key_spec *find_dotted(const char *dotted) {
    struct slice all = slice_of(dotted);
    size_t dot = find_char(all, '.');
    if (dot == all.n) return NULL;
    const char *section = find_section((struct slice){ all.p, dot });
    return section ? find_key(section, (struct slice){ all.p + dot + 1, all.n - dot - 1 }) : NULL;
}

/* The key of `section` (or of any section, if NULL) nearest to `name`, within 2 edits. */
static const struct key_spec *closest_key(const char *section, struct slice name) {
    const struct key_spec *best = NULL;
    int best_d = 3;
    for (size_t i = 0; i < CFG_N_KEYS; i++) {
        if (section && strcmp(cfg_keys[i].section, section)) continue;
        int d = edit_distance(name, cfg_keys[i].name);
        if (d < best_d) best = &cfg_keys[i], best_d = d;
    }
    return best;
}

static const char *closest_section(struct slice name) {
    const char *best = NULL;
    int best_d = 3;
    for (size_t i = 0; i < CFG_N_KEYS; i++) {
        int d = edit_distance(name, cfg_keys[i].section);
        if (d < best_d) best = cfg_keys[i].section, best_d = d;
    }
    return best;
}

static bool first_of_section(size_t i) {
    return i == 0 || strcmp(cfg_keys[i].section, cfg_keys[i - 1].section) != 0;
}

static void list_sections(char *buf, size_t cap) {
    for (size_t i = 0; i < CFG_N_KEYS; i++)
        if (first_of_section(i)) append(buf, cap, "%s[%s]", i ? ", " : "", cfg_keys[i].section);
}

static void list_keys(const char *section, char *buf, size_t cap) {
    bool first = true;
    for (size_t i = 0; i < CFG_N_KEYS; i++)
        if (!strcmp(cfg_keys[i].section, section)) {
            append(buf, cap, "%s%s", first ? "" : ", ", cfg_keys[i].name);
            first = false;
        }
}

static void list_names(const char *const *names, char *buf, size_t cap) {
    for (int i = 0; names[i]; i++) append(buf, cap, "%s%s", i ? ", " : "", names[i]);
}

static bool is_list(const struct key_spec *k) {
    return k->type == T_INT_LIST || k->type == T_FLOAT_LIST;
}

/* "in 1..64", "> 0 and <= 10" */
static void describe_range(const struct key_spec *k, char *buf, size_t cap) {
    bool is_int = k->type == T_INT || k->type == T_INT_LIST;
    if (is_int) {
        snprintf(buf, cap, "in %lld..%lld", (long long)k->min, (long long)k->max);
    } else if (!(k->flags & (MIN_OPEN | MAX_OPEN))) {
        snprintf(buf, cap, "in %g..%g", k->min, k->max);
    } else {
        snprintf(buf, cap, "%s %g and %s %g", k->flags & MIN_OPEN ? ">" : ">=", k->min,
                 k->flags & MAX_OPEN ? "<" : "<=", k->max);
    }
}

int cfg_key_range(int i, struct cfg_range *out) {
    if (i < 0 || (size_t)i >= CFG_N_KEYS) return -1;
    const struct key_spec *k = &cfg_keys[i];
    snprintf(out->key, sizeof out->key, "%s.%s", k->section, k->name);
    out->is_int = k->type == T_INT || k->type == T_INT_LIST;
    out->is_list = is_list(k);
    out->min = k->min;
    out->max = k->max;
    out->min_open = k->flags & MIN_OPEN;
    out->max_open = k->flags & MAX_OPEN;
    return k->type == T_INT || k->type == T_FLOAT || is_list(k);
}

static void *field(struct config *cfg, const struct key_spec *k) {
    return (char *)cfg + k->offset;
}

static const void *cfield(const struct config *cfg, const struct key_spec *k) {
    return (const char *)cfg + k->offset;
}

/* ---- values -------------------------------------------------------------- */

/* Both return false on anything that isn't entirely a number: no spaces, no hex,
 * no "inf"/"nan", no trailing junk (strtoll and strtod alone would allow those). */
static bool parse_int(struct slice s, long long *out, bool *overflow) {
    char buf[32];
    *overflow = false;
    size_t start = s.n && (s.p[0] == '-' || s.p[0] == '+');
    if (start == s.n) return false;
    for (size_t i = start; i < s.n; i++)
        if (!(s.p[i] >= '0' && s.p[i] <= '9')) return false;
    if (s.n >= sizeof buf) {
        *overflow = true;
        return false;
    }
    memcpy(buf, s.p, s.n);
    buf[s.n] = 0;
    errno = 0;
    *out = strtoll(buf, NULL, 10);
    *overflow = errno == ERANGE;
    return !*overflow;
}

static bool parse_double(struct slice s, double *out) {
    char buf[64];
    if (s.n == 0 || s.n >= sizeof buf) return false;
    bool digit = false;
    for (size_t i = 0; i < s.n; i++) {
        char c = s.p[i];
        if (c >= '0' && c <= '9') digit = true;
        else if (c != '.' && c != '-' && c != '+' && c != 'e' && c != 'E') return false;
    }
    if (!digit) return false;
    memcpy(buf, s.p, s.n);
    buf[s.n] = 0;
    char *end;
    *out = strtod(buf, &end);
    return *end == 0 && isfinite(*out);
}

static bool in_range(const struct key_spec *k, double v) {
    bool lo = k->flags & MIN_OPEN ? v > k->min : v >= k->min;
    bool hi = k->flags & MAX_OPEN ? v < k->max : v <= k->max;
    return lo && hi;
}

/* One number (a scalar, or entry `entry` of a list, 0 for a scalar): checked, and
 * returned as a double (exact for every int the table allows). */
static int parse_number(const struct key_spec *k, struct slice s, int entry, const char *where,
                        double *out) {
    char b1[SHOWN_CAP], range[96], what[48] = "";
    bool is_int = k->type == T_INT || k->type == T_INT_LIST;
    if (entry) snprintf(what, sizeof what, "entry %d: ", entry);
    describe_range(k, range, sizeof range);
    if (is_int) {
        long long v;
        bool overflow;
        if (!parse_int(s, &v, &overflow)) {
            if (overflow)
                return err_set("%s: %s.%s: %s'%s' is out of range; it must be %s", where,
                               k->section, k->name, what, shown(s, b1), range);
            return err_set("%s: %s.%s: %sexpected an integer, got '%s'; write a whole "
                           "number %s", where, k->section, k->name, what, shown(s, b1), range);
        }
        *out = (double)v;
    } else if (!parse_double(s, out)) {
        return err_set("%s: %s.%s: %sexpected a number, got '%s'; write a finite decimal "
                       "such as 0.5 or 5e-4, %s", where, k->section, k->name, what,
                       shown(s, b1), range);
    }
    if (!in_range(k, *out))
        return err_set("%s: %s.%s: %s'%s' is out of range; it must be %s", where, k->section,
                       k->name, what, shown(s, b1), range);
    return 0;
}

static int parse_list(const struct key_spec *k, struct slice s, const char *where,
                      struct config *cfg) {
    struct cfg_int_list ints = { 0, { 0 } };
    struct cfg_float_list floats = { 0, { 0 } };
    int n = 0;
    while (s.n) {
        size_t comma = find_char(s, ',');
        struct slice item = trim((struct slice){ s.p, comma });
        n++;
        if (n > k->max_n)
            return err_set("%s: %s.%s: more than %d values; give at most %d, comma-separated",
                           where, k->section, k->name, k->max_n, k->max_n);
        if (item.n == 0)
            return err_set("%s: %s.%s: entry %d is empty; remove the extra comma", where,
                           k->section, k->name, n);
        double v;
        if (parse_number(k, item, n, where, &v)) return -1;
        if (k->type == T_INT_LIST) ints.v[n - 1] = (int)v;
        else floats.v[n - 1] = v;
        if (comma == s.n) break;
        s.p += comma + 1, s.n -= comma + 1;
        if (s.n == 0)
            return err_set("%s: %s.%s: ends with a comma; remove it", where, k->section, k->name);
    }
    if (n < k->min_n)
        return err_set("%s: %s.%s: needs %d to %d values, comma-separated, e.g. %s", where,
                       k->section, k->name, k->min_n, k->max_n, k->def);
    if (k->type == T_INT_LIST) {
        ints.n = n;
        memcpy(field(cfg, k), &ints, sizeof ints);
    } else {
        floats.n = n;
        memcpy(field(cfg, k), &floats, sizeof floats);
    }
    return 0;
}

/* Parses `raw` (trimmed, comment removed) as the value of key k and stores it.
 * `where` is "file:line", "--set" or "default". */
static int parse_value(const struct key_spec *k, struct slice raw, const char *where,
                       struct config *cfg) {
    char b1[SHOWN_CAP], b2[160] = "";
    if (raw.n == 0) {
        if (k->type == T_STRING || (is_list(k) && k->min_n == 0))
            return err_set("%s: %s.%s: empty value; write %s = \"\" to leave it empty, or "
                           "delete the line to keep the default (%s)", where, k->section,
                           k->name, k->name, k->def);
        return err_set("%s: %s.%s: empty value; give a value, or delete the line to keep "
                       "the default (%s)", where, k->section, k->name, k->def);
    }
    /* Quotes only delimit: a value can't hold one, so printing can always re-quote. */
    struct slice v = raw;
    if (v.p[0] == '"') {
        if (v.n < 2 || v.p[v.n - 1] != '"')
            return err_set("%s: %s.%s: the quote that opens '%s' is never closed; add a "
                           "closing \"", where, k->section, k->name, shown(raw, b1));
        v.p++, v.n -= 2;
    }
    if (find_char(v, '"') != v.n)
        return err_set("%s: %s.%s: '%s' holds a double quote, which a value can't; remove "
                       "it", where, k->section, k->name, shown(raw, b1));

    void *dst = field(cfg, k);
    switch (k->type) {
    case T_INT:
    case T_FLOAT: {
        double d;
        if (parse_number(k, v, 0, where, &d)) return -1;
        if (k->type == T_INT) *(int *)dst = (int)d;
        else *(double *)dst = d;
        return 0;
    }
    case T_BOOL:
        if (slice_eq_nocase(v, "yes") || slice_eq_nocase(v, "true") || slice_eq(v, "1")) {
            *(bool *)dst = true;
            return 0;
        }
        if (slice_eq_nocase(v, "no") || slice_eq_nocase(v, "false") || slice_eq(v, "0")) {
            *(bool *)dst = false;
            return 0;
        }
        return err_set("%s: %s.%s: expected yes or no, got '%s' (true/false and 1/0 work "
                       "too)", where, k->section, k->name, shown(raw, b1));
    case T_ENUM: {
        int near = -1, near_d = 3;
        for (int i = 0; k->names[i]; i++) {
            if (slice_eq_nocase(v, k->names[i])) {
                memcpy(dst, &i, sizeof i);
                return 0;
            }
            int d = edit_distance(v, k->names[i]);
            if (d < near_d) near = i, near_d = d;
        }
        list_names(k->names, b2, sizeof b2);
        if (near >= 0)
            return err_set("%s: %s.%s: '%s' is not allowed; did you mean '%s'? (one of %s)",
                           where, k->section, k->name, shown(raw, b1), k->names[near], b2);
        return err_set("%s: %s.%s: '%s' is not allowed; expected one of %s", where, k->section,
                       k->name, shown(raw, b1), b2);
    }
    case T_STRING:
        if (v.n >= CFG_STR_MAX)
            return err_set("%s: %s.%s: the value is %zu bytes long, more than the %d allowed; "
                           "shorten it", where, k->section, k->name, v.n, CFG_STR_MAX - 1);
        memset(dst, 0, CFG_STR_MAX);
        memcpy(dst, v.p, v.n);
        return 0;
    case T_INT_LIST:
    case T_FLOAT_LIST:
        return parse_list(k, v, where, cfg);
    }
    return err_set("%s: %s.%s: internal error: unknown key type", where, k->section, k->name);
}

/* Shortest text that reads back as exactly v, so a printed config reloads bit-equal. */
static void format_double(double v, char *buf, size_t cap) {
    for (int prec = 1; prec <= 17; prec++) {
        snprintf(buf, cap, "%.*g", prec, v);
        if (strtod(buf, NULL) == v) return;
    }
}

static bool needs_quotes(const char *s) {
    size_t n = strlen(s);
    return n == 0 || strchr(s, '#') || is_blank(s[0]) || is_blank(s[n - 1]);
}

/* Big enough for any value: a string plus its quotes, or CFG_LIST_MAX numbers. */
#define VALUE_TEXT_MAX (CFG_STR_MAX + 8)

static void format_value(const struct key_spec *k, const struct config *cfg, char *buf,
                         size_t cap) {
    const void *src = cfield(cfg, k);
    char num[32];
    buf[0] = 0;
    switch (k->type) {
    case T_INT:
        snprintf(buf, cap, "%d", *(const int *)src);
        break;
    case T_FLOAT:
        format_double(*(const double *)src, buf, cap);
        break;
    case T_BOOL:
        snprintf(buf, cap, "%s", *(const bool *)src ? "yes" : "no");
        break;
    case T_ENUM: {
        int v;
        memcpy(&v, src, sizeof v);
        int count = 0;
        while (k->names[count]) count++;
        snprintf(buf, cap, "%s", v >= 0 && v < count ? k->names[v] : "?");
        break;
    }
    case T_STRING:
        snprintf(buf, cap, needs_quotes(src) ? "\"%s\"" : "%s", (const char *)src);
        break;
    case T_INT_LIST: {
        const struct cfg_int_list *l = src;
        for (int i = 0; i < l->n; i++) append(buf, cap, "%s%d", i ? "," : "", l->v[i]);
        if (l->n == 0) snprintf(buf, cap, "\"\"");
        break;
    }
    case T_FLOAT_LIST: {
        const struct cfg_float_list *l = src;
        for (int i = 0; i < l->n; i++) {
            format_double(l->v[i], num, sizeof num);
            append(buf, cap, "%s%s", i ? "," : "", num);
        }
        if (l->n == 0) snprintf(buf, cap, "\"\"");
        break;
    }
    }
}

/* ---- lines --------------------------------------------------------------- */

/* Checks a raw line (file line or --set argument) and strips its comment and its
 * surrounding blanks. */
static int clean_line(struct slice *line, const char *where) {
    if (line->n > CFG_LINE_MAX)
        return err_set("%s: the line is %zu bytes long, more than the %d allowed; split or "
                       "shorten it (is this a config file?)", where, line->n, CFG_LINE_MAX);
    for (size_t i = 0; i < line->n; i++) {
        unsigned char c = (unsigned char)line->p[i];
        if ((c < 0x20 && c != '\t') || c == 0x7f)
            return err_set("%s: byte 0x%02x at column %zu is a control character; a config "
                           "file is plain text (is this the right file?)", where, c, i + 1);
    }
    bool quoted = false;
    for (size_t i = 0; i < line->n; i++) {
        if (line->p[i] == '"') quoted = !quoted;
        if (line->p[i] == '#' && !quoted) {
            line->n = i;
            break;
        }
    }
    *line = trim(*line);
    return 0;
}

static int unknown_section(struct slice name, const char *where) {
    char b1[SHOWN_CAP], known[128] = "";
    list_sections(known, sizeof known);
    const char *near = closest_section(name);
    if (near)
        return err_set("%s: [%s]: unknown section; did you mean [%s]? (known: %s)", where,
                       shown(name, b1), near, known);
    return err_set("%s: [%s]: unknown section; the known sections are %s", where,
                   shown(name, b1), known);
}

static int unknown_key(const char *section, struct slice name, const char *where) {
    char b1[SHOWN_CAP], known[400] = "";
    const struct key_spec *near = closest_key(section, name);
    const struct key_spec *elsewhere = find_key(NULL, name);
    if (near && elsewhere)
        return err_set("%s: %s.%s: unknown key; did you mean '%s'? (or move it to [%s], "
                       "which has a key '%s')", where, section, elsewhere->name, near->name,
                       elsewhere->section, elsewhere->name);
    if (near)
        return err_set("%s: %s.%s: unknown key; did you mean '%s'?", where, section,
                       shown(name, b1), near->name);
    if (elsewhere)
        return err_set("%s: %s.%s: unknown key in [%s]; %s belongs in [%s]: move it there",
                       where, section, elsewhere->name, section, elsewhere->name,
                       elsewhere->section);
    near = closest_key(NULL, name);
    if (near)
        return err_set("%s: %s.%s: unknown key; did you mean '%s'? (a key of [%s])", where, section,
                       shown(name, b1), near->name, near->section);
    list_keys(section, known, sizeof known);
    return err_set("%s: %s.%s: unknown key; the keys of [%s] are %s", where, section,
                   shown(name, b1), section, known);
}

/* Sets `section.key = value`. line_of[row] remembers where each key was set (0: not
 * yet) to catch duplicates; NULL for --set, where a later override simply wins. */
static int assign(struct config *cfg, const char *section, struct slice key, struct slice value,
                  const char *where, int *line_of, int line) {
    const struct key_spec *k = find_key(section, key);
    if (!k) return unknown_key(section, key, where);
    size_t row = (size_t)(k - cfg_keys);
    if (line_of && line_of[row])
        return err_set("%s: %s.%s: set twice, on lines %d and %d; keep one of them", where,
                       k->section, k->name, line_of[row], line);
    if (parse_value(k, value, where, cfg)) return -1;
    if (line_of) line_of[row] = line;
    return 0;
}

/* The current section of a file: a name from cfg_keys[], or NULL before the first header. */
static int parse_line(struct config *cfg, struct slice line, const char *where,
                      const char **section, int *line_of, int lineno) {
    char b1[SHOWN_CAP];
    if (clean_line(&line, where)) return -1;
    if (line.n == 0) return 0;
    if (line.p[0] == '[') {
        if (line.p[line.n - 1] != ']')
            return err_set("%s: '%s': a section header is a name in brackets, like [loader], "
                           "alone on its line", where, shown(line, b1));
        struct slice name = trim((struct slice){ line.p + 1, line.n - 2 });
        *section = find_section(name);
        return *section ? 0 : unknown_section(name, where);
    }
    size_t eq = find_char(line, '=');
    if (eq == line.n)
        return err_set("%s: '%s' has no '='; write key = value", where, shown(line, b1));
    struct slice key = trim((struct slice){ line.p, eq });
    struct slice value = trim((struct slice){ line.p + eq + 1, line.n - eq - 1 });
    if (key.n == 0)
        return err_set("%s: '%s' has no key before '='; write key = value", where,
                       shown(line, b1));
    if (!*section) {
        const struct key_spec *k = find_key(NULL, key);
        if (k)
            return err_set("%s: %s: key before any section; put it under [%s]", where,
                           k->name, k->section);
        return err_set("%s: %s: key before any section; start the file with a section "
                       "header such as [data]", where, shown(key, b1));
    }
    return assign(cfg, *section, key, value, where, line_of, lineno);
}

/* ---- checks between keys ------------------------------------------------- */

/* "file:line" of the first of the two keys that was set in the file, else `where`. */
static const char *locate(char *buf, size_t cap, const char *where, const int *line_of,
                          const char *key_a, const char *key_b) {
    const char *names[2] = { key_a, key_b };
    for (int i = 0; i < 2 && line_of; i++) {
        const struct key_spec *k = names[i] ? find_dotted(names[i]) : NULL;
        if (k && line_of[k - cfg_keys]) {
            snprintf(buf, cap, "%s:%d", where, line_of[k - cfg_keys]);
            return buf;
        }
    }
    return where;
}

static int validate(const struct config *cfg, const char *where, const int *line_of) {
    char at[600];
    const struct cfg_data *d = &cfg->data;
    const struct cfg_model *m = &cfg->model;
    if (d->channels != 1 && d->channels != 3)
        return err_set("%s: data.channels: %d channels isn't supported; use 1 (grayscale) or "
                       "3 (RGB)", locate(at, sizeof at, where, line_of, "data.channels", NULL),
                       d->channels);
    if (d->mean.n != d->channels)
        return err_set("%s: data.mean: has %d value%s but data.channels = %d; give one "
                       "value per channel, comma-separated",
                       locate(at, sizeof at, where, line_of, "data.mean", "data.channels"),
                       d->mean.n, d->mean.n == 1 ? "" : "s", d->channels);
    if (d->std.n != d->channels)
        return err_set("%s: data.std: has %d value%s but data.channels = %d; give one "
                       "value per channel, comma-separated",
                       locate(at, sizeof at, where, line_of, "data.std", "data.channels"),
                       d->std.n, d->std.n == 1 ? "" : "s", d->channels);
    /* only a resnet reads widths and blocks: other archs don't care if they disagree */
    if (m->arch == CFG_ARCH_RESNET && m->widths.n != m->blocks.n)
        return err_set("%s: model.blocks: has %d value%s but model.widths has %d; give one "
                       "block count per stage",
                       locate(at, sizeof at, where, line_of, "model.blocks", "model.widths"),
                       m->blocks.n, m->blocks.n == 1 ? "" : "s", m->widths.n);
    if (m->arch == CFG_ARCH_CNN && m->layers[0] == 0)
        return err_set("%s: model.layers: arch = cnn needs a layer spec; set model.layers, "
                       "or pick arch = resnet or mlp",
                       locate(at, sizeof at, where, line_of, "model.layers", "model.arch"));
    return 0;
}

/* ---- public -------------------------------------------------------------- */

void cfg_defaults(struct config *cfg) {
    /* Zeroed first so that unused string and list tails compare equal byte for byte. */
    memset(cfg, 0, sizeof *cfg);
    for (size_t i = 0; i < CFG_N_KEYS; i++) {
        int rc = parse_value(&cfg_keys[i], slice_of(cfg_keys[i].def), "default", cfg);
        assert(rc == 0 && "every default in cfg_keys[] must parse");
        (void)rc;
    }
}

int cfg_validate(const struct config *cfg, const char *where) {
    return validate(cfg, where ? where : "config", NULL);
}

int cfg_load_text(struct config *cfg, const char *text, size_t len, const char *name) {
    if (!name) name = "config";
    if (len > CFG_FILE_MAX)
        return err_set("%s: %zu bytes, more than the %u a config may have; is this the "
                       "right file?", name, len, CFG_FILE_MAX);
    struct config tmp;
    cfg_defaults(&tmp);
    int line_of[CFG_N_KEYS] = { 0 };
    const char *section = NULL;
    struct slice rest = { text, text ? len : 0 };
    /* Editors on Windows may start a UTF-8 file with a byte-order mark. */
    if (rest.n >= 3 && !memcmp(rest.p, "\xEF\xBB\xBF", 3)) rest.p += 3, rest.n -= 3;
    for (int lineno = 1; rest.n; lineno++) {
        size_t nl = find_char(rest, '\n');
        struct slice line = { rest.p, nl };
        if (line.n && line.p[line.n - 1] == '\r') line.n--;
        char where[600];
        snprintf(where, sizeof where, "%s:%d", name, lineno);
        if (parse_line(&tmp, line, where, &section, line_of, lineno)) return -1;
        size_t step = nl < rest.n ? nl + 1 : nl;
        rest.p += step, rest.n -= step;
    }
    if (validate(&tmp, name, line_of)) return -1;
    memcpy(cfg, &tmp, sizeof tmp);
    return 0;
}

int cfg_load(struct config *cfg, const char *path) {
    if (!path) return err_set("cfg_load: no config file given; pass a path such as "
                              "configs/resnet_small.cfg");
    FILE *f = fopen(path, "rb");
    if (!f)
        return err_set("%s: cannot open the config file: %s; check the path (it is relative "
                       "to the current directory)", path, strerror(errno));
    size_t cap = 4096, len = 0;
    char *text = malloc(cap);
    while (text) {
        len += fread(text + len, 1, cap - len, f);
        if (len < cap || len > CFG_FILE_MAX) break;
        char *grown = realloc(text, cap * 2);
        if (!grown) free(text);
        text = grown;
        cap *= 2;
    }
    int read_error = ferror(f) ? errno : 0;
    fclose(f);
    if (!text) return err_set("%s: out of memory while reading the config file", path);
    int rc;
    if (read_error)
        rc = err_set("%s: cannot read the config file: %s; is it a regular file?", path,
                     strerror(read_error));
    else
        rc = cfg_load_text(cfg, text, len, path);
    free(text);
    return rc;
}

int cfg_set(struct config *cfg, const char *assignment) {
    const char *where = "--set";
    char b1[SHOWN_CAP];
    if (!assignment) return err_set("--set: no assignment given; write --set section.key=value");
    struct slice line = slice_of(assignment);
    if (clean_line(&line, where)) return -1;
    size_t eq = find_char(line, '=');
    struct slice lhs = trim((struct slice){ line.p, eq });
    struct slice value = { "", 0 };
    if (eq < line.n) value = trim((struct slice){ line.p + eq + 1, line.n - eq - 1 });
    size_t dot = find_char(lhs, '.');
    if (eq == line.n || dot == lhs.n) {
        const struct key_spec *k = find_key(NULL, lhs);
        char b2[SHOWN_CAP];
        if (k)
            return err_set("--set '%s': write section.key=value, here --set %s.%s=%s",
                           shown(line, b1), k->section, k->name,
                           value.n ? shown(value, b2) : k->def);
        return err_set("--set '%s': expected section.key=value, e.g. --set loader.workers=4",
                       shown(line, b1));
    }
    struct slice sec = trim((struct slice){ lhs.p, dot });
    struct slice key = trim((struct slice){ lhs.p + dot + 1, lhs.n - dot - 1 });
    const char *section = find_section(sec);
    if (!section) return unknown_section(sec, where);
    struct config tmp;
    memcpy(&tmp, cfg, sizeof tmp);
    if (assign(&tmp, section, key, value, where, NULL, 0)) return -1;
    memcpy(cfg, &tmp, sizeof tmp);
    return 0;
}

void cfg_print(const struct config *cfg, FILE *out) {
    char value[VALUE_TEXT_MAX];
    fprintf(out, "# nostall config, resolved: defaults, then the file, then --set\n");
    for (size_t i = 0; i < CFG_N_KEYS; i++) {
        const struct key_spec *k = &cfg_keys[i];
        if (first_of_section(i)) fprintf(out, "%s[%s]\n", i ? "\n" : "", k->section);
        format_value(k, cfg, value, sizeof value);
        fprintf(out, "%-16s = %-18s # %s\n", k->name, value, k->help);
    }
}

static const char *type_name(const struct key_spec *k) {
    switch (k->type) {
    case T_INT: return "int";
    case T_FLOAT: return "float";
    case T_BOOL: return "yes/no";
    case T_ENUM: return "enum";
    case T_STRING: return "string";
    case T_INT_LIST: return "int list";
    case T_FLOAT_LIST: return "float list";
    }
    return "?";
}

void cfg_print_help(FILE *out) {
    char allowed[160];
    for (size_t i = 0; i < CFG_N_KEYS; i++) {
        const struct key_spec *k = &cfg_keys[i];
        if (first_of_section(i)) fprintf(out, "%s[%s]\n", i ? "\n" : "", k->section);
        allowed[0] = 0;
        if (k->type == T_ENUM) {
            list_names(k->names, allowed, sizeof allowed);
        } else if (k->type == T_INT || k->type == T_FLOAT || is_list(k)) {
            if (is_list(k)) snprintf(allowed, sizeof allowed, "%d..%d entries, each ",
                                     k->min_n, k->max_n);
            char range[96];
            describe_range(k, range, sizeof range);
            append(allowed, sizeof allowed, "%s", range);
        }
        fprintf(out, "  %-16s %-10s default %-12s %s%s%s%s\n", k->name, type_name(k), k->def,
                k->help, allowed[0] ? " (" : "", allowed, allowed[0] ? ")" : "");
    }
}

int cfg_format(const struct config *cfg, const char *key, char *buf, size_t len) {
    const struct key_spec *k = key ? find_dotted(key) : NULL;
    if (!k) return err_set("cfg_format: '%s' is not a config key; write section.key",
                           key ? key : "(null)");
    char value[VALUE_TEXT_MAX];
    format_value(k, cfg, value, sizeof value);
    if (len) snprintf(buf, len, "%s", value);
    return 0;
}

const char *cfg_enum_name(const char *key, int value) {
    const struct key_spec *k = key ? find_dotted(key) : NULL;
    if (!k || k->type != T_ENUM || value < 0) return "?";
    for (int i = 0; k->names[i]; i++)
        if (i == value) return k->names[i];
    return "?";
}

bool cfg_equal(const struct config *a, const struct config *b) {
    for (size_t i = 0; i < CFG_N_KEYS; i++) {
        const struct key_spec *k = &cfg_keys[i];
        const void *x = cfield(a, k), *y = cfield(b, k);
        bool same = true;
        switch (k->type) {
        case T_INT:
        case T_ENUM: same = !memcmp(x, y, sizeof(int)); break;
        case T_FLOAT: same = !memcmp(x, y, sizeof(double)); break;
        case T_BOOL: same = *(const bool *)x == *(const bool *)y; break;
        case T_STRING: same = !strcmp(x, y); break;
        case T_INT_LIST: {
            const struct cfg_int_list *p = x, *q = y;
            same = p->n == q->n && !memcmp(p->v, q->v, (size_t)p->n * sizeof p->v[0]);
            break;
        }
        case T_FLOAT_LIST: {
            const struct cfg_float_list *p = x, *q = y;
            same = p->n == q->n && !memcmp(p->v, q->v, (size_t)p->n * sizeof p->v[0]);
            break;
        }
        }
        if (!same) return false;
    }
    return true;
}

/* FNV-1a over "section.key=value\n" of the SHAPE rows: the printed text, not the
 * struct's bytes, so padding and field order don't matter. */
uint64_t cfg_fingerprint(const struct config *cfg) {
    char value[VALUE_TEXT_MAX], line[VALUE_TEXT_MAX + 64];
    uint64_t h = RNG_FNV_START;
    for (size_t i = 0; i < CFG_N_KEYS; i++) {
        const struct key_spec *k = &cfg_keys[i];
        if (!(k->flags & SHAPE)) continue;
        format_value(k, cfg, value, sizeof value);
        int n = snprintf(line, sizeof line, "%s.%s=%s\n", k->section, k->name, value);
        h = rng_fnv1a(h, line, n < (int)sizeof line ? (size_t)n : sizeof line);
    }
    return h;
}
