/* test_regressions.c — every kept fuzz input, replayed through the same harness the
 * fuzzers run (tests/fuzz/harness.h): the seed corpora in tests/corpus/<target>/ and
 * the crash inputs in tests/corpus/regressions/<target>/. Each input must be handled,
 * taken or refused with a message; a crash, a sanitizer report (under make test-asan)
 * or a refusal without a message fails the target's test.
 *
 * Run from the repository root, as make test does. */
#include <criterion/criterion.h>
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz/harness.h"

/* Replays every file of tests/corpus/<sub>; returns how many there were. */
static int replay_dir(const char *sub, int (*run)(const uint8_t *, size_t), int *refused) {
    char dir[256];
    snprintf(dir, sizeof dir, "tests/corpus/%s", sub);
    DIR *d = opendir(dir);
    if (!d) return 0;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        char path[600];
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        struct stat st;
        if (e->d_name[0] == '.' || stat(path, &st) != 0 || !S_ISREG(st.st_mode)) continue;
        FILE *f = fopen(path, "rb");
        cr_assert_not_null(f, "cannot open %s", path);
        /* exactly the file's bytes, so ASan sees a read one past the end */
        uint8_t *buf = malloc(st.st_size ? (size_t)st.st_size : 1);
        cr_assert_eq(fread(buf, 1, (size_t)st.st_size, f), (size_t)st.st_size, "reading %s", path);
        fclose(f);
        int rc = run(buf, (size_t)st.st_size);
        cr_expect(rc == 0 || rc == -1, "%s: the harness returned %d", path, rc);
        *refused += rc != 0;
        free(buf);
        n++;
    }
    closedir(d);
    return n;
}

static void replay(const char *target, int (*run)(const uint8_t *, size_t)) {
    char sub[128];
    int refused = 0;
    int seeds = replay_dir(target, run, &refused);
    snprintf(sub, sizeof sub, "regressions/%s", target);
    int crashes = replay_dir(sub, run, &refused);
    cr_expect_gt(seeds, 0, "no seed corpus in tests/corpus/%s (run scripts/fuzz.sh)", target);
    cr_log_info("%s: %d seeds, %d crash regressions, %d refused", target, seeds, crashes, refused);
}

TestSuite(regressions, .timeout = 120);

Test(regressions, config) { replay("config", fuzz_config); }
Test(regressions, checkpoint) { replay("checkpoint", fuzz_checkpoint); }
Test(regressions, idx) { replay("idx", fuzz_idx); }
Test(regressions, packed) { replay("packed", fuzz_packed); }
Test(regressions, image) { replay("image", fuzz_image); }
Test(regressions, metrics) { replay("metrics", fuzz_metrics); }

/* The seeds hold both kinds on purpose: some inputs must be taken, some refused. */
Test(regressions, seeds_include_valid_and_invalid_inputs) {
    static const struct { const char *file; int (*run)(const uint8_t *, size_t); int rc; } cases[] = {
        {"config/smoke.cfg", fuzz_config, 0},         {"config/bad_key.cfg", fuzz_config, -1},
        {"checkpoint/valid.ckpt", fuzz_checkpoint, 0}, {"idx/plain.idx", fuzz_idx, 0},
        {"idx/gzip.idx", fuzz_idx, 0},                 {"idx/label_count_differs.idx", fuzz_idx, -1},
        {"packed/valid.packed", fuzz_packed, 0},       {"packed/bad_label.packed", fuzz_packed, -1},
        {"image/rgb_16x16.png", fuzz_image, 0},        {"image/rgb_16x16.jpg", fuzz_image, 0},
        {"image/gray_8x8.jpg", fuzz_image, 0},         {"image/progressive_rgb_16x16.jpg", fuzz_image, 0},
        {"image/progressive_gray_17x16.jpg", fuzz_image, 0},
        {"image/progressive_420_16x16.jpg", fuzz_image, 0},
        {"regressions/image/jpeg_scan_uses_undefined_huffman_table.jpg", fuzz_image, -1},
        {"regressions/image/tga_31_bytes_claims_12711x6131.tga", fuzz_image, -1},
        {"image/claims_16385.png", fuzz_image, -1},    {"image/empty.png", fuzz_image, -1},
        {"metrics/two_epochs.csv", fuzz_metrics, 0},   {"metrics/reordered_columns.csv", fuzz_metrics, 0},
        {"metrics/resumed_and_cut.csv", fuzz_metrics, 0}, {"metrics/old_layout.csv", fuzz_metrics, -1},
        {"metrics/bad_accuracy.csv", fuzz_metrics, -1},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char path[256];
        snprintf(path, sizeof path, "tests/corpus/%s", cases[i].file);
        FILE *f = fopen(path, "rb");
        cr_assert_not_null(f, "missing seed %s", path);
        uint8_t buf[1 << 16];
        size_t n = fread(buf, 1, sizeof buf, f);
        fclose(f);
        cr_expect_eq(cases[i].run(buf, n), cases[i].rc, "%s: expected %s (%s)", path,
                     cases[i].rc ? "a refusal" : "it to be taken", err_get());
    }
}
