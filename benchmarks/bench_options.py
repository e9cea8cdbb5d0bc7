#!/usr/bin/env python3
"""What each chapter-3 option of cbackprop's C path costs, relative to the default network
(sigmoid layers, quadratic cost, no weight decay, no momentum): seconds per training epoch
of one network per option, all on the same data in the same shuffled order.

    python benchmarks/bench_options.py --json /tmp/bench_options.json   # the full run
    python benchmarks/bench_options.py --quick                          # 5,000 samples

Same conventions as bench.py (whose data, shuffle and environment helpers it imports): x =
train_x u8/256 of ../shared/data/mnist.npz with one-hot targets (a synthetic array, with a
message on stderr, when the file is absent), permutations from np.random.default_rng(0)
(the first for the untimed warm-up epoch), interleaved repeats, median and min-max.  See
benchmarks/README.md, "Cost of the chapter-3 options".
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench import (CONFIGS as BENCH_CONFIGS, DEFAULT_DATA, N_FULL, N_QUICK, SEED,  # noqa: E402
                   BenchError, _GivenPermutation, as_float, bench_env, epoch_permutations,
                   import_cbackprop, load_u8, machine_header, summarize, write_json)

CONFIG_NAMES = ("N1", "N5")
DTYPES = ("float32", "float64")
DEFAULT_VARIANT = "default"

#: name -> (hidden activation, output activation, cost, eta, lmbda, mu, init).  eta does not
#: change the work per epoch; it is chosen so that no variant diverges (non-finite values
#: would take other arithmetic paths).
VARIANTS = {
    "default":            ("sigmoid", "sigmoid", "quadratic", 3.0, 0.0, 0.0, "large"),
    "hidden tanh":        ("tanh", "sigmoid", "quadratic", 0.5, 0.0, 0.0, "large"),
    "hidden relu":        ("relu", "sigmoid", "quadratic", 0.5, 0.0, 0.0, "large"),
    "hidden identity":    ("identity", "sigmoid", "quadratic", 0.5, 0.0, 0.0, "large"),
    "softmax+quadratic":  ("sigmoid", "softmax", "quadratic", 0.5, 0.0, 0.0, "large"),
    "cross-entropy":      ("sigmoid", "sigmoid", "cross-entropy", 0.5, 0.0, 0.0, "large"),
    "softmax+log-lik":    ("sigmoid", "softmax", "log-likelihood", 0.5, 0.0, 0.0, "large"),
    "lmbda=5":            ("sigmoid", "sigmoid", "quadratic", 3.0, 5.0, 0.0, "large"),
    "mu=0.5":             ("sigmoid", "sigmoid", "quadratic", 3.0, 0.0, 0.5, "large"),
    "lmbda=5+mu=0.5":     ("sigmoid", "sigmoid", "quadratic", 3.0, 5.0, 0.5, "large"),
    "init=default":       ("sigmoid", "sigmoid", "quadratic", 3.0, 0.0, 0.0, "default"),
}


class VariantRunner:
    """One network of one variant.  run(perm) trains one epoch with net.sgd(X, Y, 1, mbs,
    eta, lmbda=, mu=) in the order perm and returns (sgd's seconds, wall seconds of the C
    epoch call alone, CPU seconds of this process during that call).  sgd's time includes
    the shuffle, the per-epoch parameter snapshot and the finiteness check; the inner times
    are those of net._epoch, measured by a wrapper.  The CPU time (time.process_time: every
    thread of this process) leaves out the time the epoch's thread(s) waited for a core,
    which on a busy shared machine is most of the noise of the wall time."""

    def __init__(self, cbackprop, name, sizes, dtype, X, Y, mbs, threads):
        hidden, out, cost, eta, lmbda, mu, init = VARIANTS[name]
        self.name = name
        self.activations = [hidden] * (len(sizes) - 2) + [out]
        self.cost, self.eta, self.lmbda, self.mu, self.init = cost, eta, lmbda, mu, init
        self.net = cbackprop.Network(sizes, activations=self.activations, cost=cost, init=init,
                                     dtype=dtype, seed=SEED)
        if threads is not None:
            self.net.num_threads = threads
        self.X, self.Y, self.mbs = X, Y, mbs
        self.inner = self.inner_cpu = None
        self.threads_used = []
        self.error = None
        epoch = self.net._epoch                     # the bound method sgd calls

        def timed_epoch(*args):
            c0, t0 = time.process_time(), time.perf_counter()
            epoch(*args)
            self.inner = time.perf_counter() - t0
            self.inner_cpu = time.process_time() - c0
        self.net._epoch = timed_epoch               # (an instance attribute shadows the method)

    def run(self, perm):
        self.net._rng = _GivenPermutation(perm)     # the shared shuffle instead of its own
        gc.collect()
        gc.disable()
        try:
            hist = self.net.sgd(self.X, self.Y, 1, self.mbs, self.eta, lmbda=self.lmbda, mu=self.mu)
        finally:
            gc.enable()
        self.threads_used.append(getattr(self.net._engine, "last_epoch_threads", None))
        return hist[0]["seconds"], self.inner, self.inner_cpu

    def finite(self):
        return all(bool(np.isfinite(p).all()) for p in self.net.weights + self.net.biases)

    def max_abs_param(self):
        return max(float(np.abs(p).max()) for p in self.net.weights + self.net.biases)


def run_config(cbackprop, name, dtype, X, Y, n, variants, repeats, settle, threads):
    """Warm-up round, then `repeats` rounds; round r runs every variant once, starting at
    variant r mod V (the order rotates so that no variant always follows the same one)."""
    sizes, mbs = BENCH_CONFIGS[name]
    runners = {v: VariantRunner(cbackprop, v, sizes, dtype, X, Y, mbs, threads) for v in variants}
    perms = epoch_permutations(n, repeats + 1)
    times = {v: [] for v in variants}
    inner = {v: [] for v in variants}
    cpu = {v: [] for v in variants}
    order = list(variants)
    for rnd, perm in enumerate(perms):
        print(f"# {dtype} {name}: {'warm-up' if rnd == 0 else f'round {rnd}/{repeats}'}",
              file=sys.stderr, flush=True)
        k = rnd % len(order)
        for v in order[k:] + order[:k]:
            r = runners[v]
            if r.error:
                continue
            if settle:
                time.sleep(settle)
            try:
                t, ti, tc = r.run(perm)
            except FloatingPointError as exc:       # sgd's own finiteness check
                r.error = f"diverged in round {rnd}: {exc}"
                print(f"bench_options: WARNING: {dtype} {name} {v}: {r.error}", file=sys.stderr)
                continue
            if rnd:
                times[v].append(t)
                inner[v].append(ti)
                cpu[v].append(tc)
    entry = {"sizes": list(sizes), "mini_batch_size": mbs, "n_batches": -(-n // mbs),
             "threads_used": sorted({u for r in runners.values() for u in r.threads_used[1:]
                                     if u is not None}),
             "variants": {}}
    base = times.get(DEFAULT_VARIANT)
    for v in variants:
        r = runners[v]
        rec = {"activations": r.activations, "cost": r.cost, "init": r.init, "eta": r.eta,
               "lmbda": r.lmbda, "mu": r.mu, "finite": r.finite() and r.error is None,
               "max_abs_param": r.max_abs_param(), "threads_used": r.threads_used}
        if r.error:
            rec["error"] = r.error
        if len(times[v]) == repeats:
            rec.update(summarize(times[v]))
            rec["inner"] = summarize(inner[v])
            rec["cpu"] = summarize(cpu[v])
            rec["sgd_overhead_median"] = float(np.median(np.subtract(times[v], inner[v])))
            if base is not None and len(base) == repeats:
                rec["ratio"] = rec["median"] / float(np.median(base))
                paired = np.divide(times[v], base)   # same round, same permutation
                rec["paired_ratio"] = {"median": float(np.median(paired)), "min": float(paired.min()),
                                       "max": float(paired.max())}
                rec["cpu"]["ratio"] = rec["cpu"]["median"] / float(np.median(cpu[DEFAULT_VARIANT]))
        entry["variants"][v] = rec
    return entry


def unit_label(n):
    return "s/epoch of 50,000 samples" if n == N_FULL else f"s per {n:,} samples [quick]"


def format_table(name, dtype, entry, n, data_source):
    lines = [f"{name} {entry['sizes']} mini-batch {entry['mini_batch_size']}, {dtype}, {data_source} data, "
             f"{n:,} samples = {entry['n_batches']:,} mini-batches, sgd epochs finished on "
             f"{entry['threads_used']} thread(s); {unit_label(n)}",
             f"  {'variant':18} {'eta':>4} {'wall median':>11} {'(min - max)':>19} {'noise':>6} {'ratio':>6} "
             f"{'paired min-max':>15} | {'cpu median':>10} {'noise':>6} {'ratio':>6} {'wall/cpu':>8} "
             f"| {'sgd-_epoch':>10}"]
    for v, r in entry["variants"].items():
        if "median" not in r:
            lines.append(f"  {v:18} {r['eta']:4g} {r.get('error', 'no result')}")
            continue
        pr, c = r.get("paired_ratio"), r["cpu"]
        ratio = f"{r['ratio']:6.3f}" if "ratio" in r else f"{'-':>6}"
        cratio = f"{c['ratio']:6.3f}" if "ratio" in c else f"{'-':>6}"
        prs = f"{pr['min']:.3f} - {pr['max']:.3f}" if pr else "-"
        flag = "" if r["finite"] else "  NON-FINITE"
        lines.append(f"  {v:18} {r['eta']:4g} {r['median']:11.4f} ({r['min']:8.4f} - {r['max']:7.4f}) "
                     f"{r['noise']:6.1%} {ratio} {prs:>15} | {c['median']:10.4f} {c['noise']:6.1%} {cratio} "
                     f"{r['inner']['median'] / c['median']:8.2f} | {r['sgd_overhead_median'] * 1e3:7.2f} ms{flag}")
    return "\n".join(lines)


def format_summary(results):
    cols = [(d, c) for d, cfgs in results.items() for c in cfgs]
    variants = []
    for d, c in cols:
        for v in results[d][c]["variants"]:
            if v not in variants:
                variants.append(v)
    out = ["ratio to default, same run: wall = median sgd seconds / default's; cpu = the same with the "
           "process CPU seconds of net._epoch",
           f"  {'variant':18} " + " ".join(f"{d + ' ' + c:>19}" for d, c in cols),
           f"  {'':18} " + " ".join(f"{'wall':>9} {'cpu':>9}" for _ in cols)]
    for v in variants:
        cells = []
        for d, c in cols:
            r = results[d][c]["variants"].get(v, {})
            w = f"{r['ratio']:9.3f}" if "ratio" in r else f"{'-':>9}"
            k = f"{r['cpu']['ratio']:9.3f}" if "ratio" in r.get("cpu", {}) else f"{'-':>9}"
            cells.append(f"{w} {k}")
        out.append(f"  {v:18} " + " ".join(cells))
    return "\n".join(out)


def parse_args(argv):
    p = argparse.ArgumentParser(
        prog="bench_options.py", description="Seconds per epoch of each chapter-3 option of "
        "cbackprop's C path relative to the default network (see benchmarks/README.md).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--dtype", choices=("float32", "float64", "both"), default="both")
    p.add_argument("--configs", default=",".join(CONFIG_NAMES),
                   help=f"comma-separated subset of {','.join(BENCH_CONFIGS)}")
    p.add_argument("--variants", default=None,
                   help=f"comma-separated subset of: {', '.join(VARIANTS)} (default all; "
                   f"'{DEFAULT_VARIANT}' is always run, as every ratio uses it)")
    p.add_argument("--repeats", type=int, default=5, help="timed epochs per variant, after one untimed warm-up")
    p.add_argument("--quick", action="store_true",
                   help=f"{N_QUICK:,} samples per epoch instead of {N_FULL:,}; times are per {N_QUICK:,} samples")
    p.add_argument("--threads", type=int, default=None,
                   help="net.num_threads for every network (default: cbackprop's default, "
                   "CBACKPROP_NUM_THREADS or the automatic count, with the feeder thread)")
    p.add_argument("--settle", type=float, default=0.05, metavar="SECONDS",
                   help="pause before each timed epoch")
    p.add_argument("--data", default=str(DEFAULT_DATA), help="mnist.npz (synthetic data when absent)")
    p.add_argument("--json", default=None, metavar="PATH", help="write all results as JSON")
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else list(argv))
    dtypes = list(DTYPES) if args.dtype == "both" else [args.dtype]
    configs = [c.strip() for c in args.configs.split(",") if c.strip()]
    variants = list(VARIANTS) if not args.variants else [v.strip() for v in args.variants.split(",") if v.strip()]
    bad = [c for c in configs if c not in BENCH_CONFIGS] + [v for v in variants if v not in VARIANTS]
    if bad:
        raise BenchError(f"unknown config or variant {bad}; configs {list(BENCH_CONFIGS)}, "
                         f"variants {list(VARIANTS)}")
    if DEFAULT_VARIANT in variants:
        variants.remove(DEFAULT_VARIANT)
    variants.insert(0, DEFAULT_VARIANT)
    if args.repeats < 1:
        raise BenchError("--repeats must be >= 1")
    if args.threads is not None and not 1 <= args.threads <= 64:
        raise BenchError("--threads must lie in [1, 64]")
    n = N_QUICK if args.quick else N_FULL

    cbackprop, _, core = import_cbackprop()
    u8, labels, data_source = load_u8(args.data, n)
    meta = {
        **machine_header(cbackprop),
        "loadavg_before": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "kernels": core.best_kernels(),
        "env": bench_env(),
        "quick": args.quick,
        "n_samples": n,
        "repeats": args.repeats,
        "settle_seconds": args.settle,
        "threads": args.threads,
        "cbackprop_default_num_threads": getattr(core, "default_num_threads", lambda: 1)(),
        "timed": "net.sgd(X, Y, 1, mbs, eta, lmbda=, mu=) -> history[0]['seconds']; 'inner' is net._epoch "
                 "alone (wall), 'cpu' the process CPU time (time.process_time) of net._epoch",
        "data": data_source,
        "data_path": str(Path(args.data).resolve()) if data_source == "mnist" else None,
        "variants": {v: dict(zip(("hidden", "output", "cost", "eta", "lmbda", "mu", "init"), VARIANTS[v]))
                     for v in variants},
    }
    print(f"# bench_options {meta['date']} on {meta['hostname']}: {meta['cpu_model']}, "
          f"{meta['cpus_allowed']} cpus, load average {meta['loadavg_before']}; python {meta['python']}, "
          f"numpy {np.__version__}, cbackprop {meta['cbackprop_version']} (kernels {meta['kernels']}), "
          f"git {str(meta['git']['commit'])[:10]}{' dirty' if meta['git']['dirty'] else ''}")
    print(f"# env: {' '.join(f'{k}={v}' for k, v in meta['env'].items()) or '(none)'}")
    print(f"# data: {data_source}, {n:,} samples per epoch{' [QUICK]' if args.quick else ''}; "
          f"{args.repeats} timed epochs per variant after one untimed warm-up, interleaved; timed: "
          f"net.sgd(...)'s history[0]['seconds'] (wall); cpu: process CPU seconds of net._epoch; "
          f"wall/cpu: net._epoch's wall / CPU time (> 1: waited for a core); sgd-_epoch: median "
          f"time of sgd outside net._epoch")
    t_start = time.perf_counter()
    results = {}
    for dtype in dtypes:
        X, Y = as_float(u8, labels, dtype)
        results[dtype] = {}
        for name in configs:
            entry = run_config(cbackprop, name, dtype, X, Y, n, variants, args.repeats, args.settle,
                               args.threads)
            results[dtype][name] = entry
            print()
            print(format_table(name, dtype, entry, n, data_source), flush=True)
    meta["results"] = results
    meta["wall_seconds"] = time.perf_counter() - t_start
    meta["loadavg_after"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    print()
    print(format_summary(results))
    bad = [(d, c, v) for d, cfgs in results.items() for c, e in cfgs.items()
           for v, r in e["variants"].items() if not r["finite"]]
    if bad:
        print(f"# WARNING: non-finite parameters (diverged): {bad}")
    else:
        print("# every network's parameters stayed finite")
    print(f"# wall time {meta['wall_seconds']:.0f} s; load average after {meta['loadavg_after']}")
    if args.json:
        write_json(args.json, meta)
    return 0


if __name__ == "__main__":
    sys.exit(main())
