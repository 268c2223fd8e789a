"""Weighted, batched evaluation metrics in torch (AUC, R², accuracy).

Each metric takes one score vector and a batch of sample-weight vectors, so that a
bootstrap confidence interval is one call: integer bootstrap counts as weights give
exactly the metric of each resample. scikit-learn's ``roc_auc_score`` and ``r2_score``
(with ``sample_weight``) are the references in the tests.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .shards import Shard, total


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
    if scores.numel() == 0:
        return torch.full((weights.shape[0],), float("nan"), dtype=weights.dtype,
                          device=weights.device)  # fmt: skip
    order = torch.argsort(scores)
    pos = positive[order].to(torch.float64)
    # tie groups: all samples with one score share their negative-weight mass
    _, counts = torch.unique_consecutive(scores[order], return_counts=True)
    ends = torch.cumsum(counts, 0) - 1  # last index of each group (integer: deterministic)
    before = ends - counts  # last index of the group below; -1 for the lowest
    # rows in chunks: the float64 working copies stay near 2**23 numbers each
    step = max(1, 2**23 // scores.numel())
    out = [_auc_rows(weights[r : r + step, order], pos, ends, before)
           for r in range(0, weights.shape[0], step)]  # fmt: skip
    return torch.cat(out).to(weights.dtype) if out else weights.new_zeros(0)


def _auc_rows(w: Tensor, pos: Tensor, ends: Tensor, before: Tensor) -> Tensor:
    """AUC of score-sorted weight rows. Sums come from prefix sums, not ``index_add_``:
    on CUDA ``index_add_`` uses atomics (nondeterministic), and in float64 the
    differences of prefix sums are exact to about 1e-12."""
    w = w.to(torch.float64)
    neg_cum = prefix_sum(w * (1 - pos))
    pos_cum = prefix_sum(w * pos)
    del w

    def upto(cum: Tensor, idx: Tensor) -> Tensor:
        zero = torch.zeros((), dtype=cum.dtype, device=cum.device)
        return torch.where(idx >= 0, cum[:, idx.clamp_min(0)], zero)

    neg_below = upto(neg_cum, before)
    neg_g = neg_cum[:, ends] - neg_below
    pos_g = pos_cum[:, ends] - upto(pos_cum, before)
    num = (pos_g * (neg_below + 0.5 * neg_g)).sum(1)
    den = pos_cum[:, -1] * neg_cum[:, -1]
    return torch.where(den > 0, num / den.clamp_min(1e-300), torch.full_like(num, float("nan")))


def prefix_sum(x: Tensor, method: str = "auto", block: int = 256) -> Tensor:
    """Inclusive prefix sum along the last dimension in float64, deterministic on every device.

    ``torch.cumsum`` of a floating tensor is nondeterministic on CUDA (and raises under
    ``torch.use_deterministic_algorithms(True)``). Off the CPU this takes the sums as
    matrix products with a triangular matrix of ones, block by block, which cuBLAS runs
    in the same order every time.

    Parameters
    ----------
    x : Tensor of shape (..., n)
    method : {"auto", "cumsum", "matmul"}
        ``"auto"``: ``torch.cumsum`` on the CPU (sequential, deterministic), ``"matmul"``
        elsewhere.
    block : int
        Block length of the matrix products.

    Examples
    --------
    >>> prefix_sum(torch.tensor([1.0, 2.0, 3.0]), method="matmul")
    tensor([1., 3., 6.], dtype=torch.float64)
    """
    if method not in ("auto", "cumsum", "matmul"):
        raise ValueError(f"method must be 'auto', 'cumsum' or 'matmul', not {method!r}")
    x = x.to(torch.float64)
    if method == "cumsum" or (method == "auto" and x.device.type == "cpu"):
        return torch.cumsum(x, -1)
    n = x.shape[-1]
    if n == 0:
        return x.clone()
    tri = torch.ones(min(block, n), min(block, n), dtype=x.dtype, device=x.device).triu()
    if n <= block:  # tri[i, j] = 1 where i <= j: column j sums entries 0..j
        return x @ tri
    n_blocks = -(-n // block)
    xb = torch.nn.functional.pad(x, (0, n_blocks * block - n))
    within = xb.reshape(*x.shape[:-1], n_blocks, block) @ tri
    totals = within[..., -1]
    offsets = prefix_sum(totals, method, block) - totals  # sums of the blocks before
    return (within + offsets[..., None]).reshape(*x.shape[:-1], n_blocks * block)[..., :n]


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


def weighted_corr(a: Tensor, b: Tensor, weights: Tensor, shard: Shard | None = None) -> Tensor:
    """Weighted Pearson correlation of every column of ``a`` with every column of ``b``.

    Parameters
    ----------
    a : Tensor of shape (n_problems, n_samples, p) or (n_samples, p)
    b : Tensor of shape (n_problems, n_samples, q)
    weights : Tensor of shape (n_problems, n_samples)

    shard : Shard, optional
        The samples are this rank's rows; the sums are the audit's.

    Returns
    -------
    Tensor of shape (n_problems, p, q)
    """
    a = a.to(b.dtype)
    w = weights.to(b.dtype)
    w = w / total(w.sum(1, keepdim=True), shard).clamp_min(1e-30)
    if a.dim() == 2:
        a = a.unsqueeze(0)
    a = a - total(torch.einsum("pn,pnk->pk", w, a.expand(w.shape[0], -1, -1)), shard)[:, None, :]
    b = b - total(torch.einsum("pn,pnk->pk", w, b), shard)[:, None, :]
    cov = total(torch.einsum("pn,pnk,pnl->pkl", w, a, b), shard)
    va = total(torch.einsum("pn,pnk->pk", w, a * a), shard)
    vb = total(torch.einsum("pn,pnk->pk", w, b * b), shard)
    den = (va[:, :, None] * vb[:, None, :]).sqrt()
    return torch.where(den > 0, cov / den.clamp_min(1e-30), torch.zeros_like(cov))


def canonical_corr(
    a: Tensor, b: Tensor, weights: Tensor, rtol: float = 1e-7, shard: Shard | None = None
) -> Tensor:
    """First weighted canonical correlation between the columns of ``a`` and those of ``b``.

    The largest correlation between any linear combination of ``a``'s columns and any of
    ``b``'s: with one column each it is ``|corr(a, b)|``; with one column in ``a`` it is
    the multiple correlation of ``a`` on ``b``. Directions that a set does not span
    (collinear columns) are dropped, so a set may hold redundant columns.

    Parameters
    ----------
    a : Tensor of shape (n_problems, n_samples, p) or (n_samples, p)
    b : Tensor of shape (n_problems, n_samples, q)
    weights : Tensor of shape (n_problems, n_samples)
    rtol : float
        Eigenvalues of a set's covariance below ``rtol`` times its largest are dropped.
    shard : Shard, optional
        The samples are this rank's; the covariance is the audit's.

    Returns
    -------
    Tensor of shape (n_problems,), in [0, 1], in ``b``'s dtype.

    Examples
    --------
    >>> import torch
    >>> x = torch.tensor([[1.0], [2.0], [3.0], [4.0]])
    >>> y = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [2.0, 1.0]]])
    >>> round(float(canonical_corr(x, y, torch.ones(1, 4))[0]), 4)  # x = y1 + 2 y2
    1.0
    """
    if a.dim() == 2:
        a = a.unsqueeze(0).expand(weights.shape[0], -1, -1)
    cov = weighted_cov(torch.cat([a.to(b.dtype), b], -1), weights, shard)
    return canonical_corr_of_cov(cov, a.shape[-1], rtol).to(b.dtype)


def canonical_corr_of_cov(cov: Tensor, p: int, rtol: float = 1e-7) -> Tensor:
    """:func:`canonical_corr` from the joint covariance (P, p + q, p + q) of the two sets,
    the first ``p`` columns one set: for a caller that needs the covariance too.

    Examples
    --------
    >>> import torch
    >>> cov = torch.tensor([[[1.0, 0.5], [0.5, 1.0]]], dtype=torch.float64)
    >>> canonical_corr_of_cov(cov, 1)
    tensor([0.5000], dtype=torch.float64)
    """
    cov = cov.to(torch.float64)  # nearly collinear columns (logits that sum to zero)
    a_half = psd_power(cov[:, :p, :p], -0.5, rtol)[0]
    b_half = psd_power(cov[:, p:, p:], -0.5, rtol)[0]
    m = a_half @ cov[:, :p, p:] @ b_half
    return torch.linalg.matrix_norm(m, ord=2).clamp(0.0, 1.0)


def weighted_cov(x: Tensor, weights: Tensor, shard: Shard | None = None) -> Tensor:
    """Weighted covariance of the columns of ``x`` (P, N, k) under each problem's weights
    (P, N): (P, k, k), in float64 (with a ``shard``: over every rank's rows).

    Examples
    --------
    >>> import torch
    >>> weighted_cov(torch.tensor([[[1.0], [3.0]]]), torch.ones(1, 2))
    tensor([[[1.]]], dtype=torch.float64)
    """
    x, w = x.to(torch.float64), weights.to(torch.float64)
    w = w / total(w.sum(1, keepdim=True), shard).clamp_min(1e-300)
    x = x - total(torch.einsum("pn,pnk->pk", w, x), shard)[:, None, :]
    return total((w[..., None] * x).transpose(1, 2) @ x, shard)


def psd_power(cov: Tensor, power: float, rtol: float = 1e-7) -> tuple[Tensor, Tensor]:
    """``cov ** power`` of symmetric PSD matrices (..., k, k) on the directions they span
    (eigenvalues above ``rtol`` times the largest; the others get 0: a pseudo-inverse for
    a negative power), and the number of those directions (...,).

    Examples
    --------
    >>> import torch
    >>> m, rank = psd_power(torch.diag(torch.tensor([4.0, 0.0])), -0.5)
    >>> m, rank
    (tensor([[0.5000, 0.0000],
            [0.0000, 0.0000]]), tensor(1))
    """
    evals, evecs = torch.linalg.eigh(cov)
    keep = evals > rtol * evals.amax(-1, keepdim=True).clamp_min(1e-300)
    scaled = torch.where(keep, evals.clamp_min(1e-300).pow(power), torch.zeros_like(evals))
    return evecs @ (scaled[..., None] * evecs.transpose(-1, -2)), keep.sum(-1)
