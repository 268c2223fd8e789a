"""ROI masking sensitivity (after Sourget et al., "Mask of truth", 2025).

The model is evaluated three times on the same images: as they are (``full``), with the
region of interest filled in (``roi_removed``), and with everything *but* the ROI filled
in (``roi_only``): the three image :data:`VARIANTS`. A model that keeps most of its AUC
without the ROI reads something else: a shortcut. The three variants share their
bootstrap resamples, so the drops and their intervals are paired.

Fills (``fill=``), applied per image and per channel:

- ``"zero"``: 0 in the model's input space (the data mean when inputs are standardised);
- ``"mean"``: the image's own mean;
- ``"blur"``: a Gaussian blur of the image (``blur_sigma``, default ``max(H, W) / 16``),
  which keeps low frequencies and removes detail;
- ``"noise"``: Gaussian noise with the image's mean and standard deviation (seeded).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from ..errors import AuditError
from ..formatting import ci_text
from ..naming import interval_metrics, sanitize_name
from ..primary import auc_score_text, label_codes, logits_of, outputs_auc, resolve_task
from ..resampling import bootstrap_counts
from ..stats import ci_block
from ..validation import check_consistent_length, target_array
from ..verdict import INCONCLUSIVE
from .base import (
    Evidence,
    RoiMasks,
    boxes_to_roi,
    display_image,
    iter_image_batches,
    model_as_deployed,
    model_device,
    model_provenance,
    n_images,
    register_evidence,
)
from .plotting import ci_label, draw_outlines, outline_legend

FILLS = ("zero", "mean", "blur", "noise")
VARIANTS = ("full", "roi_removed", "roi_only")  # the images the model is evaluated on

# masking's own verdicts (where the model reads), not the audit's (whether it uses a
# variable); INCONCLUSIVE is the one word they share
RELIES_OUTSIDE_ROI = "relies_outside_roi"
RELIES_ON_ROI_AND_OUTSIDE = "relies_on_roi_and_outside"
RELIES_ON_ROI = "relies_on_roi"
# the fill left nothing to measure: too few distinct images, or the ROI's content kept
UNINFORMATIVE = "uninformative"
MASKING_VERDICTS = (
    RELIES_OUTSIDE_ROI, RELIES_ON_ROI_AND_OUTSIDE, RELIES_ON_ROI, INCONCLUSIVE, UNINFORMATIVE,
)  # fmt: skip
# with fewer distinct filled images than this (and than the full images), an AUC ranks a
# handful of inputs: it measures how the few patterns left agree with the label
MIN_DISTINCT_IMAGES = 20
# a fill that keeps more than this share of what varies inside the ROI between images
# (a blur of a large ROI) has not removed it
MAX_KEPT_SHARE = 0.5

OUTLINE_COLOURS = ("#f1c40f", "#e84393", "#00cec9", "#e17055")


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
    noise: Tensor | None = None,
) -> Tensor:
    """Replace the pixels of ``x`` (N, C, H, W) where ``region`` (N, H, W) is True.

    ``fill="noise"`` draws standard normal noise from ``generator``, or uses ``noise``
    (the shape of ``x``) when given: :func:`roi_masking` draws it per image, so that its
    result does not depend on how the images are batched.

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
        if noise is None:
            noise = torch.randn(x.shape, generator=generator, dtype=x.dtype)
        noise = noise.to(device=x.device, dtype=x.dtype)
        value = x.mean((2, 3), keepdim=True) + x.std((2, 3), keepdim=True) * noise
    return torch.where(m, value, x)


@register_evidence
class MaskingResult(Evidence):
    """ROI masking sensitivity: the primary AUC on full, ROI-removed and ROI-only images.

    A mapping with keys ``full``, ``roi_removed``, ``roi_only`` (each ``{"metric",
    "value", "ci_low", "ci_high"}``, the last two with ``drop`` and ``retained``),
    ``verdict`` (one of :data:`MASKING_VERDICTS`) with its ``reason`` when
    ``uninformative``, ``fill``, ``score`` (the score whose AUC it is, in words),
    ``n_samples``, ``roi_area``, ``distinct_images`` and ``roi_kept_share``.
    """

    kind = "roi_masking"
    section = "roi_masking"
    schema: ClassVar[dict] = {"$ref": "#/$defs/masking"}
    title = "ROI masking"
    explanation = (
        "the primary AUC with the region of interest removed or kept alone (after Sourget "
        'et al., "Mask of truth"): a model that keeps its AUC without the region reads '
        "something else"
    )

    @property
    def default_key(self) -> str:
        """The entry name ``AuditResult.add_evidence`` uses when none is given."""
        return f"fill_{self._data.get('fill')}"

    @classmethod
    def lines(cls, key: str, data: dict, tasks: dict) -> list[str]:
        parts = [f"{name.replace('_', ' ')} {ci_text(data.get(name))}" for name in VARIANTS]
        score = f" of {data['score']}" if data.get("score") else ""
        line = (
            f"ROI masking '{key}' (AUC{score}, fill={data.get('fill')}): {'; '.join(parts)} "
            f"-> {data.get('verdict')}"
        )
        return [line + (f": {data['reason']}" if data.get("reason") else "")]

    @classmethod
    def mlflow(cls, key: str, data: dict) -> tuple[dict[str, float], dict[str, str]]:
        """``wsca.masking.<key>.<variant>`` (AUC) and ``.<variant>_drop``, with CIs; the
        verdict as tag ``wsca.masking.<key>.verdict``."""
        k = sanitize_name(key)
        metrics: dict[str, float] = {}
        for variant in VARIANTS:
            block = data.get(variant) or {}
            metrics.update(interval_metrics(f"wsca.masking.{k}.{variant}", block))
            metrics.update(interval_metrics(f"wsca.masking.{k}.{variant}_drop", block.get("drop")))
        return metrics, {f"wsca.masking.{k}.verdict": str(data.get("verdict"))}

    def __init__(
        self,
        data: dict,
        examples: dict[str, np.ndarray] | None = None,
        outlines: dict[str, np.ndarray] | None = None,
        *,
        ci_level: float = 0.95,
    ) -> None:
        super().__init__(data, ci_level=ci_level)
        self.examples_ = examples or {}
        # (H, W) regions drawn on the example images: the ROI first, then the caller's
        self.outlines_ = outlines or {}

    def figure(self):
        """The example image in each variant, with the ROI (and any regions passed as
        ``outline=``) outlined (left), and the AUCs with their intervals at ``ci_level``
        (right)."""
        from matplotlib.figure import Figure

        n_ex = len(self.examples_)
        fig = Figure(figsize=(3.0 + 2.4 * n_ex, 3.3), layout="constrained")
        axes = fig.subplots(1, n_ex + 1, width_ratios=[1] * n_ex + [2.2])
        axes = np.atleast_1d(axes)
        self._draw_examples(axes[:n_ex])
        self._draw_aucs(axes[-1])
        return fig

    def _draw_examples(self, axes) -> None:
        fill = self._data.get("fill")
        titles = {
            "full": "full image",
            "roi_removed": f"ROI filled ({fill})",
            "roi_only": f"outside the ROI filled ({fill})",
        }
        for ax, (name, img) in zip(axes, self.examples_.items()):
            ax.imshow(img, cmap="gray" if img.ndim == 2 else None)
            draw_outlines(ax, self.outlines_, OUTLINE_COLOURS, linewidth=1.2)
            ax.set_title(titles.get(name, name.replace("_", " ")), fontsize=9)
            ax.axis("off")
        if len(axes):
            outline_legend(axes[0], list(self.outlines_), OUTLINE_COLOURS, lw=1.5, fontsize=7,
                           framealpha=0.8)  # fmt: skip

    def _draw_aucs(self, ax) -> None:
        blocks = [self._data[v] for v in VARIANTS]
        v = [b["value"] if b["value"] is not None else math.nan for b in blocks]
        err = [
            [max(a - b["ci_low"], 0) if b["ci_low"] is not None and a == a else 0
             for a, b in zip(v, blocks)],
            [max(b["ci_high"] - a, 0) if b["ci_high"] is not None and a == a else 0
             for a, b in zip(v, blocks)],
        ]  # fmt: skip
        ax.bar(range(3), v, yerr=err, capsize=4, color=["#2e86c1", "#c0392b", "#27ae60"])
        ax.axhline(0.5, color="grey", ls=":", lw=1, label="chance")
        ax.set_xticks(range(3), ["full", "ROI removed", "ROI only"])
        ax.set_ylim(0.0, 1.05)
        ax.set_ylabel(f"{self._data['full']['metric'].upper()} ({ci_label(self.ci_level)})")
        ax.set_title(f"fill={self._data['fill']}: {self._data['verdict']}", fontsize=9)
        ax.legend(fontsize=8, loc="lower right")


def roi_masking(
    model: nn.Module,
    inputs: Any,
    roi: Any = None,
    targets: Any = None,
    fill: str = "zero",
    n_bootstrap: int = 200,
    *,
    target: int | None = None,
    task: str | None = None,
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
        The head's class index of each image. Two classes present give the AUC of the
        head's log-odds between them (``logit 8 − logit 3`` on a ten-class head), more
        give the macro one-vs-rest AUC of the softmax over the classes present.
    target : int, optional
        Score class ``target`` against the rest instead (its logit minus the logsumexp
        of the others); for a multi-label head, finding ``target`` by its own logit
        (required). The result's ``score`` says in words which score was used.
    task : {"binary", "multiclass", "multilabel"}, optional
        The head's kind, inferred from the outputs and targets when None (docs/heads.md);
        multi-label targets are (N, K) 0/1 or finding ``target``'s column. A regression
        head is refused (the evidence is an AUC).
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
        Index of the image shown in the figure (in each variant, with the ROI outlined).
    outline : dict of str to bool array (H, W) or box (y0, x0, y1, x1), optional
        Further regions to outline on the example images, by name, e.g.
        ``{"scanner marker": (4, 4, 16, 16)}``: what a reviewer should see where it is.
    ci_level, seed, device, progress
        Interval level, random seed (bootstrap, and the noise, drawn per image so that
        batching does not change it), device (default: the model's) and a progress bar.

    The model runs in eval mode and is left as it was (see
    :func:`~wsca_audit.evidence.base.model_as_deployed`).

    Returns
    -------
    MaskingResult
        ``verdict`` is ``"relies_outside_roi"`` (keeps at least ``retained_threshold``
        of its above-chance AUC with the ROI removed), ``"relies_on_roi_and_outside"``
        (loses more than that, but the ROI-removed AUC's interval stays above chance),
        ``"relies_on_roi"`` (the upper end of the retained share's interval is under one
        half), ``"inconclusive"``, or ``"uninformative"`` when the fill left nothing to
        measure (``reason`` says why): fewer than :data:`MIN_DISTINCT_IMAGES` distinct
        images with the ROI removed, or more than :data:`MAX_KEPT_SHARE` of what varies
        inside the ROI kept by the fill (``distinct_images``, ``roi_kept_share``).

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
    _check_arguments(fill, retained_threshold, n_bootstrap, roi, boxes, targets)
    y = target_array(targets, "targets")
    n_known = n_images(inputs)
    if n_known is not None:
        check_consistent_length(n_known, "images", targets=y)
    masks = RoiMasks(roi) if roi is not None else None
    if not isinstance(example, (int, np.integer)) or example < 0:
        raise AuditError(f"example must be a non-negative image index; got {example!r}")
    run = _Variants(fill, blur_sigma, example, outline, seed, masks, boxes)
    with model_as_deployed(model, "ROI masking"), torch.inference_mode():
        run.evaluate(model, inputs, batch_size, model_device(model, device), progress)
    if run.n == 0:
        raise AuditError("inputs held no images")
    check_consistent_length(run.n, "images", targets=y)
    run.masks.check_count(run.n)
    if example >= run.n:
        raise AuditError(f"example={example} but the inputs hold {run.n} images")
    logits, y, score, target_auc = _scored(torch.cat(run.logits), y, task, target)
    codes, present = label_codes(y, logits.shape[-1])
    out: dict[str, Any] = {
        "metric": "auc",
        "fill": fill,
        "score": score or auc_score_text(logits.shape[-1], present, target),
        "target": target,
        "n_samples": run.n,
        "model": model_provenance(model),
        "roi_area": run.area_sum / run.n,
        "retained_threshold": retained_threshold,
        "n_bootstrap": n_bootstrap,
        **_auc_blocks(logits, codes, present, target_auc, seed, n_bootstrap, ci_level),
        "distinct_images": run.distinct(),
        "roi_kept_share": run.kept_share(),
    }
    reason = _uninformative(out, fill)
    out["verdict"] = UNINFORMATIVE if reason else _verdict(out["roi_removed"], retained_threshold)
    out["reason"] = reason
    return MaskingResult(out, run.examples, run.regions, ci_level=ci_level)


def _uninformative(out: dict, fill: str) -> str | None:
    """Why the ROI-removed images cannot say what the model reads, or None."""
    distinct = out["distinct_images"]
    removed, full = distinct["roi_removed"], distinct["full"]
    if 1 < removed < min(MIN_DISTINCT_IMAGES, full):
        return (
            f"fill={fill!r} leaves {removed} distinct images of {out['n_samples']} with the ROI "
            "removed: their AUC measures how those few patterns agree with the label, not "
            "what the model reads; use fill='noise'"
        )
    kept = out["roi_kept_share"]
    if kept is not None and kept > MAX_KEPT_SHARE:
        return (
            f"fill={fill!r} keeps {kept:.0%} of what varies inside the ROI between images, so "
            "removing the ROI removed little of it; use fill='noise' or 'zero' (a blur keeps "
            "the ROI's coarse content)"
        )
    return None


def _check_arguments(fill, retained_threshold, n_bootstrap, roi, boxes, targets) -> None:
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


@dataclass
class _Variants:
    """One pass over the images: the logits of each variant, the ROI's area, the example
    image in each variant with its outlines, and what tells a degenerate fill: each
    variant's distinct images and the running sums of the ROI's pixels before and after
    the ROI-removing fill."""

    fill: str
    blur_sigma: float | None
    example: int
    outline: dict[str, Any] | None
    seed: int
    masks: RoiMasks | None  # None with boxes: built once the image size is known
    boxes: Any
    n: int = 0
    area_sum: float = 0.0
    logits: list[Tensor] = field(default_factory=list)  # per batch, (n, 3, K)
    examples: dict[str, np.ndarray] = field(default_factory=dict)
    regions: dict[str, np.ndarray] = field(default_factory=dict)
    signatures: list[Tensor] = field(default_factory=list)  # per batch, (n, 3)
    sums: Tensor | None = None  # (6, C, H, W): count, x, f, xf, xx, ff inside the ROI
    _projection: Tensor | None = None

    def evaluate(self, model: nn.Module, inputs: Any, batch_size: int, dev, progress: bool):
        bar = tqdm(total=n_images(inputs), desc="wsca: ROI masking", unit="img",
                   disable=not progress)  # fmt: skip
        for x in iter_image_batches(inputs, batch_size):
            self.add(model, x.to(dev))
            bar.update(x.shape[0])
        bar.close()

    def add(self, model: nn.Module, x: Tensor) -> None:
        if self.masks is None:
            self.masks = RoiMasks(boxes_to_roi(self.boxes, *x.shape[-2:]))
        m = self.masks.take(self.n, x)
        variants = (x, self._filled(x, m, 1), self._filled(x, ~m, 2))
        self.logits.append(torch.stack([logits_of(model(v)).float() for v in variants], 1).cpu())
        self.area_sum += float(m.float().mean((1, 2)).sum())
        self.signatures.append(torch.stack([self._signature(v) for v in variants], 1))
        self._add_sums(x, variants[1], m)
        if not self.examples and self.n <= self.example < self.n + x.shape[0]:
            j = self.example - self.n
            for name, v in zip(VARIANTS, variants):
                self.examples[name] = display_image(v[j].float().cpu())
            self.regions["ROI"] = m[j].cpu().numpy()
            self.regions.update(_regions(self.outline, *x.shape[-2:]))
        self.n += x.shape[0]

    def _filled(self, x: Tensor, region: Tensor, variant: int) -> Tensor:
        noise = _image_noise(self.seed, self.n, x.shape, variant) if self.fill == "noise" else None
        return fill_region(x, region, self.fill, blur_sigma=self.blur_sigma, noise=noise)

    def _signature(self, v: Tensor) -> Tensor:
        """One number per image, equal for equal images (a fixed random projection)."""
        flat = v.flatten(1).double()
        if self._projection is None:
            g = torch.Generator().manual_seed(0)
            self._projection = torch.randn(flat.shape[1], generator=g, dtype=torch.float64)
        return torch.round((flat @ self._projection.to(flat.device)) * 1e6).cpu()

    def _add_sums(self, x: Tensor, filled: Tensor, m: Tensor) -> None:
        w = m[:, None].expand_as(x).double()
        a, f = x.double() * w, filled.double() * w
        batch = torch.stack([w.sum(0), a.sum(0), f.sum(0), (a * f).sum(0), (a * a).sum(0),
                             (f * f).sum(0)]).cpu()  # fmt: skip
        self.sums = batch if self.sums is None else self.sums + batch

    def distinct(self) -> dict[str, int]:
        sig = torch.cat(self.signatures)
        return {name: int(torch.unique(sig[:, i]).numel()) for i, name in enumerate(VARIANTS)}

    def kept_share(self) -> float | None:
        """Pooled squared correlation, over the ROI's pixels and the images, of each
        pixel before and after the fill: the share of what varies inside the ROI between
        images that the fill keeps (0 for a constant fill; None without an ROI pixel seen
        twice)."""
        cnt, sx, sf, sxf, sxx, sff = self.sums
        ok = cnt >= 2
        if not bool(ok.any()):
            return None
        c = cnt[ok]
        cov = (sxf[ok] - sx[ok] * sf[ok] / c).sum()
        vx = (sxx[ok] - sx[ok] ** 2 / c).sum()
        vf = (sff[ok] - sf[ok] ** 2 / c).sum()
        if vx <= 1e-12 * c.sum() or vf <= 1e-12 * c.sum():
            return 0.0
        return float(torch.clamp(cov**2 / (vx * vf), 0.0, 1.0))


def _image_noise(seed: int, start: int, shape: torch.Size, variant: int) -> Tensor:
    """Standard normal noise for images ``start``, ``start + 1``, ..., each drawn from
    its own seed (``seed``, its index, the variant): the same whatever the batching."""
    out = torch.empty(shape)
    for j in range(shape[0]):
        state = np.random.SeedSequence([seed, start + j, variant]).generate_state(1)[0]
        out[j] = torch.randn(shape[1:], generator=torch.Generator().manual_seed(int(state)))
    return out


def _scored(logits: Tensor, y: np.ndarray, task: str | None, target: int | None):
    """The logits and labels the AUC reads, for the head's kind (:func:`resolve_task`):
    a multi-label head's finding ``target`` alone, by its own logit (the score's words,
    and no class target left); others as they are."""
    if not (task == "multilabel" and y.ndim == 1):  # one finding's column: nothing to check
        task, _ = resolve_task(task, y, logits.shape[-1])
    if task == "regression":
        raise AuditError(
            "ROI masking measures a classifier's AUC with and without the ROI; a regression "
            "head is not supported: audit it with wa.Auditor / wa.analyze (docs/heads.md)"
        )
    if task != "multilabel":
        return logits, y, None, target
    k = logits.shape[-1]
    if target is None or not 0 <= int(target) < k:
        raise AuditError(
            f"a multi-label head of {k} findings: pass target=<finding index> (0..{k - 1}); "
            "each finding is scored by its own logit"
        )
    t = int(target)
    col = y[:, t] if y.ndim == 2 else y
    return logits[..., t : t + 1], col, f"logit {t} (finding {t}'s own log-odds)", None


def _auc_blocks(
    logits: Tensor, codes: np.ndarray, present: np.ndarray, target: int | None, seed: int,
    n_bootstrap: int, ci_level: float,
) -> dict[str, dict]:  # fmt: skip
    """Each variant's AUC with its interval, and for the two filled ones the ``drop`` from
    the full images and the ``retained`` share of the above-chance AUC, all on the same
    bootstrap resamples (``logits``: (N, 3, K); ``codes``: the head's class indices)."""
    if len(present) < 2 and target is None:
        raise AuditError("targets hold a single class: AUC is undefined")
    n = logits.shape[0]
    gen = torch.Generator().manual_seed(seed)
    weights = torch.cat([torch.ones(1, n), bootstrap_counts(n, n_bootstrap, gen)])
    codes_t = torch.as_tensor(codes)
    vals = {
        name: outputs_auc(logits[:, i], codes_t, weights, target=target).double()
        for i, name in enumerate(VARIANTS)
    }
    full = vals["full"]
    out = {}
    for name, v in vals.items():
        entry = {"metric": "auc", **ci_block(v, n_bootstrap, ci_level)}
        if name != "full":
            entry["drop"] = ci_block(full - v, n_bootstrap, ci_level)
            retained = (v - 0.5) / (full - 0.5)
            retained = torch.where(full > 0.5, retained, torch.full_like(retained, math.nan))
            entry["retained"] = ci_block(retained, n_bootstrap, ci_level)
        out[name] = entry
    return out


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
        return INCONCLUSIVE
    above_chance = removed["ci_low"] > 0.5 if not math.isnan(removed["ci_low"]) else None
    if value >= threshold and above_chance is not False:
        return RELIES_OUTSIDE_ROI
    if above_chance:  # a real part of the signal survives without the ROI
        return RELIES_ON_ROI_AND_OUTSIDE
    if (upper if not math.isnan(upper) else value) < 0.5:
        return RELIES_ON_ROI
    return INCONCLUSIVE
