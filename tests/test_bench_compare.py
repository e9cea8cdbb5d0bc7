"""The benchmark's regression check (benchmarks/bench.py --compare) on made-up results."""
import importlib.util
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "benchmarks" / "bench.py"
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


def _run(script, *args):
    import subprocess
    import sys
    return subprocess.run([sys.executable, str(BENCH.parent / script), *args], capture_output=True,
                          text=True, timeout=300)


def test_benchmarks_run_end_to_end(tmp_path):
    """The harnesses themselves (a smoke run: 5,000 samples, one timed epoch), so that an API
    change that breaks them fails here rather than in a contributor's benchmark run."""
    out = tmp_path / "b.json"
    proc = _run("bench.py", "--quick", "--dtype", "float32", "--configs", "N1", "--no-torch",
                "--repeats", "1", "--impls", "cbackprop,reference", "--settle", "0", "--json", str(out))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "speed-up over numpy" in proc.stdout and out.exists()
    proc = _run("bench_options.py", "--quick", "--dtype", "float64", "--configs", "N1", "--variants",
                "default,mu=0.5,softmax+log-lik", "--repeats", "1", "--settle", "0")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "mu=0.5" in proc.stdout and "every network's parameters stayed finite" in proc.stdout
