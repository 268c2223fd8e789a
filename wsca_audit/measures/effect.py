"""``effect``: how far the variable moves the model's score, in the score's own sd units.

An observational counterpart of an intervention: the within-class regression of the
primary logit contrast on the metadata (class fixed effects, so the label is held
fixed; Frisch-Waugh-Lovell: centre both within each class, then least squares):

- categorical: ``s_i = a_{y_i} + b_{m_i} + e_i``; the effect is the largest level
  contrast ``b_hi - b_lo`` (binary: level 1 minus level 0, signed), the pair fixed by the
  point estimate so that every bootstrap resample measures the same contrast;
- continuous: ``s_i = a_{y_i} + beta x_i + e_i``; the effect is ``beta`` times the
  interquartile range of ``x``.

The unit is the standard deviation of the contrast with the metadata's part removed
(``s - b_{m}``), the observational stand-in for the score's sd on unaltered inputs, which
is how a counterfactual intervention is scaled (``wa.intervention_effect``). Every
bootstrap resample recomputes the class means, the coefficients and the sd with its
weights. When metadata is assigned at random within each class (the induced-shortcut
benchmarks) this estimates the intervention effect; when something else varies with the
metadata within a class it carries that too (see docs/method.md).
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor

from ..formatting import ci_text
from .base import Measure


class Effect(Measure):
    """Within-class shift of the primary logit contrast, in logit-sd units."""

    name = "effect"
    label = "effect (logit sd)"
    schema: ClassVar[dict] = {
        "allOf": [{"$ref": "#/$defs/interval"}],
        "required": ["unit"],
        "properties": {
            "unit": {"const": "logit_sd"},
            "levels": {"type": "array", "items": {"type": "string"}},
            "per": {"type": "string"},
            "n_informative": {"type": ["integer", "null"], "minimum": 0},
        },
    }

    def compute(self, task) -> dict:
        weights = (
            torch.cat([task.v[None], task.boot * task.v]) if task.cfg.n_bootstrap else task.v[None]
        )
        onehot = task.strata_onehot
        s = task.primary_logits  # (N, C')
        if task.kind == "categorical":
            x = torch.nn.functional.one_hot(task.codes, task.k).to(task.dtype)[:, 1:]
        else:
            x = task.target_std[:, None]
        coef, sd = _within_class_fit(s, x, weights, onehot)  # (B, C', K-1), (B, C')
        if task.kind == "categorical":
            zero = torch.zeros_like(coef[..., :1])
            levels = torch.cat([zero, coef], -1)  # b_0 = 0: level effects
            point = levels[0]  # (C', K)
            # only levels that meet in some class can be compared within class (levels
            # nested in the classes have no within-class contrast)
            present = (task.v[:, None] * onehot).T @ torch.nn.functional.one_hot(
                task.codes, task.k
            ).to(onehot.dtype)  # (C, K) weighted counts
            share = (present > 0).to(onehot.dtype)
            comparable = (share.T @ share) > 0  # (K, K)
            diff = point[:, :, None] - point[:, None, :]  # (C', K, K): level i minus level j
            diff = diff.masked_fill(~comparable, float("-inf"))
            best = diff.flatten(1).argmax(-1)
            hi, lo = best // task.k, best % task.k
            if task.k == 2:  # binary: level 1 minus level 0, signed
                hi, lo = torch.ones_like(hi), torch.zeros_like(lo)
            idx = torch.arange(point.shape[0], device=point.device)
            values = (levels[:, idx, hi] - levels[:, idx, lo]) / sd
        else:
            iqr = _iqr(task.target_std[task.valid])
            values = coef[..., 0] * iqr / sd
        # several contrasts (C >= 3 classes): the one the variable moves most
        j = int(values[0].abs().argmax())
        out = {**task.ci_block(values[:, j]), "unit": "logit_sd"}
        if task.contrast_rows != ["1-0"]:
            out["contrast"] = task.contrast_rows[j]
        if task.kind == "categorical":
            out["levels"] = [task.levels[int(lo[j])], task.levels[int(hi[j])]]
            out["n_informative"] = task.n_informative
        else:
            out["per"] = "IQR"
        return out

    def cells(self, block: dict | None) -> tuple[str, ...]:
        return (ci_text(block, 2) if block else "-",)


def _within_class_fit(
    s: Tensor, x: Tensor, weights: Tensor, onehot: Tensor, chunk: int | None = None
):
    """Weighted least squares of each column of ``s`` on ``x`` with class fixed effects,
    for every weight vector: coefficients (B, C', K) and the sd of ``s - x coef`` (B, C').

    Everything comes from weighted sums accumulated over chunks of samples, so no
    (B, N, K) tensor is ever materialised (B resamples, N samples, K columns).
    """
    # sums in float64: the within-class cross-products are raw sums minus class-mean
    # terms, and float32 cancellation there swamped small within-class variances
    out_dtype = x.dtype
    w, x, s, onehot = (t.to(torch.float64) for t in (weights, x, s, onehot))  # (B, N), ...
    n_b, n = w.shape
    step = chunk or max(1, 2**24 // (n_b * max(x.shape[1], s.shape[1], onehot.shape[1])))
    n_c = w @ onehot  # (B, C) weighted class sizes
    sx_c = sum_sc = sxx = sxs = 0  # per-class sums of x and s; raw cross-products
    for i in range(0, n, step):
        sl = slice(i, i + step)
        wc = w[:, sl, None] * onehot[sl]  # (B, n, C)
        wx = w[:, sl, None] * x[sl]  # (B, n, K)
        sx_c = sx_c + wc.transpose(1, 2) @ x[sl]  # (B, C, K)
        sum_sc = sum_sc + wc.transpose(1, 2) @ s[sl]  # (B, C, C')
        sxx = sxx + wx.transpose(1, 2) @ x[sl]  # (B, K, K)
        sxs = sxs + wx.transpose(1, 2) @ s[sl]  # (B, K, C')
    n_c = n_c.clamp_min(1e-12)
    mx, ms = sx_c / n_c[..., None], sum_sc / n_c[..., None]
    # within-class centred cross-products: raw sums minus sum_c n_c m_c m_c'
    cxx = sxx - torch.einsum("bc,bck,bcl->bkl", n_c, mx, mx)
    cxs = sxs - torch.einsum("bc,bck,bcj->bkj", n_c, mx, ms)
    k = x.shape[1]
    ridge = 1e-9 * cxx.diagonal(dim1=1, dim2=2).mean(-1).clamp_min(1e-12)
    eye = torch.eye(k, dtype=x.dtype, device=x.device)
    # In float64 with a pseudo-inverse: levels nested in the classes (or absent from
    # every class of a resample) leave the system singular, and float32 rounding turns
    # that into huge coefficients instead of an error; the minimum-norm solution gives
    # such directions no coefficient
    a = (cxx + ridge[:, None, None] * eye).to(torch.float64)
    evals, evecs = torch.linalg.eigh(a)
    keep = evals > 1e-10 * evals.amax(-1, keepdim=True).clamp_min(1e-300)
    inv = torch.where(keep, 1.0 / evals.clamp_min(1e-300), torch.zeros_like(evals))
    coef = evecs @ (inv[..., None] * (evecs.transpose(1, 2) @ cxs.to(torch.float64)))
    coef = coef.transpose(1, 2)  # (B, C', K)
    # sd of the contrast with the metadata's part removed, r = s - x coef:
    # E_w[r] and E_w[r^2] = E[s^2] - 2 E[s x'coef] + E[(x'coef)^2], from the same sums
    total = w.sum(1)[:, None]  # (B, 1)
    r_mean = (w @ s - torch.einsum("bk,bjk->bj", w @ x, coef)) / total
    quad = torch.einsum("bjk,bkl,bjl->bj", coef, sxx, coef)
    cross = torch.einsum("bkj,bjk->bj", sxs, coef)
    r2 = (w @ (s * s) - 2 * cross + quad) / total
    var = (r2 - r_mean**2).clamp_min(0) * total / (total - 1).clamp_min(1)
    return coef.to(out_dtype), var.sqrt().clamp_min(1e-12).to(out_dtype)


def _iqr(x: Tensor) -> float:
    """Interquartile range (the unit of a continuous variable's effect)."""
    q = torch.quantile(x.double(), torch.tensor([0.25, 0.75], dtype=torch.float64, device=x.device))
    return float(q[1] - q[0])
