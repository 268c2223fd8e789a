"""The geometry of the two head comparisons (paper's weight-space cosine, deconfounded usage).

Two measures compare the model's primary head with an auxiliary head fitted for a
metadata variable (see docs/method.md for the derivations):

``wsc``
    Wong et al. (MIDL 2026), faithfully: both heads' class vectors are projected onto
    the principal subspace of the centred embeddings (99% of the variance, at least 50
    components, at most ``d``) and compared by their signed cosine, giving a
    ``C_primary x C_aux`` matrix; ``value`` is its largest absolute entry.
``usage``
    The correlation of the two heads' logits over the data, after the primary label is
    removed by centring the embeddings within each class. This is the cosine of the two
    weight vectors in the metric of the within-class covariance: it reads activation
    *patterns*, not filter weights (Haufe et al., 2014), and a metadata variable that
    merely co-varies with the label no longer looks used.

Their intervals, permutation nulls and Benjamini-Hochberg correction come from
:mod:`wsca_audit.stats`; the verdict rule is :mod:`wsca_audit.decision`.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from .metrics import weighted_corr
from .shards import Shard, count, total
from .stats import DEFAULT_BUDGET_MB, chunk_rows, chunks, column_mean


# --------------------------------------------------------------------------- geometry
def pca_basis(
    Z: Tensor,
    variance: float = 0.99,
    min_components: int = 50,
    rows: int | None = None,
    shard: Shard | None = None,
) -> tuple[Tensor, float]:
    """Orthonormal basis of the principal subspace of the centred embeddings.

    Returns the basis (k x d) with ``k`` the number of components that explain
    ``variance`` of the total, raised to ``min_components`` and capped at ``d``
    (the paper's rule), and the share of variance that ``k`` components explain. With a
    ``shard``, ``Z`` is this rank's rows and the covariance is summed over the ranks.
    """
    rows = rows or chunk_rows(2 * Z.shape[1], DEFAULT_BUDGET_MB, Z.element_size())
    mean = column_mean(Z, rows, shard)[None]
    cov = torch.zeros(Z.shape[1], Z.shape[1], dtype=Z.dtype, device=Z.device)
    for sl in chunks(Z.shape[0], rows):  # no centred copy of Z
        Zc = Z[sl] - mean
        cov += Zc.T @ Zc
    cov = total(cov, shard).to(torch.float64) / max(count(Z.shape[0], shard) - 1, 1)
    evals, evecs = torch.linalg.eigh(cov)
    evals, evecs = evals.flip(0).clamp_min(0), evecs.flip(1)
    whole = float(evals.sum())
    if whole <= 0:
        return evecs.T.to(Z.dtype), 1.0
    share = np.cumsum(evals.cpu().numpy()) / whole  # d values, host-side: deterministic
    k = int(np.searchsorted(share, variance)) + 1
    k = min(max(k, min_components), Z.shape[1])
    return evecs[:, :k].T.contiguous().to(Z.dtype), float(share[k - 1])


def aux_class_vectors(coef: Tensor, center: bool = True) -> Tensor:
    """Class vectors of batched auxiliary heads, shape (problems, classes, d).

    A binary logistic head ``v`` is the symmetric two-class softmax ``[-v/2, v/2]``, so
    that a binary task keeps its two class vectors, as in the paper.
    """
    if coef.shape[1] == 1:
        return torch.cat([-0.5 * coef, 0.5 * coef], dim=1)
    if center:
        return coef - coef.mean(1, keepdim=True)
    return coef


def cosine_matrix(primary: Tensor, aux: Tensor, basis: Tensor | None = None) -> Tensor:
    """Signed cosines between primary rows (C x d) and each problem's aux rows (P x K x d)."""
    if basis is not None:
        primary = primary @ basis.T
        aux = aux @ basis.T
    a = primary / primary.norm(dim=-1, keepdim=True).clamp_min(1e-30)
    b = aux / aux.norm(dim=-1, keepdim=True).clamp_min(1e-30)
    return torch.einsum("cd,pkd->pck", a, b)


def usage_matrix(
    contrast_scores: Tensor, aux_logits: Tensor, weights: Tensor, shard: Shard | None = None
) -> Tensor:
    """Weighted correlation of the contrasts' scores (N x C) with aux logits (P x N x K)
    (with a ``shard``: this rank's rows, the audit's sums)."""
    # clamped: float rounding can put a perfect correlation a hair above 1
    return weighted_corr(contrast_scores, aux_logits, weights, shard).clamp(-1.0, 1.0)


def max_abs(matrix: Tensor) -> Tensor:
    """Aggregate of a (P x C x K) matrix: the largest absolute entry per problem."""
    return matrix.abs().flatten(1).amax(1)
