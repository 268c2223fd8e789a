"""``usage``: the deconfounded, covariance-aware alignment the verdict rests on.

Auxiliary heads are fitted on embeddings centred within each primary class, and
compared with the model's head by the weighted correlation of the two heads' logits
over the data: the cosine of the two weight vectors in the metric of the within-class
covariance (activation patterns, not filter weights; Haufe et al., 2014). A variable
that merely co-varies with the label no longer looks used.

With several levels (K >= 3) or several contrasts (a head of C >= 3 classes), the
largest of many noisy per-level correlations would grow with K however the variable is
coded. Usage is then the first canonical correlation of the two logit sets (any
combination of the levels against any combination of the contrasts), less its chance
level: the squared canonical correlation that heads fitted to the variable permuted
within label strata reach, scaled by the share of the real heads' logit variance that
such noise makes up. A reliance measured through 2, 6 or 30 levels of one variable gives
the same value. The per-level columns stay in ``per_class["usage"]``. When noise alone
would match more than half of the primary logits (levels that span most of a small
embedding), usage is not reported and the verdict rests on the effect.

Intervals are percentile intervals of the bootstrap refits moved to sit on the estimate
(:func:`~wsca_audit.correlation.centred_percentile_ci`): the refits carry more
estimation noise than the point fit, which pulls them below it as a group.

The permutation test is on usage's numerator, the within-class correlation of the
primary logit with the metadata itself (canonical, with several levels or contrasts; a
test on the ratio has little power when a few directions dominate the covariance; see
docs/method.md), and its null is put on usage's scale by the observed ratio.
"""

from __future__ import annotations

import math
from typing import ClassVar

import torch
from torch import Tensor

from .. import correlation as corr
from .. import stats
from ..metrics import canonical_corr, canonical_corr_of_cov, weighted_cov
from .base import TESTED_SCHEMA, Computed, Measure

# Above this (squared) correlation of heads fitted to the permuted variable, usage is
# not reported: noise heads would match more than half of the primary logits' variance,
# the levels span most of the embedding, and a canonical correlation cannot tell a
# reliance from the room the levels take.
MAX_CHANCE_R2 = 0.5


class Usage(Measure):
    """Within-class correlation of the primary logits with the auxiliary head's logits."""

    name = "usage"
    label = "usage (deconfounded)"
    explanation = (
        "the correlation of the model's head with the metadata head after the primary label "
        "is removed (within-class centring), in the metric of the embedding covariance; "
        "usage above {usage} or an effect beyond ±{effect} sd, with a significant "
        "permutation test, means used"
    )
    tested = True
    panel = "alignment"
    # several levels or contrasts add the canonical correlation, its chance level and the
    # noise share the chance level was scaled by (see _canonical)
    schema: ClassVar[dict] = {
        "allOf": [TESTED_SCHEMA],
        "properties": {
            "canonical": {"type": "number", "minimum": 0, "maximum": 1},
            "chance": {"type": "number", "minimum": 0, "maximum": 1},
            "noise_share": {"type": "number", "minimum": 0, "maximum": 1},
            "n_contrasts": {"type": "integer", "minimum": 2},
            "by_output": {
                "type": "object",
                "description": "each output's usage (variables of two levels or continuous)",
                "additionalProperties": {"$ref": "#/$defs/interval"},
            },
        },
    }
    card_metric = True

    def compute(self, task) -> dict:
        head, weights = task.usage_heads
        nb, npm = task.cfg.n_bootstrap, task.cfg.n_permutations
        # which levels carry it: the per-level matrix of the point fit
        primary0, aux0, w0 = self._logits(task, head, weights, 0, 1)
        matrix0 = corr.usage_matrix(primary0, aux0, w0, task.shard)
        per_class = {
            "rows": task.contrast_rows,
            "cols": task.level_cols,
            "matrix": task.rows(matrix0[0]),
        }
        if task.selects:
            block = self._canonical(task, head, weights)
            per_output = self._by_output(task, head, weights)
            if per_output is not None:
                block["by_output"] = per_output
        else:  # one contrast, one column: the correlation itself
            primary, aux, w = self._logits(task, head, weights, 0, 1 + nb)
            matrix = corr.usage_matrix(primary, aux, w, task.shard)
            values = corr.max_abs(matrix)
            block = task.ci_block(values)
            # the interval of the signed entry, centred on the estimate (see abs_entry_ci)
            block["ci_low"], block["ci_high"] = stats.abs_entry_ci(
                matrix, nb, task.cfg.ci_level, centred=True
            )
        if npm:
            stat = self._numerator(task)
            reported = math.isfinite(block["value"])
            ok = float(stat[0]) > 0 and reported
            ratio = float(block["value"] / stat[0]) if ok else 1.0
            null = stat[1:] * ratio
            block["p_value"] = stats.permutation_p(float(stat[0]), stat[1:])
            if reported:  # on usage's scale (none when usage is not reported)
                block["null_mean"] = float(null.double().mean())
                block["null_q95"] = stats.null_quantile(null)
        else:
            block["p_value"] = math.nan
        return Computed(block, per_class)

    @staticmethod
    def _logits(task, head, weights, start: int, stop: int) -> tuple[Tensor, Tensor, Tensor]:
        """Problems ``start:stop``: the primary contrasts and the auxiliary logits, each
        centred within class under that problem's weights (each resample removes the
        label with its own class means), and those weights; on this rank's rows (as the
        usage heads' weights are; the class means are the audit's)."""
        aux = torch.einsum("nd,pkd->pnk", task.Zws, head.coef_[start:stop])
        aux = aux + head.intercept_[start:stop, None, :]
        if aux.shape[-1] > 1:  # a softmax head: its logits relative to their mean
            aux = aux - aux.mean(-1, keepdim=True)
        w, onehot = weights[start:stop], task.local(task.strata_onehot)
        scores = task.local(task.contrast_scores_w)
        primary = stats.within_class_centered(scores, w, onehot, task.shard)
        return primary, stats.within_class_centered(aux, w, onehot, task.shard), w

    def _canonical(self, task, head, weights) -> dict:
        """Several levels or contrasts: the canonical correlation of the two logit sets,
        less the part that the auxiliary heads' estimation noise explains by chance.

        The chance level is measured on refits with the variable permuted within label
        strata (heads of pure noise), and scaled by the share of the real heads' logit
        variance that such noise makes up (``noise_share``): well-encoded levels are
        estimated with little noise and lose little, poorly encoded ones lose all of it.
        """
        nb, npm = task.cfg.n_bootstrap, task.cfg.n_permutations
        n_problems = weights.shape[0]
        k = head.coef_.shape[1]
        step = task.chunk_rows(task.n * (k + task.contrasts.shape[0]) * 4)
        p = task.contrasts.shape[0]
        rho, covs = [], []
        for i in range(0, n_problems, step):
            j = min(i + step, n_problems)
            primary, aux, w = self._logits(task, head, weights, i, j)
            # one joint covariance: the canonical correlation and the noise share's
            # auxiliary block both come from it
            cov = weighted_cov(torch.cat([primary, aux], -1), w, task.shard)
            rho.append(canonical_corr_of_cov(cov, p).to(aux.dtype))
            covs.append(cov[:, p:, p:])
        rho, covs = torch.cat(rho), torch.cat(covs)
        raw, null = rho[: 1 + nb], rho[1 + nb :]
        if not npm:
            task.warn(
                f"{task.name}: with n_permutations=0 usage is the canonical correlation "
                "without its chance level removed (it grows with the number of levels and "
                "classes)"
            )
        share = stats.noise_share(covs[0], covs[1 + nb :]) if npm else 0.0
        noise = stats.chance_r2(null) if npm else 0.0
        chance = noise * share
        extra = {"canonical": float(raw[0]), "chance": math.sqrt(chance), "noise_share": share}
        if noise > MAX_CHANCE_R2:
            task.warn(
                f"{task.name}: usage is not reported: heads fitted to its {task.k} levels "
                f"permuted match {noise:.0%} of the primary logits' variance by chance (the "
                f"levels span most of what the {task.Zws.shape[1]}-d embedding varies in); "
                "the verdict rests on the effect. Grouping the levels or a richer embedding "
                "makes it measurable."
            )
            return {"value": math.nan, "ci_low": math.nan, "ci_high": math.nan, **extra}
        values = stats.chance_corrected(raw, chance)
        lo, hi = stats.centred_percentile_ci(values, nb, task.cfg.ci_level)
        # a correlation's size: the moved interval stays within [0, 1]
        lo, hi = min(max(lo, 0.0), 1.0), min(max(hi, 0.0), 1.0)
        if task.contrasts.shape[0] >= 2:
            # several contrasts: an upper bound for each; the verdict's usage route wants
            # one contrast (see decision.py)
            extra["n_contrasts"] = int(task.contrasts.shape[0])
        return {"value": float(values[0]), "ci_low": lo, "ci_high": hi, **extra}

    def _by_output(self, task, head, weights) -> dict | None:
        """Each output's usage, as a head of one output would have it (the correlation of
        its contrast with the one-column auxiliary head, its interval the signed entry's),
        for a variable of two levels or a continuous one; None for three or more levels
        (a maximum over levels per output is not calibrated)."""
        if task.contrasts.shape[0] < 2 or len(task.level_cols) != 1:
            return None
        nb = task.cfg.n_bootstrap
        primary, aux, w = self._logits(task, head, weights, 0, 1 + nb)
        matrix = corr.usage_matrix(primary, aux, w, task.shard)  # (1 + nb, C', 1)
        out = {}
        for j, name in enumerate(task.contrast_rows):
            entry = matrix[:, j : j + 1]
            lo, hi = stats.abs_entry_ci(entry, nb, task.cfg.ci_level, centred=True)
            out[name] = {"value": float(entry[0].abs().max()), "ci_low": lo, "ci_high": hi}
        return out

    @staticmethod
    def _numerator(task) -> torch.Tensor:
        """Within-class correlation of the primary logits with the metadata itself,
        observed then permuted (1 + P): the canonical correlation when a measure selects,
        else ``|corr|``. On this rank's samples (the permutations' columns are), with the
        audit's sums."""
        target = task.local(task.target_matrix)
        if task.kind == "categorical":
            perm = torch.nn.functional.one_hot(task.perm_codes, task.k).to(task.dtype)
            perm = perm[..., 1:] if task.k == 2 else perm
        else:
            perm = task.target_std[task.perm_idx][..., None]
        means = task.local(task.class_means(task.target_matrix))[None]
        logits = task.local(task.center(task.contrast_scores_w))
        v = task.local(task.v)
        if not task.selects:
            ms = torch.cat([target[None], perm]) - means
            weights = v[None].expand(1 + task.cfg.n_permutations, v.shape[0])
            return corr.max_abs(corr.usage_matrix(logits, ms, weights, task.shard))
        ms = torch.cat([target[None], perm])
        step = task.chunk_rows(task.n * (ms.shape[-1] + logits.shape[-1]) * 4)
        return torch.cat([
            canonical_corr(logits, ms[i : i + step] - means,
                           v[None].expand(ms[i : i + step].shape[0], v.shape[0]), shard=task.shard)
            for i in range(0, ms.shape[0], step)
        ])  # fmt: skip
