"""cbackprop.sklearn: scikit-learn's own estimator checks, the same training as
sklearn.neural_network where the two algorithms coincide, and the conventions (labels,
partial_fit, warm_start, early stopping, pickling, Pipeline, cross_val_score, GridSearchCV)."""
import copy
import inspect
import pickle
import subprocess
import sys
import warnings

import numpy as np
import pytest

pytest.importorskip("sklearn")

import joblib  # noqa: E402  (a scikit-learn dependency)
from sklearn.base import clone  # noqa: E402
from sklearn.datasets import (make_classification, make_multilabel_classification,  # noqa: E402
                              make_regression)
from sklearn.exceptions import ConvergenceWarning, NotFittedError  # noqa: E402
from sklearn.model_selection import GridSearchCV, cross_val_score, train_test_split  # noqa: E402
from sklearn.neural_network import MLPClassifier as SkMLPClassifier  # noqa: E402
from sklearn.neural_network import MLPRegressor as SkMLPRegressor  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402
from sklearn.utils.estimator_checks import parametrize_with_checks  # noqa: E402

import cbackprop  # noqa: E402
from cbackprop.datasets import load_sample  # noqa: E402
from cbackprop.sklearn import MLPClassifier, MLPRegressor  # noqa: E402

# The checks train with the default max_iter on tiny data sets; whether that converged is
# not what they test.
no_convergence_warning = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")


def _expected_failed_checks(estimator):
    return estimator.EXPECTED_FAILED_CHECKS


# scikit-learn >= 1.6 takes the expected failures here (1.8: xfail_strict too), older ones
# from the estimators' _xfail_checks tag (the same dict).
_CHECK_OPTIONS = {k: v for k, v in (("expected_failed_checks", _expected_failed_checks), ("xfail_strict", True))
                  if k in inspect.signature(parametrize_with_checks).parameters}


@parametrize_with_checks([MLPClassifier(hidden_layer_sizes=(10,), random_state=0),
                          MLPRegressor(hidden_layer_sizes=(10,), random_state=0)], **_CHECK_OPTIONS)
@no_convergence_warning
def test_scikit_learn_estimator_checks(estimator, check):
    check(estimator)


# The same checks with the other outputs, activations, dtypes and solvers (slow: a few
# hundred fits; CI runs them).
@pytest.mark.slow
@parametrize_with_checks(
    [MLPClassifier(hidden_layer_sizes=(10, 5), activation="tanh", output="sigmoid", shuffle=False,
                   dtype=np.float64, random_state=0),
     MLPClassifier(hidden_layer_sizes=(10,), activation="logistic", output="softmax", init="default",
                   random_state=0),
     MLPRegressor(hidden_layer_sizes=(10,), activation="tanh", shuffle=False, dtype="float64",
                  random_state=0),
     MLPClassifier(hidden_layer_sizes=(10,), solver="adam", learning_rate_init=0.01, random_state=0),
     MLPRegressor(hidden_layer_sizes=(10,), solver="adam", learning_rate_init=0.01, random_state=0)],
    **_CHECK_OPTIONS)
@no_convergence_warning
def test_scikit_learn_estimator_checks_other_settings(estimator, check):
    check(estimator)


# ---- the same computation as sklearn.neural_network ---------------------------------------------
# Same random_state: the same initial draws (init="glorot") and validation split.  Without
# shuffling, with classical momentum (nesterovs_momentum=False) and mini-batches that divide
# the training set, both run the same mini-batch SGD, so the parameters agree to rounding.
SAME = dict(hidden_layer_sizes=(7, 5), activation="tanh", alpha=1e-2, batch_size=20, learning_rate_init=0.05,
            max_iter=6, shuffle=False, random_state=3, momentum=0.9, tol=0.0, n_iter_no_change=100,
            nesterovs_momentum=False)
SKLEARN_SGD = dict(solver="sgd", learning_rate="constant")


def _max_param_difference(ours, theirs):
    return max(float(np.abs(a - b).max())
               for a, b in zip(ours.coefs_ + ours.intercepts_, theirs.coefs_ + theirs.intercepts_))


def _classification(n_classes, n=100, seed=0):
    return make_classification(n, 6, n_informative=4, n_classes=n_classes, random_state=seed)


def _regression(n_targets=2, n=100):
    X, y = make_regression(n, 6, n_targets=n_targets, random_state=0)
    return X, y / y.std()


@pytest.mark.parametrize("case", ["binary", "multiclass", "multilabel", "regression",
                                  "early-stopping binary", "early-stopping multiclass"])
@pytest.mark.parametrize("activation", ["tanh", "logistic", "relu"])
@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_same_parameters_as_scikit_learn(case, activation):
    params = dict(SAME, activation=activation)
    if case.startswith("early-stopping"):
        params.update(early_stopping=True, validation_fraction=0.2)
    if "binary" in case:
        (X, y), ours, theirs = _classification(2), MLPClassifier, SkMLPClassifier
    elif "multiclass" in case:
        (X, y), ours, theirs = _classification(4), MLPClassifier, SkMLPClassifier
    elif case == "multilabel":
        X, y = make_multilabel_classification(100, 6, n_classes=3, random_state=0)
        ours, theirs = MLPClassifier, SkMLPClassifier
    else:
        (X, y), ours, theirs = _regression(), MLPRegressor, SkMLPRegressor
    a = ours(dtype=np.float64, **params).fit(X, y)
    b = theirs(**params, **SKLEARN_SGD).fit(X, y)
    assert a.out_activation_ == b.out_activation_
    assert a.n_iter_ == b.n_iter_
    assert _max_param_difference(a, b) < 1e-12
    if params.get("early_stopping"):
        np.testing.assert_allclose(a.validation_scores_, b.validation_scores_, rtol=0, atol=1e-12)
    if ours is MLPClassifier:
        np.testing.assert_array_equal(a.predict(X), b.predict(X))
        np.testing.assert_allclose(a.predict_proba(X), b.predict_proba(X), rtol=1e-12, atol=1e-15)
    else:
        np.testing.assert_allclose(a.predict(X), b.predict(X), rtol=1e-12, atol=1e-15)


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_nesterovs_momentum_is_scikit_learns():
    X, y = _classification(4)
    params = dict(SAME, nesterovs_momentum=True)
    a = MLPClassifier(dtype=np.float64, **params).fit(X, y)
    b = SkMLPClassifier(**params, **SKLEARN_SGD).fit(X, y)
    assert _max_param_difference(a, b) < 1e-12
    c = MLPClassifier(dtype=np.float64, **SAME).fit(X, y)          # classical momentum differs
    assert _max_param_difference(a, c) > 1e-3


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@pytest.mark.parametrize("epsilon,bound", [(1e-30, 1e-12), (1e-8, 4e-6)])
def test_adam_is_scikit_learns_up_to_where_epsilon_enters(epsilon, bound):
    """scikit-learn's Adam divides by sqrt(v) + epsilon with the bias correction in the step
    size; PyTorch's (cbackprop's) by sqrt(v / (1 - beta_2^t)) + epsilon, i.e. scikit-learn's
    epsilon is cbackprop's times sqrt(1 - beta_2^t).  With an epsilon far below sqrt(v) the two
    agree to rounding (measured: 1.7e-16 after 6 epochs of 5 steps); with the default they
    differ in the digits epsilon / sqrt(v) reaches (measured: 8.2e-7)."""
    X, y = _classification(3)
    params = dict(SAME, learning_rate_init=0.01, epsilon=epsilon, beta_1=0.8, beta_2=0.99)
    del params["momentum"], params["nesterovs_momentum"]
    a = MLPClassifier(dtype=np.float64, solver="adam", **params).fit(X, y)
    b = SkMLPClassifier(solver="adam", **params).fit(X, y)
    assert _max_param_difference(a, b) < bound
    assert a.network_._engine.adam_steps == 6 * 5


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_alpha_differs_from_scikit_learn_only_in_a_last_shorter_mini_batch():
    # n = 90, batch_size 20: the last mini-batch holds 10 rows.  scikit-learn's decay there
    # is eta * alpha / 10, cbackprop's eta * alpha / 20; without alpha both agree.
    X, y = _classification(3, n=90)
    for alpha, agree in ((0.0, True), (0.5, False)):
        a = MLPClassifier(dtype=np.float64, **dict(SAME, alpha=alpha)).fit(X, y)
        b = SkMLPClassifier(**dict(SAME, alpha=alpha), **SKLEARN_SGD).fit(X, y)
        assert (_max_param_difference(a, b) < 1e-12) == agree


def test_an_epoch_is_network_sgd_with_lmbda_alpha_n_over_batch_size():
    # The shuffled path: the estimator's epochs are Network.sgd epochs with network2's
    # lmbda = alpha * n / batch_size and Nesterov momentum (nesterovs_momentum=True), from
    # scikit-learn's initial draws and with the network seeded by the next draw of the same
    # RandomState.
    X, y = _classification(3, n=90)
    clf = MLPClassifier(hidden_layer_sizes=(6,), alpha=0.3, batch_size=20, learning_rate_init=0.05, max_iter=2,
                        momentum=0.5, n_iter_no_change=100, dtype=np.float64, random_state=0)
    with pytest.warns(ConvergenceWarning):
        clf.fit(X, y)
    rs = np.random.RandomState(0)
    sizes = [6, 6, 3]
    weights, biases = clf._initial_parameters(rs, sizes)
    net = cbackprop.Network(sizes, activations=["relu", "softmax"], cost="log-likelihood", dtype=np.float64,
                            seed=int(rs.randint(np.iinfo(np.int32).max)))
    net.weights, net.biases = weights, biases
    history = net.sgd(X, np.eye(3)[y], 2, 20, 0.05, lmbda=0.3 * 90 / 20, mu=0.5, optimizer="nesterov",
                      monitor_training_cost=True)
    for w, c in zip(net.weights, clf.coefs_):
        np.testing.assert_array_equal(w.T, c)
    assert clf.loss_curve_ == [h["training_cost"] for h in history]


# ---- labels and outputs -----------------------------------------------------------------------
@pytest.fixture(scope="module")
def blobs():
    X, y = make_classification(120, 5, n_informative=4, n_redundant=0, n_classes=3, class_sep=2.0,
                               random_state=1)
    return StandardScaler().fit_transform(X), y


def _quiet_fit(est, X, y, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return est.fit(X, y, **kw)


@pytest.mark.parametrize("labels", [np.array(["cat", "dog", "emu"]), np.array([-5, 7, 100]),
                                    np.array(["a", "bb", "ccc"], dtype=object)])
def test_any_sortable_labels_give_classes_and_predictions(blobs, labels):
    X, y = blobs
    clf = _quiet_fit(MLPClassifier((8,), learning_rate_init=0.1, max_iter=30, random_state=0), X, labels[y])
    np.testing.assert_array_equal(clf.classes_, labels)
    pred = clf.predict(X)
    assert pred.dtype == clf.classes_.dtype and set(pred) <= set(labels)
    proba = clf.predict_proba(X)
    assert proba.shape == (X.shape[0], 3) and proba.dtype == np.float64
    np.testing.assert_allclose(proba.sum(axis=1), 1, rtol=1e-6)
    np.testing.assert_array_equal(labels[np.argmax(proba, axis=1)], pred)
    assert clf.score(X, labels[y]) > 0.8


@pytest.mark.parametrize("output, units", [("auto", 3), ("softmax", 3), ("sigmoid", 3)])
def test_output_layers(blobs, output, units):
    X, y = blobs
    clf = _quiet_fit(MLPClassifier((8,), output=output, learning_rate_init=0.1, max_iter=30, random_state=0),
                     X, y)
    net = clf.network_
    assert net.sizes[-1] == units
    assert net.activations[-1] == ("sigmoid" if output == "sigmoid" else "softmax")
    assert net.cost_name == ("cross-entropy" if output == "sigmoid" else "log-likelihood")
    np.testing.assert_allclose(clf.predict_proba(X).sum(axis=1), 1, rtol=1e-6)


@pytest.mark.parametrize("output, units, cost", [("auto", 1, "cross-entropy"), ("sigmoid", 1, "cross-entropy"),
                                                 ("softmax", 2, "log-likelihood")])
def test_binary_outputs(blobs, output, units, cost):
    X, y = blobs
    y2 = np.where(y == 0, "no", "yes")
    clf = _quiet_fit(MLPClassifier((8,), output=output, learning_rate_init=0.1, max_iter=30, random_state=0),
                     X, y2)
    assert clf.network_.sizes[-1] == units and clf.network_.cost_name == cost
    proba = clf.predict_proba(X)
    assert proba.shape == (X.shape[0], 2)
    a = clf.network_.feedforward(X.astype(np.float32)).astype(np.float64)
    np.testing.assert_allclose(proba[:, 1], a[:, -1])
    np.testing.assert_array_equal(clf.predict(X), np.where(proba[:, 1] > proba[:, 0], "yes", "no"))


def test_multilabel_indicator_targets():
    X, Y = make_multilabel_classification(150, 8, n_classes=4, random_state=0)
    clf = _quiet_fit(MLPClassifier((16,), learning_rate_init=0.05, max_iter=50, random_state=0), X, Y)
    assert clf.out_activation_ == "logistic" and clf.network_.cost_name == "cross-entropy"
    np.testing.assert_array_equal(clf.classes_, np.arange(4))
    pred = clf.predict(X)
    assert pred.shape == Y.shape and pred.dtype == Y.dtype
    np.testing.assert_array_equal(pred, (clf.predict_proba(X) > 0.5).astype(Y.dtype))
    with pytest.raises(ValueError, match="multilabel y .* needs output='sigmoid'"):
        MLPClassifier(output="softmax").fit(X, Y)


def test_one_class_is_refused_naming_it():
    X = np.zeros((5, 2))
    with pytest.raises(ValueError, match=r"at least 2 classes, got 1 class: \['a'\]"):
        MLPClassifier().fit(X, ["a"] * 5)


def test_coefs_are_scikit_learns_layout(blobs):
    X, y = blobs
    clf = _quiet_fit(MLPClassifier((8, 4), activation="relu", max_iter=3, random_state=0, dtype=np.float64), X, y)
    assert [c.shape for c in clf.coefs_] == [(5, 8), (8, 4), (4, 3)]
    assert [b.shape for b in clf.intercepts_] == [(8,), (4,), (3,)]
    for c, w in zip(clf.coefs_, clf.network_.weights):
        np.testing.assert_array_equal(c, w.T)
    a = X
    for c, b in zip(clf.coefs_[:-1], clf.intercepts_[:-1]):
        a = np.maximum(a @ c + b, 0)
    z = a @ clf.coefs_[-1] + clf.intercepts_[-1]
    p = np.exp(z - z.max(axis=1, keepdims=True))
    np.testing.assert_allclose(clf.predict_proba(X), p / p.sum(axis=1, keepdims=True), rtol=1e-12)
    # writable views and a checked setter
    clf.coefs_[0][:, 0] = 0
    assert not clf.network_.weights[0][0].any()
    clf.intercepts_ = [np.zeros_like(b) for b in clf.intercepts_]
    assert not clf.network_.biases[2].any()
    with pytest.raises(ValueError, match=r"coefs_\[1\] must have shape \(8, 4\), got shape \(4, 8\)"):
        clf.coefs_ = [clf.coefs_[0], clf.coefs_[1].T, clf.coefs_[2]]


def test_unfitted_estimators_have_no_fitted_attributes():
    clf = MLPClassifier()
    for name in ("coefs_", "intercepts_", "network_"):
        assert not hasattr(clf, name)
    with pytest.raises(NotFittedError):
        clf.predict(np.zeros((1, 2)))


# ---- dtype --------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype, expected", [(np.float32, np.float32), ("float64", np.float64),
                                             (np.dtype("float32"), np.float32)])
def test_dtype_sets_the_networks_precision(blobs, dtype, expected):
    X, y = blobs
    clf = _quiet_fit(MLPClassifier((4,), max_iter=2, dtype=dtype), X, y)
    assert clf.network_.dtype == expected and clf.coefs_[0].dtype == expected
    assert clf.predict_proba(X).dtype == np.float64
    reg = _quiet_fit(MLPRegressor((4,), max_iter=2, dtype=dtype), X, y.astype(float))
    assert reg.predict(X).dtype == np.float64


def test_float32_default_is_close_to_float64(blobs):
    X, y = blobs
    p32 = _quiet_fit(MLPClassifier((8,), max_iter=5, random_state=0, shuffle=False), X, y).predict_proba(X)
    p64 = _quiet_fit(MLPClassifier((8,), max_iter=5, random_state=0, shuffle=False, dtype=np.float64),
                     X, y).predict_proba(X)
    np.testing.assert_allclose(p32, p64, atol=1e-5)


# ---- training conventions -----------------------------------------------------------------------
def test_partial_fit_is_one_epoch_of_fit(blobs):
    X, y = blobs
    params = dict(hidden_layer_sizes=(8,), random_state=0, learning_rate_init=0.05, batch_size=16)
    with pytest.warns(ConvergenceWarning):
        one_epoch = MLPClassifier(max_iter=1, **params).fit(X, y)
    inc = MLPClassifier(**params).partial_fit(X, y, classes=[0, 1, 2])
    assert inc.n_iter_ == 1 and inc.t_ == X.shape[0] and len(inc.loss_curve_) == 1
    for a, b in zip(inc.coefs_ + inc.intercepts_, one_epoch.coefs_ + one_epoch.intercepts_):
        np.testing.assert_array_equal(a, b)
    inc.partial_fit(X[:40], y[:40])             # classes may be omitted later; y may lack some
    assert inc.t_ == X.shape[0] + 40 and len(inc.loss_curve_) == 2


def test_partial_fit_classes_rules(blobs):
    X, y = blobs
    with pytest.raises(ValueError, match="classes must be passed on the first call to partial_fit"):
        MLPClassifier().partial_fit(X, y)
    with pytest.raises(ValueError, match=r"y has labels \[2\] that are not in classes=\[0, 1\]"):
        MLPClassifier().partial_fit(X, y, classes=[0, 1])
    clf = MLPClassifier((4,)).partial_fit(X, y, classes=[0, 1, 2, 3])
    assert list(clf.classes_) == [0, 1, 2, 3] and clf.network_.sizes[-1] == 4
    with pytest.raises(ValueError, match="is not the same as on the first call"):
        clf.partial_fit(X, y, classes=[0, 1, 2])
    with pytest.raises(ValueError, match="partial_fit does not support early_stopping=True"):
        MLPClassifier(early_stopping=True).partial_fit(X, y, classes=[0, 1, 2])


def test_warm_start_continues_the_same_run(blobs):
    # 2 + 3 warm-started epochs are the 5 epochs of one fit: the network (parameters, momentum
    # velocity, shuffle generator) carries over.
    X, y = blobs
    params = dict(hidden_layer_sizes=(8,), random_state=0, learning_rate_init=0.05, batch_size=16,
                  n_iter_no_change=100)
    with pytest.warns(ConvergenceWarning):
        whole = MLPClassifier(max_iter=5, **params).fit(X, y)
    warm = MLPClassifier(max_iter=2, warm_start=True, **params)
    with pytest.warns(ConvergenceWarning):
        warm.fit(X, y)
    warm.set_params(max_iter=3)
    with pytest.warns(ConvergenceWarning):
        warm.fit(X, y)
    assert warm.n_iter_ == 3 and warm.t_ == 5 * X.shape[0]
    np.testing.assert_array_equal(warm.loss_curve_, whole.loss_curve_)
    for a, b in zip(warm.coefs_ + warm.intercepts_, whole.coefs_ + whole.intercepts_):
        np.testing.assert_array_equal(a, b)
    # without warm_start a second fit starts afresh and repeats the first
    cold = MLPClassifier(max_iter=5, **params)
    for _ in range(2):
        with pytest.warns(ConvergenceWarning):
            cold.fit(X, y)
        np.testing.assert_array_equal(cold.loss_curve_, whole.loss_curve_)


def test_warm_start_refuses_a_different_network(blobs):
    X, y = blobs
    clf = _quiet_fit(MLPClassifier((8,), max_iter=2, warm_start=True), X, y)
    clf.set_params(hidden_layer_sizes=(9,))
    with pytest.raises(ValueError, match=r"warm_start and partial_fit continue the fitted network \(sizes "
                                         r"\[5, 8, 3\].*ask for sizes \[5, 9, 3\]"):
        clf.fit(X, y)
    clf.set_params(hidden_layer_sizes=(8,))
    with pytest.raises(ValueError, match="same classes as in the previous call"):
        clf.fit(X[y < 2], y[y < 2])
    clf.set_params(output="sigmoid")
    with pytest.raises(ValueError, match="output='sigmoid' asks for a sigmoid output layer, the fitted network "
                                         "has a softmax one"):
        clf.fit(X, y)


def test_no_hidden_layer_is_softmax_regression(blobs):
    X, y = blobs
    clf = _quiet_fit(MLPClassifier((), learning_rate_init=0.1, max_iter=20, random_state=0), X, y)
    assert clf.network_.sizes == (5, 3) and clf.n_layers_ == 2 and len(clf.coefs_) == 1
    assert clf.score(X, y) > 0.7


def _stop_epoch(curve, better, tol, patience):
    """The epoch (1-based) at which scikit-learn's no-improvement rule stops, or None."""
    best, count = (np.inf if better == "lower" else -np.inf), 0
    for i, v in enumerate(curve, start=1):
        improved = not (v > best - tol) if better == "lower" else not (v < best + tol)
        count = 0 if improved else count + 1
        best = min(best, v) if better == "lower" else max(best, v)
        if count > patience:
            return i
    return None


def test_tol_and_n_iter_no_change_stop_on_the_training_loss(blobs):
    X, y = blobs
    clf = MLPClassifier((8,), learning_rate_init=0.1, max_iter=500, tol=1e-3, n_iter_no_change=3,
                        random_state=0).fit(X, y)
    assert clf.n_iter_ < 500
    assert _stop_epoch(clf.loss_curve_, "lower", 1e-3, 3) == clf.n_iter_ == len(clf.loss_curve_)
    assert clf.best_loss_ == min(clf.loss_curve_) and clf.loss_ == clf.loss_curve_[-1]
    assert clf.validation_scores_ is None and clf.best_validation_score_ is None


def test_early_stopping_keeps_the_best_validation_parameters(blobs):
    X, y = blobs
    clf = MLPClassifier((8,), learning_rate_init=0.2, max_iter=300, early_stopping=True, validation_fraction=0.25,
                        n_iter_no_change=4, tol=1e-4, batch_size=16, shuffle=False, random_state=0).fit(X, y)
    scores = clf.validation_scores_
    assert len(scores) == len(clf.loss_curve_) == clf.n_iter_ < 300
    assert _stop_epoch(scores, "higher", 1e-4, 4) == clf.n_iter_
    assert clf.best_validation_score_ == max(scores) and clf.best_loss_ is None
    # scikit-learn's split: train_test_split after the initial draws from the same RandomState
    rs = np.random.RandomState(0)
    clf._initial_parameters(rs, clf.network_.sizes)
    X_train, X_val, y_train, y_val = train_test_split(X, y, random_state=rs, test_size=0.25)
    assert clf.score(X_val, y_val) == clf.best_validation_score_
    # the kept parameters are those after the first best epoch (shuffle=False: no seed involved)
    again = MLPClassifier(**dict(clf.get_params(), early_stopping=False, max_iter=int(np.argmax(scores)) + 1))
    _quiet_fit(again, X_train, y_train)
    for a, b in zip(clf.coefs_ + clf.intercepts_, again.coefs_ + again.intercepts_):
        np.testing.assert_array_equal(a, b)


def test_verbose_prints_a_line_per_epoch(blobs, capsys):
    X, y = blobs
    _quiet_fit(MLPClassifier((4,), max_iter=3, verbose=True, early_stopping=True), X, y)
    lines = capsys.readouterr().out.splitlines()
    assert [ln.split(",")[0] for ln in lines] == ["Iteration 1", "Iteration 2", "Iteration 3"]
    assert all("loss = " in ln and "validation score = " in ln for ln in lines)
    _quiet_fit(MLPClassifier((4,), max_iter=3), X, y)
    assert capsys.readouterr().out == ""


def test_divergence_raises_and_keeps_finite_parameters(blobs):
    X, y = blobs
    for shuffle in (True, False):
        clf = MLPClassifier((8,), activation="identity", learning_rate_init=1e3, momentum=0.0, shuffle=shuffle,
                            random_state=0, max_iter=50)
        with pytest.raises(ValueError, match="training diverged in epoch .* learning_rate_init=1000.0"):
            clf.fit(X * 1e3, y)
        assert all(np.isfinite(c).all() for c in clf.coefs_ + clf.intercepts_)


def test_ctrl_c_keeps_the_epochs_trained_so_far(blobs, monkeypatch):
    X, y = blobs
    epoch = MLPClassifier._epoch
    calls = []

    def interrupted_third(self, *args):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return epoch(self, *args)

    monkeypatch.setattr(MLPClassifier, "_epoch", interrupted_third)
    with pytest.warns(UserWarning, match="Training interrupted by user"):
        clf = MLPClassifier((4,), max_iter=10).fit(X, y)
    assert clf.n_iter_ == 2 and len(clf.loss_curve_) == 2
    assert clf.predict(X).shape == y.shape


def test_warm_start_can_switch_early_stopping_on_and_off(blobs):
    X, y = blobs
    clf = _quiet_fit(MLPClassifier((4,), max_iter=3, warm_start=True, random_state=0), X, y)
    assert clf.validation_scores_ is None
    _quiet_fit(clf.set_params(early_stopping=True), X, y)
    assert len(clf.validation_scores_) == 3 and clf.best_loss_ is None
    _quiet_fit(clf.set_params(early_stopping=False), X, y)
    assert clf.validation_scores_ is None and clf.best_loss_ == min(clf.loss_curve_[-3:])
    assert len(clf.loss_curve_) == 9


def test_values_beyond_float32_are_refused_naming_them(blobs):
    X, y = blobs
    big = X.copy()
    big[3, 1] = -1e39
    msg = r"X holds -1e\+39 at index \(3, 1\), beyond the range of float32 \(\+-3.403e\+38\): use dtype=np.float64"
    with pytest.raises(ValueError, match=msg):
        MLPClassifier().fit(big, y)
    clf = _quiet_fit(MLPClassifier((2,), max_iter=1, dtype=np.float64), big, y)       # fine in float64
    assert clf.predict(big).shape == y.shape
    small = _quiet_fit(MLPClassifier((2,), max_iter=1), X, y)
    with pytest.raises(ValueError, match=msg):
        small.predict(big)
    with pytest.raises(ValueError, match=r"y holds 1e\+39 at index \(7, 0\), beyond the range of float32"):
        MLPRegressor().fit(X, np.where(np.arange(len(y)) == 7, 1e39, 0.0))


def test_batch_size_above_the_sample_count_warns_and_clips(blobs):
    X, y = blobs
    with pytest.warns(UserWarning, match="batch_size=500 is larger than the 120 training samples"):
        _quiet_fit(MLPClassifier((4,), batch_size=500, max_iter=1), X, y)


# ---- parameter validation -----------------------------------------------------------------------
@pytest.mark.parametrize("params, match", [
    (dict(alpha=-1.0), r"'alpha' parameter of MLPClassifier must be a float in the range \[0.0, inf\). Got -1.0"),
    (dict(activation="softmax"), r"'activation' parameter .* Got 'softmax'"),
    (dict(output="linear"), r"'output' parameter .* Got 'linear'"),
    (dict(dtype="float16"), r"'dtype' parameter .* Got 'float16'"),
    (dict(batch_size=0), r"'batch_size' parameter .* Got 0"),
    (dict(momentum=1.5), r"'momentum' parameter .* Got 1.5"),
    (dict(init="xavier"), r"'init' parameter .* Got 'xavier'"),
    (dict(hidden_layer_sizes=(10, 0)), r"hidden_layer_sizes must hold integers >= 1 .* got 0 at index 1"),
    (dict(hidden_layer_sizes=(10, 2.5)), r"hidden_layer_sizes must hold integers >= 1 .* got 2.5 at index 1"),
    (dict(learning_rate_init=float("inf")), r"'learning_rate_init' parameter .* range \(0.0, inf\). Got inf"),
    (dict(learning_rate_init=10.0, alpha=30.0, batch_size=100),
     r"learning_rate_init \* alpha / batch_size must be < 1 .* learning_rate_init=10.0, alpha=30.0, batch_size=100"),
    (dict(solver="lbfgs"), r"'solver' parameter .* Got 'lbfgs'"),
    (dict(beta_1=1.0), r"'beta_1' parameter .* range \[0.0, 1.0\). Got 1.0"),
    (dict(beta_2=-0.1), r"'beta_2' parameter .* Got -0.1"),
    (dict(epsilon=0.0), r"'epsilon' parameter .* Got 0.0"),
    (dict(nesterovs_momentum="yes"), r"'nesterovs_momentum' parameter .* Got 'yes'"),
])
def test_bad_parameters_are_refused_naming_the_value(blobs, params, match):
    X, y = blobs
    with pytest.raises(ValueError, match=match):
        MLPClassifier(**params).fit(X, y)


def test_a_refused_call_leaves_the_fitted_estimator_unchanged(blobs):
    X, y = blobs
    clf = _quiet_fit(MLPClassifier((4,), max_iter=2, random_state=0), X, y)
    before = pickle.dumps(clf)
    proba = clf.predict_proba(X)
    X_nan = X.copy()
    X_nan[3, 2] = np.nan
    for change, data in ((dict(alpha=-1.0), (X, y)), (dict(solver="lbfgs"), (X, y)),
                         (dict(learning_rate_init=10.0, alpha=1e3, batch_size=5), (X, y)),
                         (dict(hidden_layer_sizes=(4, 0)), (X, y)), ({}, (X_nan, y)),
                         ({}, (X[:, :3], np.linspace(0, 1, len(y)))),
                         (dict(early_stopping=True, validation_fraction=0.01), (X[:50], y[:50]))):
        original = {k: clf.get_params()[k] for k in change}
        clf.set_params(**change)
        with pytest.raises(ValueError):
            clf.fit(*data)
        clf.set_params(**original)
        assert pickle.dumps(clf) == before
        np.testing.assert_array_equal(clf.predict_proba(X), proba)


def test_get_set_params_and_clone():
    clf = MLPClassifier((3,), alpha=0.5, dtype=np.float64, output="sigmoid")
    params = clf.get_params()
    assert params["alpha"] == 0.5 and params["output"] == "sigmoid" and params["dtype"] is np.float64
    assert set(params) == set(MLPRegressor().get_params()) | {"output"}
    other = clone(clf).set_params(alpha=0.1)
    assert other.alpha == 0.1 and clf.alpha == 0.5 and other.output == "sigmoid"


# ---- pickling -----------------------------------------------------------------------------------
@pytest.mark.parametrize("make", [
    lambda: (MLPClassifier((8,), max_iter=5, random_state=0), *_classification(3)),
    lambda: (MLPClassifier((8,), max_iter=5, random_state=0, dtype=np.float64), *_classification(2)),
    lambda: (MLPRegressor((8,), max_iter=5, random_state=0), *_regression()),
])
def test_pickle_joblib_and_deepcopy_round_trips(tmp_path, make):
    est, X, y = make()
    _quiet_fit(est, X, y)
    method = est.predict_proba if hasattr(est, "predict_proba") else est.predict
    expected = method(X)
    path = tmp_path / "model.joblib"
    joblib.dump(est, path)
    copies = [pickle.loads(pickle.dumps(est)), joblib.load(path), copy.deepcopy(est)]
    for other in copies:
        got = other.predict_proba(X) if hasattr(other, "predict_proba") else other.predict(X)
        np.testing.assert_array_equal(got, expected)
        assert other.network_ is not est.network_
        assert other.get_params() == est.get_params() and other.n_iter_ == est.n_iter_
    # the copies are independent and train on
    copies[0].partial_fit(X, y)
    np.testing.assert_array_equal(method(X), expected)
    assert not np.array_equal(copies[0].coefs_[0], est.coefs_[0])
    # unpickled twice, the same further training
    a, b = pickle.loads(pickle.dumps(est)), pickle.loads(pickle.dumps(est))
    a.partial_fit(X, y)
    b.partial_fit(X, y)
    np.testing.assert_array_equal(a.coefs_[0], b.coefs_[0])


@pytest.mark.parametrize("solver", ["sgd", "adam"])
def test_unpickled_estimator_trains_on_as_the_original(solver):
    """The network is pickled as itself (Network's pickling): its optimizer state (momentum
    velocity, Adam's moments and steps) and generator carry over, so partial_fit after a
    round trip is bitwise partial_fit on the original."""
    X, y = _classification(3)
    clf = _quiet_fit(MLPClassifier((4,), max_iter=2, solver=solver, random_state=0), X, y)
    assert isinstance(clf.__getstate__()["_net"], cbackprop.Network)
    other = pickle.loads(pickle.dumps(clf))
    velocity = clf.network_._engine.velocity
    assert velocity is not None and np.abs(velocity).max() > 0
    np.testing.assert_array_equal(other.network_._engine.velocity, velocity)
    for est in (clf, other):
        est.partial_fit(X, y)
    for a, b in zip(clf.coefs_ + clf.intercepts_, other.coefs_ + other.intercepts_):
        np.testing.assert_array_equal(a, b)
    assert pickle.loads(pickle.dumps(MLPClassifier(alpha=0.3))).alpha == 0.3   # unfitted too


# ---- scikit-learn's tools -----------------------------------------------------------------------
@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_mnist_sample_pipeline_cross_val_score():
    # Measured (3 random_states, 2-core EPYC): fold accuracies 0.920-0.929, means 0.921-0.925.
    (X, y), _ = load_sample()
    model = make_pipeline(StandardScaler(), MLPClassifier((30,), learning_rate_init=0.05, max_iter=10,
                                                          random_state=0))
    scores = cross_val_score(model, X, y, cv=3)
    assert scores.shape == (3,) and scores.min() > 0.88, scores


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_grid_search_in_two_processes():
    X, y = _classification(3, n=150)
    search = GridSearchCV(make_pipeline(StandardScaler(), MLPClassifier((8,), max_iter=20, random_state=0)),
                          {"mlpclassifier__learning_rate_init": [0.01, 0.1],
                           "mlpclassifier__alpha": [1e-4, 1e-2]}, cv=3, n_jobs=2)
    search.fit(X, y)
    assert search.best_score_ > 0.6
    assert search.best_params_["mlpclassifier__learning_rate_init"] == 0.1     # 20 epochs: the larger rate
    assert np.isfinite(search.cv_results_["mean_test_score"]).all()
    assert search.best_estimator_[-1].n_features_in_ == 6


def test_feature_names_of_a_data_frame():
    pd = pytest.importorskip("pandas")
    X, y = _classification(3, n=60)
    frame = pd.DataFrame(X, columns=[f"f{i}" for i in range(X.shape[1])])
    clf = _quiet_fit(MLPClassifier((4,), max_iter=3), frame, y)
    np.testing.assert_array_equal(clf.feature_names_in_, frame.columns)
    with pytest.raises(ValueError, match="The feature names should match those that were passed during fit"):
        clf.predict(frame.rename(columns={"f0": "g0"}))
    assert not hasattr(_quiet_fit(MLPRegressor((4,), max_iter=3), X, y.astype(float)), "feature_names_in_")


# ---- the optional dependency --------------------------------------------------------------------
def _python(code):
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)


def test_import_cbackprop_does_not_import_sklearn():
    run = _python("import sys, cbackprop; cbackprop.Network([2, 2]); import cbackprop.datasets; "
                  "print('sklearn' in sys.modules)")
    assert run.returncode == 0, run.stderr
    assert run.stdout.splitlines()[-1] == "False"   # (an editable install may log a rebuild first)


def test_missing_sklearn_gives_the_install_command():
    run = _python("import sys; sys.modules['sklearn'] = None; import cbackprop.sklearn")
    assert run.returncode == 1
    assert 'ImportError: cbackprop.sklearn needs scikit-learn >= 1.4, which is not installed: ' \
           'pip install "cbackprop[sklearn]"' in run.stderr
