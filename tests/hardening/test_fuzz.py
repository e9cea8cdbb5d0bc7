"""Fuzz every public entry point of cbackprop (the Network methods, the loaders, saving,
datasets.load_mnist) with generated bad and good input and hostile files: the program is
tests/fuzzing.py (its docstring states the rules every call must keep), run in a
subprocess so that a crash in C shows up as a return code instead of killing pytest."""
import pathlib
import subprocess
import sys

import pytest

FUZZ = pathlib.Path(__file__).resolve().parents[1] / "fuzzing.py"


def run_fuzz(tmp_path, n_calls, seed, timeout):
    work = tmp_path / "work"   # the fuzz saves and loads files only in here (and its cwd)
    work.mkdir()
    proc = subprocess.run([sys.executable, str(FUZZ), str(n_calls), str(seed), str(work)],
                          capture_output=True, text=True, timeout=timeout, cwd=work)
    summary = [line for line in proc.stdout.splitlines() if line.startswith("FUZZ ")]
    report = f"returncode={proc.returncode}\nstdout tail:\n{proc.stdout[-3000:]}\nstderr tail:\n{proc.stderr[-6000:]}"
    assert proc.returncode == 0, report
    assert len(summary) == 1, report
    calls = int(summary[0].split()[1].split("=")[1])
    assert calls == n_calls, report
    print(summary[0])
    print([line for line in proc.stdout.splitlines() if line.startswith("PER-METHOD ")][0])


def test_fuzz_a_short_run(tmp_path):
    run_fuzz(tmp_path, 1_000, 20261203, timeout=120)


@pytest.mark.slow
def test_fuzz_every_public_method_in_a_subprocess(tmp_path):
    run_fuzz(tmp_path, 8_000, 20261123, timeout=300)


@pytest.mark.slow
def test_fuzz_long_run(tmp_path):
    run_fuzz(tmp_path, 92_000, 20261124, timeout=1200)
