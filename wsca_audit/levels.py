"""Level coding: a metadata column as one group index per sample, and the groups' names.

One coder serves the audit and the subgroup performance, with the binning each needs
for a continuous variable: the paper's equal-width intervals of the range for the
auxiliary heads (``binning="width"``, ``n_bins`` of them) and quartiles for the
performance table (``binning="quantile"``, groups of about equal size). A categorical
column's levels are its distinct values as text, sorted.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .embeddings import missing_mask

BINNINGS = ("width", "quantile")


@dataclass(frozen=True)
class Levels:
    """A coded column.

    Attributes
    ----------
    codes : numpy.ndarray of int64, shape (n_samples,)
        Group index per sample; -1 where the value is missing.
    labels : list of str
        Group names (a continuous variable's bins as ``"[lo, hi]"``).
    n_distinct : int
        Distinct values among the valid samples (before binning).
    """

    codes: np.ndarray
    labels: list[str]
    n_distinct: int

    @property
    def valid(self) -> np.ndarray:
        """Where the value is present."""
        return self.codes >= 0

    @property
    def counts(self) -> np.ndarray:
        """Valid samples per group."""
        return np.bincount(self.codes[self.valid], minlength=len(self.labels))


def bin_edges(x: np.ndarray, n_bins: int, binning: str) -> np.ndarray:
    """Edges of ``n_bins`` equal-width bins of the range, or of quantile bins (duplicate
    edges of a quantile binning merged).

    Examples
    --------
    >>> bin_edges(np.array([0.0, 1.0, 2.0, 10.0]), 2, "width").tolist()
    [0.0, 5.0, 10.0]
    >>> bin_edges(np.array([0.0, 1.0, 2.0, 10.0]), 2, "quantile").tolist()
    [0.0, 1.5, 10.0]
    """
    if binning == "width":
        lo, hi = (float(x.min()), float(x.max())) if x.size else (0.0, 0.0)
        return np.linspace(lo, hi, n_bins + 1)
    if binning == "quantile":
        if not x.size:  # every value missing: no groups
            return np.zeros(0)
        return np.unique(np.quantile(x, np.linspace(0.0, 1.0, n_bins + 1)))
    raise ValueError(f"binning must be one of {BINNINGS}; got {binning!r}")


def code_levels(values: np.ndarray, kind: str, n_bins: int = 5, binning: str = "width") -> Levels:
    """Code a column: categorical values by their sorted text, continuous ones by bins.

    Only bins that hold a valid sample become groups.

    Examples
    --------
    >>> lv = code_levels(np.array(["b", "a", None, "b"], dtype=object), "categorical")
    >>> lv.codes.tolist(), lv.labels
    ([1, 0, -1, 1], ['a', 'b'])
    >>> code_levels(np.array([0.0, 1.0, 9.0, 10.0]), "continuous", n_bins=2).labels
    ['[0, 5]', '[5, 10]']
    """
    miss = missing_mask(values)
    codes = np.full(len(values), -1, dtype=np.int64)
    if kind != "continuous":
        distinct, codes[~miss] = np.unique(values[~miss].astype(str), return_inverse=True)
        return Levels(codes, [str(v) for v in distinct], len(distinct))
    x = values[~miss].astype(np.float64)
    n_distinct = len(np.unique(x))
    edges = bin_edges(x, n_bins, binning)
    if len(edges) < 2:
        return Levels(codes, [], n_distinct)
    last = len(edges) - 2
    bins = np.clip(np.searchsorted(edges, x, side="right") - 1, 0, last)
    used, codes[~miss] = np.unique(bins, return_inverse=True)
    labels = [f"[{edges[b]:.4g}, {edges[b + 1]:.4g}]" for b in used]
    return Levels(codes, labels, n_distinct)
