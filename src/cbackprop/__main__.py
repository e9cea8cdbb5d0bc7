"""Command line: train a network as in chapter 1 of the book.

    python -m cbackprop                      # same as: cbackprop train
    cbackprop train --epochs 30 --data ../shared/data/mnist.npz --save net.npz
    cbackprop train --data ~/mnist/ --plot curves.png    # a directory of the MNIST IDX files

By default this trains the book's [784, 30, 10] network with the quadratic cost on the MNIST
sample embedded in the package (10,000 training / 2,000 test images, see
cbackprop.datasets.load_sample): 10 epochs, mini-batches of 10, eta 3.0, float32, seed 0.
It prints one line per epoch with the test accuracy and then a summary line; when stdout is a
terminal and tqdm is installed, a progress bar over the epochs runs below those lines.

--data PATH reads an .npz (keys train_x, train_y, test_x, test_y), a directory of the four
MNIST IDX files (plain or .gz) or the book's mnist.pkl.gz (see cbackprop.datasets.load_mnist);
only the training and test images are used (a validation split, if any, is ignored).

--plot PATH draws the learning curves with matplotlib (Agg, no display needed): the test
accuracy after every epoch and the quadratic cost on the first 1,000 training images (the
same fixed subset every epoch).  The format follows PATH's suffix (.png, .pdf, .svg ...;
PNG without one); the file is written atomically like --save.  Without matplotlib the
command stops before training with exit status 2.

--save PATH writes the final parameters with np.savez to exactly PATH (no suffix is added):
"sizes" (int64 array of the layer sizes) and, for layer i = 0 .. L-1, "weights_<i>" shaped
(sizes[i+1], sizes[i]) and "biases_<i>" shaped (sizes[i+1],), in the training dtype.  They
load back with ``net.weights = [d[f"weights_{i}"] for i in ...]`` (same for biases).  The
file is written to a temporary file in the same directory and then renamed onto PATH, so an
existing PATH is replaced whole or not at all.

Exit status: 0 on success, 2 for a bad option, unusable --data or --plot without matplotlib
(argparse style, with a message on stderr), 1 if --save or --plot fails after training, 130
on Ctrl-C.
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import time

from ._atomic import atomic_path
from ._progress import EpochProgress

N_IN, N_OUT = 784, 10
COMMANDS = ("train",)
COST_SUBSET = 1000  # training images the --plot cost curve is measured on


# ---- option types: each raises ArgumentTypeError, which argparse reports as
# ---- "argument --name: message" with exit status 2 -----------------------------------------
def _sizes(text):
    parts = [p.strip() for p in text.split(",")]
    try:
        sizes = [int(p) for p in parts]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers such as 784,30,10, got {text!r}") from None
    if len(sizes) < 2:
        raise argparse.ArgumentTypeError(f"need at least an input and an output layer, got {text!r}")
    if any(n < 1 for n in sizes):
        raise argparse.ArgumentTypeError(f"every layer needs at least 1 neuron, got {text!r}")
    if sizes[0] != N_IN or sizes[-1] != N_OUT:
        raise argparse.ArgumentTypeError(
            f"the first layer must be {N_IN} (28x28 pixels) and the last {N_OUT} (digits), got {text!r}")
    return sizes


def _int_at_least(minimum):
    def parse(text):
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be an integer >= {minimum}, got {value}")
        return value
    parse.__name__ = "integer"
    return parse


def _eta(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text}")
    return value


def build_parser():
    parser = argparse.ArgumentParser(
        prog="cbackprop",
        description="Backpropagation for fully-connected sigmoid networks (Nielsen, "
                    "'Neural Networks and Deep Learning'), with C kernels.",
        epilog="With no command, 'train' is run: 'cbackprop --epochs 3' is 'cbackprop train --epochs 3'.")
    from . import __version__
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    train = sub.add_parser(
        "train", help="train a network on MNIST with mini-batch SGD (the default command)",
        description="Train a fully-connected sigmoid network with the quadratic cost and "
                    "mini-batch SGD, as network.py in chapter 1 of the book, and report the test "
                    "accuracy after every epoch.  Without --data it uses the MNIST sample "
                    "embedded in the package (10,000 training / 2,000 test images; MNIST (c) "
                    "Yann LeCun and Corinna Cortes, CC BY-SA 3.0).",
    )
    train.add_argument("--sizes", type=_sizes, default=[N_IN, 30, N_OUT], metavar="N0,N1,...",
                       help=f"layer sizes, comma-separated; first {N_IN}, last {N_OUT} "
                            f"(default {N_IN},30,{N_OUT})")
    train.add_argument("--epochs", type=_int_at_least(1), default=10, metavar="N",
                       help="training epochs (default 10)")
    train.add_argument("--mini-batch-size", type=_int_at_least(1), default=10, metavar="N",
                       help="samples per gradient step (default 10)")
    train.add_argument("--eta", type=_eta, default=3.0, help="learning rate, > 0 (default 3.0)")
    train.add_argument("--dtype", choices=("float32", "float64"), default="float32",
                       help="floating-point type of the network (default float32)")
    train.add_argument("--seed", type=_int_at_least(0), default=0, metavar="N",
                       help="seeds the initial weights and the shuffles (default 0)")
    train.add_argument("--quiet", "-q", action="store_true", help="print only the summary")
    train.add_argument("--data", metavar="PATH", default=None,
                       help="an .npz with keys train_x, train_y, test_x, test_y (such as the "
                            "book-split mnist.npz; uint8 pixels are scaled by 1/256), a "
                            "directory of the four MNIST IDX files (plain or .gz), or the "
                            "book's mnist.pkl.gz (default: the embedded sample)")
    train.add_argument("--save", metavar="PATH", default=None,
                       help="write the final weights and biases to PATH with np.savez "
                            "(keys sizes, weights_<i>, biases_<i>; PATH is used as given, "
                            "replaced atomically if it exists)")
    train.add_argument("--plot", metavar="PATH", default=None,
                       help="write learning curves (test accuracy and training cost per "
                            "epoch) to PATH with matplotlib; format from the suffix, PNG by "
                            "default (needs matplotlib)")
    return parser, train


def _with_default_command(argv):
    """Insert 'train' when no command is given (no arguments, or options only)."""
    if not argv:
        return ["train"]
    first = argv[0]
    if first in COMMANDS or first in ("-h", "--help", "--version"):
        return argv
    if first.startswith("-"):
        return ["train", *argv]
    return argv  # a positional that is not a command: let argparse say "invalid choice"


def _check_save_target(path, train, option="--save"):
    parent = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        train.error(f"argument {option}: {path!r} is a directory")
    if not os.path.isdir(parent):
        train.error(f"argument {option}: directory {parent!r} does not exist")
    if not os.access(parent, os.W_OK | os.X_OK):
        train.error(f"argument {option}: directory {parent!r} is not writable")


def _check_plot_target(path, train):
    """Before training: matplotlib is importable, the format is known, the directory writable."""
    from . import _plot

    try:
        _plot.plot_format(path)
    except (_plot.MatplotlibMissing, ValueError) as exc:
        train.error(f"argument --plot: {exc}")
    _check_save_target(path, train, "--plot")


def _is_zip(path):
    try:
        with open(path, "rb") as f:
            return f.read(2) == b"PK"
    except OSError:
        return False


def _load_data(path, datasets):
    """((x_train, y_train), (x_test, y_test)) from --data: an .npz through load_npz (float
    pixels kept as they are), anything else through load_mnist."""
    if _is_zip(path):
        return datasets.load_npz(path)
    train, _val, test = datasets.load_mnist(path)
    return train, test


def save_parameters(net, path):
    """np.savez the parameters to a temporary file next to path, then os.replace onto path."""
    import numpy as np

    arrays = {"sizes": np.asarray(net.sizes, dtype=np.int64)}
    for i, (w, b) in enumerate(zip(net.weights, net.biases)):
        arrays[f"weights_{i}"] = np.array(w)
        arrays[f"biases_{i}"] = np.array(b)
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, **arrays)


def _percent(correct, total):
    return f"{100.0 * correct / total:.2f}% ({correct}/{total})"


def train(args, parser):
    import numpy as np

    from . import datasets

    if args.save is not None:
        _check_save_target(args.save, parser)
    if args.plot is not None:
        _check_plot_target(args.plot, parser)
    if args.data is None:
        (x_train, y_train), (x_test, y_test) = datasets.load_sample()
        source = "embedded MNIST sample"
    else:
        try:
            (x_train, y_train), (x_test, y_test) = _load_data(args.data, datasets)
        except (OSError, ValueError, TypeError) as exc:
            parser.error(f"argument --data: {exc}")
        source = args.data
    if x_train.shape[0] == 0 or x_test.shape[0] == 0:
        parser.error(f"argument --data: need at least one training and one test image, got "
                     f"{x_train.shape[0]} and {x_test.shape[0]}")

    from .network import Network

    dtype = np.dtype(args.dtype)
    try:
        net = Network(args.sizes, dtype=dtype, seed=args.seed)
    except MemoryError:
        parser.error(f"argument --sizes: not enough memory for a {args.sizes} network")
    except (ValueError, TypeError) as exc:
        parser.error(f"argument --sizes: {exc}")
    X = np.ascontiguousarray(x_train, dtype=dtype)  # converted once, not once per epoch
    Y = datasets.one_hot(y_train, N_OUT, dtype=dtype)
    Xt = np.ascontiguousarray(x_test, dtype=dtype)
    n_test = Xt.shape[0]
    width = len(str(args.epochs))
    say = (lambda *a: None) if args.quiet else (lambda *a: print(*a, flush=True))

    say(f"training {args.sizes} ({args.dtype}, seed {args.seed}) on {X.shape[0]} images, "
        f"testing on {n_test} ({source}); epochs {args.epochs}, mini-batch {args.mini_batch_size}, "
        f"eta {args.eta:g}")
    n_cost = min(COST_SUBSET, X.shape[0])
    curves = {"epoch": [], "accuracy": [], "cost": []}  # for --plot
    best = None  # (correct, epoch)
    start = time.perf_counter()
    with EpochProgress(args.epochs, quiet=args.quiet) as progress:
        for epoch in range(1, args.epochs + 1):
            # One sgd call per epoch, so each line appears as soon as its epoch ends.  This is
            # the same computation as one sgd call with epochs=N: every call draws its shuffle
            # from the network's own generator, in the same order.
            (rec,) = net.sgd(X, Y, 1, args.mini_batch_size, args.eta, test_data=(Xt, y_test))
            correct = rec["test_correct"]
            if best is None or correct > best[0]:
                best = (correct, epoch)
            if args.plot is not None:
                curves["epoch"].append(epoch)
                curves["accuracy"].append(100.0 * correct / n_test)
                curves["cost"].append(net.cost(X[:n_cost], Y[:n_cost]))
            progress.report(f"epoch {epoch:>{width}}/{args.epochs}  test accuracy "
                            f"{_percent(correct, n_test)}  {rec['seconds']:.2f} s",
                            100.0 * correct / n_test)
    total = time.perf_counter() - start
    print(f"best test accuracy {_percent(best[0], n_test)} at epoch {best[1]}/{args.epochs}; "
          f"final {100.0 * correct / n_test:.2f}%; total {total:.2f} s", flush=True)

    status = 0
    if args.save is not None:
        try:
            save_parameters(net, args.save)
        except OSError as exc:
            print(f"cbackprop: error: cannot save to {args.save!r}: {exc}", file=sys.stderr)
            status = 1
        else:
            say(f"saved weights and biases to {args.save}")
    if args.plot is not None:
        from . import _plot

        try:
            _plot.write_learning_curves(
                args.plot, curves["epoch"], curves["accuracy"], curves["cost"],
                title=f"{args.sizes}, eta {args.eta:g}, mini-batch {args.mini_batch_size} ({source})",
                cost_label=f"training cost\n(first {n_cost} images)")
        except Exception as exc:  # OSError, or anything matplotlib raises: the run is done
            print(f"cbackprop: error: cannot write the plot to {args.plot!r}: {exc}",
                  file=sys.stderr)
            status = 1
        else:
            say(f"wrote learning curves to {args.plot}")
    return status


def main(argv=None) -> int:
    """Run the command line with argv (default sys.argv[1:]); returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser, train_parser = build_parser()
    try:
        args = parser.parse_args(_with_default_command(argv))
        if args.command == "train":
            return train(args, train_parser)
        parser.error(f"unknown command {args.command!r}")  # pragma: no cover
    except SystemExit as exc:  # argparse errors (2), --help / --version (0)
        code = exc.code
        return code if isinstance(code, int) else (0 if code is None else 1)
    except KeyboardInterrupt:
        print("cbackprop: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `cbackprop | head -1`: stop quietly, as Python's docs advise
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1


if __name__ == "__main__":
    sys.exit(main())
