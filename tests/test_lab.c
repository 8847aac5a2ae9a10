/* test_lab.c — the teaching lab's pieces: SVG output is well-formed XML whatever text
 * and numbers go in; a timeline has one lane per thread and counter and reads back the
 * trace files the tracer writes; the lab's per-step numbers (medians, waiting share,
 * warm-up skipped) are what the spans say; a metrics file's curves have a line per
 * curve and a dot per epoch's number, and a malformed one is a clear error. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "error.h"
#include "os.h"
#include "trace.h"
#include "train.h"
#include "viz.h"

static char dir[64];

static void make_dir(void) {
    mkdir("build", 0755);
    snprintf(dir, sizeof dir, "build/test-lab-XXXXXX");
    cr_assert_not_null(mkdtemp(dir));
}

static void remove_dir(void) {
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    cr_expect_eq(system(cmd), 0);
}

TestSuite(lab, .init = make_dir, .fini = remove_dir, .timeout = 30);

static char *path_in(const char *name) {
    static char p[4][128];
    static int k;
    k = (k + 1) % 4;
    snprintf(p[k], sizeof p[k], "%s/%s", dir, name);
    return p[k];
}

static char *slurp(const char *path) {
    FILE *f = fopen(path, "rb");
    cr_assert_not_null(f, "%s was not written", path);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *s = malloc((size_t)n + 1);
    cr_assert_eq(fread(s, 1, (size_t)n, f), (size_t)n);
    s[n] = 0;
    fclose(f);
    return s;
}

static int count_of(const char *hay, const char *needle) {
    int n = 0;
    for (const char *p = strstr(hay, needle); p; p = strstr(p + 1, needle)) n++;
    return n;
}

/* ---- an XML well-formedness check, enough for what the writer emits ----
 * One root element; every tag closed in order; attribute values quoted; '&' only in
 * the five predefined entities; no '<' in text or attribute values; no control
 * characters; numbers in coordinates never "nan" or "inf". NULL when well-formed,
 * else what is wrong. */
static const char *entity_ok(const char *p) {
    static const char *ents[] = {"&amp;", "&lt;", "&gt;", "&quot;", "&apos;"};
    for (int i = 0; i < 5; i++)
        if (!strncmp(p, ents[i], strlen(ents[i]))) return p + strlen(ents[i]);
    return NULL;
}

static const char *xml_check(const char *s) {
    char stack[64][32];
    int depth = 0, roots = 0;
    const char *p = s;
    if (!strncmp(p, "<?xml", 5)) {
        p = strstr(p, "?>");
        if (!p) return "unterminated XML declaration";
        p += 2;
    }
    while (*p) {
        unsigned char c = (unsigned char)*p;
        if (c < 0x20 && c != '\n' && c != '\t' && c != '\r') return "control character";
        if (c == '&') {
            if (!(p = entity_ok(p))) return "bad entity in text";
            continue;
        }
        if (c == '>') return "stray '>' in text";
        if (c != '<') { p++; continue; }
        p++;
        bool closing = *p == '/';
        if (closing) p++;
        char name[32];
        int n = 0;
        while ((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') || *p == ':') {
            if (n < 31) name[n++] = *p;
            p++;
        }
        name[n] = 0;
        if (!n) return "tag without a name";
        if (closing) {
            if (*p != '>') return "junk in a closing tag";
            p++;
            if (!depth || strcmp(stack[depth - 1], name)) return "closing tag does not match";
            depth--;
            continue;
        }
        for (;;) {
            while (*p == ' ' || *p == '\n') p++;
            if (*p == '>' || (p[0] == '/' && p[1] == '>')) break;
            int an = 0;
            while ((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') || *p == '-' ||
                   *p == ':')
                p++, an++;
            if (!an || *p != '=' || p[1] != '"') return "attribute not name=\"value\"";
            p += 2;
            const char *v = p;
            while (*p && *p != '"') {
                if (*p == '<') return "'<' in an attribute value";
                if (*p == '&') {
                    if (!(p = entity_ok(p))) return "bad entity in an attribute";
                } else {
                    p++;
                }
            }
            if (!*p) return "unterminated attribute value";
            if ((p - v >= 3 && (!strncmp(v, "nan", 3) || !strncmp(v, "inf", 3) || !strncmp(v, "-nan", 4) ||
                                !strncmp(v, "-inf", 4))))
                return "non-finite number in an attribute";
            p++;
        }
        if (!depth && ++roots > 1) return "more than one root element";
        if (*p == '/') { p += 2; continue; }
        p++;
        if (depth == 64) return "nested too deeply";
        snprintf(stack[depth++], sizeof stack[0], "%s", name);
    }
    if (depth) return "unclosed element";
    if (roots != 1) return "no root element";
    return NULL;
}

Test(lab, the_xml_checker_catches_what_it_should) {
    cr_expect_null(xml_check("<?xml version=\"1.0\"?>\n<svg a=\"1\"><g><rect x=\"1\"/></g><text>a &amp; b</text></svg>"));
    cr_expect_not_null(xml_check("<svg><g></svg>"));
    cr_expect_not_null(xml_check("<svg><text>a & b</text></svg>"));
    cr_expect_not_null(xml_check("<svg x=\"nan\"/>"));
    cr_expect_not_null(xml_check("<svg/><svg/>"));
    cr_expect_not_null(xml_check("<svg a=1/>"));
}

/* ---- viz.h: the SVG writer ---- */

Test(lab, svg_escapes_text_and_writes_no_non_finite_numbers) {
    const char *p = path_in("prims.svg");
    struct svg *s = svg_open(p, 200, 100);
    cr_assert_not_null(s, "%s", err_get());
    svg_rect(s, NAN, 1, INFINITY, -5, "#123", "a <b> & \"c\" 'd'");
    svg_rect(s, 1, 2, 3, 4, "red", NULL);
    svg_line(s, 0, 0, NAN, 10, "#000", 1, true);
    double xs[] = {0, 1, NAN}, ys[] = {0, INFINITY, 2};
    svg_polyline(s, 3, xs, ys, "#000", 1);
    svg_text(s, 5, 5, 10, SVG_MIDDLE, "#000", true, "%s %d%%", "x<y & \x01" "ctl", 50);
    cr_assert_eq(svg_close(s), 0, "%s", err_get());
    char *t = slurp(p);
    const char *why = xml_check(t);
    cr_expect_null(why, "not well-formed (%s):\n%s", why, t);
    cr_expect(strstr(t, "x&lt;y &amp;  ctl 50%"), "text not escaped as expected:\n%s", t);
    cr_expect(strstr(t, "&quot;c&quot; &apos;d&apos;"), "tooltip not escaped:\n%s", t);
    cr_expect(strstr(t, "width=\"0.00\""), "a negative or infinite size should become 0:\n%s", t);
    cr_expect_eq(access(path_in("prims.svg.tmp"), F_OK), -1, "the temporary file is left behind");
    free(t);
}

Test(lab, svg_open_fails_clearly_on_a_bad_path) {
    struct svg *s = svg_open("/nonexistent-dir/x.svg", 10, 10);
    cr_expect_null(s);
    cr_expect(strstr(err_get(), "/nonexistent-dir/x.svg"), "message does not name the path: %s", err_get());
}

Test(lab, nice_steps_are_one_two_or_five_times_a_power_of_ten) {
    cr_expect_float_eq(svg_nice_step(1000, 5), 200, 1e-9);
    cr_expect_float_eq(svg_nice_step(37, 6), 5, 1e-9);
    cr_expect_float_eq(svg_nice_step(0.9, 8), 0.1, 1e-12);
    cr_expect_float_eq(svg_nice_step(0, 5), 1, 0);
    cr_expect_float_eq(svg_nice_step(NAN, 5), 1, 0);
    cr_expect_float_eq(svg_nice_step(5e-324, 8), 1, 0, "a step that underflows to 0 would hang a tick loop");
}

Test(lab, the_bar_chart_has_a_bar_pair_per_row_and_its_group_headings) {
    struct svg_bar bars[] = {
        {"cache = none", "workers 0, prefetch 1", 300, 0.4, 0, 0},
        {"cache = none", "workers 2, prefetch 4", 500, 0.02, 470, 540}, /* rounds' spread: a whisker */
        {"cache = packed", "workers 0 & <odd> label", 520, 0.0, 0, 0},
        {"cache = packed", "nothing measured", NAN, NAN, NAN, NAN},
    };
    struct svg_bar_chart c = {"lab", "2 cores, load 1.5", "images/s", "waiting for input", bars, 4};
    const char *p = path_in("bars.svg");
    cr_assert_eq(svg_write_bar_chart(p, &c), 0, "%s", err_get());
    char *t = slurp(p);
    const char *why = xml_check(t);
    cr_expect_null(why, "not well-formed (%s):\n%s", why, t);
    cr_expect_eq(count_of(t, "<title>"), 8, "expected two segments (with tooltips) per bar:\n%s", t);
    cr_expect_eq(count_of(t, ">cache = none<"), 1);
    cr_expect_eq(count_of(t, ">cache = packed<"), 1);
    cr_expect(strstr(t, "workers 0 &amp; &lt;odd&gt; label"));
    cr_expect(strstr(t, "500 (470-540)"), "the spread is written beside its bar:\n%s", t);
    cr_expect_eq(count_of(t, "(470-540)"), 1, "only the bar with a spread has one");
    free(t);
}

/* ---- trace.h: steps and the lab's numbers ---- */

/* A run as the trainer traces it: per step a wait then a compute on the training
 * thread, and each worker's share of the batch. Times in ms. */
static void add_step(struct timeline *tl, double t0, double wait, double compute, int workers) {
    int64_t ms = 1000000;
    cr_assert_eq(timeline_add_span(tl, 0, "wait", "step", (int64_t)(t0 * ms), (int64_t)(wait * ms)), 0);
    cr_assert_eq(timeline_add_span(tl, 0, "compute", "step", (int64_t)((t0 + wait) * ms), (int64_t)(compute * ms)), 0);
    for (int w = 1; w <= workers; w++)
        cr_assert_eq(timeline_add_span(tl, w, "load batch", "loader", (int64_t)((t0 - 5) * ms), 4 * ms), 0);
    cr_assert_eq(timeline_add_counter(tl, "ring slots ready", (int64_t)(t0 * ms), workers), 0);
}

Test(lab, step_stats_give_medians_and_the_waiting_share_after_the_warm_up) {
    struct timeline tl;
    memset(&tl, 0, sizeof tl);
    /* step 0 is a slow warm-up; then waits of 10, 30, 20, 0, 40 ms on 90 ms of compute */
    double waits[] = {500, 10, 30, 20, 0, 40}, t = 100;
    for (int i = 0; i < 6; i++) {
        add_step(&tl, t, waits[i], i ? 90 : 300, 2);
        t += waits[i] + (i ? 90 : 300) + 1;
    }
    cr_expect_eq(timeline_step_count(&tl), 6);
    struct timeline_step_stats st;
    cr_assert_eq(timeline_step_stats(&tl, 1, 0, &st), 0, "%s", err_get());
    cr_expect_eq(st.steps, 5);
    cr_expect_float_eq(st.median_wait_s, 0.020, 1e-9);
    cr_expect_float_eq(st.median_compute_s, 0.090, 1e-9);
    cr_expect_float_eq(st.median_step_s, 0.110, 1e-9);
    cr_expect_float_eq(st.wait_share, 100.0 / 550.0, 1e-9);
    cr_expect_float_eq(st.total_s, 0.550, 1e-9);
    /* a window of two steps */
    cr_assert_eq(timeline_step_stats(&tl, 2, 2, &st), 0);
    cr_expect_eq(st.steps, 2);
    cr_expect_float_eq(st.median_step_s, 0.115, 1e-9, "even count: mean of the middle two");
    /* nothing there */
    cr_expect_eq(timeline_step_stats(&tl, 6, 0, &st), -1);
    cr_expect(strstr(err_get(), "6 training steps"), "%s", err_get());
    timeline_free(&tl);
}

Test(lab, a_step_needs_its_compute_and_spans_may_come_in_any_order) {
    struct timeline tl;
    memset(&tl, 0, sizeof tl);
    int64_t ms = 1000000;
    /* recorded out of order, a worker span in between, and a last wait cut off */
    timeline_add_span(&tl, 0, "compute", "step", 215 * ms, 50 * ms);
    timeline_add_span(&tl, 0, "wait", "step", 0, 10 * ms);
    timeline_add_span(&tl, 1, "compute", "other thread", 20 * ms, 5 * ms);
    timeline_add_span(&tl, 0, "wait", "step", 200 * ms, 15 * ms);
    timeline_add_span(&tl, 0, "compute", "step", 10 * ms, 100 * ms);
    timeline_add_span(&tl, 0, "wait", "step", 300 * ms, 5 * ms);
    cr_expect_eq(timeline_step_count(&tl), 2);
    int64_t start, wait, compute, end;
    cr_assert_eq(timeline_step(&tl, 1, &start, &wait, &compute, &end), 0);
    cr_expect_eq(start, 200 * ms);
    cr_expect_eq(wait, 15 * ms);
    cr_expect_eq(compute, 50 * ms);
    cr_expect_eq(end, 265 * ms);
    cr_expect_eq(timeline_step(&tl, 2, NULL, NULL, NULL, NULL), -1);
    timeline_free(&tl);
}

Test(lab, median_of_odd_even_and_empty) {
    double a[] = {5, 1, 3}, b[] = {4, 1, 3, 2}, c[1];
    cr_expect_float_eq(timeline_median(a, 3), 3, 0);
    cr_expect_float_eq(timeline_median(b, 4), 2.5, 0);
    cr_expect_float_eq(timeline_median(c, 0), 0, 0);
}

/* ---- viz.h and trace.h: drawing and reading traces ---- */

Test(lab, the_timeline_has_a_lane_per_thread_and_counter_and_a_panel_per_run) {
    struct timeline stalled, healthy;
    memset(&stalled, 0, sizeof stalled);
    memset(&healthy, 0, sizeof healthy);
    double t = 10;
    for (int i = 0; i < 8; i++, t += 141) add_step(&stalled, t, 50, 90, 1);
    t = 10;
    for (int i = 0; i < 8; i++, t += 92) add_step(&healthy, t, 1, 90, 2);
    timeline_add_thread(&stalled, 0, "training thread");
    timeline_add_thread(&stalled, 1, "inline loading");
    timeline_add_thread(&healthy, 0, "training thread");
    timeline_add_thread(&healthy, 1, "loader worker 1");
    /* worker 2 left unnamed: its lane is called by its id */
    const struct timeline *tls[] = {&stalled, &healthy};
    const char *titles[] = {"stalled: workers 0", "healthy: workers 2"};
    struct timeline_options o = {.first_step = 2, .steps = 3, .title = "stall & fix", .subtitle = NULL};
    const char *p = path_in("timeline.svg");
    cr_assert_eq(timeline_write_panels(p, 2, tls, titles, &o), 0, "%s", err_get());
    char *s = slurp(p);
    const char *why = xml_check(s);
    cr_expect_null(why, "not well-formed (%s)", why);
    cr_expect_eq(count_of(s, ">training thread<"), 2, "one training-thread lane per panel");
    cr_expect_eq(count_of(s, ">inline loading<"), 1);
    cr_expect_eq(count_of(s, ">loader worker 1<"), 1);
    cr_expect_eq(count_of(s, ">thread 2<"), 1);
    cr_expect_eq(count_of(s, ">ring slots ready (0.."), 2, "one counter lane per panel");
    cr_expect(strstr(s, ">stalled: workers 0<") && strstr(s, ">healthy: workers 2<"));
    cr_expect(strstr(s, ">step 3<") && strstr(s, ">step 5<") && !strstr(s, ">step 6<"),
              "steps 3..5 (counted from 1) should be drawn");
    cr_expect(strstr(s, "median step 140.0 ms"), "stalled panel's median step is 140 ms");
    cr_expect(strstr(s, "<title>wait: 50.00 ms</title>"), "wait spans carry their duration");
    cr_expect(!strstr(s, "own time scale"), "windows of 422 and 275 ms share one scale");
    free(s);
    timeline_free(&stalled);
    timeline_free(&healthy);
}

/* The widest rect whose tooltip is `title` in an SVG, in pixels; 0 when there is none. */
static double widest_titled(const char *svg, const char *title) {
    char needle[128];
    snprintf(needle, sizeof needle, "><title>%s</title>", title);
    double widest = 0;
    for (const char *p = strstr(svg, needle); p; p = strstr(p + 1, needle)) {
        const char *r = p;
        while (r > svg && strncmp(r, "<rect ", 6)) r--;
        const char *w = strstr(r, " width=\"");
        double width = w && w < p ? atof(w + 8) : 0;
        if (width > widest) widest = width;
    }
    return widest;
}

/* A panel much shorter than the longest (the mlp lab's memory-cache row next to its
 * inline row) is drawn on its own time scale, and says so; panels of about the same
 * length keep the shared one (the test above). */
Test(lab, a_much_shorter_panel_gets_its_own_time_scale_said_in_its_header) {
    struct timeline slow, fast, medium;
    memset(&slow, 0, sizeof slow);
    memset(&fast, 0, sizeof fast);
    memset(&medium, 0, sizeof medium);
    double t = 10;
    for (int i = 0; i < 8; i++, t += 141) add_step(&slow, t, 50, 90, 1);
    t = 10;
    for (int i = 0; i < 8; i++, t += 2) add_step(&fast, t, 0.2, 1.5, 2);
    t = 10;
    for (int i = 0; i < 8; i++, t += 60) add_step(&medium, t, 10, 49, 2);
    const struct timeline *tls[] = {&slow, &medium, &fast};
    const char *titles[] = {"slow", "medium", "fast"};
    struct timeline_options o = {.first_step = 2, .steps = 3, .title = "three speeds", .subtitle = NULL};
    const char *p = path_in("scales.svg");
    cr_assert_eq(timeline_write_panels(p, 3, tls, titles, &o), 0, "%s", err_get());
    char *s = slurp(p);
    cr_expect_null(xml_check(s));
    /* slow: steps 3-5 span 2 x 141 + 140 = 422 ms; medium: 179 ms (shared); fast: 5.7 ms */
    cr_expect_eq(count_of(s, ">own time scale: "), 1, "only the fast panel has its own scale");
    cr_expect(strstr(s, ">own time scale: zoomed 74x<"), "422 / 5.7 ms");
    cr_expect(strstr(s, ">1 ms<") && strstr(s, ">400 ms<"), "the fast panel's axis in ms, the others' in 50 ms");
    /* the plot is 880 px wide: the fast compute fills a quarter of it, not 3 px */
    double fast_compute = widest_titled(s, "compute: 1.50 ms"), slow_compute = widest_titled(s, "compute: 90.00 ms");
    cr_expect(fast_compute > 200 && fast_compute < 240, "fast compute drawn %.1f px wide", fast_compute);
    cr_expect(slow_compute > 180 && slow_compute < 195, "slow compute drawn %.1f px wide", slow_compute);
    cr_expect(widest_titled(s, "compute: 49.00 ms") > 95, "the medium panel shares the slow one's scale");
    free(s);
    timeline_free(&slow);
    timeline_free(&fast);
    timeline_free(&medium);
}

/* The ring counter's axis runs to the ring's size when the trace declares it
 * (trace_counter_max), whatever the samples in view reach; the declaration goes
 * through the trace file and the live tracer alike. */
Test(lab, the_ring_counters_axis_runs_to_its_declared_size) {
    struct timeline declared, plain;
    memset(&declared, 0, sizeof declared);
    memset(&plain, 0, sizeof plain);
    for (int i = 0; i < 6; i++) {
        add_step(&declared, 10 + 100 * i, 5, 90, 1);
        add_step(&plain, 10 + 100 * i, 5, 90, 1);
    }
    cr_assert_eq(timeline_add_counter_max(&declared, "ring slots ready", 3), 0);
    cr_assert_eq(timeline_add_counter_max(&declared, "ring slots ready", 4), 0);  /* the later one wins */
    cr_expect_float_eq(timeline_counter_max(&declared, "ring slots ready"), 4, 0);
    cr_expect_float_eq(timeline_counter_max(&declared, "loss"), 0, 0);
    const struct timeline *tls[] = {&declared, &plain};
    const char *p = path_in("ring.svg");
    cr_assert_eq(timeline_write_panels(p, 2, tls, NULL, NULL), 0, "%s", err_get());
    char *s = slurp(p);
    cr_expect_eq(count_of(s, ">ring slots ready (0..4)<"), 1, "the declared ring: 4 slots");
    cr_expect_eq(count_of(s, ">ring slots ready (0..1)<"), 1, "undeclared: the largest sample");
    free(s);
    /* a declared maximum below a sample: the axis still holds the sample */
    cr_assert_eq(timeline_add_counter_max(&plain, "ring slots ready", 0.5), 0);
    cr_assert_eq(timeline_write_panels(p, 1, (const struct timeline *[]){&plain}, NULL, NULL), 0);
    s = slurp(p);
    cr_expect_eq(count_of(s, ">ring slots ready (0..1)<"), 1);
    free(s);
    timeline_free(&declared);
    timeline_free(&plain);

    const char *json = path_in("ring.json");
    struct trace *tr = trace_open(json);
    cr_assert_not_null(tr, "%s", err_get());
    trace_counter_max(tr, "ring slots ready", 8);
    trace_counter(tr, "ring slots ready", os_now_ns(), 2);
    struct timeline live, file;
    cr_assert_eq(timeline_from_trace(&live, tr), 0, "%s", err_get());
    cr_assert_eq(trace_close(tr), 0, "%s", err_get());
    cr_assert_eq(timeline_load_json(&file, json), 0, "%s", err_get());
    cr_expect_float_eq(timeline_counter_max(&live, "ring slots ready"), 8, 0);
    cr_expect_float_eq(timeline_counter_max(&file, "ring slots ready"), 8, 0);
    cr_expect_eq(file.n_counters, 1, "the maximum is no sample");
    cr_expect_eq(file.n_threads, 0, "nor a thread name");
    char *text = slurp(json);
    cr_expect(strstr(text, "{\"ph\":\"M\",\"pid\":1,\"tid\":0,\"name\":\"counter_max\",\"args\":{\"name\":"
                           "\"ring slots ready\",\"value\":8}}"), "%s", text);
    free(text);
    timeline_free(&live);
    timeline_free(&file);
}

Test(lab, a_live_trace_and_its_file_give_the_same_timeline) {
    const char *json = path_in("run.json");
    struct trace *tr = trace_open(json);
    cr_assert_not_null(tr, "%s", err_get());
    trace_thread_name(tr, 0, "training thread");
    trace_thread_name(tr, 1, "loader worker \"1\"");
    int64_t t = os_now_ns();
    for (int i = 0; i < 5; i++) {
        trace_span(tr, 1, "load batch", "loader", t + i * 3000000, 2000000);
        trace_span(tr, 0, "wait", "step", t + i * 3000000, 500000);
        trace_span(tr, 0, "compute", "step", t + i * 3000000 + 500000, 2400000);
        trace_counter(tr, "ring slots ready", t + i * 3000000, i % 3);
    }
    struct timeline live;
    cr_assert_eq(timeline_from_trace(&live, tr), 0, "%s", err_get());
    cr_assert_eq(trace_close(tr), 0, "%s", err_get());
    const char *svg = path_in("run.svg");
    cr_assert_eq(timeline_write_svg(json, svg, NULL), 0, "%s", err_get());

    struct timeline file;
    cr_assert_eq(timeline_load_json(&file, json), 0, "%s", err_get());
    cr_expect_eq(file.n_spans, live.n_spans);
    cr_expect_eq(file.n_counters, live.n_counters);
    cr_expect_eq(file.n_threads, 2);
    for (size_t i = 0; i < live.n_spans && i < file.n_spans; i++) {
        cr_expect_eq(file.spans[i].start_ns, live.spans[i].start_ns, "span %zu starts differ", i);
        cr_expect_eq(file.spans[i].dur_ns, live.spans[i].dur_ns);
        cr_expect_str_eq(file.spans[i].name, live.spans[i].name);
        cr_expect_eq(file.spans[i].tid, live.spans[i].tid);
    }
    cr_expect_str_eq(file.threads[1].name, "loader worker \"1\"");
    struct timeline_step_stats a, b;
    cr_assert_eq(timeline_step_stats(&live, 1, 0, &a), 0);
    cr_assert_eq(timeline_step_stats(&file, 1, 0, &b), 0);
    cr_expect_eq(a.steps, 4);
    cr_expect_float_eq(a.median_step_s, b.median_step_s, 1e-12);
    cr_expect_float_eq(a.wait_share, 0.5 / 2.9, 1e-9);

    char *s = slurp(svg);
    const char *why = xml_check(s);
    cr_expect_null(why, "not well-formed (%s)", why);
    cr_expect(strstr(s, ">training thread<") && strstr(s, ">loader worker &quot;1&quot;<"), "lanes missing");
    free(s);
    timeline_free(&live);
    timeline_free(&file);
}

Test(lab, a_file_that_is_not_a_trace_is_a_clear_error) {
    const char *p = path_in("bad.json");
    const char *cases[] = {"", "{\"traceEvents\":[{\"ph\":\"X\",\"ts\":1,}]}", "[1,2]", "{\"other\":1}",
                           "{\"traceEvents\":[{\"ph\":\"X\",\"name\":\"unterminated}]}"};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        FILE *f = fopen(p, "w");
        fputs(cases[i], f);
        fclose(f);
        struct timeline tl;
        cr_expect_eq(timeline_load_json(&tl, p), -1, "case %zu was accepted", i);
        cr_expect(strstr(err_get(), p), "case %zu: message does not name the file: %s", i, err_get());
    }
    struct timeline tl;
    cr_expect_eq(timeline_load_json(&tl, path_in("missing.json")), -1);
    /* extra keys and unknown events are skipped, escapes decoded */
    FILE *f = fopen(p, "w");
    fputs("{\"displayTimeUnit\":\"ms\",\"traceEvents\":[{\"ph\":\"B\",\"x\":[1,{\"y\":null}]},"
          "{\"ph\":\"X\",\"tid\":3,\"ts\":1.5,\"dur\":2.25,\"name\":\"a\\u0041\\n\",\"cat\":\"c\",\"args\":{}},"
          "{\"ph\":\"M\",\"tid\":3,\"name\":\"thread_name\",\"args\":{\"name\":\"w\"}}],\"otherData\":{\"k\":true}}",
          f);
    fclose(f);
    cr_assert_eq(timeline_load_json(&tl, p), 0, "%s", err_get());
    cr_expect_eq(tl.n_spans, 1);
    cr_expect_eq(tl.spans[0].start_ns, 1500);
    cr_expect_eq(tl.spans[0].dur_ns, 2250);
    cr_expect_str_eq(tl.spans[0].name, "aA\n");
    cr_expect_str_eq(tl.threads[0].name, "w");
    timeline_free(&tl);
}

Test(lab, a_timeline_without_steps_draws_everything) {
    struct timeline tl;
    memset(&tl, 0, sizeof tl);
    timeline_add_span(&tl, 4, "copy h2d", "copy", 1000, 5000000);
    timeline_add_thread(&tl, 4, "copy stream");
    const char *p = path_in("nosteps.svg");
    cr_assert_eq(timeline_write_panels(p, 1, (const struct timeline *[]){&tl}, NULL, NULL), 0, "%s", err_get());
    char *s = slurp(p);
    cr_expect_null(xml_check(s));
    cr_expect(strstr(s, ">copy stream<") && strstr(s, "#8e5ea2"), "the copy lane and its colour");
    free(s);
    timeline_free(&tl);
}

/* The trainer's per-step counters (loss, images/s) get lanes of their own and don't
 * change what the steps are. */
Test(lab, the_trainers_loss_and_rate_counters_get_lanes_and_leave_the_steps_alone) {
    struct timeline plain, counted;
    memset(&plain, 0, sizeof plain);
    memset(&counted, 0, sizeof counted);
    double t = 10;
    for (int i = 0; i < 6; i++, t += 100) {
        add_step(&plain, t, 10, 90, 1);
        add_step(&counted, t, 10, 90, 1);
        cr_assert_eq(timeline_add_counter(&counted, "loss", (int64_t)((t + 100) * 1e6), 2.0 - 0.1 * i), 0);
        cr_assert_eq(timeline_add_counter(&counted, "images/s", (int64_t)((t + 100) * 1e6), 1280), 0);
    }
    struct timeline_step_stats a, b;
    cr_assert_eq(timeline_step_stats(&plain, 2, 0, &a), 0);
    cr_assert_eq(timeline_step_stats(&counted, 2, 0, &b), 0);
    cr_expect_eq(timeline_step_count(&counted), 6);
    cr_expect(a.steps == b.steps && a.median_step_s == b.median_step_s && a.wait_share == b.wait_share);
    const char *p = path_in("counters.svg");
    cr_assert_eq(timeline_write_panels(p, 1, (const struct timeline *[]){&counted}, NULL, NULL), 0, "%s", err_get());
    char *s = slurp(p);
    cr_expect_null(xml_check(s));
    cr_expect(strstr(s, ">loss (0..2)<") && strstr(s, ">images/s (0..1280)<") && strstr(s, ">ring slots ready (0.."),
              "a lane per counter:\n%s", s);
    free(s);
    timeline_free(&plain);
    timeline_free(&counted);
}

/* ---- viz.h: a run's curves from its metrics file (train.h's layout) ---- */

static void write_text(const char *path, const char *text) {
    FILE *f = fopen(path, "w");
    cr_assert_not_null(f);
    fputs(text, f);
    fclose(f);
}

/* The number of points of the k-th polyline (from 0) in svg, or -1. */
static int polyline_points(const char *svg, int k) {
    const char *p = svg;
    for (int i = 0; i <= k; i++)
        if (!(p = strstr(p + (i > 0), "<polyline"))) return -1;
    p = strstr(p, "points=\"");
    cr_assert_not_null(p);
    int n = 1;
    for (p += 8; *p != '"'; p++) n += *p == ' ';
    return n;
}

/* Two epochs of four steps; the first epoch not evaluated, the second evaluated. */
static const char *two_epochs =
    METRICS_HEADER "\n"
    "step,0,1,0,0,2.3,0.125,1000.0,0.5000,,\n"
    "step,1,1,1,0.05,2.1,0.25,1100.0,0.0100,,\n"
    "step,2,1,2,0.1,1.9,0.375,1200.0,0.0000,,\n"
    "step,3,1,3,0.1,1.7,0.5,1200.0,0.0000,,\n"
    "epoch,4,1,4,,2.0,0.3125,1125.0,0.1300,,\n"
    "step,4,2,0,0.08,1.2,0.625,1200.0,0.0000,,\n"
    "step,5,2,1,0.06,1.0,0.75,1200.0,0.0000,,\n"
    "step,6,2,2,0.04,0.9,0.75,1200.0,0.0000,,\n"
    "step,7,2,3,0.02,0.8,0.875,1200.0,0.0000,,\n"
    "epoch,8,2,4,,0.975,0.75,1200.0,0.0000,1.25,0.875\n";

Test(lab, curves_have_a_line_per_curve_and_a_dot_per_epochs_number) {
    const char *csv = path_in("two.csv"), *p = path_in("two.svg");
    write_text(csv, two_epochs);
    cr_assert_eq(curves_write_svg(csv, p), 0, "%s", err_get());
    char *s = slurp(p);
    const char *why = xml_check(s);
    cr_expect_null(why, "not well-formed (%s)", why);
    /* the loss of each step, its running mean, the accuracy's running mean */
    cr_expect_eq(count_of(s, "<polyline"), 3, "%s", s);
    for (int k = 0; k < 3; k++) cr_expect_eq(polyline_points(s, k), 8, "polyline %d: a point per step", k);
    /* a training dot per epoch in each panel, a test dot per evaluated epoch, two in the legend */
    cr_expect_eq(count_of(s, "<circle"), 2 * 2 + 2 * 1 + 2);
    cr_expect_eq(count_of(s, ": train loss "), 2);
    cr_expect_eq(count_of(s, ": train accuracy "), 2);
    cr_expect_eq(count_of(s, ": test loss "), 1);
    cr_expect(strstr(s, "<title>epoch 2: test accuracy 87.5%</title>"), "%s", s);
    cr_expect(strstr(s, "<title>epoch 1: train loss 2</title>"), "%s", s);
    cr_expect(strstr(s, ">loss (cross-entropy)<") && strstr(s, ">accuracy<") && strstr(s, ">steps trained<"),
              "panel titles and the axis name");
    cr_expect(strstr(s, ">epoch 1<") && strstr(s, ">epoch 2<"), "the epochs are named");
    cr_expect(strstr(s, ">100%<") && strstr(s, ">0%<"), "the accuracy axis is labelled in percent");
    free(s);
}

/* A resumed run that went back to an epoch's checkpoint writes its steps again: the
 * later rows replace the earlier ones; a last line cut short is left out. */
Test(lab, curves_take_a_repeated_stretch_from_the_later_run) {
    const char *csv = path_in("again.csv"), *p = path_in("again.svg");
    write_text(csv, METRICS_HEADER "\n"
                    "step,0,1,0,0,2.3,0.125,1000.0,0.5000,,\n"
                    "step,1,1,1,0.05,2.1,0.25,1100.0,0.0100,,\n"
                    "epoch,2,1,2,,2.2,0.1875,1050.0,0.2000,2.0,0.25\n"
                    "step,2,2,0,0.1,1.9,0.375,1200.0,0.0000,,\n"
                    "step,3,2,1,0.1,1.7,0.5,1200.0,0.0000,,\n"
                    "step,2,2,0,0.1,1.8,0.375,1200.0,0.0000,,\n"  /* the resumed run, from step 2 */
                    "step,3,2,1,0.1,1.6,0.5,1200.0,0.0000,,\n"
                    "step,4,3,0,0.1,1.5,0.5,1200.0,0.0000,,\n"
                    "step,5,3,1,0.1,1.");                         /* killed while writing */
    cr_assert_eq(curves_write_svg(csv, p), 0, "%s", err_get());
    char *s = slurp(p);
    cr_expect_null(xml_check(s));
    cr_expect_eq(polyline_points(s, 0), 5, "steps 0..4, each once");
    cr_expect_eq(count_of(s, ": test loss "), 1, "the first epoch's row stays");
    free(s);
}

Test(lab, a_malformed_metrics_file_is_an_error_naming_its_line) {
    const char *csv = path_in("bad.csv"), *p = path_in("bad.svg");
    static const struct { const char *text, *where, *what; } cases[] = {
        {METRICS_HEADER "\nstep,0,1,0,0,2.3,0.125,1000.0,0.5,,\nstep,1,1,1,0.1,abc,0.25,1000.0,0.5,,\n", ":3:",
         "loss is 'abc'"},
        {METRICS_HEADER "\nstep,0,1,0,0,2.3,0.125\n", ":2:", "7 fields where the header has 11"},
        {METRICS_HEADER "\nstep,0,1,0,0,2.3,1.5,1000.0,0.5,,\n", ":2:", "accuracy is '1.5', not a share from 0 to 1"},
        {METRICS_HEADER "\nstep,0.5,1,0,0,2.3,0.5,1000.0,0.5,,\n", ":2:", "step is '0.5', not a whole number"},
        {METRICS_HEADER "\nbatch,0,1,0,0,2.3,0.125,1000.0,0.5,,\n", ":2:", "neither step nor epoch"},
        {METRICS_HEADER "\nepoch,4,1,4,,2.0,0.3,1125.0,0.1,1.5,\n", ":2:", "test_accuracy is ''"},
        {"step,epoch,batch,lr,loss,correct,images\n0,1,0,0,2.3,2,16\n", ":1:", "no column 'kind'"},
        {"", "bad.csv", "empty"},
        {METRICS_HEADER "\n", "bad.csv", "no step rows"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        write_text(csv, cases[i].text);
        cr_expect_eq(curves_write_svg(csv, p), -1, "case %zu was accepted", i);
        char where[160];
        snprintf(where, sizeof where, "%s%s", csv, cases[i].where[0] == ':' ? cases[i].where : "");
        cr_expect(strstr(err_get(), where), "case %zu: the message does not name %s: %s", i, where, err_get());
        cr_expect(strstr(err_get(), cases[i].what), "case %zu: the message does not say '%s': %s", i, cases[i].what,
                  err_get());
        cr_expect_eq(access(p, F_OK), -1, "case %zu: a picture was drawn", i);
    }
    cr_expect_eq(curves_write_svg(path_in("missing.csv"), p), -1);
    cr_expect(strstr(err_get(), "missing.csv"), "%s", err_get());
}
