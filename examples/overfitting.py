"""Chapter 3 of the book: overfitting, and L2 regularisation against it.

The book's overfitting.py trains a [784, 30, 10] network with the cross-entropy cost and
N(0, 1) initial weights on only the first 1,000 MNIST training images, for 400 epochs of
mini-batch SGD (mini-batch 10, eta 0.5), monitoring network2's four quantities after every
epoch.  Without regularisation the training cost keeps falling while the test accuracy stops
improving after about 280 epochs and the test cost rises: the network overfits.  With L2
regularisation (lmbda = 0.1, weight decay 1 - eta*lmbda/n per mini-batch) the test accuracy
keeps rising and ends higher.

    python examples/overfitting.py                         # 1,000 images of the embedded sample
    python examples/overfitting.py --plot overfitting.png  # the four curves, both runs
    python examples/overfitting.py --data mnist.npz        # the book's images (full MNIST)

The embedded sample's test set has 2,000 images (the book evaluates on MNIST's 10,000).
"""
import argparse

import numpy as np

import cbackprop
from cbackprop import datasets

QUANTITIES = (("training_cost", "training cost"), ("evaluation_cost", "test cost"),
              ("training_accuracy", "training accuracy (%)"), ("evaluation_accuracy", "test accuracy (%)"))


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", help="MNIST for cbackprop.datasets.load_mnist (default: the embedded sample)")
    p.add_argument("--n-train", type=int, default=1000, help="training images (default 1000, as the book)")
    p.add_argument("--epochs", type=int, default=400)
    p.add_argument("--lmbdas", default="0,0.1", help="comma-separated L2 parameters, one run each (default 0,0.1)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--plot", metavar="PATH", help="write the four curves to PATH (needs matplotlib)")
    return p.parse_args(argv)


def run(x, y, x_test, y_test, lmbda, epochs, seed):
    """network2.py's run: one history record per epoch with the four monitored quantities."""
    net = cbackprop.Network([784, 30, 10], cost="cross-entropy", init="large", seed=seed)
    return net.sgd(x, datasets.one_hot(y), epochs, 10, 0.5, lmbda=lmbda,
                   evaluation_data=(x_test, y_test), monitor_evaluation_cost=True,
                   monitor_evaluation_accuracy=True, monitor_training_cost=True,
                   monitor_training_accuracy=True)


def plot(path, histories, n_train):
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(9, 6), layout="constrained", sharex=True)
    for ax, (key, label) in zip(axes.flat, QUANTITIES):
        for lmbda, history in histories.items():
            scale = 100 if key.endswith("accuracy") else 1
            ax.plot([r["epoch"] for r in history], [scale * r[key] for r in history],
                    label=f"lmbda = {lmbda:g}")
        ax.set_ylabel(label)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize="small")
    for ax in axes[1]:
        ax.set_xlabel("epoch")
    fig.suptitle(f"[784, 30, 10], cross-entropy, eta 0.5, mini-batch 10, {n_train:,} training images",
                 fontsize="medium")
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv=None):
    args = parse_args(argv)
    if args.data is None:
        (x, y), (x_test, y_test) = datasets.load_sample()
    else:
        (x, y), _, (x_test, y_test) = datasets.load_mnist(args.data)
    x, y = x[:args.n_train].astype(np.float64), y[:args.n_train]
    x_test = x_test.astype(np.float64)
    histories = {}
    for lmbda in (float(v) for v in args.lmbdas.split(",")):
        history = run(x, y, x_test, y_test, lmbda, args.epochs, args.seed)
        histories[lmbda] = history
        best = max(history, key=lambda r: r["evaluation_accuracy"])
        last = history[-1]
        print(f"lmbda {lmbda:g}: test accuracy best {100 * best['evaluation_accuracy']:.2f} % "
              f"(epoch {best['epoch']}), last {100 * last['evaluation_accuracy']:.2f} %; training "
              f"accuracy last {100 * last['training_accuracy']:.2f} %; training cost "
              f"{history[0]['training_cost']:.4f} -> {last['training_cost']:.4f}; test cost lowest "
              f"{min(r['evaluation_cost'] for r in history):.4f} (epoch "
              f"{min(history, key=lambda r: r['evaluation_cost'])['epoch']}), last {last['evaluation_cost']:.4f}")
    if args.plot:
        plot(args.plot, histories, len(x))
    return histories


if __name__ == "__main__":
    main()
