"""What every cspdet chart shares: an off-screen figure, atomic saving, the class palette, tick labels that fit.

Figures are ``matplotlib.figure.Figure`` objects on the Agg canvas, never pyplot: no display, no global figure
registry that a long training run would fill, and safe to draw from any thread.
"""

from __future__ import annotations

import io
import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from ...data.visualize import class_color
from ...fileio import atomic_write

__all__ = ["DPI", "fit_tick_labels", "new_figure", "plural", "rgb", "save_figure"]

# Dots per inch of every saved chart: 150 keeps 7 pt text crisp on a laptop screen and in a slide.
DPI = 150
# Tick labels are never drawn smaller than this (pt); when they would have to be, only every k-th is drawn.
MIN_TICK_FONT = 5.0
MAX_TICK_FONT = 8.0


def new_figure(width: float, height: float) -> Figure:
    """An empty ``width`` x ``height`` inch figure whose layout keeps titles, labels and legends inside it."""
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def save_figure(fig: Figure, path: str | os.PathLike, dpi: int = DPI) -> Path:
    """Render ``fig`` (format from the suffix, default PNG) and write it atomically to ``path``."""
    path = Path(path)
    buffer = io.BytesIO()
    fig.savefig(buffer, format=path.suffix[1:].lower() or "png", dpi=dpi)
    return atomic_write(path, buffer.getvalue())


def plural(n: int, word: str) -> str:
    """``"1 class"``, ``"3 classes"``: titles say how many of what."""
    return f"{n} {word}" if n == 1 else f"{n} {word}es" if word.endswith("s") else f"{n} {word}s"


def rgb(label: int) -> tuple[float, float, float]:
    """:func:`cspdet.data.visualize.class_color` as matplotlib's 0..1 floats: a class has one colour in every
    picture, drawn boxes and charts alike."""
    r, g, b = class_color(int(label))
    return r / 255, g / 255, b / 255


def fit_tick_labels(ax: Axes, axis: str, positions: Sequence[float], labels: Sequence[str],
                    spacing_pt: float) -> int:
    """Put ``labels`` at ``positions`` on ``ax``'s ``axis`` ("x" or "y"), as large as the ``spacing_pt`` between
    neighbours allows, up to 8 pt; when that would be under 5 pt, every k-th label at 5 pt instead. x labels
    are written vertically unless the longest fits across its slot. Returns k (1 = all shown)."""
    # a label's extent across the axis is about its font size; 0.9 leaves a hairline between neighbours
    size = min(MAX_TICK_FONT, 0.9 * spacing_pt)
    step = 1
    if size < MIN_TICK_FONT:
        step = math.ceil(MIN_TICK_FONT / max(0.9 * spacing_pt, 1e-6))
        size = MIN_TICK_FONT
    positions = np.asarray(positions)[::step]
    labels = [str(label) for label in labels][::step]
    if axis == "x":
        # DejaVu Sans averages ~0.6 em per character
        across = max((len(label) for label in labels), default=0) * 0.6 * size < 0.9 * spacing_pt * step
        ax.set_xticks(positions, labels, rotation=0 if across else 90, fontsize=size)
    else:
        ax.set_yticks(positions, labels, fontsize=size)
    return step
