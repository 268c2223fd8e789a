"""Captum attribution maps of the MRI demo's models: where each classifier looks.

Two maps per model, on one fixed, seeded sample of evaluation images balanced over
label x scanner marker (the marker burned in where the evaluation flags say, as the audit
sees them), both attributing the log-odds of "tumour" (the audit's primary score), both
measuring the share of the positive attribution inside the head (the ROI of the masking
evidence: head pixels, minus the marker box) and inside the scanner-marker box, with
bootstrap CIs, overall, per label and per marker state:

- **Grad-CAM** (``captum.attr.LayerGradCam``) on ``backbone.features.14``, the first
  block of MobileNetV2 at stride 32 (160 channels, a 4x4 map), upsampled to the image with
  ``LayerAttribution.interpolate`` (bilinear). Grad-CAM weights a feature map by what
  the head reads, so it is class-discriminative: it tells the models apart on the
  marker. At 4x4 cells of 32x32 pixels it cannot delineate the head.
- **Input x gradient** (``captum.attr.InputXGradient``, Integrated Gradients with one
  step; IG with 8 or 50 steps and GradientShap give the same shares here at 11-71x the
  cost): pixel-level, so it shows whether the mass lies in the head. It cannot tell the
  models apart on the marker: it multiplies by the input, and the marker is the
  brightest block in the image, credited under any gradient.

Both take one forward and one backward pass per image (4 and 12 ms on 2 cores; the whole
step, figures included, about 3 s per model): ``benchmarks/attribution_time.py`` times
every method tried and scans the Grad-CAM layer. On the last blocks (17, 18) the map of a
healthy image has almost no positive mass (nothing there speaks for a tumour), so its
shares are noise; docs/evidence.md has the table.

The demo's ``mri.py`` files both into each model's report next to the masking and
intervention evidence: ``for ev in attribution_evidence(model, demo):
result.add_evidence(ev)``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

import wsca_audit as wa

from .regions import add_scanner_marker, head_roi, marker_mask

N_IMAGES = 64  # balanced over label x marker: 16 per cell
GRADCAM_LAYER = "backbone.features.14"  # the first block at stride 32 (4x4 at 128 px)
MARKER = "scanner marker"  # MLflow: wsca.attribution.<key>.region.scanner_marker
N_EXAMPLES = 8  # Grad-CAM overlays: two rows of four, a column per (label, marker) cell


def balanced_sample(labels: np.ndarray, flags: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    """``n`` positions, balanced over (label, flag), in the round-robin order of the cells.

    The cells are taken in the order (0, 0), (0, 1), (1, 0), (1, 1), one image each in
    turn, so every four consecutive images cover every cell. Seeded; each cell is drawn
    without replacement (an :class:`~wsca_audit.AuditError` when one holds fewer than
    ``n / 4`` images).

    Examples
    --------
    >>> labels, flags = np.arange(40) % 2, (np.arange(40) // 2) % 2
    >>> pick = balanced_sample(labels, flags, 8)
    >>> [(int(labels[i]), int(flags[i])) for i in pick[:4]]
    [(0, 0), (0, 1), (1, 0), (1, 1)]
    """
    if n < 4 or n % 4:
        raise wa.AuditError(f"n_images must be a positive multiple of 4 (label x marker); got {n}")
    rng = np.random.default_rng(seed)
    cells = []
    for y in (0, 1):
        for f in (0, 1):
            members = np.flatnonzero((labels == y) & (flags == f))
            if len(members) < n // 4:
                raise wa.AuditError(
                    f"only {len(members)} evaluation images with label {y} and marker {f}; "
                    f"n_images={n} needs {n // 4} per cell"
                )
            cells.append(np.sort(rng.choice(members, n // 4, replace=False)))
    return np.stack(cells, axis=1).ravel()  # row k: the k-th image of each cell


def attribution_evidence(
    model: nn.Module,
    demo: Any,
    *,
    n_images: int = N_IMAGES,
    n_resamples: int = 200,
    progress: bool = True,
    seed: int = 0,
) -> tuple[wa.AttributionResult, wa.AttributionResult]:
    """Grad-CAM and input x gradient maps of ``model`` on a balanced sample of the
    demo's evaluation images.

    Parameters
    ----------
    model : MRIClassifier
        One of the demo's classifiers (eval mode).
    demo : mri.DemoData
        The demo's data (``mri.make_data``; duck-typed, so that this module does not
        import ``mri``, which files these maps).
    n_images : int, default=64
        Sample size, a multiple of 4: ``n_images / 4`` images per (label, marker) cell,
        drawn with ``seed`` (the same images for every model).
    n_resamples : int, default=200
        Bootstrap resamples of the CIs.
    progress : bool, default=True
    seed : int, default=0

    Returns
    -------
    (wsca_audit.AttributionResult, wsca_audit.AttributionResult)
        Grad-CAM, then input x gradient. Each holds ``inside`` (the share of the positive
        attribution in the head) and ``regions["scanner marker"]`` (in the marker box),
        both with CIs, overall and per group (``label=0``, ``label=1``, ``scanner=0``,
        ``scanner=1``), mean maps and overlays with the head and the marker box outlined.
        File each with ``result.add_evidence(...)``: keys ``LayerGradCam`` and
        ``InputXGradient``, MLflow ``wsca.attribution.<key>.inside`` and
        ``wsca.attribution.<key>.region.scanner_marker`` (each with ``_ci_low`` /
        ``_ci_high``).

    Examples
    --------
    An untrained network on random images (the demo passes its trained models and data):

    >>> from wsca_audit.demo import mri
    >>> from wsca_audit.demo.br35h import Br35H
    >>> from wsca_audit.demo.mobilenet import MobileNetV2
    >>> n = 16
    >>> rng = np.random.default_rng(0)
    >>> labels = np.arange(n) % 2
    >>> data = Br35H(rng.random((n, 64, 64), dtype=np.float32), labels, 0 * labels,
    ...              np.ones(n, np.float32), np.arange(n), [""] * n)
    >>> demo = mri.DemoData(data, np.arange(0), np.arange(n), {}, (np.arange(n) // 2) % 2)
    >>> model = mri.MRIClassifier(MobileNetV2()).eval()
    >>> cam, pixels = attribution_evidence(model, demo, n_images=8, n_resamples=20,
    ...                                    progress=False)
    >>> cam["method"], cam["layer"], cam["n_samples"], list(cam["regions"])
    ('LayerGradCam', 'backbone.features.14', 8, ['scanner marker'])
    >>> pixels["method"], sorted(pixels["per_group"])
    ('InputXGradient', ['all', 'label=0', 'label=1', 'scanner=0', 'scanner=1'])
    """
    from captum.attr import InputXGradient, LayerGradCam

    d, idx = demo.data, demo.eval
    pick = balanced_sample(d.labels[idx], demo.eval_flags, n_images, seed)
    clean = d.images[idx[pick]]
    flags = demo.eval_flags[pick]
    rows, cols = marker_mask(clean.shape[-1])
    roi = head_roi(clean)
    images = torch.as_tensor(add_scanner_marker(clean, flags))[:, None]
    data = dict(
        roi=roi,
        targets=d.labels[idx[pick]],
        metadata={"scanner": flags},
        regions={MARKER: (rows.start, cols.start, rows.stop, cols.stop)},
    )
    # one overlay grid per view, of the first images: a column per (label, marker) cell
    common = dict(
        batch_size=32, overlay_groups=["all"], n_bootstrap=n_resamples, seed=seed, progress=progress
    )
    cam = wa.InputAttribution(
        model, LayerGradCam, layer=GRADCAM_LAYER, n_examples=N_EXAMPLES, **common
    ).attribute(images, **data)
    pixels = wa.InputAttribution(model, InputXGradient, n_examples=4, **common).attribute(
        images, **data
    )
    return cam, pixels
