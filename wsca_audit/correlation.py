"""The measures (paper's weight-space cosine, deconfounded usage), resampling and verdicts.

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

Confidence intervals are percentile bootstrap intervals over refitted heads; p-values
come from refits with the metadata permuted within label strata, corrected across
tasks with Benjamini-Hochberg.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import Tensor

from .metrics import psd_power, weighted_corr

VERDICTS = ("uses", "encoded_not_used", "not_encoded", "inconclusive")


# --------------------------------------------------------------------------- geometry
def pca_basis(Z: Tensor, variance: float = 0.99, min_components: int = 50) -> tuple[Tensor, float]:
    """Orthonormal basis of the principal subspace of the centred embeddings.

    Returns the basis (k x d) with ``k`` the number of components that explain
    ``variance`` of the total, raised to ``min_components`` and capped at ``d``
    (the paper's rule), and the share of variance that ``k`` components explain.
    """
    mean = Z.mean(0, keepdim=True)
    cov = torch.zeros(Z.shape[1], Z.shape[1], dtype=Z.dtype, device=Z.device)
    for start in range(0, Z.shape[0], 65536):  # chunks: no centred copy of Z
        Zc = Z[start : start + 65536] - mean
        cov += Zc.T @ Zc
    cov = cov.to(torch.float64) / max(Z.shape[0] - 1, 1)
    evals, evecs = torch.linalg.eigh(cov)
    evals, evecs = evals.flip(0).clamp_min(0), evecs.flip(1)
    total = float(evals.sum())
    if total <= 0:
        return evecs.T.to(Z.dtype), 1.0
    share = np.cumsum(evals.cpu().numpy()) / total  # d values, host-side: deterministic
    k = int(np.searchsorted(share, variance)) + 1
    k = min(max(k, min_components), Z.shape[1])
    return evecs[:, :k].T.contiguous().to(Z.dtype), float(share[k - 1])


def primary_class_vectors(weight: Tensor, center: bool = True) -> Tensor:
    """The primary head's class vectors as the paper compares them (C x d).

    A softmax head is defined only up to a vector added to every class, which changes
    no prediction; ``center`` removes it (the mean class vector), so two heads that
    predict identically get identical cosines. A single-logit head is left as it is.
    """
    if center and weight.shape[0] > 1:
        return weight - weight.mean(0, keepdim=True)
    return weight


def primary_contrasts(weight: Tensor) -> Tensor:
    """Directions along which the primary prediction changes (one row per contrast).

    One logit: ``w``; two logits: ``w1 - w0``; ``C >= 3``: each class against the mean.
    """
    if weight.shape[0] == 2:
        return weight[1:] - weight[:1]
    return primary_class_vectors(weight, center=True)


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


def usage_matrix(primary_logits: Tensor, aux_logits: Tensor, weights: Tensor) -> Tensor:
    """Weighted correlation of primary contrast logits (N x C) with aux logits (P x N x K)."""
    # clamped: float rounding can put a perfect correlation a hair above 1
    return weighted_corr(primary_logits, aux_logits, weights).clamp(-1.0, 1.0)


def within_class_centered(M: Tensor, weights: Tensor, onehot: Tensor) -> Tensor:
    """``M`` (N x K, or P x N x K) minus its weighted class means under each problem's
    weights (P x N), so that every bootstrap resample removes the label with its own
    class means; ``onehot`` (N x C) codes the classes. Returns P x N x K.
    """
    n_c = (weights @ onehot).clamp_min(1e-12)  # (P, C)
    if M.dim() == 2:
        sums = torch.einsum("pn,nc,nk->pck", weights, onehot, M)
    else:
        sums = torch.einsum("pn,nc,pnk->pck", weights, onehot, M)
    means = sums / n_c[..., None]  # (P, C, K)
    return M - torch.einsum("nc,pck->pnk", onehot, means)


def max_abs(matrix: Tensor) -> Tensor:
    """Aggregate of a (P x C x K) matrix: the largest absolute entry per problem."""
    return matrix.abs().flatten(1).amax(1)


# --------------------------------------------------------------------------- resampling
def bootstrap_counts(n: int, n_bootstrap: int, generator: torch.Generator) -> Tensor:
    """Bootstrap resamples as count vectors (n_bootstrap x n): one weight per sample."""
    if n_bootstrap == 0:
        return torch.zeros(0, n)
    idx = torch.randint(0, n, (n_bootstrap, n), generator=generator)
    idx += n * torch.arange(n_bootstrap)[:, None]  # one bin range per resample
    return torch.bincount(idx.flatten(), minlength=n_bootstrap * n).view(n_bootstrap, n).float()


def stratified_permutations(
    strata: Tensor, valid: Tensor, n_permutations: int, generator: torch.Generator
) -> Tensor:
    """Index arrays (n_permutations x n) that shuffle samples within each stratum.

    Only valid samples are shuffled (among themselves); others map to themselves.
    Shuffling within label strata keeps the metadata-label association (the confounding)
    and breaks only the association with the embedding beyond the label.
    """
    n = strata.shape[0]
    out = torch.arange(n).unsqueeze(0).repeat(n_permutations, 1)
    for s in torch.unique(strata[valid]).tolist():
        idx = torch.nonzero(valid & (strata == s)).flatten()
        if idx.numel() < 2:
            continue
        keys = torch.rand(n_permutations, idx.numel(), generator=generator)
        out[:, idx] = idx[torch.argsort(keys, dim=1)]
    return out


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


# --------------------------------------------------------------------------- verdicts
@dataclass(frozen=True)
class Thresholds:
    """Decision thresholds of the verdicts (all applied to 95% bootstrap intervals).

    Attributes
    ----------
    usage : float, default=0.25
        ``uses`` needs the usage interval's lower end at or above this (and a
        BH-adjusted permutation p-value at or below ``alpha``);
        ``encoded_not_used`` needs its upper end below it.
    auc : float, default=0.6
        A categorical variable counts as encoded when the held-out AUC interval lies
        at or above this, and as not encoded when it lies below.
    r2 : float, default=0.05
        The same for continuous variables with held-out R².
    alpha : float, default=0.05
        Significance level for the permutation test.
    effect : float, default=0.25
        Equivalence margin of the effect size, in logit-sd units: an effect interval
        inside ``±effect`` decides ``encoded_not_used``; one beyond it (with a
        significant test) decides ``uses`` (see :mod:`wsca_audit.decision`).
    """

    usage: float = 0.25
    auc: float = 0.6
    r2: float = 0.05
    alpha: float = 0.05
    effect: float = 0.25

    def to_dict(self) -> dict:
        return asdict(self)


def verdict(
    encoding_ci: tuple[float, float],
    encoding_metric: str,
    usage_ci: tuple[float, float],
    usage_p: float,
    thresholds: Thresholds,
) -> str:
    """Verdict of one task by usage alone (the full rule, with the effect size, is
    :func:`wsca_audit.decision.decide`).

    ``not_encoded``: the encoding interval lies below its threshold (a linear head cannot
    read what the embedding does not hold). ``uses``: encoded, usage interval at or above
    the usage threshold and the permutation test significant. ``encoded_not_used``:
    encoded and the usage interval below the threshold. Otherwise ``inconclusive``.
    """
    enc_thr = thresholds.auc if encoding_metric == "auc" else thresholds.r2
    enc_lo, enc_hi = encoding_ci
    use_lo, use_hi = usage_ci
    if not all(np.isfinite([enc_lo, enc_hi])):
        return "inconclusive"
    if enc_hi < enc_thr:
        return "not_encoded"
    encoded = enc_lo >= enc_thr
    if not all(np.isfinite([use_lo, use_hi])):
        return "inconclusive"
    if (
        encoded
        and use_lo >= thresholds.usage
        and np.isfinite(usage_p)
        and usage_p <= thresholds.alpha
    ):
        return "uses"
    if encoded and use_hi < thresholds.usage:
        return "encoded_not_used"
    return "inconclusive"


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
        out["null_q95"] = float(torch.quantile(null.double(), 0.95))
    return out
