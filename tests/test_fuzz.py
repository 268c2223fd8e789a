"""Fuzzing: any input gives a valid report or an AuditError; any file gives a report or an AuditError."""

import json
import warnings

import numpy as np
import pytest
from _reliability import BASE_REPORT
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import wsca_audit as wa

_column = st.one_of(
    st.lists(st.integers(0, 3), min_size=0, max_size=45),
    st.lists(st.floats(allow_nan=True, allow_infinity=True, width=32), min_size=0, max_size=45),
    st.lists(st.sampled_from(["a", "b", "", "ü", None]), min_size=0, max_size=45),
    st.lists(
        st.one_of(st.integers(-2, 2), st.text(max_size=2), st.none()), min_size=0, max_size=45
    ),
    st.lists(st.booleans(), min_size=0, max_size=45),
)


@st.composite
def analyze_inputs(draw):
    n = draw(st.integers(0, 40))
    d = draw(st.integers(0, 5))
    elements = st.floats(-1e3, 1e3, width=32) | st.sampled_from([np.nan, np.inf, 0.0])
    if draw(st.booleans()):
        elements = st.floats(-10, 10, width=32)  # mostly well-formed
    z = np.array(draw(st.lists(st.lists(elements, min_size=d, max_size=d), min_size=n, max_size=n)),
                 dtype=np.float64).reshape(n, d)  # fmt: skip
    y = draw(st.one_of(st.none(), st.lists(st.integers(0, 2), min_size=n, max_size=n),
                       st.lists(st.integers(0, 1), min_size=0, max_size=45)))  # fmt: skip
    names = draw(
        st.lists(st.sampled_from(["site", "age", "x/../y", "", "é"]), max_size=3, unique=True)
    )
    metadata = {}
    for name in names:
        col = draw(_column)
        if draw(st.booleans()):  # mostly the right length
            col = (col * (n // max(len(col), 1) + 1))[:n] if col else [0] * n
        metadata[name] = col
    kinds = draw(st.one_of(st.none(), st.dictionaries(st.sampled_from(names or ["site"]),
                                                      st.sampled_from(["categorical", "continuous", "ordinal"]),
                                                      max_size=2)))  # fmt: skip
    k = draw(st.sampled_from([1, 2, 3]))
    wd = draw(st.sampled_from([d, max(d - 1, 0), d + 1]))
    W = draw(st.one_of(st.none(), st.just(np.ones((k, wd))), st.just(np.full((k, wd), np.nan))))
    extra = draw(st.sampled_from([{}, {"n_bins": 1}, {"C": -1.0}, {"n_folds": 3}, {"bogus": 1}]))
    return z, y, metadata, kinds, W, extra


# derandomized: CI sees the same cases on every run (11 random seeds were run while
# writing it); drop derandomize or raise max_examples to explore further
@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
@given(analyze_inputs())
def test_fuzz_analyze_returns_a_valid_report_or_an_audit_error(args):
    z, y, metadata, kinds, W, extra = args
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            res = wa.analyze(z, y, metadata, primary_weight=W, kinds=kinds,
                             n_bootstrap=3, n_permutations=3, progress=False, device="cpu", **extra)  # fmt: skip
        except wa.AuditError:
            return
    res.validate()
    back = wa.AuditResult.from_dict(json.loads(json.dumps(res.to_dict(), allow_nan=False)))
    assert back.verdicts == res.verdicts
    back.summary()
    back.to_html()


_json = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-5, 5)
    | st.floats(allow_nan=False)
    | st.text(max_size=5),
    lambda kids: (
        st.lists(kids, max_size=3) | st.dictionaries(st.text(max_size=8), kids, max_size=4)
    ),
    max_leaves=20,
)


@st.composite
def report_like(draw):
    """Reports of a real audit with random parts replaced, dropped or retyped."""
    base = BASE_REPORT.to_dict()
    for _ in range(draw(st.integers(1, 4))):
        path = draw(st.sampled_from(_PATHS))
        parent = base
        for key in path[:-1]:
            parent = parent.get(key) if isinstance(parent, dict) else None
            if parent is None:
                break
        if isinstance(parent, dict):
            if draw(st.booleans()):
                parent.pop(path[-1], None)
            else:
                parent[path[-1]] = draw(_json)
    return base


def _paths(d, prefix=()):
    for k, v in d.items():
        yield (*prefix, k)
        if isinstance(v, dict):
            yield from _paths(v, (*prefix, k))


_PATHS = list(_paths(BASE_REPORT.to_dict()))


@settings(
    max_examples=150, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True
)
@given(st.one_of(report_like(), _json))
def test_fuzz_report_reader_never_fails_with_a_foreign_error(tmp_path_factory, report):
    path = tmp_path_factory.mktemp("r") / "report.json"
    path.write_text(json.dumps(report))
    try:
        res = wa.AuditResult.load(path)
    except wa.AuditError:
        return
    res.summary()
    res.to_html()
    res.verdicts  # noqa: B018


def test_reader_errors_name_the_problem(tmp_path):
    (tmp_path / "report.json").write_bytes(b"\xff\xfe not json")
    with pytest.raises(wa.AuditError, match=r"not valid JSON|could not read"):
        wa.AuditResult.load(tmp_path)
    (tmp_path / "report.json").write_text(json.dumps({"schema_version": 2, "tasks": {}}))
    with pytest.raises(wa.AuditError, match="unsupported report schema_version 2"):
        wa.AuditResult.load(tmp_path)
    with pytest.raises(wa.AuditError, match="no report at"):
        wa.AuditResult.load(tmp_path / "nowhere")
