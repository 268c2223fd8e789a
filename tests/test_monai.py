"""MONAI and pytorch-ignite: the WSCAHandler in a real SupervisedEvaluator, built from a
bundle config next to MONAI's MLFlowHandler, and layer="auto" on MONAI's classifiers."""

import pytest
import torch
from mlflow.tracking import MlflowClient
from monai.bundle import ConfigParser
from monai.data import DataLoader, Dataset, MetaTensor
from monai.engines import SupervisedEvaluator
from monai.networks.nets import DenseNet121, resnet10
from wsca_audit.integrations.ignite import WSCAHandler, read_monai_batch

import wsca_audit as wa
from wsca_audit.primary import head_fingerprint

FAST = {"n_bootstrap": 30, "n_permutations": 30}


@pytest.mark.parametrize(
    ("make", "shape", "head"),
    [
        (lambda: DenseNet121(spatial_dims=2, in_channels=1, out_channels=2), (4, 1, 32, 32),
         "class_layers.out"),
        (lambda: DenseNet121(spatial_dims=3, in_channels=1, out_channels=2), (4, 1, 32, 32, 32),
         "class_layers.out"),
        (lambda: resnet10(spatial_dims=2, n_input_channels=1, num_classes=2), (4, 1, 32, 32), "fc"),
        (lambda: resnet10(spatial_dims=3, n_input_channels=1, num_classes=2), (4, 1, 16, 16, 16),
         "fc"),
    ],
    ids=["densenet121-2d", "densenet121-3d", "resnet-2d", "resnet-3d"],
)  # fmt: skip
def test_layer_auto_finds_the_head_of_monai_classifiers(make, shape, head):
    torch.manual_seed(0)
    net = make().eval()  # random weights: nothing is downloaded
    auditor = wa.Auditor(net, kinds={"site": "categorical"})
    with auditor.collect(), torch.no_grad():
        net(torch.randn(shape))
        auditor.record(targets=[0, 1, 0, 1], metadata={"site": [0, 0, 1, 1]})
    assert auditor.layer_name == head
    module = net.get_submodule(head)
    es = auditor.embeddings()
    assert tuple(es.embeddings.shape) == (4, module.in_features)
    assert es.primary.fingerprint == head_fingerprint(module.weight, module.bias)


def _rows(split, in_meta: bool):
    """MONAI dict rows; the scanner is a batch key, or a DICOM-like MetaTensor field."""
    x = torch.as_tensor(split.eval_x)
    rows = []
    for i in range(len(split.eval_y)):
        scanner = ["GE", "Siemens"][int(split.eval_flags[i])]
        meta = {"Manufacturer": scanner} if in_meta else {}
        row = {"image": MetaTensor(x[i], meta=meta), "label": int(split.eval_y[i])}
        if not in_meta:
            row["Manufacturer"] = scanner
        rows.append(row)
    return rows


def _bundle(uri: str, first: str, close: bool) -> list:
    """The handlers as a bundle's configs/evaluate.json lists them (`_target_`)."""
    config = {
        "wsca": {"_target_": "wsca_audit.integrations.ignite.WSCAHandler",
                 "kinds": {"Manufacturer": "categorical"}, **FAST},
        "mlflow": {"_target_": "MLFlowHandler", "tracking_uri": uri, "iteration_log": False,
                   "close_on_complete": close, "experiment_name": "monai"},
    }  # fmt: skip
    parser = ConfigParser(config)
    handlers = [parser.get_parsed_content(k) for k in ("wsca", "mlflow")]
    return handlers if first == "wsca" else handlers[::-1]


@pytest.mark.parametrize(
    ("bias", "first", "in_meta"),
    [(1.0, "wsca", True), (1.0, "mlflow", False), (0.5, "mlflow", True)],
    ids=["shortcut-wsca-first-meta", "shortcut-mlflow-first-key", "clean-meta"],
)
def test_the_handler_in_a_supervised_evaluator_logs_into_the_mlflow_handlers_run(
    shortcut_model, tmp_path, bias, first, in_meta
):
    net, split = shortcut_model(bias)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    handlers = _bundle(uri, first, close=bias == 1.0)  # the clean case keeps its run open
    wsca = next(h for h in handlers if isinstance(h, WSCAHandler))
    loader = DataLoader(Dataset(_rows(split, in_meta)), batch_size=100)
    evaluator = SupervisedEvaluator(device=torch.device("cpu"), val_data_loader=loader,
                                    network=net.eval(), val_handlers=handlers)  # fmt: skip
    evaluator.run()
    verdict = wsca.result_.verdicts["Manufacturer"]
    assert verdict == "uses" if bias == 1.0 else verdict != "uses"
    assert wsca.result_["n_samples"] == len(split.eval_y)
    assert evaluator.state.metrics["wsca.n_flagged"] == (1.0 if bias == 1.0 else 0.0)
    # one run: MONAI's, holding the wsca.* metrics, the report and the card
    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("monai").experiment_id])
    assert len(runs) == 1 and runs[0].info.run_id == wsca.run_id_
    assert "wsca.Manufacturer.usage" in runs[0].data.metrics
    arts = {a.path for a in client.list_artifacts(wsca.run_id_, "wsca")}
    assert {"wsca/report.json", "wsca/MODEL_CARD.md"} <= arts
    assert not any(m._forward_pre_hooks or m._forward_hooks for m in net.modules())


def test_a_failing_evaluation_leaves_no_hook_and_raises(shortcut_model):
    net, split = shortcut_model(1.0)
    rows = _rows(split, in_meta=False)
    rows[150]["image"] = MetaTensor(torch.zeros(1, 5, 5))  # a broken image in batch 2
    handler = WSCAHandler({"Manufacturer": "categorical"}, log_to_mlflow=False, **FAST)
    evaluator = SupervisedEvaluator(device=torch.device("cpu"), val_handlers=[handler],
                                    val_data_loader=DataLoader(Dataset(rows), batch_size=100),
                                    network=net.eval())  # fmt: skip
    with pytest.raises(RuntimeError):
        evaluator.run()
    assert not any(m._forward_pre_hooks or m._forward_hooks for m in net.modules())
    with pytest.raises(wa.AuditError, match="neither a key of the batch"):
        read_monai_batch({"image": torch.zeros(2, 1, 4, 4), "label": [0, 1]}, ["scanner"])


def test_an_engine_run_for_two_epochs_gets_an_audit_per_epoch():
    """Hooks go on at each epoch start: a second epoch is audited too (it found the hooks
    gone after the first epoch's audit)."""
    from ignite.engine import Engine

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2)).eval()
    x = torch.randn(120, 6)
    batches = [{"image": x[i : i + 40], "label": (x[i : i + 40, 0] > 0).long(),
                "site": (x[i : i + 40, 1] > 0).long()} for i in (0, 40, 80)]  # fmt: skip
    engine = Engine(lambda e, b: net(b["image"]))
    engine.network = net
    handler = WSCAHandler({"site": "categorical"}, log_to_mlflow=False, **FAST)
    handler.attach(engine)
    engine.run(batches, max_epochs=2)
    assert [e for e, _ in handler.results_] == [1, 2]
    assert all(r["n_samples"] == 120 for _, r in handler.results_)
    assert not any(m._forward_pre_hooks or m._forward_hooks for m in net.modules())
