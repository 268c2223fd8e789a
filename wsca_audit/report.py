"""AuditResult: the report (schema_version 1), its summary table, figure, JSON and HTML.

An AuditResult is a thin wrapper around the JSON-ready report dictionary, so a report
read back from disk (or from an MLflow run) is a full AuditResult again.
"""

from __future__ import annotations

import base64
import copy
import html
import io
import json
import math
from pathlib import Path
from typing import Any

from .errors import AuditError

SCHEMA_VERSION = 1
REPORT_JSON = "report.json"
REPORT_HTML = "report.html"
SUMMARY_FIGURE = "figures/wsca_summary.png"
EVIDENCE_FIGURES = "figures/evidence"
# Evidence.kind -> section of report["evidence"]
EVIDENCE_SECTIONS = {
    "attribution": "attribution",
    "roi_masking": "roi_masking",
    "intervention": "interventions",
}

_VERDICT_COLOURS = {
    "uses": "#c0392b",
    "encoded_not_used": "#2e86c1",
    "not_encoded": "#7f8c8d",
    "inconclusive": "#e67e22",
}


def _json_safe(x: Any) -> Any:
    """NaN/inf -> None, numpy scalars -> Python numbers, tuples -> lists."""
    if isinstance(x, dict):
        return {str(k): _json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_json_safe(v) for v in x]
    if hasattr(x, "item") and not isinstance(x, (str, bytes)):
        x = x.item()
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


def report_schema() -> dict:
    """The JSON Schema (draft 2020-12) of a report, from the file shipped in the package."""
    from importlib.resources import files

    return json.loads((files("wsca_audit.schema") / "report.schema.json").read_text("utf-8"))


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
        lines = [f"{'/'.join(map(str, e.path)) or '<root>'}: {e.message[:200]}" for e in errors[:10]]
        more = f" (and {len(errors) - 10} more)" if len(errors) > 10 else ""
        raise AuditError("the report does not match schema_version 1: " + "; ".join(lines) + more)


def _fmt(x: Any, digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "-"
    return f"{x:.{digits}f}"


def _ci_text(m: dict | None) -> str:
    if not m:
        return "-"
    return f"{_fmt(m.get('value'))} [{_fmt(m.get('ci_low'))}, {_fmt(m.get('ci_high'))}]"


class AuditResult:
    """Result of an audit: per-task measures, verdicts, settings and warnings.

    Parameters
    ----------
    report : dict
        A report in the schema of DESIGN.md (``schema_version`` 1).

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
        self._report = _json_safe(report)
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
        kind = getattr(evidence, "kind", None)
        if kind not in EVIDENCE_SECTIONS or not hasattr(evidence, "to_dict"):
            raise AuditError(
                "add_evidence takes the result of attribution_mass, InputAttribution.attribute, "
                f"roi_masking or intervention_effect; got {type(evidence).__name__}"
            )
        section = EVIDENCE_SECTIONS[kind]
        key = str(key if key is not None else evidence.default_key)
        self._report.setdefault("evidence", {}).setdefault(section, {})[key] = _json_safe(
            evidence.to_dict()
        )
        self._evidence = [e for e in self._evidence if (e[0], e[1]) != (section, key)]
        self._evidence.append((section, key, evidence))
        return self

    def evidence_figures(self) -> dict[str, bytes]:
        """PNG bytes of the evidence figures, keyed by their path under the report folder."""
        from .naming import sanitize_name

        out: dict[str, bytes] = {}
        for section, key, ev in self._evidence:
            prefix = f"{EVIDENCE_FIGURES}/{section}/{sanitize_name(key)}/"
            for rel, png in ev.figures_png().items():
                out[prefix + rel] = png
        return out

    def evidence_lines(self) -> list[str]:
        """One plain-text line per piece of input-side evidence."""
        ev, lines = self.evidence, []
        for key, a in ev.get("attribution", {}).items():
            if a.get("inside") is not None:
                lines.append(
                    f"attribution '{key}' ({a.get('method')}, {a.get('n_samples')} images): "
                    f"{_fmt(a['inside'])} [{_fmt(a.get('ci_low'))}, {_fmt(a.get('ci_high'))}] "
                    f"of the positive mass inside the ROI, which covers {_fmt(a.get('roi_area'))} "
                    f"of the image (enrichment {_fmt(a.get('enrichment'), 2)})"
                )
            else:
                lines.append(
                    f"attribution '{key}' ({a.get('method')}, {a.get('n_samples')} images): "
                    f"mean maps for {len(a.get('per_group', {}))} groups (no ROI given)"
                )
        for key, m in ev.get("roi_masking", {}).items():
            parts = [
                f"{name.replace('_', ' ')} {_ci_text(m.get(name))}"
                for name in ("full", "roi_removed", "roi_only")
            ]
            lines.append(
                f"ROI masking '{key}' (AUC, fill={m.get('fill')}): {'; '.join(parts)} "
                f"-> {m.get('verdict')}"
            )
        for key, i in ev.get("interventions", {}).items():
            use = self.tasks.get(key, {}).get("usage", {})
            extra = f" (usage {_fmt(use.get('value'))})" if use else ""
            lines.append(
                f"intervention '{key}' {i.get('values', ['?'])[0]} -> {i.get('values', ['?'])[-1]}: "
                f"primary score moves {_ci_text(i)} sd{extra}"
            )
        return lines

    def __getitem__(self, key: str) -> Any:
        return self._report[key]

    def __repr__(self) -> str:
        v = ", ".join(f"{k}={v}" for k, v in self.verdicts.items())
        return f"AuditResult(n_samples={self._report.get('n_samples')}, {v})"

    # ------------------------------------------------------------------ text
    def summary(self) -> str:
        """A fixed-width table: one row per task with encoding, wsc, usage and verdict."""
        head = (
            "task",
            "kind",
            "encoding [95% CI]",
            "wsc [95% CI]",
            "usage [95% CI]",
            "p(usage)",
            "attr. align [95% CI]",
            "verdict",
        )
        rows = [head]
        for name, t in self.tasks.items():
            enc, wsc, use = t["encoding"], t["wsc"], t["usage"]
            rows.append(
                (
                    name,
                    t["kind"],
                    f"{enc['metric']} {_fmt(enc['value'])} [{_fmt(enc['ci_low'])}, {_fmt(enc['ci_high'])}]",
                    f"{_fmt(wsc['value'])} [{_fmt(wsc['ci_low'])}, {_fmt(wsc['ci_high'])}]",
                    f"{_fmt(use['value'])} [{_fmt(use['ci_low'])}, {_fmt(use['ci_high'])}]",
                    _fmt(use.get("p_value"), 4),
                    _ci_text(t.get("attribution")),
                    t["verdict"],
                )
            )
        widths = [max(len(str(r[i])) for r in rows) for i in range(len(head))]
        lines = ["  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
        lines.insert(1, "  ".join("-" * w for w in widths))
        primary = self._report.get("primary", {}).get("metric", {})
        top = (
            f"WSCA audit: {self._report.get('n_samples')} samples, "
            f"embedding dim {self._report.get('embedding_dim')}, layer {self._report.get('layer')!r}"
        )
        if primary.get("name"):
            top += f"; primary {primary['name']} {_fmt(primary.get('value'))}"
        out = [top, "", *lines]
        ev = self.evidence_lines()
        if ev:
            out += ["", "input-side evidence:", *(f"  - {line}" for line in ev)]
        if self.warnings:
            out += ["", "warnings:", *(f"  - {w}" for w in self.warnings)]
        return "\n".join(out)

    # ------------------------------------------------------------------ figure
    def figure(self):
        """Bar chart of usage and wsc (left) and encoding (right) per task, with 95% CIs.

        Returns a ``matplotlib.figure.Figure`` (no pyplot state is touched).
        """
        from matplotlib.figure import Figure

        names = list(self.tasks)
        fig = Figure(figsize=(max(6.0, 1.6 * len(names) + 4), 3.8), layout="constrained")
        ax, ax2 = fig.subplots(1, 2, width_ratios=[2, 1])
        x = list(range(len(names)))
        thr = self.settings.get("thresholds") if isinstance(self.settings, dict) else None
        thr = {k: v for k, v in (thr or {}).items() if isinstance(v, (int, float))}
        for offset, key, hatch in ((-0.2, "usage", None), (0.2, "wsc", "//")):
            vals = [self.tasks[n][key]["value"] or 0.0 for n in names]
            lo = [self.tasks[n][key]["ci_low"] for n in names]
            hi = [self.tasks[n][key]["ci_high"] for n in names]
            err = [
                [max(v - (a if a is not None else v), 0) for v, a in zip(vals, lo)],
                [max((b if b is not None else v) - v, 0) for v, b in zip(vals, hi)],
            ]
            colours = [_VERDICT_COLOURS.get(self.tasks[n]["verdict"], "#999") for n in names]
            ax.bar(
                [i + offset for i in x],
                vals,
                width=0.38,
                yerr=err,
                capsize=3,
                color=colours if key == "usage" else "white",
                edgecolor=colours,
                hatch=hatch,
                label=key,
            )
            nulls = [self.tasks[n][key].get("null_q95") for n in names]
            ax.scatter(
                [i + offset for i, q in zip(x, nulls) if q is not None],
                [q for q in nulls if q is not None],
                marker="_",
                s=200,
                color="black",
                label="null 95%" if key == "usage" else None,
                zorder=3,
            )
        if "usage" in thr:
            ax.axhline(thr["usage"], color="#c0392b", ls="--", lw=1, label="'uses' threshold")
        ax.set_xticks(x, names, rotation=20)
        ax.set_ylim(0, 1.05)
        ax.set_ylabel("|correlation| (max over classes)")
        ax.set_title("Head alignment: usage (filled) vs paper's wsc (hatched)")
        ax.legend(fontsize=8, loc="upper right")
        for i, n in enumerate(names):
            enc = self.tasks[n]["encoding"]
            v = enc["value"] or 0.0
            lo = enc["ci_low"] if enc["ci_low"] is not None else v
            hi = enc["ci_high"] if enc["ci_high"] is not None else v
            ax2.errorbar(
                i,
                v,
                yerr=[[max(v - lo, 0)], [max(hi - v, 0)]],
                fmt="o",
                capsize=3,
                color=_VERDICT_COLOURS.get(self.tasks[n]["verdict"], "#999"),
            )
            ax2.annotate(
                enc["metric"], (i, v), textcoords="offset points", xytext=(6, 0), fontsize=7
            )
        if "auc" in thr:
            ax2.axhline(thr["auc"], color="grey", ls=":", lw=1)
        ax2.set_xticks(x, names, rotation=20)
        ax2.set_xlim(-0.5, len(names) - 0.3)
        ax2.set_ylim(
            min(0.0, *[self.tasks[n]["encoding"]["value"] or 0 for n in names]) - 0.05, 1.05
        )
        ax2.set_title("Encoding (held-out)")
        return fig

    # ------------------------------------------------------------------ html
    def to_html(
        self, figure_png: bytes | None = None, evidence_png: dict[str, bytes] | None = None
    ) -> str:
        """A self-contained HTML report (figures are embedded as data URIs)."""
        if figure_png is None and self.tasks:
            buf = io.BytesIO()
            self.figure().savefig(buf, format="png", dpi=110)
            figure_png = buf.getvalue()
        esc = html.escape
        rows = []
        for name, t in self.tasks.items():
            enc, wsc, use = t["encoding"], t["wsc"], t["usage"]
            colour = _VERDICT_COLOURS.get(t["verdict"], "#999")
            rows.append(
                "<tr>"
                f"<td>{esc(name)}</td><td>{esc(t['kind'])}</td>"
                f"<td>{esc(enc['metric'])} {_fmt(enc['value'])} [{_fmt(enc['ci_low'])}, {_fmt(enc['ci_high'])}]</td>"
                f"<td>{_fmt(wsc['value'])} [{_fmt(wsc['ci_low'])}, {_fmt(wsc['ci_high'])}]</td>"
                f"<td>{_fmt(use['value'])} [{_fmt(use['ci_low'])}, {_fmt(use['ci_high'])}]</td>"
                f"<td>{_fmt(use.get('p_value'), 4)}</td>"
                f"<td>{_ci_text(t.get('attribution'))}</td>"
                f"<td style='color:{colour};font-weight:bold'>{esc(str(t['verdict']))}</td></tr>"
            )
        img = ""
        if figure_png:
            img = (
                "<img alt='WSCA summary figure' style='max-width:100%' src='data:image/png;base64,"
                + base64.b64encode(figure_png).decode()
                + "'>"
            )
        if evidence_png is None:
            evidence_png = self.evidence_figures()
        evidence_html = ""
        lines = self.evidence_lines()
        if lines:
            figs = "".join(
                f"<figure><img alt='{esc(path)}' style='max-width:100%' "
                f"src='data:image/png;base64,{base64.b64encode(png).decode()}'>"
                f"<figcaption>{esc(path)}</figcaption></figure>"
                for path, png in evidence_png.items()
                if "/overlays/" not in path
            )
            evidence_html = (
                "<h2>Input-side evidence</h2><ul>"
                + "".join(f"<li>{esc(x)}</li>" for x in lines)
                + "</ul>"
                + figs
            )
        warn = "".join(f"<li>{esc(w)}</li>" for w in self.warnings)
        primary = self._report.get("primary", {}).get("metric", {})
        return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>WSCA audit report</title>
<style>body{{font-family:system-ui,sans-serif;margin:2em;max-width:70em}}
table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:4px 8px;text-align:left}}
th{{background:#f4f4f4}}</style></head><body>
<h1>WSCA audit report</h1>
<p>{esc(str(self._report.get("n_samples")))} samples, embedding dimension
{esc(str(self._report.get("embedding_dim")))}, layer <code>{esc(str(self._report.get("layer")))}</code>;
primary {esc(str(primary.get("name")))} = {_fmt(primary.get("value"))}.</p>
<table><tr><th>task</th><th>kind</th><th>encoding [95% CI]</th><th>wsc (paper) [95% CI]</th>
<th>usage (deconfounded) [95% CI]</th><th>p (usage, BH)</th>
<th>attribution alignment [95% CI]</th><th>verdict</th></tr>
{"".join(rows)}</table>
{img}
{evidence_html}
<h2>Warnings</h2><ul>{warn or "<li>none</li>"}</ul>
<h2>How to read this</h2>
<p><b>usage</b> is the correlation of the model's head with the metadata head after the
primary label is removed (within-class centring), in the metric of the embedding
covariance; the verdict is based on it. <b>attribution alignment</b> is its counterpart
from Captum attributions (the same comparison with the covariance's diagonal only: do
the prediction and the metadata rest on the same embedding units). <b>wsc</b> is the weight-space cosine of Wong et
al. (MIDL 2026), reported as published. <b>encoding</b> says whether the metadata can be
read from the embedding at all (held-out AUC or R²).</p>
</body></html>
"""

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
            png = None
            if self.tasks:
                buf = io.BytesIO()
                self.figure().savefig(buf, format="png", dpi=110)
                png = buf.getvalue()
                (out / SUMMARY_FIGURE).write_bytes(png)
            evidence_png = self.evidence_figures()
            for rel, data in evidence_png.items():
                (out / rel).parent.mkdir(parents=True, exist_ok=True)
                (out / rel).write_bytes(data)
            (out / REPORT_HTML).write_text(self.to_html(png, evidence_png), encoding="utf-8")
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
