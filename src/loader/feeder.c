/* feeder.c — the copy stage between the loader's ring and the compute device.
 * See feeder.h for the picture. */
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "feeder.h"
#include "os.h"

/* One ring slot's twin on the device, and the events that order its use. */
struct twin {
    uint8_t *images;
    int32_t *labels;
    struct device_event *copy_start, *copied, *compute_start, *consumed;
};

enum { AHEAD_NONE = 2 };

struct feeder {
    const struct backend *be;
    const struct copy_stage *st;   /* NULL: the CPU, batches are used in place */
    struct loader *ld;
    int prefetch, batch;
    size_t sample_bytes;
    bool lookahead;                /* copy batch i+1 on the copy stream while i computes */
    struct twin *twins;
    struct fed_batch ahead;        /* fetched and copying, not handed out yet */
    int ahead_rc;                  /* fetch()'s answer for `ahead` (1: a batch; 0: epoch over;
                                      -1: error), or AHEAD_NONE: nothing fetched yet */
    int64_t host_start_ns;
    int64_t h2d_ns, compute_ns;
    struct device_event *anchor;   /* recorded and waited for: device time = host time here */
    int64_t anchor_ns;
    struct device_spans last;      /* the last batch done, on the host's clock */
    bool have_last;
};

static int64_t ms_to_ns(float ms) { return (int64_t)(1e6 * ms); }

/* Ties the device's clock to the host's: an event on the compute stream, waited for.
 * Done at each epoch's start, so float milliseconds since it stay precise. */
static void set_anchor(struct feeder *f) {
    f->st->event_record(f->anchor, STREAM_COMPUTE);
    f->st->event_sync(f->anchor);
    f->anchor_ns = os_now_ns();
}

void *feeder_slot_ctx(const struct backend *be, bool pinned) {
    return be->stage && pinned ? (void *)be : NULL;
}

void *feeder_slot_alloc(size_t bytes, void *ctx) {
    const struct backend *be = ctx;
    return be ? be->stage->pinned_alloc(bytes) : malloc(bytes);
}

void feeder_slot_free(void *p, void *ctx) {
    const struct backend *be = ctx;
    if (be) be->stage->pinned_free(p);
    else free(p);
}

void *(*feeder_host_calloc)(size_t n, size_t size) = calloc;

/* Every way feeder_create can fail ends here: nothing half-made is left behind. */
static int create_failed(struct feeder *f, struct feeder **out) {
    feeder_destroy(f);
    *out = NULL;
    return -1;
}

int feeder_create(const struct backend *be, struct loader *ld, int prefetch, size_t sample_bytes, int batch,
                  bool overlap, struct feeder **out) {
    *out = NULL;
    struct feeder *f = feeder_host_calloc(1, sizeof *f);
    if (!f) return err_set("feeder: out of host memory");
    *f = (struct feeder){.be = be, .st = be->stage, .ld = ld, .prefetch = prefetch, .batch = batch,
                         .sample_bytes = sample_bytes, .ahead_rc = AHEAD_NONE};
    /* one batch ahead holds two slots: with a single slot it would wait for itself */
    f->lookahead = f->st && overlap && prefetch >= 2;
    if (!f->st) {
        *out = f;
        return 0;
    }
    f->twins = feeder_host_calloc((size_t)prefetch, sizeof *f->twins);
    if (!f->twins) {
        err_set("feeder: out of host memory for %d ring slots' device twins", prefetch);
        return create_failed(f, out);
    }
    if (!(f->anchor = f->st->event_create())) {
        err_wrap("feeder: clock anchor: ");
        return create_failed(f, out);
    }
    set_anchor(f);
    for (int i = 0; i < prefetch; i++) {
        struct twin *t = &f->twins[i];
        t->images = be->alloc((size_t)batch * sample_bytes);
        t->labels = be->alloc((size_t)batch * sizeof(int32_t));
        t->copy_start = f->st->event_create();
        t->copied = f->st->event_create();
        t->compute_start = f->st->event_create();
        t->consumed = f->st->event_create();
        if (!t->images || !t->labels || !t->copy_start || !t->copied || !t->compute_start || !t->consumed) {
            err_wrap("feeder: device buffers for ring slot %d: ", i);
            return create_failed(f, out);
        }
    }
    *out = f;
    return 0;
}

/* Takes the next batch from the ring and queues its copy to the slot's twin. */
static int fetch(struct feeder *f, struct fed_batch *fb) {
    const struct batch *b;
    int rc = loader_next_batch(f->ld, &b);
    if (rc != 1) return rc;
    *fb = (struct fed_batch){.host = b, .images = b->images, .labels = b->labels, .wait_ns = b->wait_ns};
    if (!f->st) return 1;
    struct twin *t = &f->twins[b->slot];
    enum stream_id s = f->lookahead ? STREAM_COPY : STREAM_COMPUTE;
    if (f->st->range_push) f->st->range_push("h2d copy");
    f->st->event_record(t->copy_start, s);
    f->st->copy_h2d_async(t->images, b->images, (size_t)b->n * f->sample_bytes, s);
    f->st->copy_h2d_async(t->labels, b->labels, (size_t)b->n * sizeof(int32_t), s);
    f->st->event_record(t->copied, s);
    if (f->st->range_pop) f->st->range_pop();
    fb->images = t->images;
    fb->labels = t->labels;
    return 1;
}

/* A batch fetched ahead but never computed (the run stopped): wait for its copy, give it back. */
static void drop_ahead(struct feeder *f) {
    if (f->ahead_rc == 1) {
        f->st->event_sync(f->twins[f->ahead.host->slot].copied);
        loader_release_batch(f->ld, f->ahead.host);
    }
    f->ahead_rc = AHEAD_NONE;
}

int feeder_start_epoch(struct feeder *f, int64_t epoch, int64_t first_batch) {
    if (f->st) {
        drop_ahead(f);
        set_anchor(f);
    }
    return loader_start_epoch_at(f->ld, epoch, first_batch);
}

int feeder_next(struct feeder *f, struct fed_batch *out) {
    int rc;
    if (f->lookahead) {
        if (f->ahead_rc == AHEAD_NONE) f->ahead_rc = fetch(f, &f->ahead);  /* first batch of the epoch */
        if ((rc = f->ahead_rc) == -1) return err_set("%s", loader_error(f->ld));  /* a load failed ahead */
        if (rc != 1) return rc;
        *out = f->ahead;
        f->ahead_rc = fetch(f, &f->ahead);  /* its copy now overlaps this batch's compute */
    } else if ((rc = fetch(f, out)) != 1) {
        return rc;
    }
    if (f->st) {
        struct twin *t = &f->twins[out->host->slot];
        if (f->lookahead) f->st->stream_wait_event(STREAM_COMPUTE, t->copied);
        f->st->event_record(t->compute_start, STREAM_COMPUTE);
    } else {
        f->host_start_ns = os_now_ns();
    }
    return 1;
}

void feeder_done(struct feeder *f, const struct fed_batch *fb) {
    if (!f->st) {
        f->compute_ns += os_now_ns() - f->host_start_ns;
        loader_release_batch(f->ld, fb->host);
        return;
    }
    struct twin *t = &f->twins[fb->host->slot];
    f->st->event_record(t->consumed, STREAM_COMPUTE);
    /* The trainer reads the loss every step, which waits for the device anyway; so
     * waiting here costs nothing and returns the slot as early as is safe. */
    f->st->event_sync(t->consumed);
    float (*ms)(struct device_event *, struct device_event *) = f->st->event_elapsed_ms;
    f->last = (struct device_spans){f->anchor_ns + ms_to_ns(ms(f->anchor, t->copy_start)),
                                    ms_to_ns(ms(t->copy_start, t->copied)),
                                    f->anchor_ns + ms_to_ns(ms(f->anchor, t->compute_start)),
                                    ms_to_ns(ms(t->compute_start, t->consumed))};
    f->have_last = true;
    f->h2d_ns += f->last.copy_ns;
    f->compute_ns += f->last.compute_ns;
    loader_release_batch(f->ld, fb->host);
}

void feeder_take_times(struct feeder *f, int64_t *h2d_ns, int64_t *compute_ns) {
    *h2d_ns = f->h2d_ns;
    *compute_ns = f->compute_ns;
    f->h2d_ns = f->compute_ns = 0;
}

bool feeder_last_spans(const struct feeder *f, struct device_spans *out) {
    if (f->have_last) *out = f->last;
    return f->have_last;
}

void feeder_destroy(struct feeder *f) {
    if (!f) return;
    if (f->st) {
        drop_ahead(f);
        for (int i = 0; f->twins && i < f->prefetch; i++) {
            struct twin *t = &f->twins[i];
            f->be->free(t->images);
            f->be->free(t->labels);
            struct device_event *ev[] = {t->copy_start, t->copied, t->compute_start, t->consumed};
            for (int k = 0; k < 4; k++)
                if (ev[k]) f->st->event_destroy(ev[k]);
        }
        free(f->twins);
        if (f->anchor) f->st->event_destroy(f->anchor);
    }
    free(f);
}
