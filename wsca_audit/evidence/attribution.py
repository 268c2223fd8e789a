"""Input attributions with Captum: where in the image the primary logit comes from.

:class:`InputAttribution` and :func:`attribution_mass` compute input attributions
(Integrated Gradients by default, any Captum attribution class accepted) batch by batch
and reduce them at once to summaries: the share of positive attribution mass inside an
ROI, and inside further named regions (an artefact's box), per image, per-group mean maps
(label, each categorical metadata value) and a few overlays per group. Layer methods
(``LayerGradCam`` on a convolutional block) are upsampled to the image with Captum's
``LayerAttribution.interpolate``. The full attribution tensor set is never kept. The
result is the ``attribution`` evidence type of a report.

(The embedding-side counterpart, the layer-attribution *alignment* of a task, is a
measure: :mod:`wsca_audit.measures.alignment`.)
"""

from __future__ import annotations

import inspect
import math
import warnings
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from ..errors import AuditError
from ..formatting import ci_text, fmt
from ..naming import interval_metrics, sanitize_name
from ..primary import ScoreModel, logits_of
from ..stats import bootstrap_mean_ci
from ..validation import check_consistent_length, column_or_1d
from .base import (
    Evidence,
    RoiMasks,
    as_image_batch,
    boxes_to_roi,
    display_image,
    iter_image_batches,
    model_device,
    n_images,
    register_evidence,
    warn_if_training,
)

_MAX_GROUP_LEVELS = 20


# --------------------------------------------------------------------------- input view
_OUTLINE_COLOURS = ("lime", "yellow", "cyan", "magenta", "orange")
SHARES_FIGURE = "share_of_positive_attribution_per_region"


@register_evidence
class AttributionResult(Evidence):
    """Input attributions summarised: ROI and region mass, per-group mass and mean maps, overlays.

    A mapping with ``method``, ``layer`` (the attributed layer of a layer method, else
    None), ``n_samples``, ``inside`` / ``outside`` (mean share of positive attribution
    mass inside / outside the ROI per image, or None without an ROI), ``ci_low`` /
    ``ci_high`` (of ``inside``), ``roi_area`` (mean ROI share of the image: what
    ``inside`` would be if attribution ignored the ROI), ``enrichment`` (``inside /
    roi_area``), ``regions`` (name -> ``{"value", "ci_low", "ci_high", "area",
    "enrichment"}``: the same share for each named region passed as ``regions=``) and
    ``per_group`` (each group's ``inside`` and ``regions`` shares with CIs). Fitted
    attributes: ``mean_maps_`` (group -> (H, W) mean of per-image maps normalised to unit
    absolute mass), ``mean_masks_`` (group -> outline name -> (H, W) share of the group's
    images in which each pixel lies in the ROI / region) and ``examples_``.
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
        method = str(data.get("method"))
        if data.get("layer"):
            method += f" on {data['layer']}"
        head = f"attribution '{key}' ({method}, {data.get('n_samples')} images): "
        regions = data.get("regions") or {}
        if data.get("inside") is None:
            out = [head + f"mean maps for {len(data.get('per_group', {}))} groups (no ROI given)"]
        else:
            out = [
                head + f"{fmt(data['inside'])} [{fmt(data.get('ci_low'))}, "
                f"{fmt(data.get('ci_high'))}] of the positive mass inside the ROI, which covers "
                f"{fmt(data.get('roi_area'))} of the image (enrichment "
                f"{fmt(data.get('enrichment'), 2)})"
            ]
        for name, r in regions.items():
            by_group = ", ".join(
                f"{g} {fmt(e['regions'][name].get('value'))}"
                for g, e in (data.get("per_group") or {}).items()
                if g != "all" and name in (e.get("regions") or {})
            )
            out.append(
                f"attribution '{key}': {ci_text(r)} of the positive mass in the region "
                f"'{name}', which covers {fmt(r.get('area'))} of the image (enrichment "
                f"{fmt(r.get('enrichment'), 1)})" + (f"; by group: {by_group}" if by_group else "")
            )
        return out

    @classmethod
    def mlflow(cls, key: str, data: dict) -> tuple[dict[str, float], dict[str, str]]:
        """``wsca.attribution.<key>.inside`` (with CI), ``.roi_area`` and, per named region,
        ``.region.<name>`` (with CI) and ``.region.<name>.area``."""
        k = sanitize_name(key)
        metrics = interval_metrics(f"wsca.attribution.{k}.inside", data, "inside")
        if data.get("roi_area") is not None:
            metrics[f"wsca.attribution.{k}.roi_area"] = float(data["roi_area"])
        for name, r in (data.get("regions") or {}).items():
            base = f"wsca.attribution.{k}.region.{sanitize_name(name)}"
            metrics.update(interval_metrics(base, r))
            if r.get("area") is not None:
                metrics[f"{base}.area"] = float(r["area"])
        return metrics, {}

    def __init__(
        self,
        data: dict,
        mean_maps: dict[str, np.ndarray] | None = None,
        examples: dict[str, list[dict]] | None = None,
        mean_masks: dict[str, dict[str, np.ndarray]] | None = None,
    ) -> None:
        super().__init__(data)
        self.mean_maps_ = mean_maps or {}
        self.examples_ = examples or {}
        self.mean_masks_ = mean_masks or {}
        self._png: dict[str, dict[str, bytes]] = {}

    def figures_png(self, prefix: str = "") -> dict[str, bytes]:
        """All figures as PNG bytes, rendered once: a report's ``save`` and MLflow logging
        (which saves the report again) share them."""
        if prefix not in self._png:
            self._png[prefix] = super().figures_png(prefix)
        return dict(self._png[prefix])

    def figure(self):
        """Per-group mean attribution maps on one colour scale (red: for the prediction),
        with the ROI and the named regions outlined where most of the group's images have
        them."""
        from matplotlib.figure import Figure

        maps = self.mean_maps_
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
            _outline(ax, self.mean_masks_.get(name, {}))
            n = self._data["per_group"].get(name, {}).get("n")
            ax.set_title(f"{name} (n={n})" if n else name, fontsize=9)
            ax.axis("off")
        for ax in axes[len(names) :]:
            ax.axis("off")
        _legend(axes[0], self.mean_masks_.get(names[0], {}))
        fig.colorbar(
            im, ax=axes.tolist(), shrink=0.8, label=f"mean attribution (unit mass; {self._red()})"
        )
        fig.suptitle(f"{self._title()}: mean attribution maps per group", fontsize=10)
        return fig

    def _red(self) -> str:
        """What red (positive attribution) means in the figures."""
        target = self._data.get("target")
        return (
            f"red: raises logit {target}"
            if isinstance(target, int)
            else "red: raises the primary score"
        )

    def _title(self) -> str:
        layer = self._data.get("layer")
        return f"{self._data['method']}" + (f" ({layer})" if layer else "")

    def _extra_figures(self) -> dict[str, Any]:
        out = {}
        shares = self._shares_figure()
        if shares is not None:
            out[SHARES_FIGURE] = shares
        out.update({f"overlays/{g}": self._overlay(g) for g, ex in self.examples_.items() if ex})
        return out

    def _shares_figure(self):
        """One panel per measured area (the ROI, each region): the share of positive mass
        per group with its CI, and the area (what a map blind to it would give)."""
        from matplotlib.figure import Figure

        d = self._data
        panels = []  # (title, area, {group: block})
        groups = d.get("per_group") or {}
        if d.get("inside") is not None:
            panels.append(
                ("inside the ROI", d.get("roi_area"), {g: {"value": e.get("inside"), **{
                    k: e.get(k) for k in ("ci_low", "ci_high")}} for g, e in groups.items()})
            )  # fmt: skip
        for name, r in (d.get("regions") or {}).items():
            blocks = {g: (e.get("regions") or {}).get(name, {}) for g, e in groups.items()}
            panels.append((f"in '{name}'", r.get("area"), blocks))
        if not panels:
            return None
        fig = Figure(figsize=(3.4 * len(panels) + 0.4, 3.2), layout="constrained")
        axes = np.atleast_1d(fig.subplots(1, len(panels)))
        for ax, (title, area, blocks) in zip(axes, panels):
            names = list(blocks)
            v = np.array([_num(blocks[g].get("value")) for g in names])
            lo = np.array([_num(blocks[g].get("ci_low")) for g in names])
            hi = np.array([_num(blocks[g].get("ci_high")) for g in names])
            err = np.nan_to_num(np.vstack([v - lo, hi - v]).clip(min=0))
            ax.bar(range(len(names)), np.nan_to_num(v), yerr=err, capsize=3, color="#c0392b")
            if area is not None:
                ax.axhline(area, color="grey", ls="--", lw=1, label="its area (blind map)")
                ax.legend(fontsize=7, loc="upper right")
            ax.set_xticks(range(len(names)), names, rotation=30, ha="right", fontsize=8)
            ax.set_title(f"share of positive mass {title}", fontsize=9)
            ax.set_ylim(0, max(1e-3, float(np.nanmax(np.r_[hi, v, area or 0]))) * 1.15)
        fig.suptitle(f"{self._title()}: where the positive attribution lies (95% CI)", fontsize=10)
        return fig

    def _overlay(self, group: str):
        from matplotlib.figure import Figure

        ex = self.examples_[group]
        cols = min(4, len(ex))
        rows = math.ceil(len(ex) / cols)
        fig = Figure(figsize=(2.3 * cols, 2.5 * rows + 0.2), layout="constrained")
        axes = np.atleast_1d(fig.subplots(rows, cols)).ravel()
        for ax, e in zip(axes, ex):
            img, amap = e["image"], e["map"]
            ax.imshow(img, cmap="gray" if img.ndim == 2 else None)
            vmax = float(np.abs(amap).max()) or 1.0
            ax.imshow(amap, cmap="bwr", vmin=-vmax, vmax=vmax, alpha=0.55)
            masks = {"ROI": e["roi"]} if e.get("roi") is not None else {}
            masks.update(e.get("regions") or {})
            _outline(ax, masks)
            shares = [f"in-ROI {e['inside']:.2f}"] if e.get("inside") is not None else []
            shares += [f"{n} {s:.2f}" for n, s in (e.get("region_shares") or {}).items() if s == s]
            groups = ", ".join(e.get("groups", []))
            ax.set_title(
                f"#{e['index']}" + (f" {groups}" if groups else "") + "\n" + " ".join(shares),
                fontsize=7,
            )
            ax.axis("off")
        for ax in axes[len(ex) :]:
            ax.axis("off")
        if ex:
            first = {"ROI": ex[0]["roi"]} if ex[0].get("roi") is not None else {}
            _legend(axes[0], {**first, **(ex[0].get("regions") or {})})
        fig.suptitle(f"{group}: attribution overlays ({self._red()})", fontsize=9)
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


def _num(x: Any) -> float:
    return float(x) if isinstance(x, (int, float)) and not isinstance(x, bool) else math.nan


def _outline(ax, masks: Mapping[str, np.ndarray]) -> None:
    """Contours of (H, W) masks (bool, or the share of images holding each pixel) at 0.5:
    the ROI solid, further regions dashed, in a fixed colour order."""
    for i, (colour, m) in enumerate(zip(_OUTLINE_COLOURS, masks.values())):
        m = np.asarray(m, dtype=float)
        if (m > 0.5).any() and (m < 0.5).any():
            ax.contour(m, levels=[0.5], colors=[colour], linewidths=1.0,
                       linestyles="-" if i == 0 else "--")  # fmt: skip


def _legend(ax, masks: Mapping[str, Any]) -> None:
    from matplotlib.lines import Line2D

    if not masks:
        return
    handles = [
        Line2D([], [], color=c, lw=1.2, ls="-" if i == 0 else "--", label=name)
        for i, (c, name) in enumerate(zip(_OUTLINE_COLOURS, masks))
    ]
    ax.legend(handles=handles, fontsize=6, loc="lower left", framealpha=0.7)


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
        primary score (a layer method such as ``LayerGradCam`` on ``layer`` too); an
        instance is used as it is (its forward function is yours).
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
    layer : torch.nn.Module or str, optional
        For Captum's layer methods (``LayerGradCam``, ``LayerIntegratedGradients``,
        ``GuidedGradCam``, ...): the layer (a module of ``model``, or its dotted name as
        in ``model.named_modules()``) whose (N, C, h, w) feature map is attributed. The
        map is summed over channels and upsampled to the image with
        ``captum.attr.LayerAttribution.interpolate``.
    interpolate_mode : str, default="bilinear"
        How a layer map is upsampled (``"nearest"``, ``"bilinear"``, ``"bicubic"``,
        ``"area"``).
    batch_size : int, default=16
        Images per ``attribute`` call when ``inputs`` is one tensor.
    n_examples : int, default=4
        Overlays kept per group (shown in rows of at most four).
    overlay_groups : sequence of str, optional
        The groups that get an overlay figure (e.g. ``["all"]``); default every group.
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

    Grad-CAM on a convolutional layer, and the share of mass in a named box:

    >>> from captum.attr import LayerGradCam
    >>> cnn = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, stride=2, padding=1),
    ...     torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
    ...     torch.nn.Linear(4, 2)).eval()
    >>> res = wa.InputAttribution(cnn, LayerGradCam, layer="1", progress=False).attribute(
    ...     x, roi=roi, regions={"corner": (0, 0, 2, 2)})
    >>> res["method"], res["layer"], res.mean_maps_["all"].shape, sorted(res["regions"])
    ('LayerGradCam', '1', (6, 6), ['corner'])
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
        layer: nn.Module | str | None = None,
        interpolate_mode: str = "bilinear",
        batch_size: int = 16,
        n_examples: int = 4,
        overlay_groups: Sequence[str] | None = None,
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
        self.layer = layer
        self.interpolate_mode = interpolate_mode
        self.batch_size = batch_size
        self.n_examples = n_examples
        if isinstance(overlay_groups, str):  # one group, not its letters
            overlay_groups = [overlay_groups]
        self.overlay_groups = None if overlay_groups is None else [str(g) for g in overlay_groups]
        self.max_samples = max_samples
        self.n_bootstrap = n_bootstrap
        self.ci_level = ci_level
        self.seed = seed
        self.device = device
        self.progress = progress

    # ------------------------------------------------------------------ set-up
    def _layer(self) -> tuple[nn.Module, str]:
        """``layer=`` as a module of the model, and its dotted name."""
        names = {id(m): n for n, m in self.model.named_modules()}
        if isinstance(self.layer, str):
            try:
                module = self.model.get_submodule(self.layer)
            except AttributeError as exc:
                raise AuditError(
                    f"layer={self.layer!r} is not a module of the model; its modules include "
                    f"{[n for n in list(names.values())[1:9]]}"
                ) from exc
            return module, self.layer
        if isinstance(self.layer, nn.Module) and id(self.layer) in names:
            return self.layer, names[id(self.layer)] or type(self.layer).__name__
        raise AuditError(
            f"layer must be a module of the model or its name; got {type(self.layer).__name__}"
        )

    def _layer_name(self, attributor) -> str | None:
        """The attributed layer's name: ``layer=``'s, or a configured instance's own."""
        if self.layer is not None:
            return self._layer()[1]
        layer = getattr(attributor, "layer", None)
        names = {id(m): n for n, m in self.model.named_modules()}
        return names.get(id(layer)) if isinstance(layer, nn.Module) else None

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
            takes_layer = "layer" in inspect.signature(method.__init__).parameters
            if takes_layer != (self.layer is not None):
                raise AuditError(
                    f"{method.__name__} attributes to a layer: pass layer= (a module of the "
                    "model or its name, e.g. its last convolutional block)"
                    if takes_layer
                    else f"layer= is for Captum's layer methods (LayerGradCam, ...); "
                    f"{method.__name__} attributes to the inputs"
                )
            return (method(forward, self._layer()[0]) if takes_layer else method(forward)), mode
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

    def _subsample(self, inputs, roi, targets, metadata, regions):
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
        for masks in [roi, *regions.values()]:
            if isinstance(masks, RoiMasks) and not masks.shared:
                masks.masks = masks.masks[sel]
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
        forward function and target chosen as described in the class docstring. A layer
        method's map is summed over its channels and brought to the image size:
        ``LayerAttribution.interpolate(attr.sum(1, keepdim=True), (H, W),
        interpolate_mode)``, shape (n, 1, H, W).
        """
        from captum.attr import LayerAttribution

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
        # autograd even when called under torch.inference_mode() / no_grad(); Captum's note
        # that it made the inputs require gradients concerns our own copy, not the caller's
        with torch.inference_mode(False), torch.enable_grad(), warnings.catch_warnings():
            warnings.filterwarnings("ignore", "Input Tensor .* did not already require gradients")
            attr = self._attributor.attribute(x.clone(), **kw)
        if isinstance(attr, tuple):
            attr = attr[0]
        name = type(self._attributor).__name__
        if isinstance(self._attributor, LayerAttribution):
            if attr.ndim != 4 or attr.shape[0] != x.shape[0]:
                raise AuditError(
                    f"{name} returned attributions of shape {tuple(attr.shape)} for "
                    f"{x.shape[0]} images: the layer must give a (N, C, h, w) feature map "
                    "(choose a convolutional block)"
                )
            attr = attr.sum(1, keepdim=True)
            if attr.shape[-2:] != x.shape[-2:]:
                attr = LayerAttribution.interpolate(
                    attr, tuple(x.shape[-2:]), interpolate_mode=self.interpolate_mode
                )
        elif attr.shape != x.shape:
            raise AuditError(
                f"{name} returned attributions of shape "
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
        regions: Mapping[str, Any] | None = None,
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
        regions : mapping of str to a bool array (N, H, W) or (H, W), or a box (y0, x0, y1, x1)
            Further named regions (an artefact's box, say): each gets the share of the
            positive mass inside it, with a CI (``result["regions"][name]``), per group
            too, and is outlined in the figures. They may overlap the ROI.
        """
        if self.batch_size < 1 or self.n_examples < 0:
            raise AuditError("batch_size must be >= 1 and n_examples >= 0")
        if self.interpolate_mode not in _INTERPOLATE_MODES:
            raise AuditError(
                f"interpolate_mode must be one of {list(_INTERPOLATE_MODES)}; "
                f"got {self.interpolate_mode!r}"
            )
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
        named = _named_regions(regions)
        n_known = n_images(inputs)
        if isinstance(inputs, (Tensor, np.ndarray)):
            inputs = as_image_batch(inputs)
            check_consistent_length(
                n_known, "images", targets=y, **{f"metadata[{k!r}]": v for k, v in meta.items()}
            )
            if masks is not None:
                masks.check_count(n_known)
            _check_region_counts(named, n_known)
            inputs, masks, y, meta = self._subsample(inputs, masks, y, meta, named)
            n_known = int(inputs.shape[0])
        elif self.max_samples is not None and n_known is not None:
            n_known = min(n_known, self.max_samples)
        warn_if_training(self.model, "attribution")
        dev = model_device(self.model, self.device)

        shares: list[np.ndarray] = []
        areas: list[np.ndarray] = []
        region_shares: dict[str, list[np.ndarray]] = {r: [] for r in named}
        region_areas: dict[str, list[np.ndarray]] = {r: [] for r in named}
        sums: dict[str, Tensor] = {}
        mask_sums: dict[str, dict[str, Tensor]] = {}
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
            m = masks.take(start, x) if masks is not None else None
            if m is not None:
                shares.append(_share(pos, m))
                areas.append(m.float().mean((1, 2)).cpu().numpy())
            outlines = {"ROI": m} if m is not None else {}
            for r in list(named):
                rm = outlines[r] = _take_region(named, r, start, x)
                region_shares[r].append(_share(pos, rm))
                region_areas[r].append(rm.float().mean((1, 2)).cpu().numpy())
            unit = amap / amap.abs().sum((1, 2), keepdim=True).clamp_min(1e-30)
            keys = _group_keys(start, n, y, meta)
            for j, ks in enumerate(keys):
                for key in ks:
                    if key not in sums:
                        sums[key] = torch.zeros_like(unit[0])
                        mask_sums[key] = {o: torch.zeros_like(unit[0]) for o in outlines}
                        counts[key] = 0
                    sums[key] += unit[j]
                    for o, om in outlines.items():
                        mask_sums[key][o] += om[j]
                    counts[key] += 1
                    if self.overlay_groups is not None and key not in self.overlay_groups:
                        continue
                    ex = examples.setdefault(key, [])
                    if len(ex) < self.n_examples:
                        ex.append(
                            {
                                "index": start + j,
                                "groups": ks[1:],
                                "image": display_image(x[j]),
                                "map": amap[j].cpu().numpy(),
                                "roi": None if m is None else m[j].cpu().numpy(),
                                "inside": None if m is None else float(shares[-1][j]),
                                "regions": {r: outlines[r][j].cpu().numpy() for r in named},
                                "region_shares": {r: float(region_shares[r][-1][j]) for r in named},
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
        _check_region_counts(named, start)

        data = self._summary(start, shares, areas, counts, y, meta, self._attributor)
        self._add_regions(data, region_shares, region_areas, y, meta)
        order = sorted(sums, key=lambda k: (k != "all", k))  # "all", then by name
        mean_maps = {k: (sums[k] / counts[k]).cpu().numpy() for k in order}
        mean_masks = {
            k: {o: (v / counts[k]).cpu().numpy() for o, v in mask_sums[k].items()} for k in order
        }
        return AttributionResult(data, mean_maps, examples, mean_masks)

    def _summary(self, n, shares, areas, counts, y, meta, attributor) -> dict:
        data: dict[str, Any] = {
            "method": _method_name(attributor),
            "layer": self._layer_name(attributor),
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
            "regions": {},
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
        for k, idx in _members(n, y, meta).items():  # "all", then by name
            entry: dict[str, Any] = {"n": counts.get(k, len(idx))}
            if share is not None:
                s = share[idx]
                v = float(np.nanmean(s)) if np.isfinite(s).any() else math.nan
                lo, hi = bootstrap_mean_ci(s, self.n_bootstrap, self.ci_level, self.seed)
                entry.update(inside=v, outside=1.0 - v, ci_low=lo, ci_high=hi)
            data["per_group"][k] = entry
        return data

    def _add_regions(self, data, region_shares, region_areas, y, meta) -> None:
        """``data["regions"][name]`` and ``per_group[g]["regions"][name]``: the mean share
        of positive mass in each named region, with a bootstrap CI (images without positive
        mass left out, as for the ROI)."""
        if not region_shares:
            return
        members = _members(data["n_samples"], y, meta)
        for r, parts in region_shares.items():
            s = np.concatenate(parts)
            area = float(np.concatenate(region_areas[r]).mean())
            data["regions"][r] = {**self._interval(s), "area": area}
            data["regions"][r]["enrichment"] = data["regions"][r]["value"] / area
            for k, idx in members.items():
                data["per_group"][k].setdefault("regions", {})[r] = self._interval(s[idx])

    def _interval(self, s: np.ndarray) -> dict[str, float]:
        v = float(np.nanmean(s)) if np.isfinite(s).any() else math.nan
        lo, hi = bootstrap_mean_ci(s, self.n_bootstrap, self.ci_level, self.seed)
        return {"value": v, "ci_low": lo, "ci_high": hi}


_INTERPOLATE_MODES = ("nearest", "bilinear", "bicubic", "area")


def _share(pos: Tensor, region: Tensor) -> np.ndarray:
    """Per image, the share of the positive mass ``pos`` (n, H, W) inside ``region``
    (NaN for an image without positive mass)."""
    total = pos.sum((1, 2))
    inside = (pos * region).sum((1, 2))
    return torch.where(total > 0, inside / total.clamp_min(1e-30), math.nan).cpu().numpy()


def _named_regions(regions: Mapping[str, Any] | None) -> dict[str, RoiMasks | np.ndarray]:
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


def _check_region_counts(named: dict, n: int) -> None:
    for name, region in named.items():
        if isinstance(region, RoiMasks):
            try:
                region.check_count(n)
            except AuditError as exc:
                raise AuditError(f"regions[{name!r}]: {exc}") from exc


def _take_region(named: dict, name: str, start: int, x: Tensor) -> Tensor:
    region = named[name]
    if not isinstance(region, RoiMasks):  # a box: its mask now that the size is known
        try:
            region = named[name] = RoiMasks(boxes_to_roi(region, *x.shape[-2:]))
        except AuditError as exc:
            raise AuditError(f"regions[{name!r}]: {exc}") from exc
    try:
        return region.take(start, x)
    except AuditError as exc:
        raise AuditError(f"regions[{name!r}]: {exc}") from exc


def _members(n: int, y, meta) -> dict[str, list[int]]:
    """Group key -> the indices of its images ("all" first, then by name)."""
    members: dict[str, list[int]] = {}
    for i, ks in enumerate(_group_keys(0, n, y, meta)):
        for k in ks:
            members.setdefault(k, []).append(i)
    return {k: members[k] for k in sorted(members, key=lambda k: (k != "all", k))}


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
    (the share a ROI-blind attribution would give) or between models, and the share
    inside an artefact's region (``regions=``) with that region's ``area``.

    Parameters
    ----------
    model, inputs, roi, method, target
        See :class:`InputAttribution`; ``roi`` is required here.
    **kwargs
        Other :class:`InputAttribution` parameters (``n_steps``, ``internal_batch_size``,
        ``layer``, ``baselines``, ``batch_size``, ``progress``, ...) and ``targets=`` /
        ``metadata=`` for per-group shares, ``regions=`` for named regions.

    Returns
    -------
    AttributionResult
        ``{"inside": share, "outside": share, "ci_low", "ci_high", "roi_area",
        "regions": {name: {"value", "ci_low", "ci_high", "area", "enrichment"}}, ...}``.

    Examples
    --------
    >>> import torch, wsca_audit as wa
    >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 1)).eval()
    >>> with torch.no_grad():
    ...     _ = model[1].weight.fill_(0.0); model[1].weight[0, :4] = 1.0  # reads row 0 only
    >>> roi = torch.zeros(4, 4, dtype=torch.bool); roi[0] = True
    >>> res = wa.attribution_mass(model, torch.rand(6, 1, 4, 4), roi, progress=False,
    ...                           regions={"corner": (0, 0, 1, 1)})
    >>> round(res["inside"], 6), res["roi_area"], res["regions"]["corner"]["area"]
    (1.0, 0.25, 0.0625)
    """
    if roi is None:
        raise AuditError("attribution_mass needs roi= (boolean masks (N, H, W) or (H, W))")
    targets = kwargs.pop("targets", None)
    metadata = kwargs.pop("metadata", None)
    regions = kwargs.pop("regions", None)
    return InputAttribution(model, method, target=target, **kwargs).attribute(
        inputs, roi=roi, targets=targets, metadata=metadata, regions=regions
    )
