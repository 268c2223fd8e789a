"""The figures of the attribution evidence, apart from the computation: per-group mean
maps, the share of positive mass per region and group, and per-group overlay grids.

Each function takes the JSON-ready summary and the arrays an
:class:`~wsca_audit.evidence.attribution.AttributionResult` keeps, and returns a
matplotlib ``Figure`` (or None when there is nothing to draw).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

from .plotting import as_number, ci_label, draw_outlines, outline_legend

# the ROI first (solid), then each named region (dashed)
OUTLINE_COLOURS = ("lime", "yellow", "cyan", "magenta", "orange")


def mean_maps_figure(
    maps: Mapping[str, np.ndarray],
    masks: Mapping[str, Mapping[str, np.ndarray]],
    per_group: Mapping[str, dict],
    title: str,
    red: str,
):
    """Per-group mean attribution maps on one colour scale, with the ROI and the named
    regions outlined where most of the group's images have them.

    Parameters
    ----------
    maps : mapping of group -> (H, W) mean map (unit absolute mass per image)
    masks : mapping of group -> outline name -> (H, W) share of the group's images
    per_group : the summary's ``per_group`` (for each group's ``n``)
    title, red : the method's name and what red means (for the colour bar)
    """
    from matplotlib.figure import Figure

    if not maps:
        return None
    names = list(maps)
    cols = min(4, len(names))
    rows = math.ceil(len(names) / cols)
    fig = Figure(figsize=(2.6 * cols + 0.8, 2.5 * rows + 0.3), layout="constrained")
    axes = np.atleast_1d(fig.subplots(rows, cols)).ravel()
    vmax = max(float(np.abs(m).max()) for m in maps.values()) or 1.0
    im = None
    for ax, name in zip(axes, names):
        im = ax.imshow(maps[name], cmap="bwr", vmin=-vmax, vmax=vmax)
        draw_outlines(ax, masks.get(name, {}), OUTLINE_COLOURS)
        n = per_group.get(name, {}).get("n")
        ax.set_title(f"{name} (n={n})" if n else name, fontsize=9)
        ax.axis("off")
    for ax in axes[len(names) :]:
        ax.axis("off")
    outline_legend(axes[0], list(masks.get(names[0], {})), OUTLINE_COLOURS)
    fig.colorbar(im, ax=axes.tolist(), shrink=0.8, label=f"mean attribution (unit mass; {red})")
    fig.suptitle(f"{title}: mean attribution maps per group", fontsize=10)
    return fig


def _share_panels(data: dict) -> list[tuple[str, float | None, dict[str, dict]]]:
    """(title, area, {group: interval block}) for the ROI and each named region."""
    groups = data.get("per_group") or {}
    panels = []
    if data.get("inside") is not None:
        blocks = {
            g: {"value": e.get("inside"), "ci_low": e.get("ci_low"), "ci_high": e.get("ci_high")}
            for g, e in groups.items()
        }
        panels.append(("inside the ROI", data.get("roi_area"), blocks))
    for name, r in (data.get("regions") or {}).items():
        blocks = {g: (e.get("regions") or {}).get(name, {}) for g, e in groups.items()}
        panels.append((f"in '{name}'", r.get("area"), blocks))
    return panels


def shares_figure(data: dict, title: str, level: float):
    """One panel per measured area (the ROI, each region): the share of positive mass per
    group with its interval at ``level``, and the area (what a map blind to it would give)."""
    from matplotlib.figure import Figure

    panels = _share_panels(data)
    if not panels:
        return None
    fig = Figure(figsize=(3.4 * len(panels) + 0.4, 3.2), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(panels)))
    for ax, (what, area, blocks) in zip(axes, panels):
        names = list(blocks)
        v = np.array([as_number(blocks[g].get("value")) for g in names])
        lo = np.array([as_number(blocks[g].get("ci_low")) for g in names])
        hi = np.array([as_number(blocks[g].get("ci_high")) for g in names])
        err = np.nan_to_num(np.vstack([v - lo, hi - v]).clip(min=0))
        ax.bar(range(len(names)), np.nan_to_num(v), yerr=err, capsize=3, color="#c0392b")
        if area is not None:
            ax.axhline(area, color="grey", ls="--", lw=1, label="its area (blind map)")
            ax.legend(fontsize=7, loc="upper right")
        ax.set_xticks(range(len(names)), names, rotation=30, ha="right", fontsize=8)
        ax.set_title(f"share of positive mass {what}", fontsize=9)
        ax.set_ylim(0, max(1e-3, float(np.nanmax(np.r_[hi, v, area or 0]))) * 1.15)
    fig.suptitle(f"{title}: where the positive attribution lies ({ci_label(level)})", fontsize=10)
    return fig


def _example_outlines(example: dict) -> dict[str, np.ndarray]:
    """The outlines drawn on one example: its ROI (when there is one), then its regions."""
    masks = {"ROI": example["roi"]} if example.get("roi") is not None else {}
    masks.update(example.get("regions") or {})
    return masks


def overlay_figure(examples: list[dict], group: str, red: str):
    """An overlay grid of one group's examples: image, signed map, the ROI solid and each
    region dashed, each image's shares in its title; rows of at most four."""
    from matplotlib.figure import Figure

    cols = min(4, len(examples))
    rows = math.ceil(len(examples) / cols)
    fig = Figure(figsize=(2.3 * cols, 2.5 * rows + 0.2), layout="constrained")
    axes = np.atleast_1d(fig.subplots(rows, cols)).ravel()
    for ax, e in zip(axes, examples):
        img, amap = e["image"], e["map"]
        ax.imshow(img, cmap="gray" if img.ndim == 2 else None)
        vmax = float(np.abs(amap).max()) or 1.0
        ax.imshow(amap, cmap="bwr", vmin=-vmax, vmax=vmax, alpha=0.55)
        draw_outlines(ax, _example_outlines(e), OUTLINE_COLOURS)
        shares = [f"in-ROI {e['inside']:.2f}"] if e.get("inside") is not None else []
        shares += [f"{n} {s:.2f}" for n, s in (e.get("region_shares") or {}).items() if s == s]
        groups = ", ".join(e.get("groups", []))
        ax.set_title(
            f"#{e['index']}" + (f" {groups}" if groups else "") + "\n" + " ".join(shares),
            fontsize=7,
        )
        ax.axis("off")
    for ax in axes[len(examples) :]:
        ax.axis("off")
    if examples:
        outline_legend(axes[0], list(_example_outlines(examples[0])), OUTLINE_COLOURS)
    fig.suptitle(f"{group}: attribution overlays ({red})", fontsize=9)
    return fig
