"""Performance by subgroup: against Fairlearn's MetricFrame and scikit-learn, with CIs."""

import numpy as np
import pytest
import torch
from fairlearn.metrics import MetricFrame
from sklearn.metrics import accuracy_score, recall_score, roc_auc_score

import wsca_audit as wa
from wsca_audit.performance import subgroup_performance


@pytest.fixture(scope="module")
def audit():
    rng = np.random.default_rng(0)
    n = 800
    z = rng.normal(size=(n, 6))
    y = (z[:, 0] + 0.6 * rng.normal(size=n) > 0).astype(int)
    scanner = rng.choice(["A", "B", "C"], n)
    z[scanner == "C", 0] += 0.8  # scanner C shifts the score: worse specificity there
    sex = rng.choice(["F", "M"], n)
    W = np.zeros((2, 6))
    W[1, 0] = 1.0
    res = wa.analyze(z, y, {"scanner": scanner, "sex": sex, "age": rng.normal(50, 10, n)},
                     primary_weight=W, n_bootstrap=100, n_permutations=0, progress=False,
                     performance_pairs=[("scanner", "sex")])  # fmt: skip
    score = z @ (W[1] - W[0])
    return res, y, score, {"scanner": scanner, "sex": sex}


def _specificity(y_true, y_pred):
    return recall_score(y_true, y_pred, pos_label=0)


def test_by_group_equals_fairlearn_metric_frame(audit):
    res, y, score, meta = audit
    pred = (score > 0).astype(int)
    perf = res.performance
    assert perf["metric"] == "auc"
    for var in ("scanner", "sex"):
        mf = MetricFrame(
            metrics={"accuracy": accuracy_score, "sensitivity": recall_score,
                     "specificity": _specificity},
            y_true=y, y_pred=pred, sensitive_features=meta[var],
        )  # fmt: skip
        auc = MetricFrame(metrics=roc_auc_score, y_true=y, y_pred=score,
                          sensitive_features=meta[var])  # fmt: skip
        for level, row in mf.by_group.iterrows():
            got = perf["by_group"][var][str(level)]
            assert got["n"] == int(np.sum(meta[var] == level))
            for k in ("accuracy", "sensitivity", "specificity"):
                assert got[k]["value"] == pytest.approx(row[k], abs=1e-6)
            assert got["auc"]["value"] == pytest.approx(auc.by_group[level], abs=1e-6)
            assert got["auc"]["ci_low"] <= got["auc"]["value"] <= got["auc"]["ci_high"]
        ours = res.metric_frame(var)
        np.testing.assert_allclose(
            ours.difference()[["accuracy", "sensitivity", "specificity"]].to_numpy(),
            mf.difference().to_numpy(), atol=1e-6,
        )  # fmt: skip
        assert ours.ratio()["auc"] == pytest.approx(auc.ratio(), abs=1e-6)
    assert perf["overall"]["value"] == pytest.approx(roc_auc_score(y, score), abs=1e-6)


def test_worst_group_and_intersections(audit):
    res, y, _, _ = audit
    perf = res.performance
    worst = perf["worst_group"]
    values = [
        (e["auc"]["value"], var, lvl)
        for var, levels in perf["by_group"].items()
        for lvl, e in levels.items()
        if e["n"] >= 10
    ]
    assert (worst["value"], worst["variable"], worst["level"]) == min(values)
    assert worst["gap_to_best"] == pytest.approx(max(values)[0] - min(values)[0])
    cross = perf["by_group"]["scanner x sex"]
    assert set(cross) == {f"scanner={s} & sex={x}" for s in "ABC" for x in "FM"}
    assert sum(e["n"] for e in cross.values()) == len(y)
    assert len(perf["by_group"]["age"]) == 4  # quartiles of a continuous variable
    ci = res.metric_frame().ci("auc")
    assert list(ci.columns) == ["value", "ci_low", "ci_high"]


def test_no_targets_no_performance_and_bad_pairs_are_audit_errors():
    rng = np.random.default_rng(1)
    z = rng.normal(size=(100, 3))
    W = np.zeros((2, 3))
    W[1, 0] = 1.0
    res = wa.analyze(z, None, {"s": rng.integers(0, 2, 100)}, primary_weight=W,
                     n_bootstrap=0, n_permutations=0, progress=False)  # fmt: skip
    assert res.performance == {}
    with pytest.raises(wa.AuditError, match="no performance section"):
        res.metric_frame()
    y = (z[:, 0] > 0).astype(int)
    with pytest.raises(wa.AuditError, match="unknown metadata"):
        wa.analyze(z, y, {"s": rng.integers(0, 2, 100)}, primary_weight=W, progress=False,
                   performance_pairs=[("s", "nope")])  # fmt: skip


def test_multiclass_heads_get_accuracy_by_group():
    rng = np.random.default_rng(2)
    logits = torch.as_tensor(rng.normal(size=(300, 4)))
    labels = torch.as_tensor(rng.integers(0, 4, 300))
    perf = subgroup_performance(
        logits, labels, {"site": rng.integers(0, 3, 300)}, {"site": "categorical"},
        torch.zeros(0, 300, dtype=torch.float64),
    )  # fmt: skip
    assert perf["metric"] == "accuracy"
    assert set(perf["by_group"]["site"]["0"]) == {"n", "accuracy"}
