"""The statistics home: resampling plans, intervals, nulls, strata and chunks."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from wsca_audit import resampling, stats


def test_bootstrap_counts_are_resamples_of_n():
    g = torch.Generator().manual_seed(0)
    counts = resampling.bootstrap_counts(50, 7, g)
    assert counts.shape == (7, 50) and torch.all(counts.sum(1) == 50)
    again = resampling.bootstrap_counts(50, 7, torch.Generator().manual_seed(0))
    assert torch.equal(counts, again)
    assert resampling.bootstrap_counts(5, 0, g).shape == (0, 5)


def test_bootstrap_counts_drawn_in_blocks_are_the_draws_made_at_once():
    """Drawn a few resamples at a time (small temporaries), the counts are those of one
    draw of every resample (a bug here would move every interval of every audit)."""
    n, b = 500_000, 10  # 8 resamples per 64 MiB block at this n: two blocks
    g = torch.Generator().manual_seed(3)
    idx = torch.randint(0, n, (b, n), generator=g) + n * torch.arange(b)[:, None]
    at_once = torch.bincount(idx.flatten(), minlength=b * n).view(b, n).float()
    counts = resampling.bootstrap_counts(n, b, torch.Generator().manual_seed(3))
    assert (64 * 2**20) // (16 * n) < b and torch.equal(counts, at_once)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.floats(-5, 5), min_size=2, max_size=60), st.floats(0.5, 0.99))
def test_percentile_ci_is_numpy_s_quantile_interval(xs, level):
    lo, hi = stats.percentile_ci(torch.tensor(xs, dtype=torch.float64), level)
    a = (1 - level) / 2
    assert lo == pytest.approx(np.quantile(xs, a)) and hi == pytest.approx(np.quantile(xs, 1 - a))


def test_ci_block_reads_the_bootstrap_rows_and_ignores_what_follows():
    v = torch.tensor([0.5, 0.1, 0.2, 0.3, 9.0, 9.0])
    block = stats.ci_block(v, 3, 0.5)
    assert block["value"] == 0.5 and block["ci_high"] < 1
    assert np.isnan(stats.ci_block(v, 0)["ci_low"])


def test_null_quantile_leaves_out_nan_refits():
    null = torch.tensor([float("nan"), 1.0, 2.0, 3.0])
    assert stats.null_quantile(null, 0.5) == 2.0
    assert np.isnan(stats.null_quantile(torch.tensor([float("nan")])))


def test_permutation_p_and_bh():
    assert stats.permutation_p(1.0, torch.zeros(19)) == pytest.approx(1 / 20)
    assert (
        stats.benjamini_hochberg([0.01, float("nan"), 0.02])[1]
        != stats.benjamini_hochberg([0.01, float("nan"), 0.02])[1]
    )  # NaN stays NaN


def test_evidence_intervals_cover_their_estimate_and_repeat_for_a_seed():
    rng = np.random.default_rng(0)
    x = rng.normal(1.0, 1.0, 300)
    lo, hi = stats.bootstrap_mean_ci(x, 200, 0.95, seed=3)
    assert lo < x.mean() < hi and (lo, hi) == stats.bootstrap_mean_ci(x, 200, 0.95, seed=3)
    ref = rng.normal(0.0, 2.0, 300)
    lo, hi = stats.bootstrap_ratio_ci(x, ref, 200, 0.9, seed=0)
    assert lo < x.mean() / ref.std(ddof=1) < hi
    assert np.isnan(stats.bootstrap_mean_ci(x[:1], 200, 0.95, 0)[0])


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(0, 3), min_size=2, max_size=40), st.integers(0, 1000))
def test_stratum_means_and_centring_match_a_groupby(strata, seed):
    rng = np.random.default_rng(seed)
    s = np.array(strata)
    M = rng.normal(size=(len(s), 2))
    valid = rng.random(len(s)) < 0.8
    got = stats.stratum_means(torch.tensor(M), torch.tensor(s), torch.tensor(valid)).numpy()
    for i, si in enumerate(s):
        members = (s == si) & valid
        expect = M[members].mean(0) if members.any() else np.zeros(2)
        np.testing.assert_allclose(got[i], expect, atol=1e-12)
    c = stats.center_within(torch.tensor(M), torch.tensor(s), torch.tensor(valid)).numpy()
    assert np.all(c[~valid] == 0)
    for si in np.unique(s[valid]):
        np.testing.assert_allclose(c[(s == si) & valid].mean(0), 0, atol=1e-12)


def test_within_class_centered_uses_each_resample_s_own_class_means():
    M = torch.tensor([[1.0], [3.0], [10.0], [20.0]])
    onehot = torch.nn.functional.one_hot(torch.tensor([0, 0, 1, 1])).double()
    w = torch.tensor([[1.0, 1, 1, 1], [2.0, 0, 1, 1]], dtype=torch.float64)
    out = stats.within_class_centered(M.double(), w, onehot)
    assert out[0, :, 0].tolist() == [-1.0, 1.0, -5.0, 5.0]
    assert out[1, 0, 0] == 0.0  # resample 1 sees only the first sample of class 0


def test_stratum_mean_table_equals_a_plain_mean_whatever_the_chunk():
    Z = torch.randn(23, 4, dtype=torch.float64)
    s = torch.tensor([0, 1, 2] * 7 + [0, 1])
    one = stats.stratum_mean_table(Z, s, 4, torch.float64, torch.device("cpu"), 100)
    small = stats.stratum_mean_table(Z, s, 4, torch.float64, torch.device("cpu"), 5)
    assert torch.allclose(one, small)
    assert torch.allclose(one[1], Z[s == 1].mean(0))
    assert torch.all(one[3] == 0)  # an empty stratum


@given(st.integers(0, 500), st.integers(1, 64))
def test_chunks_cover_the_range_once(n, size):
    covered = [i for sl in stats.chunks(n, size) for i in range(n)[sl]]
    assert covered == list(range(n))


def test_chunk_rows_follow_the_budget():
    assert stats.chunk_rows(1024, budget_mb=4.0) == 1024
    assert stats.chunk_rows(1024, budget_mb=8.0) == 2048
    assert stats.chunk_rows(10**9, budget_mb=1.0) == 1  # at least one row


def test_stratified_subsample_spreads_over_the_strata():
    strata = np.array([0] * 90 + [1] * 10)
    pick = resampling.stratified_subsample(strata, 20, seed=0)
    assert len(pick) == 20 and (strata[pick] == 1).sum() == 10
    assert np.array_equal(pick, resampling.stratified_subsample(strata, 20, seed=0))


def test_simultaneous_band_covers_every_estimate_at_once():
    """The max-t band of 10 means holds all ten true means in about 95% of samples
    (Bonferroni-style percentile intervals at 0.995 from 200 resamples came out narrower)."""
    g = torch.Generator().manual_seed(0)
    covered = 0
    for _ in range(120):
        x = torch.randn(60, 10, generator=g)  # true means 0
        idx = torch.randint(0, 60, (200, 60), generator=g)
        values = torch.cat([x.mean(0, keepdim=True), x[idx].mean(1)])
        lo, hi = stats.simultaneous_ci(values, 200, 0.95)
        covered += bool(((lo <= 0) & (0 <= hi)).all())
    assert 0.88 <= covered / 120 <= 1.0
