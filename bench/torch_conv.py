"""torch_conv.py: PyTorch's contender for the conv workloads W5 and W6 (bench/workloads.h)
and the W5 epoch, run through bench/torch_step.py (--workload W5|W6).

Backprop is timed two ways in one process, autograd's own convolution backward and
PyTorch's conv gradient functions (BENCHMARKING.md: the latter can be faster for small
channel counts), and the faster is reported; FA's conv layer is FAConv2d.
"""

import math
import time

import numpy as np
import torch
import torch.nn.functional as F

from torch_common import (FASHION_MNIST, LR, SEED, FALinear, malloc_counter,
                          read_idx_gz, rss_baseline_kib, set_threads, status_kib)

# The conv workloads, as bench/workloads.h: input channels, image side, batch, kernel,
# each conv's output channels, 2x2 max pooling after it or not, the linear layers.
CONV_WORKLOADS = {
    "W5": (1, 32, 64, 5, [6, 16, 120], [True, True, False], [84, 10]),
    "W6": (3, 32, 128, 5, [32, 64, 128], [True, True, False], [84, 10]),
}

MOMENTUM = 0.9

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
