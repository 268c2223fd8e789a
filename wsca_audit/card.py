"""Model cards (Mitchell et al., "Model Cards for Model Reporting", FAT* 2019) from an audit.

The Markdown card starts with YAML front matter in the Hugging Face Hub's ``model-index``
format (each metric has ``type``, ``name`` and ``value``), so the Hub shows the primary
metric and the WSCA usage values; an HTML rendering with the figures embedded is written
next to it. A card only reads an :class:`AuditResult`: it takes the report's own sections
(:meth:`AuditResult.document`: the outcome, the measures table, each verdict's reason and
next step, the subgroups, the evidence, the legend and what each measure says) under the
card's headings, and adds its own (model details, intended use, evaluation data,
mitigation, caveats).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from .errors import AuditError
from .fix import Mitigation
from .formatting import ci_text, percent
from .naming import sanitize_name
from .render import Code, Document, Figure, Section, Table, render_html, render_markdown
from .report import AuditResult
from .verdict import USES

MITIGATION_FIGURE = "figures/mitigation.png"


def _index_metrics(result: AuditResult) -> list[dict]:
    """The ``model-index`` metrics: the primary metric, each measure that declares
    ``card_metric`` per variable, and the primary metric of each subgroup."""
    primary = (result.to_dict().get("primary") or {}).get("metric") or {}
    out = []
    if primary.get("value") is not None:
        out.append({"type": primary["name"], "name": f"primary {primary['name']}",
                    "value": primary["value"]})  # fmt: skip
    for measure in result.measures():
        if not measure.card_metric:
            continue
        for name, t in result.tasks.items():
            block = t.get(measure.report_key) or {}
            if block.get("value") is not None:
                out.append({"type": f"wsca_{measure.metric_stem}_{sanitize_name(name)}",
                            "name": f"WSCA {measure.name} ({name})", "value": block["value"]})  # fmt: skip
    # subgroups: the model-index has no subgroup field; the Hub's habit is to name it
    performance = result.performance
    for var, levels in (performance.get("by_group") or {}).items():
        for level, e in levels.items():
            block = e.get(performance["metric"]) or {}
            if block.get("value") is not None:
                out.append({"type": performance["metric"],
                            "name": f"{performance['metric'].upper()} ({var}={level})",
                            "value": block["value"]})  # fmt: skip
    return out


def _front_matter(result: AuditResult, model_name: str, meta: dict) -> dict:
    front: dict[str, Any] = {
        "library_name": meta.get("library_name") or "pytorch",
        "pipeline_tag": meta.get("task_type", "image-classification"),
    }
    if meta.get("license"):
        front["license"] = meta["license"]
    front["tags"] = ["wsca-audit", "shortcut-learning", *meta.get("tags", [])]
    dataset = {
        "name": meta.get("dataset_name") or "evaluation data",
        "type": meta.get("dataset_type") or "custom",
    }
    front["model-index"] = [{"name": model_name, "results": [{
        "task": {"type": meta.get("task_type", "image-classification")},
        "dataset": dataset,
        "metrics": _index_metrics(result),
    }]}]  # fmt: skip
    front["wsca"] = {
        "schema_version": result["schema_version"],
        "headline": result.headline(),
        "verdicts": result.verdicts,
        **({"mlflow_run_id": meta["run_id"]} if meta.get("run_id") else {}),
    }
    return front


def _retitled(doc: Document, key: str, title: str) -> Section | None:
    """The report's section ``key`` under the card's heading (None when it has none)."""
    sec = doc.get(key)
    return replace(sec, title=title, key=key) if sec is not None else None


def _sections(result: AuditResult, meta: dict, doc: Document) -> list[Section]:
    """The card: the report's sections under Mitchell et al.'s headings, and its own."""
    rep = result.to_dict()
    primary = (rep.get("primary") or {}).get("metric") or {}
    details: list = [
        ("Audited layer: ", Code(str(rep.get("layer"))),
         f" (embedding dimension {rep.get('embedding_dim')})."),
    ]  # fmt: skip
    if meta.get("model_details"):
        details.insert(0, meta["model_details"])
    if meta.get("run_id"):
        details.append(("Generated from MLflow run ", Code(meta["run_id"]), "."))
    why, reading = doc.get("why"), doc.get("reading")
    factors = (
        "The audit asks, for each metadata variable below, whether the model's own "
        f"{(rep.get('primary') or {}).get('task') or 'classification'} head relies on it "
        "(acquisition factors such as scanner or site should not drive a clinical prediction)."
    )
    level = percent(result.ci_level)
    metrics = [
        f"Primary metric on the evaluation data: {primary.get('name', '-')} "
        f"{ci_text(primary)} ({level} bootstrap CI).",
        *(reading.paragraphs if reading else []),
    ]
    evaluation = (
        meta.get("evaluation_data") or f"{rep.get('n_samples')} samples (description not provided)."
    )
    sections = [
        _retitled(doc, "outcome", "Audit outcome"),
        Section("Model details", paragraphs=details),
        Section(
            "Intended use",
            paragraphs=[meta.get("intended_use") or "Not stated by the model's authors."],
            items=[f"Out of scope: {meta['out_of_scope']}"] if meta.get("out_of_scope") else [],
        ),
        Section("Factors", paragraphs=[factors], items=list(why.items) if why else []),
        Section("Metrics", paragraphs=metrics, items=list(reading.items) if reading else []),
        Section("Evaluation data", paragraphs=[evaluation]),
        _retitled(doc, "measures", "Quantitative analyses"),
        _retitled(doc, "outputs", "Quantitative analyses by output"),
        _retitled(doc, "legend", "What the verdicts mean"),
        _retitled(doc, "performance", "Quantitative analyses by subgroup"),
        _retitled(doc, "evidence", "Input-side evidence"),
        _caveats(result, meta),
    ]
    return [s for s in sections if s is not None]


def _caveats(result: AuditResult, meta: dict) -> Section:
    caveats: list = list(meta.get("caveats") or [])
    flagged = [n for n, v in result.verdicts.items() if v == USES]
    if flagged:
        names: list = []
        for i, n in enumerate(flagged):
            names += [", "] * bool(i) + [Code(n)]
        caveats.insert(0, ("The head uses ", *names, ": predictions may change with "
                           "acquisition conditions and not only with the clinical signal."))  # fmt: skip
    caveats += [f"Audit warning: {w}" for w in result.warnings]
    caveats.append(
        "WSCA measures linear alignment of the final head with each variable on this "
        "evaluation data; it does not prove the absence of non-linear or unlisted shortcuts."
    )
    return Section("Caveats and recommendations", items=caveats)


def _mitigation_section(m: Mitigation, level: float) -> Section:
    st = m.settings_
    where: tuple = (
        ("the patched model (head ", Code(str(m.head_source_)), " replaced)")
        if m.model is not None
        else (f"a new head only ({m.not_patched_reason_})",)
    )
    paragraph = (
        Code(m.variable), " was removed from the head with ", Code(m.method), " (",
        Code("wsca_audit.mitigate"), "), giving ", *where, f". The new head was fitted on "
        f"{st['n_fit']} samples and both heads were audited on {st['n_holdout']} held-out "
        "samples that the fit never saw.",
    )  # fmt: skip
    caption = f"{m.variable} before and after mitigation, with {percent(level)} CIs"
    return Section(
        "Mitigation",
        key="mitigation",
        paragraphs=[paragraph],
        table=Table(("", "before", "after"), tuple(tuple(r) for r in m.rows())),
        figures=[Figure(MITIGATION_FIGURE, caption, m.figure_png())],
    )


def _write_figures(sections: list[Section], fig_dir: Path) -> list[Section]:
    """Write every figure under ``fig_dir`` (its path below ``figures/``) and link it
    from the card, next to which ``fig_dir`` lies."""
    out = []
    for sec in sections:
        linked = []
        for fig in sec.figures:
            rel = fig.path.removeprefix("figures/")
            (fig_dir / rel).parent.mkdir(parents=True, exist_ok=True)
            (fig_dir / rel).write_bytes(fig.png)
            linked.append(replace(fig, path=f"{fig_dir.name}/{rel}"))
        out.append(replace(sec, figures=linked))
    return out


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

    The figures (the result's own, drawn once per result, e.g. the summary and the
    subgroups) are written to ``<card stem>_figures/`` and linked from the Markdown; the
    HTML (default: the card's path with ``.html``) embeds them.

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
    import yaml

    if not isinstance(result, AuditResult):
        raise AuditError(f"write_model_card expects an AuditResult, got {type(result).__name__}")
    if mitigation is not None and not isinstance(mitigation, Mitigation):
        raise AuditError(
            f"mitigation must be a Mitigation (wa.mitigate); got {type(mitigation).__name__}"
        )
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
    sections = _sections(result, meta, result.document())
    if mitigation is not None:  # before the caveats, which close the card
        sections.insert(-1, _mitigation_section(mitigation, result.ci_level))
    front = yaml.safe_dump(_front_matter(result, model_name, meta), sort_keys=False)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        card = Document(
            f"Model card: {model_name}",
            _write_figures(sections, path.parent / f"{path.stem}_figures"),
        )
        path.write_text(render_markdown(card, front_matter=front), encoding="utf-8")
        out_html = Path(html_path) if html_path else path.with_suffix(".html")
        out_html.write_text(render_html(card), encoding="utf-8")
    except OSError as exc:
        raise AuditError(f"could not write the model card to {path}: {exc}") from exc
    return path
