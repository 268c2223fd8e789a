"""Weighted batched metrics against scikit-learn, and their defining properties."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import r2_score, roc_auc_score

import wsca_audit.metrics as metrics
from wsca_audit.metrics import prefix_sum, weighted_auc, weighted_corr, weighted_r2


def test_auc_and_r2_match_sklearn_with_ties_and_weights():
    rng = np.random.default_rng(0)
    s = np.round(rng.normal(size=400), 1)  # many ties
    y = rng.random(400) < 0.3
    w = rng.integers(0, 4, size=(5, 400)).astype(float)
    got = weighted_auc(torch.tensor(s), torch.tensor(y), torch.tensor(w)).numpy()
    ref = [roc_auc_score(y, s, sample_weight=wi) for wi in w]
    np.testing.assert_allclose(got, ref, atol=1e-12)
    t = rng.normal(size=400)
    p = t + rng.normal(size=400)
    got = weighted_r2(torch.tensor(p), torch.tensor(t), torch.tensor(w)).numpy()
    np.testing.assert_allclose(got, [r2_score(t, p, sample_weight=wi) for wi in w], atol=1e-10)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(0, 5), min_size=6, max_size=40), st.integers(0, 10_000))
def test_integer_weights_equal_repeated_samples(counts, seed):
    rng = np.random.default_rng(seed)
    n = len(counts)
    s = rng.integers(0, 4, size=n).astype(float)
    y = np.arange(n) % 2 == 0
    w = np.array(counts, dtype=float)
    rep = np.repeat(np.arange(n), counts)
    got = float(weighted_auc(torch.tensor(s), torch.tensor(y), torch.tensor(w[None]))[0])
    if len(set(y[rep])) < 2:
        assert np.isnan(got)
    else:
        assert abs(got - roc_auc_score(y[rep], s[rep])) < 1e-12


def test_weighted_corr_matches_numpy():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(100, 2))
    b = rng.normal(size=(3, 100, 4)) + a[None, :, :1]
    got = weighted_corr(torch.tensor(a), torch.tensor(b), torch.ones(3, 100)).numpy()
    for p in range(3):
        ref = np.corrcoef(a.T, b[p].T)[:2, 2:]
        np.testing.assert_allclose(got[p], ref, atol=1e-10)


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 3000), st.sampled_from([4, 16, 256]), st.integers(0, 10_000))
def test_prefix_sum_by_blocks_equals_cumsum(n, block, seed):
    # the matmul path is what CUDA runs; a small block exercises its recursion
    x = torch.tensor(np.random.default_rng(seed).normal(size=(3, n)))
    got = prefix_sum(x, method="matmul", block=block)
    assert got.shape == x.shape and got.dtype == torch.float64
    torch.testing.assert_close(got, torch.cumsum(x, -1), rtol=0, atol=1e-9)


def test_prefix_sum_rejects_an_unknown_method():
    with pytest.raises(ValueError, match="method"):
        prefix_sum(torch.ones(3), method="scan")


def test_auc_on_the_deterministic_device_path_matches_sklearn(monkeypatch):
    on_device = lambda x, *_: prefix_sum(x, method="matmul", block=8)  # noqa: E731
    monkeypatch.setattr(metrics, "prefix_sum", on_device)
    rng = np.random.default_rng(1)
    s = np.round(rng.normal(size=700), 1)
    y = rng.random(700) < 0.4
    w = rng.integers(0, 4, size=(4, 700)).astype(float)
    got = weighted_auc(torch.tensor(s), torch.tensor(y), torch.tensor(w)).numpy()
    ref = [roc_auc_score(y, s, sample_weight=wi) for wi in w]
    np.testing.assert_allclose(got, ref, atol=1e-12)


def test_auc_of_no_samples_is_nan():
    got = weighted_auc(torch.zeros(0), torch.zeros(0, dtype=torch.bool), torch.ones(2, 0))
    assert got.shape == (2,) and torch.isnan(got).all()
