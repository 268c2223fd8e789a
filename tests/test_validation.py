"""validation: what users pass (numpy, torch, lists, pandas, memory maps) as arrays, with
one wording for each kind of mistake."""

import numpy as np
import pytest
import torch
from hypothesis import example, given
from hypothesis import strategies as st

import wsca_audit as wa
from wsca_audit.validation import as_array, check_consistent_length, column_or_1d


# --------------------------------------------------------------------------- as_array
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_tensors_become_float32(dtype):
    out = as_array(torch.tensor([1.5, 2.0], dtype=dtype), "x")
    assert out.dtype == np.float32 and out.tolist() == [1.5, 2.0]


def test_tensors_that_need_grad_are_detached():
    t = torch.ones(3, requires_grad=True) * 2
    out = as_array(t, "x")
    assert isinstance(out, np.ndarray) and out.tolist() == [2.0, 2.0, 2.0]


def test_integer_tensors_keep_their_dtype():
    assert as_array(torch.tensor([1, 2]), "x").dtype == np.int64


def test_a_memory_map_is_not_copied(tmp_path):
    mm = np.memmap(tmp_path / "z.f32", dtype=np.float32, mode="w+", shape=(4, 2))
    assert as_array(mm, "embeddings") is mm


def test_pandas_objects_and_lists():
    pd = pytest.importorskip("pandas")
    s = pd.Series(["a", "b"], index=[10, 20])
    assert as_array(s, "site").tolist() == ["a", "b"]  # values, not the index
    assert as_array(pd.DataFrame({"a": [1, 2]}), "x").shape == (2, 1)
    assert as_array([[1, 2], [3, 4]], "x").shape == (2, 2)


def test_what_cannot_be_an_array_is_an_audit_error_naming_it():
    with pytest.raises(wa.AuditError, match="metadata\\['site'\\] could not be read as an array"):
        as_array([[1, 2], [3]], "metadata['site']")  # ragged


# --------------------------------------------------------------------------- column_or_1d
def test_column_or_1d_flattens_columns_only_on_request():
    assert column_or_1d([[1], [2]], "targets", flatten=True).tolist() == [1, 2]
    with pytest.raises(wa.AuditError, match=r"one value per sample \(1-d\); got shape \(2, 1\)"):
        column_or_1d([[1], [2]], "targets")


def test_column_or_1d_refuses_scalars_and_matrices_with_the_callers_words():
    with pytest.raises(
        wa.AuditError, match=r"^targets must be one value per image \(1-d\); got shape \(\)$"
    ):
        column_or_1d(3, "targets", "image")
    with pytest.raises(wa.AuditError, match=r"got shape \(2, 2\)"):
        column_or_1d(np.zeros((2, 2)), "sample_ids")


def test_column_or_1d_of_a_tensor():
    assert column_or_1d(torch.arange(3), "y").tolist() == [0, 1, 2]


@given(st.lists(st.integers(), max_size=20))
@example([0, 2**63 + 1])  # numpy rounds ints past int64 to float: sample ids would collide
def test_column_or_1d_keeps_a_list_as_it_is(values):
    out = column_or_1d(values, "y")
    assert out.ndim == 1 and len(out) == len(values)
    assert out.tolist() == values or len(values) == 0


# --------------------------------------------------------------------------- lengths
def test_consistent_lengths_pass_and_none_is_skipped():
    check_consistent_length(2, "embeddings", targets=[0, 1], sample_ids=None, w=np.zeros(2))
    check_consistent_length(0, "embeddings")


def test_a_wrong_length_names_the_array_and_the_count():
    with pytest.raises(wa.AuditError, match=r"^targets has 2 values but there are 3 embeddings$"):
        check_consistent_length(3, "embeddings", targets=[0, 1])
    cols = {"metadata['site']": [1, 2, 3, 4]}
    with pytest.raises(
        wa.AuditError, match=r"^metadata\['site'\] has 4 values but the batch has 3 images$"
    ):
        check_consistent_length(3, "images", batch=True, **cols)


def test_the_first_wrong_array_is_reported():
    with pytest.raises(wa.AuditError, match=r"^a has 1 values"):
        check_consistent_length(2, "rows", a=[1], b=[1, 2, 3])


@given(st.integers(0, 30), st.integers(0, 30))
def test_lengths_agree_exactly_when_equal(n, m):
    if n == m:
        check_consistent_length(n, "rows", x=list(range(m)))
    else:
        with pytest.raises(wa.AuditError):
            check_consistent_length(n, "rows", x=list(range(m)))
