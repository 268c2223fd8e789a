"""Level coding: the audit's equal-width bins and the performance table's quartiles."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wsca_audit.levels import bin_edges, code_levels
from wsca_audit.performance import group_codes


def test_categorical_levels_are_sorted_text_and_missing_is_minus_one():
    lv = code_levels(np.array(["b", None, "a", "b"], dtype=object), "categorical")
    assert lv.codes.tolist() == [1, -1, 0, 1] and lv.labels == ["a", "b"]
    assert lv.valid.tolist() == [True, False, True, True] and lv.counts.tolist() == [1, 2]


@settings(max_examples=50, deadline=None)
@given(st.lists(st.floats(-100, 100), min_size=2, max_size=80), st.integers(2, 8))
def test_width_bins_split_the_range_evenly(xs, n_bins):
    x = np.array(xs)
    lv = code_levels(x, "continuous", n_bins=n_bins)
    edges = np.linspace(x.min(), x.max(), n_bins + 1)
    raw = np.clip(np.searchsorted(edges, x, side="right") - 1, 0, n_bins - 1)
    _, expect = np.unique(raw, return_inverse=True)
    assert lv.codes.tolist() == expect.tolist()
    assert lv.n_distinct == len(np.unique(x))


def test_quantile_bins_are_the_performance_table_s_quartiles():
    x = np.arange(100.0)
    codes, names = group_codes(x, "continuous")
    assert np.bincount(codes).tolist() == [25, 25, 25, 25]
    assert names[0] == "[0, 24.75]"
    assert group_codes(np.full(5, 3.0), "continuous")[1] == []  # a constant: no groups


def test_nan_is_missing_and_a_constant_has_one_distinct_value():
    lv = code_levels(np.array([1.0, np.nan, 1.0]), "continuous")
    assert lv.codes.tolist() == [0, -1, 0] and lv.n_distinct == 1


def test_bin_edges_refuses_an_unknown_binning():
    assert bin_edges(np.array([0.0, 1.0]), 2, "width").tolist() == [0.0, 0.5, 1.0]
    with pytest.raises(ValueError, match="binning"):
        bin_edges(np.array([0.0, 1.0]), 2, "log")


def test_a_continuous_column_with_every_value_missing_is_skipped_not_a_crash():
    import wsca_audit as wa

    rng = np.random.default_rng(0)
    z = rng.normal(size=(60, 4))
    y = (z[:, 0] > 0).astype(int)
    res = wa.analyze(z, y, {"age": np.full(60, np.nan), "site": np.arange(60) % 2},
                     kinds={"age": "continuous"}, primary_weight=np.eye(2, 4),
                     n_bootstrap=10, n_permutations=10, progress=False)  # fmt: skip
    assert "age" not in res.tasks and "site" in res.tasks
    assert code_levels(np.full(3, np.nan), "continuous", binning="quantile").labels == []
