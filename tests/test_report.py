"""AuditResult: the table every output shares, text, figure, HTML, files, evidence filing."""

import json

import numpy as np
import pytest

import wsca_audit as wa
from wsca_audit.measures import get_measures


def test_the_table_follows_the_measure_declarations(small_result):
    head, rows = small_result.table()
    expected = ["kind"] + [h for m in get_measures() for h in m.headers()]
    assert head == expected
    assert "p (usage, BH)" in head and "p (wsc, BH)" not in head  # wsc's p stays in the JSON
    assert [name for name, _, _ in rows] == list(small_result.tasks)
    name, cells, verdict = rows[0]
    task = small_result.tasks[name]
    assert verdict == task["verdict"] and len(cells) == len(head)
    assert cells[1].startswith(f"{task['encoding']['metric']} ")


def test_summary_html_and_card_show_the_same_cells(small_result, tmp_path):
    head, rows = small_result.table()
    text = small_result.summary()
    page = small_result.to_html()
    card = wa.write_model_card(small_result, tmp_path / "CARD.md").read_text()
    for h in head:
        assert h in text and h in card
    for _, cells, verdict in rows:
        for c in cells:
            assert c in text and c in page and c.replace("|", "\\|") in card
        assert verdict in text and verdict in page
    assert page.startswith("<!doctype html>") and "<title>WSCA audit report</title>" in page


def test_figure_draws_each_declared_panel(small_result):
    fig = small_result.figure()
    left, right = fig.axes[:2]
    labels = [t.get_text() for t in left.get_legend().get_texts()]
    assert {"usage", "wsc", "null 95%"} <= set(labels)
    assert "filled: usage (deconfounded)" in left.get_title()
    assert len(right.lines) >= len(small_result.tasks)  # one encoding point per task


def test_save_and_load_round_trip(small_result, tmp_path):
    out = small_result.save(tmp_path / "audit")
    assert {p.name for p in out.iterdir()} >= {"report.json", "report.html", "figures"}
    back = wa.AuditResult.load(out)
    assert back.to_dict() == small_result.to_dict()
    assert back.summary() == small_result.summary()
    assert json.loads((out / "report.json").read_text())["schema_version"] == 1


def test_evidence_of_an_unknown_type_is_named_not_dropped(small_result):
    rep = small_result.to_dict()
    rep["evidence"] = {"future_kind": {"x": {"value": 1}}}
    res = wa.AuditResult(rep)
    assert res.evidence_lines() == ["future_kind 'x'"]
    assert "future_kind 'x'" in res.summary()


def test_add_evidence_takes_only_registered_evidence(small_result):
    res = wa.AuditResult(small_result.to_dict())
    with pytest.raises(wa.AuditError, match="add_evidence takes"):
        res.add_evidence({"value": 1.0})


def test_multiclass_heads_get_a_per_class_heatmap(digits_std, tmp_path, small_result):
    X, y = digits_std
    rng = np.random.default_rng(0)
    W = rng.normal(size=(10, X.shape[1]))
    res = wa.analyze(X[:600], y[:600], {"site": rng.integers(0, 3, 600)}, primary_weight=W,
                     n_bootstrap=10, n_permutations=10, progress=False)  # fmt: skip
    fig = res.per_class_figure()
    assert fig is not None and fig.axes[0].get_xlabel() == "site"
    assert len(fig.axes[0].get_yticklabels()) == 10
    out = res.save(tmp_path / "mc")
    assert (out / "figures" / "per_class_wsc.png").read_bytes()[:4] == b"\x89PNG"
    assert "per-class wsc matrices" in (out / "report.html").read_text()
    assert small_result.per_class_figure() is None  # a binary head has no such panel
