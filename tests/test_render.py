"""The section model: one Document, rendered as plain text, HTML and Markdown; the report's
sections (summary, HTML report and card render the same facts); figures drawn once."""

import html
import re

import pytest

import wsca_audit as wa
from wsca_audit import figures as figures_module
from wsca_audit.render import (
    Code,
    Document,
    Figure,
    Section,
    Strong,
    Table,
    VerdictMark,
    plain,
    render_html,
    render_markdown,
    render_text,
)
from wsca_audit.report import SUMMARY_SECTIONS
from wsca_audit.verdict import COLOURS, INCONCLUSIVE, MEANING, USES

PNG = b"\x89PNG\r\n\x1a\n-not-really-a-png"


def _report(ci_level=0.9):
    """A hand-made report (no audit): two tasks, subgroups, warnings, another CI level."""
    block = {"value": 0.5, "ci_low": 0.4, "ci_high": 0.6}
    tested = {**block, "p_value": 0.01, "p_value_raw": 0.01}
    return {
        "schema_version": 1, "n_samples": 120, "embedding_dim": 8, "layer": "fc",
        "primary": {"metric": {"name": "auc", "value": 0.8, "ci_low": 0.7, "ci_high": 0.9}},
        "tasks": {
            "scanner": {"kind": "categorical", "verdict": USES, "reason": "usage 0.50 [0.40, 0.60]",
                        "encoding": {"metric": "auc", **block}, "wsc": tested, "usage": tested,
                        "effect": {**block, "unit": "logit_sd"}},
            "site": {"kind": "categorical", "verdict": INCONCLUSIVE, "reason": "too few",
                     "samples_needed": 900, "encoding": {"metric": "auc", **block},
                     "wsc": tested, "usage": tested, "effect": {**block, "unit": "logit_sd"}},
        },
        "performance": {
            "metric": "auc", "overall": block, "metrics": {"auc": block},
            "by_group": {"site": {"a": {"n": 60, "auc": block}, "b": {"n": 60, "auc": block}}},
            "worst_group": {"variable": "site", "level": "b", "metric": "auc", "n": 60,
                            "gap_to_best": 0.1, **block},
        },
        "settings": {"ci_level": ci_level, "thresholds": {"usage": 0.3, "effect": 0.2}},
        "warnings": ["a <b>warning</b> & more"],
    }  # fmt: skip


def _untag(page: str) -> str:
    """The text of an HTML page, unescaped."""
    return html.unescape(re.sub(r"<[^>]+>", "", page))


def _unmark(md: str) -> str:
    """Markdown without the marks the renderer adds (code spans, bold, cell escapes)."""
    return md.replace("**", "").replace("`", "").replace("\\|", "|")


# --------------------------------------------------------------------------- the renderers
def test_runs_render_in_each_format():
    text = (Code("a|b"), " is ", Strong("big"), ", verdict ", VerdictMark(USES))
    assert plain(text) == "a|b is big, verdict uses"
    doc = Document("T", [Section("S", paragraphs=[text])])
    page = render_html(doc)
    assert "<code>a|b</code> is <b>big</b>" in page
    assert f"<b style='color:{COLOURS[USES]}' title='{html.escape(MEANING[USES])}'>uses</b>" in page
    assert "`a|b` is **big**, verdict **uses**" in render_markdown(doc)
    assert "  a|b is big, verdict uses" in render_text(doc)


def test_html_escapes_every_piece_of_user_text():
    evil = "<script>x</script>"
    doc = Document(evil, [Section(
        evil, paragraphs=[evil, (Code(evil), Strong(evil))], items=[evil],
        table=Table((evil,), ((evil,), (VerdictMark(evil),))),
        figures=[Figure("f.png", evil, PNG)],
    )])  # fmt: skip
    page = render_html(doc)
    assert "<script>" not in page and page.count("&lt;script&gt;") >= 9


def test_markdown_cells_headings_figures_and_code_with_backticks():
    doc = Document("Card", [
        Section("Data", level=3, table=Table(("a|b", "c"), (("x|y", (Code("n`m"),)),)),
                figures=[Figure("card_figures/f.png", "the caption", PNG)]),
        Section(items=["two\nlines"]),
    ])  # fmt: skip
    md = render_markdown(doc, front_matter="k: v\n")
    assert md.startswith("---\nk: v\n---\n\n# Card\n")
    assert "### Data" in md
    assert "| a\\|b | c |" in md and "| x\\|y | `` n`m `` |" in md
    assert "![the caption](card_figures/f.png)" in md
    assert "- two lines" in md  # one item stays one line


def test_text_headings_indent_and_leave_figures_out():
    doc = Document("Title", [
        Section(paragraphs=["lead"]),
        Section("Why", paragraphs=["p"], items=["i"], table=Table(("h",), (("c",),)),
                figures=[Figure("f.png", "caption", PNG)]),
        Section("WSCA names"),
    ])  # fmt: skip
    assert render_text(doc).splitlines() == [
        "Title", "lead", "", "why:", "  p", "  - i", "  h", "  -", "  c", "", "WSCA names:",
    ]  # fmt: skip


def test_document_finds_sections_and_figures():
    fig = Figure("f.png", "c", PNG)
    doc = Document("T", [Section("A", key="a", figures=[fig]), Section("B", key="b")])
    assert doc.get("b").title == "B" and doc.get("none") is None
    assert list(doc.figures()) == [fig]
    assert "png=" not in repr(fig)  # the bytes stay out of reprs and logs


# --------------------------------------------------------------------------- the report
def test_summary_html_and_card_render_the_same_facts(small_result, tmp_path):
    doc = small_result.document(figures=False)
    text = small_result.summary()
    page = _untag(small_result.to_html())
    card = _unmark(wa.write_model_card(small_result, tmp_path / "CARD.md").read_text())
    facts = [small_result.headline(), *small_result.reasons(), *small_result.warnings]
    in_summary = set(facts)
    for sec in doc.sections:
        found = [plain(p) for p in sec.paragraphs] + [plain(i) for i in sec.items]
        if sec.table is not None:
            found += [plain(c) for row in sec.table.rows for c in row]
        facts += found
        if sec.key in SUMMARY_SECTIONS:  # the terminal's share of the sections
            in_summary.update(found)
    assert facts and in_summary
    for fact in facts:
        assert fact in page, fact
        assert fact in card, fact
    for fact in in_summary:
        assert fact in text, fact
    keys = [s.key for s in doc.sections]
    assert keys == ["outcome", "measures", "why", "performance", "legend", "warnings", "reading"]


def test_each_next_step_is_written_once_and_shown_everywhere(tmp_path):
    res = wa.AuditResult(_report())
    (scanner, site) = res.reasons()
    assert scanner.startswith("scanner: uses - usage 0.50 [0.40, 0.60]. Next: confirm it")
    assert "Next: audit about 900 samples" in site
    card = wa.write_model_card(res, tmp_path / "c.md").read_text()
    for line in (scanner, site):
        name, rest = line.split(": ", 1)
        assert rest in res.summary() and rest in _untag(res.to_html())
        verdict, after = rest.split(" - ", 1)
        assert f"`{name}`: **{verdict}** - {after}" in card


def test_the_card_explains_effect_which_the_verdict_rests_on(small_result, tmp_path):
    card = wa.write_model_card(small_result, tmp_path / "CARD.md").read_text()
    metrics = card.split("## Metrics\n", 1)[1].split("\n## ", 1)[0]
    assert "**effect (logit sd)**: how far the variable moves the model's score" in metrics
    assert "**usage (deconfounded)**: " in metrics
    assert "effect (logit sd) [95% CI]" in card  # its column in the quantitative analyses


def test_explanations_show_the_thresholds_in_force():
    text = _untag(wa.AuditResult(_report()).to_html())
    assert "usage above 0.30 or an effect beyond ±0.20 sd" in text
    assert "an interval inside ±0.20 sd means not used" in text


def test_the_ci_level_of_the_report_is_the_one_shown(tmp_path):
    res = wa.AuditResult(_report(ci_level=0.9))
    head, _ = res.table()
    assert "usage (deconfounded) [90% CI]" in head
    card = wa.write_model_card(res, tmp_path / "c.md").read_text()
    outputs = {"summary": res.summary(), "html": res.to_html(), "card": card}
    for name, out in outputs.items():
        assert "[90% CI]" in out, name
        assert name == "summary" or "90% bootstrap" in out, name  # the subgroups' note
        assert "95%" not in out, name
    assert res.performance_figure().axes[0].get_xlabel() == "AUC with 90% CI (red: worst group)"
    assert wa.AuditResult({**_report(), "settings": {"ci_level": "x"}}).ci_level == 0.95


def test_evidence_types_explain_themselves_once(small_result):
    from wsca_audit.evidence import evidence_type

    rep = small_result.to_dict()
    rep["evidence"] = {"interventions": {"marker": {"value": 1.0, "ci_low": 0.5, "ci_high": 1.5}}}
    cls = evidence_type("intervention")
    reading = wa.AuditResult(rep).document(figures=False).get("reading")
    shown = [plain(i) for i in reading.items]
    if cls.explanation:
        title = cls.title or "interventions"
        assert f"{title}: {cls.explanation}" in shown
    assert len(shown) == len(set(shown))


# --------------------------------------------------------------------------- figures
@pytest.fixture
def draw_counts(monkeypatch):
    """How often each report figure is drawn (the report module's names are patched)."""
    import wsca_audit.report as report

    counts = {}
    for name in ("summary_figure", "performance_figure", "per_class_figure"):
        original = getattr(figures_module, name)

        def counted(*a, _name=name, _f=original, **k):
            counts[_name] = counts.get(_name, 0) + 1
            return _f(*a, **k)

        monkeypatch.setattr(report, name, counted)
    return counts


def test_figures_are_drawn_once_per_result(small_result, draw_counts, tmp_path):
    res = wa.AuditResult(small_result.to_dict())
    res.save(tmp_path / "a")
    res.to_html()
    wa.write_model_card(res, tmp_path / "card" / "CARD.md")
    res.save(tmp_path / "b")
    assert draw_counts == {"summary_figure": 1, "performance_figure": 1, "per_class_figure": 1}
    assert res.summary() and draw_counts["summary_figure"] == 1  # text draws nothing
    assert (tmp_path / "a" / "figures" / "wsca_summary.png").read_bytes() == (
        tmp_path / "card" / "CARD_figures" / "wsca_summary.png"
    ).read_bytes()


def test_add_evidence_redraws_the_evidence_figures_only(small_result, draw_counts):
    from wsca_audit.evidence import InterventionResult

    res = wa.AuditResult(small_result.to_dict())
    assert res.evidence_figures() == {}
    res.figures_png()
    ev = InterventionResult({"variable": "marker", "value": 1.0, "ci_low": 0.5, "ci_high": 1.5,
                             "values": [0, 1], "score_sd": 1.0})  # fmt: skip
    drawn = []
    ev.figures_png = lambda prefix="": drawn.append(1) or {"intervention.png": PNG}
    res.add_evidence(ev)
    assert list(res.evidence_figures()) == [
        "figures/evidence/interventions/marker/intervention.png"
    ]
    res.evidence_figures()
    res.figures_png()
    assert drawn == [1] and draw_counts["summary_figure"] == 1
    page = res.to_html()
    assert "interventions &#x27;marker&#x27;: change of the primary score" in page


def test_a_report_without_tasks_renders_everywhere(tmp_path):
    res = wa.AuditResult({"schema_version": 1, "tasks": {}, "warnings": []})
    assert res.figures_png() == {}
    assert "No metadata audited." in res.summary()
    assert "No metadata audited." in res.to_html()
    card = wa.write_model_card(res, tmp_path / "c.md").read_text()
    assert "No metadata audited." in card and "## Quantitative analyses" in card
    assert not (tmp_path / "c_figures").exists()  # nothing to draw, no folder


def test_markdown_keeps_user_text_out_of_html():
    """A metadata name can hold anything; the Hub renders HTML in a card's Markdown."""
    doc = Document(
        "<b>T</b>", [Section("<i>s</i>", items=["site <img src=x onerror=alert(1)> & more"])]
    )
    md = render_markdown(doc)
    assert "<img" not in md and "<b>" not in md and "<i>" not in md
    assert "&lt;img src=x onerror=alert(1)&gt; &amp; more" in md


def test_the_figures_are_drawn_again_when_what_they_show_changed(small_result, monkeypatch):
    res = wa.AuditResult(small_result.to_dict())
    calls = []
    draw = wa.AuditResult.figure
    monkeypatch.setattr(wa.AuditResult, "figure", lambda self: calls.append(1) or draw(self))
    first = res.figures_png()
    res.to_html()
    assert len(calls) == 1  # drawn once for the page, the files and the card
    name = next(iter(res.tasks))
    res.tasks[name]["verdict"] = "uses"  # a caller edits the report in place
    assert res.figures_png() != first and len(calls) == 2
