/* test_loader.c — the loader: every sample once, determinism across worker counts,
 * caches, bad samples, shutdown from any state, resume, the slot allocator hook. */
#include <criterion/criterion.h>
#include <string.h>
#include <time.h>

#include "data.h"
#include "error.h"
#include "fixtures/datagen.h"
#include "loader.h"
#include "os.h"

enum { H = 6, W = 6, C = 1, CLASSES = 3, PER_CLASS = 13, N = CLASSES * PER_CLASS };

static char *tmp, dir[600];
static struct dataset *ds;

static void open_fixture(void) {
    struct data_folder_options opt = {H, W, C, 0};
    cr_assert_eq(data_open_folder(dir, &opt, &ds), 0, "%s", err_get());
}
static void setup(void) {
    tmp = dg_tmpdir();
    snprintf(dir, sizeof dir, "%s/f", tmp);
    dg_make_folder(dir, CLASSES, PER_CLASS, H, W, C);
    open_fixture();
}
static void teardown(void) {
    data_close(ds);
    dg_rm_tree(tmp);
    free(tmp);
}
TestSuite(loader, .init = setup, .fini = teardown, .timeout = 30);

static struct loader_config config(int batch, int workers, int prefetch) {
    struct loader_config c;
    loader_config_default(&c);
    c.batch = batch;
    c.workers = workers;
    c.prefetch = prefetch;
    c.seed = 7;
    return c;
}

static struct loader *make(const struct loader_config *c) {
    struct loader *l;
    cr_assert_eq(loader_create(c, ds, &l), 0, "%s", err_get());
    return l;
}

static double seconds_since(int64_t t0) { return (double)(os_now_ns() - t0) / 1e9; }

/* One epoch's samples in delivery order (ids from the pixels; augmentation off). */
static int epoch_ids(struct loader *l, int64_t epoch, int *ids, int *batches) {
    const struct batch *b;
    int n = 0, rc;
    *batches = 0;
    cr_assert_eq(loader_start_epoch(l, epoch), 0, "%s", err_get());
    while ((rc = loader_next_batch(l, &b)) == 1) {
        for (int k = 0; k < b->n; k++) {
            const uint8_t *px = b->images + (size_t)k * H * W * C;
            cr_assert_lt(n, N);
            ids[n] = dg_sample_id(px);
            cr_assert_eq(b->labels[k], ids[n] / PER_CLASS, "label of sample %d", ids[n]);
            n++;
        }
        (*batches)++;
        loader_release_batch(l, b);
    }
    cr_assert_eq(rc, 0, "%s", err_get());
    return n;
}

Test(loader, every_sample_exactly_once_per_epoch) {
    const int batches_sizes[] = {13, 8}; /* 39 = 3 x 13; 39 = 4 x 8 + 7 */
    for (int workers = 0; workers <= 4; workers++)
        for (int prefetch = 1; prefetch <= 4; prefetch++)
            for (int bs = 0; bs < 2; bs++)
                for (int drop = 0; drop < 2; drop++) {
                    struct loader_config c = config(batches_sizes[bs], workers, prefetch);
                    c.drop_last = drop;
                    struct loader *l = make(&c);
                    int ids[N], nb, batch = c.batch;
                    int want = drop ? N / batch * batch : N;
                    for (int epoch = 0; epoch < 2; epoch++) {
                        int seen[N] = {0};
                        int n = epoch_ids(l, epoch, ids, &nb);
                        cr_assert_eq(n, want, "workers %d prefetch %d batch %d drop %d", workers,
                                     prefetch, batch, drop);
                        cr_assert_eq(nb, loader_batches_per_epoch(l));
                        for (int k = 0; k < n; k++) cr_assert_eq(seen[ids[k]]++, 0, "twice: %d", ids[k]);
                    }
                    loader_destroy(l);
                }
}

/* Data parallel: the ranks' shares of an epoch are positions r, r + world, ... of the
 * one-process order, disjoint, equal in size (the tail of N % world left out). */
Test(loader, ranks_share_the_one_process_order) {
    for (int world = 2; world <= 4; world++) {
        struct loader_config c = config(4, 2, 2);
        struct loader *alone = make(&c);
        int order[N], nb;
        cr_assert_eq(epoch_ids(alone, 1, order, &nb), N);
        loader_destroy(alone);
        int seen[N] = {0};
        for (int r = 0; r < world; r++) {
            c.rank = r;
            c.world = world;
            struct loader *l = make(&c);
            int ids[N], n = epoch_ids(l, 1, ids, &nb);
            cr_assert_eq(n, N / world, "rank %d of %d", r, world);
            cr_assert_eq(nb, (N / world + 3) / 4, "every rank takes the same number of steps");
            for (int k = 0; k < n; k++) {
                cr_assert_eq(ids[k], order[k * world + r], "rank %d of %d, sample %d", r, world, k);
                cr_assert_eq(seen[ids[k]]++, 0, "sample %d given to two ranks", ids[k]);
            }
            loader_destroy(l);
        }
    }
}

Test(loader, shuffle_changes_with_the_epoch_and_off_means_dataset_order) {
    struct loader_config c = config(5, 2, 2);
    struct loader *l = make(&c);
    int a[N], b[N], nb;
    epoch_ids(l, 0, a, &nb);
    epoch_ids(l, 1, b, &nb);
    cr_assert(memcmp(a, b, sizeof a) != 0, "epochs 0 and 1 gave the same order");
    epoch_ids(l, 0, b, &nb);
    cr_assert_arr_eq(a, b, sizeof a, "epoch 0 again gave another order");
    loader_destroy(l);

    c.shuffle = 0;
    l = make(&c);
    epoch_ids(l, 3, a, &nb);
    for (int k = 0; k < N; k++) cr_assert_eq(a[k], k);
    loader_destroy(l);
}

/* All batches of two epochs, images and labels back to back. */
static size_t record(const struct loader_config *c, uint8_t *out, size_t cap) {
    struct loader *l = make(c);
    size_t at = 0;
    for (int epoch = 0; epoch < 2; epoch++) {
        const struct batch *b;
        int rc;
        cr_assert_eq(loader_start_epoch(l, epoch), 0, "%s", err_get());
        while ((rc = loader_next_batch(l, &b)) == 1) {
            size_t img = (size_t)b->n * H * W * C, lab = (size_t)b->n * sizeof *b->labels;
            cr_assert_leq(at + img + lab + 8, cap);
            memcpy(out + at, &b->n, sizeof b->n);
            at += 8;
            memcpy(out + at, b->images, img);
            at += img;
            memcpy(out + at, b->labels, lab);
            at += lab;
            loader_release_batch(l, b);
        }
        cr_assert_eq(rc, 0, "%s", err_get());
    }
    loader_destroy(l);
    return at;
}

Test(loader, same_seed_gives_bit_identical_batches_for_0_1_and_4_workers) {
    enum { CAP = 2 * (N * (H * W * C + 4) + 64 * 8) };
    static uint8_t ref[CAP], got[CAP];
    struct loader_config c = config(8, 0, 3);
    c.augment = 1;
    c.crop_pad = 2;
    c.flip = 1;
    size_t n = record(&c, ref, CAP);
    const int workers[] = {1, 4};
    for (int k = 0; k < 2; k++) {
        c.workers = workers[k];
        cr_assert_eq(record(&c, got, CAP), n);
        cr_assert_arr_eq(got, ref, n, "workers %d differ from workers 0", workers[k]);
    }
    c.seed = 8;
    cr_assert_eq(record(&c, got, CAP), n);
    cr_assert(memcmp(got, ref, n) != 0, "another seed gave the same batches");
}

Test(loader, resume_mid_epoch_continues_exactly) {
    enum { CAP = 2 * (N * (H * W * C + 4) + 64 * 8) };
    static uint8_t full[CAP];
    struct loader_config c = config(5, 2, 2);
    c.augment = 1;
    struct loader *l = make(&c);
    const struct batch *b;
    size_t at = 0, skip_bytes = 0;
    cr_assert_eq(loader_start_epoch(l, 4), 0);
    for (int k = 0; loader_next_batch(l, &b) == 1; k++) {
        memcpy(full + at, b->images, (size_t)b->n * H * W * C);
        at += (size_t)b->n * H * W * C;
        if (k < 3) skip_bytes = at;
        loader_release_batch(l, b);
    }
    cr_assert_eq(loader_start_epoch_at(l, 4, 3), 0, "%s", err_get());
    size_t at2 = skip_bytes;
    while (loader_next_batch(l, &b) == 1) {
        cr_assert_arr_eq(b->images, full + at2, (size_t)b->n * H * W * C, "batch %ld", (long)b->index);
        at2 += (size_t)b->n * H * W * C;
        loader_release_batch(l, b);
    }
    cr_assert_eq(at2, at);
    cr_assert_eq(loader_start_epoch_at(l, 4, loader_batches_per_epoch(l) + 1), -1);
    loader_destroy(l);
}

Test(loader, cache_memory_serves_later_epochs_without_the_files) {
    enum { CAP = 2 * (N * (H * W * C + 4) + 64 * 8) };
    static uint8_t ref[CAP];
    struct loader_config c = config(8, 2, 2);
    c.augment = 1;
    size_t n = record(&c, ref, CAP);

    c.cache = CFG_CACHE_MEMORY;
    struct loader *l = make(&c);
    const struct batch *b;
    size_t at = 0;
    for (int epoch = 0; epoch < 2; epoch++) {
        int rc;
        cr_assert_eq(loader_start_epoch(l, epoch), 0);
        while ((rc = loader_next_batch(l, &b)) == 1) {
            at += 8;
            cr_assert_arr_eq(b->images, ref + at, (size_t)b->n * H * W * C);
            at += (size_t)b->n * (H * W * C + 4);
            loader_release_batch(l, b);
        }
        cr_assert_eq(rc, 0, "epoch %d: %s", epoch, err_get());
        if (epoch == 0) dg_rm_tree(dir); /* from now on only the cache has the pixels */
    }
    cr_assert_eq(at, n);
    loader_destroy(l);
}

Test(loader, cache_packed_gives_the_same_batches_and_refuses_a_foreign_file) {
    enum { CAP = 2 * (N * (H * W * C + 4) + 64 * 8) };
    static uint8_t ref[CAP], got[CAP];
    struct loader_config c = config(8, 2, 2);
    c.augment = 1;
    size_t n = record(&c, ref, CAP);
    char packed[700];
    snprintf(packed, sizeof packed, "%s.packed", dir); /* the default: <dataset path>.packed */
    cr_assert_eq(data_pack(ds, packed, NULL), 0, "%s", err_get());
    c.cache = CFG_CACHE_PACKED;
    for (c.workers = 0; c.workers <= 2; c.workers += 2) {
        cr_assert_eq(record(&c, got, CAP), n);
        cr_assert_arr_eq(got, ref, n);
    }
    /* a packed file of another folder */
    char other[700];
    snprintf(other, sizeof other, "%s/g", tmp);
    dg_make_folder(other, CLASSES, PER_CLASS + 1, H, W, C);
    struct dataset *ods;
    struct data_folder_options opt = {H, W, C, 0};
    cr_assert_eq(data_open_folder(other, &opt, &ods), 0);
    cr_assert_eq(data_pack(ods, packed, NULL), 0);
    data_close(ods);
    struct loader *l;
    cr_assert_eq(loader_create(&c, ds, &l), -1);
    cr_assert(strstr(err_get(), "does not hold"), "%s", err_get());
    c.packed_path = "/nonexistent.packed";
    cr_assert_eq(loader_create(&c, ds, &l), -1);
    cr_assert(strstr(err_get(), "/nonexistent.packed"), "%s", err_get());
}

/* --- bad samples ------------------------------------------------------------------- */

enum bad_kind { BAD_CORRUPT, BAD_EMPTY, BAD_MISSING, BAD_SIZE };

/* Damages sample `id` of the fixture; reopens the dataset where the listing matters. */
static void damage(int id, enum bad_kind kind, char *path, size_t len) {
    dg_sample_path(path, len, dir, PER_CLASS, id);
    if (kind == BAD_CORRUPT) dg_write_file(path, "\x89PNG\r\n\x1a\n\0\0\0\rIHDRjunk", 20);
    if (kind == BAD_EMPTY) dg_write_file(path, "", 0);
    if (kind == BAD_MISSING) unlink(path); /* listed at open, gone at read */
    if (kind == BAD_SIZE) {
        uint8_t px[(H + 2) * W];
        dg_pixels(id, H + 2, W, C, px);
        dg_write_png(path, H + 2, W, C, px);
    }
}

Test(loader, a_bad_sample_is_an_error_naming_its_file) {
    for (int kind = BAD_CORRUPT; kind <= BAD_SIZE; kind++)
        for (int workers = 0; workers <= 3; workers += 3) {
            char path[700];
            data_close(ds);
            dg_rm_tree(dir);
            dg_make_folder(dir, CLASSES, PER_CLASS, H, W, C);
            open_fixture();
            damage(17, kind, path, sizeof path);
            struct loader_config c = config(4, workers, 2);
            struct loader *l = make(&c);
            const struct batch *b;
            int rc;
            cr_assert_eq(loader_start_epoch(l, 0), 0);
            while ((rc = loader_next_batch(l, &b)) == 1) loader_release_batch(l, b);
            cr_assert_eq(rc, -1, "kind %d workers %d", kind, workers);
            cr_assert(strstr(err_get(), path), "kind %d: %s", kind, err_get());
            cr_assert_eq(loader_next_batch(l, &b), -1); /* stays failed for this epoch */
            cr_assert(loader_error(l) && strstr(loader_error(l), path));
            cr_assert_eq(loader_start_epoch(l, 1), 0);  /* and a new epoch may be tried */
            cr_assert_null(loader_error(l));
            loader_destroy(l);
        }
}

Test(loader, a_wrong_size_image_is_resized_when_configured) {
    char path[700];
    damage(17, BAD_SIZE, path, sizeof path);
    data_close(ds);
    struct data_folder_options opt = {H, W, C, 1};
    cr_assert_eq(data_open_folder(dir, &opt, &ds), 0);
    struct loader_config c = config(4, 2, 2);
    struct loader *l = make(&c);
    const struct batch *b;
    int n = 0, rc;
    cr_assert_eq(loader_start_epoch(l, 0), 0);
    while ((rc = loader_next_batch(l, &b)) == 1) { /* resizing changes the id pixels */
        n += b->n;
        loader_release_batch(l, b);
    }
    cr_assert_eq(rc, 0, "%s", err_get());
    cr_assert_eq(n, N);
    loader_destroy(l);
}

Test(loader, skip_leaves_bad_samples_out_and_counts_them) {
    char path[700], last[1024];
    damage(5, BAD_CORRUPT, path, sizeof path);
    damage(30, BAD_MISSING, path, sizeof path);
    enum { CAP = 2 * (N * (H * W * C + 4) + 64 * 8) };
    static uint8_t ref[CAP], got[CAP];
    struct loader_config c = config(4, 0, 2);
    c.on_bad_sample = CFG_BAD_SAMPLE_SKIP;
    c.augment = 1;
    size_t n = record(&c, ref, CAP);
    c.workers = 3;
    cr_assert_eq(record(&c, got, CAP), n);
    cr_assert_arr_eq(got, ref, n, "skips must not depend on the worker count");

    c.augment = 0;
    struct loader *l = make(&c);
    int ids[N], nb;
    cr_assert_eq(epoch_ids(l, 0, ids, &nb), N - 2);
    for (int k = 0; k < N - 2; k++) cr_assert(ids[k] != 5 && ids[k] != 30);
    cr_assert_eq(nb, loader_batches_per_epoch(l)); /* shortened, not dropped */
    cr_assert_eq(loader_skipped(l, last, sizeof last), 2);
    cr_assert(strstr(last, "c2/30.png") || strstr(last, "c0/5.png"), "%s", last);
    loader_destroy(l);

    /* batch 1: a batch whose only sample is bad is not handed out at all */
    c.batch = 1;
    c.shuffle = 0;
    l = make(&c);
    const struct batch *b;
    int count = 0;
    cr_assert_eq(loader_start_epoch(l, 0), 0);
    while (loader_next_batch(l, &b) == 1) {
        cr_assert_eq(b->n, 1);
        count++;
        loader_release_batch(l, b);
    }
    cr_assert_eq(count, N - 2);
    loader_destroy(l);
}

/* --- the ring and shutdown ---------------------------------------------------------- */

static void sleep_ms(int ms) {
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000};
    nanosleep(&ts, NULL);
}

Test(loader, shutdown_returns_promptly_from_any_state) {
    for (int state = 0; state < 4; state++) {
        struct loader_config c = config(4, 4, 2);
        c.io_delay_us = state == 2 ? 50000 : 2000; /* state 2: workers asleep in "I/O" */
        struct loader *l = make(&c);
        const struct batch *b = NULL;
        if (state >= 1) cr_assert_eq(loader_start_epoch(l, 0), 0);
        if (state == 1) { /* ring full: one batch held, the other slot ready */
            cr_assert_eq(loader_next_batch(l, &b), 1);
            sleep_ms(60);
        }
        if (state == 3) { /* mid-epoch, a batch held by the consumer */
            cr_assert_eq(loader_next_batch(l, &b), 1);
            loader_release_batch(l, b);
            cr_assert_eq(loader_next_batch(l, &b), 1);
        }
        /* state 0: no epoch started; state 2: ring empty, workers busy */
        int64_t t0 = os_now_ns();
        loader_destroy(l);
        cr_assert_lt(seconds_since(t0), 0.5, "state %d: destroy took %.3f s", state,
                     seconds_since(t0));
    }
}

Test(loader, asking_with_every_slot_held_is_an_error_not_a_hang) {
    for (int workers = 0; workers <= 2; workers += 2) {
        struct loader_config c = config(4, workers, 2);
        struct loader *l = make(&c);
        const struct batch *a, *b, *x;
        cr_assert_eq(loader_start_epoch(l, 0), 0);
        cr_assert_eq(loader_next_batch(l, &a), 1);
        cr_assert_eq(loader_next_batch(l, &b), 1);
        cr_assert_eq(loader_next_batch(l, &x), -1);
        cr_assert(strstr(err_get(), "held"), "%s", err_get());
        cr_assert_eq(loader_start_epoch(l, 1), -1); /* batches still held */
        loader_release_batch(l, a);
        cr_assert_eq(loader_next_batch(l, &x), 1, "%s", err_get());
        cr_assert_eq(x->index, 2);
        loader_release_batch(l, b);
        loader_release_batch(l, x);
        loader_destroy(l);
    }
}

static int allocs, frees;
static void *count_alloc(size_t bytes, void *ctx) {
    cr_assert_eq(ctx, (void *)&allocs);
    allocs++;
    return malloc(bytes);
}
static void count_free(void *p, void *ctx) {
    cr_assert_eq(ctx, (void *)&allocs);
    frees++;
    free(p);
}

Test(loader, slot_memory_comes_from_the_hook) {
    struct loader_config c = config(8, 2, 3);
    c.slot_alloc = count_alloc;
    c.slot_free = count_free;
    c.slot_ctx = &allocs;
    struct loader *l = make(&c);
    cr_assert_eq(allocs, 3);
    int ids[N], nb;
    cr_assert_eq(epoch_ids(l, 0, ids, &nb), N);
    loader_destroy(l);
    cr_assert_eq(frees, 3);
    c.slot_free = NULL;
    cr_assert_eq(loader_create(&c, ds, &l), -1);
}

Test(loader, batches_carry_timings_and_workers_report_their_time) {
    for (int workers = 0; workers <= 2; workers += 2) {
        struct loader_config c = config(8, workers, 2);
        c.augment = 1;
        c.io_delay_us = 100;
        struct loader *l = make(&c);
        const struct batch *b;
        int64_t total = 0;
        cr_assert_eq(loader_start_epoch(l, 0), 0);
        while (loader_next_batch(l, &b) == 1) {
            int in_spans = 0;
            for (int w = 0; w < (workers ? workers : 1); w++) {
                const struct loader_span *s = &b->spans[w];
                in_spans += s->samples;
                if (s->samples) cr_assert_leq(s->start_ns, s->end_ns);
            }
            cr_assert_eq(in_spans, b->n);
            cr_assert_geq(b->read_ns, (int64_t)b->n * 100000, "io_delay_us is part of read");
            cr_assert_gt(b->decode_ns, 0);
            cr_assert_geq(b->wait_ns, 0);
            cr_assert(b->ring_ready >= 1 && b->ring_ready <= 2);
            cr_assert_eq(b->height, H);
            total += b->n;
            loader_release_batch(l, b);
        }
        cr_assert_eq(total, N);
        int64_t samples = 0;
        for (int w = 0; w < (workers ? workers : 1); w++) {
            struct loader_worker_stats st;
            cr_assert_eq(loader_worker_stats(l, w, &st), 0);
            samples += st.samples;
            cr_assert_gt(st.cpu_ns, 0, "worker %d", w);
        }
        cr_assert_eq(samples, N);
        cr_assert_eq(loader_worker_stats(l, 5, &(struct loader_worker_stats){0}), -1);
        loader_destroy(l);
    }
}

Test(loader, bad_configs_are_refused_with_the_key) {
    struct loader *l;
    struct loader_config c = config(0, 1, 1);
    cr_assert_eq(loader_create(&c, ds, &l), -1);
    cr_assert(strstr(err_get(), "loader.batch"), "%s", err_get());
    c = config(4, -1, 1);
    cr_assert_eq(loader_create(&c, ds, &l), -1);
    cr_assert(strstr(err_get(), "loader.workers"), "%s", err_get());
    c = config(4, 1, 0);
    cr_assert_eq(loader_create(&c, ds, &l), -1);
    cr_assert(strstr(err_get(), "loader.prefetch"), "%s", err_get());
    c = config(4, 1, 1);
    c.augment = 1;
    c.crop_pad = W + 1;
    cr_assert_eq(loader_create(&c, ds, &l), -1);
}

/* The loader's seam with augmentation: loader_config.flip decides whether samples are
 * mirrored. With crop_pad = 0 each image is its sample as written or mirrored left to
 * right; flip = 1 mirrors some and keeps some, flip = 0 mirrors none. */
Test(loader, flip_reaches_the_augmentation) {
    uint8_t want[H * W * C], mirrored[H * W * C];
    for (int flip = 0; flip < 2; flip++) {
        struct loader_config c = config(8, 2, 2);
        c.augment = 1;
        c.crop_pad = 0;
        c.flip = flip;
        struct loader *l = make(&c);
        cr_assert_eq(loader_start_epoch(l, 0), 0, "%s", err_get());
        const struct batch *b;
        int n = 0, n_mirrored = 0, rc;
        while ((rc = loader_next_batch(l, &b)) == 1) {
            for (int k = 0; k < b->n; k++, n++) {
                const uint8_t *px = b->images + (size_t)k * H * W * C;
                bool is_mirror = true, is_plain = true;
                dg_pixels(dg_sample_id(px), H, W, C, want);
                /* a mirrored image carries its id at the end of row 0 */
                int mirrored_id = px[W - 1] | px[W - 2] << 8;
                if (memcmp(px, want, sizeof want)) is_plain = false;
                dg_pixels(mirrored_id, H, W, C, want);
                for (int y = 0; y < H; y++)
                    for (int x = 0; x < W; x++) mirrored[y * W + x] = want[y * W + (W - 1 - x)];
                if (memcmp(px, mirrored, sizeof mirrored)) is_mirror = false;
                cr_assert(is_plain || is_mirror, "sample %d of the epoch is neither its image nor its mirror", n);
                n_mirrored += is_mirror && !is_plain;
            }
            loader_release_batch(l, b);
        }
        cr_assert_eq(rc, 0, "%s", err_get());
        cr_assert_eq(n, N);
        if (flip) cr_expect(n_mirrored > 0 && n_mirrored < N, "flip = 1 mirrored %d of %d samples", n_mirrored, N);
        else cr_expect_eq(n_mirrored, 0, "flip = 0 mirrored %d samples", n_mirrored);
        loader_destroy(l);
    }
}
