"""The effect measure: the within-class regression of the score, against scikit-learn and
against planted shifts; its unit; its interval."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.linear_model import LinearRegression

import wsca_audit as wa
from wsca_audit.measures.effect import _within_class_fit

FAST = dict(n_bootstrap=60, n_permutations=20, progress=False)


def _one_hot(codes, k=None):
    k = k or int(codes.max()) + 1
    return np.eye(k)[codes]


@settings(max_examples=25, deadline=None, derandomize=True)
@given(st.integers(2, 4), st.integers(2, 3), st.integers(0, 2**16))
def test_within_class_fit_equals_least_squares_with_class_dummies(k, n_classes, seed):
    rng = np.random.default_rng(seed)
    n = 120
    y = rng.integers(0, n_classes, n)
    m = rng.integers(0, k, n)
    m[:k] = np.arange(k)  # every level present
    y[:n_classes] = np.arange(n_classes)
    s = rng.normal(size=n) + 0.7 * y + 0.3 * m
    w = rng.integers(0, 3, n).astype(float)
    w[: max(k, n_classes)] = 1.0
    X = np.c_[_one_hot(m, k)[:, 1:], _one_hot(y, n_classes)]
    ref = LinearRegression(fit_intercept=False).fit(X, s, sample_weight=w).coef_[: k - 1]
    t = lambda a: torch.as_tensor(a, dtype=torch.float64)  # noqa: E731
    coef, sd = _within_class_fit(
        t(s[:, None]), t(_one_hot(m, k)[:, 1:]), t(w[None]), t(_one_hot(y, n_classes))
    )
    np.testing.assert_allclose(coef[0, 0].numpy(), ref, rtol=1e-6, atol=1e-8)
    # accumulated over chunks of samples (what large audits do): the same numbers
    args = (t(s[:, None]), t(_one_hot(m, k)[:, 1:]), t(w[None]), t(_one_hot(y, n_classes)))
    coef_c, sd_c = _within_class_fit(*args, chunk=7)
    np.testing.assert_allclose(coef_c.numpy(), coef.numpy(), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(sd_c.numpy(), sd.numpy(), rtol=1e-9)
    # the unit: sd of the score with the metadata's part removed (weighted, unbiased)
    r = s - _one_hot(m, k)[:, 1:] @ ref
    mean = np.average(r, weights=w)
    var = np.average((r - mean) ** 2, weights=w) * w.sum() / (w.sum() - 1)
    assert float(sd[0, 0]) == pytest.approx(np.sqrt(var), rel=1e-6)


def _planted(shift_sd, n=1500, seed=0, confounding=0.8, levels=2):
    """Embeddings whose head's score moves by ``shift_sd`` of its clean sd with the site."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    site = (
        np.where(rng.random(n) < confounding, y, 1 - y)
        if levels == 2
        else rng.integers(0, levels, n)
    )
    z = rng.normal(size=(n, 6))
    z[:, 0] += 1.5 * y
    z[:, 1] += 2.0 * (site == 1)  # the site is written into the embedding
    clean = z[:, 0]  # the head reads unit 0 ...
    W = np.zeros((2, 6))
    W[1, 0] = 1.0
    W[1, 1] = shift_sd * clean.std() / 2.0  # ... and, with this weight, the site's unit
    return z, y, site, W


@pytest.mark.parametrize("shift", [0.0, 0.3, 0.8])
def test_a_planted_shift_is_recovered_in_sd_units(shift):
    z, y, site, W = _planted(shift)
    res = wa.analyze(z, y, {"site": site}, primary_weight=W, **FAST)
    eff = res.tasks["site"]["effect"]
    assert eff["unit"] == "logit_sd" and eff["levels"] == ["0", "1"]
    # the intervention: the same samples with the site switched off, in clean-score sd
    s = z @ (W[1] - W[0])
    clean = s - 2.0 * W[1, 1] * (site == 1)
    truth = 2.0 * W[1, 1] / clean.std()
    assert truth == pytest.approx(shift, abs=0.1)
    assert eff["value"] == pytest.approx(truth, abs=0.06)
    assert eff["ci_low"] <= eff["value"] <= eff["ci_high"]
    assert eff["n_informative"] == int(np.sum(site != y))


def test_categorical_effect_names_the_pair_of_levels():
    rng = np.random.default_rng(3)
    n = 1500
    y = rng.integers(0, 2, n)
    site = rng.integers(0, 4, n)
    z = rng.normal(size=(n, 6))
    z[:, 0] += 1.5 * y
    z[:, 1] += 1.0 * (site == 2) - 1.0 * (site == 3)
    W = np.zeros((2, 6))
    W[1, 0], W[1, 1] = 1.0, 0.5
    res = wa.analyze(z, y, {"site": site}, primary_weight=W, **FAST)
    eff = res.tasks["site"]["effect"]
    assert eff["levels"] == ["3", "2"]  # from the lowest to the highest level
    assert eff["value"] > 0.5


def test_continuous_effect_is_per_interquartile_range():
    rng = np.random.default_rng(4)
    n = 1500
    y = rng.integers(0, 2, n)
    age = rng.normal(50, 10, n) + 5 * y
    z = rng.normal(size=(n, 5))
    z[:, 0] += 1.5 * y
    z[:, 1] = (age - 50) / 10
    W = np.zeros((2, 5))
    W[1, 0], W[1, 1] = 1.0, 0.2
    res = wa.analyze(z, y, {"age": age}, primary_weight=W, kinds={"age": "continuous"}, **FAST)
    eff = res.tasks["age"]["effect"]
    s = z @ (W[1] - W[0])
    clean = s - 0.2 * z[:, 1]
    iqr = np.subtract(*np.percentile(age, [75, 25]))
    expected = 0.2 / 10 * iqr / clean.std()
    assert eff["per"] == "IQR"
    assert eff["value"] == pytest.approx(expected, rel=0.1)


def test_without_targets_the_effect_is_confounded_and_the_report_says_so():
    z, y, site, W = _planted(0.5)
    held = wa.analyze(z, y, {"site": site}, primary_weight=W, **FAST)
    plain = wa.analyze(z, None, {"site": site}, primary_weight=W, **FAST)
    # no label to hold fixed: the site's difference carries the label's part too
    assert plain.tasks["site"]["effect"]["value"] > held.tasks["site"]["effect"]["value"] + 0.3
    assert any("not deconfounded" in w for w in plain.warnings)


def test_levels_nested_in_the_classes_do_not_break_the_effect():
    """A bug: with the digit as metadata and 'digit >= 5' as the label, the level
    indicators are collinear with the class dummies, and the solve raised
    'input matrix is singular' instead of giving the digit's effect."""
    rng = np.random.default_rng(0)
    digit = rng.integers(0, 10, 600)
    y = (digit >= 5).astype(int)
    z = np.c_[y + rng.normal(size=600), digit % 2 + 0.5 * rng.normal(size=600)]
    W = np.array([[0.0, -1.0], [0.0, 1.0]])  # the head reads the parity of the digit
    res = wa.analyze(z, y, {"digit": digit}, primary_weight=W, n_bootstrap=40,
                     n_permutations=40, progress=False)  # fmt: skip
    eff = res.tasks["digit"]["effect"]
    # the parity contrast within a class: 2 logits over the score's sd (about 1.2 here),
    # and between levels that meet in a class (levels of different classes have no
    # within-class contrast; the minimum-norm solution made one up, 2.7)
    assert 1.3 < eff["value"] < 2.1 and eff["ci_low"] > 1.1
    lo, hi = (int(v) for v in eff["levels"])
    assert (lo >= 5) == (hi >= 5) and lo % 2 != hi % 2
    # the groups it names: the odd digits against the even ones, within one class
    high, low = ({int(v) for v in eff["split"][g]} for g in ("high", "low"))
    assert high | low in ({0, 1, 2, 3, 4}, {5, 6, 7, 8, 9})
    assert {d % 2 for d in high} == {1} and {d % 2 for d in low} == {0}
    # float32 cancellation in the within-class sums had pushed the interval to [-1.8, 2.9]
    again = wa.analyze(z, y, {"digit": digit}, primary_weight=W, n_bootstrap=40,
                       n_permutations=40, progress=False, dtype="float64")  # fmt: skip
    for k in ("value", "ci_low", "ci_high"):
        assert again.tasks["digit"]["effect"][k] == pytest.approx(eff[k], abs=1e-4)
