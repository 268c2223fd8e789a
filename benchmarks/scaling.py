"""Time and peak memory of ``wa.analyze()`` as N grows (D fixed), one process per N.

Each size runs in a fresh child process so that its peak resident memory (and peak CUDA
memory) is its own. Data: low-rank-plus-noise embeddings with a label, one categorical
(3 levels) and one continuous metadata variable. Prints seconds per 1e4 samples so that
linear growth reads as a flat column.

    python benchmarks/scaling.py --n 10000 100000 --refits 20          # CPU here
    python benchmarks/scaling.py --device cuda --n 10000 100000 1000000   # GPU, 200 refits
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time


def child(n: int, d: int, refits: int, device: str) -> dict:
    import resource
    import warnings

    import numpy as np
    import torch

    import wsca_audit as wa

    warnings.simplefilter("ignore")
    g = np.random.default_rng(0)
    latent = g.normal(size=(n, 8)).astype(np.float32)
    Z = latent @ g.normal(size=(8, d)).astype(np.float32) / 3
    Z += g.standard_normal(size=(n, d), dtype=np.float32)
    y = (latent[:, 0] + g.normal(size=n) > 0).astype(np.int64)
    meta = {
        "site": np.argmax(latent[:, 1:4] + g.normal(size=(n, 3)), 1),
        "age": latent[:, 4] + g.normal(size=n),
    }
    W = np.zeros((2, d), np.float32)
    W[1] = g.normal(size=d)
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    t = time.perf_counter()
    res = wa.analyze(Z, y, meta, primary_weight=W, n_bootstrap=refits, n_permutations=refits,
                     device=device, progress=False)  # fmt: skip
    elapsed = time.perf_counter() - t
    return {
        "n": n,
        "seconds": elapsed,
        "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
        "peak_cuda_gb": torch.cuda.max_memory_allocated() / 2**30
        if device.startswith("cuda")
        else None,
        "input_gb": Z.nbytes / 2**30,
        "verdicts": res.verdicts,
    }


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--n", type=int, nargs="+", default=[10_000, 100_000])
    ap.add_argument("--d", type=int, default=512)
    ap.add_argument("--refits", type=int, default=20, help="bootstrap and permutation refits each")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args.n[0], args.d, args.refits, args.device)))
        return
    print(
        f"D={args.d}, refits={args.refits}+{args.refits}, device={args.device}; tasks: site "
        "(3 levels), age (continuous)\n"
    )
    print("| N | analyze s | s per 1e4 samples | peak RSS GB | peak CUDA GB | embeddings GB |")
    print("|---|---|---|---|---|---|")
    for n in args.n:
        cmd = [sys.executable, __file__, "--child", "--n", str(n), "--d", str(args.d),
               "--refits", str(args.refits), "--device", args.device]  # fmt: skip
        out = subprocess.run(cmd, capture_output=True, text=True)
        if out.returncode != 0:
            print(f"| {n} | failed: {out.stderr.strip().splitlines()[-1][:120]} | | | | |")
            continue
        r = json.loads(out.stdout.strip().splitlines()[-1])
        cuda = f"{r['peak_cuda_gb']:.2f}" if r["peak_cuda_gb"] is not None else "-"
        print(
            f"| {n:,} | {r['seconds']:.1f} | {r['seconds'] / n * 1e4:.2f} | "
            f"{r['peak_rss_gb']:.2f} | {cuda} | {r['input_gb']:.2f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
