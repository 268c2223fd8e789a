"""Peak memory of collect + analyze with and without ``max_memory_mb`` (embedding spill).

One fresh process per setting. The embeddings are produced batch by batch through a real
``Auditor`` on a linear head (the process never holds them otherwise), then analysed.
Peak anonymous memory (RssAnon: what cannot be paged out to the spill file) and peak
file-backed memory (RssFile: mapped pages of the spill file, reclaimable) are sampled
from /proc every 20 ms.

    python benchmarks/spill.py --n 200000 --d 512 --budget-mb 64
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import threading
import time


def _rss() -> tuple[int, int]:
    anon = file = 0
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("RssAnon:"):
                anon = int(line.split()[1])
            elif line.startswith("RssFile:"):
                file = int(line.split()[1])
    return anon, file


def child(n: int, d: int, budget: float | None, refits: int) -> dict:
    import warnings

    import torch

    import wsca_audit as wa

    warnings.simplefilter("ignore")
    torch.set_num_threads(2)
    peak = [0, 0]
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            a, f = _rss()
            peak[0], peak[1] = max(peak[0], a), max(peak[1], f)
            time.sleep(0.02)

    threading.Thread(target=sample, daemon=True).start()
    base = _rss()[0]
    g = torch.Generator().manual_seed(0)
    mix = torch.randn(8, d, generator=g) / 3
    torch.manual_seed(0)  # the same head in every process
    head = torch.nn.Linear(d, 2).eval()
    auditor = wa.Auditor(head, kinds={"site": "categorical"}, max_memory_mb=budget)
    t0 = time.perf_counter()
    with auditor.collect(), torch.no_grad():
        for _ in range(0, n, 4096):
            latent = torch.randn(4096, 8, generator=g)
            z = latent @ mix + torch.randn(4096, d, generator=g)
            head(z)
            auditor.record(
                targets=(latent[:, 0] + torch.randn(4096, generator=g) > 0).long(),
                metadata={"site": (latent[:, 1] > 0).long()},
            )
    t1 = time.perf_counter()
    res = auditor.analyze(n_bootstrap=refits, n_permutations=refits, progress=False)
    t2 = time.perf_counter()
    auditor.reset()
    stop.set()
    return {
        "budget_mb": budget,
        "n": auditor_n(res),
        "collect_s": t1 - t0,
        "analyze_s": t2 - t1,
        "peak_anon_gb": (peak[0] - base) / 2**20,
        "peak_file_gb": peak[1] / 2**20,
        "embeddings_gb": auditor_n(res) * d * 4 / 2**30,
        "memory_mapped": res.settings["memory_mapped"],
        "usage_site": round(res.tasks["site"]["usage"]["value"], 6),
    }


def auditor_n(res) -> int:
    return int(res["n_samples"])


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--n", type=int, default=200_000)
    ap.add_argument("--d", type=int, default=512)
    ap.add_argument("--budget-mb", type=float, default=64.0)
    ap.add_argument("--refits", type=int, default=5)
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child is not None:
        budget = None if args.child == "none" else float(args.child)
        print(json.dumps(child(args.n, args.d, budget, args.refits)))
        return
    print(f"N={args.n}, D={args.d}, refits {args.refits}+{args.refits}, one binary task, CPU\n")
    print(
        "| max_memory_mb | collect s | analyze s | peak anon GB (above start) | peak file-backed GB | embeddings GB | usage(site) |"
    )
    print("|---|---|---|---|---|---|---|")
    rows = []
    for budget in ("none", str(args.budget_mb)):
        cmd = [sys.executable, __file__, "--child", budget, "--n", str(args.n), "--d",
               str(args.d), "--refits", str(args.refits)]  # fmt: skip
        out = subprocess.run(cmd, capture_output=True, text=True)
        if out.returncode != 0:
            print(f"| {budget} | failed: {out.stderr.strip().splitlines()[-1][:150]} |")
            continue
        r = json.loads(out.stdout.strip().splitlines()[-1])
        rows.append(r)
        print(f"| {budget} | {r['collect_s']:.1f} | {r['analyze_s']:.1f} | {r['peak_anon_gb']:.2f} | "
              f"{r['peak_file_gb']:.2f} | {r['embeddings_gb']:.2f} | {r['usage_site']} |", flush=True)  # fmt: skip
    if len(rows) == 2:
        print(f"\npeak anonymous memory ratio (spill / in memory): "
              f"{rows[1]['peak_anon_gb'] / rows[0]['peak_anon_gb']:.2f}; "
              f"same usage: {rows[0]['usage_site'] == rows[1]['usage_site']}")  # fmt: skip


if __name__ == "__main__":
    main()
