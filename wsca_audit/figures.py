"""The report's figures: the summary (alignment bars and encoding per task), the primary
metric by subgroup (a forest plot) and the per-class matrices of a multi-class head; and
the paths and captions every output (files, HTML, card, MLflow) shows them under.

Each function reads the JSON-ready parts of a report, so a report loaded from disk or
from MLflow is drawn like a fresh one, and returns a ``matplotlib.figure.Figure`` (no
pyplot state is touched) or None when there is nothing to draw. Drawing is the slow part
of writing a report: :class:`wsca_audit.AuditResult` draws each figure once and keeps
the PNG.
"""

from __future__ import annotations

from typing import Any

from .formatting import percent
from .verdict import COLOURS, USES

__all__ = [
    "EVIDENCE_FIGURES",
    "PERFORMANCE_FIGURE",
    "PER_CLASS_FIGURE",
    "SUMMARY_FIGURE",
    "evidence_caption",
    "page_captions",
    "per_class_figure",
    "performance_figure",
    "summary_figure",
]

SUMMARY_FIGURE = "figures/wsca_summary.png"
PERFORMANCE_FIGURE = "figures/performance.png"
PER_CLASS_FIGURE = "figures/per_class_wsc.png"
EVIDENCE_FIGURES = "figures/evidence"

NO_VERDICT_COLOUR = "#999"
WORST_COLOUR = "#c0392b"


def page_captions(measures: list, level: float = 0.95) -> dict[str, str]:
    """The caption of each of the report's own figures, by path (``level``: the CI's).

    Examples
    --------
    >>> page_captions([], 0.9)[PERFORMANCE_FIGURE]
    'primary metric by subgroup with 90% CIs'
    """
    bars = [m.name for m in _bar_order([m for m in measures if m.panel == "alignment"])]
    what = " and ".join(bars) if bars else "alignment"
    return {
        SUMMARY_FIGURE: f"WSCA summary: {what} per variable, and encoding, with {percent(level)} CIs",
        PER_CLASS_FIGURE: "per-class wsc matrices of the multi-class head",
        PERFORMANCE_FIGURE: f"primary metric by subgroup with {percent(level)} CIs",
    }


def _err(value: float, block: dict) -> tuple[float, float]:
    """Error-bar lengths below and above ``value`` (none where an end is missing)."""
    lo = block.get("ci_low") if block.get("ci_low") is not None else value
    hi = block.get("ci_high") if block.get("ci_high") is not None else value
    return max(value - lo, 0), max(hi - value, 0)


# --------------------------------------------------------------------------- summary
def _bar_order(bars: list) -> list:
    """Filled bars first: the measures the verdict rests on lead."""
    return sorted(bars, key=lambda m: m.hatch is not None)


def summary_figure(tasks: dict, measures: list, thresholds: dict[str, float]):
    """Bars of the alignment measures (usage, wsc, ...; left) and encoding (right) per
    task, with their intervals: each measure declares its panel (``measure.panel``).

    Parameters
    ----------
    tasks : dict
        ``report["tasks"]``.
    measures : list of Measure
        The measures the report holds, in report order.
    thresholds : dict
        The numeric thresholds in force (``usage``, ``auc``, ``r2``; missing ones are
        not drawn).
    """
    from matplotlib.figure import Figure

    names = list(tasks)
    fig = Figure(figsize=(max(6.0, 1.6 * len(names) + 4), 3.8), layout="constrained")
    ax, ax2 = fig.subplots(1, 2, width_ratios=[2, 1])
    colours = [COLOURS.get(tasks[n].get("verdict"), NO_VERDICT_COLOUR) for n in names]
    _alignment_panel(ax, tasks, [m for m in measures if m.panel == "alignment"], colours,
                     thresholds)  # fmt: skip
    enc = next((m for m in measures if m.panel == "encoding"), None)
    if enc is not None:
        _encoding_panel(ax2, tasks, enc.report_key, colours, thresholds)
    ax2.set_xticks(range(len(names)), names, rotation=20)
    ax2.set_xlim(-0.5, len(names) - 0.3)
    ax2.set_title("Encoding (held-out)", fontsize=9)
    return fig


def _alignment_panel(ax: Any, tasks: dict, bars: list, colours: list, thr: dict) -> None:
    names = list(tasks)
    bars = _bar_order(bars)
    width = 0.76 / max(len(bars), 1)
    null_label = "null 95%"  # the null's 95% quantile (report key null_q95), not a CI
    for j, m in enumerate(bars):
        offset = (j - (len(bars) - 1) / 2) * width
        blocks = [tasks[n].get(m.report_key) or {} for n in names]
        vals = [b.get("value") or 0.0 for b in blocks]
        ends = [_err(v, b) for v, b in zip(vals, blocks)]
        ax.bar(
            [i + offset for i in range(len(names))],
            vals,
            width=width,
            yerr=[[e[0] for e in ends], [e[1] for e in ends]],
            capsize=3,
            color="white" if m.hatch else colours,
            edgecolor=colours,
            hatch=m.hatch,
            label=m.name,
        )
        nulls = [(i + offset, b["null_q95"]) for i, b in enumerate(blocks)
                 if b.get("null_q95") is not None]  # fmt: skip
        if nulls:
            ax.scatter(*zip(*nulls), marker="_", s=200, color="black", label=null_label,
                       zorder=3)  # fmt: skip
            null_label = None
    if "usage" in thr:
        ax.axhline(thr["usage"], color="#c0392b", ls="--", lw=1, label=f"'{USES}' threshold")
    ax.set_xticks(range(len(names)), names, rotation=20)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("|correlation| (max over classes)")
    ax.set_title(
        "Head alignment\n"
        + ", ".join(f"{'hatched' if m.hatch else 'filled'}: {m.label}" for m in bars),
        fontsize=9,
    )
    ax.legend(fontsize=8, loc="upper right")


def _encoding_panel(ax: Any, tasks: dict, key: str, colours: list, thr: dict) -> None:
    lows = []
    for i, n in enumerate(tasks):
        enc = tasks[n].get(key) or {}
        v = enc.get("value") or 0.0
        lows.append(v)
        below, above = _err(v, enc)
        ax.errorbar(i, v, yerr=[[below], [above]], fmt="o", capsize=3, color=colours[i])
        ax.annotate(enc.get("metric", ""), (i, v), textcoords="offset points", xytext=(6, 0),
                    fontsize=7)  # fmt: skip
        # each task's own encoding threshold (AUC or R²), as a short dotted mark
        t_enc = thr.get("auc" if enc.get("metric", "auc") == "auc" else "r2")
        if t_enc is not None:
            ax.hlines(t_enc, i - 0.3, i + 0.3, colors="grey", linestyles=":", lw=1.2,
                      label="encoded threshold" if i == 0 else None)  # fmt: skip
    ax.set_ylim(min(0.0, *lows) - 0.05, 1.05)


# --------------------------------------------------------------------------- subgroups
def performance_figure(performance: dict, level: float = 0.95):
    """The primary metric of every subgroup with its interval, against the overall value
    (a forest plot; the worst group in red); None when the report has no subgroups.

    ``performance`` is ``report["performance"]``; ``level`` the intervals' level.
    """
    if not performance.get("by_group"):
        return None
    from matplotlib.figure import Figure

    metric = performance["metric"]
    items = [(f"{var} = {lvl}", e) for var, levels in performance["by_group"].items()
             for lvl, e in levels.items()]  # fmt: skip
    fig = Figure(figsize=(6.5, 0.32 * len(items) + 1.4), layout="constrained")
    ax = fig.subplots()
    worst = performance.get("worst_group") or {}
    worst_label = f"{worst.get('variable')} = {worst.get('level')}"
    for i, (label, e) in enumerate(items):
        b = e.get(metric) or {}
        v = b.get("value")
        if v is None:
            continue
        below, above = _err(v, b)
        ax.errorbar(v, i, xerr=[[below], [above]], fmt="o", capsize=3,
                    color=WORST_COLOUR if label == worst_label else "#2e86c1")  # fmt: skip
    overall = (performance.get("overall") or {}).get("value")
    if overall is not None:
        ax.axvline(overall, color="grey", ls=":", lw=1, label="overall")
    ax.set_yticks(range(len(items)), [f"{lab} (n={e.get('n')})" for lab, e in items],
                  fontsize=8)  # fmt: skip
    ax.invert_yaxis()
    ax.set_xlabel(f"{metric.upper()} with {percent(level)} CI (red: worst group)")
    ax.set_title("Performance by subgroup")
    if overall is not None:
        ax.legend(fontsize=8, loc="lower right")
    return fig


# --------------------------------------------------------------------------- per class
def per_class_figure(tasks: dict, measure: str = "wsc"):
    """Heatmaps of a per-class matrix (default: the paper's signed ``wsc`` cosines,
    primary classes x auxiliary levels), one panel per task, for multi-class heads
    (three or more primary classes); None otherwise. ``tasks``: ``report["tasks"]``."""
    mats = {n: (t.get("per_class") or {}).get(measure) for n, t in tasks.items()}
    mats = {n: m for n, m in mats.items() if m and len(m.get("rows", [])) >= 3}
    if not mats:
        return None
    from matplotlib.figure import Figure

    fig = Figure(figsize=(3.2 * len(mats) + 1.0, 3.6), layout="constrained")
    axes = fig.subplots(1, len(mats), squeeze=False)[0]
    im = None
    for ax, (name, m) in zip(axes, mats.items()):
        data = [[v if v is not None else float("nan") for v in row] for row in m["matrix"]]
        im = ax.imshow(data, cmap="coolwarm", vmin=-1, vmax=1, aspect="auto")
        ax.set_xticks(range(len(m["cols"])), m["cols"], rotation=45, ha="right", fontsize=7)
        ax.set_yticks(range(len(m["rows"])), m["rows"], fontsize=7)
        ax.set_xlabel(name, fontsize=8)
        ax.set_ylabel("primary class", fontsize=8)
    fig.colorbar(im, ax=list(axes), shrink=0.8, label=f"{measure} (signed)")
    fig.suptitle(f"Per-class {measure}: primary classes x metadata levels", fontsize=9)
    return fig


# --------------------------------------------------------------------------- evidence
_FIGURE_WORDS = {
    "attribution": "mean attribution maps per group",
    "roi_masking": "the primary AUC with the ROI kept, removed and alone (example images)",
    "intervention": "change of the primary score when the variable is set (per image)",
}


def evidence_caption(path: str) -> str:
    """An evidence figure's caption in words, from its path under ``figures/evidence``.

    Examples
    --------
    >>> evidence_caption("figures/evidence/interventions/marker/intervention.png")
    "interventions 'marker': change of the primary score when the variable is set (per image)"
    """
    parts = path.removeprefix(EVIDENCE_FIGURES + "/").removesuffix(".png").split("/")
    if len(parts) < 3:
        return path
    section, key, rest = parts[0], parts[1], parts[2:]
    what = section.replace("_", " ")
    if rest[0] == "overlays":
        group = "/".join(rest[1:]) or "all"
        return f"{what} '{key}': attribution overlays, {group} (red: raises the primary score)"
    return f"{what} '{key}': {_FIGURE_WORDS.get(rest[-1], rest[-1].replace('_', ' '))}"
