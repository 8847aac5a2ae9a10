/* train.c — ./train CONFIG [--set section.key=value]... [--device auto|cpu|cuda]
 *                          [--resume FILE] [--trace FILE [--timeline FILE.svg]] [--metrics FILE.csv]
 * Trains what CONFIG describes; see README.md. Exit codes: train.h's enum train_status. */
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "config.h"
#include "dist.h"
#include "error.h"
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
               "               [--metrics FILE.csv]   one line per step: step, epoch, batch, lr, loss\n"
               "       ./train --help-config   every config key, its default and meaning\n");
}

int main(int argc, char **argv) {
    if (argc >= 2 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"))) { usage(stdout); return 0; }
    if (argc >= 2 && !strcmp(argv[1], "--help-config")) { cfg_print_help(stdout); return 0; }
    if (argc < 2 || argv[1][0] == '-') { usage(stderr); return 2; }
    /* under mpirun this process is one rank of a data-parallel run (dist.h) */
    if (dist_init()) { fprintf(stderr, "error: %s\n", err_get()); return 1; }
    struct config cfg;
    if (cfg_load(&cfg, argv[1])) { fprintf(stderr, "error: %s\n", err_get()); return 2; }
    struct train_options opt = {.out = stdout, .tty = isatty(STDOUT_FILENO), .stop = &stop_requested};
    const char *timeline = NULL;
    char assignment[CFG_STR_MAX + 64];
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        int rc = 0;
        if (!strcmp(a, "--set") && v) rc = cfg_set(&cfg, v);
        else if (!strcmp(a, "--device") && v)
            rc = snprintf(assignment, sizeof assignment, "train.device=%s", v) >= (int)sizeof assignment
                     ? err_set("--device: value too long") : cfg_set(&cfg, assignment);
        else if (!strcmp(a, "--trace") && v)
            rc = snprintf(assignment, sizeof assignment, "train.trace=%s", v) >= (int)sizeof assignment
                     ? err_set("--trace: path too long") : cfg_set(&cfg, assignment);
        else if (!strcmp(a, "--resume") && v) opt.resume = v;
        else if (!strcmp(a, "--timeline") && v) timeline = v;
        else if (!strcmp(a, "--metrics") && v) opt.metrics = v;
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
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);
    FILE *quiet = NULL; /* data parallel: rank 0 prints; the others' errors still reach stderr */
    if (dist_rank() != 0 && (quiet = fopen("/dev/null", "w"))) opt.out = quiet, opt.tty = false;
    enum train_status st = train_run(&cfg, &opt);
    if (quiet) fclose(quiet);
    if (st == TRAIN_ERROR || st == TRAIN_DIVERGED) dist_abort((int)st); /* the others would wait for this rank */
    dist_finalize();
    /* the picture is drawn from the trace file the run just wrote */
    if (timeline && st != TRAIN_ERROR && timeline_write_svg(cfg.train.trace, timeline, NULL))
        fprintf(stderr, "warning: --timeline: %s\n", err_get());
    return (int)st;
}
