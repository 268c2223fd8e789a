"""Every head kind (issue 25): the task is named, inferred and said, or refused with the
fix; regression and multi-label heads are audited with the target held fixed, and a
variable that only follows the target (or another label) is never called used."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from sklearn.metrics import mean_absolute_error, r2_score, roc_auc_score

import wsca_audit as wa
from wsca_audit.head_kinds import encode_targets, resolve_task, type_of_targets
from wsca_audit.tracking import mlflow_payload

FAST = {"n_bootstrap": 60, "n_permutations": 60, "progress": False}


# --------------------------------------------------------------------------- naming
@pytest.mark.parametrize(
    ("targets", "n_out", "task"),
    [
        ([0, 1, 1, 0], 1, "binary"),
        ([0, 1, 1, 0], 2, "binary"),
        ([0, 2, 1, 4], 5, "multiclass"),
        ([51.5, 62.0, 48.25, 70.0], 1, "regression"),
        (list(range(20, 80)), 1, "regression"),  # ages in whole years
        (np.array([[1, 1, 0, 0], [0, 0, 0, 1], [0, 0, 0, 0]]), 4, "multilabel"),
    ],
)
def test_task_is_inferred_and_said(targets, n_out, task):
    got, note = resolve_task(None, targets, n_out)
    assert got == task
    assert f"task inferred as {task!r}" in note and "task=" in note
    assert resolve_task(task, targets, n_out) == (task, None)  # given: nothing to say


@pytest.mark.parametrize(
    ("targets", "n_out", "task", "says"),
    [
        (np.linspace(20, 80, 30), 3, None, "a regression head has one output"),
        ([0, 1, 7], 3, None, "class index(es) [7]"),
        (np.eye(4, dtype=int), 3, None, "4 columns but the head has 3 outputs"),
        ([0.5, 1.5, 2.5], 3, "multiclass", "task='regression'"),
        ([0, 1, 2, 1], 1, None, "task='regression'"),  # a few whole numbers: both readings
        (np.eye(3, dtype=int), 3, "binary", "task='multilabel'"),
        ([0, 1, 1], 3, "regression", "needs a head of one output"),
        ([0, 1, 1], 2, "ordinal", "not one of"),
        (np.full((3, 2), 0.5), 2, None, "multi-output regression is not audited"),
        (np.eye(3, dtype=int), 3, None, "one-hot rows"),  # softmax or sigmoids? say which
        ([0.1, 0.9, 0.9, 0.1], 1, None, "smoothed class labels"),
    ],
)
def test_what_does_not_fit_is_refused_with_the_fix(targets, n_out, task, says):
    with pytest.raises(wa.AuditError, match=None) as err:
        encode_targets(np.asarray(targets), n_out, task=task)
    assert says in str(err.value)


def test_type_of_targets_uses_scikit_learns_words():
    assert type_of_targets([1.0, 0.0]) == "binary"
    assert type_of_targets(np.array([[0, 1], [1, 1]])) == "multilabel-indicator"
    assert type_of_targets([np.nan, 1.0]) == "unknown"
    assert type_of_targets([["a"], ["b"]]) == "labels"


def test_regression_strata_are_fine_bins_of_the_target():
    y = np.random.default_rng(0).uniform(20, 80, 800)
    enc = encode_targets(y, 1)
    counts = np.bincount(enc.strata)
    assert enc.task == "regression" and len(counts) == 20 and counts.min() >= 39
    # each bin is a narrow range of the target: a 20th of it
    widths = [np.ptp(y[enc.strata == b]) for b in range(20)]
    assert max(widths) < 0.1 * np.ptp(y)


# --------------------------------------------------------------------------- regression
def _brain_age(seed: int, reads_site: float, n: int = 800, d: int = 16):
    """Embeddings of a 'brain age' model: z0 tracks age, z1 the site, z2 a site that
    follows age only (older patients go to one hospital). The head predicts
    ``50 + 10 z0 + reads_site * z1``: it adds ``reads_site`` years at site 1."""
    rng = np.random.default_rng(seed)
    age = rng.uniform(20, 80, n)
    site = rng.integers(0, 2, n)
    hospital = (rng.uniform(size=n) < 1 / (1 + np.exp(-(age - 50) / 5))).astype(int)
    z = rng.normal(size=(n, d))
    z[:, 0] = (age - 50) / 10 + rng.normal(0, 0.3, n)
    z[:, 1] = site + rng.normal(0, 0.3, n)
    z[:, 2] = hospital + rng.normal(0, 0.3, n)
    W = np.zeros((1, d))
    W[0, 0], W[0, 1] = 10.0, reads_site
    meta = {"site": site, "hospital": hospital}
    return z, age, meta, W


@pytest.fixture(scope="module")
def regression_audits():
    out = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for years in (0.0, 2.5):
            z, age, meta, W = _brain_age(0, years)
            res = wa.analyze(
                z, age, meta, primary_weight=W, primary_bias=[50.0], target_unit="years", **FAST
            )
            out[years] = (res, z, age, W)
    return out


def test_a_regression_head_that_adds_years_at_one_site_is_called_used(regression_audits):
    res, *_ = regression_audits[2.5]
    t = res.tasks["site"]
    assert t["verdict"] == "uses"
    eff = t["effect"]
    assert eff["unit"] == "residual_sd"
    tu = eff["target_units"]
    assert tu["unit"] == "years" and tu["ci_low"] <= 2.5 <= tu["ci_high"]
    assert "years with the target held fixed" in t["reason"]


def test_a_site_that_only_follows_age_is_not_called_used(regression_audits):
    # The head never reads the hospital. Its effect on this draw of the data is -0.21 sd
    # (0.0 +- 0.12 over data seeds 1-5), near the 0.25 margin: the resamples decide
    # between "encoded, not used" and "cannot tell" (both seen over audit seeds 0-3), never
    # "uses".
    for years in (0.0, 2.5):
        res, *_ = regression_audits[years]
        t = res.tasks["hospital"]
        assert t["verdict"] in ("encoded_not_used", "inconclusive"), t
        assert t["encoding"]["ci_low"] > 0.9 and t["usage"]["ci_high"] < 0.3
    res, *_ = regression_audits[0.0]
    assert res.tasks["site"]["verdict"] == "encoded_not_used"


def test_regression_report_names_the_task_and_its_metrics(regression_audits):
    res, z, age, W = regression_audits[2.5]
    d = res.to_dict()
    assert d["primary"]["task"] == "regression" and d["primary"]["n_classes"] is None
    assert any("task inferred as 'regression'" in w for w in d["warnings"])
    assert any("20 quantile bins of the target" in w for w in d["warnings"])
    pred = 50.0 + z @ W[0]
    assert d["primary"]["metric"]["name"] == "r2"
    assert d["primary"]["metric"]["value"] == pytest.approx(r2_score(age, pred), abs=1e-4)
    mae = d["primary"]["metrics"]["mae"]
    assert mae["value"] == pytest.approx(mean_absolute_error(age, pred), rel=1e-4)
    assert mae["ci_low"] < mae["value"] < mae["ci_high"]
    worst = d["performance"]["worst_group"]  # the largest error: the site the head shifts
    assert worst["metric"] == "mae" and (worst["variable"], worst["level"]) == ("site", "1")
    assert worst["value"] > worst["best"]["value"]
    wa.validate_report(d)


def test_mitigate_refuses_a_regression_head_naming_what_it_supports():
    z, age, meta, W = _brain_age(1, 2.5, n=200)
    es = wa.EmbeddingSet(z, age, meta, primary=wa.PrimaryHead.from_arrays(W, [50.0]))
    with pytest.raises(wa.AuditError, match="single-label classifier heads"):
        wa.mitigate(None, es, "site", progress=False)


# --------------------------------------------------------------------------- multi-label
def _findings(seed: int, reads_marker: float, n: int = 1200, d: int = 16):
    """Three findings (edema, mass, nodule); ``hospital`` follows the mass finding only
    (85% agreement); ``marker`` is an artefact at random. Each logit reads its finding's
    feature; edema's logit also reads the marker's by ``reads_marker``."""
    rng = np.random.default_rng(seed)
    Y = (rng.uniform(size=(n, 3)) < [0.3, 0.4, 0.5]).astype(int)
    hospital = np.where(rng.uniform(size=n) < 0.85, Y[:, 1], 1 - Y[:, 1])
    marker = rng.integers(0, 2, n)
    z = rng.normal(size=(n, d))
    z[:, :3] += 2.0 * Y
    z[:, 3] += 1.5 * hospital
    z[:, 4] += 1.5 * marker
    W = np.zeros((3, d))
    W[0, 0] = W[1, 1] = W[2, 2] = 2.0
    W[0, 4] = reads_marker
    return z, Y, {"hospital": hospital, "marker": marker}, W


@pytest.fixture(scope="module")
def multilabel_audits():
    out = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for reads in (0.0, 1.5):
            z, Y, meta, W = _findings(1, reads)
            res = wa.analyze(
                z, Y, meta, primary_weight=W, primary_bias=[-2.0] * 3,
                output_names=["edema", "mass", "nodule"], **FAST,
            )  # fmt: skip
            out[reads] = (res, z, Y, W)
    return out


def test_a_multilabel_head_that_reads_a_marker_is_called_used(multilabel_audits):
    res, *_ = multilabel_audits[1.5]
    t = res.tasks["marker"]
    assert t["verdict"] == "uses"
    assert t["effect"]["contrast"] == "edema"  # the finding whose logit moves
    assert res.tasks["hospital"]["verdict"] != "uses"


def test_a_variable_that_follows_another_label_is_not_called_used(multilabel_audits):
    res, *_ = multilabel_audits[0.0]
    for name in ("hospital", "marker"):
        assert res.tasks[name]["verdict"] == "encoded_not_used", res.tasks[name]


def test_holding_one_label_fixed_is_not_enough(multilabel_audits):
    """Why the label vector is the stratum: the mass logit audited with only the edema
    label held fixed reads the hospital (through the mass finding it follows); with every
    label held fixed it does not."""
    res, z, Y, W = multilabel_audits[0.0]
    hospital = _findings(1, 0.0)[2]["hospital"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        naive = wa.analyze(
            z, Y[:, 0], {"hospital": hospital}, primary_weight=W[1:2], primary_bias=[-2.0],
            **FAST,
        )  # fmt: skip
    assert naive.tasks["hospital"]["verdict"] == "uses"  # the confounded reading
    assert res.tasks["hospital"]["verdict"] == "encoded_not_used"


def test_multilabel_report_gives_each_labels_auc(multilabel_audits):
    res, z, Y, W = multilabel_audits[1.5]
    d = res.to_dict()
    assert d["primary"]["task"] == "multilabel"
    logits = z @ W.T - 2.0
    for j, name in enumerate(["edema", "mass", "nodule"]):
        got = d["primary"]["by_output"][name]["auc"]["value"]
        assert got == pytest.approx(roc_auc_score(Y[:, j], logits[:, j]), abs=1e-5)
    macro = np.mean([roc_auc_score(Y[:, j], logits[:, j]) for j in range(3)])
    assert d["primary"]["metric"] == pytest.approx(
        {**d["primary"]["metric"], "name": "macro_auc", "value": macro}, abs=1e-5
    )
    assert "the label vectors (8 distinct)" in " ".join(d["warnings"])
    assert d["performance"]["metric"] == "macro_auc"
    wa.validate_report(d)


def test_an_auditor_records_multi_hot_targets_batch_by_batch():
    z, Y, meta, W = _findings(2, 1.5, n=600)
    model = torch.nn.Sequential(torch.nn.Identity(), torch.nn.Linear(16, 3))
    with torch.no_grad():
        model[1].weight.copy_(torch.as_tensor(W, dtype=torch.float32))
        model[1].bias.fill_(-2.0)
    auditor = wa.Auditor(model, task="multilabel", output_names=["edema", "mass", "nodule"])
    with auditor.collect(), torch.no_grad():
        for sl in np.array_split(np.arange(600), 6):
            model(torch.as_tensor(z[sl], dtype=torch.float32))
            auditor.record(targets=Y[sl], metadata={k: v[sl] for k, v in meta.items()})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = auditor.analyze(**FAST)
    d = res.to_dict()
    assert d["primary"]["task"] == "multilabel"
    assert not any("task inferred" in w for w in d["warnings"])  # it was given
    assert res.tasks["marker"]["verdict"] == "uses"


def test_a_multilabel_auditor_refuses_targets_of_the_wrong_width():
    model = torch.nn.Linear(4, 3)
    auditor = wa.Auditor(model)
    with auditor.collect(), torch.no_grad():
        model(torch.randn(20, 4))
        auditor.record(targets=np.ones((20, 2), int), metadata={"s": np.arange(20) % 2})
    with pytest.raises(wa.AuditError, match="2 columns but the head has 3 outputs"):
        auditor.analyze(**FAST)


# --------------------------------------------------------------------------- the head found
class _Cosine(torch.nn.Module):
    """A cosine classifier: normalised prototypes, no nn.Linear in the head."""

    def __init__(self) -> None:
        super().__init__()
        self.features = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU())
        self.prototypes = torch.nn.Parameter(torch.randn(10, 16))

    def forward(self, x):
        z = torch.nn.functional.normalize(self.features(x), dim=1)
        return 10 * z @ torch.nn.functional.normalize(self.prototypes, dim=1).T


class _MultiTask(torch.nn.Module):
    """A class head and an age head on one embedding; the age head runs last."""

    def __init__(self) -> None:
        super().__init__()
        self.features = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU())
        self.cls = torch.nn.Linear(16, 3)
        self.age = torch.nn.Linear(16, 1)

    def forward(self, x):
        z = self.features(x)
        return {"logits": self.cls(z), "age": self.age(z)}


class _TTA(torch.nn.Module):
    """Test-time augmentation: the head runs on the input and on its flip."""

    def __init__(self) -> None:
        super().__init__()
        self.features = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU())
        self.head = torch.nn.Linear(16, 2)

    def forward(self, x):
        return (self.head(self.features(x)) + self.head(self.features(x.flip(1)))) / 2


def _collect(model, n_out, **kwargs):
    torch.manual_seed(0)
    auditor = wa.Auditor(model.eval(), **kwargs)
    with auditor.collect(), torch.no_grad():
        for _ in range(2):
            model(torch.randn(40, 8))
            auditor.record(targets=np.arange(40) % n_out, metadata={"s": np.arange(40) % 2})
    return auditor


def test_a_cosine_classifier_is_refused_naming_layer_and_primary_weight():
    with pytest.raises(wa.AuditError) as err:
        _collect(_Cosine(), 10)
    msg = str(err.value)
    assert "'features.0'" in msg and "cosine or prototype" in msg
    assert "layer=" in msg and "primary_weight=" in msg


def test_a_multi_task_model_audits_the_head_of_its_primary_output_and_says_so():
    with pytest.warns(wa.AuditWarning, match="takes 'cls': its output is the model's primary"):
        auditor = _collect(_MultiTask(), 3)
    assert auditor.layer_name == "cls" and auditor.embeddings().primary.n_outputs == 3
    auditor = _collect(_MultiTask(), 2, output_key="age")  # the user names the output
    assert auditor.layer_name == "age"


def test_a_head_called_twice_per_forward_is_named():
    with pytest.raises(wa.AuditError, match="'head' was called 2 times in one forward pass"):
        _collect(_TTA(), 2)


@pytest.mark.parametrize(
    "last", [torch.nn.Softmax(1), torch.nn.Sigmoid(), torch.nn.Identity()], ids=str
)
def test_probabilities_and_logits_are_the_heads_own_output(last):
    model = torch.nn.Sequential(
        torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 4), last
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error", wa.AuditWarning)
        auditor = _collect(model, 4)
    assert auditor.layer_name == "2"


# --------------------------------------------------------------------------- per output
def _six_classes(reads: float, seed: int = 3, n: int = 1500, d: int = 12):
    """Six classes, each with its own feature; a marker at random, encoded in feature 7;
    class 3's logit reads the marker's feature by ``reads``."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 6, n)
    marker = rng.integers(0, 2, n)
    z = rng.normal(size=(n, d))
    z[np.arange(n), y] += 2.5
    z[:, 7] += 2.0 * marker
    W = np.zeros((6, d))
    W[np.arange(6), np.arange(6)] = 2.0
    W[3, 7] = reads
    return z, y, {"marker": marker}, W


@pytest.mark.parametrize("reads", [0.0, 1.5])
def test_each_output_of_a_many_class_head_gets_its_verdict(reads, tmp_path):
    z, y, meta, W = _six_classes(reads)
    names = ["a", "b", "c", "d", "e", "f"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = wa.analyze(z, y, meta, primary_weight=W, output_names=names, **FAST)
    t = res.tasks["marker"]
    outputs = t["by_output"]
    assert list(outputs) == names
    band = t["effect"]["by_output"]  # one 95% band over the six outputs
    assert band["level"] == 0.95 and band["method"] == "bootstrap max-t band"
    if reads:
        assert outputs["d"]["verdict"] == "uses"
        assert {o for o, b in outputs.items() if b["verdict"] == "uses"} == {"d"}
        assert t["verdict"] == "uses" and "d" in t["reason"]
    else:
        assert all(b["verdict"] == "encoded_not_used" for b in outputs.values()), outputs
        assert t["verdict"] == "encoded_not_used"
    wa.validate_report(res.to_dict())
    text = res.summary()  # the summary (and the HTML report and the card) list the outputs
    assert "by output" in text.lower() and "simultaneous over the outputs" in text
    assert sum(line.strip().startswith("marker") for line in text.splitlines()) >= 6
    card = wa.write_model_card(res, tmp_path / "MODEL_CARD.md").read_text()
    assert "Quantitative analyses by output" in card
    metrics, _, tags = mlflow_payload(res)
    assert metrics["wsca.marker.d.effect"] == outputs["d"]["effect"]["value"]
    assert "wsca.marker.d.effect_ci_low" in metrics and tags["wsca.primary.task"] == "multiclass"


# --------------------------------------------------------------------------- evidence
def test_roi_masking_scores_a_finding_by_its_own_logit_and_refuses_regression():
    """A multi-label head's finding k is scored by logit k (not by softmax log-odds
    against the other findings); a regression head is refused with what to use."""
    torch.manual_seed(0)
    x = torch.zeros(80, 1, 4, 4)
    Y = np.stack([np.arange(80) % 2, (np.arange(80) // 2) % 2], 1)
    x[Y[:, 0] == 1, :, 1:3, 1:3] = 1.0  # finding 0 sits in the ROI
    x[Y[:, 1] == 1, :, 0, 0] = 1.0  # finding 1 outside it
    roi = torch.zeros(4, 4, dtype=torch.bool)
    roi[1:3, 1:3] = True
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 2)).eval()
    with torch.no_grad():
        model[1].weight.zero_()
        model[1].weight[0, [5, 6, 9, 10]] = 1.0
        model[1].weight[1, 0] = 1.0
        model[1].bias.zero_()
    kw = {"n_bootstrap": 30, "progress": False}
    with pytest.raises(wa.AuditError, match="pass target=<finding index>"):
        wa.roi_masking(model, x, roi, Y, **kw)
    inside = wa.roi_masking(model, x, roi, Y, target=0, **kw)
    outside = wa.roi_masking(model, x, roi, Y[:, 1], target=1, task="multilabel", **kw)
    assert inside["score"].startswith("logit 0") and outside["score"].startswith("logit 1")
    assert inside["full"]["value"] == 1.0 and inside["roi_removed"]["value"] == 0.5
    assert outside["roi_removed"]["value"] == 1.0  # its signal is outside the ROI
    reg = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 1)).eval()
    with pytest.raises(wa.AuditError, match="regression head is not supported"):
        wa.roi_masking(reg, x, roi, np.linspace(20, 80, 80), **kw)


def test_integrations_pass_the_task_through():
    """The integrations only use the public API: task= reaches analyze() with the other
    settings (audit_loop here; Lightning, HF and ignite take the same analyze kwargs)."""
    from wsca_audit.integrations.plain import audit_loop

    z, age, meta, W = _brain_age(2, 2.5, n=400)
    model = torch.nn.Sequential(torch.nn.Identity(), torch.nn.Linear(16, 1)).eval()
    with torch.no_grad():
        model[1].weight.copy_(torch.as_tensor(W, dtype=torch.float32))
        model[1].bias.fill_(50.0)
    batches = [
        (torch.as_tensor(z[sl], dtype=torch.float32), age[sl], {"site": meta["site"][sl]})
        for sl in np.array_split(np.arange(400), 4)
    ]

    def evaluate(model, loader):
        with torch.no_grad():
            return [model(x) for x, _, _ in loader]

    settings = {"task": "regression", "target_unit": "years", **FAST}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _, res = audit_loop(evaluate, model, batches, analyze_kwargs=settings)
    d = res.to_dict()
    assert d["primary"]["task"] == "regression" and d["primary"]["target_unit"] == "years"
    assert d["tasks"]["site"]["effect"]["target_units"]["unit"] == "years"


# --------------------------------------------------------------------------- review findings
@pytest.mark.parametrize("seed", [1, 4])
def test_a_small_audit_of_a_site_that_follows_age_is_never_called_used(seed):
    """At 200 samples the target bins are wide: a hospital that takes older patients
    differs in age inside a bin, which the within-bin target covariate removes (without
    it these two seeds were called `uses` at 0.8 residual sd)."""
    z, age, meta, W = _brain_age(seed, 0.0, n=200)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = wa.analyze(z, age, meta, primary_weight=W, primary_bias=[50.0], **FAST)
    eff = res.tasks["hospital"]["effect"]
    assert res.tasks["hospital"]["verdict"] != "uses", res.tasks["hospital"]["reason"]
    assert eff["ci_low"] < 0.25  # the interval does not exclude "not used"


def test_a_features_and_logits_tuple_audits_the_head_not_a_hidden_layer():
    """(features, logits) with ReLU features: the features are a monotone view of the
    hidden Linear, but the output is not named, so the head stays the last Linear."""

    class Pair(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.f = torch.nn.Linear(8, 16)
            self.head = torch.nn.Linear(16, 2)

        def forward(self, x):
            h = torch.relu(self.f(x))
            return h, self.head(h)

    with warnings.catch_warnings():
        warnings.simplefilter("error", wa.AuditWarning)
        auditor = _collect(Pair(), 2)
    assert auditor.layer_name == "head"
    assert _collect(Pair(), 2, output_key=1).layer_name == "head"  # a tuple index


def test_an_output_interval_that_cannot_carry_a_verdict_decides_nothing():
    from wsca_audit.decision import Decision, decide_outputs

    task = {
        "encoding": {"metric": "auc", "value": 0.9, "ci_low": 0.85, "ci_high": 0.95},
        "usage": {"value": 0.5, "ci_low": 0.4, "ci_high": 0.6, "p_value": 0.01},
        "effect": {"value": 0.1, "ci_low": -0.3, "ci_high": 0.35, "by_output": {
            "level": 0.95, "selection": "cross-fitted halves", "outputs": {
                "a": {"value": 0.0, "ci_low": 0.0, "ci_high": 0.0},  # zero width
                "b": {"value": -0.9, "ci_low": -1.2, "ci_high": -0.6},  # halves disagree
                "c": {"value": 2e3, "ci_low": 1e3, "ci_high": 3e3},  # absurd
            }}},
    }  # fmt: skip
    before = Decision("inconclusive", "the effect straddles")
    d, outputs = decide_outputs("site", task, wa.Thresholds(), before, n_permutations=200)
    assert d == before  # nothing an output says can decide the task
    assert {o: b["verdict"] for o, b in outputs.items()} == dict.fromkeys("abc", "inconclusive")
    assert "zero width" in outputs["a"]["reason"] and "±1000" in outputs["c"]["reason"]


def test_output_names_must_name_every_output():
    z, y, meta, W = _six_classes(0.0, n=300)
    with pytest.raises(wa.AuditError, match="output_names has 1 names but the head has 2"):
        wa.analyze(z, y % 2, meta, primary_weight=W[:2], output_names=["sick"], **FAST)
