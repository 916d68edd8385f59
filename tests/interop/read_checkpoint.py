"""Interoperability of adtape checkpoints with PyTorch, written without adtape.

Run by Debian's /usr/bin/python3 from tests/test_checkpoint_io.c; uses only the
standard library's json, struct and sys, numpy and torch.

  read_checkpoint.py check CHECKPOINT EXPECTED
      Parses CHECKPOINT on its own (8-byte little-endian header length, JSON header,
      offsets tiling the data section), builds a state dict with torch.from_numpy and
      compares it bit for bit with EXPECTED, a text file the C side wrote:
          tensor NAME DTYPE D0,D1,... HEX   (HEX: the tensor's little-endian bytes)
          meta KEY VALUE
  read_checkpoint.py write OUT
      Writes OUT the way the safetensors reference does it (header padded with spaces
      to a multiple of 8), with keys deliberately not in offset order and __metadata__
      between tensors: w (F32, 2x3) = k / 4 - 1 and b (F64, 3) = 0.5 - k / 8 for
      element k, and metadata {"format": "pt", "source": "python"}.
  read_checkpoint.py write-bn OUT FLOAT_OUT
      A PyTorch model with an integer buffer: Sequential(Linear(4, 3), BatchNorm1d(3))
      with weight[i][j] = (4 i + j) / 8 - 0.75 and bias 0.25, after one forward in
      training mode on x[s][j] = (s - j) / 2 (4 samples), which moves BatchNorm's running
      statistics and sets its num_batches_tracked (I64, shape []) to 1. Writes its whole
      state_dict to OUT and only its floating-point tensors to FLOAT_OUT.
Exits 0 on success; prints the reason and exits 1 otherwise.
"""
import json
import struct
import sys

import numpy as np
import torch

DTYPES = {"F32": (np.dtype("<f4"), torch.float32), "F64": (np.dtype("<f8"), torch.float64)}
TAGS = {torch.float32: "F32", torch.float64: "F64", torch.int64: "I64"}


def fail(why):
    print("read_checkpoint.py: " + why, file=sys.stderr)
    sys.exit(1)


def parse(path):
    """The header, the metadata and a state dict of torch tensors."""
    with open(path, "rb") as f:
        blob = f.read()
    if len(blob) < 8:
        fail("file shorter than 8 bytes")
    (n,) = struct.unpack("<Q", blob[:8])
    if n % 8 != 0:
        fail("header length %d is not a multiple of 8" % n)
    body = blob[8 : 8 + n].decode("utf-8").rstrip(" ")
    if not body.endswith("}") or n - len(body.encode("utf-8")) >= 8:
        fail("the header is not JSON followed by fewer than 8 spaces")
    header = json.loads(body)
    meta = header.pop("__metadata__", {})
    data = blob[8 + n :]
    spans = sorted((tuple(e["data_offsets"]), name) for name, e in header.items())
    pos = 0
    for (begin, end), name in spans:
        if begin != pos:
            fail("tensor %s starts at %d, expected %d" % (name, begin, pos))
        pos = end
    if pos != len(data):
        fail("tensors cover %d bytes of %d" % (pos, len(data)))
    state = {}
    for name, e in header.items():
        np_dtype, torch_dtype = DTYPES[e["dtype"]]
        begin, end = e["data_offsets"]
        arr = np.frombuffer(data[begin:end], dtype=np_dtype).reshape(e["shape"])
        state[name] = torch.from_numpy(arr.copy())
        if state[name].dtype != torch_dtype:
            fail("%s: torch dtype %s" % (name, state[name].dtype))
    return meta, state


def check(path, expected_path):
    meta, state = parse(path)
    seen = 0
    with open(expected_path) as f:
        for line in f:
            kind, rest = line.rstrip("\n").split(" ", 1)
            if kind == "meta":
                key, value = rest.split(" ", 1)
                if meta.get(key) != value:
                    fail("metadata %s is %r, expected %r" % (key, meta.get(key), value))
                continue
            name, dtype, shape, hexbytes = rest.split(" ")
            shape = [int(d) for d in shape.split(",") if d]
            np_dtype, torch_dtype = DTYPES[dtype]
            want = np.frombuffer(bytes.fromhex(hexbytes), dtype=np_dtype).reshape(shape)
            got = state.get(name)
            if got is None:
                fail("no tensor %s" % name)
            if got.dtype != torch_dtype or list(got.shape) != shape:
                fail("%s: %s %s, expected %s %s" % (name, got.dtype, list(got.shape), dtype, shape))
            bits = "<u4" if dtype == "F32" else "<u8"
            if not np.array_equal(got.numpy().view(bits), want.view(bits)):
                fail("%s: values differ" % name)
            seen += 1
    if seen != len(state):
        fail("%d tensors in the file, %d expected" % (len(state), seen))


def write(path):
    w = (np.arange(6, dtype=np.float32) / np.float32(4) - np.float32(1)).reshape(2, 3)
    b = np.float64(0.5) - np.arange(3, dtype=np.float64) / 8
    wb, bb = w.astype("<f4").tobytes(), b.astype("<f8").tobytes()
    # b first in the data, w second; the keys name w first, metadata in between.
    header = {
        "w": {"dtype": "F32", "shape": [2, 3], "data_offsets": [len(bb), len(bb) + len(wb)]},
        "__metadata__": {"format": "pt", "source": "python"},
        "b": {"dtype": "F64", "shape": [3], "data_offsets": [0, len(bb)]},
    }
    text = json.dumps(header).encode("utf-8")
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + bb + wb)
    # Reading it back through torch as a check of the writer itself.
    _, state = parse(path)
    if not torch.equal(state["w"], torch.from_numpy(w)) or not torch.equal(state["b"], torch.from_numpy(b)):
        fail("the written file does not read back")


def write_state(path, state):
    """A state dict of F32, F64 and I64 tensors, laid out in name order."""
    header, blobs, pos = {}, [], 0
    for name in sorted(state):
        t = state[name].detach().contiguous()
        raw = t.numpy().tobytes()  # little-endian on every machine torch runs on here
        header[name] = {"dtype": TAGS[t.dtype], "shape": list(t.shape),
                        "data_offsets": [pos, pos + len(raw)]}
        blobs.append(raw)
        pos += len(raw)
    header["__metadata__"] = {"format": "pt"}
    text = json.dumps(header).encode("utf-8")
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + b"".join(blobs))


def write_bn(path, float_path):
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.BatchNorm1d(3))
    with torch.no_grad():
        model[0].weight.copy_(torch.arange(12, dtype=torch.float32).reshape(3, 4) / 8 - 0.75)
        model[0].bias.fill_(0.25)
    x = (torch.arange(4, dtype=torch.float32).reshape(4, 1) - torch.arange(4)) / 2
    model.train()
    model(x)
    state = model.state_dict()
    if state["1.num_batches_tracked"].dtype != torch.int64 or int(state["1.num_batches_tracked"]) != 1:
        fail("num_batches_tracked is not an I64 of 1")
    write_state(path, state)
    write_state(float_path, {k: v for k, v in state.items() if v.is_floating_point()})


def main(argv):
    if len(argv) == 4 and argv[1] == "check":
        check(argv[2], argv[3])
    elif len(argv) == 3 and argv[1] == "write":
        write(argv[2])
    elif len(argv) == 4 and argv[1] == "write-bn":
        write_bn(argv[2], argv[3])
    else:
        fail("usage: read_checkpoint.py check CHECKPOINT EXPECTED | write OUT | "
             "write-bn OUT FLOAT_OUT")


if __name__ == "__main__":
    main(sys.argv)
