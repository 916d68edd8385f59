/*
** options.c: adtape-train's options, parsed strictly: a value that does not parse
** whole, or lies outside its range, stops the program before any data is read.
*/
#define _GNU_SOURCE /* getopt_long */

#include "options.h"

#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Learning rates per rule when --lr is not given, chosen on held-out training data by
** scripts/select-lr (train on 50,000 images for 8 epochs, best of 0.003, 0.01 and 0.03
** on the other 10,000; momentum 0.9, batch 64, seed 1). */
const double train_default_lr[RULE_COUNT] = {
    [RULE_BP] = 0.01,   [RULE_FA] = 0.01,   [RULE_DFA] = 0.01, [RULE_USF] = 0.003,
    [RULE_BRSF] = 0.01, [RULE_FRSF] = 0.01, [RULE_KP] = 0.01,  [RULE_FROZEN] = 0.03,
};

/* For lenet and cnn: scripts/reproduce's choice on LeNet (10 epochs on 50,000 images,
** held-out accuracy on the other 10,000, momentum 0.9, weight decay 1e-3; see
** docs/results/lenet-fashion-mnist.md). FA and DFA lose stability above these (DFA's
** loss grows even at 1e-4 with biases 0); uSF's rate is its scaled form's. */
const double train_default_lr_conv[RULE_COUNT] = {
    [RULE_BP] = 0.003,  [RULE_FA] = 0.0003, [RULE_DFA] = 0.0001, [RULE_USF] = 0.01,
    [RULE_BRSF] = 0.01, [RULE_FRSF] = 0.01, [RULE_KP] = 0.003,   [RULE_FROZEN] = 0.03,
};

enum { ITEM_BYTES = 32 };

static const char *const optim_names[] = {"sgd",  "momentum", "nesterov",
                                          "adam", "adamw",    "rmsprop"};

const char *options_optim_name(ad_optim_kind k)
{
    return (unsigned)k < sizeof optim_names / sizeof *optim_names ? optim_names[k] : "?";
}

static void usage(void)
{
    printf("usage: adtape-train [options]\n\n"
           "Trains a network with each learning rule and compares accuracy and alignment\n"
           "with backprop.\n\n"
           "  --model M          mlp (Fashion-MNIST, --hidden and --activation), lenet\n"
           "                     (BioTorch's LeNet on Fashion-MNIST resized to 32x32) or\n"
           "                     cnn (BioTorch's CIFAR-10 network; --data names the\n"
           "                     directory of CIFAR-10's binary batches) [mlp]\n"
           "  --rule R           bp fa dfa usf brsf frsf kp frozen, 'all', or a comma list\n"
           "                     [bp,fa,dfa]\n"
           "  --hidden W,W       1 to %d hidden widths [256,256]\n"
           "  --activation A     tanh or relu [tanh]\n"
           "  --epochs N         [20]\n"
           "  --batch N          [64]\n"
           "  --lr X             learning rate [per rule, mlp:\n                    ",
           MODEL_MAX_LAYERS - 1);
    for (int r = 0; r < RULE_COUNT; r++)
        printf(" %s %g%s", rule_name((rule_kind)r), train_default_lr[r],
               r == RULE_COUNT - 1 ? ";\n                     lenet, cnn:\n                    "
               : r % 4 == 3 ? ",\n                    " : ",");
    for (int r = 0; r < RULE_COUNT; r++)
        printf(" %s %g%s", rule_name((rule_kind)r), train_default_lr_conv[r],
               r == RULE_COUNT - 1 ? "]\n" : r % 4 == 3 ? ",\n                    " : ",");
    printf("  --optimiser O      sgd momentum nesterov adam adamw rmsprop [momentum]\n"
           "  --momentum X       for momentum, nesterov and rmsprop, in [0, 1)\n"
           "                     [0.9; rmsprop 0]\n"
           "  --weight-decay X   [0; kp: 1e-4, which it needs to align]\n"
           "  --milestones E,E   after E epochs, multiply the rate by --gamma (increasing;\n"
           "                     MultiStepLR's milestones, BioTorch's 50,75) [none]\n"
           "  --gamma X          the factor at each milestone, > 0 [0.1]\n"
           "  --clamp-grad       clamp the gradient into every layer but the first to\n"
           "                     [-1, 1] (BioTorch's gradient clamping)\n"
           "  --constrain-weights  rescale every weight to its initial norm after each\n"
           "                     step (BioTorch's constrain_weights)\n"
           "  --seed N           [1]\n"
           "  --seeds N,N,...    repeat every rule once per seed (up to %d)\n"
           "  --threads N        OpenBLAS threads [1]\n"
           "  --subset N         train on at most the first N training images [all]\n"
           "  --holdout N        hold out the last N training images and report accuracy\n"
           "                     on them instead of the test set (to choose lr) [0]\n"
           "  --data DIR         [mlp, lenet: /usr/share/datasets/fashion-mnist;\n"
           "                     cnn: cifar-10-batches-bin]\n"
           "  --out DIR          epochs.csv and accuracy_alignment.png go here, created\n"
           "                     if needed [adtape-train-out]\n"
           "  --checkpoint FILE  save each run after every epoch, to FILE with\n"
           "                     .RULE.seedN inserted before its extension\n"
           "  --resume FILE      continue each run from its checkpoint (as --checkpoint\n"
           "                     names it) and go on saving there; a run without one\n"
           "                     starts from the beginning\n"
           "  --usf-scaling      uSF sends the error through sign(W) times the standard\n"
           "                     deviation of Xavier's initialisation for the layer\n"
           "                     (BioTorch's 'scaling'), not sign(W) alone\n"
           "  --augment          train on random 32x32 crops of each image padded by 4,\n"
           "                     flipped left-right half the time, drawn from the\n"
           "                     run's seeded generator [on for cnn]; --no-augment\n"
           "  --bias-init X      every bias starts at X (BioTorch's feedback layers\n"
           "                     start theirs at 1) [0]\n"
           "  --json             JSON summary on stdout; progress lines go to stderr\n"
           "  --help             this text\n",
           OPTIONS_MAX_SEEDS);
}

static _Noreturn void bad_value(const char *opt, const char *value, const char *expected)
{
    fprintf(stderr, "adtape-train: --%s: expected %s, got '%s'\n"
                    "Try 'adtape-train --help'.\n",
            opt, expected, value);
    exit(2);
}

static int64_t parse_int(const char *opt, const char *s, int64_t lo, int64_t hi,
                         const char *expected)
{
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi)
        bad_value(opt, s, expected);
    return v;
}

static double parse_real(const char *opt, const char *s, double lo, double hi,
                         const char *expected)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || !(v >= lo && v <= hi))
        bad_value(opt, s, expected);
    return v;
}

/* Splits a comma list into items; -1 on an empty item, too many, or one too long. */
static int split(const char *s, char items[][ITEM_BYTES], int max)
{
    for (int n = 0;; n++) {
        size_t len = strcspn(s, ",");
        if (len == 0 || len >= ITEM_BYTES || n == max)
            return -1;
        memcpy(items[n], s, len);
        items[n][len] = '\0';
        if (s[len] == '\0')
            return n + 1;
        s += len + 1;
    }
}

static void parse_rules(options *o, const char *s)
{
    const char *expected = "bp fa dfa usf brsf frsf kp frozen, all, or a comma list";
    char items[2 * RULE_COUNT][ITEM_BYTES];
    int n = strcmp(s, "all") == 0 ? 0 : split(s, items, 2 * RULE_COUNT);
    if (n < 0)
        bad_value("rule", s, expected);
    o->n_rules = 0;
    for (int r = 0; n == 0 && r < RULE_COUNT; r++)
        o->rules[o->n_rules++] = (rule_kind)r;
    for (int i = 0; i < n; i++) {
        rule_kind r = rule_parse(items[i]);
        if (r == RULE_COUNT)
            bad_value("rule", items[i], expected);
        int seen = 0; /* a repeated rule would only repeat its rows */
        for (int j = 0; j < o->n_rules; j++)
            seen |= o->rules[j] == r;
        if (!seen)
            o->rules[o->n_rules++] = r;
    }
}

static void parse_hidden(options *o, const char *s)
{
    const char *expected = "1 to 5 widths from 1 to 1000000, separated by commas";
    char items[MODEL_MAX_LAYERS - 1][ITEM_BYTES];
    int n = split(s, items, MODEL_MAX_LAYERS - 1);
    if (n < 0)
        bad_value("hidden", s, expected);
    for (int i = 0; i < n; i++)
        o->hidden[i] = parse_int("hidden", items[i], 1, 1000000, expected);
    o->n_hidden = n;
}

static void parse_seeds(options *o, const char *opt, const char *s)
{
    const char *expected = "1 to 64 non-negative integers separated by commas";
    char items[OPTIONS_MAX_SEEDS][ITEM_BYTES];
    int n = split(s, items, OPTIONS_MAX_SEEDS);
    if (n < 0)
        bad_value(opt, s, expected);
    for (int i = 0; i < n; i++)
        o->seeds[i] = (uint64_t)parse_int(opt, items[i], 0, INT64_MAX, expected);
    o->n_seeds = n;
}

static ad_optim_kind parse_optim(const char *s)
{
    for (int k = 0; k < (int)(sizeof optim_names / sizeof *optim_names); k++)
        if (strcmp(s, optim_names[k]) == 0)
            return (ad_optim_kind)k; /* the names follow ad_optim_kind's order */
    bad_value("optimiser", s, "sgd, momentum, nesterov, adam, adamw or rmsprop");
}

/* MultiStepLR's milestones, strictly increasing: epoch e of the run (1-based, as the
** progress lines count) is ad_lr_multistep's epoch e - 1, so milestone 50 lowers the
** rate from epoch 51, after 50 epochs, as in BioTorch. */
static void parse_milestones(options *o, const char *s)
{
    const char *expected = "1 to 8 increasing epoch counts >= 0, separated by commas";
    char items[MODEL_MAX_MILESTONES][ITEM_BYTES];
    int n = split(s, items, MODEL_MAX_MILESTONES);
    if (n < 0)
        bad_value("milestones", s, expected);
    for (int i = 0; i < n; i++) {
        o->milestones[i] = (int)parse_int("milestones", items[i], 0, 100000, expected);
        if (i > 0 && o->milestones[i] <= o->milestones[i - 1])
            bad_value("milestones", s, expected);
    }
    o->n_milestones = n;
}

void options_recipe(const options *o, model_config *cfg)
{
    cfg->optim = ad_optim_defaults(o->optim); /* Adam's betas and eps, RMSprop's alpha */
    if (!isnan(o->momentum))
        cfg->optim.momentum = o->momentum;
    memcpy(cfg->milestones, o->milestones, sizeof cfg->milestones);
    cfg->n_milestones = o->n_milestones;
    cfg->gamma = o->gamma;
    cfg->clamp_grad = o->clamp_grad;
    cfg->constrain_weights = o->constrain_weights;
    cfg->augment_pad = options_augments(o) ? 4 : 0;
}

int options_augments(const options *o)
{
    return o->augment < 0 ? o->arch == ARCH_CNN : o->augment;
}

static void set_defaults(options *o)
{
    *o = (options){.n_hidden = 2, .hidden = {256, 256}, .epochs = 20, .batch = 64,
                   .lr = NAN, .weight_decay = NAN, .momentum = NAN, .gamma = 0.1,
                   .optim = AD_OPT_MOMENTUM, .seeds = {1}, .n_seeds = 1, .threads = 1,
                   .out_dir = "adtape-train-out", .augment = -1};
    parse_rules(o, "bp,fa,dfa");
}

/* The optimiser takes 0 as given: momentum 0 is plain SGD. An lr of 0 would train
** nothing, so its range is open at 0. */
static void apply_option(options *o, int c, const char *a)
{
    const int64_t big = INT32_MAX;
    switch (c) {
    case 'M':
        if ((o->arch = arch_parse(a)) == ARCH_COUNT)
            bad_value("model", a, "mlp, lenet or cnn");
        break;
    case 'r': parse_rules(o, a); break;
    case 'H': parse_hidden(o, a); break;
    case 'a':
        if (strcmp(a, "tanh") != 0 && strcmp(a, "relu") != 0)
            bad_value("activation", a, "tanh or relu");
        o->relu = strcmp(a, "relu") == 0;
        break;
    case 'e': o->epochs = (int)parse_int("epochs", a, 1, 100000, "an integer >= 1"); break;
    case 'b': o->batch = parse_int("batch", a, 1, big, "an integer >= 1"); break;
    case 'l': o->lr = parse_real("lr", a, 1e-300, 1e6, "a number > 0"); break;
    case 'o': o->optim = parse_optim(a); break;
    case 'm':
        o->momentum = parse_real("momentum", a, 0, 1 - 1e-12, "a number in [0, 1)");
        break;
    case 'w':
        o->weight_decay = parse_real("weight-decay", a, 0, 1e6, "a number >= 0");
        break;
    case 's': parse_seeds(o, "seed", a); break;
    case 'S': parse_seeds(o, "seeds", a); break;
    case 't': o->threads = (int)parse_int("threads", a, 1, 1024, "an integer >= 1"); break;
    case 'n': o->subset = parse_int("subset", a, 1, big, "an integer >= 1"); break;
    case 'v': o->holdout = parse_int("holdout", a, 0, big, "an integer >= 0"); break;
    case 'd': o->data_dir = a; break;
    case 'O': o->out_dir = a; break;
    case 'j': o->json = 1; break;
    case 'U': o->usf_scaling = 1; break;
    case 'A': o->augment = 1; break;
    case 'N': o->augment = 0; break;
    case 'B': o->bias_init = parse_real("bias-init", a, -1e6, 1e6, "a number"); break;
    case 'c': o->checkpoint = a; break;
    case 'R': o->checkpoint = a, o->resume = 1; break;
    case 'L': parse_milestones(o, a); break;
    case 'g': o->gamma = parse_real("gamma", a, 1e-300, 1e6, "a number > 0"); break;
    case 'C': o->clamp_grad = 1; break;
    case 'W': o->constrain_weights = 1; break;
    }
}

void options_parse(int argc, char **argv, options *o)
{
    static const struct option longs[] = {
        {"rule", 1, 0, 'r'},      {"hidden", 1, 0, 'H'},   {"activation", 1, 0, 'a'},
        {"epochs", 1, 0, 'e'},    {"batch", 1, 0, 'b'},    {"lr", 1, 0, 'l'},
        {"optimiser", 1, 0, 'o'}, {"momentum", 1, 0, 'm'}, {"weight-decay", 1, 0, 'w'},
        {"seed", 1, 0, 's'},      {"seeds", 1, 0, 'S'},    {"threads", 1, 0, 't'},
        {"subset", 1, 0, 'n'},    {"holdout", 1, 0, 'v'},  {"data", 1, 0, 'd'},
        {"out", 1, 0, 'O'},       {"json", 0, 0, 'j'},     {"help", 0, 0, 'h'},
        {"checkpoint", 1, 0, 'c'}, {"resume", 1, 0, 'R'}, {"model", 1, 0, 'M'},
        {"usf-scaling", 0, 0, 'U'}, {"bias-init", 1, 0, 'B'},
        {"augment", 0, 0, 'A'},   {"no-augment", 0, 0, 'N'},
        {"milestones", 1, 0, 'L'}, {"gamma", 1, 0, 'g'}, {"clamp-grad", 0, 0, 'C'},
        {"constrain-weights", 0, 0, 'W'}, {0, 0, 0, 0}};
    set_defaults(o);
    for (int c; (c = getopt_long(argc, argv, "", longs, NULL)) != -1;) {
        if (c == 'h') {
            usage();
            exit(0);
        }
        if (c == '?') { /* getopt_long has already said what was wrong */
            fputs("Try 'adtape-train --help'.\n", stderr);
            exit(2);
        }
        apply_option(o, c, optarg);
    }
    if (!o->data_dir)
        o->data_dir = o->arch == ARCH_CNN ? "cifar-10-batches-bin"
                                          : "/usr/share/datasets/fashion-mnist";
    if (optind < argc) {
        fprintf(stderr, "adtape-train: unexpected argument '%s'\n"
                        "Try 'adtape-train --help'.\n",
                argv[optind]);
        exit(2);
    }
}
