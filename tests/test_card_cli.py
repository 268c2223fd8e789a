"""Model cards (Markdown + YAML front matter + HTML) and the `wsca-audit` command."""

import subprocess
import sys

import pytest
import yaml

import wsca_audit as wa
from wsca_audit.cli import main as cli


def _front_matter(text):
    assert text.startswith("---\n")
    head, body = text[4:].split("\n---\n", 1)
    return yaml.safe_load(head), body


def test_card_front_matter_is_model_index_yaml(small_result, tmp_path):
    path = wa.write_model_card(
        small_result, tmp_path / "CARD.md", model_name="digits-net", license="apache-2.0",
        intended_use="Research only.", run_id="abc123",
    )  # fmt: skip
    front, body = _front_matter(path.read_text())
    assert front["license"] == "apache-2.0"
    (entry,) = front["model-index"]
    assert entry["name"] == "digits-net"
    # subgroup metrics share the type "auc": the name tells them apart (and holds no verdict)
    metrics = {m["name"]: m for m in entry["results"][0]["metrics"]}
    assert metrics["primary auc"]["type"] == "auc"
    assert metrics["primary auc"]["value"] == pytest.approx(
        small_result["primary"]["metric"]["value"]
    )
    usage = metrics["WSCA usage (scanner id/ü)"]
    assert usage["type"] == "wsca_usage_scanner_id_"
    assert not any("verdict" in name for name in metrics)
    assert front["library_name"] == "pytorch" and front["pipeline_tag"] == "image-classification"
    level = next(iter(small_result.performance["by_group"]["scanner id/ü"]))
    assert metrics[f"AUC (scanner id/ü={level})"]["value"] == pytest.approx(
        small_result.performance["by_group"]["scanner id/ü"][level]["auc"]["value"]
    )
    assert usage["value"] == pytest.approx(small_result.tasks["scanner id/ü"]["usage"]["value"])
    assert front["wsca"]["verdicts"] == small_result.verdicts
    assert front["wsca"]["mlflow_run_id"] == "abc123"
    for section in ("Audit outcome", "Model details", "Intended use", "Factors", "Metrics",
                    "Evaluation data", "Quantitative analyses", "What the verdicts mean",
                    "Quantitative analyses by subgroup", "Caveats and recommendations"):  # fmt: skip
        assert f"## {section}\n" in body
    assert "`scanner id/ü`" in body and "Research only." in body and "abc123" in body
    assert "](CARD_figures/wsca_summary.png)" in body
    assert (tmp_path / "CARD_figures" / "wsca_summary.png").read_bytes()[:4] == b"\x89PNG"
    assert "](CARD_figures/performance.png)" in body
    assert small_result.headline() in body
    html = path.with_suffix(".html").read_text()
    assert "data:image/png;base64," in html and "<h2>Quantitative analyses</h2>" in html


def test_card_escapes_html_in_names(tmp_path, small_result):
    rep = small_result.to_dict()
    rep["tasks"] = {"<script>x</script>": rep["tasks"]["ink"]}
    wa.write_model_card(wa.AuditResult(rep), tmp_path / "c.md")
    html = (tmp_path / "c.html").read_text()
    assert "<script>x" not in html and "&lt;script&gt;" in html


def test_card_rejects_non_result(tmp_path):
    with pytest.raises(wa.AuditError):
        wa.write_model_card({"tasks": {}}, tmp_path / "c.md")


def test_cli_report_and_fail_on(small_result, tmp_path, capsys):
    small_result.save(tmp_path / "rep")
    assert cli(["report", str(tmp_path / "rep")]) == 0
    assert "scanner id/ü" in capsys.readouterr().out
    verdicts = set(small_result.verdicts.values())
    assert cli(["report", str(tmp_path / "rep"), "--fail-on", next(iter(verdicts))]) == 1
    absent = [
        v for v in ("uses", "not_encoded", "inconclusive", "encoded_not_used") if v not in verdicts
    ]
    assert cli(["report", str(tmp_path / "rep"), "--fail-on", absent[0]]) == 0
    assert cli(["report", str(tmp_path / "rep"), "--json"]) == 0
    assert '"schema_version": 1' in capsys.readouterr().out
    (tmp_path / "bad.json").write_text("{not json")
    assert cli(["report", str(tmp_path / "bad.json")]) == 3
    assert "not valid JSON" in capsys.readouterr().err


def test_cli_card_from_run_states_run_id(small_result, mlflow_server, tmp_path):
    run_id = wa.log_to_mlflow(small_result, tracking_uri=mlflow_server.uri)
    out = tmp_path / "MODEL_CARD.md"
    code = cli(["card", "--run-id", run_id, "--tracking-uri", mlflow_server.uri,
                "--out", str(out), "--model-name", "m"])  # fmt: skip
    assert code == 0
    front, body = _front_matter(out.read_text())
    assert front["wsca"]["mlflow_run_id"] == run_id and f"MLflow run `{run_id}`" in body


def test_console_script_help():
    exe = [sys.executable, "-m", "wsca_audit.cli", "--help"]
    out = subprocess.run(exe, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "usage: wsca-audit" in out.stdout


@pytest.mark.parametrize("command", [["demo"], ["report"], ["card"], ["log"]])
def test_each_command_has_help(command, capsys):
    # in this process: the console script itself is tested above (a process costs 2 s)
    with pytest.raises(SystemExit) as exc:
        cli([*command, "--help"])
    assert exc.value.code == 0
    assert f"usage: wsca-audit {command[0]}" in capsys.readouterr().out


def test_cli_usage_error_exit_code():
    with pytest.raises(SystemExit) as exc:
        cli(["report", "--fail-on", "nonsense", "x"])
    assert exc.value.code == 2


# --------------------------------------------------------------------------- no traps
def _exe():
    from pathlib import Path

    return str(Path(sys.executable).with_name("wsca-audit"))


def test_card_from_a_run_via_the_environment_leaves_no_store_behind(small_result, tmp_path):
    import os

    from mlflow.tracking import MlflowClient

    store = f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}"
    (tmp_path / "store").mkdir()
    client = MlflowClient(store)
    exp = client.create_experiment("cards")
    run = client.create_run(exp, run_name="resnet-v3", tags={"mlflow.note.content": "Ours."})
    client.log_param(run.info.run_id, "lr", "0.001")
    wa.log_to_mlflow(small_result, run.info.run_id, tracking_uri=store)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    out = subprocess.run([_exe(), "card", "--run-id", run.info.run_id], cwd=elsewhere,
                         env={**env, "MLFLOW_TRACKING_URI": store}, capture_output=True,
                         text=True, timeout=300)  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "%" not in out.stdout + out.stderr  # no download progress bar
    card = (elsewhere / "MODEL_CARD.md").read_text()
    assert "# Model card: resnet-v3" in card and "lr=0.001" in card and "Ours." in card
    assert not (elsewhere / "mlflow.db").exists()
    # no store given and none here: the error names the store it looked for, and makes none
    out = subprocess.run([_exe(), "card", "--run-id", run.info.run_id], cwd=elsewhere, env=env,
                         capture_output=True, text=True, timeout=300)  # fmt: skip
    assert out.returncode == 3
    assert f"no MLflow store at {elsewhere / 'mlflow.db'}" in out.stderr.replace("\n", " ") or (
        "no MLflow store at mlflow.db" in out.stderr
    )
    assert "Traceback" not in out.stderr
    assert not (elsewhere / "mlflow.db").exists()


def test_report_json_into_a_closed_pipe_and_a_parent_folder(small_result, tmp_path):
    small_result.save(tmp_path / "demo" / "clean")
    small_result.save(tmp_path / "demo" / "shortcut")
    out = subprocess.run(f"'{_exe()}' report --json '{tmp_path / 'demo' / 'clean'}' | head -n 1",
                         shell=True, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert out.stdout.strip() == "{" and "Traceback" not in out.stderr
    code = cli(["report", str(tmp_path / "demo")])
    assert code == 3
    with pytest.raises(wa.AuditError, match=r"holds reports in: .*demo/clean, .*demo/shortcut"):
        wa.AuditResult.load(tmp_path / "demo")


def test_every_flag_has_help():
    import argparse

    from wsca_audit.cli import build_parser

    missing = []
    parser = build_parser()
    subs = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for name, sub in subs.choices.items():
        for action in sub._actions:
            if not isinstance(action, argparse._HelpAction) and not action.help:
                missing.append(f"{name} {'/'.join(action.option_strings) or action.dest}")
    assert not missing, missing


def test_a_ci_gate_behind_a_closed_pipe_still_fails(small_result, tmp_path):
    """`set -o pipefail; wsca-audit report DIR --fail-on V | head -1` with more output than
    a pipe holds: the reader leaves early, and the gate must still say 1 (it said 0)."""
    big = wa.AuditResult(
        {**small_result.to_dict(), "warnings": [f"warning {i}: " + "x" * 200 for i in range(2000)]}
    )
    big.save(tmp_path / "rep")
    assert len(big.summary()) > 2**17  # more than a pipe holds
    verdict = next(iter(big.verdicts.values()))
    cmd = f"set -o pipefail; '{_exe()}' report '{tmp_path / 'rep'}' --fail-on {verdict} | head -1"
    out = subprocess.run(["bash", "-c", cmd], capture_output=True, text=True, timeout=300)
    assert out.returncode == 1, out.stderr
    assert "Traceback" not in out.stderr and f"--fail-on {verdict}" in out.stderr
