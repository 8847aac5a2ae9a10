/* folder.c — the image-folder reader: DIR/<class>/<image>, decoded with stb_image.
 *
 * Opening lists the tree once (class folders in strcmp order = class ids, files in
 * natural order); reading sample i opens, reads and decodes that one file. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include <stb_image.h>
#include <stb_image_resize.h>

#include "data.h"
#include "error.h"
#include "rng.h"
#include "os.h"

#define MAX_FILE_BYTES (256u << 20) /* no single image file of ours is near this */
#define MAX_PIXELS_PER_BYTE 16384u  /* see probe_image */

struct folder {
    struct dataset ds;
    char *root;
    struct data_folder_options opt;
    char **class_names;
    char *names;          /* "class/file\0" of every sample, back to back */
    size_t names_len, names_cap;
    int64_t *name_at;     /* sample i's name starts at names + name_at[i] */
    int32_t *labels;
    int64_t cap;
};

static struct folder *impl_of(const struct dataset *ds) { return ds->impl; }

static int is_image_name(const char *name) {
    const char *dot = strrchr(name, '.');
    if (!dot || name[0] == '.') return 0;
    return !strcasecmp(dot, ".png") || !strcasecmp(dot, ".jpg") ||
           !strcasecmp(dot, ".jpeg") || !strcasecmp(dot, ".bmp");
}

/* d_type is DT_UNKNOWN on some file systems, and a link may point anywhere: ask stat. */
static int entry_is(const char *dir, const struct dirent *e, mode_t type) {
    if (e->d_type != DT_UNKNOWN && e->d_type != DT_LNK)
        return type == S_IFDIR ? e->d_type == DT_DIR : e->d_type == DT_REG;
    char path[PATH_MAX];
    struct stat st;
    snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
    return stat(path, &st) == 0 && (st.st_mode & S_IFMT) == type;
}

static int cmp_str(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}
static int cmp_natural(const void *a, const void *b) {
    return strverscmp(*(char *const *)a, *(char *const *)b);
}

/* The names in `dir` that are directories (want_dirs) or image files, sorted. */
static int list_dir(const char *dir, int want_dirs, char ***out, int64_t *n_out) {
    DIR *d = opendir(dir);
    if (!d) return err_set("%s: cannot open folder (%s)", dir, strerror(errno));
    char **names = NULL;
    int64_t n = 0, cap = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        if (want_dirs ? !entry_is(dir, e, S_IFDIR)
                      : !(is_image_name(e->d_name) && entry_is(dir, e, S_IFREG)))
            continue;
        if (n == cap) {
            cap = cap ? 2 * cap : 256;
            char **grown = realloc(names, (size_t)cap * sizeof *names);
            if (!grown) goto oom;
            names = grown;
        }
        if (!(names[n] = strdup(e->d_name))) goto oom;
        n++;
    }
    closedir(d);
    if (n > 1) qsort(names, (size_t)n, sizeof *names, want_dirs ? cmp_str : cmp_natural);
    *out = names;
    *n_out = n;
    return 0;
oom:
    closedir(d);
    for (int64_t i = 0; i < n; i++) free(names[i]);
    free(names);
    return err_set("%s: out of memory while listing the folder", dir);
}

static int add_sample(struct folder *f, const char *cls, const char *file, int label) {
    size_t need = strlen(cls) + 1 + strlen(file) + 1;
    if (f->names_len + need > f->names_cap) {
        size_t cap = f->names_cap ? f->names_cap : 1 << 16;
        while (cap < f->names_len + need) cap *= 2;
        char *grown = realloc(f->names, cap);
        if (!grown) return err_set("%s: out of memory listing the images", f->root);
        f->names = grown;
        f->names_cap = cap;
    }
    if (f->ds.count == f->cap) {
        int64_t cap = f->cap ? 2 * f->cap : 1024;
        int64_t *at = realloc(f->name_at, (size_t)cap * sizeof *at);
        if (at) f->name_at = at;
        int32_t *lab = realloc(f->labels, (size_t)cap * sizeof *lab);
        if (lab) f->labels = lab;
        if (!at || !lab) return err_set("%s: out of memory listing the images", f->root);
        f->cap = cap;
    }
    f->name_at[f->ds.count] = (int64_t)f->names_len;
    f->labels[f->ds.count] = label;
    f->names_len += (size_t)sprintf(f->names + f->names_len, "%s/%s", cls, file) + 1;
    f->ds.count++;
    return 0;
}

/* FNV-1a over every relative name: equal hashes = same files in the same order. */
static uint64_t listing_hash(const struct folder *f) {
    uint64_t h = rng_fnv1a(RNG_FNV_START, f->names, f->names_len);
    return h ? h : 1;
}

/* Reads the whole file at `path` into a malloc'd buffer. */
static int read_file(const char *path, uint8_t **buf_out, size_t *len_out) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return err_set("%s: cannot open (%s)", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return err_set("%s: not a regular file", path);
    }
    if (st.st_size == 0) {
        close(fd);
        return err_set("%s: empty file; delete it or replace it with the image", path);
    }
    if ((uint64_t)st.st_size > MAX_FILE_BYTES) {
        close(fd);
        return err_set("%s: %lld bytes is too large for an image here (limit %u MiB)", path,
                       (long long)st.st_size, MAX_FILE_BYTES >> 20);
    }
    size_t len = (size_t)st.st_size, got = 0;
    uint8_t *buf = malloc(len);
    if (!buf) {
        close(fd);
        return err_set("%s: out of memory reading %zu bytes", path, len);
    }
    while (got < len) {
        ssize_t r = read(fd, buf + got, len - got);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) {
            int e = errno;
            free(buf);
            close(fd);
            return err_set("%s: read failed (%s)", path, r == 0 ? "file shrank" : strerror(e));
        }
        got += (size_t)r;
    }
    close(fd);
    *buf_out = buf;
    *len_out = len;
    return 0;
}

/* Two holes of stb_image (2.27) that a hostile JPEG reaches, stbi_info included:
 *  - a DHT segment whose 16 code counts add up to more than 256 makes it write past
 *    the Huffman table it builds;
 *  - a scan that uses a Huffman table no DHT defined makes it decode with uninitialized
 *    memory, and Debian's libstb keeps its asserts: one such image aborts the process.
 * Walk the markers as stb does (fill bytes, entropy-coded data, segment lengths) and
 * return 0 on either. Anything that isn't a JPEG returns 1. */
static int jpeg_tables_ok(const uint8_t *p, size_t n) {
    size_t i = 1;
    while (i < n && p[i] == 0xFF) i++; /* stb skips fill bytes before a marker, SOI too */
    if (n < 2 || p[0] != 0xFF || i == n || p[i] != 0xD8) return 1;
    unsigned defined = 0;              /* bit 4 * class + id: DC 0..3, AC 4..7 */
    int progressive = 0;
    for (i++; i + 4 <= n;) {
        uint8_t m = p[i + 1];
        if (p[i] != 0xFF || m == 0xFF) { i++; continue; }   /* entropy-coded data, fill */
        if (m == 0x00 || m == 0x01 || (m >= 0xD0 && m <= 0xD9)) { i += 2; continue; }
        long len = p[i + 2] << 8 | p[i + 3];
        if (m == 0xC2) progressive = 1;
        /* stb reads 1 + 16 bytes per table while the segment has bytes left, 0 past the end */
        for (long t = (long)i + 4, left = len - 2; m == 0xC4 && left > 0;) {
            long codes = 0;
            for (long k = t + 1; k <= t + 16; k++) codes += k < (long)n ? p[k] : 0;
            if (codes > 256) return 0;
            int q = t < (long)n ? p[t] : 0;
            defined |= 1u << (4 * (q >> 4 & 1) + (q & 3));
            t += 17 + codes;
            left -= 17 + codes;
        }
        /* SOS: count, then (component, DC table << 4 | AC table) each, then Ss */
        size_t ns = i + 4 < n ? p[i + 4] : 0, ss_at = i + 5 + 2 * ns;
        int ss = ss_at < n ? p[ss_at] : 0;
        for (size_t k = 0; m == 0xDA && k < ns && i + 6 + 2 * k < n; k++) {
            int tables = p[i + 6 + 2 * k];
            if ((!progressive || ss == 0) && !(defined >> (tables >> 4 & 3) & 1)) return 0;
            if ((!progressive || ss != 0) && !(defined >> (4 + (tables & 3)) & 1)) return 0;
        }
        i += 2 + (size_t)len;
    }
    return 1;
}

/* PNG, JPEG (stb skips 0xFF fill bytes before SOI) or BMP, by their first bytes. stb
 * would take GIF, PSD, TGA, HDR, PIC and PNM too, by content whatever the file name;
 * its TGA reader hands back uninitialized memory as pixels for a short file. */
static int is_png_jpeg_bmp(const uint8_t *p, size_t n) {
    static const uint8_t png[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1A, '\n'};
    size_t i = 1;
    while (i < n && p[i] == 0xFF) i++;
    return (n >= 8 && !memcmp(p, png, 8)) || (n >= 2 && p[0] == 'B' && p[1] == 'M') ||
           (n >= 2 && p[0] == 0xFF && i < n && p[i] == 0xD8);
}

/* Width, height and channels from the image header, refusing absurd sizes before
 * anything is decoded or allocated for the pixels. */
static int probe_image(const char *path, const uint8_t *buf, size_t len, int *w, int *h, int *c) {
    if (!is_png_jpeg_bmp(buf, len))
        return err_set("%s: not a PNG, JPEG or BMP file (it starts %02x %02x %02x %02x); delete "
                       "or replace it, or set data.on_bad_sample = skip", path, buf[0],
                       len > 1 ? buf[1] : 0, len > 2 ? buf[2] : 0, len > 3 ? buf[3] : 0);
    if (!jpeg_tables_ok(buf, len))
        return err_set("%s: corrupt JPEG (a Huffman table with more than 256 codes, or a scan "
                       "using one that is never defined); delete or replace it, or set "
                       "data.on_bad_sample = skip", path);
    if (!stbi_info_from_memory(buf, (int)len, w, h, c))
        return err_set("%s: not a readable PNG/JPEG/BMP image (stb_image: %s); delete or "
                       "replace it, or set data.on_bad_sample = skip",
                       path, stbi_failure_reason());
    if (*w <= 0 || *h <= 0 || *w > DATA_MAX_SIDE || *h > DATA_MAX_SIDE)
        return err_set("%s: image header says %dx%d pixels, outside 1..%d; the file is corrupt "
                       "or not meant for this dataset", path, *w, *h, DATA_MAX_SIDE);
    /* No format stores fewer than one byte per MAX_PIXELS_PER_BYTE pixels (deflate's 1032:1
     * on a 1-bit PNG is 8256), but stb fills what a file lacks with zeros: a 31-byte TGA
     * header decodes to 12711x6131. */
    if ((uint64_t)*w * (uint64_t)*h > (uint64_t)len * MAX_PIXELS_PER_BYTE)
        return err_set("%s: image header says %dx%d pixels, more than %zu bytes can hold; the "
                       "file is truncated or corrupt", path, *w, *h, len);
    return 0;
}

int data_decode_image(const char *path, const uint8_t *file, size_t len, int height, int width, int channels,
                      int resize, uint8_t *dst) {
    int w, h, c;
    if (probe_image(path, file, len, &w, &h, &c)) return -1;
    if ((w != width || h != height) && !resize)
        return err_set("%s: image is %dx%d, the dataset is configured for %dx%d; resize the "
                       "file, or set data.on_size_mismatch = resize", path, w, h, width, height);
    uint8_t *pix = stbi_load_from_memory(file, (int)len, &w, &h, &c, channels);
    if (!pix)
        return err_set("%s: cannot decode (stb_image: %s); delete or replace it, or set "
                       "data.on_bad_sample = skip", path, stbi_failure_reason());
    int rc = 0;
    if (w == width && h == height)
        memcpy(dst, pix, (size_t)height * (size_t)width * (size_t)channels);
    else if (!stbir_resize_uint8(pix, w, h, 0, dst, width, height, 0, channels))
        rc = err_set("%s: resizing %dx%d to %dx%d failed", path, w, h, width, height);
    stbi_image_free(pix);
    return rc;
}

int data_load_image(const char *path, int height, int width, int channels, int resize, uint8_t *dst) {
    uint8_t *file;
    size_t len;
    if (read_file(path, &file, &len)) return -1;
    int rc = data_decode_image(path, file, len, height, width, channels, resize, dst);
    free(file);
    return rc;
}

static int folder_read(const struct dataset *ds, int64_t i, uint8_t *dst, struct data_times *t) {
    struct folder *f = impl_of(ds);
    char path[PATH_MAX];
    data_sample_name(ds, i, path, sizeof path);

    int64_t t0 = os_now_ns();
    uint8_t *file;
    size_t len;
    if (read_file(path, &file, &len)) return -1;
    int64_t t1 = os_now_ns();
    t->read_ns += t1 - t0;
    int rc = data_decode_image(path, file, len, ds->height, ds->width, ds->channels, f->opt.resize, dst);
    free(file);
    t->decode_ns += os_now_ns() - t1;
    return rc;
}

static int folder_label(const struct dataset *ds, int64_t i) { return impl_of(ds)->labels[i]; }

static const char *folder_sample_name(const struct dataset *ds, int64_t i, char *buf, size_t len) {
    struct folder *f = impl_of(ds);
    snprintf(buf, len, "%s/%s", f->root, f->names + f->name_at[i]);
    return buf;
}

static const char *folder_class_name(const struct dataset *ds, int c) {
    return impl_of(ds)->class_names[c];
}

static void folder_close(struct dataset *ds) {
    struct folder *f = impl_of(ds);
    if (f->class_names)
        for (int c = 0; c < ds->classes; c++) free(f->class_names[c]);
    free(f->class_names);
    free(f->names);
    free(f->name_at);
    free(f->labels);
    free(f->root);
    free(f);
}

static const struct data_reader folder_reader = {
    .label = folder_label,
    .read = folder_read,
    .sample_name = folder_sample_name,
    .class_name = folder_class_name,
    .close = folder_close,
};

/* Fills in the sizes the options left at 0 from the first image's header. */
static int size_from_first_image(struct folder *f) {
    char path[PATH_MAX];
    uint8_t *buf;
    size_t len;
    int w, h, c;
    data_sample_name(&f->ds, 0, path, sizeof path);
    if (read_file(path, &buf, &len)) return -1;
    int rc = probe_image(path, buf, len, &w, &h, &c);
    free(buf);
    if (rc) return err_wrap("%s: taking the image size from the first image: ", f->root);
    if (!f->ds.height) f->ds.height = h;
    if (!f->ds.width) f->ds.width = w;
    if (!f->ds.channels) f->ds.channels = c;
    return 0;
}

int data_open_folder(const char *dir, const struct data_folder_options *opt,
                     struct dataset **out) {
    struct data_folder_options none = {0, 0, 0, 0};
    if (!opt) opt = &none;
    *out = NULL;
    if (opt->height < 0 || opt->height > DATA_MAX_SIDE || opt->width < 0 ||
        opt->width > DATA_MAX_SIDE || opt->channels < 0 || opt->channels > DATA_MAX_CHANNELS)
        return err_set("%s: image size %dx%dx%d is out of range (sides 0..%d, channels 0..%d; "
                       "0 = from the first image)", dir, opt->height, opt->width,
                       opt->channels, DATA_MAX_SIDE, DATA_MAX_CHANNELS);
    struct folder *f = calloc(1, sizeof *f);
    if (!f || !(f->root = strdup(dir))) {
        free(f);
        return err_set("%s: out of memory", dir);
    }
    size_t rl = strlen(f->root);
    while (rl > 1 && f->root[rl - 1] == '/') f->root[--rl] = 0; /* "x/" and "x" name one set */
    f->opt = *opt;
    f->ds = (struct dataset){.path = f->root, .height = opt->height, .width = opt->width,
                             .channels = opt->channels, .reads_files = 1,
                             .reader = &folder_reader, .impl = f};

    int64_t nclasses;
    if (list_dir(f->root, 1, &f->class_names, &nclasses)) goto fail;
    f->ds.classes = (int)nclasses;
    if (nclasses == 0) {
        err_set("%s: no class folders; an image folder holds one subfolder per class "
                "(e.g. DIR/0-cat/1.png, DIR/1-dog/2.png)", f->root);
        goto fail;
    }
    if (nclasses > DATA_MAX_CLASSES) {
        err_set("%s: %lld class folders, more than %d", f->root, (long long)nclasses,
                DATA_MAX_CLASSES);
        goto fail;
    }
    for (int c = 0; c < nclasses; c++) {
        char sub[PATH_MAX];
        char **files;
        int64_t n;
        snprintf(sub, sizeof sub, "%s/%s", f->root, f->class_names[c]);
        if (list_dir(sub, 0, &files, &n)) goto fail;
        int rc = 0;
        for (int64_t k = 0; k < n; k++) {
            if (!rc) rc = add_sample(f, f->class_names[c], files[k], c);
            free(files[k]);
        }
        free(files);
        if (rc) goto fail;
    }
    if (f->ds.count == 0) {
        err_set("%s: no images (.png, .jpg, .jpeg, .bmp) in its %d class folders", f->root,
                f->ds.classes);
        goto fail;
    }
    if ((!f->ds.height || !f->ds.width || !f->ds.channels) && size_from_first_image(f))
        goto fail;
    f->ds.listing_hash = listing_hash(f);
    *out = &f->ds;
    return 0;
fail:
    folder_close(&f->ds);
    return -1;
}
