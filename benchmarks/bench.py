#!/usr/bin/env python3
"""Benchmark harness for cbackprop: seconds per training epoch on MNIST for the C path and
for NumPy, PyTorch and JAX versions of the same algorithm, on the same data and the same
shuffled order.  The PyTorch and JAX peers run in child processes (peers.py).

    python benchmarks/bench.py --json benchmarks/results/<name>.json    # the full run
    python benchmarks/bench.py --quick --dtype float32                  # a smoke run
    python benchmarks/bench.py --compare benchmarks/results/main.json   # regression check

See benchmarks/README.md for what the columns mean, the FLOP formula and the caveats.

Importing this module has no side effects (it imports only the standard library and NumPy;
cbackprop is imported inside main(), torch and jax only by peers.py), so `compare_results`
can be tested alone.
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
#: ran on two or more threads
BOTH_CORES_CONFIGS = ("N4", "N5")
ETA = 3.0
SEED = 0                 # network initialisation (cbackprop's convention) and shuffles
N_FULL = 50_000          # samples per epoch
N_QUICK = 5_000          # samples per "epoch" with --quick
NETPY_SAMPLES = 2_000    # network.py-loop runs on this many samples and is extrapolated
SYNTHETIC_SEED = 12345
DTYPES = ("float32", "float64")

#: peer name -> the module its interpreter must import; each runs in a child process
#: (benchmarks/peers.py) with the interpreter --peer-python gives (default: this one)
PEER_MODULES = {"torch": "torch", "torch-autograd": "torch", "jax-step": "jax", "jax-scan": "jax"}
IMPLS = ("cbackprop", "cbackprop-1thread", "cbackprop-pyloop", "numpy", "reference",
         *PEER_MODULES, "network.py-loop")
BASELINE_IMPL = "numpy"
#: the implementations cbackprop is measured against: its "fastest peer" is the fastest of
#: these that ran and computes numpy's algorithm (see verdict)
PEERS = ("numpy", *PEER_MODULES)
#: the speed cbackprop aims at: fastest peer median / cbackprop median (issue 14)
AIM = {"N1": 1.5, "N2": 1.5, "N3": 1.5, "N4": 1.2, "N5": 1.5}
#: the share of the multiply-add ceiling cbackprop aims at (issue 14), counting the work done
#: (config, dtype, implementation, ceiling, share): N1 on one core, N4 on both
CEILING_TARGETS = (("N1", "float32", "cbackprop-1thread", "one_core", 0.60),
                   ("N4", "float32", "cbackprop", "both_cores", 0.75))
#: same-algorithm checks: max|param - numpy's| / max|numpy's param| allowed after a short
#: epoch (the test suite's C-vs-reference rtol), and after the warm-up epoch this many times
#: the spread rounding-level changes give numpy itself (rounding_controls), if larger
ROUNDING_TOL = {"float32": 1e-5, "float64": 1e-12}
CONTROL_FACTOR = 10
PEERS_SCRIPT = Path(__file__).resolve().with_name("peers.py")
PEER_TIMEOUT = 3600      # seconds for one peer's child process (N4 float64: about a minute)
PROBE_TIMEOUT = 300      # seconds for `python -c "import torch"` and the like
ENV_PREFIXES = ("OPENBLAS_", "OMP_", "GOMP_", "MKL_", "BLIS_", "GOTO_", "CBACKPROP_", "KMP_",
                "XLA_", "JAX_")
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

    def run(self, perm):
        self.net._rng = _GivenPermutation(perm)   # the shared shuffle instead of its own
        gc.collect()
        gc.disable()
        try:
            hist = self.net.sgd(self.X, self.Y, 1, self.mbs, self.eta)
        finally:
            gc.enable()
        # the threads that took part in this epoch (automatic thread counts decide per network)
        engine = getattr(self.net, "_engine", None)
        self.threads_used.append(getattr(engine, "last_epoch_threads", None))
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


# ---- (e) the peers: PyTorch and JAX, each in its own process (benchmarks/peers.py) -----------

def short_epoch_rows(perm, n, mbs):
    """The rows of the short check epoch: one full mini-batch, then the partial one an epoch
    of n rows ends with (n % mbs rows), when there is one."""
    return perm[:mbs + n % mbs]


def peer_python(args, module, cache):
    """(interpreter, None) for an interpreter that imports `module` and numpy (--peer-python
    PATH when given, else this one), or (None, reason); cached per module."""
    if module not in cache:
        py = args.peer_python or sys.executable
        try:
            ok = subprocess.run([py, "-c", f"import {module}, numpy"], capture_output=True,
                                timeout=PROBE_TIMEOUT).returncode == 0
        except (OSError, subprocess.SubprocessError):
            ok = False
        cache[module] = (py, None) if ok else (None, f"skipped (`import {module}` fails with {py}; "
                                                     f"see --peer-python)")
    return cache[module]


def run_peer(python, peer, dtype, config, n, repeats, data_path, data_source, workdir):
    """Time one peer on one config in a child process (peers.py; torch's and XLA's thread pools
    never spin there against this process's OpenBLAS pool).  Returns (result, npz path) with
    result as peers.run returns it, or (reason, None)."""
    npz = Path(workdir) / f"{peer}-{dtype}-{config}.npz"
    spec = {"peer": peer, "dtype": dtype, "config": config, "n": n, "repeats": repeats, "eta": ETA,
            "data_path": str(data_path), "data_source": data_source, "out_npz": str(npz)}
    spec_file = Path(workdir) / "spec.json"
    spec_file.write_text(json.dumps(spec))
    try:
        proc = subprocess.run([python, str(PEERS_SCRIPT), str(spec_file)], capture_output=True,
                              text=True, timeout=PEER_TIMEOUT)
    except subprocess.TimeoutExpired:
        return f"failed: no result within {PEER_TIMEOUT} s", None
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        return f"failed ({python}): {' | '.join(tail)}", None
    return json.loads(proc.stdout.strip().splitlines()[-1]), npz


def run_peers(peers, pythons, args, dtype, config, n, repeats, data_source, workdir):
    """Every selected peer on one config, one child process after the other.  Returns
    ({peer: impls entry}, {peer: npz path of its checked parameters})."""
    entries, npz = {}, {}
    for peer in peers:
        python, reason = pythons[peer]
        if python is None:
            entries[peer] = {"skipped": reason}
            continue
        print(f"# {dtype} {config}: {peer} in a child process ({python}) ...", file=sys.stderr, flush=True)
        if args.settle:
            time.sleep(args.settle)
        res, path = run_peer(python, peer, dtype, config, n, repeats, args.data, data_source, workdir)
        if path is None:
            entries[peer] = {"skipped": res}
            continue
        entries[peer] = {**summarize(res.pop("times")), "peer": res}
        npz[peer] = path
    return entries, npz


def _flat(weights_biases):
    W, B = weights_biases
    return list(W) + list(B)


def rel_diff(params, numpy_params):
    """max |param - numpy's param| / max |numpy's param| over every weight and bias."""
    scale = max(float(np.abs(p).max()) for p in numpy_params)
    return max(float(np.abs(np.asarray(a, dtype=np.float64) - b).max())
               for a, b in zip(params, numpy_params)) / scale


def rounding_controls(sizes, dtype, X, Y, perm, mbs, numpy_params):
    """How far numpy's warm-up epoch ends from itself under rounding-level changes: three
    more numpy epochs (untimed), one from initial parameters moved one ulp each (up or down
    at random), one with eta one ulp larger and one with eta one ulp smaller (every update
    rounded differently).  Returns their rel_diff to numpy_params.  Sigmoid training with
    eta 3.0 amplifies such changes, by an amount that varies between configs and between
    the three by up to 10x: on full N1 and N5 epochs in float32 they end about 0.1 away."""
    dt = np.dtype(dtype)
    inf = np.array(np.inf, dtype=dt)
    rng = np.random.default_rng(SEED)
    out = []
    for start_moved, eta in ((True, ETA), (False, np.nextafter(dt.type(ETA), inf)),
                             (False, np.nextafter(dt.type(ETA), -inf))):
        W, B = init_params(sizes, dt)
        if start_moved:
            W, B = ([np.nextafter(p, np.where(rng.random(p.shape) < 0.5, inf, -inf)) for p in ps]
                    for ps in (W, B))
        numpy_epoch(W, B, X, Y, perm, mbs, eta)
        out.append(rel_diff(W + B, numpy_params))
    return out


def verdict(short, warmup, control, dtype):
    """Whether an implementation computes numpy's algorithm: its short epoch within the
    rounding tolerance of numpy's, and its warm-up epoch within the larger of that tolerance
    and CONTROL_FACTOR times the control (the largest of rounding_controls)."""
    tol = ROUNDING_TOL[np.dtype(dtype).name]
    wtol = max(tol, CONTROL_FACTOR * control)
    return {"short": short, "short_tol": tol, "warmup": warmup, "warmup_tol": wtol,
            "ok": bool(short <= tol and warmup <= wtol)}


def peer_checks(peer_npz, sizes, dtype, X, Y, perm0, mbs, numpy_params, control):
    """verdict() for each peer, from the parameters it saved (see peers.py) and numpy's after
    the same short epoch and the same warm-up epoch."""
    W, B = init_params(sizes, dtype)
    numpy_epoch(W, B, X, Y, short_epoch_rows(perm0, X.shape[0], mbs), mbs, ETA)
    out = {}
    for peer, path in peer_npz.items():
        L = len(W)
        try:
            with np.load(path) as d:
                short = rel_diff([d[f"short_w{i}"] for i in range(L)] + [d[f"short_b{i}"] for i in range(L)], W + B)
                warm = rel_diff([d[f"warmup_w{i}"] for i in range(L)] + [d[f"warmup_b{i}"] for i in range(L)],
                                numpy_params)
        except (OSError, KeyError, ValueError) as exc:
            out[peer] = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
            continue
        out[peer] = verdict(short, warm, control, dtype)
    return out


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
    if entry.get("round_trip_ns"):
        threads += (", the cores' round trip before each round (warm-up first): " +
                    " ".join(f"{v:.0f}" for v in entry["round_trip_ns"]) + " ns")
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
        flag = " *" if r.get("extrapolated_from") else " !" if r.get("matches_numpy") is False else ""
        lines.append(f"  {impl:18} {r['median']:9.4f} {r['min']:9.4f} {r['max']:9.4f} {r['noise']:6.1%} "
                     f"{r['gflops']:8.2f} {r['frac_one_core']:7.1%} {r['frac_both_cores']:7.1%} "
                     f"{r['speedup']:8.2f}x{flag}")
    return "\n".join(lines + format_config_notes(entry))


def format_config_notes(entry):
    """The lines under a config's table: pyloop overhead, extrapolation, memory, checks."""
    lines = []
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
    if any(r.get("matches_numpy") is False for r in entry["impls"].values()):
        lines.append("  ! does not compute numpy's algorithm (same-algorithm check below): "
                     "not counted as a peer")
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
    same = entry.get("same_algorithm") or {}
    if same:
        lines.append("  same algorithm as numpy? (short epoch <= tol; warm-up epoch <= max(tol, "
                     f"{CONTROL_FACTOR} x control)): " + ", ".join(
                         f"{k} " + (f"ERROR {v['error']}" if "error" in v else
                                    f"{'ok' if v['ok'] else 'NO'} ({_within(v['short'], v['short_tol'])}; "
                                    f"{_within(v['warmup'], v['warmup_tol'])})")
                         for k, v in same.items()))
    return lines


def _within(value, tol):
    return f"{value:.1e} {'<=' if value <= tol else '>'} {tol:.1e}"


def format_summary(results, targets=()):
    """Speed-up over numpy per implementation; the fastest peer per config and dtype with
    cbackprop's ratio to it and the aims; cbackprop's share of the ceilings with targets."""
    out = ["speed-up over numpy (median / median):"]
    impls = [i for i in IMPLS if any(i in e["impls"] and "speedup" in e["impls"][i]
                                     for d in results.values() for e in d.values())]
    out.append(f"  {'dtype':8} {'config':6} " + " ".join(f"{i:>17}" for i in impls) +
               "   fastest peer      its median  cbackprop vs it  >= 1   aim")
    for dtype, cfgs in results.items():
        for name, e in cfgs.items():
            cells = []
            for i in impls:
                r = e["impls"].get(i) or {}
                cells.append(f"{r['speedup']:16.2f}x" if "speedup" in r else f"{'-':>17}")
                cells[-1] += "!" if r.get("matches_numpy") is False else ""
            f = e.get("fastest_peer")
            tail = ("   -" if not f else
                    f"   {f['impl']:16} {f['median']:10.4f} {f['cbackprop_ratio']:15.2f}x  "
                    f"{'yes' if f['at_least_as_fast'] else 'NO':4}  {f['aim']:.1f}x "
                    f"{'met' if f['aim_met'] else 'not met'}")
            out.append(f"  {dtype:8} {name:6} " + " ".join(cells) + tail)
    out.append("  (fastest peer: the fastest of " + ", ".join(PEERS) + " that computes numpy's "
               "algorithm; cbackprop vs it = its median / cbackprop's median; ! = does not)")
    for t in targets:
        out.append(f"{t['impl']} on {t['config']} {t['dtype']}: {t['gflops']:.1f} GFLOP/s = {t['share']:.1%} "
                   f"of the {t['ceiling'].replace('_', ' ')} multiply-add ceiling, {t['ceiling_gflops']:.0f} "
                   f"GFLOP/s, the run's best (target {t['target']:.0%}: {'met' if t['met'] else 'NOT met'})")
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
    p.add_argument("--peer-python", "--torch-python", dest="peer_python", default=None, metavar="PATH",
                   help="a Python interpreter that imports numpy and torch and/or jax, for the peers' "
                   "columns (default: this one; a peer whose framework it lacks is skipped)")
    p.add_argument("--no-peers", action="store_true", help="skip the torch and jax peers")
    p.add_argument("--no-torch", action="store_true", help="skip the torch peers")
    p.add_argument("--no-jax", action="store_true", help="skip the jax peers")
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
    p.add_argument("--keep-openblas-env", action="store_true",
                   help=f"keep {' and '.join(UNSET_VARS)} when set (by default the script re-executes "
                   "without them, so that numpy's OpenBLAS runs its own kernels for this CPU)")
    p.add_argument("--unset-openblas-coretype", action="store_true",
                   help="the default (kept for older command lines); see --keep-openblas-env")
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


def reexec_without_openblas_overrides(args, argv):
    """Unless --keep-openblas-env: re-execute this script without OPENBLAS_CORETYPE and
    OPENBLAS_L2_SIZE when either is set (OpenBLAS picks its kernels when it loads, so this
    cannot be done in-process).  Returns the variables removed ({} when none were)."""
    if not args.keep_openblas_env and any(v in os.environ for v in UNSET_VARS):
        env = dict(os.environ)
        removed = {v: env.pop(v) for v in UNSET_VARS if v in env}
        env[REEXEC_MARK] = json.dumps(removed)
        print(f"bench: re-executing without {removed} (--keep-openblas-env keeps them)",
              file=sys.stderr, flush=True)
        os.execve(sys.executable, [sys.executable, os.path.abspath(__file__)] + argv, env)
    return json.loads(os.environ.get(REEXEC_MARK, "{}"))


def select_run(args):
    """(baseline or None, dtypes, configs, quick, impls, repeats) from the command line, or
    from the --compare baseline's run (cbackprop and numpy only)."""
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
    return baseline, dtypes, configs, quick, impls, repeats


def peer_pythons(args, impls):
    """{peer: (interpreter, None) or (None, reason)} for the selected peers."""
    cache, out = {}, {}
    for peer, module in PEER_MODULES.items():
        if peer not in impls:
            continue
        if args.no_peers or (args.no_torch and module == "torch") or (args.no_jax and module == "jax"):
            out[peer] = (None, f"skipped (--no-peers, --no-{module})")
        else:
            out[peer] = peer_python(args, module, cache)
    return out


def run_header(args, cbackprop, core, removed_env, quick, n, repeats, data_source, configs):
    """The JSON header of the run (machine, versions, environment, mode), printed too."""
    kernels = core.best_kernels()
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
    print(f"# env: {' '.join(f'{k}={v}' for k, v in meta['env'].items()) or '(no BLAS/OpenMP variables)'}")
    kept = {v: os.environ[v] for v in UNSET_VARS if v in os.environ}
    print(f"# numpy baseline's OpenBLAS: {ob.get('library', 'not found')}, core type "
          f"{ob.get('corename', '?')}, {ob.get('num_threads', '?')} threads; " +
          (f"{kept} kept (--keep-openblas-env)" if kept else
           f"removed for this run: {removed_env}" if removed_env else
           f"{' and '.join(UNSET_VARS)} were not set"))
    print(f"# data: {data_source}, {n:,} samples per epoch{' [QUICK]' if quick else ''}; "
          f"{repeats} timed epochs per implementation after one untimed warm-up; eta {ETA}")
    return meta


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    removed_env = reexec_without_openblas_overrides(args, argv)
    baseline, dtypes, configs, quick, impls, repeats = select_run(args)
    n = N_QUICK if quick else N_FULL
    if args.settle is None:
        args.settle = 0.05 if quick else 0.2

    cbackprop, reference, core = import_cbackprop()
    kernels = core.best_kernels()
    u8, labels, data_source = load_u8(args.data, n)
    meta = run_header(args, cbackprop, core, removed_env, quick, n, repeats, data_source, configs)

    # Multiply-add ceilings for both dtypes (network.py-loop computes in float64).
    iters = int(args.fma_iters if not quick else args.fma_iters / 2)
    ceilings = {dt: {"kernels": kernels, "one_core": 0.0, "both_cores": 0.0} for dt in DTYPES}
    measure_ceilings(core, kernels, iters, ceilings, reps=3)
    for dt, c in ceilings.items():
        print(f"# multiply-add ceiling {dt} ({kernels}): one core {c['one_core']:.1f} GFLOP/s, "
              f"both cores {c['both_cores']:.1f} GFLOP/s (measured again after each config; the "
              f"tables use the best so far)")
    meta["ceilings"] = ceilings

    pythons = peer_pythons(args, impls)
    meta["peers"] = {}
    results = {}
    with tempfile.TemporaryDirectory(prefix="cbp-bench-") as workdir:
        for dtype in dtypes:
            X, Y = as_float(u8, labels, dtype)
            results[dtype] = {}
            for name in configs:
                peer_entries, peer_npz = run_peers(list(pythons), pythons, args, dtype, name, n,
                                                   repeats, data_source, workdir)
                entry = run_config(name, dtype, X, Y, u8, labels, n, repeats, impls, cbackprop,
                                   reference, args.all_baselines, args.settle, peer_npz)
                entry["impls"].update(peer_entries)
                for peer, e in peer_entries.items():
                    if "peer" in e:
                        meta["peers"].setdefault(dtype, {})[peer] = {
                            k: v for k, v in e["peer"].items() if k not in ("config", "dtype", "warmup_seconds")}
                # the ceilings once more (best so far): a shared VM's second core is sometimes
                # busy elsewhere for a moment, and one measurement at the start then reads low
                measure_ceilings(core, kernels, iters, ceilings, reps=1)
                finish_entry(entry, name, dtype, n, ceilings)
                entry["ceilings_used"] = {dt: dict(c) for dt, c in ceilings.items()}  # (best so far)
                results[dtype][name] = entry
                print()
                print(format_config_table(name, entry, n, data_source, ceilings, dtype), flush=True)
    meta["results"] = results
    meta["targets"] = ceiling_targets(results, ceilings)
    print()
    print(format_summary(results, meta["targets"]))
    status = 0 if baseline is None else compare_and_report(baseline, meta, args.margin, args.compare)
    if args.json:
        write_json(args.json, meta)
    return status


def compare_and_report(baseline, meta, margin, baseline_path):
    """The --compare step: rows under meta["comparison"], the table printed, exit status."""
    rows, ok = compare_results(baseline, meta, margin)
    meta["comparison"] = {"baseline": str(baseline_path), "margin": margin, "rows": rows, "ok": ok}
    for key in ("hostname", "cpu_model", "data", "n_samples", "kernels",
                "cbackprop_default_num_threads", "env"):
        if baseline.get(key) != meta.get(key):
            print(f"bench: WARNING: baseline {key} {baseline.get(key)!r} != now {meta.get(key)!r}; "
                  f"compare runs on the same machine and data", file=sys.stderr)
    print()
    print(format_comparison(rows, margin))
    print("RESULT: " + ("ok" if ok else "REGRESSION"))
    return 0 if ok else 1


def make_runners(name, sizes, mbs, dtype, X, Y, u8, labels, n, impls, cbackprop, reference,
                 all_baselines, entry):
    """{impl: runner} for the in-process implementations selected; an implementation that
    cannot run here gets a "skipped" entry in entry["impls"] instead."""
    runners = {}
    for impl in IMPLS:
        if impl not in impls or impl in PEER_MODULES:
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
    return runners


def run_config(name, dtype, X, Y, u8, labels, n, repeats, impls, cbackprop, reference,
               all_baselines, settle=0.0, peer_npz=None):
    """Warm-up round, then `repeats` rounds; each round runs every implementation once in
    turn (interleaved, so slow drifts of a shared machine hit all of them alike).  After the
    warm-up round, the same-algorithm checks, with the peers' parameters from peer_npz."""
    sizes, mbs = CONFIGS[name]
    W0, B0 = init_params(sizes, dtype)
    ref_net = reference.Network(sizes, dtype=dtype, seed=SEED)
    if not all(np.array_equal(a, b) for a, b in zip(W0 + B0, ref_net.weights + ref_net.biases)):
        raise BenchError("init_params no longer matches cbackprop's initialisation")
    del ref_net
    entry = {"sizes": sizes, "mini_batch_size": mbs, "n_batches": -(-n // mbs), "impls": {}}
    runners = make_runners(name, sizes, mbs, dtype, X, Y, u8, labels, n, impls, cbackprop,
                           reference, all_baselines, entry)
    if "cbackprop" in runners:
        entry["kernels"] = runners["cbackprop"].net.kernels
    perms = epoch_permutations(n, repeats + 1)
    if "cbackprop" in runners:
        entry["one_step_check"] = one_step_check(cbackprop, sizes, dtype, X, Y, perms[0][:mbs])
        entry["memory"] = memory_check(cbackprop, sizes, dtype, X, Y, mbs)
    times = {k: [] for k in runners}
    # A cache line's round trip between two threads before each round (the engine's probe):
    # over about 150 ns the two cores share no cache, and two-thread epochs run slower.
    probe = getattr(getattr(cbackprop, "_core", None), "round_trip_ns", None)
    if probe is not None:
        entry["round_trip_ns"] = []
    for rnd, perm in enumerate(perms):
        print(f"# {dtype} {name}: {'warm-up' if rnd == 0 else f'round {rnd}/{repeats}'}",
              file=sys.stderr, flush=True)
        if probe is not None:
            entry["round_trip_ns"].append(round(probe(), 1))
        for impl, runner in runners.items():
            if settle:
                time.sleep(settle)
            t = runner.run(perm)
            if rnd:
                times[impl].append(t)
        if rnd == 0:
            warmup_checks(entry, runners, peer_npz or {}, sizes, dtype, X, Y, perm, mbs)
    for impl, ts in times.items():
        entry["impls"][impl] = summarize(ts)
        if impl == "network.py-loop":
            entry["impls"][impl]["extrapolated_from"] = runners[impl].k
        if impl == "cbackprop-pyloop":
            entry["impls"][impl]["gather_seconds_untimed"] = runners[impl].gather_seconds
    if "cbackprop" in runners:
        thread_stats(entry, runners["cbackprop"])
    return entry


def warmup_checks(entry, runners, peer_npz, sizes, dtype, X, Y, perm0, mbs):
    """After the warm-up round: entry["checks"] (every in-process implementation and peer
    against numpy, and the rounding control) and entry["same_algorithm"] (the verdicts)."""
    entry["checks"] = same_algorithm_checks(runners)
    numpy_params = _flat(runners["numpy"].params())
    controls = rounding_controls(sizes, dtype, X, Y, perm0, mbs, numpy_params)
    control = max(controls)
    entry["rounding_controls"] = controls
    entry["checks"]["control: numpy with a rounding-level change vs numpy (largest of 3)"] = control
    entry["same_algorithm"] = peer_checks(peer_npz, sizes, dtype, X, Y, perm0, mbs, numpy_params, control)
    for peer, v in entry["same_algorithm"].items():
        if "warmup" in v:
            entry["checks"][f"{peer} vs numpy"] = v["warmup"]
    if "cbackprop" in runners and entry.get("one_step_check") is not None:
        entry["same_algorithm"]["cbackprop"] = verdict(
            entry["one_step_check"], entry["checks"]["cbackprop vs numpy"], control, dtype)


def thread_stats(entry, runner):
    """The threads that took part in cbackprop's timed epochs (see README: the table
    header)."""
    used = runner.threads_used[1:]                              # the timed epochs
    known = [u for u in used if u is not None]
    entry["cbackprop_threads_used"] = used
    entry["cbackprop_num_threads"] = max(set(known), key=known.count) if known else None


def memory_check(cbackprop, sizes, dtype, X, Y, mbs):
    """What one sgd epoch of a fresh network allocates, traced with tracemalloc (NumPy
    reports every array buffer to it, and cbackprop's C code allocates nothing: its blobs
    and workspace are NumPy arrays).  Returns bytes: `data` (X and Y, allocated before),
    `network` (what Network() allocated: parameters and gradient blob), `epoch_peak` (the
    most the epoch held at once above that), and the parts the epoch is expected to hold:
    `params`, `grads`, `workspace` (engine.workspace_nbytes(): the mini-batch's blocks and
    each thread's packed panels), `permutation` (int64 [n]) and `snapshot` (the copy of the
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
    return rel_diff(net.weights + net.biases, W + B)


def same_algorithm_checks(runners):
    """max|param - numpy's param| / max|numpy's param| after the same warm-up epoch."""
    numpy_params = _flat(runners["numpy"].params())
    out = {}
    for impl in ("cbackprop", "cbackprop-1thread", "cbackprop-pyloop"):
        if impl in runners:
            out[f"{impl} vs numpy"] = rel_diff(_flat(runners[impl].params()), numpy_params)
    if "cbackprop" in runners and "cbackprop-1thread" in runners:   # threads: bitwise the same
        (W1, B1), (W2, B2) = runners["cbackprop"].params(), runners["cbackprop-1thread"].params()
        out["cbackprop vs cbackprop-1thread (bitwise)"] = max(
            float(np.abs(a - b).max()) for a, b in zip(W1 + B1, W2 + B2)) / max(
            float(np.abs(p).max()) for p in numpy_params)
    return out


def finish_entry(entry, name, dtype, n, ceilings):
    """GFLOP/s, speed-up over numpy and fractions of the ceilings for every implementation,
    whether each peer computes numpy's algorithm, and the fastest peer."""
    flops = n * flops_per_sample(entry["sizes"])
    entry["gflop_per_epoch"] = flops / 1e9
    multi = (entry.get("cbackprop_num_threads") or 1) >= 2
    entry["ceiling"] = "both_cores" if name in BOTH_CORES_CONFIGS or multi else "one_core"
    base = entry["impls"].get(BASELINE_IMPL, {}).get("median")
    same = entry.get("same_algorithm") or {}
    for impl, r in entry["impls"].items():
        if "median" not in r:
            continue
        cdt = "float64" if impl == "network.py-loop" else dtype
        r["gflops"] = flops / r["median"] / 1e9
        r["speedup"] = base / r["median"] if base else float("nan")
        r["frac_one_core"] = r["gflops"] / ceilings[cdt]["one_core"]
        r["frac_both_cores"] = r["gflops"] / ceilings[cdt]["both_cores"]
        r["frac_ceiling"] = r["frac_" + entry["ceiling"]]
        if impl in PEER_MODULES:
            r["matches_numpy"] = bool(same.get(impl, {}).get("ok"))
    cb, py = entry["impls"].get("cbackprop", {}), entry["impls"].get("cbackprop-pyloop", {})
    one = entry["impls"].get("cbackprop-1thread", {})
    if "median" in cb and "median" in py:
        entry["pyloop_overhead_us"] = (py["median"] - cb["median"]) / entry["n_batches"] * 1e6
    if "median" in one and "median" in py:
        entry["pyloop_overhead_vs_1thread_us"] = (py["median"] - one["median"]) / entry["n_batches"] * 1e6
    entry["fastest_peer"] = fastest_peer(entry, name)


def fastest_peer(entry, name):
    """The fastest of PEERS that ran and computes numpy's algorithm (numpy always does: it
    is the yardstick), with cbackprop's ratio to it (peer median / cbackprop median) and the
    aims: at least 1 and AIM[name].  None when neither numpy nor cbackprop ran."""
    impls = entry["impls"]
    ok = [p for p in PEERS if "median" in (impls.get(p) or {})
          and (p == BASELINE_IMPL or impls[p].get("matches_numpy"))]
    if not ok or "median" not in (impls.get("cbackprop") or {}):
        return None
    peer = min(ok, key=lambda p: impls[p]["median"])
    ratio = impls[peer]["median"] / impls["cbackprop"]["median"]
    return {"impl": peer, "median": impls[peer]["median"], "cbackprop_ratio": ratio,
            "aim": AIM[name], "at_least_as_fast": ratio >= 1, "aim_met": ratio >= AIM[name]}


def ceiling_targets(results, ceilings):
    """cbackprop's share of the multiply-add ceiling where issue 14 sets one (CEILING_TARGETS),
    against the best ceiling measured over the whole run (a config's own fractions use the best
    so far, which can be low when the other core was busy early in the run):
    [{config, dtype, impl, ceiling, target, ceiling_gflops, gflops, share, met}]."""
    out = []
    for name, dtype, impl, ceiling, target in CEILING_TARGETS:
        r = ((results.get(dtype) or {}).get(name) or {}).get("impls", {}).get(impl) or {}
        if "gflops" in r:
            share = r["gflops"] / ceilings[dtype][ceiling]
            out.append({"config": name, "dtype": dtype, "impl": impl, "ceiling": ceiling,
                        "target": target, "ceiling_gflops": ceilings[dtype][ceiling],
                        "gflops": r["gflops"], "share": share, "met": share >= target})
    return out

if __name__ == "__main__":
    sys.exit(main())
