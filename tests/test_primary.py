"""The one owner of the model's outputs: scores, contrasts, labels and the primary metric,
against scikit-learn and the definitions."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import accuracy_score, roc_auc_score

import wsca_audit as wa
from wsca_audit import primary


def test_the_score_is_the_logit_of_one_output_and_the_log_odds_of_two():
    lg1 = torch.tensor([[0.3], [-1.0]])
    lg2 = torch.tensor([[0.1, 0.4], [2.0, -1.0]])
    assert torch.equal(primary.primary_score(lg1), lg1[:, 0])
    assert torch.allclose(primary.primary_score(lg2), torch.tensor([0.3, -3.0]))
    lg3 = torch.randn(4, 3)
    assert torch.equal(primary.primary_score(lg3, target=2), lg3[:, 2])
    with pytest.raises(wa.AuditError, match="target=<index>"):
        primary.primary_score(lg3)
    with pytest.raises(wa.AuditError, match="not a class"):
        primary.primary_score(lg3, target=3)


def test_output_contrasts_turn_logits_into_the_contrasts_scores():
    """The logit-space rows equal the embedding-space contrasts through the head."""
    g = torch.Generator().manual_seed(0)
    for k in (1, 2, 4):
        W, z = torch.randn(k, 6, generator=g), torch.randn(10, 6, generator=g)
        via_logits = (z @ W.T) @ primary.output_contrasts(k).T
        via_contrasts = z @ primary.contrasts(W).T
        assert torch.allclose(via_logits, via_contrasts, atol=1e-5)


def test_class_vectors_are_centred_only_for_several_outputs():
    W = torch.tensor([[1.0, 0.0], [3.0, 2.0]])
    assert torch.allclose(primary.class_vectors(W), torch.tensor([[-1.0, -1.0], [1.0, 1.0]]))
    assert torch.equal(primary.class_vectors(W[:1]), W[:1])
    assert torch.equal(primary.class_vectors(W, center=False), W)


@pytest.mark.parametrize(
    "output",
    [
        torch.ones(3, 2),
        (torch.ones(3, 2), "aux"),
        {"logits": torch.ones(3, 2)},
        type("Out", (), {"logits": torch.ones(3, 2)})(),
    ],
    ids=["tensor", "tuple", "mapping", "attribute"],
)
def test_logits_are_found_in_the_usual_outputs(output):
    assert primary.logits_of(output).shape == (3, 2)


def test_logits_of_refuses_what_holds_no_logits():
    assert primary.logits_of(torch.ones(5)).shape == (5, 1)
    with pytest.raises(wa.AuditError, match="cannot find logits"):
        primary.logits_of("text")
    with pytest.raises(wa.AuditError, match="batch, classes"):
        primary.logits_of(torch.ones(2, 3, 4))


def test_label_codes_are_sorted_values():
    # matched by value: the head's order, never sorted
    codes, values = primary.label_codes(np.array(["well", "sick", "well"]), 2, ["well", "sick"])
    assert codes.tolist() == [0, 1, 0] and values.tolist() == [0, 1]
    with pytest.raises(wa.AuditError, match="pass classes"):
        primary.label_codes(np.array(["well", "sick"]))


@settings(max_examples=30, deadline=None)
@given(st.integers(10, 60), st.integers(1, 2), st.integers(0, 10_000))
def test_metric_values_match_scikit_learn(n, n_out, seed):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    y[:2] = [0, 1]
    logits = rng.normal(size=(n, n_out))
    w = rng.integers(0, 3, size=(3, n)).astype(float)
    w[:, :2] = 1.0
    got = primary.metric_values(torch.tensor(logits), torch.tensor(y), torch.tensor(w))
    score = logits[:, 0] if n_out == 1 else logits[:, 1] - logits[:, 0]
    pred = (logits[:, 0] > 0).astype(int) if n_out == 1 else logits.argmax(1)
    for i, wi in enumerate(w):
        assert float(got["auc"][i]) == pytest.approx(roc_auc_score(y, score, sample_weight=wi))
        assert float(got["accuracy"][i]) == pytest.approx(accuracy_score(y, pred, sample_weight=wi))
        sens = accuracy_score(y[y == 1], pred[y == 1], sample_weight=wi[y == 1])
        assert float(got["sensitivity"][i]) == pytest.approx(sens)


def test_metric_values_of_many_classes_is_accuracy_only_and_nan_without_weight():
    lg = torch.eye(3)
    m = primary.metric_values(lg, torch.tensor([0, 1, 1]), torch.tensor([[1.0, 1, 1], [0, 0, 0]]))
    assert set(m) == {"accuracy"}
    assert float(m["accuracy"][0]) == pytest.approx(2 / 3) and torch.isnan(m["accuracy"][1])


def test_headline_is_auc_for_two_classes_and_accuracy_with_a_note_otherwise():
    lg = torch.tensor([[0.0, 1.0], [1.0, 0.0], [0.0, 2.0], [2.0, 0.0]])
    block, note = primary.headline(lg, torch.tensor([1, 0, 1, 0]), 2, torch.ones(1, 4), 0, 0.95)
    assert block["name"] == "auc" and block["value"] == 1.0 and note is None
    lg3 = torch.eye(3).repeat(2, 1)
    block, note = primary.headline(
        lg3, torch.tensor([0, 1, 2, 0, 1, 0]), 3, torch.ones(1, 6), 0, 0.9
    )
    assert block["name"] == "accuracy" and block["value"] == pytest.approx(5 / 6)
    assert note is None  # targets that are not the head's indices are refused earlier


def test_outputs_auc_reads_two_classes_off_their_contrast_and_many_by_macro_ovr():
    rng = np.random.default_rng(0)
    lg = torch.tensor(rng.normal(size=(60, 3)))
    y = torch.tensor(rng.integers(0, 3, 60))
    w = torch.ones(1, 60, dtype=torch.float64)
    ref = roc_auc_score(y.numpy(), torch.softmax(lg, 1).numpy(), multi_class="ovr")
    assert float(primary.outputs_auc(lg, y, w)[0]) == pytest.approx(ref)
    # two classes of a 3-output head: the log-odds between them, never one class's logit
    two = torch.where(y > 0, 2, 0)
    assert float(primary.outputs_auc(lg, two, w)[0]) == pytest.approx(
        roc_auc_score((two == 2).numpy(), (lg[:, 2] - lg[:, 0]).numpy())
    )
    assert primary.auc_score_text(3, [0, 2]) == "logit 2 − logit 0"
    # a class absent from a 3-class audit: macro over the classes present, no error
    y2 = torch.tensor(rng.integers(0, 3, 60))
    y2[y2 == 1] = 0
    y2[:5] = torch.tensor([0, 2, 0, 2, 0])
    y3 = y2.clone()
    y3[10:20] = 1
    p = torch.softmax(lg, 1)
    ref3 = np.mean([roc_auc_score((y3 == c).numpy(), p[:, c].numpy()) for c in (0, 1, 2)])
    assert float(primary.outputs_auc(lg, y3, w)[0]) == pytest.approx(ref3)
    lg4 = torch.tensor(rng.normal(size=(60, 4)))  # class 3 absent, 3 present
    p4 = torch.softmax(lg4, 1)
    ref4 = np.mean([roc_auc_score((y3 == c).numpy(), p4[:, c].numpy()) for c in (0, 1, 2)])
    assert float(primary.outputs_auc(lg4, y3, w)[0]) == pytest.approx(ref4)
    # target=: one class against the rest, by its log-odds against the others
    odds = lg[:, 1] - torch.logsumexp(lg[:, [0, 2]], 1)
    assert float(primary.outputs_auc(lg, y3, w, target=1)[0]) == pytest.approx(
        roc_auc_score((y3 == 1).numpy(), odds.numpy())
    )


def test_a_single_logit_head_decides_by_the_sign_of_its_logit():
    """One output: the decision is ``logit > 0`` in the headline as in the subgroup
    table (it was ``argmax`` of one column, always class 0, before the owner was one)."""
    lg = torch.tensor([[2.0], [-1.0], [0.5], [-3.0], [1.0], [-0.5]])
    y = torch.tensor([1, 0, 2, 0, 1, 2])
    block, _ = primary.headline(lg, y, 3, torch.ones(1, 6), 0, 0.95)
    m = primary.metric_values(lg, y, torch.ones(1, 6))
    assert block["name"] == "accuracy" and block["value"] == pytest.approx(4 / 6)
    assert block["value"] == pytest.approx(float(m["accuracy"][0]))


def test_other_head_kinds_are_refused_with_the_fix_never_misread():
    """A regression target was read as 800 classes, multi-hot targets as 4,000 labels, and
    a TorchScript model as a model without a head (issue: every head a model has). Each
    is now audited as what it is, or refused with the fix (tests/test_head_kinds.py)."""
    rng = np.random.default_rng(0)
    z = rng.normal(size=(200, 8))
    site = rng.integers(0, 2, 200)
    w1 = np.zeros((1, 8))
    age = 50 + 10 * z[:, 0]
    with pytest.raises(wa.AuditError, match=r"continuous but the head has 3 outputs"):
        wa.analyze(z, age, {"site": site}, primary_weight=np.zeros((3, 8)), progress=False)
    with pytest.warns(wa.AuditWarning):
        res = wa.analyze(z, np.round(age), {"site": site}, primary_weight=w1, progress=False,
                         n_bootstrap=20, n_permutations=20)  # fmt: skip
    assert res.to_dict()["primary"]["task"] == "regression"  # never 800 classes
    assert any("task inferred as 'regression'" in w for w in res.to_dict()["warnings"])
    multi_hot = (rng.random((200, 5)) < 0.3).astype(int)
    with pytest.raises(wa.AuditError, match=r"multi-hot with 5 columns but the head has 4"):
        wa.analyze(z, multi_hot, {"site": site}, primary_weight=rng.normal(size=(4, 8)),
                   progress=False)  # fmt: skip
    net = torch.nn.Sequential(torch.nn.Linear(8, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
    for compiled in (torch.jit.trace(net.eval(), torch.randn(2, 8)), torch.jit.script(net)):
        with pytest.raises(wa.AuditError, match=r"TorchScript module .* no Python forward hooks"):
            wa.Auditor(compiled, kinds={"site": "categorical"})
    aud = wa.Auditor(net.eval(), kinds={"site": "categorical"})
    with aud.collect(), torch.no_grad():
        for _ in range(3):
            net(torch.randn(4, 8))
            aud.record(targets=np.ones((4, 3)), metadata={"site": [0, 1, 0, 1]})
    with pytest.raises(wa.AuditError, match="3 columns but the head has 2 outputs"):
        aud.analyze(progress=False)
