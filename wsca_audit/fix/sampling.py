"""The fix's own draws: the seeded stratified split and the group-balanced subsamples.

Both are draws of a numpy generator that the caller owns, so that one seed gives the
same split, the same inner split and the same subsamples on every run (the order of the
draws is part of the result). Intervals and bootstrap resamples are not drawn here: they
come from :mod:`wsca_audit.stats`.
"""

from __future__ import annotations

import numpy as np

__all__ = ["balanced_subsamples", "stratified_split"]


def stratified_split(
    strata: np.ndarray, share: float, rng: np.random.Generator, *, at_least: int = 0
) -> np.ndarray:
    """Held-out mask: ``round(share * n)`` samples (and at least ``at_least``) of each
    stratum, drawn at random; strata are visited in sorted order.

    Parameters
    ----------
    strata : numpy.ndarray of shape (n_samples,)
        Stratum per sample (any sortable values).
    share : float
        Share of each stratum to hold out.
    rng : numpy.random.Generator
        The draws (one permutation per stratum).
    at_least : int, default=0
        Smallest number held out per stratum.

    Returns
    -------
    numpy.ndarray of bool, shape (n_samples,)

    Examples
    --------
    >>> held = stratified_split(np.array([0] * 10 + [1] * 4), 0.3, np.random.default_rng(0))
    >>> int(held[:10].sum()), int(held[10:].sum())
    (3, 1)
    """
    held = np.zeros(len(strata), dtype=bool)
    for s in np.unique(strata):
        idx = rng.permutation(np.flatnonzero(strata == s))
        held[idx[: max(at_least, round(share * len(idx)))]] = True
    return held


def balanced_subsamples(groups: np.ndarray, n_sub: int, rng: np.random.Generator) -> np.ndarray:
    """``n_sub`` 0/1 weight rows, each keeping the smallest group's size from every group
    (drawn without replacement).

    Parameters
    ----------
    groups : numpy.ndarray of int, shape (n_samples,)
        Group index per sample (non-negative).
    n_sub : int
        Number of subsamples.
    rng : numpy.random.Generator

    Returns
    -------
    numpy.ndarray of shape (n_sub, n_samples)

    Examples
    --------
    >>> w = balanced_subsamples(np.array([0, 0, 0, 1, 1]), 3, np.random.default_rng(0))
    >>> w[:, :3].sum(1).tolist(), w[:, 3:].sum(1).tolist()
    ([2.0, 2.0, 2.0], [2.0, 2.0, 2.0])
    """
    sizes = np.bincount(groups)
    m = int(sizes[sizes > 0].min())
    w = np.zeros((n_sub, len(groups)))
    for g in np.flatnonzero(sizes):
        idx = np.flatnonzero(groups == g)
        for r in range(n_sub):
            w[r, rng.choice(idx, m, replace=False)] = 1.0
    return w
