"""Golden trajectories: the C path's parameters after a few hundred training steps, recorded
once from the engine as it was before the engine rewrite (tests/data/golden_trajectories.npz),
for every activation family, cost and update option, both dtypes.

Each case runs today's C path and checks it
  1. against the recording, with the slack check_trajectory uses for the reference (conftest:
     the base per-dtype tolerance plus 8x the recording's own distance from a long-double
     shadow of the same steps): a rewrite may change rounding, not the computation;
  2. against today's reference (check_trajectory, as test_crosscheck does);
  3. bitwise across thread counts (1, 2, 3 and the automatic choice) for the sgd epochs.

Regenerate (only when the computation itself is meant to change, saying why in the commit):
    python tests/crosscheck/test_golden.py --record tests/data/golden_trajectories.npz
"""
import pathlib
import sys

import numpy as np
import pytest

GOLDEN = pathlib.Path(__file__).resolve().parents[1] / "data" / "golden_trajectories.npz"

# (name, sizes, activations, cost, eta, lmbda, mu): sizes cover a thin deep net, the book's
# [784, 30, 10], a hidden layer wide enough for threads to split, and odd widths.
CASES = [
    ("sigmoid-quadratic", [20, 16, 12, 5], "sigmoid", "quadratic", 0.5, 0.0, 0.0),
    ("sigmoid-quadratic-book", [784, 30, 10], "sigmoid", "quadratic", 0.5, 0.0, 0.0),
    ("sigmoid-crossentropy-l2", [37, 64, 10], "sigmoid", "cross-entropy", 0.3, 5.0, 0.0),
    ("tanh-sigmoid-momentum", [23, 19, 17, 7], ["tanh", "tanh", "sigmoid"], "quadratic", 0.1, 0.0, 0.9),
    ("relu-softmax-loglik-l2-momentum", [41, 48, 33, 10], ["relu", "relu", "softmax"],
     "log-likelihood", 0.05, 2.0, 0.5),
    ("relu-identity-quadratic", [15, 40, 3], ["relu", "identity"], "quadratic", 0.01, 0.0, 0.0),
    ("sigmoid-softmax-quadratic-momentum", [30, 70, 6], ["sigmoid", "softmax"], "quadratic", 0.2, 0.0, 0.5),
    ("tanh-crossentropy-book-l2-momentum", [784, 30, 10], ["tanh", "sigmoid"], "cross-entropy",
     0.02, 5.0, 0.5),
]
DTYPES = [np.float64, np.float32]
STEPS = 100            # update_mini_batch steps with random batch sizes 1..16
N, MBS, EPOCHS = 240, 10, 4   # then 4 sgd epochs of 24 mini-batches


def _data(sizes, cost, seed):
    """Inputs in [0, 1) and targets suited to the cost (one-hot for log-likelihood)."""
    rng = np.random.default_rng(seed)
    X = rng.random((N, sizes[0]))
    labels = rng.integers(0, sizes[-1], N)
    Y = np.eye(sizes[-1])[labels] if cost != "quadratic" else rng.random((N, sizes[-1]))
    return X, Y


def _train(net, sizes, cost, eta, lmbda, mu, dtype, threads=None):
    """STEPS update_mini_batch steps, then EPOCHS sgd epochs (threads: num_threads for sgd)."""
    X, Y = _data(sizes, cost, seed=len(sizes) * 1000 + sizes[0])
    X, Y = X.astype(dtype), Y.astype(dtype)
    rng = np.random.default_rng(7)
    for _ in range(STEPS):
        rows = rng.integers(0, N, int(rng.integers(1, 17)))
        net.update_mini_batch(X[rows], Y[rows], eta, lmbda=lmbda, n=N, mu=mu)
    if threads is not None and hasattr(net, "num_threads"):
        net.num_threads = threads
    net.sgd(X, Y, EPOCHS, MBS, eta, lmbda=lmbda, mu=mu)
    return net


def _make(cls, case, dtype):
    name, sizes, acts, cost, *_ = case
    # ("default" init keeps the wide tanh layer out of saturation, where rounding is chaotic)
    init = "default" if "tanh" in name else "large"
    return cls(sizes, activations=acts, cost=cost, init=init, dtype=dtype, seed=3)


def _key(name, dtype, what, l):
    return f"{name}/{np.dtype(dtype).name}/{what}{l}"


def record(path):
    import cbackprop
    arrays = {}
    for case in CASES:
        name, sizes, acts, cost, eta, lmbda, mu = case
        for dtype in DTYPES:
            net = _train(_make(cbackprop.Network, case, dtype), sizes, cost, eta, lmbda, mu, dtype)
            for l, (w, b) in enumerate(zip(net.weights, net.biases), start=1):
                arrays[_key(name, dtype, "w", l)] = w
                arrays[_key(name, dtype, "b", l)] = b
    pathlib.Path(path).parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, **arrays)


class _Recorded:
    def __init__(self, data, name, dtype, L):
        self.weights = [data[_key(name, dtype, "w", l)] for l in range(1, L + 1)]
        self.biases = [data[_key(name, dtype, "b", l)] for l in range(1, L + 1)]


@pytest.fixture(scope="module")
def golden():
    with np.load(GOLDEN) as data:
        return {k: data[k] for k in data.files}


@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_golden_trajectory(case, dtype, golden, exact_shadow, check_trajectory):
    import cbackprop
    from cbackprop import reference
    name, sizes, acts, cost, eta, lmbda, mu = case
    fast = _train(_make(cbackprop.Network, case, dtype), sizes, cost, eta, lmbda, mu, dtype)
    ref_start = _make(reference.Network, case, dtype)
    shadow = _train(exact_shadow(ref_start), sizes, cost, eta, lmbda, mu, dtype)
    ref = _train(ref_start, sizes, cost, eta, lmbda, mu, dtype)
    recorded = _Recorded(golden, name, dtype, len(sizes) - 1)
    for got, want in zip(fast.weights + fast.biases, recorded.weights + recorded.biases):
        assert got.dtype == want.dtype and got.shape == want.shape
    check_trajectory(fast, recorded, shadow, dtype, f"{name}: C path against the recording",
                     bound_reference=False)
    check_trajectory(fast, ref, shadow, dtype, f"{name}: C path against the reference")


@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_golden_trajectory_bitwise_across_threads(case, dtype):
    import cbackprop
    name, sizes, acts, cost, eta, lmbda, mu = case
    runs = [_train(_make(cbackprop.Network, case, dtype), sizes, cost, eta, lmbda, mu, dtype, threads)
            for threads in (None, 1, 2, 3)]
    for threads, net in zip((1, 2, 3), runs[1:]):
        for got, want in zip(net.weights + net.biases, runs[0].weights + runs[0].biases):
            np.testing.assert_array_equal(got, want, err_msg=f"{name}: num_threads={threads} "
                                                             f"against the automatic choice")


def test_golden_check_can_fail(golden, exact_shadow, check_trajectory):
    """A step that is slightly wrong (eta 1% off) does not pass as the recording."""
    import cbackprop
    from cbackprop import reference
    case = CASES[0]
    name, sizes, acts, cost, eta, lmbda, mu = case
    fast = _train(_make(cbackprop.Network, case, np.float64), sizes, cost, eta * 1.01, lmbda, mu,
                  np.float64)
    shadow = _train(exact_shadow(_make(reference.Network, case, np.float64)), sizes, cost, eta, lmbda,
                    mu, np.float64)
    with pytest.raises(AssertionError, match="Not equal to tolerance"):
        check_trajectory(fast, _Recorded(golden, name, np.float64, len(sizes) - 1), shadow,
                         np.float64, bound_reference=False)


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] != "--record":
        sys.exit(__doc__)
    record(sys.argv[2])
