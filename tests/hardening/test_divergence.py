"""Training that diverges (eta far too large) stops with an error naming the epoch and the
mini-batch, and leaves the last finite parameters in the network."""
import numpy as np
import pytest

import cbackprop
from cbackprop import reference


@pytest.mark.parametrize("cls", [cbackprop.Network, reference.Network], ids=["C", "reference"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_divergence_names_epoch_and_mini_batch_and_keeps_finite_parameters(cls, dtype):
    # Sigmoid saturation usually stops a run from reaching inf, so make it certain: one
    # layer with zero parameters, mini-batches of one, inputs 40 on one coordinate (gradient
    # 40/8 = 5) and eta = the largest number of the dtype, so eta * gradient overflows.
    rng = np.random.default_rng(0)
    X = 40.0 * np.eye(8)[rng.integers(0, 8, 60)]
    Y = np.zeros((60, 3))
    eta = float(np.finfo(dtype).max)
    net = cls([8, 3], dtype=dtype, seed=1)
    twin = cls([8, 3], dtype=dtype, seed=1)   # to replay the same steps by hand
    for n in (net, twin):                      # z = 0: a = 1/2, delta = 1/8, gradient 40/8
        n.weights, n.biases = [np.zeros((3, 8))], [np.zeros(3)]
    with pytest.raises(FloatingPointError, match=r"epoch 1, mini-batch (\d+) of 60") as info:
        net.sgd(X, Y, 3, 1, eta)
    k = info.value.mini_batch
    assert info.value.epoch == 1 and info.value.history == []
    params = net.weights + net.biases
    assert all(np.all(np.isfinite(p)) for p in params)
    # the parameters are exactly those after mini-batches 1 .. k-1 of the same shuffle
    perm = twin._rng.permutation(60)
    for j in range(k - 1):
        rows = perm[j:j + 1]
        twin.update_mini_batch(X[rows].astype(dtype), Y[rows].astype(dtype), eta)
    for a, b in zip(params, twin.weights + twin.biases):
        np.testing.assert_array_equal(a, b)


def test_history_of_finished_epochs_is_kept():
    rng = np.random.default_rng(0)
    X = 40.0 * np.eye(8)[rng.integers(0, 8, 40)]
    Y = np.zeros((40, 3))
    net = cbackprop.Network([8, 3], seed=0)
    net.weights, net.biases = [np.zeros((3, 8))], [np.zeros(3)]
    history = net.sgd(X, Y, 2, 10, 1e-3)
    with pytest.raises(FloatingPointError) as info:
        net.sgd(X, Y, 5, 1, float(np.finfo(np.float64).max))
    assert len(history) == 2 and info.value.history == []   # a new call's history
    assert info.value.epoch == 1


@pytest.mark.parametrize("cls", [cbackprop.Network, reference.Network], ids=["C", "ref"])
def test_divergence_in_the_first_epoch_with_momentum_restores_the_velocity(cls):
    """The velocity is part of the state an epoch starts from: a first epoch with momentum
    that diverges is replayed from zero velocity and names the same mini-batch as a
    step-by-step run, with that run's parameters before it (found in review: the lazily
    created velocity was missing from the first epoch's snapshot, so the replay started
    from the diverged velocity and blamed mini-batch 1)."""
    rng = np.random.default_rng(0)
    X, Y = rng.random((40, 5)), rng.random((40, 2))
    kw = dict(activations=["identity", "identity"], seed=1)
    net = cls([5, 8, 2], **kw)
    with pytest.raises(FloatingPointError) as info:
        net.sgd(X, Y, 1, 4, 1e150, mu=0.9)
    # the same epoch by hand: the same generator gives the same shuffle
    step = cls([5, 8, 2], **kw)
    perm = step._rng.permutation(40)
    for k in range(10):
        before = [p.copy() for p in step.weights + step.biases]
        rows = perm[4 * k:4 * k + 4]
        try:        # (a step that would make a parameter non-finite raises, changing nothing)
            step.update_mini_batch(X[rows], Y[rows], 1e150, mu=0.9)
        except FloatingPointError:
            break
    assert k >= 1, "the test needs a divergence after the first mini-batch"
    assert (info.value.epoch, info.value.mini_batch) == (1, k + 1)
    for p, q in zip(net.weights + net.biases, before):
        np.testing.assert_array_equal(p, q)
    assert all(np.isfinite(v).all() for v in net._velocity())
