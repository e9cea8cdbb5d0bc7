#!/usr/bin/env python3
"""What each way of running an sgd epoch gains on this machine: seconds per training epoch
of the same network run alone (one thread), with the feeder, as the hidden split and as
phases of tasks (the engine's plans, docs/guide/threads.md), and as the automatic policy
chooses; one network per plan, all on the same data in the same shuffled order.

    python benchmarks/bench_plans.py --json /tmp/bench_plans.json   # N1-N3, both dtypes
    python benchmarks/bench_plans.py --quick                        # 5,000 samples

Same conventions as bench.py (whose data, shuffle and environment helpers it imports):
interleaved repeats (round r starts at plan r mod P), median and min-max of wall seconds of
sgd, the ratio of each median to the one-thread median.  A plan that does not apply to a
network (the hidden split needs one hidden layer of at least two vectors of units per
thread) runs as the engine then runs it, and the table says which ran.
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench import (CONFIGS, DEFAULT_DATA, N_FULL, N_QUICK, SEED, BenchError,  # noqa: E402
                   _GivenPermutation, as_float, bench_env, epoch_permutations, import_cbackprop,
                   load_u8, machine_header, summarize, write_json)

PLANS = ("alone", "feed", "split", "tasks", "auto")
DTYPES = ("float32", "float64")


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--configs", default="N1,N2,N3", help="comma-separated subset of N1..N5")
    p.add_argument("--dtype", choices=["float32", "float64", "both"], default="both")
    p.add_argument("--repeats", type=int, default=7, help="timed epochs per plan (default 7)")
    p.add_argument("--threads", type=int, default=2, help="threads of the threaded plans")
    p.add_argument("--quick", action="store_true", help="5,000 samples per epoch")
    p.add_argument("--data", default=str(DEFAULT_DATA), help="mnist.npz")
    p.add_argument("--json", help="write the results as JSON")
    return p.parse_args(argv)


def run_config(cbackprop, name, dtype, X, Y, n, repeats, threads):
    sizes, mbs = CONFIGS[name]
    nets = {}
    for plan in PLANS:
        net = cbackprop.Network(sizes, dtype=dtype, seed=SEED)
        if plan != "auto":
            net.num_threads = 1 if plan == "alone" else threads
            net._engine.plan = plan
        nets[plan] = net
    ran = {plan: nets[plan]._engine.epoch_plan(mbs) for plan in PLANS}
    times = {plan: [] for plan in PLANS}
    for rnd, perm in enumerate(epoch_permutations(n, repeats + 1)):
        k = rnd % len(PLANS)
        for plan in PLANS[k:] + PLANS[:k]:
            net = nets[plan]
            net._rng = _GivenPermutation(perm)
            gc.collect()
            gc.disable()
            try:
                t0 = time.perf_counter()
                net.sgd(X, Y, 1, mbs, 0.5)
                t = time.perf_counter() - t0
            finally:
                gc.enable()
            if rnd:
                times[plan].append(t)
    base = float(summarize(times["alone"])["median"])
    out = {"sizes": sizes, "mini_batch_size": mbs, "plans": {}}
    for plan in PLANS:
        rec = summarize(times[plan])
        rec["ran"], rec["threads"] = ran[plan]
        rec["speed_up"] = base / rec["median"]
        out["plans"][plan] = rec
    return out


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else list(argv))
    configs = [c.strip() for c in args.configs.split(",") if c.strip()]
    bad = [c for c in configs if c not in CONFIGS]
    if bad or args.repeats < 1:
        raise BenchError(f"unknown config {bad} (configs {list(CONFIGS)}) or --repeats < 1")
    dtypes = list(DTYPES) if args.dtype == "both" else [args.dtype]
    n = N_QUICK if args.quick else N_FULL
    cbackprop, _, core = import_cbackprop()
    u8, labels, source = load_u8(args.data, n)
    meta = {**machine_header(cbackprop), "kernels": core.best_kernels(), "env": bench_env(),
            "n_samples": n, "repeats": args.repeats, "threads": args.threads, "data": source,
            "results": {}}
    print(f"# bench_plans {meta['date']}: {meta['cpu_model']}, {meta['cpus_allowed']} usable "
          f"cores, kernels {meta['kernels']}; {n:,} samples of {source} data per epoch, median "
          f"of {args.repeats} interleaved epochs (min-max); speed-up over one thread")
    for dtype in dtypes:
        X, Y = as_float(u8, labels, dtype)
        for name in configs:
            r = run_config(cbackprop, name, dtype, X, Y, n, args.repeats, args.threads)
            meta["results"].setdefault(dtype, {})[name] = r
            cells = [f"{plan} [{p['ran']}, {p['threads']}] {p['median']:.4f} ({p['min']:.4f}-"
                     f"{p['max']:.4f}) x{p['speed_up']:.2f}" for plan, p in r["plans"].items()]
            print(f"{name} {dtype} {r['sizes']} mini-batch {r['mini_batch_size']}: " + "; ".join(cells),
                  flush=True)
    if args.json:
        write_json(args.json, meta)
    return 0


if __name__ == "__main__":
    sys.exit(main())
