"""AuditResult: the report (schema_version 1), its summary table, figure, JSON and HTML.

An AuditResult is a thin wrapper around the JSON-ready report dictionary, so a report
read back from disk (or from an MLflow run) is a full AuditResult again.
"""

from __future__ import annotations

import copy
import html
import json
from pathlib import Path
from typing import Any

from .errors import AuditError
from .evidence import evidence_type, evidence_type_for_section, evidence_types
from .formatting import (
    ci_text,
    fmt,
    html_page,
    img_tag,
    json_safe,
    png_bytes,
    text_table,
)
from .measures import get_measures
from .naming import sanitize_name
from .verdict import COLOURS, next_step, verdict_guide

SCHEMA_VERSION = 1
REPORT_JSON = "report.json"
REPORT_HTML = "report.html"
SUMMARY_FIGURE = "figures/wsca_summary.png"
PERFORMANCE_FIGURE = "figures/performance.png"
PER_CLASS_FIGURE = "figures/per_class_wsc.png"
EVIDENCE_FIGURES = "figures/evidence"


def report_schema() -> dict:
    """The JSON Schema (draft 2020-12) of a report.

    The file shipped in the package, with the fragments of measures and evidence types
    registered beyond the built-in ones (whose fragments the file already holds).
    """
    from importlib.resources import files

    text = (files("wsca_audit.schema") / "report.schema.json").read_text("utf-8")
    schema = json.loads(text)
    task = schema["$defs"]["task"]["properties"]
    for measure in get_measures():
        task.setdefault(measure.report_key, copy.deepcopy(measure.schema))
    evidence = schema["properties"]["evidence"]["properties"]
    for cls in evidence_types():
        evidence.setdefault(cls.section, evidence_section_schema(cls))
    return schema


def evidence_section_schema(cls) -> dict:
    """The schema of ``report["evidence"][cls.section]``: entries of ``cls.schema``."""
    return {"type": "object", "additionalProperties": copy.deepcopy(cls.schema)}


def validate_report(report: dict) -> None:
    """Check a report dict against :func:`report_schema`; AuditError lists what is wrong.

    Needs the ``jsonschema`` package (``pip install jsonschema``).
    """
    try:
        import jsonschema
    except ImportError as exc:  # pragma: no cover - depends on what is installed
        raise AuditError("validating a report needs `pip install jsonschema`") from exc
    validator = jsonschema.Draft202012Validator(report_schema())
    errors = sorted(validator.iter_errors(report), key=lambda e: list(e.path))
    if errors:
        lines = [
            f"{'/'.join(map(str, e.path)) or '<root>'}: {e.message[:200]}" for e in errors[:10]
        ]
        more = f" (and {len(errors) - 10} more)" if len(errors) > 10 else ""
        raise AuditError("the report does not match schema_version 1: " + "; ".join(lines) + more)


class AuditResult:
    """Result of an audit: per-task measures, verdicts, settings and warnings.

    Parameters
    ----------
    report : dict
        A report of ``schema_version`` 1 (see docs/architecture.md and the shipped
        ``report.schema.json``, :func:`report_schema`).

    Examples
    --------
    >>> res = AuditResult({"schema_version": 1, "tasks": {}, "warnings": []})
    >>> res.verdicts
    {}
    """

    def __init__(self, report: dict) -> None:
        if not isinstance(report, dict):
            raise AuditError("a report must be a dict")
        version = report.get("schema_version")
        if version != SCHEMA_VERSION:
            raise AuditError(
                f"unsupported report schema_version {version!r}; this wsca_audit reads "
                f"version {SCHEMA_VERSION}"
            )
        if not isinstance(report.get("tasks", {}), dict):
            raise AuditError("report['tasks'] must be a mapping of task name -> result")
        if not isinstance(report.get("warnings", []), list):
            raise AuditError("report['warnings'] must be a list of strings")
        self._report = json_safe(report)
        self._evidence: list[tuple[str, str, Any]] = []  # (section, key, Evidence) for figures

    # ------------------------------------------------------------------ access
    def to_dict(self) -> dict:
        """The JSON-ready report (a deep copy)."""
        return copy.deepcopy(self._report)

    @property
    def tasks(self) -> dict:
        return self._report.get("tasks", {})

    @property
    def warnings(self) -> list[str]:
        return self._report.get("warnings", [])

    @property
    def settings(self) -> dict:
        return self._report.get("settings", {})

    @property
    def verdicts(self) -> dict[str, str]:
        """Task name -> verdict."""
        return {name: t.get("verdict") for name, t in self.tasks.items()}

    @property
    def evidence(self) -> dict:
        """Input-side evidence: ``{"attribution"|"roi_masking"|"interventions": {key: {...}}}``."""
        return self._report.get("evidence", {})

    def add_evidence(self, evidence: Any, key: str | None = None) -> AuditResult:
        """File a piece of input-side evidence into the report; returns ``self``.

        Parameters
        ----------
        evidence : AttributionResult, MaskingResult or InterventionResult
            From :func:`wsca_audit.attribution_mass`, :class:`wsca_audit.InputAttribution`,
            :func:`wsca_audit.roi_masking` or :func:`wsca_audit.intervention_effect`.
        key : str, optional
            Name of the entry (default: the intervention's variable, the masking fill, the
            attribution method). An existing entry of that name is replaced.

        The JSON lands in ``report["evidence"][section][key]`` (schema_version 1, added
        keys); the figures (overlays, mean maps, masking and intervention plots) are
        written by :meth:`save` under ``figures/evidence/``.
        """
        cls = evidence_type(getattr(evidence, "kind", None))
        if cls is None or not isinstance(evidence, cls):
            raise AuditError(
                "add_evidence takes the result of attribution_mass, InputAttribution.attribute, "
                "roi_masking, intervention_effect or another registered Evidence type; got "
                f"{type(evidence).__name__}"
            )
        section = cls.section
        key = str(key if key is not None else evidence.default_key)
        self._report.setdefault("evidence", {}).setdefault(section, {})[key] = json_safe(
            evidence.to_dict()
        )
        self._evidence = [e for e in self._evidence if (e[0], e[1]) != (section, key)]
        self._evidence.append((section, key, evidence))
        return self

    def evidence_figures(self) -> dict[str, bytes]:
        """PNG bytes of the evidence figures, keyed by their path under the report folder."""
        out: dict[str, bytes] = {}
        for section, key, ev in self._evidence:
            prefix = f"{EVIDENCE_FIGURES}/{section}/{sanitize_name(key)}/"
            for rel, png in ev.figures_png().items():
                out[prefix + rel] = png
        return out

    def evidence_lines(self) -> list[str]:
        """One plain-text line per piece of input-side evidence (each type says its own)."""
        lines: list[str] = []
        for section, entries in self.evidence.items():
            cls = evidence_type_for_section(section)
            for key, data in entries.items():
                if cls is None:  # a type this installation does not know: name it only
                    lines.append(f"{section} '{key}'")
                else:
                    lines += cls.lines(key, data, self.tasks)
        return lines

    @property
    def performance(self) -> dict:
        """The primary metric by subgroup (``{}`` when the audit had no targets)."""
        return self._report.get("performance") or {}

    @property
    def title(self) -> str:
        """``WSCA audit: <model>`` (the model's name, else its class)."""
        model = self._report.get("model") or {}
        name = model.get("name") or str(model.get("class") or "").rsplit(".", 1)[-1]
        return f"WSCA audit: {name}" if name else "WSCA audit report"

    def headline(self) -> str:
        """The outcome in one line: what is flagged, with its effect, and what is not.

        Examples
        --------
        >>> rep = {"schema_version": 1, "warnings": [], "tasks": {
        ...     "scanner": {"verdict": "uses", "effect": {"value": 0.52}},
        ...     "site": {"verdict": "encoded_not_used"}}}
        >>> AuditResult(rep).headline()
        'FLAGGED - the head uses scanner (moves the score by 0.52 sd). Encoded, not used: site.'
        """
        groups: dict[str, list[str]] = {}
        for name, t in self.tasks.items():
            groups.setdefault(str(t.get("verdict")), []).append(name)

        def named(names: list[str]) -> str:
            out = []
            for n in names:
                eff = (self.tasks[n].get("effect") or {}).get("value")
                out.append(f"{n} (moves the score by {fmt(eff, 2)} sd)" if eff is not None else n)
            return ", ".join(out)

        if groups.get("uses"):
            parts = [f"FLAGGED - the head uses {named(groups['uses'])}."]
        elif not self.tasks:
            parts = ["No metadata audited."]
        else:
            parts = ["No variable is used by the head."]
        for verdict, label in (
            ("inconclusive", "Undecided"),
            ("encoded_not_used", "Encoded, not used"),
            ("not_encoded", "Not encoded"),
        ):
            if groups.get(verdict):
                parts.append(f"{label}: {', '.join(groups[verdict])}.")
        worst = self.performance.get("worst_group") or {}
        if worst.get("value") is not None:
            parts.append(
                f"Worst group {worst['variable']}={worst['level']}: {worst['metric']} "
                f"{fmt(worst['value'])}."
            )
        return " ".join(parts)

    def performance_rows(self) -> tuple[list[str], list[list[str]]]:
        """Header and rows of the subgroup table (variable, level, n, each metric)."""
        perf = self.performance
        names = [m for m in ("auc", "accuracy", "sensitivity", "specificity")
                 if m in (perf.get("metrics") or {})]  # fmt: skip
        head = ["variable", "group", "n", *[f"{m} [95% CI]" for m in names]]
        rows = [["all", "all", str(self._report.get("n_samples", "-")),
                 *[ci_text(perf["metrics"][m]) for m in names]]]  # fmt: skip
        for var, levels in (perf.get("by_group") or {}).items():
            for level, e in levels.items():
                rows.append([var, level, str(e.get("n")), *[ci_text(e.get(m)) for m in names]])
        return head, rows

    def performance_figure(self):
        """The primary metric of every subgroup with its 95% CI, against the overall value
        (a forest plot); None when the report has no subgroups."""
        perf = self.performance
        if not perf.get("by_group"):
            return None
        from matplotlib.figure import Figure

        metric = perf["metric"]
        items = [(f"{var} = {lvl}", e) for var, levels in perf["by_group"].items()
                 for lvl, e in levels.items()]  # fmt: skip
        fig = Figure(figsize=(6.5, 0.32 * len(items) + 1.4), layout="constrained")
        ax = fig.subplots()
        worst = perf.get("worst_group") or {}
        for i, (label, e) in enumerate(items):
            b = e.get(metric) or {}
            v = b.get("value")
            if v is None:
                continue
            lo = b.get("ci_low") if b.get("ci_low") is not None else v
            hi = b.get("ci_high") if b.get("ci_high") is not None else v
            is_worst = label == f"{worst.get('variable')} = {worst.get('level')}"
            ax.errorbar(v, i, xerr=[[max(v - lo, 0)], [max(hi - v, 0)]], fmt="o", capsize=3,
                        color="#c0392b" if is_worst else "#2e86c1")  # fmt: skip
        ax.axvline(perf["overall"]["value"], color="grey", ls=":", lw=1, label="overall")
        ax.set_yticks(range(len(items)), [f"{lab} (n={e.get('n')})" for lab, e in items],
                      fontsize=8)  # fmt: skip
        ax.invert_yaxis()
        ax.set_xlabel(f"{metric.upper()} with 95% CI (red: worst group)")
        ax.set_title("Performance by subgroup")
        ax.legend(fontsize=8, loc="lower right")
        return fig

    def per_class_figure(self, measure: str = "wsc"):
        """Heatmaps of a per-class matrix (default: the paper's signed ``wsc`` cosines,
        primary classes x auxiliary levels), one panel per task, for multi-class heads
        (three or more primary classes); None otherwise."""
        mats = {n: (t.get("per_class") or {}).get(measure) for n, t in self.tasks.items()}
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

    def metric_frame(self, variable: str | None = None):
        """The subgroup performance in Fairlearn's ``MetricFrame`` vocabulary.

        Returns an object with ``overall`` (a pandas Series: metric -> value),
        ``by_group`` (a DataFrame indexed by (variable, level), one column per metric,
        plus ``n``), ``group_min()``, ``group_max()``, ``difference()`` and ``ratio()``
        (per metric, over the groups of ``variable``, or of every variable at once when
        None: Fairlearn's ``method="between_groups"``), and ``ci(metric)`` with the
        intervals. Needs pandas.

        Examples
        --------
        >>> import numpy as np, wsca_audit as wa
        >>> rng = np.random.default_rng(0)
        >>> z = rng.normal(size=(200, 4)); y = (z[:, 0] > 0).astype(int)
        >>> W = np.zeros((2, 4)); W[1, 0] = 1.0
        >>> res = wa.analyze(z, y, {"site": rng.integers(0, 2, 200)}, primary_weight=W,
        ...                  n_bootstrap=20, n_permutations=0, progress=False)
        >>> mf = res.metric_frame("site")
        >>> list(mf.by_group.index.get_level_values("variable").unique())
        ['site']
        >>> bool(mf.difference()["accuracy"] >= 0)
        True
        """
        return SubgroupFrame(self.performance, variable)

    def _thresholds(self) -> dict[str, float]:
        """The numeric thresholds in the settings (a foreign report may hold anything)."""
        thr = self.settings.get("thresholds") if isinstance(self.settings, dict) else None
        if not isinstance(thr, dict):
            return {}
        return {k: v for k, v in thr.items() if isinstance(v, (int, float))}

    def _page_figures(self) -> dict[str, bytes]:
        """The report's own figures as PNG, keyed by their path under the report folder:
        rendered once, written by :meth:`save` and embedded by :meth:`to_html`."""
        out = {}
        for rel, make in (
            (SUMMARY_FIGURE, self.figure if self.tasks else None),
            (PERFORMANCE_FIGURE, self.performance_figure),
            (PER_CLASS_FIGURE, self.per_class_figure),
        ):
            fig = make() if make is not None else None
            if fig is not None:
                out[rel] = png_bytes(fig)
        return out

    def measures(self) -> list:
        """The registered measures this report holds, in report order."""
        present = {k for t in self.tasks.values() for k in t}
        return [m for m in get_measures() if m.report_key in present]

    def __getitem__(self, key: str) -> Any:
        return self._report[key]

    def __repr__(self) -> str:
        v = ", ".join(f"{k}={v}" for k, v in self.verdicts.items())
        return f"AuditResult(n_samples={self._report.get('n_samples')}, {v})"

    # ------------------------------------------------------------------ text
    def table(self) -> tuple[list[str], list[tuple[str, list[str], str]]]:
        """Header cells and, per task, (name, measure cells, verdict): what the summary,
        the HTML report and the card all show, from the measures' declarations."""
        measures = self.measures()
        head = [h for m in measures for h in m.headers()]
        rows = []
        for name, t in self.tasks.items():
            cells = [c for m in measures for c in m.cells(t.get(m.report_key))]
            rows.append((name, [t.get("kind", "-"), *cells], str(t.get("verdict"))))
        return ["kind", *head], rows

    def reasons(self) -> list[str]:
        """One line per task: its verdict, the sentence that explains it and what to do."""
        out = []
        evidence = bool(self._report.get("evidence"))
        for name, t in self.tasks.items():
            line = f"{name}: {t.get('verdict')}"
            if t.get("reason"):
                line += f" - {t['reason']}"
            out.append(f"{line}. Next: {next_step(name, t, evidence)}")
        return out

    def summary(self) -> str:
        """A fixed-width table (one row per task with each measure and the verdict), then
        each verdict's reason, the input-side evidence and the warnings."""
        head, rows = self.table()
        lines = text_table([("task", *head, "verdict")] + [(n, *cells, v) for n, cells, v in rows])
        primary = self._report.get("primary", {}).get("metric", {})
        top = (
            f"WSCA audit: {self._report.get('n_samples')} samples, "
            f"embedding dim {self._report.get('embedding_dim')}, layer {self._report.get('layer')!r}"
        )
        if primary.get("name"):
            top += f"; primary {primary['name']} {fmt(primary.get('value'))}"
        out = [top, self.headline(), "", *lines]
        if any(t.get("reason") for t in self.tasks.values()):
            out += ["", "why:", *(f"  - {line}" for line in self.reasons())]
        ev = self.evidence_lines()
        if ev:
            out += ["", "input-side evidence:", *(f"  - {line}" for line in ev)]
        if self.warnings:
            out += ["", "warnings:", *(f"  - {w}" for w in self.warnings)]
        return "\n".join(out)

    # ------------------------------------------------------------------ figure
    def figure(self):
        """Bars of the alignment measures (usage, wsc, ...; left) and encoding (right) per
        task, with 95% CIs: each measure declares its panel.

        Returns a ``matplotlib.figure.Figure`` (no pyplot state is touched).
        """
        from matplotlib.figure import Figure

        names = list(self.tasks)
        fig = Figure(figsize=(max(6.0, 1.6 * len(names) + 4), 3.8), layout="constrained")
        ax, ax2 = fig.subplots(1, 2, width_ratios=[2, 1])
        thr = self._thresholds()
        colours = [COLOURS.get(self.tasks[n].get("verdict"), "#999") for n in names]
        measures = self.measures()
        bars = [m for m in measures if m.panel == "alignment"]
        # filled bars first: the measure the verdict rests on leads
        bars.sort(key=lambda m: m.hatch is not None)
        width = 0.76 / max(len(bars), 1)
        null_label = "null 95%"
        for j, m in enumerate(bars):
            offset = (j - (len(bars) - 1) / 2) * width
            blocks = [self.tasks[n].get(m.report_key) or {} for n in names]
            vals = [b.get("value") or 0.0 for b in blocks]
            err = [
                [max(v - (b.get("ci_low") if b.get("ci_low") is not None else v), 0)
                 for v, b in zip(vals, blocks)],
                [max((b.get("ci_high") if b.get("ci_high") is not None else v) - v, 0)
                 for v, b in zip(vals, blocks)],
            ]  # fmt: skip
            ax.bar(
                [i + offset for i in range(len(names))],
                vals,
                width=width,
                yerr=err,
                capsize=3,
                color="white" if m.hatch else colours,
                edgecolor=colours,
                hatch=m.hatch,
                label=m.name,
            )
            nulls = [
                (i + offset, b["null_q95"])
                for i, b in enumerate(blocks)
                if b.get("null_q95") is not None
            ]
            if nulls:
                ax.scatter(
                    *zip(*nulls), marker="_", s=200, color="black", label=null_label, zorder=3
                )
                null_label = None
        if "usage" in thr:
            ax.axhline(thr["usage"], color="#c0392b", ls="--", lw=1, label="'uses' threshold")
        ax.set_xticks(range(len(names)), names, rotation=20)
        ax.set_ylim(0, 1.05)
        ax.set_ylabel("|correlation| (max over classes)")
        ax.set_title(
            "Head alignment\n"
            + ", ".join(f"{'hatched' if m.hatch else 'filled'}: {m.label}" for m in bars),
            fontsize=9,
        )
        ax.legend(fontsize=8, loc="upper right")
        enc_measure = next((m for m in measures if m.panel == "encoding"), None)
        if enc_measure is not None:
            lows = []
            for i, n in enumerate(names):
                enc = self.tasks[n].get(enc_measure.report_key) or {}
                v = enc.get("value") or 0.0
                lo = enc["ci_low"] if enc.get("ci_low") is not None else v
                hi = enc["ci_high"] if enc.get("ci_high") is not None else v
                lows.append(v)
                ax2.errorbar(
                    i, v, yerr=[[max(v - lo, 0)], [max(hi - v, 0)]], fmt="o", capsize=3,
                    color=colours[i],
                )  # fmt: skip
                ax2.annotate(
                    enc.get("metric", ""), (i, v), textcoords="offset points", xytext=(6, 0),
                    fontsize=7,
                )  # fmt: skip
                # each task's own encoding threshold (AUC or R²), as a short dotted mark
                t_enc = thr.get("auc" if enc.get("metric", "auc") == "auc" else "r2")
                if t_enc is not None:
                    ax2.hlines(t_enc, i - 0.3, i + 0.3, colors="grey", linestyles=":", lw=1.2,
                               label="encoded threshold" if i == 0 else None)  # fmt: skip
            ax2.set_ylim(min(0.0, *lows) - 0.05, 1.05)
        ax2.set_xticks(range(len(names)), names, rotation=20)
        ax2.set_xlim(-0.5, len(names) - 0.3)
        ax2.set_title("Encoding (held-out)", fontsize=9)
        return fig

    # ------------------------------------------------------------------ html
    def to_html(
        self,
        figure_png: bytes | None = None,
        evidence_png: dict[str, bytes] | None = None,
        page_png: dict[str, bytes] | None = None,
    ) -> str:
        """A self-contained HTML report (figures are embedded as data URIs).

        ``figure_png``, ``evidence_png`` and ``page_png`` (the summary, subgroup and
        per-class figures by path) are rendered here when not given.
        """
        page_png = dict(self._page_figures() if page_png is None else page_png)
        if figure_png is not None:
            page_png[SUMMARY_FIGURE] = figure_png
        figure_png = page_png.get(SUMMARY_FIGURE)
        esc = html.escape
        head, rows = self.table()
        table = (
            "<table><tr>"
            + "".join(f"<th>{esc(h)}</th>" for h in ["task", *head, "verdict"])
            + "</tr>"
        )
        for name, cells, verdict in rows:
            colour = COLOURS.get(verdict, "#999")
            table += (
                f"<tr><td>{esc(name)}</td>"
                + "".join(f"<td>{esc(c)}</td>" for c in cells)
                + f"<td style='color:{colour};font-weight:bold'>{esc(verdict)}</td></tr>"
            )
        table += "</table>"
        img = img_tag(figure_png, "WSCA summary figure") if figure_png else ""
        if PER_CLASS_FIGURE in page_png:
            img += img_tag(
                page_png[PER_CLASS_FIGURE], "per-class wsc matrices of the multi-class head"
            )
        if evidence_png is None:
            evidence_png = self.evidence_figures()
        evidence_html = ""
        lines = self.evidence_lines()
        if lines:
            figs = "".join(
                f"<figure>{img_tag(png, caption)}<figcaption>{esc(caption)}</figcaption></figure>"
                for path, png in evidence_png.items()
                for caption in [_caption(path)]
            )
            evidence_html = (
                "<h2>Input-side evidence</h2><ul>"
                + "".join(f"<li>{esc(x)}</li>" for x in lines)
                + "</ul>"
                + figs
            )
        warn = "".join(f"<li>{esc(w)}</li>" for w in self.warnings)
        reasons = ""
        if any(t.get("reason") for t in self.tasks.values()):
            reasons = (
                "<h2>Why</h2><ul>"
                + "".join(
                    f"<li><b>{esc(n)}</b>: {esc(str(t.get('verdict')))} - "
                    f"{esc(t.get('reason') or '')}<br><i>Next:</i> "
                    f"{esc(next_step(n, t, bool(self._report.get('evidence'))))}</li>"
                    for n, t in self.tasks.items()
                )
                + "</ul>"
            )
        primary = self._report.get("primary", {}).get("metric", {})
        thr = self._thresholds()
        thr_effect, thr_usage = thr.get("effect", 0.25), thr.get("usage", 0.25)
        flagged = any(t.get("verdict") == "uses" for t in self.tasks.values())
        colour = COLOURS["uses" if flagged else "encoded_not_used"]
        headline = (
            f"<p style='font-size:1.2em;border-left:6px solid {colour};padding:0.4em 0.8em'>"
            f"<b>{esc(self.headline())}</b></p>"
        )
        guide = "".join(
            f"<li><b style='color:{COLOURS[v]}'>{v}</b>: {esc(meaning)}. "
            f"<i>What to do:</i> {esc(action)}.</li>"
            for v, meaning, action in verdict_guide(thr)
        )
        perf_html = ""
        if self.performance.get("by_group"):
            p_head, p_rows = self.performance_rows()
            perf_html = (
                "<h2>Performance by subgroup</h2><table><tr>"
                + "".join(f"<th>{esc(h)}</th>" for h in p_head)
                + "</tr>"
                + "".join(
                    "<tr>" + "".join(f"<td>{esc(c)}</td>" for c in r) + "</tr>" for r in p_rows
                )
                + "</table>"
            )
            if PERFORMANCE_FIGURE in page_png:
                perf_html += img_tag(
                    page_png[PERFORMANCE_FIGURE], "primary metric by subgroup with 95% CIs"
                )
        body = f"""<h1>{esc(self.title)}</h1>
{headline}
<p>{esc(str(self._report.get("n_samples")))} samples, embedding dimension
{esc(str(self._report.get("embedding_dim")))}, layer <code>{esc(str(self._report.get("layer")))}</code>;
primary {esc(str(primary.get("name")))} = {fmt(primary.get("value"))}.</p>
{table}
{reasons}
{img}
{perf_html}
{evidence_html}
<h2>What the verdicts mean</h2><ul>{guide}</ul>
<h2>Warnings</h2><ul>{warn or "<li>none</li>"}</ul>
<h2>How to read this</h2>
<p><b>effect</b> is how far the variable moves the model's score with the label held
fixed (within-class regression), in standard deviations of the score: what an
intervention on the input would show. <b>usage</b> is the correlation of the model's
head with the metadata head after the primary label is removed (within-class centring),
in the metric of the embedding covariance. The verdict rests on both: an effect interval
inside ±{fmt(thr_effect, 2)} sd means not used; usage above {fmt(thr_usage, 2)} or an
effect beyond ±{fmt(thr_effect, 2)} sd, with a significant permutation test, means used. <b>attribution alignment</b> is its counterpart
from Captum attributions (the same comparison with the covariance's diagonal only: do
the prediction and the metadata rest on the same embedding units). <b>wsc</b> is the weight-space cosine of Wong et
al. (MIDL 2026), reported as published. <b>encoding</b> says whether the metadata can be
read from the embedding at all (held-out AUC or R²).</p>"""
        return html_page(self.title, body)

    # ------------------------------------------------------------------ files
    def save(self, directory: str | Path) -> Path:
        """Write ``report.json``, ``report.html``, ``figures/wsca_summary.png`` and the
        evidence figures (``figures/evidence/<section>/<key>/``).

        Returns the directory. Existing files of the same names are overwritten.
        """
        out = Path(directory)
        try:
            (out / "figures").mkdir(parents=True, exist_ok=True)
            (out / REPORT_JSON).write_text(json.dumps(self.to_dict(), indent=2, allow_nan=False))
            page_png = self._page_figures()
            for rel, data in page_png.items():
                (out / rel).write_bytes(data)
            evidence_png = self.evidence_figures()
            for rel, data in evidence_png.items():
                (out / rel).parent.mkdir(parents=True, exist_ok=True)
                (out / rel).write_bytes(data)
            html_text = self.to_html(evidence_png=evidence_png, page_png=page_png)
            (out / REPORT_HTML).write_text(html_text, encoding="utf-8")
        except OSError as exc:
            raise AuditError(f"could not write the report to {out}: {exc}") from exc
        return out

    @classmethod
    def from_dict(cls, report: dict, validate: bool = True) -> AuditResult:
        """An AuditResult from a report dict (checked against the JSON Schema by default)."""
        result = cls(report)
        return result.validate() if validate else result

    def validate(self) -> AuditResult:
        """Check the report against the shipped JSON Schema (needs ``jsonschema``); returns self."""
        validate_report(self._report)
        return self

    @classmethod
    def load(cls, path: str | Path, validate: bool = True) -> AuditResult:
        """Read a report from ``report.json`` or a directory holding one.

        Only JSON is parsed: reading a report never runs code. It is checked against the
        shipped JSON Schema (``validate=False`` skips that), so a damaged or foreign
        file is an AuditError here rather than a KeyError later.
        """
        p = Path(path)
        if p.is_dir():
            if not (p / REPORT_JSON).is_file():
                inside = sorted(str(q.parent) for q in p.glob(f"*/{REPORT_JSON}"))
                if inside:  # a parent folder (e.g. the demo's): say which reports it holds
                    raise AuditError(
                        f"no report at {p / REPORT_JSON}; the folder holds reports in: "
                        + ", ".join(inside)
                    )
            p = p / REPORT_JSON
        try:
            data = json.loads(p.read_text(encoding="utf-8"))
        except FileNotFoundError as exc:
            raise AuditError(f"no report at {p}") from exc
        except json.JSONDecodeError as exc:
            raise AuditError(f"{p} is not valid JSON: {exc}") from exc
        except (OSError, UnicodeDecodeError) as exc:
            raise AuditError(f"could not read the report {p}: {exc}") from exc
        result = cls(data)
        return result.validate() if validate else result


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


_FIGURE_WORDS = {
    "attribution": "mean attribution maps per group",
    "roi_masking": "the primary AUC with the ROI kept, removed and alone (example images)",
    "intervention": "change of the primary score when the variable is set (per image)",
}


def _caption(path: str) -> str:
    """A figure's caption in words, from its path under ``figures/evidence``."""
    parts = path.removeprefix(EVIDENCE_FIGURES + "/").removesuffix(".png").split("/")
    if len(parts) < 3:
        return path
    section, key, rest = parts[0], parts[1], parts[2:]
    what = section.replace("_", " ")
    if rest[0] == "overlays":
        group = "/".join(rest[1:]) or "all"
        return f"{what} '{key}': attribution overlays, {group} (red: raises the primary score)"
    return f"{what} '{key}': {_FIGURE_WORDS.get(rest[-1], rest[-1].replace('_', ' '))}"
