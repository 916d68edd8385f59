"""torch_step.py: the PyTorch contender of bench/, one process per measurement.

Run with Debian's interpreter, which has python3-torch and python3-numpy:

    /usr/bin/python3 bench/torch_step.py --workload W2 --rule fa --threads 1 --reps 50 --warmup 10
    /usr/bin/python3 bench/torch_step.py --epoch --threads 1
    /usr/bin/python3 bench/torch_step.py --epoch --workload W5 --variant functions
    /usr/bin/python3 bench/torch_step.py --check-fa

Prints exactly one JSON line on stdout; diagnostics go to stderr.

One step is the work adtape's step does, and nothing more: set every .grad to None,
forward, loss, backward, then an in-place SGD update under torch.no_grad(). The
update is p.add_(p.grad, alpha=-lr), the same arithmetic as p -= lr * p.grad in one
fused kernel without the temporary, which is also what torch.optim.SGD does without
momentum; an optimizer object would only add Python bookkeeping.

The conv workloads (W5, W6) and their epoch are in torch_conv.py; thread limits and
counters in torch_common.py. Fairness (see /work/shared/BENCHMARKING.md):
- Threads: ATen's and OpenBLAS's pools are both limited (torch_common.set_threads).
- OMP_WAIT_POLICY is left to the caller (the orchestrator sets PASSIVE).
- Allocations: counted when the process runs with LD_PRELOAD=.../libmalloc_count.so
  (bench/malloc_count.c); otherwise allocs_per_step is null. Python's small objects
  come from pymalloc's arenas and are not seen; every tensor buffer is.
- Malloc settings (GLIBC_TUNABLES) are the caller's; PyTorch allocates fresh
  activation buffers every step, so they matter for the large workloads.
"""

import argparse
import json
import math
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

from torch_common import (FASHION_MNIST, LR, SEED, FALinear, malloc_counter,
                          read_idx_gz, rss_baseline_kib, set_threads, status_kib)
from torch_conv import (CONV_WORKLOADS, FAConv2d, run_conv_epoch, run_conv_steps)

# Widths, bias, activation between layers (not after the last), loss, batch.
# Same as bench/workloads.h.
WORKLOADS = {
    "W1": ([50, 60, 40, 2], False, None, "mse", 64),
    "W2": ([784, 256, 256, 10], True, "tanh", "ce", 128),
    "W3": ([784, 1024, 1024, 10], True, "relu", "ce", 256),
    "W4": ([4096, 4096, 4096, 4096], False, "relu", "mse", 512),
}


def glorot_uniform(shape, gen):
    fan_out, fan_in = shape
    limit = math.sqrt(6.0 / (fan_in + fan_out))
    return (torch.rand(shape, generator=gen) * 2 - 1) * limit


class Model:
    """The workload's layers: W (out x in), optional zero biases, FA feedback B."""

    def __init__(self, name, rule, gen):
        widths, bias, act, loss, batch = WORKLOADS[name]
        self.fa = rule == "fa"
        self.act = {"tanh": torch.tanh, "relu": torch.relu, None: None}[act]
        self.loss = loss
        self.batch = batch
        self.n_in, self.n_out = widths[0], widths[-1]
        self.W, self.B, self.b = [], [], []
        for n_in, n_out in zip(widths[:-1], widths[1:]):
            # B is drawn for both rules so W is the same under bp and fa.
            self.W.append(glorot_uniform((n_out, n_in), gen).requires_grad_())
            self.B.append(glorot_uniform((n_out, n_in), gen))
            self.b.append(torch.zeros(n_out, requires_grad=True) if bias else None)
        self.params = self.W + [b for b in self.b if b is not None]

    def forward(self, x):
        last = len(self.W) - 1
        for i, (w, fb, b) in enumerate(zip(self.W, self.B, self.b)):
            if self.fa:
                x = FALinear.apply(x, w, fb)
                if b is not None:
                    x = x + b
            else:
                x = F.linear(x, w, b)
            if self.act is not None and i < last:
                x = self.act(x)
        return x

    def step(self, x, target):
        for p in self.params:
            p.grad = None
        out = self.forward(x)
        if self.loss == "mse":
            loss = F.mse_loss(out, target)
        else:
            loss = F.cross_entropy(out, target)
        loss.backward()
        with torch.no_grad():
            for p in self.params:
                p.add_(p.grad, alpha=-LR)


def make_data(model, gen):
    x = torch.rand((model.batch, model.n_in), generator=gen) * 2 - 1
    if model.loss == "mse":
        target = torch.rand((model.batch, model.n_out), generator=gen) * 2 - 1
    else:
        target = torch.randint(0, model.n_out, (model.batch,), generator=gen, dtype=torch.int64)
    return x, target


def run_steps(args):
    core, config = set_threads(args.threads)
    gen = torch.Generator().manual_seed(SEED)
    model = Model(args.workload, args.rule, gen)
    x, target = make_data(model, gen)
    count = malloc_counter()
    ms = [0.0] * args.reps
    rss0 = rss_baseline_kib()
    for _ in range(args.warmup):
        model.step(x, target)
    allocs0 = count() if count else 0
    for i in range(args.reps):
        t0 = time.perf_counter()
        model.step(x, target)
        ms[i] = (time.perf_counter() - t0) * 1e3
    allocs = (count() - allocs0) / args.reps if count else None
    rss1 = status_kib("VmHWM")
    return {
        "contender": "torch", "workload": args.workload, "rule": args.rule,
        "threads": args.threads, "ms": ms, "allocs_per_step": allocs,
        "peak_rss_mb": (rss1 - rss0) / 1024.0, "torch": torch.__version__,
        "blas_core": core, "blas_config": config,
    }


def run_epoch(args):
    """One epoch of W2 (bp) on Fashion-MNIST, in file order, full batches only."""
    set_threads(args.threads)
    images = read_idx_gz(FASHION_MNIST + "train-images-idx3-ubyte.gz", 16)
    labels = read_idx_gz(FASHION_MNIST + "train-labels-idx1-ubyte.gz", 8)
    x_all = torch.from_numpy(images.reshape(len(images), -1).astype(np.float32) / 255.0)
    y_all = torch.from_numpy(labels.astype(np.int64))
    model = Model("W2", "bp", torch.Generator().manual_seed(SEED))
    batch = model.batch
    steps = len(x_all) // batch
    t0 = time.perf_counter()
    for s in range(steps):
        model.step(x_all[s * batch:(s + 1) * batch], y_all[s * batch:(s + 1) * batch])
    seconds = time.perf_counter() - t0
    return {"contender": "torch", "mode": "epoch", "images_per_s": steps * batch / seconds,
            "seconds": seconds, "threads": args.threads}


def check_fa():
    """FALinear's gradients against dY B and dY' X computed directly, in float64."""
    gen = torch.Generator().manual_seed(SEED)
    x = torch.rand((5, 4), generator=gen, dtype=torch.float64).requires_grad_()
    w = torch.rand((3, 4), generator=gen, dtype=torch.float64).requires_grad_()
    fb = torch.rand((3, 4), generator=gen, dtype=torch.float64)
    grad_out = torch.rand((5, 3), generator=gen, dtype=torch.float64)
    FALinear.apply(x, w, fb).backward(grad_out)
    err_x = (x.grad - grad_out @ fb).abs().max().item()
    err_w = (w.grad - grad_out.T @ x.detach()).abs().max().item()
    differs_from_bp = (x.grad - grad_out @ w.detach()).abs().max().item()
    ok = err_x < 1e-12 and err_w < 1e-12 and differs_from_bp > 1e-3 and fb.grad is None
    # FAConv2d: dX the transposed convolution of dY with B, dW and db as autograd's.
    xc = torch.rand((2, 3, 7, 6), generator=gen, dtype=torch.float64).requires_grad_()
    wc = torch.rand((4, 3, 3, 2), generator=gen, dtype=torch.float64).requires_grad_()
    bc = torch.rand(4, generator=gen, dtype=torch.float64).requires_grad_()
    fc = torch.rand((4, 3, 3, 2), generator=gen, dtype=torch.float64)
    gc = torch.rand((2, 4, 5, 5), generator=gen, dtype=torch.float64)
    FAConv2d.apply(xc, wc, bc, fc).backward(gc)
    x2, w2, b2 = (t.detach().clone().requires_grad_() for t in (xc, wc, bc))
    F.conv2d(x2, w2, b2).backward(gc)
    err_cx = (xc.grad - F.conv_transpose2d(gc, fc)).abs().max().item()
    err_cw = max((wc.grad - w2.grad).abs().max().item(), (bc.grad - b2.grad).abs().max().item())
    ok = ok and err_cx < 1e-12 and err_cw < 1e-12 and (xc.grad - x2.grad).abs().max().item() > 1e-3
    return {"check": "fa", "ok": ok, "max_err_dx": err_x, "max_err_dw": err_w,
            "conv_max_err_dx": err_cx, "conv_max_err_dw_db": err_cw}


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workload", choices=sorted(WORKLOADS) + sorted(CONV_WORKLOADS),
                   default="W2")
    p.add_argument("--variant", choices=["autograd", "functions"], default="autograd",
                   help="W5's epoch: how backprop runs (the step picks the faster)")
    p.add_argument("--rule", choices=["bp", "fa"], default="bp")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--reps", type=int, default=50)
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--epoch", action="store_true", help="one epoch of W2 on Fashion-MNIST")
    p.add_argument("--check-fa", action="store_true", help="check FALinear's gradients")
    args = p.parse_args()
    if args.threads < 1 or args.reps < 1 or args.warmup < 0:
        p.error("--threads and --reps must be at least 1, --warmup at least 0")
    if args.check_fa:
        result = check_fa()
    elif args.epoch:
        result = run_conv_epoch(args) if args.workload in CONV_WORKLOADS else run_epoch(args)
    elif args.workload in CONV_WORKLOADS:
        result = run_conv_steps(args)
    else:
        result = run_steps(args)
    print(json.dumps(result))
    return 0 if result.get("ok", True) else 1


if __name__ == "__main__":
    sys.exit(main())
