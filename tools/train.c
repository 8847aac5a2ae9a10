/* train.c — ./train CONFIG [--set section.key=value]... [--device auto|cpu|cuda]
 *                          [--resume FILE] [--trace FILE [--timeline FILE.svg]]
 *                          [--metrics FILE.csv [--curves FILE.svg]]
 * Trains what CONFIG describes; see README.md. Exit codes: train.h's enum train_status. */
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "config.h"
#include "dist.h"
#include "error.h"
#include "models.h"
#include "report.h"
#include "train.h"
#include "viz.h"

static volatile sig_atomic_t stop_requested;

/* First Ctrl-C: finish the step, save, exit. A second one: the default action, now. */
static void on_signal(int sig) {
    stop_requested = 1;
    signal(sig, SIG_DFL);
}

static void usage(FILE *f) {
    fprintf(f, "usage: ./train CONFIG [--set section.key=value]... [--device auto|cpu|cuda]\n"
               "               [--resume CHECKPOINT] [--trace FILE.json [--timeline FILE.svg]]\n"
               "               [--metrics FILE.csv [--curves FILE.svg]]   loss, accuracy, images/s per step\n"
               "                                      and per epoch; --curves draws them when the run ends\n"
               "       ./train --help-config   every config key, its default and meaning\n"
               "       ./train --help-report   every line of the pipeline report, explained\n");
}

/* --device, --trace, --metrics: shortcuts for `--set train.KEY=VALUE`. */
static int set_train_key(struct config *cfg, const char *key, const char *value) {
    char assignment[CFG_STR_MAX + 64];
    if (snprintf(assignment, sizeof assignment, "train.%s=%s", key, value) >= (int)sizeof assignment)
        return err_set("--%s: value too long", key);
    return cfg_set(cfg, assignment);
}

int main(int argc, char **argv) {
    if (argc >= 2 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"))) { usage(stdout); return 0; }
    if (argc >= 2 && !strcmp(argv[1], "--help-config")) {
        /* every key, then the cnn layer grammar ([model] layers): the config knows no
         * model (docs/design.md, the include rule), so the two are put together here */
        cfg_print_help(stdout);
        fputc('\n', stdout);
        model_cnn_print_grammar(stdout);
        return 0;
    }
    if (argc >= 2 && !strcmp(argv[1], "--help-report")) { report_help(stdout); return 0; }
    if (argc < 2 || argv[1][0] == '-') { usage(stderr); return 2; }
    struct config cfg;
    if (cfg_load(&cfg, argv[1])) { fprintf(stderr, "error: %s\n", err_get()); return 2; }
    struct train_options opt = {.out = stdout, .tty = isatty(STDOUT_FILENO), .stop = &stop_requested};
    const char *timeline = NULL, *curves = NULL;
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        int rc = 0;
        if (!strcmp(a, "--set") && v) rc = cfg_set(&cfg, v);
        else if (!strcmp(a, "--device") && v) rc = set_train_key(&cfg, "device", v);
        else if (!strcmp(a, "--trace") && v) rc = set_train_key(&cfg, "trace", v);
        else if (!strcmp(a, "--metrics") && v) rc = set_train_key(&cfg, "metrics", v);
        else if (!strcmp(a, "--resume") && v) opt.resume = v;
        else if (!strcmp(a, "--timeline") && v) timeline = v;
        else if (!strcmp(a, "--curves") && v) curves = v;
        else {
            fprintf(stderr, "error: %s '%s'\n", v || a[0] != '-' ? "unknown argument" : "missing value after", a);
            usage(stderr);
            return 2;
        }
        if (rc) { fprintf(stderr, "error: %s\n", err_get()); return 2; }
        i++;
    }
    if (cfg_validate(&cfg, "--set")) { fprintf(stderr, "error: %s\n", err_get()); return 2; }
    if (timeline && !cfg.train.trace[0]) {
        fprintf(stderr, "error: --timeline FILE.svg draws the run's trace: give --trace FILE.json too\n");
        return 2;
    }
    if (curves && !cfg.train.metrics[0]) {
        fprintf(stderr, "error: --curves FILE.svg draws the run's metrics: give --metrics FILE.csv too (or set "
                        "train.metrics)\n");
        return 2;
    }
    /* Under mpirun this process is one rank of a data-parallel run (dist.h). It joins
     * the world after the command line is known good: a rank that exits before joining
     * makes mpirun end the job, where one that joined and left would leave the others
     * waiting in a collective. */
    if (dist_init()) { fprintf(stderr, "error: %s\n", err_get()); return 1; }
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);
    FILE *quiet = NULL; /* data parallel: rank 0 prints; the others' errors still reach stderr */
    if (dist_rank() != 0 && (quiet = fopen("/dev/null", "w"))) opt.out = quiet, opt.tty = false;
    enum train_status st = train_run(&cfg, &opt);
    if (quiet) fclose(quiet);
    /* an error is this rank's alone: the others would wait for it (a divergence or an
     * interruption the ranks agreed on, and they all end the same way) */
    if (st == TRAIN_ERROR) dist_abort((int)st);
    bool draws = dist_rank() == 0; /* data parallel: rank 0 wrote the trace and the metrics */
    dist_finalize();
    /* the pictures are drawn from the files the run just wrote; an interrupted or
     * diverged run is drawn up to its last step */
    if (draws && timeline && st != TRAIN_ERROR && timeline_write_svg(cfg.train.trace, timeline, NULL))
        fprintf(stderr, "warning: --timeline: %s\n", err_get());
    if (draws && curves && st != TRAIN_ERROR && curves_write_svg(cfg.train.metrics, curves))
        fprintf(stderr, "warning: --curves: %s\n", err_get());
    return (int)st;
}
