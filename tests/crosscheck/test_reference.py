"""The pure-NumPy reference: against central finite differences, the book's three forms of
backprop against each other, and a hand-worked 2-3-1 network."""
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import cbackprop
from cbackprop import reference

FD_SIZES = [[3, 2], [4, 5, 3], [2, 7, 1, 3], [5, 4, 6, 3, 2], [3, 3, 3, 3, 3, 3]]


@pytest.mark.parametrize("sizes", FD_SIZES, ids=str)
@pytest.mark.parametrize("m", [1, 4])
@pytest.mark.parametrize("form", ["backprop", "backprop_per_sample", "backprop_sigma_matrix"])
def test_reference_gradient_matches_central_differences(sizes, m, form, batch, central_differences):
    net = reference.Network(sizes, seed=len(sizes) * 10 + m)
    X, Y = batch(sizes, m, seed=m)
    nabla_b, nabla_w = getattr(net, form)(X, Y)
    fd_b, fd_w = central_differences(net, X, Y, 1e-6)
    # Central differences with h = 1e-6 on an O(1) cost: truncation ~h^2 ~ 1e-12 and
    # rounding ~eps/h ~ 1e-10, so 1e-7 relative / 1e-9 absolute is a real check.
    for l, (bp, fd) in enumerate(zip(nabla_b + nabla_w, fd_b + fd_w)):
        np.testing.assert_allclose(bp, fd, rtol=1e-7, atol=1e-9, err_msg=f"{form} array {l}")


def test_finite_difference_check_can_fail(batch, central_differences):
    """The check above detects a wrong gradient (guards against a vacuous comparison)."""
    sizes = [4, 5, 3]
    net = reference.Network(sizes, seed=1)
    X, Y = batch(sizes, 3)
    nabla_b, nabla_w = net.backprop(X, Y)
    fd_b, fd_w = central_differences(net, X, Y, 1e-6)
    with pytest.raises(AssertionError):
        # a gradient missing the 1/m of the batch average
        np.testing.assert_allclose(nabla_w[0] * 3, fd_w[0], rtol=1e-7, atol=1e-9)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("sizes", [[3, 1], [6, 9, 4], [10, 7, 5, 3, 2], [31, 17, 9]], ids=str)
@pytest.mark.parametrize("m", [1, 2, 7])
def test_per_sample_loop_and_sigma_matrix_equal_matrix_form(sizes, m, dtype, batch, assert_close):
    """Book: the per-sample column-vector loop summed over the batch equals the fully
    matrix-based form; the Sigma'(z) diagonal-matrix form of BP1/BP2 equals the Hadamard form."""
    net = reference.Network(sizes, seed=3, dtype=dtype)
    X, Y = batch(sizes, m, seed=5)
    mat_b, mat_w = net.backprop(X, Y)
    for form in (net.backprop_per_sample, net.backprop_sigma_matrix):
        b, w = form(X, Y)
        for l in range(len(mat_b)):
            assert b[l].shape == mat_b[l].shape and w[l].shape == mat_w[l].shape
            assert b[l].dtype == dtype and w[l].dtype == dtype
            assert_close(b[l], mat_b[l], dtype, f"{form.__name__} nabla_b[{l}]")
            assert_close(w[l], mat_w[l], dtype, f"{form.__name__} nabla_w[{l}]")


# ---- a hand-worked 2-3-1 network ----------------------------------------------------------
#   x = (1, 2), y = 1.  w1 = [[0.5, -0.25], [0, 0], [1, -0.5]], b1 = (0, ln 3, -ln 3)
#   z1 = w1 x + b1 = (0, ln 3, -ln 3)          a1 = sigma(z1) = (1/2, 3/4, 1/4)
#   w2 = [[2, -4, 4]], b2 = 1:  z2 = 1 - 3 + 1 + 1 = 0, a2 = 1/2
#   C = 1/2 (1 - 1/2)^2 = 1/8
#   BP1: delta2 = (a2 - y) sigma'(z2) = (-1/2)(1/4) = -1/8
#   BP3/BP4: nabla_b2 = -1/8, nabla_w2 = delta2 a1^T = (-1/16, -3/32, -1/32)
#   BP2: w2^T delta2 = (-1/4, 1/2, -1/2); sigma'(z1) = a1 (1 - a1) = (1/4, 3/16, 3/16)
#        delta1 = (-1/16, 3/32, -3/32)
#   BP3/BP4: nabla_b1 = delta1, nabla_w1 = delta1 x^T = [[-1/16, -1/8], [3/32, 3/16], [-3/32, -3/16]]
#   A second sample x' = (0, 0), y' = 0 has z1' = b1, the same a1 and a2' = 1/2, so
#   delta2' = +1/8 and delta1' = -delta1: the batch average of the two cancels in nabla_b and
#   nabla_w2, and nabla_w1 becomes half of the single-sample value (x' contributes 0).
HAND = dict(
    w1=[[0.5, -0.25], [0.0, 0.0], [1.0, -0.5]], b1=[0.0, np.log(3.0), -np.log(3.0)],
    w2=[[2.0, -4.0, 4.0]], b2=[1.0],
    a1=[0.5, 0.75, 0.25], a2=[0.5], cost=1 / 8,
    nabla_b1=[-1 / 16, 3 / 32, -3 / 32], nabla_w1=[[-1 / 16, -1 / 8], [3 / 32, 3 / 16], [-3 / 32, -3 / 16]],
    nabla_b2=[-1 / 8], nabla_w2=[[-1 / 16, -3 / 32, -1 / 32]],
)


def hand_network(cls, dtype):
    net = cls([2, 3, 1], dtype=dtype, seed=0)
    net.weights = [HAND["w1"], HAND["w2"]]
    net.biases = [HAND["b1"], HAND["b2"]]
    return net


@pytest.mark.parametrize("dtype, tol", [(np.float64, 1e-15), (np.float32, 1e-7)])
@pytest.mark.parametrize("impl", ["reference", "C"])
def test_hand_worked_2_3_1(impl, dtype, tol):
    cls = reference.Network if impl == "reference" else cbackprop.Network
    net = hand_network(cls, dtype)
    x, y = np.array([1.0, 2.0]), np.array([1.0])
    np.testing.assert_allclose(net.feedforward(x), HAND["a2"], atol=tol)
    np.testing.assert_allclose(net.cost(x, y), HAND["cost"], atol=tol)
    nabla_b, nabla_w = net.backprop(x, y)
    np.testing.assert_allclose(nabla_b[0], HAND["nabla_b1"], atol=tol)
    np.testing.assert_allclose(nabla_b[1], HAND["nabla_b2"], atol=tol)
    np.testing.assert_allclose(nabla_w[0], HAND["nabla_w1"], atol=tol)
    np.testing.assert_allclose(nabla_w[1], HAND["nabla_w2"], atol=tol)

    # The two-sample batch: averages, as worked out above.
    X, Y = np.array([[1.0, 2.0], [0.0, 0.0]]), np.array([[1.0], [0.0]])
    nabla_b, nabla_w = net.backprop(X, Y)
    np.testing.assert_allclose(nabla_b[0], [0, 0, 0], atol=tol)
    np.testing.assert_allclose(nabla_b[1], [0], atol=tol)
    np.testing.assert_allclose(nabla_w[1], [[0, 0, 0]], atol=tol)
    np.testing.assert_allclose(nabla_w[0], np.array(HAND["nabla_w1"]) / 2, atol=tol)

    # One step with eta = 2 on the single sample: p <- p - 2 nabla_p.
    net.update_mini_batch(x, y, eta=2.0)
    np.testing.assert_allclose(net.biases[1], [1.25], atol=tol)
    np.testing.assert_allclose(net.weights[1], [[2.125, -3.8125, 4.0625]], atol=tol)
    np.testing.assert_allclose(net.weights[0], [[0.625, 0.0], [-0.1875, -0.375], [1.1875, -0.125]],
                               atol=tol)


def test_reference_never_imports_the_compiled_module():
    code = ("import sys, numpy as np\n"
            "import cbackprop.reference as r\n"
            "net = r.Network([3, 4, 2], seed=0)\n"
            "X = np.ones((5, 3)); Y = np.zeros((5, 2))\n"
            "net.backprop(X, Y); net.sgd(X, Y, 1, 2, 1.0, test_data=(X, np.zeros(5, int)))\n"
            "bad = [m for m in sys.modules if m in ('cbackprop._core', 'cbackprop.network')]\n"
            "assert not bad, bad\n")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_reference_sources_do_not_mention_the_compiled_module():
    # every module of the package that importing the reference loads
    code = ("import sys, cbackprop.reference\n"
            "print(' '.join(m for m in sys.modules if m.startswith('cbackprop.')))\n")
    loaded = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True,
                            timeout=60).stdout.split()
    names = [m.split(".", 1)[1] + ".py" for m in loaded]
    assert {"reference.py", "_base.py", "_training.py", "_validation.py", "_model.py"} <= set(names), names
    pkg = Path(reference.__file__).parent
    for name in names:
        text = (pkg / name).read_text()
        assert "_core" not in text and "from .network" not in text and "import network" not in text, name
