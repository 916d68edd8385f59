"""PyTorch's values and gradients for the convolution and pooling cases of
tests/test_conv_torch.c, written without adtape.

Run once per suite by Debian's /usr/bin/python3 (python3-torch); uses only the
standard library's sys and torch, in float64 on the CPU.

  conv_reference.py IN OUT

IN is whitespace-separated text the C side wrote: the word "adtape-conv-torch", the
number of cases, then per case

    case OP A1 A2 ...           (the attributes, in the order of the C structs)
    tensor NAME NDIM D0 D1 ... V0 V1 ...

OP and its attributes and tensors (G is the upstream gradient, shaped as y):
    conv2d             sh sw ph pw dh dw groups   x w G
    conv2d_bias        sh sw ph pw dh dw groups   x w b G
    max_pool2d         kh kw sh sw ph pw          x G
    avg_pool2d         kh kw sh sw ph pw          x G   (count_include_pad=True)
    global_avg_pool2d                             x G   (adaptive_avg_pool2d(x, 1))

For each case, in order, OUT gets "result K OP" and the tensors y, dx, then dw for the
convolutions and db for conv2d_bias, as "tensor NAME NDIM D0 ... V0 ...", where the
gradients are those of loss = sum(y * G). Values are written with repr, which reads
back to the same double. Exits 0 on success; prints the reason and exits 1 otherwise.
"""
import sys

try:
    import torch
    import torch.nn.functional as F
except ImportError as e:
    print("conv_reference.py: cannot import torch (%s); install Debian's python3-torch "
          "(scripts/setup.sh ADTAPE_TEST_PACKAGES)" % e, file=sys.stderr)
    sys.exit(1)

ATTR_COUNT = {"conv2d": 7, "conv2d_bias": 7, "max_pool2d": 6, "avg_pool2d": 6,
              "global_avg_pool2d": 0}
TENSORS = {"conv2d": ["x", "w", "G"], "conv2d_bias": ["x", "w", "b", "G"],
           "max_pool2d": ["x", "G"], "avg_pool2d": ["x", "G"],
           "global_avg_pool2d": ["x", "G"]}


def fail(why):
    print("conv_reference.py: " + why, file=sys.stderr)
    sys.exit(1)


class Tokens:
    def __init__(self, text):
        self.words = text.split()
        self.pos = 0

    def next(self):
        if self.pos >= len(self.words):
            fail("input ends early")
        self.pos += 1
        return self.words[self.pos - 1]

    def expect(self, word):
        got = self.next()
        if got != word:
            fail("expected %r, read %r (word %d)" % (word, got, self.pos))

    def int(self):
        return int(self.next())

    def tensor(self, name):
        self.expect("tensor")
        self.expect(name)
        shape = [self.int() for _ in range(self.int())]
        count = 1
        for d in shape:
            count *= d
        values = [float(self.next()) for _ in range(count)]
        return torch.tensor(values, dtype=torch.float64).reshape(shape)


def forward(op, a, t):
    """y from the inputs t (a dict of leaf tensors) and the attributes a."""
    if op in ("conv2d", "conv2d_bias"):
        sh, sw, ph, pw, dh, dw, groups = a
        return F.conv2d(t["x"], t["w"], t.get("b"), stride=(sh, sw), padding=(ph, pw),
                        dilation=(dh, dw), groups=groups)
    if op == "max_pool2d":
        kh, kw, sh, sw, ph, pw = a
        return F.max_pool2d(t["x"], (kh, kw), stride=(sh, sw), padding=(ph, pw))
    if op == "avg_pool2d":
        kh, kw, sh, sw, ph, pw = a
        return F.avg_pool2d(t["x"], (kh, kw), stride=(sh, sw), padding=(ph, pw),
                            count_include_pad=True)
    return F.adaptive_avg_pool2d(t["x"], 1)


def write_tensor(out, name, t):
    t = t.detach().contiguous()
    out.write("tensor %s %d %s\n" % (name, t.dim(), " ".join(str(d) for d in t.shape)))
    out.write(" ".join(repr(v) for v in t.reshape(-1).tolist()) + "\n")


def main():
    if len(sys.argv) != 3:
        fail("usage: conv_reference.py IN OUT")
    with open(sys.argv[1]) as f:
        tok = Tokens(f.read())
    tok.expect("adtape-conv-torch")
    cases = tok.int()
    with open(sys.argv[2], "w") as out:
        for k in range(cases):
            tok.expect("case")
            op = tok.next()
            if op not in ATTR_COUNT:
                fail("case %d: unknown op %r" % (k, op))
            a = [tok.int() for _ in range(ATTR_COUNT[op])]
            t = {name: tok.tensor(name) for name in TENSORS[op]}
            g = t.pop("G")
            for leaf in t.values():
                leaf.requires_grad_(True)
            y = forward(op, a, t)
            if y.shape != g.shape:
                fail("case %d (%s): y is %s, G %s" % (k, op, list(y.shape), list(g.shape)))
            (y * g).sum().backward()
            out.write("result %d %s\n" % (k, op))
            write_tensor(out, "y", y)
            for name in ("x", "w", "b"):
                if name in t:
                    write_tensor(out, "d" + name, t[name].grad)
        out.write("end\n")


if __name__ == "__main__":
    main()
