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

Fairness (see /work/shared/BENCHMARKING.md):
- Threads: torch.set_num_threads(n) limits ATen's OpenMP pool but not OpenBLAS's own
  pthread pool, so openblas_set_num_threads(n) is also called, through ctypes, on the
  OpenBLAS that torch actually loaded (found in /proc/self/maps). Its core name and
  build configuration are reported, since OPENBLAS_CORETYPE picks the kernel.
- OMP_WAIT_POLICY is left to the caller (the orchestrator sets PASSIVE).
- Allocations: counted when the process runs with LD_PRELOAD=.../libmalloc_count.so
  (bench/malloc_count.c); otherwise allocs_per_step is null. Python's small objects
  come from pymalloc's arenas and are not seen; every tensor buffer is.
- Malloc settings (GLIBC_TUNABLES) are the caller's; PyTorch allocates fresh
  activation buffers every step, so they matter for the large workloads.
"""

import argparse
import ctypes
import gzip
import json
import math
import os
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

# Widths, bias, activation between layers (not after the last), loss, batch.
# Same as bench/workloads.h.
WORKLOADS = {
    "W1": ([50, 60, 40, 2], False, None, "mse", 64),
    "W2": ([784, 256, 256, 10], True, "tanh", "ce", 128),
    "W3": ([784, 1024, 1024, 10], True, "relu", "ce", 256),
    "W4": ([4096, 4096, 4096, 4096], False, "relu", "mse", 512),
}
# The conv workloads, as bench/workloads.h: input channels, image side, batch, kernel,
# each conv's output channels, 2x2 max pooling after it or not, the linear layers.
CONV_WORKLOADS = {
    "W5": (1, 32, 64, 5, [6, 16, 120], [True, True, False], [84, 10]),
    "W6": (3, 32, 128, 5, [32, 64, 128], [True, True, False], [84, 10]),
}
MOMENTUM = 0.9
LR = 0.01
SEED = 1
FASHION_MNIST = "/usr/share/datasets/fashion-mnist/"


class FALinear(torch.autograd.Function):
    """y = x W'; the backward sends the error through the fixed feedback B, not W.

    dX = dY B (FA: B, not W); dW = dY' X; B gets no gradient. dX is skipped when the
    input needs none (the first layer), as autograd does for a plain linear layer and
    as the GEMM floor counts.
    """

    @staticmethod
    def forward(ctx, x, w, b_feedback):
        ctx.save_for_backward(x, b_feedback)
        return x @ w.T

    @staticmethod
    def backward(ctx, grad_out):
        x, b_feedback = ctx.saved_tensors
        grad_x = grad_out @ b_feedback if ctx.needs_input_grad[0] else None
        return grad_x, grad_out.T @ x, None


class FAConv2d(torch.autograd.Function):
    """y = conv2d(x, W) + b; the backward sends the error through B, not W.

    dX = conv2d_input(x's shape, B, dY), the transposed convolution with B (skipped for
    the first layer, whose input needs no gradient); dW = conv2d_weight(x, W's shape,
    dY); db = dY summed over batch and positions; B gets none. With B = W this is
    backprop through PyTorch's own conv gradient functions, which on CPU can beat
    autograd's convolution backward for small channel counts (BENCHMARKING.md), so
    backprop is timed both ways and the faster reported.
    """

    @staticmethod
    def forward(ctx, x, w, b, b_feedback):
        ctx.save_for_backward(x, b_feedback)
        ctx.w_shape = w.shape
        return F.conv2d(x, w, b)

    @staticmethod
    def backward(ctx, grad_out):
        x, b_feedback = ctx.saved_tensors
        grad_x = None
        if ctx.needs_input_grad[0]:
            grad_x = torch.nn.grad.conv2d_input(x.shape, b_feedback, grad_out)
        grad_w = torch.nn.grad.conv2d_weight(x, ctx.w_shape, grad_out)
        return grad_x, grad_w, grad_out.sum((0, 2, 3)), None


class ConvModel:
    """W5/W6: conv+bias+relu (2x2 max pooling after the first two), flatten, two linear
    layers with biases and nothing between, cross-entropy, SGD with momentum.

    variant: "autograd" (F.conv2d and F.linear, autograd's own backward), "functions"
    (FAConv2d/FALinear with B = W: backprop through conv2d_input/conv2d_weight), or
    "fa" (the same with the fixed random B)."""

    def __init__(self, name, variant, gen):
        cin, side, batch, k, chans, pools, fcs = CONV_WORKLOADS[name]
        self.variant, self.batch, self.pools = variant, batch, pools
        self.x_shape = (batch, cin, side, side)
        self.n_out = fcs[-1]
        self.W, self.B, self.b = [], [], []
        shapes = []
        for c in chans:
            shapes.append((c, cin, k, k))
            cin = c
        for f in fcs:
            shapes.append((f, cin))
            cin = f
        for shape in shapes:
            bound = 1.0 / math.sqrt(math.prod(shape[1:]))
            self.W.append(((torch.rand(shape, generator=gen) * 2 - 1) * bound).requires_grad_())
            self.B.append((torch.rand(shape, generator=gen) * 2 - 1) * bound)
            self.b.append(torch.zeros(shape[0], requires_grad=True))
        self.n_conv = len(chans)
        self.params = self.W + self.b
        self.opt = torch.optim.SGD(self.params, lr=LR, momentum=MOMENTUM)

    def forward(self, x):
        for i in range(len(self.W)):
            w, b = self.W[i], self.b[i]
            fb = self.B[i] if self.variant == "fa" else w
            if i == self.n_conv:
                x = torch.flatten(x, 1)
            if i < self.n_conv:
                if self.variant == "autograd":
                    x = F.conv2d(x, w, b)
                else:
                    x = FAConv2d.apply(x, w, b, fb)
                x = torch.relu(x)
                if self.pools[i]:
                    x = F.max_pool2d(x, 2)
            elif self.variant == "autograd":
                x = F.linear(x, w, b)
            else:
                x = FALinear.apply(x, w, fb) + b
        return x

    def step(self, x, target):
        self.opt.zero_grad(set_to_none=True)
        F.cross_entropy(self.forward(x), target).backward()
        self.opt.step()


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


def loaded_openblas():
    """The OpenBLAS torch loaded, by path from /proc/self/maps, or None.

    Debian's libblas.so.3 (openblas-pthread) is a thin wrapper over libopenblas.so.0,
    so the library whose name contains 'openblas' holds the one thread pool; the
    wrapper is the fallback if only it shows.
    """
    paths = []
    with open("/proc/self/maps") as maps:
        for line in maps:
            fields = line.split()
            if len(fields) >= 6 and fields[5] not in paths:
                paths.append(fields[5])
    for want in ("openblas", "libblas.so"):
        for path in paths:
            if want in os.path.basename(path):
                lib = ctypes.CDLL(path)
                if hasattr(lib, "openblas_set_num_threads"):
                    return lib
    return None


def set_threads(n):
    """Limit ATen and OpenBLAS to n threads; returns (core name, config) or Nones."""
    torch.set_num_threads(n)
    blas = loaded_openblas()
    if blas is None:
        print("torch_step: no OpenBLAS found in the process; its threads are not limited",
              file=sys.stderr)
        return None, None
    blas.openblas_set_num_threads(ctypes.c_int(n))
    blas.openblas_get_num_threads.restype = ctypes.c_int
    if blas.openblas_get_num_threads() != n:
        print("torch_step: openblas_set_num_threads(%d) did not take" % n, file=sys.stderr)
    blas.openblas_get_corename.restype = ctypes.c_char_p
    blas.openblas_get_config.restype = ctypes.c_char_p
    return (blas.openblas_get_corename().decode(), blas.openblas_get_config().decode().strip())


def malloc_counter():
    """malloc_count_get from the LD_PRELOADed interposer, or None."""
    try:
        get = ctypes.CDLL(None).malloc_count_get
    except AttributeError:
        return None
    get.restype = ctypes.c_uint64
    get.argtypes = []
    return get


def status_kib(field):
    """A field of /proc/self/status in KiB ("VmRSS", "VmHWM")."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError("no %s in /proc/self/status" % field)


def rss_baseline_kib():
    """RSS now, after resetting the kernel's peak (VmHWM) to it, as bench_model.c does:
    otherwise the peak would be measured against the highest RSS since exec, which
    importing torch sets."""
    with open("/proc/self/clear_refs", "w") as clear:
        clear.write("5")
    return status_kib("VmRSS")


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


def run_conv_steps(args):
    """W5/W6. For backprop both variants are timed in this process, alternating in
    blocks after each one's warm-up, and the faster one's times are reported."""
    core, config = set_threads(args.threads)
    variants = ["fa"] if args.rule == "fa" else ["autograd", "functions"]
    models, data = {}, {}
    for v in variants:
        gen = torch.Generator().manual_seed(SEED)
        models[v] = ConvModel(args.workload, v, gen)
        m = models[v]
        x = torch.rand(m.x_shape, generator=gen) * 2 - 1
        data[v] = (x, torch.randint(0, m.n_out, (m.batch,), generator=gen, dtype=torch.int64))
    count = malloc_counter()
    # Peak memory: what the first steps (gradients, momentum buffers, activations) add
    # to the RSS, per variant; the second variant may reuse pages the first freed.
    peak_kib = {}
    for v in variants:
        rss0 = rss_baseline_kib()
        for _ in range(max(1, args.warmup)):
            models[v].step(*data[v])
        peak_kib[v] = status_kib("VmHWM") - rss0
    ms = {v: [] for v in variants}
    allocs = {v: 0 for v in variants}
    block = max(1, args.reps // 4)
    while len(ms[variants[-1]]) < args.reps:
        for v in variants:
            for _ in range(min(block, args.reps - len(ms[v]))):
                a0 = count() if count else 0
                t0 = time.perf_counter()
                models[v].step(*data[v])
                ms[v].append((time.perf_counter() - t0) * 1e3)
                allocs[v] += (count() - a0) if count else 0
    medians = {v: sorted(ms[v])[len(ms[v]) // 2] for v in variants}
    best = min(variants, key=lambda v: medians[v])
    return {
        "contender": "torch", "workload": args.workload, "rule": args.rule,
        "threads": args.threads, "ms": ms[best], "variant": best,
        "variant_medians_ms": medians,
        "allocs_per_step": allocs[best] / args.reps if count else None,
        "peak_rss_mb": peak_kib[best] / 1024.0, "torch": torch.__version__,
        "blas_core": core, "blas_config": config,
    }


def read_idx_gz(path, header_bytes):
    """The payload of a gzipped IDX file (big-endian header, uint8 data) as uint8."""
    with gzip.open(path, "rb") as f:
        data = f.read()
    dims = data[3]
    shape = [int.from_bytes(data[4 + 4 * d:8 + 4 * d], "big") for d in range(dims)]
    if 4 + 4 * dims != header_bytes or data[2] != 0x08:
        raise ValueError("%s: not an IDX file of unsigned bytes" % path)
    return np.frombuffer(data, dtype=np.uint8, offset=header_bytes).reshape(shape)


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


def run_conv_epoch(args):
    """One epoch of W5 (backprop, the faster variant given by --variant) on
    Fashion-MNIST resized to 32x32 (bilinear) before the clock starts, file order."""
    set_threads(args.threads)
    images = read_idx_gz(FASHION_MNIST + "train-images-idx3-ubyte.gz", 16)
    labels = read_idx_gz(FASHION_MNIST + "train-labels-idx1-ubyte.gz", 8)
    x_all = torch.from_numpy(images.astype(np.float32) / 255.0).unsqueeze(1)
    x_all = F.interpolate(x_all, size=(32, 32), mode="bilinear", align_corners=False)
    y_all = torch.from_numpy(labels.astype(np.int64))
    model = ConvModel("W5", args.variant, torch.Generator().manual_seed(SEED))
    batch = model.batch
    steps = len(x_all) // batch
    t0 = time.perf_counter()
    for s in range(steps):
        model.step(x_all[s * batch:(s + 1) * batch], y_all[s * batch:(s + 1) * batch])
    seconds = time.perf_counter() - t0
    return {"contender": "torch", "mode": "epoch", "workload": "W5",
            "images_per_s": steps * batch / seconds, "seconds": seconds,
            "threads": args.threads, "variant": args.variant}


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
