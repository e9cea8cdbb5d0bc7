#!/usr/bin/env python3
"""Benchmark harness for cbackprop: seconds per training epoch on MNIST for the C path and
for NumPy baselines of the same algorithm, on the same data and the same shuffled order.

    python benchmarks/bench.py --json benchmarks/results/<name>.json    # the full run
    python benchmarks/bench.py --quick --dtype float32                  # a smoke run
    python benchmarks/bench.py --compare benchmarks/results/main.json   # regression check

See benchmarks/README.md for what the columns mean, the FLOP formula and the caveats.

Importing this module has no side effects (it imports only the standard library and NumPy;
cbackprop and torch are imported inside main()), so `compare_results` can be tested alone.
"""
from __future__ import annotations

import argparse
import datetime
import gc
import json
import math
import os
import platform
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

# ---------------------------------------------------------------------------------------------
# What is measured
# ---------------------------------------------------------------------------------------------

#: name -> (sizes, mini-batch size)
CONFIGS = {
    "N1": ([784, 30, 10], 10),
    "N2": ([784, 100, 10], 10),
    "N3": ([784, 30, 10], 100),
    "N4": ([784, 1024, 1024, 10], 128),
    "N5": ([784, 256, 256, 10], 32),
}
#: configs whose multiply-add ceiling is the both-cores one (those the automatic thread count
#: trains on every core); the others' is one core's, unless most of cbackprop's timed epochs
#: ran on two or more threads (N1-N3 on two, when that measured faster than the feeder)
BOTH_CORES_CONFIGS = ("N4", "N5")
ETA = 3.0
SEED = 0                 # network initialisation (cbackprop's convention) and shuffles
N_FULL = 50_000          # samples per epoch
N_QUICK = 5_000          # samples per "epoch" with --quick
NETPY_SAMPLES = 2_000    # network.py-loop runs on this many samples and is extrapolated
SYNTHETIC_SEED = 12345
DTYPES = ("float32", "float64")

IMPLS = ("cbackprop", "cbackprop-1thread", "cbackprop-pyloop", "numpy", "reference", "torch",
         "network.py-loop")
BASELINE_IMPL = "numpy"
ENV_PREFIXES = ("OPENBLAS_", "OMP_", "GOMP_", "MKL_", "BLIS_", "GOTO_", "CBACKPROP_", "KMP_")
UNSET_VARS = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
REEXEC_MARK = "CBP_BENCH_UNSET_FROM"

REPO = Path(__file__).resolve().parent.parent
DEFAULT_DATA = REPO.parent / "shared" / "data" / "mnist.npz"


class BenchError(SystemExit):
    """A usage or environment error: message on stderr, exit status 2 (1 means regression)."""

    def __init__(self, msg):
        print(f"bench: error: {msg}", file=sys.stderr)
        super().__init__(2)


def write_json(path, meta):
    """Write meta as JSON to path: to PATH.tmp first, then renamed (never half-written)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(meta, indent=1) + "\n")
    os.replace(tmp, path)
    print(f"# wrote {path}")


def flops_per_sample(sizes):
    """2 sum_l n_l n_{l-1} (forward) + 2 sum_l n_l n_{l-1} (nabla_w, BP4)
    + 2 sum_{l>=2} n_l n_{l-1} (BP2).  Multiply-adds of the matrix products only."""
    prods = [a * b for a, b in zip(sizes[:-1], sizes[1:])]
    return 2 * sum(prods) + 2 * sum(prods) + 2 * sum(prods[1:])


def init_params(sizes, dtype, seed=SEED):
    """cbackprop's (and network.py's) initialisation: N(0, 1) drawn in float64 from
    np.random.default_rng(seed), first every layer's biases, then every layer's weights,
    then cast.  Returns (weights, biases), w^l shaped (n_l, n_{l-1})."""
    rng = np.random.default_rng(seed)
    biases = [rng.standard_normal(n) for n in sizes[1:]]
    weights = [rng.standard_normal((n, p)) for p, n in zip(sizes[:-1], sizes[1:])]
    return [w.astype(dtype) for w in weights], [b.astype(dtype) for b in biases]


def epoch_permutations(n, count, seed=SEED):
    """The shuffles every implementation uses: count permutations drawn one after the other
    from np.random.default_rng(seed); [0] is the warm-up epoch, [1:] the timed ones."""
    rng = np.random.default_rng(seed)
    return [rng.permutation(n) for _ in range(count)]


def summarize(times):
    """median, min, max and noise = (max - min) / median of a list of seconds."""
    med = float(np.median(times))
    lo, hi = float(min(times)), float(max(times))
    return {"median": med, "min": lo, "max": hi, "noise": (hi - lo) / med if med > 0 else float("nan"),
            "times": [float(t) for t in times]}


# ---------------------------------------------------------------------------------------------
# Regression comparison (pure: no benchmark is run)
# ---------------------------------------------------------------------------------------------

def _cbackprop_speedup(entry):
    try:
        s = float(entry["impls"]["cbackprop"]["speedup"])
    except (KeyError, TypeError, ValueError):
        return None
    return s if math.isfinite(s) and s > 0 else None


def compare_results(baseline, current, margin=0.25):
    """Compare cbackprop's same-run speed-up over the numpy baseline (numpy median /
    cbackprop median) between two result dicts as written by --json.

    For every (dtype, config) of baseline["results"] that has a cbackprop speed-up, one row
    {"dtype", "config", "baseline", "current", "change", "status"}: change is
    current / baseline - 1; status is "REGRESSION" when current < baseline * (1 - margin)
    (a fall of more than `margin`, relative), "missing" when the current results lack that
    speed-up (also a failure), "improved" when current > baseline * (1 + margin), else "ok".
    Returns (rows, ok) with ok False when any row is a regression or missing.
    """
    margin = float(margin)
    if not 0 <= margin < 1:
        raise ValueError(f"margin must lie in [0, 1), got {margin}")
    rows, ok = [], True
    cur_results = (current or {}).get("results") or {}
    for dtype, configs in sorted((baseline.get("results") or {}).items()):
        for config, entry in sorted(configs.items()):
            base = _cbackprop_speedup(entry)
            if base is None:
                continue
            cur = _cbackprop_speedup((cur_results.get(dtype) or {}).get(config))
            row = {"dtype": dtype, "config": config, "baseline": base, "current": cur,
                   "change": None if cur is None else cur / base - 1}
            if cur is None:
                row["status"] = "missing"
            elif cur < base * (1 - margin):
                row["status"] = "REGRESSION"
            elif cur > base * (1 + margin):
                row["status"] = "improved"
            else:
                row["status"] = "ok"
            ok = ok and row["status"] not in ("missing", "REGRESSION")
            rows.append(row)
    return rows, ok


def format_comparison(rows, margin):
    out = [f"cbackprop speed-up over numpy (same run), baseline vs now; regression = a fall of "
           f"more than {margin:.0%}",
           f"{'dtype':8} {'config':6} {'baseline':>9} {'now':>9} {'change':>8}  status"]
    for r in rows:
        cur = "-" if r["current"] is None else f"{r['current']:.2f}x"
        chg = "-" if r["change"] is None else f"{r['change']:+.1%}"
        out.append(f"{r['dtype']:8} {r['config']:6} {r['baseline']:8.2f}x {cur:>9} {chg:>8}  {r['status']}")
    return "\n".join(out)


# ---------------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------------

def load_u8(path, n):
    """(u8 images [n, 784], labels [n], source) from mnist.npz; a fixed-seed synthetic array
    of the same shape, with a clear message on stderr, when the file is absent."""
    path = Path(path)
    if path.is_file():
        with np.load(path) as d:
            x, y = d["train_x"], d["train_y"]
        if x.shape[0] < n:
            raise BenchError(f"{path} has {x.shape[0]} training rows, need {n}")
        return np.ascontiguousarray(x[:n]), np.asarray(y[:n], dtype=np.int64), "mnist"
    print(f"bench: WARNING: MNIST not found at {path}; using a SYNTHETIC uint8 array of the same "
          f"shape (default_rng({SYNTHETIC_SEED})). Times are labelled 'synthetic'.", file=sys.stderr)
    rng = np.random.default_rng(SYNTHETIC_SEED)
    x = rng.integers(0, 256, size=(N_FULL, 784), dtype=np.uint8)
    y = rng.integers(0, 10, size=N_FULL)
    return x[:n].copy(), y[:n].copy(), "synthetic"


def as_float(u8, labels, dtype, n_out=10):
    """The book's values x = u8/256 and one-hot targets, in dtype, C-contiguous."""
    dt = np.dtype(dtype)
    X = u8.astype(dt) / dt.type(256)
    Y = np.zeros((u8.shape[0], n_out), dtype=dt)
    Y[np.arange(u8.shape[0]), labels] = 1
    return np.ascontiguousarray(X), Y


# ---------------------------------------------------------------------------------------------
# Implementations.  Each runner: run(perm) -> seconds of one epoch in the order perm.
# ---------------------------------------------------------------------------------------------

def _timed(fn, *args):
    gc.collect()
    gc.disable()
    try:
        t0 = time.perf_counter()
        fn(*args)
        return time.perf_counter() - t0
    finally:
        gc.enable()


class _GivenPermutation:
    """Stands in for a network's generator so that sgd shuffles in the order given."""

    def __init__(self, perm):
        self.perm = perm

    def permutation(self, n):
        if n != len(self.perm):
            raise RuntimeError(f"sgd asked for a permutation of {n}, bench has {len(self.perm)}")
        return self.perm


class CbackpropRunner:
    """(a) net.sgd(X, Y, 1, mbs, eta), the time sgd reports (shuffle + one C call)."""

    def __init__(self, cbackprop, sizes, dtype, X, Y, mbs, eta):
        self.net = cbackprop.Network(sizes, dtype=dtype, seed=SEED)
        self.X, self.Y, self.mbs, self.eta = X, Y, mbs, eta
        self.threads_used = []
        self.fed = []
        self.split = []

    def run(self, perm):
        self.net._rng = _GivenPermutation(perm)   # the shared shuffle instead of its own
        gc.collect()
        gc.disable()
        try:
            hist = self.net.sgd(self.X, self.Y, 1, self.mbs, self.eta)
        finally:
            gc.enable()
        # the threads that finished this epoch (automatic thread counts decide per network),
        # the mini-batches a feeder thread gathered for a one-thread epoch, and whether the
        # threads split the hidden layer
        engine = getattr(self.net, "_engine", None)
        self.threads_used.append(getattr(engine, "last_epoch_threads", None))
        self.fed.append(getattr(engine, "last_epoch_fed", None))
        self.split.append(getattr(engine, "last_epoch_split", None))
        return hist[0]["seconds"]

    def params(self):
        return self.net.weights, self.net.biases


class OneThreadRunner(CbackpropRunner):
    """(a') as (a) with net.num_threads = 1: the epoch on the calling thread only."""

    def __init__(self, *args):
        super().__init__(*args)
        if not hasattr(self.net, "num_threads"):
            raise AttributeError("this cbackprop has no Network.num_threads")
        self.net.num_threads = 1


class PyloopRunner(CbackpropRunner):
    """(b) update_mini_batch once per mini-batch from Python, over slices of X[perm] that are
    gathered (and sliced) before the clock starts."""

    gather_seconds = None

    def run(self, perm):
        t0 = time.perf_counter()
        Xp, Yp = self.X[perm], self.Y[perm]
        gather = time.perf_counter() - t0
        self.gather_seconds = gather if self.gather_seconds is None else min(self.gather_seconds, gather)
        n, mbs = Xp.shape[0], self.mbs
        batches = [(Xp[k:k + mbs], Yp[k:k + mbs]) for k in range(0, n, mbs)]
        step, eta = self.net.update_mini_batch, self.eta

        def epoch():
            for xb, yb in batches:
                step(xb, yb, eta)
        return _timed(epoch)


def numpy_epoch(W, B, X, Y, perm, mbs, eta):
    """(c) The lean NumPy matrix form, one epoch in the order perm, updating W, B in place."""
    Xp, Yp = X[perm], Y[perm]
    n, L = Xp.shape[0], len(W)
    with np.errstate(over="ignore"):                       # exp(-z) -> inf gives a = 0
        for k in range(0, n, mbs):
            x, y = Xp[k:k + mbs], Yp[k:k + mbs]
            m = x.shape[0]
            acts = [x]
            a = x
            for w, b in zip(W, B):
                z = a @ w.T
                z += b
                np.negative(z, out=z)
                np.exp(z, out=z)
                z += 1
                a = np.reciprocal(z, out=z)                # a = 1 / (1 + exp(-(a_prev w^T + b)))
                acts.append(a)
            delta = a - y
            delta /= m
            delta *= a * (1 - a)                           # BP1 for C = 1/(2m) sum ||y - a||^2
            for l in range(L - 1, -1, -1):
                a_prev = acts[l]
                nabla_w = delta.T @ a_prev                 # BP4
                nabla_b = delta.sum(axis=0)                # BP3
                if l > 0:                                  # BP2 with the old w^l
                    d_prev = delta @ W[l]
                    d_prev *= a_prev * (1 - a_prev)
                nabla_w *= eta
                W[l] -= nabla_w
                nabla_b *= eta
                B[l] -= nabla_b
                if l > 0:
                    delta = d_prev


class NumpyRunner:
    def __init__(self, sizes, dtype, X, Y, mbs, eta):
        self.W, self.B = init_params(sizes, dtype)
        self.X, self.Y, self.mbs, self.eta = X, Y, mbs, eta

    def run(self, perm):
        return _timed(numpy_epoch, self.W, self.B, self.X, self.Y, perm, self.mbs, self.eta)

    def params(self):
        return self.W, self.B


class ReferenceRunner:
    """(d) cbackprop.reference.Network's matrix form: its _epoch on validated arrays."""

    def __init__(self, reference, sizes, dtype, X, Y, mbs, eta):
        self.net = reference.Network(sizes, dtype=dtype, seed=SEED)
        self.X, self.Y, self.mbs, self.eta = X, Y, mbs, eta

    def run(self, perm):
        # (eta, keep, decay, mu, opt): plain SGD, the hyper-parameters of _validation.hyper
        return _timed(self.net._epoch, self.X, self.Y, perm, self.mbs, (self.eta, 1.0, 0.0, 0.0, None))


def _sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def _sigmoid_prime(z):
    return _sigmoid(z) * (1 - _sigmoid(z))


class NetworkPyRunner:
    """(f) network.py's SGD inner loop, float64, one column-vector sample at a time
    (backprop, update_mini_batch as in the book), on the first k samples of the epoch's
    shuffled order; the time is scaled by n / k."""

    def __init__(self, sizes, u8, labels, n, mbs, eta, k=NETPY_SAMPLES):
        W, B = init_params(sizes, np.float64)
        self.weights = W
        self.biases = [b.reshape(-1, 1) for b in B]
        self.u8, self.labels, self.n, self.mbs, self.eta = u8, labels, n, mbs, eta
        self.k = min(k, n)
        self.num_layers = len(sizes)

    def backprop(self, x, y):
        nabla_b = [np.zeros(b.shape) for b in self.biases]
        nabla_w = [np.zeros(w.shape) for w in self.weights]
        activation = x
        activations = [x]
        zs = []
        for b, w in zip(self.biases, self.weights):
            z = np.dot(w, activation) + b
            zs.append(z)
            activation = _sigmoid(z)
            activations.append(activation)
        delta = (activations[-1] - y) * _sigmoid_prime(zs[-1])
        nabla_b[-1] = delta
        nabla_w[-1] = np.dot(delta, activations[-2].transpose())
        for l in range(2, self.num_layers):
            z = zs[-l]
            sp = _sigmoid_prime(z)
            delta = np.dot(self.weights[-l + 1].transpose(), delta) * sp
            nabla_b[-l] = delta
            nabla_w[-l] = np.dot(delta, activations[-l - 1].transpose())
        return nabla_b, nabla_w

    def update_mini_batch(self, mini_batch, eta):
        nabla_b = [np.zeros(b.shape) for b in self.biases]
        nabla_w = [np.zeros(w.shape) for w in self.weights]
        for x, y in mini_batch:
            delta_nabla_b, delta_nabla_w = self.backprop(x, y)
            nabla_b = [nb + dnb for nb, dnb in zip(nabla_b, delta_nabla_b)]
            nabla_w = [nw + dnw for nw, dnw in zip(nabla_w, delta_nabla_w)]
        self.weights = [w - (eta / len(mini_batch)) * nw for w, nw in zip(self.weights, nabla_w)]
        self.biases = [b - (eta / len(mini_batch)) * nb for b, nb in zip(self.biases, nabla_b)]

    def run(self, perm):
        rows = perm[:self.k]
        X64, Y64 = as_float(self.u8[rows], self.labels[rows], np.float64)
        data = [(x.reshape(-1, 1), y.reshape(-1, 1)) for x, y in zip(X64, Y64)]  # as network.py
        mbs, eta = self.mbs, self.eta

        def epoch():
            with np.errstate(over="ignore"):
                for k in range(0, len(data), mbs):
                    self.update_mini_batch(data[k:k + mbs], eta)
        return _timed(epoch) * (self.n / self.k)


# ---- (e) torch, in its own process (see run_torch_worker) ------------------------------------

def torch_worker(spec_path):
    """--torch-worker SPEC: time the torch implementation for the configs in SPEC (a JSON
    file written by the parent) and print one JSON line.  Imports torch, never cbackprop."""
    import torch
    spec = json.loads(Path(spec_path).read_text())
    dtype = np.dtype(spec["dtype"])
    tdt = {np.dtype(np.float32): torch.float32, np.dtype(np.float64): torch.float64}[dtype]
    if spec["data_source"] == "mnist":
        u8, labels, _ = load_u8(spec["data_path"], spec["n"])
    else:
        u8, labels, _ = load_u8("/nonexistent/synthetic", spec["n"])
    X, Y = as_float(u8, labels, dtype)
    Xt, Yt = torch.from_numpy(X), torch.from_numpy(Y)
    out = {"torch_version": torch.__version__, "torch_threads": torch.get_num_threads(),
           "python": sys.executable, "results": {}}
    eta = spec["eta"]
    for name in spec["configs"]:
        sizes, mbs = CONFIGS[name]
        W, B = init_params(sizes, dtype)
        W = [torch.from_numpy(w) for w in W]
        B = [torch.from_numpy(b) for b in B]
        perms = epoch_permutations(spec["n"], spec["repeats"] + 1)
        times = []

        def epoch(idx):
            Xp, Yp = Xt.index_select(0, idx), Yt.index_select(0, idx)
            n, L = Xp.shape[0], len(W)
            for k in range(0, n, mbs):
                x, y = Xp[k:k + mbs], Yp[k:k + mbs]
                m = x.shape[0]
                acts = [x]
                a = x
                for w, b in zip(W, B):
                    a = torch.sigmoid(torch.addmm(b, a, w.t()))
                    acts.append(a)
                delta = (a - y).div_(m).mul_(a * (1 - a))
                for l in range(L - 1, -1, -1):
                    a_prev = acts[l]
                    nabla_w = delta.t().mm(a_prev)
                    nabla_b = delta.sum(0)
                    if l > 0:
                        d_prev = delta.mm(W[l]).mul_(a_prev * (1 - a_prev))
                    W[l].add_(nabla_w, alpha=-eta)
                    B[l].add_(nabla_b, alpha=-eta)
                    if l > 0:
                        delta = d_prev

        with torch.inference_mode():
            for i, perm in enumerate(perms):
                idx = torch.from_numpy(perm)
                t = _timed(epoch, idx)
                if i > 0:                      # perms[0] is the warm-up epoch
                    times.append(t)
        out["results"][name] = times
    print(json.dumps(out))
    return 0


def run_torch_worker(python, dtype, configs, n, repeats, data_path, data_source):
    """Run torch_worker in a child process (its own thread pools, no OpenBLAS pool of the
    parent's NumPy competing with torch's); (info, {config: times}) or (reason, None)."""
    spec = {"dtype": dtype, "configs": list(configs), "n": n, "repeats": repeats, "eta": ETA,
            "data_path": str(data_path), "data_source": data_source}
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(spec, f)
        spec_file = f.name
    try:
        proc = subprocess.run([python, os.path.abspath(__file__), "--torch-worker", spec_file],
                              capture_output=True, text=True)
    finally:
        os.unlink(spec_file)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        return f"torch worker failed ({python}): {' | '.join(tail)}", None
    info = json.loads(proc.stdout.strip().splitlines()[-1])
    return info, info.pop("results")


def torch_python(args):
    """The interpreter to run torch with, or (None, reason)."""
    if args.no_torch:
        return None, "skipped (--no-torch)"
    candidates = [args.torch_python] if args.torch_python else [sys.executable]
    for py in candidates:
        r = subprocess.run([py, "-c", "import torch, numpy; print(torch.__version__)"],
                           capture_output=True, text=True)
        if r.returncode == 0:
            return py, None
    return None, f"skipped (`import torch` fails with {candidates[0]}; see --torch-python)"


# ---------------------------------------------------------------------------------------------
# Multiply-add ceiling
# ---------------------------------------------------------------------------------------------

def fma_ceiling(core, dtype, kernels, threads, iters, reps=3):
    """Best GFLOP/s of `threads` simultaneous fma_loop calls (GIL released) over reps tries."""
    best = 0.0
    for _ in range(reps):
        flops = [0.0] * threads
        barrier = threading.Barrier(threads + 1)

        def work(i):
            barrier.wait()
            flops[i] = core.fma_loop(dtype, kernels, iters)
        ts = [threading.Thread(target=work, args=(i,)) for i in range(threads)]
        for t in ts:
            t.start()
        barrier.wait()
        t0 = time.perf_counter()
        for t in ts:
            t.join()
        best = max(best, sum(flops) / (time.perf_counter() - t0) / 1e9)
    return best


def measure_ceilings(core, kernels, iters, ceilings, reps):
    """Raise ceilings[dtype]["one_core" / "both_cores"] to the best of reps more tries."""
    for dt, c in ceilings.items():
        c["one_core"] = max(c["one_core"], fma_ceiling(core, dt, kernels, 1, iters, reps))
        c["both_cores"] = max(c["both_cores"], fma_ceiling(core, dt, kernels, 2, iters, reps))


# ---------------------------------------------------------------------------------------------
# Environment
# ---------------------------------------------------------------------------------------------

def machine_header(cbackprop):
    """The JSON fields every benchmark here records about the run: schema, date, machine,
    versions and git state (bench_options.py and bench_mpi.py use it too)."""
    return {
        "schema": 1,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "hostname": socket.gethostname(),
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpus_allowed": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "python": platform.python_version(),
        "numpy_version": np.__version__,
        "cbackprop_version": getattr(cbackprop, "__version__", None),
        "git": git_state(),
    }


def cpu_model():
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def openblas_runtime():
    """The core type and thread count numpy's OpenBLAS actually runs (best effort)."""
    import ctypes
    try:
        np.ones((2, 2)) @ np.ones((2, 2))
        libs = {line.split()[-1] for line in Path("/proc/self/maps").read_text().splitlines()
                if "openblas" in line.lower() and line.split()[-1].startswith("/")}
    except OSError:
        return {}
    for path in sorted(libs):
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        out = {"library": os.path.basename(path)}
        for sym in ("scipy_openblas_get_corename64_", "openblas_get_corename64_", "openblas_get_corename"):
            if hasattr(lib, sym):
                f = getattr(lib, sym)
                f.restype = ctypes.c_char_p
                out["corename"] = f().decode()
                break
        for sym in ("scipy_openblas_get_num_threads64_", "openblas_get_num_threads64_",
                    "openblas_get_num_threads"):
            if hasattr(lib, sym):
                f = getattr(lib, sym)
                f.restype = ctypes.c_int
                out["num_threads"] = int(f())
                break
        return out
    return {}


def git_state():
    try:
        head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True,
                              text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return {"commit": head or None, "dirty": bool(dirty)}
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}


def bench_env():
    return {k: v for k, v in sorted(os.environ.items()) if k.startswith(ENV_PREFIXES)}


# ---------------------------------------------------------------------------------------------
# Output
# ---------------------------------------------------------------------------------------------

def unit_label(n):
    return "s/epoch (50,000 samples)" if n == N_FULL else f"s per {n:,} samples [quick]"


def format_config_table(name, entry, n, data_source, ceilings, dtype):
    sizes, mbs = entry["sizes"], entry["mini_batch_size"]
    which = entry["ceiling"]
    c = ceilings[dtype][which]
    used = entry.get("cbackprop_threads_used") or []
    if "cbackprop_num_threads" not in entry:
        threads = "cbackprop not run"
    elif entry["cbackprop_num_threads"] is None:
        threads = "cbackprop's thread count unknown"
    elif len(set(used)) > 1:
        threads = f"cbackprop epochs finished on {used} threads"
    else:
        threads = f"cbackprop sgd on {entry['cbackprop_num_threads']} thread(s)"
    if entry.get("cbackprop_fed_fraction"):
        threads += (f" + a feeder thread (gathered {100 * entry['cbackprop_fed_fraction']:.1f}% "
                    f"of the mini-batches)")
    if entry.get("cbackprop_split_epochs"):
        threads += f"; hidden split in {entry['cbackprop_split_epochs']} of {len(used)} epochs"
    lines = [f"{name} {sizes} mini-batch {mbs}, {dtype}, {data_source} data: {n:,} samples = "
             f"{entry['n_batches']:,} mini-batches, {entry['gflop_per_epoch']:.3g} GFLOP; {threads}",
             f"  {'implementation':18} {'median':>9} {'min':>9} {'max':>9} {'noise':>6} "
             f"{'GFLOP/s':>8} {'%1core':>7} {'%2cores':>7} {'speed-up':>9}   ({unit_label(n)}; "
             f"ceiling {c:.0f} GFLOP/s on {which.replace('_', ' ')})"]
    for impl in IMPLS:
        r = entry["impls"].get(impl)
        if r is None:
            continue
        if "skipped" in r:
            lines.append(f"  {impl:18} {r['skipped']}")
            continue
        flag = " *" if r.get("extrapolated_from") else ""
        lines.append(f"  {impl:18} {r['median']:9.4f} {r['min']:9.4f} {r['max']:9.4f} {r['noise']:6.1%} "
                     f"{r['gflops']:8.2f} {r['frac_one_core']:7.1%} {r['frac_both_cores']:7.1%} "
                     f"{r['speedup']:8.2f}x{flag}")
    ov = entry.get("pyloop_overhead_us")
    if ov is not None:
        g = entry["impls"]["cbackprop-pyloop"].get("gather_seconds_untimed")
        ov1 = entry.get("pyloop_overhead_vs_1thread_us")
        lines.append(f"  cbackprop-pyloop overhead per update_mini_batch call ({entry['n_batches']:,} calls): "
                     f"{ov:+.2f} us vs cbackprop" +
                     (f", {ov1:+.2f} us vs cbackprop-1thread" if ov1 is not None else "") +
                     (f"; its untimed X[perm] gather took {g * 1e3:.1f} ms" if g is not None else ""))
    ex = entry["impls"].get("network.py-loop") or {}
    if ex.get("extrapolated_from"):
        lines.append(f"  * network.py-loop: extrapolated from {ex['extrapolated_from']:,} samples, "
                     f"float64 (its fractions are of the float64 ceilings)")
    mem = entry.get("memory")
    if mem:
        mb = 1 / 2 ** 20
        parts = mem["workspace"] + mem["permutation"] + mem["snapshot"]
        lines.append(f"  memory (tracemalloc, one epoch of a fresh network): data {mem['data'] * mb:.1f} MiB; "
                     f"Network() {mem['network'] * mb:.2f} MiB (parameters {mem['params'] * mb:.2f} + "
                     f"gradient blob {mem['grads'] * mb:.2f}); the epoch's peak above that "
                     f"{mem['epoch_peak'] * mb:.2f} MiB, against workspace {mem['workspace'] * mb:.2f} + "
                     f"permutation {mem['permutation'] * mb:.2f} + parameter snapshot "
                     f"{mem['snapshot'] * mb:.2f} = {parts * mb:.2f} MiB")
    if entry.get("one_step_check") is not None:
        lines.append(f"  same-algorithm check, max|param diff| / max|param| after one mini-batch from the same "
                     f"parameters: cbackprop vs numpy {entry['one_step_check']:.1e}")
    chk = entry.get("checks") or {}
    if chk:
        lines.append("  after the whole warm-up epoch (rounding differences grow): " +
                     ", ".join(f"{k} {v:.1e}" for k, v in chk.items()))
    return "\n".join(lines)


def format_summary(results):
    out = ["speed-up over numpy (median / median):"]
    impls = [i for i in IMPLS if any(i in e["impls"] and "speedup" in e["impls"][i]
                                     for d in results.values() for e in d.values())]
    out.append(f"  {'dtype':8} {'config':6} " + " ".join(f"{i:>17}" for i in impls))
    for dtype, cfgs in results.items():
        for name, e in cfgs.items():
            cells = []
            for i in impls:
                r = e["impls"].get(i) or {}
                cells.append(f"{r['speedup']:16.2f}x" if "speedup" in r else f"{'-':>17}")
            out.append(f"  {dtype:8} {name:6} " + " ".join(cells))
    return "\n".join(out)


# ---------------------------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------------------------

def parse_args(argv):
    p = argparse.ArgumentParser(
        prog="bench.py", description="Seconds per epoch of cbackprop and NumPy baselines (see "
        "benchmarks/README.md).", formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--dtype", choices=("float32", "float64", "both"), default=None,
                   help="benchmark dtype(s); default both")
    p.add_argument("--configs", default=None,
                   help=f"comma-separated subset of {','.join(CONFIGS)}; default all")
    p.add_argument("--repeats", type=int, default=None, help="timed epochs per implementation "
                   "(after one untimed warm-up); default 5, 3 with --quick")
    p.add_argument("--quick", action="store_true",
                   help=f"smoke run: {N_QUICK:,} samples per epoch, 3 repeats; times are per {N_QUICK:,} samples")
    p.add_argument("--data", default=str(DEFAULT_DATA), help="mnist.npz (synthetic data when absent)")
    p.add_argument("--impls", default=None,
                   help=f"comma-separated subset of {','.join(IMPLS)} (numpy is always run)")
    p.add_argument("--all-baselines", action="store_true",
                   help="also run network.py-loop for N4 (minutes)")
    p.add_argument("--no-torch", action="store_true", help="skip the torch column")
    p.add_argument("--torch-python", default=None, help="a Python interpreter that imports torch "
                   "and numpy, for the torch column (default: this one)")
    p.add_argument("--json", default=None, metavar="PATH", help="write all results as JSON")
    p.add_argument("--compare", default=None, metavar="BASELINE.json",
                   help="rerun the baseline's configs and dtypes (cbackprop and numpy only) and "
                   "exit 1 if a cbackprop speed-up fell by more than --margin")
    p.add_argument("--margin", type=float, default=0.25, help="relative fall of the speed-up "
                   "that --compare calls a regression")
    p.add_argument("--settle", type=float, default=None, metavar="SECONDS",
                   help="pause before each epoch, so that thread pools of the previous "
                   "implementation (OpenBLAS workers spin after a call) go idle first; "
                   "default 0.2, 0.05 with --quick")
    p.add_argument("--fma-iters", type=float, default=2e7, help="iterations per fma_loop call")
    p.add_argument("--unset-openblas-coretype", action="store_true",
                   help=f"re-execute without {' and '.join(UNSET_VARS)} so that numpy's OpenBLAS "
                   "picks its own kernels (AVX-512 on this CPU) for the NumPy-with-AVX-512 figure")
    p.add_argument("--torch-worker", default=None, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def import_cbackprop():
    """import cbackprop with stdout pointed at stderr, so that the editable install's rebuild
    messages do not mix with the tables."""
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    try:
        import cbackprop
        import cbackprop.reference
        from cbackprop import _core
        import cbackprop.network  # noqa: F401
    except Exception as exc:
        raise BenchError(f"cannot import cbackprop ({type(exc).__name__}: {exc}); with an editable "
                         f"install a failed rebuild of the C extension ends up here (see above)") from None
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)
    return cbackprop, cbackprop.reference, _core


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    if args.torch_worker:
        return torch_worker(args.torch_worker)

    if args.unset_openblas_coretype and any(v in os.environ for v in UNSET_VARS):
        env = dict(os.environ)
        removed = {v: env.pop(v) for v in UNSET_VARS if v in env}
        env[REEXEC_MARK] = json.dumps(removed)
        print(f"bench: re-executing without {removed}", file=sys.stderr, flush=True)
        os.execve(sys.executable, [sys.executable, os.path.abspath(__file__)] + argv, env)
    removed_env = json.loads(os.environ.get(REEXEC_MARK, "{}"))

    baseline = None
    if args.compare:
        try:
            baseline = json.loads(Path(args.compare).read_text())
            baseline["results"].items()
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise BenchError(f"--compare {args.compare}: not a bench.py --json file ({exc})") from None
        dtypes = [d for d in baseline["results"] if args.dtype in (None, "both", d)]
        configs = sorted({c for d in dtypes for c in baseline["results"][d]})
        if args.configs:
            configs = [c for c in configs if c in args.configs.split(",")]
        quick = bool(baseline.get("quick")) or args.quick
        impls = ["cbackprop", "numpy"]
        repeats = args.repeats or baseline.get("repeats") or (3 if quick else 5)
        if not 0 <= args.margin < 1:
            raise BenchError(f"--margin must lie in [0, 1), got {args.margin}")
    else:
        dtypes = list(DTYPES) if args.dtype in (None, "both") else [args.dtype]
        configs = list(CONFIGS) if not args.configs else [c.strip() for c in args.configs.split(",") if c.strip()]
        quick = args.quick
        impls = list(IMPLS) if not args.impls else [i.strip() for i in args.impls.split(",")]
        repeats = args.repeats or (3 if quick else 5)
    bad = [c for c in configs if c not in CONFIGS] + [i for i in impls if i not in IMPLS]
    if bad:
        raise BenchError(f"unknown config or implementation {bad}; configs {list(CONFIGS)}, "
                         f"implementations {list(IMPLS)}")
    if repeats < 1:
        raise BenchError("--repeats must be >= 1")
    if BASELINE_IMPL not in impls:
        impls.append(BASELINE_IMPL)
    n = N_QUICK if quick else N_FULL
    if args.settle is None:
        args.settle = 0.05 if quick else 0.2

    cbackprop, reference, core = import_cbackprop()
    kernels = core.best_kernels()
    u8, labels, data_source = load_u8(args.data, n)

    meta = {
        **machine_header(cbackprop),
        "kernels": kernels,
        "kernels_supported": list(core.kernels_supported()),
        "env": bench_env(),
        "env_removed_by_unset_openblas_coretype": removed_env,
        "openblas_runtime": openblas_runtime(),
        "quick": quick,
        "n_samples": n,
        "repeats": repeats,
        "settle_seconds": args.settle,
        "cbackprop_default_num_threads": getattr(core, "default_num_threads", lambda: 1)(),
        "eta": ETA,
        "data": data_source,
        "data_path": str(Path(args.data).resolve()) if data_source == "mnist" else None,
        "configs": {c: {"sizes": CONFIGS[c][0], "mini_batch_size": CONFIGS[c][1]} for c in configs},
    }
    ob = meta["openblas_runtime"]
    print(f"# cbackprop benchmark {meta['date']} on {meta['hostname']}: {meta['cpu_model']}, "
          f"{meta['cpus_allowed']} cpus; python {meta['python']}, numpy {np.__version__}, "
          f"cbackprop {meta['cbackprop_version']} (kernels {kernels}), git {str(meta['git']['commit'])[:10]}"
          f"{' dirty' if meta['git']['dirty'] else ''}")
    print(f"# env: {' '.join(f'{k}={v}' for k, v in meta['env'].items()) or '(no BLAS/OpenMP variables)'}"
          f"{'; removed: ' + str(removed_env) if removed_env else ''}")
    if ob:
        print(f"# numpy's OpenBLAS runs core type {ob.get('corename')} with {ob.get('num_threads')} threads")
    print(f"# data: {data_source}, {n:,} samples per epoch{' [QUICK]' if quick else ''}; "
          f"{repeats} timed epochs per implementation after one untimed warm-up; eta {ETA}")

    # Multiply-add ceilings for both dtypes (network.py-loop computes in float64).
    iters = int(args.fma_iters if not quick else args.fma_iters / 2)
    ceilings = {dt: {"kernels": kernels, "one_core": 0.0, "both_cores": 0.0} for dt in DTYPES}
    measure_ceilings(core, kernels, iters, ceilings, reps=3)
    for dt, c in ceilings.items():
        print(f"# multiply-add ceiling {dt} ({kernels}): one core {c['one_core']:.1f} GFLOP/s, "
              f"both cores {c['both_cores']:.1f} GFLOP/s (measured again after each config; the "
              f"tables use the best so far)")
    meta["ceilings"] = ceilings

    tpy, torch_reason = (None, "not selected") if "torch" not in impls else torch_python(args)
    meta["torch"] = None
    results = {}
    for dtype in dtypes:
        X, Y = as_float(u8, labels, dtype)
        torch_times = {}
        if tpy:
            print(f"# {dtype}: timing torch in a child process ({tpy}) ...", file=sys.stderr, flush=True)
            info, torch_times = run_torch_worker(tpy, dtype, configs, n, repeats, args.data, data_source)
            if torch_times is None:
                torch_reason, torch_times = info, {}
            else:
                meta["torch"] = info
        results[dtype] = {}
        for name in configs:
            sizes, mbs = CONFIGS[name]
            entry = run_config(name, sizes, mbs, dtype, X, Y, u8, labels, n, repeats, impls,
                               cbackprop, reference, args.all_baselines, args.settle)
            if "torch" in impls:
                if name in torch_times:
                    entry["impls"]["torch"] = summarize(torch_times[name])
                else:
                    entry["impls"]["torch"] = {"skipped": torch_reason or "no result"}
            # the ceilings once more (best so far): a shared VM's second core is sometimes
            # busy elsewhere for a moment, and one measurement at the start then reads low
            measure_ceilings(core, kernels, iters, ceilings, reps=1)
            finish_entry(entry, name, dtype, n, ceilings)
            entry["ceilings_used"] = {dt: dict(c) for dt, c in ceilings.items()}  # (best so far)
            results[dtype][name] = entry
            print()
            print(format_config_table(name, entry, n, data_source, ceilings, dtype), flush=True)
    meta["results"] = results
    print()
    print(format_summary(results))

    status = 0
    if baseline is not None:
        rows, ok = compare_results(baseline, meta, args.margin)
        meta["comparison"] = {"baseline": str(args.compare), "margin": args.margin, "rows": rows, "ok": ok}
        for key in ("hostname", "cpu_model", "data", "n_samples", "kernels",
                    "cbackprop_default_num_threads", "env"):
            if baseline.get(key) != meta.get(key):
                print(f"bench: WARNING: baseline {key} {baseline.get(key)!r} != now {meta.get(key)!r}; "
                      f"compare runs on the same machine and data", file=sys.stderr)
        print()
        print(format_comparison(rows, args.margin))
        print("RESULT: " + ("ok" if ok else "REGRESSION"))
        status = 0 if ok else 1

    if args.json:
        write_json(args.json, meta)
    return status


def run_config(name, sizes, mbs, dtype, X, Y, u8, labels, n, repeats, impls, cbackprop, reference,
               all_baselines, settle=0.0):
    """Warm-up round, then `repeats` rounds; each round runs every implementation once in
    turn (interleaved, so slow drifts of a shared machine hit all of them alike)."""
    W0, B0 = init_params(sizes, dtype)
    ref_net = reference.Network(sizes, dtype=dtype, seed=SEED)
    if not all(np.array_equal(a, b) for a, b in zip(W0 + B0, ref_net.weights + ref_net.biases)):
        raise BenchError("init_params no longer matches cbackprop's initialisation")
    del ref_net
    entry = {"sizes": sizes, "mini_batch_size": mbs, "n_batches": -(-n // mbs), "impls": {}}
    runners = {}
    for impl in IMPLS:
        if impl not in impls or impl == "torch":
            continue
        if impl == "cbackprop":
            runners[impl] = CbackpropRunner(cbackprop, sizes, dtype, X, Y, mbs, ETA)
        elif impl == "cbackprop-1thread":
            try:
                runners[impl] = OneThreadRunner(cbackprop, sizes, dtype, X, Y, mbs, ETA)
            except AttributeError as exc:
                entry["impls"][impl] = {"skipped": f"skipped ({exc})"}
        elif impl == "cbackprop-pyloop":
            runners[impl] = PyloopRunner(cbackprop, sizes, dtype, X, Y, mbs, ETA)
        elif impl == "numpy":
            runners[impl] = NumpyRunner(sizes, dtype, X, Y, mbs, ETA)
        elif impl == "reference":
            runners[impl] = ReferenceRunner(reference, sizes, dtype, X, Y, mbs, ETA)
        elif impl == "network.py-loop":
            if name == "N4" and not all_baselines:
                entry["impls"][impl] = {"skipped": "skipped for N4 (minutes per epoch); --all-baselines runs it"}
                continue
            runners[impl] = NetworkPyRunner(sizes, u8, labels, n, mbs, ETA)
    if "cbackprop" in runners:
        entry["kernels"] = runners["cbackprop"].net.kernels
    perms = epoch_permutations(n, repeats + 1)
    if "cbackprop" in runners:
        entry["one_step_check"] = one_step_check(cbackprop, sizes, dtype, X, Y, perms[0][:mbs])
        entry["memory"] = memory_check(cbackprop, sizes, dtype, X, Y, mbs)
    times = {k: [] for k in runners}
    for rnd, perm in enumerate(perms):
        print(f"# {dtype} {name}: {'warm-up' if rnd == 0 else f'round {rnd}/{repeats}'}",
              file=sys.stderr, flush=True)
        for impl, runner in runners.items():
            if settle:
                time.sleep(settle)
            t = runner.run(perm)
            if rnd:
                times[impl].append(t)
        if rnd == 0 and "numpy" in runners:
            entry["checks"] = same_algorithm_checks(runners)
    for impl, ts in times.items():
        entry["impls"][impl] = summarize(ts)
        if impl == "network.py-loop":
            entry["impls"][impl]["extrapolated_from"] = runners[impl].k
        if impl == "cbackprop-pyloop":
            entry["impls"][impl]["gather_seconds_untimed"] = runners[impl].gather_seconds
    if "cbackprop" in runners:
        used = runners["cbackprop"].threads_used[1:]            # the timed epochs
        known = [u for u in used if u is not None]
        entry["cbackprop_threads_used"] = used
        entry["cbackprop_num_threads"] = max(set(known), key=known.count) if known else None
        fed = [f for f in runners["cbackprop"].fed[1:] if f is not None]
        entry["cbackprop_fed_fraction"] = (sum(fed) / (len(fed) * entry["n_batches"])
                                           if fed else None)
        split = [bool(x) for x in runners["cbackprop"].split[1:] if x is not None]
        entry["cbackprop_split_epochs"] = sum(split) if split else None
    return entry


def memory_check(cbackprop, sizes, dtype, X, Y, mbs):
    """What one sgd epoch of a fresh network allocates, traced with tracemalloc (NumPy
    reports every array buffer to it, and cbackprop's C code allocates nothing: its blobs
    and workspace are NumPy arrays).  Returns bytes: `data` (X and Y, allocated before),
    `network` (what Network() allocated: parameters and gradient blob), `epoch_peak` (the
    most the epoch held at once above that), and the parts the epoch is expected to hold:
    `params`, `grads`, `workspace` (engine.workspace_nbytes(), including the feeder's
    second mini-batch buffers and the hidden split's blocks), `permutation` (int64 [n]) and `snapshot` (the copy of the
    parameters sgd keeps to roll back a divergence).  Untimed; run once per config."""
    import tracemalloc
    was_tracing = tracemalloc.is_tracing()
    if not was_tracing:
        tracemalloc.start()
    try:
        gc.collect()
        t0 = tracemalloc.get_traced_memory()[0]
        net = cbackprop.Network(sizes, dtype=dtype, seed=SEED)
        t1 = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()                   # (sgd draws its own permutation, as usual)
        net.sgd(X, Y, 1, mbs, ETA)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        if not was_tracing:
            tracemalloc.stop()
    engine = net._engine
    params = sum(p.nbytes for p in net.weights + net.biases)
    return {"data": int(X.nbytes + Y.nbytes), "network": int(t1 - t0), "epoch_peak": int(peak - t1),
            "params": int(params), "grads": int(engine.grads.nbytes),
            "workspace": int(engine.workspace_nbytes()), "permutation": int(8 * X.shape[0]),
            "snapshot": int(params)}


def one_step_check(cbackprop, sizes, dtype, X, Y, rows):
    """max|param difference| / max|param| between cbackprop's update_mini_batch and
    numpy_epoch after one step on the same mini-batch from the same parameters: rounding
    level (about 1e-7 in float32, 1e-15 in float64) when both compute the same algorithm."""
    net = cbackprop.Network(sizes, dtype=dtype, seed=SEED)
    W, B = init_params(sizes, dtype)
    xb, yb = X[rows], Y[rows]
    net.update_mini_batch(xb, yb, ETA)
    numpy_epoch(W, B, xb, yb, np.arange(len(rows)), len(rows), ETA)
    scale = max(float(np.abs(p).max()) for p in W + B)
    return max(float(np.abs(np.asarray(a, np.float64) - b).max())
               for a, b in zip(net.weights + net.biases, W + B)) / scale


def same_algorithm_checks(runners):
    """max|param - numpy's param| / max|numpy's param| after the same warm-up epoch."""
    Wn, Bn = runners["numpy"].params()
    scale = max(float(np.abs(p).max()) for p in Wn + Bn)
    out = {}
    for impl in ("cbackprop", "cbackprop-1thread", "cbackprop-pyloop"):
        if impl in runners:
            W, B = runners[impl].params()
            d = max(float(np.abs(np.asarray(a, dtype=np.float64) - b).max()) for a, b in zip(W + B, Wn + Bn))
            out[f"{impl} vs numpy"] = d / scale
    if "cbackprop" in runners and "cbackprop-1thread" in runners:   # threads: bitwise the same
        (W1, B1), (W2, B2) = runners["cbackprop"].params(), runners["cbackprop-1thread"].params()
        out["cbackprop vs cbackprop-1thread (bitwise)"] = max(
            float(np.abs(a - b).max()) for a, b in zip(W1 + B1, W2 + B2)) / scale
    return out


def finish_entry(entry, name, dtype, n, ceilings):
    """GFLOP/s, speed-up over numpy and fractions of the ceilings for every implementation."""
    flops = n * flops_per_sample(entry["sizes"])
    entry["gflop_per_epoch"] = flops / 1e9
    multi = (entry.get("cbackprop_num_threads") or 1) >= 2
    entry["ceiling"] = "both_cores" if name in BOTH_CORES_CONFIGS or multi else "one_core"
    base = entry["impls"].get(BASELINE_IMPL, {}).get("median")
    for impl, r in entry["impls"].items():
        if "median" not in r:
            continue
        cdt = "float64" if impl == "network.py-loop" else dtype
        r["gflops"] = flops / r["median"] / 1e9
        r["speedup"] = base / r["median"] if base else float("nan")
        r["frac_one_core"] = r["gflops"] / ceilings[cdt]["one_core"]
        r["frac_both_cores"] = r["gflops"] / ceilings[cdt]["both_cores"]
        r["frac_ceiling"] = r["frac_" + entry["ceiling"]]
    cb, py = entry["impls"].get("cbackprop", {}), entry["impls"].get("cbackprop-pyloop", {})
    one = entry["impls"].get("cbackprop-1thread", {})
    if "median" in cb and "median" in py:
        entry["pyloop_overhead_us"] = (py["median"] - cb["median"]) / entry["n_batches"] * 1e6
    if "median" in one and "median" in py:
        entry["pyloop_overhead_vs_1thread_us"] = (py["median"] - one["median"]) / entry["n_batches"] * 1e6


if __name__ == "__main__":
    sys.exit(main())
