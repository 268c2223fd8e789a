"""Worker for tests/test_distributed.py, started by `torchrun --nproc_per_node=2`.

Each rank evaluates its DistributedSampler shard (padded with a duplicate: 1,797 samples
on 2 ranks) with its own batch size, records sample ids, and calls analyze(): the default
call is sharded and every rank writes the report it holds (report<rank>.json); with
gather=True rank 0 writes the gathered report and the other ranks check that they got
None. Then an ignite Engine with the WSCAHandler, Lightning DDP with the WSCACallback, a
rank with an empty shard, and ranks
that disagree on their settings: each writes the AuditError it got.

``python _torchrun_audit.py OUT fault`` (under torchrun) runs the fault scenarios
instead: a rank that dies in the middle of the audit, one that stalls.
"""

import json
import sys
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

import wsca_audit as wa


def data():
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    x = torch.as_tensor(X / 16.0, dtype=torch.float32)
    site = ["A" if v > 0.3 else "B" for v in x[:, 20].tolist()]  # strings: the JSON path
    ink = x.sum(1)
    return x, torch.as_tensor(y >= 5).long(), site, ink


def model():
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Linear(64, 16), torch.nn.ReLU(), torch.nn.Linear(16, 2)
    ).eval()


SETTINGS = dict(n_bootstrap=40, n_permutations=40, progress=False, device="cpu", seed=3)


def main(out: Path) -> None:
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    x, y, site, ink = data()
    net = model()
    ds = TensorDataset(torch.arange(len(x)))
    sampler = DistributedSampler(ds, shuffle=True, seed=1, drop_last=False)
    loader = DataLoader(ds, batch_size=64 if rank == 0 else 50, sampler=sampler)
    auditor = wa.Auditor(net, kinds={"site": "categorical", "ink": "continuous"})
    with auditor.collect(), torch.no_grad():
        for (idx,) in loader:
            net(x[idx])
            auditor.record(
                targets=y[idx],
                metadata={"site": [site[i] for i in idx], "ink": ink[idx]},
                sample_ids=idx,
            )
    n_local = auditor.n_recorded
    result = auditor.analyze(**SETTINGS)  # sharded: the embeddings stay on their rank
    (out / f"report{rank}.json").write_text(json.dumps(result.to_dict()))
    logged = wa.log_to_mlflow(result, tracking_uri=(out / "mlruns").as_uri()) if rank else None
    assert logged is None  # rank 1 holds the result but does not log it
    # seed=None: fresh randomness, the same on every rank (one drawn seed)
    seedless = auditor.analyze(**{**SETTINGS, "seed": None})
    (out / f"seedless{rank}.json").write_text(json.dumps(seedless.to_dict()))
    gathered = auditor.analyze(gather=True, **SETTINGS)
    if rank == 0:
        (out / "gathered.json").write_text(json.dumps(gathered.to_dict()))
    else:
        assert gathered is None
    (out / f"rank{rank}.json").write_text(json.dumps({"n_local": n_local}))
    spilled_audit(net, loader, x, y, site, ink, out, rank)
    ignite_audit(net, loader, x, y, site, ink, out, rank)
    lightning_audit(net, x, y, site, ink, out, rank)
    trainer_audit(net, x, y, site, ink, out, rank)
    without_ids(net, x, y, site, ink, out, rank)
    empty_shard(net, x, y, site, ink, out, rank)
    disagreeing_ranks(net, x, y, out, rank)
    dist.barrier()
    dist.destroy_process_group()


def spilled_audit(net, loader, x, y, site, ink, out: Path, rank: int) -> None:
    """The same shards spilled to disk on every rank (``max_memory_mb``): each rank's
    embeddings and working copies stay memory-mapped (spill<rank>.json)."""
    auditor = wa.Auditor(net, kinds={"site": "categorical", "ink": "continuous"},
                         max_memory_mb=0.01)  # fmt: skip
    with auditor.collect(), torch.no_grad():
        for (idx,) in loader:
            net(x[idx])
            auditor.record(targets=y[idx], sample_ids=idx,
                           metadata={"site": [site[i] for i in idx], "ink": ink[idx]})  # fmt: skip
    result = auditor.analyze(**SETTINGS)
    (out / f"spill{rank}.json").write_text(json.dumps(result.to_dict()))
    auditor.reset()


def without_ids(net, x, y, site, ink, out: Path, rank: int) -> None:
    """Rows rank::2 recorded without sample ids: the audit takes every rank's rows, in
    rank order (noids<rank>.json). (A bug: a column that no rank recorded was taken for
    one that every rank did, and the audit found no samples.)"""
    auditor = wa.Auditor(net, kinds={"site": "categorical", "ink": "continuous"})
    with auditor.collect(), torch.no_grad():
        idx = torch.arange(rank, len(x), 2)
        net(x[idx])
        auditor.record(targets=y[idx], metadata={"site": [site[i] for i in idx], "ink": ink[idx]})
    (out / f"noids{rank}.json").write_text(json.dumps(auditor.analyze(**SETTINGS).to_dict()))


def empty_shard(net, x, y, site, ink, out: Path, rank: int) -> None:
    """Rank 0 evaluates every sample, rank 1 none (no forward pass, nothing recorded):
    rank 1 still takes part, and both hold the audit (empty<rank>.json)."""
    auditor = wa.Auditor(net, kinds={"site": "categorical", "ink": "continuous"})
    if rank == 0:
        with auditor.collect(), torch.no_grad():
            for idx in torch.arange(len(x)).split(300):
                net(x[idx])
                auditor.record(targets=y[idx], sample_ids=idx,
                               metadata={"site": [site[i] for i in idx], "ink": ink[idx]})  # fmt: skip
    result = auditor.analyze(**SETTINGS)
    (out / f"empty{rank}.json").write_text(json.dumps(result.to_dict()))


def disagreeing_ranks(net, x, y, out: Path, rank: int) -> None:
    """Ranks that disagree on the seed and a metadata kind: every rank raises the same
    AuditError before any data moves (written to mismatch<rank>.txt)."""
    kinds = {"site": "categorical" if rank == 0 else "continuous"}
    auditor = wa.Auditor(net, kinds=kinds)
    with auditor.collect(), torch.no_grad():
        net(x[:50])
        auditor.record(targets=y[:50], metadata={"site": (x[:50, 20] > 0.3).long()})
    try:
        auditor.analyze(**{**SETTINGS, "seed": rank})
    except wa.AuditError as exc:
        (out / f"mismatch{rank}.txt").write_text(str(exc))


def ignite_audit(net, loader, x, y, site, ink, out: Path, rank: int) -> None:
    """The same shards through an ignite Engine with the WSCAHandler (MONAI-style dict
    batches, sample ids under "id"): every rank writes the report its handler holds."""
    from ignite.engine import Engine
    from wsca_audit.integrations.ignite import WSCAHandler

    def step(engine, batch):
        with torch.no_grad():
            return net(batch["image"])

    def as_dicts(loader):
        for (idx,) in loader:
            yield {"image": x[idx], "label": y[idx], "site": [site[i] for i in idx],
                   "ink": ink[idx], "id": idx}  # fmt: skip

    engine = Engine(step)
    engine.network = net
    handler = WSCAHandler({"site": "categorical", "ink": "continuous"}, ids_key="id",
                          log_to_mlflow=False, **SETTINGS)  # fmt: skip
    handler.attach(engine)
    engine.run(list(as_dicts(loader)), max_epochs=1)
    (out / f"ignite{rank}.json").write_text(json.dumps(handler.result_.to_dict()))


def lightning_audit(net, x, y, site, ink, out: Path, rank: int) -> None:
    """Lightning DDP under the same torchrun (Lightning finds the torchelastic
    environment and the process group, and shards the validation set itself): every rank
    writes the report its WSCACallback holds (lightning<rank>.json)."""
    import lightning
    from wsca_audit.integrations.lightning import WSCACallback

    class Digits(torch.utils.data.Dataset):
        def __len__(self):
            return len(x)

        def __getitem__(self, i):
            return {"image": x[i], "label": y[i], "site": site[i], "ink": ink[i], "id": i}

    class Module(lightning.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = net

        def validation_step(self, batch, batch_idx):
            return self.net(batch["image"])

    callback = WSCACallback({"site": "categorical", "ink": "continuous"}, module="net",
                            ids_fn=lambda batch: batch["id"], **SETTINGS)  # fmt: skip
    trainer = lightning.Trainer(
        accelerator="cpu", devices=2, strategy="ddp", callbacks=[callback], logger=False,
        enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False,
    )  # fmt: skip
    loader = DataLoader(Digits(), batch_size=100 if rank == 0 else 70)
    trainer.validate(Module(), dataloaders=loader, verbose=False)
    (out / f"lightning{rank}.json").write_text(json.dumps(callback.last_result_.to_dict()))


def trainer_audit(net, x, y, site, ink, out: Path, rank: int) -> None:
    """The HF Trainer under the same torchrun (accelerate shards the evaluation batches
    itself, rank r taking batches r, r + 2, ..., the last padded from the start): every
    rank writes the report its WSCATrainerCallback holds (trainer<rank>.json)."""
    import tempfile

    from transformers import Trainer, TrainingArguments
    from wsca_audit.integrations.transformers import WSCATrainerCallback

    class Classifier(torch.nn.Module):  # the Trainer's calling convention around net
        def __init__(self):
            super().__init__()
            self.net = net

        def forward(self, x, labels=None):
            logits = self.net(x)
            return {"loss": torch.nn.functional.cross_entropy(logits, labels), "logits": logits}

    rows = [{"x": x[i], "labels": int(y[i])} for i in range(len(x))]
    columns = {"labels": y.numpy(), "site": np.array(site), "ink": ink.numpy()}
    callback = WSCATrainerCallback({"site": "categorical", "ink": "continuous"}, columns,
                                   **SETTINGS)  # fmt: skip
    args = TrainingArguments(
        output_dir=tempfile.mkdtemp(), per_device_eval_batch_size=100, use_cpu=True,
        report_to="none", disable_tqdm=True, ddp_backend="gloo",
    )  # fmt: skip
    trainer = Trainer(Classifier(), args, eval_dataset=rows, callbacks=[callback])
    trainer.evaluate()
    (out / f"trainer{rank}.json").write_text(json.dumps(callback.last_result_.to_dict()))


TIMEOUT = 5  # dist_timeout of the fault scenarios, seconds


def faults(out: Path) -> None:
    """Rank 1 dies in the middle of a sharded audit (its process ends at the audit's 25th
    all_reduce), or stalls there for longer than ``dist_timeout``: rank 0 writes the
    error it got and how long it waited (fault-<kind>.json)."""
    import os
    import time

    dist.init_process_group("gloo")
    rank = dist.get_rank()
    x, y, site, _ = data()
    net = model()
    auditor = wa.Auditor(net, kinds={"site": "categorical"})
    with auditor.collect(), torch.no_grad():
        idx = torch.arange(rank, len(x), 2)
        net(x[idx])
        auditor.record(targets=y[idx], sample_ids=idx, metadata={"site": [site[i] for i in idx]})
    kind = sys.argv[3]
    if rank == 1:
        from wsca_audit.shards import Shard

        calls, real = [0], Shard.sum

        def failing(self, t):  # in the middle of the Newton solves
            calls[0] += 1
            if calls[0] == 25:
                if kind == "stalls":  # alive, but gone quiet for longer than dist_timeout
                    time.sleep(TIMEOUT + 2)
                os._exit(0)
            return real(self, t)

        Shard.sum = failing
    start = time.perf_counter()
    try:
        auditor.analyze(dist_timeout=TIMEOUT, **SETTINGS)
        error = None
    except wa.AuditError as exc:
        error = str(exc)
    if rank == 0:
        waited = time.perf_counter() - start
        (out / f"fault-{kind}.json").write_text(json.dumps({"error": error, "waited": waited}))
    os._exit(0)  # the group is broken: no clean shutdown to wait for


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[2] == "fault":
        faults(Path(sys.argv[1]))
    else:
        main(Path(sys.argv[1]))
