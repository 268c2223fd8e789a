"""naming: metadata names made safe for MLflow keys and file names (sanitize_name,
task_keys) and the MLflow metrics of one interval block."""

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from wsca_audit.naming import interval_metrics, sanitize_name, task_keys

SAFE = re.compile(r"^[A-Za-z0-9_.-]+$")


@pytest.mark.parametrize(
    ("name", "expected"),
    [("", "task"), ("_", "task"), ("._x", "x"), ("x.", "x"), ("a...b", "a.b"), ("ü", "task"),
     ("a  b", "a_b"), ("a-b.c_d", "a-b.c_d"), (3, "3"), ("/etc/passwd", "etc_passwd"),
     ("C:\\x", "C_x"), ("a\nb", "a_b")],
)  # fmt: skip
def test_sanitize_name_cases(name, expected):
    assert sanitize_name(name) == expected


@given(st.text(max_size=300))
def test_sanitized_names_are_safe_keys_and_path_components(name):
    out = sanitize_name(name)
    assert SAFE.match(out)
    assert ".." not in out and out not in (".", "..")
    assert not out.startswith((".", "_"))
    assert len(out) <= 200


@given(st.text(alphabet=st.sampled_from("ab._/ "), max_size=40))
def test_sanitizing_twice_changes_nothing(name):
    assert sanitize_name(sanitize_name(name)) == sanitize_name(name)


def test_a_long_name_is_cut_to_200_characters():
    assert sanitize_name("a" * 500) == "a" * 200


def test_a_cut_name_does_not_end_with_a_dot():
    assert not sanitize_name("a" * 199 + ".b").endswith(".")


@given(st.lists(st.text(max_size=8), unique=True, max_size=12))
def test_task_keys_are_unique_safe_and_in_order(names):
    keys = task_keys(names)
    assert list(keys) == names
    assert len(set(keys.values())) == len(names)
    for name, key in keys.items():
        base = sanitize_name(name)
        assert key == base or re.fullmatch(re.escape(base) + r"_\d+", key)


def test_task_keys_number_collisions_in_order_of_appearance():
    assert task_keys(["a b", "a_b_2", "a/b"]) == {"a b": "a_b", "a_b_2": "a_b_2", "a/b": "a_b_3"}
    assert task_keys([]) == {}


def test_interval_metrics_skips_what_is_missing():
    block = {"value": 0.5, "ci_low": None, "ci_high": 0.7, "other": 1.0}
    assert interval_metrics("m", block) == {"m": 0.5, "m_ci_high": 0.7}
    assert interval_metrics("m", None) == {} and interval_metrics("m", {}) == {}
    assert interval_metrics("m", {"effect": 2, "ci_low": 1}, value_key="effect") == {
        "m": 2.0, "m_ci_low": 1.0,
    }  # fmt: skip
    assert all(type(v) is float for v in interval_metrics("m", {"value": 1}).values())
