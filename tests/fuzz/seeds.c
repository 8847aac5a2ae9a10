/* seeds.c — writes the seed corpora of the fuzz targets: small valid inputs and edge
 * cases, one file each, into OUT/<target>/ (scripts/fuzz.sh runs it on tests/corpus).
 * The output is the same on every run, so regenerating changes nothing in git.
 *
 *   seeds OUT */
#include <glob.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <stb_image_write.h>

#include "harness.h"
#include "train.h"

static char out_dir[512];

/* OUT/target/name, creating OUT/target on the way. */
static const char *seed_path(const char *target, const char *name) {
    static char path[1024];
    snprintf(path, sizeof path, "%s/%s", out_dir, target);
    mkdir(path, 0755);
    snprintf(path, sizeof path, "%s/%s/%s", out_dir, target, name);
    return path;
}

static void put(const char *target, const char *name, const void *data, size_t len) {
    const char *path = seed_path(target, name);
    FILE *f = fopen(path, "wb");
    if (!f || (len && fwrite(data, 1, len, f) != len) || fclose(f) != 0) {
        fprintf(stderr, "seeds: cannot write %s\n", path);
        exit(1);
    }
}

static uint8_t *slurp(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) { fprintf(stderr, "seeds: cannot read %s\n", path); exit(1); }
    fseek(f, 0, SEEK_END);
    *len = (size_t)ftell(f);
    rewind(f);
    uint8_t *b = malloc(*len + 1);
    if (!b || fread(b, 1, *len, f) != *len) exit(1);
    fclose(f);
    return b;
}

static void config_seeds(void) {
    static const struct { const char *name, *text; } cases[] = {
        {"empty.cfg", ""},
        {"bom.cfg", "\xEF\xBB\xBF[loader]\nworkers = 0\n"},
        {"crlf.cfg", "[data]\r\nclasses = 4\r\n\r\n[train]\r\nepochs = 2\r\n"},
        {"quoted.cfg", "[train]\ncheckpoint = \"\"\ntrace = \"a # b.json\"\n[model]\nhidden = \"\"\n"},
        {"lists.cfg", "[data]\nchannels = 3\nmean = 0.1,0.2,0.3\nstd = 0.5, 0.5 ,0.5\n"
                      "[model]\nwidths = 1,2,3,4,5,6,7,8\nblocks = 0,1,2,3,4,5,6,7\n"},
        {"numbers.cfg", "[optim]\nlr = 1e-3\nmomentum = 0.99999\nwarmup = -0\nweight_decay = 0.0\n"
                        "[loader]\nseed = 2147483647\nio_delay_us = +5\n"},
        {"cnn.cfg", "[model]\narch = CNN\nlayers = conv3x3-8 bn relu gap linear\n"},
        {"bad_key.cfg", "[loader]\nwokers = 2\n"},
        {"bad_section.cfg", "[laoder]\n"},
        {"before_section.cfg", "workers = 2\n[loader]\n"},
        {"duplicate.cfg", "[train]\nepochs = 1\nepochs = 2\n"},
        {"unclosed.cfg", "[data\npath = \"x\n"},
        {"overflow.cfg", "[loader]\nbatch = 99999999999999999999999\n"},
        {"mismatch.cfg", "[data]\nchannels = 3\n"},
        {"control.cfg", "[data]\npath = a\x01" "b\n"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        put("config", cases[i].name, cases[i].text, strlen(cases[i].text));
    glob_t g;
    if (glob("configs/*.cfg", 0, NULL, &g) == 0) {
        for (size_t i = 0; i < g.gl_pathc; i++) {
            size_t len;
            uint8_t *b = slurp(g.gl_pathv[i], &len);
            put("config", strrchr(g.gl_pathv[i], '/') + 1, b, len);
            free(b);
        }
        globfree(&g);
    }
}

static void checkpoint_seeds(const char *tmp) {
    struct nn_model *m = fuzz_model();
    struct ckpt_state st = {.fingerprint = FUZZ_FINGERPRINT, .epoch = 2, .step = 40, .batch_in_epoch = 3,
                            .epochs_done = 2, .world_size = 1};
    struct config cfg; /* the model's own config, so the info reader's path is a real one */
    cfg_defaults(&cfg);
    const char *names[] = {"first", "second", "third"};
    if (cfg_set(&cfg, "data.classes=3") || cfg_set(&cfg, "data.height=8") || cfg_set(&cfg, "data.width=8") ||
        cfg_set(&cfg, "model.arch=cnn") || cfg_set(&cfg, "model.layers=conv3x3-4 bn gap linear")) {
        fprintf(stderr, "seeds: %s\n", err_get());
        exit(1);
    }
    char path[600];
    snprintf(path, sizeof path, "%s/seed.ckpt", tmp);
    if (ckpt_save(path, m, &cfg, names, NULL, &st)) { fprintf(stderr, "seeds: %s\n", err_get()); exit(1); }
    size_t len;
    uint8_t *b = slurp(path, &len);
    put("checkpoint", "valid.ckpt", b, len);
    put("checkpoint", "prefix_only.ckpt", b, 40);
    put("checkpoint", "magic_only.ckpt", b, 8);
    st.fingerprint ^= 1;
    if (ckpt_save(path, m, &cfg, names, NULL, &st)) exit(1);
    free(b);
    b = slurp(path, &len);
    put("checkpoint", "other_fingerprint.ckpt", b, len);
    free(b);
}

/* An IDX file in memory: magic, big-endian dims, payload; gzipped on request. */
static size_t idx_bytes(uint8_t *dst, size_t cap, int gz, int ndims, const uint32_t *dims, const uint8_t *px,
                        size_t n) {
    uint8_t raw[1024] = {0, 0, 0x08, (uint8_t)ndims};
    for (int d = 0; d < ndims; d++)
        for (int b = 0; b < 4; b++) raw[4 + 4 * d + b] = (uint8_t)(dims[d] >> (24 - 8 * b));
    size_t len = 4 + 4 * (size_t)ndims + n;
    memcpy(raw + 4 + 4 * ndims, px, n);
    if (!gz) { memcpy(dst, raw, len); return len; }
    z_stream z = {0};
    deflateInit2(&z, 9, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY); /* +16: gzip wrapper */
    z.next_in = raw, z.avail_in = (uInt)len, z.next_out = dst, z.avail_out = (uInt)cap;
    deflate(&z, Z_FINISH);
    deflateEnd(&z);
    return z.total_out;
}

/* The idx target's input: u16 length of the labels file, labels file, images file. */
static void put_idx(const char *name, int gz, uint32_t count, uint32_t h, uint32_t w, uint32_t nlabels) {
    uint8_t px[512], labels[64], lab[256], img[1024], in[1300];
    for (size_t i = 0; i < sizeof px; i++) px[i] = (uint8_t)(i * 37);
    for (size_t i = 0; i < sizeof labels; i++) labels[i] = (uint8_t)(i % 3);
    uint32_t idims[3] = {count, h, w}, ldims[1] = {nlabels};
    size_t nl = idx_bytes(lab, sizeof lab, gz, 1, ldims, labels, nlabels);
    size_t ni = idx_bytes(img, sizeof img, gz, 3, idims, px, (size_t)count * h * w);
    in[0] = (uint8_t)nl, in[1] = (uint8_t)(nl >> 8);
    memcpy(in + 2, lab, nl);
    memcpy(in + 2 + nl, img, ni);
    put("idx", name, in, 2 + nl + ni);
}

static void idx_seeds(void) {
    put_idx("plain.idx", 0, 3, 4, 5, 3);
    put_idx("gzip.idx", 1, 3, 4, 5, 3);
    put_idx("one_pixel.idx", 0, 1, 1, 1, 1);
    put_idx("label_count_differs.idx", 0, 3, 4, 5, 2);
    put_idx("zero_count.idx", 0, 0, 4, 5, 0);
    put("idx", "empty.idx", "", 0);
}

static void packed_seeds(const char *tmp) {
    /* a 3-class folder of 2x3 RGB images, packed by data_pack as ./prepare does */
    char root[600], path[700];
    snprintf(root, sizeof root, "%s/folder", tmp);
    mkdir(root, 0755);
    uint8_t px[18];
    for (int k = 0; k < 3; k++) {
        snprintf(path, sizeof path, "%s/c%d", root, k);
        mkdir(path, 0755);
        for (int j = 0; j < 2; j++) {
            for (int i = 0; i < 18; i++) px[i] = (uint8_t)(k * 50 + j * 9 + i);
            snprintf(path, sizeof path, "%s/c%d/%d.png", root, k, j);
            stbi_write_png(path, 3, 2, 3, px, 9);
        }
    }
    struct dataset *ds;
    snprintf(path, sizeof path, "%s/seed.packed", tmp);
    if (data_open_folder(root, NULL, &ds) || data_pack(ds, path, NULL)) {
        fprintf(stderr, "seeds: %s\n", err_get());
        exit(1);
    }
    data_close(ds);
    size_t len;
    uint8_t *b = slurp(path, &len);
    put("packed", "valid.packed", b, len);
    put("packed", "header_only.packed", b, 64);
    b[36] = 1; /* classes = 1: labels 1 and 2 are then out of range */
    put("packed", "bad_label.packed", b, len);
    free(b);
}

/* Big-endian u32 at p, as PNG headers store them. */
static void be32(uint8_t *p, uint32_t v) {
    for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (24 - 8 * i));
}

static void image_seeds(const char *tmp) {
    char path[700];
    uint8_t px[16 * 17 * 4];
    for (size_t i = 0; i < sizeof px; i++) px[i] = (uint8_t)(i * 13);
    static const struct { const char *name; int w, h, c; } pngs[] = {
        {"gray_16x16.png", 16, 16, 1}, {"rgb_16x16.png", 16, 16, 3}, {"rgba_5x3.png", 5, 3, 4},
        {"gray_alpha_17x16.png", 17, 16, 2}, {"one_pixel.png", 1, 1, 1}};
    for (size_t i = 0; i < sizeof pngs / sizeof pngs[0]; i++)
        stbi_write_png(seed_path("image", pngs[i].name), pngs[i].w, pngs[i].h, pngs[i].c, px,
                       pngs[i].w * pngs[i].c);
    stbi_write_bmp(seed_path("image", "rgb_16x16.bmp"), 16, 16, 3, px);
    stbi_write_jpg(seed_path("image", "rgb_16x16.jpg"), 16, 16, 3, px, 80);
    stbi_write_jpg(seed_path("image", "gray_8x8.jpg"), 8, 8, 1, px, 90);
    /* headers that promise more than the file holds: at and past DATA_MAX_SIDE */
    snprintf(path, sizeof path, "%s/small.png", tmp);
    stbi_write_png(path, 2, 2, 1, px, 2);
    size_t len;
    uint8_t *b = slurp(path, &len);
    static const uint32_t sides[] = {16384, 16385, 0x7fffffff};
    static const char *names[] = {"claims_16384.png", "claims_16385.png", "claims_2g.png"};
    for (int i = 0; i < 3; i++) {
        be32(b + 16, sides[i]); /* IHDR width, height: after signature(8), length(4), "IHDR"(4) */
        be32(b + 20, sides[i]);
        be32(b + 29, (uint32_t)crc32(0, b + 12, 17));
        put("image", names[i], b, len);
    }
    put("image", "truncated.png", b, 24);
    put("image", "empty.png", "", 0);
    free(b);
}

/* The metrics target's seeds: files as train.metrics writes them (train.h), the
 * columns in another order, a resumed run that went back, and refusals. */
static void text_seed(const char *target, const char *name, const char *text) {
    put(target, name, text, strlen(text));
}

static void metrics_seeds(void) {
    text_seed("metrics", "two_epochs.csv",
              METRICS_HEADER "\n"
              "step,0,1,0,0,2.3,0.125,1000.0,0.5000,,\n"
              "step,1,1,1,0.1,1.9,0.375,1200.0,0.0000,,\n"
              "epoch,2,1,2,,2.1,0.25,1100.0,0.2500,,\n"
              "step,2,2,0,0.05,1.2,0.625,1200.0,0.0000,,\n"
              "step,3,2,1,0.01,0.9,0.75,1200.0,0.0000,,\n"
              "epoch,4,2,2,,1.05,0.6875,1200.0,0.0000,1.25,0.875\n");
    text_seed("metrics", "reordered_columns.csv",
              "epoch,kind,loss,step,test_accuracy,accuracy,test_loss,note\n"
              "1,step,2.3,0,,0.125,,a\n"
              "1,step,2.0,1,,0.25,,b\n"
              "1,epoch,2.15,2,0.5,0.1875,1.9,c\n");
    text_seed("metrics", "resumed_and_cut.csv",
              METRICS_HEADER "\n"
              "step,0,1,0,0,2.3,0.125,1000.0,0.5000,,\n"
              "step,1,1,1,0.1,1.9,0.375,1200.0,0.0000,,\n"
              "step,1,1,1,0.1,1.8,0.375,1200.0,0.0000,,\n"
              "step,2,1,2,0.1,1.");
    text_seed("metrics", "header_only.csv", METRICS_HEADER "\n");
    text_seed("metrics", "old_layout.csv", "step,epoch,batch,lr,loss,correct,images\n0,1,0,0,2.3,2,16\n");
    text_seed("metrics", "bad_accuracy.csv", METRICS_HEADER "\nstep,0,1,0,0,2.3,1.5,1000.0,0.5,,\n");
    put("metrics", "empty.csv", "", 0);
}

int main(int argc, char **argv) {
    if (argc != 2) { fprintf(stderr, "usage: seeds OUT_DIR\n"); return 2; }
    snprintf(out_dir, sizeof out_dir, "%s", argv[1]);
    mkdir(out_dir, 0755);
    char tmp[] = "/tmp/nostall-seeds-XXXXXX";
    if (!mkdtemp(tmp)) return 1;
    config_seeds();
    checkpoint_seeds(tmp);
    idx_seeds();
    packed_seeds(tmp);
    image_seeds(tmp);
    metrics_seeds();
    nftw(tmp, fuzz_rm_entry, 8, FTW_DEPTH | FTW_PHYS);
    return 0;
}
