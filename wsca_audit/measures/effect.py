"""``effect``: how far the variable moves the model's score, in the score's own sd units.

An observational counterpart of an intervention: the within-class regression of the
primary logit contrast on the metadata (class fixed effects, so the label is held
fixed; Frisch-Waugh-Lovell: centre both within each class, then least squares):

- categorical: ``s_i = a_{y_i} + b_{m_i} + e_i``; binary: level 1 minus level 0,
  signed. With three or more levels, the mean effect of a group of high levels minus
  that of a group of low ones: the ``t`` highest against the ``u`` lowest, whichever
  separate most clearly (one odd scanner against one, or half the sites against the
  other half), compared only among levels that meet in some class;
- continuous: ``s_i = a_{y_i} + beta x_i + e_i``; the effect is ``beta`` times the
  interquartile range of ``x``.

The strata ``y`` are what holding the target fixed means for the head's kind (classes,
label vectors, or bins of a regression target; docs/heads.md). A regression head's unit
is the prediction's residual sd (its sd within the target bins, ``unit: residual_sd``),
and ``target_units`` gives the effect in the prediction's own units (years, say).

With a choice to make (three or more levels, or a head of three or more classes, where
the contrast the variable moves most is taken) the choice is made on one half of the
samples and measured on the other, and the other way round, averaged: the largest of
many noisy differences would otherwise be an inflated size. Each bootstrap resample makes
its own choices, so that the interval carries the choosing too. A negative size means the
halves disagree (noise), never a large effect the other way. The report names the groups
(``split``), the extreme levels (``levels``) and the contrast, as the whole sample shows
them.

The unit is the standard deviation of the contrast with the metadata's part removed
(``s - b_{m}``), the observational stand-in for the score's sd on unaltered inputs, which
is how a counterfactual intervention is scaled (``wa.intervention_effect``). Every
bootstrap resample recomputes the class means, the coefficients and the sd with its
weights. When metadata is assigned at random within each class (the induced-shortcut
benchmarks) this estimates the intervention effect; when something else varies with the
metadata within a class it carries that too (see docs/method.md).
"""

from __future__ import annotations

import math
from typing import ClassVar

import torch
from torch import Tensor

from .. import metrics, stats
from ..formatting import ci_text
from ..shards import Shard, total
from .base import Measure


class Effect(Measure):
    """Within-class shift of the primary logit contrast, in logit-sd units."""

    name = "effect"
    label = "effect (logit sd)"
    explanation = (
        "how far the variable moves the model's score with the label held fixed "
        "(within-class regression), in standard deviations of the score: what an "
        "intervention on the input would show; an interval inside ±{effect} sd means not used"
    )
    schema: ClassVar[dict] = {
        "allOf": [{"$ref": "#/$defs/interval"}],
        "required": ["unit"],
        "properties": {
            "unit": {"enum": ["logit_sd", "residual_sd"]},
            "target_units": {
                "type": "object",
                "properties": {
                    "value": {"type": ["number", "null"]},
                    "ci_low": {"type": ["number", "null"]},
                    "ci_high": {"type": ["number", "null"]},
                    "unit": {"type": "string"},
                },
            },
            "levels": {"type": "array", "items": {"type": "string"}},
            "per": {"type": "string"},
            "n_informative": {"type": ["integer", "null"], "minimum": 0},
            "selection": {"type": "string"},
            "contrast": {"type": "string"},
            "by_output": {
                "type": "object",
                "description": "each output's effect, intervals simultaneous over the outputs",
                "properties": {
                    "level": {"type": "number"},
                    "method": {"type": "string"},
                    "selection": {"type": "string"},
                    "outputs": {
                        "type": "object",
                        "additionalProperties": {"$ref": "#/$defs/interval"},
                    },
                },
            },
            "split": {
                "type": "object",
                "properties": {
                    "high": {"type": "array", "items": {"type": "string"}},
                    "low": {"type": "array", "items": {"type": "string"}},
                },
            },
        },
    }

    def compute(self, task) -> dict:
        # the regression's inputs on this rank's samples (its sums are the audit's)
        v = task.local(task.v)
        weights = (
            torch.cat([v[None], task.fitter.local_boot * v]) if task.cfg.n_bootstrap else v[None]
        )
        if task.kind == "categorical":
            x = torch.nn.functional.one_hot(task.local(task.codes), task.k).to(task.dtype)[:, 1:]
        else:
            x = task.local(task.target_std)[:, None]
        if task.selects:
            # the two halves' fits serve the task's size and each output's
            halves = task.local(task.halves)
            fits = [_fit(task, x, weights * (halves == h).to(weights.dtype)) for h in (0, 1)]
            out = self._cross_fitted(task, x, weights, fits)
            per_output = self._by_output(task, x, weights, fits)
            if per_output is not None:
                out["by_output"] = per_output
            return out
        # one contrast and one level contrast (or a slope): nothing to choose
        coef, sd = _fit(task, x, weights)
        if task.kind == "categorical":  # binary: level 1 minus level 0, signed
            out = {**task.ci_block(coef[:, 0, 0] / sd[:, 0]), "unit": _unit(task)}
            _add_target_units(task, out, coef[:, 0, 0])
            if task.contrast_rows != ["1-0"]:  # a single-logit head
                out["contrast"] = task.contrast_rows[0]
            out["levels"] = [task.levels[0], task.levels[1]]
            out["n_informative"] = task.n_informative
            return out
        raw = coef[:, 0, 0] * _iqr(task.target_std[task.valid])
        out = {**task.ci_block(raw / sd[:, 0]), "unit": _unit(task), "per": "IQR"}
        _add_target_units(task, out, raw)
        if task.contrast_rows != ["1-0"]:  # a single-logit head
            out["contrast"] = task.contrast_rows[0]
        return out

    def _cross_fitted(self, task, x: Tensor, weights: Tensor, fits: list) -> dict:
        """Several contrasts or levels: the contrast and the two groups of levels that the
        score separates most clearly are chosen on one half of the samples and measured
        on the other (and the other way round, averaged), so that choosing the largest of
        many noisy differences does not inflate the size: a shortcut-free head stays near
        0 however many levels the variable has. ``fits``: each half's fit (coefficients
        and sds of every problem), :func:`_fit` under the weights of that half."""
        s = task.contrast_scores
        # every resample makes its own choices (the whole procedure is bootstrapped: with
        # the choices fixed at the point estimate's, the interval missed the variance the
        # choosing adds, and excluded 0 for 15% of shortcut-free heads instead of 5%)
        values = torch.zeros(weights.shape[0], dtype=s.dtype, device=s.device)
        for h in (0, 1):
            coef, sd = fits[h]
            other_coef, other_sd = fits[1 - h]
            for p in range(weights.shape[0]):
                choice = self._choose(task, coef[p], sd[p])
                size = self._size(task, other_coef[p : p + 1], other_sd[p : p + 1], choice)
                values[p] += size[0].to(values.dtype) / 2
        out = {**task.ci_block(values), "unit": _unit(task), "selection": "cross-fitted halves"}
        # what the whole sample points at (names only: the size is the cross-fitted one,
        # whose halves may each have chosen otherwise)
        coef, sd = _fit(task, x, task.local(task.v)[None])
        # in the target's units: the cross-fitted sizes scaled by the whole sample's sd
        _add_target_units(task, out, values * sd[0].amax())
        j, high, low = self._choose(task, coef[0], sd[0])
        if task.contrast_rows != ["1-0"]:
            out["contrast"] = task.contrast_rows[j]
        if task.kind == "categorical":
            b = self._level_effects(coef[0, j])
            names = lambda mask: [task.levels[i] for i in torch.nonzero(mask).flatten().tolist()]  # noqa: E731
            hi = int(torch.where(high, b, -math.inf).argmax())
            lo = int(torch.where(low, b, math.inf).argmin())
            out["levels"] = [task.levels[lo], task.levels[hi]]
            if task.k >= 3:
                out["split"] = {"high": names(high), "low": names(low)}
            out["n_informative"] = task.n_informative
        else:
            out["per"] = "IQR"
        return out

    def _by_output(self, task, x: Tensor, weights: Tensor, fits: list) -> dict | None:
        """Each output's own effect (heads of several contrasts: multi-class, multi-label),
        with intervals simultaneous over the outputs at ``ci_level`` (a bootstrap max-t
        band, :func:`~wsca_audit.stats.simultaneous_ci`), so that "any output moves" and
        "every output stays within ±effect" can be read off them. A variable of two levels or a continuous
        one has one coefficient per output; with three or more levels, each output's
        groups of levels are chosen on one half and measured on the other."""
        n_c, nb = task.contrasts.shape[0], task.cfg.n_bootstrap
        if n_c < 2 or (
            task.kind == "categorical" and task.k >= 3 and n_c * weights.shape[0] > 4000
        ):
            return None  # many outputs and many levels: the search is too long per output
        if task.kind == "categorical" and task.k == 2:
            if bool(task.level_components[0] != task.level_components[1]):
                return None  # the two levels never meet in a stratum
        s = task.contrast_scores
        if task.kind == "continuous" or task.k == 2:
            coef, sd = _fit(task, x, weights)
            scale = _iqr(task.target_std[task.valid]) if task.kind == "continuous" else 1.0
            values = coef[..., 0] * scale / sd  # (B, C')
        else:  # the halves' fits of the task's size (see _cross_fitted)
            values = torch.zeros(weights.shape[0], n_c, dtype=s.dtype, device=s.device)
            for h in (0, 1):
                (coef, sd), (o_coef, o_sd) = fits[h], fits[1 - h]
                for p in range(weights.shape[0]):
                    for j in range(n_c):
                        _, high, low = _best_groups(
                            self._level_effects(coef[p, j]) / sd[p, j],
                            task.level_counts, task.level_components,
                        )  # fmt: skip
                        size = self._size(task, o_coef[p : p + 1], o_sd[p : p + 1], (j, high, low))
                        values[p, j] += size[0].to(values.dtype) / 2
        lo, hi = stats.simultaneous_ci(values, nb, task.cfg.ci_level)
        outputs = {
            name: {"value": float(values[0, j]), "ci_low": float(lo[j]), "ci_high": float(hi[j])}
            for j, name in enumerate(task.contrast_rows)
        }
        out = {"level": task.cfg.ci_level, "method": "bootstrap max-t band", "outputs": outputs}
        if task.kind == "categorical" and task.k >= 3:
            out["selection"] = "cross-fitted halves"  # below 0: the halves disagree
        return out

    @staticmethod
    def _level_effects(coef: Tensor) -> Tensor:
        """Level effects with level 0 as the reference (b_0 = 0): (..., K)."""
        return torch.cat([torch.zeros_like(coef[..., :1]), coef], -1)

    def _choose(self, task, coef: Tensor, sd: Tensor) -> tuple[int, Tensor, Tensor]:
        """The contrast and the groups of levels (high, low; levels in neither are left
        out) that one fit separates most clearly."""
        if task.kind != "categorical":
            size = coef[:, 0] / sd
            j = int(size.abs().argmax())
            up = torch.tensor(bool(size[j] >= 0))
            return j, up, ~up
        if task.k == 2 and bool(task.level_components[0] == task.level_components[1]):
            # two levels: the groups are the two levels, the same standard error for
            # every contrast (one vectorised step: heads may have a thousand classes)
            size = coef[:, 0] / sd
            j = int(size.abs().argmax())
            up = bool(size[j] >= 0)
            ones = torch.arange(2, device=coef.device) == 1
            return j, ones if up else ~ones, ~ones if up else ones
        candidates = range(coef.shape[0])
        if coef.shape[0] > _MAX_CONTRASTS:
            # many classes: the contrasts with the widest spread of level effects
            b = self._level_effects(coef) / sd[:, None]
            spread = b.amax(-1) - b.amin(-1)
            candidates = torch.topk(spread, _MAX_CONTRASTS).indices.tolist()
        best = (-math.inf, 0, None, None)
        for j in candidates:
            t, high, low = _best_groups(
                self._level_effects(coef[j]) / sd[j], task.level_counts, task.level_components
            )
            if t > best[0]:
                best = (t, j, high, low)
        return best[1], best[2], best[3]

    def _size(self, task, coef, sd, choice) -> Tensor:
        """Every problem's size of the chosen contrast and groups (B,), in sd."""
        j, high, low = choice
        if task.kind != "categorical":
            sign = 1.0 if bool(high) else -1.0
            return sign * coef[:, j, 0] * _iqr(task.target_std[task.valid]) / sd[:, j]
        b = self._level_effects(coef[:, j])  # (B, K)
        n = task.level_counts.to(b.dtype)
        hi, lo = high.to(b.dtype) * n, low.to(b.dtype) * n
        return ((b * hi).sum(-1) / hi.sum() - (b * lo).sum(-1) / lo.sum()) / sd[:, j]

    def metrics(self, block: dict | None) -> dict[str, float]:
        """The interval, and a regression head's effect in the target's units
        (``_target_units``, ``_target_units_ci_low``, ``_target_units_ci_high``)."""
        out = super().metrics(block)
        units = (block or {}).get("target_units") or {}
        for suffix, key in (("", "value"), ("_ci_low", "ci_low"), ("_ci_high", "ci_high")):
            if units.get(key) is not None:
                out["_target_units" + suffix] = float(units[key])
        return out

    def cells(self, block: dict | None) -> tuple[str, ...]:
        return (ci_text(block, 2) if block else "-",)


# with more class contrasts than this, the groups are searched in the ones whose level
# effects spread most (each search is over every pair of group sizes)
_MAX_CONTRASTS = 8


def _best_groups(b: Tensor, counts: Tensor, components: Tensor) -> tuple[float, Tensor, Tensor]:
    """The ``t`` top levels against the ``u`` bottom ones (by effect ``b``, in sd), over
    every ``t`` and ``u``, that give the largest difference of group means per its
    standard error ``sqrt(1/n_high + 1/n_low)``: one level against one for a single odd
    scanner, half against half for a reliance spread over many. Levels are compared only
    within a component of levels that meet in some class (their effects are identified
    within class only). Returns the ratio and the two level masks.
    """
    device = b.device  # a few numbers: on the host
    b, counts, components = b.cpu(), counts.cpu(), components.cpu()
    best = (-math.inf, None, None)
    k = b.shape[0]
    for comp in torch.unique(components).tolist():
        idx = torch.nonzero(components == comp).flatten()
        if idx.numel() < 2:
            continue
        order = idx[torch.argsort(b[idx], descending=True)]
        n = counts[order].to(torch.float64)
        nb = n * b[order].to(torch.float64)
        top_n, top_s = metrics.prefix_sum(n), metrics.prefix_sum(nb)  # the t highest, t = 1..m
        bot_n, bot_s = metrics.prefix_sum(n.flip(0)), metrics.prefix_sum(nb.flip(0))  # the u lowest
        m = order.numel()
        diff = top_s[:, None] / top_n[:, None] - bot_s[None, :] / bot_n[None, :]
        ratio = diff / (1 / top_n[:, None] + 1 / bot_n[None, :]).sqrt()
        t_idx = torch.arange(m)[:, None]
        u_idx = torch.arange(m)[None, :]
        ratio = ratio.masked_fill(t_idx + u_idx + 2 > m, -math.inf)  # disjoint groups
        flat = int(ratio.argmax())
        t, u = flat // m + 1, flat % m + 1
        if float(ratio.flatten()[flat]) > best[0]:
            high = torch.zeros(k, dtype=torch.bool)
            low = torch.zeros(k, dtype=torch.bool)
            high[order[:t]] = True
            low[order[m - u :]] = True
            best = (float(ratio.flatten()[flat]), high, low)
    if best[1] is None:  # no two comparable levels: level 1 against level 0
        return 0.0, (torch.arange(k) == 1).to(device), (torch.arange(k) == 0).to(device)
    return best[0], best[1].to(device), best[2].to(device)


def _fit(task, x: Tensor, weights: Tensor):
    """:func:`_within_class_fit` of the contrasts' scores on ``x``, with the task's strata
    (and covariate: a regression target within its bins, whose coefficient is dropped);
    a regression head's unit is the prediction's residual sd with the target held fixed,
    a classifier's the score's sd. ``x`` and ``weights`` hold this rank's samples."""
    k = x.shape[1]
    if task.covariate is not None:
        x = torch.cat([x, task.local(task.covariate)[:, None].to(x.dtype)], 1)
    coef, sd = _within_class_fit(
        task.local(task.contrast_scores), x, weights, task.local(task.strata_onehot),
        _rows(task, weights, x), within=task.task == "regression", shard=task.shard,
    )  # fmt: skip
    return coef[..., :k], sd


def _rows(task, weights: Tensor, x: Tensor) -> int:
    """Samples per chunk of :func:`_within_class_fit` under the audit's budget: two
    float64 (B, rows, width) temporaries."""
    width = max(x.shape[1], task.contrast_scores.shape[1], task.strata_onehot.shape[1])
    return task.chunk_rows(weights.shape[0] * width * 2, 8)


def _unit(task) -> str:
    return "residual_sd" if task.task == "regression" else "logit_sd"


def _add_target_units(task, out: dict, raw: Tensor) -> None:
    """A regression head's effect in the prediction's own units (the target's: years, say),
    ``raw`` the unscaled size of every problem."""
    if task.task != "regression":
        return
    block = task.ci_block(raw)
    out["target_units"] = {k: block[k] for k in ("value", "ci_low", "ci_high")}
    if task.cfg.target_unit:
        out["target_units"]["unit"] = task.cfg.target_unit


def _within_class_fit(
    s: Tensor,
    x: Tensor,
    weights: Tensor,
    onehot: Tensor,
    chunk: int | None = None,
    *,
    within: bool = False,
    shard: Shard | None = None,
):
    """Weighted least squares of each column of ``s`` on ``x`` with class fixed effects,
    for every weight vector: coefficients (B, C', K) and the sd of ``s - x coef`` (B, C'),
    taken over all samples or, ``within=True``, within the classes (the residual sd of a
    regression head's prediction with the target held fixed).

    Everything comes from weighted sums accumulated over chunks of samples, so no
    (B, N, K) tensor is ever materialised (B resamples, N samples, K columns); with a
    ``shard`` the samples are this rank's and the sums are added over the ranks.
    """
    # sums in float64: the within-class cross-products are raw sums minus class-mean
    # terms, and float32 cancellation there swamped small within-class variances
    out_dtype = x.dtype
    w, x, s, onehot = (t.to(torch.float64) for t in (weights, x, s, onehot))  # (B, N), ...
    n_b, n = w.shape
    width = max(x.shape[1], s.shape[1], onehot.shape[1])
    step = chunk or stats.chunk_rows(n_b * width * 2, stats.DEFAULT_BUDGET_MB, 8)
    n_c = total(w @ onehot, shard)  # (B, C) weighted class sizes
    # per-class sums of x and s; raw cross-products
    sx_c = w.new_zeros(n_b, onehot.shape[1], x.shape[1])
    sum_sc = w.new_zeros(n_b, onehot.shape[1], s.shape[1])
    sxx, sxs = w.new_zeros(n_b, x.shape[1], x.shape[1]), w.new_zeros(n_b, x.shape[1], s.shape[1])
    for i in range(0, n, step):
        sl = slice(i, i + step)
        wc = w[:, sl, None] * onehot[sl]  # (B, n, C)
        wx = w[:, sl, None] * x[sl]  # (B, n, K)
        sx_c = sx_c + wc.transpose(1, 2) @ x[sl]  # (B, C, K)
        sum_sc = sum_sc + wc.transpose(1, 2) @ s[sl]  # (B, C, C')
        sxx = sxx + wx.transpose(1, 2) @ x[sl]  # (B, K, K)
        sxs = sxs + wx.transpose(1, 2) @ s[sl]  # (B, K, C')
    sx_c, sum_sc, sxx, sxs = (total(t, shard) for t in (sx_c, sum_sc, sxx, sxs))
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
    w_sum = total(w.sum(1)[:, None], shard)  # (B, 1)
    ws, wx_sum, wss = (total(t, shard) for t in (w @ s, w @ x, w @ (s * s)))
    r_mean = (ws - torch.einsum("bk,bjk->bj", wx_sum, coef)) / w_sum
    quad = torch.einsum("bjk,bkl,bjl->bj", coef, sxx, coef)
    cross = torch.einsum("bkj,bjk->bj", sxs, coef)
    r2 = (wss - 2 * cross + quad) / w_sum
    if within:  # minus the spread of the class means of r = s - x coef
        mr = ms - torch.einsum("bck,bjk->bcj", mx, coef)  # (B, C, C')
        var = (r2 - torch.einsum("bc,bcj->bj", n_c, mr**2) / w_sum).clamp_min(0)
        dof = (w_sum - (n_c > 1e-9).sum(1, keepdim=True)).clamp_min(1)
        var = var * w_sum / dof
    else:
        var = (r2 - r_mean**2).clamp_min(0) * w_sum / (w_sum - 1).clamp_min(1)
    return coef.to(out_dtype), var.sqrt().clamp_min(1e-12).to(out_dtype)


def _iqr(x: Tensor) -> float:
    """Interquartile range (the unit of a continuous variable's effect)."""
    q = torch.quantile(x.double(), torch.tensor([0.25, 0.75], dtype=torch.float64, device=x.device))
    return float(q[1] - q[0])
