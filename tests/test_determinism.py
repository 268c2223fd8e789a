"""Determinism: identical reports for a seed, bounded summation-order effects, no CUDA-nondeterministic op."""

import numpy as np
import torch
from _reliability import FAST, toy_data
from torch.utils._python_dispatch import TorchDispatchMode

import wsca_audit as wa


def test_same_seed_gives_an_identical_report_on_cpu():
    rng, z, y, W = toy_data()
    meta = {"site": rng.integers(0, 3, len(y)), "age": rng.normal(size=len(y))}
    a = wa.analyze(z, y, meta, primary_weight=W, seed=7, **{**FAST, "n_bootstrap": 30}).to_dict()
    b = wa.analyze(z, y, meta, primary_weight=W, seed=7, **{**FAST, "n_bootstrap": 30}).to_dict()
    c = wa.analyze(z, y, meta, primary_weight=W, seed=8, **{**FAST, "n_bootstrap": 30}).to_dict()
    for r in (a, b, c):
        r["settings"].pop("runtime_s")
    assert a == b
    # another seed draws other resamples (the usage interval of a shortcut-free variable
    # starts at 0, so its upper end is what moves)
    assert a["tasks"]["site"]["usage"]["ci_high"] != c["tasks"]["site"]["usage"]["ci_high"]


def _numbers(x, path=""):
    if isinstance(x, dict):
        for k, v in x.items():
            yield from _numbers(v, f"{path}/{k}")
    elif isinstance(x, list):
        for i, v in enumerate(x):
            yield from _numbers(v, f"{path}[{i}]")
    elif isinstance(x, (int, float)) and not isinstance(x, bool):
        yield path, float(x)


def test_summation_order_moves_the_report_only_within_the_documented_tolerance():
    # What a GPU changes is the order of every sum (kernels, atomics). Permuting the
    # embedding's columns does the same on the CPU and leaves the maths unchanged; the
    # report must move by less than the tolerance in docs/troubleshooting.md.
    rng, z, y, W = toy_data(n=600, d=24)
    z = z + 0.8 * y[:, None] * rng.normal(size=24)
    meta = {"site": rng.integers(0, 3, len(y)), "scanner": (z[:, 1] > 0).astype(int),
            "age": z[:, 2] + rng.normal(size=len(y))}  # fmt: skip
    cols = rng.permutation(24)
    kw = dict(primary_weight=W, seed=3, **{**FAST, "n_bootstrap": 40, "n_permutations": 40})
    a = wa.analyze(z, y, meta, **kw).to_dict()
    b = wa.analyze(z[:, cols], y, meta, **{**kw, "primary_weight": W[:, cols]}).to_dict()
    na, nb = dict(_numbers(a)), dict(_numbers(b))
    assert na.keys() == nb.keys()
    diffs = {k: abs(na[k] - nb[k]) for k in na if "runtime" not in k}
    worst = max((v, k) for k, v in diffs.items() if "p_value" not in k)
    assert worst[0] <= 1e-5, worst
    # p-values count null refits at or above the observed value: one refit may cross
    step = 1 / (kw["n_permutations"] + 1)
    assert max(v for k, v in diffs.items() if "p_value" in k) <= 2 * step + 1e-9
    assert {k: t["verdict"] for k, t in a["tasks"].items()} == {
        k: t["verdict"] for k, t in b["tasks"].items()
    }


class _CudaNondeterministicOps(TorchDispatchMode):
    """Records the aten ops that PyTorch runs nondeterministically on CUDA (atomics)
    or refuses under ``torch.use_deterministic_algorithms(True)``."""

    ATOMIC = frozenset({"index_add", "index_add_", "scatter_add", "scatter_add_",
                        "scatter_reduce", "scatter_reduce_", "put", "put_", "histc",
                        "nll_loss_forward", "nll_loss2d_forward", "median", "nanmedian"})  # fmt: skip
    FLOAT_SCAN = frozenset({"cumsum", "cumsum_", "cumprod", "cumprod_"})

    def __init__(self):
        super().__init__()
        self.seen = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = func.overloadpacket.__name__
        first = args[0] if args else None
        floating = isinstance(first, torch.Tensor) and first.is_floating_point()
        weighted = (len(args) > 1 and args[1] is not None) or kwargs.get("weights") is not None
        if (name in self.ATOMIC or (name in self.FLOAT_SCAN and floating)
                or (name == "bincount" and weighted)):  # fmt: skip
            self.seen.add(name)
        return func(*args, **kwargs)


def test_the_audit_runs_no_op_that_is_nondeterministic_on_cuda(monkeypatch):
    # The CPU cannot show CUDA's atomics, but it can show which ops the audit calls:
    # none may be one that PyTorch lists as nondeterministic on CUDA, so that a CUDA
    # audit repeats itself and runs under torch.use_deterministic_algorithms(True).
    # Prefix sums take their off-CPU branch here, as they would on CUDA.
    import wsca_audit.metrics as metrics

    prefix_sum = metrics.prefix_sum
    monkeypatch.setattr(metrics, "prefix_sum", lambda x, *_: prefix_sum(x, method="matmul"))
    rng, z, y, W = toy_data(n=300, d=12)
    meta = {"site": rng.integers(0, 3, len(y)), "scanner": rng.integers(0, 2, len(y)),
            "age": rng.normal(size=len(y))}  # fmt: skip
    W = np.vstack([W, rng.normal(size=(1, 12))])  # a 3-class head: softmax paths too
    labels = rng.integers(0, 3, len(y))
    with _CudaNondeterministicOps() as mode:
        wa.analyze(z, labels, meta, primary_weight=W, **FAST)
        wa.analyze(z, y, meta, primary_weight=W[:2], **FAST)
        images = torch.rand(40, 1, 6, 6)
        roi = torch.zeros(40, 6, 6, dtype=torch.bool)
        roi[:, 1:4, 1:4] = True
        model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(36, 2)).eval()
        wa.roi_masking(model, images, roi, np.arange(40) % 2, fill="blur", n_bootstrap=20,
                       progress=False)  # fmt: skip
    assert mode.seen == set()
    with _CudaNondeterministicOps() as mode:  # the detector itself sees such an op
        torch.zeros(3).index_add_(0, torch.tensor([0, 0]), torch.ones(2))
    assert mode.seen == {"index_add_"}
