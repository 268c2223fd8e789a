"""AuditResult: the report (schema_version 1), its sections, summary, figures, JSON and HTML.

An AuditResult is a thin wrapper around the JSON-ready report dictionary, so a report
read back from disk (or from an MLflow run) is a full AuditResult again. What it shows is
built once, as the sections of a :class:`~wsca_audit.render.Document`
(:meth:`AuditResult.document`), which the summary (plain text), the HTML report and the
model card render; the figures are drawn once per result and reused by all of them.
"""

from __future__ import annotations

import copy
import json
import warnings
from pathlib import Path
from typing import Any

from .errors import AuditError, AuditWarning
from .evidence import (
    check_provenance,
    evidence_type,
    evidence_type_for_section,
    evidence_types,
)
from .figures import (
    EVIDENCE_FIGURES,
    PER_CLASS_FIGURE,
    PERFORMANCE_FIGURE,
    SUMMARY_FIGURE,
    evidence_caption,
    page_captions,
    per_class_figure,
    performance_figure,
    summary_figure,
)
from .formatting import ci_text, fmt, json_safe, percent, png_bytes
from .measures import get_measures
from .naming import sanitize_name
from .performance import SubgroupFrame
from .render import (
    Code,
    Document,
    Figure,
    Section,
    Strong,
    Table,
    Text,
    VerdictMark,
    plain,
    render_html,
    render_text,
)
from .verdict import (
    ENCODED_NOT_USED,
    LIST_LABELS,
    USES,
    as_thresholds,
    next_step,
    verdict_guide,
    with_thresholds,
)

SCHEMA_VERSION = 1
REPORT_JSON = "report.json"
REPORT_HTML = "report.html"
DEFAULT_CI_LEVEL = 0.95  # AuditSettings.ci_level's default, for reports that hold none


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


# what the plain-text summary shows of the report's sections (a terminal's worth)
SUMMARY_SECTIONS = ("outcome", "measures", "why", "outputs", "evidence", "warnings")
MAX_OUTPUT_ROWS = 30  # a task's outputs listed up to this many; past it, the others only


class AuditResult:
    """Result of an audit: per-task measures, verdicts, settings and warnings.

    Parameters
    ----------
    report : dict
        A report of ``schema_version`` 1 (see docs/architecture.md and the shipped
        ``report.schema.json``, :func:`report_schema`).

    Notes
    -----
    The figures are drawn on first use and kept (as PNG) for the life of the object:
    saving, the HTML report, the model card and MLflow logging all reuse them;
    :meth:`add_evidence` redraws the evidence figures only.

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
        # the report's own figures, drawn once for what they show (see figures_png)
        self._page_png: tuple[str, dict[str, bytes]] | None = None
        self._evidence_png: dict[str, bytes] | None = None

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
        settings = self._report.get("settings")
        return settings if isinstance(settings, dict) else {}  # a foreign report: none

    @property
    def ci_level(self) -> float:
        """The level of the report's intervals (``settings["ci_level"]``, else 0.95)."""
        level = self.settings.get("ci_level")
        if isinstance(level, (int, float)) and not isinstance(level, bool) and 0 < level < 1:
            return float(level)
        return DEFAULT_CI_LEVEL

    @property
    def verdicts(self) -> dict[str, str]:
        """Task name -> verdict."""
        return {name: t.get("verdict") for name, t in self.tasks.items()}

    @property
    def evidence(self) -> dict:
        """Input-side evidence: ``{"attribution"|"roi_masking"|"interventions": {key: {...}}}``."""
        return self._report.get("evidence", {})

    def add_evidence(
        self, evidence: Any, key: str | None = None, *, strict: bool = False
    ) -> AuditResult:
        """File a piece of input-side evidence into the report; returns ``self``.

        Parameters
        ----------
        evidence : AttributionResult, MaskingResult or InterventionResult
            From :func:`wsca_audit.attribution_mass`, :class:`wsca_audit.InputAttribution`,
            :func:`wsca_audit.roi_masking` or :func:`wsca_audit.intervention_effect`.
        key : str, optional
            Name of the entry (default: the intervention's variable, the masking fill, the
            attribution method). An existing entry of that name is replaced.
        strict : bool, default=False
            Refuse (``AuditError``) instead of warning when the evidence does not match
            the audit: it ran on a model none of whose ``nn.Linear`` layers is the
            audited head, or names a variable the audit lacks (a suggestion is given).
            The entry's ``provenance`` records the check and both sample counts.

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
        data = json_safe(evidence.to_dict())
        variable = data.get("variable") or (key if section == "interventions" else None)
        data["provenance"], problems = check_provenance(data, variable, self._report)
        for problem in problems:
            text = f"evidence {section} '{key}': {problem}"
            if strict:
                raise AuditError(text)
            warnings.warn(text, AuditWarning, stacklevel=2)
            self._report.setdefault("warnings", []).append(text)
        self._report.setdefault("evidence", {}).setdefault(section, {})[key] = data
        self._evidence = [e for e in self._evidence if (e[0], e[1]) != (section, key)]
        self._evidence.append((section, key, evidence))
        self._evidence_png = None  # the report's own figures do not show evidence
        return self

    def evidence_figures(self) -> dict[str, bytes]:
        """PNG bytes of the evidence figures, keyed by their path under the report folder
        (drawn once; :meth:`add_evidence` redraws them)."""
        if self._evidence_png is None:
            out: dict[str, bytes] = {}
            for section, key, ev in self._evidence:
                prefix = f"{EVIDENCE_FIGURES}/{section}/{sanitize_name(key)}/"
                for rel, png in ev.figures_png().items():
                    out[prefix + rel] = png
            self._evidence_png = out
        return dict(self._evidence_png)

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
        >>> from wsca_audit.verdict import ENCODED_NOT_USED, USES
        >>> rep = {"schema_version": 1, "warnings": [], "tasks": {
        ...     "scanner": {"verdict": USES, "effect": {"value": 0.52}},
        ...     "site": {"verdict": ENCODED_NOT_USED}}}
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

        if groups.get(USES):
            parts = [f"FLAGGED - the head uses {named(groups[USES])}."]
        elif not self.tasks:
            parts = ["No metadata audited."]
        else:
            parts = ["No variable is used by the head."]
        for verdict, label in LIST_LABELS.items():
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
        performance = self.performance
        names = [m for m in ("auc", "accuracy", "sensitivity", "specificity")
                 if m in (performance.get("metrics") or {})]  # fmt: skip
        level = percent(self.ci_level)
        head = ["variable", "group", "n", *[f"{m} [{level} CI]" for m in names]]
        rows = [["all", "all", str(self._report.get("n_samples", "-")),
                 *[ci_text(performance["metrics"][m]) for m in names]]]  # fmt: skip
        for var, levels in (performance.get("by_group") or {}).items():
            for lvl, e in levels.items():
                rows.append([var, lvl, str(e.get("n")), *[ci_text(e.get(m)) for m in names]])
        return head, rows

    # ------------------------------------------------------------------ figures
    def figure(self):
        """Bars of the alignment measures (usage, wsc, ...; left) and encoding (right) per
        task, with their intervals: each measure declares its panel.

        Returns a new ``matplotlib.figure.Figure`` (no pyplot state is touched).
        """
        return summary_figure(self.tasks, self.measures(), self._thresholds())

    def performance_figure(self):
        """The primary metric of every subgroup with its interval, against the overall
        value (a forest plot); None when the report has no subgroups."""
        return performance_figure(self.performance, self.ci_level)

    def per_class_figure(self, measure: str = "wsc"):
        """Heatmaps of a per-class matrix (default: the paper's signed ``wsc`` cosines,
        primary classes x auxiliary levels), one panel per task, for multi-class heads
        (three or more primary classes); None otherwise."""
        return per_class_figure(self.tasks, measure)

    def figures_png(self) -> dict[str, bytes]:
        """The report's own figures (summary, subgroups, per-class) as PNG, keyed by their
        path under the report folder; drawn on first use, then reused by :meth:`save`,
        :meth:`to_html`, the model card and MLflow logging (drawn again only when the
        tasks, the subgroups or the settings they show have been changed)."""
        shown = json.dumps(
            [self.tasks, self.performance, self.settings], sort_keys=True, default=str
        )
        if self._page_png is None or self._page_png[0] != shown:
            out = {}
            for rel, make in (
                (SUMMARY_FIGURE, self.figure if self.tasks else None),
                (PERFORMANCE_FIGURE, self.performance_figure),
                (PER_CLASS_FIGURE, self.per_class_figure),
            ):
                fig = make() if make is not None else None
                if fig is not None:
                    out[rel] = png_bytes(fig)
            self._page_png = (shown, out)
        return dict(self._page_png[1])

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
        thr = self.settings.get("thresholds")
        if not isinstance(thr, dict):
            return {}
        return {k: v for k, v in thr.items() if isinstance(v, (int, float))}

    def measures(self) -> list:
        """The registered measures this report holds, in report order."""
        present = {k for t in self.tasks.values() for k in t}
        return [m for m in get_measures() if m.report_key in present]

    def __getitem__(self, key: str) -> Any:
        return self._report[key]

    def __repr__(self) -> str:
        v = ", ".join(f"{k}={v}" for k, v in self.verdicts.items())
        return f"AuditResult(n_samples={self._report.get('n_samples')}, {v})"

    # ------------------------------------------------------------------ sections
    def table(self) -> tuple[list[str], list[tuple[str, list[str], str]]]:
        """Header cells and, per task, (name, measure cells, verdict): the measures table
        that the summary, the HTML report and the card all show, from the measures'
        declarations (headers at the report's ``ci_level``)."""
        measures = self.measures()
        head = [h for m in measures for h in m.headers(self.ci_level)]
        rows = []
        for name, t in self.tasks.items():
            cells = [c for m in measures for c in m.cells(t.get(m.report_key))]
            rows.append((name, [t.get("kind", "-"), *cells], str(t.get("verdict"))))
        return ["kind", *head], rows

    def _why_items(self) -> list[Text]:
        """Per task: its verdict, the sentence that explains it and what to do next."""
        evidence = bool(self.evidence)
        items: list[Text] = []
        for name, t in self.tasks.items():
            runs: list = [Code(name), ": ", VerdictMark(str(t.get("verdict")))]
            if t.get("reason"):
                runs += [" - ", str(t["reason"])]
            items.append((*runs, f". Next: {next_step(name, t, evidence)}"))
        return items

    def reasons(self) -> list[str]:
        """One line per task: its verdict, the sentence that explains it and what to do."""
        return [plain(item) for item in self._why_items()]

    def _outcome_sections(self, figures: list[Figure]) -> list[Section]:
        """The headline, then the facts of the audit and the measures table."""
        flagged = any(v == USES for v in self.verdicts.values())
        outcome = Section(key="outcome", paragraphs=[(Strong(self.headline()),)],
                          accent=USES if flagged else ENCODED_NOT_USED)  # fmt: skip
        rep = self._report
        facts: list = [
            f"{rep.get('n_samples')} samples, embedding dimension {rep.get('embedding_dim')}, "
            "layer ",
            Code(str(rep.get("layer"))),
        ]
        primary = (rep.get("primary") or {}).get("metric") or {}
        task = (rep.get("primary") or {}).get("task")
        if task:
            facts.append(f"; a {task} head")
        if primary.get("name"):
            facts.append(f"; primary {primary['name']} = {fmt(primary.get('value'))}")
        head, rows = self.table()
        table = Table(
            ("task", *head, "verdict"),
            tuple((Code(n), *cells, VerdictMark(v)) for n, cells, v in rows),
        )
        measures = Section(key="measures", paragraphs=[(*facts, ".")], table=table,
                           figures=figures)  # fmt: skip
        return [outcome, measures]

    def _performance_section(self, figures: list[Figure]) -> Section | None:
        performance = self.performance
        if not performance.get("by_group"):
            return None
        paragraphs: list[Text] = [
            f"The primary metric on each subgroup of the evaluation data, with "
            f"{percent(self.ci_level)} bootstrap intervals (unitary, and crossed where "
            "requested)."
        ]
        worst = performance.get("worst_group") or {}
        if worst:
            paragraphs.append((
                "Worst group: ", Code(str(worst.get("variable"))),
                f" = {worst.get('level')}, {worst.get('metric')} {ci_text(worst)} "
                f"(n = {worst.get('n')}), {fmt(worst.get('gap_to_best'))} below the best group.",
            ))  # fmt: skip
        head, rows = self.performance_rows()
        return Section(
            "Performance by subgroup", key="performance", paragraphs=paragraphs,
            table=Table(tuple(head), tuple(tuple(r) for r in rows)), figures=figures,
        )  # fmt: skip

    def _outputs_section(self) -> Section | None:
        """Heads of several outputs: each output's effect and verdict, per variable."""
        rows, hidden = [], 0
        for name, t in self.tasks.items():
            outputs = t.get("by_output") or {}
            for out, b in outputs.items():
                if len(outputs) > MAX_OUTPUT_ROWS and b["verdict"] == ENCODED_NOT_USED:
                    hidden += 1
                    continue
                rows.append((Code(name), out, ci_text(b["effect"], 2), VerdictMark(b["verdict"])))
        if not rows and not hidden:
            return None
        note = f" ({hidden} outputs encoded_not_used not listed)" * bool(hidden)
        return Section(
            "By output", key="outputs",
            paragraphs=[f"Each output's effect in sd, {percent(self.ci_level)} intervals "
                        f"simultaneous over the outputs{note}."],
            table=Table(("task", "output", "effect (sd)", "verdict"), tuple(rows)),
        )  # fmt: skip

    def _evidence_section(self, figures: list[Figure]) -> Section | None:
        lines = self.evidence_lines()
        if not lines:
            return None
        return Section("Input-side evidence", key="evidence", items=list(lines), figures=figures)

    def _guide_sections(self) -> list[Section]:
        """The verdict legend, the warnings, and what each measure and evidence type says
        (as each declares it), with the thresholds and interval level in force."""
        thr = as_thresholds(self.settings.get("thresholds"))
        legend = [(VerdictMark(v), f": {meaning}. What to do: {action}.")
                  for v, meaning, action in verdict_guide(thr)]  # fmt: skip
        reading: list[Text] = [(Strong(m.label or m.name), ": " + with_thresholds(m.explanation, thr))
                               for m in self.measures() if m.explanation]  # fmt: skip
        for section in self.evidence:
            cls = evidence_type_for_section(section)
            if cls is not None and getattr(cls, "explanation", ""):
                title = getattr(cls, "title", "") or section.replace("_", " ")
                reading.append((Strong(title), ": " + cls.explanation))
        note = (
            f"Intervals are {percent(self.ci_level)} bootstrap intervals; p-values are "
            "permutation tests within label strata, Benjamini-Hochberg adjusted across "
            "variables."
        )
        return [
            Section("What the verdicts mean", key="legend", items=legend),
            Section("Warnings", key="warnings", items=[str(w) for w in self.warnings] or ["none"]),
            Section("How to read this", key="reading", paragraphs=[note], items=reading),
        ]

    def document(self, figures: bool = True) -> Document:
        """The report as sections, which the summary, the HTML report and the card render.

        Sections, by ``key``: ``outcome`` (the headline), ``measures`` (the audit's facts,
        the measures table, the summary and per-class figures), ``why`` (per task: verdict,
        reason, next step), ``outputs`` (each output's effect and verdict, heads of several
        outputs), ``performance`` (subgroups; only with targets), ``evidence``
        (only with input-side evidence), ``legend`` (what the verdicts mean), ``warnings``
        and ``reading`` (what each measure and evidence type says).

        Parameters
        ----------
        figures : bool, default=True
            Attach the figures (drawn once per result); False leaves them out and draws
            nothing (the plain-text summary).
        """
        page = self.figures_png() if figures else {}
        captions = page_captions(self.measures(), self.ci_level)

        def attach(*paths: str) -> list[Figure]:
            return [Figure(p, captions[p], page[p]) for p in paths if p in page]

        evidence_png = self.evidence_figures() if figures else {}
        sections = [
            *self._outcome_sections(attach(SUMMARY_FIGURE, PER_CLASS_FIGURE)),
            Section("Why", key="why", items=self._why_items()) if self.tasks else None,
            self._outputs_section(),
            self._performance_section(attach(PERFORMANCE_FIGURE)),
            self._evidence_section(
                [Figure(p, evidence_caption(p), png) for p, png in evidence_png.items()]
            ),
            *self._guide_sections(),
        ]
        return Document(self.title, [s for s in sections if s is not None])

    def summary(self) -> str:
        """The report as plain text, for a terminal: the headline, the measures table (one
        row per task with each measure and the verdict), each verdict's reason and next
        step, the input-side evidence and the warnings (the sections of :meth:`document`
        that :data:`SUMMARY_SECTIONS` names; the HTML report and the card show them all)."""
        doc = self.document(figures=False)
        keep = [s for s in doc.sections if s.key in SUMMARY_SECTIONS]
        if not self.warnings:
            keep = [s for s in keep if s.key != "warnings"]
        return render_text(Document(doc.title, keep))

    def to_html(self) -> str:
        """The report as one self-contained HTML page (figures embedded as data URIs)."""
        return render_html(self.document())

    # ------------------------------------------------------------------ files
    def save(self, directory: str | Path) -> Path:
        """Write ``report.json``, ``report.html``, the figures (``figures/*.png``) and the
        evidence figures (``figures/evidence/<section>/<key>/``).

        Returns the directory. Existing files of the same names are overwritten.
        """
        out = Path(directory)
        try:
            (out / "figures").mkdir(parents=True, exist_ok=True)
            (out / REPORT_JSON).write_text(json.dumps(self.to_dict(), indent=2, allow_nan=False))
            for rel, data in {**self.figures_png(), **self.evidence_figures()}.items():
                (out / rel).parent.mkdir(parents=True, exist_ok=True)
                (out / rel).write_bytes(data)
            (out / REPORT_HTML).write_text(self.to_html(), encoding="utf-8")
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
