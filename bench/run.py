"""bench/run.py: the orchestrator behind bench/run (run it through that script).

Every measurement runs in its own process: adtape's step (bench_step --mode adtape),
the GEMM floor (bench_step --mode floor) and PyTorch (torch_step.py). For each row the
three contenders alternate in blocks, the order rotating per block, so drift on this
shared machine hits all of them; medians pool every timed repetition of every block.
1-thread rows are pinned to CPU 0 (taskset). PyTorch runs with OMP_WAIT_POLICY=PASSIVE.
Every process runs with bench/malloc_count in LD_PRELOAD, which counts all heap
allocations in the process.
"""
import argparse
import json
import os
import platform
import statistics
import subprocess
import sys

WORKLOADS = ["W1", "W2", "W3", "W4", "W5", "W6"]
CONV_WORKLOADS = {"W5", "W6"}  # no bp-fused row: their update is the momentum optimiser
# Repetitions per process and warm-up steps, by workload: enough for a stable median
# without letting W4 (about a second per step) dominate the run.
REPS = {"W1": (300, 30), "W2": (100, 10), "W3": (30, 5), "W4": (4, 2), "W5": (60, 10),
        "W6": (12, 3)}


def run_json(cmd, env):
    out = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True)
    lines = [l for l in out.stdout.splitlines() if l.startswith("{")]
    if not lines:
        raise RuntimeError("no JSON from %s: %s" % (" ".join(cmd), out.stderr[-2000:]))
    return json.loads(lines[-1])


def contender_cmd(args, who, workload, rule, threads, reps, warmup):
    pin = ["taskset", "-c", "0"] if threads == 1 else []
    if who != "adtape":
        # "bp-fused" differs from "bp" only in where adtape applies SGD: the floor and
        # PyTorch are those of the plain rule.
        rule = rule.split("-")[0]
    if who == "torch":
        return pin + ["/usr/bin/python3", "bench/torch_step.py", "--workload", workload,
                      "--rule", rule, "--threads", str(threads), "--reps", str(reps),
                      "--warmup", str(warmup)]
    return pin + [os.path.join(args.build, "bench", "bench_step"), "--mode",
                  "floor" if who == "floor" else "adtape", "--workload", workload, "--rule",
                  rule, "--threads", str(threads), "--reps", str(reps), "--warmup",
                  str(warmup)]


def environment(args):
    env = dict(os.environ)
    env["OMP_WAIT_POLICY"] = "PASSIVE"
    env["LD_PRELOAD"] = os.path.abspath(os.path.join(args.build, "bench",
                                                     "libmalloc_count.so"))
    return env


def measure_row(args, env, workload, rule, threads):
    reps, warmup = REPS[workload]
    if args.quick:
        reps, warmup = max(2, reps // 10), 1
    order = ["adtape", "floor", "torch"]
    runs = {who: [] for who in order}
    for block in range(args.blocks):
        rotated = order[block % 3:] + order[:block % 3]
        for who in rotated:
            runs[who].append(run_json(contender_cmd(args, who, workload, rule, threads,
                                                    reps, warmup), env))
    med = {who: statistics.median([t for r in runs[who] for t in r["ms"]]) for who in order}
    allocs = [r.get("allocs_per_step") for r in runs["adtape"]]
    return {
        "workload": workload, "rule": rule, "threads": threads,
        "adtape_ms": med["adtape"], "floor_ms": med["floor"], "torch_ms": med["torch"],
        "adtape/floor": med["adtape"] / med["floor"],
        "adtape/torch": med["adtape"] / med["torch"],
        "allocs/step": max(a for a in allocs) if None not in allocs else None,
        "peak_rss_mb": max(r["peak_rss_mb"] for r in runs["adtape"]),
        "torch_peak_rss_mb": max(r["peak_rss_mb"] for r in runs["torch"]),
        "torch_allocs/step": statistics.median(
            [r["allocs_per_step"] for r in runs["torch"] if r.get("allocs_per_step") is not None]
            or [float("nan")]),
        "blas_core": runs["adtape"][0].get("blas_core"),
        "blas_config": runs["adtape"][0].get("blas_config"),
        "torch_version": runs["torch"][0].get("torch"),
    }


def epoch_rows(args, env):
    """W2's epoch, and W5's on Fashion-MNIST resized to 32x32 (PyTorch's faster of its
    two backprop variants) when W5 is among the rows."""
    rows = []
    kinds = [("W2", [[]])]
    if "W5" in args.rows.split(","):
        kinds.append(("W5", [["--variant", "autograd"], ["--variant", "functions"]]))
    for workload, variants in kinds:
        for threads in args.threads:
            pin = ["taskset", "-c", "0"] if threads == 1 else []
            ours = run_json(pin + [os.path.join(args.build, "bench", "bench_step"), "--epoch",
                                   "--workload", workload, "--threads", str(threads)], env)
            theirs = max((run_json(pin + ["/usr/bin/python3", "bench/torch_step.py", "--epoch",
                                          "--workload", workload, "--threads", str(threads)]
                                   + v, env) for v in variants),
                         key=lambda r: r["images_per_s"])
            rows.append({"workload": workload, "threads": threads,
                         "adtape_images_per_s": ours["images_per_s"],
                         "torch_images_per_s": theirs["images_per_s"]})
    return rows


def machine_line(rows):
    cpu = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    first = rows[0] if rows else {}
    return ("%s, %d cores, %s; OpenBLAS core %s (%s); PyTorch %s; OPENBLAS_CORETYPE=%s "
            "OPENBLAS_L2_SIZE=%s; glibc malloc defaults (GLIBC_TUNABLES=%s)" % (
                cpu, os.cpu_count(), platform.platform(), first.get("blas_core"),
                first.get("blas_config"), first.get("torch_version"),
                os.environ.get("OPENBLAS_CORETYPE", "(unset)"),
                os.environ.get("OPENBLAS_L2_SIZE", "(unset)"),
                os.environ.get("GLIBC_TUNABLES", "(unset)")))


COLUMNS = ["workload", "rule", "threads", "adtape_ms", "floor_ms", "torch_ms",
           "adtape/floor", "adtape/torch", "allocs/step", "peak_rss_mb"]


def fmt(v):
    if isinstance(v, float):
        return "%.4g" % v
    return "-" if v is None else str(v)


def table(rows, epochs, machine):
    cols = COLUMNS + ["torch_peak_rss_mb"]
    lines = ["machine: " + machine, "", "| " + " | ".join(cols) + " |",
             "|" + "---|" * len(cols)]
    for r in rows:
        lines.append("| " + " | ".join(fmt(r[c]) for c in cols) + " |")
    lines += ["", "| epoch on Fashion-MNIST | threads | adtape images/s | torch images/s "
              "| adtape/torch speed |", "|---|---|---|---|---|"]
    what = {"W2": "W2 bp, batch 128, file order",
            "W5": "W5 bp, 32x32 bilinear, batch 64, file order"}
    for e in epochs:
        lines.append("| %s | %d | %.0f | %.0f | %.2f |" % (
            what[e.get("workload", "W2")], e["threads"], e["adtape_images_per_s"],
            e["torch_images_per_s"], e["adtape_images_per_s"] / e["torch_images_per_s"]))
    return "\n".join(lines)


def combine(paths):
    """The median over several invocations' --json outputs, row by row: the issue's
    "median of three bench/run invocations". Ratios are medians of the invocations'
    ratios (each from one invocation's interleaved contenders), not ratios of medians."""
    runs = []
    for path in paths:
        with open(path) as f:
            runs.append(json.load(f))
    rows = []
    for i, first in enumerate(runs[0]["rows"]):
        same = [r["rows"][i] for r in runs]
        row = dict(first)
        for key in ["adtape_ms", "floor_ms", "torch_ms", "adtape/floor", "adtape/torch",
                    "peak_rss_mb", "torch_peak_rss_mb"]:
            row[key] = statistics.median(r[key] for r in same)
        allocs = [r["allocs/step"] for r in same]
        row["allocs/step"] = None if None in allocs else max(allocs)
        row["spread adtape/floor"] = [r["adtape/floor"] for r in same]
        row["spread adtape/torch"] = [r["adtape/torch"] for r in same]
        rows.append(row)
    epochs = []
    for i, first in enumerate(runs[0]["epoch"]):
        e = dict(first)
        for key in ["adtape_images_per_s", "torch_images_per_s"]:
            e[key] = statistics.median(r["epoch"][i][key] for r in runs)
        epochs.append(e)
    return {"machine": runs[0]["machine"], "invocations": len(runs), "rows": rows,
            "epoch": epochs}


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--build", default="build")
    p.add_argument("--blocks", type=int, default=3)
    p.add_argument("--rows", default=",".join(WORKLOADS))
    p.add_argument("--rules", default="bp,fa,bp-fused")
    p.add_argument("--combine", nargs="+", metavar="JSON",
                   help="print the median of earlier --json outputs; measure nothing")
    p.add_argument("--threads", default="1,2")
    p.add_argument("--quick", action="store_true", help="few repetitions: a smoke test")
    p.add_argument("--json", action="store_true")
    p.add_argument("--write", action="store_true", help="record the table in bench/RESULTS.md")
    args = p.parse_args()
    if args.combine:
        data = combine(args.combine)
        if args.json:
            print(json.dumps(data, indent=1))
        else:
            print("median of %d invocations" % data["invocations"])
            print(table(data["rows"], data["epoch"], data["machine"]))
        return
    args.threads = [int(t) for t in args.threads.split(",")]
    env = environment(args)
    rows = []
    for w in args.rows.split(","):
        for rule in args.rules.split(","):
            if w in CONV_WORKLOADS and rule.endswith("-fused"):
                continue
            for threads in args.threads:
                rows.append(measure_row(args, env, w, rule, threads))
                print("measured %s %s %d thread(s)" % (w, rule, threads), file=sys.stderr)
    epochs = epoch_rows(args, env)
    machine = machine_line(rows)
    if args.json:
        print(json.dumps({"machine": machine, "rows": rows, "epoch": epochs}, indent=1))
    else:
        print(table(rows, epochs, machine))
    if args.write:
        with open("bench/RESULTS.md.table", "w") as f:
            f.write(table(rows, epochs, machine) + "\n")


if __name__ == "__main__":
    main()
