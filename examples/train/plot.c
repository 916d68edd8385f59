/*
** plot.c: adtape-train's figure, drawn by gnuplot from the job_log main.c filled: the
** accuracy per epoch and the angle to backprop's gradient at every hidden layer, one
** curve per rule (mean over seeds). Never trains.
*/
#define _POSIX_C_SOURCE 200809L /* popen, pclose */

#include "report.h"

#include <math.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>

static const run_log *run_at(const job_log *job, int r, int s)
{
    return &job->runs[r * job->n_seeds + s];
}

/* One datablock per rule: epoch, accuracy (%), then the angle at each hidden layer,
** each the mean over seeds. */
static void plot_data(FILE *g, const job_log *job)
{
    for (int r = 0; r < job->n_rules; r++) {
        fprintf(g, "$%s << EOD\n", rule_name(run_at(job, r, 0)->rule));
        for (int e = 0; e <= job->n_epochs; e++) {
            double acc = 0.0;
            for (int s = 0; s < job->n_seeds; s++)
                acc += run_at(job, r, s)->epochs[e].accuracy;
            fprintf(g, "%d %.6g", e, 100.0 * acc / job->n_seeds);
            for (int l = 0; l < job->n_hidden; l++) {
                double angle = 0.0;
                for (int s = 0; s < job->n_seeds; s++)
                    angle += run_at(job, r, s)->epochs[e].grad_angle[l];
                fprintf(g, " %.6g", angle / job->n_seeds);
            }
            fputc('\n', g);
        }
        fputs("EOD\n", g);
    }
}

/* The accuracy axis: from 5 points below the lowest final accuracy (every rule's end
** in view, and the few points between the good rules readable, which a 0-90% axis
** hides) to 1 point above the highest accuracy of any epoch. Earlier epochs below
** the range run off the bottom. */
static void accuracy_range(const job_log *job, double *lo, double *hi)
{
    *lo = 100.0, *hi = 0.0;
    for (int r = 0; r < job->n_rules; r++)
        for (int e = 0; e <= job->n_epochs; e++) {
            double acc = 0.0;
            for (int s = 0; s < job->n_seeds; s++)
                acc += run_at(job, r, s)->epochs[e].accuracy;
            acc = 100.0 * acc / job->n_seeds;
            if (!isfinite(acc))
                continue;
            if (e == job->n_epochs && acc < *lo)
                *lo = acc;
            if (acc > *hi)
                *hi = acc;
        }
    *lo = *lo - 5 < 0 ? 0 : floor(*lo - 5);
    *hi = *hi + 1 > 100 ? 100 : ceil(*hi + 1);
    if (*hi <= *lo)
        *lo = 0, *hi = 100;
}

/* A gnuplot single-quoted string: only the quote itself needs escaping ('' ). */
static void plot_quoted(FILE *g, const char *s)
{
    fputc('\'', g);
    for (; *s; s++) {
        if (*s == '\'')
            fputc('\'', g);
        fputc(*s, g);
    }
    fputc('\'', g);
}

static void plot_panel(FILE *g, const job_log *job, int column)
{
    fputs("plot ", g);
    for (int r = 0; r < job->n_rules; r++) {
        const char *name = rule_name(run_at(job, r, 0)->rule);
        fprintf(g, "%s$%s using 1:%d with linespoints lw 2 pt 7 ps 0.6 title '%s'",
                r ? ", " : "", name, column, name);
    }
    fputc('\n', g);
}

static void plot_script(FILE *g, const job_log *job, const char *png_path)
{
    plot_data(g, job);
    /* The accuracy panel, then one angle panel per hidden layer, three to a row. */
    int panels = 1 + job->n_hidden, rows = (panels + 2) / 3, cols = panels < 3 ? panels : 3;
    /* pngcairo antialiases; plain png (libgd) is the fallback some builds only have. */
    fprintf(g, "if (strstrt(' '.GPVAL_TERMINALS.' ', ' pngcairo ') > 0) {\n"
               "  set terminal pngcairo size %d,%d font ',10'\n"
               "} else {\n  set terminal png size %d,%d\n}\nset output ",
            600 * cols, 480 * rows, 600 * cols, 480 * rows);
    plot_quoted(g, png_path);
    /* Whole epochs on the x axis; the key outside, where no curve can run under it. */
    fprintf(g, "\nset multiplot layout %d,%d title 'adtape-train: mean over %d seed%s'\n"
               "set grid\nset xlabel 'epoch'\nset key outside right top vertical\n"
               "set xrange [0:%d]\nset xtics %d\n",
            rows, cols, job->n_seeds, job->n_seeds == 1 ? "" : "s", job->n_epochs,
            job->n_epochs > 10 ? (job->n_epochs + 9) / 10 : 1);
    double lo, hi;
    accuracy_range(job, &lo, &hi);
    fprintf(g, "set yrange [%g:%g]\nset ylabel '%s accuracy (%%)'\n", lo, hi, job->eval_name);
    plot_panel(g, job, 2);
    for (int l = 0; l < job->n_hidden; l++) {
        fprintf(g, "set yrange [0:*]\n"
                   "set ylabel 'angle to backprop gradient, hidden layer %d (deg)'\n", l + 1);
        plot_panel(g, job, 3 + l);
    }
    fputs("unset multiplot\nset output\n", g);
}

int report_plot(const job_log *job, const char *png_path, FILE *log)
{
    int found = system("command -v gnuplot >/dev/null 2>&1");
    if (found != 0) {
        fprintf(log, "gnuplot not found: no plot drawn; the numbers are in %s/epochs.csv\n",
                job->out_dir);
        return 1;
    }
    /* If gnuplot dies early, a write must fail with EPIPE, not kill the job. */
    void (*old)(int) = signal(SIGPIPE, SIG_IGN);
    FILE *g = popen("gnuplot 1>&2", "w"); /* keeps stdout clean for --json */
    int status = -1;
    if (g) {
        plot_script(g, job, png_path);
        status = pclose(g);
    }
    signal(SIGPIPE, old);
    if (status == -1 || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        fprintf(log, "gnuplot failed: no plot drawn; the numbers are in %s/epochs.csv\n",
                job->out_dir);
        return -1;
    }
    return 0;
}
