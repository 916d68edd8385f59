"""PyTorch's values for tests/test_optim_torch.c: torch.optim.RMSprop's parameters and
state after a few steps from fixed tensors, and torch.optim.lr_scheduler.MultiStepLR's
rates, written without adtape.

Run once per suite by Debian's /usr/bin/python3 (python3-torch); uses only the
standard library's sys and torch, on the CPU.

  optim_reference.py OUT

OUT gets the word "adtape-optim-torch", then the inputs, drawn here from a seeded
torch.Generator in float64:

    inputs STEPS
    tensor p0 NDIM D0 D1 ... V0 V1 ...      the initial parameter
    tensor g1 ... , ..., tensor gSTEPS ...  the gradient given at each step

then, per RMSprop case,

    case NAME LR ALPHA EPS WEIGHT_DECAY MOMENTUM CENTERED
    dtype F64 | F32, each followed by the parameter after STEPS steps ("tensor p") and
    the state torch keeps, in adtape's order: "tensor square_avg", then
    "tensor momentum_buffer" when MOMENTUM > 0, then "tensor grad_avg" when CENTERED

float32 runs start from the float64 inputs rounded to float32. Then, per MultiStepLR
case (the rate in force during each epoch, 0-based, of SGD stepped once per epoch),

    multistep BASE_LR GAMMA N M1 ... MN EPOCHS LR0 LR1 ... LR(EPOCHS-1)

Values are written with
repr, which reads back to the same double. Exits 0 on success; prints the reason and
exits 1 otherwise.
"""
import sys

try:
    import torch
except ImportError as e:
    print("optim_reference.py: cannot import torch (%s); install Debian's python3-torch "
          "(scripts/setup.sh ADTAPE_TEST_PACKAGES)" % e, file=sys.stderr)
    sys.exit(1)

STEPS = 5
SHAPE = (3, 4)
# name, lr, alpha, eps, weight_decay, momentum, centered
RMSPROP_CASES = [
    ("plain", 0.01, 0.99, 1e-8, 0.0, 0.0, 0),
    ("momentum", 0.01, 0.9, 1e-8, 0.0, 0.9, 0),
    ("centered", 0.01, 0.9, 1e-8, 0.0, 0.0, 1),
    ("weight_decay", 0.05, 0.99, 1e-8, 0.1, 0.0, 0),
    ("all", 0.02, 0.8, 1e-6, 0.01, 0.5, 1),
]
# base_lr, gamma, milestones, epochs: BioTorch's recipe, then an odd one
MULTISTEP_CASES = [
    (0.1, 0.1, [50, 75], 100),
    (0.003, 0.7, [0, 1, 4, 9], 12),
]


def write_tensor(out, name, t):
    t = t.detach().to(torch.float64).contiguous()
    dims = " ".join(str(d) for d in t.shape)
    values = " ".join(repr(float(v)) for v in t.reshape(-1).tolist())
    out.write("tensor %s %d %s %s\n" % (name, t.dim(), dims, values))


def run_rmsprop(case, p0, grads, dtype):
    _, lr, alpha, eps, wd, mu, centered = case
    p = torch.nn.Parameter(p0.to(dtype).clone())
    opt = torch.optim.RMSprop([p], lr=lr, alpha=alpha, eps=eps, weight_decay=wd,
                              momentum=mu, centered=bool(centered))
    for g in grads:
        p.grad = g.to(dtype).clone()
        opt.step()
    state = opt.state[p]
    tensors = [("p", p), ("square_avg", state["square_avg"])]
    if mu > 0:
        tensors.append(("momentum_buffer", state["momentum_buffer"]))
    if centered:
        tensors.append(("grad_avg", state["grad_avg"]))
    return tensors


def multistep_rates(base_lr, gamma, milestones, epochs):
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=base_lr)
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=milestones, gamma=gamma)
    rates = []
    for _ in range(epochs):
        rates.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return rates


def main():
    if len(sys.argv) != 2:
        print("usage: optim_reference.py OUT", file=sys.stderr)
        sys.exit(1)
    gen = torch.Generator().manual_seed(20261205)
    p0 = torch.randn(SHAPE, generator=gen, dtype=torch.float64)
    # Gradients of mixed scale and sign, one of them 0 at one element throughout.
    grads = [torch.randn(SHAPE, generator=gen, dtype=torch.float64) * (0.1 + k)
             for k in range(STEPS)]
    for g in grads:
        g[0, 0] = 0.0
    with open(sys.argv[1], "w") as out:
        out.write("adtape-optim-torch\ninputs %d\n" % STEPS)
        write_tensor(out, "p0", p0)
        for k, g in enumerate(grads):
            write_tensor(out, "g%d" % (k + 1), g)
        for case in RMSPROP_CASES:
            out.write("case %s %r %r %r %r %r %d\n" % case)
            for tag, dtype in (("F64", torch.float64), ("F32", torch.float32)):
                out.write("dtype %s\n" % tag)
                for name, t in run_rmsprop(case, p0, grads, dtype):
                    write_tensor(out, name, t)
        for base_lr, gamma, milestones, epochs in MULTISTEP_CASES:
            rates = multistep_rates(base_lr, gamma, milestones, epochs)
            out.write("multistep %r %r %d %s %d %s\n" % (
                base_lr, gamma, len(milestones), " ".join(str(m) for m in milestones),
                epochs, " ".join(repr(float(r)) for r in rates)))


if __name__ == "__main__":
    try:
        main()
    except Exception as e:  # report, never a bare traceback without context
        print("optim_reference.py: %s" % e, file=sys.stderr)
        sys.exit(1)
