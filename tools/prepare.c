/* prepare — turn datasets into what the loader reads.
 *
 *   ./prepare fashion-mnist [--src DIR] [--out DIR]
 *       Debian's gzipped IDX files -> OUT/{train,test}/<class>/<index>.png and
 *       OUT/{train,test}.packed. Idempotent: a prepared split is checked and skipped.
 *   ./prepare pack DIR OUT [--size HxW] [--channels N] [--resize]
 *       Any image folder (one subfolder per class) -> a packed file for cache = packed.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "data.h"
#include "error.h"
#include "os.h"

#define DEFAULT_SRC "/usr/share/datasets/fashion-mnist"
#define DEFAULT_OUT "data/fashion-mnist"

static int usage(const char *why) {
    if (why) fprintf(stderr, "prepare: %s\n\n", why);
    fprintf(stderr,
            "usage: ./prepare fashion-mnist [--src DIR] [--out DIR]\n"
            "         IDX files from DIR (default " DEFAULT_SRC ")\n"
            "         -> PNG folders and packed files in OUT (default " DEFAULT_OUT ")\n"
            "       ./prepare pack DIR OUT [--size HxW] [--channels N] [--resize]\n"
            "         image folder DIR (one subfolder per class) -> packed file OUT;\n"
            "         size and channels default to the first image's, --resize resizes\n"
            "         images of another size instead of refusing them\n");
    return 2;
}

static int fail(void) {
    fprintf(stderr, "prepare: %s\n", err_get());
    return 1;
}

static int prepare_fashion_mnist(int argc, char **argv) {
    const char *src = DEFAULT_SRC, *out = DEFAULT_OUT;
    for (int i = 2; i < argc; i++) {
        if (!strcmp(argv[i], "--src") && i + 1 < argc) src = argv[++i];
        else if (!strcmp(argv[i], "--out") && i + 1 < argc) out = argv[++i];
        else return usage("fashion-mnist takes --src DIR and --out DIR");
    }
    int64_t t0 = os_now_ns();
    struct data_prepare_result res;
    if (data_prepare_fashion_mnist(src, out, stdout, &res)) return fail();
    printf("fashion-mnist ready in %s: %lld images written, %lld already there, %.2f s\n", out,
           (long long)res.written, (long long)res.skipped, (double)(os_now_ns() - t0) / 1e9);
    return 0;
}

static int pack_folder(int argc, char **argv) {
    if (argc < 4) return usage("pack needs DIR and OUT");
    struct data_folder_options opt = {0, 0, 0, 0};
    for (int i = 4; i < argc; i++) {
        if (!strcmp(argv[i], "--size") && i + 1 < argc) {
            if (sscanf(argv[++i], "%dx%d", &opt.height, &opt.width) != 2 || opt.height <= 0 ||
                opt.width <= 0)
                return usage("--size wants HEIGHTxWIDTH, e.g. --size 28x28");
        } else if (!strcmp(argv[i], "--channels") && i + 1 < argc) {
            opt.channels = atoi(argv[++i]);
            if (opt.channels < 1 || opt.channels > DATA_MAX_CHANNELS)
                return usage("--channels wants 1, 2, 3 or 4");
        } else if (!strcmp(argv[i], "--resize")) {
            opt.resize = 1;
        } else {
            return usage("unknown option for pack");
        }
    }
    int64_t t0 = os_now_ns();
    struct dataset *ds;
    if (data_open_folder(argv[2], &opt, &ds)) return fail();
    printf("%s: %lld images of %dx%dx%d in %d classes -> %s\n", ds->path, (long long)ds->count,
           ds->height, ds->width, ds->channels, ds->classes, argv[3]);
    int rc = data_pack(ds, argv[3], stdout);
    data_close(ds);
    if (rc) return fail();
    printf("packed in %.2f s\n", (double)(os_now_ns() - t0) / 1e9);
    return 0;
}

int main(int argc, char **argv) {
    if (argc < 2) return usage(NULL);
    if (!strcmp(argv[1], "fashion-mnist")) return prepare_fashion_mnist(argc, argv);
    if (!strcmp(argv[1], "pack")) return pack_folder(argc, argv);
    if (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help")) return usage(NULL), 0;
    return usage("unknown command");
}
