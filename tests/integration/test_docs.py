"""The documentation's code runs: every ```python block of the README (each in a fresh
interpreter) and of each page in docs/ (a page's blocks in order, in one fresh interpreter),
and every script in examples/ at a small scale, with its figure (marked slow).

Blocks fenced as ```python are run; blocks meant to be shown only (MPI scripts, downloads)
are fenced as ```py.  All run in a temporary directory: the files they write stay there.
"""
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
EXAMPLES = ROOT / "examples"
pytestmark = pytest.mark.skipif(not (DOCS / "conf.py").exists() or not EXAMPLES.is_dir(),
                                reason="not a source checkout")
TIMEOUT = 300


def python_blocks(path):
    return re.findall(r"^```python\n(.*?)^```", path.read_text(), re.S | re.M)


def run_python(code, cwd, *args):
    proc = subprocess.run([sys.executable, "-c", code, *args] if code else [sys.executable, *args],
                          cwd=cwd, capture_output=True, text=True, timeout=TIMEOUT,
                          env=None)
    assert proc.returncode == 0, f"exit {proc.returncode}\n--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}"
    return proc.stdout


def readme_blocks():
    path = ROOT / "README.md"
    return python_blocks(path) if path.exists() else []


@pytest.mark.parametrize("index", range(len(readme_blocks())))
def test_readme_python_block_runs_as_written(index, tmp_path):
    run_python(readme_blocks()[index], tmp_path)


def test_readme_has_python_blocks():
    assert readme_blocks(), "the README's quickstart should be a ```python block"


DOC_PAGES = sorted(p.relative_to(DOCS).as_posix() for p in DOCS.rglob("*.md")
                   if "_build" not in p.parts and python_blocks(p)) if DOCS.is_dir() else []


#: modules of optional extras that a page may import: the page is skipped without them
OPTIONAL = ("sklearn", "matplotlib", "pandas", "mpi4py", "PIL", "tqdm")


def skip_without_optional_imports(code):
    for module in sorted(set(re.findall(r"^\s*(?:from|import)\s+(\w+)", code, re.M)) & set(OPTIONAL)):
        pytest.importorskip(module, reason=f"the page imports {module} (an optional extra)")


@pytest.mark.parametrize("page", DOC_PAGES)
def test_doc_page_python_blocks_run_in_order(page, tmp_path):
    code = "\n".join(python_blocks(DOCS / page))
    skip_without_optional_imports(code)
    run_python(code, tmp_path)


def test_the_pages_with_code_are_found():
    assert {"quickstart.md", "guide/book.md", "guide/chapter3.md", "guide/saving.md"} <= set(DOC_PAGES)


# ---- examples, at a small scale ------------------------------------------------------------
# Marked slow (a few seconds each, mostly starting Python with matplotlib): the README's test
# command skips them; .ci/run runs them, and its documentation build runs them at full scale.
def run_example(name, tmp_path, *args):
    pytest.importorskip("matplotlib")
    png = tmp_path / f"{name}.png"
    out = run_python(None, tmp_path, str(EXAMPLES / f"{name}.py"), *args, "--plot", str(png))
    assert png.read_bytes().startswith(b"\x89PNG\r\n\x1a\n") and png.stat().st_size > 5000
    return out


@pytest.mark.slow
def test_example_network_py(tmp_path):
    out = run_example("network_py", tmp_path, "--epochs", "3", "--n-train", "2000")
    epochs = re.findall(r"^Epoch (\d+): (\d+) / 2000$", out, re.M)
    assert [int(e) for e, _ in epochs] == [0, 1, 2], out
    correct = [int(c) for _, c in epochs]
    assert correct[-1] > correct[0] and max(correct) >= 1000, out   # it learns: measured 449, 801, 1223
    assert re.search(r"^best: \d+\.\d\d % after epoch \d of 3; 2000 training images, float64", out, re.M), out


@pytest.mark.slow
def test_example_overfitting(tmp_path):
    out = run_example("overfitting", tmp_path, "--epochs", "30", "--n-train", "200")
    runs = re.findall(r"^lmbda (\S+): test accuracy best (\d+\.\d\d) % .* training cost (\d+\.\d+) -> (\d+\.\d+);",
                      out, re.M)
    assert [r[0] for r in runs] == ["0", "0.1"], out
    for _, _, first, last in runs:
        assert float(last) < float(first), out            # the training cost falls


@pytest.mark.slow
def test_example_gradient_check(tmp_path):
    out = run_example("gradient_check", tmp_path, "--sizes", "784,8,10", "--m", "4",
                      "--max-per-layer", "40", "--sweep-per-layer", "5")
    errors = re.findall(r"^ *(quadratic|cross-entropy|log-likelihood): max relative error (\S+) ", out, re.M)
    assert [c for c, _ in errors] == ["quadratic", "cross-entropy", "log-likelihood"], out
    assert all(float(e) < 1e-6 for _, e in errors), out   # backprop agrees with finite differences
