"""``wsc``: the weight-space cosine of Wong et al. (MIDL 2026), as published.

Both heads' class vectors are projected onto the principal subspace of the centred
embeddings and compared by their signed cosine (a ``C_primary x C_aux`` matrix in
``per_class["wsc"]``); ``value`` is its largest absolute entry. The null is the same
statistic for probes refitted with the metadata permuted within label strata.
"""

from __future__ import annotations

import math

import torch

from .. import correlation as corr
from .. import stats
from .base import TESTED_SCHEMA, Computed, Measure


class WSC(Measure):
    """The paper's raw weight-space cosine (max-abs over the class-vector matrix)."""

    name = "wsc"
    label = "wsc (paper)"
    explanation = "the weight-space cosine of Wong et al. (MIDL 2026), reported as published"
    tested = True
    show_p = False  # the verdict does not rest on it: its p-value stays in the JSON
    panel = "alignment"
    hatch = "//"
    schema = TESTED_SCHEMA

    def compute(self, task) -> dict:
        cfg = task.cfg
        nf, nb, npm = cfg.n_folds, cfg.n_bootstrap, cfg.n_permutations
        aux_vectors = corr.aux_class_vectors(task.probe.coef_ / task.sd, cfg.center_classes)
        matrix = corr.cosine_matrix(task.primary_vectors, aux_vectors, task.basis)
        # the probe family is [point, folds, bootstraps, permutations]: drop the folds
        keep = torch.cat([torch.tensor([0]), torch.arange(1 + nf, 1 + nf + nb + npm)])
        matrix = matrix[keep.to(matrix.device)]
        values = corr.max_abs(matrix)
        null = values[1 + nb :]
        p = stats.permutation_p(float(values[0]), null) if npm else math.nan
        per_class = {
            "rows": [str(c) for c in range(task.primary_vectors.shape[0])],
            "cols": task.levels,
            "matrix": task.rows(matrix[0]),
        }
        return Computed(task.ci_block_with_p(values, null, p), per_class)
