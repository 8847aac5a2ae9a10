/* test_checkpoint.c — round trip, the model reopened from the file alone, every kind of
 * refusal (leaving the model untouched), unwritable paths, failed saves, and SIGKILL
 * during saves. */
#include <criterion/criterion.h>
#include <fcntl.h>
#include <ftw.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <zlib.h>

#include "backend.h"
#include "checkpoint.h"
#include "config.h"
#include "error.h"
#include "models.h"
#include "nn.h"
#include "testutil.h"

#define FP 0x1234abcd5678ef00ull

/* ---- helpers ---- */

static char dir[64];
static char path[128];

static int rm_entry(const char *p, const struct stat *sb, int flag, struct FTW *ftw) {
    (void)sb; (void)flag; (void)ftw;
    return remove(p);
}
static void make_dir(void) {
    strcpy(dir, "/tmp/ns_ckpt_XXXXXX");
    cr_assert_not_null(mkdtemp(dir));
    snprintf(path, sizeof path, "%s/run.ckpt", dir);
}
static void remove_dir(void) { nftw(dir, rm_entry, 8, FTW_DEPTH | FTW_PHYS); }

/* The brief's small model; `classes` changes the linear layer's shape. Weights,
 * momentum and BN buffers are filled with seeded noise so nothing is zero by chance. */
static void make_model(struct nn_model *m, int classes, uint64_t seed) {
    nn_model_init(m, 1, 8, 8, seed);
    cr_assert_eq(nn_add_conv(m, 1, 4, 3, 1, 1, false), 0);
    cr_assert_eq(nn_add_bn(m, 4), 0);
    cr_assert_eq(nn_add_gap(m), 0);
    cr_assert_eq(nn_add_linear(m, 4, classes), 0);
    cr_assert_eq(nn_model_finalize(m, &cpu_vectorized_backend), 0, "%s", err_get());
    uint64_t s = seed + 1;
    tu_fill(&s, m->ps.w, m->ps.total, -1, 1);
    tu_fill(&s, m->ps.v, m->ps.total, -1, 1);
    for (int i = 0; i < m->ps.n_buffers; i++)
        tu_fill(&s, m->ps.buffers[i]->data, m->ps.buffers[i]->numel, 0, 2);
}

static struct ckpt_state make_state(int64_t step) {
    struct ckpt_state st = {.fingerprint = FP, .epoch = 3, .step = step, .batch_in_epoch = 17,
                            .epochs_done = 3, .world_size = 1};
    return st;
}

/* The config text a hand-built model is saved with (only an opened model needs it to match). */
static const struct config *any_config(void) {
    static struct config cfg;
    cfg_defaults(&cfg);
    return &cfg;
}

static int save(const char *p, const struct nn_model *m, const struct ckpt_state *st) {
    return ckpt_save(p, m, any_config(), NULL, NULL, st);
}

/* Everything a load may change, as host bytes, to compare before/after. */
struct snapshot { unsigned char *bytes; size_t len; };

/* The parameters' values and momentum (not the flat buffers' alignment padding, which
 * the file doesn't hold), the BN buffers and the state. */
static struct snapshot snap(const struct nn_model *m, const struct ckpt_state *st) {
    const struct nn_params *ps = &m->ps;
    size_t len = 2 * ps->total * sizeof(float) + 6 * sizeof(int64_t);
    for (int i = 0; i < ps->n_buffers; i++) len += ps->buffers[i]->numel * sizeof(float);
    struct snapshot s = {calloc(1, len), 0};
    cr_assert_not_null(s.bytes);
    for (int k = 0; k < 2; k++)
        for (int i = 0; i < ps->n_params; i++) {
            const float *p = (k ? ps->v - ps->w : 0) + ps->params[i]->data;
            memcpy(s.bytes + s.len, p, ps->params[i]->numel * sizeof(float));
            s.len += ps->params[i]->numel * sizeof(float);
        }
    for (int i = 0; i < ps->n_buffers; i++) {
        size_t b = ps->buffers[i]->numel * sizeof(float);
        memcpy(s.bytes + s.len, ps->buffers[i]->data, b);
        s.len += b;
    }
    int64_t fields[] = {(int64_t)st->fingerprint, st->epoch, st->step, st->batch_in_epoch, st->epochs_done,
                        st->world_size}; /* field by field: the struct's padding is not state */
    memcpy(s.bytes + s.len, fields, sizeof fields);
    s.len += sizeof fields;
    return s;
}

static bool same(struct snapshot a, struct snapshot b) {
    bool eq = a.len == b.len && memcmp(a.bytes, b.bytes, a.len) == 0;
    free(a.bytes);
    free(b.bytes);
    return eq;
}

static unsigned char *read_file(const char *p, size_t *len) {
    FILE *f = fopen(p, "rb");
    cr_assert_not_null(f, "opening %s", p);
    fseek(f, 0, SEEK_END);
    *len = (size_t)ftell(f);
    rewind(f);
    unsigned char *b = malloc(*len + 1);
    cr_assert_eq(fread(b, 1, *len, f), *len);
    fclose(f);
    return b;
}

static void write_file(const char *p, const void *b, size_t len) {
    FILE *f = fopen(p, "wb");
    cr_assert_not_null(f, "creating %s", p);
    cr_assert_eq(fwrite(b, 1, len, f), len);
    cr_assert_eq(fclose(f), 0);
}

/* Loads `p` into m, expecting a refusal whose message holds `what`, and m untouched. */
static void expect_refused(const char *p, struct nn_model *m, const char *what, const char *label) {
    struct ckpt_state st = make_state(-1);
    struct snapshot before = snap(m, &st);
    err_clear();
    cr_expect_eq(ckpt_load(p, m, NULL, &st, FP), -1, "%s: accepted", label);
    cr_expect(strstr(err_get(), what) != NULL, "%s: message lacks '%s': %s", label, what, err_get());
    cr_expect(strstr(err_get(), p) != NULL, "%s: message lacks the path: %s", label, err_get());
    cr_expect(same(before, snap(m, &st)), "%s: a refused load changed the model or state", label);
}

TestSuite(checkpoint, .init = make_dir, .fini = remove_dir);

/* ---- round trip ---- */

Test(checkpoint, round_trip_restores_everything_exactly) {
    struct nn_model a, b;
    make_model(&a, 3, 1);
    make_model(&b, 3, 2);
    struct ckpt_state saved = make_state(1234), loaded = make_state(0);
    cr_assert_eq(save(path, &a, &saved), 0, "%s", err_get());
    struct stat sb;
    cr_assert_eq(stat(path, &sb), 0);
    cr_expect_leq((size_t)sb.st_size, ckpt_file_bytes(&a), "ckpt_file_bytes is not an upper bound");
    cr_assert_eq(ckpt_load(path, &b, NULL, &loaded, FP), 0, "%s", err_get());
    cr_expect(same(snap(&a, &saved), snap(&b, &loaded)), "weights, momentum, buffers or state differ");
    cr_expect_eq(access(path, F_OK) == 0 && access(dir, F_OK) == 0, true);
    char tmp[160];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    cr_expect_neq(access(tmp, F_OK), 0, "the temp file was left behind");
    nn_model_free(&a);
    nn_model_free(&b);
}

/* ---- refusals ---- */

Test(checkpoint, truncated_files_are_refused) {
    struct nn_model m;
    make_model(&m, 3, 1);
    struct ckpt_state st = make_state(5);
    cr_assert_eq(save(path, &m, &st), 0, "%s", err_get());
    size_t len;
    unsigned char *full = read_file(path, &len);
    size_t cuts[] = {0, 1, 7, 8, 23, 24, 27, 28, 40, len / 2, len - 4, len - 1};
    char cut_path[160];
    snprintf(cut_path, sizeof cut_path, "%s/cut.ckpt", dir);
    for (size_t i = 0; i < sizeof cuts / sizeof *cuts; i++) {
        char label[64];
        snprintf(label, sizeof label, "cut at %zu of %zu bytes", cuts[i], len);
        write_file(cut_path, full, cuts[i]);
        expect_refused(cut_path, &m, "truncated", label);
    }
    /* the message gives both sizes */
    write_file(cut_path, full, len / 2);
    struct ckpt_state out;
    cr_expect_eq(ckpt_load(cut_path, &m, NULL, &out, FP), -1);
    char want[64];
    snprintf(want, sizeof want, "truncated: %zu of %zu bytes", len / 2, len);
    cr_expect(strstr(err_get(), want), "message: %s", err_get());
    free(full);
    nn_model_free(&m);
}

Test(checkpoint, a_flipped_bit_anywhere_is_refused) {
    struct nn_model m, other;
    make_model(&m, 3, 1);
    make_model(&other, 3, 9); /* the model loads go into: its contents must survive */
    struct ckpt_state st = make_state(5);
    cr_assert_eq(save(path, &m, &st), 0, "%s", err_get());
    size_t len;
    unsigned char *file = read_file(path, &len);
    char bad[160];
    snprintf(bad, sizeof bad, "%s/flipped.ckpt", dir);
    const int n = 50;
    for (int k = 0; k <= n; k++) {
        size_t at = k == n ? len - 1 : (size_t)k * (len - 1) / (n - 1); /* first byte .. CRC */
        unsigned char bit = (unsigned char)(1u << (k % 8));
        file[at] ^= bit;
        write_file(bad, file, len);
        file[at] ^= bit;
        char label[64];
        snprintf(label, sizeof label, "bit %d of byte %zu of %zu", k % 8, at, len);
        /* which check catches it depends on where it lands; each says what is wrong */
        const char *what = at < 8 ? "not a nostall checkpoint"
                         : at < 12 ? "format version"
                         : at >= 16 && at < 24 ? "bytes"
                         : "checksum mismatch";
        expect_refused(bad, &other, what, label);
    }
    free(file);
    nn_model_free(&m);
    nn_model_free(&other);
}

Test(checkpoint, wrong_fingerprint_is_refused) {
    struct nn_model m;
    make_model(&m, 3, 1);
    struct ckpt_state st = make_state(5);
    st.fingerprint = FP + 1;
    cr_assert_eq(save(path, &m, &st), 0, "%s", err_get());
    expect_refused(path, &m, "config fingerprint differs", "fingerprint");
    cr_expect(strstr(err_get(), "[model]") && strstr(err_get(), "HINT"), "message: %s", err_get());
    nn_model_free(&m);
}

Test(checkpoint, a_different_model_is_refused_naming_the_parameter) {
    struct nn_model small, wide;
    make_model(&small, 3, 1);
    make_model(&wide, 5, 1);
    struct ckpt_state st = make_state(5);
    cr_assert_eq(save(path, &small, &st), 0, "%s", err_get());
    char want[96];
    snprintf(want, sizeof want, "tensor 3 is '%s' (3 x 4 x 1 x 1)", wide.ps.param_names[3]);
    expect_refused(path, &wide, want, "wider linear");
    cr_expect(strstr(err_get(), "2-d, 20 values"), "message: %s", err_get());
    cr_expect(strstr(err_get(), "different model"), "message: %s", err_get());

    /* one more layer: same prefix, different count */
    struct nn_model deeper;
    nn_model_init(&deeper, 1, 8, 8, 1);
    nn_add_conv(&deeper, 1, 4, 3, 1, 1, false);
    nn_add_bn(&deeper, 4);
    nn_add_gap(&deeper);
    nn_add_linear(&deeper, 4, 3);
    nn_add_linear(&deeper, 3, 3);
    cr_assert_eq(nn_model_finalize(&deeper, &cpu_vectorized_backend), 0);
    snprintf(want, sizeof want, "tensor 5 is '%s'", small.ps.buffer_names[0]);
    expect_refused(path, &deeper, want, "extra layer");
    nn_model_free(&small);
    nn_model_free(&wide);
    nn_model_free(&deeper);
}

Test(checkpoint, missing_and_foreign_files_are_refused) {
    struct nn_model m;
    make_model(&m, 3, 1);
    expect_refused(path, &m, "No such file", "missing");
    cr_expect(strstr(err_get(), "HINT: check the path"), "message: %s", err_get());
    const char *text = "[train]\nepochs = 3\nthis is a config file, not a checkpoint\n"
                       "padded well past the header size of a checkpoint..................."
                       "....................................................................";
    write_file(path, text, strlen(text));
    expect_refused(path, &m, "not a nostall checkpoint", "text file");
    expect_refused(dir, &m, "not a regular file", "a directory");
    nn_model_free(&m);
}

/* A small mlp with named classes, as the trainer saves it: the file alone rebuilds it. */
Test(checkpoint, the_model_reopens_from_the_file_alone) {
    struct config cfg;
    cfg_defaults(&cfg);
    const char *sets[] = {"model.arch=mlp", "model.hidden=12,7", "data.height=6", "data.width=5",
                          "data.classes=4", "data.mean=0.25", "data.std=0.5", "loader.seed=3"};
    for (size_t i = 0; i < sizeof sets / sizeof *sets; i++) cr_assert_eq(cfg_set(&cfg, sets[i]), 0, "%s", err_get());
    struct nn_model m, back;
    memset(&m, 0, sizeof m);
    cr_assert_eq(model_build(&m, &cfg), 0, "%s", err_get());
    cr_assert_eq(nn_model_finalize(&m, &cpu_vectorized_backend), 0, "%s", err_get());
    uint64_t s = 5;
    tu_fill(&s, m.ps.w, m.ps.total, -1, 1);
    const char *names[] = {"cat", "dog\nwith a newline", "", "bird"};
    struct ckpt_state st = make_state(77);
    cr_assert_eq(ckpt_save(path, &m, &cfg, names, NULL, &st), 0, "%s", err_get());

    struct ckpt_info info;
    cr_assert_eq(ckpt_open_model(path, &cpu_loop_backend, &back, &info), 0, "%s", err_get());
    cr_expect(cfg_equal(&cfg, &info.cfg), "the config did not come back");
    cr_expect_eq(info.classes, 4);
    cr_expect_str_eq(info.class_names[0], "cat");
    cr_expect_str_eq(info.class_names[1], "dog", "a newline must end the name, not split the list");
    cr_expect_str_eq(info.class_names[2], "2", "a nameless class is called by its number");
    cr_expect_str_eq(info.class_names[3], "bird");
    cr_expect_eq(info.st.step, 77);
    cr_expect_str_eq(info.optim, "sgd");
    cr_expect_eq(info.n_tensors, (size_t)m.ps.n_params + (size_t)m.ps.n_buffers);
    cr_expect_eq(back.ps.be, &cpu_loop_backend);
    cr_assert_eq(back.ps.n_params, m.ps.n_params);
    for (int i = 0; i < m.ps.n_params; i++)
        cr_expect_arr_eq(back.ps.params[i]->data, m.ps.params[i]->data, m.ps.params[i]->numel * sizeof(float),
                         "%s differs", m.ps.param_names[i]);
    ckpt_info_free(&info);
    nn_model_free(&back);
    nn_model_free(&m);
}

/* The CRC made right again after an edit, so the checks behind it are reached. */
static void fix_crc(unsigned char *b, size_t len) {
    uint32_t crc = (uint32_t)crc32(0, b, (unsigned)(len - 4));
    memcpy(b + len - 4, &crc, 4);
}

Test(checkpoint, old_versions_unknown_sections_and_damaged_text_are_refused) {
    struct nn_model m;
    make_model(&m, 3, 1);
    struct ckpt_state st = make_state(5);
    cr_assert_eq(save(path, &m, &st), 0, "%s", err_get());
    size_t len;
    unsigned char *file = read_file(path, &len);
    char bad[160];
    snprintf(bad, sizeof bad, "%s/edited.ckpt", dir);

    unsigned char *b = malloc(len);
    memcpy(b, file, len);
    b[8] = 1; /* version 1 */
    write_file(bad, b, len);
    expect_refused(bad, &m, "format version 1: written before checkpoints described their model", "v1");

    memcpy(b, file, len);
    memcpy(b + 24, "config2", 7); /* the first section's tag */
    fix_crc(b, len);
    write_file(bad, b, len);
    expect_refused(bad, &m, "section 1 is 'config2' where 'config' belongs", "unknown tag");

    /* the class list cut by one line: found by the reader of the text sections */
    memcpy(b, file, len);
    unsigned char *classes = memmem(b, len, "classes\0", 8) /* the tag, not the config key */;
    cr_assert_not_null(classes);
    uint64_t n;
    memcpy(&n, classes + 8, 8);
    classes[16 + n - 1] = ' '; /* the last newline */
    fix_crc(b, len);
    struct ckpt_info info;
    cr_expect_eq(ckpt_read_info_mem(b, len, &info), -1);
    cr_expect(strstr(err_get(), "classes section has 9 lines for 10 classes"), "message: %s", err_get());
    memcpy(b, file, len);
    cr_expect_eq(ckpt_read_info_mem(b, len, &info), 0, "%s", err_get());
    ckpt_info_free(&info);
    free(b);
    free(file);
    nn_model_free(&m);
}

/* ---- saving ---- */

Test(checkpoint, a_stale_temp_file_breaks_nothing) {
    struct nn_model a, b;
    make_model(&a, 3, 1);
    make_model(&b, 3, 2);
    char tmp[160];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    struct ckpt_state st = make_state(1), out;
    cr_assert_eq(save(path, &a, &st), 0, "%s", err_get());
    write_file(tmp, "half a checkpoint", 17); /* what a killed save leaves */
    cr_assert_eq(ckpt_load(path, &b, NULL, &out, FP), 0, "%s", err_get());
    cr_expect_eq(out.step, 1);
    st.step = 2;
    cr_assert_eq(save(path, &a, &st), 0, "%s", err_get());
    cr_expect_neq(access(tmp, F_OK), 0, "the stale temp file is still there");
    cr_assert_eq(ckpt_load(path, &b, NULL, &out, FP), 0, "%s", err_get());
    cr_expect_eq(out.step, 2);
    /* a stale temp that is a symlink must not be written through */
    char victim[160];
    snprintf(victim, sizeof victim, "%s/victim", dir);
    write_file(victim, "keep me", 7);
    cr_assert_eq(symlink(victim, tmp), 0);
    cr_assert_eq(save(path, &a, &st), 0, "%s", err_get());
    size_t vlen;
    unsigned char *v = read_file(victim, &vlen);
    cr_expect(vlen == 7 && memcmp(v, "keep me", 7) == 0, "the save wrote through a symlink");
    free(v);
    nn_model_free(&a);
    nn_model_free(&b);
}

Test(checkpoint, an_unwritable_path_is_reported_before_training) {
    /* Tests run as root, where permission bits don't stop writes: use paths no one can create. */
    char under_file[160];
    snprintf(under_file, sizeof under_file, "%s/plain/run.ckpt", dir);
    char plain[160];
    snprintf(plain, sizeof plain, "%s/plain", dir);
    write_file(plain, "x", 1);
    cr_expect_eq(ckpt_check_writable(under_file, 1000), -1);
    cr_expect(strstr(err_get(), under_file) && strstr(err_get(), "not a directory") &&
              strstr(err_get(), "HINT"), "message: %s", err_get());
    cr_expect_eq(ckpt_check_writable("/proc/nostall/run.ckpt", 1000), -1);
    cr_expect(strstr(err_get(), "/proc/nostall/run.ckpt"), "message: %s", err_get());
    cr_expect_eq(ckpt_check_writable("/proc/run.ckpt", 1000), -1);
    cr_expect(strstr(err_get(), "creating /proc/run.ckpt.tmp failed"), "message: %s", err_get());
    cr_expect_eq(ckpt_check_writable(dir, 1000), -1);
    cr_expect(strstr(err_get(), "not a regular file"), "message: %s", err_get());
    cr_expect_eq(ckpt_check_writable(path, 1 << 20), 0, "%s", err_get());
    cr_expect_neq(access(path, F_OK), 0, "the check left a file at the checkpoint path");

    struct nn_model m;
    make_model(&m, 3, 1);
    struct ckpt_state st = make_state(1);
    cr_expect_eq(save(under_file, &m, &st), -1);
    cr_expect(strstr(err_get(), under_file) && strstr(err_get(), "Not a directory"), "message: %s", err_get());
    nn_model_free(&m);
}

/* RLIMIT_FSIZE makes writes past a size fail (EFBIG) as a full disk would (ENOSPC). */
static void limit_file_size(rlim_t bytes) {
    signal(SIGXFSZ, SIG_IGN);
    struct rlimit r;
    getrlimit(RLIMIT_FSIZE, &r);
    r.rlim_cur = bytes;
    cr_assert_eq(setrlimit(RLIMIT_FSIZE, &r), 0);
}

Test(checkpoint, a_failed_save_keeps_the_old_checkpoint) {
    struct nn_model m, back;
    make_model(&m, 3, 1);
    make_model(&back, 3, 2);
    struct ckpt_state st = make_state(1), out;
    cr_assert_eq(save(path, &m, &st), 0, "%s", err_get());
    struct snapshot good = snap(&m, &st);

    size_t need = ckpt_file_bytes(&m);
    struct stat sb;
    cr_assert_eq(stat(path, &sb), 0);
    limit_file_size((rlim_t)sb.st_size / 2);
    cr_expect_eq(ckpt_check_writable(path, need), -1, "a 'full disk' went unnoticed");
    cr_expect(strstr(err_get(), "reserving") && strstr(err_get(), "HINT: free disk space"),
              "message: %s", err_get());
    tu_fill(&(uint64_t){7}, m.ps.w, m.ps.total, -1, 1);
    st.step = 2;
    cr_expect_eq(save(path, &m, &st), -1, "a save past the size limit succeeded");
    cr_expect(strstr(err_get(), path) && strstr(err_get(), "writing") && strstr(err_get(), "File too large"),
              "message: %s", err_get());
    limit_file_size(RLIM_INFINITY);

    char tmp[160];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    cr_expect_neq(access(tmp, F_OK), 0, "the failed save left its temp file");
    cr_assert_eq(ckpt_load(path, &back, NULL, &out, FP), 0, "%s", err_get());
    cr_expect(same(good, snap(&back, &out)), "the old checkpoint did not survive a failed save");
    nn_model_free(&m);
    nn_model_free(&back);
}

/* ---- SIGKILL during saves ---- */

/* A value every weight of save number `step` holds, exactly representable as a float,
 * so a load can tell a consistent snapshot from a mix of two saves. */
static float pattern(int64_t step, size_t j) { return (float)((step * 31 + (int64_t)j) % 65536); }

static void fill_pattern(struct nn_model *m, int64_t step) {
    for (size_t j = 0; j < m->ps.total; j++) {
        m->ps.w[j] = pattern(step, j);
        m->ps.v[j] = -pattern(step, j);
    }
}

Test(checkpoint, sigkill_during_saves_never_loses_the_checkpoint, .timeout = 60) {
    /* a wide linear layer makes each save ~2 MB, so kills land inside writes and fsyncs */
    struct nn_model m, back;
    for (int k = 0; k < 2; k++) {
        struct nn_model *p = k ? &back : &m;
        nn_model_init(p, 1, 8, 8, 1);
        nn_add_conv(p, 1, 4, 3, 1, 1, false);
        nn_add_bn(p, 4);
        nn_add_gap(p);
        nn_add_linear(p, 4, 50000);
        cr_assert_eq(nn_model_finalize(p, &cpu_vectorized_backend), 0, "%s", err_get());
    }
    struct ckpt_state st = make_state(0), out;
    fill_pattern(&m, 0);
    cr_assert_eq(save(path, &m, &st), 0, "%s", err_get());
    char tmp[160];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);

    uint64_t seed = 12345;
    int64_t last_step = 0, kills_mid_save = 0;
    for (int round = 1; round <= 30; round++) {
        pid_t child = fork();
        cr_assert_geq(child, 0);
        if (child == 0) { /* save forever, each save a new step */
            for (int64_t step = (int64_t)round * 1000000;; step++) {
                fill_pattern(&m, step);
                st.step = step;
                if (save(path, &m, &st)) _exit(1);
            }
        }
        struct timespec delay = {0, 1000000 + (long)(tu_rand_u32(&seed) % 8000000)}; /* 1-9 ms */
        nanosleep(&delay, NULL);
        kill(child, SIGKILL);
        int status;
        waitpid(child, &status, 0);
        cr_assert(WIFSIGNALED(status), "round %d: the saving child failed: exit %d", round,
                  WEXITSTATUS(status));
        kills_mid_save += access(tmp, F_OK) == 0;

        cr_assert_eq(ckpt_load(path, &back, NULL, &out, FP), 0, "round %d: %s", round, err_get());
        cr_assert_geq(out.step, last_step, "round %d: the checkpoint went back in time", round);
        for (int i = 0; i < back.ps.n_params; i++) /* the parameters, not the padding between them */
            for (size_t j = (size_t)(back.ps.params[i]->data - back.ps.w), e = j + back.ps.params[i]->numel; j < e; j++)
                if (back.ps.w[j] != pattern(out.step, j) || back.ps.v[j] != -pattern(out.step, j))
                    cr_assert_fail("round %d: weight %zu is not that of step %lld", round, j, (long long)out.step);
        last_step = out.step;
    }
    cr_expect_gt(kills_mid_save, 0, "no kill landed during a save; the test proved little");
    cr_log_info("30 kills, %lld during a save, last good step %lld", (long long)kills_mid_save,
                (long long)last_step);
    nn_model_free(&m);
    nn_model_free(&back);
}
