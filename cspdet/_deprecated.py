"""Old import paths of names that moved: each keeps working for one release, with a ``DeprecationWarning``.

A module whose names moved ends with ``__getattr__ = moved(__name__, {"Name": "new.module", ...})``; the name is
looked up in its new module only when someone imports it from the old place (so the old module imports nothing
of the new one, and no import cycle can hide in a shim).
"""

from __future__ import annotations

import importlib
import warnings
from collections.abc import Callable
from typing import Any

__all__ = ["moved"]


def moved(old_module: str, names: dict[str, str]) -> Callable[[str], Any]:
    """A module-level ``__getattr__`` serving ``names`` with a ``DeprecationWarning``: name -> its new module
    (``"cspdet.runtime"``), or ``"module:new_name"`` when it was renamed too."""

    def __getattr__(name: str) -> Any:
        target = names.get(name)
        if target is None:
            raise AttributeError(f"module {old_module!r} has no attribute {name!r}")
        module, _, new_name = target.partition(":")
        new_name = new_name or name
        warnings.warn(f"{old_module}.{name} moved to {module}.{new_name}; import it from there (the old path goes "
                      "in the next release)", DeprecationWarning, stacklevel=2)
        return getattr(importlib.import_module(module), new_name)

    return __getattr__
