"""Performance by subgroup: the primary metric for every level of every metadata variable.

"How does the model perform per scanner / site / sex?" is the first question a clinical
reviewer asks, and the "disaggregated quantitative analyses" of a model card (Mitchell
et al., 2019; unitary per variable, intersectional for pairs on request). It needs no
second forward pass: the primary logits are the embeddings through the head.

The vocabulary is Fairlearn's ``MetricFrame`` (``overall``, ``by_group``,
``difference()``, ``ratio()``, ``group_min()``, ``group_max()``);
:meth:`wsca_audit.AuditResult.metric_frame` gives that view of a report. The numbers are
computed in torch with the audit's bootstrap weights, so every metric of every group has
an interval at the audit's ``ci_level``; Fairlearn's ``MetricFrame`` is the reference in the tests.

Metrics (two classes): ``auc`` of the logit contrast, ``accuracy``, ``sensitivity`` and
``specificity`` at the model's own decision (``argmax``); more classes: ``accuracy`` and
``macro_auc``; multi-label: ``macro_auc``; regression: ``r2`` and ``mae`` (the worst group
is the one with the largest error).
Continuous variables are grouped by quartile.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from .errors import AuditError
from .levels import code_levels
from .primary import metric_values
from .resampling import Bootstrap
from .stats import ci_block

__all__ = [
    "LOWER_IS_BETTER",
    "MIN_GROUP_SIZE",
    "SubgroupFrame",
    "group_codes",
    "rankable",
    "subgroup_performance",
]

MIN_GROUP_SIZE = 10  # smaller groups are listed (with n) but not ranked as worst
LOWER_IS_BETTER = frozenset({"mae"})  # the worst group of these has the largest value


def rankable(levels: dict, metric: str) -> list[tuple[float, str]]:
    """(value, level) of the levels that may be called worst or best: a finite metric
    and at least :data:`MIN_GROUP_SIZE` samples (``levels``: one ``by_group`` entry).

    Examples
    --------
    >>> rankable({"a": {"n": 50, "auc": {"value": 0.9}}, "b": {"n": 3, "auc": {"value": 0.5}}},
    ...          "auc")
    [(0.9, 'a')]
    """
    out = []
    for name, entry in levels.items():
        value = (entry.get(metric) or {}).get("value")
        if value is not None and np.isfinite(value) and entry.get("n", 0) >= MIN_GROUP_SIZE:
            out.append((float(value), name))
    return out


def group_codes(values: np.ndarray, kind: str) -> tuple[np.ndarray, list[str]]:
    """Group index per sample (-1: missing) and group names; continuous variables by
    quartile (see :func:`wsca_audit.levels.code_levels`)."""
    levels = code_levels(values, kind, n_bins=4, binning="quantile")
    return levels.codes, levels.labels


def subgroup_performance(
    logits: Tensor,
    labels: Tensor,
    columns: dict[str, np.ndarray],
    kinds: dict[str, str],
    boot: Tensor | Bootstrap,
    *,
    pairs: list[tuple[str, str]] | None = None,
    level: float = 0.95,
    task: str | None = None,
) -> dict:
    """The report's ``performance`` section.

    Parameters
    ----------
    logits : Tensor (N, n_outputs)
        The primary head's logits.
    labels : Tensor
        Class indices (N,), a 0/1 label matrix (N, L), or regression targets (N,).
    columns, kinds : the metadata columns and their kinds.
    boot : Tensor (B, N) or Bootstrap
        Bootstrap count weights (B may be 0), or the audit's
        :class:`~wsca_audit.resampling.Bootstrap` (read a block of resamples at a time).
    pairs : list of (str, str), optional
        Variable pairs to cross (intersectional groups ``"a=x & b=y"``).
    task : str, optional
        The head's kind (see :func:`wsca_audit.primary.metric_values`): a regression
        head is compared by ``mae`` (the worst group has the largest error), a
        multi-label head by ``macro_auc``.

    Returns
    -------
    dict
        ``{"metric", "overall", "metrics": {name: block}, "by_group": {var: {level: {"n",
        <metric>: block}}}, "worst_group": {...}}``; every block is ``{"value", "ci_low",
        "ci_high"}``.

    Examples
    --------
    >>> import numpy as np, torch
    >>> logits = torch.tensor([[0.0, 1.0], [0.0, -1.0], [0.0, 2.0], [0.0, -2.0]] * 10)
    >>> labels = torch.tensor([1, 0, 0, 1] * 10)
    >>> site = np.array(["a", "a", "b", "b"] * 10)
    >>> perf = subgroup_performance(logits, labels, {"site": site}, {"site": "categorical"},
    ...                             torch.zeros(0, 40))
    >>> perf["by_group"]["site"]["a"]["accuracy"]["value"], perf["worst_group"]["level"]
    (1.0, 'b')
    """
    n = logits.shape[0]
    if not isinstance(boot, Bootstrap):  # a caller's count matrix
        boot = Bootstrap.from_counts(boot.to(logits.device))
    nb = boot.n_resamples
    values = boot.apply(lambda w: metric_values(logits, labels, w, task))
    overall = {k: ci_block(v, nb, level) for k, v in values.items()}
    metric = next(m for m in ("auc", "mae", "accuracy", "macro_auc") if m in overall)
    sign = -1.0 if metric in LOWER_IS_BETTER else 1.0  # ranked so that the worst is smallest

    groups: dict[str, tuple[np.ndarray, list[str]]] = {
        name: group_codes(values, kinds.get(name, "categorical"))
        for name, values in columns.items()
    }
    for a, b in pairs or []:
        ca, na = groups[a]
        cb, nb_names = groups[b]
        ok = (ca >= 0) & (cb >= 0)
        combo = np.where(ok, ca * max(len(nb_names), 1) + cb, -1)
        used, inv = np.unique(combo[ok], return_inverse=True)
        codes = np.full(n, -1, dtype=np.int64)
        codes[ok] = inv
        names = [f"{a}={na[u // len(nb_names)]} & {b}={nb_names[u % len(nb_names)]}" for u in used]
        groups[f"{a} x {b}"] = (codes, names)

    by_group: dict[str, dict] = {}
    ranked = []
    for name, (codes, names) in groups.items():
        codes_t = torch.as_tensor(codes, device=logits.device)
        entry = {}
        for g, level_name in enumerate(names):
            mask = (codes_t == g).to(boot.dtype)
            m = boot.apply(lambda w, mask=mask: metric_values(logits, labels, w * mask, task))
            size = int(mask.sum())
            entry[level_name] = {"n": size, **{k: ci_block(v, nb, level) for k, v in m.items()}}
        ranked += [(sign * v, name, level_name) for v, level_name in rankable(entry, metric)]
        by_group[name] = entry

    out = {"metric": metric, "overall": overall[metric], "metrics": overall, "by_group": by_group}
    if ranked:
        worst = min(ranked)
        best = max(ranked)
        out["worst_group"] = {
            "variable": worst[1],
            "level": worst[2],
            "metric": metric,
            **by_group[worst[1]][worst[2]][metric],
            "n": by_group[worst[1]][worst[2]]["n"],
            "best": {"variable": best[1], "level": best[2], "value": sign * best[0]},
            "gap_to_best": abs(best[0] - worst[0]),
            "gap_to_overall": sign * (overall[metric]["value"] - sign * worst[0]),
        }
    return out


class SubgroupFrame:
    """Fairlearn ``MetricFrame``-style view of a report's ``performance`` section."""

    def __init__(self, performance: dict, variable: str | None = None) -> None:
        try:
            import pandas as pd
        except ImportError as exc:  # pragma: no cover - depends on what is installed
            raise AuditError("metric_frame() needs pandas (`pip install pandas`)") from exc
        if not performance:
            raise AuditError("the report has no performance section (the audit had no targets)")
        groups = performance.get("by_group", {})
        if variable is not None and variable not in groups:
            raise AuditError(f"no subgroups for {variable!r}; have {sorted(groups)}")
        rows, cis = {}, {}
        for var, levels in groups.items():
            if variable is not None and var != variable:
                continue
            for level, entry in levels.items():
                rows[(var, level)] = {
                    "n": entry.get("n"),
                    **{k: b.get("value") for k, b in entry.items() if isinstance(b, dict)},
                }
                cis[(var, level)] = {k: b for k, b in entry.items() if isinstance(b, dict)}
        index = pd.MultiIndex.from_tuples(list(rows), names=["variable", "level"])
        self.by_group = pd.DataFrame(list(rows.values()), index=index)
        self.overall = pd.Series(
            {k: b.get("value") for k, b in performance.get("metrics", {}).items()}, dtype=float
        )
        self._cis = cis

    @property
    def _metrics(self):
        return self.by_group.drop(columns=["n"])

    def group_min(self):
        """Per metric, the smallest group value."""
        return self._metrics.min()

    def group_max(self):
        """Per metric, the largest group value."""
        return self._metrics.max()

    def difference(self):
        """Per metric, the largest minus the smallest group value."""
        return self.group_max() - self.group_min()

    def ratio(self):
        """Per metric, the smallest over the largest group value."""
        return self.group_min() / self.group_max()

    def ci(self, metric: str):
        """A DataFrame of ``value``, ``ci_low``, ``ci_high`` of ``metric`` per group."""
        import pandas as pd

        return pd.DataFrame({k: v.get(metric, {}) for k, v in self._cis.items()}).T.rename_axis(
            ["variable", "level"]
        )
