"""The README's main job, end to end: `wsca-audit demo` on real MRI with a pretrained backbone."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from mlflow.tracking import MlflowClient

import wsca_audit as wa


@pytest.mark.slow
def test_demo_tells_the_two_models_apart(tmp_path):
    exe = Path(sys.executable).with_name("wsca-audit")
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    out = subprocess.run(
        [str(exe), "demo", "--out", str(tmp_path), "--n-resamples", "60", "--quiet"],
        capture_output=True, text=True, timeout=600, env=env,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "verdicts tell the two models apart: yes" in out.stdout
    assert f"mlflow ui --backend-store-uri sqlite:///{tmp_path.resolve()}/mlflow.db" in out.stdout

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    exp = client.get_experiment_by_name("wsca-demo")
    runs = {r.info.run_name: r for r in client.search_runs([exp.experiment_id])}
    assert set(runs) == {"br35h-clean", "br35h-shortcut"}
    assert runs["br35h-shortcut"].data.tags["wsca.verdict.scanner"] == "uses"
    assert runs["br35h-clean"].data.tags["wsca.verdict.scanner"] != "uses"
    assert runs["br35h-shortcut"].data.metrics["wsca.scanner.usage"] > 0.25
    for name in ("clean", "shortcut"):
        run = runs[f"br35h-{name}"]
        arts = {a.path for a in client.list_artifacts(run.info.run_id, "wsca")}
        assert {"wsca/report.json", "wsca/MODEL_CARD.md", "wsca/MODEL_CARD.html"} <= arts
        card = (tmp_path / name / "card" / "MODEL_CARD.md").read_text()
        front = yaml.safe_load(card.split("---\n")[1])
        assert front["wsca"]["mlflow_run_id"] == run.info.run_id
        saved = wa.AuditResult.load(tmp_path / name)
        assert (
            saved.to_dict()
            == wa.load_from_mlflow(
                run.info.run_id, tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}"
            ).to_dict()
        )
        assert set(saved.tasks) == {"scanner", "source_square", "head_fraction"}
        assert set(saved.evidence) == {"roi_masking", "interventions"}
        assert "figures/evidence/interventions/scanner/intervention.png" in {
            a.path.removeprefix("wsca/")
            for a in client.list_artifacts(
                run.info.run_id, "wsca/figures/evidence/interventions/scanner"
            )
        }
    # input-side evidence agrees with the weight-space verdicts
    effect = {
        n: runs[f"br35h-{n}"].data.metrics["wsca.intervention.scanner.effect"]
        for n in ("clean", "shortcut")
    }
    assert effect["shortcut"] > 0.3 > abs(effect["clean"])
    kept = {
        n: wa.AuditResult.load(tmp_path / n).evidence["roi_masking"]["fill_noise"]["roi_removed"][
            "retained"
        ]["value"]
        for n in ("clean", "shortcut")
    }
    assert kept["shortcut"] > kept["clean"] + 0.3
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == [
        "head-clean-v1-s0.pt", "head-shortcut-v1-s0.pt"
    ]  # fmt: skip
