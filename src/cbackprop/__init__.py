"""cbackprop: backpropagation for fully-connected feedforward networks, exactly as chapter 2
of Michael Nielsen's "Neural Networks and Deep Learning" states it, with the hot loops in C.

    >>> import cbackprop
    >>> net = cbackprop.Network([784, 30, 10], seed=0)

``cbackprop.Network`` is the C path; ``cbackprop.reference.Network`` is the same API in pure
NumPy, which never imports the compiled module.
"""
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["Network", "reference", "gradient_check", "load", "load_network2"]

if TYPE_CHECKING:  # what the lazy names below are, for type checkers
    from . import reference as reference
    from .gradcheck import gradient_check as gradient_check
    from .network import Network as Network
    load = Network.load
    load_network2 = Network.load_network2


def __getattr__(name: str) -> Any:
    # Lazy, so that `import cbackprop.reference` does not load the compiled module.
    if name == "Network":
        from .network import Network
        return Network
    if name == "gradient_check":
        from .gradcheck import gradient_check
        return gradient_check
    if name in ("load", "load_network2"):
        from .network import Network
        return getattr(Network, name)
    if name == "reference":
        import importlib
        return importlib.import_module(".reference", __name__)
    raise AttributeError(f"module 'cbackprop' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)
