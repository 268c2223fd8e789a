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
        nb, v = task.cfg.n_bootstrap, task.v
        weights = torch.cat([v[None], task.boot * v]) if nb else v[None]
        if task.kind == "categorical":
            held = task.held_out(task.probe, 1, task.Zs)
            if task.k == 2:
                values = weighted_auc(held[:, 0], task.codes == 1, weights)
            else:
                values = macro_ovr_auc(torch.softmax(held, 1), task.codes, weights)
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
            values = weighted_r2(task.held_out(ridge, 0, task.Zs)[:, 0], t, weights)
            metric = "r2"
        return {"metric": metric, **task.ci_block(values)}

    def cells(self, block: dict | None) -> tuple[str, ...]:
        return (f"{block['metric']} {ci_text(block)}",) if block else ("-",)
