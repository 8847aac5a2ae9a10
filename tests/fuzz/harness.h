/* harness.h — what each fuzz target does with one input.
 *
 * Shared by the libFuzzer entry points (tests/fuzz/fuzz_*.c), the seed writer
 * (tests/fuzz/seeds.c) and the regression suite (tests/test_regressions.c), so a kept
 * crash input replays through exactly the code that found it.
 *
 * Each fuzz_<target>() feeds one input to a parser and returns its verdict: 0 (taken)
 * or -1 (refused). A refusal without a message, or a broken round trip, is a bug too:
 * the harness aborts, which libFuzzer and Criterion both report as a crash.
 *
 * Parsers that take paths (IDX, packed, metrics) read the input from a memfd through
 * /proc/self/fd/N; the image target writes it into a one-file folder dataset, so the
 * reader's size checks run in front of stb_image exactly as in training. */
#ifndef NS_FUZZ_HARNESS_H
#define NS_FUZZ_HARNESS_H

#include <ftw.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include "backend.h"
#include "checkpoint.h"
#include "config.h"
#include "data.h"
#include "error.h"
#include "nn.h"
#include "viz.h"

#define FUZZ_FINGERPRINT 0x6e6f7374616c6c21ull /* the checkpoint target's expected config hash */
#define FUZZ_MAX_SAMPLES 64                    /* samples read per dataset input */

static inline void fuzz_fail(const char *target, const char *what) {
    fprintf(stderr, "fuzz %s: %s (last error: '%s')\n", target, what, err_get());
    abort();
}

/* Every refusal must say why. */
static inline int fuzz_verdict(const char *target, int rc) {
    if (rc != 0 && err_get()[0] == 0) fuzz_fail(target, "refused without a message");
    return rc ? -1 : 0;
}

/* ---- config: cfg_load_text, then print -> reload must give the same struct ---- */

static inline int fuzz_config(const uint8_t *data, size_t size) {
    struct config cfg, back;
    err_clear();
    if (fuzz_verdict("config", cfg_load_text(&cfg, (const char *)data, size, "fuzz.cfg")))
        return -1;
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    if (!f) fuzz_fail("config", "open_memstream failed");
    cfg_print(&cfg, f);
    fclose(f);
    if (cfg_load_text(&back, text, len, "printed") != 0) fuzz_fail("config", "printed config does not reload");
    if (!cfg_equal(&cfg, &back) || cfg_fingerprint(&cfg) != cfg_fingerprint(&back))
        fuzz_fail("config", "printed config reloads to a different one");
    free(text);
    return 0;
}

/* ---- checkpoint: ckpt_load_mem into a small finalized model (the resume path), and
 * ckpt_read_info_mem (every section, the config and class names parsed) ---- */

/* conv3x3(1->4) -> BN -> GAP -> linear(4->3) on 1x8x8: 2 params + bias, 2 BN buffers. */
static inline struct nn_model *fuzz_model(void) {
    static struct nn_model m;
    static int built;
    if (!built) {
        nn_model_init(&m, 1, 8, 8, 7);
        if (nn_add_conv(&m, 1, 4, 3, 1, 1, false) || nn_add_bn(&m, 4) || nn_add_gap(&m) ||
            nn_add_linear(&m, 4, 3) || nn_model_finalize(&m, &cpu_vectorized_backend))
            fuzz_fail("checkpoint", "building the model failed");
        built = 1;
    }
    return &m;
}

/* The CRC check turns almost every mutation into one refusal; a second pass with the
 * size field and CRC made right lets the fuzzer reach the fields behind them. */
static inline int fuzz_checkpoint(const uint8_t *data, size_t size) {
    struct nn_model *m = fuzz_model();
    struct ckpt_state st;
    err_clear();
    struct ckpt_info info;
    int rc = fuzz_verdict("checkpoint", ckpt_load_mem(data, size, m, NULL, &st, FUZZ_FINGERPRINT));
    err_clear();
    if (fuzz_verdict("checkpoint", ckpt_read_info_mem(data, size, &info)) == 0) ckpt_info_free(&info);
    if (size < 28) return rc;
    uint8_t *fixed = malloc(size);
    if (!fixed) fuzz_fail("checkpoint", "out of memory");
    memcpy(fixed, data, size);
    uint64_t len = size;
    memcpy(fixed + 16, &len, sizeof len);
    uint32_t crc = (uint32_t)crc32(0, fixed, (uInt)(size - 4));
    memcpy(fixed + size - 4, &crc, sizeof crc);
    err_clear();
    int rc2 = fuzz_verdict("checkpoint", ckpt_load_mem(fixed, size, m, NULL, &st, FUZZ_FINGERPRINT));
    err_clear();
    if (fuzz_verdict("checkpoint", ckpt_read_info_mem(fixed, size, &info)) == 0) {
        if (info.classes < 1 || !info.class_names[info.classes - 1]) fuzz_fail("checkpoint", "info without classes");
        ckpt_info_free(&info);
    }
    free(fixed);
    return rc && rc2 ? -1 : 0;
}

/* ---- datasets from files ---- */

/* Replaces the content of memfd number `slot` (created on first use) with data; returns
 * a path that opens it. */
static inline const char *fuzz_memfile(int slot, const uint8_t *data, size_t size) {
    static int fds[2] = {-1, -1};
    static char paths[2][64];
    if (fds[slot] < 0) {
        fds[slot] = memfd_create("nostall-fuzz", 0);
        if (fds[slot] < 0) fuzz_fail("memfile", "memfd_create failed");
        snprintf(paths[slot], sizeof paths[slot], "/proc/self/fd/%d", fds[slot]);
    }
    if (ftruncate(fds[slot], 0) != 0 || (size && pwrite(fds[slot], data, size, 0) != (ssize_t)size))
        fuzz_fail("memfile", "writing the memfd failed");
    return paths[slot];
}

/* Reads labels and pixels of the first samples of an opened dataset. */
static inline int fuzz_read_samples(const char *target, struct dataset *ds) {
    if (ds->count <= 0 || ds->height <= 0 || ds->width <= 0 || ds->channels <= 0)
        fuzz_fail(target, "opened a dataset with an empty shape");
    uint8_t *px = malloc(data_sample_bytes(ds));
    if (!px) fuzz_fail(target, "out of memory for one sample");
    int rc = 0;
    for (int64_t i = 0; i < ds->count && i < FUZZ_MAX_SAMPLES && !rc; i++) {
        int label = data_label(ds, i);
        if (label < 0 || label >= ds->classes) fuzz_fail(target, "label out of range");
        rc = fuzz_verdict(target, data_read_sample(ds, i, px, NULL));
    }
    free(px);
    return rc;
}

/* IDX: u16 little-endian length L, then L bytes of the labels file, then the images file. */
static inline int fuzz_idx(const uint8_t *data, size_t size) {
    size_t lab = size >= 2 ? (size_t)(data[0] | data[1] << 8) : 0;
    data += size >= 2 ? 2 : size;
    size -= size >= 2 ? 2 : size;
    if (lab > size) lab = size;
    const char *labels = fuzz_memfile(0, data, lab);
    const char *images = fuzz_memfile(1, data + lab, size - lab);
    struct dataset *ds;
    err_clear();
    if (fuzz_verdict("idx", data_open_idx(images, labels, &ds))) return -1;
    int rc = fuzz_read_samples("idx", ds);
    data_close(ds);
    return rc;
}

/* Packed: the whole input is the file; the checksum pass runs on it too. */
static inline int fuzz_packed(const uint8_t *data, size_t size) {
    const char *path = fuzz_memfile(0, data, size);
    struct dataset *ds;
    err_clear();
    if (fuzz_verdict("packed", data_open_packed(path, &ds))) return -1;
    int rc = fuzz_read_samples("packed", ds);
    data_close(ds);
    err_clear();
    fuzz_verdict("packed", data_packed_verify(path, NULL));
    return rc;
}

/* Metrics: the whole input is a train.metrics CSV, drawn as curves (viz.h) into a
 * scratch SVG that is removed again. */
static inline int fuzz_metrics(const uint8_t *data, size_t size) {
    const char *csv = fuzz_memfile(0, data, size);
    static char svg[64];
    if (!svg[0]) snprintf(svg, sizeof svg, "/tmp/nostall-fuzz-curves-%d.svg", (int)getpid());
    err_clear();
    int rc = fuzz_verdict("metrics", curves_write_svg(csv, svg));
    unlink(svg);
    return rc;
}

/* ---- images through the folder reader ---- */

static inline int fuzz_rm_entry(const char *p, const struct stat *s, int f, struct FTW *w) {
    (void)s, (void)f, (void)w;
    return remove(p);
}

static char fuzz_image_root[64];

static inline void fuzz_image_cleanup(void) {
    if (fuzz_image_root[0]) nftw(fuzz_image_root, fuzz_rm_entry, 4, FTW_DEPTH | FTW_PHYS);
}

/* ROOT/c0/x.png holds the input (stb_image decides the format from the bytes). */
static inline const char *fuzz_image_folder(const uint8_t *data, size_t size) {
    static char file[128];
    if (!fuzz_image_root[0]) {
        char tmpl[] = "/tmp/nostall-fuzz-image-XXXXXX";
        if (!mkdtemp(tmpl)) fuzz_fail("image", "mkdtemp failed");
        snprintf(fuzz_image_root, sizeof fuzz_image_root, "%s", tmpl);
        snprintf(file, sizeof file, "%s/c0", tmpl);
        mkdir(file, 0755);
        snprintf(file, sizeof file, "%s/c0/x.png", tmpl);
        atexit(fuzz_image_cleanup);
    }
    FILE *f = fopen(file, "wb");
    if (!f || (size && fwrite(data, 1, size, f) != size) || fclose(f) != 0)
        fuzz_fail("image", "writing the image file failed");
    return fuzz_image_root;
}

/* Opens the folder as training does: sizes from the first image (then reads it if it
 * is small), and a fixed 16x16 RGB with resizing; then 16x16 gray, other sizes refused. */
static inline int fuzz_image(const uint8_t *data, size_t size) {
    static const struct data_folder_options opts[3] = {
        {0, 0, 0, 1}, {16, 16, 3, 1}, {16, 16, 1, 0}};
    const char *root = fuzz_image_folder(data, size);
    int taken = 0;
    for (int k = 0; k < 3; k++) {
        struct dataset *ds;
        err_clear();
        if (fuzz_verdict("image", data_open_folder(root, &opts[k], &ds))) continue;
        if (ds->count != 1) fuzz_fail("image", "a one-file folder has another sample count");
        if (data_sample_bytes(ds) <= (1u << 22) && fuzz_read_samples("image", ds) == 0) taken++;
        data_close(ds);
    }
    return taken ? 0 : -1;
}

#endif
