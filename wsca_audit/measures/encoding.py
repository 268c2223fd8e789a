"""``encoding``: can the variable be read from the embedding at all? (held-out AUC or R²)

A categorical variable is scored by the paper's softmax probe on standardised
embeddings, a continuous one by a ridge head; either way each sample is scored by the
cross-fitting fold head that did not see it, and the interval resamples those held-out
predictions with the audit's bootstrap weights.
"""

from __future__ import annotations

from typing import ClassVar

import torch

from ..formatting import ci_text
from ..metrics import macro_ovr_auc, weighted_auc, weighted_r2
from .base import Measure


class Encoding(Measure):
    """Held-out AUC (categorical) or R² (continuous) of the variable from the embedding."""

    name = "encoding"
    label = "encoding"
    explanation = "whether the metadata can be read from the embedding at all (held-out AUC or R²)"
    panel = "encoding"
    schema: ClassVar[dict] = {
        "allOf": [{"$ref": "#/$defs/interval"}],
        "required": ["metric"],
        "properties": {"metric": {"enum": ["auc", "r2"]}},
    }

    def compute(self, task) -> dict:
        v = task.v
        # the held-out scores of all N samples, under the point weights and each resample
        if task.kind == "categorical":
            held = task.held_out(task.probe, 1, task.Zs)
            if task.k == 2:
                values = task.boot.apply(lambda w: weighted_auc(held[:, 0], task.codes == 1, w * v))
            else:
                prob = torch.softmax(held, 1)
                values = task.boot.apply(lambda w: macro_ovr_auc(prob, task.codes, w * v))
            metric = "auc"
        else:
            nf, t = task.cfg.n_folds, task.target_std
            ridge = task.fit(
                "squared",
                task.Zs,
                1,
                t[None].expand(nf, task.n),
                task.folds * v,
                torch.zeros(nf, dtype=torch.long),
            )
            pred = task.held_out(ridge, 0, task.Zs)[:, 0]
            values = task.boot.apply(lambda w: weighted_r2(pred, t, w * v))
            metric = "r2"
        return {"metric": metric, **task.ci_block(values)}

    def cells(self, block: dict | None) -> tuple[str, ...]:
        return (f"{block['metric']} {ci_text(block)}",) if block else ("-",)
