"""Verdict rules, reasons and samples_needed (wsca_audit.decision), and where they show."""

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import wsca_audit as wa
from wsca_audit.decision import decide
from wsca_audit.stats import abs_entry_ci
from wsca_audit.verdict import Thresholds


def _task(enc=(0.9, 0.85, 0.95), use=(0.1, 0.0, 0.2), p=0.3, eff=(0.0, -0.1, 0.1), n_inf=50):
    return {
        "encoding": {"metric": "auc", "value": enc[0], "ci_low": enc[1], "ci_high": enc[2]},
        "usage": {"value": use[0], "ci_low": use[1], "ci_high": use[2], "p_value": p},
        "effect": {"value": eff[0], "ci_low": eff[1], "ci_high": eff[2], "n_informative": n_inf},
    }


@pytest.mark.parametrize(
    ("task", "verdict", "words"),
    [
        (_task(enc=(0.55, 0.5, 0.58)), "not_encoded", "below 0.60"),
        (
            _task(use=(0.4, 0.3, 0.5), p=0.01, eff=(0.05, -0.02, 0.12)),
            "encoded_not_used",
            "within ±0.25",
        ),
        (
            _task(use=(0.4, 0.3, 0.5), p=0.01, eff=(0.5, 0.2, 0.8)),
            "uses",
            "is above 0.25 and p = 0.010",
        ),
        (_task(use=(0.2, 0.1, 0.3), p=0.01, eff=(0.6, 0.4, 0.8)), "uses", "beyond ±0.25 sd"),
        (_task(use=(0.1, 0.0, 0.2), eff=(0.2, -0.1, 0.5)), "encoded_not_used", "below 0.25"),
        (_task(use=(0.2, 0.05, 0.4), eff=(0.2, 0.0, 0.4)), "inconclusive", "straddles"),
        (_task(use=(0.4, 0.3, 0.5), p=0.2, eff=(0.6, 0.4, 0.8)), "inconclusive", "not significant"),
        (_task(enc=(0.62, 0.55, 0.7), eff=(0.0, -0.1, 0.1)), "inconclusive", "straddles 0.60"),
    ],
)
def test_rules(task, verdict, words):
    d = decide("scanner", task, Thresholds(), 800)
    assert d.verdict == verdict
    assert words in d.reason
    assert (d.samples_needed is not None) == (verdict == "inconclusive")


def test_without_an_effect_block_the_usage_rule_decides():
    t = _task(use=(0.4, 0.3, 0.5), p=0.01)
    del t["effect"]
    assert decide("s", t, Thresholds(), 500).verdict == "uses"
    t = _task(use=(0.1, 0.0, 0.2))
    del t["effect"]
    assert decide("s", t, Thresholds(), 500).verdict == "encoded_not_used"


def test_the_margin_is_a_setting():
    t = _task(use=(0.2, 0.05, 0.4), eff=(0.2, 0.05, 0.35))
    assert decide("s", t, Thresholds(), 800).verdict == "inconclusive"
    assert decide("s", t, Thresholds(effect=0.4), 800).verdict == "encoded_not_used"


@settings(max_examples=200, deadline=None, derandomize=True)
@given(
    st.floats(-1.0, 1.0),
    st.floats(0.01, 0.5),
    st.floats(0.05, 0.5),
    st.integers(50, 5000),
)
def test_samples_needed_clears_the_boundary_at_the_named_size(value, half, usage_half, n):
    """At the named size the interval (half-width shrunk by 1/sqrt) clears ±delta by 0.84
    of its own SE: the 80% power margin."""
    t = _task(
        use=(0.25, max(0.0, 0.25 - usage_half), 0.25 + usage_half),  # usage sits on its threshold
        eff=(value, value - half, value + half),
    )
    d = decide("s", t, Thresholds(), n)
    if d.verdict != "inconclusive":
        return
    gap = abs(abs(value) - 0.25)
    if gap < 1e-9 or n * (half * (1.959964 + 0.841621) / (1.959964 * gap)) ** 2 > 1e7:
        assert d.samples_needed is None  # on the boundary: no audit size decides it
        assert "no audit size would decide it" in d.reason
        return
    assert d.samples_needed is not None and d.samples_needed > n
    new_half = half * math.sqrt(n / d.samples_needed)
    se = new_half / 1.959964
    assert gap >= new_half + 0.84 * se - 1e-9
    assert d.informative_needed == math.ceil(50 * d.samples_needed / n)


@settings(max_examples=100, deadline=None, derandomize=True)
@given(st.integers(0, 2**16), st.integers(1, 3), st.integers(1, 3))
def test_the_usage_interval_contains_its_estimate(seed, c, k):
    g = torch.Generator().manual_seed(seed)
    m = torch.randn(101, c, k, generator=g) * 0.1 + torch.randn(1, c, k, generator=g) * 0.05
    lo, hi = abs_entry_ci(m, 100)
    point = float(m[0].abs().max())
    assert 0.0 <= lo <= hi
    # the estimate lies in its interval unless the resamples all sit on one side of it
    flat = m.flatten(1)
    j = int(flat[0].abs().argmax())
    signed = flat[1:, j] * torch.sign(flat[0, j])
    q = torch.quantile(signed.double(), torch.tensor([0.025, 0.975], dtype=torch.float64))
    if q[0] <= point <= q[1]:
        assert lo <= point <= hi


def test_reason_and_samples_needed_reach_summary_card_and_cli(tmp_path, capsys):
    rng = np.random.default_rng(0)
    n = 400
    y = rng.integers(0, 2, n)
    site = np.where(rng.random(n) < 0.9, y, 1 - y)
    z = rng.normal(size=(n, 6))
    z[:, 0] += 1.5 * y
    z[:, 1] += 2.0 * site
    W = np.zeros((2, 6))
    W[1, 0], W[1, 1] = 1.0, 0.12  # a small reliance: about 0.25 sd
    res = wa.analyze(z, y, {"site": site}, primary_weight=W, n_bootstrap=60, n_permutations=60,
                     progress=False)  # fmt: skip
    t = res.tasks["site"]
    assert t["reason"] and t["reason"] in res.summary()
    if t["verdict"] == "inconclusive":
        assert t["samples_needed"] > n and f"{t['samples_needed']:,}" in t["reason"]
    card = wa.write_model_card(res, tmp_path / "CARD.md").read_text()
    assert t["reason"] in card
    assert t["reason"] in res.to_html().replace("&#x27;", "'")
    res.save(tmp_path / "audit")
    from wsca_audit.cli import main

    code = main(["report", str(tmp_path / "audit"), "--fail-on", t["verdict"]])
    out = capsys.readouterr()
    assert code == 1
    assert t["reason"] in out.out and t["reason"] in out.err


def test_each_task_says_what_to_do_next(tmp_path):
    """The reports explained a verdict but not the action: more samples (how many), a fix
    in the head, or nothing."""
    import wsca_audit as wa

    rep = {"schema_version": 1, "warnings": [], "tasks": {
        "scanner": {"kind": "categorical", "verdict": "uses", "reason": "usage 0.69"},
        "site": {"kind": "categorical", "verdict": "inconclusive", "reason": "r",
                 "samples_needed": 2400},
        "sex": {"kind": "categorical", "verdict": "encoded_not_used", "reason": "r"},
    }}  # fmt: skip
    lines = wa.AuditResult(rep).reasons()
    assert lines[0].startswith("scanner: uses - usage 0.69. Next: confirm it on the input side")
    assert (
        "remove scanner from the head and audit again: wa.mitigate(model, auditor, 'scanner')"
        in lines[0]
    )
    assert "Next: audit about 2,400 samples" in lines[1]
    assert lines[2].endswith(
        "Next: none for the head; audit again when the model or the data change"
    )
    html = wa.AuditResult(rep).to_html()
    assert "audit about 2,400 samples" in html
    card = tmp_path / "MODEL_CARD.md"
    wa.write_model_card(wa.AuditResult(rep), card)
    assert "Next: audit about 2,400 samples" in card.read_text()
