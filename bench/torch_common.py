"""torch_common.py: what bench/torch_step.py and bench/torch_conv.py share: the thread
limits, allocation and memory counters, the data reader, and FA's linear layer.

Fairness (see /work/shared/BENCHMARKING.md):
- Threads: torch.set_num_threads(n) limits ATen's OpenMP pool but not OpenBLAS's own
  pthread pool, so openblas_set_num_threads(n) is also called, through ctypes, on the
  OpenBLAS that torch actually loaded (found in /proc/self/maps). Its core name and
  build configuration are reported, since OPENBLAS_CORETYPE picks the kernel.
- Allocations: counted when the process runs with LD_PRELOAD=.../libmalloc_count.so
  (bench/malloc_count.c); otherwise allocs_per_step is null.
"""

import ctypes
import gzip
import os
import sys

import numpy as np
import torch

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

def read_idx_gz(path, header_bytes):
    """The payload of a gzipped IDX file (big-endian header, uint8 data) as uint8."""
    with gzip.open(path, "rb") as f:
        data = f.read()
    dims = data[3]
    shape = [int.from_bytes(data[4 + 4 * d:8 + 4 * d], "big") for d in range(dims)]
    if 4 + 4 * dims != header_bytes or data[2] != 0x08:
        raise ValueError("%s: not an IDX file of unsigned bytes" % path)
    return np.frombuffer(data, dtype=np.uint8, offset=header_bytes).reshape(shape)
