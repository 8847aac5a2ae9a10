/* prepare.c — IDX files -> a folder of PNGs per class + a packed file (./prepare).
 *
 * Safe to interrupt and to rerun: the PNG tree is written under OUT.partial and
 * renamed into place when complete, the packed file likewise (data_pack); a rerun
 * that finds both consistent with the source skips the split. */
#include <dirent.h>
#include <errno.h>
#include <ftw.h>
#include <inttypes.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <stb_image_write.h>

#include "data.h"
#include "error.h"
#include "os.h"

/* Prefixed with the label so that sorted folder names give the dataset's class ids. */
const char *const DATA_FASHION_MNIST_CLASSES[10] = {
    "0-T-shirt_top", "1-Trouser", "2-Pullover", "3-Dress", "4-Coat",
    "5-Sandal",      "6-Shirt",   "7-Sneaker",  "8-Bag",   "9-Ankle_boot",
};

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
    (void)st, (void)flag, (void)ftw;
    return remove(path);
}

/* Removes the tree at `dir`, which must be one this code wrote: its entries are
 * class folders of `class_names` and nothing else. Anything else is the user's. */
static int remove_prepared_tree(const char *dir, const char *const *class_names, int nclasses) {
    struct stat st;
    if (lstat(dir, &st) != 0) return 0;
    DIR *d = opendir(dir);
    if (!d) return err_set("%s: exists but is not a readable folder; move it away", dir);
    struct dirent *e;
    char foreign[NAME_MAX + 1] = "";
    while ((e = readdir(d)) && !foreign[0]) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        snprintf(foreign, sizeof foreign, "%s", e->d_name);
        for (int c = 0; c < nclasses; c++)
            if (!strcmp(e->d_name, class_names[c])) foreign[0] = 0;
    }
    closedir(d);
    if (foreign[0])
        return err_set("%s: exists and holds '%s', which ./prepare did not write; move the "
                       "folder away or pick another --out", dir, foreign);
    if (nftw(dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS) != 0)
        return err_set("%s: cannot remove the old tree (%s)", dir, strerror(errno));
    return 0;
}

/* Does out_folder + packed_path already hold exactly what `idx` would produce?
 * Checks the things an interrupted or tampered run would break: the class folders,
 * the number of images per class, the packed header and checksum, and that the
 * packed file was made from this very listing. Decodes no PNG. */
static int split_is_prepared(const struct dataset *idx, const int64_t *per_class,
                             const char *const *class_names, int nclasses,
                             const char *out_folder, const char *packed_path) {
    struct stat st;
    if (stat(out_folder, &st) != 0 || stat(packed_path, &st) != 0) return 0;
    struct data_folder_options opt = {idx->height, idx->width, 1, 0};
    struct dataset *folder;
    if (data_open_folder(out_folder, &opt, &folder)) return 0;
    int ok = folder->count == idx->count && folder->classes == nclasses;
    for (int c = 0; ok && c < nclasses; c++)
        ok = !strcmp(data_class_name(folder, c), class_names[c]);
    int64_t *seen = calloc((size_t)nclasses, sizeof *seen);
    for (int64_t i = 0; ok && seen && i < folder->count; i++) seen[data_label(folder, i)]++;
    for (int c = 0; ok && c < nclasses; c++) ok = seen && seen[c] == per_class[c];
    free(seen);
    struct data_packed_info info;
    ok = ok && data_packed_verify(packed_path, &info) == 0 && info.count == idx->count &&
         info.height == idx->height && info.width == idx->width && info.channels == 1 &&
         info.listing_hash == folder->listing_hash;
    data_close(folder);
    err_clear();
    return ok;
}

/* Sample i of idx -> DIR/<class>/<i>.png, on every OpenMP thread. */
static int write_png_tree(const struct dataset *idx, const char *const *class_names,
                          int nclasses, const char *dir, FILE *log) {
    for (int c = 0; c < nclasses; c++) {
        char sub[PATH_MAX];
        if (snprintf(sub, sizeof sub, "%s/%s", dir, class_names[c]) >= (int)sizeof sub)
            return err_set("%s: path too long", dir);
        if (os_mkdir_p(sub)) return -1;
    }
    size_t bytes = data_sample_bytes(idx);
    int64_t bad = INT64_MAX, done = 0;
    char msg[1024] = "";
#pragma omp parallel
    {
        uint8_t *pix = malloc(bytes);
#pragma omp for schedule(dynamic, 64)
        for (int64_t i = 0; i < idx->count; i++) {
            char path[PATH_MAX];
            int label = data_label(idx, i);
            int rc = pix ? data_read_sample(idx, i, pix, NULL)
                         : err_set("out of host memory for a %zu-byte image", bytes);
            if (snprintf(path, sizeof path, "%s/%s/%" PRId64 ".png", dir, class_names[label],
                         i) >= (int)sizeof path)
                rc = err_set("%s: path too long", dir);
            else if (rc == 0 && !stbi_write_png(path, idx->width, idx->height, idx->channels, pix,
                                                idx->width * idx->channels))
                rc = err_set("%s: cannot write the PNG (%s); is the disk full?", path,
                             errno ? strerror(errno) : "stb_image_write failed");
            if (rc) {
#pragma omp critical(prepare_error)
                if (i < bad) {
                    bad = i;
                    snprintf(msg, sizeof msg, "%s", err_get());
                }
            }
            int64_t n;
#pragma omp atomic capture
            n = ++done;
            if (log && (n % 10000 == 0 || n == idx->count)) {
#pragma omp critical(prepare_log)
                {
                    fprintf(log, "  wrote %" PRId64 "/%" PRId64 " PNGs into %s\n", n,
                            idx->count, dir);
                    fflush(log);
                }
            }
        }
        free(pix);
    }
    return bad == INT64_MAX ? 0 : err_set("%s", msg);
}

int data_prepare_idx_split(const char *images_path, const char *labels_path,
                           const char *const *class_names, int nclasses,
                           const char *out_folder, const char *packed_path, FILE *log,
                           struct data_prepare_result *res) {
    struct dataset *idx = NULL, *folder = NULL;
    int64_t *per_class = NULL;
    char partial[PATH_MAX];
    int rc = -1;
    snprintf(partial, sizeof partial, "%s.partial", out_folder);
    if (data_open_idx(images_path, labels_path, &idx)) return -1;
    if (idx->classes > nclasses) {
        err_set("%s: labels go up to %d but only %d class names were given", labels_path,
                idx->classes - 1, nclasses);
        goto done;
    }
    if (!(per_class = calloc((size_t)nclasses, sizeof *per_class))) {
        err_set("out of memory");
        goto done;
    }
    for (int64_t i = 0; i < idx->count; i++) per_class[data_label(idx, i)]++;

    if (split_is_prepared(idx, per_class, class_names, nclasses, out_folder, packed_path)) {
        if (log) fprintf(log, "%s: %" PRId64 " images already prepared (counts, packed "
                         "checksum and listing check out), skipping\n", out_folder, idx->count);
        if (res) res->skipped += idx->count;
        rc = 0;
        goto done;
    }
    if (log) {
        fprintf(log, "%s: writing %" PRId64 " PNGs from %s\n", out_folder, idx->count,
                images_path);
        fflush(log);
    }
    /* A tree left by an interrupted run is ours by its name: clear it, rebuild. */
    if (remove_prepared_tree(partial, class_names, nclasses) ||
        write_png_tree(idx, class_names, nclasses, partial, log) ||
        remove_prepared_tree(out_folder, class_names, nclasses))
        goto done;
    if (rename(partial, out_folder) != 0) {
        err_set("%s: cannot rename to %s (%s)", partial, out_folder, strerror(errno));
        goto done;
    }
    /* Packed from the folder itself, so packed sample i is folder sample i. */
    struct data_folder_options opt = {idx->height, idx->width, 1, 0};
    if (data_open_folder(out_folder, &opt, &folder)) goto done;
    if (folder->count != idx->count) {
        err_set("%s: holds %" PRId64 " images after writing %" PRId64 "; is something else "
                "writing there?", out_folder, folder->count, idx->count);
        goto done;
    }
    if (log) {
        fprintf(log, "%s: packing into %s\n", out_folder, packed_path);
        fflush(log);
    }
    if (data_pack(folder, packed_path, log)) goto done;
    if (res) res->written += idx->count;
    rc = 0;
done:
    data_close(folder);
    data_close(idx);
    free(per_class);
    return rc;
}

int data_prepare_fashion_mnist(const char *src_dir, const char *out_dir, FILE *log,
                               struct data_prepare_result *res) {
    static const char *const splits[2][2] = {{"train", "train"}, {"t10k", "test"}};
    if (res) *res = (struct data_prepare_result){0, 0};
    if (os_mkdir_p(out_dir)) return -1;
    for (int s = 0; s < 2; s++) {
        char images[PATH_MAX], labels[PATH_MAX], folder[PATH_MAX], packed[PATH_MAX];
        snprintf(images, sizeof images, "%s/%s-images-idx3-ubyte.gz", src_dir, splits[s][0]);
        snprintf(labels, sizeof labels, "%s/%s-labels-idx1-ubyte.gz", src_dir, splits[s][0]);
        snprintf(folder, sizeof folder, "%s/%s", out_dir, splits[s][1]);
        snprintf(packed, sizeof packed, "%s/%s.packed", out_dir, splits[s][1]);
        if (access(images, R_OK) != 0 || access(labels, R_OK) != 0)
            return err_set("%s: not found; install Debian's dataset-fashion-mnist package "
                           "(apt-get install dataset-fashion-mnist) or pass --src DIR",
                           access(images, R_OK) != 0 ? images : labels);
        if (data_prepare_idx_split(images, labels, DATA_FASHION_MNIST_CLASSES, 10, folder,
                                   packed, log, res))
            return -1;
    }
    return 0;
}
