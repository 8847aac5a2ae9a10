/* test_config.c — the config parser: defaults are resnet_small, every kind of
 * mistake is reported with file:line and key, --set checks like a file line, a
 * printed config reloads to an equal struct, and no input makes it crash. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "config.h"
#include "error.h"
#include "testutil.h"

#define TMP_TEMPLATE "/tmp/nostall_cfg_XXXXXX"

/* Writes `len` bytes of `text` to a fresh file under /tmp; the caller unlinks it. */
static void write_tmp(char path[sizeof TMP_TEMPLATE], const char *text, size_t len) {
    strcpy(path, TMP_TEMPLATE);
    int fd = mkstemp(path);
    cr_assert(fd >= 0, "mkstemp failed");
    cr_assert_eq(write(fd, text, len), (ssize_t)len);
    close(fd);
}

/* The path of the file that load() wrote last, for checking messages. */
static char last_path[sizeof TMP_TEMPLATE];

static int load_bytes(struct config *cfg, const char *text, size_t len) {
    write_tmp(last_path, text, len);
    int rc = cfg_load(cfg, last_path);
    unlink(last_path);
    return rc;
}

static int load(struct config *cfg, const char *text) {
    return load_bytes(cfg, text, strlen(text));
}

static void expect_in_message(const char *fragment) {
    cr_assert(strstr(err_get(), fragment), "the message lacks \"%s\":\n  %s", fragment,
              err_get());
}

/* Loading fails, the struct is untouched, and the message names "file:line: ", the key
 * and the hint. line 0: the message names the file without a line. */
static void expect_load_error(const char *text, size_t len, int line, const char *key,
                              const char *hint) {
    struct config cfg, before;
    cfg_defaults(&cfg);
    cfg.loader.batch = 7; /* not a default, to see that a failed load changes nothing */
    before = cfg;
    cr_assert_eq(load_bytes(&cfg, text, len), -1, "loaded without error:\n%s", text);
    cr_assert(cfg_equal(&cfg, &before), "a failed load changed the struct");
    char at[64];
    if (line) snprintf(at, sizeof at, "%s:%d: ", last_path, line);
    else snprintf(at, sizeof at, "%s: ", last_path);
    expect_in_message(at);
    expect_in_message(key);
    if (hint) expect_in_message(hint);
}

/* Prints cfg to a file and loads it back. */
static void round_trip(const struct config *cfg, struct config *back) {
    char path[sizeof TMP_TEMPLATE];
    write_tmp(path, "", 0);
    FILE *f = fopen(path, "w");
    cr_assert(f);
    cfg_print(cfg, f);
    fclose(f);
    int rc = cfg_load(back, path);
    unlink(path);
    cr_assert_eq(rc, 0, "the printed config doesn't load: %s", err_get());
}

Test(config, defaults_are_the_resnet_small_recipe) {
    struct config c;
    cfg_defaults(&c);
    cr_assert_eq(c.data.dataset, CFG_DATASET_FOLDER);
    cr_assert_str_eq(c.data.path, "data/fashion-mnist");
    cr_assert_eq(c.data.channels, 1);
    cr_assert_eq(c.data.height, 28);
    cr_assert_eq(c.data.width, 28);
    cr_assert_eq(c.data.classes, 10);
    cr_assert_eq(c.data.mean.n, 1);
    cr_assert_float_eq(c.data.mean.v[0], 0.2860, 1e-12);
    cr_assert_eq(c.data.std.n, 1);
    cr_assert_float_eq(c.data.std.v[0], 0.3530, 1e-12);
    cr_assert_eq(c.loader.batch, 128);
    cr_assert_eq(c.loader.seed, 0);
    cr_assert_eq(c.loader.crop_pad, 2);
    cr_assert(c.loader.flip);
    cr_assert_eq(c.model.arch, CFG_ARCH_RESNET);
    int widths[] = { 16, 32, 64 }, blocks[] = { 1, 1, 1 };
    cr_assert_eq(c.model.widths.n, 3);
    cr_assert_eq(c.model.blocks.n, 3);
    cr_assert_arr_eq(c.model.widths.v, widths, sizeof widths);
    cr_assert_arr_eq(c.model.blocks.v, blocks, sizeof blocks);
    cr_assert_float_eq(c.optim.lr, 0.1, 1e-12);
    cr_assert_float_eq(c.optim.momentum, 0.9, 1e-12);
    cr_assert(c.optim.nesterov);
    cr_assert_float_eq(c.optim.weight_decay, 5e-4, 1e-15);
    cr_assert_eq(c.optim.schedule, CFG_SCHEDULE_LINEAR);
    cr_assert_float_eq(c.optim.warmup, 0.2, 1e-12);
    cr_assert_eq(c.train.kernels, KF_VECTORIZED);
    cr_assert_str_eq(c.train.checkpoint, "");
    cr_assert_eq(cfg_validate(&c, "defaults"), 0, "%s", err_get());
}

Test(config, empty_file_gives_the_defaults) {
    struct config c, d;
    cfg_defaults(&d);
    cr_assert_eq(load(&c, ""), 0, "%s", err_get());
    cr_assert(cfg_equal(&c, &d));
}

static const char every_kind[] =
    "# a comment line\n"
    "\n"
    "[data]\n"
    "dataset = packed            # comment after a value\n"
    "path = \"runs/#1/data\"       # '#' inside quotes is part of the value\n"
    "channels = 3\n"
    "mean = 0.485, 0.456, 0.406\n"
    "std = 0.229,0.224,0.225\n"
    "  height\t=\t32   \n"
    "width=32\n"
    "[loader]\n"
    "pinned = No\n"
    "overlap = false\n"
    "drop_last = 1\n"
    "cache = Memory\n"
    "seed = 2147483647\n"
    "[ model ]\n"
    "arch = mlp\n"
    "hidden = \"\"\n"
    "[optim]\n"
    "lr = 1e-3\n"
    "[train]\n"
    "checkpoint = \"\"\n"
    "trace = runs/trace.json\n"
    "device = cpu";  /* no newline at the end */

static void check_every_kind(const struct config *c) {
    cr_assert_eq(c->data.dataset, CFG_DATASET_PACKED);
    cr_assert_str_eq(c->data.path, "runs/#1/data");
    cr_assert_eq(c->data.channels, 3);
    cr_assert_eq(c->data.mean.n, 3);
    cr_assert_float_eq(c->data.mean.v[2], 0.406, 1e-12);
    cr_assert_float_eq(c->data.std.v[1], 0.224, 1e-12);
    cr_assert_eq(c->data.height, 32);
    cr_assert_eq(c->data.width, 32);
    cr_assert(!c->loader.pinned);
    cr_assert(!c->loader.overlap);
    cr_assert(c->loader.drop_last);
    cr_assert_eq(c->loader.cache, CFG_CACHE_MEMORY);
    cr_assert_eq(c->loader.seed, 2147483647);
    cr_assert_eq(c->model.arch, CFG_ARCH_MLP);
    cr_assert_eq(c->model.hidden.n, 0);
    cr_assert_float_eq(c->optim.lr, 1e-3, 1e-15);
    cr_assert_str_eq(c->train.checkpoint, "");
    cr_assert_str_eq(c->train.trace, "runs/trace.json");
    cr_assert_eq(c->train.device, CFG_DEVICE_CPU);
    cr_assert_eq(c->loader.batch, 128, "a key the file doesn't set keeps its default");
}

Test(config, comments_quotes_blanks_and_case) {
    struct config c;
    cr_assert_eq(load(&c, every_kind), 0, "%s", err_get());
    check_every_kind(&c);
}

Test(config, crlf_and_byte_order_mark_read_like_lf) {
    char crlf[sizeof every_kind * 2 + 3] = "\xEF\xBB\xBF";
    size_t n = 3;
    for (const char *p = every_kind; *p; p++) {
        if (*p == '\n') crlf[n++] = '\r';
        crlf[n++] = *p;
    }
    crlf[n] = 0;
    struct config lf, cr;
    cr_assert_eq(load(&lf, every_kind), 0, "%s", err_get());
    cr_assert_eq(load(&cr, crlf), 0, "%s", err_get());
    cr_assert(cfg_equal(&lf, &cr));
    check_every_kind(&cr);
}

/* One row per mistake: the file, the line and key the message must name, and a hint. */
struct bad_file {
    const char *text;
    int line;
    const char *key;
    const char *hint;
};

static const struct bad_file bad_files[] = {
    { "batch = 64\n[loader]\n", 1, "batch", "before any section; put it under [loader]" },
    { "[data]\n[modle]\n", 2, "modle", "did you mean [model]" },
    { "[xyz]\n", 1, "xyz", "[data], [loader], [model], [optim], [train]" },
    { "[loader\nbatch = 1\n", 1, "[loader", "brackets" },
    { "[loader]\nwrokers = 2\n", 2, "loader.wrokers", "did you mean 'workers'?" },
    { "[loader]\nfoo_bar_baz = 2\n", 2, "foo_bar_baz", "batch, workers, prefetch, pinned" },
    { "[loader]\nlr = 0.1\n", 2, "lr", "belongs in [optim]" },
    { "[model]\nwidth = 16\n", 2, "width", "did you mean 'widths'?" },
    { "[loader]\nbatch = 64\n\nbatch = 32\n", 4, "loader.batch", "lines 2 and 4" },
    { "[loader]\nbatch = 12x\n", 2, "loader.batch", "expected an integer, got '12x'" },
    { "[loader]\nbatch = 1.5\n", 2, "loader.batch", "expected an integer, got '1.5'" },
    { "[loader]\nbatch = 0x10\n", 2, "loader.batch", "expected an integer" },
    { "[loader]\nbatch = 99999999999999999999999\n", 2, "loader.batch", "out of range" },
    { "[loader]\nprefetch = 65\n", 2, "loader.prefetch", "must be in 1..64" },
    { "[loader]\nworkers = -1\n", 2, "loader.workers", "must be in 0..64" },
    { "[optim]\nlr = fast\n", 2, "optim.lr", "expected a number, got 'fast'" },
    { "[optim]\nlr = inf\n", 2, "optim.lr", "expected a number" },
    { "[optim]\nlr = 1e999\n", 2, "optim.lr", "expected a number" },
    { "[optim]\nlr = 0\n", 2, "optim.lr", "must be > 0 and <= 10" },
    { "[optim]\nmomentum = 1\n", 2, "optim.momentum", "must be >= 0 and < 1" },
    { "[loader]\npinned = maybe\n", 2, "loader.pinned", "expected yes or no, got 'maybe'" },
    { "[loader]\ncache = disk\n", 2, "loader.cache", "expected one of none, memory, packed" },
    { "[train]\nkernels = vectorised\n", 2, "train.kernels", "did you mean 'vectorized'?" },
    { "[loader]\nbatch 128\n", 2, "batch 128", "no '='" },
    { "[loader]\n= 128\n", 2, "= 128", "no key" },
    { "[loader]\nbatch =\n", 2, "loader.batch", "empty value" },
    { "[loader]\nbatch =    # no value\n", 2, "loader.batch", "empty value" },
    { "[train]\ncheckpoint =\n", 2, "train.checkpoint", "checkpoint = \"\"" },
    { "[data]\npath = \"data # x\n", 2, "data.path", "never closed" },
    { "[data]\npath = da\"ta\n", 2, "data.path", "double quote" },
    { "[loader]\nbatch = \"\"\n", 2, "loader.batch", "expected an integer, got ''" },
    { "[model]\nwidths = 1,2,3,4,5,6,7,8,9\n", 2, "model.widths", "at most 8" },
    { "[model]\nwidths = 16,,64\n", 2, "model.widths", "entry 2 is empty" },
    { "[model]\nwidths = 16,32,\n", 2, "model.widths", "ends with a comma" },
    { "[model]\nwidths = 16,x,64\n", 2, "model.widths", "entry 2: expected an integer, got 'x'" },
    { "[model]\nwidths = 16,0,64\n", 2, "model.widths", "must be in 1..4096" },
    { "[model]\nwidths = \"\"\n", 2, "model.widths", "needs 1 to 8 values" },
    { "[data]\nstd = 0\n", 2, "data.std", "must be > 0" },
    { "[data]\npath = a\x01z\n", 2, "0x01", "control character" },
    { "[data]\npath = a\rz\n", 2, "0x0d", "control character" },
    /* checks between keys name the line of the key at fault */
    { "[data]\nchannels = 3\nmean = 0.5\nstd = 0.2,0.2,0.2\n", 3, "data.mean",
      "channels = 3" },
    { "[data]\nchannels = 3\nmean = 0.5,0.5,0.5\n", 2, "data.std", "one value per channel" },
    { "[data]\nchannels = 2\n", 2, "data.channels", "1 (grayscale) or 3 (RGB)" },
    { "[model]\nwidths = 16,32\n", 2, "model.blocks", "model.widths has 2" },
    { "[model]\narch = cnn\n", 2, "model.layers", "arch = cnn needs a layer spec" },
};

Test(config, every_mistake_names_file_line_and_key) {
    for (size_t i = 0; i < sizeof bad_files / sizeof bad_files[0]; i++) {
        const struct bad_file *b = &bad_files[i];
        expect_load_error(b->text, strlen(b->text), b->line, b->key, b->hint);
    }
}

Test(config, nul_byte_is_an_error) {
    static const char text[] = "[data]\npath = a\0b\n";
    expect_load_error(text, sizeof text - 1, 2, "0x00", "control character");
}

Test(config, missing_file_and_directory) {
    struct config c;
    cr_assert_eq(cfg_load(&c, "/nonexistent/nostall.cfg"), -1);
    expect_in_message("/nonexistent/nostall.cfg");
    expect_in_message("No such file");
    cr_assert_eq(cfg_load(&c, "/tmp"), -1);
    expect_in_message("/tmp");
}

Test(config, long_lines_and_values_are_rejected_whole) {
    size_t n = CFG_LINE_MAX + 100;
    char *text = malloc(n + 32);
    cr_assert(text);
    strcpy(text, "[data]\npath = ");
    size_t at = strlen(text);
    memset(text + at, 'a', n - at);
    strcpy(text + n, "\n");
    expect_load_error(text, strlen(text), 2, "line is", "more than the 4096 allowed");

    /* fits a line, not the field */
    at = strlen("[data]\npath = ");
    memset(text + at, 'b', CFG_STR_MAX);
    strcpy(text + at + CFG_STR_MAX, "\n");
    expect_load_error(text, strlen(text), 2, "data.path", "more than the 1023 allowed");
    free(text);

    /* the longest value that fits is kept whole */
    char value[CFG_STR_MAX];
    memset(value, 'c', sizeof value - 1);
    value[sizeof value - 1] = 0;
    char set[CFG_STR_MAX + 32];
    snprintf(set, sizeof set, "data.path=%s", value);
    struct config c;
    cfg_defaults(&c);
    cr_assert_eq(cfg_set(&c, set), 0, "%s", err_get());
    cr_assert_str_eq(c.data.path, value);
}

Test(config, set_overrides_like_a_file_line) {
    struct config c;
    cfg_defaults(&c);
    cr_assert_eq(cfg_set(&c, "loader.workers=0"), 0, "%s", err_get());
    cr_assert_eq(cfg_set(&c, " optim.lr = 0.05 "), 0, "%s", err_get());
    cr_assert_eq(cfg_set(&c, "train.checkpoint=\"\""), 0, "%s", err_get());
    cr_assert_eq(cfg_set(&c, "train.kernels=loop"), 0, "%s", err_get());
    cr_assert_eq(cfg_set(&c, "loader.workers=4"), 0, "a later override wins: %s", err_get());
    cr_assert_eq(c.loader.workers, 4);
    cr_assert_float_eq(c.optim.lr, 0.05, 1e-12);
    cr_assert_eq(c.train.kernels, KF_LOOP);

    /* one override may need the next; the caller validates after the last */
    cr_assert_eq(cfg_set(&c, "model.widths=8,16"), 0, "%s", err_get());
    cr_assert_eq(cfg_validate(&c, "--set"), -1);
    expect_in_message("--set: model.blocks");
    cr_assert_eq(cfg_set(&c, "model.blocks=2,2"), 0, "%s", err_get());
    cr_assert_eq(cfg_validate(&c, "--set"), 0, "%s", err_get());
}

struct bad_set {
    const char *assignment, *key, *hint;
};

static const struct bad_set bad_sets[] = {
    { "loader.workers=100", "loader.workers", "must be in 0..64" },
    { "loader.batch=12x", "loader.batch", "expected an integer, got '12x'" },
    { "loader.batch=", "loader.batch", "empty value" },
    { "loader.wrokers=1", "loader.wrokers", "did you mean 'workers'?" },
    { "loadr.workers=1", "loadr", "did you mean [loader]" },
    { "workers=1", "workers", "--set loader.workers=1" },
    { "loader.workers", "loader.workers", "expected section.key=value" },
    { "train.device=tpu", "train.device", "auto, cpu, cuda" },
};

Test(config, bad_overrides_name_set_and_change_nothing) {
    for (size_t i = 0; i < sizeof bad_sets / sizeof bad_sets[0]; i++) {
        struct config c, before;
        cfg_defaults(&c);
        before = c;
        cr_assert_eq(cfg_set(&c, bad_sets[i].assignment), -1, "accepted %s",
                     bad_sets[i].assignment);
        cr_assert(cfg_equal(&c, &before));
        expect_in_message("--set");
        expect_in_message(bad_sets[i].key);
        expect_in_message(bad_sets[i].hint);
    }
}

Test(config, print_then_load_gives_an_equal_struct) {
    struct config c, back;
    cfg_defaults(&c);
    round_trip(&c, &back);
    cr_assert(cfg_equal(&c, &back));
    cr_assert_eq(memcmp(&c, &back, sizeof c), 0, "equal field by field, yet bytes differ");

    /* values that need care: quotes, empty lists, floats with no short decimal form */
    const char *sets[] = {
        "data.path=\" runs/#1 \"", "data.channels=3", "data.mean=0.1,0.2,0.30000000000000004",
        "data.std=1e-05,0.5,1", "model.arch=cnn", "model.layers=conv3x3:32, relu, pool2",
        "model.hidden=\"\"", "optim.lr=0.0123456789012345", "loader.seed=2147483647",
        "train.trace=\"\"", "train.checkpoint=runs/a b.ckpt",
    };
    for (size_t i = 0; i < sizeof sets / sizeof sets[0]; i++)
        cr_assert_eq(cfg_set(&c, sets[i]), 0, "%s: %s", sets[i], err_get());
    cr_assert_eq(cfg_validate(&c, "--set"), 0, "%s", err_get());
    round_trip(&c, &back);
    cr_assert(cfg_equal(&c, &back));
    cr_assert_eq(memcmp(&c, &back, sizeof c), 0);
    cr_assert_str_eq(back.data.path, " runs/#1 ");
    cr_assert_eq(back.model.hidden.n, 0);
}

Test(config, fingerprint_follows_the_model_shape_only) {
    struct config a, b;
    cfg_defaults(&a);
    b = a;
    cr_assert_eq(cfg_fingerprint(&a), cfg_fingerprint(&b));
    cr_assert_eq(cfg_set(&b, "optim.lr=0.05"), 0);
    cr_assert_eq(cfg_set(&b, "loader.workers=8"), 0);
    cr_assert_eq(cfg_set(&b, "data.path=elsewhere"), 0);
    cr_assert_eq(cfg_fingerprint(&a), cfg_fingerprint(&b), "lr, workers, path: same model");
    cr_assert_eq(cfg_set(&b, "model.widths=16,32,128"), 0);
    cr_assert_neq(cfg_fingerprint(&a), cfg_fingerprint(&b), "widths change the model");
    b = a;
    cr_assert_eq(cfg_set(&b, "data.classes=100"), 0);
    cr_assert_neq(cfg_fingerprint(&a), cfg_fingerprint(&b), "classes change the head");
}

Test(config, format_enum_names_and_help) {
    struct config c;
    cfg_defaults(&c);
    char buf[64];
    cr_assert_eq(cfg_format(&c, "model.widths", buf, sizeof buf), 0);
    cr_assert_str_eq(buf, "16,32,64");
    cr_assert_eq(cfg_format(&c, "optim.weight_decay", buf, sizeof buf), 0);
    cr_assert_str_eq(buf, "0.0005");
    cr_assert_eq(cfg_format(&c, "train.checkpoint", buf, sizeof buf), 0);
    cr_assert_str_eq(buf, "\"\"");
    cr_assert_eq(cfg_format(&c, "loader.nope", buf, sizeof buf), -1);
    cr_assert_str_eq(cfg_enum_name("loader.cache", CFG_CACHE_PACKED), "packed");
    cr_assert_str_eq(cfg_enum_name("train.kernels", 5), "?");
    /* train.kernels is backend.h's enum: the config and the backends spell it alike */
    for (int fl = KF_LOOP; fl <= KF_VECTORIZED; fl++)
        cr_expect_str_eq(cfg_enum_name("train.kernels", fl), kernel_flavour_name(fl));
    cr_assert_str_eq(cfg_enum_name("loader.batch", 0), "?");

    char *help = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&help, &len);
    cr_assert(f);
    cfg_print_help(f);
    fclose(f);
    cr_assert(strstr(help, "[loader]") && strstr(help, "io_delay_us"));
    cr_assert(strstr(help, "none, memory, packed"));
    free(help);
}

/* Random bytes, and a valid file with random bytes changed: each load either works or
 * fails with a message naming the input; none crashes (run under ASan to be sure). */
Test(config, any_bytes_load_or_fail_cleanly) {
    static const char alphabet[] = "[]=#\",.\r\n \t0123456789-+eE abcdlorstwy\x01\xff";
    uint64_t seed = 42;
    char buf[1024];
    size_t base_len = strlen(every_kind);
    for (int iter = 0; iter < 20000; iter++) {
        size_t n;
        if (iter % 2) {
            n = tu_rand_u32(&seed) % sizeof buf;
            for (size_t i = 0; i < n; i++)
                buf[i] = iter % 4 == 1 ? (char)tu_rand_u32(&seed)
                                       : alphabet[tu_rand_u32(&seed) % (sizeof alphabet - 1)];
        } else {
            n = base_len < sizeof buf ? base_len : sizeof buf;
            memcpy(buf, every_kind, n);
            for (int k = 0; k < 3; k++)
                buf[tu_rand_u32(&seed) % n] = alphabet[tu_rand_u32(&seed) % (sizeof alphabet - 1)];
        }
        struct config c;
        err_clear();
        int rc = cfg_load_text(&c, buf, n, "fuzz.cfg");
        cr_assert(rc == 0 || rc == -1);
        if (rc) cr_assert(!strncmp(err_get(), "fuzz.cfg", 8), "%s", err_get());
        else cr_assert_eq(cfg_validate(&c, "fuzz.cfg"), 0);
    }
}

/* widths and blocks only have to agree for a resnet, the one arch that reads them */
Test(config, widths_and_blocks_are_checked_only_for_resnet) {
    struct config cfg;
    const char *mlp = "[model]\narch = mlp\nwidths = 16,32\n";
    cr_expect_eq(cfg_load_text(&cfg, mlp, strlen(mlp), "mlp.cfg"), 0, "%s", err_get());
    const char *resnet = "[model]\narch = resnet\nwidths = 16,32\n";
    cr_expect_eq(cfg_load_text(&cfg, resnet, strlen(resnet), "resnet.cfg"), -1);
    cr_expect(strstr(err_get(), "model.blocks"), "%s", err_get());
}

/* The ranges every numeric key is documented with (--help-config), written out here
 * independently of the key table: a bound changed in the table fails the first test,
 * and each range has a bad-file case on each side. A new numeric key needs a row. */
static const struct range_case {
    const char *key;
    double min, max;
    bool min_open, max_open;
    const char *too_low, *too_high;   /* as written in a file */
} range_cases[] = {
    {"data.classes", 1, 100000, false, false, "0", "100001"},
    {"data.height", 1, 4096, false, false, "0", "4097"},
    {"data.width", 1, 4096, false, false, "0", "4097"},
    {"data.channels", 1, 4, false, false, "0", "5"},
    {"data.mean", 0, 1, false, false, "-0.01", "1.01"},
    {"data.std", 0, 1, true, false, "0", "1.01"},
    {"loader.batch", 1, 65536, false, false, "0", "65537"},
    {"loader.workers", 0, 64, false, false, "-1", "65"},
    {"loader.prefetch", 1, 64, false, false, "0", "65"},
    {"loader.io_delay_us", 0, 10000000, false, false, "-1", "10000001"},
    {"loader.seed", 0, 2147483647, false, false, "-1", "2147483648"},
    {"loader.crop_pad", 0, 64, false, false, "-1", "65"},
    {"model.widths", 1, 4096, false, false, "0", "4097"},
    {"model.blocks", 0, 64, false, false, "-1", "65"},
    {"model.hidden", 1, 65536, false, false, "0", "65537"},
    {"optim.lr", 0, 10, true, false, "0", "10.5"},
    {"optim.momentum", 0, 1, false, true, "-0.1", "1"},
    {"optim.weight_decay", 0, 1, false, false, "-0.001", "1.5"},
    {"optim.warmup", 0, 1, false, false, "-0.1", "1.5"},
    {"optim.beta1", 0, 1, false, true, "-0.1", "1"},
    {"optim.beta2", 0, 1, false, true, "-0.1", "1"},
    {"optim.eps", 0, 1, true, false, "0", "1.5"},
    {"train.epochs", 1, 100000, false, false, "0", "100001"},
    {"train.max_steps", 0, 2147483647, false, false, "-1", "2147483648"},
    {"train.eval_every", 0, 100000, false, false, "-1", "100001"},
    {"train.log_every", 1, 1000000, false, false, "0", "1000001"},
    {"train.threads", 0, 4096, false, false, "-1", "4097"},
    {"dist.bucket_kb", 0, 1048576, false, false, "-1", "1048577"},
    {"dist.comm_latency_us", 0, 10000000, false, false, "-1", "10000001"},
    {"dist.comm_gbps", 0, 10000, false, false, "-0.5", "10001"},
    {"dist.timeout_s", 1, 86400, false, false, "0", "86401"},
};

Test(config, every_numeric_key_has_its_documented_range_and_bad_file_cases) {
    struct cfg_range r;
    int n = (int)(sizeof range_cases / sizeof range_cases[0]), found = 0;
    for (int i = 0; cfg_key_range(i, &r) >= 0; i++) {
        if (cfg_key_range(i, &r) == 0) continue;
        const struct range_case *c = NULL;
        for (int k = 0; k < n; k++)
            if (!strcmp(range_cases[k].key, r.key)) c = &range_cases[k];
        cr_expect_not_null(c, "%s has a range but no case here: add its row to range_cases", r.key);
        if (!c) continue;
        found++;
        cr_expect(r.min == c->min && r.max == c->max && r.min_open == c->min_open && r.max_open == c->max_open,
                  "%s: the key table says %s%g, %g%s; documented %s%g, %g%s", r.key, r.min_open ? "(" : "[", r.min,
                  r.max, r.max_open ? ")" : "]", c->min_open ? "(" : "[", c->min, c->max, c->max_open ? ")" : "]");
        const char *name = r.key + strcspn(r.key, ".") + 1;
        for (int side = 0; side < 2; side++) {
            char text[160];
            int len = snprintf(text, sizeof text, "[%.*s]\n%s = %s\n", (int)(name - 1 - r.key), r.key, name,
                               side ? c->too_high : c->too_low);
            expect_load_error(text, (size_t)len, 2, name, NULL);
        }
    }
    cr_expect_eq(found, n, "%d of the %d documented ranges are in the key table", found, n);
}

/* The parser holds to the table: just past each bound is refused with the key named,
 * and a closed bound itself is accepted. */
static void expect_set(const struct cfg_range *r, double v, bool ok) {
    struct config cfg;
    cfg_defaults(&cfg);
    char a[160];
    snprintf(a, sizeof a, r->is_int ? "%s=%.0f" : "%s=%.17g", r->key, v);
    int rc = cfg_set(&cfg, a);
    if (ok) {
        cr_expect_eq(rc, 0, "%s refused: %s", a, err_get());
    } else {
        cr_expect_eq(rc, -1, "%s accepted: the range is wider than the table says", a);
        if (rc) cr_expect(strstr(err_get(), r->key + strcspn(r->key, ".") + 1), "%s: message %s", a, err_get());
    }
}

Test(config, every_numeric_key_refuses_values_past_its_range) {
    struct cfg_range r;
    int ranged = 0;
    for (int i = 0; cfg_key_range(i, &r) >= 0; i++) {
        if (cfg_key_range(i, &r) == 0) continue;
        ranged++;
        double below = r.min_open ? r.min : r.is_int ? r.min - 1 : nextafter(r.min, -INFINITY);
        double above = r.max_open ? r.max : r.is_int ? r.max + 1 : nextafter(r.max, INFINITY);
        expect_set(&r, below, false);
        expect_set(&r, above, false);
        if (!r.is_list && !r.min_open) expect_set(&r, r.min, true);
        if (!r.is_list && !r.max_open) expect_set(&r, r.max, true);
    }
    cr_expect_gt(ranged, 20, "only %d numeric keys found", ranged);
}
