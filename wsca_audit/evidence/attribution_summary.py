"""What the attribution evidence keeps of a stream of attribution maps, and the summary
it gives.

Each batch of maps is reduced at once (:class:`MapSums`): per image, the share of the
positive mass inside the ROI and inside each named region; per group (``all``,
``label=<y>``, ``<metadata>=<value>``), running sums of the maps normalised to unit
absolute mass and of the outlines; a few overlays per group. The attribution tensors
themselves are never kept. :func:`share_summary` turns the per-image shares into the
report's means with bootstrap intervals (:func:`wsca_audit.stats.bootstrap_mean_ci`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..errors import AuditError
from ..stats import bootstrap_mean_ci
from .base import RoiMasks, boxes_to_roi, display_image


# --------------------------------------------------------------------------- regions
def share(pos: Tensor, region: Tensor) -> np.ndarray:
    """Per image, the share of the positive mass ``pos`` (n, H, W) inside ``region``
    (NaN for an image without positive mass)."""
    total = pos.sum((1, 2))
    inside = (pos * region).sum((1, 2))
    return torch.where(total > 0, inside / total.clamp_min(1e-30), math.nan).cpu().numpy()


def mask_area(region: Tensor) -> np.ndarray:
    """Per image, the share of the image that ``region`` (n, H, W) covers."""
    return region.float().mean((1, 2)).cpu().numpy()


def named_regions(regions: Mapping[str, Any] | None) -> dict[str, RoiMasks | np.ndarray]:
    """``regions=`` checked: name -> RoiMasks, or a box (turned into a mask per batch, once
    the image size is known)."""
    if regions is None:
        return {}
    if not isinstance(regions, Mapping):
        raise AuditError(
            "regions must be a dict of name -> bool mask (H, W) / (N, H, W) or box (y0, x0, y1, x1)"
        )
    out: dict[str, RoiMasks | np.ndarray] = {}
    for name, region in regions.items():
        if not isinstance(name, str) or not name:
            raise AuditError(f"region names must be non-empty strings; got {name!r}")
        a = region.detach().cpu().numpy() if isinstance(region, Tensor) else region
        if isinstance(a, (tuple, list, np.ndarray)) and np.shape(a) == (4,):
            b = np.asarray(a)
            if b.dtype != bool:
                out[name] = b
                continue
        try:
            out[name] = RoiMasks(a)
        except AuditError as exc:
            raise AuditError(f"regions[{name!r}]: {exc}") from exc
    return out


def check_region_counts(named: Mapping[str, Any], n: int) -> None:
    """Each region given per image has one mask per image (an error naming it otherwise)."""
    for name, region in named.items():
        if isinstance(region, RoiMasks):
            try:
                region.check_count(n)
            except AuditError as exc:
                raise AuditError(f"regions[{name!r}]: {exc}") from exc


def take_region(named: dict, name: str, start: int, x: Tensor) -> Tensor:
    """The masks of region ``name`` for images ``start .. start + len(x)``; a box becomes
    its mask here, once the image size is known (and stays one in ``named``)."""
    region = named[name]
    if not isinstance(region, RoiMasks):
        try:
            region = named[name] = RoiMasks(boxes_to_roi(region, *x.shape[-2:]))
        except AuditError as exc:
            raise AuditError(f"regions[{name!r}]: {exc}") from exc
    try:
        return region.take(start, x)
    except AuditError as exc:
        raise AuditError(f"regions[{name!r}]: {exc}") from exc


# --------------------------------------------------------------------------- groups
def group_keys(start: int, n: int, y, meta: Mapping[str, np.ndarray]) -> list[list[str]]:
    """Group keys of samples start..start+n: 'all', 'label=<y>', '<name>=<value>'."""
    out = []
    for i in range(start, start + n):
        keys = ["all"]
        if y is not None and i < len(y):
            keys.append(f"label={y[i]}")
        for name, col in meta.items():
            if i < len(col):
                keys.append(f"{name}={col[i]}")
        out.append(keys)
    return out


def group_order(keys) -> list[str]:
    """Group keys in report order: "all", then by name."""
    return sorted(keys, key=lambda k: (k != "all", k))


def group_members(n: int, y, meta: Mapping[str, np.ndarray]) -> dict[str, list[int]]:
    """Group key -> the indices of its images ("all" first, then by name)."""
    members: dict[str, list[int]] = {}
    for i, ks in enumerate(group_keys(0, n, y, meta)):
        for k in ks:
            members.setdefault(k, []).append(i)
    return {k: members[k] for k in group_order(members)}


# --------------------------------------------------------------------------- the stream
class MapSums:
    """Running reductions of a stream of attribution maps (see the module docstring).

    Parameters
    ----------
    regions : dict of name -> RoiMasks or box
        The named regions (from :func:`named_regions`); boxes become masks on first use.
    n_examples : int
        Overlays kept per group.
    overlay_groups : sequence of str, optional
        The groups that keep overlays (default: every group).
    """

    def __init__(
        self, regions: dict, n_examples: int, overlay_groups: Sequence[str] | None = None
    ) -> None:
        self.regions = regions
        self.n_examples = n_examples
        self.overlay_groups = overlay_groups
        self.n = 0  # images seen
        self.shares: list[np.ndarray] = []  # per batch, per image: share inside the ROI
        self.areas: list[np.ndarray] = []
        self.region_shares: dict[str, list[np.ndarray]] = {r: [] for r in regions}
        self.region_areas: dict[str, list[np.ndarray]] = {r: [] for r in regions}
        self.sums: dict[str, Tensor] = {}  # group -> sum of unit-mass maps
        self.mask_sums: dict[str, dict[str, Tensor]] = {}  # group -> outline -> sum of masks
        self.counts: dict[str, int] = {}
        self.examples: dict[str, list[dict]] = {}

    def add(self, x: Tensor, attr: Tensor, roi: RoiMasks | None, y, meta: dict) -> None:
        """Reduce one batch: images ``x`` (n, C, H, W) and their attributions (n, C', H, W)."""
        amap = attr.detach().float().sum(1)  # (n, H, W): channels summed
        pos = amap.clamp_min(0)
        m = roi.take(self.n, x) if roi is not None else None
        if m is not None:
            self.shares.append(share(pos, m))
            self.areas.append(mask_area(m))
        outlines = {"ROI": m} if m is not None else {}
        for r in list(self.regions):
            rm = outlines[r] = take_region(self.regions, r, self.n, x)
            self.region_shares[r].append(share(pos, rm))
            self.region_areas[r].append(mask_area(rm))
        unit = amap / amap.abs().sum((1, 2), keepdim=True).clamp_min(1e-30)
        for j, keys in enumerate(group_keys(self.n, x.shape[0], y, meta)):
            for key in keys:
                self._add_to_group(key, unit[j], {o: om[j] for o, om in outlines.items()})
                if self._wants_example(key):
                    self.examples[key].append(self._example(j, keys, x, amap, m, outlines))
        self.n += x.shape[0]

    def _add_to_group(self, key: str, unit: Tensor, outlines: dict[str, Tensor]) -> None:
        if key not in self.sums:
            self.sums[key] = torch.zeros_like(unit)
            self.mask_sums[key] = {o: torch.zeros_like(unit) for o in outlines}
            self.counts[key] = 0
        self.sums[key] += unit
        for o, om in outlines.items():
            self.mask_sums[key][o] += om
        self.counts[key] += 1

    def _wants_example(self, key: str) -> bool:
        if self.overlay_groups is not None and key not in self.overlay_groups:
            return False
        return len(self.examples.setdefault(key, [])) < self.n_examples

    def _example(self, j: int, keys: list[str], x: Tensor, amap: Tensor, m, outlines) -> dict:
        """Image ``j`` of the current batch as an overlay: image, map, outlines, shares."""
        return {
            "index": self.n + j,
            "groups": keys[1:],
            "image": display_image(x[j]),
            "map": amap[j].cpu().numpy(),
            "roi": None if m is None else m[j].cpu().numpy(),
            "inside": None if m is None else float(self.shares[-1][j]),
            "regions": {r: outlines[r][j].cpu().numpy() for r in self.regions},
            "region_shares": {r: float(self.region_shares[r][-1][j]) for r in self.regions},
        }

    def mean_maps(self) -> dict[str, np.ndarray]:
        """Group -> the mean of its unit-mass maps (report order)."""
        return {k: (self.sums[k] / self.counts[k]).cpu().numpy() for k in group_order(self.sums)}

    def mean_masks(self) -> dict[str, dict[str, np.ndarray]]:
        """Group -> outline -> the share of the group's images in which each pixel lies in it."""
        return {
            k: {o: (v / self.counts[k]).cpu().numpy() for o, v in self.mask_sums[k].items()}
            for k in group_order(self.sums)
        }


# --------------------------------------------------------------------------- summary
def mean_share(s: np.ndarray) -> float:
    """The mean of per-image shares, leaving out images without positive mass (NaN)."""
    return float(np.nanmean(s)) if np.isfinite(s).any() else math.nan


def share_summary(
    sums: MapSums, y, meta: dict, n_bootstrap: int, level: float, seed: int
) -> dict[str, Any]:
    """The report's shares: ``inside`` / ``outside`` the ROI with an interval, ``roi_area``
    and ``enrichment``, ``regions`` and ``per_group`` (each interval a bootstrap of the
    mean at ``level``, images without positive mass left out)."""

    def interval(s: np.ndarray) -> tuple[float, float]:
        return bootstrap_mean_ci(s, n_bootstrap, level, seed)

    data: dict[str, Any] = dict.fromkeys(
        ("inside", "outside", "ci_low", "ci_high", "roi_area", "enrichment")
    )
    data.update(regions={}, per_group={})
    share_all = np.concatenate(sums.shares) if sums.shares else None
    if share_all is not None:
        area = float(np.concatenate(sums.areas).mean())
        inside = mean_share(share_all)
        lo, hi = interval(share_all)
        data.update(inside=inside, outside=1.0 - inside, ci_low=lo, ci_high=hi, roi_area=area,
                    enrichment=inside / area,
                    n_no_positive_mass=int((~np.isfinite(share_all)).sum()))  # fmt: skip
    members = group_members(sums.n, y, meta)
    for k, idx in members.items():
        entry: dict[str, Any] = {"n": sums.counts.get(k, len(idx))}
        if share_all is not None:
            v = mean_share(share_all[idx])
            lo, hi = interval(share_all[idx])
            entry.update(inside=v, outside=1.0 - v, ci_low=lo, ci_high=hi)
        data["per_group"][k] = entry
    for r, parts in sums.region_shares.items():
        s = np.concatenate(parts)
        area = float(np.concatenate(sums.region_areas[r]).mean())
        value = mean_share(s)
        lo, hi = interval(s)
        data["regions"][r] = {"value": value, "ci_low": lo, "ci_high": hi, "area": area,
                              "enrichment": value / area}  # fmt: skip
        for k, idx in members.items():
            v, (lo, hi) = mean_share(s[idx]), interval(s[idx])
            data["per_group"][k].setdefault("regions", {})[r] = {
                "value": v, "ci_low": lo, "ci_high": hi
            }  # fmt: skip
    return data
