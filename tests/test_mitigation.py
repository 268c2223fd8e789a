"""From finding to fix: `wa.mitigate` on a real shortcut CNN (digits), its bad inputs, the
LEACE closed form against EleutherAI's concept-erasure, and the MLflow child run."""

import copy
import json
import urllib.request
import warnings

import numpy as np
import pytest
import torch
from concept_erasure import LeaceFitter
from safetensors.torch import load_file
from sklearn.metrics import roc_auc_score

import wsca_audit as wa
from wsca_audit.demo.shortcut import counterfactual_effect
from wsca_audit.fix.erasure import concept_matrix, fit_eraser

FAST = dict(n_bootstrap=60, n_permutations=60, progress=False)


def _auditor(model, split):
    aud = wa.Auditor(model, kinds={"artefact": "categorical"})
    with aud.collect(), torch.no_grad():
        model(torch.as_tensor(split.eval_x))
        aud.record(
            targets=split.eval_y,
            metadata={"artefact": split.eval_flags},
        )
    return aud


@pytest.fixture(scope="module")
def shortcut(shortcut_model):
    model, split = shortcut_model(1.0)
    aud = _auditor(model, split)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    m = wa.mitigate(model, aud, "artefact", **FAST)
    return model, split, aud, before, m


@torch.no_grad()
def _auc(model, x, y):
    lg = model(torch.as_tensor(x))
    return roc_auc_score(y, (lg[:, 1] - lg[:, 0]).numpy())


def test_erasure_removes_the_shortcut_on_data_it_never_saw(shortcut):
    model, split, _aud, _before, m = shortcut
    h = m.holdout_index_
    # ground truth by intervention: the artefact's counterfactual effect falls by >= 70%
    orig = counterfactual_effect(model, split.clean_x[h])
    patched = counterfactual_effect(m.model, split.clean_x[h])
    assert orig > 0.5 and abs(patched) < 0.3 * orig
    # the audit agrees, and the shortcut-free AUC rises
    assert m.before.tasks["artefact"]["verdict"] == "uses"
    assert m.after.tasks["artefact"]["verdict"] != "uses"
    y = split.eval_y[h]
    assert _auc(m.model, split.free_x[h], y) > _auc(model, split.free_x[h], y)
    # the report of it: before/after with CIs, cost paired on the held-out part
    d = m.to_dict()
    assert set(d) >= {"variable", "method", "before", "after", "cost", "settings"}
    assert d["method"] == "erase" and d["patched"] is True
    for side in ("before", "after"):
        assert {"value", "ci_low", "ci_high"} <= set(d[side]["usage"])
        assert {"value", "ci_low", "ci_high"} <= set(d[side]["effect"])
        assert d[side]["performance"]["metric"] == "auc"
        assert set(d[side]["performance"]["by_level"]) == {"0", "1"}
        assert d[side]["performance"]["worst_level"]["level"] in {"0", "1"}
    assert d["cost"]["metric"] == "auc" and d["cost"]["ci_low"] <= d["cost"]["value"]
    json.dumps(d, allow_nan=False)
    assert "cost (auc, after - before)" in m.summary()


def test_the_original_model_is_untouched_and_the_patch_is_a_copy(shortcut):
    model, _, _, before, m = shortcut
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert type(m.model) is type(model) and m.model is not model
    changed = [k for k in before if not torch.equal(before[k], m.model.state_dict()[k])]
    assert changed == ["fc.weight", "fc.bias"] or set(changed) <= {
        f"{m.head_source_}.weight",
        f"{m.head_source_}.bias",
    }
    torch.testing.assert_close(m.model.get_submodule(m.head_source_).weight, m.head_.weight)


def test_fit_and_audit_parts_are_disjoint_and_stratified(shortcut):
    _, split, aud, _, m = shortcut
    fit, held = set(m.fit_index_.tolist()), set(m.holdout_index_.tolist())
    assert not fit & held and fit | held == set(range(len(split.eval_y)))
    assert m.before.to_dict()["n_samples"] == len(held) == m.settings_["n_holdout"]
    # each label x artefact group is split alike (30% held out, up to rounding)
    for lab in (0, 1):
        for a in (0, 1):
            g = np.flatnonzero((split.eval_y == lab) & (split.eval_flags == a))
            share = np.isin(g, m.holdout_index_).mean()
            assert abs(share - 0.3) < 0.05, (lab, a, share)
    # another seed, another split
    other = wa.mitigate(None, aud, "artefact", seed=1, **FAST)
    assert set(other.holdout_index_.tolist()) != held


@pytest.mark.parametrize("method", ["dfr", "both"])
def test_other_methods_reduce_the_effect_too(shortcut, method):
    model, split, aud, _, _ = shortcut
    m = wa.mitigate(model, aud, "artefact", method, **FAST)
    h = m.holdout_index_
    orig = counterfactual_effect(model, split.clean_x[h])
    assert abs(counterfactual_effect(m.model, split.clean_x[h])) < 0.8 * orig
    if method == "dfr":
        assert m.settings_["C"] in m.settings_["worst_group_accuracy_by_C"]


def test_the_closed_form_equals_concept_erasure_leace():
    rng = np.random.default_rng(0)
    n = 500
    y, s = rng.integers(0, 2, n), rng.integers(0, 3, n)
    x = rng.normal(size=(n, 6))
    x[:, 0] += 2 * y
    x[:, 1] += s
    x[:, 2] += 0.5 * s * y
    S = concept_matrix(s, "categorical")
    X, Z = torch.tensor(x), torch.tensor(S)
    onehot = torch.nn.functional.one_hot(torch.tensor(y)).double()
    Xc = X - onehot @ ((onehot.T @ X) / onehot.sum(0)[:, None])
    Zc = Z - onehot @ ((onehot.T @ Z) / onehot.sum(0)[:, None])
    for shrinkage in (True, False):
        ours = fit_eraser(x, S, y, shrinkage=shrinkage)
        ref = LeaceFitter.fit(Xc, Zc, constrain_cov_trace=False, shrinkage=shrinkage).eraser
        torch.testing.assert_close(ours.proj, ref.proj_left @ ref.proj_right)
    # plain LEACE too; and the fold into a linear head is exact
    ours, ref = fit_eraser(x, S), LeaceFitter.fit(X, Z, constrain_cov_trace=False).eraser
    torch.testing.assert_close(ours(X), ref(X))
    W, b = torch.randn(2, 6, dtype=torch.float64), torch.randn(2, dtype=torch.float64)
    W2, b2 = ours.fold(W, b)
    torch.testing.assert_close(X @ W2.T + b2, ours(X) @ W.T + b)


def test_bad_inputs_are_clear(shortcut, shortcut_model):
    model, split, aud, _, _ = shortcut
    with pytest.raises(wa.AuditError, match=r"'scanner' was not audited.*\['artefact'\]"):
        wa.mitigate(model, aud, "scanner", **FAST)
    with pytest.raises(wa.AuditError, match="method must be one of"):
        wa.mitigate(model, aud, "artefact", "retrain", **FAST)
    # DFR cannot balance a group with too few samples: it names the group and its count
    es = aud.embeddings()
    site = np.where(np.arange(len(split.eval_y)) < 4, "rare", split.eval_flags.astype(str))
    es_rare = wa.EmbeddingSet(es.embeddings, es.targets, {"site": site}, primary=es.primary)
    with pytest.raises(wa.AuditError, match=r"too small to balance: label=\d, site=rare \(n=\d\)"):
        wa.mitigate(None, es_rare, "site", "dfr", **FAST)
    # a continuous variable with DFR is binned in quartiles, with a warning
    ink = split.eval_x.reshape(len(split.eval_x), -1).sum(1)
    es2 = wa.EmbeddingSet(
        es.embeddings, es.targets, {"ink": ink}, kinds={"ink": "continuous"}, primary=es.primary
    )
    with pytest.warns(wa.AuditWarning, match="continuous: DFR balances its quartile bins"):
        wa.mitigate(None, es2, "ink", "dfr", **FAST)
    # labels must be class indices of the head's outputs (any subset of them)
    es_bad = wa.EmbeddingSet(es.embeddings, es.targets + 0.5, {"a": split.eval_flags},
                             primary=es.primary)  # fmt: skip
    with pytest.raises(wa.AuditError, match=r"smoothed class labels.*task='regression'"):
        wa.mitigate(None, es_bad, "a", **FAST)
    # samples without a value are never fitted on: all of them are audited (held out)
    flags = split.eval_flags.astype(object)
    flags[:40] = None
    es_miss = wa.EmbeddingSet(es.embeddings, es.targets, {"a": flags}, primary=es.primary)
    m_miss = wa.mitigate(None, es_miss, "a", **FAST)
    assert set(range(40)) <= set(m_miss.holdout_index_.tolist())
    assert not set(range(40)) & set(m_miss.fit_index_.tolist())
    # mitigating a variable that is not flagged: allowed, with a warning
    clean, clean_split = shortcut_model(0.5)
    with pytest.warns(wa.AuditWarning, match="not flagged on the held-out part"):
        m = wa.mitigate(clean, _auditor(clean, clean_split), "artefact", **FAST)
    h = m.holdout_index_
    # ... and on a shortcut-free model it costs less than a point of AUC
    y = clean_split.eval_y[h]
    assert (
        abs(_auc(m.model, clean_split.eval_x[h], y) - _auc(clean, clean_split.eval_x[h], y)) < 0.01
    )


def test_a_head_that_cannot_be_patched_gives_the_new_head_alone(shortcut):
    model, split, _, _, _ = shortcut
    # the embedding is the input of the last ReLU: the head (the next Linear) is read, but
    # its own input is not the embedding, so the model cannot be patched
    aud = wa.Auditor(model, layer="features.7", kinds={"artefact": "categorical"})
    with aud.collect(), torch.no_grad():
        model(torch.as_tensor(split.eval_x))
        aud.record(targets=split.eval_y, metadata={"artefact": split.eval_flags})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        m = wa.mitigate(model, aud, "artefact", **FAST)
    assert any("cannot be patched" in str(w.message) for w in caught)
    assert m.model is None and isinstance(m.head_, torch.nn.Linear)
    assert "the model was not patched" in m.summary()


def test_saved_and_logged_as_a_child_run_read_back_over_rest(shortcut, mlflow_server, tmp_path):
    model, split, aud, _, m = shortcut
    # the saved head loads with safetensors (no pickle) into the model's head
    out = m.save(tmp_path / "mitigation")
    assert {p.name for p in out.iterdir()} >= {
        "mitigation.json", "mitigation.png", "head.safetensors", "eraser.safetensors",
        "before", "after",
    }  # fmt: skip
    state = load_file(str(out / "head.safetensors"))
    fresh = wa.load_head(out / "head.safetensors")
    torch.testing.assert_close(fresh.weight, m.head_.weight)
    copy = type(model)().eval()
    copy.load_state_dict(model.state_dict())
    copy.get_submodule(m.head_source_).load_state_dict(state)
    x = torch.as_tensor(split.eval_x[:20])
    torch.testing.assert_close(copy(x), m.model(x))

    audit = wa.analyze(aud.embeddings(), n_bootstrap=30, n_permutations=30, progress=False)
    parent = wa.log_to_mlflow(audit, tracking_uri=mlflow_server.uri, experiment_name="mit")
    child = wa.log_to_mlflow(m, parent_run_id=parent, tracking_uri=mlflow_server.uri)
    run = mlflow_server.get("api/2.0/mlflow/runs/get", run_id=child)["run"]
    tags = {t["key"]: t["value"] for t in run["data"]["tags"]}
    metrics = {x["key"]: x["value"] for x in run["data"]["metrics"]}
    assert run["info"]["status"] == "FINISHED"
    assert tags["mlflow.parentRunId"] == parent
    assert run["info"]["run_name"] == "mitigate-artefact-erase"
    assert tags["wsca.mitigation.verdict_before"] == "uses"
    assert tags["wsca.mitigation.verdict_after"] != "uses"
    assert tags["mlflow.note.content"].startswith("WSCA mitigation: artefact removed")
    assert metrics["wsca.mitigation.after.effect"] < metrics["wsca.mitigation.before.effect"]
    for k in ("wsca.mitigation.cost", "wsca.mitigation.before.auc", "wsca.mitigation.after.auc",
              "wsca.mitigation.after.worst_level.auc", "wsca.mitigation.after.usage_ci_high"):  # fmt: skip
        assert k in metrics, k
    # the head, fetched over HTTP from the server, loads without unpickling
    url = f"{mlflow_server.uri}/get-artifact?run_id={child}&path=wsca/mitigation/head.safetensors"
    blob = urllib.request.urlopen(url, timeout=30).read()
    (tmp_path / "h.safetensors").write_bytes(blob)
    torch.testing.assert_close(load_file(str(tmp_path / "h.safetensors"))["weight"], m.head_.weight)
    # the child run reads back as the patched head's audit
    back = wa.load_from_mlflow(child, tracking_uri=mlflow_server.uri)
    assert back.verdicts == m.after.verdicts
    # server down: kept on disk, then `wsca-audit log` makes the same child run
    from conftest import _free_port

    from wsca_audit.tracking import log_saved

    dead = f"http://127.0.0.1:{_free_port()}"
    with pytest.warns(wa.AuditWarning, match="wsca-audit log"):
        assert wa.log_to_mlflow(m, parent_run_id=parent, tracking_uri=dead,
                                fallback_dir=tmp_path / "p") is None  # fmt: skip
    (pending,) = (tmp_path / "p").iterdir()
    late = log_saved(pending, tracking_uri=mlflow_server.uri)
    run = mlflow_server.get("api/2.0/mlflow/runs/get", run_id=late)["run"]
    tags = {t["key"]: t["value"] for t in run["data"]["tags"]}
    assert tags["mlflow.parentRunId"] == parent and "wsca.mitigation.method" in tags
    assert "wsca.mitigation.cost" in {x["key"] for x in run["data"]["metrics"]}


def test_the_card_gets_a_mitigation_section(shortcut, tmp_path):
    _, _, _, _, m = shortcut
    card = wa.write_model_card(m.before, tmp_path / "MODEL_CARD.md", model_name="cnn", mitigation=m)
    text = card.read_text()
    assert "## Mitigation" in text and "| artefact: verdict | uses |" in text
    assert "MODEL_CARD_figures/mitigation.png" in text
    assert "Mitigation" in card.with_suffix(".html").read_text()
    with pytest.raises(wa.AuditError, match="mitigation must be a Mitigation"):
        wa.write_model_card(m.before, tmp_path / "c.md", mitigation={"x": 1})


# --------------------------------------------------------------------------- the steps
def _toy(n=2000, seed=0):
    """A head that reads a scanner correlated with the label (80%)."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    s = np.where(rng.random(n) < 0.8, y, 1 - y)
    z = np.c_[y + 0.5 * rng.normal(size=n), s + 0.3 * rng.normal(size=n), rng.normal(size=n)]
    head = wa.PrimaryHead.from_arrays([[-1.0, -1.0, 0.0], [1.0, 1.0, 0.0]], [1.0, -1.0])
    return wa.EmbeddingSet(z, y, {"scanner": s}, primary=head)


def test_mitigation_is_a_declared_record():
    import dataclasses

    from wsca_audit.fix.mitigation import Mitigation as FromModule

    assert FromModule is wa.Mitigation is wa.fix.Mitigation
    names = {f.name for f in dataclasses.fields(wa.Mitigation)}
    assert names == {
        "variable", "method", "model", "head_", "before", "after", "fit_index_",
        "holdout_index_", "cost_", "head_source_", "settings_", "eraser_",
        "not_patched_reason_", "_png",
    }  # fmt: skip
    with pytest.raises(TypeError):  # keyword-only, and nothing undeclared slips in
        wa.Mitigation(variable="a", method="erase", unknown=1)
    m = wa.mitigate(None, _toy(), "scanner", **FAST)
    assert m.model is None and m.not_patched_reason_ == "no model was given"
    assert repr(m).startswith("Mitigation(variable='scanner', method='erase', patched=False")


def test_one_worst_group_and_its_deprecated_alias(shortcut):
    from wsca_audit.performance import rankable

    _, _, _, _, m = shortcut
    d = m.to_dict()
    for side, res in (("before", m.before), ("after", m.after)):
        perf = d[side]["performance"]
        assert perf["worst_group"] == perf["worst_level"]
        levels = res.performance["by_group"]["artefact"]
        value, level = min(rankable(levels, "auc"))
        assert perf["worst_group"]["level"] == level and perf["worst_group"]["value"] == value
        assert perf["worst_group"]["n"] == levels[level]["n"]
    assert any(r[0] == "auc, worst artefact group" for r in m.rows())
    assert "worst artefact group" in m.summary()


def test_split_parts_hold_out_every_stratum_alike_and_all_missing_values():
    from wsca_audit.fix.mitigation import split_parts
    from wsca_audit.fix.sampling import stratified_split

    groups = np.repeat([0, 1, 2], [100, 40, 3])
    held = stratified_split(groups, 0.3, np.random.default_rng(0), at_least=1)
    assert [int(held[groups == g].sum()) for g in (0, 1, 2)] == [30, 12, 1]
    again = stratified_split(groups, 0.3, np.random.default_rng(0), at_least=1)
    assert np.array_equal(held, again)  # one seed, one split
    present = np.ones(len(groups), dtype=bool)
    present[:7] = False
    fit, out = split_parts(groups, present, 0.3, seed=0)
    assert set(range(7)) <= set(out.tolist()) and not set(range(7)) & set(fit.tolist())
    assert sorted([*fit, *out]) == list(range(len(groups)))
    with pytest.raises(wa.AuditError, match="too few samples to fit and audit"):
        split_parts(groups[:12], present[:12], 0.3, seed=0)


def test_balanced_subsamples_keep_the_smallest_group_size():
    from wsca_audit.fix.sampling import balanced_subsamples

    groups = np.repeat([0, 2, 3], [50, 7, 20])  # group 1 is empty
    w = balanced_subsamples(groups, 4, np.random.default_rng(0))
    assert w.shape == (4, len(groups)) and set(np.unique(w)) == {0.0, 1.0}
    assert all((w[:, groups == g].sum(1) == 7).all() for g in (0, 2, 3))


@pytest.mark.parametrize("method", ["erase", "dfr", "both"])
def test_fit_new_head_per_method(method):
    from wsca_audit.fix.mitigation import FitData, fit_new_head
    from wsca_audit.performance import group_codes
    from wsca_audit.primary import label_codes

    es = _toy()
    idx = np.arange(1000)
    levels = group_codes(es.metadata["scanner"], "categorical")
    data = FitData.of(es, "scanner", idx, label_codes(es.targets), levels)
    assert data.group_names == [f"label={a}, scanner={b}" for a in (0, 1) for b in (0, 1)]
    new = fit_new_head(data, es.primary, method, variable="scanner")
    assert new.weight.shape == (2, 3) and new.bias.shape == (2,) and not new.notes
    assert (new.eraser is not None) == (method != "dfr")
    assert ("C" in new.info) == (method != "erase")
    if new.eraser is not None:  # the head no longer follows the scanner within a class
        z, c = torch.as_tensor(data.embeddings), data.labels
        s = data.values.astype(float)

        def within(w, b):
            score = ((z @ torch.as_tensor(w).T + torch.as_tensor(b)) @ torch.tensor([-1.0, 1.0],
                     dtype=torch.float64)).numpy()  # fmt: skip
            return max(abs(np.corrcoef(score[c == k], s[c == k])[0, 1]) for k in (0, 1))

        assert within(es.primary.weight, es.primary.bias) > 0.5
        assert within(new.weight, new.bias) < 0.1
    if method == "erase":  # exactly the eraser folded into the original head
        w0 = torch.as_tensor(es.primary.weight)
        b0 = torch.as_tensor(es.primary.bias)
        w, b = new.eraser.fold(w0, b0)
        assert torch.equal(w, new.weight) and torch.equal(b, new.bias)


def test_a_continuous_variable_is_balanced_over_quartiles_with_a_note():
    from wsca_audit.fix.mitigation import FitData, fit_new_head
    from wsca_audit.performance import group_codes
    from wsca_audit.primary import label_codes

    es = _toy()
    ink = es.embeddings[:, 1] + 0.1
    es = wa.EmbeddingSet(es.embeddings, es.targets, {"ink": ink}, kinds={"ink": "continuous"},
                         primary=es.primary)  # fmt: skip
    levels = group_codes(ink, "continuous")
    data = FitData.of(es, "ink", np.arange(1500), label_codes(es.targets), levels)
    new = fit_new_head(data, es.primary, "dfr", variable="ink")
    assert new.notes == [
        f"'ink' is continuous: DFR balances its quartile bins ({', '.join(levels[1])})"
    ]


def test_patch_model_says_why_not_and_never_touches_the_model():
    from wsca_audit.fix.patching import linear_head, patch_model

    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
    w, b = torch.ones(2, 4, dtype=torch.float64), torch.full((2,), 0.5, dtype=torch.float64)
    assert patch_model(None, "2", "2", w, b) == (None, "no model was given")
    assert patch_model(model, "9", "9", w, b)[1] == "the model has no module '9'"
    assert patch_model(model, "1", "1", w, b)[1] == "'1' is a ReLU, not an nn.Linear"
    assert "the embedding is the input of '1'" in patch_model(model, "1", "2", w, b)[1]
    assert "has weight (4, 3)" in patch_model(model, "0", "0", w, b)[1]
    state = {k: v.clone() for k, v in model.state_dict().items()}
    patched, why = patch_model(model, "2", "2", w, b)
    assert why is None and patched is not model
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())
    torch.testing.assert_close(patched[2].weight, torch.ones(2, 4))
    # a head without a bias gains one where the new head has an offset
    bare = torch.nn.Sequential(torch.nn.Linear(4, 2, bias=False))
    patched, _ = patch_model(bare, "0", "0", w, b)
    torch.testing.assert_close(patched[0].bias, torch.full((2,), 0.5))
    assert bare[0].bias is None
    head = linear_head(w, b)
    assert head.weight.dtype == torch.float32 and torch.equal(head.bias, torch.full((2,), 0.5))


def test_the_mitigation_figure_is_drawn_once_for_files_and_card(shortcut, tmp_path, monkeypatch):
    from wsca_audit.fix.result import Mitigation

    _, _, _, _, m = shortcut
    m = copy.copy(m)  # a fresh cache: other tests share the fixture
    m._png = None
    calls = []
    draw = Mitigation.figure
    monkeypatch.setattr(Mitigation, "figure", lambda self: calls.append(1) or draw(self))
    m.save(tmp_path / "m")
    wa.write_model_card(m.after, tmp_path / "card" / "MODEL_CARD.md", mitigation=m)
    assert len(calls) == 1
    assert (tmp_path / "m" / "mitigation.png").read_bytes() == m.figure_png()
