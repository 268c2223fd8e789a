"""Distributed evaluation with a real `torchrun --nproc_per_node=2` (gloo, CPU)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import wsca_audit as wa

sys.path.insert(0, str(Path(__file__).parent))
import _torchrun_audit as worker


@pytest.mark.slow
def test_torchrun_gathers_to_rank0_and_equals_the_single_process_audit(tmp_path):
    torchrun = Path(sys.executable).with_name("torchrun")
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env["OMP_NUM_THREADS"] = "1"
    out = subprocess.run(
        [str(torchrun), "--standalone", "--nproc_per_node=2", worker.__file__, str(tmp_path)],
        capture_output=True, text=True, timeout=600, env=env,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    shards = [json.loads((tmp_path / f"rank{r}.json").read_text())["n_local"] for r in (0, 1)]
    assert shards == [899, 899]  # 1,797 samples + 1 duplicate of DistributedSampler padding
    dist_report = json.loads((tmp_path / "report.json").read_text())
    assert not (tmp_path / "mlruns").exists()  # rank 1 did not log

    # the same data in one process, in sample-id order
    x, y, site, ink = worker.data()
    net = worker.model()
    auditor = wa.Auditor(net, kinds={"site": "categorical", "ink": "continuous"})
    with auditor.collect(), torch.no_grad():
        for idx in torch.arange(len(x)).split(128):
            net(x[idx])
            auditor.record(
                targets=y[idx],
                metadata={"site": [site[i] for i in idx], "ink": ink[idx]},
                sample_ids=idx,
            )
    single = auditor.analyze(**worker.SETTINGS).to_dict()
    for rep in (single, dist_report):
        rep["settings"].pop("runtime_s")
    assert dist_report["n_samples"] == 1797
    # equal up to float rounding (the shards' batch sizes differ, so matmuls round differently)
    _assert_same(dist_report, single)
    # MONAI's way: the WSCAHandler on an ignite Engine, under the same torchrun
    ignite = json.loads((tmp_path / "ignite.json").read_text())
    ignite["settings"].pop("runtime_s")
    assert ignite["model"].pop("context")["stage"] == "ignite"
    _assert_same(ignite, single)
    # ranks that disagree are refused, on every rank, with the difference named
    errors = [(tmp_path / f"mismatch{r}.txt").read_text() for r in (0, 1)]
    assert errors[0] == errors[1]
    assert errors[0].startswith(
        "the ranks disagree on kinds.site, settings.seed (kinds.site: rank 0 'categorical', "
        "rank 1 'continuous'; settings.seed: rank 0 0, rank 1 1)"
    )


def _assert_same(a, b, path="report"):
    if isinstance(a, dict):
        assert list(a) == list(b), path
        for k in a:
            _assert_same(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, list):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            _assert_same(x, y, f"{path}[{i}]")
    elif isinstance(a, float) and isinstance(b, float):
        assert a == pytest.approx(b, abs=1e-5), path
    else:
        assert a == b, path


def test_without_a_process_group_gathering_is_a_no_op():
    from wsca_audit.distributed import gather_to_rank0, rank_and_world

    assert rank_and_world() == (0, 1)
    z = torch.ones(3, 2).numpy()
    assert gather_to_rank0(z, {"a": None}) == (z, {"a": None})
