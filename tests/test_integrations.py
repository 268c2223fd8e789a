"""Framework integrations with real parts: Lightning Trainer, HF Trainer, plain loops."""

import numpy as np
import pytest
import torch
from mlflow.tracking import MlflowClient
from sklearn.metrics import roc_auc_score
from torch import nn
from torch.utils.data import DataLoader, Dataset, TensorDataset

import wsca_audit as wa
from wsca_audit.demo.shortcut import add_artefact, artefact_flags, load_digits_images
from wsca_audit.primary import head_fingerprint


@pytest.fixture(scope="module")
def digits_shortcut():
    """Real digits with the corner artefact agreeing with the label 95% (train) / 80% (eval)."""
    x, y, _ = load_digits_images()
    rng = np.random.default_rng(0)
    order = rng.permutation(len(y))
    tr, ev = order[:1200], order[1200:]
    f_tr, f_ev = artefact_flags(y[tr], 0.95, rng), artefact_flags(y[ev], 0.8, rng)
    return (add_artefact(x[tr], f_tr), y[tr]), (add_artefact(x[ev], f_ev), y[ev], f_ev)


# --------------------------------------------------------------------------- plain loops
def test_audit_loop_equals_the_hand_written_loop(digits_shortcut, shortcut_model):
    from wsca_audit.integrations.plain import audit_loop, audited

    model, split = shortcut_model(0.9)
    x, y, flags = (torch.as_tensor(split.eval_x), torch.as_tensor(split.eval_y), split.eval_flags)
    loader = [
        (x[i : i + 100], y[i : i + 100], {"artefact": flags[i : i + 100]})
        for i in range(0, len(x), 100)
    ]
    settings = dict(n_bootstrap=30, n_permutations=30, progress=False)

    def evaluate(model, loader):
        with torch.no_grad():
            return sum(int((model(xb).argmax(1) == yb).sum()) for xb, yb, _ in loader)

    correct, res = audit_loop(
        evaluate, model, loader, metadata={"artefact": "categorical"}, analyze_kwargs=settings
    )
    assert correct == evaluate(model, loader)
    hand = wa.Auditor(model, kinds={"artefact": "categorical"})
    with hand.collect(), torch.no_grad():
        for xb, yb, meta in loader:
            model(xb)
            hand.record(targets=yb, metadata=meta)
    expected = hand.analyze(**settings).to_dict()
    got = res.to_dict()
    for d in (expected, got):
        d["settings"].pop("runtime_s")
    assert got == expected

    @audited({"artefact": "categorical"}, **settings)
    def evaluate_first_batches(model, loader):  # stops early: the last batch still counts
        with torch.no_grad():
            for i, (xb, _, _) in enumerate(loader):
                model(xb)
                if i == 2:
                    return "stopped"

    assert evaluate_first_batches(model, loader) == "stopped"
    assert evaluate_first_batches.last_result["n_samples"] == 300


def test_batch_readers_name_the_keys_and_the_keyword_they_need():
    from wsca_audit.integrations.plain import audit_loop

    model = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 2)).eval()
    x, y, site = torch.randn(40, 4), torch.arange(40) % 2, torch.arange(40) % 3

    def evaluate(model, loader):
        with torch.no_grad():
            for batch in loader:
                model(batch[0] if isinstance(batch, (tuple, list)) else batch["x"])

    loader = DataLoader(TensorDataset(x, y, site), batch_size=20)
    with pytest.raises(wa.AuditError, match=r"TensorDataset\(x, y, site\) pass batch_fn="):
        audit_loop(evaluate, model, loader, metadata={"site": "categorical"})
    rows = [{"x": x[i : i + 20], "class": y[i : i + 20], "site": site[i : i + 20]}
            for i in (0, 20)]  # fmt: skip
    with pytest.warns(wa.AuditWarning, match=r"none of the label keys \['labels'.*'class'"):
        audit_loop(evaluate, model, rows, metadata={"site": "categorical"},
                   analyze_kwargs=dict(n_bootstrap=0, n_permutations=0, progress=False))  # fmt: skip


# --------------------------------------------------------------------------- Lightning
class LitCNN:
    """Built lazily so that importing this test module does not need lightning."""

    @staticmethod
    def make():
        import lightning as L

        from wsca_audit.demo.shortcut import SmallCNN

        class Lit(L.LightningModule):
            def __init__(self):
                super().__init__()
                torch.manual_seed(0)
                self.net = SmallCNN()

            def forward(self, x):
                return self.net(x)

            def training_step(self, batch, batch_idx):
                x, y, _ = batch
                return nn.functional.cross_entropy(self(x), y)

            def validation_step(self, batch, batch_idx, dataloader_idx=0):
                x, y, _ = batch
                self.log("val_loss", nn.functional.cross_entropy(self(x), y))

            test_step = validation_step

            def configure_optimizers(self):
                return torch.optim.Adam(self.parameters(), lr=3e-3)

        return Lit()


def _loaders(digits_shortcut):
    (xt, yt), (xe, ye, fe) = digits_shortcut
    as_t = torch.as_tensor
    train = DataLoader(
        TensorDataset(as_t(xt), as_t(yt), as_t(np.zeros(len(yt)))), batch_size=64, shuffle=True
    )
    val = DataLoader(TensorDataset(as_t(xe), as_t(ye), as_t(fe)), batch_size=100)
    return train, val


def _lightning_batch(batch):
    _, y, flags = batch
    return y, {"artefact": flags}


@pytest.mark.slow
def test_lightning_fit_validate_test_with_mlflow_logger(digits_shortcut, tmp_path, capsys):
    import lightning as L
    from lightning.pytorch.loggers import CSVLogger, MLFlowLogger
    from wsca_audit.integrations.lightning import WSCACallback

    train, val = _loaders(digits_shortcut)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    mlf = MLFlowLogger(
        experiment_name="lit", tracking_uri=uri, artifact_location=(tmp_path / "art").as_uri()
    )
    csv = CSVLogger(tmp_path / "csv")
    val_cb = WSCACallback(
        {"artefact": "categorical"},
        metadata_fn=_lightning_batch,
        every_n_epochs=2,
        n_bootstrap=30,
        n_permutations=30,
    )
    test_cb = WSCACallback(
        {"artefact": "categorical"},
        metadata_fn=_lightning_batch,
        stage="test",
        n_bootstrap=30,
        n_permutations=30,
    )
    trainer = L.Trainer(
        max_epochs=4, logger=[mlf, csv], callbacks=[val_cb, test_cb], accelerator="cpu",
        enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False,
        num_sanity_val_steps=2,
    )  # fmt: skip
    module = LitCNN.make()
    trainer.fit(module, train, val)
    # every second epoch (1 and 3, zero-based), the sanity check skipped
    assert [e for e, _ in val_cb.results_] == [1, 3]
    res = val_cb.last_result_
    assert res["n_samples"] == len(val.dataset) and res["layer"] == "net.head"
    assert res.tasks["artefact"]["verdict"] == "uses"
    trainer.validate(module, val)
    assert len(val_cb.results_) == 3
    trainer.test(module, val)
    assert test_cb.last_result_.tasks["artefact"]["verdict"] == "uses"
    # hooks are gone after each epoch
    assert not any(m._forward_pre_hooks for m in module.modules())

    client = MlflowClient(uri)
    run = client.get_run(mlf.run_id)
    assert run.data.tags["wsca.verdict.artefact"] == "uses"
    history = client.get_metric_history(mlf.run_id, "wsca.artefact.usage")
    steps = [m.step for m in sorted(history, key=lambda m: m.timestamp)]
    assert len(steps) == 4 and steps == sorted(set(steps))  # one point per audit, in order
    arts = {a.path for a in client.list_artifacts(mlf.run_id, "wsca")}
    # fit (epochs 1, 3), then validate and test after the 4 epochs: each its own folder
    paths = [r["model"]["context"]["artifact_path"] for _, r in val_cb.results_]
    paths.append(test_cb.last_result_["model"]["context"]["artifact_path"])
    assert set(paths) <= arts and len(set(paths)) == 4
    assert [p.split("-step")[0] for p in paths] == [
        "wsca/validation-epoch1", "wsca/validation-epoch3", "wsca/validation-epoch4",
        "wsca/test-epoch4",
    ]  # fmt: skip
    # a second validate() at the same step is kept beside the first, not over it
    trainer.validate(module, val)
    again = val_cb.last_result_["model"]["context"]["artifact_path"]
    assert again == paths[2] + "-2" and again in {
        a.path for a in client.list_artifacts(mlf.run_id, "wsca")
    }
    # the command line finds the run's reports: the latest by default, each by its folder
    from wsca_audit.cli import main as cli

    code = cli(["report", "--run-id", mlf.run_id, "--tracking-uri", uri])
    out = capsys.readouterr()
    assert code == 0 and f"holds 5 reports; read {again}" in out.err
    assert "wsca/test-epoch4" in out.err and "artefact" in out.out
    code = cli(["report", "--run-id", mlf.run_id, "--tracking-uri", uri, "--artifact-path",
                paths[0], "--json"])  # fmt: skip
    assert code == 0
    assert f'"artifact_path": "{paths[0]}"' in capsys.readouterr().out
    card = tmp_path / "card.md"
    assert cli(["card", "--run-id", mlf.run_id, "--tracking-uri", uri, "--out", str(card)]) == 0
    assert card.exists()
    csv_text = (tmp_path / "csv" / "lightning_logs" / "version_0" / "metrics.csv").read_text()
    assert "wsca.artefact.usage" in csv_text


@pytest.mark.slow
def test_lightning_results_survive_a_checkpoint(digits_shortcut, tmp_path):
    import json

    import lightning as L
    from wsca_audit.integrations.lightning import WSCACallback

    train, val = _loaders(digits_shortcut)

    def make_callbacks():
        settings = dict(metadata_fn=_lightning_batch, n_bootstrap=10, n_permutations=10)
        return (
            WSCACallback({"artefact": "categorical"}, **settings),
            WSCACallback({"artefact": "categorical"}, stage="test", **settings),
        )

    def make_trainer(callbacks):
        return L.Trainer(
            max_epochs=2, limit_train_batches=4, callbacks=list(callbacks), logger=False,
            accelerator="cpu", enable_progress_bar=False, enable_model_summary=False,
            enable_checkpointing=False, num_sanity_val_steps=0,
        )  # fmt: skip

    val_cb, test_cb = make_callbacks()
    assert val_cb.state_key != test_cb.state_key  # two instances, two checkpoint entries
    trainer = make_trainer((val_cb, test_cb))
    module = LitCNN.make()
    trainer.fit(module, train, val)
    trainer.test(module, val)
    assert [e for e, _ in val_cb.results_] == [0, 1] and len(test_cb.results_) == 1
    path = tmp_path / "audit.ckpt"
    trainer.save_checkpoint(path)
    # the callback state is plain JSON: it loads without unpickling arbitrary objects
    saved = torch.load(path, weights_only=True)["callbacks"]
    state = saved[val_cb.state_key]
    assert json.loads(json.dumps(state)) == state
    assert [entry["epoch"] for entry in state["results"]] == [0, 1]
    assert len(saved[test_cb.state_key]["results"]) == 1
    # validate(ckpt_path=) on the same callback appends (it replaced results_ before),
    # labelled with the checkpoint's epoch
    before = [r.to_dict() for _, r in val_cb.results_]
    trainer.validate(module, val, ckpt_path=path)
    assert [r.to_dict() for _, r in val_cb.results_[:2]] == before
    ctx = val_cb.last_result_["model"]["context"]
    assert len(val_cb.results_) == 3 and ctx["checkpoint"] and ctx["epoch"] == val_cb.results_[2][0]
    val_cb.results_ = val_cb.results_[:2]

    def summary(results):
        return [
            (epoch, res.verdicts, res.tasks["artefact"]["usage"]["value"], res["n_samples"])
            for epoch, res in results
        ]

    new_val, new_test = make_callbacks()
    trainer2 = make_trainer((new_val, new_test))
    module2 = LitCNN.make()
    trainer2.validate(module2, val, ckpt_path=path)
    # restored before the validation ran, which then appended its own audit
    assert len(new_val.results_) == 3
    assert summary(new_val.results_[:2]) == summary(val_cb.results_)
    assert new_val.results_[0][1].to_dict() == val_cb.results_[0][1].to_dict()
    assert summary(new_test.results_) == summary(test_cb.results_)  # test state kept apart
    # the weights came back too: the new audit equals the last one before the checkpoint
    last, again = val_cb.results_[-1][1], new_val.results_[-1][1]
    assert again.verdicts == last.verdicts
    assert again.tasks["artefact"]["usage"]["value"] == pytest.approx(
        last.tasks["artefact"]["usage"]["value"], rel=1e-6
    )
    assert not any(m._forward_pre_hooks or m._forward_hooks for m in module2.modules())


@pytest.mark.slow
def test_lightning_mid_epoch_validations_and_two_dataloaders_each_kept(digits_shortcut):
    """val_check_interval=0.5 with two validation dataloaders: four audits, each its own
    folder and sample count (the mid-epoch ones were overwritten, the loaders merged)."""
    import lightning as L
    from wsca_audit.integrations.lightning import WSCACallback

    train, val = _loaders(digits_shortcut)
    half = len(val.dataset) // 2
    first = DataLoader(torch.utils.data.Subset(val.dataset, range(half)), batch_size=100)
    second = DataLoader(torch.utils.data.Subset(val.dataset, range(half, 2 * half - 50)),
                        batch_size=100)  # fmt: skip
    cb = WSCACallback({"artefact": "categorical"}, metadata_fn=_lightning_batch,
                      n_bootstrap=10, n_permutations=10)  # fmt: skip
    trainer = L.Trainer(
        max_epochs=1, limit_train_batches=8, val_check_interval=0.5, callbacks=[cb],
        logger=False, accelerator="cpu", enable_progress_bar=False, enable_model_summary=False,
        enable_checkpointing=False, num_sanity_val_steps=0,
    )  # fmt: skip
    trainer.fit(LitCNN.make(), train, [first, second])
    contexts = [r["model"]["context"] for _, r in cb.results_]
    assert [(c["global_step"], c["dataloader_idx"]) for c in contexts] == [
        (4, 0),
        (4, 1),
        (8, 0),
        (8, 1),
    ]
    assert len({c["artifact_path"] for c in contexts}) == 4
    assert [r["n_samples"] for _, r in cb.results_] == [half, half - 50] * 2


def test_a_lightning_step_that_calls_a_submodule_is_told_module(digits_shortcut):
    import lightning as L
    from wsca_audit.integrations.lightning import WSCACallback

    class Direct(L.LightningModule):  # validation_step calls self.net(x), not self(x)
        def __init__(self):
            super().__init__()
            self.net = nn.Sequential(nn.Flatten(), nn.Linear(64, 8), nn.ReLU(), nn.Linear(8, 2))

        def validation_step(self, batch, batch_idx):
            self.net(batch[0])

    _, val = _loaders(digits_shortcut)
    cb = WSCACallback({"artefact": "categorical"}, metadata_fn=_lightning_batch)
    trainer = L.Trainer(callbacks=[cb], logger=False, accelerator="cpu",
                        enable_progress_bar=False, enable_model_summary=False)  # fmt: skip
    with pytest.raises(wa.AuditError, match="module='net'"):
        trainer.validate(Direct(), val)


def test_a_lightning_validation_that_fails_midway_leaves_the_model_unhooked(digits_shortcut):
    """The integrations hold their hooks through the public attach()/detach() lifecycle:
    a validation that raises in its second batch leaves no hook on the model."""
    import lightning as L
    from wsca_audit.integrations.lightning import WSCACallback

    _, val = _loaders(digits_shortcut)
    module = LitCNN.make()

    def failing_step(batch, batch_idx):
        module(batch[0])
        if batch_idx == 1:
            raise RuntimeError("a failing batch")

    module.validation_step = failing_step
    cb = WSCACallback({"artefact": "categorical"}, metadata_fn=_lightning_batch)
    trainer = L.Trainer(callbacks=[cb], logger=False, enable_progress_bar=False,
                        enable_model_summary=False, enable_checkpointing=False)  # fmt: skip
    with pytest.raises(RuntimeError, match="a failing batch"):
        trainer.validate(module, val)
    assert not any(m._forward_pre_hooks or m._forward_hooks for m in module.modules())
    assert cb.results_ == []


def test_lightning_callback_bad_settings():
    from wsca_audit.integrations.lightning import WSCACallback

    with pytest.raises(wa.AuditError, match="stage must be"):
        WSCACallback(["site"], stage="train")
    with pytest.raises(wa.AuditError, match="every_n_epochs"):
        WSCACallback(["site"], every_n_epochs=0)


# --------------------------------------------------------------------------- Transformers
class TokenDigits(Dataset):
    """Digits as 64-token sequences (pixel intensity 0..16 -> token id); a real data set."""

    def __init__(self, x, y):
        self.ids = torch.as_tensor(np.rint(x.reshape(len(x), -1) * 16)).long() + 1
        self.y = torch.as_tensor(y)

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        return {"input_ids": self.ids[i], "labels": self.y[i]}


@pytest.mark.slow
def test_hf_trainer_evaluate_audits_and_logs_to_mlflow(digits_shortcut, tmp_path, monkeypatch):
    from transformers import BertConfig, BertForSequenceClassification, Trainer, TrainingArguments
    from wsca_audit.integrations.transformers import WSCATrainerCallback

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "hf")
    (xt, yt), (xe, ye, fe) = digits_shortcut
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=20, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=64, num_labels=2,
    )  # fmt: skip
    model = BertForSequenceClassification(config)  # from a config: no downloaded weights
    eval_ds = TokenDigits(xe, ye)
    cb = WSCATrainerCallback(
        {"artefact": "categorical"},
        {"labels": ye, "artefact": fe},
        n_bootstrap=30,
        n_permutations=30,
    )
    args = TrainingArguments(
        output_dir=str(tmp_path / "out"), num_train_epochs=3, per_device_train_batch_size=32,
        per_device_eval_batch_size=100, learning_rate=1e-3, eval_strategy="epoch",
        save_strategy="no", report_to=["mlflow"], use_cpu=True, logging_steps=20,
        disable_tqdm=True, seed=0,
    )  # fmt: skip
    trainer = Trainer(
        model, args, train_dataset=TokenDigits(xt, yt), eval_dataset=eval_ds, callbacks=[cb]
    )
    trainer.train()
    assert len(cb.results_) == 3  # one audit per evaluation during training
    metrics = trainer.evaluate()
    res = cb.last_result_
    assert res["n_samples"] == len(eval_ds) and res["layer"] == "classifier"
    assert metrics["eval_wsca.artefact.usage"] == pytest.approx(
        res.tasks["artefact"]["usage"]["value"]
    )
    assert res.tasks["artefact"]["verdict"] == "uses"
    trainer.predict(eval_ds)  # the same loop, not an evaluation: nothing recorded
    assert len(cb.results_) == 4

    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("hf")
    runs = client.search_runs([exp.experiment_id])
    history = {
        r.info.status: len(client.get_metric_history(r.info.run_id, "wsca.artefact.usage"))
        for r in runs
    }
    # the training run holds one audit per epoch; the later evaluate() opened its own run
    assert history == {"FINISHED": 3, "RUNNING": 1}, history
    art = client.list_artifacts(
        next(r for r in runs if r.info.status == "FINISHED").info.run_id, "wsca"
    )
    assert {"wsca/step38", "wsca/step76", "wsca/step114"} <= {a.path for a in art}

    # the audit reads the head as trained, not as it was when the Trainer was built
    trained = head_fingerprint(model.classifier.weight, model.classifier.bias)
    assert res.to_dict()["primary"]["fingerprint"] == trained
    # a forward pass outside an evaluation is not recorded (it shifted every label)
    model.eval()
    with torch.no_grad():
        model(input_ids=eval_ds.ids[:5])
    # another dataset: read from the data being evaluated, never by position from the
    # callback's own eval_dataset
    rev = np.arange(len(ye))[::-1][:300]
    other = TokenDigits(xe[rev], ye[rev])
    with pytest.raises(wa.AuditError, match="is not the callback's eval_dataset"):
        trainer.evaluate(eval_dataset=other)
    cb.eval_dataset = {"labels": ye[rev], "artefact": fe[rev]}
    with pytest.warns(wa.AuditWarning, match="outside the evaluation were ignored"):
        model(input_ids=eval_ds.ids[:5])
        trainer.evaluate(eval_dataset=other)
    got = cb.last_result_
    with torch.no_grad():
        logits = model(input_ids=other.ids).logits
    truth = roc_auc_score(ye[rev], (logits[:, 1] - logits[:, 0]).numpy())
    assert got["n_samples"] == 300
    assert got.to_dict()["primary"]["metric"]["value"] == pytest.approx(truth, abs=1e-6)
    # two evaluations at one step: each its own folder
    folders = [r["model"]["context"]["artifact_path"] for _, r in cb.results_]
    assert len(folders) == len(set(folders)) and folders[-2:] == [
        "wsca/step114-2",
        "wsca/step114-3",
    ]
    cb.close()
    assert not any(m._forward_pre_hooks for m in model.modules())


def test_the_hf_callback_reads_the_rows_each_rank_evaluates():
    """Under accelerate each rank sees its own batches, the last padded from the start:
    the callback takes its rows (and sample ids) from the loader's batch sampler, not by
    position (it gave rank 1's samples rank 0's labels; test_distributed runs the Trainer)."""
    from accelerate.data_loader import BatchSamplerShard
    from torch.utils.data import BatchSampler, SequentialSampler
    from wsca_audit.integrations.transformers import _evaluation_order

    batches = BatchSampler(SequentialSampler(range(10)), 4, drop_last=False)
    assert _evaluation_order(DataLoader(list(range(10)), batch_size=4)).tolist() == list(range(10))
    ranks = []
    for rank in (0, 1):
        shard = BatchSamplerShard(batches, num_processes=2, process_index=rank)
        ranks.append(_evaluation_order(DataLoader(list(range(10)), batch_sampler=shard)).tolist())
    assert ranks == [[0, 1, 2, 3, 8, 9, 0, 1], [4, 5, 6, 7, 2, 3, 4, 5]]
    assert _evaluation_order(object()) is None  # no batch sampler: the loader cannot say
