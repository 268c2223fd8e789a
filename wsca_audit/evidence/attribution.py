"""Input attributions with Captum: where in the image the primary logit comes from.

:class:`InputAttribution` and :func:`attribution_mass` compute input attributions
(Integrated Gradients by default, any Captum attribution class accepted) batch by batch
and reduce them at once to summaries (:mod:`.attribution_summary`): the share of
positive attribution mass inside an ROI, and inside further named regions (an artefact's
box), per image, per-group mean maps (label, each categorical metadata value) and a few
overlays per group. Layer methods (``LayerGradCam`` on a convolutional block) are
upsampled to the image with Captum's ``LayerAttribution.interpolate``. The full
attribution tensor set is never kept. The result is the ``attribution`` evidence type of
a report; its figures live in :mod:`.attribution_figures`.

(The embedding-side counterpart, the layer-attribution *alignment* of a task, is a
measure: :mod:`wsca_audit.measures.alignment`.)
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from ..errors import AuditError
from ..formatting import ci_text, fmt
from ..naming import interval_metrics, sanitize_name
from ..primary import score_text
from ..resampling import stratified_subsample
from ..validation import check_consistent_length, column_or_1d
from .attribution_figures import mean_maps_figure, overlay_figure, shares_figure
from .attribution_summary import MapSums, check_region_counts, named_regions, share_summary
from .base import (
    Evidence,
    RoiMasks,
    as_image_batch,
    iter_image_batches,
    model_as_deployed,
    model_device,
    model_provenance,
    n_images,
    register_evidence,
)
from .captum_method import CaptumMethod

MAX_GROUP_LEVELS = 20  # metadata with more values is not categorical: no groups for it
INTERPOLATE_MODES = ("nearest", "bilinear", "bicubic", "area")
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
    title = "Attributions"
    explanation = (
        "where in the image the prediction comes from: the share of positive Captum "
        "attribution mass inside the region of interest (and each named region), beside "
        "the share of the image it covers"
    )

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
        if data.get("inside") is None:
            out = [head + f"mean maps for {len(data.get('per_group', {}))} groups (no ROI given)"]
        else:
            inside = {**data, "value": data["inside"]}
            out = [
                head + f"{ci_text(inside)} of the positive mass inside the ROI, which covers "
                f"{fmt(data.get('roi_area'))} of the image (enrichment "
                f"{fmt(data.get('enrichment'), 2)})"
            ]
        for name, r in (data.get("regions") or {}).items():
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
        *,
        ci_level: float = 0.95,
    ) -> None:
        super().__init__(data, ci_level=ci_level)
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
        return mean_maps_figure(
            self.mean_maps_, self.mean_masks_, self._data["per_group"], self._title(), self._red()
        )

    def _red(self) -> str:
        """What red (positive attribution) means in the figures."""
        target = self._data.get("target")
        if isinstance(target, int):
            return f"red: raises logit {target}"
        if target == "predicted class":
            return "red: raises the logit of each image's predicted class"
        return "red: raises the primary score"

    def _title(self) -> str:
        layer = self._data.get("layer")
        return f"{self._data['method']}" + (f" ({layer})" if layer else "")

    def _extra_figures(self) -> dict[str, Any]:
        out = {}
        shares = shares_figure(self._data, self._title(), self.ci_level)
        if shares is not None:
            out[SHARES_FIGURE] = shares
        out.update(
            {
                f"overlays/{g}": overlay_figure(ex, g, self._red())
                for g, ex in self.examples_.items()
                if ex
            }
        )
        return out

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


BUILT_FROM = ("model", "method", "target", "layer")  # what the Captum method is built from


class _Rebuilds:
    """A setting the Captum method is built from (one of :data:`BUILT_FROM`). Assigning
    one rebuilds the method at once, and a value it cannot be built from is refused with
    the old one kept: no call can find a method built for another value (Captum builds
    in ``__init__``; here the settings stay assignable)."""

    def __set_name__(self, owner: type, name: str) -> None:
        self.slot = "_" + name

    def __get__(self, obj: Any, objtype: type | None = None) -> Any:
        return self if obj is None else getattr(obj, self.slot)

    def __set__(self, obj: Any, value: Any) -> None:
        old = obj.__dict__.get(self.slot)
        setattr(obj, self.slot, value)
        if "_captum" not in obj.__dict__:  # __init__ builds once every setting is in place
            return
        try:
            obj._captum = CaptumMethod(**{k: getattr(obj, k) for k in BUILT_FROM})
        except Exception:
            setattr(obj, self.slot, old)
            raise


@dataclass
class _Inputs:
    """One run's checked inputs: images, ROI masks, named regions, labels, metadata."""

    images: Any
    roi: RoiMasks | None
    regions: dict
    y: np.ndarray | None
    meta: dict[str, np.ndarray]
    n_known: int | None
    n_outputs: int | None = None  # the model's, counted on the first batch


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

    Notes
    -----
    As Captum's classes do, the attributor is built here, once: ``attribute()`` and
    ``attribute_batch()`` only compute. Assigning ``model``, ``method``, ``target`` or
    ``layer`` later rebuilds it at once (an invalid value is an ``AuditError`` and the
    old one stays; :meth:`set_params` changes several together), and the other settings
    are read at each call, so a call never uses a method built for other settings.

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

    model = _Rebuilds()
    method = _Rebuilds()
    target = _Rebuilds()
    layer = _Rebuilds()

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
        self.layer = layer
        self.baselines = baselines
        self.n_steps = n_steps
        self.internal_batch_size = internal_batch_size
        self.attribute_kwargs = dict(attribute_kwargs or {})
        self.interpolate_mode = interpolate_mode
        self.batch_size = batch_size
        self.n_examples = n_examples
        self.overlay_groups = _group_list(overlay_groups)
        self.max_samples = max_samples
        self.n_bootstrap = n_bootstrap
        self.ci_level = ci_level
        self.seed = seed
        self.device = device
        self.progress = progress
        self._captum = CaptumMethod(model, method, target, layer)

    def set_params(self, **params: Any) -> InputAttribution:
        """Change several settings at once (scikit-learn's habit) and return ``self``.

        The Captum method is rebuilt once, from all of them: switching to a layer method
        takes ``set_params(method=LayerGradCam, layer="features.14")``. An unknown name or
        a combination the method cannot be built from is an ``AuditError`` and changes
        nothing.
        """
        names = [p for p in inspect.signature(type(self).__init__).parameters if p != "self"]
        unknown = sorted(set(params) - set(names))
        if unknown:
            raise AuditError(f"InputAttribution has no setting {unknown}; its settings: {names}")
        captum = CaptumMethod(**{k: params.get(k, getattr(self, k)) for k in BUILT_FROM})
        for name, value in params.items():
            if name in BUILT_FROM:
                self.__dict__["_" + name] = value  # the descriptor's slot: built just above
            elif name == "overlay_groups":
                self.overlay_groups = _group_list(value)
            elif name == "attribute_kwargs":
                self.attribute_kwargs = dict(value or {})
            else:
                setattr(self, name, value)
        self._captum = captum
        return self

    # ------------------------------------------------------------------ one batch
    def attribute_batch(self, x: Tensor) -> Tensor:
        """Raw Captum attributions of one batch (n, C, H, W), on the model's device.

        Exactly ``method(forward).attribute(x, target=..., n_steps=..., ...)``, with the
        forward function and target chosen as described in the class docstring. A layer
        method's map is summed over its channels and brought to the image size:
        ``LayerAttribution.interpolate(attr.sum(1, keepdim=True), (H, W),
        interpolate_mode)``, shape (n, 1, H, W).
        """
        x = as_image_batch(x).to(model_device(self.model, self.device))
        captum = self._captum
        with model_as_deployed(self.model, "attribution"):
            return self._attribute(x, captum.n_outputs(x) if captum.needs_outputs else None)

    def _attribute(self, x: Tensor, n_outputs: int | None) -> Tensor:
        """:meth:`attribute_batch` of a batch already on the device, its outputs counted."""
        kw = self._captum.call_kwargs(
            self.n_steps, self.internal_batch_size, self.baselines, self.attribute_kwargs
        )
        return self._captum.attribute(x, n_outputs, kw, self.interpolate_mode)

    # ------------------------------------------------------------------ the run
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
        self._check_settings()
        run = self._inputs(inputs, roi, targets, metadata, regions)
        with model_as_deployed(self.model, "attribution"):
            sums = self._stream(run)
        self._check_counts(run, sums.n)
        data = {
            **self._header(sums.n, run.n_outputs),
            **share_summary(sums, run.y, run.meta, self.n_bootstrap, self.ci_level, self.seed),
        }
        return AttributionResult(
            data, sums.mean_maps(), sums.examples, sums.mean_masks(), ci_level=self.ci_level
        )

    def _check_settings(self) -> None:
        if self.batch_size < 1 or self.n_examples < 0:
            raise AuditError("batch_size must be >= 1 and n_examples >= 0")
        if self.interpolate_mode not in INTERPOLATE_MODES:
            raise AuditError(
                f"interpolate_mode must be one of {list(INTERPOLATE_MODES)}; "
                f"got {self.interpolate_mode!r}"
            )

    def _inputs(self, inputs, roi, targets, metadata, regions) -> _Inputs:
        """The run's inputs checked, and a tensor input subsampled to ``max_samples``."""
        y = column_or_1d(targets, "targets", "image") if targets is not None else None
        meta = _group_metadata(metadata)
        masks = RoiMasks(roi) if roi is not None else None
        named = named_regions(regions)
        n_known = n_images(inputs)
        if isinstance(inputs, (Tensor, np.ndarray)):
            inputs = as_image_batch(inputs)
            columns = {f"metadata[{k!r}]": v for k, v in meta.items()}
            check_consistent_length(n_known, "images", targets=y, **columns)
            if masks is not None:
                masks.check_count(n_known)
            check_region_counts(named, n_known)
            inputs, y, meta = self._subsample(inputs, masks, y, meta, named)
            n_known = int(inputs.shape[0])
        elif self.max_samples is not None and n_known is not None:
            n_known = min(n_known, self.max_samples)
        return _Inputs(inputs, masks, named, y, meta, n_known)

    def _subsample(self, inputs, roi, targets, metadata, regions):
        """At most ``max_samples`` images of a tensor input, stratified by label and each
        metadata value; per-image masks (ROI and regions) are cut to match in place."""
        n = int(inputs.shape[0])
        if self.max_samples is None or self.max_samples >= n:
            return inputs, targets, metadata
        strata = np.zeros(n, dtype=np.int64)
        for col in ([targets] if targets is not None else []) + list(metadata.values()):
            _, codes = np.unique(col.astype(str), return_inverse=True)
            strata = strata * (codes.max() + 1) + codes
        pick = stratified_subsample(strata, self.max_samples, self.seed)
        sel = torch.as_tensor(pick)
        for masks in [roi, *regions.values()]:
            if isinstance(masks, RoiMasks) and not masks.shared:
                masks.masks = masks.masks[sel]
        y = targets[pick] if targets is not None else None
        return inputs[sel], y, {k: v[pick] for k, v in metadata.items()}

    def _stream(self, run: _Inputs) -> MapSums:
        """Attribute the images batch by batch, reducing each batch at once."""
        dev = model_device(self.model, self.device)
        sums = MapSums(run.regions, self.n_examples, self.overlay_groups)
        n_outputs = None  # counted on the first batch of this run
        bar = tqdm(total=run.n_known, desc="wsca: attribution", unit="img",
                   disable=not self.progress)  # fmt: skip
        for x in iter_image_batches(run.images, self.batch_size):
            if self.max_samples is not None:
                if sums.n >= self.max_samples:
                    break
                x = x[: self.max_samples - sums.n]
            x = x.to(dev)
            if n_outputs is None and self._captum.needs_outputs:
                n_outputs = run.n_outputs = self._captum.n_outputs(x)
            sums.add(x, self._attribute(x, n_outputs), run.roi, run.y, run.meta)
            bar.update(x.shape[0])
        bar.close()
        return sums

    @staticmethod
    def _check_counts(run: _Inputs, n: int) -> None:
        """Labels, metadata and per-image masks agree with the number of images seen."""
        if n == 0:
            raise AuditError("inputs held no images")
        if run.y is not None:
            check_consistent_length(n, "images", targets=run.y)
        for k, v in run.meta.items():
            check_consistent_length(n, "images", **{f"metadata[{k!r}]": v})
        if run.roi is not None:
            run.roi.check_count(n)
        check_region_counts(run.regions, n)

    def _header(self, n: int, n_outputs: int | None) -> dict[str, Any]:
        """What was attributed, and how: the first keys of the report entry. ``score``
        says in words what was attributed (None for a configured Captum instance, whose
        own forward decides)."""
        many = n_outputs is not None and n_outputs > 2
        if self.target is not None:
            target: int | str = self.target
        else:
            target = "predicted class" if many else "primary score"
        return {
            "method": self._captum.name,
            "layer": self._captum.layer_name,
            "target": target,
            "score": score_text(n_outputs, self.target) if n_outputs is not None else None,
            "n_steps": self.n_steps,
            "baselines": "captum default (zeros)" if self.baselines is None else "user",
            "n_samples": n,
            "model": model_provenance(self.model),
        }


def _group_list(groups: Sequence[str] | str | None) -> list[str] | None:
    """``overlay_groups=`` as a list of names (one string is one group, not its letters)."""
    if isinstance(groups, str):
        groups = [groups]
    return None if groups is None else [str(g) for g in groups]


def _group_metadata(metadata: Mapping[str, Any] | None) -> dict[str, np.ndarray]:
    """``metadata=`` as columns, each categorical (one group per value)."""
    meta: dict[str, np.ndarray] = {}
    for name, col in ({} if metadata is None else dict(metadata)).items():
        arr = column_or_1d(col, f"metadata[{name!r}]", "image")
        if len(np.unique(arr.astype(str))) > MAX_GROUP_LEVELS:
            raise AuditError(
                f"metadata[{name!r}] has more than {MAX_GROUP_LEVELS} values: the input "
                "view groups by categorical metadata only (bin continuous variables first)"
            )
        meta[str(name)] = arr
    return meta


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
