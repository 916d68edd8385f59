"""bench/run_mpi.py: the orchestrator behind bench/run-mpi (run it through that script).

Every measurement is one process tree: bench_mpi alone for one rank (MPI's singleton
start, no mpirun, so nothing binds its two OpenBLAS threads to one core), mpirun -np 2
for two ranks. The configurations alternate, the order rotating per round, so drift on
this shared machine hits all of them; each row is the median of its rounds. The
1-thread, 1-rank row is pinned to CPU 0 (taskset) as bench/run does; the 2-rank rows
use Open MPI's --bind-to core (rank r on core r; --bind none to compare).
"""
import argparse
import json
import os
import platform
import statistics
import subprocess
import sys

# name, ranks, threads per rank, overlap (None: one rank, nothing to overlap)
CONFIGS = [
    ("1x1", 1, 1, None),
    ("1x2", 1, 2, None),
    ("2x1 overlap", 2, 1, True),
    ("2x1 no overlap", 2, 1, False),
]
BASELINE = "1x2"


def command(args, ranks, threads, overlap):
    exe = os.path.join(args.build, "bench", "bench_mpi")
    tail = [exe, "--threads", str(threads)] + ([] if overlap in (None, True) else
                                               ["--no-overlap"])
    if ranks == 1:
        return (["taskset", "-c", "0"] if threads == 1 else []) + tail
    launch = ["mpirun", "-np", str(ranks), "--bind-to", args.bind]
    if os.geteuid() == 0:
        launch.append("--allow-run-as-root")
    return launch + tail


def run_json(cmd):
    out = subprocess.run(cmd, check=True, capture_output=True, text=True)
    lines = [l for l in out.stdout.splitlines() if l.startswith("{")]
    if not lines:
        raise RuntimeError("no JSON from %s: %s" % (" ".join(cmd), out.stderr[-2000:]))
    return json.loads(lines[-1])


def load():
    return " ".join("%.2f" % x for x in os.getloadavg())


def measure(args):
    runs = {name: [] for name, *_ in CONFIGS}
    for rnd in range(args.reps):
        order = CONFIGS[rnd % len(CONFIGS):] + CONFIGS[:rnd % len(CONFIGS)]
        for name, ranks, threads, overlap in order:
            runs[name].append(run_json(command(args, ranks, threads, overlap)))
            print("round %d: %s (load %s)" % (rnd + 1, name, load()), file=sys.stderr)
    rows = []
    for name, ranks, threads, overlap in CONFIGS:
        r = runs[name]
        med = lambda key: statistics.median(x[key] for x in r)
        rows.append({
            "config": name, "ranks": ranks, "threads": threads, "overlap": overlap,
            "images_per_s": med("images_per_s"), "allreduce_share": med("comm_share"),
            "compute_ms_per_step": 1e3 * med("compute_seconds_per_step"),
            "allreduce_ms_per_step": 1e3 * med("comm_seconds") / r[0]["steps"],
            "global_batch": r[0]["global_batch"], "rank_batch": r[0]["rank_batch"],
            "allreduce_bytes_per_step": r[0]["allreduce_bytes_per_step"],
            "bucket_bytes": r[0]["bucket_bytes"],
            "params_agree": all(x["params_agree"] for x in r),
            "runs": r,
        })
    base = next(r for r in rows if r["config"] == BASELINE)["images_per_s"]
    for r in rows:
        r["speedup_vs_1x2"] = r["images_per_s"] / base
    return rows


def machine_line(rows):
    cpu = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(l.split(":", 1)[1].strip() for l in f if l.startswith("model name"))
    except (OSError, StopIteration):
        pass
    try:
        mpi = subprocess.run(["mpirun", "--version"], capture_output=True,
                             text=True).stdout.splitlines()[0]
    except (OSError, IndexError):
        mpi = "mpirun --version failed"
    return ("%s, %d cores, %s; OpenBLAS core %s; %s; OPENBLAS_CORETYPE=%s "
            "OPENBLAS_L2_SIZE=%s" % (
                cpu, os.cpu_count(), platform.platform(), rows[0]["runs"][0]["blas_core"],
                mpi, os.environ.get("OPENBLAS_CORETYPE", "(unset)"),
                os.environ.get("OPENBLAS_L2_SIZE", "(unset)")))


def table(rows, machine, loads):
    head = ["config", "ranks", "threads", "overlap", "images/s", "allreduce share",
            "speed-up vs 1x2", "compute ms/step", "allreduce ms/step"]
    lines = ["machine: " + machine, "load average (1, 5, 15 min) before: %s; after: %s"
             % loads, "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        overlap = "-" if r["overlap"] is None else ("on" if r["overlap"] else "off")
        lines.append("| %s | %d | %d | %s | %.0f | %.1f%% | %.2f | %.3f | %.3f |" % (
            r["config"], r["ranks"], r["threads"], overlap, r["images_per_s"],
            100 * r["allreduce_share"], r["speedup_vs_1x2"], r["compute_ms_per_step"],
            r["allreduce_ms_per_step"]))
    two = [r for r in rows if r["ranks"] > 1]
    if two:
        lines.append("")
        lines.append("W2, global batch %d (%d a rank with 2 ranks); %d bytes all-reduced a "
                     "step in buckets of %d bytes; parameters equal on every rank after "
                     "each 2-rank epoch: %s" % (
                         two[0]["global_batch"], two[0]["rank_batch"],
                         two[0]["allreduce_bytes_per_step"], two[0]["bucket_bytes"],
                         "yes" if all(r["params_agree"] for r in two) else "NO"))
    return "\n".join(lines)


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--build", default="build")
    p.add_argument("--reps", type=int, default=3, help="rounds; each row is their median")
    p.add_argument("--bind", default="core", choices=["core", "none"],
                   help="Open MPI's --bind-to for the 2-rank rows")
    p.add_argument("--json", action="store_true", help="print the data instead of the table")
    p.add_argument("--json-out", metavar="FILE", help="also write the data to FILE")
    args = p.parse_args()
    before = load()
    rows = measure(args)
    loads = (before, load())
    machine = machine_line(rows)
    data = json.dumps({"machine": machine, "load_before": loads[0], "load_after": loads[1],
                       "bind": args.bind, "rows": rows}, indent=1)
    if args.json_out:
        with open(args.json_out, "w") as f:
            f.write(data + "\n")
    if args.json:
        print(data)
    else:
        print(table(rows, machine, loads))


if __name__ == "__main__":
    main()
