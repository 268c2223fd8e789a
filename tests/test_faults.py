"""Faults: unreadable reports, read-only and full folders, a real MLflow server killed mid-logging."""

import errno
import json
import subprocess
import sys
from pathlib import Path

import pytest
from _reliability import BASE_REPORT

import wsca_audit as wa


def test_read_only_and_full_output_directories_give_clear_errors(monkeypatch, tmp_path):
    res = BASE_REPORT
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

    # MLflow's retry back-off (seconds per failed call) is not what this test is about
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "0")
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
            wa.log_to_mlflow(BASE_REPORT, run_id, tracking_uri=server.uri, fallback_dir=pending)
            is None
        )
    monkeypatch.undo()
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "0")
    (saved,) = list(pending.iterdir())
    assert wa.AuditResult.load(saved).verdicts == BASE_REPORT.verdicts  # nothing lost
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
        assert run.data.tags["wsca.verdict.site"] == BASE_REPORT.verdicts["site"]
        arts = {a.path for a in MlflowClient(restarted.uri).list_artifacts(run_id, "wsca")}
        assert "wsca/report.json" in arts
    finally:
        restarted.kill()
