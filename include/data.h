/* data.h — datasets, augmentation, and preparing data on disk.
 *
 * A dataset is `count` labelled images of height x width x channels uint8 pixels,
 * stored HWC (row-major, channels interleaved). Three readers share one interface:
 *
 *   image folder   DIR/<class>/<file>.png|jpg|jpeg|bmp, one subfolder per class;
 *                  class ids follow the sorted subfolder names, files inside a class
 *                  are in natural order ("2.png" before "10.png"). Decoded per read
 *                  with stb_image: the slow, realistic path the loader's knobs act on.
 *   IDX            the MNIST format (gzipped or plain), read whole into memory.
 *   packed         nostall's pre-decoded file (layout below), memory-mapped.
 *
 * Every reader checks headers and sizes against the file before trusting them, and
 * fails with a message that names the file and what to do. data_read_sample and
 * data_label may be called from many threads at once on one dataset.
 */
#ifndef NS_DATA_H
#define NS_DATA_H

#include <stdint.h>
#include <stdio.h>

/* Limits that turn a corrupt header into an error instead of a huge allocation. */
#define DATA_MAX_SIDE     16384        /* pixels per image side */
#define DATA_MAX_CHANNELS 4
#define DATA_MAX_COUNT    (1LL << 31)  /* samples per dataset */
#define DATA_MAX_CLASSES  65536

struct data_reader;

struct dataset {
    const char *path;        /* folder or file it was opened from, for messages */
    int64_t count;
    int height, width, channels;
    int classes;
    int reads_files;         /* 1: every sample is a file read (loader.io_delay_us applies) */
    uint64_t listing_hash;   /* identifies the sample order of the source, 0 = unknown;
                                a packed file built from a folder carries the folder's */
    const struct data_reader *reader;
    const uint8_t *in_memory; /* idx, packed: every sample's bytes, in order; NULL for a folder */
    void *impl;
};

/* Time spent on one sample, for the loader's per-batch timings. */
struct data_times {
    int64_t read_ns;         /* getting the bytes: open + read of the file */
    int64_t decode_ns;       /* stb_image decode, channel conversion, resize */
};

/* --- opening ---------------------------------------------------------------- */

/* What an image folder is decoded to. height/width/channels 0 = take them from the
 * first image. An image of another size is resized (stb_image_resize) when
 * `resize` is 1 and refused with an error naming it when 0. Channels are always
 * converted (gray -> RGB replicates, RGB -> gray uses stb's luma weights). */
struct data_folder_options {
    int height, width, channels;
    int resize;
};

int data_open_folder(const char *dir, const struct data_folder_options *opt,
                     struct dataset **out);
/* images: idx3-ubyte (count x height x width), labels: idx1-ubyte; either may be
 * gzipped (detected from the content, not the name). classes = max label + 1. */
/* One image file decoded to height x width x channels HWC bytes at dst, as the folder
 * reader decodes every sample (the same checks, channel conversion and, when `resize`,
 * the same resize): for predicting on files outside a dataset. Errors name the file.
 * data_decode_image does the same on a file already in memory. */
int data_load_image(const char *path, int height, int width, int channels, int resize, uint8_t *dst);
int data_decode_image(const char *path, const uint8_t *file, size_t len, int height, int width, int channels,
                      int resize, uint8_t *dst);
int data_open_idx(const char *images_path, const char *labels_path, struct dataset **out);
int data_open_packed(const char *path, struct dataset **out);
void data_close(struct dataset *ds); /* NULL is fine */

/* --- reading ---------------------------------------------------------------- */

/* Label of sample i (0 <= label < classes); never touches pixels. */
int data_label(const struct dataset *ds, int64_t i);
/* Reads and decodes sample i into dst (height*width*channels bytes). times may be
 * NULL. -1 with err_get() naming the file (and sample) on failure. */
int data_read_sample(const struct dataset *ds, int64_t i, uint8_t *dst_hwc,
                     struct data_times *times);
/* "DIR/3-Dress/17.png" or "FILE[17]": what to call sample i in a message. */
const char *data_sample_name(const struct dataset *ds, int64_t i, char *buf, size_t len);
/* Folder datasets: the subfolder name of class c; other readers: NULL. */
const char *data_class_name(const struct dataset *ds, int c);
static inline size_t data_sample_bytes(const struct dataset *ds) {
    return (size_t)ds->height * (size_t)ds->width * (size_t)ds->channels;
}

/* What a format implements (src/data/folder.c, idx.c, packed.c). `impl` is the
 * reader's own state; the functions above check the index, then call these. */
struct data_reader {
    int (*label)(const struct dataset *ds, int64_t i);
    int (*read)(const struct dataset *ds, int64_t i, uint8_t *dst_hwc, struct data_times *t);
    const char *(*sample_name)(const struct dataset *ds, int64_t i, char *buf, size_t len);
    const char *(*class_name)(const struct dataset *ds, int c); /* may be NULL */
    void (*close)(struct dataset *ds);
};

/* The read and sample_name of a dataset whose samples are all in memory
 * (ds->in_memory): a copy, and "path[i]". idx and packed use them. */
int data_read_in_memory(const struct dataset *ds, int64_t i, uint8_t *dst_hwc, struct data_times *t);
const char *data_name_by_index(const struct dataset *ds, int64_t i, char *buf, size_t len);

/* --- augmentation -------------------------------------------------------------
 * Random crop with zero padding (crop the original size out of the image padded by
 * `pad` pixels on every side, i.e. shift by dy, dx in [-pad, pad]) then a random
 * horizontal flip. The draw depends only on a per-sample key, so a sample gets the
 * same augmentation whichever worker processes it. */
struct data_augment {
    int pad;                 /* 2 for resnet_small; 0 = no crop */
    int flip;                /* 1 = flip half of the samples */
};
struct data_crop {
    int dy, dx;              /* source pixel of output (y, x) is (y + dy, x + dx), then flipped */
    int flip;
};

/* Counter-based randomness: splitmix64 (rng.h) over (seed, epoch, index); no shared state. */
uint64_t data_sample_key(uint64_t seed, uint64_t epoch, uint64_t index);
struct data_crop data_augment_draw(const struct data_augment *aug, uint64_t key);
/* dst and src: h x w x c, must not overlap. */
void data_augment_apply(uint8_t *dst, const uint8_t *src, int h, int w, int c,
                        struct data_crop crop);

/* --- packed files --------------------------------------------------------------
 * Little-endian, 64-byte header, then labels, then images:
 *
 *   0  char[8]  magic "NSPACKED"
 *   8  u32      version (1)
 *  12  u32      header bytes (64)
 *  16  u64      count
 *  24  u32      height   28 u32 width   32 u32 channels   36 u32 classes
 *  40  u64      images offset = 64 + 4*count rounded up to 64
 *  48  u64      listing hash of the source (see struct dataset)
 *  56  u32      CRC-32 (zlib) of every byte after the header
 *  60  u32      0
 *  64  int32    labels[count]
 *      uint8    images[count][height][width][channels] at the images offset
 *
 * The file length must be exactly images offset + count*height*width*channels. */
#define DATA_PACKED_MAGIC   "NSPACKED"
#define DATA_PACKED_VERSION 1

struct data_packed_info {
    int64_t count;
    int height, width, channels, classes;
    uint64_t listing_hash;
    uint32_t checksum;
};

/* Writes every sample of src to `out_path` (through out_path + ".partial" and a
 * rename, so an interrupted run leaves nothing that looks whole). Decodes on all
 * OpenMP threads. Progress lines go to log (NULL = quiet). */
int data_pack(const struct dataset *src, const char *out_path, FILE *log);
/* Validates header and length, then recomputes the checksum. info may be NULL. */
int data_packed_verify(const char *path, struct data_packed_info *info);

/* --- preparing Fashion-MNIST (./prepare fashion-mnist) --------------------------
 * Reads SRC/{train,t10k}-{images-idx3,labels-idx1}-ubyte.gz and writes
 *   OUT/train/<class>/<index>.png, OUT/test/<class>/<index>.png
 *   OUT/train.packed, OUT/test.packed   (packed from the PNG folders, same order)
 * where <index> is the sample's position in the IDX file and the class folders are
 * DATA_FASHION_MNIST_CLASSES (prefixed with the label so sorted order = label order).
 * A split whose folder and packed file already check out (file counts per class,
 * packed header, checksum, listing) is skipped. */
extern const char *const DATA_FASHION_MNIST_CLASSES[10];

struct data_prepare_result {
    int64_t written;         /* images written by this call */
    int64_t skipped;         /* images found already prepared */
};
int data_prepare_fashion_mnist(const char *src_dir, const char *out_dir, FILE *log,
                               struct data_prepare_result *res);
/* One split: IDX pair -> png folder + packed file. class_names: one per label. */
int data_prepare_idx_split(const char *images_path, const char *labels_path,
                           const char *const *class_names, int nclasses,
                           const char *out_folder, const char *packed_path, FILE *log,
                           struct data_prepare_result *res);

#endif
