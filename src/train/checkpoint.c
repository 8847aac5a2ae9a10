/* checkpoint.c — crash-safe save and fully validated load of a training run.
 * The format is described in include/checkpoint.h. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include "backend.h"
#include "checkpoint.h"
#include "error.h"

/* Fields are copied in host order; the format says little-endian, which every host
 * nostall targets (x86-64, ARM64) is. */
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "checkpoint.c writes host byte order and the format is little-endian"
#endif
_Static_assert(NN_NAME_LEN <= CKPT_NAME_BYTES, "a parameter name must fit the checkpoint's name field");

static const char CKPT_MAGIC[8] = {'N', 'S', 'C', 'K', 'P', 'T', '\r', '\n'};

#define PREFIX_BYTES 24 /* magic, version, reserved, file_bytes: the same in every version */
#define STATE_BYTES (8 + 4 * 8 + CKPT_RNG_STATES * 8 + CKPT_METRICS * 8)
#define HEADER_BYTES (PREFIX_BYTES + STATE_BYTES + 16)
#define ENTRY_BYTES (CKPT_NAME_BYTES + 8)

#define HINT_DAMAGED "HINT: resume from an earlier copy of the checkpoint, or start without --resume"
#define HINT_MODEL "HINT: resume with the config that wrote this checkpoint, or start without --resume"

/* ---- byte cursors ---- */

struct writer { unsigned char *p; size_t at; };

static void put(struct writer *w, const void *src, size_t n) {
    memcpy(w->p + w->at, src, n);
    w->at += n;
}
static void put_u32(struct writer *w, uint32_t x) { put(w, &x, sizeof x); }
static void put_u64(struct writer *w, uint64_t x) { put(w, &x, sizeof x); }

/* Reading is the one place untrusted sizes meet memory: every access goes through
 * take(), which refuses to go past the end. */
struct reader { const unsigned char *p; size_t at, len; };

static int take(struct reader *r, void *dst, size_t n) {
    if (n > r->len - r->at) return -1;
    memcpy(dst, r->p + r->at, n);
    r->at += n;
    return 0;
}

/* `count` floats, left in place (they may be unaligned: only memcpy-like copies read them). */
static const unsigned char *take_floats(struct reader *r, uint64_t count) {
    if (count > (r->len - r->at) / sizeof(float)) return NULL;
    const unsigned char *p = r->p + r->at;
    r->at += (size_t)count * sizeof(float);
    return p;
}

static uint32_t crc_of(const unsigned char *p, size_t n) {
    uLong crc = crc32(0L, Z_NULL, 0);
    while (n > 0) { /* zlib takes 32-bit lengths */
        uInt chunk = n > (1u << 30) ? (1u << 30) : (uInt)n;
        crc = crc32(crc, p, chunk);
        p += chunk;
        n -= chunk;
    }
    return (uint32_t)crc;
}

static size_t buffer_floats(const struct nn_params *ps) {
    size_t n = 0;
    for (int i = 0; i < ps->n_buffers; i++) n += ps->buffers[i]->numel;
    return n;
}

size_t ckpt_file_bytes(const struct nn_model *m) {
    const struct nn_params *ps = &m->ps;
    return HEADER_BYTES + (size_t)(ps->n_params + ps->n_buffers) * ENTRY_BYTES +
           (2 * ps->total + buffer_floats(ps)) * sizeof(float) + sizeof(uint32_t);
}

/* ---- save ---- */

static void put_state(struct writer *w, const struct ckpt_state *st) {
    put_u64(w, st->fingerprint);
    int64_t pos[4] = {st->epoch, st->step, st->batch_in_epoch, st->epochs_done};
    put(w, pos, sizeof pos);
    put(w, st->rng, sizeof st->rng);
    put(w, st->metrics, sizeof st->metrics);
}

static void put_entries(struct writer *w, char (*names)[NN_NAME_LEN], struct tensor **t, int n) {
    for (int i = 0; i < n; i++) {
        char name[CKPT_NAME_BYTES] = {0};
        memcpy(name, names[i], strnlen(names[i], NN_NAME_LEN));
        put(w, name, sizeof name);
        put_u64(w, t[i]->numel);
    }
}

/* The whole file in one host buffer, device data copied down, CRC appended. */
static unsigned char *serialize(const struct nn_model *m, const struct ckpt_state *st, size_t *len) {
    const struct nn_params *ps = &m->ps;
    size_t n = ckpt_file_bytes(m);
    unsigned char *buf = malloc(n);
    if (!buf) { err_set("out of host memory for a %zu-byte checkpoint", n); return NULL; }
    struct writer w = {buf, 0};
    put(&w, CKPT_MAGIC, sizeof CKPT_MAGIC);
    put_u32(&w, CKPT_VERSION);
    put_u32(&w, 0);
    put_u64(&w, n);
    put_state(&w, st);
    put_u32(&w, (uint32_t)ps->n_params);
    put_u32(&w, (uint32_t)ps->n_buffers);
    put_u64(&w, ps->total);
    put_entries(&w, ps->param_names, ps->params, ps->n_params);
    put_entries(&w, ps->buffer_names, ps->buffers, ps->n_buffers);
    /* the optimizer step may still be queued on a device stream */
    if (ps->be->sync) ps->be->sync();
    size_t flat = ps->total * sizeof(float);
    ps->be->copy(buf + w.at, ps->w, flat, COPY_D2H);
    w.at += flat;
    ps->be->copy(buf + w.at, ps->v, flat, COPY_D2H);
    w.at += flat;
    for (int i = 0; i < ps->n_buffers; i++) {
        size_t bytes = ps->buffers[i]->numel * sizeof(float);
        ps->be->copy(buf + w.at, ps->buffers[i]->data, bytes, COPY_D2H);
        w.at += bytes;
    }
    put_u32(&w, crc_of(buf, w.at));
    *len = w.at;
    return buf;
}

static int write_all(int fd, const unsigned char *p, size_t n) {
    while (n > 0) {
        ssize_t k = write(fd, p, n);
        if (k < 0 && errno == EINTR) continue;
        if (k < 0) return -1;
        p += k;
        n -= (size_t)k;
    }
    return 0;
}

static const char *errno_hint(int e) {
    switch (e) {
    case ENOSPC: case EDQUOT: case EFBIG:
        return " HINT: free disk space, or point [train] checkpoint at another disk";
    case EACCES: case EPERM: case EROFS:
        return " HINT: make the directory writable, or point [train] checkpoint elsewhere";
    case ENOENT: case ENOTDIR:
        return " HINT: create the directory, or fix the [train] checkpoint path";
    default:
        return "";
    }
}

/* The directory holding `path`: "." for a bare file name. */
static void dir_of(const char *path, char *dir, size_t len) {
    const char *slash = strrchr(path, '/');
    if (!slash) snprintf(dir, len, ".");
    else if (slash == path) snprintf(dir, len, "/");
    else snprintf(dir, len, "%.*s", (int)(slash - path), path);
}

static int tmp_path(const char *path, char *tmp, size_t len) {
    if ((size_t)snprintf(tmp, len, "%s.tmp", path) >= len)
        return err_set("checkpoint path is too long (%zu characters): %.60s...", strlen(path), path);
    return 0;
}

/* A rename is durable only once the directory entry is on disk too. */
static int sync_dir(const char *path) {
    char dir[PATH_MAX];
    dir_of(path, dir, sizeof dir);
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    int rc = fd < 0 ? -1 : fsync(fd);
    int e = errno;
    if (fd >= 0) close(fd);
    /* some filesystems cannot fsync a directory (EINVAL): the rename is as durable as they allow */
    if (rc && e != EINVAL)
        return err_set("saved checkpoint %s, but syncing its directory %s failed: %s; the new "
                       "checkpoint may not survive a power loss.%s", path, dir, strerror(e), errno_hint(e));
    return 0;
}

/* buf -> tmp, fsync, rename over path. Any failure removes tmp and leaves path as it was. */
static int replace_file(const char *path, const char *tmp, const unsigned char *buf, size_t len) {
    int fd = -1;
    /* A temp left by a killed save is stale: remove it, so that O_EXCL then gives us a
     * fresh file of our own (never writing through a leftover symlink). If it can't be
     * removed, the open below fails and says why. */
    unlink(tmp);
    const char *what = "creating";
    fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (fd < 0) goto fail;
    what = "writing";
    if (write_all(fd, buf, len)) goto fail;
    what = "syncing";
    if (fsync(fd)) goto fail;
    what = "closing"; /* close reports delayed write errors on some filesystems (NFS) */
    int closed = close(fd);
    fd = -1;
    if (closed) goto fail;
    what = "renaming";
    if (rename(tmp, path)) goto fail;
    return sync_dir(path);
fail:;
    int e = errno;
    if (fd >= 0) close(fd);
    unlink(tmp);
    return err_set("saving checkpoint %s: %s %s failed: %s; the previous checkpoint, if any, is "
                   "untouched.%s", path, what, strcmp(what, "renaming") ? tmp : "it over the checkpoint",
                   strerror(e), errno_hint(e));
}

int ckpt_save(const char *path, const struct nn_model *m, const struct ckpt_state *st) {
    if (!m->ps.be) return err_set("saving checkpoint %s: the model is not finalized", path);
    char tmp[PATH_MAX];
    if (tmp_path(path, tmp, sizeof tmp)) return -1;
    size_t len;
    unsigned char *buf = serialize(m, st, &len);
    if (!buf) return err_wrap("saving checkpoint %s: ", path);
    int rc = replace_file(path, tmp, buf, len);
    free(buf);
    return rc;
}

int ckpt_check_writable(const char *path, size_t probe_bytes) {
    char dir[PATH_MAX], tmp[PATH_MAX];
    dir_of(path, dir, sizeof dir);
    if (tmp_path(path, tmp, sizeof tmp)) return -1;
    struct stat sb;
    if (stat(dir, &sb)) {
        int e = errno;
        return err_set("checkpoint %s cannot be written: its directory %s: %s.%s", path, dir,
                       strerror(e), errno_hint(e));
    }
    if (!S_ISDIR(sb.st_mode))
        return err_set("checkpoint %s cannot be written: %s is not a directory.%s", path, dir,
                       errno_hint(ENOTDIR));
    if (stat(path, &sb) == 0 && !S_ISREG(sb.st_mode))
        return err_set("checkpoint %s cannot be written: it exists and is not a regular file. "
                       "HINT: point [train] checkpoint at a file name", path);
    /* Writing a probe is the only test that holds for root, ACLs and read-only mounts alike. */
    unlink(tmp);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (fd < 0) goto fail;
    /* posix_fallocate reserves the blocks (or writes zeros where the filesystem can't),
     * so a disk too full for one checkpoint shows up now rather than after an epoch. */
    int e = probe_bytes ? posix_fallocate(fd, 0, (off_t)probe_bytes) : 0;
    close(fd);
    unlink(tmp);
    if (e)
        return err_set("checkpoint %s cannot be written: reserving %zu bytes (one checkpoint) in %s "
                       "failed: %s.%s", path, probe_bytes, dir, strerror(e), errno_hint(e));
    return 0;
fail:;
    int err = errno;
    return err_set("checkpoint %s cannot be written: creating %s failed: %s.%s", path, tmp,
                   strerror(err), errno_hint(err));
}

/* ---- load ---- */

/* Magic, version, size and CRC: everything that says "this is an intact checkpoint"
 * before any field after the prefix is believed. */
static int check_envelope(const unsigned char *p, size_t len) {
    if (len == 0)
        return err_set("truncated: the file is empty (0 bytes); the save was interrupted or the "
                       "copy is incomplete. " HINT_DAMAGED);
    size_t cmp = len < sizeof CKPT_MAGIC ? len : sizeof CKPT_MAGIC;
    if (memcmp(p, CKPT_MAGIC, cmp) != 0)
        return err_set("not a nostall checkpoint (its first bytes are not the checkpoint magic). "
                       "HINT: check the --resume path");
    if (len < HEADER_BYTES)
        return err_set("truncated: %zu bytes, shorter than the %d-byte header; the save was "
                       "interrupted or the copy is incomplete. " HINT_DAMAGED, len, HEADER_BYTES);
    uint32_t version;
    uint64_t file_bytes;
    memcpy(&version, p + 8, sizeof version);
    memcpy(&file_bytes, p + 16, sizeof file_bytes);
    if (version != CKPT_VERSION)
        return err_set("format version %u, this build reads version %d. HINT: resume with the "
                       "nostall that wrote it, or start without --resume", version, CKPT_VERSION);
    if (file_bytes > len)
        return err_set("truncated: %zu of %llu bytes; the save was interrupted or the copy is "
                       "incomplete. " HINT_DAMAGED, len, (unsigned long long)file_bytes);
    if (file_bytes < len)
        return err_set("damaged: %zu bytes where the header says %llu. " HINT_DAMAGED, len,
                       (unsigned long long)file_bytes);
    uint32_t stored, computed = crc_of(p, len - 4);
    memcpy(&stored, p + len - 4, sizeof stored);
    if (stored != computed)
        return err_set("checksum mismatch: the file is damaged (stored crc32 %08x, computed %08x). "
                       HINT_DAMAGED, stored, computed);
    return 0;
}

static int take_state(struct reader *r, struct ckpt_state *st) {
    int64_t pos[4];
    if (take(r, &st->fingerprint, 8) || take(r, pos, sizeof pos) || take(r, st->rng, sizeof st->rng) ||
        take(r, st->metrics, sizeof st->metrics))
        return err_set("damaged: the header is cut short. " HINT_DAMAGED);
    st->epoch = pos[0];
    st->step = pos[1];
    st->batch_in_epoch = pos[2];
    st->epochs_done = pos[3];
    return 0;
}

/* The file's table of parameters (or buffers) against the model's; names the first difference. */
static int check_entries(struct reader *r, const char *kind, uint32_t n_file,
                         char (*names)[NN_NAME_LEN], struct tensor **t, int n_model) {
    for (uint32_t i = 0; i < n_file; i++) {
        char name[CKPT_NAME_BYTES + 1] = {0};
        uint64_t numel;
        if (take(r, name, CKPT_NAME_BYTES) || take(r, &numel, sizeof numel))
            return err_set("damaged: the %s table runs past the end of the file. " HINT_DAMAGED, kind);
        if (i >= (uint32_t)n_model)
            return err_set("written by a different model: it has %u %ss, this model %d (the first "
                           "extra is %s %u '%s'). " HINT_MODEL, n_file, kind, n_model, kind, i, name);
        if (strcmp(name, names[i]) != 0)
            return err_set("written by a different model: %s %u is '%s' in the checkpoint, '%s' in "
                           "this model. " HINT_MODEL, kind, i, name, names[i]);
        if (numel != t[i]->numel)
            return err_set("written by a different model: %s %u '%s' has %llu values, this model "
                           "%zu. " HINT_MODEL, kind, i, name, (unsigned long long)numel, t[i]->numel);
    }
    if (n_file < (uint32_t)n_model)
        return err_set("written by a different model: it has %u %ss, this model %d (the first "
                       "missing is %s %u '%s'). " HINT_MODEL, n_file, kind, n_model, kind, n_file,
                       names[n_file]);
    return 0;
}

int ckpt_load_mem(const void *data, size_t len, struct nn_model *m, struct ckpt_state *st,
                  uint64_t expected_fingerprint) {
    struct nn_params *ps = &m->ps;
    if (!ps->be) return err_set("the model is not finalized");
    if (check_envelope(data, len)) return -1;

    /* Everything below is parsed into locals; the model is written only at the end. */
    struct reader r = {data, PREFIX_BYTES, len - 4};
    struct ckpt_state file_st;
    uint32_t n_params, n_buffers;
    uint64_t total;
    if (take_state(&r, &file_st)) return -1;
    if (take(&r, &n_params, 4) || take(&r, &n_buffers, 4) || take(&r, &total, 8))
        return err_set("damaged: the header is cut short. " HINT_DAMAGED);
    if (check_entries(&r, "parameter", n_params, ps->param_names, ps->params, ps->n_params) ||
        check_entries(&r, "buffer", n_buffers, ps->buffer_names, ps->buffers, ps->n_buffers))
        return -1;
    if (total != ps->total) /* same parameters, different padding: another nostall build */
        return err_set("written by a different build: flat parameter buffers of %llu floats, this "
                       "model %zu. " HINT_MODEL, (unsigned long long)total, ps->total);
    if (file_st.fingerprint != expected_fingerprint)
        return err_set("config fingerprint differs (checkpoint %016llx, this run %016llx): the "
                       "checkpoint was made with a different config (e.g. the [model] or [data] "
                       "section). " HINT_MODEL, (unsigned long long)file_st.fingerprint,
                       (unsigned long long)expected_fingerprint);
    const unsigned char *w = take_floats(&r, total), *v = take_floats(&r, total);
    const unsigned char *bufs = take_floats(&r, buffer_floats(ps));
    if (!w || !v || !bufs || r.at != r.len)
        return err_set("damaged: %zu bytes, where this layout needs %zu. " HINT_DAMAGED, len,
                       ckpt_file_bytes(m));

    size_t flat = ps->total * sizeof(float);
    ps->be->copy(ps->w, w, flat, COPY_H2D);
    ps->be->copy(ps->v, v, flat, COPY_H2D);
    for (int i = 0; i < ps->n_buffers; i++) {
        size_t bytes = ps->buffers[i]->numel * sizeof(float);
        ps->be->copy(ps->buffers[i]->data, bufs, bytes, COPY_H2D);
        bufs += bytes;
    }
    if (ps->be->sync) ps->be->sync();
    *st = file_st;
    return 0;
}

/* The whole file into host memory; a short read (file shrinking meanwhile) shows up as truncation. */
static int read_whole_file(const char *path, unsigned char **out, size_t *len) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        int e = errno;
        return err_set("cannot open it: %s.%s", strerror(e),
                       e == ENOENT ? " HINT: check the --resume path" : "");
    }
    struct stat sb;
    if (fstat(fd, &sb) || !S_ISREG(sb.st_mode)) {
        close(fd);
        return err_set("not a regular file. HINT: check the --resume path");
    }
    size_t cap = (size_t)sb.st_size, n = 0;
    unsigned char *buf = malloc(cap ? cap : 1);
    if (!buf) {
        close(fd);
        return err_set("out of host memory for its %zu bytes", cap);
    }
    while (n < cap) {
        ssize_t k = read(fd, buf + n, cap - n);
        if (k < 0 && errno == EINTR) continue;
        if (k < 0) {
            int e = errno;
            close(fd);
            free(buf);
            return err_set("reading it failed: %s", strerror(e));
        }
        if (k == 0) break;
        n += (size_t)k;
    }
    close(fd);
    *out = buf;
    *len = n;
    return 0;
}

int ckpt_load(const char *path, struct nn_model *m, struct ckpt_state *st, uint64_t expected_fingerprint) {
    unsigned char *buf = NULL;
    size_t len = 0;
    if (read_whole_file(path, &buf, &len)) return err_wrap("loading checkpoint %s: ", path);
    int rc = ckpt_load_mem(buf, len, m, st, expected_fingerprint);
    free(buf);
    return rc ? err_wrap("loading checkpoint %s: ", path) : 0;
}
