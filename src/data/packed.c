/* packed.c — nostall's pre-decoded dataset file (layout in data.h): reader (mmap),
 * writer (data_pack) and checker (data_packed_verify). */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include "data.h"
#include "error.h"
#include "os.h"

#define HEADER_BYTES 64

struct packed {
    struct dataset ds;
    char *path;
    uint8_t *map;
    size_t len;
    const uint8_t *labels, *images;
};

static struct packed *impl_of(const struct dataset *ds) { return ds->impl; }

static uint32_t get32(const uint8_t *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static uint64_t get64(const uint8_t *p) { return get32(p) | (uint64_t)get32(p + 4) << 32; }
static void put32(uint8_t *p, uint32_t v) {
    for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> 8 * i);
}
static void put64(uint8_t *p, uint64_t v) {
    put32(p, (uint32_t)v);
    put32(p + 4, (uint32_t)(v >> 32));
}

static uint64_t images_offset_for(uint64_t count) { return (HEADER_BYTES + 4 * count + 63) / 64 * 64; }

/* Validates the header of a `len`-byte file against its length; fills info. */
static int parse_header(const char *path, const uint8_t *h, size_t len,
                        struct data_packed_info *info, uint64_t *images_offset) {
    if (len < HEADER_BYTES)
        return err_set("%s: %s (%zu bytes, a packed header is %d); run ./prepare pack again",
                       path, len ? "truncated" : "empty file", len, HEADER_BYTES);
    if (memcmp(h, DATA_PACKED_MAGIC, 8) != 0)
        return err_set("%s: bad magic, not a nostall packed file; make one with "
                       "./prepare pack DIR %s", path, path);
    if (get32(h + 8) != DATA_PACKED_VERSION || get32(h + 12) != HEADER_BYTES)
        return err_set("%s: packed format version %" PRIu32 " (header %" PRIu32 " bytes), this "
                       "build reads version %d; run ./prepare pack again", path, get32(h + 8),
                       get32(h + 12), DATA_PACKED_VERSION);
    uint64_t count = get64(h + 16);
    uint32_t height = get32(h + 24), width = get32(h + 28), channels = get32(h + 32),
             classes = get32(h + 36);
    if (count == 0 || count > (uint64_t)DATA_MAX_COUNT || height == 0 || height > DATA_MAX_SIDE ||
        width == 0 || width > DATA_MAX_SIDE || channels == 0 || channels > DATA_MAX_CHANNELS ||
        classes == 0 || classes > DATA_MAX_CLASSES)
        return err_set("%s: header says %" PRIu64 " images of %" PRIu32 "x%" PRIu32 "x%" PRIu32
                       " in %" PRIu32 " classes, out of range; the file is corrupt", path, count,
                       height, width, channels, classes);
    /* Each factor is bounded above, so these products fit in 64 bits. */
    uint64_t offset = get64(h + 40);
    uint64_t want = images_offset_for(count) + count * height * width * channels;
    if (offset != images_offset_for(count) || want != len)
        return err_set("%s: header says %" PRIu64 " images of %" PRIu32 "x%" PRIu32 "x%" PRIu32
                       " (%" PRIu64 " bytes) but the file has %zu bytes; it is %s, run "
                       "./prepare again", path, count, height, width, channels, want, len,
                       len < want ? "truncated" : "corrupt");
    *info = (struct data_packed_info){(int64_t)count, (int)height, (int)width, (int)channels,
                                      (int)classes, get64(h + 48), get32(h + 56)};
    *images_offset = offset;
    return 0;
}

/* Maps `path` read-only. */
static int map_file(const char *path, uint8_t **map, size_t *len) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return err_set("%s: cannot open (%s)", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0) {
        close(fd);
        return err_set("%s: cannot stat (%s)", path, strerror(errno));
    }
    *len = (size_t)st.st_size;
    *map = NULL;
    if (*len) {
        void *m = mmap(NULL, *len, PROT_READ, MAP_SHARED, fd, 0);
        if (m == MAP_FAILED) {
            close(fd);
            return err_set("%s: mmap failed (%s)", path, strerror(errno));
        }
        *map = m;
    }
    close(fd); /* the mapping keeps the file */
    return 0;
}

static int packed_label(const struct dataset *ds, int64_t i) {
    return (int)get32(impl_of(ds)->labels + 4 * i);
}

static void packed_close(struct dataset *ds) {
    struct packed *p = impl_of(ds);
    if (p->map) munmap(p->map, p->len);
    free(p->path);
    free(p);
}

static const struct data_reader packed_reader = {
    .label = packed_label,
    .read = data_read_in_memory,
    .sample_name = data_name_by_index,
    .class_name = NULL, /* labels only: no class names */
    .close = packed_close,
};

int data_open_packed(const char *path, struct dataset **out) {
    *out = NULL;
    struct packed *p = calloc(1, sizeof *p);
    if (!p || !(p->path = strdup(path))) {
        free(p);
        return err_set("%s: out of memory", path);
    }
    p->ds = (struct dataset){.path = p->path, .reader = &packed_reader, .impl = p};
    struct data_packed_info info;
    uint64_t offset;
    if (map_file(path, &p->map, &p->len) || parse_header(path, p->map, p->len, &info, &offset)) {
        packed_close(&p->ds);
        return -1;
    }
    p->labels = p->map + HEADER_BYTES;
    p->images = p->map + offset;
    p->ds.in_memory = p->images;
    for (int64_t i = 0; i < info.count; i++) {
        uint32_t label = get32(p->labels + 4 * i);
        if (label >= (uint32_t)info.classes) {
            err_set("%s: sample %" PRId64 " has label %" PRIu32 ", the header says %d classes; "
                    "the file is corrupt, run ./prepare again", path, i, label, info.classes);
            packed_close(&p->ds);
            return -1;
        }
    }
    p->ds.count = info.count;
    p->ds.height = info.height;
    p->ds.width = info.width;
    p->ds.channels = info.channels;
    p->ds.classes = info.classes;
    p->ds.listing_hash = info.listing_hash;
    *out = &p->ds;
    return 0;
}

int data_packed_verify(const char *path, struct data_packed_info *info) {
    struct data_packed_info local;
    uint8_t *map;
    size_t len;
    uint64_t offset;
    if (!info) info = &local;
    if (map_file(path, &map, &len)) return -1;
    int rc = parse_header(path, map, len, info, &offset);
    if (rc == 0) {
        uLong crc = crc32(0, NULL, 0);
        for (size_t at = HEADER_BYTES; at < len;) {
            size_t n = len - at > (1u << 30) ? (1u << 30) : len - at;
            crc = crc32(crc, map + at, (uInt)n);
            at += n;
        }
        if ((uint32_t)crc != info->checksum)
            rc = err_set("%s: checksum mismatch (stored %08" PRIx32 ", computed %08" PRIx32
                         "): the file is damaged; run ./prepare again", path, info->checksum,
                         (uint32_t)crc);
    }
    if (map) munmap(map, len);
    return rc;
}

/* --- writing ------------------------------------------------------------------ */

static int write_bytes(FILE *f, const char *path, const void *p, size_t n, uLong *crc) {
    if (fwrite(p, 1, n, f) != n)
        return err_set("%s: write failed (%s); is the disk full?", path, strerror(errno));
    *crc = crc32(*crc, p, (uInt)n);
    return 0;
}

/* Decodes samples [first, first+n) of src into buf on every OpenMP thread. On failure
 * reports the lowest failing sample, so the message is the same on every run. */
static int decode_chunk(const struct dataset *src, int64_t first, int n, uint8_t *buf) {
    size_t bytes = data_sample_bytes(src);
    int64_t bad = INT64_MAX;
    char msg[1024] = "";
#pragma omp parallel for schedule(dynamic, 16)
    for (int k = 0; k < n; k++) {
        if (data_read_sample(src, first + k, buf + (size_t)k * bytes, NULL) != 0) {
#pragma omp critical(data_pack_error)
            if (first + k < bad) {
                bad = first + k;
                snprintf(msg, sizeof msg, "%s", err_get());
            }
        }
    }
    return bad == INT64_MAX ? 0 : err_set("%s", msg);
}

int data_pack(const struct dataset *src, const char *out_path, FILE *log) {
    enum { CHUNK = 4096 };
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s.partial", out_path);
    size_t bytes = data_sample_bytes(src);
    uint8_t *buf = malloc((size_t)CHUNK * bytes);
    FILE *f = fopen(tmp, "wb");
    uLong crc = crc32(0, NULL, 0);
    uint8_t header[HEADER_BYTES] = {0}, zeros[64] = {0};
    if (!buf) {
        err_set("packing %s: out of host memory for %d decoded images of %zu bytes (%zu bytes)",
                src->path, CHUNK, bytes, (size_t)CHUNK * bytes);
        goto fail;
    }
    if (!f) {
        err_set("%s: cannot create (%s)", tmp, strerror(errno));
        goto fail;
    }
    /* The header goes last, once the checksum is known; hold its place. */
    if (fwrite(header, 1, HEADER_BYTES, f) != HEADER_BYTES) {
        err_set("%s: write failed (%s)", tmp, strerror(errno));
        goto fail;
    }
    for (int64_t i = 0; i < src->count; i++) {
        uint8_t le[4];
        int label = data_label(src, i);
        if (label < 0) goto fail;
        put32(le, (uint32_t)label);
        if (write_bytes(f, tmp, le, 4, &crc)) goto fail;
    }
    uint64_t offset = images_offset_for((uint64_t)src->count);
    if (write_bytes(f, tmp, zeros, offset - HEADER_BYTES - 4 * (uint64_t)src->count, &crc))
        goto fail;
    int64_t next_report = 10000;
    for (int64_t first = 0; first < src->count; first += CHUNK) {
        int n = src->count - first < CHUNK ? (int)(src->count - first) : CHUNK;
        if (decode_chunk(src, first, n, buf) || write_bytes(f, tmp, buf, (size_t)n * bytes, &crc)) {
            err_wrap("packing %s into %s: ", src->path, out_path);
            goto fail;
        }
        if (log && (first + n >= next_report || first + n == src->count)) {
            fprintf(log, "  packed %" PRId64 "/%" PRId64 " images into %s\n", first + n,
                    src->count, out_path);
            fflush(log);
            next_report += 10000;
        }
    }
    memcpy(header, DATA_PACKED_MAGIC, 8);
    put32(header + 8, DATA_PACKED_VERSION);
    put32(header + 12, HEADER_BYTES);
    put64(header + 16, (uint64_t)src->count);
    put32(header + 24, (uint32_t)src->height);
    put32(header + 28, (uint32_t)src->width);
    put32(header + 32, (uint32_t)src->channels);
    put32(header + 36, (uint32_t)src->classes);
    put64(header + 40, offset);
    put64(header + 48, src->listing_hash);
    put32(header + 56, (uint32_t)crc);
    if (fseek(f, 0, SEEK_SET) != 0 || fwrite(header, 1, HEADER_BYTES, f) != HEADER_BYTES) {
        err_set("%s: write failed (%s)", tmp, strerror(errno));
        goto fail;
    }
    int closed = fclose(f);
    f = NULL;
    if (closed != 0) {
        err_set("%s: write failed (%s); is the disk full?", tmp, strerror(errno));
        goto fail;
    }
    /* Only a complete file ever carries the final name. */
    if (rename(tmp, out_path) != 0) {
        err_set("%s: cannot rename to %s (%s)", tmp, out_path, strerror(errno));
        goto fail;
    }
    free(buf);
    return 0;
fail:
    if (f) fclose(f);
    unlink(tmp);
    free(buf);
    return -1;
}
