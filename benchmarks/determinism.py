"""Run-to-run and CPU-vs-CUDA agreement of a whole audit, and of the input-side evidence.

Same data, same seed: two CUDA runs, one CPU run. Prints the largest absolute difference
over every number in the report (and whether the verdicts agree), then the same for
attribution mass, ROI masking and an intervention on the digits CNN moved to the GPU.

Last, on the CPU, the two perturbations that are all a device can change: the summation
order (the embedding's columns permuted, which leaves every statistic unchanged in exact
arithmetic but reorders every dot product, as a GPU's kernels and atomics do) and the
precision (float32 vs float64). Their differences are the tolerance to expect across
devices and between CUDA runs.

    python benchmarks/determinism.py                       # CUDA vs CUDA, CPU vs CUDA
    python benchmarks/determinism.py --device cpu --n 3000   # the same checks, CPU only
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np
import torch

import wsca_audit as wa


def numbers(x, path=""):
    """(path, value) of every number in a nested report."""
    if isinstance(x, dict):
        for k, v in x.items():
            yield from numbers(v, f"{path}/{k}")
    elif isinstance(x, list):
        for i, v in enumerate(x):
            yield from numbers(v, f"{path}[{i}]")
    elif isinstance(x, (int, float)) and not isinstance(x, bool):
        yield path, float(x)


def diffs(a: dict, b: dict) -> dict[str, float]:
    """Absolute difference of every number both reports hold (timings and devices aside)."""
    da, db = dict(numbers(a)), dict(numbers(b))
    skip = ("runtime", "device")
    return {k: abs(da[k] - db[k]) for k in da if k in db and not any(s in k for s in skip)}


def largest(d: dict[str, float]) -> tuple[float, str]:
    """The largest difference and where it is ("-" when there is none)."""
    diff, where = max(((v, k) for k, v in d.items()), default=(0.0, "-"))
    return diff, where if diff > 0 else "-"


def max_diff(a: dict, b: dict) -> tuple[float, str]:
    return largest(diffs(a, b))


def max_diff_by_kind(a: dict, b: dict) -> tuple[float, str, float]:
    """Largest difference over the continuous numbers, and over the p-values (discrete)."""
    d = diffs(a, b)
    diff, where = largest({k: v for k, v in d.items() if "p_value" not in k})
    return diff, where, max((v for k, v in d.items() if "p_value" in k), default=0.0)


def verdicts(report: dict) -> dict:
    return {k: t["verdict"] for k, t in report["tasks"].items()}


def audit(
    device: str, n: int, d: int, refits: int, permute: bool = False, dtype: str = "float32"
) -> dict:
    g = np.random.default_rng(0)
    latent = g.normal(size=(n, 8)).astype(np.float32)
    Z = latent @ g.normal(size=(8, d)).astype(np.float32) / 3 + g.normal(size=(n, d)).astype(
        np.float32
    )
    y = (latent[:, 0] + g.normal(size=n) > 0).astype(np.int64)
    meta = {
        "site": np.argmax(latent[:, 1:4] + g.normal(size=(n, 3)), 1),
        "scanner": (latent[:, 0] + latent[:, 4] + g.normal(size=n) > 0).astype(int),
        "age": latent[:, 5] + g.normal(size=n),
    }
    W = np.zeros((2, d), np.float32)
    W[1] = g.normal(size=d) / np.sqrt(d)
    if permute:  # same statistics, every dot product summed in another order
        cols = g.permutation(d)
        Z, W = Z[:, cols], W[:, cols]
    t = time.perf_counter()
    res = wa.analyze(Z, y, meta, primary_weight=W, n_bootstrap=refits, n_permutations=refits,
                     device=device, progress=False, seed=0, dtype=dtype)  # fmt: skip
    return {"report": res.to_dict(), "seconds": time.perf_counter() - t}


def evidence(device: str) -> dict:
    from wsca_audit.demo.shortcut import PATCH, add_artefact, make_split, roi_masks, train_cnn

    split = make_split(1.0, seed=0)
    model = train_cnn(split.train_x, split.train_y, seed=0).to(device)
    roi = roi_masks(split.clean_x)
    roi[:, PATCH[0], PATCH[1]] = False
    x = torch.as_tensor(split.eval_x)
    common = dict(progress=False, device=device)
    mass = wa.attribution_mass(model, x, roi, n_steps=32, **common)
    masking = wa.roi_masking(model, x, roi, split.eval_y, fill="noise", **common)
    effect = wa.intervention_effect(
        model, torch.as_tensor(split.clean_x),
        lambda t, v: add_artefact(t, torch.full((len(t),), v, device=t.device)), **common,
    )  # fmt: skip
    return {
        "attribution": mass.to_dict(),
        "masking": masking.to_dict(),
        "intervention": effect.to_dict(),
    }


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--n", type=int, default=20_000)
    ap.add_argument("--d", type=int, default=256)
    ap.add_argument("--refits", type=int, default=200)
    ap.add_argument("--device", default="cuda", help="the device to test against the CPU")
    args = ap.parse_args()
    warnings.simplefilter("ignore")
    dev = args.device
    if dev.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("no CUDA device: use --device cpu for the CPU-only checks")
    name = torch.cuda.get_device_name() if dev.startswith("cuda") else "CPU"
    print(f"{name}, torch {torch.__version__}; N={args.n}, D={args.d}, "
          f"{args.refits}+{args.refits} refits, tasks site (3 levels), scanner, age\n")  # fmt: skip
    if dev != "cpu":  # on the CPU alone, "same run again" below covers this table
        c1, c2 = audit(dev, args.n, args.d, args.refits), audit(dev, args.n, args.d, args.refits)
        cpu = audit("cpu", args.n, args.d, args.refits)
        print("| comparison | max abs difference | where | verdicts equal | seconds |")
        print("|---|---|---|---|---|")
        for label, a, b in ((f"{dev} run 1 vs run 2", c1, c2), (f"CPU vs {dev}", cpu, c1)):
            diff, where = max_diff(a["report"], b["report"])
            same = verdicts(a["report"]) == verdicts(b["report"])
            secs = f"{a['seconds']:.1f} / {b['seconds']:.1f}"
            print(f"| {label} | {diff:.2e} | {where} | {same} | {secs} |")
    e_gpu, e_gpu2, e_cpu = evidence(dev), evidence(dev), evidence("cpu")
    print(f"\n| evidence | {dev} run 1 vs run 2 | CPU vs {dev} | where (CPU vs {dev}) |")
    print("|---|---|---|---|")
    for key in e_cpu:
        d_run, _ = max_diff(e_gpu[key], e_gpu2[key])
        d_dev, where = max_diff(e_cpu[key], e_gpu[key])
        print(f"| {key} | {d_run:.2e} | {d_dev:.2e} | {where} |")
    print()
    reduction_order(args.n, args.d, args.refits)


def reduction_order(n: int, d: int, refits: int) -> None:
    """CPU: the report's sensitivity to summation order and to precision."""
    base = audit("cpu", n, d, refits)
    runs = {
        "same run again": audit("cpu", n, d, refits),
        "columns permuted (summation order)": audit("cpu", n, d, refits, permute=True),
        "float64 (precision)": audit("cpu", n, d, refits, dtype="float64"),
    }
    print("| CPU, against the float32 run | max abs difference (not p) | where | "
          "max p-value difference | verdicts equal | seconds |")  # fmt: skip
    print("|---|---|---|---|---|---|")
    for name, r in runs.items():
        diff, where, dp = max_diff_by_kind(base["report"], r["report"])
        same = verdicts(base["report"]) == verdicts(r["report"])
        print(f"| {name} | {diff:.2e} | {where} | {dp:.2e} | {same} | {r['seconds']:.1f} |")


if __name__ == "__main__":
    main()
