"""Hooks and layer resolution on the model shapes users have."""

import warnings

import numpy as np
import pytest
import torch
from torch import nn

import wsca_audit as wa
from wsca_audit import AuditError


class HeadFirst(nn.Module):
    """The head is registered BEFORE the backbone: forward order must win."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(6, 3)
        self.backbone = nn.Sequential(nn.Linear(4, 6), nn.ReLU())

    def forward(self, x):
        return self.fc(self.backbone(x))


class DictOut(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(4, 5), nn.Tanh())
        self.classifier = nn.Sequential(nn.Dropout(0.1), nn.Linear(5, 2))

    def forward(self, x):
        z = self.body(x)
        return {"logits": self.classifier(z), "features": z}


class TupleOut(DictOut):
    def forward(self, x):
        out = super().forward(x)
        return out["logits"], out["features"]


class NoLinear(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv1d(1, 2, 3)

    def forward(self, x):
        return self.conv(x[:, None]).mean(-1)


def _loop(model, auditor, n_batches=3, bs=20, seed=0):
    g = torch.Generator().manual_seed(seed)
    xs = []
    with auditor.collect(), torch.no_grad():
        for _ in range(n_batches):
            x = torch.randn(bs, 4, generator=g)
            xs.append(x)
            model(x)
            auditor.record(targets=(x[:, 0] > 0).long(), metadata={"site": (x[:, 1] > 0).long()})
    return torch.cat(xs)


@pytest.mark.parametrize(
    ("model", "layer_name", "embed"),
    [
        (
            nn.Sequential(nn.Linear(4, 7), nn.ReLU(), nn.Linear(7, 2)).eval(),
            "2",
            lambda m, x: m[1](m[0](x)),
        ),
        (HeadFirst().eval(), "fc", lambda m, x: m.backbone(x)),
        (DictOut().eval(), "classifier.1", lambda m, x: m.body(x)),
        (TupleOut().eval(), "classifier.1", lambda m, x: m.body(x)),
    ],
)
def test_auto_finds_the_last_linear_in_forward_order(model, layer_name, embed):
    auditor = wa.Auditor(model, kinds={"site": "categorical"})
    x = _loop(model, auditor)
    es = auditor.embeddings()
    assert auditor.layer_name == layer_name
    with torch.no_grad():
        np.testing.assert_allclose(es.embeddings, embed(model, x).numpy(), rtol=1e-6)
    head = model.get_submodule(layer_name)
    np.testing.assert_allclose(es.primary.weight, head.weight.detach().numpy(), rtol=1e-6)
    assert es.n_samples == 60 and es.targets.shape == (60,)


def test_named_layer_and_module_object_and_next_linear_head():
    model = DictOut().eval()
    for layer in ("classifier", model.classifier):
        auditor = wa.Auditor(model, layer=layer, kinds={"site": "categorical"})
        x = _loop(model, auditor)
        es = auditor.embeddings()
        assert auditor.layer_name == "classifier"
        assert es.primary.source == "classifier.1"  # the next Linear called
        with torch.no_grad():
            np.testing.assert_allclose(es.embeddings, model.body(x).numpy(), rtol=1e-6)


def test_hooks_removed_on_exit_and_on_exception_and_data_kept():
    model = HeadFirst().eval()
    auditor = wa.Auditor(model, kinds={"site": "categorical"})

    def n_hooks():
        return sum(len(m._forward_pre_hooks) + len(m._forward_hooks) for m in model.modules())

    with pytest.raises(RuntimeError, match="user loop failed"), auditor.collect():
        x = torch.randn(8, 4)
        model(x)
        auditor.record(targets=torch.zeros(8), metadata={"site": np.arange(8) % 2})
        assert n_hooks() > 0
        raise RuntimeError("user loop failed")
    assert n_hooks() == 0
    assert auditor.embeddings().n_samples == 8  # what was collected is kept
    _loop(model, auditor)
    assert n_hooks() == 0
    assert auditor.embeddings().n_samples == 68


def test_no_graph_is_kept_when_grad_enabled():
    model = nn.Sequential(nn.Linear(4, 3), nn.Linear(3, 2))
    auditor = wa.Auditor(model.eval())
    with auditor.collect():
        model(torch.randn(5, 4, requires_grad=True))
        auditor.record(targets=np.arange(5) % 2)
    z = auditor._embeddings.blocks()[0]
    assert not z.requires_grad and z.grad_fn is None


def test_unknown_layer_lists_candidates():
    with pytest.raises(AuditError, match=r"no module named 'classifer'.*classifier"):
        wa.Auditor(DictOut(), layer="classifer")


def test_model_without_linear_head():
    model = NoLinear().eval()
    auditor = wa.Auditor(model)
    with pytest.raises(AuditError, match=r"no nn\.Linear"), auditor.collect():
        model(torch.randn(4, 4))
    # fallback: name the layer and give the head
    auditor = wa.Auditor(model, layer="conv", primary_weight=np.ones((1, 4)))
    with pytest.raises(AuditError, match=r"shape \(4, 1, 4\)"), auditor.collect():
        model(torch.randn(4, 4))


def test_record_errors():
    model = nn.Sequential(nn.Linear(4, 2)).eval()
    auditor = wa.Auditor(model, kinds={"site": "categorical"})
    with pytest.raises(AuditError, match="no forward pass"):
        auditor.record(targets=[0, 1])
    with auditor.collect():
        model(torch.randn(5, 4))
        with pytest.raises(
            AuditError, match=r"metadata\['site'\] has 4 values but the batch has 5"
        ):
            auditor.record(targets=np.zeros(5), metadata={"site": [1, 2, 3, 4]})
        with pytest.raises(AuditError, match="missing metadata column"):
            auditor.record(targets=np.zeros(5), metadata={})
    with pytest.raises(AuditError, match="nothing was recorded"):
        auditor.analyze()


def test_train_mode_warns_and_lands_in_report():
    model = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 2))  # train mode
    auditor = wa.Auditor(model, kinds={"site": "categorical"})
    with pytest.warns(wa.AuditWarning, match="train mode"):
        _loop(model, auditor, n_batches=5)
    res = auditor.analyze(n_bootstrap=10, n_permutations=10, progress=False)
    assert any("train mode" in w for w in res.warnings)


def test_attach_detach_lifecycle():
    model = HeadFirst().eval()
    auditor = wa.Auditor(model, kinds={"site": "categorical"})

    def n_hooks():
        return sum(len(m._forward_pre_hooks) + len(m._forward_hooks) for m in model.modules())

    auditor.detach()  # never attached: nothing to do
    assert not auditor.attached and n_hooks() == 0
    assert auditor.attach() is auditor and auditor.attached
    assert n_hooks() > 0
    with pytest.raises(AuditError, match="already attached"):
        auditor.attach()
    with pytest.raises(AuditError, match=r"collect\(\) is already active"):
        with auditor.collect():
            pass
    assert auditor.attached  # the failed calls left the hooks in place
    x = torch.randn(10, 4)
    with torch.no_grad():
        model(x)
    auditor.record(targets=(x[:, 0] > 0).long(), metadata={"site": (x[:, 1] > 0).long()})
    assert auditor.layer_name == "fc" and len(model.fc._forward_pre_hooks) == 1
    auditor.detach()
    assert not auditor.attached and n_hooks() == 0
    assert not model._forward_pre_hooks and not model._forward_hooks
    assert not model.fc._forward_pre_hooks
    auditor.detach()  # twice: fine
    assert not auditor.attached and n_hooks() == 0
    with torch.no_grad():
        model(x)  # detached: nothing captured
    assert auditor.pending_count == 0
    # attach again after detach, then collect() after detach
    auditor.attach()
    assert n_hooks() == 1  # the layer is resolved: only its pre-hook
    auditor.detach()
    _loop(model, auditor, n_batches=2)
    assert n_hooks() == 0 and auditor.n_recorded == 50
    es = auditor.embeddings()
    with torch.no_grad():
        np.testing.assert_allclose(es.embeddings[:10], model.backbone(x).numpy(), rtol=1e-6)


def test_collect_detaches_on_exception_before_and_after_the_trace():
    for resolved in (False, True):
        model = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 2)).eval()
        auditor = wa.Auditor(model, layer="2" if resolved else "auto")
        with pytest.raises(RuntimeError, match="boom"), auditor.collect():
            assert model._forward_hooks or model[2]._forward_pre_hooks
            raise RuntimeError("boom")
        assert not auditor.attached
        assert not any(m._forward_pre_hooks or m._forward_hooks for m in model.modules())
        auditor.attach()  # a fresh attach works after the failure
        auditor.detach()


def test_failed_attach_leaves_no_hooks_and_can_be_retried():
    model = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 2))  # train mode
    auditor = wa.Auditor(model)
    with warnings.catch_warnings():
        warnings.simplefilter("error", wa.AuditWarning)
        with pytest.raises(wa.AuditWarning, match="train mode"):
            auditor.attach()
    assert not auditor.attached
    assert not any(m._forward_pre_hooks or m._forward_hooks for m in model.modules())
    with pytest.warns(wa.AuditWarning, match="train mode"):
        auditor.attach()
    assert auditor.attached
    auditor.detach()


def test_the_model_name_titles_the_report():
    """Every report was titled by the model's class: two models read the same."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2)).eval()
    titles = []
    for name in (None, "resnet-site-a"):
        auditor = wa.Auditor(model, kinds={"site": "categorical"}, name=name)
        with auditor.collect(), torch.no_grad():
            x = torch.randn(200, 4)
            model(x)
            auditor.record(targets=(x[:, 0] > 0).long(), metadata={"site": (x[:, 1] > 0).long()})
        res = auditor.analyze(n_bootstrap=0, n_permutations=0, progress=False)
        titles.append(res.title)
        assert res.title in res.to_html()
    assert titles == ["WSCA audit: Sequential", "WSCA audit: resnet-site-a"]
    with pytest.raises(AuditError, match="name must be a string"):
        wa.Auditor(model, name=3)


# --------------------------------------------------------------------------- names
def test_kinds_is_the_word_for_kinds_and_the_old_keyword_still_works():
    """One word for a variable's kind (``kinds=``) and one for its values (``metadata=``)
    in Auditor, record and analyze; ``Auditor(metadata=...)`` warns and works."""
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    new = wa.Auditor(model, kinds={"site": "categorical"})
    with pytest.warns(DeprecationWarning, match=r"Auditor\(kinds=\.\.\.\)"):
        old = wa.Auditor(model, metadata={"site": "categorical"})
    assert new.kinds == old.kinds == {"site": "categorical"}
    with pytest.raises(wa.AuditError, match="kinds= only"):
        wa.Auditor(model, kinds={"site": "categorical"}, metadata={"site": "categorical"})
    assert wa.Auditor(model, "auto", {"site": "continuous"}).kinds == {"site": "continuous"}


def test_the_integrations_take_kinds_and_warn_on_their_old_keywords():
    from wsca_audit.integrations.lightning import WSCACallback
    from wsca_audit.integrations.plain import audit_loop
    from wsca_audit.integrations.transformers import WSCATrainerCallback

    assert WSCACallback(kinds={"site": "categorical"}).kinds == {"site": "categorical"}
    with pytest.warns(DeprecationWarning, match="metadata_keys"):
        cb = WSCACallback(metadata_keys=["site"])
    assert cb.names == ["site"] and cb.kinds is None
    with pytest.warns(DeprecationWarning, match="metadata_columns"):
        hf = WSCATrainerCallback(metadata_columns={"site": "categorical"}, eval_dataset={})
    assert hf.kinds == {"site": "categorical"}
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    g = torch.Generator().manual_seed(0)
    xs = [torch.randn(40, 4, generator=g) for _ in range(3)]
    loader = [(x, (x[:, 0] > 0).long(), {"site": (x[:, 1] > 0).long()}) for x in xs]

    def evaluate(model, loader):
        with torch.no_grad():
            for x, _, _ in loader:
                model(x)

    fast = {"n_bootstrap": 10, "n_permutations": 10, "progress": False}
    with pytest.warns(DeprecationWarning, match=r"audit_loop\(kinds="):
        _, res = audit_loop(evaluate, model, loader, metadata={"site": "categorical"},
                            analyze_kwargs=fast)  # fmt: skip
    assert sorted(res.tasks) == ["site"]


def test_the_old_attribute_names_still_read_with_a_warning():
    from wsca_audit.integrations.lightning import WSCACallback
    from wsca_audit.integrations.transformers import WSCATrainerCallback

    model = torch.nn.Sequential(torch.nn.Linear(4, 2))
    with pytest.warns(DeprecationWarning, match="kinds"):
        assert wa.Auditor(model, kinds={"s": "categorical"}).metadata_kinds == {"s": "categorical"}
    cb = WSCACallback({"s": "categorical"})
    with pytest.warns(DeprecationWarning, match="names"):
        assert cb.metadata_keys == ["s"]
    with pytest.warns(DeprecationWarning, match="kinds"):
        assert WSCATrainerCallback({"s": "categorical"}, {}).metadata_columns == {
            "s": "categorical"
        }
    rng = np.random.default_rng(0)
    z = rng.normal(size=(40, 3))
    with pytest.warns(DeprecationWarning, match="deconfounding"):
        res = wa.analyze(z, (z[:, 0] > 0).astype(int), {}, primary_weight=np.eye(2, 3),
                         deconfounding="within_class_centering", n_bootstrap=5,
                         n_permutations=5, progress=False)  # fmt: skip
    assert res.settings["deconfounding"] == "within_class_centering"


def test_an_auditor_reused_across_epochs_audits_the_head_as_it_is_now():
    """collect, analyze, reset, train, collect again: the second audit reads the trained
    head (it read the first epoch's head before), and a head that changes between
    record() calls is named."""
    from sklearn.metrics import roc_auc_score

    from wsca_audit.primary import head_fingerprint

    torch.manual_seed(0)
    x = torch.randn(400, 6)
    y = (x[:, 0] + 0.5 * torch.randn(400) > 0).long()
    site = (x[:, 1] > 0).long().numpy()
    model = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 2)).eval()
    aud = wa.Auditor(model, kinds={"site": "categorical"})
    fast = dict(n_bootstrap=20, n_permutations=20, progress=False)

    def audit():
        with aud.collect(), torch.no_grad():
            model(x)
            aud.record(targets=y.numpy(), metadata={"site": site})
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return aud.analyze(**fast)

    first = audit()
    aud.reset()
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    for _ in range(30):  # an epoch of training between the audits
        opt.zero_grad()
        nn.functional.cross_entropy(model.train()(x), y).backward()
        opt.step()
    model.eval()
    second = audit()
    head = model[2]
    assert second.to_dict()["primary"]["fingerprint"] == head_fingerprint(head.weight, head.bias)
    assert first.to_dict()["primary"]["fingerprint"] != second.to_dict()["primary"]["fingerprint"]
    with torch.no_grad():
        lg = model(x)
    truth = roc_auc_score(y.numpy(), (lg[:, 1] - lg[:, 0]).numpy())
    assert second.to_dict()["primary"]["metric"]["value"] == pytest.approx(truth, abs=1e-6)
    # a training step between two record() calls of one audit is named
    aud.reset()
    with aud.collect(), torch.no_grad():
        model(x[:200])
        aud.record(targets=y[:200].numpy(), metadata={"site": site[:200]})
        with torch.enable_grad():
            opt.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
        aud.discard_pending()  # the training step's forward pass
        model(x[200:])
        aud.record(targets=y[200:].numpy(), metadata={"site": site[200:]})
    with pytest.warns(wa.AuditWarning, match="head's weights changed while these embeddings"):
        aud.embeddings()
