"""Synthetic multi-site embeddings (issue 18): a site variable with many levels.

Used by ``tests/test_many_levels.py`` and ``benchmarks/many_levels_validation.py``; the
library never imports it.
"""

from __future__ import annotations

import numpy as np


def synthetic_sites(
    n: int = 5000, d: int = 128, levels: int = 30, use: float = 0.75, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Embeddings with ``levels`` sites written into them and a two-logit head.

    Each site adds its own random mean (sd 0.5 per dimension); the label is tied to
    site parity (65% positive at even sites, 35% at odd ones). The head reads the label's
    direction, made orthogonal to every site's mean (blind to site), plus ``use`` times
    the direction that adds 1 to the logit of the even sites (``use=0``: a head that does
    not read the site at all).

    Returns ``(z, y, site, W)`` with ``W`` the (2, d) head, ``logits = z @ W.T``.

    Examples
    --------
    >>> z, y, site, W = synthetic_sites(n=200, d=40, levels=6, seed=1)
    >>> z.shape, W.shape, sorted(set(site.tolist()))
    ((200, 40), (2, 40), [0, 1, 2, 3, 4, 5])
    """
    rng = np.random.default_rng(seed)
    site = rng.integers(0, levels, n)
    centers = rng.normal(size=(levels, d)) * 0.5
    y = (rng.random(n) < np.where(site % 2 == 0, 0.65, 0.35)).astype(int)
    u = rng.normal(size=d)
    z = rng.normal(size=(n, d)) + centers[site] + np.outer(y, u) * 0.4
    q, _ = np.linalg.qr(centers.T)  # the span of the site means
    w = u - q @ (q.T @ u)
    even = np.linalg.lstsq(centers, (np.arange(levels) % 2 == 0) - 0.5, rcond=None)[0]
    w = w / np.linalg.norm(w) + use * even
    return z, y, site, np.stack([-w, w]) / 2
