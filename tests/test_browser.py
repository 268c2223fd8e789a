"""A real browser (Debian's headless chromium) on the MLflow UI and on a model card."""

import os
import re
import shutil

from conftest import run_browser

import wsca_audit as wa


def test_mlflow_ui_shows_wsca_metrics_and_report(small_result, mlflow_server, tmp_path):
    run_id = wa.log_to_mlflow(small_result, tracking_uri=mlflow_server.uri, experiment_name="ui")
    exp = mlflow_server.get("api/2.0/mlflow/experiments/get-by-name", experiment_name="ui")
    page = f"{mlflow_server.uri}/#/experiments/{exp['experiment']['experiment_id']}/runs/{run_id}"
    shot = tmp_path / "mlflow-run.png"
    dom = run_browser(page, dump_dom=True, screenshot=shot)
    for name in ("wsca.scanner_id_.usage", "wsca.ink.encoding", "wsca.primary.auc"):
        assert name in dom, name
    assert re.search(r"wsca\.verdict\.ink", dom)
    assert shot.stat().st_size > 10_000
    artifacts = run_browser(page + "/artifacts/wsca/report.json", dump_dom=True)
    assert "report.json" in artifacts and "report.html" in artifacts
    assert "schema_version" in artifacts  # the JSON preview is rendered
    # the runs table's Dataset column names the audit set (context "audit")
    table = tmp_path / "mlflow-runs.png"
    runs = run_browser(f"{mlflow_server.uri}/#/experiments/{exp['experiment']['experiment_id']}/runs",
                       dump_dom=True, screenshot=table)  # fmt: skip
    assert f"wsca-audit-{small_result['n_samples']}" in runs
    if os.environ.get("WSCA_KEEP_SCREENSHOTS"):  # to look at them
        shutil.copy(table, os.environ["WSCA_KEEP_SCREENSHOTS"])


def test_model_card_html_renders_without_broken_images(small_result, tmp_path):
    card = wa.write_model_card(small_result, tmp_path / "MODEL_CARD.md", model_name="m")
    html = card.with_suffix(".html")
    # a copy with a probe that counts images which failed to load
    probe = html.read_text().replace(
        "</body>",
        "<script>window.addEventListener('load',()=>{const b=[...document.images].filter("
        "i=>!(i.complete&&i.naturalWidth>0)).length;document.body.setAttribute('data-broken',b);"
        "document.body.setAttribute('data-images',document.images.length)})</script></body>",
    )
    probed = tmp_path / "probe.html"
    probed.write_text(probe)
    dom = run_browser(probed.as_uri(), dump_dom=True, budget_ms=5000)
    assert 'data-images="2"' in dom and 'data-broken="0"' in dom  # summary + subgroups
    png = tmp_path / "card.png"
    run_browser(html.as_uri(), screenshot=png, budget_ms=5000)
    assert png.read_bytes()[:4] == b"\x89PNG" and png.stat().st_size > 20_000
