"""One home for the statistics: intervals, nulls, strata and chunks.

Every measure and every evidence type reads its intervals here, from resamples drawn by
:mod:`wsca_audit.resampling` (the home of every random draw; the habit of torchmetrics'
``BootStrapper``: one resampling scheme that every metric shares):

- intervals: :func:`percentile_ci`, :func:`centred_percentile_ci` (refitted heads),
  :func:`ci_block`, :func:`abs_entry_ci`, :func:`bootstrap_mean_ci` and
  :func:`bootstrap_ratio_ci` (per-sample values of an evidence type);
- nulls and tests: :func:`null_quantile`, :func:`permutation_p`, :func:`chance_r2`,
  :func:`noise_share`, :func:`chance_corrected`, :func:`benjamini_hochberg`;
- strata: :func:`stratum_means`, :func:`center_within` and, per resample,
  :func:`within_class_centered`; :func:`residualise` (columns minus their part along a
  covariate) and :func:`safe_std` (chunked column scales);
- several estimates at once: :func:`simultaneous_ci` (a bootstrap max-t band);
- memory: :func:`chunk_rows`, the rows of a chunk under one budget (``max_batch_mb``).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from .metrics import psd_power
from .resampling import bootstrap_indices
from .shards import Shard, count, largest, total

DEFAULT_BUDGET_MB = 1024.0  # AuditSettings.max_batch_mb's default


# --------------------------------------------------------------------------- memory
def chunk_rows(row_elements: int, budget_mb: float = DEFAULT_BUDGET_MB, itemsize: int = 4,
               floor: int = 1) -> int:  # fmt: skip
    """Rows per chunk so that ``rows x row_elements`` items of ``itemsize`` bytes fit
    ``budget_mb`` (at least ``floor``).

    Examples
    --------
    >>> chunk_rows(1024, budget_mb=4.0)   # 4 MiB of float32 rows of 1024 values
    1024
    """
    per_row = max(int(row_elements), 1) * itemsize
    return max(int(floor), int(budget_mb * 2**20 // per_row))


def chunks(n: int, size: int) -> list[slice]:
    """Slices of ``range(n)`` of at most ``size`` rows.

    Examples
    --------
    >>> chunks(5, 2)
    [slice(0, 2, None), slice(2, 4, None), slice(4, 6, None)]
    """
    size = max(int(size), 1)
    return [slice(i, i + size) for i in range(0, n, size)]


def percentile_ci(samples: Tensor, level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval, ignoring NaN resamples."""
    x = samples[torch.isfinite(samples)].double()
    if x.numel() == 0:
        return float("nan"), float("nan")
    lo = float(torch.quantile(x, (1 - level) / 2))
    hi = float(torch.quantile(x, 1 - (1 - level) / 2))
    return lo, hi


def centred_percentile_ci(
    values: Tensor, n_bootstrap: int, level: float = 0.95
) -> tuple[float, float]:
    """Percentile interval of ``values[1 : 1 + n_bootstrap]`` moved so that its median
    sits on the estimate ``values[0]``: it always contains the estimate.

    For measures of refitted heads. A bootstrap refit is fitted on a resample of the
    sample the point fit saw, so it carries that sample's estimation noise and the
    resample's on top; noise in an auxiliary head's direction pulls its correlation with
    the primary head towards zero, so the refits sit below the point fit as a group (the
    2-level example of issue 18: 0.69 with a plain percentile interval of [0.57, 0.67]).
    The spread of the refits is the sampling spread; their offset is the refits' own.

    Examples
    --------
    >>> import torch
    >>> lo, hi = centred_percentile_ci(torch.tensor([0.7, 0.5, 0.6, 0.6, 0.7]), 4, level=0.5)
    >>> round(lo, 3), round(hi, 3)  # the refits' median 0.6 moved onto the estimate 0.7
    (0.675, 0.725)
    """
    boot = values[1 : 1 + n_bootstrap]
    boot = boot[torch.isfinite(boot)].double()
    lo, hi = percentile_ci(boot, level)
    if not (math.isfinite(lo) and math.isfinite(hi)) or not math.isfinite(float(values[0])):
        return lo, hi
    shift = float(values[0]) - float(torch.quantile(boot, 0.5))
    return lo + shift, hi + shift


def chance_r2(null: Tensor) -> float:
    """The chance level of a squared correlation: its mean over refits with the
    variable permuted within label strata (NaN refits left out)."""
    null = null[torch.isfinite(null)].double()
    return float((null**2).mean()) if null.numel() else 0.0


def noise_share(real: Tensor, noise: Tensor, rtol: float = 1e-7) -> float:
    """The share of the real heads' logit variance that heads fitted to noise produce:
    ``tr(real⁺ noise) / rank(real)``, averaged over the noise fits, at most 1.

    ``real`` (k, k) is the covariance of the real heads' logits, ``noise`` (P, k, k)
    those of heads fitted with the variable permuted; in the real heads' own whitened
    coordinates, the noise heads' variance per direction.

    Examples
    --------
    >>> import torch
    >>> noise_share(torch.eye(2) * 4, torch.eye(2)[None].expand(3, 2, 2))
    0.25
    """
    pinv, rank = psd_power(real.double(), -1.0, rtol)
    if int(rank) == 0 or noise.shape[0] == 0:
        return 0.0
    per_fit = torch.einsum("ij,pji->p", pinv, noise.double()) / int(rank)
    return float(per_fit.mean().clamp(0.0, 1.0))


def chance_corrected(rho: Tensor, chance: float) -> Tensor:
    """Correlations with their chance level removed on the squared scale, as adjusted
    R² removes the fit of noise: ``sqrt(max(0, (rho² - c) / (1 - c)))``.

    Examples
    --------
    >>> import torch
    >>> chance_corrected(torch.tensor([0.6, 0.1]), 0.2).round(decimals=3)
    tensor([0.4470, 0.0000])
    """
    c = min(max(chance, 0.0), 1.0 - 1e-12)
    return ((rho.double() ** 2 - c) / (1 - c)).clamp_min(0).sqrt().to(rho.dtype)


def permutation_p(observed: float, null: Tensor) -> float:
    """One-sided permutation p-value with the +1 correction (never exactly 0)."""
    null = null[torch.isfinite(null)]
    if null.numel() == 0 or not np.isfinite(observed):
        return float("nan")
    return float((1 + (null >= observed - 1e-12).sum()) / (1 + null.numel()))


def benjamini_hochberg(p_values: list[float]) -> list[float]:
    """Benjamini-Hochberg adjusted p-values (NaN entries are left out and stay NaN).

    Examples
    --------
    >>> benjamini_hochberg([0.01, 0.04, 0.03])
    [0.03, 0.04, 0.04]
    """
    p = np.asarray(p_values, dtype=float)
    out = np.full_like(p, np.nan)
    ok = np.isfinite(p)
    m = int(ok.sum())
    if m == 0:
        return out.tolist()
    q = p[ok]
    order = np.argsort(q)
    ranked = q[order] * m / np.arange(1, m + 1)
    adjusted = np.minimum.accumulate(ranked[::-1])[::-1].clip(max=1.0)
    res = np.empty(m)
    res[order] = adjusted
    out[ok] = res
    return [round(float(v), 12) if np.isfinite(v) else float("nan") for v in out]


def ci_block(values: Tensor, n_bootstrap: int, level: float = 0.95) -> dict:
    """``{"value", "ci_low", "ci_high"}`` of ``values = [point, *bootstrap, *anything]``.

    The interval is the percentile interval of ``values[1 : 1 + n_bootstrap]`` (NaN,
    null in the JSON, with no resamples); what follows them (a permutation null) is
    ignored.

    Examples
    --------
    >>> import torch
    >>> ci_block(torch.tensor([0.5, 0.1, 0.9]), n_bootstrap=0)
    {'value': 0.5, 'ci_low': nan, 'ci_high': nan}
    """
    lo, hi = percentile_ci(values[1 : 1 + n_bootstrap], level)
    return {"value": float(values[0]), "ci_low": lo, "ci_high": hi}


def simultaneous_ci(values: Tensor, n_bootstrap: int, level: float = 0.95) -> tuple[Tensor, Tensor]:
    """Intervals for several estimates at once (a bootstrap max-t band): ``values`` is
    (1 + n_bootstrap + ..., C), row 0 the estimates. Each column's resamples are
    standardised by their own sd; the ``level`` quantile ``q`` of the largest absolute
    standardised deviation over the columns gives ``estimate ± q sd``, which covers every
    column at once with probability ``level``. Unlike per-column percentile intervals at
    ``1 - (1 - level) / C`` (Bonferroni), it needs no extreme quantile of a few hundred
    resamples. NaN without resamples.

    Examples
    --------
    >>> import torch
    >>> g = torch.Generator().manual_seed(0)
    >>> v = torch.cat([torch.zeros(1, 3), torch.randn(400, 3, generator=g)])
    >>> lo, hi = simultaneous_ci(v, 400)
    >>> bool((hi > 1.96).all() and (hi < 3.0).all())  # wider than one 95% interval each
    True
    """
    point = values[0].double()
    boot = values[1 : 1 + n_bootstrap].double()
    nan = torch.full_like(point, math.nan)
    if boot.shape[0] < 2:
        return nan, nan
    sd = boot.std(0).clamp_min(1e-12)
    t = ((boot - point) / sd).abs().amax(1)
    t = t[torch.isfinite(t)]
    if not t.numel():
        return nan, nan
    q = float(torch.quantile(t, level))
    return point - q * sd, point + q * sd


def abs_entry_ci(
    matrix: Tensor, n_bootstrap: int, level: float = 0.95, centred: bool = False
) -> tuple[float, float]:
    """Interval of ``|m|`` for the entry of ``matrix`` (P x C x K, problem 0 the point
    fit) that is largest in absolute value at the point estimate.

    The bootstrap resamples the SIGNED entry (fixed by the point estimate), and the
    interval of its absolute value follows: taking ``|.|`` or a maximum inside each
    resample would push every resample up (an interval above a near-zero estimate, or
    a maximum over noisy columns), taking it outside does not. An interval that
    straddles zero becomes ``[0, max(|lo|, |hi|)]``. ``centred=True`` takes the signed
    interval from :func:`centred_percentile_ci` (for refitted heads).

    Examples
    --------
    >>> import torch
    >>> m = torch.tensor([0.05, -0.10, 0.20, 0.00, 0.10])[:, None, None]
    >>> lo, hi = abs_entry_ci(m, n_bootstrap=4, level=0.5)
    >>> lo, round(hi, 3)
    (0.0, 0.125)
    """
    flat = matrix.flatten(1)
    j = int(flat[0].abs().argmax())
    signed = flat[:, j] * (1.0 if float(flat[0, j]) >= 0 else -1.0)
    if centred:
        lo, hi = centred_percentile_ci(signed, n_bootstrap, level)
    else:
        lo, hi = percentile_ci(signed[1 : 1 + n_bootstrap], level)
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return lo, hi
    if lo >= 0:
        return lo, hi
    if hi <= 0:
        return -hi, -lo
    return 0.0, max(-lo, hi)


def ci_block_with_p(
    values: Tensor, n_bootstrap: int, null: Tensor, p_value: float, level: float = 0.95
) -> dict:
    """:func:`ci_block` plus the permutation test: ``p_value`` and, when there is a
    null, its mean and 95% quantile."""
    out = {**ci_block(values, n_bootstrap, level), "p_value": p_value}
    if null.numel():
        out["null_mean"] = float(null.double().mean())
        out["null_q95"] = null_quantile(null)
    return out


def within_class_centered(
    M: Tensor, weights: Tensor, onehot: Tensor, shard: Shard | None = None
) -> Tensor:
    """``M`` (N x K, or P x N x K) minus its weighted class means under each problem's
    weights (P x N), so that every bootstrap resample removes the label with its own
    class means; ``onehot`` (N x C) codes the classes. Returns P x N x K. With a
    ``shard`` the rows are this rank's and the class means the audit's.
    """
    n_c = total(weights @ onehot, shard).clamp_min(1e-12)  # (P, C)
    if M.dim() == 2:
        sums = torch.einsum("pn,nc,nk->pck", weights, onehot, M)
    else:
        sums = torch.einsum("pn,nc,pnk->pck", weights, onehot, M)
    means = total(sums, shard) / n_c[..., None]  # (P, C, K)
    return M - torch.einsum("nc,pck->pnk", onehot, means)


def bootstrap_mean_ci(
    values: np.ndarray | Tensor, n_bootstrap: int, level: float, seed: int
) -> tuple[float, float]:
    """Percentile bootstrap interval of a mean (NaN entries ignored).

    Examples
    --------
    >>> lo, hi = bootstrap_mean_ci(np.arange(100.0), 200, 0.95, seed=0)
    >>> 40 < lo < 49.5 < hi < 59
    True
    """
    v = torch.as_tensor(np.asarray(values, dtype=np.float64))
    v = v[torch.isfinite(v)]
    if v.numel() < 2 or n_bootstrap < 1:
        return float("nan"), float("nan")
    means = v[bootstrap_indices(v.numel(), n_bootstrap, seed)].mean(1)
    return percentile_ci(means, level)


def bootstrap_ratio_ci(
    delta: np.ndarray | Tensor, ref: np.ndarray | Tensor, n_bootstrap: int, level: float, seed: int
) -> tuple[float, float]:
    """Percentile bootstrap interval of ``mean(delta) / sd(ref)`` over the same resamples
    of paired per-sample values (an effect in units of the reference's spread)."""
    d = torch.as_tensor(np.asarray(delta, dtype=np.float64))
    r = torch.as_tensor(np.asarray(ref, dtype=np.float64))
    if d.numel() < 2 or n_bootstrap < 1:
        return float("nan"), float("nan")
    idx = bootstrap_indices(d.numel(), n_bootstrap, seed)
    boot = d[idx].mean(1) / r[idx].std(1, correction=1).clamp_min(1e-12)
    return percentile_ci(boot, level)


def null_quantile(null: Tensor, q: float = 0.95) -> float:
    """The ``q`` quantile of a permutation null (NaN refits left out; NaN if none)."""
    null = null[torch.isfinite(null)].double()
    return float(torch.quantile(null, q)) if null.numel() else float("nan")


# --------------------------------------------------------------------------- strata
def stratum_means(M: Tensor, strata: Tensor, valid: Tensor | None = None) -> Tensor:
    """Per-sample mean of ``M``'s rows (N x K) over the valid samples of the sample's
    stratum (zero rows for a stratum with no valid sample).

    Examples
    --------
    >>> stratum_means(torch.tensor([[1.0], [3.0], [10.0]]), torch.tensor([0, 0, 1]))
    tensor([[ 2.],
            [ 2.],
            [10.]])
    """
    strata = strata.to(M.device)
    valid = torch.ones_like(strata, dtype=torch.bool) if valid is None else valid.to(M.device)
    out = torch.zeros_like(M)
    for s in torch.unique(strata).tolist():
        in_s = strata == s
        m = in_s & valid
        if m.any():
            out[in_s] = M[m].mean(0)
    return out


def center_within(M: Tensor, strata: Tensor, valid: Tensor | None = None) -> Tensor:
    """``M`` centred within each stratum over its valid samples (zero where invalid)."""
    centred = M - stratum_means(M, strata, valid)
    if valid is None:
        return centred
    return torch.where(valid.to(M.device)[:, None], centred, 0.0)


def stratum_mean_table(
    Z: Tensor, strata: Tensor, n_strata: int, dtype, device, size: int,
    shard: Shard | None = None,
) -> Tensor:  # fmt: skip
    """Mean of ``Z``'s rows per stratum (n_strata x D; zero for an empty stratum), from
    sums by chunks of ``size`` rows: a one-hot product, not ``index_add_`` (atomics:
    nondeterministic on CUDA), and no centred copy of ``Z``. With a ``shard``, ``Z`` and
    ``strata`` are this rank's rows and the means the audit's."""
    sums = torch.zeros(n_strata, Z.shape[1], dtype=dtype, device=device)
    strata = strata.to(device)
    for sl in chunks(Z.shape[0], size):
        onehot = torch.nn.functional.one_hot(strata[sl], n_strata).to(dtype)
        sums += onehot.T @ Z[sl].to(device=device, dtype=dtype)
    counts = total(torch.bincount(strata, minlength=n_strata).to(dtype), shard)
    return total(sums, shard) / counts.clamp_min(1)[:, None]


def safe_std(
    Z: Tensor, size: int, shard: Shard | None = None, mean: Tensor | None = None
) -> Tensor:
    """Column standard deviation (unbiased), by chunks, 1 where a column is constant
    (over every rank's rows with a ``shard``); ``mean``: the float64
    :func:`column_mean`, when the caller has it."""
    n = count(Z.shape[0], shard)
    if mean is None:
        mean = column_mean(Z, size, shard, torch.float64)
    ss = torch.zeros_like(mean)
    amax = torch.zeros_like(mean)
    for sl in chunks(Z.shape[0], size):
        c = Z[sl].to(torch.float64)
        ss += ((c - mean) ** 2).sum(0)
        amax = torch.maximum(amax, c.abs().amax(0))
    sd = (total(ss, shard) / max(n - 1, 1)).sqrt()
    sd = torch.where(sd > 1e-12 * (1 + largest(amax, shard)), sd, torch.ones_like(sd))
    return sd.to(Z.dtype)


def column_mean(
    Z: Tensor, size: int, shard: Shard | None = None, dtype: torch.dtype | None = None
) -> Tensor:
    """Column means of ``Z`` (over every rank's rows with a ``shard``), summed in float64
    by chunks, in ``dtype`` (default ``Z``'s)."""
    s = torch.zeros(Z.shape[1], dtype=torch.float64, device=Z.device)
    for sl in chunks(Z.shape[0], size):
        s += Z[sl].to(torch.float64).sum(0)
    return (total(s, shard) / max(count(Z.shape[0], shard), 1)).to(dtype or Z.dtype)


def residualise(M: Tensor, c: Tensor, chunks: list, shard: Shard | None = None) -> None:
    """``M -= c g'`` in place, with ``g`` the least-squares slope of each column of ``M``
    on ``c`` (the columns' part along the within-bin target), chunk by chunk."""
    g = torch.zeros(M.shape[1], dtype=torch.float64, device=M.device)
    for sl in chunks:
        g += c[sl].to(torch.float64) @ M[sl].to(torch.float64)
    cc = total((c.to(torch.float64) ** 2).sum(), shard)
    g = (total(g, shard) / cc.clamp_min(1e-12)).to(M.dtype)
    for sl in chunks:
        M[sl] -= c[sl, None] * g
