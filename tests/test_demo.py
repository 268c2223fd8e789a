"""The README's main job, end to end: `wsca-audit demo` on real MRI with a pretrained backbone."""

import html
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from conftest import MlflowServer, run_browser
from mlflow.tracking import MlflowClient

import wsca_audit as wa
from wsca_audit.demo import mri


@pytest.mark.slow
def test_demo_tells_the_two_models_apart(tmp_path):
    exe = Path(sys.executable).with_name("wsca-audit")
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    out = subprocess.run(
        [str(exe), "demo", "--out", str(tmp_path), "--n-resamples", "60", "--threads", "1",
         "--quiet"],
        capture_output=True, text=True, timeout=600, env=env,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "verdicts tell the two models apart: yes" in out.stdout
    assert f"mlflow ui --backend-store-uri sqlite:///{tmp_path.resolve()}/mlflow.db" in out.stdout

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    exp = client.get_experiment_by_name("wsca-demo")
    every = client.search_runs([exp.experiment_id])
    runs = {r.info.run_name: r for r in every if "mlflow.parentRunId" not in r.data.tags}
    assert set(runs) == {"br35h-clean", "br35h-shortcut"}
    # from finding to fix: the flagged model is mitigated in a child run of its audit run
    (child,) = [r for r in every if "mlflow.parentRunId" in r.data.tags]
    assert child.data.tags["mlflow.parentRunId"] == runs["br35h-shortcut"].info.run_id
    assert child.info.status == "FINISHED" and child.info.run_name == "mitigate-scanner-erase"
    assert child.data.tags["wsca.mitigation.verdict_before"] == "uses"
    assert child.data.tags["wsca.mitigation.verdict_after"] != "uses"
    assert "wsca/mitigation/head.safetensors" in {
        a.path for a in client.list_artifacts(child.info.run_id, "wsca/mitigation")
    }
    # ... checked by intervention on held-out images: the marker's effect is gone
    fixed = json.loads((tmp_path / "shortcut" / "mitigation" / "mitigation.json").read_text())
    assert fixed["patched"] and fixed["after"]["verdict"] != "uses"
    effect = child.data.metrics["wsca.intervention.scanner.effect"]
    assert (
        abs(effect) < 0.3 * runs["br35h-shortcut"].data.metrics["wsca.intervention.scanner.effect"]
    )
    # ... and on the image: the child run holds the patched model's Captum maps, whose
    # share on the marker is below the original's (the parent run's)
    marker = "wsca.attribution.LayerGradCam.region.scanner_marker"
    parent = runs["br35h-shortcut"].data.metrics
    assert child.data.metrics[marker] < parent[marker]
    assert "wsca/figures/evidence/attribution/LayerGradCam" in {
        a.path
        for a in client.list_artifacts(child.info.run_id, "wsca/figures/evidence/attribution")
    }
    card_text = (tmp_path / "shortcut" / "card" / "MODEL_CARD.md").read_text()
    assert "## Mitigation" in card_text
    assert "LayerGradCam: attribution share in 'scanner marker'" in card_text
    assert "from finding to fix: wa.mitigate" in out.stdout
    assert runs["br35h-shortcut"].data.tags["wsca.verdict.scanner"] == "uses"
    assert runs["br35h-clean"].data.tags["wsca.verdict.scanner"] != "uses"
    # decided, ended, and told apart at a glance
    assert runs["br35h-clean"].data.tags["wsca.verdict.scanner"] == "encoded_not_used"
    assert f"export MLFLOW_TRACKING_URI=sqlite:///{tmp_path.resolve()}/mlflow.db" in out.stdout
    for name, run in runs.items():
        assert run.info.status == "FINISHED", name
        note = run.data.tags["mlflow.note.content"]
        assert note.startswith("WSCA audit:")
        assert ("FLAGGED - the head uses scanner" in note) == (name == "br35h-shortcut")
    assert runs["br35h-shortcut"].data.metrics["wsca.n_flagged"] >= 1
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
        assert set(saved.evidence) == {"attribution", "roi_masking", "interventions"}
        assert set(saved.evidence["attribution"]) == {"LayerGradCam", "InputXGradient"}
        figs = {
            a.path.removeprefix("wsca/")
            for sub in ("", "/overlays")
            for a in client.list_artifacts(
                run.info.run_id, f"wsca/figures/evidence/attribution/LayerGradCam{sub}"
            )
        }
        assert {
            "figures/evidence/attribution/LayerGradCam/overlays/all.png",
            "figures/evidence/attribution/LayerGradCam/share_of_positive_attribution_per_region.png",
        } <= figs
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
    # Captum maps (read back from the runs): the shortcut model looks at the marker more
    # than the clean one, and the clean model's mass sits inside the head
    m = {n: runs[f"br35h-{n}"].data.metrics for n in ("clean", "shortcut")}
    marker = "wsca.attribution.LayerGradCam.region.scanner_marker"
    assert m["shortcut"][f"{marker}_ci_low"] > m["clean"][f"{marker}_ci_high"]
    assert m["clean"]["wsca.attribution.InputXGradient.inside"] > 0.9
    kept = {
        n: wa.AuditResult.load(tmp_path / n).evidence["roi_masking"]["fill_noise"]["roi_removed"][
            "retained"
        ]["value"]
        for n in ("clean", "shortcut")
    }
    assert kept["shortcut"] > kept["clean"] + 0.3
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == [
        "head-clean-v2-s0.pt", "head-shortcut-v2-s0.pt"
    ]  # fmt: skip

    _check_in_the_browser(tmp_path, {n: runs[f"br35h-{n}"] for n in ("clean", "shortcut")})
    _check_reproducible(tmp_path, n_resamples=60, threads=1)


def _check_in_the_browser(out: Path, runs: dict) -> None:
    """What a new user sees: `mlflow ui` on the demo's store, each run's page in chromium
    (status Finished, the one-line description), and the shortcut model's report.
    Screenshots go to ``$WSCA_SCREENSHOTS`` when set (else next to the demo's output)."""
    shots = Path(os.environ.get("WSCA_SCREENSHOTS") or out / "screenshots")
    shots.mkdir(parents=True, exist_ok=True)
    server = MlflowServer(out).start()  # serves the demo's own mlflow.db
    try:
        for name, run in runs.items():
            page = f"{server.uri}/#/experiments/{run.info.experiment_id}/runs/{run.info.run_id}"
            shot = shots / f"demo-mlflow-run-{name}.png"
            dom = run_browser(page, dump_dom=True, screenshot=shot)  # one browser start
            assert "Finished" in dom, name
            note = run.data.tags["mlflow.note.content"]
            assert html.escape(note, quote=False) in dom, name
            assert (name == "shortcut") == ("FLAGGED - the head uses scanner" in dom)
    finally:
        server.kill()
    report = out / "shortcut" / "report.html"
    shot = shots / "demo-report-shortcut.png"
    dom = run_browser(report.as_uri(), dump_dom=True, screenshot=shot, budget_ms=5000)
    assert "FLAGGED" in dom and "br35h-shortcut" in dom
    assert all((shots / f).stat().st_size > 20_000 for f in (
        "demo-mlflow-run-clean.png", "demo-mlflow-run-shortcut.png", "demo-report-shortcut.png"
    ))  # fmt: skip


def _check_reproducible(out: Path, n_resamples: int, threads: int) -> None:
    """Demo runs are reproducible, checked on one run's output (``n_resamples`` and
    ``threads`` as it ran) in about 20 s, without a second run."""
    # The cached heads are in the current format (an older or foreign one would be
    # retrained rather than reused) ...
    cache = out / "cache"
    heads = {n: mri.load_cached_head(mri.head_path(cache, n), seed=0) for n in mri.MODELS}
    assert all(h is not None for h in heads.values())
    # ... training is a function of (features, labels, seed) alone, bitwise: not of the head's
    # earlier weights, the caller's RNG or thread count (and it leaves those two as they were)
    rng = np.random.default_rng(1)
    feats = rng.normal(size=(256, 1280)).astype(np.float32)
    labels = rng.integers(0, 2, 256)
    backbone = mri.demo_backbone()
    trained = []
    with torch.random.fork_rng(devices=[]):  # the test leaves the RNG as it was
        for caller_seed, caller_threads in ((1, 1), (2, 2)):
            torch.manual_seed(caller_seed)
            before = torch.get_num_threads()
            torch.set_num_threads(caller_threads)
            try:
                model = mri.MRIClassifier(backbone)  # its initial head differs each time
                state = torch.random.get_rng_state()
                model = mri.train_head(model, feats, labels, seed=0)
                assert torch.equal(torch.random.get_rng_state(), state)
                assert torch.get_num_threads() == caller_threads
            finally:
                torch.set_num_threads(before)
            trained.append(model.head.state_dict())
    assert trained[0].keys() == trained[1].keys()
    assert all(torch.equal(trained[0][k], trained[1][k]) for k in trained[0])
    assert not torch.are_deterministic_algorithms_enabled()
    # ... and the audit step, re-run in-process on the cached clean head, gives the saved
    # report exactly (all but its run time; the input-side evidence is not re-run)
    model = mri.MRIClassifier(backbone).eval()
    model.head.load_state_dict(heads["clean"])
    with mri.deterministic_torch(0, threads):
        again = mri.audit(
            model,
            mri.make_data(0),
            n_resamples=n_resamples,
            progress=False,
            seed=0,
            name="br35h-clean",
        )
    saved = wa.AuditResult.load(out / "clean").to_dict()
    again = again.to_dict()
    for report in (saved, again):
        report["settings"].pop("runtime_s")
        report.pop("evidence", None)
    assert json.loads(json.dumps(again)) == json.loads(json.dumps(saved))
