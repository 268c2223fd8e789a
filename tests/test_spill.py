"""Embeddings past max_memory_mb go to a memory-mapped file; nothing is left behind."""

import glob
import os
import tempfile

import numpy as np
import pytest
import torch

import wsca_audit as wa
from wsca_audit.store import SPILL_PREFIX, EmbeddingStore


def _spill_dirs():
    return set(glob.glob(os.path.join(tempfile.gettempdir(), SPILL_PREFIX + "*")))


def _collect(max_memory_mb):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(20, 32), torch.nn.ReLU(), torch.nn.Linear(32, 2))
    auditor = wa.Auditor(
        model.eval(),
        kinds={"site": "categorical", "age": "continuous"},
        max_memory_mb=max_memory_mb,
    )
    g = torch.Generator().manual_seed(1)
    with auditor.collect(), torch.no_grad():
        for _ in range(12):
            x = torch.randn(250, 20, generator=g)
            model(x)
            auditor.record(
                targets=(x[:, 0] > 0).long(),
                metadata={"site": (x[:, 1] > 0).long(), "age": x[:, 2]},
            )
    return auditor


def test_spilled_audit_equals_the_in_memory_one_and_cleans_up():
    before = _spill_dirs()
    settings = dict(n_bootstrap=20, n_permutations=20, progress=False, device="cpu")
    plain = _collect(None)
    spilled = _collect(0.05)  # 50 KiB: 3000 x 32 float32 = 375 KiB spills
    assert not plain._embeddings.spilled and spilled._embeddings.spilled
    assert isinstance(spilled.embeddings().embeddings, np.memmap)
    assert len(_spill_dirs() - before) == 1
    a, b = plain.analyze(**settings).to_dict(), spilled.analyze(**settings).to_dict()
    assert b["settings"].pop("memory_mapped") and not a["settings"].pop("memory_mapped")
    for d in (a, b):
        d["settings"].pop("runtime_s")
        d["settings"].pop("max_memory_mb")
    assert a == b
    spilled.reset()
    assert _spill_dirs() == before


def test_interrupted_analyze_leaves_no_temp_files(monkeypatch):
    before = _spill_dirs()
    auditor = _collect(0.05)
    from wsca_audit import analysis

    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(analysis._Analysis, "_task", interrupt)
    with pytest.raises(KeyboardInterrupt):
        auditor.analyze(progress=False, device="cpu")
    # the analysis' working copies are gone; only the auditor's own spill file remains
    assert len(_spill_dirs() - before) == 1
    auditor.reset()
    assert _spill_dirs() == before


def test_analysis_working_copies_are_mapped_past_the_budget():
    rng = np.random.default_rng(0)
    z = rng.normal(size=(400, 16)).astype(np.float32)
    y = (z[:, 0] > 0).astype(int)
    W = np.zeros((2, 16))
    W[1, 0] = 1
    kw = dict(primary_weight=W, n_bootstrap=10, n_permutations=10, progress=False, device="cpu")
    small = wa.analyze(z, y, {"s": z[:, 1] > 0}, max_memory_mb=0.001, **kw)
    big = wa.analyze(z, y, {"s": z[:, 1] > 0}, **kw)
    assert small.settings["memory_mapped"] and not big.settings["memory_mapped"]
    assert small.tasks["s"]["usage"] == big.tasks["s"]["usage"]
    with pytest.raises(wa.AuditError, match="max_memory_mb"):
        wa.analyze(z, y, {"s": z[:, 1] > 0}, max_memory_mb=-1, **kw)


def test_store_rejects_a_changing_dimension():
    store = EmbeddingStore(max_memory_mb=0)
    store.append(torch.ones(3, 4))
    with pytest.raises(wa.AuditError, match="dimension changed"):
        store.append(torch.ones(3, 5))
    store.close()


def test_analysis_inside_inference_mode():
    """Regression: Lightning evaluates under torch.inference_mode(); the Captum layer view
    needs autograd and used to fail there."""
    rng = np.random.default_rng(0)
    z = rng.normal(size=(200, 8))
    W = np.zeros((2, 8))
    W[1, 0] = 1
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 2)).eval()
    with torch.inference_mode():
        res = wa.analyze(z, (z[:, 0] > 0).astype(int), {"s": z[:, 1] > 0}, primary_weight=W,
                         n_bootstrap=10, n_permutations=10, progress=False)  # fmt: skip
        attr = wa.InputAttribution(model, n_steps=4, progress=False).attribute_batch(
            torch.rand(3, 1, 4, 4)
        )
    assert "attribution" in res.tasks["s"]
    assert attr.shape == (3, 1, 4, 4)
