"""Drawing helpers that the evidence figures share: outlined regions, their legend, and
the interval's level in words.

Only figures import this module, and matplotlib is imported inside each helper, so
computing evidence never loads it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ..formatting import percent


def ci_label(level: float) -> str:
    """The interval's name at its level, as the report's headers write it.

    Examples
    --------
    >>> ci_label(0.95), ci_label(0.9)
    ('95% CI', '90% CI')
    """
    return f"{percent(level)} CI"


def as_number(x: Any) -> float:
    """A JSON number as a float; NaN for null (and anything else that is not a number)."""
    return float(x) if isinstance(x, (int, float)) and not isinstance(x, bool) else math.nan


def draw_outlines(
    ax, masks: Mapping[str, Any], colours: Sequence[str], linewidth: float = 1.0
) -> None:
    """Contours at 0.5 of (H, W) masks (bool, or the share of images holding each pixel):
    the first solid, the others dashed, in the order of ``colours``. A mask that is
    empty or covers everything has no contour and is skipped."""
    for i, (colour, m) in enumerate(zip(colours, masks.values())):
        m = np.asarray(m, dtype=float)
        if (m > 0.5).any() and (m < 0.5).any():
            ax.contour(m, levels=[0.5], colors=[colour], linewidths=linewidth,
                       linestyles="-" if i == 0 else "--")  # fmt: skip


def outline_legend(
    ax,
    names: Sequence[str],
    colours: Sequence[str],
    *,
    lw: float = 1.2,
    fontsize: float = 6,
    framealpha: float = 0.7,
) -> None:
    """A legend naming the outlines that :func:`draw_outlines` draws (same colours and styles)."""
    from matplotlib.lines import Line2D

    if not names:
        return
    handles = [
        Line2D([], [], color=c, lw=lw, ls="-" if i == 0 else "--", label=name)
        for i, (c, name) in enumerate(zip(colours, names))
    ]
    ax.legend(handles=handles, fontsize=fontsize, loc="lower left", framealpha=framealpha)
