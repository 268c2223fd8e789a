"""formatting: numbers and intervals as text, json_safe, the text table, the HTML shell."""

import json
import math

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from wsca_audit.formatting import (
    ci_text,
    fmt,
    html_page,
    img_tag,
    json_safe,
    percent,
    png_bytes,
    text_table,
)


@pytest.mark.parametrize(
    ("value", "digits", "expected"),
    [(0.12345, 3, "0.123"), (2, 2, "2.00"), (-0.5, 1, "-0.5"), (None, 3, "-"),
     (float("nan"), 3, "-"), (float("inf"), 2, "-"), (True, 3, "-"), ("0.5", 3, "-"),
     ({"a": 1}, 3, "-"), (np.float32(0.25), 2, "0.25")],
)  # fmt: skip
def test_fmt(value, digits, expected):
    assert fmt(value, digits) == expected


@given(st.floats(allow_nan=True, allow_infinity=True), st.integers(0, 6))
def test_fmt_is_a_number_with_its_digits_or_a_dash(x, digits):
    out = fmt(x, digits)
    if not math.isfinite(x):
        assert out == "-"
    else:
        assert float(out) == pytest.approx(x, abs=10.0**-digits)
        assert len(out.partition(".")[2]) == digits


@pytest.mark.parametrize(
    ("block", "expected"),
    [(None, "-"), ({}, "-"), ({"value": 0.5, "ci_low": 0.4, "ci_high": 0.6}, "0.500 [0.400, 0.600]"),
     ({"value": 0.5}, "0.500 [-, -]"), ({"ci_low": 0.1, "ci_high": None}, "- [0.100, -]")],
)  # fmt: skip
def test_ci_text(block, expected):
    assert ci_text(block) == expected


def test_ci_text_digits():
    assert ci_text({"value": 0.123, "ci_low": -0.1, "ci_high": 0.3}, 2) == "0.12 [-0.10, 0.30]"


@pytest.mark.parametrize(
    ("level", "expected"),
    [(0.95, "95%"), (0.9, "90%"), (0.999, "99.9%"), (0.5, "50%"), (None, "-"),
     (float("nan"), "-"), (True, "-"), ("0.95", "-")],
)  # fmt: skip
def test_percent(level, expected):
    assert percent(level) == expected


def test_percent_agrees_with_the_measures_headers():
    from wsca_audit.measures import get_measures

    m = get_measures()[0]
    for level in (0.8, 0.9, 0.95, 0.99):
        assert m.headers(level)[0].endswith(f"[{percent(level)} CI]")


# --------------------------------------------------------------------------- json_safe
def test_json_safe_converts_numpy_torch_tuples_and_non_finite():
    data = {
        1: (np.float64(0.5), np.int64(3), float("nan"), float("-inf")),
        "arr": np.array([[1, 2], [3, 4]]),
        "t": torch.tensor([0.5, float("nan")]),
        "scalar_t": torch.tensor(2.0),
        "nested": [{"x": np.bool_(True)}, "s", b"b"],
    }
    out = json_safe(data)
    assert out == {
        "1": [0.5, 3, None, None],
        "arr": [[1, 2], [3, 4]],
        "t": [0.5, None],
        "scalar_t": 2.0,
        "nested": [{"x": True}, "s", b"b"],
    }
    assert type(out["1"][1]) is int and type(out["nested"][0]["x"]) is bool


_json_like = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=4),
    lambda kids: (
        st.lists(kids, max_size=3)
        | st.tuples(kids, kids)
        | st.dictionaries(st.text(max_size=4), kids, max_size=3)
    ),
    max_leaves=15,
)


@given(_json_like)
def test_json_safe_output_is_strict_json_and_a_fixed_point(x):
    out = json_safe(x)
    json.dumps(out, allow_nan=False)  # no NaN tokens, no tuples left over
    assert json_safe(out) == out


# --------------------------------------------------------------------------- tables, pages
def test_text_table_pads_columns_and_rules_the_header():
    lines = text_table([("task", "verdict"), ("a", "uses"), ("longer name", "x")])
    assert lines == [
        "task         verdict",
        "-----------  -------",
        "a            uses",
        "longer name  x",
    ]


def test_text_table_of_a_header_only_and_of_non_strings():
    assert text_table([("a", "bb")]) == ["a  bb", "-  --"]
    assert text_table([("n",), (3,), (None,)]) == ["n", "----", "3", "None"]


def test_html_page_and_img_tag_escape():
    page = html_page("<T & t>", "<p>body</p>")
    assert page.startswith("<!doctype html>") and "<title>&lt;T &amp; t&gt;</title>" in page
    assert "<p>body</p>" in page  # the body is the caller's (already escaped) HTML
    tag = img_tag(b"\x89PNG", "a 'quoted' <alt>")
    assert "alt='a &#x27;quoted&#x27; &lt;alt&gt;'" in tag
    assert "src='data:image/png;base64,iVBORw=='" in tag


def test_png_bytes_renders_a_figure():
    from matplotlib.figure import Figure

    fig = Figure(figsize=(1, 1))
    fig.subplots().plot([0, 1])
    assert png_bytes(fig, dpi=20)[:8] == b"\x89PNG\r\n\x1a\n"
