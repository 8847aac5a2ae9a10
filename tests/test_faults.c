/* test_faults.c — ./train under faults, driven through the CLI: SIGINT and SIGTERM
 * mid-run, bad images with on_bad_sample = error and skip, unwritable and vanishing
 * checkpoint paths, and SIGKILL at random moments of a run that checkpoints every step.
 * Every wait on the child has a deadline: a hang fails the test instead of stalling it.
 *
 * The datasets are tiny synthetic PNG folders (4 classes of 12x12 gray images, the
 * shape configs/smoke.cfg expects), made once per test in build/. */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "backend.h"
#include "checkpoint.h"
#include "config.h"
#include "error.h"
#include "fixtures/datagen.h"
#include "models.h"
#include "testutil.h"

static char dir[64];
static long child_fsize_limit; /* > 0: RLIMIT_FSIZE of the next ./train, a disk that is full */

/* DIR/NAME/{train,test}/c<k>/<id>.png */
static void make_dataset(const char *name, int train_per_class, int test_per_class) {
    char p[256];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    mkdir(p, 0755);
    snprintf(p, sizeof p, "%s/%s/train", dir, name);
    dg_make_folder(p, 4, train_per_class, 12, 12, 1);
    snprintf(p, sizeof p, "%s/%s/test", dir, name);
    dg_make_folder(p, 4, test_per_class, 12, 12, 1);
}

static void setup(void) {
    mkdir("build", 0755);
    snprintf(dir, sizeof dir, "build/test-faults-XXXXXX");
    cr_assert_not_null(mkdtemp(dir));
    make_dataset("data", 48, 4); /* 12 steps of 16 per epoch */
}

static void teardown(void) { dg_rm_tree(dir); }

/* ---- a ./train child with a deadline on everything ---- */

struct child {
    pid_t pid;
    int fd;            /* its stdout and stderr */
    char out[1 << 16]; /* what it printed, the last part if it printed more */
    size_t len;
};

static int64_t now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ./train configs/smoke.cfg --set data.path=DIR/<data> ARGS (split on spaces). */
static void start(struct child *c, const char *data, const char *args) {
    static char line[4096];
    char *argv[64];
    int argc = 0;
    snprintf(line, sizeof line, "./train configs/smoke.cfg --set data.path=%s/%s %s", dir, data, args);
    for (char *tok = strtok(line, " "); tok && argc < 63; tok = strtok(NULL, " ")) argv[argc++] = tok;
    argv[argc] = NULL;
    int p[2];
    cr_assert_eq(pipe(p), 0);
    memset(c, 0, sizeof *c);
    c->pid = fork();
    cr_assert_geq(c->pid, 0);
    if (c->pid == 0) {
        /* the test runner's signal mask and dispositions must not reach ./train */
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        signal(SIGINT, SIG_DFL);
        signal(SIGTERM, SIG_DFL);
        if (child_fsize_limit > 0) {
            struct rlimit r = {(rlim_t)child_fsize_limit, (rlim_t)child_fsize_limit};
            signal(SIGXFSZ, SIG_IGN); /* writes past the limit fail with EFBIG instead */
            setrlimit(RLIMIT_FSIZE, &r);
        }
        dup2(p[1], 1);
        dup2(p[1], 2);
        close(p[0]);
        close(p[1]);
        execv(argv[0], argv);
        _exit(127);
    }
    close(p[1]);
    c->fd = p[0];
    fcntl(c->fd, F_SETFL, O_NONBLOCK);
}

/* Reads what the child printed until `needle` shows up (NULL: until it closes its
 * output). Returns 1 when found, 0 at end of output, -1 at the deadline. */
static int read_until(struct child *c, const char *needle, int timeout_ms) {
    int64_t deadline = now_ms() + timeout_ms;
    for (;;) {
        if (needle && strstr(c->out, needle)) return 1;
        int64_t left = deadline - now_ms();
        if (left <= 0) return -1;
        struct pollfd pfd = {c->fd, POLLIN, 0};
        if (poll(&pfd, 1, (int)left) <= 0) continue;
        if (c->len + 4096 >= sizeof c->out) { /* keep the last half */
            memmove(c->out, c->out + sizeof c->out / 2, c->len - sizeof c->out / 2);
            c->len -= sizeof c->out / 2;
        }
        ssize_t n = read(c->fd, c->out + c->len, sizeof c->out - c->len - 1);
        if (n < 0 && (errno == EAGAIN || errno == EINTR)) continue;
        if (n <= 0) return 0;
        c->len += (size_t)n;
        c->out[c->len] = 0;
    }
}

/* Waits for the child to end; its exit code, 128 + N if signal N ended it. A child
 * still running at the deadline is killed and the test fails: that is a hang. */
static int finish(struct child *c, int timeout_ms) {
    int r = read_until(c, NULL, timeout_ms);
    if (r < 0) kill(c->pid, SIGKILL);
    int st;
    waitpid(c->pid, &st, 0);
    close(c->fd);
    cr_assert_geq(r, 0, "./train still running after %d ms (a hang); output:\n%s", timeout_ms, c->out);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

static int run(const char *data, const char *args, struct child *c) {
    start(c, data, args);
    return finish(c, 90000);
}

/* ckpt_load of `path` into the model of smoke.cfg plus the NULL-terminated `sets`, as
 * --resume does; 0 or -1. */
static int load_checkpoint(const char *path, struct ckpt_state *st, const char *const *sets) {
    struct config cfg;
    struct nn_model m;
    cr_assert_eq(cfg_load(&cfg, "configs/smoke.cfg"), 0, "%s", err_get());
    for (int i = 0; sets && sets[i]; i++) cr_assert_eq(cfg_set(&cfg, sets[i]), 0, "%s", err_get());
    cr_assert_eq(model_build(&m, &cfg), 0, "%s", err_get());
    cr_assert_eq(nn_model_finalize(&m, &cpu_vectorized_backend), 0, "%s", err_get());
    int rc = ckpt_load(path, &m, NULL, st, cfg_fingerprint(&cfg));
    nn_model_free(&m);
    return rc;
}

static int exists(const char *path) {
    struct stat sb;
    return stat(path, &sb) == 0;
}

TestSuite(faults, .init = setup, .fini = teardown, .timeout = 240);

/* ---- SIGINT / SIGTERM ---- */

static void signal_mid_run(int sig, const char *name) {
    static struct child c;
    char args[512], ck[128];
    snprintf(ck, sizeof ck, "%s/%s.ckpt", dir, name);
    /* 5 ms per file on 2 workers: about 40 ms a step, 1.5 s for the run */
    snprintf(args, sizeof args, "--set loader.io_delay_us=5000 --set train.log_every=1 "
             "--set train.eval_every=0 --set train.checkpoint=%s", ck);
    start(&c, "data", args);
    cr_assert_eq(read_until(&c, "step 1/", 60000), 1, "no progress line; output:\n%s", c.out);
    kill(c.pid, sig);
    int rc = finish(&c, 60000);
    cr_assert_eq(rc, 130, "%s: exit %d, expected 130; output:\n%s", name, rc, c.out);
    cr_expect(strstr(c.out, "interrupted at step") && strstr(c.out, "checkpoint written to"),
              "%s: no interruption message:\n%s", name, c.out);
    cr_expect_null(strstr(c.out, "epoch 3/3 step 12/12"), "%s: the run went on to the end", name);

    struct ckpt_state st;
    cr_assert_eq(load_checkpoint(ck, &st, NULL), 0, "%s: %s", name, err_get());
    cr_expect(st.step >= 1 && st.step < 36, "%s: checkpoint at step %lld", name, (long long)st.step);

    snprintf(args, sizeof args, "--set train.eval_every=0 --set train.checkpoint=%s --resume %s", ck, ck);
    rc = run("data", args, &c);
    cr_assert_eq(rc, 0, "%s: resume exit %d:\n%s", name, rc, c.out);
    cr_expect(strstr(c.out, "resumed from"), "%s: %s", name, c.out);
    cr_assert_eq(load_checkpoint(ck, &st, NULL), 0, "%s: %s", name, err_get());
    cr_expect_eq(st.step, 36, "%s: resumed run ended at step %lld, not 36", name, (long long)st.step);
}

Test(faults, sigint_finishes_the_step_saves_and_resumes) { signal_mid_run(SIGINT, "sigint"); }
Test(faults, sigterm_finishes_the_step_saves_and_resumes) { signal_mid_run(SIGTERM, "sigterm"); }

/* ---- bad samples ---- */

/* A copy of the dataset with train/c1/50.png replaced by `bytes`. */
static void make_bad_dataset(const char *name, const void *bytes, size_t len, char *bad_path, size_t cap) {
    make_dataset(name, 48, 4);
    snprintf(bad_path, cap, "%s/%s/train/c1/50.png", dir, name);
    dg_write_file(bad_path, bytes, len);
}

static void bad_sample_runs(const char *name, const void *bytes, size_t len) {
    static struct child c;
    char bad[256], args[256];
    make_bad_dataset(name, bytes, len, bad, sizeof bad);
    for (int workers = 0; workers <= 2; workers += 2) {
        snprintf(args, sizeof args, "--set train.epochs=1 --set loader.workers=%d", workers);
        int rc = run(name, args, &c);
        cr_expect_eq(rc, 1, "%s, workers=%d, error: exit %d:\n%s", name, workers, rc, c.out);
        cr_expect(strstr(c.out, bad), "%s, workers=%d: the message does not name %s:\n%s", name,
                  workers, bad, c.out);
        snprintf(args, sizeof args, "--set train.epochs=2 --set loader.workers=%d "
                 "--set data.on_bad_sample=skip", workers);
        rc = run(name, args, &c);
        cr_expect_eq(rc, 0, "%s, workers=%d, skip: exit %d:\n%s", name, workers, rc, c.out);
        cr_expect(strstr(c.out, "skipped 2 bad samples") && strstr(c.out, bad),
                  "%s, workers=%d: no skip count (1 file, 2 epochs):\n%s", name, workers, c.out);
    }
}

Test(faults, a_corrupt_png_stops_the_run_or_is_skipped) {
    static const char junk[] = "\x89PNG\r\n\x1a\n this is not an image at all";
    bad_sample_runs("corrupt", junk, sizeof junk);
}

Test(faults, an_empty_file_stops_the_run_or_is_skipped) { bad_sample_runs("empty", "", 0); }

/* ---- checkpoint paths ---- */

Test(faults, an_unwritable_checkpoint_path_fails_before_training) {
    static struct child c;
    char args[512];
    const char *paths[2] = {NULL, "/proc/nostall-faults.ckpt"};
    char under_file[256];
    snprintf(under_file, sizeof under_file, "%s/data/train/c0/0.png/run.ckpt", dir); /* parent is a file */
    paths[0] = under_file;
    for (int i = 0; i < 2; i++) {
        snprintf(args, sizeof args, "--set train.checkpoint=%s", paths[i]);
        int rc = run("data", args, &c);
        cr_expect_eq(rc, 1, "%s: exit %d:\n%s", paths[i], rc, c.out);
        cr_expect(strstr(c.out, "cannot be written") && strstr(c.out, paths[i]), "%s:\n%s", paths[i], c.out);
        cr_expect_null(strstr(c.out, "step 1/"), "%s: training started:\n%s", paths[i], c.out);
    }
}

/* No room for one checkpoint (RLIMIT_FSIZE below its size, as a full disk): the space
 * probe fails before the first step, naming the size. */
Test(faults, a_full_disk_fails_before_training) {
    static struct child c;
    char args[256];
    snprintf(args, sizeof args, "--set train.checkpoint=%s/full.ckpt", dir);
    child_fsize_limit = 4096;
    int rc = run("data", args, &c);
    child_fsize_limit = 0;
    cr_expect_eq(rc, 1, "exit %d:\n%s", rc, c.out);
    cr_expect(strstr(c.out, "cannot be written") && strstr(c.out, "reserving") && strstr(c.out, "HINT"),
              "%s", c.out);
    cr_expect_null(strstr(c.out, "step 1/"), "training started:\n%s", c.out);
}

/* The checkpoint directory disappears mid-run: the save at the epoch's end fails and the
 * run stops with the reason instead of training on without saving. */
Test(faults, a_failing_save_stops_the_run) {
    static struct child c;
    char args[512], ckdir[128];
    snprintf(ckdir, sizeof ckdir, "%s/vanishing", dir);
    mkdir(ckdir, 0755);
    snprintf(args, sizeof args, "--set loader.io_delay_us=5000 --set train.log_every=1 "
             "--set train.eval_every=0 --set train.checkpoint=%s/run.ckpt", ckdir);
    start(&c, "data", args);
    cr_assert_eq(read_until(&c, "step 1/", 60000), 1, "no progress line:\n%s", c.out);
    dg_rm_tree(ckdir);
    int rc = finish(&c, 60000);
    cr_expect_eq(rc, 1, "exit %d:\n%s", rc, c.out);
    cr_expect(strstr(c.out, "saving checkpoint") && strstr(c.out, "No such file"), "%s", c.out);
    cr_expect_null(strstr(c.out, "epoch 2/"), "it trained on after the failed save:\n%s", c.out);
}

/* ---- SIGKILL while checkpointing ---- */

/* One step per epoch (16 images, batch 16) and a checkpoint at every epoch's end; an MLP
 * with a 4096-wide hidden layer makes each checkpoint 4.8 MB, so a good part of a run's
 * time is saving. Each round resumes from the last checkpoint and is killed at a random
 * moment. The checkpoint must load after every kill, never go back in time, and carry a
 * final --resume to the end. */
Test(faults, sigkill_at_random_moments_never_loses_the_checkpoint) {
    static struct child c;
    enum { ROUNDS = 40 };
    char ck[128], tmp[160], args[512];
    make_dataset("tiny", 4, 1);
    static const char *const wide[] = {"model.arch=mlp", "model.hidden=4096", NULL};
    snprintf(ck, sizeof ck, "%s/kill.ckpt", dir);
    snprintf(tmp, sizeof tmp, "%s.tmp", ck);
    uint64_t seed = 0x5eed;
    int64_t last_epoch = 0;
    int mid_save = 0;
    for (int round = 0; round < ROUNDS; round++) {
        snprintf(args, sizeof args, "--set train.epochs=100000 --set train.eval_every=0 "
                 "--set train.log_every=1000000 --set loader.workers=0 --set model.arch=mlp "
                 "--set model.hidden=4096 --set train.checkpoint=%s%s%s",
                 ck, round ? " --resume " : "", round ? ck : "");
        start(&c, "tiny", args);
        if (round == 0) {
            int64_t deadline = now_ms() + 60000;
            while (!exists(ck) && now_ms() < deadline) read_until(&c, "\x01", 5); /* 5 ms, output drained */
            cr_assert(exists(ck), "no checkpoint after 60 s:\n%s", c.out);
        } else {
            cr_assert_eq(read_until(&c, "resumed from", 60000), 1, "round %d did not resume:\n%s", round, c.out);
        }
        /* a random moment, draining its output meanwhile (it never prints \x01) */
        read_until(&c, "\x01", (int)(tu_rand_u32(&seed) % 100));
        kill(c.pid, SIGKILL);
        cr_assert_eq(finish(&c, 30000), 128 + SIGKILL);
        mid_save += exists(tmp);
        struct ckpt_state st;
        cr_assert_eq(load_checkpoint(ck, &st, wide), 0, "round %d: %s", round, err_get());
        cr_assert_geq(st.epoch, last_epoch, "round %d: the checkpoint went back from epoch %lld to %lld",
                      round, (long long)last_epoch, (long long)st.epoch);
        last_epoch = st.epoch;
    }
    cr_log_info("%d SIGKILLs, %d of them with a save in progress; reached epoch %lld", ROUNDS, mid_save,
                (long long)last_epoch);
    cr_expect_gt(last_epoch, 0, "no epoch was ever saved");
    snprintf(args, sizeof args, "--set train.epochs=%lld --set train.eval_every=0 --set loader.workers=0 "
             "--set model.arch=mlp --set model.hidden=4096 --set train.checkpoint=%s --resume %s",
             (long long)last_epoch + 2, ck, ck);
    int rc = run("tiny", args, &c);
    cr_assert_eq(rc, 0, "final resume: exit %d:\n%s", rc, c.out);
    struct ckpt_state st;
    cr_assert_eq(load_checkpoint(ck, &st, wide), 0, "%s", err_get());
    cr_expect_eq(st.epoch, last_epoch + 2);
}
