"""ROI masking sensitivity (after Sourget et al., "Mask of truth", 2025).

The model is evaluated three times on the same images: as they are (``full``), with the
region of interest filled in (``roi_removed``), and with everything *but* the ROI filled
in (``roi_only``). A model that keeps most of its AUC without the ROI reads something
else: a shortcut. The three settings share their bootstrap resamples, so the drops and
their intervals are paired.

Fills (``fill=``), applied per image and per channel:

- ``"zero"``: 0 in the model's input space (the data mean when inputs are standardised);
- ``"mean"``: the image's own mean;
- ``"blur"``: a Gaussian blur of the image (``blur_sigma``, default ``max(H, W) / 16``),
  which keeps low frequencies and removes detail;
- ``"noise"``: Gaussian noise with the image's mean and standard deviation (seeded).
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from ..errors import AuditError
from ..formatting import ci_text
from ..naming import interval_metrics, sanitize_name
from ..primary import label_codes, logits_of, outputs_auc
from ..stats import bootstrap_counts, ci_block
from ..validation import check_consistent_length, column_or_1d
from .base import (
    Evidence,
    RoiMasks,
    boxes_to_roi,
    display_image,
    iter_image_batches,
    model_device,
    n_images,
    register_evidence,
    warn_if_training,
)

FILLS = ("zero", "mean", "blur", "noise")
SETTINGS = ("full", "roi_removed", "roi_only")
_OUTLINE_COLOURS = ("#f1c40f", "#e84393", "#00cec9", "#e17055")


def _gaussian_blur(x: Tensor, sigma: float) -> Tensor:
    """Separable Gaussian blur of (N, C, H, W) with reflect padding (any device)."""
    radius = max(1, math.ceil(3 * sigma))
    radius = min(radius, x.shape[-1] - 1, x.shape[-2] - 1) or 1
    t = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    k = k / k.sum()
    c = x.shape[1]
    pad_mode = "reflect" if min(x.shape[-2:]) > radius else "replicate"
    y = nn.functional.pad(x, (radius, radius, 0, 0), mode=pad_mode)
    y = nn.functional.conv2d(y, k.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    y = nn.functional.pad(y, (0, 0, radius, radius), mode=pad_mode)
    return nn.functional.conv2d(y, k.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


def fill_region(
    x: Tensor,
    region: Tensor,
    fill: str = "zero",
    *,
    blur_sigma: float | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Replace the pixels of ``x`` (N, C, H, W) where ``region`` (N, H, W) is True.

    Examples
    --------
    >>> import torch
    >>> x = torch.ones(1, 1, 2, 2); region = torch.tensor([[[True, False], [False, False]]])
    >>> fill_region(x, region, "zero")[0, 0]
    tensor([[0., 1.],
            [1., 1.]])
    """
    if fill not in FILLS:
        raise AuditError(f"fill must be one of {FILLS}; got {fill!r}")
    m = region[:, None].to(x.device)
    if fill == "zero":
        value = torch.zeros_like(x)
    elif fill == "mean":
        value = x.mean((2, 3), keepdim=True).expand_as(x)
    elif fill == "blur":
        sigma = blur_sigma if blur_sigma is not None else max(x.shape[-2:]) / 16
        if sigma <= 0:
            raise AuditError("blur_sigma must be > 0")
        value = _gaussian_blur(x, float(sigma))
    else:
        noise = torch.randn(x.shape, generator=generator, dtype=x.dtype).to(x.device)
        value = x.mean((2, 3), keepdim=True) + x.std((2, 3), keepdim=True) * noise
    return torch.where(m, value, x)


@register_evidence
class MaskingResult(Evidence):
    """ROI masking sensitivity: the primary AUC on full, ROI-removed and ROI-only images.

    A mapping with keys ``full``, ``roi_removed``, ``roi_only`` (each ``{"metric",
    "value", "ci_low", "ci_high"}``, the last two with ``drop`` and ``retained``),
    ``verdict``, ``fill``, ``n_samples`` and ``roi_area``.
    """

    kind = "roi_masking"
    section = "roi_masking"
    schema: ClassVar[dict] = {"$ref": "#/$defs/masking"}

    @property
    def default_key(self) -> str:
        """The entry name ``AuditResult.add_evidence`` uses when none is given."""
        return f"fill_{self._data.get('fill')}"

    @classmethod
    def lines(cls, key: str, data: dict, tasks: dict) -> list[str]:
        parts = [f"{name.replace('_', ' ')} {ci_text(data.get(name))}" for name in SETTINGS]
        return [
            f"ROI masking '{key}' (AUC, fill={data.get('fill')}): {'; '.join(parts)} "
            f"-> {data.get('verdict')}"
        ]

    @classmethod
    def mlflow(cls, key: str, data: dict) -> tuple[dict[str, float], dict[str, str]]:
        """``wsca.masking.<key>.<setting>`` (AUC) and ``.<setting>_drop``, with CIs; the
        verdict as tag ``wsca.masking.<key>.verdict``."""
        k = sanitize_name(key)
        metrics: dict[str, float] = {}
        for setting in SETTINGS:
            block = data.get(setting) or {}
            metrics.update(interval_metrics(f"wsca.masking.{k}.{setting}", block))
            metrics.update(interval_metrics(f"wsca.masking.{k}.{setting}_drop", block.get("drop")))
        return metrics, {f"wsca.masking.{k}.verdict": str(data.get("verdict"))}

    def __init__(
        self,
        data: dict,
        examples: dict[str, np.ndarray] | None = None,
        outlines: dict[str, np.ndarray] | None = None,
    ) -> None:
        super().__init__(data)
        self.examples_ = examples or {}
        # (H, W) regions drawn on the example images: the ROI first, then the caller's
        self.outlines_ = outlines or {}

    def figure(self):
        """The example image in each setting, with the ROI (and any regions passed as
        ``outline=``) outlined (left), and the AUCs with 95% CIs (right)."""
        from matplotlib.figure import Figure
        from matplotlib.lines import Line2D

        n_ex = len(self.examples_)
        fig = Figure(figsize=(3.0 + 2.4 * n_ex, 3.3), layout="constrained")
        axes = fig.subplots(1, n_ex + 1, width_ratios=[1] * n_ex + [2.2])
        axes = np.atleast_1d(axes)
        fill = self._data.get("fill")
        titles = {
            "full": "full image",
            "roi_removed": f"ROI filled ({fill})",
            "roi_only": f"outside the ROI filled ({fill})",
        }
        handles = []
        for i, (colour, (label, region)) in enumerate(
            zip(_OUTLINE_COLOURS, self.outlines_.items())
        ):
            handles.append(Line2D([], [], color=colour, lw=1.5, label=label))
            for ax in axes[:n_ex]:
                if region.any() and not region.all():
                    ax.contour(region.astype(float), levels=[0.5], colors=[colour],
                               linewidths=1.2, linestyles="-" if i == 0 else "--")  # fmt: skip
        for ax, (name, img) in zip(axes, self.examples_.items()):
            ax.imshow(img, cmap="gray" if img.ndim == 2 else None)
            ax.set_title(titles.get(name, name.replace("_", " ")), fontsize=9)
            ax.axis("off")
        if handles and n_ex:
            axes[0].legend(handles=handles, fontsize=7, loc="lower left", framealpha=0.8)
        ax = axes[-1]
        vals = [self._data[s]["value"] for s in SETTINGS]
        lo = [self._data[s]["ci_low"] for s in SETTINGS]
        hi = [self._data[s]["ci_high"] for s in SETTINGS]
        v = [x if x is not None else math.nan for x in vals]
        err = [
            [max(a - b, 0) if b is not None and a == a else 0 for a, b in zip(v, lo)],
            [max(b - a, 0) if b is not None and a == a else 0 for a, b in zip(v, hi)],
        ]
        colours = ["#2e86c1", "#c0392b", "#27ae60"]
        ax.bar(range(3), v, yerr=err, capsize=4, color=colours)
        ax.axhline(0.5, color="grey", ls=":", lw=1, label="chance")
        ax.set_xticks(range(3), ["full", "ROI removed", "ROI only"])
        ax.set_ylim(0.0, 1.05)
        ax.set_ylabel(self._data["full"]["metric"].upper())
        ax.set_title(f"fill={self._data['fill']}: {self._data['verdict']}", fontsize=9)
        ax.legend(fontsize=8, loc="lower right")
        return fig


def roi_masking(
    model: nn.Module,
    inputs: Any,
    roi: Any = None,
    targets: Any = None,
    fill: str = "zero",
    n_bootstrap: int = 200,
    *,
    boxes: Any = None,
    batch_size: int = 64,
    retained_threshold: float = 0.8,
    blur_sigma: float | None = None,
    example: int = 0,
    outline: dict[str, Any] | None = None,
    ci_level: float = 0.95,
    seed: int = 0,
    device: str | torch.device | None = None,
    progress: bool = True,
) -> MaskingResult:
    """Evaluate the model on full images, with the ROI removed, and with only the ROI kept.

    Parameters
    ----------
    model : torch.nn.Module
        The classifier (in eval mode); its output is logits (or a tuple / ``.logits``).
    inputs : Tensor or array (N, C, H, W), or an iterable of such batches
    roi : bool array of shape (N, H, W) or (H, W)
        The region the model *should* read (lesion, organ, stroke pixels).
    targets : array-like of shape (N,)
        Class labels: two values give AUC of the log-odds, more give macro one-vs-rest
        AUC of the softmax (labels must then be class indices).
    fill : {"zero", "mean", "blur", "noise"}, default="zero"
        What replaces the removed pixels (see the module docstring).
    n_bootstrap : int, default=200
        Paired bootstrap resamples for the intervals.
    boxes : array-like of shape (4,) or (N, 4), optional
        ``(y0, x0, y1, x1)`` boxes instead of ``roi`` masks.
    batch_size : int, default=64
        Used when ``inputs`` is a single tensor.
    retained_threshold : float, default=0.8
        Share of the above-chance AUC that the model must keep without the ROI (with the
        ROI-removed AUC's interval above chance) to be called ``"relies_outside_roi"``.
    blur_sigma : float, optional
        Gaussian sigma in pixels for ``fill="blur"``.
    example : int, default=0
        Index of the image shown in the figure (in each setting, with the ROI outlined).
    outline : dict of str to bool array (H, W) or box (y0, x0, y1, x1), optional
        Further regions to outline on the example images, by name, e.g.
        ``{"scanner marker": (4, 4, 16, 16)}``: what a reviewer should see where it is.
    ci_level, seed, device, progress
        Interval level, random seed (bootstrap and noise), device (default: the model's)
        and a progress bar.

    Returns
    -------
    MaskingResult
        ``verdict`` is ``"relies_outside_roi"`` (keeps at least ``retained_threshold``
        of its above-chance AUC with the ROI removed), ``"relies_on_roi_and_outside"``
        (loses more than that, but the ROI-removed AUC's interval stays above chance),
        ``"relies_on_roi"`` (the upper end of the retained share's interval is under one
        half) or ``"inconclusive"``.

    Examples
    --------
    >>> import torch, wsca_audit as wa
    >>> x = torch.zeros(40, 1, 4, 4); y = torch.arange(40) % 2
    >>> x[y == 1, :, 1:3, 1:3] = 1.0                    # the signal sits in the ROI
    >>> roi = torch.zeros(4, 4, dtype=torch.bool); roi[1:3, 1:3] = True
    >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 1)).eval()
    >>> with torch.no_grad():
    ...     _ = model[1].weight.fill_(1.0), model[1].bias.zero_()
    >>> res = wa.roi_masking(model, x, roi, y, n_bootstrap=50, progress=False)
    >>> res["full"]["value"], res["roi_removed"]["value"], res["verdict"]
    (1.0, 0.5, 'relies_on_roi')
    """
    if fill not in FILLS:
        raise AuditError(f"fill must be one of {FILLS}; got {fill!r}")
    if not 0 < retained_threshold <= 1:
        raise AuditError("retained_threshold must be in (0, 1]")
    if n_bootstrap < 0:
        raise AuditError("n_bootstrap must be >= 0")
    if (roi is None) == (boxes is None):
        raise AuditError("pass exactly one of roi= (boolean masks) or boxes= (y0, x0, y1, x1)")
    if targets is None:
        raise AuditError("roi_masking needs targets (class labels) to compute the AUC")
    y = column_or_1d(targets, "targets", "image")
    n_known = n_images(inputs)
    if n_known is not None:
        check_consistent_length(n_known, "images", targets=y)
    warn_if_training(model, "ROI masking")
    dev = model_device(model, device)
    gen = torch.Generator().manual_seed(seed)

    masks: RoiMasks | None = RoiMasks(roi) if roi is not None else None
    scores: list[Tensor] = []  # per setting, (n, K) logits
    examples: dict[str, np.ndarray] = {}
    regions: dict[str, np.ndarray] = {}
    if not isinstance(example, (int, np.integer)) or example < 0:
        raise AuditError(f"example must be a non-negative image index; got {example!r}")
    area_sum, start = 0.0, 0
    bar = tqdm(total=n_known, desc="wsca: ROI masking", unit="img", disable=not progress)
    with torch.inference_mode():
        for x in iter_image_batches(inputs, batch_size):
            x = x.to(dev)
            if masks is None:  # boxes: build masks once the image size is known
                masks = RoiMasks(boxes_to_roi(boxes, *x.shape[-2:]))
            m = masks.take(start, x)
            variants = (
                x,
                fill_region(x, m, fill, blur_sigma=blur_sigma, generator=gen),
                fill_region(x, ~m, fill, blur_sigma=blur_sigma, generator=gen),
            )
            out = torch.stack([logits_of(model(v)).float() for v in variants], 1)
            scores.append(out.cpu())
            area_sum += float(m.float().mean((1, 2)).sum())
            if not examples and start <= example < start + x.shape[0]:
                j = example - start
                for name, v in zip(SETTINGS, variants):
                    examples[name] = display_image(v[j].float().cpu())
                regions["ROI"] = m[j].cpu().numpy()
                regions.update(_regions(outline, *x.shape[-2:]))
            start += x.shape[0]
            bar.update(x.shape[0])
    bar.close()
    if start == 0:
        raise AuditError("inputs held no images")
    check_consistent_length(start, "images", targets=y)
    masks.check_count(start)
    if example >= start:
        raise AuditError(f"example={example} but the inputs hold {start} images")
    logits = torch.cat(scores)  # (N, 3, K)

    codes, levels = label_codes(y)
    if len(levels) < 2:
        raise AuditError("targets hold a single class: AUC is undefined")
    codes_t = torch.as_tensor(codes)
    weights = torch.cat([torch.ones(1, start), bootstrap_counts(start, n_bootstrap, gen)])
    vals = {
        name: outputs_auc(logits[:, i], codes_t, len(levels), weights).double()
        for i, name in enumerate(SETTINGS)
    }
    out: dict[str, Any] = {
        "metric": "auc",
        "fill": fill,
        "n_samples": start,
        "roi_area": area_sum / start,
        "retained_threshold": retained_threshold,
        "n_bootstrap": n_bootstrap,
    }
    full = vals["full"]

    for name in SETTINGS:
        v = vals[name]
        entry = {"metric": "auc", **ci_block(v, n_bootstrap, ci_level)}
        if name != "full":
            entry["drop"] = ci_block(full - v, n_bootstrap, ci_level)
            retained = (v - 0.5) / (full - 0.5)
            retained = torch.where(full > 0.5, retained, torch.full_like(retained, math.nan))
            entry["retained"] = ci_block(retained, n_bootstrap, ci_level)
        out[name] = entry
    out["verdict"] = _verdict(out["roi_removed"], retained_threshold)
    return MaskingResult(out, examples, regions)


def _regions(outline: dict[str, Any] | None, height: int, width: int) -> dict[str, np.ndarray]:
    """``outline=`` as named (H, W) bool masks (boxes are converted)."""
    if outline is None:
        return {}
    if not isinstance(outline, dict):
        raise AuditError("outline must be a dict of name -> (H, W) mask or (y0, x0, y1, x1) box")
    out = {}
    for name, region in outline.items():
        a = np.asarray(region.detach().cpu() if isinstance(region, Tensor) else region)
        if a.shape == (4,) and a.dtype != bool:
            a = boxes_to_roi(a, height, width)
        if a.shape != (height, width):
            raise AuditError(
                f"outline {name!r} must be an (H, W) = ({height}, {width}) mask or a box "
                f"(y0, x0, y1, x1); got shape {a.shape}"
            )
        out[str(name)] = a.astype(bool)
    return out


def _verdict(removed: dict, threshold: float) -> str:
    """Keeps most of its AUC without the ROI -> relies outside it; loses most of it but
    stays above chance -> relies on the ROI *and* outside it; falls to chance -> on it.

    Without bootstrap intervals the point estimates decide.
    """
    kept = removed["retained"]
    value, upper = kept["value"], kept["ci_high"]
    if math.isnan(value):
        return "inconclusive"
    above_chance = removed["ci_low"] > 0.5 if not math.isnan(removed["ci_low"]) else None
    if value >= threshold and above_chance is not False:
        return "relies_outside_roi"
    if above_chance:  # a real part of the signal survives without the ROI
        return "relies_on_roi_and_outside"
    if (upper if not math.isnan(upper) else value) < 0.5:
        return "relies_on_roi"
    return "inconclusive"
