"""scikit-learn estimators on cbackprop.Network: MLPClassifier and MLPRegressor.

    from cbackprop.sklearn import MLPClassifier
    clf = MLPClassifier(hidden_layer_sizes=(30,), learning_rate_init=0.05, random_state=0)
    labels = clf.fit(X, y).predict(X_test)

The parameters keep the names and meanings of sklearn.neural_network's estimators (solver
"sgd" with classical or Nesterov momentum, and "adam"); the training runs in cbackprop's C
engine: one Network.sgd epoch at a time, then scikit-learn's bookkeeping (loss_curve_, early
stopping, tol, n_iter_no_change).
Needs scikit-learn: ``pip install "cbackprop[sklearn]"``; ``import cbackprop`` alone never
imports it.

The book's model underneath: hidden layers of one activation, the output layer and cost
chosen together (softmax + log-likelihood, sigmoid + cross-entropy, identity + quadratic),
network2's L2 weight decay and momentum, Nesterov momentum and Adam.  alpha keeps
scikit-learn's meaning, alpha * W / batch_size added to each mini-batch's averaged gradient:
the network is trained with network2's lmbda = alpha * n / batch_size (n the training
samples), the same decay eta * alpha / batch_size per step (a last, shorter mini-batch gets
that decay too, where scikit-learn's is larger by batch_size / its length), and for Adam the
same L2 term alpha / batch_size * W in the gradient.
"""
from __future__ import annotations

try:
    import sklearn  # noqa: F401
except ImportError as exc:  # pragma: no cover - exercised in a subprocess by the tests
    raise ImportError('cbackprop.sklearn needs scikit-learn >= 1.4, which is not installed: '
                      'pip install "cbackprop[sklearn]"') from exc

import copy
import warnings
from numbers import Integral, Real

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin, _fit_context, is_classifier
from sklearn.exceptions import ConvergenceWarning
from sklearn.metrics import accuracy_score, r2_score
from sklearn.model_selection import train_test_split
from sklearn.utils import check_random_state, gen_batches
from sklearn.utils._param_validation import Interval, Options, StrOptions
from sklearn.utils.multiclass import check_classification_targets, type_of_target, unique_labels
from sklearn.utils.validation import check_is_fitted, column_or_1d

from ._progress import EpochProgress
from .network import Network

try:
    from sklearn.utils.validation import validate_data as _validate_data
except ImportError:  # scikit-learn < 1.6
    def _validate_data(estimator, *args, **kwargs):
        return estimator._validate_data(*args, **kwargs)

__all__ = ["MLPClassifier", "MLPRegressor"]

#: scikit-learn's hidden activation names -> Network's.
ACTIVATIONS = {"identity": "identity", "logistic": "sigmoid", "tanh": "tanh", "relu": "relu"}
#: output layer -> (Network's output activation, the cost that goes with it, scikit-learn's
#: name of the output activation for out_activation_).
OUTPUTS = {"softmax": ("softmax", "log-likelihood", "softmax"),
           "sigmoid": ("sigmoid", "cross-entropy", "logistic"),
           "identity": ("identity", "quadratic", "identity")}
#: initialisations: "glorot" scikit-learn's (uniform in +-sqrt(6 / (n_in + n_out)), 2 instead
#: of 6 for logistic hidden layers); "default" and "large" Network's (network2 / network.py).
INITS = ("glorot", "default", "large")


def _sgd_options(estimator):
    """solver="sgd": Network.sgd with Nesterov momentum (nesterovs_momentum, scikit-learn's
    default) or network2's classical momentum; plain SGD for momentum 0."""
    nesterov = estimator.nesterovs_momentum and estimator.momentum > 0
    return {"mu": float(estimator.momentum), "optimizer": "nesterov" if nesterov else "sgd"}


def _adam_options(estimator):
    """solver="adam": Network.sgd's Adam with beta_1, beta_2, epsilon."""
    return {"optimizer": "adam", "betas": (float(estimator.beta_1), float(estimator.beta_2)),
            "eps": float(estimator.epsilon)}


#: solver -> function(estimator) giving the optimiser's keyword arguments of Network.sgd and
#: Network.update_mini_batch.
SOLVERS = {"sgd": _sgd_options, "adam": _adam_options}

_DTYPE_NAMES = {"float32", "float64"}


def _dtype_of(estimator):
    return np.dtype(estimator.dtype)


def _float_dtypes(estimator):
    """validate_data's dtype: float32 and float64 data stay as they are (_in_dtype converts
    them, checking the range), anything else becomes the estimator's dtype."""
    first = _dtype_of(estimator)
    return [first, np.dtype(np.float64) if first == np.float32 else np.dtype(np.float32)]


def _in_dtype(A, dtype, name):
    """The finite array A as a C-contiguous array of dtype; ValueError naming the first value
    beyond dtype's range (rather than an inf and NumPy's overflow warning)."""
    with np.errstate(over="ignore"):
        out = np.ascontiguousarray(A, dtype=dtype)
    if out is not A and not np.isfinite(out).all():
        index = tuple(int(i) for i in np.argwhere(~np.isfinite(out))[0])
        raise ValueError(f"{name} holds {A[index]:.6g} at index {index}, beyond the range of {dtype} "
                         f"(+-{np.finfo(dtype).max:.4g}): use dtype=np.float64 or scale the data")
    return out


class _BaseMLP(BaseEstimator):
    """What MLPClassifier and MLPRegressor share.  Subclasses provide _targets(y, reset,
    incremental, classes) -> (Y, stratify) (the network's targets; on a fresh start it also
    sets _output_name, a key of OUTPUTS), _decode(a^L) -> predictions and _score_function
    (scikit-learn's score for early stopping)."""

    _parameter_constraints: dict = {
        "hidden_layer_sizes": ["array-like", Interval(Integral, 1, None, closed="left")],
        "activation": [StrOptions(set(ACTIVATIONS))],
        "solver": [StrOptions(set(SOLVERS))],
        "alpha": [Interval(Real, 0, None, closed="left")],
        "batch_size": [StrOptions({"auto"}), Interval(Integral, 1, None, closed="left")],
        "learning_rate_init": [Interval(Real, 0, None, closed="neither")],
        "max_iter": [Interval(Integral, 1, None, closed="left")],
        "shuffle": ["boolean"],
        "random_state": ["random_state"],
        "tol": [Interval(Real, 0, None, closed="left")],
        "verbose": ["verbose"],
        "warm_start": ["boolean"],
        "momentum": [Interval(Real, 0, 1, closed="both")],
        "nesterovs_momentum": ["boolean"],
        "early_stopping": ["boolean"],
        "validation_fraction": [Interval(Real, 0, 1, closed="left")],
        "beta_1": [Interval(Real, 0, 1, closed="left")],
        "beta_2": [Interval(Real, 0, 1, closed="left")],
        "epsilon": [Interval(Real, 0, None, closed="neither")],
        "n_iter_no_change": [Interval(Integral, 1, None, closed="left"), Options(Real, {np.inf})],
        "init": [StrOptions(set(INITS))],
        "dtype": [StrOptions(_DTYPE_NAMES), Options(type, {np.float32, np.float64}),
                  Options(np.dtype, {np.dtype(np.float32), np.dtype(np.float64)})],
    }

    def __init__(self, hidden_layer_sizes=(100,), activation="relu", *, solver="sgd", alpha=0.0001,
                 batch_size="auto", learning_rate_init=0.001, max_iter=200, shuffle=True,
                 random_state=None, tol=1e-4, verbose=False, warm_start=False, momentum=0.9,
                 nesterovs_momentum=True, early_stopping=False, validation_fraction=0.1, beta_1=0.9,
                 beta_2=0.999, epsilon=1e-8, n_iter_no_change=10, init="glorot", dtype=np.float32):
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.solver = solver
        self.alpha = alpha
        self.batch_size = batch_size
        self.learning_rate_init = learning_rate_init
        self.max_iter = max_iter
        self.shuffle = shuffle
        self.random_state = random_state
        self.tol = tol
        self.verbose = verbose
        self.warm_start = warm_start
        self.momentum = momentum
        self.nesterovs_momentum = nesterovs_momentum
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.beta_1 = beta_1
        self.beta_2 = beta_2
        self.epsilon = epsilon
        self.n_iter_no_change = n_iter_no_change
        self.init = init
        self.dtype = dtype

    # ---- parameters: the rules beyond _parameter_constraints ----------------------------------
    def _hidden_sizes(self):
        sizes = self.hidden_layer_sizes
        sizes = [sizes] if np.ndim(sizes) == 0 else list(sizes)
        for i, n in enumerate(sizes):
            if isinstance(n, (bool, np.bool_)) or not isinstance(n, Integral) or n < 1:
                value = n.item() if isinstance(n, np.generic) else n
                raise ValueError(f"hidden_layer_sizes must hold integers >= 1 (neurons per hidden "
                                 f"layer), got {value!r} at index {i} of {self.hidden_layer_sizes!r}")
        return [int(n) for n in sizes]

    def _optimizer_options(self):
        """The solver's Network keyword arguments."""
        return SOLVERS[self.solver](self)

    def _batch_size(self, n):
        if self.batch_size == "auto":
            return min(200, n)
        if self.batch_size > n:
            warnings.warn(f"batch_size={self.batch_size} is larger than the {n} training samples; "
                          f"the mini-batches hold all {n}", UserWarning, stacklevel=6)
        return min(int(self.batch_size), n)

    def _decay(self, n, batch):
        """network2's lmbda giving scikit-learn's alpha: the decay eta * lmbda / n per step
        equals eta * alpha / batch (Adam: the L2 term alpha / batch * W of the gradient)."""
        if self.solver == "sgd" and not self.learning_rate_init * self.alpha / batch < 1:
            raise ValueError(f"learning_rate_init * alpha / batch_size must be < 1 so that the weight "
                             f"decay factor 1 - learning_rate_init * alpha / batch_size stays positive, "
                             f"got learning_rate_init={self.learning_rate_init}, alpha={self.alpha}, "
                             f"batch_size={batch}")
        return float(self.alpha) * n / batch

    # ---- fitted state ---------------------------------------------------------------------------
    def _fitted_net(self, name):
        net = self.__dict__.get("_net")
        if net is None:
            raise AttributeError(f"{type(self).__name__} has no attribute {name!r} before fit")
        return net

    @property
    def network_(self):
        """The trained cbackprop.Network (the book-level API: feedforward, evaluate, save,
        further sgd).  Its weights are coefs_ transposed."""
        return self._fitted_net("network_")

    @property
    def coefs_(self):
        """[W_1, ..., W_L], W_l of shape (n_{l-1}, n_l): scikit-learn's layout, the network's
        weights w^l transposed.  Views: writing into them changes the model."""
        return [w.T for w in self._fitted_net("coefs_").weights]

    @coefs_.setter
    def coefs_(self, value):
        net = self._fitted_net("coefs_")
        self._check_layers(value, "coefs_", [w.T.shape for w in net.weights])
        net.weights = [np.asarray(c).T for c in value]

    @property
    def intercepts_(self):
        """[b_1, ..., b_L], b_l of shape (n_l,): the network's biases (views)."""
        return self._fitted_net("intercepts_").biases

    @intercepts_.setter
    def intercepts_(self, value):
        net = self._fitted_net("intercepts_")
        self._check_layers(value, "intercepts_", [b.shape for b in net.biases])
        net.biases = value

    @staticmethod
    def _check_layers(value, name, shapes):
        if isinstance(value, np.ndarray) or not hasattr(value, "__len__") or len(value) != len(shapes):
            raise ValueError(f"{name} must be a list of {len(shapes)} arrays, got {value!r:.80}")
        for i, (v, shape) in enumerate(zip(value, shapes)):
            if np.shape(v) != shape:
                raise ValueError(f"{name}[{i}] must have shape {shape}, got shape {np.shape(v)}")

    def _new_network(self, sizes, seed):
        act, cost, _ = OUTPUTS[self._output_name]
        return Network(sizes, activations=[ACTIVATIONS[self.activation]] * (len(sizes) - 2) + [act],
                       cost=cost, init="large" if self.init == "large" else "default",
                       dtype=_dtype_of(self), seed=seed)

    def __sklearn_is_fitted__(self):
        return "_net" in self.__dict__

    # (pickling: scikit-learn's, with the Network pickled as itself: its parameters, optimizer
    # state and generator, so that an unpickled estimator trains on bitwise as the original)

    # ---- fit --------------------------------------------------------------------------------------
    def _fit(self, X, y, incremental, classes=None):
        """fit (incremental False) or partial_fit: validate everything, then train.  A call
        rejected before training leaves the estimator as it was."""
        saved = dict(self.__dict__)
        try:
            plan = self._prepare(X, y, incremental, classes)
        except BaseException:
            self.__dict__.clear()
            self.__dict__.update(saved)
            raise
        self._train(*plan, incremental)
        return self

    def _prepare(self, X, y, incremental, classes):
        """The validated training data and settings; a new network on a fresh start."""
        options = self._optimizer_options()
        hidden = self._hidden_sizes()
        if incremental and self.early_stopping:
            raise ValueError("partial_fit does not support early_stopping=True (it trains one epoch "
                             "on the data it is given); use fit, or early_stopping=False")
        first = "_net" not in self.__dict__ or not (self.warm_start or incremental)
        X, y = _validate_data(self, X, y, dtype=_float_dtypes(self), order="C", multi_output=True,
                              y_numeric=not is_classifier(self), reset=first)
        X = _in_dtype(X, _dtype_of(self), "X")
        Y, stratify = self._targets(y, first, incremental, classes)
        sizes = [X.shape[1]] + hidden + [Y.shape[1]]
        rs = check_random_state(self.random_state)
        if first:
            params = self._initial_parameters(rs, sizes)
        else:
            self._check_warm(sizes)
        X, Y, X_val, y_val = self._split(X, Y, y, stratify, rs)
        batch = self._batch_size(X.shape[0])
        lmbda = self._decay(X.shape[0], batch)
        if first:
            self._start(sizes, params, int(rs.randint(np.iinfo(np.int32).max)))
        return X, Y, X_val, y_val, batch, lmbda, options

    def _initial_parameters(self, rs, sizes):
        """scikit-learn's initialisation, same draws from the same RandomState (so the same
        random_state gives the same starting network as sklearn's MLP), as (weights, biases)
        in the book's layout; None for Network's own initialisations."""
        if self.init != "glorot":
            return None
        factor = 2.0 if self.activation == "logistic" else 6.0
        weights, biases = [], []
        for n_in, n_out in zip(sizes[:-1], sizes[1:]):
            bound = np.sqrt(factor / (n_in + n_out))
            weights.append(rs.uniform(-bound, bound, (n_in, n_out)).T)
            biases.append(rs.uniform(-bound, bound, n_out))
        return weights, biases

    def _check_warm(self, sizes):
        net, act, (out, cost, _) = self._net, ACTIVATIONS[self.activation], OUTPUTS[self._output_name]
        wanted = (tuple(sizes), (act,) * (len(sizes) - 2) + (out,), cost, _dtype_of(self))
        fitted = (net.sizes, net.activations, net.cost_name, net.dtype)
        if wanted != fitted:
            raise ValueError(f"warm_start and partial_fit continue the fitted network (sizes "
                             f"{list(net.sizes)}, activations {list(net.activations)}, cost {net.cost_name!r}, "
                             f"dtype {net.dtype}), but the parameters and data ask for sizes {sizes}, "
                             f"activations {list(wanted[1])}, cost {cost!r}, dtype {wanted[3]}: fit "
                             f"with warm_start=False to start afresh")

    def _split(self, X, Y, y, stratify, rs):
        """(X_train, Y_train, X_val, y_val): scikit-learn's validation split for early stopping
        (the same rows for the same random_state; stratified by the labels when the network
        has one output unit, as scikit-learn's), or all data and Nones."""
        if not self.early_stopping:
            return X, Y, None, None
        X, X_val, Y, _, _, y_val = train_test_split(X, Y, y, random_state=rs, stratify=stratify,
                                                    test_size=self.validation_fraction)
        if X_val.shape[0] < 2:
            raise ValueError(f"The validation set is too small: {X_val.shape[0]} sample(s) from "
                             f"validation_fraction={self.validation_fraction} of {X.shape[0] + X_val.shape[0]}; "
                             f"increase validation_fraction or the size of your dataset")
        return np.ascontiguousarray(X), np.ascontiguousarray(Y), np.ascontiguousarray(X_val), y_val

    def _start(self, sizes, params, seed):
        """A new network and fresh training records (scikit-learn's _initialize)."""
        net = self._new_network(sizes, seed)
        if params is not None:
            net.weights, net.biases = params
        self._net = net
        self.n_layers_ = len(sizes)
        self.n_outputs_ = sizes[-1]
        self.out_activation_ = OUTPUTS[self._output_name][2]
        self.n_iter_ = self.t_ = 0
        self.loss_curve_ = []
        self._stopping_records()

    def _stopping_records(self):
        """Fresh records for the stopping rule: on a new start, and when a warm start
        switches early_stopping on or off."""
        self._no_improvement_count = 0
        if self.early_stopping:
            self.validation_scores_, self.best_validation_score_, self.best_loss_ = [], -np.inf, None
            self._best = ([w.copy() for w in self._net.weights], [b.copy() for b in self._net.biases])
        else:
            self.validation_scores_, self.best_validation_score_, self.best_loss_ = None, None, np.inf

    def _train(self, X, Y, X_val, y_val, batch, lmbda, options, incremental):
        if self.early_stopping != (self.validation_scores_ is not None):
            self._stopping_records()
        epochs = 1 if incremental else self.max_iter
        self.n_iter_ = 0
        stopped = False
        with EpochProgress(epochs, quiet=not self.verbose, desc=type(self).__name__) as progress:
            try:
                for _ in range(epochs):
                    loss = self._epoch(X, Y, batch, lmbda, options)
                    self.n_iter_ += 1
                    self.t_ += X.shape[0]
                    stopped = self._after_epoch(loss, X_val, y_val, progress)
                    if stopped:
                        break
            except KeyboardInterrupt:      # as scikit-learn: keep what was trained
                warnings.warn("Training interrupted by user.", UserWarning, stacklevel=5)
                stopped = True
        if not (incremental or stopped):
            warnings.warn(f"Stochastic Optimizer: Maximum iterations ({self.max_iter}) reached and the "
                          f"optimization hasn't converged yet.", ConvergenceWarning, stacklevel=5)
        if self.early_stopping:
            self._net.weights, self._net.biases = self._best

    def _epoch(self, X, Y, batch, lmbda, options):
        """One epoch over X, Y; returns the training loss after it (the cost plus the L2 term
        alpha / (2 batch) sum W^2, network2's total_cost).  A divergence (non-finite
        parameters) raises ValueError with the network (parameters, optimizer state,
        generator) from the start of the epoch."""
        net, eta = self._net, float(self.learning_rate_init)
        start = copy.deepcopy(net)
        try:
            if self.shuffle:
                record = net.sgd(X, Y, 1, batch, eta, lmbda=lmbda, monitor_training_cost=True,
                                 **options)[0]
                return record["training_cost"]
            for rows in gen_batches(X.shape[0], batch):
                net.update_mini_batch(X[rows], Y[rows], eta, lmbda=lmbda, n=X.shape[0], **options)
            if not all(np.isfinite(p).all() for p in net.weights + net.biases):
                raise FloatingPointError("non-finite parameters after the epoch")
            return net.total_cost(X, Y, lmbda)
        except FloatingPointError as exc:
            self._net = start
            raise ValueError(f"training diverged in epoch {self.n_iter_ + 1}: the parameters became "
                             f"non-finite with learning_rate_init={self.learning_rate_init}; a smaller "
                             f"learning_rate_init or scaled inputs (StandardScaler) usually help. The "
                             f"estimator keeps the parameters from the start of that epoch.") from exc

    def _after_epoch(self, loss, X_val, y_val, progress):
        """scikit-learn's bookkeeping after an epoch: loss_curve_, validation_scores_, the best
        parameters, the no-improvement count with tol; True when training stops."""
        self.loss_ = loss
        self.loss_curve_.append(loss)
        line = f"Iteration {self.n_iter_}, loss = {loss:.8f}"
        if self.early_stopping:
            score = self._validation_score(X_val, y_val)
            self.validation_scores_.append(score)
            line += f", validation score = {score:.6f}"
            improved = not score < self.best_validation_score_ + self.tol
            if score > self.best_validation_score_:
                self.best_validation_score_ = score
                self._best = ([w.copy() for w in self._net.weights], [b.copy() for b in self._net.biases])
        else:
            improved = not loss > self.best_loss_ - self.tol
            self.best_loss_ = min(self.best_loss_, loss)
        self._no_improvement_count = 0 if improved else self._no_improvement_count + 1
        progress.report(line)
        if self._no_improvement_count > self.n_iter_no_change:
            what = "Validation score" if self.early_stopping else "Training loss"
            progress.write(f"{what} did not improve more than tol={self.tol:f} for "
                           f"{self.n_iter_no_change} consecutive epochs. Stopping.")
            return True
        return False

    def _validation_score(self, X, y):
        return self._score_function(y, self._decode(self._net.feedforward(X).astype(np.float64)))

    def _forward(self, X):
        """a^L of the validated X, as float64."""
        check_is_fitted(self)
        X = _validate_data(self, X, dtype=_float_dtypes(self), order="C", reset=False)
        return self._net.feedforward(_in_dtype(X, _dtype_of(self), "X")).astype(np.float64)


class MLPClassifier(ClassifierMixin, _BaseMLP):
    """Multi-layer perceptron classifier trained by cbackprop's C engine.

    scikit-learn's MLPClassifier parameters with solver "sgd" or "adam" (see docs/sklearn.md
    for the side-by-side table), plus:

    output : {"auto", "softmax", "sigmoid"}, default "auto"
        The output layer and its cost: "softmax" with the log-likelihood cost (one unit per
        class); "sigmoid" with the cross-entropy cost (one unit for two classes, else one
        per class or label, probabilities of single-label data normalised to sum to 1);
        "auto" as scikit-learn: softmax for more than two classes, sigmoid for two classes
        and for multilabel y (a 2-D indicator matrix, which needs sigmoid).
    init : {"glorot", "default", "large"}, default "glorot"
        "glorot": scikit-learn's initialisation, the same draws for the same random_state;
        "default" and "large": Network's (network2.py's and network.py's).
    dtype : float32 or float64, default float32
        The precision the network trains and predicts in (predictions are returned as
        float64).

    Fitted attributes as scikit-learn's (``classes_``, ``coefs_``, ``intercepts_``,
    ``n_iter_``, ``loss_``, ``loss_curve_``, ``best_loss_``, ``validation_scores_``,
    ``best_validation_score_``, ``t_``, ``n_layers_``, ``n_outputs_``, ``out_activation_``,
    ``n_features_in_``, ``feature_names_in_``) and ``network_``, the trained
    cbackprop.Network.
    """

    _parameter_constraints: dict = {**_BaseMLP._parameter_constraints,
                                    "output": [StrOptions({"auto", "softmax", "sigmoid"})]}
    _score_function = staticmethod(accuracy_score)
    #: scikit-learn's estimator checks expected to fail: {check name: reason} (none fails).
    EXPECTED_FAILED_CHECKS: dict = {}

    def __init__(self, hidden_layer_sizes=(100,), activation="relu", *, output="auto", solver="sgd",
                 alpha=0.0001, batch_size="auto", learning_rate_init=0.001, max_iter=200, shuffle=True,
                 random_state=None, tol=1e-4, verbose=False, warm_start=False, momentum=0.9,
                 nesterovs_momentum=True, early_stopping=False, validation_fraction=0.1, beta_1=0.9,
                 beta_2=0.999, epsilon=1e-8, n_iter_no_change=10, init="glorot", dtype=np.float32):
        super().__init__(hidden_layer_sizes, activation, solver=solver, alpha=alpha, batch_size=batch_size,
                         learning_rate_init=learning_rate_init, max_iter=max_iter, shuffle=shuffle,
                         random_state=random_state, tol=tol, verbose=verbose, warm_start=warm_start,
                         momentum=momentum, nesterovs_momentum=nesterovs_momentum,
                         early_stopping=early_stopping, validation_fraction=validation_fraction,
                         beta_1=beta_1, beta_2=beta_2, epsilon=epsilon, n_iter_no_change=n_iter_no_change,
                         init=init, dtype=dtype)
        self.output = output

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y):
        """Train on X (n_samples, n_features) and labels y (n_samples,) of any sortable
        type, or a multilabel indicator matrix (n_samples, n_labels); returns self."""
        return self._fit(X, y, incremental=False)

    @_fit_context(prefer_skip_nested_validation=True)
    def partial_fit(self, X, y, classes=None):
        """One epoch over X, y.  classes (every label the estimator will see) is required on
        the first call; later calls may omit it.  Returns self."""
        return self._fit(X, y, incremental=True, classes=classes)

    def _targets(self, y, reset, incremental, classes):
        """Y for the network's outputs (n_samples, n_outputs) in dtype, and the labels to
        stratify the validation split by (None: not stratified); sets classes_ on a fresh
        start."""
        check_classification_targets(y)
        multilabel = type_of_target(y) == "multilabel-indicator"
        if not multilabel:
            y = column_or_1d(y, warn=True)
        if reset:
            if incremental and classes is None:
                raise ValueError("classes must be passed on the first call to partial_fit")
            self._set_classes(y, multilabel, classes)
        else:
            self._check_classes(y, multilabel, incremental, classes)
        dtype = _dtype_of(self)
        if self._multilabel:
            return np.ascontiguousarray(y, dtype=dtype), None
        index = np.searchsorted(self.classes_, y)
        if self._n_out == 1:          # (scikit-learn stratifies its split only in this case)
            return index.astype(dtype).reshape(-1, 1), y
        Y = np.zeros((y.shape[0], self._n_out), dtype=dtype)
        Y[np.arange(y.shape[0]), index] = 1
        return Y, None

    def _set_classes(self, y, multilabel, classes):
        """classes_, the output layer and its number of units, for a fresh start."""
        if multilabel:
            found = np.arange(y.shape[1])
        else:
            found = unique_labels(y if classes is None else classes)
            unknown = np.setdiff1d(unique_labels(y), found)
            if unknown.size:
                raise ValueError(f"y has labels {unknown.tolist()} that are not in classes={found.tolist()}")
            if found.size < 2:
                raise ValueError(f"{type(self).__name__} needs at least 2 classes, got 1 class: "
                                 f"{found.tolist()}")
        output = self._resolved_output(multilabel, found.size)
        self.classes_, self._multilabel, self._output_name = found, multilabel, output
        self._label_dtype = y.dtype
        self._n_out = 1 if output == "sigmoid" and not multilabel and found.size == 2 else found.size

    def _resolved_output(self, multilabel, n_classes):
        """The output parameter with "auto" resolved, as scikit-learn chooses."""
        if multilabel and self.output == "softmax":
            raise ValueError("output='softmax' gives one label per sample; multilabel y (an indicator "
                             "matrix) needs output='sigmoid' or 'auto'")
        if self.output == "auto":
            return "sigmoid" if multilabel or n_classes == 2 else "softmax"
        return self.output

    def _check_classes(self, y, multilabel, incremental, classes):
        """y fits the classes and output layer of the fitted network (warm_start, partial_fit)."""
        output = self._resolved_output(self._multilabel, self.classes_.size)
        if output != self._output_name:
            raise ValueError(f"output={self.output!r} asks for a {output} output layer, the fitted network "
                             f"has a {self._output_name} one: fit with warm_start=False to start afresh")
        if classes is not None and not np.array_equal(unique_labels(classes), self.classes_):
            raise ValueError(f"classes={classes!r} is not the same as on the first call to partial_fit, "
                             f"was {self.classes_!r}")
        kinds = ("single-label", "multilabel")
        if multilabel != self._multilabel:
            raise ValueError(f"y holds {kinds[multilabel]} data, but the estimator was fitted on "
                             f"{kinds[self._multilabel]} data")
        if multilabel:
            if y.shape[1] != self.classes_.size:
                raise ValueError(f"y has {y.shape[1]} labels, the estimator was fitted on {self.classes_.size}")
            return
        labels = unique_labels(y)
        if not incremental and not np.array_equal(labels, self.classes_):
            raise ValueError(f"warm_start can only be used where y has the same classes as in the previous "
                             f"call to fit: previously {self.classes_.tolist()}, y has {labels.tolist()}")
        unknown = np.setdiff1d(labels, self.classes_)
        if unknown.size:
            raise ValueError(f"y has classes {unknown.tolist()} not in classes_ {self.classes_.tolist()}")

    def _probabilities(self, A):
        """predict_proba from the outputs a^L (float64)."""
        if self._multilabel or self._output_name == "softmax":
            return A
        if self._n_out == 1:
            return np.hstack([1 - A, A])
        total = A.sum(axis=1, keepdims=True)      # one-vs-rest sigmoid units, normalised
        return np.divide(A, total, out=np.full_like(A, 1 / A.shape[1]), where=total > 0)

    def _decode(self, A):
        """Labels from the outputs a^L."""
        if self._multilabel:
            return (A > 0.5).astype(self._label_dtype)
        return self.classes_[np.argmax(self._probabilities(A), axis=1)]

    def predict(self, X):
        """Class labels of the rows of X (an indicator matrix for multilabel fits)."""
        return self._decode(self._forward(X))

    def predict_proba(self, X):
        """Class probabilities (n_samples, n_classes) in the order of ``classes_`` (float64)."""
        return self._probabilities(self._forward(X))

    def predict_log_proba(self, X):
        """log(predict_proba(X)); -inf where a probability is 0."""
        with np.errstate(divide="ignore"):
            return np.log(self.predict_proba(X))

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_label = self.output != "softmax"
        return tags

    def _more_tags(self):  # scikit-learn < 1.6
        return {"multilabel": self.output != "softmax", "_xfail_checks": self.EXPECTED_FAILED_CHECKS}


class MLPRegressor(RegressorMixin, _BaseMLP):
    """Multi-layer perceptron regressor trained by cbackprop's C engine: hidden layers of
    activation, an identity output layer and the quadratic cost (scikit-learn's squared
    error).  Parameters and fitted attributes as MLPClassifier's, without output and
    ``classes_``; y may have several columns (one output unit each).
    """

    _output_name = "identity"
    _score_function = staticmethod(r2_score)
    #: scikit-learn's estimator checks expected to fail: {check name: reason} (none fails).
    EXPECTED_FAILED_CHECKS: dict = {}

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y):
        """Train on X (n_samples, n_features) and targets y (n_samples,) or
        (n_samples, n_targets); returns self."""
        return self._fit(X, y, incremental=False)

    @_fit_context(prefer_skip_nested_validation=True)
    def partial_fit(self, X, y):
        """One epoch over X, y; returns self."""
        return self._fit(X, y, incremental=True)

    def _targets(self, y, reset, incremental, classes):
        if y.ndim == 2 and y.shape[1] == 1:
            y = column_or_1d(y, warn=True)
        Y = _in_dtype(y.reshape(y.shape[0], -1), _dtype_of(self), "y")
        if not reset and Y.shape[1] != self._net.sizes[-1]:
            raise ValueError(f"y has {Y.shape[1]} targets, the estimator was fitted on {self._net.sizes[-1]}")
        return Y, None

    @staticmethod
    def _decode(A):
        return A.ravel() if A.shape[1] == 1 else A

    def predict(self, X):
        """Predictions (n_samples,) for one target, else (n_samples, n_targets); float64."""
        return self._decode(self._forward(X))

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        return tags

    def _more_tags(self):  # scikit-learn < 1.6
        return {"multioutput": True, "_xfail_checks": self.EXPECTED_FAILED_CHECKS}
