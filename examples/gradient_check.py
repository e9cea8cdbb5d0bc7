"""Chapter 2 of the book: backpropagation against finite differences.

The book closes chapter 2 on why backpropagation is fast: estimating each partial derivative
dC/dw_j by finite differences needs a forward pass (two, centred) per parameter, while
backpropagation gets all of them from one forward and one backward pass.  This example
checks cbackprop's backpropagation on the book's [784, 30, 10] network and a mini-batch of
10 images against central finite differences (computed independently, in float64, by
cbackprop.reference), for each cost; reports the relative error per layer and the time each
way took; and sweeps the finite-difference step eps, where the error is truncation
(O(eps^2)) for large steps and rounding (O(1e-16 / eps)) for small ones.

    python examples/gradient_check.py                        # every parameter, three costs
    python examples/gradient_check.py --plot eps.png         # also the error against eps
    python examples/gradient_check.py --max-per-layer 50     # a random subset: faster
"""
import argparse

import numpy as np

import cbackprop
from cbackprop import datasets

COSTS = (("quadratic", "sigmoid"), ("cross-entropy", "sigmoid"), ("log-likelihood", "softmax"))
EPS = (1e-8, 1e-7, 1e-6, 1e-5, 1e-4, 1e-3, 1e-2)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", default="784,30,10")
    p.add_argument("--m", type=int, default=10, help="samples in the mini-batch (default 10)")
    p.add_argument("--max-per-layer", type=int, default=None,
                   help="check at most this many weights and biases per layer (default: all)")
    p.add_argument("--sweep-per-layer", type=int, default=100,
                   help="parameters per layer checked at each eps of the sweep (default 100)")
    p.add_argument("--plot", metavar="PATH", help="write the error against eps to PATH (needs matplotlib)")
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    sizes = [int(n) for n in args.sizes.split(",")]
    (x, y), _ = datasets.load_sample()
    X = x[:args.m, :sizes[0]].astype(np.float64)
    Y = datasets.one_hot(y[:args.m], sizes[-1])
    sweep = {}
    for cost, output in COSTS:
        net = cbackprop.Network(sizes, activations=["sigmoid"] * (len(sizes) - 2) + [output], cost=cost, seed=0)
        r = cbackprop.gradient_check(net, X, Y, max_per_layer=args.max_per_layer)
        errors = ", ".join(f"w{d['layer']} {d['weights_error']:.1e} b{d['layer']} {d['biases_error']:.1e}"
                           for d in r["layers"])
        scaled = ""
        if "finite_difference_seconds_all" in r:
            scaled = f" (all {2 * r['parameters']:,}: about {r['finite_difference_seconds_all']:.1f} s)"
        print(f"{cost:>14}: max relative error {r['max_error']:.1e} ({errors}); "
              f"{r['cost_evaluations']:,} cost evaluations in {r['finite_difference_seconds']:.2f} s{scaled}, "
              f"backprop {1e3 * r['backprop_seconds']:.3f} ms ({r['parameters']:,} parameters)")
        sweep[cost] = [cbackprop.gradient_check(net, X, Y, eps=eps, max_per_layer=args.sweep_per_layer)["max_error"]
                       for eps in EPS]
    print("eps sweep (max relative error): " + "; ".join(
        f"{cost} " + " ".join(f"{e:.0e}:{err:.1e}" for e, err in zip(EPS, errs)) for cost, errs in sweep.items()))
    if args.plot:
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6.4, 3.6), layout="constrained")
        for cost, errs in sweep.items():
            ax.loglog(EPS, errs, marker="o", label=cost)
        ax.set_xlabel("finite-difference step eps")
        ax.set_ylabel("max relative error per layer")
        ax.set_title(f"backprop vs central differences, {sizes}, m = {args.m}", fontsize="medium")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize="small")
        fig.savefig(args.plot, dpi=100)
        plt.close(fig)
    return sweep


if __name__ == "__main__":
    main()
