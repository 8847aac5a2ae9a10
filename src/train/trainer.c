/* trainer.c — one experiment: data, model, the step loop, evaluation, checkpoints,
 * and the timings behind the pipeline report.
 *
 * One training step, and where its time is booked:
 *   wait     feeder_next blocks until the loader's ring has the batch
 *   h2d      the feeder copies it to the device (nothing to copy on the CPU)
 *   compute  normalize -> forward -> loss -> backward -> SGD -> arena reset
 * Everything else in the step's wall time is "other".
 *
 * Data parallel (dist.h): every rank runs this loop on its share of each epoch. Rank
 * 0's initial weights are broadcast; each step the ranks agree on the loss (a NaN on
 * one stops all) and on Ctrl-C, and average their gradients before the update, so
 * their parameters stay bit-identical; rank 0 alone evaluates, prints and saves. */
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/stat.h>
#include <unistd.h>

#include "backend.h"
#include "checkpoint.h"
#include "dist.h"
#include "error.h"
#include "evaluate.h"
#include "feeder.h"
#include "loader.h"
#include "models.h"
#include "ops.h"
#include "optim.h"
#include "os.h"
#include "report.h"
#include "rng.h"
#include "trace.h"
#include "train.h"

struct trainer {
    const struct config *cfg;
    const struct train_options *opt;
    FILE *out;
    const struct backend *be;
    struct nn_model model;
    struct ag_ctx ctx;
    struct optimizer optim;  /* SGD or AdamW ([optim] name) */
    struct dataset *train_ds, *test_ds;
    struct loader *train_ld, *test_ld;
    struct feeder *train_feed, *test_feed;  /* batches on the compute device */
    struct trace *tr;
    int64_t trace_t0_ns;     /* when it began (os_now_ns): its events' times are relative to it */
    FILE *metrics;           /* train.metrics: a CSV row per step and per epoch, or NULL */
    float mean[4], std[4];
    long step, total_steps;  /* the LR schedule spans total_steps */
    long stop_at;            /* max_steps cuts the run short; the schedule stays, so a cut
                                run is a prefix of the full one and resumes into it */
    struct run_totals tot;
    bool stop_agreed;        /* data parallel: some rank was asked to stop this step */
    struct bucket *buckets;  /* data parallel: the gradients' buckets, from the last layer back */
    int n_buckets, next_bucket;
    int *first_reader;       /* per parameter: the first tape node that reads it, this step */
    int64_t comm_wait_start_ns, comm_wait_ns; /* the last step's exposed all-reduce, for the trace */
    bool comm_joined;        /* the device's communicator (be->comm) is ours to leave */
};

/* A run of the flat gradient buffer all-reduced as one message: whole parameters
 * first..last (and the alignment padding between them). It can start once backward is
 * past every node that reads them: after node `ready_at`. */
struct bucket { int first, last; size_t off, n; int ready_at; };

static int64_t process_cpu_ns(void) { return os_clock_ns(CLOCK_PROCESS_CPUTIME_ID); }

/* ---- set-up ------------------------------------------------------------------ */

const struct backend *train_pick_backend(const struct config *cfg, FILE *out) {
    enum kernel_flavour fl = cfg->train.kernels;
    if (cfg->train.device == CFG_DEVICE_CPU) return backend_get(DEV_CPU, fl);
    char why[256] = "";
    int gpus = backend_gpu_count(why, sizeof why);
    if (cfg->train.device == CFG_DEVICE_CUDA) {
        if (gpus == 0) {
            err_set("train.device = cuda, but no GPU can be used: %s. HINT: use --device cpu (or auto)", why);
            return NULL;
        }
        return backend_get(DEV_CUDA, fl);
    }
    if (gpus > 0) {
        const struct backend *be = backend_get(DEV_CUDA, fl);
        if (be) { fprintf(out, "device: auto -> cuda (%d GPU%s)\n", gpus, gpus > 1 ? "s" : ""); return be; }
        fprintf(out, "device: auto -> cpu: a GPU is present but %s\n", err_get());
    } else {
        fprintf(out, "device: auto -> cpu (%s)\n", why);
    }
    return backend_get(DEV_CPU, fl);
}

static int path_join(char *buf, size_t len, const char *a, const char *b, const char *suffix) {
    if ((size_t)snprintf(buf, len, "%s/%s%s", a, b, suffix) >= len)
        return err_set("path too long: %s/%s%s", a, b, suffix);
    return 0;
}

/* dataset = idx: "<path>/<split>-images-idx3-ubyte[.gz]" and its labels file. */
static int open_idx_split(const struct cfg_data *d, const char *split, struct dataset **ds) {
    char img[CFG_STR_MAX * 2], lab[CFG_STR_MAX * 2], name[CFG_STR_MAX + 32];
    const char *ext = "";
    snprintf(name, sizeof name, "%s-images-idx3-ubyte.gz", split);
    if (path_join(img, sizeof img, d->path, name, "")) return -1;
    if (access(img, R_OK) == 0) ext = ".gz";
    snprintf(name, sizeof name, "%s-images-idx3-ubyte", split);
    if (path_join(img, sizeof img, d->path, name, ext)) return -1;
    snprintf(name, sizeof name, "%s-labels-idx1-ubyte", split);
    if (path_join(lab, sizeof lab, d->path, name, ext)) return -1;
    return data_open_idx(img, lab, ds);
}

int train_open_split(const struct config *cfg, const char *split, struct dataset **ds) {
    const struct cfg_data *d = &cfg->data;
    char p[CFG_STR_MAX * 2];
    int rc;
    if (d->dataset == CFG_DATASET_FOLDER) {
        struct data_folder_options fo = {d->height, d->width, d->channels, d->on_size_mismatch == CFG_SIZE_RESIZE};
        rc = path_join(p, sizeof p, d->path, split, "") ? -1 : data_open_folder(p, &fo, ds);
        if (rc && access(p, F_OK) != 0)
            return err_set("[data] path: the image folder %s does not exist. HINT: run `make data` (prepares "
                           "Fashion-MNIST) or point data.path at a folder with one subfolder per class", p);
    } else if (d->dataset == CFG_DATASET_PACKED) {
        rc = path_join(p, sizeof p, d->path, split, ".packed") ? -1 : data_open_packed(p, ds);
    } else {
        rc = open_idx_split(d, split, ds);
    }
    if (rc) return -1;
    const struct dataset *s = *ds;
    if (s->height != d->height || s->width != d->width || s->channels != d->channels)
        return err_set("%s holds %dx%dx%d images but [data] says height %d, width %d, channels %d", s->path,
                       s->height, s->width, s->channels, d->height, d->width, d->channels);
    if (s->classes > d->classes)
        return err_set("%s has %d classes but [data] classes = %d", s->path, s->classes, d->classes);
    return 0;
}

void train_loader_config(const struct config *cfg, bool train, struct loader_config *lc) {
    const struct cfg_loader *c = &cfg->loader;
    loader_config_default(lc);
    lc->batch = c->batch;
    lc->workers = c->workers;
    lc->prefetch = c->prefetch;
    lc->shuffle = train;
    lc->drop_last = train && c->drop_last;
    lc->augment = train;
    lc->crop_pad = c->crop_pad;
    lc->flip = c->flip;
    lc->seed = (uint64_t)c->seed;
    lc->cache = c->cache;
    lc->io_delay_us = (unsigned)c->io_delay_us;
    lc->on_bad_sample = cfg->data.on_bad_sample;
    if (train) { /* each rank its share of every epoch; the test split is rank 0's alone */
        lc->rank = dist_rank();
        lc->world = dist_world();
    }
}

int train_make_feed(const struct config *cfg, const struct backend *be, const struct dataset *ds, bool train,
                    struct loader **ld, struct feeder **feed) {
    const struct cfg_loader *c = &cfg->loader;
    struct loader_config lc;
    train_loader_config(cfg, train, &lc);
    lc.slot_alloc = feeder_slot_alloc;
    lc.slot_free = feeder_slot_free;
    lc.slot_ctx = feeder_slot_ctx(be, c->pinned);
    if (loader_create(&lc, ds, ld)) return -1;
    return feeder_create(be, *ld, c->prefetch, data_sample_bytes(ds), c->batch, c->overlap, feed);
}

/* ---- the step ------------------------------------------------------------------ */

enum step_result { STEP_OK, STEP_ERROR, STEP_DIVERGED };

/* ---- data parallel: gradient buckets ------------------------------------------- */

/* Buckets of about dist.bucket_kb, cut at parameter boundaries, from the last parameter
 * back to the first (the order backward finishes them in); bucket_kb = 0: one. */
static int make_buckets(struct trainer *t) {
    const struct nn_params *ps = &t->model.ps;
    size_t target = (size_t)t->cfg->dist.bucket_kb * 1024;
    t->buckets = calloc((size_t)ps->n_params, sizeof *t->buckets);
    t->first_reader = calloc((size_t)ps->n_params, sizeof *t->first_reader);
    if (!t->buckets || !t->first_reader) return err_set("out of host memory for %d buckets", ps->n_params);
    t->n_buckets = 0;
    for (int last = ps->n_params - 1; last >= 0;) {
        int first = last;
        size_t bytes = ps->params[first]->numel * sizeof(float);
        while (first > 0 && (target == 0 || bytes + ps->params[first - 1]->numel * sizeof(float) <= target))
            bytes += ps->params[--first]->numel * sizeof(float);
        struct bucket *b = &t->buckets[t->n_buckets++];
        b->first = first;
        b->last = last;
        b->off = (size_t)(ps->params[first]->data - ps->w);
        b->n = (last + 1 < ps->n_params ? (size_t)(ps->params[last + 1]->data - ps->w) : ps->total) - b->off;
        last = first - 1;
    }
    return 0;
}

/* Hands bucket `next_bucket` and the ones after it to the communication thread while
 * backward is past their readers (`index`: the node just done; -1: backward is over). */
static void launch_ready(void *ctx, int index) {
    struct trainer *t = ctx;
    while (t->next_bucket < t->n_buckets && (index < 0 || t->buckets[t->next_bucket].ready_at >= index)) {
        const struct bucket *b = &t->buckets[t->next_bucket];
        const struct device_comm *dc = t->be->comm;
        /* on a device with its own collectives (NCCL), the bucket is queued on its
         * communication stream; else the host's communication thread takes it */
        if (dc ? dc->allreduce_mean(t->model.ps.g + b->off, b->n) : dist_reduce_start(t->model.ps.g + b->off, b->n))
            return; /* average_gradients reports the bucket that could not start */
        t->next_bucket++;
    }
}

/* This step's tape: when each bucket's gradients are final, and the hook that starts
 * them during backward. A parameter read by no node is final from the start. */
static void plan_buckets(struct trainer *t) {
    const struct nn_params *ps = &t->model.ps;
    const struct ag_tape *tape = &t->ctx.tape;
    for (int p = 0; p < ps->n_params; p++) t->first_reader[p] = INT_MAX;
    for (int i = tape->n - 1; i >= 0; i--)
        for (int k = 0; k < AG_MAX_INPUTS; k++)
            for (int p = 0; tape->nodes[i].in[k] && p < ps->n_params; p++)
                if (tape->nodes[i].in[k] == ps->params[p]) t->first_reader[p] = i;
    for (int b = 0; b < t->n_buckets; b++) {
        struct bucket *bk = &t->buckets[b];
        bk->ready_at = INT_MAX;
        for (int p = bk->first; p <= bk->last; p++)
            if (t->first_reader[p] < bk->ready_at) bk->ready_at = t->first_reader[p];
    }
    t->next_bucket = 0;
    t->ctx.after_node = launch_ready;
    t->ctx.after_node_ctx = t;
}

/* After backward: the buckets not started yet (all of them without overlap), then the
 * wait for all; what the wait cost is the communication backward did not hide. */
static int average_gradients(struct trainer *t) {
    if (!t->cfg->dist.overlap) t->next_bucket = 0;
    launch_ready(t, -1);
    if (t->be->comm) /* the device orders it: the optimizer's kernels wait on the comm stream */
        return t->next_bucket == t->n_buckets ? 0 : err_wrap("a gradient bucket could not be started: ");
    int64_t wait_ns, comm_ns;
    t->comm_wait_start_ns = os_now_ns();
    if (dist_reduce_wait(&wait_ns, &comm_ns)) return -1;
    t->comm_wait_ns = wait_ns;
    t->tot.comm_ns += comm_ns;
    t->tot.comm_wait_ns += wait_ns;
    return t->next_bucket == t->n_buckets ? 0 : err_wrap("a gradient bucket could not be started: ");
}

/* Forward + backward + SGD on one batch; loss and correct count come back. The batch
 * is already on the device (on the CPU, its slot memory is used in place). */
static enum step_result train_step(struct trainer *t, const struct fed_batch *fb, float lr, float *loss_out,
                                   int *correct) {
    struct ag_ctx *c = &t->ctx;
    const struct batch *b = fb->host;
    struct tensor *x = op_normalize_u8(c, fb->images, b->n, b->height, b->width, b->channels, t->mean, t->std);
    struct tensor *logits = x ? nn_forward(&t->model, c, x) : NULL;
    struct tensor *loss = logits ? op_softmax_xent(c, logits, fb->labels) : NULL;
    if (!loss) return STEP_ERROR;
    *correct = op_accuracy_count(c, logits, fb->labels);
    *loss_out = ag_item(c, loss);
    /* data parallel: the ranks' handshake keeps them in step (the mean loss, any stop) */
    if (dist_world() > 1 && dist_agree(t->step, *loss_out, t->opt->stop && *t->opt->stop, loss_out, &t->stop_agreed))
        return STEP_ERROR;
    if (!isfinite(*loss_out)) return STEP_DIVERGED;  /* before the update: weights stay as they were */
    nn_zero_grad(&t->model);
    if (dist_world() > 1 && t->cfg->dist.overlap) plan_buckets(t);
    if (ag_backward(c, loss)) return STEP_ERROR;
    c->after_node = NULL;
    if (dist_world() > 1 && average_gradients(t)) return STEP_ERROR;
    optim_step(&t->optim, &t->model, lr);
    ag_reset(c);
    if (t->be->check && t->be->check()) return STEP_ERROR;  /* an asynchronous kernel failure */
    return STEP_OK;
}

/* The test split's loss and accuracy (evaluate.h: the pass ./eval runs too). */
static int evaluate(struct trainer *t, double *loss, double *acc) {
    struct eval_result r = {.classes = t->cfg->data.classes};
    if (eval_pass(&t->ctx, &t->model, t->test_feed, t->mean, t->std, 0, &r, NULL, NULL))
        return err_wrap("evaluating on the test split: ");
    *loss = r.seen ? r.loss_sum / (double)r.seen : 0;
    *acc = r.seen ? (double)r.right / (double)r.seen : 0;
    return 0;
}

/* ---- progress ----------------------------------------------------------------- */

struct epoch_meter {
    int64_t start_ns, wait_ns, images;
    double loss_sum;
    int64_t correct;
    long steps;
};

static void fmt_eta(char *buf, size_t len, double s) {
    int v = s > 0 && s < 1e7 ? (int)s : 0;
    snprintf(buf, len, "%d:%02d:%02d", v / 3600, v / 60 % 60, v % 60);
}

/* The batch after the last one this epoch will run: the epoch's end, or sooner when
 * max_steps (stop_at) cuts the run short. Called after account() counted batch i. */
static long epoch_end(const struct trainer *t, long i, long nb) {
    long left = t->stop_at - t->step;
    return i + 1 + left < nb ? i + 1 + left : nb;
}

/* The run's last epoch, counted from 1: cfg's epochs, or fewer when max_steps stops it. */
static int last_epoch(const struct trainer *t, long nb) {
    long by_steps = nb > 0 ? (t->stop_at + nb - 1) / nb : 0;
    return by_steps > 0 && by_steps < t->cfg->train.epochs ? (int)by_steps : t->cfg->train.epochs;
}

static void progress(struct trainer *t, int epoch, long i, long nb, const struct epoch_meter *m, bool final) {
    const struct cfg_train *tc = &t->cfg->train;
    /* not a TTY: a line every log_every steps, and the epoch's last step unless just printed */
    if (!t->opt->tty && (i + 1) % tc->log_every != 0 && !final) return;
    if (!t->opt->tty && final && (i + 1) % tc->log_every == 0) return;
    long end = epoch_end(t, i, nb);
    int epochs = last_epoch(t, nb);
    double el = (double)(os_now_ns() - m->start_ns) * 1e-9;
    /* the ETA from this epoch's own steps (a resumed epoch began at a later batch) */
    double ips = el > 0 ? (double)m->images / el : 0;
    double eta = m->steps > 0 && i + 1 < end ? el / (double)m->steps * (double)(end - i - 1) : 0;
    char etas[32];
    fmt_eta(etas, sizeof etas, eta);
    double loss = m->steps ? m->loss_sum / (double)m->steps : 0, acc = m->images ? (double)m->correct / m->images : 0;
    double wait = el > 0 ? (double)m->wait_ns * 1e-9 / el : 0;
    if (t->opt->tty) {
        int width = 24, done = (int)((double)width * (double)(i + 1) / (double)end);
        char bar[32];
        for (int k = 0; k < width; k++) bar[k] = k < done ? '=' : k == done ? '>' : ' ';
        bar[width] = 0;
        fprintf(t->out, "\r\033[Kepoch %d/%d [%s] %ld/%ld loss %.4f acc %5.1f%% %6.0f img/s wait %4.1f%% ETA %s",
                epoch + 1, epochs, bar, i + 1, end, loss, 100 * acc, ips, 100 * wait, etas);
        if (final) fputc('\n', t->out);
    } else {
        fprintf(t->out, "epoch %d/%d step %ld/%ld loss %.4f acc %.1f%% %.0f img/s wait %.1f%% ETA %s\n", epoch + 1,
                epochs, i + 1, end, loss, 100 * acc, ips, 100 * wait, etas);
    }
    fflush(t->out);
}

/* ---- checkpoints ---------------------------------------------------------------- */

/* The optimizer's state as the checkpoint holds it: SGD's momentum, or AdamW's moments. */
static void optim_slots(struct trainer *t, struct ckpt_optim *co) {
    struct nn_params *ps = &t->model.ps;
    if (t->optim.kind == CFG_OPTIM_ADAMW)
        *co = (struct ckpt_optim){"adamw", 2, {"exp_avg", "exp_avg_sq"}, {ps->v, t->optim.v2}, (uint64_t)t->optim.steps};
    else
        *co = (struct ckpt_optim){"sgd", 1, {"momentum", NULL}, {ps->v, NULL}, (uint64_t)t->optim.steps};
}

static int save_checkpoint(struct trainer *t, int epoch, long batch_in_epoch) {
    if (!t->cfg->train.checkpoint[0] || dist_rank() != 0) return 0;
    struct ckpt_state st;
    memset(&st, 0, sizeof st);
    st.fingerprint = cfg_fingerprint(t->cfg);
    st.epoch = epoch;
    st.batch_in_epoch = batch_in_epoch;
    st.step = t->step;
    st.epochs_done = epoch;  /* `epoch` is the one in progress (or next), counted from 0 */
    st.world_size = (uint32_t)dist_world();
    int classes = t->cfg->data.classes;
    const char **names = calloc((size_t)classes, sizeof *names);
    if (!names) return err_set("out of host memory for %d class names", classes);
    for (int c = 0; c < classes; c++) names[c] = data_class_name(t->train_ds, c);
    struct ckpt_optim co;
    optim_slots(t, &co);
    int rc = ckpt_save(t->cfg->train.checkpoint, &t->model, t->cfg, names, &co, &st);
    free(names);
    return rc;
}

/* ---- the run -------------------------------------------------------------------- */

static void close_all(struct trainer *t) {
    if (t->comm_joined) t->be->comm->leave();
    if (t->model.ps.be) optim_free(&t->optim, &t->model);
    free(t->buckets);
    free(t->first_reader);
    feeder_destroy(t->train_feed);
    feeder_destroy(t->test_feed);
    loader_destroy(t->train_ld);
    loader_destroy(t->test_ld);
    data_close(t->train_ds);
    data_close(t->test_ds);
    if (t->tr && trace_close(t->tr)) fprintf(stderr, "warning: %s\n", err_get());
    if (metrics_close(t->metrics, t->cfg->train.metrics)) fprintf(stderr, "warning: %s\n", err_get());
    ag_ctx_free(&t->ctx);
    nn_model_free(&t->model);
}

/* "runs/a/b.ckpt": creates runs/ and runs/a/ when missing, so a fresh checkout can
 * save where the config says. */
static int make_parent_dirs(const char *path, FILE *out) {
    char dir[CFG_STR_MAX];
    snprintf(dir, sizeof dir, "%s", path);
    char *slash = strrchr(dir, '/');
    if (!slash || slash == dir) return 0;
    *slash = 0;
    struct stat st;
    if (stat(dir, &st) == 0 && S_ISDIR(st.st_mode)) return 0;
    if (os_mkdir_p(dir)) return err_wrap("checkpoint %s cannot be written: ", path);
    fprintf(out, "created folder %s for checkpoints\n", dir);
    return 0;
}

/* bytes of be's memory at p from rank 0 to every rank, through the host on a device. */
static int broadcast_device(const struct backend *be, void *p, size_t bytes) {
    if (!be->stage) return dist_broadcast(p, bytes);
    void *host = malloc(bytes ? bytes : 1);
    if (!host) return err_set("out of host memory for %zu bytes", bytes);
    be->copy(host, p, bytes, COPY_D2H);
    int rc = dist_broadcast(host, bytes);
    if (!rc) be->copy(p, host, bytes, COPY_H2D);
    free(host);
    return rc;
}

/* A device with its own collectives (NCCL): rank 0 makes the communicator's id, every
 * rank gets it over MPI and joins. */
static int join_device_comm(struct trainer *t) {
    const struct device_comm *dc = t->be->comm;
    if (!dc) return 0;
    unsigned char *id = calloc(1, dc->id_bytes);
    if (!id) return err_set("out of host memory");
    int rc = (dist_rank() == 0 ? dc->make_id(id) : 0) || dist_broadcast(id, dc->id_bytes) ||
             dc->join(dist_rank(), dist_world(), id);
    free(id);
    if (rc) return err_wrap("rank %d: joining the device communicator: ", dist_rank());
    t->comm_joined = true;
    return 0;
}

/* Data parallel: the same config everywhere, and rank 0's initial weights and BN
 * buffers on every rank. Collectives move host memory, so this is the CPU's path. */
static int join_world(struct trainer *t) {
    int world = dist_world();
    if (world == 1) return 0;
    if (t->be->dev != DEV_CPU && !t->be->comm)
        return err_set("data-parallel training across %d processes on %s needs device collectives (NCCL), and "
                       "this build has none. HINT: --device cpu, or build where nccl.h is", world, t->be->name);
    /* a batch whose samples are all skipped is dropped, which would leave this rank a
     * step short of the others, waiting in different collectives */
    if (t->cfg->data.on_bad_sample == CFG_BAD_SAMPLE_SKIP)
        return err_set("data.on_bad_sample = skip can't be used with %d processes: a rank that skips a whole "
                       "batch falls out of step with the others. HINT: fix or remove the bad images "
                       "(data.on_bad_sample = error names them)", world);
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    if (!f) return err_set("out of host memory");
    cfg_print(t->cfg, f);
    fclose(f);
    uint64_t h = rng_fnv1a(RNG_FNV_START, text, len);
    free(text);
    if (dist_check_same(h, "config") || dist_check_same((uint64_t)t->train_ds->count, "training set size") ||
        dist_check_same((uint64_t)t->test_ds->count, "test set size"))
        return -1;
    struct nn_params *ps = &t->model.ps;
    if (dist_configure(t->cfg->dist.comm_latency_us, t->cfg->dist.comm_gbps, t->cfg->dist.timeout_s) ||
        make_buckets(t) || join_device_comm(t) || broadcast_device(t->be, ps->w, ps->total * sizeof(float)))
        return -1;
    for (int i = 0; i < ps->n_buffers; i++)
        if (broadcast_device(t->be, ps->buffers[i]->data, ps->buffers[i]->numel * sizeof(float))) return -1;
    fprintf(t->out, "data parallel: %d ranks (%s), batch %d per rank, global batch %d; rank 0 prints and saves\n",
            world, dist_name(), t->cfg->loader.batch, world * t->cfg->loader.batch);
    fprintf(t->out, "gradients: %d bucket%s of up to %d KiB, %s backward", t->n_buckets, t->n_buckets > 1 ? "s" : "",
            t->cfg->dist.bucket_kb, t->cfg->dist.overlap ? "all-reduced during" : "all-reduced after");
    if (t->cfg->dist.comm_gbps > 0 || t->cfg->dist.comm_latency_us > 0)
        fprintf(t->out, "; simulated network: %d us a call, %g Gbit/s", t->cfg->dist.comm_latency_us,
                t->cfg->dist.comm_gbps);
    fputc('\n', t->out);
    t->tot.world = world;
    return 0;
}

static int setup(struct trainer *t) {
    const struct config *cfg = t->cfg;
    if (cfg->train.threads > 0) omp_set_num_threads(cfg->train.threads);
    for (int i = 0; i < cfg->data.channels; i++) {
        t->mean[i] = (float)cfg->data.mean.v[i];
        t->std[i] = (float)cfg->data.std.v[i];
    }
    if (!(t->be = train_pick_backend(cfg, t->out))) return -1;
    if (t->be->dev == DEV_CPU && cfg->train.kernels == KF_LOOP) /* the textbook loops use no OpenMP */
        fprintf(t->out, "kernels: %s, one thread (the loop kernels are not parallel)\n", t->be->name);
    else
        fprintf(t->out, "kernels: %s, %d OpenMP threads\n", t->be->name, omp_get_max_threads());
    if (t->be->set_tf32) t->be->set_tf32(cfg->train.tf32);
    else if (cfg->train.tf32) fprintf(t->out, "train.tf32 = yes has no effect on %s\n", t->be->name);
    if (train_open_split(cfg, cfg->data.train_dir, &t->train_ds) || train_open_split(cfg, cfg->data.test_dir, &t->test_ds))
        return -1;
    fprintf(t->out, "data: %lld training and %lld test images of %dx%dx%d, %d classes\n",
            (long long)t->train_ds->count, (long long)t->test_ds->count, cfg->data.height, cfg->data.width,
            cfg->data.channels, cfg->data.classes);
    if (model_build(&t->model, cfg)) return err_wrap("[model]: ");
    fprintf(t->out, "model: %s\n", cfg_enum_name("model.arch", cfg->model.arch));
    if (nn_model_shapes(&t->model, cfg->loader.batch, t->out, NULL, NULL)) return -1;
    if (nn_model_finalize(&t->model, t->be) || ag_ctx_init(&t->ctx, t->be) || optim_init(&t->optim, cfg, &t->model) ||
        join_world(t))
        return -1;
    /* find out now, not after the first epoch, that checkpoints can't be written */
    if (cfg->train.checkpoint[0] && dist_rank() == 0 && (make_parent_dirs(cfg->train.checkpoint, t->out) ||
                                     ckpt_check_writable(cfg->train.checkpoint, ckpt_file_bytes(&t->model))))
        return err_wrap("[train] checkpoint: ");
    if (train_make_feed(cfg, t->be, t->train_ds, true, &t->train_ld, &t->train_feed) ||
        train_make_feed(cfg, t->be, t->test_ds, false, &t->test_ld, &t->test_feed))
        return -1;
    /* data parallel: rank 0 alone writes the trace and the metrics */
    /* data parallel: every rank traces; at the end rank 0 takes the others' events as lanes
     * of its own file (PATH), and theirs (PATH.rankN) are removed */
    if (cfg->train.trace[0]) {
        char path[CFG_STR_MAX + 32];
        snprintf(path, sizeof path, dist_rank() ? "%s.rank%d" : "%s", cfg->train.trace, dist_rank());
        if (!(t->tr = trace_open(path))) return err_wrap("[train] trace: ");
        t->trace_t0_ns = os_now_ns();
    }
    /* a resumed run appends, so the rows before the interruption are kept */
    if (cfg->train.metrics[0] && dist_rank() == 0 && metrics_open(cfg->train.metrics, t->opt->resume != NULL, &t->metrics))
        return err_wrap("[train] metrics: ");
    return 0;
}

static void book_loader_cpu(struct trainer *t, int64_t *sum) {
    *sum = 0;
    int n = loader_workers(t->train_ld);
    for (int w = 0; w < (n ? n : 1); w++) {
        struct loader_worker_stats s;
        if (!loader_worker_stats(t->train_ld, w, &s)) *sum += s.cpu_ns;
    }
}

/* ---- the run ---------------------------------------------------------------------- */

/* --resume: the model's state and where to go on from. */
static int resume(struct trainer *t, int *first_epoch, long *first_batch) {
    struct ckpt_state st;
    struct ckpt_optim co;
    optim_slots(t, &co);
    if (ckpt_load(t->opt->resume, &t->model, &co, &st, cfg_fingerprint(t->cfg)))
        return err_wrap("--resume: ");
    t->optim.steps = (long)co.steps;
    if ((int)st.world_size != dist_world())
        return err_set("--resume: %s was written by %u process%s, this run has %d: each rank's share of an epoch "
                       "depends on the world size. HINT: resume with mpirun -np %u (or train anew)",
                       t->opt->resume, st.world_size, st.world_size == 1 ? "" : "es", dist_world(), st.world_size);
    *first_epoch = (int)st.epoch;
    *first_batch = (long)st.batch_in_epoch;
    t->step = (long)st.step;
    fprintf(t->out, "resumed from %s: epoch %d, batch %ld, step %ld\n", t->opt->resume, *first_epoch + 1,
            *first_batch, t->step);
    return 0;
}

/* The ring's occupancy as a trace counter: how many slots were ready when a step took
 * its batch. It can't exceed loader.prefetch, which the trace records as its maximum
 * so a timeline's axis runs to the ring's size (trace_counter_max). */
#define RING_COUNTER "ring slots ready"

/* The trace's lanes: the training thread, each loader worker, the device's streams,
 * and the ring counter's range. */
static void name_trace_lanes(struct trainer *t) {
    trace_counter_max(t->tr, RING_COUNTER, t->cfg->loader.prefetch);
    trace_thread_name(t->tr, 0, "training thread");
    for (int w = 0; w < loader_workers(t->train_ld); w++) {
        char name[32];
        snprintf(name, sizeof name, "loader worker %d", w + 1);
        trace_thread_name(t->tr, w + 1, name);
    }
    if (loader_workers(t->train_ld) == 0) trace_thread_name(t->tr, 1, "loading, on the training thread");
    if (t->be->stage) {
        trace_thread_name(t->tr, TIMELINE_COPY_STREAM_TID, "copy stream (device)");
        trace_thread_name(t->tr, TIMELINE_COMPUTE_STREAM_TID, "compute stream (device)");
    }
    if (dist_world() > 1 && !t->be->comm) {
        trace_thread_name(t->tr, TIMELINE_COMM_TID, "all-reduce thread");
        trace_thread_name(t->tr, TIMELINE_COMM_WAIT_TID, "all-reduce wait");
    }
}

/* Data parallel: each rank's events, sent to rank 0 as fixed records and added to its
 * trace as lanes of their own ("rank 1: training thread", tids + r x TIMELINE_RANK_TIDS).
 * The ranks' clocks agree on one machine (CLOCK_MONOTONIC); across machines they don't. */
struct trace_wire { char ph; int32_t tid; int64_t t_ns, dur_ns; double value; char name[TRACE_NAME_LEN], cat[16]; };

static void to_wire(const struct trace_record *r, void *ctx) {
    struct trace_wire **at = ctx;
    struct trace_wire *w = (*at)++;
    memset(w, 0, sizeof *w);
    w->ph = r->ph;
    w->tid = r->tid;
    w->t_ns = r->t_ns;
    w->dur_ns = r->dur_ns;
    w->value = r->value;
    snprintf(w->name, sizeof w->name, "%s", r->name);
    snprintf(w->cat, sizeof w->cat, "%s", r->cat);
}

static int merge_rank_traces(struct trainer *t) {
    if (dist_world() == 1 || !t->tr) return 0;
    size_t n = trace_event_count(t->tr) + 64; /* + thread names */
    struct trace_wire *mine = calloc(n + 1, sizeof *mine), *at = mine + 1;
    size_t *lens = calloc((size_t)dist_world(), sizeof *lens);
    void *all = NULL;
    if (!mine || !lens) { free(mine), free(lens); return err_set("out of host memory for the trace"); }
    mine[0].t_ns = t->trace_t0_ns; /* record 0: when this rank's trace began */
    size_t got = trace_for_each(t->tr, to_wire, &at);
    int rc = dist_gather(mine, (got + 1) * sizeof *mine, &all, lens);
    const char *at_byte = all;
    for (int r = 0; !rc && dist_rank() == 0 && r < dist_world(); at_byte += lens[r], r++) {
        const struct trace_wire *w = (const struct trace_wire *)at_byte;
        size_t k = lens[r] / sizeof *w;
        for (size_t i = 1; r > 0 && i < k; i++) {
            char name[TRACE_NAME_LEN + 16];
            snprintf(name, sizeof name, "rank %d: %s", r, w[i].name);
            int tid = w[i].tid + r * TIMELINE_RANK_TIDS;
            int64_t abs = w[0].t_ns + w[i].t_ns; /* on the shared clock */
            if (w[i].ph == 'M') trace_thread_name(t->tr, tid, name);
            else if (w[i].ph == 'C') trace_counter(t->tr, name, abs, w[i].value);
            else if (w[i].ph == 'R') trace_counter_max(t->tr, name, w[i].value);
            else trace_span(t->tr, tid, w[i].name, w[i].cat, abs, w[i].dur_ns);
        }
    }
    free(mine), free(lens), free(all);
    if (dist_rank() != 0) { /* its events are in rank 0's file now */
        char path[CFG_STR_MAX + 32];
        snprintf(path, sizeof path, "%s.rank%d", t->cfg->train.trace, dist_rank());
        trace_close(t->tr);
        t->tr = NULL;
        unlink(path);
    }
    return rc;
}

/* Who loaded batch b, read before feeder_done hands its slot back to the workers. */
static void trace_load(struct trainer *t, const struct batch *b, int64_t step_start_ns) {
    for (int w = 0; w < (loader_workers(t->train_ld) ? loader_workers(t->train_ld) : 1); w++)
        if (b->spans[w].samples)
            trace_span(t->tr, w + 1, "load batch", "loader", b->spans[w].start_ns,
                       b->spans[w].end_ns - b->spans[w].start_ns);
    trace_counter(t->tr, RING_COUNTER, step_start_ns, b->ring_ready);
}

/* The step's spans on the training thread and, on a device, on its two streams. */
static void trace_step(struct trainer *t, const struct fed_batch *fb, int64_t start_ns, int64_t end_ns) {
    struct device_spans dev;
    if (feeder_last_spans(t->train_feed, &dev)) {
        trace_span(t->tr, TIMELINE_COPY_STREAM_TID, "h2d copy", "device", dev.copy_start_ns, dev.copy_ns);
        trace_span(t->tr, TIMELINE_COMPUTE_STREAM_TID, "compute on the device", "device", dev.compute_start_ns,
                   dev.compute_ns);
    }
    trace_span(t->tr, 0, "wait", "step", start_ns - fb->wait_ns, fb->wait_ns);
    trace_span(t->tr, 0, "compute", "step", start_ns, end_ns - start_ns);
    if (dist_world() > 1 && !t->be->comm && t->tr) { /* the buckets, and what backward did not hide of them */
        int64_t s[64], e[64];
        int n = dist_last_buckets(s, e, 64);
        for (int i = 0; i < n && i < 64; i++) trace_span(t->tr, TIMELINE_COMM_TID, "all-reduce bucket", "comm", s[i], e[i] - s[i]);
        trace_span(t->tr, TIMELINE_COMM_WAIT_TID, "waiting for the all-reduce", "comm", t->comm_wait_start_ns,
                   t->comm_wait_ns);
    }
}

/* A finished step's row in the metrics file and its loss and rate as trace counters,
 * before account() counts it (t->step is still its number). */
static void record_step(struct trainer *t, int epoch, long batch, float lr, float loss, int correct, int n,
                        int64_t wait_ns, int64_t step_ns, int64_t end_ns) {
    double s = (double)step_ns * 1e-9, rate = s > 0 ? n / s : 0;
    if (t->metrics)
        metrics_write(t->metrics, &(struct metrics_row){.kind = METRICS_STEP, .step = t->step, .epoch = epoch + 1,
                                                        .batch = batch, .lr = lr, .loss = loss,
                                                        .accuracy = n ? (double)correct / n : 0,
                                                        .images_per_s = rate,
                                                        .wait_share = step_ns > 0 ? (double)wait_ns / step_ns : 0});
    trace_counter(t->tr, "loss", end_ns, loss);
    trace_counter(t->tr, "images/s", end_ns, rate);
}

/* One step's numbers into the epoch's meter and the run's totals (the report):
 * n images, waited for wait_ns. The report judges the steady state, so each step is
 * booked under its phase (report.h): a memory cache's first epoch, the run's first
 * steps, a later epoch's first step (the ring refilling), or steady. */
static void account(struct trainer *t, struct epoch_meter *m, int n, int64_t wait_ns, float loss, int correct,
                    int64_t h2d_ns, int64_t compute_ns, int64_t step_ns) {
    const struct cfg_loader *l = &t->cfg->loader;
    bool epoch_start = m->steps == 0;
    if (epoch_start) t->tot.epochs_seen++;
    if (epoch_start && t->tot.epochs_seen == 2 && l->cache == CFG_CACHE_MEMORY) {
        /* the cache is full: the CPU times so far (finish() makes them the run's share) */
        book_loader_cpu(t, &t->tot.loader_cpu_cold_ns);
        t->tot.process_cpu_cold_ns = process_cpu_ns();
    }
    t->step++;
    m->steps++;
    m->images += n;
    m->loss_sum += loss;
    m->correct += correct;
    m->wait_ns += wait_ns;
    enum run_phase ph = l->cache == CFG_CACHE_MEMORY && t->tot.epochs_seen == 1 ? RUN_CACHE_FILL
                        : t->tot.steps < RUN_WARM_STEPS                        ? RUN_START
                        : epoch_start && l->workers > 0                        ? RUN_RING_FILL
                                                                               : RUN_STEADY;
    report_count_step(&t->tot, ph, &(struct run_span){1, n, step_ns, wait_ns, h2d_ns, compute_ns});
}

/* Ctrl-C or SIGTERM was seen: a checkpoint at the next batch, and a word on where. */
static enum train_status interrupted(struct trainer *t, int epoch, long next_batch) {
    const char *ck = t->cfg->train.checkpoint;
    if (t->opt->tty) fputc('\n', t->out);
    if (save_checkpoint(t, epoch, next_batch)) return TRAIN_ERROR;
    fprintf(t->out, "interrupted at step %ld (epoch %d, batch %ld)%s%s\n", t->step, epoch + 1, next_batch,
            ck[0] ? "; checkpoint written to " : "; no checkpoint configured", ck);
    return TRAIN_INTERRUPTED;
}

/* One epoch's steps from batch `start`, until the epoch or the run (stop_at) ends;
 * *next is the batch after the last one done. The loop is the data flow: a batch from
 * the feeder, the step, the batch back to the loader, then the bookkeeping. */
static enum train_status train_epoch(struct trainer *t, int epoch, long start, long nb, struct epoch_meter *m,
                                     long *next) {
    const struct config *cfg = t->cfg;
    long i = start;
    enum train_status status = TRAIN_OK;
    for (; t->step < t->stop_at; i++) {
        int64_t t0 = os_now_ns();
        struct fed_batch fb;
        int got = feeder_next(t->train_feed, &fb);
        if (got < 0) { status = TRAIN_ERROR; break; }
        if (got == 0) break;
        float lr = optim_lr_at(cfg->optim.schedule, (float)cfg->optim.lr, (float)cfg->optim.warmup, t->step,
                               t->total_steps), loss = 0;
        int correct = 0;
        int64_t t1 = os_now_ns();
        enum step_result r = train_step(t, &fb, lr, &loss, &correct);
        /* what is needed of the batch, read before feeder_done gives its slot back to the
         * workers, who may refill it at once */
        int n = fb.host->n;
        trace_load(t, fb.host, t1);
        feeder_done(t->train_feed, &fb);
        int64_t t2 = os_now_ns(), h2d, compute;
        feeder_take_times(t->train_feed, &h2d, &compute);
        trace_step(t, &fb, t1, t2);
        if (r == STEP_ERROR) { status = TRAIN_ERROR; break; }
        if (r == STEP_DIVERGED) {
            fprintf(stderr, "\nerror: the loss became %s at step %ld (epoch %d, batch %ld); stopping. The last "
                            "checkpoint%s%s is kept. HINT: lower optim.lr or check the data\n",
                    isnan(loss) ? "NaN" : "infinite", t->step, epoch + 1, i, cfg->train.checkpoint[0] ? " " : "",
                    cfg->train.checkpoint);
            status = TRAIN_DIVERGED;
            break;
        }
        int64_t step_ns = os_now_ns() - t0;
        record_step(t, epoch, i, lr, loss, correct, n, fb.wait_ns, step_ns, t2);
        account(t, m, n, fb.wait_ns, loss, correct, h2d, compute, step_ns);
        progress(t, epoch, i, nb, m, false);
        if (dist_world() > 1 ? t->stop_agreed : t->opt->stop && *t->opt->stop) {
            status = interrupted(t, epoch, i + 1);
            break;
        }
    }
    *next = i;
    return status;
}

/* Data parallel, at each epoch's end: every rank's parameters must be the same bits. */
static int check_in_step(struct trainer *t) {
    const struct nn_params *ps = &t->model.ps;
    size_t bytes = ps->total * sizeof(float);
    unsigned char *p = malloc(bytes ? bytes : 1); /* a host copy: the weights may be on a device */
    if (!p) return err_set("out of host memory for the parameters' hash");
    ps->be->copy(p, ps->w, bytes, COPY_D2H);
    uint64_t h = rng_fnv1a(RNG_FNV_START, p, bytes);
    free(p);
    if (dist_check_same(h, "parameters")) return err_wrap("the ranks drifted apart: ");
    fprintf(t->out, " [parameters identical on %d ranks]", dist_world());
    return 0;
}

/* The epoch's row in the metrics file: the numbers of its line, el seconds long, and
 * the test split's loss and accuracy when it was `tested`. */
static void record_epoch(struct trainer *t, int epoch, long next, const struct epoch_meter *m, double el,
                         bool tested, double test_loss, double test_acc) {
    if (!t->metrics) return;
    metrics_write(t->metrics, &(struct metrics_row){
        .kind = METRICS_EPOCH, .step = t->step, .epoch = epoch + 1, .batch = next,
        .loss = m->steps ? m->loss_sum / (double)m->steps : 0,
        .accuracy = m->images ? (double)m->correct / (double)m->images : 0,
        .images_per_s = el > 0 ? (double)m->images / el : 0,
        .wait_share = el > 0 ? (double)m->wait_ns * 1e-9 / el : 0,
        .tested = tested, .test_loss = test_loss, .test_accuracy = test_acc});
}

/* The epoch's line (and the test split's numbers when it is time), then its checkpoint. */
static enum train_status end_epoch(struct trainer *t, int epoch, long next, long nb, const struct epoch_meter *m) {
    const struct config *cfg = t->cfg;
    if (m->steps) progress(t, epoch, next - 1, nb, m, true);
    double el = (double)(os_now_ns() - m->start_ns) * 1e-9;
    fprintf(t->out, "epoch %d: train loss %.4f acc %.2f%%, %.0f images/s, %.1f s, waiting %.1f%%", epoch + 1,
            m->steps ? m->loss_sum / (double)m->steps : 0.0, m->images ? 100.0 * (double)m->correct / m->images : 0.0,
            el > 0 ? (double)m->images / el : 0.0, el, el > 0 ? 100.0 * (double)m->wait_ns * 1e-9 / el : 0.0);
    /* a resumed epoch's meter began at its first batch after the checkpoint */
    if (next - m->steps > 0)
        fprintf(t->out, " (batches %ld-%ld only: resumed mid-epoch)", next - m->steps + 1, next);
    bool last = epoch + 1 == cfg->train.epochs || t->step >= t->stop_at;
    if (dist_world() > 1 && check_in_step(t)) {
        fputc('\n', t->out);
        return TRAIN_ERROR;
    }
    double tl = 0, ta = 0;
    bool tested = cfg->train.eval_every > 0 && ((epoch + 1) % cfg->train.eval_every == 0 || last) &&
                  dist_rank() == 0; /* data parallel: rank 0 evaluates */
    if (tested) {
        if (evaluate(t, &tl, &ta)) {
            fputc('\n', t->out);
            return TRAIN_ERROR;
        }
        fprintf(t->out, "; test loss %.4f acc %.2f%%", tl, 100 * ta);
    }
    fputc('\n', t->out);
    record_epoch(t, epoch, next, m, el, tested, tl, ta);
    bool epoch_done = next >= nb;
    return save_checkpoint(t, epoch_done ? epoch + 1 : epoch, epoch_done ? 0 : next) ? TRAIN_ERROR : TRAIN_OK;
}

/* The pipeline report and the samples the loader skipped. */
static void finish(struct trainer *t, int64_t cpu0, int64_t loader0) {
    if (merge_rank_traces(t)) fprintf(stderr, "warning: the ranks' traces: %s\n", err_get());
    t->tot.process_cpu_ns = process_cpu_ns() - cpu0;
    int64_t loader1;
    book_loader_cpu(t, &loader1);
    t->tot.loader_cpu_ns = loader1 - loader0;
    if (t->tot.process_cpu_cold_ns) { /* account() took absolute times */
        t->tot.loader_cpu_cold_ns -= loader0;
        t->tot.process_cpu_cold_ns -= cpu0;
    }
    if (t->tot.steps) report_print(t->out, &t->tot, t->cfg);
    int64_t skipped = loader_skipped(t->train_ld, NULL, 0) + loader_skipped(t->test_ld, NULL, 0);
    if (skipped) {
        char last[512];
        loader_skipped(t->train_ld, last, sizeof last);
        fprintf(t->out, "skipped %lld bad samples (on_bad_sample = skip); last: %s\n", (long long)skipped, last);
    }
}

static enum train_status run(struct trainer *t) {
    const struct config *cfg = t->cfg;
    fprintf(t->out, "# resolved config\n");
    cfg_print(cfg, t->out);
    if (setup(t)) {
        fflush(t->out);
        fprintf(stderr, "error: %s\n", err_get());
        return TRAIN_ERROR;
    }
    long nb = (long)loader_batches_per_epoch(t->train_ld);
    t->total_steps = t->stop_at = nb * cfg->train.epochs;
    if (cfg->train.max_steps > 0 && cfg->train.max_steps < t->stop_at) t->stop_at = cfg->train.max_steps;
    int first_epoch = 0;
    long first_batch = 0;
    if (t->opt->resume && (resume(t, &first_epoch, &first_batch) ||
                           ((first_epoch > cfg->train.epochs || first_batch > nb) &&
                            err_set("--resume: %s stands at epoch %d, batch %ld, past this run's %d epochs of %ld "
                                    "batches", t->opt->resume, first_epoch + 1, first_batch, cfg->train.epochs, nb)))) {
        fprintf(stderr, "error: %s\n", err_get());
        return TRAIN_ERROR;
    }
    t->tot.cores = (int)sysconf(_SC_NPROCESSORS_ONLN);
    t->tot.on_gpu = t->be->dev == DEV_CUDA;
    name_trace_lanes(t);
    int64_t cpu0 = process_cpu_ns(), loader0;
    book_loader_cpu(t, &loader0);

    enum train_status status = TRAIN_OK;
    for (int epoch = first_epoch; epoch < cfg->train.epochs && status == TRAIN_OK && t->step < t->stop_at; epoch++) {
        long start = epoch == first_epoch ? first_batch : 0, next = start;
        if (feeder_start_epoch(t->train_feed, epoch, start)) status = TRAIN_ERROR;
        struct epoch_meter m = {.start_ns = os_now_ns()};
        if (status == TRAIN_OK) status = train_epoch(t, epoch, start, nb, &m, &next);
        if (status == TRAIN_OK) status = end_epoch(t, epoch, next, nb, &m);
    }
    fflush(t->out);
    if (status == TRAIN_ERROR) fprintf(stderr, "error: %s\n", err_get());
    finish(t, cpu0, loader0);
    return status;
}

enum train_status train_run(const struct config *cfg, const struct train_options *opt) {
    struct trainer t;
    memset(&t, 0, sizeof t);
    t.cfg = cfg;
    t.opt = opt;
    t.out = opt->out ? opt->out : stdout;
    FILE *sink = opt->quiet ? fopen("/dev/null", "w") : NULL;
    if (sink) t.out = sink;
    enum train_status status = run(&t);
    if (opt->totals) *opt->totals = t.tot;
    close_all(&t);
    if (sink) fclose(sink);
    return status;
}
