"""Weighted, batched evaluation metrics in torch (AUC, R², accuracy).

Each metric takes one score vector and a batch of sample-weight vectors, so that a
bootstrap confidence interval is one call: integer bootstrap counts as weights give
exactly the metric of each resample. scikit-learn's ``roc_auc_score`` and ``r2_score``
(with ``sample_weight``) are the references in the tests.
"""

from __future__ import annotations

import torch
from torch import Tensor


def weighted_auc(scores: Tensor, positive: Tensor, weights: Tensor) -> Tensor:
    """Area under the ROC curve for each row of ``weights``.

    Parameters
    ----------
    scores : Tensor of shape (n_samples,)
    positive : bool Tensor of shape (n_samples,)
    weights : Tensor of shape (n_weightings, n_samples)
        Non-negative sample weights (bootstrap counts, masks).

    Returns
    -------
    Tensor of shape (n_weightings,)
        AUC per weighting; ties count one half; NaN where a class has zero weight.

    Examples
    --------
    >>> import torch
    >>> s = torch.tensor([0.1, 0.4, 0.35, 0.8])
    >>> weighted_auc(s, torch.tensor([False, False, True, True]), torch.ones(1, 4))
    tensor([0.7500])
    """
    order = torch.argsort(scores)
    s = scores[order]
    pos = positive[order].to(weights.dtype)
    w = weights[:, order]
    # tie groups: all samples with one score share their negative-weight mass
    _, group = torch.unique_consecutive(s, return_inverse=True)
    n_groups = int(group.max()) + 1 if group.numel() else 0
    wn = w * (1 - pos)
    wp = w * pos
    neg_g = torch.zeros(w.shape[0], n_groups, dtype=w.dtype, device=w.device)
    pos_g = torch.zeros_like(neg_g)
    neg_g.index_add_(1, group, wn)
    pos_g.index_add_(1, group, wp)
    neg_below = torch.cumsum(neg_g, 1) - neg_g
    num = (pos_g * (neg_below + 0.5 * neg_g)).sum(1)
    den = pos_g.sum(1) * neg_g.sum(1)
    return torch.where(den > 0, num / den.clamp_min(1e-30), torch.full_like(num, float("nan")))


def weighted_r2(pred: Tensor, target: Tensor, weights: Tensor) -> Tensor:
    """Coefficient of determination for each row of ``weights`` (``r2_score`` semantics).

    Examples
    --------
    >>> import torch
    >>> weighted_r2(torch.tensor([1.0, 2.0, 3.0]), torch.tensor([1.0, 2.0, 4.0]), torch.ones(1, 3))
    tensor([0.7857])
    """
    wsum = weights.sum(1).clamp_min(1e-30)
    mean = (weights * target).sum(1) / wsum
    ss_res = (weights * (target - pred) ** 2).sum(1)
    ss_tot = (weights * (target[None, :] - mean[:, None]) ** 2).sum(1)
    return torch.where(
        ss_tot > 0, 1 - ss_res / ss_tot.clamp_min(1e-30), torch.full_like(ss_res, float("nan"))
    )


def weighted_accuracy(pred: Tensor, target: Tensor, weights: Tensor) -> Tensor:
    """Share of correct predictions for each row of ``weights``."""
    hit = (pred == target).to(weights.dtype)
    return (weights * hit).sum(1) / weights.sum(1).clamp_min(1e-30)


def macro_ovr_auc(scores: Tensor, labels: Tensor, weights: Tensor) -> Tensor:
    """Macro one-vs-rest AUC: ``scores`` has one column per level, ``labels`` are indices."""
    per_level = [weighted_auc(scores[:, k], labels == k, weights) for k in range(scores.shape[1])]
    return torch.nanmean(torch.stack(per_level), dim=0)


def weighted_corr(a: Tensor, b: Tensor, weights: Tensor) -> Tensor:
    """Weighted Pearson correlation of every column of ``a`` with every column of ``b``.

    Parameters
    ----------
    a : Tensor of shape (n_problems, n_samples, p) or (n_samples, p)
    b : Tensor of shape (n_problems, n_samples, q)
    weights : Tensor of shape (n_problems, n_samples)

    Returns
    -------
    Tensor of shape (n_problems, p, q)
    """
    a = a.to(b.dtype)
    w = weights.to(b.dtype)
    w = w / w.sum(1, keepdim=True).clamp_min(1e-30)
    if a.dim() == 2:
        a = a.unsqueeze(0)
    a = a - torch.einsum("pn,pnk->pk", w, a.expand(w.shape[0], -1, -1))[:, None, :]
    b = b - torch.einsum("pn,pnk->pk", w, b)[:, None, :]
    cov = torch.einsum("pn,pnk,pnl->pkl", w, a, b)
    va = torch.einsum("pn,pnk->pk", w, a * a)
    vb = torch.einsum("pn,pnk->pk", w, b * b)
    den = (va[:, :, None] * vb[:, None, :]).sqrt()
    return torch.where(den > 0, cov / den.clamp_min(1e-30), torch.zeros_like(cov))
