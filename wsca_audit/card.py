"""Model cards (Mitchell et al., "Model Cards for Model Reporting", FAT* 2019) from an audit.

The Markdown card starts with YAML front matter in the Hugging Face Hub's ``model-index``
format (each metric has ``type``, ``name`` and ``value``), so the Hub shows the primary
metric and the WSCA usage values; an HTML rendering with the figure embedded is written
next to it. Cards only read an :class:`AuditResult`.
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import AuditError
from .fix import Mitigation
from .formatting import ci_text, fmt, html_page, img_tag, png_bytes
from .naming import sanitize_name
from .report import AuditResult
from .verdict import MEANING, next_step, verdict_guide


@dataclass
class _Section:
    title: str
    paragraphs: list[str] = field(default_factory=list)
    bullets: list[str] = field(default_factory=list)
    table: tuple[list[str], list[list[str]]] | None = None
    image: tuple[str, str, bytes] | None = None  # (relative path, alt text, PNG)


def _front_matter(result: AuditResult, model_name: str, meta: dict) -> dict:
    primary = (result.to_dict().get("primary") or {}).get("metric") or {}
    metrics = []
    if primary.get("value") is not None:
        metrics.append(
            {
                "type": primary["name"],
                "name": f"primary {primary['name']}",
                "value": primary["value"],
            }
        )
    for measure in result.measures():
        if not measure.card_metric:
            continue
        for name, t in result.tasks.items():
            block = t.get(measure.report_key) or {}
            if block.get("value") is not None:
                metrics.append(
                    {
                        "type": f"wsca_{measure.metric_stem}_{sanitize_name(name)}",
                        "name": f"WSCA {measure.name} ({name})",
                        "value": block["value"],
                    }
                )
    # subgroups: the model-index has no subgroup field; the Hub's habit is to name it
    perf = result.performance
    for var, levels in (perf.get("by_group") or {}).items():
        for level, e in levels.items():
            block = e.get(perf["metric"]) or {}
            if block.get("value") is not None:
                metrics.append(
                    {
                        "type": perf["metric"],
                        "name": f"{perf['metric'].upper()} ({var}={level})",
                        "value": block["value"],
                    }
                )
    front: dict[str, Any] = {
        "library_name": meta.get("library_name") or "pytorch",
        "pipeline_tag": meta.get("task_type", "image-classification"),
    }
    if meta.get("license"):
        front["license"] = meta["license"]
    front["tags"] = ["wsca-audit", "shortcut-learning", *meta.get("tags", [])]
    front["model-index"] = [
        {
            "name": model_name,
            "results": [
                {
                    "task": {"type": meta.get("task_type", "image-classification")},
                    "dataset": {
                        "name": meta.get("dataset_name") or "evaluation data",
                        "type": meta.get("dataset_type") or "custom",
                    },
                    "metrics": metrics,
                }
            ],
        }
    ]
    front["wsca"] = {
        "schema_version": result["schema_version"],
        "headline": result.headline(),
        "verdicts": result.verdicts,
        **({"mlflow_run_id": meta["run_id"]} if meta.get("run_id") else {}),
    }
    return front


def _sections(result: AuditResult, model_name: str, meta: dict, figures: dict) -> list:
    rep = result.to_dict()
    primary = (rep.get("primary") or {}).get("metric") or {}
    details = [
        f"Audited layer: `{rep.get('layer')}` (embedding dimension {rep.get('embedding_dim')}).",
    ]
    if meta.get("model_details"):
        details.insert(0, meta["model_details"])
    if meta.get("run_id"):
        details.append(f"Generated from MLflow run `{meta['run_id']}`.")
    s = [
        _Section("Audit outcome", paragraphs=[f"**{result.headline()}**"]),
        _Section("Model details", paragraphs=details),
        _Section(
            "Intended use",
            paragraphs=[meta.get("intended_use") or "Not stated by the model's authors."],
            bullets=[f"Out of scope: {meta['out_of_scope']}"] if meta.get("out_of_scope") else [],
        ),
        _Section(
            "Factors",
            paragraphs=[
                "The audit asks, for each metadata variable below, whether the model's own "
                "classification head relies on it (acquisition factors such as scanner or "
                "site should not drive a clinical prediction)."
            ],
            bullets=[
                f"`{n}` ({t['kind']}): {MEANING.get(t['verdict'], t['verdict'])}"
                + (f". Why: {t['reason']}" if t.get("reason") else "")
                + f". Next: {next_step(n, t, bool(result.evidence))}"
                for n, t in result.tasks.items()
            ],
        ),
        _Section(
            "Metrics",
            paragraphs=[
                f"Primary metric on the evaluation data: {primary.get('name', '-')} "
                f"{ci_text(primary)} (95% bootstrap CI).",
                "WSCA `usage`: correlation of the model's head with an auxiliary head for the "
                "variable, after removing the label (within-class centring), in the embedding's "
                "covariance metric. `wsc`: the published weight-space cosine. `encoding`: "
                "held-out AUC or R² of the variable from the embedding. p-values are "
                "permutation tests within label strata, Benjamini-Hochberg adjusted.",
            ],
        ),
        _Section(
            "Evaluation data",
            paragraphs=[
                meta.get("evaluation_data")
                or f"{rep.get('n_samples')} samples (description not provided)."
            ],
        ),
    ]
    head, table = result.table()
    rows = [[f"`{n}`", *cells, f"**{v}**"] for n, cells, v in table]
    quant = _Section("Quantitative analyses", table=(["variable", *head, "verdict"], rows))
    if "wsca_summary.png" in figures:
        quant.image = (
            figures["wsca_summary.png"][0],
            "WSCA summary: usage and wsc per variable with 95% CIs",
            figures["wsca_summary.png"][1],
        )
    s.append(quant)
    s.append(
        _Section(
            "What the verdicts mean",
            bullets=[
                f"**{v}**: {meaning}. What to do: {action}."
                for v, meaning, action in verdict_guide(result.settings.get("thresholds"))
            ],
        )
    )
    if result.performance.get("by_group"):
        p_head, p_rows = result.performance_rows()
        worst = result.performance.get("worst_group") or {}
        paras = ["The primary metric on each subgroup of the evaluation data, with 95% "
                 "bootstrap intervals (unitary, and crossed where requested)."]  # fmt: skip
        if worst:
            paras.append(
                f"Worst group: `{worst['variable']}` = {worst['level']}, {worst['metric']} "
                f"{ci_text(worst)} (n = {worst.get('n')}), {fmt(worst.get('gap_to_best'))} "
                "below the best group."
            )
        sub = _Section(
            "Quantitative analyses by subgroup", paragraphs=paras, table=(p_head, p_rows)
        )
        if "performance.png" in figures:
            path, png = figures["performance.png"]
            sub.image = (path, "primary metric by subgroup with 95% CIs", png)
        s.append(sub)
    evidence = result.evidence_lines()
    if evidence:
        s.append(
            _Section(
                "Input-side evidence",
                paragraphs=[
                    "Where in the image the prediction comes from: Captum attributions (share "
                    "of positive attribution mass inside the region of interest), the primary "
                    'AUC with the region removed or kept alone (after Sourget et al., "Mask of '
                    'truth"), and counterfactual interventions that set a variable in the input.'
                ],
                bullets=evidence,
            )
        )
    caveats = list(meta.get("caveats") or [])
    flagged = [n for n, v in result.verdicts.items() if v == "uses"]
    if flagged:
        caveats.insert(
            0,
            "The head uses " + ", ".join(f"`{n}`" for n in flagged) + ": predictions may "
            "change with acquisition conditions and not only with the clinical signal.",
        )
    caveats += [f"Audit warning: {w}" for w in result.warnings]
    caveats.append(
        "WSCA measures linear alignment of the final head with each variable on this "
        "evaluation data; it does not prove the absence of non-linear or unlisted shortcuts."
    )
    s.append(_Section("Caveats and recommendations", bullets=caveats))
    return s


def _mitigation_section(m: Mitigation, figure: tuple[str, bytes]) -> _Section:
    st = m.settings_
    where = (
        f"the patched model (head `{m.head_source_}` replaced)"
        if m.model is not None
        else f"a new head only ({m.not_patched_reason_})"
    )
    paras = [
        f"`{m.variable}` was removed from the head with `{m.method}` "
        f"(`wsca_audit.mitigate`), giving {where}. The new head was fitted on "
        f"{st['n_fit']} samples and both heads were audited on {st['n_holdout']} held-out "
        "samples that the fit never saw."
    ]
    sec = _Section(
        "Mitigation", paragraphs=paras, table=(["", "before", "after"], [list(r) for r in m.rows()])
    )
    sec.image = (figure[0], f"{m.variable} before and after mitigation, with 95% CIs", figure[1])
    return sec


def _markdown(front: dict, title: str, sections: list[_Section]) -> str:
    import yaml

    out = ["---", yaml.safe_dump(front, sort_keys=False).rstrip(), "---", "", f"# {title}", ""]
    for sec in sections:
        out += [f"## {sec.title}", ""]
        for p in sec.paragraphs:
            out += [p, ""]
        if sec.bullets:
            out += [f"- {b}" for b in sec.bullets] + [""]
        if sec.table:
            head, rows = sec.table
            cell = lambda c: str(c).replace("|", "\\|")  # noqa: E731
            out.append("| " + " | ".join(head) + " |")
            out.append("|" + "---|" * len(head))
            out += ["| " + " | ".join(cell(c) for c in r) + " |" for r in rows]
            out.append("")
        if sec.image:
            out += [f"![{sec.image[1]}]({sec.image[0]})", ""]
    return "\n".join(out)


def _inline(text: str) -> str:
    """Escape, then render the two Markdown spans the card uses: `code` and **bold**."""
    import re

    t = html.escape(text)
    t = re.sub(r"`([^`]+)`", r"<code>\1</code>", t)
    return re.sub(r"\*\*([^*]+)\*\*", r"<b>\1</b>", t)


def _html(title: str, sections: list[_Section]) -> str:
    body = [f"<h1>{html.escape(title)}</h1>"]
    for sec in sections:
        body.append(f"<h2>{html.escape(sec.title)}</h2>")
        body += [f"<p>{_inline(p)}</p>" for p in sec.paragraphs]
        if sec.bullets:
            body.append("<ul>" + "".join(f"<li>{_inline(b)}</li>" for b in sec.bullets) + "</ul>")
        if sec.table:
            head, rows = sec.table
            body.append(
                "<table><tr>"
                + "".join(f"<th>{html.escape(h)}</th>" for h in head)
                + "</tr>"
                + "".join(
                    "<tr>" + "".join(f"<td>{_inline(str(c))}</td>" for c in r) + "</tr>"
                    for r in rows
                )
                + "</table>"
            )
        if sec.image:
            body.append(img_tag(sec.image[2], sec.image[1]))
    return html_page(title, "\n".join(body))


def write_model_card(
    result: AuditResult,
    path: str | Path = "MODEL_CARD.md",
    *,
    model_name: str = "model",
    intended_use: str | None = None,
    out_of_scope: str | None = None,
    model_details: str | None = None,
    evaluation_data: str | None = None,
    dataset_name: str | None = None,
    caveats: list[str] | None = None,
    license: str | None = None,
    tags: list[str] | None = None,
    run_id: str | None = None,
    html_path: str | Path | None = None,
    mitigation: Mitigation | None = None,
) -> Path:
    """Write a Markdown model card (with HF ``model-index`` front matter) and its HTML.

    The summary figure is written to ``<card stem>_figures/wsca_summary.png`` and linked
    from the Markdown; the HTML (default: the card's path with ``.html``) embeds it.

    Parameters
    ----------
    result : AuditResult
    path : path of the Markdown card.
    model_name, intended_use, out_of_scope, model_details, evaluation_data, dataset_name,
    caveats, license, tags : the card's free-text fields (None: a neutral placeholder).
    run_id : the MLflow run the audit came from; stated in the card and front matter.
    mitigation : Mitigation, optional
        From :func:`wsca_audit.mitigate`: adds a "Mitigation" section with the
        before/after table (held-out part) and its figure.

    Returns
    -------
    Path of the Markdown card.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> res = AuditResult({"schema_version": 1, "tasks": {}, "warnings": [], "n_samples": 10})
    >>> p = write_model_card(res, pathlib.Path(tempfile.mkdtemp()) / "CARD.md", model_name="m")
    >>> p.read_text().startswith("---")
    True
    """
    if not isinstance(result, AuditResult):
        raise AuditError(f"write_model_card expects an AuditResult, got {type(result).__name__}")
    path = Path(path)
    meta = {
        "intended_use": intended_use,
        "out_of_scope": out_of_scope,
        "model_details": model_details,
        "evaluation_data": evaluation_data,
        "dataset_name": dataset_name,
        "caveats": caveats,
        "license": license,
        "tags": tags or [],
        "run_id": run_id,
    }
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fig_dir = path.parent / f"{path.stem}_figures"
        figures: dict[str, tuple[str, bytes]] = {}  # file name -> (link, PNG)
        for fname, fig in (
            ("wsca_summary.png", result.figure() if result.tasks else None),
            ("performance.png", result.performance_figure()),
        ):
            if fig is not None:
                fig_dir.mkdir(exist_ok=True)
                png = png_bytes(fig)
                (fig_dir / fname).write_bytes(png)
                figures[fname] = (f"{fig_dir.name}/{fname}", png)
        if mitigation is not None:
            if not isinstance(mitigation, Mitigation):
                raise AuditError(
                    f"mitigation must be a Mitigation (wa.mitigate); got {type(mitigation).__name__}"
                )
            fig_dir.mkdir(exist_ok=True)
            png = png_bytes(mitigation.figure())
            (fig_dir / "mitigation.png").write_bytes(png)
            figures["mitigation.png"] = (f"{fig_dir.name}/mitigation.png", png)
        title = f"Model card: {model_name}"
        sections = _sections(result, model_name, meta, figures)
        if mitigation is not None:
            sections.insert(-1, _mitigation_section(mitigation, figures["mitigation.png"]))
        path.write_text(
            _markdown(_front_matter(result, model_name, meta), title, sections), encoding="utf-8"
        )
        out_html = Path(html_path) if html_path else path.with_suffix(".html")
        out_html.write_text(_html(title, sections), encoding="utf-8")
    except OSError as exc:
        raise AuditError(f"could not write the model card to {path}: {exc}") from exc
    return path
