"""Reliability: bad input, fuzzing, faults (a real MLflow server killed), determinism, security."""

import errno
import json
import re
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch.utils._python_dispatch import TorchDispatchMode

import wsca_audit as wa

ROOT = Path(__file__).parents[1]
FAST = dict(n_bootstrap=8, n_permutations=8, progress=False, device="cpu")


def _data(n=300, d=8, seed=0):
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, d))
    W = np.zeros((2, d))
    W[1, 0] = 1.0
    return rng, z, (z[:, 0] > 0).astype(int), W


def _audit(metadata, z=None, y=None, W=None, **kw):
    _rng, z0, y0, W0 = _data()
    z = z0 if z is None else z
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        res = wa.analyze(z, y0 if y is None else y, metadata, primary_weight=W0 if W is None else W,
                         **{**FAST, **kw})  # fmt: skip
    res.validate()
    return res, [str(w.message) for w in caught]


# --------------------------------------------------------------------------- bad inputs
def test_metadata_containers_and_mixed_dtypes():
    rng, _z, y, _ = _data()
    site = rng.integers(0, 2, len(y))
    df = pd.DataFrame({"site": site, "age": rng.normal(size=len(y))})
    a, _ = _audit(df)
    b, _ = _audit({"site": pd.Series(site), "age": df["age"]})
    c, _ = _audit({"site": torch.tensor(site), "age": torch.tensor(df["age"].to_numpy())})
    d, _ = _audit({"site": site.tolist(), "age": df["age"].tolist()})
    for other in (b, c, d):
        assert other.tasks["site"]["usage"] == a.tasks["site"]["usage"]
        assert other.tasks["age"]["kind"] == "continuous"
    mixed, _ = _audit({"m": [1, "x", 2.5] * 100})  # one column of ints, strings and floats
    assert mixed.tasks["m"]["kind"] == "categorical" and mixed.tasks["m"]["levels"] == [
        "1",
        "2.5",
        "x",
    ]


def test_string_categories_and_rare_levels():
    rng, _z, y, _ = _data()
    vendor = np.array(["GE", "Siemens", "Philips"])[rng.integers(0, 3, len(y))]
    vendor[:3] = "Canon"  # a level seen only in one fold
    res, _msgs = _audit({"vendor": vendor})
    assert res.tasks["vendor"]["levels"] == ["Canon", "GE", "Philips", "Siemens"]
    assert any("'Canon' have fewer than 5 samples" in m for m in res.warnings)


def test_extremely_imbalanced_metadata():
    _rng, z, y, W = _data(n=1000)
    rare = np.zeros(1000, int)
    rare[123] = 1  # 1 positive in 1,000
    res, _ = _audit({"rare": rare}, z=z, y=y, W=W)
    assert res.tasks["rare"]["verdict"] in ("not_encoded", "inconclusive")
    assert any("fewer than 5 samples" in w for w in res.warnings)


def test_embedding_dimension_one_and_more_dimensions_than_samples():
    rng, z, _y, W = _data()
    one, _ = _audit({"s": z[:, 1] > 0}, z=z[:, :1], W=W[:, :1])
    assert one["embedding_dim"] == 1
    rng = np.random.default_rng(1)
    wide = rng.normal(size=(40, 300))
    Ww = np.zeros((2, 300))
    Ww[1, 0] = 1
    res, _ = _audit({"s": wide[:, 1] > 0}, z=wide, y=(wide[:, 0] > 0).astype(int), W=Ww)
    assert res["n_samples"] == 40 and res["embedding_dim"] == 300


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_embeddings(dtype):
    _rng, z, _y, _W = _data()
    half, _ = _audit({"s": z[:, 1] > 0}, z=torch.tensor(z, dtype=dtype))
    full, _ = _audit({"s": z[:, 1] > 0}, z=torch.tensor(z, dtype=dtype).float())
    assert half.to_dict()["tasks"] == full.to_dict()["tasks"]


def test_model_in_train_mode_warns_and_the_report_says_so():
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Dropout(0.5), torch.nn.Linear(8, 2))
    auditor = wa.Auditor(model.train(), metadata={"s": "categorical"})
    with pytest.warns(wa.AuditWarning, match="train mode"), auditor.collect(), torch.no_grad():
        for _ in range(4):
            x = torch.randn(50, 4)
            model(x)
            auditor.record(targets=(x[:, 0] > 0).long(), metadata={"s": (x[:, 1] > 0).long()})
    res = auditor.analyze(**FAST)
    assert any("train mode" in w for w in res.warnings)


def test_duplicate_sample_ids_are_dropped_with_a_warning():
    _rng, z, y, W = _data()
    ids = np.r_[np.arange(290), np.arange(10)]  # the last 10 repeat the first 10
    with pytest.warns(wa.AuditWarning, match="10 duplicate sample_ids were dropped"):
        res = wa.analyze(z, y, {"s": z[:, 1] > 0}, primary_weight=W, sample_ids=ids, **FAST)
    assert res["n_samples"] == 290


def test_single_class_targets_and_identifier_like_columns_are_explained():
    _rng, z, y, _W = _data()
    res, _ = _audit({"s": z[:, 1] > 0}, y=np.zeros(len(y), int))
    assert any("single class" in w for w in res.warnings)
    res, _ = _audit({"patient": np.arange(len(y)).astype(str), "s": z[:, 1] > 0})
    assert "patient" not in res.tasks and "s" in res.tasks
    assert any("patient: 300 distinct values" in w and "task skipped" in w for w in res.warnings)


# --------------------------------------------------------------------------- fuzzing
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
    base = _BASE_REPORT.to_dict()
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


_BASE_REPORT, _ = _audit({"site": np.random.default_rng(0).integers(0, 2, 300)})
_PATHS = list(_paths(_BASE_REPORT.to_dict()))


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


# --------------------------------------------------------------------------- faults
def test_read_only_and_full_output_directories_give_clear_errors(monkeypatch, tmp_path):
    res = _BASE_REPORT
    # /proc is read-only even for root (CI runs as root, so chmod would not stop it)
    with pytest.raises(wa.AuditError, match="could not write the report to /proc/wsca"):
        res.save("/proc/wsca")
    with pytest.raises(wa.AuditError, match="could not write the model card"):
        wa.write_model_card(res, "/proc/wsca/MODEL_CARD.md")

    def full(self, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Path, "write_text", full)
    with pytest.raises(wa.AuditError, match="No space left on device"):
        res.save(tmp_path / "out")


@pytest.mark.slow
def test_mlflow_server_killed_mid_logging_then_wsca_audit_log_uploads(tmp_path, monkeypatch):
    from conftest import MlflowServer
    from mlflow.tracking import MlflowClient

    server = MlflowServer(tmp_path).start()
    client = MlflowClient(server.uri)
    run_id = client.create_run(client.create_experiment("faults")).info.run_id
    real_log_artifacts = MlflowClient.log_artifacts

    def die_first(self, *args, **kwargs):  # the server dies after the metrics went in
        server.kill()
        return real_log_artifacts(self, *args, **kwargs)

    monkeypatch.setattr(MlflowClient, "log_artifacts", die_first)
    pending = tmp_path / "pending"
    with pytest.warns(wa.AuditWarning, match="could not log to MLflow"):
        assert (
            wa.log_to_mlflow(_BASE_REPORT, run_id, tracking_uri=server.uri, fallback_dir=pending)
            is None
        )
    monkeypatch.undo()
    (saved,) = list(pending.iterdir())
    assert wa.AuditResult.load(saved).verdicts == _BASE_REPORT.verdicts  # nothing lost
    target = json.loads((saved / "mlflow-target.json").read_text())
    assert target["run_id"] == run_id

    cli = Path(sys.executable).with_name("wsca-audit")
    down = subprocess.run(
        [str(cli), "log", str(saved)], capture_output=True, text=True, timeout=300
    )
    assert down.returncode != 0 and "MLflow" in down.stderr  # still down: a clear failure

    restarted = MlflowServer(tmp_path, port=server.port).start()  # same store, same port
    try:
        up = subprocess.run(
            [str(cli), "log", str(saved)], capture_output=True, text=True, timeout=300
        )
        assert up.returncode == 0, up.stderr
        run = MlflowClient(restarted.uri).get_run(run_id)
        assert run.data.tags["wsca.verdict.site"] == _BASE_REPORT.verdicts["site"]
        arts = {a.path for a in MlflowClient(restarted.uri).list_artifacts(run_id, "wsca")}
        assert "wsca/report.json" in arts
    finally:
        restarted.kill()


# --------------------------------------------------------------------------- determinism
def test_same_seed_gives_an_identical_report_on_cpu():
    rng, z, y, W = _data()
    meta = {"site": rng.integers(0, 3, len(y)), "age": rng.normal(size=len(y))}
    a = wa.analyze(z, y, meta, primary_weight=W, seed=7, **{**FAST, "n_bootstrap": 30}).to_dict()
    b = wa.analyze(z, y, meta, primary_weight=W, seed=7, **{**FAST, "n_bootstrap": 30}).to_dict()
    c = wa.analyze(z, y, meta, primary_weight=W, seed=8, **{**FAST, "n_bootstrap": 30}).to_dict()
    for r in (a, b, c):
        r["settings"].pop("runtime_s")
    assert a == b
    assert a["tasks"]["site"]["usage"]["ci_low"] != c["tasks"]["site"]["usage"]["ci_low"]


def _numbers(x, path=""):
    if isinstance(x, dict):
        for k, v in x.items():
            yield from _numbers(v, f"{path}/{k}")
    elif isinstance(x, list):
        for i, v in enumerate(x):
            yield from _numbers(v, f"{path}[{i}]")
    elif isinstance(x, (int, float)) and not isinstance(x, bool):
        yield path, float(x)


def test_summation_order_moves_the_report_only_within_the_documented_tolerance():
    # What a GPU changes is the order of every sum (kernels, atomics). Permuting the
    # embedding's columns does the same on the CPU and leaves the maths unchanged; the
    # report must move by less than the tolerance in docs/troubleshooting.md.
    rng, z, y, W = _data(n=600, d=24)
    z = z + 0.8 * y[:, None] * rng.normal(size=24)
    meta = {"site": rng.integers(0, 3, len(y)), "scanner": (z[:, 1] > 0).astype(int),
            "age": z[:, 2] + rng.normal(size=len(y))}  # fmt: skip
    cols = rng.permutation(24)
    kw = dict(primary_weight=W, seed=3, **{**FAST, "n_bootstrap": 40, "n_permutations": 40})
    a = wa.analyze(z, y, meta, **kw).to_dict()
    b = wa.analyze(z[:, cols], y, meta, **{**kw, "primary_weight": W[:, cols]}).to_dict()
    na, nb = dict(_numbers(a)), dict(_numbers(b))
    assert na.keys() == nb.keys()
    diffs = {k: abs(na[k] - nb[k]) for k in na if "runtime" not in k}
    worst = max((v, k) for k, v in diffs.items() if "p_value" not in k)
    assert worst[0] <= 1e-5, worst
    # p-values count null refits at or above the observed value: one refit may cross
    step = 1 / (kw["n_permutations"] + 1)
    assert max(v for k, v in diffs.items() if "p_value" in k) <= 2 * step + 1e-9
    assert {k: t["verdict"] for k, t in a["tasks"].items()} == {
        k: t["verdict"] for k, t in b["tasks"].items()
    }


class _CudaNondeterministicOps(TorchDispatchMode):
    """Records the aten ops that PyTorch runs nondeterministically on CUDA (atomics)
    or refuses under ``torch.use_deterministic_algorithms(True)``."""

    ATOMIC = frozenset({"index_add", "index_add_", "scatter_add", "scatter_add_",
                        "scatter_reduce", "scatter_reduce_", "put", "put_", "histc",
                        "nll_loss_forward", "nll_loss2d_forward", "median", "nanmedian"})  # fmt: skip
    FLOAT_SCAN = frozenset({"cumsum", "cumsum_", "cumprod", "cumprod_"})

    def __init__(self):
        super().__init__()
        self.seen = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = func.overloadpacket.__name__
        first = args[0] if args else None
        floating = isinstance(first, torch.Tensor) and first.is_floating_point()
        weighted = (len(args) > 1 and args[1] is not None) or kwargs.get("weights") is not None
        if (name in self.ATOMIC or (name in self.FLOAT_SCAN and floating)
                or (name == "bincount" and weighted)):  # fmt: skip
            self.seen.add(name)
        return func(*args, **kwargs)


def test_the_audit_runs_no_op_that_is_nondeterministic_on_cuda(monkeypatch):
    # The CPU cannot show CUDA's atomics, but it can show which ops the audit calls:
    # none may be one that PyTorch lists as nondeterministic on CUDA, so that a CUDA
    # audit repeats itself and runs under torch.use_deterministic_algorithms(True).
    # Prefix sums take their off-CPU branch here, as they would on CUDA.
    import wsca_audit.metrics as metrics

    prefix_sum = metrics.prefix_sum
    monkeypatch.setattr(metrics, "prefix_sum", lambda x, *_: prefix_sum(x, method="matmul"))
    rng, z, y, W = _data(n=300, d=12)
    meta = {"site": rng.integers(0, 3, len(y)), "scanner": rng.integers(0, 2, len(y)),
            "age": rng.normal(size=len(y))}  # fmt: skip
    W = np.vstack([W, rng.normal(size=(1, 12))])  # a 3-class head: softmax paths too
    labels = rng.integers(0, 3, len(y))
    with _CudaNondeterministicOps() as mode:
        wa.analyze(z, labels, meta, primary_weight=W, **FAST)
        wa.analyze(z, y, meta, primary_weight=W[:2], **FAST)
        images = torch.rand(40, 1, 6, 6)
        roi = torch.zeros(40, 6, 6, dtype=torch.bool)
        roi[:, 1:4, 1:4] = True
        model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(36, 2)).eval()
        wa.roi_masking(model, images, roi, np.arange(40) % 2, fill="blur", n_bootstrap=20,
                       progress=False)  # fmt: skip
    assert mode.seen == set()
    with _CudaNondeterministicOps() as mode:  # the detector itself sees such an op
        torch.zeros(3).index_add_(0, torch.tensor([0, 0]), torch.ones(2))
    assert mode.seen == {"index_add_"}


# --------------------------------------------------------------------------- security
def test_no_code_execution_on_read_and_no_unsafe_deserialisation():
    sources = list((ROOT / "wsca_audit").rglob("*.py")) + list(
        (ROOT / "integrations").rglob("*.py")
    )
    offenders = []
    for p in sources:
        text = p.read_text()
        for pattern in (r"pickle\.loads?\(", r"(?<![.\w])eval\(", r"(?<![.\w])exec\(",
                        r"yaml\.load\(", r"allow_pickle=True"):  # fmt: skip
            offenders += [f"{p.name}: {m.group(0)}" for m in re.finditer(pattern, text)]
        # every checkpoint read is weights-only (torch.load calls fit on one line here)
        offenders += [
            f"{p.name}: {line.strip()}"
            for line in text.splitlines()
            if "torch.load(" in line and "weights_only=True" not in line
        ]
    assert offenders == []


def test_names_from_metadata_cannot_escape_the_output_folder(tmp_path, shortcut_model):
    from wsca_audit.shortcut import add_artefact

    model, split = shortcut_model(0.5)
    x = torch.as_tensor(split.clean_x[:40])
    effect = wa.intervention_effect(model, x, lambda t, v: add_artefact(t, torch.full((len(t),), v)),
                                    variable="../../../escape", n_bootstrap=10, progress=False)  # fmt: skip
    res = wa.AuditResult(_BASE_REPORT.to_dict()).add_evidence(effect)
    out = res.save(tmp_path / "report")
    written = [p.resolve() for p in tmp_path.rglob("*") if p.is_file()]
    assert all(str(p).startswith(str(out.resolve())) for p in written)
    assert any("escape" in p.name or "escape" in p.parent.name for p in written)


def test_regression_foreign_thresholds_do_not_break_the_figure():
    """Found by the reader fuzz test: settings.thresholds of another type crashed figure()."""
    rep = _BASE_REPORT.to_dict()
    rep["settings"]["thresholds"] = None
    with pytest.raises(wa.AuditError, match="settings/thresholds"):
        wa.AuditResult.from_dict(rep)
    wa.AuditResult.from_dict(rep, validate=False).to_html()  # unvalidated: still renders
    rep["settings"]["thresholds"] = {"usage": {"x": 1}, "auc": []}
    wa.AuditResult.from_dict(rep, validate=False).to_html()


def test_regression_zero_feature_embeddings_are_an_audit_error():
    """Found by the analyze fuzz test: (N, 0) embeddings produced an invalid report."""
    with pytest.raises(wa.AuditError, match="no features"):
        wa.analyze(np.zeros((10, 0)), None, {}, primary_weight=np.zeros((1, 0)), **FAST)
