/* idx.c — the IDX reader (MNIST's format), gzipped or plain, read whole into memory.
 *
 * An IDX file: 2 zero bytes, a type byte (0x08 = uint8), the number of dimensions,
 * then each dimension as a big-endian uint32, then the data. zlib's gzread reads
 * gzipped and plain files alike, so one path handles both; the header is checked
 * against the length before the payload is trusted. */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <zlib.h>

#include "data.h"
#include "error.h"
#include "os.h"

struct idx {
    struct dataset ds;
    char *images_path, *labels_path;
    uint8_t *pixels;   /* count x height x width */
    uint8_t *labels;   /* count */
};

static struct idx *impl_of(const struct dataset *ds) { return ds->impl; }

/* gzread takes an unsigned length; read big payloads in pieces. Returns bytes read. */
static int64_t gz_read_all(gzFile gz, uint8_t *dst, int64_t len) {
    int64_t got = 0;
    while (got < len) {
        int64_t want = len - got > (1 << 30) ? (1 << 30) : len - got;
        int r = gzread(gz, dst + got, (unsigned)want);
        if (r <= 0) break;
        got += r;
    }
    return got;
}

/* Reads an IDX file of uint8 with `ndims` dimensions: dims[] and a malloc'd payload. */
static int read_idx(const char *path, int ndims, uint32_t *dims, uint8_t **payload) {
    *payload = NULL;
    struct stat st;
    if (stat(path, &st) != 0) return err_set("%s: cannot open (%s)", path, strerror(errno));
    gzFile gz = gzopen(path, "rb");
    if (!gz) return err_set("%s: cannot open (%s)", path, errno ? strerror(errno) : "zlib");
    uint8_t head[4 + 4 * 3];
    int head_len = 4 + 4 * ndims;
    int64_t got = gz_read_all(gz, head, 4);
    if (got == 4 && (head[0] || head[1] || head[2] != 0x08 || head[3] != ndims)) {
        gzclose(gz);
        return err_set("%s: bad magic %02x %02x %02x %02x, expected 00 00 08 %02x (IDX, "
                       "uint8, %d dimensions); is this the %s file?", path, head[0], head[1],
                       head[2], head[3], ndims, ndims, ndims == 1 ? "labels" : "images");
    }
    if (got == 4) got += gz_read_all(gz, head + 4, head_len - 4);
    if (got < head_len) {
        gzclose(gz);
        return err_set("%s: %s: %" PRId64 " bytes, shorter than an IDX header", path,
                       got ? "truncated" : "empty file", got);
    }
    uint64_t bytes = 1;
    for (int d = 0; d < ndims; d++) {
        const uint8_t *p = head + 4 + 4 * d;
        dims[d] = (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
        uint64_t limit = d == 0 ? (uint64_t)DATA_MAX_COUNT : DATA_MAX_SIDE;
        if (dims[d] == 0 || dims[d] > limit) {
            gzclose(gz);
            return err_set("%s: header dimension %d is %" PRIu32 ", outside 1..%" PRIu64
                           "; the file is corrupt", path, d, dims[d], limit);
        }
        bytes *= dims[d]; /* <= 2^31 * 2^14 * 2^14: no overflow in 64 bits */
    }
    /* Check the promise against the file before allocating for it: a plain file must
     * be exactly that long; deflate expands at most 1032:1, so a gzip file that small
     * cannot hold that much. */
    uint64_t whole = (uint64_t)head_len + bytes, have = (uint64_t)st.st_size;
    int plain = gzdirect(gz);
    if ((plain && whole != have) || (!plain && whole > have * 1032 + 1024)) {
        gzclose(gz);
        return err_set("%s: header says %" PRIu64 " bytes of data but the file has %" PRIu64
                       " bytes%s; it is %s", path, bytes, have, plain ? "" : " (gzipped)",
                       plain && whole < have ? "longer than its header says (corrupt)"
                                             : "truncated or corrupt");
    }
    uint8_t *buf = malloc(bytes ? bytes : 1);
    if (!buf) {
        gzclose(gz);
        return err_set("%s: out of memory for %" PRIu64 " bytes of pixels", path, bytes);
    }
    got = gz_read_all(gz, buf, (int64_t)bytes);
    uint8_t extra;
    int more = got == (int64_t)bytes ? gzread(gz, &extra, 1) : 0;
    int errnum;
    const char *zmsg = gzerror(gz, &errnum);
    char zerr[128];
    snprintf(zerr, sizeof zerr, "%s", errnum != Z_OK ? zmsg : "");
    gzclose(gz);
    if (got < (int64_t)bytes || more != 0) {
        free(buf);
        if (more > 0)
            return err_set("%s: longer than its header says (%" PRIu64 " bytes of data); "
                           "the header and length disagree, the file is corrupt", path, bytes);
        return err_set("%s: truncated: the header promises %" PRIu64 " bytes of data, %" PRId64
                       " are there%s%s; download or copy it again", path, bytes, got,
                       zerr[0] ? ", zlib: " : "", zerr);
    }
    *payload = buf;
    return 0;
}

static int idx_label(const struct dataset *ds, int64_t i) { return impl_of(ds)->labels[i]; }

static void idx_close(struct dataset *ds) {
    struct idx *x = impl_of(ds);
    free(x->pixels);
    free(x->labels);
    free(x->images_path);
    free(x->labels_path);
    free(x);
}

static const struct data_reader idx_reader = {
    .label = idx_label,
    .read = data_read_in_memory,
    .sample_name = data_name_by_index,
    .class_name = NULL, /* labels only: no class names */
    .close = idx_close,
};

int data_open_idx(const char *images_path, const char *labels_path, struct dataset **out) {
    *out = NULL;
    struct idx *x = calloc(1, sizeof *x);
    if (!x || !(x->images_path = strdup(images_path)) || !(x->labels_path = strdup(labels_path))) {
        if (x) free(x->images_path);
        free(x);
        return err_set("%s: out of memory", images_path);
    }
    x->ds = (struct dataset){.path = x->images_path, .channels = 1, .reader = &idx_reader,
                             .impl = x};
    uint32_t idims[3], ldims[1];
    if (read_idx(images_path, 3, idims, &x->pixels) ||
        read_idx(labels_path, 1, ldims, &x->labels))
        goto fail;
    if (idims[0] != ldims[0]) {
        err_set("%s has %" PRIu32 " images but %s has %" PRIu32 " labels; they must come "
                "from the same split", images_path, idims[0], labels_path, ldims[0]);
        goto fail;
    }
    x->ds.count = idims[0];
    x->ds.in_memory = x->pixels;
    x->ds.height = (int)idims[1];
    x->ds.width = (int)idims[2];
    for (uint32_t i = 0; i < ldims[0]; i++)
        if (x->labels[i] + 1 > x->ds.classes) x->ds.classes = x->labels[i] + 1;
    *out = &x->ds;
    return 0;
fail:
    idx_close(&x->ds);
    return -1;
}
