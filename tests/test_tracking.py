"""MLflow logging against a real `mlflow server` and the local sqlite store."""

import json
import re
import warnings
from pathlib import Path

import mlflow
import pytest
from mlflow.tracking import MlflowClient

import wsca_audit as wa
from wsca_audit.cli import main as cli
from wsca_audit.tracking import PENDING_NOTE, mlflow_payload, sanitize_name, task_keys

VALID = re.compile(r"^[A-Za-z0-9_./ -]+$")


@pytest.mark.parametrize(
    ("name", "expected"),
    [("scanner", "scanner"), ("scanner id/ü", "scanner_id_"), ("../../x", "x"), ("...", "task"),
     ("a..b", "a.b"), ("Age (years)", "Age_years_")],
)  # fmt: skip
def test_sanitize_name(name, expected):
    assert sanitize_name(name) == expected


def test_task_keys_are_unique_and_stable():
    keys = task_keys(["a b", "a/b", "a_b", "c"])
    assert keys == {"a b": "a_b", "a/b": "a_b_2", "a_b": "a_b_3", "c": "c"}
    assert task_keys(["a b", "a/b", "a_b", "c"]) == keys


def test_payload_names_are_valid_mlflow_names(small_result):
    metrics, params, tags = mlflow_payload(small_result)
    for key in [*metrics, *params, *tags]:
        assert VALID.match(key), key
    for measure in ("usage", "wsc", "encoding"):
        for suffix in ("", "_ci_low", "_ci_high"):
            assert f"wsca.scanner_id_.{measure}{suffix}" in metrics
    assert "wsca.ink.usage_p_value" in metrics and "wsca.primary.auc" in metrics
    assert tags["wsca.task.scanner_id_"] == "scanner id/ü"
    assert tags["wsca.verdict.ink"] == small_result.verdicts["ink"]
    assert params["wsca.thresholds.usage"] == "0.25"


def test_log_to_real_server_and_read_back_over_rest(small_result, mlflow_server):
    run_id = wa.log_to_mlflow(
        small_result, tracking_uri=mlflow_server.uri, experiment_name="wsca-tests", run_name="rest"
    )
    assert run_id
    run = mlflow_server.get("api/2.0/mlflow/runs/get", run_id=run_id)["run"]
    metrics = {m["key"]: m["value"] for m in run["data"]["metrics"]}
    tags = {t["key"]: t["value"] for t in run["data"]["tags"]}
    params = {p["key"]: p["value"] for p in run["data"]["params"]}
    usage = small_result.tasks["scanner id/ü"]["usage"]
    assert metrics["wsca.scanner_id_.usage"] == pytest.approx(usage["value"])
    assert metrics["wsca.scanner_id_.usage_ci_low"] == pytest.approx(usage["ci_low"])
    assert tags["wsca.verdict.scanner_id_"] == small_result.verdicts["scanner id/ü"]
    assert params["wsca.n_bootstrap"] == "30"
    assert run["info"]["status"] == "FINISHED"
    listed = mlflow_server.get("api/2.0/mlflow/artifacts/list", run_id=run_id, path="wsca")
    names = {f["path"] for f in listed["files"]}
    assert {"wsca/report.json", "wsca/report.html", "wsca/figures"} <= names
    body = mlflow_server.get("get-artifact", run_id=run_id, path="wsca/report.json")
    assert json.loads(body) == small_result.to_dict()
    back = wa.load_from_mlflow(run_id, tracking_uri=mlflow_server.uri)
    assert back.to_dict() == small_result.to_dict()


def test_the_run_reads_at_a_glance_over_rest(small_result, mlflow_server):
    """Description, headline metrics, no noise tags; a user's own description is kept."""
    run_id = wa.log_to_mlflow(small_result, tracking_uri=mlflow_server.uri,
                              experiment_name="wsca-tests", run_name="glance")  # fmt: skip
    run = mlflow_server.get("api/2.0/mlflow/runs/get", run_id=run_id)["run"]
    metrics = {m["key"]: m["value"] for m in run["data"]["metrics"]}
    tags = {t["key"]: t["value"] for t in run["data"]["tags"]}
    note = tags["mlflow.note.content"]
    assert note.startswith("WSCA audit:") and "\n" not in note
    flagged = [n for n, v in small_result.verdicts.items() if v == "uses"]
    assert metrics["wsca.n_flagged"] == len(flagged)
    assert ("FLAGGED" in note) == bool(flagged)
    assert ("wsca.flagged" in tags) == bool(flagged)
    assert metrics["wsca.max_usage"] == pytest.approx(
        max(t["usage"]["value"] for t in small_result.tasks.values())
    )
    worst = small_result.performance["worst_group"]
    assert metrics["wsca.worst_group.auc"] == pytest.approx(worst["value"])
    assert "wsca.task.ink" not in tags  # its key is its name: no tag needed
    assert tags["wsca.task.scanner_id_"] == "scanner id/ü"
    assert (
        float({p["key"]: p["value"] for p in run["data"]["params"]}["wsca.pca_variance_explained"])
        <= 1.0
    )

    from mlflow.tracking import MlflowClient

    client = MlflowClient(mlflow_server.uri)
    own = client.create_run(run["info"]["experiment_id"], tags={"mlflow.note.content": "mine"})
    wa.log_to_mlflow(small_result, own.info.run_id, tracking_uri=mlflow_server.uri)
    assert client.get_run(own.info.run_id).data.tags["mlflow.note.content"] == "mine"


def test_log_into_active_run_of_local_store(small_result, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    try:
        with mlflow.start_run() as active:
            run_id = wa.log_to_mlflow(small_result, step=3)
        assert run_id == active.info.run_id
        hist = MlflowClient().get_metric_history(run_id, "wsca.ink.usage")
        assert [m.step for m in hist] == [3]
        assert wa.load_from_mlflow(run_id).verdicts == small_result.verdicts
    finally:
        mlflow.set_tracking_uri(None)


def test_the_model_card_is_logged_as_markdown_and_html(small_result, tmp_path):
    """MLflow's artifact viewer showed the card's front matter as a jumbled list: the
    library logs the HTML too, named after the run."""
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    run_id = wa.log_to_mlflow(small_result, tracking_uri=store, run_name="resnet-site-a")
    client = MlflowClient(store)
    arts = {a.path for a in client.list_artifacts(run_id, "wsca")}
    assert {"wsca/MODEL_CARD.md", "wsca/MODEL_CARD.html", "wsca/MODEL_CARD_figures"} <= arts
    local = Path(client.download_artifacts(run_id, "wsca", str(tmp_path / "dl")))
    html = (local / "MODEL_CARD.html").read_text()
    assert "resnet-site-a" in html and run_id in html and "<img" in html
    assert f"mlflow_run_id: {run_id}" in (local / "MODEL_CARD.md").read_text()
    # off on request; a card of the caller's own (extra_dir) is logged instead
    bare = wa.log_to_mlflow(small_result, tracking_uri=store, model_card=False)
    assert "wsca/MODEL_CARD.md" not in {a.path for a in client.list_artifacts(bare, "wsca")}
    own = tmp_path / "own"
    own.mkdir()
    (own / "MODEL_CARD.md").write_text("my card")
    mine = wa.log_to_mlflow(small_result, tracking_uri=store, extra_dir=own)
    got = Path(client.download_artifacts(mine, "wsca/MODEL_CARD.md", str(tmp_path / "dl2")))
    assert got.read_text() == "my card"


def test_second_audit_into_same_run_keeps_params_and_warns(small_result, mlflow_server):
    run_id = wa.log_to_mlflow(small_result, tracking_uri=mlflow_server.uri)
    report = small_result.to_dict()
    report["settings"]["n_bootstrap"] = 99
    with pytest.warns(wa.AuditWarning, match="n_bootstrap"):
        again = wa.log_to_mlflow(
            wa.AuditResult(report), run_id, tracking_uri=mlflow_server.uri, step=1
        )
    assert again == run_id
    run = MlflowClient(mlflow_server.uri).get_run(run_id)
    assert run.data.params["wsca.n_bootstrap"] == "30"


def test_unreachable_server_keeps_report_then_cli_uploads(small_result, tmp_path, mlflow_server):
    from conftest import _free_port

    dead = f"http://127.0.0.1:{_free_port()}"
    with pytest.warns(wa.AuditWarning, match="wsca-audit log") as rec:
        got = wa.log_to_mlflow(
            small_result, tracking_uri=dead, experiment_name="later", fallback_dir=tmp_path / "p"
        )
    assert got is None
    (pending,) = (tmp_path / "p").iterdir()
    assert str(pending) in str(rec[0].message)
    assert wa.AuditResult.load(pending).to_dict() == small_result.to_dict()
    assert json.loads((pending / PENDING_NOTE).read_text())["tracking_uri"] == dead

    # still down: a clear error (exit 3), nothing deleted
    assert cli(["log", str(pending)]) == 3
    assert (pending / "report.json").is_file()
    # back (here: another server): upload to it
    assert cli(["log", str(pending), "--tracking-uri", mlflow_server.uri]) == 0
    client = MlflowClient(mlflow_server.uri)
    exp = client.get_experiment_by_name("later")
    (run,) = client.search_runs([exp.experiment_id])
    assert run.data.metrics["wsca.ink.usage"] == pytest.approx(
        small_result.tasks["ink"]["usage"]["value"]
    )
    assert "mlflow-target.json" not in {
        f.path.split("/")[-1] for f in client.list_artifacts(run.info.run_id, "wsca")
    }


def test_load_from_mlflow_errors_are_audit_errors(mlflow_server):
    with pytest.raises(wa.AuditError, match=r"could not read wsca/report\.json"):
        wa.load_from_mlflow("0" * 32, tracking_uri=mlflow_server.uri)


def test_log_to_mlflow_rejects_non_results():
    with warnings.catch_warnings(), pytest.raises(wa.AuditError, match="expects an AuditResult"):
        wa.log_to_mlflow({"schema_version": 1})


def test_a_run_half_made_by_a_failed_upload_is_removed(small_result, tmp_path, monkeypatch):
    """A failure after the run was created left it RUNNING, and the retry made a second."""
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"

    def broken(self, *a, **k):
        raise ConnectionError("artifact store went away")

    monkeypatch.setattr(MlflowClient, "log_artifacts", broken)
    with pytest.warns(wa.AuditWarning, match="wsca-audit log"):
        got = wa.log_to_mlflow(small_result, tracking_uri=store, experiment_name="e",
                               fallback_dir=tmp_path / "p")  # fmt: skip
    assert got is None and len(list((tmp_path / "p").iterdir())) == 1
    client = MlflowClient(store)
    exp = client.get_experiment_by_name("e")
    assert client.search_runs([exp.experiment_id]) == []  # nothing RUNNING left behind


def test_logging_draws_each_figure_once_for_report_and_card(small_result, tmp_path, monkeypatch):
    """The card re-drew what the report had drawn: figures are drawn once per result."""
    import wsca_audit.report as report

    drawn = []
    original = report.summary_figure
    monkeypatch.setattr(
        report, "summary_figure", lambda *a, **k: drawn.append(1) or original(*a, **k)
    )
    res = wa.AuditResult(small_result.to_dict())
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    run_id = wa.log_to_mlflow(res, tracking_uri=store)
    arts = {a.path for a in MlflowClient(store).list_artifacts(run_id, "wsca/figures")}
    assert "wsca/figures/wsca_summary.png" in arts
    assert drawn == [1]


def test_mitigation_payload_logs_worst_group_and_its_older_name():
    from types import SimpleNamespace

    from wsca_audit.tracking import mitigation_payload

    worst = {"level": "1", "n": 40, "value": 0.7, "ci_low": 0.6, "ci_high": 0.8}
    side = {"verdict": "x", "usage": None, "effect": {"value": 0.1}, "reason": "",
            "performance": {"metric": "auc", "overall": {"value": 0.9}, "worst_level": worst}}  # fmt: skip
    new_side = {**side, "performance": {**side["performance"], "worst_group": worst}}
    for before in (side, new_side):  # a Mitigation of before and after the renaming
        m = SimpleNamespace(
            variable="site", method="erase", model=None, settings_={"n_holdout": 10},
            to_dict=lambda b=before: {"before": b, "after": b, "cost": {"metric": "auc", "value": 0}},
        )  # fmt: skip
        metrics, tags = mitigation_payload(m)
        ends = {"": "value", "_ci_low": "ci_low", "_ci_high": "ci_high"}
        for word in ("worst_group", "worst_level"):
            for suffix, field in ends.items():
                assert metrics[f"wsca.mitigation.after.{word}.auc{suffix}"] == worst[field]
        assert tags["wsca.mitigation.patched"] == "false"


def test_the_audit_set_is_the_runs_dataset_input(small_result, tmp_path):
    """The runs table's Dataset column shows what was audited: an input of context
    'audit' named by its size, with the digest of the samples and targets."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    run_id = wa.log_to_mlflow(small_result, tracking_uri=uri, experiment_name="inputs")
    inputs = MlflowClient(uri).get_run(run_id).inputs.dataset_inputs
    assert len(inputs) == 1
    ds, tags = inputs[0].dataset, {t.key: t.value for t in inputs[0].tags}
    assert ds.digest == small_result["data"]["digest"]
    assert ds.name == f"wsca-audit-{small_result['n_samples']}"
    assert tags["mlflow.data.context"] == "audit"
