/* test_feeder.c — the copy stage's logic, on the CPU, with a fake device: a backend
 * whose "device memory" is separate host memory, copies are memcpy, and events are
 * flags. It checks what the real GPU path relies on: every sample arrives exactly
 * once per epoch with the right bytes in the device twin, with pinned or pageable
 * slots, overlap on or off, one slot or several, and a run stopped mid-epoch gives
 * its held slots back (otherwise the next epoch would deadlock). The fake events
 * carry the host time they were recorded at, so the spans the feeder places on the
 * host's clock for the trace can be checked against when things happened.
 *
 * As on a GPU, a recorded event is not complete until the host waits for it: here an
 * event completes only when it, or one recorded after it, is synced (one queue for
 * both streams: a simplification that can only complete events early, never late),
 * and reading the time between two events needs both complete, as
 * cudaEventElapsedTime does. So a feeder that hands a slot back without waiting for
 * the compute that reads it fails here. */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "feeder.h"
#include "fixtures/datagen.h"
#include "os.h"

struct device_event { int recorded; int64_t t_ns; long seq; };
static int pinned_live, copies_on[2], waits;
static long recorded_seq;                 /* events recorded so far, in order */
static long done_upto = -1;               /* every event recorded at or before it is complete */

static void *fake_pinned_alloc(size_t n) { pinned_live++; return malloc(n); }
static void fake_pinned_free(void *p) { pinned_live--; free(p); }
static void fake_copy(void *dst, const void *src, size_t n, enum stream_id s) { memcpy(dst, src, n); copies_on[s]++; }
static struct device_event *fake_event_create(void) { return calloc(1, sizeof(struct device_event)); }
static void fake_event_destroy(struct device_event *e) { free(e); }
static void fake_record(struct device_event *e, enum stream_id s) {
    (void)s;
    e->recorded++;
    e->seq = recorded_seq++;
    e->t_ns = os_now_ns();
}
static bool complete(const struct device_event *e) { return e->recorded && e->seq <= done_upto; }
static void fake_wait(enum stream_id s, struct device_event *e) { (void)s; cr_assert(e->recorded, "waited on an event never recorded"); waits++; }
static bool fake_done(struct device_event *e) { return complete(e); }
static void fake_sync(struct device_event *e) {
    cr_assert(e->recorded, "synced an event never recorded");
    if (e->seq > done_upto) done_upto = e->seq;
}
static float fake_elapsed(struct device_event *a, struct device_event *b) {
    cr_assert(complete(a) && complete(b), "time read between events the device may not have reached "
                                         "(the slot would go back to the loader while still in use)");
    return (float)((double)(b->t_ns - a->t_ns) / 1e6);
}

static const struct copy_stage fake_stage = {
    .pinned_alloc = fake_pinned_alloc, .pinned_free = fake_pinned_free, .copy_h2d_async = fake_copy,
    .event_create = fake_event_create, .event_destroy = fake_event_destroy, .event_record = fake_record,
    .stream_wait_event = fake_wait, .event_done = fake_done, .event_sync = fake_sync,
    .event_elapsed_ms = fake_elapsed,
};
static struct backend fake_device;

static char *dir;
static struct dataset *ds;
enum { CLASSES = 3, PER_CLASS = 9, N = CLASSES * PER_CLASS, H = 5, W = 4 };

static void setup(void) {
    fake_device = cpu_vectorized_backend;
    fake_device.name = "fake-device";
    fake_device.stage = &fake_stage;
    dir = dg_tmpdir();
    cr_assert_not_null(dir);
    dg_make_folder(dir, CLASSES, PER_CLASS, H, W, 1);
    struct data_folder_options fo = {H, W, 1, 0};
    cr_assert_eq(data_open_folder(dir, &fo, &ds), 0, "%s", err_get());
}

static void teardown(void) {
    data_close(ds);
    dg_rm_tree(dir);
    free(dir);
}

TestSuite(feeder, .init = setup, .fini = teardown, .timeout = 30);

/* Runs `epochs` epochs (the first cut short after `cut` batches if cut > 0) and checks
 * every delivered batch: twin buffer, bytes equal to the host slot, labels, coverage. */
static void run(const struct backend *be, int prefetch, int workers, int batch, bool pinned, bool overlap, int cut) {
    struct loader_config lc;
    loader_config_default(&lc);
    lc.batch = batch;
    lc.prefetch = prefetch;
    lc.workers = workers;
    lc.slot_alloc = feeder_slot_alloc;
    lc.slot_free = feeder_slot_free;
    lc.slot_ctx = feeder_slot_ctx(be, pinned);
    struct loader *ld;
    struct feeder *f;
    cr_assert_eq(loader_create(&lc, ds, &ld), 0, "%s", err_get());
    cr_assert_eq(feeder_create(be, ld, prefetch, data_sample_bytes(ds), batch, overlap, &f), 0, "%s", err_get());
    if (be->stage && pinned) cr_expect_eq(pinned_live, prefetch, "every ring slot should be pinned");
    for (int epoch = 0; epoch < 3; epoch++) {
        int seen[N] = {0}, batches = 0;
        int64_t epoch_ns = os_now_ns(), slack = 50000; /* float milliseconds, rounded */
        cr_assert_eq(feeder_start_epoch(f, epoch, 0), 0, "%s", err_get());
        struct fed_batch fb;
        int rc;
        for (int64_t asked = os_now_ns(); (rc = feeder_next(f, &fb)) == 1; asked = os_now_ns()) {
            const struct batch *b = fb.host;
            size_t bytes = (size_t)b->n * H * W;
            if (be->stage) cr_expect_neq((void *)fb.images, (void *)b->images, "device path must use the twin");
            cr_expect_eq(memcmp(fb.images, b->images, bytes), 0, "twin bytes differ from the slot");
            cr_expect_eq(memcmp(fb.labels, b->labels, (size_t)b->n * 4), 0, "twin labels differ");
            for (int i = 0; i < b->n; i++) {
                /* augmentation is off by default: pixel 0/1 carry the sample id */
                int id = dg_sample_id(fb.images + (size_t)i * H * W);
                cr_assert(id >= 0 && id < N);
                seen[id]++;
                cr_expect_eq(fb.labels[i], id / PER_CLASS);
            }
            feeder_done(f, &fb);
            struct device_spans sp;
            cr_expect_eq(feeder_last_spans(f, &sp), be->stage != NULL, "device spans exactly when there is a device");
            if (be->stage) {
                int64_t now = os_now_ns();
                /* the copy was queued this epoch (one batch early with overlap), the compute after
                 * this feeder_next asked, and both had finished when feeder_done returned */
                cr_expect(sp.copy_start_ns >= epoch_ns - slack && sp.copy_ns >= 0, "copy at %lld", (long long)sp.copy_start_ns);
                cr_expect(sp.copy_start_ns + sp.copy_ns <= sp.compute_start_ns + slack, "copy ends after compute starts");
                cr_expect(sp.compute_start_ns >= asked - slack && sp.compute_ns >= 0, "compute placed before it was asked for");
                cr_expect(sp.compute_start_ns + sp.compute_ns <= now + slack, "compute placed after it ended");
            }
            if (epoch == 0 && cut > 0 && ++batches == cut) break;
        }
        cr_assert_neq(rc, -1, "%s", err_get());
        if (epoch == 0 && cut > 0) continue;  /* a cut epoch: the next start must not deadlock */
        for (int id = 0; id < N; id++) cr_expect_eq(seen[id], 1, "epoch %d: sample %d seen %d times", epoch, id, seen[id]);
    }
    int64_t h2d, compute;
    feeder_take_times(f, &h2d, &compute);
    if (be->stage) cr_expect_gt(h2d, 0, "device path reports copy time from events");
    else cr_expect_eq(h2d, 0);
    feeder_destroy(f);
    loader_destroy(ld);
    cr_expect_eq(pinned_live, 0, "pinned slots leaked or double-freed");
}

Test(feeder, cpu_uses_slots_in_place) {
    run(&cpu_vectorized_backend, 2, 2, 4, true, true, 0);
}

Test(feeder, device_every_sample_once_all_settings) {
    int prefetch[] = {1, 2, 4}, batch[] = {4, 5, 27};
    for (int p = 0; p < 3; p++)
        for (int b = 0; b < 3; b++)
            for (int pinned = 0; pinned < 2; pinned++)
                for (int overlap = 0; overlap < 2; overlap++) {
                    copies_on[0] = copies_on[1] = waits = 0;
                    run(&fake_device, prefetch[p], p % 2 ? 0 : 2, batch[b], pinned, overlap, 0);
                    bool lookahead = overlap && prefetch[p] >= 2;
                    /* with overlap the copies go to the copy stream and compute waits on them */
                    cr_expect_eq(copies_on[STREAM_COPY] > 0, lookahead, "prefetch %d overlap %d", prefetch[p], overlap);
                    cr_expect_eq(copies_on[STREAM_COMPUTE] > 0, !lookahead);
                    cr_expect_eq(waits > 0, lookahead);
                }
}

Test(feeder, stopping_mid_epoch_returns_held_slots) {
    run(&fake_device, 2, 1, 4, true, true, 2);
    run(&fake_device, 4, 2, 5, false, true, 1);
}

/* An allocation that fails inside feeder_create leaves *out NULL, so the trainer's
 * cleanup (which destroys whatever it holds) can't free the feeder twice. Each host
 * allocation fails in turn: the feeder itself, then the slots' device twins. */
static int calls_left;
static void *failing_calloc(size_t n, size_t size) { return calls_left-- > 0 ? calloc(n, size) : NULL; }

Test(feeder, a_failed_allocation_leaves_no_feeder_behind) {
    struct loader_config lc;
    loader_config_default(&lc);
    lc.batch = 4;
    lc.prefetch = 2;
    struct loader *ld;
    cr_assert_eq(loader_create(&lc, ds, &ld), 0, "%s", err_get());
    for (int ok_calls = 0; ok_calls < 2; ok_calls++) {
        struct feeder *f = (struct feeder *)&ld;  /* not NULL: feeder_create must clear it */
        calls_left = ok_calls;
        feeder_host_calloc = failing_calloc;
        int rc = feeder_create(&fake_device, ld, 2, data_sample_bytes(ds), 4, true, &f);
        feeder_host_calloc = calloc;
        cr_expect_eq(rc, -1, "allocation %d failed, yet feeder_create succeeded", ok_calls + 1);
        cr_expect_null(f, "allocation %d failed and *out still points at a freed feeder", ok_calls + 1);
        cr_expect(strstr(err_get(), "out of host memory"), "%s", err_get());
        feeder_destroy(f);  /* what the trainer's cleanup does */
    }
    loader_destroy(ld);
}
