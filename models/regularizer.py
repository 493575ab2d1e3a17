"""Deprecated: the module is :mod:`models.regulariser` (one spelling across the API).

Importing this name warns with a DeprecationWarning; it re-exports :mod:`models.regulariser`
until 0.3.0.
"""

from . import regulariser as _regulariser
from .deprecation import warn_renamed
from .regulariser import *  # noqa: F403  (the same public names)
from .regulariser import __all__  # noqa: F401

warn_renamed("models.regularizer", "models.regulariser")


def __getattr__(name: str):
    """Any other name of :mod:`models.regulariser`, e.g. a private helper."""
    return getattr(_regulariser, name)
