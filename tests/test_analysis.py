"""The pipeline stage: level coding, the resampling plan, the measure loop, BH, verdicts."""

import numpy as np
import pytest
import torch

import wsca_audit as wa
from wsca_audit.analysis import AuditSettings, TaskData, _Analysis
from wsca_audit.measures import get_measures

FAST = dict(n_bootstrap=20, n_permutations=20, progress=False)


@pytest.fixture(scope="module")
def data(digits_std):
    X, y = digits_std
    X, label = X[:400, 2:22], (y[:400] >= 5).astype(int)
    rng = np.random.default_rng(1)
    meta = {
        "site": np.where(rng.random(400) < 0.8, label, 1 - label),
        "age": X[:, 3] + rng.normal(size=400),
        "three": rng.integers(0, 3, 400),
    }
    W = np.zeros((2, 20))
    W[1, 0] = 1.0
    return X, label, meta, W


def test_an_embedding_set_is_audited_as_the_arrays_are(data):
    X, y, meta, W = data
    es = wa.EmbeddingSet(X, y, meta, primary=wa.PrimaryHead.from_arrays(W))
    a = wa.analyze(es, **FAST).to_dict()
    b = wa.analyze(X, y, meta, primary_weight=W, **FAST).to_dict()
    for r in (a, b):
        r["settings"].pop("runtime_s")
    assert a == b
    with pytest.raises(wa.AuditError, match="carries its own data"):
        wa.analyze(es, y, **FAST)


def test_blocks_come_in_measure_order_then_verdict(data):
    X, y, meta, W = data
    res = wa.analyze(X, y, meta, primary_weight=W, **FAST)
    keys = [m.report_key for m in get_measures()]
    assert keys[:5] == ["encoding", "wsc", "usage", "effect", "attribution"]
    for task in res.tasks.values():
        order = [k for k in task if k in keys]
        assert order == keys
        rest = list(task)[list(task).index(keys[-1]) + 1 :]
        assert rest[:4] == ["verdict", "reason", "samples_needed", "per_class"]
        assert set(task["per_class"]) == {"wsc", "usage", "attribution"}


def test_a_disabled_measure_leaves_no_block(data):
    X, y, meta, W = data
    res = wa.analyze(X, y, meta, primary_weight=W, layer_attribution=False, **FAST)
    for task in res.tasks.values():
        assert "attribution" not in task and "attribution" not in task["per_class"]
    assert "attribution alignment" not in res.summary()


def test_tested_measures_are_bh_adjusted_across_tasks(data):
    X, y, meta, W = data
    res = wa.analyze(X, y, meta, primary_weight=W, **FAST)
    for key in ("usage", "wsc"):
        raw = [t[key]["p_value_raw"] for t in res.tasks.values()]
        adj = [t[key]["p_value"] for t in res.tasks.values()]
        assert all(a >= r - 1e-12 for a, r in zip(adj, raw))
        assert adj == pytest.approx(wa.stats.benjamini_hochberg(raw))
    assert "p_value_raw" not in res.tasks["site"]["encoding"]


def test_continuous_variables_are_binned_into_n_bins_of_their_range(data):
    X, y, meta, W = data
    age = meta["age"].copy()
    age[:7] = np.nan
    res = wa.analyze(X, y, {"age": age}, primary_weight=W, n_bins=4, **FAST)
    task = res.tasks["age"]
    assert task["kind"] == "continuous" and task["n_valid"] == 393
    assert len(task["levels"]) == 4 and task["levels"][0].startswith("[")
    assert task["encoding"]["metric"] == "r2"
    assert any("age: 7 missing values were masked" in w for w in res.warnings)


def _task_data(data, **settings):
    X, y, meta, W = data
    es = wa.EmbeddingSet(X, y, meta, primary=wa.PrimaryHead.from_arrays(W))
    cfg = AuditSettings(**{**FAST, **settings})
    run = _Analysis(es, cfg, {})
    run._prepare()
    levels = run._levels("three", "categorical", es.metadata["three"])
    return TaskData.for_task(
        run.shared, name="three", kind="categorical", values=es.metadata["three"],
        coded=levels, fitter=run.fitter, warn_to=run._warn,
    )  # fmt: skip


def test_each_valid_sample_is_held_out_by_exactly_one_fold(data):
    task = _task_data(data)
    folds = task.folds.cpu().numpy()  # (n_folds, n): 1 where a sample trains that fold
    assert folds.shape == (5, task.n)
    assert np.all((1 - folds).sum(0) == 1)
    # stratified: every level is in every held-out fold
    codes = task.codes.cpu().numpy()
    for f in range(5):
        assert set(codes[folds[f] == 0]) == {0, 1, 2}


def test_permutations_shuffle_within_label_strata(data):
    task = _task_data(data)
    strata = task.strata.numpy()
    perm = task.perm_idx.cpu().numpy()
    assert perm.shape == (20, task.n)
    assert np.all(strata[perm] == strata[None])  # never across labels
    assert not np.all(perm == np.arange(task.n))


def test_shared_heads_are_fitted_once(data):
    task = _task_data(data)
    assert task.probe is task.probe
    head, weights = task.usage_heads
    assert task.usage_heads[0] is head
    # usage heads of a 3-level variable: point, bootstraps and permutations (its chance
    # level); probe problems: point, folds, bootstraps, permutations
    assert task.selects
    assert head.coef_.shape[0] == 1 + 20 + 20
    assert task.probe.coef_.shape[0] == 1 + 5 + 20 + 20
    assert torch.equal(weights[0], task.v)


def test_unknown_settings_and_bad_values_are_audit_errors(data):
    X, y, meta, W = data
    with pytest.raises(wa.AuditError, match="unknown setting"):
        wa.analyze(X, y, meta, primary_weight=W, n_boot=3)
    with pytest.raises(wa.AuditError, match="n_folds"):
        wa.analyze(X, y, meta, primary_weight=W, n_folds=1)
