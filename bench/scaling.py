#!/usr/bin/python3
"""bench/scaling.py: what data-parallel W2 training would gain on more ranks, from one
measured per-step compute time and the bytes all-reduced per step.

    bench/run-mpi --json > mpi.json && bench/scaling.py --json mpi.json
    bench/scaling.py --compute-ms 0.75 --rank-batch 64 --bytes 1077288

Model (stated so it can be argued with):

- All-reduce: the ring algorithm (reduce-scatter then all-gather), whose time for n
  bytes over p ranks is  T(p) = 2 (p-1)/p * n / bandwidth + 2 (p-1) * latency
  (P. Patarasuk and X. Yuan, "Bandwidth optimal all-reduce algorithms for clusters of
  workstations", J. Parallel Distrib. Comput. 69(2), 2009; R. Thakur, R. Rabenseifner
  and W. Gropp, "Optimization of collective communication operations in MPICH",
  Int. J. High Perform. Comput. Appl. 19(1), 2005). The reduction arithmetic and the
  step's status word are left out (a few microseconds at these sizes).
- Links: 10 Gbit/s with 5 us latency a message (TCP Ethernet), 100 Gbit/s with 2 us
  (RDMA-class); one rank a node, so every ring hop crosses the network.
- Compute: per-rank step time proportional to the per-rank batch, from the measured
  point (c(b) = c_meas * b / b_meas). Small GEMMs run below peak, so for per-rank
  batches far below the measured one the compute, and so the speed-ups, are optimistic.
- Step = compute + all-reduce (no overlap: the bound to expect when the sweep is short
  beside the reduction, as here); the "overlap" column is the other bound,
  max(compute, all-reduce), which perfect overlap would reach.
- Weak scaling: per-rank batch fixed at the measured one, global batch p times it;
  speed-up = p c(b) / step. Strong scaling: global batch fixed (128), per-rank batch
  128/p, impossible below one row; speed-up = c(128) / step.
- Communication dominates when T(p) > c(b), that is below a global batch of
  p * T(p) / (c_meas / b_meas).
"""
import argparse
import json
import sys

NETWORKS = [("10 Gbit/s", 10e9 / 8, 5e-6), ("100 Gbit/s", 100e9 / 8, 2e-6)]
RANKS = [8, 64, 512]
STRONG_BATCH = 128
# The measured row the defaults come from: each rank on one core with one thread,
# reducing after the sweep, as the model assumes.
SOURCE_ROW = "2x1 no overlap"


def ring_seconds(p, nbytes, bandwidth, latency):
    if p == 1:
        return 0.0
    return 2 * (p - 1) / p * nbytes / bandwidth + 2 * (p - 1) * latency


def from_json(path, row_name):
    with open(path) as f:
        data = json.load(f)
    rows = {r["config"]: r for r in data["rows"]}
    if row_name not in rows:
        sys.exit("scaling.py: no row '%s' in %s (rows: %s)" % (row_name, path,
                                                              ", ".join(rows)))
    r = rows[row_name]
    return (r["compute_ms_per_step"] / 1e3, r["rank_batch"], r["allreduce_bytes_per_step"],
            "%s: row '%s' (%s)" % (path, row_name, data.get("machine", "?")))


def predict(c_meas, b_meas, nbytes):
    """One row per (ranks, network, scaling)."""
    per_row = c_meas / b_meas
    rows = []
    for p in RANKS:
        for net, bw, lat in NETWORKS:
            t = ring_seconds(p, nbytes, bw, lat)
            for scaling in ("weak", "strong"):
                b = b_meas if scaling == "weak" else STRONG_BATCH / p
                row = {"ranks": p, "network": net, "scaling": scaling, "rank_batch": b,
                       "global_batch": p * b, "allreduce_ms": 1e3 * t,
                       "dominates_below_global_batch": p * t / per_row}
                if b < 1:
                    row.update(compute_ms=None, speedup=None, speedup_overlap=None)
                else:
                    c = per_row * b
                    one = p * c if scaling == "weak" else per_row * STRONG_BATCH
                    row.update(compute_ms=1e3 * c, speedup=one / (c + t),
                               speedup_overlap=one / max(c, t))
                rows.append(row)
    return rows


def fmt(x, spec):
    return "n/a" if x is None else spec % x


def table(rows, c_meas, b_meas, nbytes, source):
    out = ["input: compute %.3f ms a step at a per-rank batch of %g (%.2f us a row), "
           "%d bytes all-reduced a step; from %s" % (1e3 * c_meas, b_meas,
                                                    1e6 * c_meas / b_meas, nbytes, source),
           "links: " + ", ".join("%s with %g us latency" % (n, 1e6 * l)
                                 for n, _, l in NETWORKS), "",
           "| ranks | network | scaling | batch/rank | global batch | compute ms | "
           "all-reduce ms | speed-up | speed-up, perfect overlap | comm > compute "
           "below global batch |", "|" + "---|" * 10]
    for r in rows:
        impossible = r["rank_batch"] < 1
        out.append("| %d | %s | %s | %s | %d | %s | %.3f | %s | %s | %.0f |" % (
            r["ranks"], r["network"], r["scaling"],
            "%g (impossible)" % r["rank_batch"] if impossible else "%g" % r["rank_batch"],
            r["global_batch"], fmt(r["compute_ms"], "%.3f"), r["allreduce_ms"],
            fmt(r["speedup"], "%.2f"), fmt(r["speedup_overlap"], "%.2f"),
            r["dominates_below_global_batch"]))
    return "\n".join(out)


def main():
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--json", help="bench/run-mpi --json output to read the inputs from")
    p.add_argument("--row", default=SOURCE_ROW, help="its row to use [%(default)s]")
    p.add_argument("--compute-ms", type=float, help="per-step compute time, ms")
    p.add_argument("--rank-batch", type=float, help="per-rank batch of that time")
    p.add_argument("--bytes", type=int, help="bytes all-reduced per step")
    p.add_argument("--as-json", action="store_true", help="print the rows as JSON")
    a = p.parse_args()
    if a.json:
        c, b, n, source = from_json(a.json, a.row)
    elif None in (a.compute_ms, a.rank_batch, a.bytes):
        p.error("give --json FILE, or all of --compute-ms, --rank-batch and --bytes")
    else:
        c, b, n, source = a.compute_ms / 1e3, a.rank_batch, a.bytes, "arguments"
    # Arguments given beside --json override its values.
    c = a.compute_ms / 1e3 if a.compute_ms is not None else c
    b = a.rank_batch if a.rank_batch is not None else b
    n = a.bytes if a.bytes is not None else n
    rows = predict(c, b, n)
    if a.as_json:
        print(json.dumps({"compute_s": c, "rank_batch": b, "bytes": n, "rows": rows},
                         indent=1))
    else:
        print(table(rows, c, b, n, source))


if __name__ == "__main__":
    main()
