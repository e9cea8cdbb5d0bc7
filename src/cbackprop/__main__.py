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
the validation split is used only with --evaluate validation.

--plot PATH draws the learning curves with matplotlib (Agg, no display needed): accuracy and
cost (network2's total_cost, with the L2 term) after every epoch, on the whole training set
and on the evaluation split.  The format follows PATH's suffix (.png, .pdf, .svg ...;
PNG without one); the file is written atomically like --save.  Without matplotlib the
command stops before training with exit status 2.

--save PATH writes the trained network with Network.save: a versioned .npz holding sizes,
activations, cost, dtype, "weights_<i>" shaped (sizes[i+1], sizes[i]) and "biases_<i>"
shaped (sizes[i+1],) for i = 0 .. L-1, and a checksum; ``cbackprop.load(PATH)`` reads it
back.  PATH is used exactly as given (no suffix is added).  The file is written to a
temporary file in the same directory and then renamed onto PATH, so an existing PATH is
replaced whole or not at all.

Chapter 3 options: --activations, --cost, --init, --lmbda (L2, network2's weight decay with
n the training-set size), --mu (momentum), --evaluate validation (report and stop on the
data's validation split instead of the test split), --early-stopping N and --eta-schedule N.
network2.py's run, for instance:

    cbackprop train --data ../shared/data/mnist.npz --epochs 30 --eta 0.5 \
        --cost cross-entropy --lmbda 5.0 --init default --dtype float64

Exit status: 0 on success, 2 for a bad option, unusable --data or --plot without matplotlib
(argparse style, with a message on stderr), 1 if --save or --plot fails after training, 130
on Ctrl-C.
"""
from __future__ import annotations

import argparse
import functools
import math
import os
import sys
import time

from ._validation import ACTIVATIONS, COSTS, INITS, check_hyper
from ._progress import EpochProgress

N_IN, N_OUT = 784, 10
COMMANDS = ("train",)


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


def _real(positive):
    """A finite number > 0 (positive) or >= 0, for argparse."""
    def parse(text):
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if not math.isfinite(value) or value < 0 or (positive and value == 0):
            raise argparse.ArgumentTypeError(f"must be a finite number {'>' if positive else '>='} 0, got {text}")
        return value
    parse.__name__ = "number"
    return parse


_eta = _real(positive=True)
_nonneg = _real(positive=False)


def _activations(text):
    names = tuple(p.strip() for p in text.split(","))
    for name in names:
        if name not in ACTIVATIONS:
            raise argparse.ArgumentTypeError(f"unknown activation {name!r}; choose from {', '.join(ACTIVATIONS)}")
    return names


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
    train.add_argument("--activations", type=_activations, default=("sigmoid",), metavar="NAME[,NAME...]",
                       help="activation of every layer after the input (one name) or of each "
                            "(comma-separated): sigmoid, tanh, relu, identity, softmax (output "
                            "only); default sigmoid")
    train.add_argument("--cost", choices=COSTS, default="quadratic",
                       help="cost function (default quadratic); cross-entropy needs a sigmoid "
                            "output layer, log-likelihood a softmax one")
    train.add_argument("--init", choices=INITS, default="large",
                       help="initial weights: large = N(0, 1) as network.py (default), default = "
                            "N(0, 1/n_in) as network2.py")
    train.add_argument("--lmbda", type=_nonneg, default=0.0,
                       help="L2 regularisation parameter, >= 0; weights decay by "
                            "1 - eta*lmbda/n per mini-batch, n the training-set size (default 0)")
    train.add_argument("--mu", type=_nonneg, default=0.0,
                       help="momentum coefficient in [0, 1] (default 0: plain SGD)")
    train.add_argument("--evaluate", choices=("test", "validation"), default="test",
                       help="the split reported after every epoch and used by --early-stopping "
                            "and --eta-schedule (validation: the data's validation split; the "
                            "embedded sample has none) (default test)")
    train.add_argument("--early-stopping", type=_int_at_least(1), default=None, metavar="N",
                       help="stop after N epochs without a better evaluation accuracy")
    train.add_argument("--eta-schedule", type=_int_at_least(1), default=None, metavar="N",
                       help="halve eta after N epochs without a better evaluation accuracy; stop "
                            "when it reaches eta/128")
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


def _load_data(path, datasets, validation):
    """(train, evaluation) pairs (x, labels) from --data: an .npz through load_npz (float
    pixels kept as they are) unless the validation split is wanted, anything else through
    load_mnist.  evaluation is the test split, or the validation split (None if absent)."""
    if _is_zip(path) and not validation:
        return datasets.load_npz(path)
    train, val, test = datasets.load_mnist(path)
    return train, (val if validation else test)


def _percent(correct, total):
    return f"{100.0 * correct / total:.2f}% ({correct}/{total})"


def _network_kwargs(args):
    activations = args.activations[0] if len(args.activations) == 1 else list(args.activations)
    return dict(activations=activations, cost=args.cost, init=args.init)


def train(args, parser):
    import numpy as np

    from . import datasets

    if args.save is not None:
        _check_save_target(args.save, parser)
    if args.plot is not None:
        _check_plot_target(args.plot, parser)
    if args.mu > 1:
        parser.error(f"argument --mu: must lie in [0, 1], got {args.mu}")
    split = args.evaluate
    if args.data is None:
        if split == "validation":
            parser.error("argument --evaluate: the embedded sample has no validation split; use --data")
        (x_train, y_train), (x_eval, y_eval) = datasets.load_sample()
        source = "embedded MNIST sample"
    else:
        try:
            (x_train, y_train), evaluation = _load_data(args.data, datasets, split == "validation")
        except (OSError, ValueError, TypeError) as exc:
            parser.error(f"argument --data: {exc}")
        if evaluation is None:
            parser.error(f"argument --evaluate: {args.data} has no validation split")
        x_eval, y_eval = evaluation
        source = args.data
    if x_train.shape[0] == 0 or x_eval.shape[0] == 0:
        parser.error(f"argument --data: need at least one training and one {split} image, got "
                     f"{x_train.shape[0]} and {x_eval.shape[0]}")

    from . import distributed
    from .network import Network

    # Under `mpiexec -n 2` or more: data-parallel training (cbackprop.distributed, the same
    # result as one process); every rank runs this with the same arguments and takes its
    # rows of the training and evaluation sets; rank 0 prints, saves and plots.
    dist = distributed.is_distributed()
    rank, size = distributed.world() if dist else (0, 1)
    n_train = x_train.shape[0]
    n_eval = x_eval.shape[0]
    if dist:
        x_train, y_train = distributed.take_shard(x_train, y_train)
        x_eval, y_eval = distributed.take_shard(x_eval, y_eval)
    dtype = np.dtype(args.dtype)
    kwargs = _network_kwargs(args)
    try:
        net = Network(args.sizes, dtype=dtype, seed=args.seed, **kwargs)
    except MemoryError:
        parser.error(f"argument --sizes: not enough memory for a {args.sizes} network")
    except (ValueError, TypeError) as exc:
        msg = str(exc)
        option = ("--activations" if msg.startswith("activations") else "--cost" if msg.startswith("cost")
                  else "--sizes")
        parser.error(f"argument {option}: {msg}")
    try:  # the weight decay 1 - eta * lmbda / n must stay positive (n: all training rows)
        check_hyper(args.eta, args.lmbda, n_train, args.mu, dtype)
    except ValueError as exc:
        parser.error(f"argument --lmbda: {exc}")
    X = np.ascontiguousarray(x_train, dtype=dtype)  # converted once, not once per epoch
    Y = datasets.one_hot(y_train, N_OUT, dtype=dtype)
    Xe = np.ascontiguousarray(x_eval, dtype=dtype)
    width = len(str(args.epochs))
    quiet = args.quiet or rank != 0
    say = (lambda *a: None) if quiet else (lambda *a: print(*a, flush=True))

    options = "".join(f", {name} {value}" for name, value in (
        ("activations", ",".join(args.activations)), ("cost", args.cost), ("init", args.init),
        ("lmbda", args.lmbda), ("mu", args.mu)) if value not in (("sigmoid",), "sigmoid", "quadratic", "large", 0.0))
    say(f"training {args.sizes} ({args.dtype}, seed {args.seed}{options}) on {n_train} images, "
        f"evaluating on {n_eval} {split} images ({source}); epochs {args.epochs}, mini-batch "
        f"{args.mini_batch_size}, eta {args.eta:g}" + (f"; {size} MPI ranks" if dist else ""))
    plot = args.plot is not None
    curves = {k: [] for k in ("epoch", "evaluation_accuracy", "evaluation_cost", "training_accuracy",
                              "training_cost")}
    best = [None]  # (correct, epoch)
    last = [None]
    start = time.perf_counter()
    with EpochProgress(args.epochs, quiet=quiet) as progress:
        def report(rec):
            epoch = rec["epoch"]
            correct = round(rec["evaluation_accuracy"] * n_eval)
            last[0] = (correct, epoch)
            if best[0] is None or correct > best[0][0]:
                best[0] = (correct, epoch)
            if plot:
                curves["epoch"].append(epoch)
                for key in ("evaluation_accuracy", "training_accuracy"):
                    curves[key].append(100.0 * rec[key])
                for key in ("evaluation_cost", "training_cost"):
                    curves[key].append(rec[key])
            eta_note = f"  eta {rec['eta']:g}" if args.eta_schedule else ""
            progress.report(f"epoch {epoch:>{width}}/{args.epochs}  {split} accuracy "
                            f"{_percent(correct, n_eval)}  {rec['seconds']:.2f} s{eta_note}",
                            100.0 * correct / n_eval)
            if "stop_reason" in rec:
                say(f"stopped: {rec['stop_reason']}")

        # distributed.sgd(net, ...) takes net.sgd's arguments; X, Y, Xe are this rank's rows
        sgd = functools.partial(distributed.sgd, net) if dist else net.sgd
        try:
            sgd(X, Y, args.epochs, args.mini_batch_size, args.eta, lmbda=args.lmbda, mu=args.mu,
                    evaluation_data=(Xe, y_eval), monitor_evaluation_accuracy=True,
                    monitor_evaluation_cost=plot, monitor_training_cost=plot, monitor_training_accuracy=plot,
                    early_stopping_n=args.early_stopping, eta_schedule_n=args.eta_schedule, callback=report)
        except FloatingPointError as exc:
            print(f"cbackprop: error: {exc}", file=sys.stderr)
            return 1
    total = time.perf_counter() - start
    if rank != 0:  # every rank has the same parameters: rank 0 reports, saves and plots
        return 0
    (bc, be), (lc, le) = best[0], last[0]
    print(f"best {split} accuracy {_percent(bc, n_eval)} at epoch {be}/{args.epochs}; "
          f"final {100.0 * lc / n_eval:.2f}%; total {total:.2f} s", flush=True)

    status = 0
    if args.save is not None:
        try:
            net.save(args.save)
        except OSError as exc:
            print(f"cbackprop: error: cannot save to {args.save!r}: {exc}", file=sys.stderr)
            status = 1
        else:
            say(f"saved the network to {args.save}")
    if plot:
        from . import _plot

        try:
            _plot.write_learning_curves(
                args.plot, curves["epoch"], curves["evaluation_accuracy"], curves["evaluation_cost"],
                curves["training_accuracy"], curves["training_cost"], evaluation_label=split,
                title=f"{args.sizes}, eta {args.eta:g}, mini-batch {args.mini_batch_size}{options} ({source})")
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
            # under mpiexec, a failure on one rank only ends every rank (MPI_Abort), not a hang
            from .distributed import call_or_abort
            return call_or_abort(train, args, train_parser)
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
