/* test_dist.c — data-parallel training under mpirun on this one machine: ranks end
 * with the same parameters, 2 ranks x batch 8 train what 1 rank x batch 16 does, a
 * 2-rank run resumes exactly, and a config mismatch or a rank that dies ends the job
 * with a message naming the rank. Each test starts ./train through mpirun (Open MPI,
 * oversubscribed: 2 cores here); without mpirun every test says it was skipped. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "backend.h"
#include "checkpoint.h"
#include "error.h"
#include "testutil.h"
#include "fixtures/datagen.h"
#include "fixtures/smoke.h"

static char dir[64];

/* mpirun as root needs the first two. Under make test-asan the ranks run without
 * LeakSanitizer: Open MPI keeps allocations until exit in plugins it has unloaded by
 * then, which the sanitizer can't tell from ours (the same trainer code is leak-checked
 * alone in test_train); ASan's other checks stay on. */
#define MPIRUN "OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 " \
               "ASAN_OPTIONS=\"${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=0\" timeout 120 mpirun --oversubscribe"
#define TRAIN "./train configs/smoke.cfg --set train.threads=1 --set data.path="

static void setup(void) {
    if (system("command -v mpirun >/dev/null 2>&1") != 0)
        cr_skip_test("mpirun not found: data-parallel tests need Open MPI (make setup installs openmpi-bin)");
    snprintf(dir, sizeof dir, "build/test-dist-XXXXXX");
    mkdir("build", 0755);
    cr_assert_not_null(mkdtemp(dir));
    smoke_write_split(dir, "train", 48, 1);
    smoke_write_split(dir, "test", 16, 2);
}

static void teardown(void) {
    char cmd[256];
    if (!dir[0]) return;
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    cr_expect_eq(system(cmd), 0);
}

TestSuite(dist, .init = setup, .fini = teardown, .timeout = 180);

/* mpirun -np N ./train smoke.cfg on our data, plus `extra`. */
static int run_ranks(int n, const char *extra, char **out) {
    char cmd[4096];
    snprintf(cmd, sizeof cmd, MPIRUN " -np %d " TRAIN "%s %s", n, dir, extra);
    return smoke_run(cmd, out);
}

static void skip_without_mpi_build(const char *out) {
    if (strstr(out, "built without MPI")) cr_skip_test("this nostall was built without MPI (no libopenmpi-dev)");
}

Test(dist, two_and_three_ranks_keep_identical_parameters) {
    for (int n = 2; n <= 3; n++) {
        char *out, want[64];
        int rc = run_ranks(n, "--set train.epochs=2", &out);
        skip_without_mpi_build(out);
        cr_expect_eq(rc, 0, "%d ranks: exit %d\n%s", n, rc, out);
        snprintf(want, sizeof want, "data parallel: %d ranks (mpi)", n);
        cr_expect(strstr(out, want), "%s", out);
        snprintf(want, sizeof want, "[parameters identical on %d ranks]", n);
        const char *first = strstr(out, want);
        cr_expect(first && strstr(first + 1, want), "both epochs must check the parameters:\n%s", out);
        cr_expect(strstr(out, "all-reduce"), "the report has no all-reduce row:\n%s", out);
        free(out);
    }
}

/* The parameters of a checkpoint, opened as ./eval would. */
static struct nn_model open_params(const char *path) {
    struct nn_model m;
    struct ckpt_info info;
    cr_assert_eq(ckpt_open_model(path, &cpu_vectorized_backend, &m, &info), 0, "%s", err_get());
    ckpt_info_free(&info);
    return m;
}

/* The loss column of a metrics file's step rows (header: kind,step,epoch,batch,lr,loss,...). */
static int step_losses(const char *path, double *loss, int cap) {
    FILE *f = fopen(path, "r");
    cr_assert_not_null(f, "no metrics file %s", path);
    char line[512];
    int n = 0;
    while (fgets(line, sizeof line, f) && n < cap) {
        long step;
        int epoch;
        long batch;
        double lr;
        if (sscanf(line, "step,%ld,%d,%ld,%lf,%lf", &step, &epoch, &batch, &lr, &loss[n]) == 5) n++;
    }
    fclose(f);
    return n;
}

Test(dist, two_ranks_of_8_train_what_one_rank_of_16_does) {
    /* no batch norm: its statistics are per rank, so only a model without it is the same
     * computation split in two */
    const char *model = "--set 'model.layers=conv3x3-8 relu maxpool2 conv3x3-16 relu gap linear' "
                        "--set train.epochs=2 --set train.eval_every=0";
    char extra[1024], one[128], two[128], *out;
    snprintf(one, sizeof one, "%s/one.ckpt", dir);
    snprintf(two, sizeof two, "%s/two.ckpt", dir);
    snprintf(extra, sizeof extra, "%s --set loader.batch=16 --set train.checkpoint=%s --metrics %s.csv", model, one, one);
    cr_assert_eq(run_ranks(1, extra, &out), 0, "%s", out);
    free(out);
    snprintf(extra, sizeof extra, "%s --set loader.batch=8 --set train.checkpoint=%s --metrics %s.csv", model, two, two);
    int rc = run_ranks(2, extra, &out);
    skip_without_mpi_build(out);
    cr_assert_eq(rc, 0, "%s", out);
    cr_expect(strstr(out, "global batch 16"), "%s", out);
    free(out);
    /* step by step: the loss of every step (the ranks' mean, on 2 ranks) */
    double la[64], lb[64];
    char csv[160];
    snprintf(csv, sizeof csv, "%s.csv", one);
    int na = step_losses(csv, la, 64);
    snprintf(csv, sizeof csv, "%s.csv", two);
    int nb = step_losses(csv, lb, 64);
    cr_expect(na == 24 && nb == 24, "steps in the metrics files: %d and %d", na, nb);
    for (int i = 0; i < na && i < nb; i++)
        cr_expect(fabs(la[i] - lb[i]) <= 2e-6 + 1e-5 * fabs(la[i]), "step %d: loss %.6f on 1 x 16, %.6f on 2 x 8",
                  i + 1, la[i], lb[i]);
    struct nn_model a = open_params(one), b = open_params(two);
    cr_assert_eq(a.ps.n_params, b.ps.n_params);
    for (int i = 0; i < a.ps.n_params; i++) {
        double err = tu_tensor_rel_err(a.ps.params[i]->data, b.ps.params[i]->data, a.ps.params[i]->numel);
        cr_expect_lt(err, 1e-4, "%s: 1 x 16 and 2 x 8 differ by %g of the tensor's scale after 24 steps",
                     a.ps.param_names[i], err);
        cr_log_info("%s: relative difference %.2g", a.ps.param_names[i], err);
    }
    nn_model_free(&a);
    nn_model_free(&b);
}

/* The NCCL path (kernels/cuda/cuda_nccl.cu) on the emulated CUDA device, whose NCCL
 * stand-in reduces over MPI: 2 ranks on "GPUs" train what 2 CPU ranks train. make test
 * builds that ./train in build/emu (tests only). */
Test(dist, the_nccl_path_on_the_emulated_device_trains_as_the_cpu_ranks) {
    const char *emu = access("build/emu/bin/train", X_OK) == 0 ? "build/emu/bin/train"
                    : access("../../emu/bin/train", X_OK) == 0 ? "../../emu/bin/train" : NULL;
    if (!emu) cr_skip_test("no ./train built for the emulated CUDA device (make test builds build/emu/bin/train)");
    const char *model = "--set 'model.layers=conv3x3-8 relu maxpool2 conv3x3-16 relu gap linear' --set loader.batch=8 "
                        "--set train.epochs=1 --set train.eval_every=0 --set dist.bucket_kb=1";
    char cmd[4096], *out, cpu[128], gpu[128];
    snprintf(cpu, sizeof cpu, "%s/cpu.ckpt", dir);
    snprintf(gpu, sizeof gpu, "%s/gpu.ckpt", dir);
    snprintf(cmd, sizeof cmd, MPIRUN " -np 2 " TRAIN "%s %s --device cpu --set train.checkpoint=%s", dir, model, cpu);
    int rc = smoke_run(cmd, &out);
    skip_without_mpi_build(out);
    cr_assert_eq(rc, 0, "%s", out);
    free(out);
    snprintf(cmd, sizeof cmd, MPIRUN " -np 2 %s configs/smoke.cfg --set train.threads=1 --set data.path=%s %s "
                              "--device cuda --set train.checkpoint=%s", emu, dir, model, gpu);
    rc = smoke_run(cmd, &out);
    skip_without_mpi_build(out);
    cr_assert_eq(rc, 0, "%s", out);
    cr_expect(strstr(out, "kernels: cuda-") && strstr(out, "[parameters identical on 2 ranks]"), "%s", out);
    free(out);
    struct nn_model a = open_params(cpu), b = open_params(gpu);
    for (int i = 0; i < a.ps.n_params; i++) {
        double err = tu_tensor_rel_err(a.ps.params[i]->data, b.ps.params[i]->data, a.ps.params[i]->numel);
        cr_expect_lt(err, 1e-3, "%s: the CPU ranks and the emulated GPU ranks differ by %g of its scale",
                     a.ps.param_names[i], err);
    }
    nn_model_free(&a);
    nn_model_free(&b);
}

/* The bytes of a checkpoint from its classes section on (tensors, optimizer, state). */
static char *after_config(const char *path, long *n) {
    size_t len;
    char *b = (char *)dg_read_file(path, &len);
    cr_assert_not_null(b, "no checkpoint %s", path);
    char *c = memmem(b, len, "classes\0", 8);
    cr_assert_not_null(c);
    *n = (long)(len - (size_t)(c - b) - 4);
    char *copy = malloc((size_t)*n);
    memcpy(copy, c, (size_t)*n);
    free(b);
    return copy;
}

/* Two checkpoints in dir hold the same tensors, optimizer state and position. */
static void expect_same_state(const char *a_name, const char *b_name, const char *what) {
    char pa[128], pb[128];
    snprintf(pa, sizeof pa, "%s/%s", dir, a_name);
    snprintf(pb, sizeof pb, "%s/%s", dir, b_name);
    long na, nb;
    char *a = after_config(pa, &na), *b = after_config(pb, &nb);
    cr_expect(na == nb && memcmp(a, b, (size_t)na) == 0, "%s differ", what);
    free(a);
    free(b);
}

Test(dist, a_two_rank_run_resumes_exactly) {
    char extra[1024], *out;
    snprintf(extra, sizeof extra, "--set train.epochs=2 --set train.eval_every=0 --set train.checkpoint=%s/full.ckpt", dir);
    int rc = run_ranks(2, extra, &out);
    skip_without_mpi_build(out);
    cr_assert_eq(rc, 0, "%s", out);
    free(out);
    snprintf(extra, sizeof extra, "--set train.epochs=2 --set train.eval_every=0 --set train.max_steps=9 "
                                  "--set train.checkpoint=%s/half.ckpt", dir);
    cr_assert_eq(run_ranks(2, extra, &out), 0, "%s", out);
    free(out);
    snprintf(extra, sizeof extra, "--set train.epochs=2 --set train.eval_every=0 --set train.checkpoint=%s/half.ckpt "
                                  "--resume %s/half.ckpt", dir, dir);
    cr_assert_eq(run_ranks(2, extra, &out), 0, "%s", out);
    cr_expect(strstr(out, "resumed from"), "%s", out);
    free(out);
    /* with another world size the shares of the epoch differ: refused */
    cr_expect_eq(run_ranks(3, extra, &out), 1, "%s", out);
    cr_expect(strstr(out, "written by 2 processes, this run has 3"), "%s", out);
    free(out);
    expect_same_state("full.ckpt", "half.ckpt", "2 epochs straight and 9 steps + resume");
}

/* Buckets started during backward average the same numbers as one bucket after it:
 * each value is summed in rank order either way, so the bits are the same. */
Test(dist, buckets_overlapped_with_backward_give_the_same_bits) {
    char extra[1024], *out;
    const char *ways[2] = {"--set dist.bucket_kb=0 --set dist.overlap=no", "--set dist.bucket_kb=1 --set dist.overlap=yes"};
    for (int w = 0; w < 2; w++) {
        snprintf(extra, sizeof extra, "--set train.epochs=1 --set train.eval_every=0 --set train.checkpoint=%s/way%d.ckpt %s",
                 dir, w, ways[w]);
        int rc = run_ranks(2, extra, &out);
        skip_without_mpi_build(out);
        cr_assert_eq(rc, 0, "%s", out);
        cr_expect(strstr(out, w ? "buckets of up to 1 KiB, all-reduced during backward"
                                : "1 bucket of up to 0 KiB, all-reduced after backward"), "%s", out);
        free(out);
    }
    expect_same_state("way0.ckpt", "way1.ckpt", "one bucket after backward and 1 KiB buckets during it");
}

/* A long 2-rank run (plus `extra`), the newest rank sent `sig` once training is under
 * way; the log, and in *secs how long the job took to end after the signal. */
static char *signal_a_rank(const char *sig, const char *extra, int *secs) {
    char cmd[4096], *out;
    snprintf(cmd, sizeof cmd,
             "(" MPIRUN " -np 2 " TRAIN "%s --set train.epochs=1000 --set train.eval_every=0 %s "
             "> %s/log 2>&1; echo \"exit $?\" >> %s/log) & "
             "for i in $(seq 100); do grep -q 'data parallel' %s/log 2>/dev/null && break; sleep 0.1; done; sleep 1; "
             "pkill -%s -f -n 'data.path=%s' ; start=$(date +%%s); wait; "
             "echo \"seconds $(($(date +%%s) - start))\"; cat %s/log",
             dir, extra, dir, dir, dir, sig, dir, dir);
    smoke_run(cmd, &out);
    skip_without_mpi_build(out);
    *secs = -1;
    const char *s = strstr(out, "seconds ");
    if (s) sscanf(s, "seconds %d", secs);
    return out;
}

/* A rank stopped with SIGSTOP answers nothing: the others name it after dist.timeout_s. */
Test(dist, a_stopped_rank_is_named_after_the_timeout) {
    int secs;
    char *out = signal_a_rank("STOP", "--set dist.timeout_s=3", &secs);
    cr_expect(strstr(out, "did not answer within dist.timeout_s = 3 s"), "no rank was named:\n%s", out);
    cr_expect(strstr(out, "rank 1 did not answer") || strstr(out, "rank 0 did not answer"), "%s", out);
    cr_expect(secs >= 0 && secs <= 15, "the job took %d s to stop after the stop:\n%s", secs, out);
    free(out);
}

/* One trace for the job: rank 0's file holds every rank's lanes and the all-reduce's. */
Test(dist, the_trace_has_a_lane_per_rank_and_the_all_reduce) {
    char extra[512], *out, path[128], other[160];
    snprintf(path, sizeof path, "%s/run.json", dir);
    snprintf(other, sizeof other, "%s.rank1", path);
    snprintf(extra, sizeof extra, "--set train.epochs=1 --set train.eval_every=0 --trace %s", path);
    int rc = run_ranks(2, extra, &out);
    skip_without_mpi_build(out);
    cr_assert_eq(rc, 0, "%s", out);
    free(out);
    size_t len;
    char *json = (char *)dg_read_file(path, &len);
    cr_assert_not_null(json, "no trace at %s", path);
    cr_expect(strstr(json, "\"rank 1: training thread\"") && strstr(json, "\"rank 1: loader worker 1\""),
              "rank 1's lanes are missing");
    cr_expect(strstr(json, "\"counter_max\",\"args\":{\"name\":\"rank 1: ring slots ready\",\"value\":2}"),
              "rank 1's ring counter lost its maximum (smoke.cfg's prefetch) on the way");
    cr_expect(strstr(json, "\"all-reduce thread\"") && strstr(json, "\"all-reduce bucket\"") &&
              strstr(json, "\"waiting for the all-reduce\""), "the all-reduce's lanes are missing");
    cr_expect_neq(access(other, F_OK), 0, "rank 1's own trace file was left behind");
    free(json);
}

/* SIGTERM to the ranks (what Ctrl-C is to a lone ./train): they agree to stop after the
 * same step, rank 0 writes the checkpoint, and it resumes. */
Test(dist, stopping_the_ranks_writes_a_checkpoint_that_resumes) {
    char cmd[4096], *out;
    snprintf(cmd, sizeof cmd,
             "(" MPIRUN " -np 2 " TRAIN "%s --set train.epochs=1000 --set train.eval_every=0 "
             "--set train.checkpoint=%s/stop.ckpt > %s/log 2>&1) & "
             "for i in $(seq 100); do grep -q 'data parallel' %s/log 2>/dev/null && break; sleep 0.1; done; sleep 1; "
             "pkill -TERM -f '^[^ ]*train configs/smoke.cfg .*data.path=%s '; wait; cat %s/log", /* the ranks, not this shell */
             dir, dir, dir, dir, dir, dir);
    smoke_run(cmd, &out);
    skip_without_mpi_build(out);
    cr_expect(strstr(out, "interrupted at step") && strstr(out, "checkpoint written to"), "%s", out);
    free(out);
    char extra[512];
    snprintf(extra, sizeof extra, "--set train.epochs=1000 --set train.max_steps=1 --set train.eval_every=0 "
                                  "--resume %s/stop.ckpt", dir);
    int rc = run_ranks(2, extra, &out);
    cr_expect_eq(rc, 0, "%s", out);
    cr_expect(strstr(out, "resumed from"), "%s", out);
    free(out);
}

Test(dist, a_config_mismatch_is_a_clear_error_on_every_rank) {
    char cmd[4096], *out;
    snprintf(cmd, sizeof cmd, MPIRUN " -np 1 " TRAIN "%s : -np 1 " TRAIN "%s --set optim.lr=0.1", dir, dir);
    int rc = smoke_run(cmd, &out);
    skip_without_mpi_build(out);
    cr_expect_neq(rc, 0, "%s", out);
    cr_expect(strstr(out, "rank 1's config differs from rank 0's"), "%s", out);
    free(out);
}

Test(dist, a_rank_that_dies_ends_the_job_naming_it) {
    int secs;
    char *out = signal_a_rank("KILL", "", &secs);
    cr_expect(strstr(out, "exit 0") == NULL, "the job ended well though a rank was killed:\n%s", out);
    cr_expect(strstr(out, "process rank 1") || strstr(out, "process rank 0"), "no rank named:\n%s", out);
    cr_expect(secs >= 0 && secs <= 10, "the job took %d s to stop after the kill:\n%s", secs, out);
    free(out);
}
