"""Old import paths of names that moved: each keeps working for one release, with a ``DeprecationWarning``.

A module whose names moved ends with ``__getattr__ = moved(__name__, {"Name": "new.module", ...})``; the name is
looked up in its new module only when someone imports it from the old place (so the old module imports nothing
of the new one, and no import cycle can hide in a shim).

A module that was renamed (``cspdet/det/losses.py`` -> ``cspdet/det/yolox_loss.py``) leaves no file behind: its
package registers the old name with :func:`moved_modules`, and importing it yields a stand-in module whose
``__getattr__`` is :func:`moved`'s. No file at the old path means git sees a plain rename, so edits made to the
old file on another branch merge into the new one.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
import types
import warnings
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["moved", "moved_modules"]


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


class _MovedModuleFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds the registered old module names (asked last, after the files: a real module always wins)."""

    def __init__(self) -> None:
        self.modules: dict[str, dict[str, str]] = {}

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> importlib.machinery.ModuleSpec | None:
        if fullname not in self.modules:
            return None
        return importlib.machinery.ModuleSpec(fullname, self, is_package=False)

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType:
        module = types.ModuleType(spec.name, f"Deprecated: {spec.name} was renamed; its names moved to "
                                             f"{', '.join(sorted(set(self.modules[spec.name].values())))}.")
        module.__getattr__ = moved(spec.name, self.modules[spec.name])  # type: ignore[attr-defined]
        module.__all__ = list(self.modules[spec.name])  # type: ignore[attr-defined]  # ``import *``: each warns
        return module

    def exec_module(self, module: types.ModuleType) -> None:
        pass


_FINDER = _MovedModuleFinder()


def moved_modules(package: str, modules: Mapping[str, Mapping[str, str]]) -> None:
    """Keep the old names of renamed modules of ``package`` importable, with a ``DeprecationWarning`` per name.

    Args:
        package: the package the old modules were in (``__name__`` of its ``__init__``).
        modules: old module name (``"losses"``) -> ``{name: new module}`` as for :func:`moved` (every public name
            the old module had, each with the module it lives in now).
    """
    for old, names in modules.items():
        _FINDER.modules[f"{package}.{old}"] = dict(names)
    if _FINDER not in sys.meta_path:
        sys.meta_path.append(_FINDER)
