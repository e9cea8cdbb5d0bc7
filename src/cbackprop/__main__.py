"""The command line: ``cbackprop train | evaluate | predict | info``.

    cbackprop train                               # the book's [784, 30, 10] on the embedded sample
    cbackprop train --data mnist.npz --epochs 30 --save net.npz
    cbackprop evaluate net.npz --data mnist.npz   # accuracy and cost of a saved model
    cbackprop predict net.npz digits.npy 7.png --proba
    cbackprop info net.npz                        # sizes, options and the file's checks

With no command, ``train`` runs (``cbackprop --epochs 3`` is ``cbackprop train --epochs 3``).
The data formats, every option and the exit statuses are documented in the user guide
(docs/cli.md) and in each command's ``--help``.

Exit status: 0 on success; 2 for a bad option or an unusable file (one line on stderr, no
traceback); 1 when training diverges or saving or plotting fails after training started;
130 on Ctrl-C (``train`` first saves the last kept epoch when ``--save`` is given).
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

COMMANDS = ("train", "evaluate", "predict", "info")
DATA_HELP = ("an .npz with arrays train_x, train_y, val_x, val_y, test_x, test_y (whole pairs, "
             "any of them; x: one sample per row, uint8 pixels scaled by 1/256 or floats; y: "
             "integer labels or target rows), a directory of .npy files with those names, a "
             "directory of the four MNIST IDX files (plain or .gz), or the book's mnist.pkl.gz "
             "(default: the MNIST sample embedded in the package)")


class CliError(Exception):
    """A usage problem found after parsing: printed as one line, exit status 2."""

    def __init__(self, option, message):
        super().__init__(f"argument {option}: {message}" if option else message)


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors: 'cbackprop train: error: ...' and a pointer to --help,
    not the whole usage block."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


# ---- option types: ArgumentTypeError becomes "argument --name: message", exit status 2 ----------
def _int_list(text, minimum_length):
    parts = [p.strip() for p in text.split(",")]
    try:
        values = [int(p) for p in parts]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers such as 784,30,10, got {text!r}") from None
    if len(values) < minimum_length:
        raise argparse.ArgumentTypeError(f"need at least an input and an output layer, got {text!r}")
    if any(n < 1 for n in values):
        raise argparse.ArgumentTypeError(f"every layer needs at least 1 neuron, got {text!r}")
    return values


def _sizes(text):
    return _int_list(text, 2)


def _hidden(text):
    return [] if text.strip() in ("", "none") else _int_list(text, 0)


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


def _activations(text):
    names = tuple(p.strip() for p in text.split(","))
    for name in names:
        if name not in ACTIVATIONS:
            raise argparse.ArgumentTypeError(f"unknown activation {name!r}; choose from {', '.join(ACTIVATIONS)}")
    return names


# ---- the parser ---------------------------------------------------------------------------------
def _add_train_network_options(p):
    g = p.add_argument_group("the network (inferred from --resume when given)")
    g.add_argument("--hidden", type=_hidden, default=None, metavar="N[,N...]",
                   help="hidden layer sizes; the input and output sizes come from the data "
                        "(default 30: the book's [784, 30, 10] on MNIST)")
    g.add_argument("--sizes", type=_sizes, default=None, metavar="N0,N1,...",
                   help="all layer sizes instead of --hidden; the first must be the data's inputs "
                        "per sample and the last its outputs (classes)")
    g.add_argument("--activations", type=_activations, default=None, metavar="NAME[,NAME...]",
                   help="activation of every layer after the input (one name) or of each "
                        "(comma-separated): sigmoid, tanh, relu, identity, softmax (output "
                        "only); default sigmoid")
    g.add_argument("--cost", choices=COSTS, default=None,
                   help="cost function (default quadratic); cross-entropy needs a sigmoid "
                        "output layer, log-likelihood a softmax one")
    g.add_argument("--init", choices=INITS, default=None,
                   help="initial weights: large = N(0, 1) as network.py (default), default = "
                        "N(0, 1/n_in) as network2.py")
    g.add_argument("--dtype", choices=("float32", "float64"), default=None,
                   help="floating-point type of the network (default float32)")
    g.add_argument("--resume", metavar="MODEL", default=None,
                   help="continue training a model saved by --save (or Network.save); its sizes, "
                        "activations, cost and dtype are used")


def _add_train_sgd_options(p):
    g = p.add_argument_group("training")
    g.add_argument("--epochs", type=_int_at_least(1), default=10, metavar="N",
                   help="training epochs (default 10)")
    g.add_argument("--mini-batch-size", type=_int_at_least(1), default=10, metavar="N",
                   help="samples per gradient step (default 10)")
    g.add_argument("--eta", type=_real(positive=True), default=3.0, help="learning rate, > 0 (default 3.0)")
    g.add_argument("--lmbda", type=_real(positive=False), default=0.0,
                   help="L2 regularisation parameter, >= 0; weights decay by "
                        "1 - eta*lmbda/n per mini-batch, n the training-set size (default 0)")
    g.add_argument("--mu", type=_real(positive=False), default=0.0,
                   help="momentum coefficient in [0, 1] (default 0: plain SGD)")
    g.add_argument("--evaluate", choices=("test", "validation"), default="test",
                   help="the split reported after every epoch and used by --keep best, "
                        "--early-stopping and --eta-schedule (default test)")
    g.add_argument("--early-stopping", type=_int_at_least(1), default=None, metavar="N",
                   help="stop after N epochs without a better evaluation accuracy")
    g.add_argument("--eta-schedule", type=_int_at_least(1), default=None, metavar="N",
                   help="halve eta after N epochs without a better evaluation accuracy; stop "
                        "when it reaches eta/128")
    g.add_argument("--seed", type=_int_at_least(0), default=0, metavar="N",
                   help="seeds the initial weights and the shuffles (default 0)")


def _add_train_output_options(p):
    g = p.add_argument_group("output")
    g.add_argument("--save", metavar="PATH", default=None,
                   help="save the network to PATH (Network.save's versioned .npz with a checksum, "
                        "written atomically, PATH used as given) after every epoch that --keep "
                        "keeps; on Ctrl-C PATH holds the last kept epoch")
    g.add_argument("--keep", choices=("last", "best"), default="last",
                   help="which epoch --save keeps: the last finished one (default) or the one "
                        "with the best evaluation accuracy so far")
    g.add_argument("--plot", metavar="PATH", default=None,
                   help="write learning curves (accuracy and cost per epoch, training and "
                        "evaluation) to PATH with matplotlib; format from the suffix, PNG by "
                        "default (needs matplotlib)")
    g.add_argument("--quiet", "-q", action="store_true", help="print only the summary")


def _add_max_images(p, what="--data"):
    from .datasets import MAX_IMAGES

    p.add_argument("--max-images", type=_int_at_least(1), default=MAX_IMAGES, metavar="N",
                   help=f"read at most N samples (images) from {what} in all, checked from the files' headers "
                        f"before their data is read; a file declaring more is refused (default {MAX_IMAGES:,})")


def build_parser():
    """(parser, {command: subparser})."""
    from . import __version__

    parser = _Parser(
        prog="cbackprop",
        description="Backpropagation for fully-connected feedforward networks (Nielsen, 'Neural "
                    "Networks and Deep Learning'), with C kernels: train, evaluate, predict, info.",
        epilog="With no command, 'train' is run: 'cbackprop --epochs 3' is 'cbackprop train --epochs 3'. "
               "Exit status: 0 success, 2 bad option or file, 1 failure after training started, "
               "130 interrupted.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    train = sub.add_parser(
        "train", help="train a network with mini-batch SGD (the default command)",
        description="Train a fully-connected network by backpropagation and mini-batch SGD "
                    "(network.py and network2.py of the book; by default sigmoid layers, the "
                    "quadratic cost and N(0, 1) weights) and report the evaluation accuracy "
                    "after every epoch.  Without --data it uses the MNIST sample embedded in "
                    "the package (10,000 training / 2,000 test images; MNIST (c) Yann LeCun and "
                    "Corinna Cortes, CC BY-SA 3.0).")
    train.add_argument("--data", metavar="PATH", default=None, help=DATA_HELP)
    _add_max_images(train)
    _add_train_network_options(train)
    _add_train_sgd_options(train)
    _add_train_output_options(train)

    evaluate = sub.add_parser("evaluate", help="accuracy and cost of a saved model on a data set",
                              description="Print the accuracy and the average cost of a saved model "
                                          "on one split of a data set.")
    evaluate.add_argument("model", metavar="MODEL", help="a file written by --save or Network.save, "
                          "or network2.py's JSON")
    evaluate.add_argument("--data", metavar="PATH", default=None, help=DATA_HELP)
    _add_max_images(evaluate)
    evaluate.add_argument("--split", choices=("test", "validation", "train"), default="test",
                          help="which split to evaluate (default test)")

    predict = sub.add_parser("predict", help="labels (and probabilities) for new samples",
                             description="Print one line per sample: its name, the predicted label "
                                         "(the output neuron with the largest activation) and, with "
                                         "--proba, the probability of each label.")
    predict.add_argument("model", metavar="MODEL", help="a saved model, as for evaluate")
    predict.add_argument("inputs", metavar="INPUT", nargs="+",
                         help="an .npy array (one sample per row, or one sample), an .npz (member x, "
                              "test_x or its only array), or an image file (PNG, JPEG, PGM ...; one "
                              "sample, read as 8-bit grey levels scaled by 1/256, needs Pillow)")
    predict.add_argument("--proba", action="store_true", help="also print the probabilities")
    _add_max_images(predict, "INPUTs")
    predict.add_argument("--invert", action="store_true",
                         help="invert image grey levels (dark ink on light paper; MNIST is light on dark)")
    predict.add_argument("--output", metavar="PATH", default=None,
                         help="write the results to PATH instead of printing them: .npz (arrays "
                              "labels and, with --proba, probabilities), .npy (labels) or text "
                              "(the printed lines), written atomically")

    info = sub.add_parser("info", help="sizes, options and checks of a saved model",
                          description="Load a saved model with every check the loader makes and "
                                      "show its format, sizes, activations, cost, dtype and checksum.")
    info.add_argument("model", metavar="MODEL", help="a saved model, as for evaluate")
    return parser, {"train": train, "evaluate": evaluate, "predict": predict, "info": info}


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


# ---- shared pieces --------------------------------------------------------------------------------
def _check_output_target(path, option):
    parent = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        raise CliError(option, f"{path!r} is a directory")
    if not os.path.isdir(parent):
        raise CliError(option, f"directory {parent!r} does not exist")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise CliError(option, f"directory {parent!r} is not writable")


def _check_plot_target(path):
    """Before training: matplotlib is importable, the format is known, the directory writable."""
    from . import _plot

    try:
        _plot.plot_format(path)
    except (_plot.MatplotlibMissing, ValueError) as exc:
        raise CliError("--plot", exc) from None
    _check_output_target(path, "--plot")


def _load_model(path, option="MODEL", seed=None):
    """A Network from a .npz written by Network.save, or from network2.py's JSON."""
    import cbackprop

    try:
        with open(path, "rb") as f:
            json = f.read(64).lstrip().startswith(b"{")
        return cbackprop.load_network2(path, seed=seed) if json else cbackprop.load(path, seed=seed)
    except (OSError, ValueError, TypeError, MemoryError) as exc:
        message = f"cannot read {path!r}: {exc.strerror}" if isinstance(exc, OSError) and exc.strerror else exc
        raise CliError(option, message) from None


def _read_data(path, max_images, option="--data"):
    """({split: (x, y)}, source, unit): the embedded sample (path None) or read_data(path)."""
    from . import _cli_data, datasets

    if path is None:
        train, test = datasets.load_sample()
        return {"train": train, "test": test}, "embedded MNIST sample", "images"
    try:
        data, unit = _cli_data.read_data(path, max_images)
    except ValueError as exc:
        raise CliError(option, exc) from None
    return data, path, unit


def _percent(correct, total):
    return f"{100.0 * correct / total:.2f}% ({correct}/{total})"


# ---- train ----------------------------------------------------------------------------------------
def _split_arrays(data, source, split, option):
    key = {"validation": "val"}.get(split, split)
    if key not in data:
        raise CliError(option, f"{source} has no {split} split (it has "
                               f"{', '.join(sorted(data))})")
    return data[key]


def _checked_shape(data, source):
    from . import _cli_data

    try:
        n_in, n_out = _cli_data.shape_of(data, source)
    except ValueError as exc:
        raise CliError("--data", exc) from None
    return n_in, n_out


def _network_from_options(args, n_in, n_out):
    """A new Network for the data's n_in inputs and n_out outputs from the options."""
    import numpy as np

    from .network import Network

    if args.sizes is not None and args.hidden is not None:
        raise CliError("--sizes", "give --sizes or --hidden, not both")
    sizes = args.sizes or [n_in, *(args.hidden if args.hidden is not None else [30]), n_out]
    if sizes[0] != n_in or sizes[-1] < n_out:
        raise CliError("--sizes", f"the data has {n_in} inputs and {n_out} outputs per sample, so the "
                                  f"sizes must run from {n_in} to {n_out}, got {','.join(map(str, sizes))}")
    activations = args.activations or ("sigmoid",)
    try:
        return Network(sizes, dtype=np.dtype(args.dtype or "float32"), seed=args.seed,
                       activations=activations[0] if len(activations) == 1 else list(activations),
                       cost=args.cost or "quadratic", init=args.init or "large")
    except MemoryError:
        raise CliError("--sizes", f"not enough memory for a {sizes} network") from None
    except (ValueError, TypeError) as exc:
        msg = str(exc)
        raise CliError("--activations" if msg.startswith("activations") else "--cost"
                       if msg.startswith("cost") else "--sizes", msg) from None


def _network_to_train(args, n_in, n_out):
    """The network --resume names (checked against the data), or a new one from the options."""
    if args.resume is None:
        return _network_from_options(args, n_in, n_out)
    given = [o for o, v in (("--sizes", args.sizes), ("--hidden", args.hidden), ("--activations", args.activations),
                            ("--cost", args.cost), ("--init", args.init), ("--dtype", args.dtype)) if v is not None]
    if given:
        raise CliError(given[0], "not allowed with --resume: the model's own network is trained")
    net = _load_model(args.resume, "--resume", seed=args.seed)
    if net.sizes[0] != n_in or net.sizes[-1] < n_out:
        raise CliError("--resume", f"the model has {net.sizes[0]} inputs and {net.sizes[-1]} outputs, the "
                                   f"data {n_in} inputs and {n_out} outputs per sample")
    return net


def _prepare_training(args):
    """(net, (X, Y), (Xe, labels_e), describe) on this rank, everything checked."""
    from . import _cli_data, distributed

    if args.save is not None:
        _check_output_target(args.save, "--save")
    if args.plot is not None:
        _check_plot_target(args.plot)
    if args.mu > 1:
        raise CliError("--mu", f"must lie in [0, 1], got {args.mu}")
    data, source, unit = _read_data(args.data, args.max_images)
    train = _split_arrays(data, source, "train", "--data")
    evaluation = _split_arrays(data, source, args.evaluate, "--evaluate")
    n_in, n_out = _checked_shape(data, source)
    if train[0].shape[0] == 0 or evaluation[0].shape[0] == 0:
        raise CliError("--data", f"need at least one training and one {args.evaluate} sample, got "
                                 f"{train[0].shape[0]} and {evaluation[0].shape[0]}")
    net = _network_to_train(args, n_in, n_out)
    n_train, n_eval = train[0].shape[0], evaluation[0].shape[0]
    try:  # the weight decay 1 - eta * lmbda / n must stay positive (n: all training rows)
        check_hyper(args.eta, args.lmbda, n_train, args.mu, net.dtype)
    except ValueError as exc:
        raise CliError("--lmbda", exc) from None
    # Under `mpiexec -n 2` or more every rank takes its rows of both sets (before converting).
    if distributed.is_distributed():
        train = distributed.take_shard(*train)
        evaluation = distributed.take_shard(*evaluation)
    try:
        X = _cli_data.features(train[0], f"{source}: train_x", net.dtype)
        _, Y = _cli_data.targets(train[1], f"{source}: train_y", net.sizes[-1], net.dtype)
        Xe = _cli_data.features(evaluation[0], f"{source}: {args.evaluate} x", net.dtype)
        labels_e, _ = _cli_data.targets(evaluation[1], f"{source}: {args.evaluate} y", net.sizes[-1], net.dtype)
    except ValueError as exc:
        raise CliError("--data", exc) from None
    return net, (X, Y), (Xe, labels_e), dict(source=source, n_train=n_train, n_eval=n_eval, unit=unit)


def _options_text(args, net):
    defaults = (("activations", ",".join(net.activations), ",".join(["sigmoid"] * len(net.activations))),
                ("cost", net.cost_name, "quadratic"), ("init", args.init or "large", "large"),
                ("lmbda", args.lmbda, 0.0), ("mu", args.mu, 0.0))
    return "".join(f", {name} {value}" for name, value, default in defaults if value != default)


class _Training:
    """One run of `cbackprop train`: per-epoch reports, the checkpoint --save keeps, the curves
    for --plot, and what to print at the end or on Ctrl-C."""

    def __init__(self, args, net, n_eval, progress, rank):
        self.args, self.net, self.n_eval, self.progress = args, net, n_eval, progress
        self.rank = rank
        self.best = self.last = None      # (correct, epoch)
        self.kept = self.saved = None     # (epoch, correct) --keep chose / is on disk
        self.curves = {k: [] for k in ("epoch", "evaluation_accuracy", "evaluation_cost",
                                       "training_accuracy", "training_cost")}

    def after_epoch(self, rec):
        """sgd's callback: record, checkpoint (rank 0), report."""
        epoch, args = rec["epoch"], self.args
        correct = round(rec["evaluation_accuracy"] * self.n_eval)
        self.last = (correct, epoch)
        improved = self.best is None or correct > self.best[0]
        if improved:
            self.best = (correct, epoch)
        if args.plot is not None:
            self.curves["epoch"].append(epoch)
            for key in ("evaluation_accuracy", "training_accuracy"):
                self.curves[key].append(100.0 * rec[key])
            for key in ("evaluation_cost", "training_cost"):
                self.curves[key].append(rec[key])
        if args.save is not None and (args.keep == "last" or improved):
            self.kept = (epoch, correct)  # the network holds this epoch until sgd goes on
            self.save()
        eta_note = f"  eta {rec['eta']:g}" if args.eta_schedule else ""
        self.progress.report(f"epoch {epoch:>{len(str(args.epochs))}}/{args.epochs}  {args.evaluate} accuracy "
                             f"{_percent(correct, self.n_eval)}  {rec['seconds']:.2f} s{eta_note}",
                             100.0 * correct / self.n_eval)
        if "stop_reason" in rec:
            self.progress.write(f"stopped: {rec['stop_reason']}")

    def save(self):
        if self.rank == 0:
            self.net.save(self.args.save)
        self.saved = self.kept

    def interrupted(self, everywhere=False):
        """Ctrl-C: make sure --save holds the kept epoch, say where; exit status 130.
        everywhere: the interrupt was raised on every MPI rank alike (distributed.sgd's
        collective stop), so every rank exits normally with 130 instead of aborting the job."""
        exit_130 = SystemExit(130)
        if everywhere:
            exit_130._cbackprop_collective = True  # (call_or_abort lets it through)
        if self.rank != 0:
            raise exit_130
        what = f"after epoch {self.last[1]}" if self.last else "before the first epoch finished"
        if self.args.save is None:
            note = "nothing saved (no --save)"
        elif self.kept is None:
            note = "nothing saved yet"
        else:
            if self.saved != self.kept:   # Ctrl-C came while saving: the network still holds it
                self.save()
            epoch, correct = self.saved
            note = (f"{self.args.save} holds epoch {epoch} ({self.args.evaluate} accuracy "
                    f"{_percent(correct, self.n_eval)})")
        print(f"cbackprop: interrupted {what}; {note}", file=sys.stderr, flush=True)
        raise exit_130


def _finish(run, total, describe):
    """The summary line, the saved file and the plot (rank 0); returns the exit status."""
    args = run.args
    (bc, be), (lc, _) = run.best, run.last
    print(f"best {args.evaluate} accuracy {_percent(bc, run.n_eval)} at epoch {be}/{args.epochs}; "
          f"final {100.0 * lc / run.n_eval:.2f}%; total {total:.2f} s", flush=True)
    if args.save is not None:
        epoch, correct = run.saved
        run.progress.write(f"saved the network to {args.save} (epoch {epoch}, {args.evaluate} accuracy "
                           f"{100.0 * correct / run.n_eval:.2f}%)")
    if args.plot is None:
        return 0
    from . import _plot

    c = run.curves
    try:
        _plot.write_learning_curves(
            args.plot, c["epoch"], c["evaluation_accuracy"], c["evaluation_cost"], c["training_accuracy"],
            c["training_cost"], evaluation_label=args.evaluate,
            title=f"{list(run.net.sizes)}, eta {args.eta:g}, mini-batch {args.mini_batch_size}"
                  f"{describe['options']} ({describe['source']})")
    except Exception as exc:  # OSError, or anything matplotlib raises: the run is done
        print(f"cbackprop: error: cannot write the plot to {args.plot!r}: {exc}", file=sys.stderr)
        return 1
    run.progress.write(f"wrote learning curves to {args.plot}")
    return 0


def train(args):
    """`cbackprop train`: returns the exit status (raises CliError or SystemExit(130))."""
    from . import distributed

    net, (X, Y), (Xe, le), describe = _prepare_training(args)
    dist = distributed.is_distributed()
    rank, size = distributed.world() if dist else (0, 1)
    describe["options"] = _options_text(args, net)
    quiet = args.quiet or rank != 0
    with EpochProgress(args.epochs, quiet=quiet) as progress:
        progress.write(
            f"{'resuming ' + args.resume if args.resume else 'training'} {list(net.sizes)} ({net.dtype.name}, "
            f"seed {args.seed}{describe['options']}) on {describe['n_train']} {describe['unit']}, evaluating on "
            f"{describe['n_eval']} {args.evaluate} {describe['unit']} ({describe['source']}); epochs {args.epochs}, "
            f"mini-batch {args.mini_batch_size}, eta {args.eta:g}" + (f"; {size} MPI ranks" if dist else ""))
        run = _Training(args, net, describe["n_eval"], progress, rank)
        plot = args.plot is not None
        # distributed.sgd(net, ...) takes net.sgd's arguments; X, Y, Xe are this rank's rows
        sgd = functools.partial(distributed.sgd, net) if dist else net.sgd
        start = time.perf_counter()
        try:
            sgd(X, Y, args.epochs, args.mini_batch_size, args.eta, lmbda=args.lmbda, mu=args.mu,
                evaluation_data=(Xe, le), monitor_evaluation_accuracy=True, monitor_evaluation_cost=plot,
                monitor_training_cost=plot, monitor_training_accuracy=plot, early_stopping_n=args.early_stopping,
                eta_schedule_n=args.eta_schedule, callback=run.after_epoch)
        except KeyboardInterrupt as exc:
            run.interrupted(everywhere=getattr(exc, "_cbackprop_collective", False))
        except FloatingPointError as exc:
            print(f"cbackprop: error: {exc}", file=sys.stderr)
            return 1
        except OSError as exc:  # a checkpoint could not be written
            print(f"cbackprop: error: cannot save to {args.save!r}: {exc}", file=sys.stderr)
            return 1
        total = time.perf_counter() - start
    if rank != 0:  # every rank has the same parameters: rank 0 reports, saves and plots
        return 0
    return _finish(run, total, describe)


# ---- evaluate, predict, info ------------------------------------------------------------------------
def evaluate(args):
    """`cbackprop evaluate MODEL`: accuracy and average cost on one split."""
    from . import _cli_data

    net = _load_model(args.model)
    data, source, _ = _read_data(args.data, args.max_images)
    x, y = _split_arrays(data, source, args.split, "--split")
    try:
        _checked_shape({args.split: (x, y)}, source)
        X = _cli_data.features(x, f"{source}: {args.split} x", net.dtype)
        if X.shape[1] != net.sizes[0]:
            raise CliError("--data", f"{source} has {X.shape[1]} inputs per sample, the model {net.sizes[0]}")
        labels, Y = _cli_data.targets(y, f"{source}: {args.split} y", net.sizes[-1], net.dtype)
    except ValueError as exc:
        raise CliError("--data", exc) from None
    if X.shape[0] == 0:
        raise CliError("--data", f"{source}: the {args.split} split is empty")
    correct = net.evaluate(X, labels)
    print(f"{args.split} accuracy {_percent(correct, X.shape[0])}; cost {net.cost(X, Y):.6g} "
          f"({net.cost_name}, average per sample) on {source}")
    return 0


def _predictions(net, X):
    """(labels, probabilities) for the rows of X: the labels of net.predict; the probabilities
    of net.predict_proba for a softmax output, else a^L normalised to sum 1 per row."""
    import numpy as np

    if net.activations[-1] == "softmax":
        proba = np.asarray(net.predict_proba(X), dtype=np.float64)
    else:
        A = net.feedforward(X).astype(np.float64)
        proba = A / np.maximum(A.sum(axis=1, keepdims=True), 1e-300)
    return (np.argmax(proba, axis=1) if proba.shape[0] else np.zeros(0, np.intp)), proba


def _write_predictions(path, labels, proba, lines):
    import numpy as np

    from ._atomic import atomic_path

    suffix = os.path.splitext(path)[1].lower()
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        if suffix == ".npz":
            np.savez(f, labels=labels, **({"probabilities": proba} if proba is not None else {}))
        elif suffix == ".npy":
            np.save(f, labels)
        else:
            f.write("".join(line + "\n" for line in lines).encode())


def predict(args):
    """`cbackprop predict MODEL INPUT...`: a label (and probabilities) per sample."""
    from . import _cli_data

    if args.output is not None:
        _check_output_target(args.output, "--output")
    net = _load_model(args.model)
    try:
        names, X = _cli_data.read_inputs(args.inputs, net.sizes[0], net.dtype, invert=args.invert,
                                         max_images=args.max_images)
    except ValueError as exc:
        raise CliError("INPUT", exc) from None
    labels, proba = _predictions(net, X)
    lines = [f"{name}\t{label}" + ("\t" + " ".join(f"{p:.4f}" for p in row) if args.proba else "")
             for name, label, row in zip(names, labels.tolist(), proba)]
    if args.output is None:
        for line in lines:
            print(line)
        return 0
    try:
        _write_predictions(args.output, labels, proba if args.proba else None, lines)
    except OSError as exc:
        print(f"cbackprop: error: cannot write {args.output!r}: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {len(names)} predictions to {args.output}")
    return 0


def _file_record(path):
    """(format line, checksum line) read from a model file that the loader has accepted."""
    import numpy as np

    with open(path, "rb") as f:
        if not f.read(2) == b"PK":
            return "network2.py JSON (sigmoid layers; no checksum in this format)", None
    with np.load(path, allow_pickle=False) as npz:
        if "format" not in npz.files:
            return "unversioned cbackprop .npz (written by cbackprop train before version 1)", None
        return f"{npz['format'][()]} version {int(npz['version'])}", str(npz["checksum"][()])


def info(args):
    """`cbackprop info MODEL`: what the file holds and which checks it passed."""
    net = _load_model(args.model)
    fmt, checksum = _file_record(args.model)
    n_params = sum(w.size + b.size for w, b in zip(net.weights, net.biases))
    checks = "structure, members and shapes, activations and cost, finite parameters"
    rows = [("file", f"{args.model} ({os.path.getsize(args.model):,} bytes)"), ("format", fmt),
            ("checks", f"passed: {checks}" + (", sha256 checksum" if checksum else "; no checksum recorded")),
            ("checksum", checksum or "none"),
            ("sizes", f"{list(net.sizes)} ({n_params:,} parameters, {len(net.sizes) - 1} layers)"),
            ("activations", ", ".join(net.activations)), ("cost", net.cost_name), ("dtype", net.dtype.name)]
    for key, value in rows:
        print(f"{key:<12} {value}")
    return 0


# ---- main ---------------------------------------------------------------------------------------------
def _one_line_errors(command, args, prog):
    """command(args), with a CliError printed as one line and turned into exit status 2."""
    try:
        return command(args)
    except CliError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr, flush=True)
        raise SystemExit(2) from None


def _run(args, prog):
    command = {"train": train, "evaluate": evaluate, "predict": predict, "info": info}[args.command]
    if args.command == "train":
        # under mpiexec, a failure on one rank only ends every rank (MPI_Abort), not a hang
        from .distributed import call_or_abort
        return call_or_abort(_one_line_errors, command, args, prog)
    return _one_line_errors(command, args, prog)


def main(argv=None) -> int:
    """Run the command line with argv (default sys.argv[1:]); returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser, subparsers = build_parser()
    try:
        args = parser.parse_args(_with_default_command(argv))
        return _run(args, subparsers[args.command].prog)
    except SystemExit as exc:  # argparse errors (2), --help / --version (0), Ctrl-C in train (130)
        code = exc.code
        return code if isinstance(code, int) else (0 if code is None else 1)
    except KeyboardInterrupt:
        print("cbackprop: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `cbackprop predict ... | head -1`: stop quietly, as Python's docs advise
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1


if __name__ == "__main__":
    sys.exit(main())
