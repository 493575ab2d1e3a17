"""Renamed names keep working for one version: they resolve to the new one and warn.

An old name warns with a :class:`DeprecationWarning` that names its replacement, and is
removed in :data:`REMOVED_IN`.  A module lists its renamed functions in a dict
``{old: new}`` and resolves them with :func:`renamed_getattr` as its module-level
``__getattr__``, so the old names are no attributes of the module (``from module import
old`` and ``module.old`` both go through it) and are left out of ``__all__`` and the API
reference.
"""

from __future__ import annotations

import sys
import warnings

__all__ = ["REMOVED_IN", "warn_renamed", "renamed_getattr"]

#: The version that removes the old names.
REMOVED_IN = "0.3.0"


def warn_renamed(old: str, new: str, stacklevel: int = 3) -> None:
    """Warn that ``old`` is deprecated in favour of ``new``.

    ``stacklevel`` counts from this function: the default, 3, names the line of the caller
    of the function that calls it (a module's ``__getattr__``, or a module's body on
    import, whose import machinery frames the warning skips).
    """
    warnings.warn(f"{old} is deprecated and will be removed in {REMOVED_IN}: use {new} (renamed, same behaviour)",
                  DeprecationWarning, stacklevel=stacklevel)


def renamed_getattr(module: str, renamed: dict[str, str]):
    """A module-level ``__getattr__`` for ``module`` that resolves the old names of ``renamed`` with a warning.

    Parameters
    ----------
    module : str
        The module's ``__name__``.
    renamed : dict of str to str
        Old name -> new name; the new name is looked up in ``module`` when the old one is used.

    Returns
    -------
    callable
        ``__getattr__(name)``: the object now called ``renamed[name]``, after a
        :class:`DeprecationWarning`; ``AttributeError`` for any other name.
    """

    def __getattr__(name: str):
        if name not in renamed:
            raise AttributeError(f"module {module!r} has no attribute {name!r}")
        new = renamed[name]
        warn_renamed(f"{module}.{name}", f"{module}.{new}")
        return getattr(sys.modules[module], new)

    return __getattr__
