"""Chapter 5, "The vanishing gradient problem": the speed of learning of each hidden layer.

The book measures ||delta^l||, the length of the gradient dC/db^l of the cost averaged over
the first 1,000 MNIST training images, for each hidden layer of network2's sigmoid networks
[784, 30, 30, 10], [784, 30, 30, 30, 10] and [784, 30, 30, 30, 30, 10] (cross-entropy cost,
weights N(0, 1/n_in)), first at initialisation, then during 500 epochs of batch gradient
descent on those 1,000 images (one mini-batch of 1,000, eta = 0.1, lmbda = 5.0), measured
before each epoch (the book's fig/generate_gradient.py).  Earlier layers learn slower.

    python examples/layer_speeds.py                            # the embedded MNIST sample
    python examples/layer_speeds.py --data mnist.npz --plot layer_speeds.png

This runs the book's setting, then the same with network.py's N(0, 1) weights
(init="large") and with ReLU hidden layers, and plots the speeds per epoch (log scale).  The
speeds at initialisation are printed next to the book's, for several seeds: they depend on
the random initial weights (the book quotes one draw).
"""
import argparse

import numpy as np

import cbackprop
from cbackprop import datasets

#: the book's speeds at initialisation (chapter 5), one random network each
BOOK = {2: (0.07, 0.31), 3: (0.012, 0.060, 0.283), 4: (0.003, 0.017, 0.070, 0.285)}
#: the variants: (label, hidden activation, init)
VARIANTS = (("sigmoid, weights N(0, 1/n_in) (the book's)", "sigmoid", "default"),
            ("sigmoid, weights N(0, 1) (init='large')", "sigmoid", "large"),
            ("ReLU, weights N(0, 1/n_in)", "relu", "default"))


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", help="MNIST for cbackprop.datasets.load_mnist (default: the embedded sample)")
    p.add_argument("--n-train", type=int, default=1000, help="training images (default 1000, as the book)")
    p.add_argument("--epochs", type=int, default=500)
    p.add_argument("--seeds", default="0,1,2,3,4", help="seeds of the initial speeds (the first also trains)")
    p.add_argument("--plot", metavar="PATH", help="write the figure to PATH (needs matplotlib)")
    return p.parse_args(argv)


def network(hidden, activation, init, seed):
    sizes = [784] + [30] * hidden + [10]
    return cbackprop.Network(sizes, activations=[activation] * hidden + ["sigmoid"], cost="cross-entropy",
                             init=init, seed=seed)


def initial_speeds(x, y, hidden, activation, init, seeds):
    """The speeds at initialisation, one row per seed."""
    return np.array([network(hidden, activation, init, s).layer_speeds(x, y) for s in seeds])


def training_speeds(x, y, hidden, activation, init, seed, epochs):
    """The speeds before each of the epochs of batch gradient descent (the book's figures)."""
    net = network(hidden, activation, init, seed)
    first = net.layer_speeds(x, y)
    history = net.sgd(x, y, epochs, len(x), 0.1, lmbda=5.0, monitor_layer_speeds=True)
    return np.array([first] + [r["layer_speeds"] for r in history[:-1]]), history[-1]["layer_speeds"]


def fmt(values):
    return ", ".join(f"{v:.3g}" for v in values)


def main(argv=None):
    args = parse_args(argv)
    if args.data:
        (x, y), _, _ = datasets.load_mnist(args.data)
    else:
        (x, y), _ = datasets.load_sample()
    x, y = x[:args.n_train], y[:args.n_train].astype(np.int64)
    seeds = [int(s) for s in args.seeds.split(",")]
    print(f"{len(x)} training images; speeds ||delta^1||, ||delta^2||, ... of the hidden layers")
    curves = {}
    for label, activation, init in VARIANTS:
        print(f"\n{label}")
        for hidden in (2, 3, 4):
            speeds = initial_speeds(x, y, hidden, activation, init, seeds)
            book = f"; book: {fmt(BOOK[hidden])}" if (activation, init) == ("sigmoid", "default") else ""
            print(f"  {hidden} hidden layers, at initialisation: mean {fmt(speeds.mean(axis=0))} "
                  f"(seeds {args.seeds}: first layer {fmt(speeds[:, 0])}){book}")
            curve, last = training_speeds(x, y, hidden, activation, init, seeds[0], args.epochs)
            curves[label, hidden] = curve
            print(f"  {hidden} hidden layers, after {args.epochs} epochs (seed {seeds[0]}): {fmt(last)}; "
                  f"last / first layer {last[-1] / last[0]:.3g}")
    if args.plot:
        plot(args.plot, curves, args.epochs)


def plot(path, curves, epochs):
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(VARIANTS), 3, figsize=(12, 3.2 * len(VARIANTS)), layout="constrained",
                             sharex=True)
    colors = ["#2A6EA6", "#FFA933", "#FF5555", "#55AA55"]    # the book's first colours
    for row, (label, _, _) in zip(axes, VARIANTS):
        for ax, hidden in zip(row, (2, 3, 4)):
            curve = curves[label, hidden]
            for l in range(hidden):
                ax.plot(np.arange(curve.shape[0]), curve[:, l], color=colors[l], label=f"hidden layer {l + 1}")
            ax.set_yscale("log")
            ax.set_xlim(0, epochs)
            ax.grid(True, alpha=0.3)
            ax.set_title(f"{hidden} hidden layers: {label}", fontsize="small")
            ax.legend(fontsize="x-small", loc="upper right")
    for ax in axes[-1]:
        ax.set_xlabel("epochs of batch gradient descent")
    for row in axes:
        row[0].set_ylabel("speed of learning ||delta^l||")
    fig.savefig(path, dpi=90)


if __name__ == "__main__":
    main()
