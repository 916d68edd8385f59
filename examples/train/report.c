/*
** report.c: adtape-train's output. Reads the job_log main.c filled; never trains.
*/
#define _POSIX_C_SOURCE 200809L /* popen, pclose */

#include "report.h"

#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

/* The layer every one-number summary uses: the top hidden layer is the one whose
** feedback differs least between rules, so it shows alignment first. */
static int top(const job_log *job)
{
    return job->n_hidden - 1;
}

static const run_log *run_at(const job_log *job, int r, int s)
{
    return &job->runs[r * job->n_seeds + s];
}

/* Mean and sample standard deviation (0 for one value); NaN propagates on purpose,
** so a diverged seed shows up instead of vanishing from the mean. */
static double mean_sd(const double *x, int n, double *sd)
{
    double sum = 0.0, ss = 0.0;
    for (int i = 0; i < n; i++)
        sum += x[i];
    double mean = sum / n;
    for (int i = 0; i < n; i++)
        ss += (x[i] - mean) * (x[i] - mean);
    *sd = n > 1 ? sqrt(ss / (n - 1)) : 0.0;
    return mean;
}

static void format_duration(char *buf, size_t size, double s)
{
    if (!isfinite(s) || s < 0)
        snprintf(buf, size, "--");
    else if (s < 3600)
        snprintf(buf, size, "%dm%02ds", (int)s / 60, (int)s % 60);
    else
        snprintf(buf, size, "%dh%02dm", (int)(s / 3600), (int)s % 3600 / 60);
}

void report_bar(FILE *f, const progress *p)
{
    enum { WIDTH = 20 };
    char bar[WIDTH + 1], eta[32];
    int filled = (int)(p->fraction * WIDTH + 0.5);
    for (int i = 0; i < WIDTH; i++)
        bar[i] = i < filled ? '#' : '.';
    bar[WIDTH] = '\0';
    format_duration(eta, sizeof eta, p->eta_s);
    /* "\033[K" clears what a longer earlier bar left behind. */
    fprintf(f, "\r%-6s seed %llu  epoch %d/%d [%s] %3.0f%%  %6.0f img/s  ETA %s\033[K",
            p->rule, (unsigned long long)p->seed, p->epoch, p->n_epochs, bar,
            100.0 * p->fraction, p->images_per_s, eta);
    fflush(f);
}

void report_clear_bar(FILE *f)
{
    fputs("\r\033[K", f);
}

void report_epoch(FILE *f, const job_log *job, const run_log *run, int e)
{
    const epoch_stats *st = &run->epochs[e];
    char loss[32];
    if (e == 0)
        snprintf(loss, sizeof loss, "%7s", "-");
    else
        snprintf(loss, sizeof loss, "%7.4f", st->train_loss);
    fprintf(f, "%-6s seed %-3llu epoch %3d/%-3d  loss %s  %s %6.2f%%  angle(l%d) %6.2f deg"
               "  %6.2f s",
            rule_name(run->rule), (unsigned long long)run->seed, e, job->n_epochs, loss,
            job->eval_name, 100.0 * st->accuracy, top(job) + 1,
            st->grad_angle[top(job)], st->seconds);
    if (job->ranks > 1 && e > 0)
        fprintf(f, "  allreduce %4.1f%%", 100.0 * st->comm_seconds / st->seconds);
    fputc('\n', f);
    fflush(f);
}

/* Mean seconds per epoch over every seed and every trained epoch of rule r. */
static double rule_epoch_seconds(const job_log *job, int r)
{
    double sum = 0.0;
    for (int s = 0; s < job->n_seeds; s++)
        for (int e = 1; e <= job->n_epochs; e++)
            sum += run_at(job, r, s)->epochs[e].seconds;
    return sum / ((double)job->n_seeds * job->n_epochs);
}

/* Final accuracy (percent) and top angle over seeds for rule r. */
static void rule_finals(const job_log *job, int r, double *acc, double *angle)
{
    for (int s = 0; s < job->n_seeds; s++) {
        const epoch_stats *st = &run_at(job, r, s)->epochs[job->n_epochs];
        acc[s] = 100.0 * st->accuracy;
        angle[s] = st->grad_angle[top(job)];
    }
}

void report_table(FILE *f, const job_log *job)
{
    double *acc = malloc(2 * (size_t)job->n_seeds * sizeof *acc);
    if (!acc)
        return;
    double *angle = acc + job->n_seeds;
    int one = job->n_seeds == 1; /* one seed: the values alone, no "+- 0.00" */
    fprintf(f, "\nafter %d epoch%s, %d seed%s%s, %s set of %lld images:\n\n",
            job->n_epochs, job->n_epochs == 1 ? "" : "s", job->n_seeds, one ? "" : "s",
            one ? "" : " (mean +- sd)", job->eval_name, (long long)job->n_eval);
    fprintf(f, "%-7s %18s %20s %9s %9s %9s\n", "rule", "accuracy (%)", "angle l_top (deg)",
            "s/epoch", "lr", "decay");
    for (int r = 0; r < job->n_rules; r++) {
        double acc_sd, angle_sd;
        rule_finals(job, r, acc, angle);
        double acc_mean = mean_sd(acc, job->n_seeds, &acc_sd);
        double angle_mean = mean_sd(angle, job->n_seeds, &angle_sd);
        const run_log *run = run_at(job, r, 0);
        char angle_text[32], acc_text[32];
        if (isnan(angle_mean))
            snprintf(angle_text, sizeof angle_text, "%20s", "-");
        else if (one)
            snprintf(angle_text, sizeof angle_text, "%20.2f", angle_mean);
        else
            snprintf(angle_text, sizeof angle_text, "%11.2f +- %5.2f", angle_mean, angle_sd);
        if (one)
            snprintf(acc_text, sizeof acc_text, "%18.2f", acc_mean);
        else
            snprintf(acc_text, sizeof acc_text, "%9.2f +- %5.2f", acc_mean, acc_sd);
        fprintf(f, "%-7s %s %s %9.2f %9.3g %9.3g\n", rule_name(run->rule), acc_text,
                angle_text, rule_epoch_seconds(job, r), run->lr, run->weight_decay);
    }
    fprintf(f, "\nangle l_top: between the rule's and backprop's gradient at hidden layer "
               "%d,\non the first test images; '-': no gradient reaches it (frozen) or a "
               "seed diverged.\n",
            top(job) + 1);
    free(acc);
}

static void csv_layer_columns(FILE *f, const char *name, int n)
{
    for (int l = 1; l <= n; l++)
        fprintf(f, ",%s_l%d", name, l);
}

int report_csv(const job_log *job, const char *path)
{
    FILE *f = fopen(path, "w");
    if (!f)
        return -1;
    fputs("rule,seed,epoch,train_loss,test_acc", f);
    csv_layer_columns(f, "angle", job->n_hidden);
    csv_layer_columns(f, "weight_angle", job->n_hidden + 1);
    csv_layer_columns(f, "norm_ratio", job->n_hidden + 1);
    fputs(",seconds\n", f);
    for (int i = 0; i < job->n_rules * job->n_seeds; i++) {
        const run_log *run = &job->runs[i];
        for (int e = 0; e <= job->n_epochs; e++) {
            const epoch_stats *st = &run->epochs[e];
            fprintf(f, "%s,%llu,%d,%.6g,%.6g", rule_name(run->rule),
                    (unsigned long long)run->seed, e, st->train_loss, st->accuracy);
            for (int l = 0; l < job->n_hidden; l++)
                fprintf(f, ",%.6g", st->grad_angle[l]);
            for (int l = 0; l <= job->n_hidden; l++)
                fprintf(f, ",%.6g", st->weight_angle[l]);
            for (int l = 0; l <= job->n_hidden; l++)
                fprintf(f, ",%.6g", st->norm_ratio[l]);
            fprintf(f, ",%.6g\n", st->seconds);
        }
    }
    int failed = ferror(f);
    int saved = errno;
    if (fclose(f) != 0 || failed) {
        errno = failed ? saved : errno;
        return -1;
    }
    return 0;
}

/* JSON has no NaN: an undefined number (epoch 0's loss, a rule without B) is null. */
static void json_num(FILE *f, double x)
{
    if (isfinite(x))
        fprintf(f, "%.6g", x);
    else
        fputs("null", f);
}

/* Paths come from the command line; escape what JSON requires. */
static void json_str(FILE *f, const char *s)
{
    fputc('"', f);
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\')
            fprintf(f, "\\%c", c);
        else if (c < 0x20)
            fprintf(f, "\\u%04x", c);
        else
            fputc(c, f);
    }
    fputc('"', f);
}

static void json_array(FILE *f, const double *x, int n)
{
    fputc('[', f);
    for (int i = 0; i < n; i++) {
        if (i)
            fputs(", ", f);
        json_num(f, x[i]);
    }
    fputc(']', f);
}

static void json_config(FILE *f, const job_log *job)
{
    fprintf(f, "  \"config\": {\"model\": \"%s\", \"hidden\": [", job->model);
    for (int l = 0; l < job->n_hidden; l++)
        fprintf(f, "%s%lld", l ? ", " : "", (long long)job->hidden[l]);
    fprintf(f, "], \"activation\": \"%s\", \"optimiser\": \"%s\", \"epochs\": %d, "
               "\"batch\": %lld, \"n_train\": %lld, \"eval_set\": \"%s\", \"n_eval\": %lld, "
               "\"ranks\": %d, \"milestones\": [",
            job->activation, job->optimiser, job->n_epochs, (long long)job->batch,
            (long long)job->n_train, job->eval_name, (long long)job->n_eval, job->ranks);
    for (int i = 0; i < job->n_milestones; i++)
        fprintf(f, "%s%d", i ? ", " : "", job->milestones[i]);
    fputs("], \"gamma\": ", f);
    json_num(f, job->gamma);
    fprintf(f, ", \"clamp_grad\": %s, \"constrain_weights\": %s, \"usf_scaling\": %s",
            job->clamp_grad ? "true" : "false", job->constrain_weights ? "true" : "false",
            job->usf_scaling ? "true" : "false");
    fputs(", \"bias_init\": ", f);
    json_num(f, job->bias_init);
    fprintf(f, ", \"augment\": %s},\n", job->augment ? "true" : "false");
}

static void json_run(FILE *f, const job_log *job, const run_log *run, int last)
{
    fprintf(f, "        {\"seed\": %llu, \"epochs\": [\n", (unsigned long long)run->seed);
    for (int e = 0; e <= job->n_epochs; e++) {
        const epoch_stats *st = &run->epochs[e];
        fprintf(f, "          {\"epoch\": %d, \"train_loss\": ", e);
        json_num(f, st->train_loss);
        fputs(", \"accuracy\": ", f);
        json_num(f, st->accuracy);
        fputs(", \"grad_angle\": ", f);
        json_array(f, st->grad_angle, job->n_hidden);
        fputs(", \"weight_angle\": ", f);
        json_array(f, st->weight_angle, job->n_hidden + 1);
        fputs(", \"norm_ratio\": ", f);
        json_array(f, st->norm_ratio, job->n_hidden + 1);
        fputs(", \"seconds\": ", f);
        json_num(f, st->seconds);
        fprintf(f, "}%s\n", e < job->n_epochs ? "," : "");
    }
    fprintf(f, "        ]}%s\n", last ? "" : ",");
}

static void json_rule(FILE *f, const job_log *job, int r, double *acc, double *angle)
{
    double acc_sd, angle_sd;
    rule_finals(job, r, acc, angle);
    double acc_mean = mean_sd(acc, job->n_seeds, &acc_sd);
    double angle_mean = mean_sd(angle, job->n_seeds, &angle_sd);
    const run_log *first = run_at(job, r, 0);
    fprintf(f, "    {\"rule\": \"%s\", \"lr\": ", rule_name(first->rule));
    json_num(f, first->lr);
    fputs(", \"weight_decay\": ", f);
    json_num(f, first->weight_decay);
    fputs(",\n     \"final_accuracy_pct\": {\"mean\": ", f);
    json_num(f, acc_mean);
    fputs(", \"sd\": ", f);
    json_num(f, acc_sd);
    fputs("}, \"final_top_angle_deg\": {\"mean\": ", f);
    json_num(f, angle_mean);
    fputs(", \"sd\": ", f);
    json_num(f, angle_sd);
    fputs("}, \"seconds_per_epoch\": ", f);
    json_num(f, rule_epoch_seconds(job, r));
    fputs(",\n      \"runs\": [\n", f);
    for (int s = 0; s < job->n_seeds; s++)
        json_run(f, job, run_at(job, r, s), s == job->n_seeds - 1);
    fprintf(f, "      ]}%s\n", r < job->n_rules - 1 ? "," : "");
}

void report_json(FILE *f, const job_log *job, const char *csv_path, const char *plot_path)
{
    double *acc = malloc(2 * (size_t)job->n_seeds * sizeof *acc);
    if (!acc)
        return;
    fputs("{\n", f);
    json_config(f, job);
    fputs("  \"csv\": ", f);
    json_str(f, csv_path);
    fputs(",\n  \"plot\": ", f);
    if (plot_path)
        json_str(f, plot_path);
    else
        fputs("null", f);
    fputs(",\n  \"rules\": [\n", f);
    for (int r = 0; r < job->n_rules; r++)
        json_rule(f, job, r, acc, acc + job->n_seeds);
    fputs("  ]\n}\n", f);
    fflush(f);
    free(acc);
}

void report_plan(FILE *f, const job_log *job, int threads)
{
    const char *input = strcmp(job->model, "mlp") == 0     ? "784"
                        : strcmp(job->model, "lenet") == 0 ? "1x32x32"
                                                           : "3x32x32";
    fprintf(f, "adtape-train: %lld training images, %s set of %lld; %s %s",
            (long long)job->n_train, job->eval_name, (long long)job->n_eval, job->model,
            input);
    for (int l = 0; l < job->n_hidden; l++)
        fprintf(f, "-%lld", (long long)job->hidden[l]);
    fprintf(f, "-10 %s, %s, batch %lld, %d epoch%s, %s", job->activation, job->optimiser,
            (long long)job->batch, job->n_epochs, job->n_epochs == 1 ? "" : "s",
            job->augment ? "random crops and flips, " : "");
    if (job->ranks > 1)
        fprintf(f, "%d ranks (shards of %lld) x ", job->ranks,
                (long long)(job->batch / job->ranks));
    fprintf(f, "%d thread%s\n", threads, threads == 1 ? "" : "s");
}
