/* os.c — folder creation and durable files (os.h). */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "error.h"
#include "os.h"

int os_mkdir_p(const char *path) {
    char buf[PATH_MAX];
    if (!path[0]) return err_set("an empty folder name");
    if ((size_t)snprintf(buf, sizeof buf, "%s", path) >= sizeof buf) return err_set("%s: path too long", path);
    for (char *p = buf + 1;; p++) {
        if (*p != '/' && *p != 0) continue;
        char saved = *p;
        *p = 0;
        struct stat st;
        if (mkdir(buf, 0777) != 0 && errno != EEXIST)
            return err_set("cannot create the folder %s: %s", buf, strerror(errno));
        if (stat(buf, &st) != 0 || !S_ISDIR(st.st_mode))
            return err_set("cannot create the folder %s: a file of that name is in the way", buf);
        if (!(*p = saved) || !p[1]) break;
    }
    return 0;
}

/* ---- durable files ---- */

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
        return " HINT: free disk space, or write it to another disk";
    case EACCES: case EPERM: case EROFS:
        return " HINT: make the directory writable, or write it elsewhere";
    case ENOENT: case ENOTDIR:
        return " HINT: create the directory, or fix the path";
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

static int tmp_path(const char *path, char *tmp, size_t len, const char *what) {
    if ((size_t)snprintf(tmp, len, "%s.tmp", path) >= len)
        return err_set("%s path is too long (%zu characters): %.60s...", what, strlen(path), path);
    return 0;
}

/* A rename is durable only once the directory entry is on disk too. */
static int sync_dir(const char *path, const char *what) {
    char dir[PATH_MAX];
    dir_of(path, dir, sizeof dir);
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    int rc = fd < 0 ? -1 : fsync(fd);
    int e = errno;
    if (fd >= 0) close(fd);
    /* some filesystems cannot fsync a directory (EINVAL): the rename is as durable as they allow */
    if (rc && e != EINVAL)
        return err_set("saved %s %s, but syncing its directory %s failed: %s; the new file may not survive "
                       "a power loss.%s", what, path, dir, strerror(e), errno_hint(e));
    return 0;
}

int os_replace_file(const char *path, const void *buf, size_t len, const char *what) {
    char tmp[PATH_MAX];
    if (tmp_path(path, tmp, sizeof tmp, what)) return -1;
    /* A temp left by a killed save is stale: remove it, so that O_EXCL then gives us a
     * fresh file of our own (never writing through a leftover symlink). If it can't be
     * removed, the open below fails and says why. */
    unlink(tmp);
    const char *step = "creating";
    int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (fd < 0) goto fail;
    step = "writing";
    if (write_all(fd, buf, len)) goto fail;
    step = "syncing";
    if (fsync(fd)) goto fail;
    step = "closing"; /* close reports delayed write errors on some filesystems (NFS) */
    int closed = close(fd);
    fd = -1;
    if (closed) goto fail;
    step = "renaming";
    if (rename(tmp, path)) goto fail;
    return sync_dir(path, what);
fail:;
    int e = errno;
    if (fd >= 0) close(fd);
    unlink(tmp);
    return err_set("saving %s %s: %s %s failed: %s; the previous file, if any, is untouched.%s", what, path,
                   step, strcmp(step, "renaming") ? tmp : "it into place", strerror(e), errno_hint(e));
}

int os_check_writable(const char *path, size_t probe_bytes, const char *what) {
    char dir[PATH_MAX], tmp[PATH_MAX];
    dir_of(path, dir, sizeof dir);
    if (tmp_path(path, tmp, sizeof tmp, what)) return -1;
    struct stat sb;
    if (stat(dir, &sb)) {
        int e = errno;
        return err_set("%s %s cannot be written: its directory %s: %s.%s", what, path, dir, strerror(e),
                       errno_hint(e));
    }
    if (!S_ISDIR(sb.st_mode))
        return err_set("%s %s cannot be written: %s is not a directory.%s", what, path, dir, errno_hint(ENOTDIR));
    if (stat(path, &sb) == 0 && !S_ISREG(sb.st_mode))
        return err_set("%s %s cannot be written: it exists and is not a regular file. HINT: give a file name",
                       what, path);
    /* Writing a probe is the only test that holds for root, ACLs and read-only mounts alike. */
    unlink(tmp);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (fd < 0) {
        int e = errno;
        return err_set("%s %s cannot be written: creating %s failed: %s.%s", what, path, tmp, strerror(e),
                       errno_hint(e));
    }
    /* posix_fallocate reserves the blocks (or writes zeros where the filesystem can't),
     * so a disk too full for the file shows up now rather than after an epoch. */
    int e = probe_bytes ? posix_fallocate(fd, 0, (off_t)probe_bytes) : 0;
    close(fd);
    unlink(tmp);
    if (e)
        return err_set("%s %s cannot be written: reserving %zu bytes (one %s) in %s failed: %s.%s", what, path,
                       probe_bytes, what, dir, strerror(e), errno_hint(e));
    return 0;
}

int os_read_file(const char *path, unsigned char **out, size_t *len) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        int e = errno;
        return err_set("cannot open it: %s.%s", strerror(e), e == ENOENT ? " HINT: check the path" : "");
    }
    struct stat sb;
    if (fstat(fd, &sb) || !S_ISREG(sb.st_mode)) {
        close(fd);
        return err_set("not a regular file. HINT: check the path");
    }
    size_t cap = (size_t)sb.st_size, n = 0;
    unsigned char *buf = malloc(cap ? cap : 1);
    if (!buf) {
        close(fd);
        return err_set("out of host memory for its %zu bytes", cap);
    }
    while (n < cap) { /* a short read (the file shrinking meanwhile) shows up as a short length */
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
