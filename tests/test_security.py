"""Security: no code execution on read, names cannot escape folders; regressions found by fuzzing."""

import re

import numpy as np
import pytest
import torch
from _reliability import BASE_REPORT, FAST, ROOT

import wsca_audit as wa


def test_no_code_execution_on_read_and_no_unsafe_deserialisation():
    sources = list((ROOT / "wsca_audit").rglob("*.py")) + list(
        (ROOT / "integrations").rglob("*.py")
    )
    offenders = []
    for p in sources:
        text = p.read_text()
        for pattern in (r"pickle\.loads?\(", r"(?<![.\w])eval\(", r"(?<![.\w])exec\(",
                        r"yaml\.load\(", r"allow_pickle=True"):  # fmt: skip
            offenders += [f"{p.name}: {m.group(0)}" for m in re.finditer(pattern, text)]
        # every checkpoint read is weights-only (torch.load calls fit on one line here)
        offenders += [
            f"{p.name}: {line.strip()}"
            for line in text.splitlines()
            if "torch.load(" in line and "weights_only=True" not in line
        ]
    assert offenders == []


def test_names_from_metadata_cannot_escape_the_output_folder(tmp_path, shortcut_model):
    from wsca_audit.demo.shortcut import add_artefact

    model, split = shortcut_model(0.5)
    x = torch.as_tensor(split.clean_x[:40])
    effect = wa.intervention_effect(model, x, lambda t, v: add_artefact(t, torch.full((len(t),), v)),
                                    variable="../../../escape", n_bootstrap=10, progress=False)  # fmt: skip
    res = wa.AuditResult(BASE_REPORT.to_dict()).add_evidence(effect)
    out = res.save(tmp_path / "report")
    written = [p.resolve() for p in tmp_path.rglob("*") if p.is_file()]
    assert all(str(p).startswith(str(out.resolve())) for p in written)
    assert any("escape" in p.name or "escape" in p.parent.name for p in written)


def test_regression_foreign_thresholds_do_not_break_the_figure():
    """Found by the reader fuzz test: settings.thresholds of another type crashed figure()."""
    rep = BASE_REPORT.to_dict()
    rep["settings"]["thresholds"] = None
    with pytest.raises(wa.AuditError, match="settings/thresholds"):
        wa.AuditResult.from_dict(rep)
    wa.AuditResult.from_dict(rep, validate=False).to_html()  # unvalidated: still renders
    rep["settings"]["thresholds"] = {"usage": {"x": 1}, "auc": []}
    wa.AuditResult.from_dict(rep, validate=False).to_html()


def test_regression_zero_feature_embeddings_are_an_audit_error():
    """Found by the analyze fuzz test: (N, 0) embeddings produced an invalid report."""
    with pytest.raises(wa.AuditError, match="no features"):
        wa.analyze(np.zeros((10, 0)), None, {}, primary_weight=np.zeros((1, 0)), **FAST)
