"""Image artefacts for induced-shortcut benchmarks: five kinds, each with a dose.

Every function takes a batch of grey-scale images, ``(..., H, W)`` in [0, 1] (numpy or
torch, e.g. ``(N, 1, H, W)`` or ``(N, H, W)``), and one ``amount`` per image (a number in
[0, 1], or one number for all): 0 leaves the image as it is, 1 applies the artefact in
full, values between blend the two linearly, ``x + amount * (full(x) - x)``. Binary
metadata use 0/1 flags; the same functions give a continuous variable (the dose). The
input is never modified and the output has its type, dtype and shape.

Sizes scale with the image so that one call suits 8x8 digits and 128x128 MRI alike:

- :func:`corner_patch`: a bright square near the top-left corner (a burnt-in marker);
- :func:`edge_stripe`: a bright stripe along the right edge (a detector or film edge);
- :func:`intensity_gain`: the whole image dimmed (a global gain / exposure change);
- :func:`texture_pattern`: a fixed, seeded blocky +-pattern added (a scanner texture);
- :func:`blur`: a binomial blur (a lower-resolution acquisition).

:data:`ARTEFACTS` maps their names to the functions; :func:`apply_artefact` calls one by
name. Pure numpy (torch tensors are converted and converted back); nothing is drawn at
random except the fixed pattern of :func:`texture_pattern`, from its ``seed``.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

__all__ = [
    "ARTEFACTS",
    "apply_artefact",
    "blur",
    "corner_patch",
    "edge_stripe",
    "intensity_gain",
    "texture_pattern",
]


def _blend(images, amount, full: Callable[[np.ndarray], np.ndarray]):
    """``x + amount * (full(x) - x)`` per image, in the input's type and dtype."""
    is_torch = isinstance(images, torch.Tensor)
    x = images.detach().cpu().numpy() if is_torch else np.asarray(images)
    if x.ndim < 2:
        raise ValueError(f"images must have shape (..., H, W), got {x.shape}")
    a = np.asarray(amount.cpu() if isinstance(amount, torch.Tensor) else amount, np.float64)
    if a.ndim > 1 or (a.ndim == 1 and x.ndim > 2 and len(a) != x.shape[0]):
        raise ValueError(f"amount must be one number or one per image, got shape {a.shape}")
    if a.ndim == 1 and x.ndim == 2:
        raise ValueError("one image (H, W) takes one amount")
    if np.any((a < 0) | (a > 1)) or not np.all(np.isfinite(a)):
        raise ValueError("amount must lie in [0, 1]")
    a = a.reshape(a.shape + (1,) * (x.ndim - a.ndim)).astype(x.dtype)
    xf = x.astype(np.float64, copy=False)
    out = (x + a * (full(xf).astype(x.dtype) - x)).astype(x.dtype, copy=False)
    if is_torch:
        return torch.as_tensor(out, device=images.device)
    return out


def _patch_box(h: int, w: int) -> tuple[slice, slice]:
    side = max(2, min(h, w) // 8)
    off = min(h, w) // 32
    return slice(off, off + side), slice(off, off + side)


def corner_patch(images, amount, *, value: float = 1.0):
    """A bright square near the top-left corner (side ``max(2, H // 8)``, inset ``H // 32``).

    Parameters
    ----------
    images : array or tensor of shape (..., H, W), values in [0, 1]
    amount : float or array of shape (N,), in [0, 1]
        0: clean, 1: the patch burnt in at ``value``; between: a fainter patch.
    value : float, default=1.0
        Intensity of the full patch.

    Examples
    --------
    >>> x = np.zeros((2, 1, 8, 8), np.float32)
    >>> out = corner_patch(x, [0, 1])
    >>> out[0].sum(), out[1, 0, :3, :3].tolist()
    (np.float32(0.0), [[1.0, 1.0, 0.0], [1.0, 1.0, 0.0], [0.0, 0.0, 0.0]])
    """

    def full(x):
        out = x.copy()
        rows, cols = _patch_box(*x.shape[-2:])
        out[..., rows, cols] = value
        return out

    return _blend(images, amount, full)


def edge_stripe(images, amount, *, value: float = 0.75):
    """A bright vertical stripe along the right edge (width ``max(1, W // 16)``).

    Examples
    --------
    >>> x = np.zeros((1, 4, 8), np.float32)
    >>> edge_stripe(x, 1.0)[0, :, -2:].tolist()
    [[0.0, 0.75], [0.0, 0.75], [0.0, 0.75], [0.0, 0.75]]
    """

    def full(x):
        out = x.copy()
        out[..., :, x.shape[-1] - max(1, x.shape[-1] // 16) :] = value
        return out

    return _blend(images, amount, full)


def intensity_gain(images, amount, *, depth: float = 0.5):
    """Dim the whole image: multiply it by ``1 - depth * amount`` (a global gain change).

    Examples
    --------
    >>> x = np.ones((3, 2, 2), np.float32)
    >>> intensity_gain(x, [0.0, 0.5, 1.0])[:, 0, 0].tolist()
    [1.0, 0.75, 0.5]
    """
    return _blend(images, amount, lambda x: x * (1.0 - depth))


def _pattern(h: int, w: int, seed: int) -> np.ndarray:
    cell = max(1, min(h, w) // 16)
    rng = np.random.default_rng(seed)
    coarse = rng.choice([-1.0, 1.0], size=(-(-h // cell), -(-w // cell)))
    return np.kron(coarse, np.ones((cell, cell)))[:h, :w]


def texture_pattern(images, amount, *, strength: float = 0.2, seed: int = 1234):
    """Add a fixed +-``strength`` pattern (blocks of ``max(1, H // 16)`` pixels), clipped to [0, 1].

    The pattern depends only on ``seed`` and the image size: every image gets the same one.

    Examples
    --------
    >>> x = np.full((2, 8, 8), 0.5, np.float32)
    >>> out = texture_pattern(x, 1.0)
    >>> sorted({round(float(v), 2) for v in out.ravel()}), bool((out[0] == out[1]).all())
    ([0.3, 0.7], True)
    """
    return _blend(
        images,
        amount,
        lambda x: np.clip(x + strength * _pattern(*x.shape[-2:], seed), 0.0, 1.0),
    )


def blur(images, amount, *, passes: int | None = None):
    """Binomial blur: the 3x3 kernel ``[1, 2, 1]^T [1, 2, 1] / 16``, applied ``passes`` times
    (default ``max(1, H // 32)``), edges replicated.

    Examples
    --------
    >>> x = np.zeros((1, 5, 5), np.float32); x[0, 2, 2] = 16.0
    >>> blur(x, 1.0)[0, 1:4, 1:4].tolist()
    [[1.0, 2.0, 1.0], [2.0, 4.0, 2.0], [1.0, 2.0, 1.0]]
    """

    def full(x):
        n = passes if passes is not None else max(1, min(x.shape[-2:]) // 32)
        out = x
        for _ in range(n):
            p = np.pad(out, [(0, 0)] * (out.ndim - 2) + [(1, 1), (1, 1)], mode="edge")
            rows = p[..., :-2, :] + 2 * p[..., 1:-1, :] + p[..., 2:, :]
            out = (rows[..., :-2] + 2 * rows[..., 1:-1] + rows[..., 2:]) / 16.0
        return out

    return _blend(images, amount, full)


ARTEFACTS: dict[str, Callable] = {
    "patch": corner_patch,
    "stripe": edge_stripe,
    "gain": intensity_gain,
    "texture": texture_pattern,
    "blur": blur,
}


def apply_artefact(kind: str, images, amount):
    """Apply the artefact named ``kind`` (a key of :data:`ARTEFACTS`) at ``amount``.

    Examples
    --------
    >>> apply_artefact("gain", np.ones((1, 2, 2)), 1.0).max()
    np.float64(0.5)
    """
    try:
        fn = ARTEFACTS[kind]
    except KeyError:
        raise ValueError(f"unknown artefact {kind!r}; known: {sorted(ARTEFACTS)}") from None
    return fn(images, amount)
