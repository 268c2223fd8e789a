"""What :func:`~wsca_audit.fix.mitigation.mitigate` returns: the patched model, the new
head, and the audits before and after, with their views (dict, table, figure, files)."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from ..formatting import ci_text, json_safe, png_bytes, text_table
from ..performance import rankable
from ..report import AuditResult
from .erasure import LinearEraser
from .patching import ERASER_FILE, HEAD_FILE

__all__ = ["Mitigation"]

BEFORE_AFTER_COLOURS = ("#c0392b", "#27ae60")  # the figure's bars: original, patched


@dataclass(eq=False, repr=False, kw_only=True)
class Mitigation:
    """The patched model, its new head, and the audits before and after (held-out part).

    Attributes
    ----------
    variable : str
        The metadata variable removed from the head.
    method : {"erase", "dfr", "both"}
        How the new head was fitted.
    model : torch.nn.Module or None
        A patched deep copy of the model (None where the head could not be patched).
    head_ : torch.nn.Linear
        The new head (float32, on the CPU).
    before, after : AuditResult
        The original and the patched head, audited on the held-out part.
    fit_index_, holdout_index_ : numpy.ndarray
        Positions, in the auditor's samples, of the fitting and the held-out part.
    cost_ : dict
        The patched minus the original primary metric on the held-out part
        (``metric``, ``value``, ``ci_low``, ``ci_high``; paired bootstrap).
    head_source_ : str
        The module name of the model's head (what ``model`` has patched).
    settings_ : dict
        ``holdout``, ``seed``, ``n_fit``, ``n_holdout``, ``kind``, ``n_subsamples``,
        ``runtime_s``, and what the fit chose (``erased_rank``; ``C`` and
        ``worst_group_accuracy_by_C`` for DFR).
    eraser_ : LinearEraser or None
        The eraser folded into the head (``"erase"`` and ``"both"``).
    not_patched_reason_ : str or None
        Why ``model`` is None (None where it was patched).
    """

    variable: str
    method: str
    model: nn.Module | None
    head_: nn.Linear
    before: AuditResult
    after: AuditResult
    fit_index_: np.ndarray
    holdout_index_: np.ndarray
    cost_: dict
    head_source_: str
    settings_: dict
    eraser_: LinearEraser | None = None
    not_patched_reason_: str | None = None
    # the figure as PNG, drawn once (save, the card and MLflow share it)
    _png: bytes | None = field(default=None, init=False, repr=False, compare=False)

    def __repr__(self) -> str:
        return (
            f"Mitigation(variable={self.variable!r}, method={self.method!r}, "
            f"patched={self.model is not None}, n_holdout={self.settings_.get('n_holdout')})"
        )

    # ------------------------------------------------------------------ views
    def _side(self, res: AuditResult) -> dict:
        """One audit seen from the variable: its verdict, usage and effect, and the primary
        metric overall, per level and in the worst group (the report's ranking rule)."""
        task = res.tasks.get(self.variable, {})
        perf = res.performance
        metric = perf.get("metric")
        levels = (perf.get("by_group") or {}).get(self.variable) or {}
        by_level = {lvl: v.get(metric) for lvl, v in levels.items()}
        ranked = rankable(levels, metric)
        worst = None
        if ranked:
            lvl = min(ranked)[1]
            worst = {"level": lvl, "n": levels[lvl].get("n"), **by_level[lvl]}
        return {
            "verdict": task.get("verdict"),
            "usage": task.get("usage"),
            "effect": task.get("effect"),
            "reason": task.get("reason"),
            "performance": {
                "metric": metric,
                "overall": perf.get("overall"),
                "by_level": by_level,
                "worst_group": worst,
                "worst_level": worst,  # deprecated alias of worst_group
            },
            "verdicts": res.verdicts,
        }

    def to_dict(self) -> dict:
        """``{"variable", "method", "before", "after", "cost", "patched", "head_source",
        "settings"}``; each side's ``performance`` holds ``metric``, ``overall``,
        ``by_level`` and ``worst_group`` (``worst_level``: the same block, deprecated)."""
        return json_safe(
            {
                "variable": self.variable,
                "method": self.method,
                "before": self._side(self.before),
                "after": self._side(self.after),
                "cost": self.cost_,
                "patched": self.model is not None,
                "head_source": self.head_source_,
                "settings": self.settings_,
            }
        )

    def rows(self) -> list[tuple[str, str, str]]:
        """(quantity, before, after) rows: usage, effect, verdict, the primary metric
        overall and in the worst group, and the cost."""
        b, a = self._side(self.before), self._side(self.after)
        metric = b["performance"]["metric"] or "metric"

        def worst(side):
            w = side["performance"]["worst_group"]
            return f"{self.variable}={w['level']}: {ci_text(w)}" if w else "-"

        return [
            (f"{self.variable}: usage", ci_text(b["usage"]), ci_text(a["usage"])),
            (f"{self.variable}: effect (logit sd)", ci_text(b["effect"], 2), ci_text(a["effect"], 2)),
            (f"{self.variable}: verdict", str(b["verdict"]), str(a["verdict"])),
            (f"{metric} overall", ci_text(b["performance"]["overall"]), ci_text(a["performance"]["overall"])),
            (f"{metric}, worst {self.variable} group", worst(b), worst(a)),
            (f"cost ({metric}, after - before)", "", ci_text(self.cost_)),
            *self._evidence_rows(),
        ]  # fmt: skip

    def _evidence_rows(self) -> list[tuple[str, str, str]]:
        """Input-side evidence filed with both audits (``add_evidence`` on ``before`` and
        ``after``): the intervention effect and each attribution region's share, so the
        fix shows on the image, not only in the score."""
        b, a = self.before.evidence, self.after.evidence
        rows = []
        for key, data in (b.get("interventions") or {}).items():
            other = (a.get("interventions") or {}).get(key)
            if other:
                rows.append((f"intervention '{key}' (sd)", ci_text(data, 2), ci_text(other, 2)))
        for key, data in (b.get("attribution") or {}).items():
            other = (a.get("attribution") or {}).get(key) or {}
            for region, share in (data.get("regions") or {}).items():
                after = (other.get("regions") or {}).get(region)
                if after:
                    label = f"{key}: attribution share in '{region}'"
                    rows.append((label, ci_text(share), ci_text(after)))
        return rows

    def summary(self) -> str:
        """A fixed-width before/after table."""
        head = (
            f"Mitigation of '{self.variable}' ({self.method}), audited on "
            f"{self.settings_['n_holdout']} held-out samples (fitted on {self.settings_['n_fit']})"
        )
        why = self.not_patched_reason_
        note = f"\n(the model was not patched: {why}; head_ holds the new head)" if why else ""
        return "\n".join([head, *text_table([("", "before", "after"), *self.rows()])]) + note

    def figure(self):
        """Usage and effect of the variable (left) and the primary metric overall and in
        the worst group (right), before and after, with the audits' intervals."""
        from matplotlib.figure import Figure

        fig = Figure(figsize=(8.5, 3.2), layout="constrained")
        ax1, ax2 = fig.subplots(1, 2)
        b, a = self._side(self.before), self._side(self.after)
        _bars(ax1, ["usage", "effect (logit sd)"],
              [(b["usage"], a["usage"]), (b["effect"], a["effect"])])  # fmt: skip
        ax1.axhline(0, color="grey", lw=0.8)
        ax1.set_title(f"{self.variable}: {b['verdict']} -> {a['verdict']}", fontsize=9)
        metric = b["performance"]["metric"] or "metric"
        overall = (b["performance"]["overall"] or {}, a["performance"]["overall"] or {})
        worst = (b["performance"]["worst_group"] or {}, a["performance"]["worst_group"] or {})
        _bars(ax2, [f"{metric} overall", f"{metric}, worst {self.variable} group"],
              [overall, worst])  # fmt: skip
        lows = [_num(bl.get("ci_low", bl.get("value"))) for bl in (*overall, *worst)]
        lowest = np.nanmin(lows) if not np.all(np.isnan(lows)) else 0.0
        ax2.set_ylim(max(0.0, lowest - 0.05), 1.01)  # the differences are small: zoom in
        ax2.set_title(f"cost {ci_text(self.cost_)} ({self.method})", fontsize=9)
        return fig

    def figure_png(self) -> bytes:
        """:meth:`figure` as PNG bytes, drawn on the first call only."""
        if self._png is None:
            self._png = png_bytes(self.figure())
        return self._png

    # ------------------------------------------------------------------ files
    def save(self, directory: str | Path) -> Path:
        """Write ``mitigation.json``, ``mitigation.png``, the new head (``head.safetensors``:
        ``weight`` and ``bias``, loads with ``safetensors.torch.load_file`` and no pickle),
        the eraser where there is one, and the two audits (``before/``, ``after/``)."""
        from safetensors.torch import save_file

        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        (out / "mitigation.json").write_text(json.dumps(self.to_dict(), indent=2, allow_nan=False))
        (out / "mitigation.png").write_bytes(self.figure_png())
        meta = {"variable": self.variable, "method": self.method, "source": str(self.head_source_)}
        state = {k: v.detach().cpu().contiguous() for k, v in self.head_.state_dict().items()}
        save_file(state, str(out / HEAD_FILE), metadata=meta)
        if self.eraser_ is not None:
            save_file(
                {"proj": self.eraser_.proj.cpu().contiguous(), "mean": self.eraser_.mean.cpu().contiguous()},
                str(out / ERASER_FILE),
                metadata=meta,
            )  # fmt: skip
        self.before.save(out / "before")
        self.after.save(out / "after")
        return out


def _bars(ax: Any, labels: list[str], pairs: list[tuple[dict | None, dict | None]]) -> None:
    """Before/after bars with their intervals, one pair per label."""
    x = np.arange(len(labels))
    for j, (side, colour) in enumerate(zip(("before", "after"), BEFORE_AFTER_COLOURS)):
        blocks = [p[j] or {} for p in pairs]
        v = np.array([_num(bl.get("value")) for bl in blocks])
        lo = np.array([_num(bl.get("ci_low")) for bl in blocks])
        hi = np.array([_num(bl.get("ci_high")) for bl in blocks])
        err = np.nan_to_num(np.abs(np.stack([v - lo, hi - v])))
        ax.bar(x + (j - 0.5) * 0.38, v, 0.38, yerr=err, capsize=3, color=colour, label=side)
    ax.set_xticks(x, labels)
    ax.legend(fontsize=8)


def _num(x: Any) -> float:
    return float(x) if isinstance(x, (int, float)) else math.nan
