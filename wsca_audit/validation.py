"""Input checks shared by every stage (in the spirit of scikit-learn's ``utils/validation``).

Each public entry point turns what the user gave (numpy, torch, lists, pandas) into
plain arrays here, with one wording for each kind of mistake, so that later stages can
trust their input.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from .errors import AuditError

__all__ = ["as_array", "check_consistent_length", "column_or_1d", "target_array"]


def as_array(x: Any, name: str) -> np.ndarray:
    """A numpy array from a tensor, a pandas object, a memory map or any array-like.

    Half-precision tensors become float32 (numpy has no bfloat16); a ``numpy.memmap`` is
    returned as it is (spilled embeddings are not copied).

    Examples
    --------
    >>> import torch
    >>> as_array(torch.tensor([1.0, 2.0], dtype=torch.bfloat16), "x").dtype
    dtype('float32')
    """
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu()
        if x.dtype in (torch.float16, torch.bfloat16):
            x = x.float()
        return x.numpy()
    if isinstance(x, np.memmap):
        return x
    if hasattr(x, "to_numpy"):  # pandas Series / Index / DataFrame column
        return x.to_numpy()
    try:
        arr = np.asarray(x)
    except Exception as exc:
        raise AuditError(f"{name} could not be read as an array: {exc}") from exc
    if arr.dtype.kind == "f" and isinstance(x, (list, tuple)):
        exact = np.asarray(x, dtype=object)
        if all(isinstance(v, int) and not isinstance(v, bool) for v in exact.reshape(-1)):
            return exact  # integers past int64 (sample ids): numpy would round them to float
    return arr


def column_or_1d(x: Any, name: str, what: str = "sample", *, flatten: bool = False) -> np.ndarray:
    """One value per ``what`` (a 1-d array); ``flatten=True`` accepts (n, 1) columns too.

    Examples
    --------
    >>> column_or_1d([[1], [2]], "targets", flatten=True)
    array([1, 2])
    >>> column_or_1d([[1, 2]], "targets", "image")
    Traceback (most recent call last):
    ...
    wsca_audit.errors.AuditError: targets must be one value per image (1-d); got shape (1, 2)
    """
    arr = as_array(x, name)
    if flatten:
        arr = arr.reshape(-1)
    if arr.ndim != 1:
        raise AuditError(f"{name} must be one value per {what} (1-d); got shape {arr.shape}")
    return arr


def target_array(x: Any, name: str = "targets") -> np.ndarray:
    """Targets as one value per sample (n,), or one 0/1 column per label (n, L) for a
    multi-label head; an (n, 1) column is one value per sample.

    Examples
    --------
    >>> target_array([[1], [0]]).shape, target_array([[1, 0, 1], [0, 0, 1]]).shape
    ((2,), (2, 3))
    """
    arr = as_array(x, name)
    if arr.ndim == 0:
        arr = arr.reshape(1)
    if arr.ndim == 2 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if arr.ndim > 2:
        raise AuditError(
            f"{name} must be one value per sample, or one column per label; got shape {arr.shape}"
        )
    return arr


def check_consistent_length(n: int, what: str, *, batch: bool = False, **arrays: Any) -> None:
    """Raise when an array (None skipped) does not hold ``n`` values, one per ``what``.

    Keyword names are the names the user knows the arrays by; ``metadata[...]`` style
    names can be passed through a dict: ``check_consistent_length(n, "images", **cols)``.
    ``batch=True`` words it for one batch of a collection loop.

    Examples
    --------
    >>> check_consistent_length(3, "embeddings", targets=[0, 1, 0], sample_ids=None)
    >>> check_consistent_length(3, "embeddings", targets=[0, 1])
    Traceback (most recent call last):
    ...
    wsca_audit.errors.AuditError: targets has 2 values but there are 3 embeddings
    """
    where = "the batch has" if batch else "there are"
    for name, arr in arrays.items():
        if arr is not None and len(arr) != n:
            raise AuditError(f"{name} has {len(arr)} values but {where} {n} {what}")
