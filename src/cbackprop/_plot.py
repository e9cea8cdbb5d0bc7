"""Learning curves for ``cbackprop train --plot PATH``, drawn with matplotlib's Agg canvas.

matplotlib is optional: nothing here imports it at module level.  The figure is drawn on a
``matplotlib.figure.Figure`` with an explicit ``FigureCanvasAgg``, never through pyplot, so no
GUI backend is touched and the global backend choice of a caller is left alone.
"""
from __future__ import annotations

import os

from ._atomic import atomic_path

INSTALL_HINT = "install it with 'pip install matplotlib'"


class MatplotlibMissing(ImportError):
    pass


def require_matplotlib():
    """Import matplotlib's Agg canvas; MatplotlibMissing with an install hint if that fails."""
    try:
        import matplotlib  # noqa: F401
    except ImportError as exc:
        if isinstance(exc, ModuleNotFoundError) and exc.name == "matplotlib":
            raise MatplotlibMissing(f"matplotlib is not installed; {INSTALL_HINT}") from None
        raise MatplotlibMissing(f"matplotlib cannot be imported ({type(exc).__name__}: {exc}); "
                                f"{INSTALL_HINT}") from None
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
    except ImportError as exc:
        raise MatplotlibMissing(f"matplotlib cannot be imported ({type(exc).__name__}: {exc}); "
                                f"{INSTALL_HINT}") from None
    return FigureCanvasAgg


def plot_format(path):
    """The file format for path from its suffix ('png' when it has none); ValueError if the
    Agg canvas cannot write that format."""
    canvas = require_matplotlib()
    suffix = os.path.splitext(path)[1].lower().lstrip(".")
    if not suffix:
        return "png"
    supported = canvas.get_supported_filetypes()
    if suffix not in supported:
        raise ValueError(f"cannot write a plot as .{suffix}; use one of "
                         f"{', '.join('.' + s for s in sorted(supported))}")
    return suffix


def write_learning_curves(path, epochs, evaluation_accuracy, evaluation_cost=None,
                          training_accuracy=None, training_cost=None, *, evaluation_label="test",
                          title=None):
    """Write learning curves per epoch to path (format from its suffix, PNG by default): the
    accuracy in % (evaluation and, if given, training) and, if given, the cost (evaluation
    and training, network2's total_cost).  The figure goes to a temporary file in the same
    directory and is then renamed onto path."""
    canvas_cls = require_matplotlib()
    from matplotlib.figure import Figure

    fmt = plot_format(path)
    with_cost = evaluation_cost is not None or training_cost is not None
    n_panels = 2 if with_cost else 1
    fig = Figure(figsize=(6.4, 2.6 * n_panels + 0.6), layout="constrained")
    canvas_cls(fig)
    axes = fig.subplots(n_panels, 1, sharex=True, squeeze=False)[:, 0]
    style = dict(marker="o", markersize=3)
    panels = [(axes[0], "accuracy (%)", evaluation_accuracy, training_accuracy)]
    if with_cost:
        panels.append((axes[1], "cost", evaluation_cost, training_cost))
    for ax, ylabel, ev, tr in panels:
        if ev is not None:
            ax.plot(epochs, ev, color="C0", label=evaluation_label, **style)
        if tr is not None:
            ax.plot(epochs, tr, color="C1", label="training", **style)
        ax.set_ylabel(ylabel)
        ax.grid(True, alpha=0.3)
        ax.legend(loc="best", fontsize="small")
    axes[-1].set_xlabel("epoch")
    if len(epochs) <= 20:
        axes[-1].set_xticks(list(epochs))
    if title:
        fig.suptitle(title, fontsize="medium")

    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        fig.savefig(f, format=fmt, dpi=100)
