"""Input attributions with Captum: where in the image the primary logit comes from.

:class:`InputAttribution` and :func:`attribution_mass` compute input attributions
(Integrated Gradients by default, any Captum attribution class accepted) batch by batch
and reduce them at once to summaries: the share of positive attribution mass inside an
ROI per image, per-group mean maps (label, each categorical metadata value) and a few
overlays per group. The full attribution tensor set is never kept. The result is the
``attribution`` evidence type of a report.

(The embedding-side counterpart, the layer-attribution *alignment* of a task, is a
measure: :mod:`wsca_audit.measures.alignment`.)
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from .errors import AuditError
from .evidence import (
    Evidence,
    RoiMasks,
    ScoreModel,
    as_image_batch,
    bootstrap_mean_ci,
    display_image,
    iter_image_batches,
    logits_of,
    model_device,
    n_images,
    register_evidence,
    warn_if_training,
)
from .formatting import fmt
from .naming import interval_metrics, sanitize_name
from .validation import check_consistent_length, column_or_1d

_MAX_GROUP_LEVELS = 20


# --------------------------------------------------------------------------- input view
@register_evidence
class AttributionResult(Evidence):
    """Input attributions summarised: ROI mass, per-group mass and mean maps, overlays.

    A mapping with ``method``, ``n_samples``, ``inside`` / ``outside`` (mean share of
    positive attribution mass inside / outside the ROI per image, or None without an
    ROI), ``ci_low`` / ``ci_high`` (of ``inside``), ``roi_area`` (mean ROI share of the
    image: what ``inside`` would be if attribution ignored the ROI), ``enrichment``
    (``inside / roi_area``) and ``per_group``. Fitted attributes: ``mean_maps_`` (group ->
    (H, W) mean of per-image maps normalised to unit absolute mass) and ``examples_``.
    """

    kind = "attribution"
    section = "attribution"
    schema: ClassVar[dict] = {"$ref": "#/$defs/attribution"}

    @property
    def default_key(self) -> str:
        """The entry name ``AuditResult.add_evidence`` uses when none is given."""
        return str(self._data.get("method") or "attribution")

    @classmethod
    def lines(cls, key: str, data: dict, tasks: dict) -> list[str]:
        head = f"attribution '{key}' ({data.get('method')}, {data.get('n_samples')} images): "
        if data.get("inside") is None:
            return [head + f"mean maps for {len(data.get('per_group', {}))} groups (no ROI given)"]
        return [
            head + f"{fmt(data['inside'])} [{fmt(data.get('ci_low'))}, {fmt(data.get('ci_high'))}] "
            f"of the positive mass inside the ROI, which covers {fmt(data.get('roi_area'))} "
            f"of the image (enrichment {fmt(data.get('enrichment'), 2)})"
        ]

    @classmethod
    def mlflow(cls, key: str, data: dict) -> tuple[dict[str, float], dict[str, str]]:
        """``wsca.attribution.<key>.inside`` (with CI) and ``.roi_area``."""
        k = sanitize_name(key)
        metrics = interval_metrics(f"wsca.attribution.{k}.inside", data, "inside")
        if data.get("roi_area") is not None:
            metrics[f"wsca.attribution.{k}.roi_area"] = float(data["roi_area"])
        return metrics, {}

    def __init__(
        self,
        data: dict,
        mean_maps: dict[str, np.ndarray] | None = None,
        examples: dict[str, list[dict]] | None = None,
    ) -> None:
        super().__init__(data)
        self.mean_maps_ = mean_maps or {}
        self.examples_ = examples or {}

    def figure(self):
        """Per-group mean attribution maps on one colour scale (red: for the prediction)."""
        from matplotlib.figure import Figure

        maps = self.mean_maps_
        if not maps:
            return None
        names = list(maps)
        cols = min(4, len(names))
        rows = math.ceil(len(names) / cols)
        fig = Figure(figsize=(2.6 * cols + 0.8, 2.5 * rows), layout="constrained")
        axes = np.atleast_1d(fig.subplots(rows, cols)).ravel()
        vmax = max(float(np.abs(m).max()) for m in maps.values()) or 1.0
        im = None
        for ax, name in zip(axes, names):
            im = ax.imshow(maps[name], cmap="bwr", vmin=-vmax, vmax=vmax)
            n = self._data["per_group"].get(name, {}).get("n")
            ax.set_title(f"{name} (n={n})" if n else name, fontsize=9)
            ax.axis("off")
        for ax in axes[len(names) :]:
            ax.axis("off")
        fig.colorbar(im, ax=axes.tolist(), shrink=0.8, label="mean attribution (unit mass)")
        fig.suptitle(f"{self._data['method']}: mean attribution maps per group", fontsize=10)
        return fig

    def _extra_figures(self) -> dict[str, Any]:
        return {f"overlays/{g}": self._overlay(g) for g in self.examples_}

    def _overlay(self, group: str):
        from matplotlib.figure import Figure

        ex = self.examples_[group]
        fig = Figure(figsize=(2.3 * len(ex), 2.6), layout="constrained")
        axes = np.atleast_1d(fig.subplots(1, len(ex)))
        for ax, e in zip(axes, ex):
            img, amap = e["image"], e["map"]
            ax.imshow(img, cmap="gray" if img.ndim == 2 else None)
            vmax = float(np.abs(amap).max()) or 1.0
            ax.imshow(amap, cmap="bwr", vmin=-vmax, vmax=vmax, alpha=0.55)
            if e.get("roi") is not None and 0 < e["roi"].mean() < 1:
                ax.contour(e["roi"].astype(float), levels=[0.5], colors="lime", linewidths=0.8)
            share = e.get("inside")
            ax.set_title(
                f"#{e['index']}" + (f" in-ROI {share:.2f}" if share is not None else ""),
                fontsize=8,
            )
            ax.axis("off")
        fig.suptitle(f"{group}: attribution overlays (red: for the prediction)", fontsize=9)
        return fig

    def save(self, directory):
        out = super().save(directory)
        if self.mean_maps_:
            # plain arrays, no pickle: np.load(..., allow_pickle=False) reads them
            np.savez_compressed(
                out / "attribution_mean_maps.npz",
                **{f"map_{i}": m for i, m in enumerate(self.mean_maps_.values())},
                groups=np.array(list(self.mean_maps_), dtype=str),
            )
        return out


def _method_name(method: Any) -> str:
    return method.__name__ if isinstance(method, type) else type(method).__name__


class InputAttribution:
    """Input attributions of a model's primary logit, reduced to summaries as they stream.

    Parameters
    ----------
    model : torch.nn.Module
        The classifier (in eval mode).
    method : Captum attribution class or instance, optional
        Default ``captum.attr.IntegratedGradients``. A class is built on the model's
        primary score; an instance is used as it is (its forward function is yours).
    target : int, optional
        Class whose logit to attribute. Default: the log-odds ``z1 - z0`` for two
        outputs, the logit for one, the predicted class for more.
    baselines : scalar or Tensor, optional
        Passed to Captum (default: its own, zeros).
    n_steps : int, default=50
        Integration steps (methods that take them).
    internal_batch_size : int, optional
        Captum's chunking of the ``n_steps × batch`` expansion (bounds memory).
    attribute_kwargs : dict, optional
        Further keyword arguments for ``method.attribute``.
    batch_size : int, default=16
        Images per ``attribute`` call when ``inputs`` is one tensor.
    n_examples : int, default=4
        Overlays kept per group.
    max_samples : int, optional
        Attribute at most this many images: a stratified subsample (by label and each
        categorical metadata value) of a tensor input, the first ones of an iterable.
    n_bootstrap, ci_level, seed, device, progress
        Intervals, randomness, device (default: the model's) and a progress bar.

    Examples
    --------
    >>> import torch, wsca_audit as wa
    >>> x = torch.rand(8, 1, 6, 6)
    >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(36, 2)).eval()
    >>> roi = torch.zeros(6, 6, dtype=torch.bool); roi[1:5, 1:5] = True
    >>> res = wa.InputAttribution(model, n_steps=8, progress=False).attribute(
    ...     x, roi=roi, targets=[0, 1] * 4)
    >>> round(res["inside"] + res["outside"], 6), sorted(res["per_group"])
    (1.0, ['all', 'label=0', 'label=1'])
    """

    def __init__(
        self,
        model: nn.Module,
        method: Any = None,
        *,
        target: int | None = None,
        baselines: Any = None,
        n_steps: int = 50,
        internal_batch_size: int | None = None,
        attribute_kwargs: Mapping[str, Any] | None = None,
        batch_size: int = 16,
        n_examples: int = 4,
        max_samples: int | None = None,
        n_bootstrap: int = 200,
        ci_level: float = 0.95,
        seed: int = 0,
        device: str | torch.device | None = None,
        progress: bool = True,
    ) -> None:
        self.model = model
        self.method = method
        self.target = target
        self.baselines = baselines
        self.n_steps = n_steps
        self.internal_batch_size = internal_batch_size
        self.attribute_kwargs = dict(attribute_kwargs or {})
        self.batch_size = batch_size
        self.n_examples = n_examples
        self.max_samples = max_samples
        self.n_bootstrap = n_bootstrap
        self.ci_level = ci_level
        self.seed = seed
        self.device = device
        self.progress = progress

    # ------------------------------------------------------------------ set-up
    def _build(self, n_outputs: int):
        """The Captum object and how to pick targets: (attributor, mode)."""
        from captum.attr import Attribution, IntegratedGradients

        method = self.method if self.method is not None else IntegratedGradients
        if self.target is not None:
            if not 0 <= int(self.target) < n_outputs:
                raise AuditError(
                    f"target={self.target} is not a class of a model with {n_outputs} outputs"
                )
            forward, mode = self.model, "fixed"
        elif n_outputs <= 2:
            forward, mode = ScoreModel(self.model), "score"
        else:
            forward, mode = self.model, "predicted"
        if isinstance(method, type) and issubclass(method, Attribution):
            return method(forward), mode
        if isinstance(method, Attribution):
            return method, "fixed" if self.target is not None else "as_given"
        raise AuditError(
            f"method must be a Captum attribution class or instance (e.g. "
            f"captum.attr.IntegratedGradients); got {method!r}"
        )

    def _kwargs(self, attributor) -> dict:
        params = inspect.signature(attributor.attribute).parameters
        kw: dict[str, Any] = {}
        if "n_steps" in params:
            kw["n_steps"] = self.n_steps
        if "internal_batch_size" in params and self.internal_batch_size is not None:
            kw["internal_batch_size"] = self.internal_batch_size
        if "baselines" in params and self.baselines is not None:
            kw["baselines"] = self.baselines
        unknown = set(self.attribute_kwargs) - set(params)
        if unknown and not any(p.kind == p.VAR_KEYWORD for p in params.values()):
            raise AuditError(
                f"{type(attributor).__name__}.attribute takes no {sorted(unknown)}; "
                f"it takes {[p for p in params if p != 'self']}"
            )
        kw.update(self.attribute_kwargs)
        return kw

    def _subsample(self, inputs, roi, targets, metadata):
        n = int(inputs.shape[0])
        if self.max_samples is None or self.max_samples >= n:
            return inputs, roi, targets, metadata
        strata = np.zeros(n, dtype=np.int64)
        for col in ([targets] if targets is not None else []) + list(metadata.values()):
            _, codes = np.unique(col.astype(str), return_inverse=True)
            strata = strata * (codes.max() + 1) + codes
        rng = np.random.default_rng(self.seed)
        order = rng.permutation(n)
        # round-robin over strata: the k-th member of every stratum before any (k+1)-th
        rank = np.zeros(n, dtype=np.int64)
        seen: dict[int, int] = {}
        for i in order:
            rank[i] = seen.get(strata[i], 0)
            seen[strata[i]] = rank[i] + 1
        pick = np.sort(order[np.argsort(rank[order], kind="stable")][: self.max_samples])
        sel = torch.as_tensor(pick)
        if roi is not None and not roi.shared:
            roi.masks = roi.masks[sel]
        return (
            inputs[sel],
            roi,
            targets[pick] if targets is not None else None,
            {k: v[pick] for k, v in metadata.items()},
        )

    # ------------------------------------------------------------------ the run
    def attribute_batch(self, x: Tensor) -> Tensor:
        """Raw Captum attributions of one batch (n, C, H, W), on the model's device.

        Exactly ``method(forward).attribute(x, target=..., n_steps=..., ...)``, with the
        forward function and target chosen as described in the class docstring.
        """
        x = as_image_batch(x).to(model_device(self.model, self.device))
        if getattr(self, "_attributor", None) is None:
            with torch.no_grad():
                n_out = logits_of(self.model(x[:1])).shape[1]
            self._attributor, self._mode = self._build(n_out)
            self._kw = self._kwargs(self._attributor)
        kw = dict(self._kw)
        if self._mode == "fixed":
            kw["target"] = int(self.target)
        elif self._mode == "predicted":
            with torch.no_grad():
                kw["target"] = logits_of(self.model(x)).argmax(1)
        # autograd even when called under torch.inference_mode() / no_grad()
        with torch.inference_mode(False), torch.enable_grad():
            attr = self._attributor.attribute(x.clone(), **kw)
        if isinstance(attr, tuple):
            attr = attr[0]
        if attr.shape != x.shape:
            raise AuditError(
                f"{type(self._attributor).__name__} returned attributions of shape "
                f"{tuple(attr.shape)} for inputs {tuple(x.shape)}"
            )
        return attr.detach()

    def attribute(
        self,
        inputs: Any,
        *,
        roi: Any = None,
        targets: Any = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> AttributionResult:
        """Attribute every image, summarise, and return an :class:`AttributionResult`.

        Parameters
        ----------
        inputs : Tensor or array (N, C, H, W), or an iterable of such batches
        roi : bool array (N, H, W) or (H, W), optional
            Region of interest: enables the inside/outside mass.
        targets : array-like (N,), optional
            Labels, for the ``label=<value>`` groups.
        metadata : mapping of str to array-like (N,), optional
            Categorical metadata: one group per value (e.g. ``scanner=A``).
        """
        if self.batch_size < 1 or self.n_examples < 0:
            raise AuditError("batch_size must be >= 1 and n_examples >= 0")
        y = column_or_1d(targets, "targets", "image") if targets is not None else None
        meta: dict[str, np.ndarray] = {}
        for name, col in (metadata or {}).items():
            arr = column_or_1d(col, f"metadata[{name!r}]", "image")
            if len(np.unique(arr.astype(str))) > _MAX_GROUP_LEVELS:
                raise AuditError(
                    f"metadata[{name!r}] has more than {_MAX_GROUP_LEVELS} values: the input "
                    "view groups by categorical metadata only (bin continuous variables first)"
                )
            meta[str(name)] = arr
        masks = RoiMasks(roi) if roi is not None else None
        n_known = n_images(inputs)
        if isinstance(inputs, (Tensor, np.ndarray)):
            inputs = as_image_batch(inputs)
            check_consistent_length(
                n_known, "images", targets=y, **{f"metadata[{k!r}]": v for k, v in meta.items()}
            )
            if masks is not None:
                masks.check_count(n_known)
            inputs, masks, y, meta = self._subsample(inputs, masks, y, meta)
            n_known = int(inputs.shape[0])
        elif self.max_samples is not None and n_known is not None:
            n_known = min(n_known, self.max_samples)
        warn_if_training(self.model, "attribution")
        dev = model_device(self.model, self.device)

        shares: list[np.ndarray] = []
        areas: list[np.ndarray] = []
        sums: dict[str, Tensor] = {}
        counts: dict[str, int] = {}
        examples: dict[str, list[dict]] = {}
        self._attributor = None
        start = 0
        bar = tqdm(total=n_known, desc="wsca: attribution", unit="img", disable=not self.progress)
        for x in iter_image_batches(inputs, self.batch_size):
            if self.max_samples is not None and start >= self.max_samples:
                break
            if self.max_samples is not None:
                x = x[: self.max_samples - start]
            x = x.to(dev)
            n = x.shape[0]
            attr = self.attribute_batch(x)
            amap = attr.detach().float().sum(1)  # (n, H, W): channels summed
            pos = amap.clamp_min(0)
            total = pos.sum((1, 2))
            m = masks.take(start, x) if masks is not None else None
            if m is not None:
                inside = (pos * m).sum((1, 2))
                share = torch.where(total > 0, inside / total.clamp_min(1e-30), math.nan)
                shares.append(share.cpu().numpy())
                areas.append(m.float().mean((1, 2)).cpu().numpy())
            unit = amap / amap.abs().sum((1, 2), keepdim=True).clamp_min(1e-30)
            keys = _group_keys(start, n, y, meta)
            for j, ks in enumerate(keys):
                for key in ks:
                    if key not in sums:
                        sums[key] = torch.zeros_like(unit[0])
                        counts[key] = 0
                    sums[key] += unit[j]
                    counts[key] += 1
                    ex = examples.setdefault(key, [])
                    if len(ex) < self.n_examples:
                        ex.append(
                            {
                                "index": start + j,
                                "image": display_image(x[j]),
                                "map": amap[j].cpu().numpy(),
                                "roi": None if m is None else m[j].cpu().numpy(),
                                "inside": None if m is None else float(shares[-1][j]),
                            }
                        )
            start += n
            bar.update(n)
        bar.close()
        if start == 0:
            raise AuditError("inputs held no images")
        if y is not None:
            check_consistent_length(start, "images", targets=y)
        for k, v in meta.items():
            check_consistent_length(start, "images", **{f"metadata[{k!r}]": v})
        if masks is not None:
            masks.check_count(start)

        data = self._summary(start, shares, areas, counts, y, meta, self._attributor)
        order = sorted(sums, key=lambda k: (k != "all", k))  # "all", then by name
        mean_maps = {k: (sums[k] / counts[k]).cpu().numpy() for k in order}
        return AttributionResult(data, mean_maps, examples)

    def _summary(self, n, shares, areas, counts, y, meta, attributor) -> dict:
        data: dict[str, Any] = {
            "method": _method_name(attributor),
            "target": self.target if self.target is not None else "primary score",
            "n_steps": self.n_steps,
            "baselines": "captum default (zeros)" if self.baselines is None else "user",
            "n_samples": n,
            "inside": None,
            "outside": None,
            "ci_low": None,
            "ci_high": None,
            "roi_area": None,
            "enrichment": None,
            "per_group": {},
        }
        share = np.concatenate(shares) if shares else None
        if share is not None:
            area = np.concatenate(areas)
            inside = float(np.nanmean(share)) if np.isfinite(share).any() else math.nan
            lo, hi = bootstrap_mean_ci(share, self.n_bootstrap, self.ci_level, self.seed)
            data.update(
                inside=inside,
                outside=1.0 - inside,
                ci_low=lo,
                ci_high=hi,
                roi_area=float(area.mean()),
                enrichment=inside / float(area.mean()),
                n_no_positive_mass=int((~np.isfinite(share)).sum()),
            )
        keys = _group_keys(0, n, y, meta)
        members: dict[str, list[int]] = {}
        for i, ks in enumerate(keys):
            for k in ks:
                members.setdefault(k, []).append(i)
        for k, idx in members.items():
            entry: dict[str, Any] = {"n": counts.get(k, len(idx))}
            if share is not None:
                s = share[idx]
                v = float(np.nanmean(s)) if np.isfinite(s).any() else math.nan
                lo, hi = bootstrap_mean_ci(s, self.n_bootstrap, self.ci_level, self.seed)
                entry.update(inside=v, outside=1.0 - v, ci_low=lo, ci_high=hi)
            data["per_group"][k] = entry
        return data


def _group_keys(start: int, n: int, y, meta) -> list[list[str]]:
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


def attribution_mass(
    model: nn.Module,
    inputs: Any,
    roi: Any,
    method: Any = None,
    target: int | None = None,
    **kwargs: Any,
) -> AttributionResult:
    """Share of positive attribution mass inside vs outside the ROI (Captum IG by default).

    A shortcut shows as mass leaving the ROI: compare ``inside`` with ``roi_area``
    (the share a ROI-blind attribution would give) or between models.

    Parameters
    ----------
    model, inputs, roi, method, target
        See :class:`InputAttribution`; ``roi`` is required here.
    **kwargs
        Other :class:`InputAttribution` parameters (``n_steps``, ``internal_batch_size``,
        ``baselines``, ``batch_size``, ``progress``, ...) and ``targets=`` /
        ``metadata=`` for per-group shares.

    Returns
    -------
    AttributionResult
        ``{"inside": share, "outside": share, "ci_low", "ci_high", "roi_area", ...}``.

    Examples
    --------
    >>> import torch, wsca_audit as wa
    >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 1)).eval()
    >>> with torch.no_grad():
    ...     _ = model[1].weight.fill_(0.0); model[1].weight[0, :4] = 1.0  # reads row 0 only
    >>> roi = torch.zeros(4, 4, dtype=torch.bool); roi[0] = True
    >>> res = wa.attribution_mass(model, torch.rand(6, 1, 4, 4), roi, progress=False)
    >>> round(res["inside"], 6), res["roi_area"]
    (1.0, 0.25)
    """
    if roi is None:
        raise AuditError("attribution_mass needs roi= (boolean masks (N, H, W) or (H, W))")
    targets = kwargs.pop("targets", None)
    metadata = kwargs.pop("metadata", None)
    return InputAttribution(model, method, target=target, **kwargs).attribute(
        inputs, roi=roi, targets=targets, metadata=metadata
    )
