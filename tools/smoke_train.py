"""A short training run of the installed cbackprop, checked against the NumPy reference.

    python tools/smoke_train.py [--quick] [--kernels all|best|NAME[,NAME...]]

For every kernel variant asked for (default: all this CPU supports), both dtypes and 1 and 2
threads: feedforward, backprop, update_mini_batch, two epochs of sgd and evaluate on a small
network, each compared with cbackprop.reference.  Used by tools/build_wheels.sh (under
qemu-user with older CPU models) and tools/valgrind.sh (--quick: fewer, smaller batches).
Exit status 0 when every comparison holds.
"""
import argparse
import os
import sys

import numpy as np


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="smaller data, one epoch")
    ap.add_argument("--kernels", default="all")
    args = ap.parse_args()

    import cbackprop
    from cbackprop import _core, reference

    supported = _core.kernels_supported()
    print(f"cbackprop from {os.path.dirname(cbackprop.__file__)}")
    print(f"kernels supported: {supported}, best: {_core.best_kernels()}")
    if args.kernels == "all":
        variants = supported
    elif args.kernels == "best":
        variants = (_core.best_kernels(),)
    else:
        variants = tuple(args.kernels.split(","))
        missing = [k for k in variants if k not in supported]
        if missing:
            sys.exit(f"kernels {missing} not supported here ({supported})")

    sizes = [37, 21, 10] if args.quick else [64, 33, 17, 10]
    n = 40 if args.quick else 200
    epochs = 1 if args.quick else 2
    rng = np.random.default_rng(0)
    X64 = rng.random((n, sizes[0]))
    labels = rng.integers(0, sizes[-1], n)
    Y64 = np.eye(sizes[-1])[labels]
    tol = {np.float64: 1e-10, np.float32: 1e-4}

    failures = 0
    saved = os.environ.get("CBACKPROP_KERNELS")
    try:
        for k in variants:
            os.environ["CBACKPROP_KERNELS"] = k
            for dtype in (np.float64, np.float32):
                X, Y = X64.astype(dtype), Y64.astype(dtype)
                for threads in (1, 2):
                    net = cbackprop.Network(sizes, seed=1, dtype=dtype)
                    ref = reference.Network(sizes, seed=1, dtype=dtype)
                    assert net.kernels == k, (net.kernels, k)
                    net.num_threads = threads
                    errs = {}
                    scale = lambda arrs: max(float(np.abs(a).max()) for a in arrs) or 1.0
                    rel = lambda a, b: max(float(np.abs(x - y).max()) for x, y in zip(a, b)) / scale(b)
                    errs["feedforward"] = rel([net.feedforward(X)], [ref.feedforward(X)])
                    nb, nw = net.backprop(X[:10], Y[:10])
                    rb, rw = ref.backprop(X[:10], Y[:10])
                    errs["backprop"] = max(rel(nb, rb), rel(nw, rw))
                    net.update_mini_batch(X[:10], Y[:10], 3.0)
                    ref.update_mini_batch(X[:10], Y[:10], 3.0)
                    errs["update_mini_batch"] = rel(net.weights + net.biases, ref.weights + ref.biases)
                    net.sgd(X, Y, epochs=epochs, mini_batch_size=10, eta=3.0)
                    ref.sgd(X, Y, epochs=epochs, mini_batch_size=10, eta=3.0)
                    errs["sgd"] = rel(net.weights + net.biases, ref.weights + ref.biases)
                    ev, rev = net.evaluate(X, labels), ref.evaluate(X, labels)
                    worst = max(errs.values())
                    ok = worst < tol[dtype] and abs(ev - rev) <= 1
                    failures += not ok
                    print(f"{k:8s} {dtype.__name__:8s} threads={threads}  max rel. diff vs "
                          f"reference {worst:.1e}  evaluate {ev}/{n} (reference {rev})"
                          f"{'' if ok else '  FAIL ' + repr(errs)}")
    finally:
        if saved is None:
            os.environ.pop("CBACKPROP_KERNELS", None)
        else:
            os.environ["CBACKPROP_KERNELS"] = saved
    print("smoke OK" if not failures else f"smoke FAILED ({failures})")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
