"""Kept only for the compiled module's import of check_int; the shared code lives
in _validation (argument checks), _model (initialisation, costs), _training (the sgd loop)
and _base (NetworkBase)."""
from ._validation import check_int

__all__ = ["check_int"]
