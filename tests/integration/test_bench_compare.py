"""The benchmark's regression check (benchmarks/bench.py --compare) on made-up results."""
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "bench.py"
pytestmark = pytest.mark.skipif(not BENCH.exists(), reason="not a source checkout")


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def result(**speedups):
    return {"results": {"float32": {cfg: {"impls": {"cbackprop": {"speedup": v}}}
                                    for cfg, v in speedups.items()}}}


def test_within_margin_passes(bench):
    rows, ok = bench.compare_results(result(N1=5.0, N3=2.5), result(N1=4.0, N3=2.6), margin=0.25)
    assert ok
    assert {r["config"]: r["status"] for r in rows} == {"N1": "ok", "N3": "ok"}


def test_a_speedup_falling_past_the_margin_fails(bench):
    rows, ok = bench.compare_results(result(N1=5.0, N3=2.5), result(N1=3.7, N3=2.5), margin=0.25)
    assert not ok
    assert [r["status"] for r in rows if r["config"] == "N1"] == ["REGRESSION"]
    assert "REGRESSION" in bench.format_comparison(rows, 0.25)


def test_a_missing_config_fails(bench):
    _, ok = bench.compare_results(result(N1=5.0, N3=2.5), result(N1=5.0), margin=0.25)
    assert not ok


def _run(script, *args, tmpdir=None):
    env = dict(os.environ, TMPDIR=str(tmpdir)) if tmpdir else None   # bench.py's work files
    return subprocess.run([sys.executable, str(BENCH.parent / script), *args], capture_output=True,
                          text=True, timeout=600, env=env)


@pytest.mark.slow
def test_benchmarks_run_end_to_end(tmp_path):
    """The harnesses themselves (a smoke run: 5,000 samples, one timed epoch), so that an API
    change that breaks them fails here rather than in a contributor's benchmark run."""
    out = tmp_path / "b.json"
    proc = _run("bench.py", "--quick", "--dtype", "float32", "--configs", "N1", "--no-torch",
                "--repeats", "1", "--impls", "cbackprop,reference", "--settle", "0", "--json", str(out),
                tmpdir=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "speed-up over numpy" in proc.stdout and out.exists()
    proc = _run("bench_options.py", "--quick", "--dtype", "float64", "--configs", "N1", "--variants",
                "default,mu=0.5,softmax+log-lik", "--repeats", "1", "--settle", "0")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "mu=0.5" in proc.stdout and "every network's parameters stayed finite" in proc.stdout
    out = tmp_path / "p.json"
    proc = _run("bench_plans.py", "--quick", "--dtype", "float32", "--configs", "N2", "--repeats", "1",
                "--json", str(out))
    assert proc.returncode == 0, proc.stderr[-2000:]
    plans = json.loads(out.read_text())["results"]["float32"]["N2"]["plans"]
    assert plans["alone"]["ran"] == "alone" and plans["feed"]["ran"] in ("feed", "alone")
    assert set(plans) == {"alone", "feed", "split", "tasks", "auto"} and "x1.00" in proc.stdout


# ---- the peers' same-algorithm verdicts and the summary (no peer framework needed) -----------

def test_verdict_tolerances(bench):
    tol = bench.ROUNDING_TOL["float32"]
    assert bench.verdict(tol / 2, tol / 2, 0.0, "float32")["ok"]
    assert not bench.verdict(2 * tol, 0.0, 0.0, "float32")["ok"]          # short epoch off
    assert not bench.verdict(0.0, 2 * tol, 0.0, "float32")["ok"]          # warm-up off, no spread
    v = bench.verdict(0.0, 0.05, 0.01, "float32")                         # warm-up within 10 x control
    assert v["ok"] and v["warmup_tol"] == bench.CONTROL_FACTOR * 0.01
    assert not bench.verdict(0.0, 0.2, 0.01, "float32")["ok"]


def _epoch_params(bench, sizes, X, Y, rows, mbs, eta):
    W, B = bench.init_params(sizes, X.dtype)
    bench.numpy_epoch(W, B, X, Y, rows, mbs, eta)
    return W, B


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_peer_checks_tell_a_different_algorithm(bench, tmp_path, dtype):
    """A 'peer' that saved numpy's own parameters passes; one that used another eta, or that
    left out the epoch's partial mini-batch, fails."""
    rng = np.random.default_rng(1)
    sizes, mbs, n = [784, 6, 10], 10, 45                       # 45 rows: the last mini-batch has 5
    X = rng.random((n, 784)).astype(dtype)
    Y = np.eye(10, dtype=dtype)[rng.integers(0, 10, n)]
    perm = rng.permutation(n)
    short = bench.short_epoch_rows(perm, n, mbs)
    assert len(short) == mbs + 5
    numpy_params = sum(_epoch_params(bench, sizes, X, Y, perm, mbs, bench.ETA), [])
    controls = bench.rounding_controls(sizes, dtype, X, Y, perm, mbs, numpy_params)
    assert len(controls) == 3 and 0 < min(controls) and max(controls) < bench.ROUNDING_TOL[dtype]
    control = max(controls)
    peers = {"same": (bench.ETA, short, perm), "eta": (2 * bench.ETA, short, perm),
             "no-partial": (bench.ETA, short[:mbs], perm[:n - 5])}
    paths = {}
    for name, (eta, rows_short, rows_warm) in peers.items():
        saved = {}
        for prefix, rows in (("short", rows_short), ("warmup", rows_warm)):
            W, B = _epoch_params(bench, sizes, X, Y, rows, mbs, eta)
            saved.update({f"{prefix}_w{i}": w for i, w in enumerate(W)})
            saved.update({f"{prefix}_b{i}": b for i, b in enumerate(B)})
        paths[name] = tmp_path / f"{name}.npz"
        np.savez(paths[name], **saved)
    out = bench.peer_checks(paths, sizes, dtype, X, Y, perm, mbs, numpy_params, control)
    assert out["same"]["ok"] and out["same"]["short"] == 0 and out["same"]["warmup"] == 0
    assert not out["eta"]["ok"] and not out["no-partial"]["ok"]


def _entry(**medians):
    impls = {k: {"median": v} for k, v in medians.items()}
    return {"sizes": [784, 30, 10], "mini_batch_size": 10, "n_batches": 500, "impls": impls,
            "same_algorithm": {k: {"ok": k != "jax-scan"} for k in medians}}


def test_fastest_peer_leaves_out_a_peer_that_does_not_match(bench):
    ceilings = {dt: {"one_core": 100.0, "both_cores": 200.0} for dt in bench.DTYPES}
    e = _entry(cbackprop=0.1, numpy=0.4, torch=0.3, **{"jax-scan": 0.01, "jax-step": 0.2})
    bench.finish_entry(e, "N1", "float32", bench.N_QUICK, ceilings)
    f = e["fastest_peer"]
    assert f["impl"] == "jax-step" and f["cbackprop_ratio"] == pytest.approx(2.0)
    assert f["at_least_as_fast"] and f["aim_met"] and f["aim"] == bench.AIM["N1"]
    assert e["impls"]["jax-scan"]["matches_numpy"] is False
    summary = bench.format_summary({"float32": {"N1": e}})
    assert "jax-step" in summary and "x!" in summary        # jax-scan flagged
    e = _entry(cbackprop=0.35, numpy=0.4, torch=0.3)
    bench.finish_entry(e, "N4", "float32", bench.N_QUICK, ceilings)
    assert e["fastest_peer"]["impl"] == "torch" and not e["fastest_peer"]["at_least_as_fast"]


def test_ceiling_targets(bench):
    flops = bench.flops_per_sample([784, 30, 10])
    assert flops == 2 * (784 * 30 + 30 * 10) + 2 * (30 * 10) + 2 * (784 * 30 + 30 * 10)
    results = {"float32": {"N1": {"impls": {"cbackprop-1thread": {"gflops": 70.0}}},
                           "N4": {"impls": {"cbackprop": {"gflops": 150.0}}}}}
    ceilings = {"float32": {"one_core": 100.0, "both_cores": 200.0}}
    t = {x["config"]: x for x in bench.ceiling_targets(results, ceilings)}
    assert t["N1"]["met"] and t["N1"]["ceiling"] == "one_core" and t["N1"]["share"] == pytest.approx(0.7)
    assert t["N4"]["met"] and t["N4"]["share"] == pytest.approx(0.75)     # 75 %: just met
    ceilings["float32"]["both_cores"] = 201.0
    assert not {x["config"]: x for x in bench.ceiling_targets(results, ceilings)}["N4"]["met"]


@pytest.mark.skipif(not os.environ.get("CBP_PEER_PYTHON"),
                    reason="set CBP_PEER_PYTHON to an interpreter with torch and jax to run the peers")
def test_peers_compute_numpys_algorithm(bench, tmp_path):
    """Every peer, in its child process, on a config with a partial last mini-batch (N5:
    5,000 rows of 32), both dtypes: each must pass the same-algorithm check."""
    out = tmp_path / "p.json"
    proc = _run("bench.py", "--quick", "--dtype", "both", "--configs", "N5", "--repeats", "1",
                "--impls", "numpy," + ",".join(bench.PEER_MODULES), "--settle", "0", "--json", str(out),
                "--peer-python", os.environ["CBP_PEER_PYTHON"], tmpdir=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    results = json.loads(out.read_text())["results"]
    for dtype in ("float32", "float64"):
        entry = results[dtype]["N5"]
        for peer in bench.PEER_MODULES:
            assert "median" in entry["impls"][peer], entry["impls"][peer]
            assert entry["same_algorithm"][peer]["ok"], (dtype, peer, entry["same_algorithm"][peer])
