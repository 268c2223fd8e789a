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


def _torchrun(*args: str) -> subprocess.CompletedProcess:
    torchrun = Path(sys.executable).with_name("torchrun")
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env["OMP_NUM_THREADS"] = "1"
    return subprocess.run(
        [str(torchrun), "--standalone", "--nproc_per_node=2", worker.__file__, *args],
        capture_output=True, text=True, timeout=600, env=env,
    )  # fmt: skip


def _single_process_report(order=None, ids: bool = True) -> dict:
    """The same data in one process, in sample-id order (or ``order``, with or without
    the sample ids)."""
    x, y, site, ink = worker.data()
    net = worker.model()
    auditor = wa.Auditor(net, kinds={"site": "categorical", "ink": "continuous"})
    with auditor.collect(), torch.no_grad():
        for idx in (torch.arange(len(x)) if order is None else order).split(128):
            net(x[idx])
            auditor.record(
                targets=y[idx],
                metadata={"site": [site[i] for i in idx], "ink": ink[idx]},
                sample_ids=idx if ids else None,
            )
    return auditor.analyze(**worker.SETTINGS).to_dict()


def _read(path: Path, context: str | None = None) -> dict:
    report = json.loads(path.read_text())
    report["settings"].pop("runtime_s")
    if context:
        assert report["model"].pop("context")["stage"] == context
    return report


@pytest.mark.slow
def test_torchrun_audits_where_the_embeddings_lie_and_equals_one_process(tmp_path):
    out = _torchrun(str(tmp_path))
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    shards = [json.loads((tmp_path / f"rank{r}.json").read_text())["n_local"] for r in (0, 1)]
    assert shards == [899, 899]  # 1,797 samples + 1 duplicate of DistributedSampler padding
    assert not (tmp_path / "mlruns").exists()  # rank 1 holds the result but did not log
    single = _single_process_report()
    assert single["settings"].pop("ranks") == 1
    single["settings"].pop("runtime_s")
    # the default call is sharded: every rank holds the same report, that of one process
    sharded = [_read(tmp_path / f"report{r}.json") for r in (0, 1)]
    assert sharded[0] == sharded[1]
    assert sharded[0]["settings"].pop("ranks") == 2
    assert sharded[0]["n_samples"] == 1797
    # equal up to float rounding (the shards' sums are added in another order)
    _assert_same(sharded[0], single)
    # seed=None draws one seed for every rank: both ranks hold the same audit
    seedless = [_read(tmp_path / f"seedless{r}.json") for r in (0, 1)]
    assert seedless[0] == seedless[1]
    drew = f"seed=None drew seed {seedless[0]['settings']['seed']}"
    assert any(w.startswith(drew) for w in seedless[0]["warnings"])
    # spilled to disk on every rank: the same audit, memory-mapped on each rank (rank 1's
    # shard ends with a DistributedSampler duplicate, which is dropped without a copy)
    for r in (0, 1):
        spilled = _read(tmp_path / f"spill{r}.json")
        assert spilled["settings"].pop("memory_mapped") is True
        assert spilled["settings"].pop("max_memory_mb") == 0.01
        compared = {**sharded[0], "settings": dict(sharded[0]["settings"])}
        compared["settings"].pop("memory_mapped"), compared["settings"].pop("max_memory_mb")
        spilled["settings"].pop("ranks")
        _assert_same(spilled, compared)
    # gather=True: the old path, rank 0 audits alone (rank 1 got None)
    gathered = _read(tmp_path / "gathered.json")
    assert gathered["settings"].pop("ranks") == 1
    _assert_same(gathered, single)
    # MONAI's way: the WSCAHandler on an ignite Engine, under the same torchrun
    for r in (0, 1):
        ignite = _read(tmp_path / f"ignite{r}.json", context="ignite")
        ignite["settings"].pop("ranks")
        _assert_same(ignite, single)
    # Lightning DDP (its own DistributedSampler) with the WSCACallback: the same audit on
    # both ranks, sharded
    lightning = [_read(tmp_path / f"lightning{r}.json", context="validation") for r in (0, 1)]
    assert lightning[0] == lightning[1] and lightning[0]["settings"].pop("ranks") == 2
    _assert_same(lightning[0], single)
    # the HF Trainer under accelerate (its own shards of the evaluation batches, padded at
    # the end from the start) with the WSCATrainerCallback: the same audit, sharded
    trainer = [_read(tmp_path / f"trainer{r}.json", context="evaluate") for r in (0, 1)]
    assert trainer[0] == trainer[1] and trainer[0]["settings"].pop("ranks") == 2
    # net inside the Trainer's calling convention: its head is "net.2" where it was "2"
    assert trainer[0]["model"].pop("class").endswith("Classifier")
    trainer[0] = json.loads(json.dumps(trainer[0]).replace('"net.2"', '"2"'))
    _assert_same(trainer[0], {**single, "model": {k: v for k, v in single["model"].items()
                                                  if k != "class"}})  # fmt: skip
    # without sample ids: every rank's rows in rank order, as one process given them so
    noids = [_read(tmp_path / f"noids{r}.json") for r in (0, 1)]
    assert noids[0] == noids[1] and noids[0]["settings"].pop("ranks") == 2
    n = len(worker.data()[1])
    in_rank_order = torch.cat([torch.arange(0, n, 2), torch.arange(1, n, 2)])
    alone = _single_process_report(in_rank_order, ids=False)
    alone["settings"].pop("ranks"), alone["settings"].pop("runtime_s")
    _assert_same(noids[0], alone)
    # a rank that evaluated nothing (no forward pass) takes part: the audit of rank 0's
    # samples, on both ranks
    empty = [_read(tmp_path / f"empty{r}.json") for r in (0, 1)]
    assert empty[0] == empty[1]
    empty[0]["settings"].pop("ranks")
    _assert_same(empty[0], single)
    # ranks that disagree are refused, on every rank, with the difference named
    errors = [(tmp_path / f"mismatch{r}.txt").read_text() for r in (0, 1)]
    assert errors[0] == errors[1]
    assert errors[0].startswith(
        "the ranks disagree on kinds.site, settings.seed (kinds.site: rank 0 'categorical', "
        "rank 1 'continuous'; settings.seed: rank 0 0, rank 1 1)"
    )


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["dies", "stalls"])
def test_a_rank_that_dies_or_stalls_ends_every_other_rank_with_a_clear_error(tmp_path, kind):
    out = _torchrun(str(tmp_path), "fault", kind)
    report = tmp_path / f"fault-{kind}.json"
    assert report.exists(), out.stdout[-3000:] + out.stderr[-3000:]
    got = json.loads(report.read_text())
    assert got["error"].startswith("rank 0: the audit's all_reduce failed: another rank died")
    assert "dist_timeout=5 s" in got["error"] and "nothing was logged" in got["error"]
    # a death is seen at once (the connection closes), a stall within dist_timeout
    limit = 3 if kind == "dies" else worker.TIMEOUT + 3
    assert got["waited"] < limit


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
        assert a == pytest.approx(b, abs=1e-4), path
    else:
        assert a == b, path


def test_without_a_process_group_gathering_is_a_no_op():
    from wsca_audit.distributed import gather_to_rank0, rank_and_world

    assert rank_and_world() == (0, 1)
    z = torch.ones(3, 2).numpy()
    assert gather_to_rank0(z, {"a": None}) == (z, {"a": None})


def test_a_whole_shard_is_the_identity():
    from wsca_audit.shards import Shard

    shard = Shard.whole(5)
    t = torch.arange(10.0).reshape(5, 2)
    assert shard.sum(t) is t and shard.gather(t) is t and shard.rows(t) is t
    assert shard.is_whole and shard.world == 1 and shard.n_local == 5


def test_a_shard_maps_its_rows_to_the_audit_and_drops_samples():
    from wsca_audit.shards import Shard

    # two ranks' rows in one process: rank 1's view of a 5-sample audit
    shard = Shard(5, [torch.tensor([4, 0]), torch.tensor([2, 1, 3])], rank=1)
    t = torch.arange(5.0) * 10
    assert shard.rows(t).tolist() == [20.0, 10.0, 30.0]
    assert shard.n_local == 3 and shard.world == 2
    kept, local = shard.subset(torch.tensor([True, False, True, True, False]))
    assert kept.n == 3 and local.tolist() == [True, False, True]
    assert [i.tolist() for i in kept.indices] == [[0], [1, 2]]
    with pytest.raises(wa.AuditError, match="exactly once"):
        Shard(3, [torch.tensor([0, 1]), torch.tensor([1])])
