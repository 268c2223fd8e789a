"""The measures: invariances (hypothesis), the paper's definitions, BH, PCA rule, verdicts."""

import numpy as np
import pytest
import torch
from conftest import cosine
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import wsca_audit as wa
from wsca_audit import correlation as corr
from wsca_audit import primary, stats
from wsca_audit.decision import decide
from wsca_audit.verdict import Thresholds


@pytest.fixture(scope="module")
def real_set(digits_std):
    """Real embeddings stand-in: 400 digits (64 pixels), a label and two metadata columns."""
    X, y = digits_std
    X = X[:400]
    label = (y[:400] >= 5).astype(int)
    meta = {"odd": (y[:400] % 2).astype(int), "ink": X[:, 20:40].sum(1)}
    W = np.random.default_rng(0).normal(size=(2, 64))
    return X, label, meta, W


def _values(res):
    return {
        (name, key): res.tasks[name][key]["value"]
        for name in res.tasks
        for key in ("wsc", "usage", "encoding")
    }


def _run(X, label, meta, W, b=None):
    return wa.analyze(
        X,
        label,
        meta,
        primary_weight=W,
        primary_bias=b,
        n_bootstrap=0,
        n_permutations=0,
        progress=False,
        dtype="float64",
    )


@pytest.fixture(scope="module")
def base(real_set):
    return _values(_run(*real_set))


@settings(
    max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(scale=st.floats(0.01, 100), shift=st.floats(-50, 50), seed=st.integers(0, 2**16))
def test_invariant_to_head_scale_logit_shift_and_dim_permutation(
    real_set, base, scale, shift, seed
):
    X, label, meta, W = real_set
    perm = np.random.default_rng(seed).permutation(X.shape[1])
    got = _values(_run(X[:, perm], label, meta, scale * W[:, perm], b=np.full(2, shift)))
    for key, v in base.items():
        assert got[key] == pytest.approx(v, abs=2e-4), key


def test_invariant_to_a_vector_added_to_every_class(real_set, base):
    """Softmax heads that predict identically get identical measures."""
    X, label, meta, W = real_set
    W2 = W + np.random.default_rng(5).normal(size=(1, 64))
    got = _values(_run(X, label, meta, W2))
    for key, v in base.items():
        assert got[key] == pytest.approx(v, abs=1e-6), key


def test_wsc_of_two_logit_head_is_cosine_of_the_difference():
    rng = np.random.default_rng(0)
    W = torch.tensor(rng.normal(size=(2, 10)))
    v = torch.tensor(rng.normal(size=(1, 1, 10)))
    m = corr.cosine_matrix(primary.class_vectors(W), corr.aux_class_vectors(v))
    assert m.shape == (1, 2, 2)
    expected = cosine((W[1] - W[0]).numpy(), v.numpy())
    assert float(corr.max_abs(m)[0]) == pytest.approx(abs(expected))
    assert float(m[0, 1, 1]) == pytest.approx(expected)  # class 1 vs level 1: signed


def test_pca_rule_99_percent_at_least_50_capped_at_d():
    rng = np.random.default_rng(0)
    low_rank = torch.tensor(rng.normal(size=(500, 3)) @ rng.normal(size=(3, 80)))
    basis, _ = corr.pca_basis(low_rank)
    assert basis.shape == (50, 80)  # 3 would explain 99%, but at least 50
    small = torch.tensor(rng.normal(size=(500, 20)))
    assert corr.pca_basis(small)[0].shape == (20, 20)  # capped at d
    iso = torch.tensor(rng.normal(size=(4000, 120)))
    k = corr.pca_basis(iso)[0].shape[0]
    assert 100 < k <= 120
    b = corr.pca_basis(iso)[0]
    assert torch.allclose(b @ b.T, torch.eye(k, dtype=b.dtype), atol=1e-8)


def test_benjamini_hochberg_matches_reference():
    from scipy.stats import false_discovery_control

    p = [0.01, 0.02, 0.03, 0.5, 0.04, float("nan")]
    got = stats.benjamini_hochberg(p)
    ref = false_discovery_control(p[:5], method="bh")
    np.testing.assert_allclose(got[:5], ref)
    assert np.isnan(got[5])


@pytest.mark.parametrize(
    ("enc", "use", "p", "expected"),
    [
        ((0.40, 0.55), (0.0, 0.9), 0.5, "not_encoded"),
        ((0.90, 0.95), (0.30, 0.50), 0.01, "uses"),
        ((0.90, 0.95), (0.30, 0.50), 0.20, "inconclusive"),
        ((0.90, 0.95), (0.01, 0.10), 0.60, "encoded_not_used"),
        ((0.55, 0.70), (0.01, 0.10), 0.60, "inconclusive"),
    ],
)
def test_verdict_rules(enc, use, p, expected):
    task = {
        "encoding": {"metric": "auc", "value": sum(enc) / 2, "ci_low": enc[0], "ci_high": enc[1]},
        "usage": {"value": sum(use) / 2, "ci_low": use[0], "ci_high": use[1], "p_value": p},
    }
    assert decide("site", task, Thresholds(), 800).verdict == expected
