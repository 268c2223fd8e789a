"""Bad and awkward input: containers, dtypes, rare levels, imbalance, shapes, train mode, ids."""

import warnings

import numpy as np
import pandas as pd
import pytest
import torch
from _reliability import FAST, audit_with_warnings, toy_data

import wsca_audit as wa


def test_metadata_containers_and_mixed_dtypes():
    rng, _z, y, _ = toy_data()
    site = rng.integers(0, 2, len(y))
    df = pd.DataFrame({"site": site, "age": rng.normal(size=len(y))})
    a, _ = audit_with_warnings(df)
    b, _ = audit_with_warnings({"site": pd.Series(site), "age": df["age"]})
    c, _ = audit_with_warnings(
        {"site": torch.tensor(site), "age": torch.tensor(df["age"].to_numpy())}
    )
    d, _ = audit_with_warnings({"site": site.tolist(), "age": df["age"].tolist()})
    for other in (b, c, d):
        assert other.tasks["site"]["usage"] == a.tasks["site"]["usage"]
        assert other.tasks["age"]["kind"] == "continuous"
    mixed, _ = audit_with_warnings(
        {"m": [1, "x", 2.5] * 100}
    )  # one column of ints, strings and floats
    assert mixed.tasks["m"]["kind"] == "categorical" and mixed.tasks["m"]["levels"] == [
        "1",
        "2.5",
        "x",
    ]


def test_string_categories_and_rare_levels():
    rng, _z, y, _ = toy_data()
    vendor = np.array(["GE", "Siemens", "Philips"])[rng.integers(0, 3, len(y))]
    vendor[:3] = "Canon"  # a level seen only in one fold
    res, _msgs = audit_with_warnings({"vendor": vendor})
    assert res.tasks["vendor"]["levels"] == ["Canon", "GE", "Philips", "Siemens"]
    assert any("'Canon' have fewer than 5 samples" in m for m in res.warnings)


def test_extremely_imbalanced_metadata():
    _rng, z, y, W = toy_data(n=1000)
    rare = np.zeros(1000, int)
    rare[123] = 1  # 1 positive in 1,000
    res, _ = audit_with_warnings({"rare": rare}, z=z, y=y, W=W)
    assert res.tasks["rare"]["verdict"] in ("not_encoded", "inconclusive")
    assert any("fewer than 5 samples" in w for w in res.warnings)


def test_embedding_dimension_one_and_more_dimensions_than_samples():
    rng, z, _y, W = toy_data()
    one, _ = audit_with_warnings({"s": z[:, 1] > 0}, z=z[:, :1], W=W[:, :1])
    assert one["embedding_dim"] == 1
    rng = np.random.default_rng(1)
    wide = rng.normal(size=(40, 300))
    Ww = np.zeros((2, 300))
    Ww[1, 0] = 1
    res, _ = audit_with_warnings(
        {"s": wide[:, 1] > 0}, z=wide, y=(wide[:, 0] > 0).astype(int), W=Ww
    )
    assert res["n_samples"] == 40 and res["embedding_dim"] == 300


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_embeddings(dtype):
    _rng, z, _y, _W = toy_data()
    half, _ = audit_with_warnings({"s": z[:, 1] > 0}, z=torch.tensor(z, dtype=dtype))
    full, _ = audit_with_warnings({"s": z[:, 1] > 0}, z=torch.tensor(z, dtype=dtype).float())
    assert half.to_dict()["tasks"] == full.to_dict()["tasks"]


def test_model_in_train_mode_warns_and_the_report_says_so():
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Dropout(0.5), torch.nn.Linear(8, 2))
    auditor = wa.Auditor(model.train(), kinds={"s": "categorical"})
    with pytest.warns(wa.AuditWarning, match="train mode"), auditor.collect(), torch.no_grad():
        for _ in range(4):
            x = torch.randn(50, 4)
            model(x)
            auditor.record(targets=(x[:, 0] > 0).long(), metadata={"s": (x[:, 1] > 0).long()})
    res = auditor.analyze(**FAST)
    assert any("train mode" in w for w in res.warnings)


def test_duplicate_sample_ids_are_dropped_with_a_warning():
    _rng, z, y, W = toy_data()
    ids = np.r_[np.arange(290), np.arange(10)]  # the last 10 repeat the first 10
    with pytest.warns(wa.AuditWarning, match="10 duplicate sample_ids were dropped"):
        res = wa.analyze(z, y, {"s": z[:, 1] > 0}, primary_weight=W, sample_ids=ids, **FAST)
    assert res["n_samples"] == 290


def test_single_class_targets_and_identifier_like_columns_are_explained():
    _rng, z, y, _W = toy_data()
    res, _ = audit_with_warnings({"s": z[:, 1] > 0}, y=np.zeros(len(y), int))
    assert any("single class" in w for w in res.warnings)
    res, _ = audit_with_warnings({"patient": np.arange(len(y)).astype(str), "s": z[:, 1] > 0})
    assert "patient" not in res.tasks and "s" in res.tasks
    assert any("patient: 300 distinct values" in w and "task skipped" in w for w in res.warnings)


def test_an_integer_site_code_read_as_a_number_is_called_out():
    """A 30-site id column was audited as a number (usage 0.01), with no warning."""
    rng = np.random.default_rng(0)
    site = np.repeat(np.arange(30), 20)
    y = rng.integers(0, 2, 600)
    z = np.c_[y + rng.normal(size=600), (site % 2) + 0.3 * rng.normal(size=600)]
    W = np.array([[0.0, 0.0], [1.0, 0.0]])
    kw = dict(primary_weight=W, n_bootstrap=20, n_permutations=20, progress=False)
    with pytest.warns(wa.AuditWarning, match="looks like an id") as rec:
        res = wa.analyze(z, y, {"site": site, "sex": site % 2}, **kw)
    assert res.tasks["site"]["kind"] == "continuous"
    (msg,) = [str(w.message) for w in rec if "looks like an id" in str(w.message)]
    assert "30 distinct values, about 20 samples each" in msg
    assert "declare kinds={'site': 'categorical'}" in msg and "max_levels" not in msg
    # the report says what was inferred, also where it is not a warning
    assert any(w.startswith("sex: kind inferred as categorical (2 levels)") for w in res.warnings)
    # past max_levels, the advice says to raise it (the max_levels rule would skip it)
    many = np.repeat(np.arange(60), 10)
    with pytest.warns(wa.AuditWarning, match=r"max_levels=60 \(now 50\)"):
        wa.analyze(z, y, {"site": many}, **kw)
    # declared: nothing to say; a real measurement (few repeats) is not called an id
    with warnings.catch_warnings():
        warnings.simplefilter("error", wa.AuditWarning)
        warnings.filterwarnings("ignore", "n_bootstrap=20 gives rough", wa.AuditWarning)
        # (30 levels in a 2-d embedding: usage is not measurable, which is said apart)
        warnings.filterwarnings("ignore", "site: usage is not reported", wa.AuditWarning)
        declared = wa.analyze(z, y, {"site": site}, kinds={"site": "categorical"}, **kw)
        age = wa.analyze(z, y, {"age": rng.normal(50, 10, 600).round(1)}, **kw)
    assert not any("kind inferred" in w for w in declared.warnings)
    assert any("age: kind inferred as continuous" in w for w in age.warnings)
