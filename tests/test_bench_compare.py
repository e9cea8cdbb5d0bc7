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
