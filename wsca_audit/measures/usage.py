"""``usage``: the deconfounded, covariance-aware alignment the verdict rests on.

Auxiliary heads are fitted on embeddings centred within each primary class, and
compared with the model's head by the weighted correlation of the two heads' logits
over the data: the cosine of the two weight vectors in the metric of the within-class
covariance (activation patterns, not filter weights; Haufe et al., 2014). A variable
that merely co-varies with the label no longer looks used.

The permutation test is on usage's numerator, the within-class correlation of the
primary logit with the metadata itself (a test on the ratio has little power when a
few directions dominate the covariance; see docs/method.md), and its null is put on
usage's scale by the observed ratio.
"""

from __future__ import annotations

import math

import torch

from .. import correlation as corr
from .base import TESTED_SCHEMA, Measure


class Usage(Measure):
    """Within-class correlation of the primary logits with the auxiliary head's logits."""

    name = "usage"
    label = "usage (deconfounded)"
    tested = True
    panel = "alignment"
    schema = TESTED_SCHEMA
    card_metric = True

    def compute(self, task) -> dict:
        head, weights = task.usage_heads
        aux_logits = head.decision_function(task.Zws)  # (1 + nb, N, K)
        if aux_logits.shape[-1] > 1:
            aux_logits = aux_logits - aux_logits.mean(-1, keepdim=True)
        # each resample removes the label with its own class means (a fixed centring
        # would leave the resample's between-class noise in both sides)
        onehot = task.strata_onehot
        primary = corr.within_class_centered(task.primary_logits_w, weights, onehot)
        aux = corr.within_class_centered(aux_logits, weights, onehot)
        matrix = corr.usage_matrix(primary, aux, weights)
        values = corr.max_abs(matrix)

        npm = task.cfg.n_permutations
        if npm:
            stat = self._numerator(task)
            ratio = float(values[0] / stat[0]) if float(stat[0]) > 0 else 1.0
            null = stat[1:] * ratio
            p = corr.permutation_p(float(stat[0]), stat[1:])
        else:
            null, p = torch.zeros(0), math.nan
        task.per_class["usage"] = {
            "rows": task.contrast_rows,
            "cols": task.level_cols,
            "matrix": task.rows(matrix[0]),
        }
        block = task.ci_block_with_p(values, null, p)
        # the interval of the entry that is largest at the point estimate (see abs_entry_ci)
        block["ci_low"], block["ci_high"] = corr.abs_entry_ci(
            matrix, task.cfg.n_bootstrap, task.cfg.ci_level
        )
        return block

    @staticmethod
    def _numerator(task) -> torch.Tensor:
        """Within-class |corr(primary logits, metadata)|, observed then permuted (1 + P)."""
        target = task.target_matrix
        if task.kind == "categorical":
            perm = torch.nn.functional.one_hot(task.perm_codes, task.k).to(task.dtype)
            perm = perm[..., 1:] if task.k == 2 else perm
        else:
            perm = task.target_std[task.perm_idx][..., None]
        ms = torch.cat([target[None], perm]) - task.class_means(target)[None]
        logits = task.center(task.primary_logits_w)
        weights = task.v[None].expand(1 + task.cfg.n_permutations, task.n)
        return corr.max_abs(corr.usage_matrix(logits, ms, weights))
