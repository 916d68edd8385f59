/*
** test_checkpoint_rules.c: a checkpoint resumes every learning rule exactly. Each rule
** keeps state besides its trainable parameters (FA's and DFA's fixed B, frSF's fixed
** magnitudes, the generator brSF redraws its magnitudes from every batch); a run
** stopped after 5 steps, saved, and loaded into fresh objects (other random contents,
** generators of another seed) must then train to the same bits as 10 uninterrupted
** steps. Parameters carry their names (ad_params_add_named); the checkpoint calls get
** no array of names.
*/
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ckpt_files.h"
#include "support.h"

TestSuite(checkpoint_rules, .init = cf_make_dir, .fini = cf_remove_dir);

typedef enum rule { BP, FA, DFA, USF, BRSF, FRSF, KP, N_RULES } rule;
static const char *const rule_names[N_RULES] = {"bp", "fa", "dfa", "usf", "brsf", "frsf",
                                                "kp"};

/* tanh(x W1' + b1) W2' + b2 against y by MSE: x 8x4, hidden 6, out 3, float32, Adam.
** B[l] is layer l's feedback: W[l]'s shape (FA, KP, SF), or hidden x out (DFA, B[0]
** only). Batches come from the generator "data", brSF's magnitudes from "feedback". */
typedef struct net {
    rule r;
    ad_tensor *w[2], *b[2], *B[2], *x, *y;
    ad_params *ps;
    ad_grads *gs;
    ad_optim *opt;
    ad_tape *tape;
    ad_dfa dfa;
    ad_rng data, feedback;
    ad_checkpoint_buffer bufs[2];
    ad_checkpoint_rng rngs[2];
    int n_bufs;
} net;

static ad_var dense(net *n, ad_tape *t, int l, ad_var h)
{
    ad_var w = ad_use(t, n->w[l]), z;
    switch (n->r) {
    case FA: z = ad_dense_fa(t, w, h, ad_use(t, n->B[l])); break;
    case KP: z = ad_dense_kp(t, w, h, ad_use(t, n->B[l])); break;
    case USF: z = ad_dense_usf(t, w, h); break;
    case BRSF:
    case FRSF: z = ad_dense_sf(t, w, h, ad_use(t, n->B[l])); break;
    default: z = ad_matmul(t, h, w, 0, 1); break;
    }
    return ad_bias_add(t, z, ad_use(t, n->b[l]));
}

static ad_var net_loss(ad_tape *t, void *user)
{
    net *n = user;
    ad_var h = ad_tanh(t, dense(n, t, 0, ad_use(t, n->x)));
    if (n->r == DFA)
        h = ad_dfa_hidden(t, &n->dfa, h, ad_use(t, n->B[0]));
    ad_var o = dense(n, t, 1, h);
    if (n->r == DFA)
        o = ad_dfa_output(t, &n->dfa, o);
    return ad_mse(t, o, ad_use(t, n->y));
}

/* Everything random comes from seed, so two nets of different seeds differ in every
** weight, feedback tensor and generator. */
static void net_open(net *n, rule r, uint64_t seed)
{
    static const char *const wn[2] = {"fc1.weight", "fc2.weight"};
    static const char *const bn[2] = {"fc1.bias", "fc2.bias"};
    static const char *const fn[2] = {"fc1.feedback", "fc2.feedback"};
    *n = (net){.r = r};
    ad_rng init;
    ad_rng_seed(&init, seed);
    int64_t width[3] = {4, 6, 3};
    cr_assert_eq(ad_params_new(&n->ps), AD_OK);
    for (int l = 0; l < 2; l++) {
        n->w[l] = ts_tensor(AD_F32, 2, TS_SHAPE(width[l + 1], width[l]));
        n->b[l] = ts_tensor(AD_F32, 1, TS_SHAPE(width[l + 1]));
        cr_assert_eq(ad_init_glorot_uniform(n->w[l], &init), AD_OK);
        cr_assert_eq(ad_init_uniform(n->b[l], &init, -0.1, 0.1), AD_OK);
        if (r == FA || r == KP || r == BRSF || r == FRSF || (r == DFA && l == 0)) {
            n->B[l] = r == DFA ? ts_tensor(AD_F32, 2, TS_SHAPE(6, 3))
                               : ts_tensor(AD_F32, 2, TS_SHAPE(width[l + 1], width[l]));
            cr_assert_eq(r == BRSF || r == FRSF ? ad_sf_draw_magnitudes(n->B[l], &init)
                                                : ad_init_glorot_uniform(n->B[l], &init),
                         AD_OK);
            if (r != KP)
                n->bufs[n->n_bufs++] = (ad_checkpoint_buffer){fn[l], n->B[l]};
        }
        cr_assert_eq(ad_params_add_named(n->ps, n->w[l], wn[l], NULL), AD_OK);
        cr_assert_eq(ad_params_add_named(n->ps, n->b[l], bn[l], NULL), AD_OK);
        if (r == KP) /* Kolen-Pollack trains B with W's update */
            cr_assert_eq(ad_params_add_named(n->ps, n->B[l], fn[l], NULL), AD_OK);
    }
    n->x = ts_tensor(AD_F32, 2, TS_SHAPE(8, 4));
    n->y = ts_tensor(AD_F32, 2, TS_SHAPE(8, 3));
    cr_assert_eq(ad_grads_new(n->ps, &n->gs), AD_OK);
    /* Adam's usual settings spelled out, so nothing rests on what a zero field means */
    ad_optim_config c = {.kind = AD_OPT_ADAM, .lr = 0.01, .beta1 = 0.9, .beta2 = 0.999,
                         .eps = 1e-8};
    cr_assert_eq(ad_optim_new(n->ps, &c, &n->opt), AD_OK);
    cr_assert_eq(ad_tape_new(&n->tape), AD_OK);
    ad_rng_seed(&n->data, seed * 7919 + 1);
    ad_rng_seed(&n->feedback, seed * 104729 + 3);
    n->rngs[0] = (ad_checkpoint_rng){"data", &n->data};
    n->rngs[1] = (ad_checkpoint_rng){"feedback", &n->feedback};
}

static void net_close(net *n)
{
    ad_tape_free(n->tape);
    ad_optim_free(n->opt);
    ad_grads_free(n->gs);
    ad_params_free(n->ps);
    ad_tensor *t[8] = {n->w[0], n->w[1], n->b[0], n->b[1], n->B[0], n->B[1], n->x, n->y};
    for (int i = 0; i < 8; i++)
        ad_tensor_free(t[i]);
}

static void net_train(net *n, int steps)
{
    for (int s = 0; s < steps; s++) {
        float *x = n->x->data, *y = n->y->data;
        for (int i = 0; i < 8 * 4; i++)
            x[i] = (float)ad_rng_normal(&n->data);
        for (int i = 0; i < 8 * 3; i++)
            y[i] = (float)(2.0 * ad_rng_uniform(&n->data) - 1.0);
        ad_tensor_touch(n->x);
        ad_tensor_touch(n->y);
        for (int l = 0; n->r == BRSF && l < 2; l++) /* batchwise random magnitudes */
            cr_assert_eq(ad_sf_draw_magnitudes(n->B[l], &n->feedback), AD_OK);
        double loss;
        cr_assert_eq(ad_gradient(n->tape, n->ps, net_loss, n, n->gs, &loss), AD_OK, "%s",
                     ad_last_error());
        cr_assert_eq(ad_optim_step(n->opt, n->gs), AD_OK, "%s", ad_last_error());
    }
}

static ad_checkpoint_extras net_extras(net *n)
{
    return (ad_checkpoint_extras){.optim = n->opt, .buffers = n->bufs,
                                  .n_buffers = n->n_bufs, .rngs = n->rngs, .n_rngs = 2};
}

/* Every parameter, feedback tensor, optimiser buffer and generator, bit for bit. */
static void assert_nets_equal(net *a, net *b, const char *what)
{
    cr_assert_eq(ad_params_count(b->ps), ad_params_count(a->ps));
    for (int i = 0; i < ad_params_count(a->ps); i++) {
        cf_assert_bits_equal(ad_params_at(b->ps, i), ad_params_at(a->ps, i),
                             ad_params_name(a->ps, i));
        for (int k = 0; k < ad_optim_state_count(a->opt); k++) {
            ad_tensor va, vb;
            cr_assert_eq(ad_optim_state(a->opt, i, k, &va), AD_OK);
            cr_assert_eq(ad_optim_state(b->opt, i, k, &vb), AD_OK);
            cf_assert_bits_equal(&vb, &va, "optimiser state");
        }
    }
    for (int l = 0; l < 2; l++)
        if (a->B[l])
            cf_assert_bits_equal(b->B[l], a->B[l], what);
    cr_assert(!memcmp(&a->data, &b->data, sizeof a->data), "%s: data generators differ", what);
    cr_assert(!memcmp(&a->feedback, &b->feedback, sizeof a->feedback),
              "%s: feedback generators differ", what);
}

Test(checkpoint_rules, every_rule_resumes_bit_identical_to_uninterrupted_training)
{
    for (int r = 0; r < N_RULES; r++) {
        net whole, first, resumed;
        net_open(&whole, (rule)r, 1);
        net_open(&first, (rule)r, 1);
        net_open(&resumed, (rule)r, 77);
        net_train(&whole, 10);
        net_train(&first, 5);
        const char *p = cf_path("rule.safetensors");
        ad_checkpoint_extras xs = net_extras(&first), xl = net_extras(&resumed);
        cr_assert_eq(ad_checkpoint_save(p, first.ps, NULL, &xs), AD_OK, "%s: %s",
                     rule_names[r], ad_last_error());
        cr_assert_eq(ad_checkpoint_load(p, resumed.ps, NULL, &xl), AD_OK, "%s: %s",
                     rule_names[r], ad_last_error());
        net_train(&resumed, 5);
        assert_nets_equal(&whole, &resumed, rule_names[r]);
        net_close(&whole);
        net_close(&first);
        net_close(&resumed);
    }
}

/* The control: without the feedback tensors and generators, FA, DFA, brSF and frSF
** resume on their own B and their own batches and land elsewhere, so the test above
** could fail. */
Test(checkpoint_rules, resume_without_buffers_and_generators_diverges)
{
    rule rules[] = {FA, DFA, BRSF, FRSF};
    for (int i = 0; i < 4; i++) {
        net whole, first, resumed;
        net_open(&whole, rules[i], 1);
        net_open(&first, rules[i], 1);
        net_open(&resumed, rules[i], 77);
        net_train(&whole, 10);
        net_train(&first, 5);
        const char *p = cf_path("bare.safetensors");
        ad_checkpoint_extras xs = {.optim = first.opt}, xl = {.optim = resumed.opt};
        cr_assert_eq(ad_checkpoint_save(p, first.ps, NULL, &xs), AD_OK);
        cr_assert_eq(ad_checkpoint_load(p, resumed.ps, NULL, &xl), AD_OK, "%s",
                     ad_last_error());
        net_train(&resumed, 5);
        cr_assert(memcmp(whole.w[0]->data, resumed.w[0]->data, 24 * sizeof(float)) != 0,
                  "%s", rule_names[rules[i]]);
        net_close(&whole);
        net_close(&first);
        net_close(&resumed);
    }
}

/* Saves an FA net without its buffers (n_buffers 0) or without the generator "feedback"
** (n_rngs 1), loads into a net that asks for both: expects code naming `needle`, and
** the parameters, optimiser, buffers and generators of the target as they were. */
static void load_lacks(int n_buffers, int n_rngs, ad_status code, const char *needle)
{
    net a, b;
    net_open(&a, FA, 1);
    net_open(&b, FA, 2);
    net_train(&a, 2);
    const char *p = cf_path("lacking.safetensors");
    ad_checkpoint_extras xs = net_extras(&a), xl = net_extras(&b);
    xs.n_buffers = n_buffers, xs.n_rngs = n_rngs;
    cr_assert_eq(ad_checkpoint_save(p, a.ps, NULL, &xs), AD_OK, "%s", ad_last_error());
    cf_snapshot *s = cf_snap(b.ps, b.opt, &b.feedback);
    float before[24];
    memcpy(before, b.B[0]->data, sizeof before);
    ad_rng data = b.data;
    ad_status rc = ad_checkpoint_load(p, b.ps, NULL, &xl);
    cr_assert_eq(rc, code, "got %s (%s)", ad_status_str(rc), ad_last_error());
    cr_assert(strstr(ad_last_error(), needle), "message lacks \"%s\": %s", needle,
              ad_last_error());
    cf_assert_unchanged(s, b.ps, b.opt, &b.feedback, "after a failed load");
    cr_assert(!memcmp(before, b.B[0]->data, sizeof before), "the buffer was written");
    cr_assert(!memcmp(&data, &b.data, sizeof data), "the generator was written");
    cf_snap_free(s);
    net_close(&a);
    net_close(&b);
}

Test(checkpoint_rules, file_without_a_needed_buffer_is_missing_tensor)
{
    load_lacks(0, 2, AD_ERR_MISSING_TENSOR, "no tensor 'fc1.feedback'");
}

Test(checkpoint_rules, file_without_a_needed_generator_is_metadata_error)
{
    load_lacks(2, 1, AD_ERR_METADATA, "adtape.rng.feedback is missing");
}

/* A buffer the file holds and the loader does not ask for is no more dropped than a
** parameter is. */
Test(checkpoint_rules, buffer_nobody_asked_for_is_extra_tensor)
{
    net a, b;
    net_open(&a, FA, 1);
    net_open(&b, FA, 2);
    const char *p = cf_path("extra.safetensors");
    ad_checkpoint_extras xs = net_extras(&a), xl = {.optim = b.opt};
    cr_assert_eq(ad_checkpoint_save(p, a.ps, NULL, &xs), AD_OK);
    cr_assert_eq(ad_checkpoint_load(p, b.ps, NULL, &xl), AD_ERR_EXTRA_TENSOR);
    cr_assert(strstr(ad_last_error(), "'fc1.feedback'"), "%s", ad_last_error());
    net_close(&a);
    net_close(&b);
}

/* ---- names in the set, and the arguments of buffers and generators ---- */

Test(checkpoint_rules, names_belong_to_the_set)
{
    ad_tensor *w = ts_tensor(AD_F32, 1, TS_SHAPE(2)), *v = ts_tensor(AD_F64, 1, TS_SHAPE(2));
    ad_params *ps;
    int i = -1;
    cr_assert_eq(ad_params_new(&ps), AD_OK);
    cr_assert_eq(ad_params_add(ps, w, &i), AD_OK);
    cr_assert_null(ad_params_name(ps, 0));
    cr_assert_eq(ad_params_add_named(ps, w, "w", &i), AD_OK, "%s", ad_last_error());
    cr_assert_eq(i, 0, "an unnamed parameter keeps its index when named");
    cr_assert_str_eq(ad_params_name(ps, 0), "w");
    cr_assert_eq(ad_params_add_named(ps, w, "w", &i), AD_OK);
    cr_assert_eq(ad_params_add_named(ps, w, "u", &i), AD_ERR_INVALID);
    cr_assert(strstr(ad_last_error(), "already parameter 0, 'w'"), "%s", ad_last_error());
    cr_assert_eq(ad_params_add_named(ps, v, "w", &i), AD_ERR_DUPLICATE_NAME);
    cr_assert_eq(ad_params_count(ps), 1, "a failed add leaves the set as it was");
    cr_assert_eq(ad_params_add_named(ps, v, NULL, &i), AD_ERR_NULL);
    cr_assert_eq(ad_params_add(ps, v, &i), AD_OK);
    cr_assert_null(ad_params_name(ps, 1));
    cr_assert_null(ad_params_name(ps, 2));
    ad_checkpoint_extras x = {0};
    cr_assert_eq(ad_checkpoint_save(cf_path("n.safetensors"), ps, NULL, &x), AD_ERR_NULL);
    cr_assert(strstr(ad_last_error(), "parameter 1 has no name"), "%s", ad_last_error());
    cr_assert_eq(cf_count_temp(), 0);
    ad_params_free(ps);
    ad_tensor_free(w);
    ad_tensor_free(v);
}

/* Saves net n with extras x: expects code and needle, and no file. */
static void save_fails(net *n, ad_checkpoint_extras x, ad_status code, const char *needle)
{
    const char *p = cf_path("bad.safetensors");
    ad_status rc = ad_checkpoint_save(p, n->ps, NULL, &x);
    cr_assert_eq(rc, code, "got %s (%s)", ad_status_str(rc), ad_last_error());
    cr_assert(strstr(ad_last_error(), needle), "message lacks \"%s\": %s", needle,
              ad_last_error());
    cr_assert_eq(access(p, F_OK), -1, "no file may be written");
}

Test(checkpoint_rules, bad_buffers_and_generators_are_refused_before_writing)
{
    net n;
    net_open(&n, FA, 1);
    ad_tensor *ints = ts_tensor(AD_I32, 1, TS_SHAPE(2));
    ad_checkpoint_buffer clash = {"fc1.weight", n.B[0]}, reserved = {"__optim__.x", n.B[0]},
                         none = {"b", NULL}, i32 = {"i", ints};
    ad_checkpoint_rng twice[2] = {{"data", &n.data}, {"data", &n.feedback}},
                      unnamed = {NULL, &n.data}, empty = {"data", NULL};
    save_fails(&n, (ad_checkpoint_extras){.buffers = &clash, .n_buffers = 1},
               AD_ERR_DUPLICATE_NAME, "tensor name 'fc1.weight' is given twice");
    save_fails(&n, (ad_checkpoint_extras){.buffers = &reserved, .n_buffers = 1},
               AD_ERR_BAD_NAME, "buffer 0, '__optim__.x', is reserved");
    save_fails(&n, (ad_checkpoint_extras){.buffers = &none, .n_buffers = 1}, AD_ERR_NULL,
               "buffer 'b' is NULL");
    save_fails(&n, (ad_checkpoint_extras){.buffers = &i32, .n_buffers = 1}, AD_ERR_DTYPE,
               "buffer 'i' is i32");
    save_fails(&n, (ad_checkpoint_extras){.n_buffers = 1}, AD_ERR_NULL, "buffers is NULL");
    save_fails(&n, (ad_checkpoint_extras){.n_rngs = -1}, AD_ERR_INVALID, "n_rngs = -1");
    save_fails(&n, (ad_checkpoint_extras){.rngs = twice, .n_rngs = 2},
               AD_ERR_DUPLICATE_NAME, "generator name 'data' is given twice");
    save_fails(&n, (ad_checkpoint_extras){.rngs = &unnamed, .n_rngs = 1}, AD_ERR_NULL,
               "the name of generator 0 is NULL");
    save_fails(&n, (ad_checkpoint_extras){.rngs = &empty, .n_rngs = 1}, AD_ERR_NULL,
               "generator 'data' is NULL");
    ad_tensor_free(ints);
    net_close(&n);
}

/* ---- out of memory, with buffers, generators and the set's names ---- */

/* Every allocation of a save, then of a load, fails in turn: each AD_ERR_NOMEM,
** nothing leaked, the file and the target (parameters, optimiser, buffer, generators)
** as they were. */
Test(checkpoint_rules, out_of_memory_with_buffers_and_generators_fails_cleanly)
{
    net a, b;
    net_open(&a, BRSF, 1);
    net_open(&b, BRSF, 2);
    net_train(&a, 2);
    const char *p = cf_path("oom.safetensors");
    ad_checkpoint_extras xa = net_extras(&a), xb = net_extras(&b);
    cr_assert_eq(ad_checkpoint_save(p, a.ps, NULL, &xa), AD_OK);
    size_t n1;
    unsigned char *v1 = cf_read(p, &n1);
    cf_snapshot *s = cf_snap(b.ps, b.opt, &b.feedback);
    float before[24];
    memcpy(before, b.B[0]->data, sizeof before);
    ad_rng data = b.data;
    for (int load = 0; load < 2; load++) {
        ad_status rc = AD_ERR_NOMEM;
        uint64_t k;
        ts_alloc_install();
        for (k = 1; k < 10000 && rc != AD_OK; k++) {
            int64_t outstanding = ts_alloc_outstanding();
            ts_alloc_fail_at(k);
            rc = load ? ad_checkpoint_load(p, b.ps, NULL, &xb)
                      : ad_checkpoint_save(p, a.ps, NULL, &xa);
            ts_alloc_fail_at(0);
            if (rc == AD_OK)
                break;
            cr_assert_eq(rc, AD_ERR_NOMEM, "allocation %llu: %s (%s)", (unsigned long long)k,
                         ad_status_str(rc), ad_last_error());
            cr_assert_eq(ts_alloc_outstanding(), outstanding, "allocation %llu leaked",
                         (unsigned long long)k);
            cf_assert_file_is(p, v1, n1, "after an out-of-memory");
            cf_assert_unchanged(s, b.ps, b.opt, &b.feedback, "after an out-of-memory");
            cr_assert(!memcmp(before, b.B[0]->data, sizeof before));
            cr_assert(!memcmp(&data, &b.data, sizeof data));
        }
        ts_alloc_uninstall();
        cr_assert_eq(rc, AD_OK, "the %s never succeeded", load ? "load" : "save");
        cr_assert_gt(k, 20);
    }
    cf_assert_bits_equal(b.B[1], a.B[1], "the buffer after the load");
    cr_assert(!memcmp(&a.feedback, &b.feedback, sizeof a.feedback));
    free(v1);
    cf_snap_free(s);
    net_close(&a);
    net_close(&b);
}
