"""Where things are in the demo's MRI: the burned-in scanner marker and the head (ROI).

Shared by the audit's input-side evidence (``mri.py``) and the attribution maps
(``maps.py``), so that both outline and mask the same pixels.
"""

from __future__ import annotations

import numpy as np
import torch


def marker_mask(size: int) -> tuple[slice, slice]:
    """The (rows, cols) of the 12x12 marker block at 128x128, scaled to ``size``.

    Examples
    --------
    >>> marker_mask(128)
    (slice(6, 18, None), slice(6, 18, None))
    """
    s = max(4, size * 12 // 128)
    return slice(s // 2, s // 2 + s), slice(s // 2, s // 2 + s)


def add_scanner_marker(images: np.ndarray, flags: np.ndarray) -> np.ndarray:
    """Burn the bright marker block into the flagged images (N, H, W); returns a copy."""
    out = np.array(images, copy=True)
    rows, cols = marker_mask(out.shape[-1])
    out[np.asarray(flags).astype(bool), rows, cols] = 1.0
    return out


def set_marker(x: torch.Tensor, on: int) -> torch.Tensor:
    """The intervention on (N, 1, H, W) images: the marker burned in (1) or not (0)."""
    flags = np.full(len(x), on)
    return torch.as_tensor(add_scanner_marker(x[:, 0].cpu().numpy(), flags))[:, None]


def head_roi(clean: np.ndarray) -> np.ndarray:
    """The head (pixels brighter than 0.1, head_fraction's mask) minus the marker box:
    where the clinical signal is."""
    roi = clean > 0.1
    rows, cols = marker_mask(clean.shape[-1])
    roi[..., rows, cols] = False
    return roi
