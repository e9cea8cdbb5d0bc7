#!/usr/bin/env python3
"""Epoch time of cbackprop.distributed.sgd on 1, 2, ... MPI ranks, and the share of it spent
in Allreduce, on MNIST-shaped random data (50,000 x 784 uint8 / 256, random labels).

    python benchmarks/bench_mpi.py --ranks 1,2 --json /tmp/bench_mpi.json   # launches mpiexec itself
    mpiexec -n 2 python benchmarks/bench_mpi.py                             # one rank count

Needs the [mpi] extra (mpi4py + an MPI library); the mpiexec next to this interpreter is
used, or --mpiexec PATH.  Configs (--configs):

    small  [784, 30, 10]         mini-batch 10   eta 3.0   (the book's network)
    large  [784, 256, 256, 10]   mini-batch 128  eta 0.5

Per config and rank count: one untimed warm-up epoch, then --repeats timed epochs (one
distributed.sgd call); "epoch_seconds" is the median over the timed epochs of the slowest
rank's epoch time, "allreduce_share" the median of (time in Allreduce / epoch time) of the
slowest rank, averaged over ranks in "allreduce_share_mean".  Allreduce time includes
waiting for a slower rank (load imbalance), not just moving bytes.  "allreduce_alone_us" is
one Allreduce of the gradient buffer with nothing else running (best of 3 loops of 500, on
every rank at once), and "allreduce_alone_share" that times the batches per epoch over the
epoch time: the share the communication alone would take.

On 1 rank distributed.sgd runs Network.sgd's own C epoch loop (nothing to reduce), so the
1-rank row is the single-process speed; the script also times Network.sgd with the automatic
thread count (the feeder, two threads or every core), on 1 thread and on as many threads as
cores (its "network_sgd" entry), the other way to use the cores of one machine.  The
launcher mode runs each worker as `python -m mpi4py` (an uncaught exception then aborts the
job instead of hanging it) and records in "other_cpu_seconds" how much CPU time other
processes used during each mpiexec run: on a shared machine, rerun when that is more than a
small fraction of "wall_seconds".

Each rank generates only its own shard (the data are a deterministic function of the row
index), so memory per rank is that of its shard.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench import machine_header, write_json  # noqa: E402  (the benchmarks' shared helpers)

CONFIGS = {
    "small": ([784, 30, 10], 10, 3.0),
    "large": ([784, 256, 256, 10], 128, 0.5),
}
N = 50_000
SEED = 0
DATA_SEED = 12345
BLOCK = 1000   # rows per independently seeded block of the synthetic data


def shard_data(lo, hi, dtype):
    """Rows lo:hi of the synthetic data set: X = u8 / 256 (MNIST-like), Y one-hot of random
    labels.  Block b of BLOCK rows comes from default_rng([DATA_SEED, b]), so any shard is
    the same rows whatever the rank count, and no rank generates rows it does not own."""
    xs, ys = [], []
    for b in range(lo // BLOCK, -(-hi // BLOCK)):
        rng = np.random.default_rng([DATA_SEED, b])
        u8 = rng.integers(0, 256, (BLOCK, 784), dtype=np.uint8)
        labels = rng.integers(0, 10, BLOCK)
        a, z = max(lo, b * BLOCK) - b * BLOCK, min(hi, (b + 1) * BLOCK) - b * BLOCK
        xs.append(u8[a:z])
        ys.append(labels[a:z])
    u8 = np.concatenate(xs) if xs else np.empty((0, 784), np.uint8)
    labels = np.concatenate(ys) if ys else np.empty(0, np.int64)
    X = u8.astype(dtype) / dtype.type(256)
    Y = np.zeros((len(labels), 10), dtype=dtype)
    Y[np.arange(len(labels)), labels] = 1
    return X, Y


def busy_cpu_seconds():
    """CPU seconds the whole machine has spent busy (user+nice+system+irq+softirq+steal), from
    /proc/stat; NaN elsewhere."""
    try:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return float("nan")
    user, nice, system, idle, iowait, irq, softirq, steal = (fields + [0] * 8)[:8]
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def children_cpu_seconds():
    t = os.times()
    return t.children_user + t.children_system


def worker(args):
    """Run under mpiexec: every config on this communicator; rank 0 returns the results."""
    from mpi4py import MPI

    from cbackprop import Network, distributed

    comm = MPI.COMM_WORLD
    rank, size = comm.Get_rank(), comm.Get_size()
    dtype = np.dtype(args.dtype)
    lo, hi = distributed.shard(args.n, rank, size)
    X, Y = shard_data(lo, hi, dtype)
    out = {"ranks": size, "n": args.n, "dtype": dtype.name, "repeats": args.repeats, "configs": {}}
    for name in args.configs:
        sizes, mbs, eta = CONFIGS[name]
        net = Network(sizes, dtype=dtype, seed=SEED)
        comm.Barrier()
        hist = distributed.sgd(net, X, Y, 1 + args.repeats, mbs, eta)[1:]
        per_rank = comm.gather([(h["seconds"], h["allreduce_seconds"]) for h in hist], root=0)
        # one Allreduce of the gradient buffer, alone, as often as an epoch does it
        buf = net.gradient_buffer
        n_batches = -(-args.n // mbs)
        reps = 500
        tries = []
        for _ in range(3):   # best of 3 loops of 500, after 50 untimed
            for _ in range(50):
                comm.Allreduce(MPI.IN_PLACE, buf, op=MPI.SUM)
            comm.Barrier()
            t = time.perf_counter()
            for _ in range(reps):
                comm.Allreduce(MPI.IN_PLACE, buf, op=MPI.SUM)
            tries.append(comm.allreduce(time.perf_counter() - t, op=MPI.MAX) / reps)
        alone = min(tries)
        buf.fill(0)
        single = None
        if size == 1:
            single = {}
            # the automatic thread count (what users get, see Network.num_threads), then
            # fixed counts
            cores = len(os.sched_getaffinity(0))
            for label, threads in [("automatic", None)] + [(f"{t}thread", t) for t in sorted({1, cores})]:
                ref = Network(sizes, dtype=dtype, seed=SEED)
                if threads is not None:
                    ref.num_threads = threads
                times, used = [], []
                for _ in range(1 + args.repeats):
                    times.append(ref.sgd(X, Y, 1, mbs, eta)[0]["seconds"])
                    used.append(ref._engine.last_epoch_threads)
                times, used = times[1:], used[1:]
                single[label] = {"median": statistics.median(times), "times": times,
                                 "threads_used": used}
        if rank == 0:
            epochs = list(zip(*per_rank))   # epochs[e][r] = (seconds, allreduce seconds)
            slowest = [max(e, key=lambda sr: sr[0]) for e in epochs]
            entry = {
                "sizes": sizes, "mini_batch_size": mbs, "eta": eta, "batches_per_epoch": n_batches,
                "gradient_buffer_bytes": int(buf.nbytes),
                "epoch_seconds": statistics.median(s for s, _ in slowest),
                "epoch_seconds_all": [[s for s, _ in e] for e in epochs],
                "allreduce_share": statistics.median(a / s for s, a in slowest),
                "allreduce_share_mean": statistics.mean(a / s for e in epochs for s, a in e),
                "allreduce_seconds_all": [[a for _, a in e] for e in epochs],
                "allreduce_alone_us": alone * 1e6,
                "allreduce_alone_tries_us": [t * 1e6 for t in tries],
                "allreduce_alone_share": alone * n_batches / statistics.median(s for s, _ in slowest),
            }
            if single is not None:
                entry["network_sgd"] = single
            out["configs"][name] = entry
            print(f"[{size} rank(s)] {name} {sizes} mbs {mbs}: {entry['epoch_seconds']:.3f} s/epoch, "
                  f"{entry['allreduce_share']:.0%} in Allreduce ({entry['allreduce_alone_us']:.0f} us per "
                  f"Allreduce of {buf.nbytes / 1e6:.2f} MB alone)"
                  + ("" if single is None else "; Network.sgd " + ", ".join(
                      f"{k} {v['median']:.3f} s" for k, v in single.items())), file=sys.stderr, flush=True)
    if rank == 0:
        import mpi4py
        import cbackprop
        out["mpi_library"] = MPI.Get_library_version().strip().splitlines()[0]
        out["mpi4py"] = mpi4py.__version__
        out["cbackprop"] = cbackprop.__version__
        out["kernels"] = Network([2, 2]).kernels
        return out
    return None


def launcher(args):
    """Run the worker under `mpiexec -n k` for every k of --ranks and merge the results."""
    mpiexec = args.mpiexec or str(Path(sys.executable).parent / "mpiexec")
    if not Path(mpiexec).exists():
        sys.exit(f"bench_mpi: error: no mpiexec at {mpiexec} (install the [mpi] extra or pass --mpiexec)")
    version = subprocess.run([mpiexec, "--version"], capture_output=True, text=True).stdout
    flags = ["--oversubscribe"] if "Open MPI" in version else []
    import cbackprop
    result = {**machine_header(cbackprop),
              "env": {k: v for k, v in sorted(os.environ.items())
                      if k.startswith(("OPENBLAS_", "OMP_", "CBACKPROP_", "MPIR_", "HYDRA_"))},
              "commands": [], "runs": {}}
    result["loadavg_before"] = os.getloadavg()
    for k in args.ranks:
        with tempfile.TemporaryDirectory() as d:
            part = Path(d) / "part.json"
            # (-m mpi4py: an uncaught exception on one rank aborts the job instead of hanging it)
            cmd = [mpiexec, *flags, "-n", str(k), sys.executable, "-m", "mpi4py", __file__, "--worker",
                   "--json", str(part),
                   "--n", str(args.n), "--dtype", args.dtype, "--repeats", str(args.repeats),
                   "--configs", ",".join(args.configs)]
            print("$ " + " ".join(cmd), file=sys.stderr, flush=True)
            busy0, mine0, t0 = busy_cpu_seconds(), children_cpu_seconds(), time.perf_counter()
            subprocess.run(cmd, check=True)
            wall = time.perf_counter() - t0
            other = (busy_cpu_seconds() - busy0) - (children_cpu_seconds() - mine0)
            result["commands"].append(" ".join(cmd))
            run = json.loads(part.read_text())
            run["wall_seconds"] = wall
            run["other_cpu_seconds"] = other   # CPU time other processes used meanwhile
            result["runs"][str(k)] = run
            print(f"   ({wall:.1f} s; other processes used {other:.1f} CPU s meanwhile"
                  f"{': figures skewed' if other > 0.1 * wall else ''})", file=sys.stderr, flush=True)
    result["loadavg_after"] = os.getloadavg()
    print(table(result))
    print(f"load average before {result['loadavg_before'][0]:.2f}, after {result['loadavg_after'][0]:.2f} "
          f"(1 min; other work on the machine skews these figures)")
    return result


def table(result):
    nan = float("nan")
    runs = result["runs"]
    lines = ["config  ranks  s/epoch  speed-up vs 1 rank  Allreduce share  (alone)  us/Allreduce  "
             "other CPU s / run wall s"]
    for name in next(iter(runs.values()))["configs"]:
        base = runs.get("1", {}).get("configs", {}).get(name)
        for k, run in runs.items():
            e = run["configs"][name]
            sp = f"{base['epoch_seconds'] / e['epoch_seconds']:.2f}x" if base else "-"
            lines.append(f"{name:<7} {k:>5}  {e['epoch_seconds']:7.3f}  {sp:>18}"
                         f"  {e['allreduce_share']:15.0%}"
                         f"  {e['allreduce_alone_share']:7.0%}  {e['allreduce_alone_us']:12.0f}"
                         f"  {run.get('other_cpu_seconds', nan):.1f} / {run.get('wall_seconds', nan):.1f}")
        if base and "network_sgd" in base:
            for t, v in base["network_sgd"].items():
                used = v.get("threads_used")
                how = "" if not used else f" (epochs finished on {used} threads" + (
                    f", feeder gathered {sum(v['fed_batches'])} batches)" if any(v.get("fed_batches") or ())
                    else ")")
                lines.append(f"{name:<7} Network.sgd {t}: {v['median']:.3f} s/epoch (no MPI){how}")
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--ranks", default=None, help="comma-separated rank counts: launch mpiexec -n k for each")
    p.add_argument("--mpiexec", default=None, help="the launcher (default: mpiexec next to this python)")
    p.add_argument("--configs", default="small,large", help=f"comma-separated from {list(CONFIGS)}")
    p.add_argument("--dtype", default="float64", choices=("float32", "float64"))
    p.add_argument("--n", type=int, default=N, help=f"training rows (default {N})")
    p.add_argument("--repeats", type=int, default=3, help="timed epochs after one warm-up (default 3)")
    p.add_argument("--json", default=None, help="write the results to this file")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.configs = [c for c in args.configs.split(",") if c]
    bad = [c for c in args.configs if c not in CONFIGS]
    if bad:
        p.error(f"unknown configs {bad}; choose from {list(CONFIGS)}")
    if args.ranks:
        args.ranks = [int(k) for k in args.ranks.split(",")]
        result = launcher(args)
    else:
        result = worker(args)
        if result is not None and not args.worker:
            print(json.dumps(result, indent=1))
    if result is not None and args.json:
        write_json(args.json, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
