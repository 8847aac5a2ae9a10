/* test_data.c — the dataset readers, augmentation, packing and preparation. */
#include <criterion/criterion.h>
#include <string.h>

#include "data.h"
#include "error.h"
#include "fixtures/datagen.h"
#include "testutil.h"

static char *tmp;
static void setup(void) { tmp = dg_tmpdir(); }
static void teardown(void) {
    dg_rm_tree(tmp);
    free(tmp);
}
TestSuite(data, .init = setup, .fini = teardown, .timeout = 20);

static const char *in_tmp(const char *name) {
    static char buf[32][600]; /* a ring, so a test can hold a few at once */
    static int k;
    k = (k + 1) % 32;
    snprintf(buf[k], sizeof buf[k], "%s/%s", tmp, name);
    return buf[k];
}

#define assert_err_names(what) \
    cr_assert(strstr(err_get(), (what)), "error should name %s, got: %s", (what), err_get())

/* --- image folder --------------------------------------------------------------- */

Test(data, folder_reads_classes_labels_and_pixels) {
    const char *dir = in_tmp("f");
    int n = dg_make_folder(dir, 3, 4, 6, 5, 1);
    dg_write_file(in_tmp("f/c1/README.txt"), "not an image", 12); /* ignored */
    struct data_folder_options opt = {6, 5, 1, 0};
    struct dataset *ds;
    cr_assert_eq(data_open_folder(dir, &opt, &ds), 0, "%s", err_get());
    cr_assert_eq(ds->count, n);
    cr_assert_eq(ds->classes, 3);
    cr_assert(ds->reads_files);
    cr_assert_str_eq(data_class_name(ds, 2), "c2");
    uint8_t got[30], want[30];
    for (int i = 0; i < n; i++) {
        cr_assert_eq(data_label(ds, i), i / 4);
        cr_assert_eq(data_read_sample(ds, i, got, NULL), 0, "%s", err_get());
        dg_pixels(i, 6, 5, 1, want);
        cr_assert_arr_eq(got, want, 30, "sample %d", i);
    }
    cr_assert_eq(data_read_sample(ds, n, got, NULL), -1);
    data_close(ds);
}

Test(data, folder_orders_files_naturally_and_takes_size_from_first_image) {
    const char *dir = in_tmp("f");
    uint8_t px[12];
    mkdir(dir, 0777);
    mkdir(in_tmp("f/a"), 0777);
    dg_pixels(10, 3, 4, 1, px);
    dg_write_png(in_tmp("f/a/10.png"), 3, 4, 1, px);
    dg_pixels(2, 3, 4, 1, px);
    dg_write_png(in_tmp("f/a/2.png"), 3, 4, 1, px);
    struct dataset *ds;
    cr_assert_eq(data_open_folder(dir, NULL, &ds), 0, "%s", err_get());
    cr_assert_eq(ds->height, 3);
    cr_assert_eq(ds->width, 4);
    cr_assert_eq(ds->channels, 1);
    char name[700];
    cr_assert(strstr(data_sample_name(ds, 0, name, sizeof name), "a/2.png"), "%s", name);
    cr_assert(strstr(data_sample_name(ds, 1, name, sizeof name), "a/10.png"), "%s", name);
    data_close(ds);
}

Test(data, folder_converts_channels_and_reads_bmp_and_jpeg) {
    const char *dir = in_tmp("f");
    uint8_t gray[4 * 4], rgb[4 * 4 * 3];
    mkdir(dir, 0777);
    mkdir(in_tmp("f/x"), 0777);
    dg_pixels(5, 4, 4, 1, gray);
    dg_write_png(in_tmp("f/x/1.png"), 4, 4, 1, gray);
    stbi_write_bmp(in_tmp("f/x/2.bmp"), 4, 4, 1, gray);
    stbi_write_jpg(in_tmp("f/x/3.jpg"), 4, 4, 1, gray, 95);
    struct data_folder_options opt = {4, 4, 3, 0};
    struct dataset *ds;
    cr_assert_eq(data_open_folder(dir, &opt, &ds), 0, "%s", err_get());
    cr_assert_eq(ds->count, 3);
    for (int i = 0; i < 2; i++) { /* PNG and BMP are lossless */
        cr_assert_eq(data_read_sample(ds, i, rgb, NULL), 0, "%s", err_get());
        for (int p = 0; p < 16; p++)
            for (int c = 0; c < 3; c++) cr_assert_eq(rgb[p * 3 + c], gray[p], "sample %d px %d", i, p);
    }
    cr_assert_eq(data_read_sample(ds, 2, rgb, NULL), 0, "%s", err_get());
    data_close(ds);
}

/* One good image and one bad one in class "c": returns the dataset, index of the bad. */
static struct dataset *folder_with(const char *bad_name, const void *bad, size_t bad_len,
                                   int resize, int64_t *bad_index) {
    uint8_t px[6 * 6];
    mkdir(in_tmp("f"), 0777);
    mkdir(in_tmp("f/c"), 0777);
    dg_pixels(0, 6, 6, 1, px);
    dg_write_png(in_tmp("f/c/0.png"), 6, 6, 1, px);
    if (bad) dg_write_file(in_tmp(bad_name), bad, bad_len);
    struct data_folder_options opt = {6, 6, 1, resize};
    struct dataset *ds;
    cr_assert_eq(data_open_folder(in_tmp("f"), &opt, &ds), 0, "%s", err_get());
    cr_assert_eq(ds->count, 2);
    char name[700];
    *bad_index = strstr(data_sample_name(ds, 0, name, sizeof name), "0.png") ? 1 : 0;
    return ds;
}

Test(data, folder_corrupt_png_is_an_error_naming_the_file) {
    int64_t bad;
    struct dataset *ds = folder_with("f/c/9.png", "\x89PNG\r\n\x1a\ngarbage", 15, 0, &bad);
    uint8_t px[36];
    cr_assert_eq(data_read_sample(ds, bad, px, NULL), -1);
    assert_err_names("f/c/9.png");
    cr_assert_eq(data_read_sample(ds, !bad, px, NULL), 0, "%s", err_get());
    data_close(ds);
}

Test(data, folder_empty_file_is_an_error_naming_the_file) {
    int64_t bad;
    struct dataset *ds = folder_with("f/c/9.png", "", 0, 0, &bad);
    uint8_t px[36];
    cr_assert_eq(data_read_sample(ds, bad, px, NULL), -1);
    assert_err_names("f/c/9.png");
    assert_err_names("empty");
    data_close(ds);
}

Test(data, folder_missing_file_is_an_error_naming_the_file) {
    int64_t bad;
    struct dataset *ds = folder_with("f/c/9.png", "x", 1, 0, &bad);
    unlink(in_tmp("f/c/9.png")); /* gone between listing and reading */
    uint8_t px[36];
    cr_assert_eq(data_read_sample(ds, bad, px, NULL), -1);
    assert_err_names("f/c/9.png");
    data_close(ds);
}

static void write_png_to(const char *name, int h, int w) {
    uint8_t *px = calloc((size_t)h * w, 1);
    dg_write_png(in_tmp(name), h, w, 1, px);
    free(px);
}

Test(data, folder_wrong_size_is_refused_or_resized_as_configured) {
    int64_t bad;
    mkdir(in_tmp("f"), 0777);
    mkdir(in_tmp("f/c"), 0777);
    write_png_to("f/c/9.png", 9, 7);
    struct dataset *ds = folder_with("", NULL, 0, 0, &bad);
    uint8_t px[36];
    cr_assert_eq(data_read_sample(ds, bad, px, NULL), -1);
    assert_err_names("f/c/9.png");
    assert_err_names("7x9");
    data_close(ds);
    ds = folder_with("", NULL, 0, 1, &bad);
    cr_assert_eq(data_read_sample(ds, bad, px, NULL), 0, "%s", err_get());
    data_close(ds);
}

Test(data, folder_refuses_absurd_image_dimensions_before_decoding) {
    write_png_to("small.png", 4, 4);
    size_t len;
    uint8_t *png = dg_read_file(in_tmp("small.png"), &len);
    /* IHDR width and height (big-endian at offsets 16 and 20) -> 20000 x 20000: stb
     * would go on to allocate 400 MB for it, the reader must not */
    const uint8_t big[4] = {0x00, 0x00, 0x4e, 0x20};
    memcpy(png + 16, big, 4);
    memcpy(png + 20, big, 4);
    int64_t bad;
    struct dataset *ds = folder_with("f/c/9.png", png, len, 1, &bad);
    uint8_t px[36];
    cr_assert_eq(data_read_sample(ds, bad, px, NULL), -1);
    assert_err_names("f/c/9.png");
    assert_err_names("20000x20000");
    data_close(ds);
    free(png);
}

Test(data, folder_without_classes_or_images_is_refused) {
    struct dataset *ds;
    mkdir(in_tmp("empty"), 0777);
    cr_assert_eq(data_open_folder(in_tmp("empty"), NULL, &ds), -1);
    assert_err_names("no class folders");
    mkdir(in_tmp("empty/a"), 0777);
    cr_assert_eq(data_open_folder(in_tmp("empty"), NULL, &ds), -1);
    assert_err_names("no images");
    cr_assert_eq(data_open_folder(in_tmp("nope"), NULL, &ds), -1);
    assert_err_names("nope");
}

/* --- IDX ------------------------------------------------------------------------- */

static void make_idx(int gz, int n, int h, int w) {
    uint8_t *px = malloc((size_t)n * h * w), *lab = malloc((size_t)n);
    for (int i = 0; i < n; i++) {
        dg_pixels(i, h, w, 1, px + (size_t)i * h * w);
        lab[i] = (uint8_t)(i % 3);
    }
    uint32_t idims[3] = {(uint32_t)n, (uint32_t)h, (uint32_t)w}, ldims[1] = {(uint32_t)n};
    dg_write_idx(in_tmp("img"), gz, 3, idims, px, (size_t)n * h * w);
    dg_write_idx(in_tmp("lab"), gz, 1, ldims, lab, (size_t)n);
    free(px);
    free(lab);
}

Test(data, idx_reads_gzipped_and_plain) {
    for (int gz = 0; gz < 2; gz++) {
        make_idx(gz, 11, 5, 4);
        struct dataset *ds;
        cr_assert_eq(data_open_idx(in_tmp("img"), in_tmp("lab"), &ds), 0, "%s", err_get());
        cr_assert_eq(ds->count, 11);
        cr_assert_eq(ds->height, 5);
        cr_assert_eq(ds->width, 4);
        cr_assert_eq(ds->channels, 1);
        cr_assert_eq(ds->classes, 3);
        uint8_t got[20], want[20];
        for (int i = 0; i < 11; i++) {
            cr_assert_eq(data_read_sample(ds, i, got, NULL), 0);
            dg_pixels(i, 5, 4, 1, want);
            cr_assert_arr_eq(got, want, 20);
            cr_assert_eq(data_label(ds, i), i % 3);
        }
        data_close(ds);
    }
}

static void truncate_file(const char *path, long drop) {
    cr_assert_eq(truncate(path, dg_file_size(path) - drop), 0);
}

Test(data, idx_truncated_files_are_refused) {
    struct dataset *ds;
    make_idx(0, 11, 5, 4);
    truncate_file(in_tmp("img"), 3);
    cr_assert_eq(data_open_idx(in_tmp("img"), in_tmp("lab"), &ds), -1);
    assert_err_names(in_tmp("img"));

    make_idx(1, 300, 8, 8);
    truncate_file(in_tmp("img"), dg_file_size(in_tmp("img")) / 2);
    cr_assert_eq(data_open_idx(in_tmp("img"), in_tmp("lab"), &ds), -1);
    assert_err_names(in_tmp("img"));
    assert_err_names("truncated");

    dg_write_file(in_tmp("img"), "", 0);
    cr_assert_eq(data_open_idx(in_tmp("img"), in_tmp("lab"), &ds), -1);
    assert_err_names("empty");
}

Test(data, idx_bad_magic_is_refused) {
    struct dataset *ds;
    make_idx(1, 4, 2, 2);
    /* labels given where images belong: 1 dimension instead of 3 */
    cr_assert_eq(data_open_idx(in_tmp("lab"), in_tmp("img"), &ds), -1);
    assert_err_names("bad magic");
    dg_write_file(in_tmp("img"), "PK\3\4this is a zip file", 22);
    cr_assert_eq(data_open_idx(in_tmp("img"), in_tmp("lab"), &ds), -1);
    assert_err_names("bad magic");
}

Test(data, idx_header_length_mismatch_is_refused) {
    struct dataset *ds;
    uint32_t dims[3] = {4, 2, 2};
    uint8_t px[32] = {0};
    for (int gz = 0; gz < 2; gz++) { /* more data than the header says */
        make_idx(gz, 4, 2, 2);
        dg_write_idx(in_tmp("img"), gz, 3, dims, px, sizeof px);
        cr_assert_eq(data_open_idx(in_tmp("img"), in_tmp("lab"), &ds), -1);
        assert_err_names("longer than its header");
    }
    /* images and labels of different splits */
    make_idx(1, 4, 2, 2);
    uint32_t ldims[1] = {3};
    dg_write_idx(in_tmp("lab"), 1, 1, ldims, px, 3);
    cr_assert_eq(data_open_idx(in_tmp("img"), in_tmp("lab"), &ds), -1);
    assert_err_names("3 labels");
}

Test(data, idx_absurd_dimensions_are_refused_without_allocating) {
    struct dataset *ds;
    uint32_t huge[3] = {0x7fffffff, 16384, 16384}, zero[3] = {5, 0, 4};
    make_idx(1, 4, 2, 2);
    for (int gz = 0; gz < 2; gz++) {
        dg_write_idx(in_tmp("img"), gz, 3, huge, (const uint8_t *)"abc", 3);
        cr_assert_eq(data_open_idx(in_tmp("img"), in_tmp("lab"), &ds), -1);
        assert_err_names(in_tmp("img"));
    }
    dg_write_idx(in_tmp("img"), 1, 3, zero, NULL, 0);
    cr_assert_eq(data_open_idx(in_tmp("img"), in_tmp("lab"), &ds), -1);
    assert_err_names("outside");
}

/* --- packed ---------------------------------------------------------------------- */

static struct dataset *packed_fixture(void) {
    dg_make_folder(in_tmp("f"), 3, 5, 6, 5, 2);
    struct data_folder_options opt = {6, 5, 2, 0};
    struct dataset *folder;
    cr_assert_eq(data_open_folder(in_tmp("f"), &opt, &folder), 0, "%s", err_get());
    cr_assert_eq(data_pack(folder, in_tmp("f.packed"), NULL), 0, "%s", err_get());
    return folder;
}

Test(data, packed_holds_exactly_what_it_was_packed_from) {
    struct dataset *folder = packed_fixture(), *p;
    cr_assert_eq(dg_file_size(in_tmp("f.packed.partial")), -1);
    cr_assert_eq(data_packed_verify(in_tmp("f.packed"), NULL), 0, "%s", err_get());
    cr_assert_eq(data_open_packed(in_tmp("f.packed"), &p), 0, "%s", err_get());
    cr_assert_eq(p->count, folder->count);
    cr_assert_eq(p->height, 6);
    cr_assert_eq(p->width, 5);
    cr_assert_eq(p->channels, 2);
    cr_assert_eq(p->classes, 3);
    cr_assert_eq(p->listing_hash, folder->listing_hash);
    cr_assert_eq(p->reads_files, 0);
    uint8_t a[60], b[60];
    for (int64_t i = 0; i < p->count; i++) {
        cr_assert_eq(data_read_sample(folder, i, a, NULL), 0);
        cr_assert_eq(data_read_sample(p, i, b, NULL), 0);
        cr_assert_arr_eq(a, b, 60);
        cr_assert_eq(data_label(p, i), data_label(folder, i));
    }
    data_close(p);
    data_close(folder);
}

Test(data, packed_truncated_bad_magic_and_length_mismatch_are_refused) {
    data_close(packed_fixture());
    struct dataset *p;
    size_t len;
    uint8_t *good = dg_read_file(in_tmp("f.packed"), &len);

    truncate_file(in_tmp("f.packed"), 1);
    cr_assert_eq(data_open_packed(in_tmp("f.packed"), &p), -1);
    assert_err_names("truncated");
    cr_assert_eq(data_packed_verify(in_tmp("f.packed"), NULL), -1);

    dg_write_file(in_tmp("f.packed"), good, 40); /* not even a header */
    cr_assert_eq(data_open_packed(in_tmp("f.packed"), &p), -1);
    assert_err_names(in_tmp("f.packed"));

    uint8_t *bad = malloc(len + 1);
    memcpy(bad, good, len);
    bad[len] = 0;
    dg_write_file(in_tmp("f.packed"), bad, len + 1); /* one byte more than the header says */
    cr_assert_eq(data_open_packed(in_tmp("f.packed"), &p), -1);
    assert_err_names("corrupt");

    memcpy(bad, good, len);
    bad[16] += 1; /* count */
    dg_write_file(in_tmp("f.packed"), bad, len);
    cr_assert_eq(data_open_packed(in_tmp("f.packed"), &p), -1);
    assert_err_names("header says 16 images");

    memcpy(bad, good, len);
    bad[0] = 'X';
    dg_write_file(in_tmp("f.packed"), bad, len);
    cr_assert_eq(data_open_packed(in_tmp("f.packed"), &p), -1);
    assert_err_names("bad magic");

    memcpy(bad, good, len);
    bad[31] = 0x40; /* width 2^30 */
    dg_write_file(in_tmp("f.packed"), bad, len);
    cr_assert_eq(data_open_packed(in_tmp("f.packed"), &p), -1);
    assert_err_names("out of range");

    memcpy(bad, good, len);
    bad[64] = 7; /* label 7 of 3 classes */
    dg_write_file(in_tmp("f.packed"), bad, len);
    cr_assert_eq(data_open_packed(in_tmp("f.packed"), &p), -1);
    assert_err_names("label 7");
    free(bad);
    free(good);
}

Test(data, packed_checksum_catches_damaged_pixels) {
    data_close(packed_fixture());
    size_t len;
    uint8_t *buf = dg_read_file(in_tmp("f.packed"), &len);
    buf[len - 1] ^= 1;
    dg_write_file(in_tmp("f.packed"), buf, len);
    cr_assert_eq(data_packed_verify(in_tmp("f.packed"), NULL), -1);
    assert_err_names("checksum");
    free(buf);
}

Test(data, pack_of_a_bad_image_names_it_and_leaves_no_file) {
    dg_make_folder(in_tmp("f"), 2, 3, 4, 4, 1);
    dg_write_file(in_tmp("f/c1/99.png"), "nope", 4);
    struct data_folder_options opt = {4, 4, 1, 0};
    struct dataset *folder;
    cr_assert_eq(data_open_folder(in_tmp("f"), &opt, &folder), 0, "%s", err_get());
    cr_assert_eq(data_pack(folder, in_tmp("f.packed"), NULL), -1);
    assert_err_names("c1/99.png");
    cr_assert_eq(dg_file_size(in_tmp("f.packed")), -1);
    cr_assert_eq(dg_file_size(in_tmp("f.packed.partial")), -1);
    data_close(folder);
}

/* --- augmentation -------------------------------------------------------------------- */

/* The textbook version: build the zero-padded image, cut the crop, mirror it. */
static void reference_augment(uint8_t *dst, const uint8_t *src, int h, int w, int c, int pad,
                              struct data_crop k) {
    int ph = h + 2 * pad, pw = w + 2 * pad;
    uint8_t *padded = calloc((size_t)ph * pw * c, 1), *crop = malloc((size_t)h * w * c);
    for (int y = 0; y < h; y++)
        memcpy(padded + ((size_t)(y + pad) * pw + pad) * c, src + (size_t)y * w * c, (size_t)w * c);
    for (int y = 0; y < h; y++)
        memcpy(crop + (size_t)y * w * c, padded + ((size_t)(y + pad + k.dy) * pw + pad + k.dx) * c,
               (size_t)w * c);
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++)
            memcpy(dst + ((size_t)y * w + x) * c,
                   crop + ((size_t)y * w + (k.flip ? w - 1 - x : x)) * c, (size_t)c);
    free(padded);
    free(crop);
}

Test(data, augment_matches_the_textbook_crop_and_flip) {
    enum { H = 7, W = 5, C = 3 };
    uint8_t src[H * W * C], got[H * W * C], want[H * W * C];
    uint64_t rng = 42;
    for (int i = 0; i < H * W * C; i++) src[i] = (uint8_t)(1 + tu_rand_u32(&rng) % 255);
    struct data_augment aug = {2, 1};
    int seen[5][5][2] = {{{0}}};
    for (uint64_t i = 0; i < 2000; i++) {
        struct data_crop k = data_augment_draw(&aug, data_sample_key(0, 3, i));
        cr_assert(k.dy >= -2 && k.dy <= 2 && k.dx >= -2 && k.dx <= 2);
        seen[k.dy + 2][k.dx + 2][k.flip] = 1;
        data_augment_apply(got, src, H, W, C, k);
        reference_augment(want, src, H, W, C, 2, k);
        cr_assert_arr_eq(got, want, sizeof got, "dy %d dx %d flip %d", k.dy, k.dx, k.flip);
    }
    for (int a = 0; a < 5; a++)
        for (int b = 0; b < 5; b++)
            for (int f = 0; f < 2; f++) cr_assert(seen[a][b][f], "crop %d %d %d never drawn", a, b, f);
}

Test(data, augment_without_pad_or_flip_is_the_identity_and_keys_are_stable) {
    uint8_t src[12], dst[12];
    for (int i = 0; i < 12; i++) src[i] = (uint8_t)i;
    struct data_augment none = {0, 0};
    data_augment_apply(dst, src, 3, 4, 1, data_augment_draw(&none, 12345));
    cr_assert_arr_eq(dst, src, 12);
    cr_assert_eq(data_sample_key(1, 2, 3), data_sample_key(1, 2, 3));
    cr_assert_neq(data_sample_key(1, 2, 3), data_sample_key(1, 3, 3));
    cr_assert_neq(data_sample_key(1, 2, 3), data_sample_key(1, 2, 4));
    cr_assert_neq(data_sample_key(1, 2, 3), data_sample_key(2, 2, 3));
}

/* --- preparation ---------------------------------------------------------------------- */

/* SRC/{train,t10k}-{images-idx3,labels-idx1}-ubyte.gz with n_train / n_test 5x4 images. */
static void make_fashion_fixture(const char *src, int n_train, int n_test) {
    mkdir(src, 0777);
    const char *split[2] = {"train", "t10k"};
    int n[2] = {n_train, n_test};
    for (int s = 0; s < 2; s++) {
        uint8_t *px = malloc((size_t)n[s] * 20), *lab = malloc((size_t)n[s]);
        for (int i = 0; i < n[s]; i++) {
            dg_pixels(i + 1000 * s, 5, 4, 1, px + (size_t)i * 20);
            lab[i] = (uint8_t)((i * 7) % 10);
        }
        char path[700];
        uint32_t idims[3] = {(uint32_t)n[s], 5, 4}, ldims[1] = {(uint32_t)n[s]};
        snprintf(path, sizeof path, "%s/%s-images-idx3-ubyte.gz", src, split[s]);
        dg_write_idx(path, 1, 3, idims, px, (size_t)n[s] * 20);
        snprintf(path, sizeof path, "%s/%s-labels-idx1-ubyte.gz", src, split[s]);
        dg_write_idx(path, 1, 1, ldims, lab, (size_t)n[s]);
        free(px);
        free(lab);
    }
}

Test(data, prepare_writes_pngs_and_packed_files_then_skips) {
    const char *src = in_tmp("src"), *out = in_tmp("out/fm");
    make_fashion_fixture(src, 23, 7);
    struct data_prepare_result r;
    cr_assert_eq(data_prepare_fashion_mnist(src, out, NULL, &r), 0, "%s", err_get());
    cr_assert_eq(r.written, 30);
    cr_assert_eq(r.skipped, 0);

    /* every sample is OUT/train/<class>/<index>.png with the IDX pixels */
    for (int i = 0; i < 23; i++) {
        char path[700];
        int label = (i * 7) % 10;
        snprintf(path, sizeof path, "%s/train/%s/%d.png", out, DATA_FASHION_MNIST_CLASSES[label], i);
        int w, h, c;
        uint8_t *px = stbi_load(path, &w, &h, &c, 1), want[20];
        cr_assert_not_null(px, "%s missing", path);
        cr_assert(w == 4 && h == 5);
        dg_pixels(i, 5, 4, 1, want);
        cr_assert_arr_eq(px, want, 20);
        stbi_image_free(px);
    }
    /* the folders open with class ids = labels, and the packed file matches them */
    struct dataset *folder, *packed;
    char dir[700], pk[700];
    snprintf(dir, sizeof dir, "%s/test", out);
    snprintf(pk, sizeof pk, "%s/test.packed", out);
    cr_assert_eq(data_open_folder(dir, NULL, &folder), 0, "%s", err_get());
    cr_assert_eq(data_open_packed(pk, &packed), 0, "%s", err_get());
    cr_assert_eq(folder->count, 7);
    cr_assert_eq(folder->classes, 10); /* all class folders, even those with no image */
    cr_assert_eq(packed->listing_hash, folder->listing_hash);
    for (int64_t i = 0; i < 7; i++) {
        uint8_t a[20], b[20];
        char name[700];
        data_sample_name(folder, i, name, sizeof name);
        int idx = atoi(strrchr(name, '/') + 1);
        cr_assert_str_eq(data_class_name(folder, data_label(folder, i)),
                         DATA_FASHION_MNIST_CLASSES[(idx * 7) % 10]);
        cr_assert_eq(data_read_sample(folder, i, a, NULL), 0);
        cr_assert_eq(data_read_sample(packed, i, b, NULL), 0);
        cr_assert_arr_eq(a, b, 20);
        cr_assert_eq(data_label(packed, i), data_label(folder, i));
    }
    data_close(folder);
    data_close(packed);

    /* a second run checks and skips */
    cr_assert_eq(data_prepare_fashion_mnist(src, out, NULL, &r), 0, "%s", err_get());
    cr_assert_eq(r.written, 0);
    cr_assert_eq(r.skipped, 30);
}

Test(data, prepare_rebuilds_a_damaged_split_and_clears_an_interrupted_one) {
    const char *src = in_tmp("src"), *out = in_tmp("fm");
    make_fashion_fixture(src, 12, 6);
    struct data_prepare_result r;
    cr_assert_eq(data_prepare_fashion_mnist(src, out, NULL, &r), 0, "%s", err_get());
    char path[700];
    snprintf(path, sizeof path, "%s/train/%s/3.png", out, DATA_FASHION_MNIST_CLASSES[1]);
    cr_assert_eq(unlink(path), 0, "%s", path); /* image 3 has label 21 % 10 = 1 */
    /* what an interrupted run leaves: a half tree under .partial, a half packed file */
    snprintf(path, sizeof path, "%s/test.partial/%s", out, DATA_FASHION_MNIST_CLASSES[4]);
    mkdir(in_tmp("fm/test.partial"), 0777);
    mkdir(path, 0777);
    dg_write_file(in_tmp("fm/test.packed"), "NSPACKED", 8);

    cr_assert_eq(data_prepare_fashion_mnist(src, out, NULL, &r), 0, "%s", err_get());
    cr_assert_eq(r.written, 18);
    cr_assert_eq(dg_file_size(in_tmp("fm/test.partial")), -1);
    cr_assert_eq(data_packed_verify(in_tmp("fm/test.packed"), NULL), 0, "%s", err_get());
    cr_assert_eq(data_prepare_fashion_mnist(src, out, NULL, &r), 0, "%s", err_get());
    cr_assert_eq(r.skipped, 18);
}

Test(data, prepare_refuses_to_delete_what_it_did_not_write) {
    const char *src = in_tmp("src"), *out = in_tmp("fm");
    make_fashion_fixture(src, 5, 5);
    mkdir(out, 0777);
    mkdir(in_tmp("fm/train"), 0777);
    dg_write_file(in_tmp("fm/train/thesis.tex"), "precious", 8);
    struct data_prepare_result r;
    cr_assert_eq(data_prepare_fashion_mnist(src, out, NULL, &r), -1);
    assert_err_names("thesis.tex");
    cr_assert_eq(dg_file_size(in_tmp("fm/train/thesis.tex")), 8);
}

Test(data, prepare_without_source_says_what_to_install) {
    struct data_prepare_result r;
    cr_assert_eq(data_prepare_fashion_mnist(in_tmp("none"), in_tmp("fm"), NULL, &r), -1);
    assert_err_names("train-images-idx3-ubyte.gz");
    assert_err_names("dataset-fashion-mnist");
}
