"""Chapter 1 of the book: network.py's run, with cbackprop.

The book trains a [784, 30, 10] network of sigmoid neurons with the quadratic cost, N(0, 1)
initial weights and biases, 30 epochs of mini-batch SGD with mini-batches of 10 and
eta = 3.0, on the 50,000 training images of MNIST, and reports about 95 % test accuracy
(95.42 % in the book).

    python examples/network_py.py                      # the MNIST sample inside the package
    python examples/network_py.py --data mnist.npz     # full MNIST (book split, or IDX files, or mnist.pkl.gz)
    python examples/network_py.py --plot accuracy.png  # also draw the test accuracy per epoch

It prints one line per epoch in network.py's format ("Epoch 0: 9129 / 10000").
"""
import argparse

import numpy as np

import cbackprop
from cbackprop import datasets


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", help="MNIST for cbackprop.datasets.load_mnist (default: the embedded sample)")
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--n-train", type=int, default=None, help="use only the first N training images")
    p.add_argument("--dtype", default="float64", choices=("float32", "float64"),
                   help="float64 is network.py's arithmetic (default)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--plot", metavar="PATH", help="write the test accuracy per epoch to PATH (needs matplotlib)")
    return p.parse_args(argv)


def load(path):
    """(x_train, y_train), (x_test, y_test) from path, or the embedded sample."""
    if path is None:
        return datasets.load_sample()
    train, _, test = datasets.load_mnist(path)
    return train, test


def plot(path, history, title):
    import matplotlib.pyplot as plt

    epochs = [r["epoch"] for r in history]
    fig, ax = plt.subplots(figsize=(6.4, 3.2), layout="constrained")
    ax.plot(epochs, [100 * r["test_accuracy"] for r in history], marker="o", markersize=3)
    ax.set_xlabel("epoch")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(title, fontsize="medium")
    ax.grid(True, alpha=0.3)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv=None):
    args = parse_args(argv)
    (x, y), (x_test, y_test) = load(args.data)
    if args.n_train is not None:
        x, y = x[:args.n_train], y[:args.n_train]
    dtype = np.dtype(args.dtype)
    net = cbackprop.Network([784, 30, 10], dtype=dtype, seed=args.seed)
    X, Y = x.astype(dtype), datasets.one_hot(y, dtype=dtype)   # converted once, not per epoch
    X_test = x_test.astype(dtype)

    def report(record):
        print(f"Epoch {record['epoch'] - 1}: {record['test_correct']} / {record['test_total']}", flush=True)

    history = net.sgd(X, Y, args.epochs, 10, 3.0, test_data=(X_test, y_test), callback=report)
    best = max(history, key=lambda r: r["test_correct"])
    seconds = sum(r["seconds"] for r in history)
    print(f"best: {100 * best['test_accuracy']:.2f} % after epoch {best['epoch']} of {args.epochs}; "
          f"{len(x)} training images, {dtype.name}, seed {args.seed}, {seconds:.1f} s of training")
    if args.plot:
        source = "embedded MNIST sample" if args.data is None else "MNIST"
        plot(args.plot, history, f"network.py's run: [784, 30, 10], eta 3.0, mini-batch 10 ({source}, "
                                 f"{len(x):,} training images)")
    return history


if __name__ == "__main__":
    main()
