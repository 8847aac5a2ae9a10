/* loader.c — sampler, worker threads and the ring of batch slots (see loader.h).
 *
 * The ring, in one picture (prefetch = 3):
 *
 *        slot 0          slot 1          slot 2
 *     [ HELD b=6 ]    [ READY b=7 ]   [ FILLING b=8 ]      consumer holds 6, gets 7 next;
 *                                                          workers fill 8, then wait for
 *                                                          slot 0 to be released for 9
 *
 *   FREE -> FILLING      a worker opens batch b in slot b % prefetch (take_work)
 *   FILLING -> READY     the last of its samples is finished (finish_sample)
 *   READY -> HELD        loader_next_batch hands it to the consumer
 *   HELD -> FREE         loader_release_batch (the GPU path: after the copy is done)
 *
 * All of it is guarded by one mutex. Workers sleep on `work_cv` when there is no
 * sample to take (ring full, epoch done); the consumer sleeps on `ready_cv` until its
 * batch is READY. Pixels are read, decoded and augmented outside the lock, straight
 * into the slot: a worker owns position `pos` of a FILLING slot until it reports it.
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "error.h"
#include "loader.h"
#include "os.h"
#include "rng.h"

enum slot_state { SLOT_FREE, SLOT_FILLING, SLOT_READY, SLOT_HELD };

struct slot {
    enum slot_state state;
    struct batch b;          /* what the consumer sees */
    int want, done;          /* samples of this batch handed out / finished */
    uint8_t *good;           /* [batch]: 0 = sample skipped */
    struct loader_span *spans;
    void *mem;               /* from slot_alloc: images, then labels */
};

/* Per-thread state of a worker (and of the consumer when workers = 0). */
struct worker {
    struct loader *l;
    int id;
    uint8_t *scratch;        /* one decoded sample before augmentation */
    pthread_t thread;
    int started;
};

struct loader {
    struct loader_config cfg;
    const struct dataset *ds;      /* labels and names */
    const struct dataset *pixels;  /* where pixels come from: ds or the packed file */
    struct dataset *packed;        /* opened here for cache = packed */
    size_t sample_bytes;
    int world;                     /* processes sharing each epoch (1: alone) */
    int64_t count;                 /* samples of this rank's share: ds->count / world */
    int64_t nbatches;

    /* cache = memory, filled lazily by whichever thread first decodes sample i. No
     * lock needed: within an epoch one thread owns sample i, and epochs are ordered
     * by mu (start_epoch waits until nothing is in flight). */
    uint8_t *cache;                /* count x sample_bytes */
    uint8_t *cached;               /* [count]: 1 once sample i is in `cache` */

    /* Written by start_epoch under mu with nothing in flight; read by workers freely. */
    int64_t epoch;
    int64_t *order;                /* dataset index of each position of this epoch */

    struct worker *workers;        /* [max(workers, 1)] */
    int nworkers;

    /* --- guarded by mu ------------------------------------------------------- */
    pthread_mutex_t mu;
    pthread_cond_t work_cv;        /* workers: a sample may be available */
    pthread_cond_t ready_cv;       /* consumer: a batch became ready, or an error */
    pthread_cond_t idle_cv;        /* start_epoch: no sample in flight any more */
    struct slot *slots;
    int nslots;
    int64_t hand_batch;            /* next sample to hand out: batch, position */
    int hand_pos;
    int64_t next_batch;            /* next batch for the consumer */
    int in_flight;                 /* samples taken and not yet reported */
    int stopping;
    char *error;                   /* first error of this epoch; stops it */
    int64_t skipped;
    char last_skip[512];
    struct loader_worker_stats *stats;
};

static int64_t thread_cpu_ns(void) { return os_clock_ns(CLOCK_THREAD_CPUTIME_ID); }

void loader_config_default(struct loader_config *cfg) {
    *cfg = (struct loader_config){
        .batch = 128, .workers = 2, .prefetch = 4, .shuffle = 1, .drop_last = 0,
        .augment = 0, .crop_pad = 2, .flip = 1, .seed = 0, .cache = CFG_CACHE_NONE,
        .io_delay_us = 0, .on_bad_sample = CFG_BAD_SAMPLE_ERROR,
    };
}

/* --- the sampler ------------------------------------------------------------- */

/* Seeded Fisher-Yates over 0..count-1 (the identity when shuffle is off), then this
 * rank's share of it: positions rank, rank + world, ... (in place: a position is read
 * before it is written). The same seed and epoch give every rank the same permutation. */
static void make_order(struct loader *l) {
    int64_t n = l->ds->count;
    for (int64_t i = 0; i < n; i++) l->order[i] = i;
    if (l->cfg.shuffle) {
        uint64_t base = data_sample_key(l->cfg.seed, (uint64_t)l->epoch, UINT64_MAX);
        for (int64_t i = n - 1; i > 0; i--) {
            uint64_t r = rng_hash(base + (uint64_t)i);
            int64_t j = (int64_t)(((unsigned __int128)r * (uint64_t)(i + 1)) >> 64); /* 0..i */
            int64_t t = l->order[i];
            l->order[i] = l->order[j];
            l->order[j] = t;
        }
    }
    if (l->world > 1)
        for (int64_t k = 0; k < l->count; k++) l->order[k] = l->order[k * l->world + l->cfg.rank];
}

/* --- handing out work (mu held) ---------------------------------------------- */

static void open_slot(struct loader *l, struct slot *s, int64_t batch) {
    int64_t left = l->count - batch * l->cfg.batch;
    s->state = SLOT_FILLING;
    s->want = left < l->cfg.batch ? (int)left : l->cfg.batch;
    s->done = 0;
    memset(s->good, 1, (size_t)s->want);
    memset(s->spans, 0, (size_t)l->nworkers * sizeof *s->spans);
    struct batch *b = &s->b;
    b->n = s->want;
    b->epoch = l->epoch;
    b->index = batch;
    b->skipped = 0;
    b->wait_ns = b->read_ns = b->decode_ns = b->augment_ns = 0;
    b->ring_ready = 0;
}

/* The next sample to fill, or NULL when there is none now: the epoch is handed out,
 * it failed, or the next batch's slot is not free (ring full). */
static struct slot *take_work(struct loader *l, int *pos) {
    if (l->error || l->stopping || l->hand_batch >= l->nbatches) return NULL;
    struct slot *s = &l->slots[l->hand_batch % l->nslots];
    if (l->hand_pos == 0) {
        if (s->state != SLOT_FREE) return NULL;
        open_slot(l, s, l->hand_batch);
    }
    *pos = l->hand_pos++;
    if (l->hand_pos == s->want) {
        l->hand_batch++;
        l->hand_pos = 0;
    }
    l->in_flight++;
    return s;
}

/* --- filling one sample (no lock) -------------------------------------------- */

struct sample_times {
    int64_t start_ns, end_ns, read_ns, decode_ns, augment_ns;
};

static void simulate_io_delay(unsigned us) {
    struct timespec ts = {us / 1000000, (long)(us % 1000000) * 1000};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {}
}

/* Reads, decodes and augments sample `pos` of slot s into the slot. */
static int fill_sample(struct loader *l, struct worker *w, struct slot *s, int pos,
                       struct sample_times *t) {
    const struct loader_config *c = &l->cfg;
    int64_t i = l->order[s->b.index * c->batch + pos];
    uint8_t *dst = s->b.images + (size_t)pos * l->sample_bytes;
    const uint8_t *src;
    int rc = 0;
    *t = (struct sample_times){.start_ns = os_now_ns()};
    s->b.labels[pos] = data_label(l->ds, i);

    if (c->cache == CFG_CACHE_MEMORY && l->cached[i]) {
        src = l->cache + (size_t)i * l->sample_bytes;
    } else {
        /* cache = memory decodes straight into the cache; the first decode fills it */
        uint8_t *buf = c->cache == CFG_CACHE_MEMORY ? l->cache + (size_t)i * l->sample_bytes
                                                    : w->scratch;
        struct data_times dt;
        if (c->io_delay_us && l->pixels->reads_files) {
            int64_t t0 = os_now_ns();
            simulate_io_delay(c->io_delay_us);
            t->read_ns += os_now_ns() - t0;
        }
        rc = data_read_sample(l->pixels, i, buf, &dt);
        t->read_ns += dt.read_ns;
        t->decode_ns += dt.decode_ns;
        if (rc == 0 && c->cache == CFG_CACHE_MEMORY) l->cached[i] = 1;
        src = buf;
    }
    int64_t t1 = os_now_ns();
    if (rc == 0) {
        if (c->augment) {
            struct data_augment aug = {c->crop_pad, c->flip};
            uint64_t key = data_sample_key(c->seed, (uint64_t)l->epoch, (uint64_t)i);
            data_augment_apply(dst, src, l->ds->height, l->ds->width, l->ds->channels,
                               data_augment_draw(&aug, key));
        } else {
            memcpy(dst, src, l->sample_bytes);
        }
    }
    t->end_ns = os_now_ns();
    t->augment_ns = t->end_ns - t1;
    return rc;
}

/* --- reporting a sample (mu held) -------------------------------------------- */

/* Drops the skipped samples of a finished batch, keeping the others in order. */
static void compact_skipped(struct loader *l, struct slot *s) {
    int k = 0;
    for (int pos = 0; pos < s->want; pos++) {
        if (!s->good[pos]) continue;
        if (k != pos) {
            memmove(s->b.images + (size_t)k * l->sample_bytes,
                    s->b.images + (size_t)pos * l->sample_bytes, l->sample_bytes);
            s->b.labels[k] = s->b.labels[pos];
        }
        k++;
    }
    s->b.n = k;
}

static void finish_sample(struct loader *l, struct worker *w, struct slot *s, int pos,
                          const struct sample_times *t, int ok) {
    struct loader_span *span = &s->spans[w->id];
    if (span->samples++ == 0) span->start_ns = t->start_ns;
    span->end_ns = t->end_ns;
    s->b.read_ns += t->read_ns;
    s->b.decode_ns += t->decode_ns;
    s->b.augment_ns += t->augment_ns;
    struct loader_worker_stats *st = &l->stats[w->id];
    st->samples++;
    st->read_ns += t->read_ns;
    st->decode_ns += t->decode_ns;
    st->augment_ns += t->augment_ns;

    if (!ok && l->cfg.on_bad_sample == CFG_BAD_SAMPLE_SKIP) {
        s->good[pos] = 0;
        s->b.skipped++;
        l->skipped++;
        snprintf(l->last_skip, sizeof l->last_skip, "%s", err_get()); /* this thread's */
    } else if (!ok && !l->error) {
        l->error = strdup(err_get());
        if (!l->error) l->error = strdup("loader: out of memory");
        pthread_cond_signal(&l->ready_cv);
    }
    if (++s->done == s->want) {
        if (s->b.skipped) compact_skipped(l, s);
        s->state = SLOT_READY;
        pthread_cond_signal(&l->ready_cv);
    }
    if (--l->in_flight == 0) pthread_cond_broadcast(&l->idle_cv);
}

/* --- the threads ------------------------------------------------------------- */

static void *worker_main(void *arg) {
    struct worker *w = arg;
    struct loader *l = w->l;
    pthread_mutex_lock(&l->mu);
    for (;;) {
        struct slot *s = NULL;
        int pos;
        while (!l->stopping && !(s = take_work(l, &pos))) pthread_cond_wait(&l->work_cv, &l->mu);
        if (l->stopping) break;
        pthread_mutex_unlock(&l->mu);
        struct sample_times t;
        int ok = fill_sample(l, w, s, pos, &t) == 0;
        pthread_mutex_lock(&l->mu);
        finish_sample(l, w, s, pos, &t, ok);
    }
    pthread_mutex_unlock(&l->mu);
    return NULL;
}

/* workers = 0: the consumer fills one sample of its batch itself, like a worker. */
static int fill_inline(struct loader *l) {
    int pos;
    struct slot *s = take_work(l, &pos);
    if (!s) /* cannot happen: the consumer's next slot is FREE or FILLING here */
        return err_set("loader: internal error: no sample to load for batch %" PRId64,
                       l->next_batch);
    pthread_mutex_unlock(&l->mu);
    struct sample_times t;
    int ok = fill_sample(l, &l->workers[0], s, pos, &t) == 0;
    pthread_mutex_lock(&l->mu);
    finish_sample(l, &l->workers[0], s, pos, &t, ok);
    return 0;
}

static int ready_slots(const struct loader *l) {
    int n = 0;
    for (int k = 0; k < l->nslots; k++) n += l->slots[k].state == SLOT_READY;
    return n;
}

int loader_next_batch(struct loader *l, const struct batch **out) {
    int64_t t0 = os_now_ns();
    int64_t cpu0 = l->cfg.workers == 0 ? thread_cpu_ns() : 0;
    int rc;
    *out = NULL;
    pthread_mutex_lock(&l->mu);
    for (;;) {
        if (l->error) {
            rc = err_set("%s", l->error);
            break;
        }
        if (l->next_batch >= l->nbatches) {
            rc = 0;
            break;
        }
        struct slot *s = &l->slots[l->next_batch % l->nslots];
        if (s->state == SLOT_READY && s->b.index == l->next_batch) {
            l->next_batch++;
            if (s->b.n == 0) { /* every sample of it was skipped */
                s->state = SLOT_FREE;
                pthread_cond_broadcast(&l->work_cv);
                continue;
            }
            s->state = SLOT_HELD;
            s->b.ring_ready = ready_slots(l) + 1;
            s->b.wait_ns = os_now_ns() - t0;
            *out = &s->b;
            rc = 1;
            break;
        }
        if (s->state == SLOT_HELD) {
            rc = err_set("loader: all %d prefetch slots are held by the consumer; release a "
                         "batch (loader_release_batch) before asking for the next",
                         l->nslots);
            break;
        }
        if (l->cfg.workers > 0) pthread_cond_wait(&l->ready_cv, &l->mu);
        else if (fill_inline(l)) {
            rc = -1;
            break;
        }
    }
    if (l->cfg.workers == 0) l->stats[0].cpu_ns += thread_cpu_ns() - cpu0;
    pthread_mutex_unlock(&l->mu);
    return rc;
}

void loader_release_batch(struct loader *l, const struct batch *b) {
    if (!b) return;
    pthread_mutex_lock(&l->mu);
    struct slot *s = &l->slots[b->slot];
    if (s->state == SLOT_HELD && &s->b == b) {
        s->state = SLOT_FREE;
        pthread_cond_broadcast(&l->work_cv);
    }
    pthread_mutex_unlock(&l->mu);
}

int loader_start_epoch_at(struct loader *l, int64_t epoch, int64_t first_batch) {
    if (first_batch < 0 || first_batch > l->nbatches)
        return err_set("loader: cannot start at batch %" PRId64 ", an epoch has %" PRId64
                       " batches", first_batch, l->nbatches);
    pthread_mutex_lock(&l->mu);
    for (int k = 0; k < l->nslots; k++)
        if (l->slots[k].state == SLOT_HELD) {
            pthread_mutex_unlock(&l->mu);
            return err_set("loader: batch %" PRId64 " of epoch %" PRId64 " is still held; "
                           "release every batch before starting an epoch",
                           l->slots[k].b.index, l->slots[k].b.epoch);
        }
    /* Hand out nothing more, and let the samples in flight land before the slots and
     * the order are reset under the workers' feet. */
    l->hand_batch = l->nbatches;
    while (l->in_flight > 0) pthread_cond_wait(&l->idle_cv, &l->mu);
    for (int k = 0; k < l->nslots; k++) l->slots[k].state = SLOT_FREE;
    free(l->error);
    l->error = NULL;
    l->epoch = epoch;
    make_order(l);
    l->hand_batch = l->next_batch = first_batch;
    l->hand_pos = 0;
    pthread_cond_broadcast(&l->work_cv);
    pthread_mutex_unlock(&l->mu);
    return 0;
}

int loader_start_epoch(struct loader *l, int64_t epoch) {
    return loader_start_epoch_at(l, epoch, 0);
}

/* --- setup and teardown ------------------------------------------------------ */

static void *default_alloc(size_t bytes, void *ctx) {
    (void)ctx;
    return malloc(bytes);
}
static void default_free(void *p, void *ctx) {
    (void)ctx;
    free(p);
}

static int check_config(const struct loader_config *c, const struct dataset *ds) {
    int side = ds->height < ds->width ? ds->height : ds->width;
    if (c->batch < 1) return err_set("loader.batch = %d: must be at least 1", c->batch);
    if (c->workers < 0 || c->workers > LOADER_MAX_WORKERS)
        return err_set("loader.workers = %d: must be 0..%d (0 = load on the training thread)",
                       c->workers, LOADER_MAX_WORKERS);
    if (c->prefetch < 1 || c->prefetch > LOADER_MAX_PREFETCH)
        return err_set("loader.prefetch = %d: must be 1..%d", c->prefetch, LOADER_MAX_PREFETCH);
    if (c->augment && (c->crop_pad < 0 || c->crop_pad > side))
        return err_set("loader crop padding %d: must be 0..%d for %dx%d images", c->crop_pad,
                       side, ds->height, ds->width);
    if ((unsigned)c->cache > CFG_CACHE_PACKED)
        return err_set("loader.cache = %d: must be none, memory or packed", (int)c->cache);
    if ((unsigned)c->on_bad_sample > CFG_BAD_SAMPLE_SKIP)
        return err_set("loader.on_bad_sample = %d: must be error or skip", (int)c->on_bad_sample);
    if (c->world > 1 && (c->rank < 0 || c->rank >= c->world || ds->count < c->world))
        return err_set("loader: rank %d of %d processes, with %lld samples: each rank needs one", c->rank,
                       c->world, (long long)ds->count);
    if (!c->slot_alloc != !c->slot_free)
        return err_set("loader: slot_alloc and slot_free must be given together");
    return 0;
}

/* cache = packed: the packed file must hold this dataset's samples in its order. */
static int open_packed(struct loader *l) {
    const struct dataset *ds = l->ds;
    if (!ds->reads_files) { /* IDX or packed already: nothing to gain */
        l->pixels = ds;
        return 0;
    }
    char path[4096];
    snprintf(path, sizeof path, "%s.packed", ds->path);
    if (l->cfg.packed_path) snprintf(path, sizeof path, "%s", l->cfg.packed_path);
    if (data_open_packed(path, &l->packed))
        return err_wrap("loader.cache = packed: ");
    const struct dataset *p = l->packed;
    int same = p->count == ds->count && p->height == ds->height && p->width == ds->width &&
               p->channels == ds->channels &&
               (!p->listing_hash || !ds->listing_hash || p->listing_hash == ds->listing_hash);
    for (int64_t i = 0; same && i < ds->count; i++) same = data_label(p, i) == data_label(ds, i);
    if (!same)
        return err_set("%s: does not hold the samples of %s in its order (%" PRId64 " images of "
                       "%dx%dx%d vs %" PRId64 " of %dx%dx%d, or other files); rebuild it with "
                       "./prepare pack %s %s", path, ds->path, p->count, p->height, p->width,
                       p->channels, ds->count, ds->height, ds->width, ds->channels, ds->path,
                       path);
    l->pixels = p;
    return 0;
}

static int alloc_ring(struct loader *l) {
    size_t image_bytes = ((size_t)l->cfg.batch * l->sample_bytes + 63) / 64 * 64;
    size_t bytes = image_bytes + (size_t)l->cfg.batch * sizeof(int32_t);
    l->nslots = l->cfg.prefetch;
    if (!(l->slots = calloc((size_t)l->nslots, sizeof *l->slots))) return -1;
    for (int k = 0; k < l->nslots; k++) {
        struct slot *s = &l->slots[k];
        s->mem = l->cfg.slot_alloc(bytes, l->cfg.slot_ctx);
        s->good = malloc((size_t)l->cfg.batch);
        s->spans = calloc((size_t)l->nworkers, sizeof *s->spans);
        if (!s->mem || !s->good || !s->spans) return -1;
        s->b = (struct batch){.height = l->ds->height, .width = l->ds->width,
                              .channels = l->ds->channels, .images = s->mem,
                              .labels = (int32_t *)((uint8_t *)s->mem + image_bytes),
                              .slot = k, .spans = s->spans};
    }
    return 0;
}

int loader_create(const struct loader_config *cfg, const struct dataset *ds, struct loader **out) {
    *out = NULL;
    if (check_config(cfg, ds)) return -1;
    struct loader *l = calloc(1, sizeof *l);
    if (!l) return err_set("loader: out of memory");
    l->cfg = *cfg;
    if (!l->cfg.slot_alloc) {
        l->cfg.slot_alloc = default_alloc;
        l->cfg.slot_free = default_free;
    }
    l->ds = l->pixels = ds;
    l->sample_bytes = data_sample_bytes(ds);
    l->world = cfg->world > 1 ? cfg->world : 1;
    l->count = ds->count / l->world;
    l->nbatches = cfg->drop_last ? l->count / cfg->batch : (l->count + cfg->batch - 1) / cfg->batch;
    l->nworkers = cfg->workers ? cfg->workers : 1;
    pthread_mutex_init(&l->mu, NULL);
    pthread_cond_init(&l->work_cv, NULL);
    pthread_cond_init(&l->ready_cv, NULL);
    pthread_cond_init(&l->idle_cv, NULL);
    l->order = malloc((size_t)ds->count * sizeof *l->order);
    l->stats = calloc((size_t)l->nworkers, sizeof *l->stats);
    l->workers = calloc((size_t)l->nworkers, sizeof *l->workers);
    if (!l->order || !l->stats || !l->workers || alloc_ring(l)) {
        err_set("loader: out of memory for %d slots of %d images of %zu bytes", cfg->prefetch,
                cfg->batch, l->sample_bytes);
        goto fail;
    }
    if (cfg->cache == CFG_CACHE_PACKED && open_packed(l)) goto fail;
    if (cfg->cache == CFG_CACHE_MEMORY) {
        /* malloc'd, not touched: pages are committed as samples are first decoded */
        l->cache = malloc((size_t)ds->count * l->sample_bytes);
        l->cached = calloc((size_t)ds->count, 1);
        if (!l->cache || !l->cached) {
            err_set("loader.cache = memory: cannot allocate %.1f MB for %" PRId64 " decoded "
                    "images; use cache = packed or none", (double)ds->count *
                    (double)l->sample_bytes / 1e6, ds->count);
            goto fail;
        }
    }
    for (int w = 0; w < l->nworkers; w++) {
        l->workers[w] = (struct worker){.l = l, .id = w, .scratch = malloc(l->sample_bytes)};
        if (!l->workers[w].scratch) {
            err_set("loader: out of host memory for a worker's %zu-byte sample buffer", l->sample_bytes);
            goto fail;
        }
    }
    /* No epoch yet: nothing to hand out until loader_start_epoch. */
    l->hand_batch = l->next_batch = l->nbatches;
    for (int w = 0; w < cfg->workers; w++) {
        int e = pthread_create(&l->workers[w].thread, NULL, worker_main, &l->workers[w]);
        if (e) {
            err_set("loader: cannot start worker thread %d (%s)", w, strerror(e));
            goto fail;
        }
        l->workers[w].started = 1;
    }
    *out = l;
    return 0;
fail:
    loader_destroy(l);
    return -1;
}

void loader_destroy(struct loader *l) {
    if (!l) return;
    pthread_mutex_lock(&l->mu);
    l->stopping = 1;
    pthread_cond_broadcast(&l->work_cv);
    pthread_mutex_unlock(&l->mu);
    for (int w = 0; l->workers && w < l->nworkers; w++) {
        if (l->workers[w].started) pthread_join(l->workers[w].thread, NULL);
        free(l->workers[w].scratch);
    }
    for (int k = 0; l->slots && k < l->nslots; k++) {
        if (l->slots[k].mem) l->cfg.slot_free(l->slots[k].mem, l->cfg.slot_ctx);
        free(l->slots[k].good);
        free(l->slots[k].spans);
    }
    data_close(l->packed);
    pthread_mutex_destroy(&l->mu);
    pthread_cond_destroy(&l->work_cv);
    pthread_cond_destroy(&l->ready_cv);
    pthread_cond_destroy(&l->idle_cv);
    free(l->slots);
    free(l->workers);
    free(l->stats);
    free(l->order);
    free(l->cache);
    free(l->cached);
    free(l->error);
    free(l);
}

/* --- queries ----------------------------------------------------------------- */

int64_t loader_batches_per_epoch(const struct loader *l) { return l->nbatches; }

int loader_workers(const struct loader *l) { return l->cfg.workers; }

int loader_worker_stats(struct loader *l, int worker, struct loader_worker_stats *out) {
    if (worker < 0 || worker >= l->nworkers)
        return err_set("loader: no worker %d (there are %d)", worker, l->nworkers);
    pthread_mutex_lock(&l->mu);
    *out = l->stats[worker];
    pthread_mutex_unlock(&l->mu);
    if (l->cfg.workers > 0) {
        clockid_t clock;
        int64_t ns;
        if (pthread_getcpuclockid(l->workers[worker].thread, &clock) == 0 && (ns = os_clock_ns(clock)) >= 0)
            out->cpu_ns = ns;
    }
    return 0;
}

const char *loader_error(struct loader *l) {
    pthread_mutex_lock(&l->mu);
    const char *e = l->error;
    pthread_mutex_unlock(&l->mu);
    return e;
}

int64_t loader_skipped(struct loader *l, char *last, size_t len) {
    pthread_mutex_lock(&l->mu);
    int64_t n = l->skipped;
    if (last && len) snprintf(last, len, "%s", l->last_skip);
    pthread_mutex_unlock(&l->mu);
    return n;
}
