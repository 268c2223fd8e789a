"""Evidence and the fix leave the user's model as it was and describe what they measured.

Each test reproduces one finding of the issue: the patched model carrying the auditor,
batch-norm statistics moved by evidence, the wrong logit scored by ROI masking, a
degenerate fill decided, evidence filed without provenance, what ``intervene`` may
return, and the messages that said something else than what was wrong.
"""

import copy
import io
import warnings

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score
from torch import nn

import wsca_audit as wa

FAST = dict(n_bootstrap=60, n_permutations=60, progress=False)


def _quiet(fn, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn(*args, **kwargs)


def _saved_bytes(model) -> int:
    buf = io.BytesIO()
    torch.save(model, buf)
    return buf.tell()


# ------------------------------------------------------------------ 1. the patched model
def _tabular(n=600, seed=0):
    """An MLP whose head reads a scanner flag (feature 0) beside the label's signal."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 2
    scanner = torch.where(torch.rand(n, generator=g) < 0.8, y, 1 - y)
    x = torch.randn(n, 8, generator=g)
    x[:, 0] += 2.0 * scanner
    x[:, 1] += 2.0 * y
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 2)).eval()
    with torch.no_grad():  # a head that reads both: the first hidden units copy x0 and x1
        model[0].weight.zero_()
        model[0].bias.fill_(3.0)
        model[0].weight[0, 0] = model[0].weight[1, 1] = 1.0
        model[0].weight[2:].normal_(0, 0.3, generator=g)
        model[2].weight.zero_()
        model[2].weight[1, 0] = model[2].weight[1, 1] = 1.0
    return model, x, y.numpy(), scanner.numpy()


def test_the_patched_model_carries_no_hook_and_no_auditor():
    model, x, y, scanner = _tabular()
    own = model.register_forward_hook(_users_hook)  # the user's own hook is copied
    aud = wa.Auditor(model, kinds={"artefact": "categorical"}).attach()
    try:
        with torch.no_grad():
            model(x)
        aud.record(targets=y, metadata={"artefact": scanner})
        m = _quiet(wa.mitigate, model, aud, "artefact", **FAST)
        assert aud.attached  # the original keeps its auditor, still working
    finally:
        aud.detach()
        own.remove()
    hooks = [h for mod in m.model.modules() for h in mod._forward_pre_hooks.values()]
    hooks += [h for mod in m.model.modules() for h in mod._forward_hooks.values()]
    owners = {getattr(getattr(h, "__func__", h), "__module__", "") for h in hooks}
    assert not any(o.startswith("wsca_audit") for o in owners), owners
    assert list(m.model._forward_hooks.values()) == [_users_hook]
    # nothing of the audit is pickled into the file the user ships (was 54x the model)
    assert _saved_bytes(m.model) < 1.2 * _saved_bytes(model) + 4096


def _users_hook(module, inputs, output):
    return None


# ------------------------------------------------------------------ 2. batch-norm
class _BNNet(nn.Module):
    def __init__(self, n_out: int = 2):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.drop = nn.Dropout(0.5)
        self.fc = nn.Linear(4, n_out)

    def forward(self, x):
        h = torch.relu(self.bn(self.conv(x))).mean((2, 3))
        return self.fc(self.drop(h))


def _images(n=80, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 1, 8, 8, generator=g)
    y = torch.arange(n) % 2
    x[y == 1, :, 2:6, 2:6] += 1.0
    return x, y


@pytest.mark.parametrize("evidence", ["masking", "intervention", "attribution", "batch"])
def test_evidence_in_train_mode_leaves_every_buffer_and_mode_as_it_was(evidence):
    torch.manual_seed(0)
    model = _BNNet().train()
    x, y = _images()
    roi = torch.zeros(8, 8, dtype=torch.bool)
    roi[2:6, 2:6] = True
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.warns(wa.AuditWarning, match="runs it in eval mode"):
        if evidence == "masking":
            res = wa.roi_masking(model, x, roi, y, fill="noise", n_bootstrap=20, progress=False)
            # eval mode, not train mode: dropout off, so the scores repeat exactly
            again = _quiet(wa.roi_masking, model, x, roi, y, fill="noise", n_bootstrap=20,
                           progress=False)  # fmt: skip
            assert res["full"]["value"] == again["full"]["value"]
        elif evidence == "intervention":

            def bright(z, v):
                z[:, :, 0, 0] = float(v)
                return z

            wa.intervention_effect(model, x, bright, n_bootstrap=20, progress=False)
        elif evidence == "attribution":
            wa.attribution_mass(model, x, roi, n_bootstrap=20, progress=False)
        else:
            wa.InputAttribution(model, progress=False).attribute_batch(x[:8])
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before), "a buffer moved"
    assert model.training and model.bn.training and model.drop.training


# ------------------------------------------------------------------ 3. the score
def _ten_class(n=200, seed=0):
    """A 10-output linear model on 2 features: logit 8 - logit 3 separates classes 3 and 8
    perfectly, logit 1 is noise."""
    rng = np.random.default_rng(seed)
    y = np.where(rng.random(n) < 0.5, 3, 8)
    x = torch.zeros(n, 1, 4, 4)
    x[:, 0, 0, 0] = torch.as_tensor(np.where(y == 8, 1.0, -1.0) + 0.3 * rng.normal(size=n))
    x[:, 0, 1, 1] = torch.as_tensor(rng.normal(size=n))
    lin = nn.Linear(16, 10)
    with torch.no_grad():
        lin.weight.zero_()
        lin.bias.zero_()
        lin.weight[8, 0], lin.weight[3, 0] = 2.0, -2.0
        lin.weight[1, 5] = 3.0  # logit 1 follows the noise feature
        lin.weight[8, 5] = 1.0  # logit 8 alone is noisy too
    return nn.Sequential(nn.Flatten(), lin).eval(), x, y


def test_roi_masking_scores_the_two_classes_present_by_their_contrast():
    model, x, y = _ten_class()
    roi = torch.zeros(4, 4, dtype=torch.bool)
    roi[0, 0] = True
    res = wa.roi_masking(model, x, roi, y, fill="zero", n_bootstrap=30, progress=False)
    with torch.no_grad():
        lg = model(x)
    ref = roc_auc_score(y == 8, (lg[:, 8] - lg[:, 3]).numpy())
    assert res["full"]["value"] == pytest.approx(ref) and ref > 0.99
    assert res["score"] == "logit 8 − logit 3"
    # target=: class 8 against the rest
    res8 = wa.roi_masking(model, x, roi, y, target=8, n_bootstrap=0, progress=False)
    odds = lg[:, 8] - torch.logsumexp(lg[:, [i for i in range(10) if i != 8]], 1)
    assert res8["full"]["value"] == pytest.approx(roc_auc_score(y == 8, odds.numpy()))
    assert res8["score"].startswith("class 8 against the rest")


def test_a_class_absent_from_a_many_class_audit_is_not_an_error():
    """Labels 0-8 on a 10-output model: class 9 is absent, the labels are indices."""
    rng = np.random.default_rng(0)
    x = torch.randn(180, 1, 4, 4)
    y = np.arange(180) % 9
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 10)).eval()
    roi = torch.ones(4, 4, dtype=torch.bool)
    roi[0] = False
    res = wa.roi_masking(model, x, roi, y, fill="mean", n_bootstrap=0, progress=False)
    with torch.no_grad():
        p = torch.softmax(model(x), 1).numpy()
    ref = np.mean([roc_auc_score(y == c, p[:, c]) for c in range(9)])
    assert res["full"]["value"] == pytest.approx(ref)
    assert "9 classes present" in res["score"]
    assert rng is not None


# ------------------------------------------------------------------ 4. degenerate fills
def _marker_data(n=300, seed=0):
    """Digits-like noise images; a corner marker agrees with the label 95% of the time."""
    g = np.random.default_rng(seed)
    y = g.integers(0, 2, n)
    marker = np.where(g.random(n) < 0.95, y, 1 - y)
    x = torch.as_tensor(g.normal(size=(n, 1, 12, 12)), dtype=torch.float32)
    x[:, :, 4:10, 4:10] += torch.as_tensor(2.0 * y, dtype=torch.float32)[:, None, None, None]
    x[:, :, :3, :3] = torch.as_tensor(3.0 * marker, dtype=torch.float32)[:, None, None, None]
    roi = torch.ones(12, 12, dtype=torch.bool)
    roi[:3, :3] = False  # everything but the marker corner
    return x, y, roi


def _clean_model():
    lin = nn.Linear(144, 2)
    with torch.no_grad():
        lin.weight.zero_()
        lin.bias.zero_()
        w = torch.zeros(12, 12)
        w[4:10, 4:10] = 1.0
        w[:3, :3] = 0.01  # reads the centre, barely the corner
        lin.weight[1] = w.flatten()
    return nn.Sequential(nn.Flatten(), lin).eval()


def test_a_fill_that_leaves_two_distinct_images_is_uninformative_not_decided():
    x, y, roi = _marker_data()
    model = _clean_model()
    res = wa.roi_masking(model, x, roi, y, fill="zero", n_bootstrap=30, progress=False)
    assert res["distinct_images"]["roi_removed"] == 2
    assert res["verdict"] == "uninformative" and "2 distinct images" in res["reason"]
    noisy = wa.roi_masking(model, x, roi, y, fill="noise", n_bootstrap=30, progress=False)
    assert noisy["distinct_images"]["roi_removed"] == len(y)
    assert noisy["verdict"] != "uninformative" and noisy["reason"] is None


def test_a_blur_that_keeps_the_roi_content_is_uninformative():
    x, y, roi = _marker_data()
    res = wa.roi_masking(_clean_model(), x, roi, y, fill="blur", blur_sigma=0.5,
                         n_bootstrap=30, progress=False)  # fmt: skip
    assert res["roi_kept_share"] > 0.5
    assert res["verdict"] == "uninformative" and "keeps" in res["reason"]
    zero_roi = wa.roi_masking(_clean_model(), x, ~roi, y, fill="zero", n_bootstrap=0,
                              progress=False)  # fmt: skip
    assert zero_roi["roi_kept_share"] == 0.0


def test_noise_fill_does_not_depend_on_the_batching():
    x, y, roi = _marker_data(n=90)
    model = _clean_model()
    a = wa.roi_masking(model, x, roi, y, fill="noise", batch_size=7, n_bootstrap=30, progress=False)
    b = wa.roi_masking(model, x, roi, y, fill="noise", batch_size=64, n_bootstrap=30,
                       progress=False)  # fmt: skip
    for v in ("full", "roi_removed", "roi_only"):
        assert a[v]["value"] == pytest.approx(b[v]["value"], abs=1e-12)
        assert a[v]["ci_low"] == pytest.approx(b[v]["ci_low"], abs=1e-12)


# ------------------------------------------------------------------ 5. provenance
@pytest.fixture(scope="module")
def audited():
    model, x, y, scanner = _tabular()
    aud = wa.Auditor(model, kinds={"scanner": "categorical"})
    with aud.collect(), torch.no_grad():
        model(x)
        aud.record(targets=y, metadata={"scanner": scanner})
    return model, x, _quiet(aud.analyze, **FAST)


def _set_scanner(x, on):
    x[:, 0] = 2.0 if on else 0.0
    return x


def test_evidence_records_its_model_and_add_evidence_checks_it(audited):
    model, x, res = audited
    ev = wa.intervention_effect(model, x, _set_scanner, variable="scanner", n_bootstrap=20,
                                progress=False)  # fmt: skip
    assert ev["model"]["class"] == "Sequential"
    assert res.to_dict()["primary"]["fingerprint"] in ev["model"]["linear_fingerprints"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the audited model: not a word
        res.add_evidence(ev)
    entry = res.evidence["interventions"]["scanner"]["provenance"]
    assert entry == {"same_model": True, "n_samples": len(x), "audit_n_samples": len(x)}
    # the same architecture with another head (trained on, say), on 40 images
    other = copy.deepcopy(model)
    with torch.no_grad():
        other[2].weight[1, 0] = 0.0
    ev2 = wa.intervention_effect(other, x[:40], _set_scanner, variable="scanner",
                                 n_bootstrap=20, progress=False)  # fmt: skip
    with pytest.warns(wa.AuditWarning, match="none of whose nn.Linear layers is the audited"):
        res.add_evidence(ev2, "other")
    prov = res.evidence["interventions"]["other"]["provenance"]
    assert prov["same_model"] is False and prov["n_samples"] == 40
    assert any("audited head" in w for w in res.warnings)
    with pytest.raises(wa.AuditError, match="audited head"):
        res.add_evidence(ev2, "other", strict=True)


def test_a_misspelled_variable_gets_a_suggestion(audited):
    model, x, res = audited
    ev = wa.intervention_effect(model, x[:50], _set_scanner, variable="scaner",
                                n_bootstrap=0, progress=False)  # fmt: skip
    with pytest.warns(wa.AuditWarning, match="did you mean 'scanner'"):
        res.add_evidence(ev)
    with pytest.raises(wa.AuditError, match="'scaner' is not a variable of this audit"):
        res.add_evidence(ev, strict=True)


# ------------------------------------------------------------------ 6. intervene
def _corner(x, on):
    x[..., :2, :2] = 1.0 if on else 0.0
    return x


def test_intervention_refuses_colliding_values_and_inputs_of_another_kind():
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 2)).eval()
    x = torch.randn(20, 1, 4, 4)
    with pytest.raises(wa.AuditError, match="same name '1'"):
        wa.intervention_effect(model, x, _corner, values=(0, 1, "1", 0.5), progress=False)
    crop = nn.Sequential(nn.AdaptiveAvgPool2d(4), nn.Flatten(), nn.Linear(16, 2)).eval()
    with pytest.raises(wa.AuditError, match="does not crop or resize"):
        wa.intervention_effect(crop, torch.randn(20, 1, 8, 8), lambda z, v: z[..., :4, :4],
                               progress=False)  # fmt: skip
    with pytest.raises(wa.AuditError, match=r"torch.float64 .* out.to\(inputs.dtype\)"):
        wa.intervention_effect(model, x, lambda z, v: z.double(), progress=False)


# ------------------------------------------------------------------ 7. messages
def test_a_shared_full_roi_is_named_as_shared_not_one_image():
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 2)).eval()
    x, y = torch.randn(400, 1, 4, 4), np.arange(400) % 2
    with pytest.warns(wa.AuditWarning, match=r"every image \(a shared mask\)"):
        _quiet_masking = wa.roi_masking
        _quiet_masking(model, x, torch.ones(4, 4, dtype=torch.bool), y, n_bootstrap=0,
                       progress=False)  # fmt: skip


def test_multi_class_attribution_without_target_says_predicted_class():
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 5)).eval()
    x = torch.randn(12, 1, 4, 4)
    roi = torch.zeros(4, 4, dtype=torch.bool)
    roi[:2] = True
    res = wa.attribution_mass(model, x, roi, n_bootstrap=0, progress=False)
    assert res["target"] == "predicted class" and res["score"] == "predicted class"
    two = wa.attribution_mass(nn.Sequential(nn.Flatten(), nn.Linear(16, 2)).eval(), x, roi,
                              n_bootstrap=0, progress=False)  # fmt: skip
    assert two["target"] == "primary score" and two["score"].startswith("log-odds")
