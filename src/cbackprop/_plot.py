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


def write_learning_curves(path, epochs, test_accuracy, train_cost=None, *, title=None,
                          cost_label="training cost"):
    """Write the test accuracy (in %) per epoch and, if given, the training cost per epoch to
    path (format from its suffix, PNG by default).  The figure goes to a temporary file in the
    same directory and is then renamed onto path."""
    canvas_cls = require_matplotlib()
    from matplotlib.figure import Figure

    fmt = plot_format(path)
    n_panels = 1 if train_cost is None else 2
    fig = Figure(figsize=(6.4, 2.6 * n_panels + 0.6), layout="constrained")
    canvas_cls(fig)
    axes = fig.subplots(n_panels, 1, sharex=True, squeeze=False)[:, 0]
    ax = axes[0]
    ax.plot(epochs, test_accuracy, marker="o", markersize=3, color="C0")
    ax.set_ylabel("test accuracy (%)")
    ax.grid(True, alpha=0.3)
    if train_cost is not None:
        axes[1].plot(epochs, train_cost, marker="o", markersize=3, color="C1")
        axes[1].set_ylabel(cost_label)
        axes[1].grid(True, alpha=0.3)
    axes[-1].set_xlabel("epoch")
    if len(epochs) <= 20:
        axes[-1].set_xticks(list(epochs))
    if title:
        fig.suptitle(title, fontsize="medium")

    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        fig.savefig(f, format=fmt, dpi=100)
