"""Cost of attaching the auditor to an evaluation loop (MobileNetV2, a realistic CNN).

Times the same evaluation loop without and with ``Auditor.collect()`` + ``record()``,
alternating the two so drift hits both alike, and prints the ratio of the medians. On
CUDA the loop never synchronises per batch (embeddings are copied to pinned host memory
with non_blocking); the timer synchronises once per loop.

    python benchmarks/hook_overhead.py                       # CPU: batch 32 at 128x128
    python benchmarks/hook_overhead.py --device cuda --batch 256 --size 224 --batches 40
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import numpy as np
import torch

import wsca_audit as wa
from wsca_audit.demo.mobilenet import MobileNetV2


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--batches", type=int, default=8, help="batches per loop")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--amp", action="store_true", help="bf16 autocast (CUDA)")
    args = ap.parse_args()
    device = torch.device(args.device)
    model = MobileNetV2(num_classes=2).to(device).eval()
    g = torch.Generator().manual_seed(0)
    # inputs are prepared on the device up front: the loop measures model + audit only
    xs = [
        torch.randn(args.batch, 3, args.size, args.size, generator=g).to(device)
        for _ in range(args.batches)
    ]
    ys = [np.arange(args.batch) % 2 for _ in range(args.batches)]
    meta = [{"scanner": np.arange(args.batch) % 3, "age": np.linspace(20, 80, args.batch)}
            for _ in range(args.batches)]  # fmt: skip

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    def plain():
        with torch.inference_mode(), torch.autocast(device.type, torch.bfloat16, enabled=args.amp):
            for x in xs:
                model(x)
        sync()

    def audited():
        auditor = wa.Auditor(model, kinds={"scanner": "categorical", "age": "continuous"})
        with (
            auditor.collect(),
            torch.inference_mode(),
            torch.autocast(device.type, torch.bfloat16, enabled=args.amp),
        ):
            for x, y, m in zip(xs, ys, meta):
                model(x)
                auditor.record(targets=y, metadata=m)
        sync()
        return auditor

    plain(), audited()  # warm-up (allocator, cuDNN autotuning, pinned-memory cache)
    t_plain, t_audit = [], []
    for _ in range(args.repeats):
        for fn, store in ((plain, t_plain), (audited, t_audit)):
            t = time.perf_counter()
            fn()
            store.append(time.perf_counter() - t)
    n_emb = audited().embeddings().embeddings.shape
    name = torch.cuda.get_device_name() if device.type == "cuda" else platform.processor() or "cpu"
    mp, ma = statistics.median(t_plain), statistics.median(t_audit)
    print(
        f"MobileNetV2, {args.batches} batches of {args.batch}x3x{args.size}x{args.size}, "
        f"device={device} ({name}), threads={torch.get_num_threads()}, cores={os.cpu_count()}, "
        f"amp={args.amp}; embeddings collected {tuple(n_emb)}"
    )
    print()
    print("| loop | median s | min s | max s |")
    print("|---|---|---|---|")
    for label, ts in (("plain", t_plain), ("with auditor", t_audit)):
        print(f"| {label} | {statistics.median(ts):.4f} | {min(ts):.4f} | {max(ts):.4f} |")
    print(
        f"\nratio (median with / median plain) = **{ma / mp:.4f}x** over {args.repeats} alternating repeats"
    )


if __name__ == "__main__":
    main()
