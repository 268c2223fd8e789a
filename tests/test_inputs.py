"""Bad input gets a clear AuditError (a ValueError) or a warning recorded in the report."""

import json

import numpy as np
import pytest
import torch

import wsca_audit as wa
from wsca_audit import AuditError


@pytest.fixture(scope="module")
def data(digits_std):
    X, y = digits_std
    X = X[:300, :24]
    label = (y[:300] >= 5).astype(int)
    W = np.random.default_rng(0).normal(size=(2, 24))
    return X, label, W


FAST = dict(n_bootstrap=20, n_permutations=20, progress=False)


def test_audit_error_is_a_value_error():
    assert issubclass(AuditError, ValueError)


def test_metadata_length_mismatch(data):
    X, y, W = data
    with pytest.raises(AuditError, match=r"metadata\['site'\] has 10 values but there are 300"):
        wa.analyze(X, y, {"site": np.zeros(10)}, primary_weight=W)


def test_nonfinite_embeddings_counted_and_optionally_dropped(data):
    X, y, W = data
    X = X.copy()
    X[[3, 7, 9], 0] = np.nan
    X[11, 2] = np.inf
    with pytest.raises(AuditError, match="4 of 300 embeddings contain NaN or inf"):
        wa.analyze(X, y, {"site": y}, primary_weight=W)
    res = wa.analyze(
        X, y, {"odd": np.arange(300) % 2}, primary_weight=W, drop_nonfinite=True, **FAST
    )
    assert res["n_samples"] == 296
    assert any("4 of 300" in w for w in res.warnings)


def test_single_valued_column_is_skipped_with_warning(data):
    X, y, W = data
    res = wa.analyze(
        X, y, {"const": np.ones(300), "odd": np.arange(300) % 2}, primary_weight=W, **FAST
    )
    assert "const" not in res.tasks and "odd" in res.tasks
    assert any("const" in w and "skipped" in w for w in res.warnings)


def test_missing_values_are_masked_per_task(data):
    X, y, W = data
    site = np.array(["a", "b", "c"], dtype=object)[np.arange(300) % 3]
    site[:40] = None
    age = np.linspace(20, 80, 300)
    age[::7] = np.nan
    res = wa.analyze(X, y, {"site": site, "age": age}, primary_weight=W, **FAST)
    assert res.tasks["site"]["n_valid"] == 260
    assert res.tasks["age"]["n_valid"] == 300 - len(range(0, 300, 7))
    assert res.tasks["site"]["levels"] == ["a", "b", "c"]
    assert res.tasks["age"]["kind"] == "continuous"
    assert sum("missing values were masked" in w for w in res.warnings) == 2


def test_no_primary_head(data):
    X, y, _ = data
    with pytest.raises(AuditError, match="primary_weight"):
        wa.analyze(X, y, {"site": y})


def test_head_dimension_mismatch(data):
    X, y, _ = data
    with pytest.raises(AuditError, match="reads 5 features but the embeddings have 24"):
        wa.analyze(X, y, {"site": y}, primary_weight=np.ones((2, 5)))


def test_bad_settings_and_kinds(data):
    X, y, W = data
    with pytest.raises(AuditError, match="unknown setting"):
        wa.analyze(X, y, {"s": y}, primary_weight=W, n_boot=3)
    with pytest.raises(AuditError, match="kind of 's'"):
        wa.analyze(X, y, {"s": y}, primary_weight=W, kinds={"s": "ordinal"})
    with pytest.raises(AuditError, match="non-numeric"):
        wa.analyze(
            X, y, {"s": np.array(["a", "b"] * 150)}, primary_weight=W, kinds={"s": "continuous"}
        )
    with pytest.raises(AuditError, match="no embeddings"):
        wa.analyze(np.zeros((0, 3)), None, {}, primary_weight=np.ones((1, 3)))


def test_tensor_half_precision_and_lists_are_accepted(data):
    X, y, W = data
    res = wa.analyze(
        torch.tensor(X).half(),
        torch.tensor(y),
        {"odd": list(np.arange(300) % 2)},
        primary_weight=torch.tensor(W),
        **FAST,
    )
    assert res.tasks["odd"]["kind"] == "categorical"


def test_report_schema_and_save_roundtrip(data, tmp_path):
    X, y, W = data
    meta = {"odd": np.arange(300) % 2, "age": np.linspace(0, 1, 300) + X[:, 0]}
    res = wa.analyze(X, y, meta, primary_weight=W, **FAST)
    d = res.to_dict()
    assert d["schema_version"] == 1
    assert {
        "model",
        "layer",
        "n_samples",
        "embedding_dim",
        "primary",
        "tasks",
        "settings",
        "warnings",
    } <= set(d)
    assert d["primary"]["metric"]["name"] == "auc"
    for t in d["tasks"].values():
        assert t["kind"] in ("categorical", "continuous")
        assert {"metric", "value", "ci_low", "ci_high"} <= set(t["encoding"])
        for key in ("wsc", "usage"):
            assert {"value", "ci_low", "ci_high", "p_value"} <= set(t[key])
            assert t[key]["ci_low"] <= t[key]["value"] + 0.3
        assert t["verdict"] in ("uses", "encoded_not_used", "not_encoded", "inconclusive")
        assert "matrix" in t["per_class"]["wsc"]
    assert d["tasks"]["age"]["encoding"]["metric"] == "r2"
    out = res.save(tmp_path / "audit")
    for f in ("report.json", "report.html", "figures/wsca_summary.png"):
        assert (out / f).stat().st_size > 0
    assert (out / "figures/wsca_summary.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    json.loads((out / "report.json").read_text())  # strict JSON: no NaN tokens
    back = wa.AuditResult.load(out)
    assert back.to_dict() == d
    assert "odd" in back.summary() and "verdict" in back.summary()
    assert "data:image/png;base64," in (out / "report.html").read_text()


def test_reading_a_foreign_report_fails_clearly(tmp_path):
    (tmp_path / "report.json").write_text('{"schema_version": 7}')
    with pytest.raises(AuditError, match="schema_version 7"):
        wa.AuditResult.load(tmp_path)
    with pytest.raises(AuditError, match="no report"):
        wa.AuditResult.load(tmp_path / "nope")


def test_same_seed_same_report(data):
    X, y, W = data
    meta = {"odd": np.arange(300) % 2}
    a = wa.analyze(X, y, meta, primary_weight=W, seed=3, **FAST).to_dict()
    b = wa.analyze(X, y, meta, primary_weight=W, seed=3, **FAST).to_dict()
    a["settings"].pop("runtime_s"), b["settings"].pop("runtime_s")
    assert a == b


def test_multiclass_primary_head_has_per_class_matrices(digits_std):
    from sklearn.linear_model import LogisticRegression

    X, y = digits_std
    clf = LogisticRegression(C=0.1, max_iter=2000).fit(X, y)
    site = np.array(["a", "b", "c"])[np.arange(len(y)) % 3]
    res = wa.analyze(
        X,
        y,
        {"site": site, "ink": X[:, 20:30].sum(1)},
        primary_weight=clf.coef_,
        primary_bias=clf.intercept_,
        **FAST,
    )
    d = res.to_dict()
    assert d["primary"]["metric"]["name"] == "accuracy"
    assert d["primary"]["metric"]["value"] == pytest.approx(clf.score(X, y), abs=1e-6)
    wsc = d["tasks"]["site"]["per_class"]["wsc"]
    assert np.array(wsc["matrix"]).shape == (10, 3) and wsc["cols"] == ["a", "b", "c"]
    use = d["tasks"]["site"]["per_class"]["usage"]
    assert np.array(use["matrix"]).shape == (10, 3)
    assert np.array(d["tasks"]["ink"]["per_class"]["usage"]["matrix"]).shape == (10, 1)
    # site is assigned round-robin: not read by the head
    assert d["tasks"]["site"]["verdict"] in ("not_encoded", "inconclusive", "encoded_not_used")
