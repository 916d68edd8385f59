/* A program built only with `pkg-config --cflags --libs adtape`: d/dw sum(tanh(w)). */
#include <ad.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

int main(void)
{
    double w[2] = {0.5, -1.0};
    ad_tensor W;
    ad_params *ps;
    ad_grads *gs;
    ad_tape *t;
    if (strcmp(ad_version(), AD_VERSION_STRING) || ad_tensor_init(&W, AD_F64, 1,
        (int64_t[]){2}, w) || ad_params_new(&ps) || ad_params_add(ps, &W, NULL) ||
        ad_grads_new(ps, &gs) || ad_tape_new(&t))
        return 1;
    ad_var loss = ad_sum(t, ad_tanh(t, ad_use(t, &W)));
    if (ad_backward(t, loss, ps, gs))
        return 2;
    const double *g = ad_grads_get(gs, &W)->data;
    int ok = fabs(g[0] - (1 - tanh(0.5) * tanh(0.5))) < 1e-12 &&
             fabs(g[1] - (1 - tanh(1.0) * tanh(1.0))) < 1e-12;
    ad_tape_free(t), ad_grads_free(gs), ad_params_free(ps);
    return ok ? 0 : 3;
}
