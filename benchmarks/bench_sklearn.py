#!/usr/bin/env python3
"""cbackprop.sklearn.MLPClassifier against sklearn.neural_network.MLPClassifier: fit time and
test accuracy on the embedded MNIST sample (10,000 training, 2,000 test images), same
hidden layers, solver, mini-batch size, learning rate, momentum, alpha and epochs.

    python benchmarks/bench_sklearn.py                       # 3 interleaved repeats
    python benchmarks/bench_sklearn.py --repeats 5 --json /tmp/bench_sklearn.json

Both estimators run solver="sgd" with learning_rate="constant", classical momentum
(nesterovs_momentum=False on scikit-learn's side), shuffle=True, tol=0 and n_iter_no_change
= max_iter, so that both train exactly max_iter epochs (checked), on x = u8/256 (the book's
inputs, no scaling).  scikit-learn computes in the dtype of X, so it runs on float64 and on
float32 copies; cbackprop in its dtype parameter.  "Network.sgd" is cbackprop's engine alone
on the same work (the same epochs, without the estimator's per-epoch training-loss pass;
network2's initialisation).  "1-thread" rows limit BLAS (threadpoolctl) and cbackprop to one
thread: on 2 busy cores OpenBLAS's threads can slow scikit-learn's small float64 products
down by 10x, so the speed-ups are against the fastest scikit-learn row.
Repeat r uses random_state=r for every implementation; the repeats are interleaved (round r
runs each implementation once) after one untimed warm-up fit each.  Reported: median and
min-max of the wall time of fit, of its process CPU time (for the 1-thread rows the work
done, which other processes on a shared machine disturb less than the wall time), of the
test accuracy, and CPU time / wall time (threads at work, or waits for a core).  Without "1-thread" the thread counts are the libraries' defaults
(OpenBLAS's for scikit-learn, cbackprop's automatic choice), printed in the header.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench import (BenchError, bench_env, import_cbackprop, machine_header, openblas_runtime,  # noqa: E402
                   summarize, write_json)

#: name -> the estimator parameters both libraries share.  S1: a ReLU layer of 100 with
#: scikit-learn's default mini-batch (200) and momentum; S2: the book's chapter-1 network
#: shape [784, 30, 10] with sigmoid hidden neurons and mini-batch 10 (softmax output).
CONFIGS = {
    "S1": dict(hidden_layer_sizes=(100,), activation="relu", batch_size=200, learning_rate_init=0.1,
               momentum=0.9, alpha=1e-4, max_iter=20),
    "S2": dict(hidden_layer_sizes=(30,), activation="logistic", batch_size=10, learning_rate_init=0.1,
               momentum=0.0, alpha=0.0, max_iter=10),
}
#: "<library> <dtype>[ 1-thread]": 1-thread limits every BLAS library in the process to one
#: thread (threadpoolctl) and cbackprop's epochs to one (CBACKPROP_NUM_THREADS=1).
IMPLS = ("sklearn float64", "sklearn float64 1-thread", "sklearn float32", "sklearn float32 1-thread",
         "cbackprop float32", "cbackprop float32 1-thread", "cbackprop float64", "Network.sgd float32")


def make_estimator(impl, params, seed):
    """(estimator-like object with fit(X, y) and score(X, y), dtype of its X)."""
    common = dict(params, shuffle=True, tol=0.0, n_iter_no_change=params["max_iter"], random_state=seed)
    lib, dtype = impl.split()[:2]
    if lib == "sklearn":
        from sklearn.neural_network import MLPClassifier
        return MLPClassifier(solver="sgd", learning_rate="constant", nesterovs_momentum=False, **common), dtype
    if lib == "Network.sgd":
        return EngineOnly(params, dtype, seed), dtype
    from cbackprop.sklearn import MLPClassifier
    return MLPClassifier(solver="sgd", nesterovs_momentum=False, dtype=dtype, **common), dtype


class EngineOnly:
    """Network.sgd alone on the work MLPClassifier's fit does: the same layers, mini-batch,
    eta, lmbda = alpha n / batch_size, momentum and epochs, in one call, without the
    estimator's per-epoch loss pass (network2's initialisation, seeded by random_state)."""

    def __init__(self, params, dtype, seed):
        self.params, self.dtype, self.seed = params, dtype, seed

    def fit(self, X, y):
        import cbackprop
        p = self.params
        hidden = {"relu": "relu", "logistic": "sigmoid", "tanh": "tanh", "identity": "identity"}[p["activation"]]
        sizes = [X.shape[1], *p["hidden_layer_sizes"], 10]
        self.net = cbackprop.Network(sizes, activations=[hidden] * (len(sizes) - 2) + ["softmax"],
                                     cost="log-likelihood", init="default", dtype=self.dtype, seed=self.seed)
        self.Y = np.eye(10, dtype=self.dtype)[y]          # (built before the timing starts)
        return self

    def train(self, X):
        p, n = self.params, X.shape[0]
        history = self.net.sgd(X, self.Y, p["max_iter"], p["batch_size"], p["learning_rate_init"],
                               lmbda=p["alpha"] * n / p["batch_size"], mu=p["momentum"])
        self.n_iter_ = len(history)

    def score(self, X, y):
        return self.net.evaluate(X, y) / X.shape[0]


@contextlib.contextmanager
def thread_limit(impl):
    """One thread for BLAS and cbackprop's epochs for "... 1-thread", else the defaults."""
    if not impl.endswith("1-thread"):
        yield
        return
    from threadpoolctl import threadpool_limits
    saved = os.environ.get("CBACKPROP_NUM_THREADS")
    os.environ["CBACKPROP_NUM_THREADS"] = "1"        # (read when a network is created)
    try:
        with threadpool_limits(1):
            yield
    finally:
        if saved is None:
            del os.environ["CBACKPROP_NUM_THREADS"]
        else:
            os.environ["CBACKPROP_NUM_THREADS"] = saved


def run_once(impl, params, seed, data):
    """(wall seconds, cpu seconds, test accuracy, epochs) of one fit."""
    est, dtype = make_estimator(impl, params, seed)
    X, y, X_test, y_test = data[dtype]
    with warnings.catch_warnings(), thread_limit(impl):
        warnings.simplefilter("ignore")          # ConvergenceWarning: max_iter is reached on purpose
        if isinstance(est, EngineOnly):
            est.fit(X, y)                         # (set-up, not timed)
            wall, cpu = time.perf_counter(), time.process_time()
            est.train(X)
        else:
            wall, cpu = time.perf_counter(), time.process_time()
            est.fit(X, y)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    if est.n_iter_ != params["max_iter"]:
        raise BenchError(f"{impl} trained {est.n_iter_} epochs, not max_iter={params['max_iter']}")
    if impl.startswith("cbackprop") and impl.endswith("1-thread") and est.network_.num_threads != 1:
        raise BenchError(f"{impl} ran on {est.network_.num_threads} threads")
    return wall, cpu, float(est.score(X_test, y_test)), est.n_iter_


def run_config(name, params, data, repeats, impls):
    for impl in impls:                            # warm-up: one untimed epoch each
        run_once(impl, dict(params, max_iter=1, n_iter_no_change=1), 0, data)
    raw = {impl: {"wall": [], "cpu": [], "accuracy": []} for impl in impls}
    for r in range(repeats):
        for impl in impls:
            wall, cpu, acc, _ = run_once(impl, params, r, data)
            raw[impl]["wall"].append(wall)
            raw[impl]["cpu"].append(cpu)
            raw[impl]["accuracy"].append(acc)
            print(f"#   {name} round {r + 1}: {impl:20s} {wall:7.3f} s  accuracy {acc:.4f}", flush=True)
    return {impl: {"fit_seconds": summarize(v["wall"]), "cpu_seconds": summarize(v["cpu"]),
                   "accuracy": summarize(v["accuracy"]),
                   "cpu_over_wall": float(np.median(np.array(v["cpu"]) / np.array(v["wall"])))}
            for impl, v in raw.items()}


def format_table(name, params, results):
    def fastest_sklearn(key):
        times = [r[key]["median"] for impl, r in results.items() if impl.startswith("sklearn")]
        return min(times) if times else None

    wall0, cpu0 = fastest_sklearn("fit_seconds"), fastest_sklearn("cpu_seconds")
    lines = [f"{name}: hidden {params['hidden_layer_sizes']} {params['activation']}, batch {params['batch_size']}, "
             f"learning_rate_init {params['learning_rate_init']}, momentum {params['momentum']}, alpha "
             f"{params['alpha']}, {params['max_iter']} epochs",
             "", "| implementation | fit s, median (min-max) | speed-up | CPU s, median (min-max) | speed-up (CPU) "
             "| CPU/wall | test accuracy, median (min-max) |", "|---|---|---|---|---|---|---|"]
    for impl, r in results.items():
        t, c, a = r["fit_seconds"], r["cpu_seconds"], r["accuracy"]
        speed = f"{wall0 / t['median']:.1f}x" if wall0 else "-"
        speed_cpu = f"{cpu0 / c['median']:.1f}x" if cpu0 else "-"
        lines.append(f"| {impl} | {t['median']:.3f} ({t['min']:.3f}-{t['max']:.3f}) | {speed} | "
                     f"{c['median']:.3f} ({c['min']:.3f}-{c['max']:.3f}) | {speed_cpu} | {r['cpu_over_wall']:.2f} | "
                     f"{a['median']:.4f} ({a['min']:.4f}-{a['max']:.4f}) |")
    lines.append("")
    lines.append("(speed-ups: against the fastest scikit-learn row's median)")
    return "\n".join(lines)


def lscpu_model():
    """lscpu's "Model name" (what the virtual machine reports), or None."""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return next((ln.split(":", 1)[1].strip() for ln in out.splitlines() if ln.startswith("Model name")), None)


def load_data():
    from cbackprop.datasets import load_sample
    (X, y), (X_test, y_test) = load_sample()
    y, y_test = y.astype(np.int64), y_test.astype(np.int64)
    return {dt: (np.ascontiguousarray(X, dtype=dt), y, np.ascontiguousarray(X_test, dtype=dt), y_test)
            for dt in ("float32", "float64")}


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeats", type=int, default=3, help="timed fits per implementation (default 3)")
    p.add_argument("--configs", default=",".join(CONFIGS), help=f"comma-separated, from {list(CONFIGS)}")
    p.add_argument("--impls", default=",".join(IMPLS), help=f"comma-separated, from {list(IMPLS)}")
    p.add_argument("--json", help="also write the results to this JSON file")
    args = p.parse_args(argv)
    args.configs, args.impls = args.configs.split(","), args.impls.split(",")
    bad = [c for c in args.configs if c not in CONFIGS] + [i for i in args.impls if i not in IMPLS]
    if bad:
        raise BenchError(f"unknown config or implementation {bad}; configs {list(CONFIGS)}, impls {list(IMPLS)}")
    if args.repeats < 1:
        raise BenchError("--repeats must be >= 1")
    return args


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    cbackprop, _, _ = import_cbackprop()
    import sklearn
    data = load_data()
    probe = cbackprop.Network([784, 30, 10], dtype=np.float32)
    meta = {**machine_header(cbackprop), "lscpu_model": lscpu_model(), "sklearn_version": sklearn.__version__,
            "loadavg_before": list(os.getloadavg()), "env": bench_env(), "openblas": openblas_runtime(),
            "cbackprop_num_threads": probe.num_threads, "cbackprop_kernels": probe.kernels,
            "repeats": args.repeats, "configs": {c: CONFIGS[c] for c in args.configs}}
    print(f"# bench_sklearn {meta['date']}: {meta['cpu_model']} (lscpu: {meta['lscpu_model']}), "
          f"{meta['cpus_allowed']} cpus, load average "
          f"{meta['loadavg_before']}; python {meta['python']}, numpy {np.__version__}, scikit-learn "
          f"{sklearn.__version__}, cbackprop {meta['cbackprop_version']} (kernels {probe.kernels}, "
          f"num_threads {probe.num_threads}), OpenBLAS {meta['openblas']}")
    print(f"# env: {' '.join(f'{k}={v}' for k, v in meta['env'].items()) or '(none)'}")
    t0 = time.perf_counter()
    meta["results"] = {}
    for name in args.configs:
        meta["results"][name] = run_config(name, CONFIGS[name], data, args.repeats, args.impls)
        print()
        print(format_table(name, CONFIGS[name], meta["results"][name]), flush=True)
        print()
    meta["wall_seconds"] = time.perf_counter() - t0
    meta["loadavg_after"] = list(os.getloadavg())
    print(f"# wall time {meta['wall_seconds']:.0f} s; load average after {meta['loadavg_after']}")
    if args.json:
        write_json(args.json, meta)
    return 0


if __name__ == "__main__":
    sys.exit(main())
