"""The shared training loop (cbackprop._training): an epoch that ends abnormally.

A KeyboardInterrupt raised by the epoch after a whole number of mini-batches (as the engine
raises it on Ctrl-C) leaves the parameters as they are when finite, rolls them back as a
divergence does when not, appends nothing for the unfinished epoch and carries the finished
epochs in ``history``.  The epoch is faked here: it runs k mini-batches through the
network's own step, then raises.
"""
import numpy as np
import pytest

import cbackprop
from cbackprop import reference

CLASSES = [pytest.param(cbackprop.Network, id="C"), pytest.param(reference.Network, id="reference")]


def interrupted(cls, stop_epoch, stop_batch):
    """A subclass of cls whose epoch number stop_epoch raises KeyboardInterrupt after
    stop_batch mini-batches (the others run whole, one mini-batch at a time)."""

    class Interrupted(cls):
        epochs_run = 0

        def _epoch(self, X, T, perm, mini_batch_size, h):
            self.epochs_run += 1
            for j, k in enumerate(range(0, X.shape[0], mini_batch_size)):
                if self.epochs_run == stop_epoch and j == stop_batch:
                    raise KeyboardInterrupt
                rows = perm[k:k + mini_batch_size]
                with np.errstate(over="ignore", invalid="ignore"):
                    self._step(X[rows], T[rows], h)

    return Interrupted


def by_hand(cls, X, Y, mbs, eta, epochs, batches, **kw):
    """The parameters after `epochs` whole epochs and `batches` mini-batches of the next,
    through update_mini_batch with the same shuffles; also the parameters before each
    mini-batch of that last epoch."""
    net = cls([5, 4, 3], seed=1, **kw)
    before = []
    for e in range(epochs + 1):
        perm = net._rng.permutation(X.shape[0])
        for j, k in enumerate(range(0, X.shape[0], mbs)):
            if e == epochs and j == batches:
                return net, before
            if e == epochs:
                before.append([p.copy() for p in net.weights + net.biases])
            rows = perm[k:k + mbs]
            try:    # (a step that would make a parameter non-finite raises, changing nothing)
                net.update_mini_batch(X[rows], Y[rows], eta)
            except FloatingPointError:
                net.diverged_at = (e + 1, j + 1)
                return net, before
    return net, before


def data(n=40):
    rng = np.random.default_rng(0)
    return rng.random((n, 5)), np.eye(3)[rng.integers(0, 3, n)]


@pytest.mark.parametrize("cls", CLASSES)
@pytest.mark.parametrize("stop_epoch, stop_batch", [(1, 0), (1, 3), (2, 5), (3, 9)])
def test_interrupt_keeps_whole_mini_batches_and_finished_epochs(cls, stop_epoch, stop_batch):
    X, Y = data()
    net = interrupted(cls, stop_epoch, stop_batch)([5, 4, 3], seed=1)
    seen = []
    with pytest.raises(KeyboardInterrupt) as info:
        net.sgd(X, Y, 5, 4, 0.5, test_data=(X, Y.argmax(1)), callback=seen.append)
    history = info.value.history
    assert [r["epoch"] for r in history] == list(range(1, stop_epoch)) and history == seen
    assert info.value.__cause__ is None
    want, _ = by_hand(cls, X, Y, 4, 0.5, stop_epoch - 1, stop_batch)
    for a, b in zip(net.weights + net.biases, want.weights + want.biases):
        np.testing.assert_array_equal(a, b)
    # the generator drew exactly stop_epoch shuffles
    assert net._rng.integers(1 << 62) == want._rng.integers(1 << 62)


@pytest.mark.parametrize("cls", CLASSES)
def test_interrupt_after_a_divergence_rolls_back_like_a_divergence(cls):
    """An epoch that made the parameters non-finite and was then interrupted: the parameters
    are those before the mini-batch that diverged (the replay finds it), the interrupt is
    re-raised with the divergence as its cause."""
    rng = np.random.default_rng(0)
    X = 40.0 * np.eye(5)[rng.integers(0, 5, 40)]
    Y = np.zeros((40, 3))
    eta = float(np.finfo(np.float64).max)
    kw = dict(activations="identity")
    net = interrupted(cls, 1, 8)([5, 4, 3], seed=1, **kw)
    with pytest.raises(KeyboardInterrupt) as info:
        net.sgd(X, Y, 3, 4, eta)
    cause = info.value.__cause__
    assert isinstance(cause, FloatingPointError) and cause.epoch == 1 and info.value.history == []
    k = cause.mini_batch
    assert 1 <= k <= 8
    ref, before = by_hand(cls, X, Y, 4, eta, 0, 8, **kw)
    assert all(np.isfinite(p).all() for p in net.weights + net.biases)
    for a, b in zip(net.weights + net.biases, before[k - 1]):
        np.testing.assert_array_equal(a, b)
    # the step by hand that follows diverges
    assert ref.diverged_at == (1, k)


@pytest.mark.parametrize("cls", CLASSES)
def test_interrupt_in_a_callback_carries_the_history(cls):
    X, Y = data()

    def callback(record):
        if record["epoch"] == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt) as info:
        cls([5, 4, 3], seed=1).sgd(X, Y, 5, 4, 0.5, callback=callback)
    # the second epoch finished: its record is in the history
    assert [r["epoch"] for r in info.value.history] == [1, 2]
