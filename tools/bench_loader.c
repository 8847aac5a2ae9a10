/* bench_loader.c — `./bench loader`: throughput of the loader alone.
 *
 *   int bench_loader(int argc, char **argv);   (bench.h; argv[0] = "loader")
 *
 * On the prepared Fashion-MNIST PNG folder, for workers = 0, 1, 2 and cache = none,
 * memory, packed, one epoch each with resnet_small's augmentation (crop pad 2, flip):
 * images/s delivered to a consumer that does nothing else, and per worker the rate of
 * read + decode + augment alone. cache = memory is timed on its second epoch (the
 * first one fills the cache). All numbers come from this one run.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench.h"
#include "data.h"
#include "error.h"
#include "loader.h"
#include "os.h"

struct bench_result {
    double images_per_s;
    double worker_rate;   /* samples per second of read+decode+augment time, per worker */
    double cpu_share;     /* worker CPU time / wall time, summed over workers */
};

static int run_epochs(const struct dataset *ds, const struct loader_config *cfg, int warmup,
                      struct bench_result *r) {
    struct loader *l;
    if (loader_create(cfg, ds, &l)) return -1;
    int64_t t0 = 0, images = 0, first_t0 = os_now_ns();
    for (int epoch = 0; epoch <= warmup; epoch++) {
        if (loader_start_epoch(l, epoch)) goto fail;
        t0 = os_now_ns();
        images = 0;
        const struct batch *b;
        int rc;
        while ((rc = loader_next_batch(l, &b)) == 1) {
            images += b->n;
            loader_release_batch(l, b);
        }
        if (rc < 0) goto fail;
    }
    double wall = (double)(os_now_ns() - t0) / 1e9;
    r->images_per_s = (double)images / wall;
    int64_t samples = 0, busy_ns = 0, cpu_ns = 0;
    for (int w = 0; w < (cfg->workers ? cfg->workers : 1); w++) {
        struct loader_worker_stats st;
        loader_worker_stats(l, w, &st);
        samples += st.samples;
        busy_ns += st.read_ns + st.decode_ns + st.augment_ns;
        cpu_ns += st.cpu_ns;
    }
    /* over all epochs run, warm-up included: a worker's own speed, cache or not */
    r->worker_rate = busy_ns ? (double)samples / ((double)busy_ns / 1e9) : 0;
    r->cpu_share = (double)cpu_ns / (double)(os_now_ns() - first_t0);
    loader_destroy(l);
    return 0;
fail:
    loader_destroy(l);
    return -1;
}

int bench_loader(int argc, char **argv) {
    const char *dir = "data/fashion-mnist/train";
    struct loader_config cfg;
    loader_config_default(&cfg);
    cfg.augment = 1;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--data") && i + 1 < argc) dir = argv[++i];
        else if (!strcmp(argv[i], "--batch") && i + 1 < argc) cfg.batch = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--prefetch") && i + 1 < argc) cfg.prefetch = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--io-delay-us") && i + 1 < argc)
            cfg.io_delay_us = (unsigned)atoi(argv[++i]);
        else {
            int help = !strcmp(argv[i], "--help") || !strcmp(argv[i], "-h");
            fprintf(help ? stdout : stderr, "usage: ./bench loader [--data DIR] [--batch N] [--prefetch N] "
                            "[--io-delay-us N]\n  DIR defaults to %s (./prepare "
                            "fashion-mnist makes it)\n", dir);
            return help ? 0 : 2;
        }
    }
    struct data_folder_options opt = {0, 0, 0, 0};
    struct dataset *ds;
    if (data_open_folder(dir, &opt, &ds)) {
        fprintf(stderr, "bench loader: %s\n  run ./prepare fashion-mnist first\n", err_get());
        return 1;
    }
    printf("loader alone: %s, %lld images %dx%dx%d, batch %d, prefetch %d, io_delay_us %u,\n"
           "augment crop pad %d + flip; one epoch per row (cache = memory: its second),\n"
           "after one untimed epoch that warms the page cache\n\n",
           ds->path, (long long)ds->count, ds->height, ds->width, ds->channels, cfg.batch,
           cfg.prefetch, cfg.io_delay_us, cfg.crop_pad);
    /* The first pass over 60,000 small files may come from the disk; every row should
     * see the same warm page cache. */
    struct bench_result warm;
    cfg.workers = 2;
    if (run_epochs(ds, &cfg, 0, &warm)) {
        fprintf(stderr, "bench loader: %s\n", err_get());
        data_close(ds);
        return 1;
    }
    printf("| workers | cache  | images/s | per-worker read+decode+augment/s | worker CPU / wall |\n");
    printf("| ---: | --- | ---: | ---: | ---: |\n");
    double best[CFG_CACHE_PACKED + 1] = {0};
    int rc = 0;
    for (int cache = CFG_CACHE_NONE; cache <= CFG_CACHE_PACKED && !rc; cache++) {
        for (int workers = 0; workers <= 2; workers++) {
            struct bench_result r;
            cfg.workers = workers;
            cfg.cache = (enum cfg_cache)cache;
            if (run_epochs(ds, &cfg, cache == CFG_CACHE_MEMORY, &r)) {
                fprintf(stderr, "bench loader: %s\n", err_get());
                rc = 1;
                break;
            }
            printf("| %d | %-6s | %8.0f | %8.0f | %4.2f |\n", workers, cfg_enum_name("loader.cache", cache),
                   r.images_per_s, r.worker_rate, r.cpu_share);
            fflush(stdout);
            if (cache == CFG_CACHE_NONE && workers == 1) best[CFG_CACHE_NONE] = r.worker_rate;
            if (r.images_per_s > best[cache]) best[cache] = cache ? r.images_per_s : best[cache];
        }
    }
    if (!rc && cfg.io_delay_us == 0) /* the targets are for the data as it is on disk */
        printf("\none worker decodes+augments %.0f PNGs/s (target >= 20000): %s\n"
               "cache = packed serves up to %.0f images/s (target >= 200000): %s\n",
               best[CFG_CACHE_NONE], best[CFG_CACHE_NONE] >= 20000 ? "met" : "NOT met",
               best[CFG_CACHE_PACKED], best[CFG_CACHE_PACKED] >= 200000 ? "met" : "NOT met");
    data_close(ds);
    return rc;
}
