"""Progress bars for the long loops outside the training epoch (cache warm-up, dataset checks and conversions,
evaluation): one switch, the same look everywhere."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, TypeVar

__all__ = ["progress_bar"]

T = TypeVar("T")


def progress_bar(items: Iterable[T], enabled: bool | None, desc: str, total: int | None = None,
                 unit: str = "img") -> Iterable[T]:
    """``items``, shown as a tqdm bar on stderr that disappears when done.

    ``enabled``: True = always, False = never (``items`` is returned as it is), None = only when stderr is a
    terminal (a log file gets no bar lines).
    """
    if enabled is False:
        return items
    from tqdm import tqdm

    kwargs: dict[str, Any] = {"desc": desc, "unit": unit, "leave": False, "dynamic_ncols": True,
                              "disable": None if enabled is None else False}
    return tqdm(items, total=total, **kwargs)
