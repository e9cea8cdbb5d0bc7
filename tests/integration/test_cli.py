"""The command line (python -m cbackprop: train, evaluate, predict, info) end to end, and the
embedded MNIST sample behind it (cbackprop.datasets).

Accuracy thresholds were measured on the embedded sample with [784, 30, 10], mini-batch 10,
eta 3.0, float32:
  seed 0:        76.00 % after epoch 1, 85.10 % after 2, 88.55 % after 3, 91.20 % after 10
  seeds 0..9:    at least 78.45 % after epoch 2, 80.25 % after 3, best of 10 epochs >= 90.60 %
so the tests ask for >= 80 % after 3 epochs and >= 90 % for the default 10-epoch run.
"""
from __future__ import annotations

import io
import os
import re
import subprocess
import sys

import numpy as np
import pytest

from cbackprop import datasets
from cbackprop.__main__ import main

EPOCH_RE = re.compile(
    r"^epoch +(\d+)/(\d+)  test accuracy (\d+\.\d\d)% \((\d+)/(\d+)\)  (\d+\.\d\d) s$", re.M)
SUMMARY_RE = re.compile(
    r"^best test accuracy (\d+\.\d\d)% \((\d+)/(\d+)\) at epoch (\d+)/(\d+); "
    r"final (\d+\.\d\d)%; total (\d+\.\d\d) s$", re.M)


def run_cli(*args, cwd=None):
    """sys.executable -m cbackprop ARGS in a fresh process; (returncode, stdout, stderr)."""
    proc = subprocess.run([sys.executable, "-m", "cbackprop", *map(str, args)],
                          capture_output=True, text=True, timeout=300, cwd=cwd)
    return proc.returncode, proc.stdout, proc.stderr


def epochs_of(stdout):
    return [(int(e), int(n), float(acc), int(c), int(t))
            for e, n, acc, c, t, _seconds in EPOCH_RE.findall(stdout)]


def summary_of(stdout):
    found = SUMMARY_RE.findall(stdout)
    assert len(found) == 1, f"expected one summary line in:\n{stdout}"
    best, correct, total, best_epoch, epochs, final, seconds = found[0]
    return dict(best=float(best), correct=int(correct), total=int(total), best_epoch=int(best_epoch),
                epochs=int(epochs), final=float(final), seconds=float(seconds))


# ---- end to end, in a subprocess --------------------------------------------------------------
def test_default_run_no_command_reaches_90_percent(tmp_path):
    code, out, err = run_cli(cwd=tmp_path)  # no command and no options: train with the defaults
    assert code == 0, err
    assert "Traceback" not in err
    lines = epochs_of(out)
    assert [(e, n) for e, n, *_ in lines] == [(e, 10) for e in range(1, 11)]
    assert all(total == 2000 for *_, total in lines)
    s = summary_of(out)
    assert s["epochs"] == 10 and s["total"] == 2000
    assert s["best"] == max(acc for _, _, acc, _, _ in lines)
    assert s["final"] == lines[-1][2]
    assert s["best"] >= 90.0, out


def test_train_three_epochs_and_save(tmp_path):
    target = tmp_path / "net.npz"
    target.write_bytes(b"an older file that --save must replace")
    code, out, err = run_cli("train", "--epochs", 3, "--seed", 0, "--save", target, cwd=tmp_path)
    assert code == 0, err
    lines = epochs_of(out)
    assert [(e, n) for e, n, *_ in lines] == [(1, 3), (2, 3), (3, 3)]
    for _, _, acc, correct, total in lines:
        assert total == 2000 and acc == pytest.approx(100 * correct / total, abs=0.006)
    s = summary_of(out)
    assert s["epochs"] == 3 and 1 <= s["best_epoch"] <= 3
    assert s["best"] >= 80.0, out
    assert f"saved the network to {target} (epoch 3, test accuracy {lines[-1][2]:.2f}%)" in out

    with np.load(target) as d:
        assert {"biases_0", "biases_1", "sizes", "weights_0", "weights_1", "format", "version",
                "activations", "cost", "dtype", "checksum"} == set(d.files)
        assert d["sizes"].tolist() == [784, 30, 10]
        assert d["weights_0"].shape == (30, 784) and d["biases_0"].shape == (30,)
        assert d["weights_1"].shape == (10, 30) and d["biases_1"].shape == (10,)
        params = [k for k in d.files if k.startswith(("weights_", "biases_"))]
        assert all(d[k].dtype == np.float32 for k in params)
        assert all(np.isfinite(d[k]).all() for k in params)
        # The saved parameters are the trained network: they score the reported final accuracy.
        import cbackprop
        net = cbackprop.Network([784, 30, 10], dtype=np.float32)
        net.weights = [d["weights_0"], d["weights_1"]]
        net.biases = [d["biases_0"], d["biases_1"]]
    (_, _), (x_test, y_test) = datasets.load_sample()
    assert net.evaluate(x_test, y_test) == lines[-1][3]
    assert cbackprop.load(target).evaluate(x_test, y_test) == lines[-1][3]   # the versioned loader
    assert sorted(p.name for p in tmp_path.iterdir()) == ["net.npz"]  # no temporary file left


def test_quiet_float64_data_option(tmp_path):
    # A small --data file, images as (n, 28, 28) uint8, to exercise the loader and the options.
    (x, y), (xt, yt) = datasets.load_sample()
    u8 = lambda a: np.round(a * 256).astype(np.uint8)  # noqa: E731  exact inverse of u8/256
    data = tmp_path / "small.npz"
    np.savez(data, train_x=u8(x[:600]).reshape(-1, 28, 28), train_y=y[:600],
             test_x=u8(xt[:150]), test_y=yt[:150])
    save = tmp_path / "w64.npz"
    code, out, err = run_cli("--quiet", "--dtype", "float64", "--sizes", "784,16,12,10",
                             "--epochs", 2, "--mini-batch-size", 20, "--eta", 2.5, "--seed", 7,
                             "--data", data, "--save", save, cwd=tmp_path)
    assert code == 0, err
    assert epochs_of(out) == [] and "saved" not in out and "training" not in out and "best" in out
    s = summary_of(out)
    assert s["epochs"] == 2 and s["total"] == 150
    with np.load(save) as d:
        assert d["sizes"].tolist() == [784, 16, 12, 10]
        assert [d[f"weights_{i}"].shape for i in range(3)] == [(16, 784), (12, 16), (10, 12)]
        assert [d[f"biases_{i}"].shape for i in range(3)] == [(16,), (12,), (10,)]
        assert d["weights_0"].dtype == np.float64


@pytest.mark.parametrize("args, option", [
    (["--sizes", "10,5"], "--sizes"),
    (["train", "--eta", "-1"], "--eta"),
    (["--dtype", "int8"], "--dtype"),
])
def test_bad_option_exits_2_subprocess(args, option):
    code, out, err = run_cli(*args)
    assert code == 2
    assert f"argument {option}:" in err
    assert "Traceback" not in err
    assert epochs_of(out) == []


# ---- option checking in-process (no training happens before the checks) ------------------------
@pytest.mark.parametrize("args, needle", [
    (["--sizes", "784,30,9"], "argument --sizes: the data has 784 inputs and 10 outputs per sample, so "
                               "the sizes must run from 784 to 10, got 784,30,9"),
    (["--sizes", "780,30,10"], "argument --sizes: the data has 784 inputs"),
    (["--sizes", "784,30,10", "--hidden", "20"], "argument --sizes: give --sizes or --hidden, not both"),
    (["--hidden", "20,x"], "argument --hidden: expected comma-separated integers"),
    (["--sizes", "784"], "argument --sizes: need at least an input and an output layer"),
    (["--sizes", "784,x,10"], "argument --sizes: expected comma-separated integers"),
    (["--sizes", "784,0,10"], "argument --sizes: every layer needs at least 1 neuron"),
    (["--eta", "0"], "argument --eta: must be a finite number > 0"),
    (["--eta", "nan"], "argument --eta: must be a finite number > 0"),
    (["--eta", "fast"], "argument --eta: expected a number"),
    (["--epochs", "0"], "argument --epochs: must be an integer >= 1"),
    (["--mini-batch-size", "2.5"], "argument --mini-batch-size: expected an integer"),
    (["--seed", "-1"], "argument --seed: must be an integer >= 0"),
    (["--dtype", "float16"], "argument --dtype: invalid choice"),
    (["--frobnicate"], "unrecognized arguments: --frobnicate"),
    (["bogus"], "invalid choice: 'bogus'"),
])
def test_bad_option_in_process(args, needle, capsys):
    assert main(args) == 2
    captured = capsys.readouterr()
    assert needle in captured.err
    assert captured.out == ""
    assert captured.err.count("\n") == 1 and "usage:" not in captured.err  # one line, no usage block


def test_bad_data_and_save_paths(tmp_path, capsys):
    assert main(["--data", str(tmp_path / "missing.npz")]) == 2
    assert "argument --data: cannot read" in capsys.readouterr().err

    not_npz = tmp_path / "notes.txt"
    not_npz.write_text("not an archive")
    assert main(["--data", str(not_npz)]) == 2
    assert "argument --data:" in capsys.readouterr().err

    partial = tmp_path / "partial.npz"
    np.savez(partial, train_x=np.zeros((3, 784), np.uint8))
    assert main(["--data", str(partial)]) == 2
    assert "has train_x without train_y" in capsys.readouterr().err

    no_test = tmp_path / "no_test.npz"
    np.savez(no_test, train_x=np.zeros((3, 784), np.uint8), train_y=np.array([0, 1, 2]))
    assert main(["--data", str(no_test)]) == 2
    assert "argument --evaluate: " + str(no_test) + " has no test split (it has train)" in capsys.readouterr().err

    bad_labels = tmp_path / "labels.npz"
    np.savez(bad_labels, train_x=np.zeros((3, 784), np.uint8), train_y=np.array([0, 1, -1]),
             test_x=np.zeros((1, 784), np.uint8), test_y=np.array([0]))
    assert main(["--data", str(bad_labels)]) == 2
    assert "train_y labels must be >= 0, got -1" in capsys.readouterr().err

    single = tmp_path / "x.npy"
    np.save(single, np.zeros((3, 784)))
    assert main(["--data", str(single)]) == 2
    assert "is a single .npy array, which holds no labels" in capsys.readouterr().err

    assert main(["--save", str(tmp_path / "no" / "such" / "dir.npz"), "--epochs", "1"]) == 2
    assert "argument --save: directory" in capsys.readouterr().err
    assert main(["--save", str(tmp_path), "--epochs", "1"]) == 2
    assert "argument --save:" in capsys.readouterr().err


def test_help_and_version_return_0(capsys):
    assert main(["--help"]) == 0
    assert "train" in capsys.readouterr().out
    assert main(["train", "--help"]) == 0
    out = capsys.readouterr().out
    for option in ("--sizes", "--epochs", "--mini-batch-size", "--eta", "--dtype", "--seed",
                   "--quiet", "--data", "--save"):
        assert option in out
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.startswith("cbackprop ")


# ---- the embedded sample ----------------------------------------------------------------------
def test_load_sample_shapes_dtypes_range_balance():
    (x_train, y_train), (x_test, y_test) = datasets.load_sample()
    assert x_train.shape == (10000, 784) and x_test.shape == (2000, 784)
    assert x_train.dtype == np.float32 and x_test.dtype == np.float32
    assert y_train.shape == (10000,) and y_test.shape == (2000,)
    assert y_train.dtype == np.uint8 and y_test.dtype == np.uint8
    for x in (x_train, x_test):
        assert x.flags.c_contiguous
        assert x.min() == 0.0 and x.max() == np.float32(255 / 256)
        u8 = x * 256  # the book's values are exactly u8/256
        assert np.array_equal(u8, np.round(u8))
    assert np.bincount(y_train, minlength=10).tolist() == [1000] * 10
    assert np.bincount(y_test, minlength=10).tolist() == [200] * 10
    # every call returns fresh arrays
    (x2, _), _ = datasets.load_sample()
    assert x2 is not x_train and np.array_equal(x2, x_train)


def test_sample_file_is_small_and_has_the_documented_keys():
    from importlib import resources
    ref = resources.files("cbackprop").joinpath("data").joinpath("mnist_sample.npz")
    with resources.as_file(ref) as path:
        assert os.path.getsize(path) < 2 * 1024 * 1024
        with np.load(path) as d:
            assert sorted(d.files) == ["test_x", "test_y", "train_x", "train_y"]
            assert all(d[k].dtype == np.uint8 for k in d.files)


def test_one_hot():
    Y = datasets.one_hot(np.array([3, 0, 9], dtype=np.uint8))
    assert Y.shape == (3, 10) and Y.dtype == np.float64
    assert Y.argmax(axis=1).tolist() == [3, 0, 9] and Y.sum() == 3
    assert datasets.one_hot([1], n_classes=4, dtype=np.float32).tolist() == [[0, 1, 0, 0]]
    assert datasets.one_hot(np.zeros(0, np.int64)).shape == (0, 10)
    with pytest.raises(ValueError, match=r"\[0, 10\)"):
        datasets.one_hot([10])
    with pytest.raises(TypeError, match="integers"):
        datasets.one_hot([0.5])


def test_datasets_does_not_import_the_compiled_module():
    code = ("import sys, cbackprop.datasets as d; d.load_sample(); d.one_hot([1]); "
            "bad = [m for m in ('cbackprop._core', 'cbackprop.network') if m in sys.modules]; "
            "assert not bad, bad")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr


# ---- --plot without matplotlib, and the progress bar ------------------------------------------
BLOCK = "import sys; sys.modules[{mod!r}] = None; "  # import of mod now raises ModuleNotFoundError
RUN_MAIN = "from cbackprop.__main__ import main; sys.exit(main(sys.argv[1:]))"


def test_plot_without_matplotlib_exits_2_before_training(tmp_path):
    png = tmp_path / "curves.png"
    proc = subprocess.run(
        [sys.executable, "-c", BLOCK.format(mod="matplotlib") + RUN_MAIN,
         "--epochs", "1", "--plot", str(png)],
        capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert ("argument --plot: matplotlib is not installed; install it with "
            "'pip install matplotlib'") in proc.stderr
    assert "Traceback" not in proc.stderr
    assert epochs_of(proc.stdout) == [] and "best test accuracy" not in proc.stdout
    assert not png.exists()


def test_help_lists_the_new_options(capsys):
    assert main(["train", "--help"]) == 0
    out = capsys.readouterr().out
    assert "--plot" in out and "IDX" in out and "mnist.pkl.gz" in out


def small_data(tmp_path):
    (x, y), (xt, yt) = datasets.load_sample()
    data = tmp_path / "small.npz"
    np.savez(data, train_x=np.round(x[:600] * 256).astype(np.uint8), train_y=y[:600],
             test_x=np.round(xt[:150] * 256).astype(np.uint8), test_y=yt[:150])
    return data


def run_in_pty(args, block=None, cwd=None, rows=24, cols=100):
    """The CLI with stdout on a pseudo-terminal (stderr piped); (returncode, output, stderr)."""
    pty = pytest.importorskip("pty")
    import fcntl
    import struct
    import termios

    master, slave = pty.openpty()
    if rows:
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
    code = (BLOCK.format(mod=block) if block else "import sys; ") + RUN_MAIN
    try:
        proc = subprocess.Popen([sys.executable, "-c", code, *map(str, args)], stdout=slave,
                                stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, cwd=cwd)
    finally:
        os.close(slave)
    chunks = []
    try:
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(master)
    err = proc.stderr.read().decode()
    proc.stderr.close()
    proc.wait(timeout=300)
    return proc.returncode, b"".join(chunks).decode("utf-8", "replace").replace("\r\n", "\n"), err


def on_screen(out):
    """Each line as a terminal leaves it: the text after its last carriage return."""
    return "\n".join(line.rsplit("\r", 1)[-1] for line in out.split("\n"))


@pytest.mark.skipif(sys.platform == "win32", reason="needs a pseudo-terminal")
@pytest.mark.parametrize("rows", [24, 0], ids=["sized", "unsized"])
def test_progress_bar_on_a_terminal(tmp_path, rows):
    pytest.importorskip("tqdm")
    code, out, err = run_in_pty(["--epochs", 2, "--data", small_data(tmp_path)], cwd=tmp_path,
                                rows=rows)
    assert code == 0, err
    assert "epoch/s" in out and "2/2 [" in out  # tqdm's bar, over the epochs
    shown = on_screen(out)  # what the terminal shows at the end: the bar is gone, lines stay
    assert "epoch/s" not in shown
    assert [(e, n) for e, n, *_ in epochs_of(shown)] == [(1, 2), (2, 2)]
    summary_of(shown)


@pytest.mark.skipif(sys.platform == "win32", reason="needs a pseudo-terminal")
def test_no_progress_bar_without_tqdm_or_when_quiet(tmp_path):
    data = small_data(tmp_path)
    code, out, err = run_in_pty(["--epochs", 2, "--data", data], block="tqdm", cwd=tmp_path)
    assert code == 0, err
    assert "epoch/s" not in out and "Traceback" not in err
    assert [(e, n) for e, n, *_ in epochs_of(out)] == [(1, 2), (2, 2)]
    code, out, err = run_in_pty(["--epochs", 1, "--quiet", "--data", data], cwd=tmp_path)
    assert code == 0, err
    assert "epoch/s" not in out and epochs_of(out) == []
    summary_of(out)


class FakeTerminal(io.StringIO):
    def isatty(self):
        return True


def test_epoch_progress_chooses_bar_or_lines(monkeypatch):
    from cbackprop._progress import EpochProgress

    plain = io.StringIO()
    with EpochProgress(2, stream=plain) as p:  # not a terminal: plain lines
        assert not p.uses_bar
        p.report("epoch 1/2", 50.0)
    assert plain.getvalue() == "epoch 1/2\n"

    quiet = FakeTerminal()
    with EpochProgress(2, stream=quiet, quiet=True) as p:
        assert not p.uses_bar
        p.report("epoch 1/2", 50.0)
    assert quiet.getvalue() == ""

    try:
        import tqdm  # noqa: F401
    except ImportError:
        pass  # tqdm is optional
    else:
        term = FakeTerminal()
        with EpochProgress(2, stream=term) as p:
            assert p.uses_bar
            p.report("epoch 1/2", 50.0)
            p.report("epoch 2/2", 75.0)
        text = term.getvalue()
        assert "epoch 1/2\n" in text and "epoch 2/2\n" in text and "test 75.00%" in text

    monkeypatch.setitem(sys.modules, "tqdm", None)  # tqdm absent: plain lines, no error
    term = FakeTerminal()
    with EpochProgress(2, stream=term) as p:
        assert not p.uses_bar
        p.report("epoch 1/2", 50.0)
    assert term.getvalue() == "epoch 1/2\n"


# ---- chapter-3 options ------------------------------------------------------------------------
def test_chapter3_options_train_and_save_what_they_say(tmp_path):
    """--activations/--cost/--init/--lmbda/--mu reach the network: the saved file records them
    and its parameters give the reported accuracy; the run learns (>= 80 % after 3 epochs on
    the sample, measured 91.85 % for this configuration with seed 0)."""
    target = tmp_path / "net.npz"
    code, out, err = run_cli("train", "--epochs", 3, "--activations", "relu,softmax", "--cost",
                             "log-likelihood", "--init", "default", "--eta", "0.1", "--lmbda", "1",
                             "--mu", "0.5", "--save", target)
    assert code == 0, err
    assert "activations relu,softmax, cost log-likelihood, init default, lmbda 1.0, mu 0.5" in out
    s = summary_of(out)
    assert s["best"] >= 80.0, out
    import cbackprop
    net = cbackprop.load(target)
    assert net.activations == ("relu", "softmax") and net.cost_name == "log-likelihood"
    (_, _), (x_test, y_test) = datasets.load_sample()
    assert net.evaluate(x_test, y_test) == epochs_of(out)[-1][3]


@pytest.mark.parametrize("args, option, message", [
    (("--cost", "cross-entropy", "--activations", "relu"), "--cost", "needs a sigmoid output layer"),
    (("--cost", "log-likelihood"), "--cost", "needs a softmax output layer"),
    (("--activations", "softmax,sigmoid"), "--activations", "only allowed for the output layer"),
    (("--activations", "sigmoid,sigmoid,sigmoid"), "--activations", "one activation per layer"),
    (("--activations", "swish"), "--activations", "unknown activation 'swish'"),
    (("--lmbda", "-1"), "--lmbda", "must be a finite number >= 0"),
    (("--mu", "1.5"), "--mu", "must lie in [0, 1]"),
    (("--lmbda", "1e9"), "--lmbda", "must be < 1"),
    (("--evaluate", "validation"), "--evaluate", "no validation split"),
    (("--early-stopping", "0"), "--early-stopping", "must be an integer >= 1"),
])
def test_chapter3_option_errors(args, option, message, capsys):
    assert main(["train", "--epochs", "1", *args]) == 2
    err = capsys.readouterr().err
    assert f"argument {option}" in err and message in err, err


def test_validation_split_early_stopping_and_schedule(tmp_path):
    """--evaluate validation reads the data's validation split; --early-stopping and
    --eta-schedule stop the run and say why."""
    (x, y), (xt, yt) = datasets.load_sample()
    u8 = lambda a: np.round(a * 256).astype(np.uint8)  # noqa: E731
    data = tmp_path / "d.npz"
    np.savez(data, train_x=u8(x[:600]), train_y=y[:600], val_x=u8(x[600:800]), val_y=y[600:800],
             test_x=u8(xt[:100]), test_y=yt[:100])
    # a learning rate this small leaves the accuracy flat after the first epoch
    code, out, err = run_cli("train", "--data", data, "--evaluate", "validation", "--epochs", 20,
                             "--eta", "1e-9", "--early-stopping", 2)
    assert code == 0, err
    assert "evaluating on 200 validation samples" in out
    lines = re.findall(r"^epoch +(\d+)/20  validation accuracy", out, re.M)
    assert lines == ["1", "2", "3"], out
    assert "stopped: early stopping: no better evaluation accuracy" in out
    code, out, err = run_cli("train", "--data", data, "--evaluate", "validation", "--epochs", 50,
                             "--eta", "1e-9", "--eta-schedule", 1)
    assert code == 0, err
    etas = re.findall(r"validation accuracy .* s  eta (\S+)$", out, re.M)
    assert [float(e) for e in etas] == [1e-9, 1e-9] + [1e-9 / 2**k for k in range(1, 7)], out
    assert "stopped: eta schedule: eta halved to" in out and "= eta/128" in out


# ---- any data set: sizes from the data, labels or target rows, .npz or a directory of .npy -------
def blobs(n, n_in=12, k=3, seed=0):
    """n samples of k well-separated Gaussian blobs in n_in dimensions, labels 0..k-1."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 1, (k, n_in))
    y = rng.integers(0, k, n)
    return (centres[y] + rng.normal(0, 0.3, (n, n_in))).astype(np.float64), y


def test_train_infers_sizes_from_any_npz_and_learns(tmp_path, capsys):
    x, y = blobs(500)
    (x, y), (xt, yt) = (x[:400], y[:400]), (x[400:], y[400:])
    data = tmp_path / "blobs.npz"
    np.savez(data, train_x=x.reshape(400, 3, 4), train_y=y, test_x=xt, test_y=yt)  # 3x4 flattened
    save = tmp_path / "blobs-net.npz"
    assert main(["--data", str(data), "--hidden", "8", "--epochs", "5", "--eta", "1", "--save", str(save)]) == 0
    out = capsys.readouterr().out
    assert "training [12, 8, 3] (float32, seed 0) on 400 samples, evaluating on 100 test samples" in out
    assert summary_of(out)["best"] >= 90.0, out
    import cbackprop
    net = cbackprop.load(save)
    assert net.sizes == (12, 8, 3)
    assert net.evaluate(xt.astype(np.float32), yt) == epochs_of(out)[-1][3]

    # target rows instead of labels, no hidden layer, float64; a directory of .npy files
    d = tmp_path / "npy"
    d.mkdir()
    np.save(d / "train_x.npy", x)
    np.save(d / "train_y.npy", np.eye(3)[y])
    np.save(d / "test_x.npy", xt)
    np.save(d / "test_y.npy", np.eye(3)[yt])
    assert main(["--data", str(d), "--hidden", "none", "--dtype", "float64", "--epochs", "2",
                 "--quiet"]) == 0
    assert summary_of(capsys.readouterr().out)["total"] == 100


@pytest.mark.parametrize("arrays, needle", [
    (dict(train_x=np.zeros((3, 4)), train_y=np.zeros((3, 2), np.float32), test_x=np.zeros((2, 4)),
          test_y=np.zeros(2, np.int64)), "test_y mixes labels and target rows"),
    (dict(train_x=np.zeros((3, 4)), train_y=np.zeros(3, np.int64), test_x=np.zeros((2, 5)),
          test_y=np.zeros(2, np.int64)), "test_x has 5 inputs per sample, train_x or the other splits 4"),
    (dict(train_x=np.zeros((3, 4)), train_y=np.zeros(4, np.int64), test_x=np.zeros((2, 4)),
          test_y=np.zeros(2, np.int64)), "train_y must have shape (3,) (labels) or (3, outputs)"),
    (dict(train_x=np.zeros((3, 4), np.int32), train_y=np.zeros(3, np.int64), test_x=np.zeros((2, 4)),
          test_y=np.zeros(2, np.int64)), "train_x must hold uint8 pixels (scaled by 1/256) or floats"),
    (dict(train_x=np.full((3, 4), np.nan), train_y=np.zeros(3, np.int64), test_x=np.zeros((2, 4)),
          test_y=np.zeros(2, np.int64)), "train_x must hold only finite values"),
    (dict(train_x=np.zeros((3, 4)), train_y=np.zeros(3), test_x=np.zeros((2, 4)),
          test_y=np.zeros(2, np.int64)), "train_y labels must be integers, got dtype float64"),
])
def test_bad_data_sets_are_one_line_errors(tmp_path, capsys, arrays, needle):
    data = tmp_path / "d.npz"
    np.savez(data, **arrays)
    assert main(["--data", str(data), "--epochs", "1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("cbackprop train: error: argument --data: ") and needle in err, err
    assert err.count("\n") == 1


def test_npz_member_declaring_more_than_memory_is_refused_before_reading(tmp_path, capsys):
    """A member whose .npy header declares a huge array is refused from the header: nothing of
    that size is allocated (the archive is a few hundred bytes)."""
    import zipfile
    header = np.lib.format.header_data_from_array_1_0(np.zeros(1))
    header["shape"] = (1 << 40, 8)
    import io as _io
    buf = _io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, header)
    data = tmp_path / "bomb.npz"
    with zipfile.ZipFile(data, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("train_x.npy", buf.getvalue() + b"\0" * 64)
        zf.writestr("train_y.npy", buf.getvalue())
    assert data.stat().st_size < 2000
    assert main(["--data", str(data), "--epochs", "1"]) == 2
    err = capsys.readouterr().err
    assert "argument --data:" in err and "declares shape (1099511627776, 8)" in err, err


# ---- --resume, --keep -------------------------------------------------------------------------------
def test_resume_continues_from_the_saved_parameters(tmp_path, capsys):
    """--resume MODEL trains the saved network on: the result is the Python API's
    cbackprop.load(MODEL, seed=s).sgd(...) bit for bit."""
    import cbackprop
    data = small_data(tmp_path)
    first, second = tmp_path / "first.npz", tmp_path / "second.npz"
    assert main(["--data", str(data), "--epochs", "1", "--dtype", "float64", "--save", str(first), "-q"]) == 0
    assert main(["--data", str(data), "--epochs", "2", "--resume", str(first), "--seed", "5",
                 "--save", str(second)]) == 0
    out = capsys.readouterr().out
    assert f"resuming {first} [784, 30, 10] (float64, seed 5)" in out
    net = cbackprop.load(first, seed=5)
    (x, y), _ = datasets.load_npz(data)
    net.sgd(x.astype(np.float64), datasets.one_hot(y), 2, 10, 3.0)
    resumed = cbackprop.load(second)
    for a, b in zip(net.weights + net.biases, resumed.weights + resumed.biases):
        assert np.array_equal(a, b)

    assert main(["--data", str(data), "--resume", str(first), "--cost", "cross-entropy"]) == 2
    assert "argument --cost: not allowed with --resume" in capsys.readouterr().err
    other = tmp_path / "other.npz"
    cbackprop.Network([20, 5, 10]).save(other)
    assert main(["--data", str(data), "--resume", str(other)]) == 2
    assert "argument --resume: the model has 20 inputs and 10 outputs, the data 784 inputs" in capsys.readouterr().err
    assert main(["--resume", str(tmp_path / "missing.npz")]) == 2
    assert "argument --resume: cannot read" in capsys.readouterr().err


def test_keep_best_saves_the_best_epoch(tmp_path, capsys):
    import cbackprop
    data = small_data(tmp_path)
    save = tmp_path / "best.npz"
    assert main(["--data", str(data), "--epochs", "6", "--eta", "8", "--keep", "best", "--save", str(save)]) == 0
    out = capsys.readouterr().out
    s = summary_of(out)
    assert f"(epoch {s['best_epoch']}, test accuracy {s['best']:.2f}%)" in out
    (_, _), (xt, yt) = datasets.load_npz(data)
    assert cbackprop.load(save).evaluate(xt, yt) == s["correct"]


# ---- Ctrl-C: the last kept epoch is on disk, exit status 130 ---------------------------------------
INTERRUPTED_RE = re.compile(r"cbackprop: interrupted after epoch (\d+); (.+) holds epoch (\d+) "
                            r"\(test accuracy (\d+\.\d\d)% \((\d+)/(\d+)\)\)")


def _interrupt_after(args, n_lines, cwd, timeout=60):
    """Start the CLI, send SIGINT once it has printed n_lines epoch lines; (code, out, err)."""
    import signal
    import threading

    lines, seen = [], threading.Event()
    with subprocess.Popen([sys.executable, "-m", "cbackprop", *map(str, args)], cwd=cwd, text=True,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE) as proc:
        def read():
            for line in proc.stdout:
                lines.append(line)
                if len(EPOCH_RE.findall("".join(lines))) >= n_lines:
                    seen.set()
        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        try:
            assert seen.wait(timeout), f"no {n_lines} epoch lines in {timeout} s:\n{''.join(lines)}"
            proc.send_signal(signal.SIGINT)
            err = proc.stderr.read()
            code = proc.wait(timeout=timeout)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=timeout)
        reader.join(timeout)
    return code, "".join(lines), err


@pytest.mark.skipif(sys.platform == "win32", reason="SIGINT to a subprocess")
@pytest.mark.parametrize("after", [1, 3])
def test_ctrl_c_saves_the_last_epoch_and_exits_130(tmp_path, after):
    import cbackprop
    data = small_data(tmp_path)
    save = tmp_path / "net.npz"
    code, out, err = _interrupt_after(["--data", data, "--epochs", 100000, "--save", save], after, tmp_path)
    assert code == 130, (out, err)
    assert "Traceback" not in err
    found = INTERRUPTED_RE.search(err)
    assert found, err
    last, path, kept, _, correct, total = found.groups()
    assert path == str(save) and int(kept) in (int(last), int(last) - 1) and int(kept) >= after - 1
    (_, _), (xt, yt) = datasets.load_npz(data)
    assert cbackprop.load(save).evaluate(xt, yt) == int(correct) and int(total) == 150
    printed = {e: c for e, _, _, c, _ in epochs_of(out)}
    if int(kept) in printed:
        assert printed[int(kept)] == int(correct)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["net.npz", "small.npz"]  # no temporary


@pytest.mark.skipif(sys.platform == "win32", reason="SIGINT to a subprocess")
def test_ctrl_c_without_save_says_nothing_was_saved(tmp_path):
    code, out, err = _interrupt_after(["--data", small_data(tmp_path), "--epochs", 100000], 1, tmp_path)
    assert code == 130 and "nothing saved (no --save)" in err and "Traceback" not in err


# ---- evaluate, predict, info ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def model(tmp_path_factory):
    """A [784, 30, 10] float32 network trained 2 epochs on the sample, saved; (path, net)."""
    import cbackprop
    path = tmp_path_factory.mktemp("model") / "net.npz"
    (x, y), _ = datasets.load_sample()
    net = cbackprop.Network([784, 30, 10], dtype=np.float32, seed=0)
    net.sgd(x, datasets.one_hot(y, dtype=np.float32), 2, 10, 3.0)
    net.save(path)
    return path, net


def test_evaluate_prints_accuracy_and_cost(model, tmp_path, capsys):
    path, net = model
    (_, _), (xt, yt) = datasets.load_sample()
    assert main(["evaluate", str(path)]) == 0
    out = capsys.readouterr().out
    correct = net.evaluate(xt, yt)
    cost = net.cost(xt, datasets.one_hot(yt, dtype=np.float32))
    assert out == (f"test accuracy {100 * correct / 2000:.2f}% ({correct}/2000); cost {cost:.6g} "
                   f"(quadratic, average per sample) on embedded MNIST sample\n")
    data = small_data(tmp_path)
    assert main(["evaluate", str(path), "--data", str(data), "--split", "train"]) == 0
    (x, y), _ = datasets.load_npz(data)
    assert f"train accuracy {100 * net.evaluate(x, y) / 600:.2f}% ({net.evaluate(x, y)}/600)" in capsys.readouterr().out
    assert main(["evaluate", str(path), "--split", "validation"]) == 2
    assert "argument --split: embedded MNIST sample has no validation split" in capsys.readouterr().err


def test_predict_arrays_images_probabilities_and_output(model, tmp_path, capsys):
    path, net = model
    (_, _), (xt, _) = datasets.load_sample()
    expected = np.argmax(net.feedforward(xt[:5]), axis=1)
    np.save(tmp_path / "five.npy", np.round(xt[:5] * 256).astype(np.uint8).reshape(5, 28, 28))
    np.savez(tmp_path / "one.npz", x=xt[5])
    assert main(["predict", str(path), str(tmp_path / "five.npy"), str(tmp_path / "one.npz")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines == [f"{tmp_path / 'five.npy'}[{i}]\t{expected[i]}" for i in range(5)] + \
        [f"{tmp_path / 'one.npz'}[0]\t{np.argmax(net.feedforward(xt[5]))}"]

    assert main(["predict", str(path), str(tmp_path / "five.npy"), "--proba",
                 "--output", str(tmp_path / "p.npz")]) == 0
    assert "wrote 5 predictions to" in capsys.readouterr().out
    with np.load(tmp_path / "p.npz") as d:
        assert d["labels"].tolist() == expected.tolist()
        A = net.feedforward(xt[:5]).astype(np.float64)
        assert np.allclose(d["probabilities"].sum(axis=1), 1) and d["probabilities"].shape == (5, 10)
        assert np.argmax(d["probabilities"], axis=1).tolist() == np.argmax(A, axis=1).tolist()

    Image = pytest.importorskip("PIL.Image")
    png = tmp_path / "digit.png"
    u8 = np.round(xt[0] * 256).astype(np.uint8).reshape(28, 28)
    Image.fromarray(u8).save(png)
    Image.fromarray(255 - u8).save(tmp_path / "paper.png")
    assert main(["predict", str(path), str(png), "--proba"]) == 0
    name, label, probs = capsys.readouterr().out.rstrip("\n").split("\t")
    assert name == str(png) and int(label) == expected[0] and len(probs.split()) == 10
    assert main(["predict", str(path), str(tmp_path / "paper.png"), "--invert"]) == 0
    assert capsys.readouterr().out == f"{tmp_path / 'paper.png'}\t{expected[0]}\n"
    Image.fromarray(np.zeros((10, 10), np.uint8)).save(tmp_path / "small.png")
    assert main(["predict", str(path), str(tmp_path / "small.png")]) == 2
    assert "small.png is 10x10 = 100 pixels, but the model has 784 inputs" in capsys.readouterr().err


def test_predict_rejects_inputs_of_the_wrong_width(model, tmp_path, capsys):
    path, _ = model
    np.save(tmp_path / "wide.npy", np.zeros((2, 785)))
    assert main(["predict", str(path), str(tmp_path / "wide.npy")]) == 2
    err = capsys.readouterr().err
    assert "argument INPUT:" in err and "785 inputs per sample, the model 784" in err and err.count("\n") == 1


def test_info_shows_sizes_options_and_checks(model, tmp_path, capsys):
    path, _ = model
    assert main(["info", str(path)]) == 0
    out = capsys.readouterr().out
    with np.load(path) as d:
        checksum = str(d["checksum"])
    for line in ("format       cbackprop-network version 1",
                 "sizes        [784, 30, 10] (23,860 parameters, 2 layers)",
                 "activations  sigmoid, sigmoid", "cost         quadratic", "dtype        float32",
                 f"checksum     {checksum}"):
        assert line in out, out
    checks = [line for line in out.splitlines() if line.startswith("checks ")]
    assert len(checks) == 1 and checks[0].endswith("finite parameters, sha256 checksum"), out

    damaged = tmp_path / "damaged.npz"
    with np.load(path) as d:
        members = dict(d)
    members["biases_1"] = members["biases_1"] + 1
    np.savez(damaged, **members)
    assert main(["info", str(damaged)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("cbackprop info: error: argument MODEL:") and "checksum" in err and err.count("\n") == 1


def test_info_and_evaluate_read_network2_json_and_legacy_files(model, tmp_path, capsys):
    import cbackprop
    _, net = model
    js = tmp_path / "net2.json"
    net.save_network2(js)
    assert main(["info", str(js)]) == 0
    out = capsys.readouterr().out
    assert "network2.py JSON" in out and "no checksum recorded" in out and "float64" in out
    assert main(["evaluate", str(js)]) == 0
    (_, _), (xt, yt) = datasets.load_sample()
    assert f"({cbackprop.load_network2(js).evaluate(xt, yt)}/2000)" in capsys.readouterr().out

    legacy = tmp_path / "legacy.npz"
    np.savez(legacy, sizes=np.array([784, 30, 10]), **{f"weights_{i}": w for i, w in enumerate(net.weights)},
             **{f"biases_{i}": b for i, b in enumerate(net.biases)})
    assert main(["info", str(legacy)]) == 0
    assert "unversioned cbackprop .npz" in capsys.readouterr().out


# ---- --max-images -------------------------------------------------------------------------------------
def test_max_images_refuses_a_data_set_that_declares_more_before_reading_it(tmp_path, capsys, model):
    """An .npz whose train_x declares 500,010 images of deflated zeros (392 MB from a file of
    a few hundred KB) was read whole and trained on; now every command that reads data
    refuses it from the headers, with --max-images' default of 100,000, allocating nothing
    of that size."""
    import tracemalloc

    import hostile
    bomb = hostile.mnist_npz_bomb(str(tmp_path))
    assert os.path.getsize(bomb) < 1_000_000
    want = (f"argument --data: {bomb} holds 500010 samples, more than --max-images allows (100000); give a larger "
            f"--max-images to read it")
    for args in (["train", "--data", bomb, "--epochs", "1"], ["evaluate", str(model[0]), "--data", bomb]):
        tracemalloc.start()
        try:
            assert main(args) == 2
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        err = capsys.readouterr().err
        assert err.endswith(want + "\n") and err.count("\n") == 1, err
        assert peak < 20 << 20, peak


def test_max_images_applies_to_every_format(tmp_path, capsys, model):
    import hostile
    data = small_data(tmp_path)                     # 600 + 150 samples
    assert main(["train", "--data", str(data), "--epochs", "1", "--max-images", "749", "-q"]) == 2
    assert "holds 750 samples, more than --max-images allows (749)" in capsys.readouterr().err
    assert main(["train", "--data", str(data), "--epochs", "1", "--max-images", "750", "-q"]) == 0
    capsys.readouterr()
    # a directory of .npy files (read memory-mapped: counted from the headers)
    d = tmp_path / "npy"
    d.mkdir()
    with np.load(data) as z:
        for key in z.files:
            np.save(d / f"{key}.npy", z[key])
    assert main(["evaluate", str(model[0]), "--data", str(d), "--max-images", "700"]) == 2
    assert "holds 750 samples, more than --max-images allows (700)" in capsys.readouterr().err
    # the MNIST formats: load_mnist's max_images
    idx = hostile.mnist_idx_gz_bomb(str(tmp_path), scale=0.001)     # 500 training images declared
    assert main(["evaluate", str(model[0]), "--data", idx, "--max-images", "300"]) == 2
    err = capsys.readouterr().err
    assert "the header declares 500 images, more than this loader accepts (max_images=300" in err, err
    # predict: the INPUTs together
    np.save(tmp_path / "a.npy", np.zeros((3, 784), np.float32))
    np.savez(tmp_path / "b.npz", x=np.zeros((4, 784), np.float32))
    assert main(["predict", str(model[0]), str(tmp_path / "a.npy"), str(tmp_path / "b.npz"), "--max-images", "6"]) == 2
    assert "holds 4 samples, more than --max-images allows (3)" in capsys.readouterr().err
    assert main(["predict", str(model[0]), str(tmp_path / "b.npz"), str(tmp_path / "a.npy"), "--max-images", "6"]) == 2
    assert "the INPUTs up to " in capsys.readouterr().err
    assert main(["predict", str(model[0]), str(tmp_path / "a.npy"), str(tmp_path / "b.npz"), "--max-images", "7"]) == 0
    assert main(["train", "--max-images", "0"]) == 2
    assert "argument --max-images: must be an integer >= 1, got 0" in capsys.readouterr().err
