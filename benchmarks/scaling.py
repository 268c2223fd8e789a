"""Time and peak memory of ``wa.analyze()`` as N grows (D fixed), one process per N.

Each size runs in a fresh child process so that its peak resident memory (and peak CUDA
memory) is its own. Data: low-rank-plus-noise embeddings with a label, one categorical
(3 levels) and one continuous metadata variable. Prints seconds per 1e4 samples so that
linear growth reads as a flat column.

    python benchmarks/scaling.py --n 10000 100000 --refits 20          # CPU here
    python benchmarks/scaling.py --device cuda --n 10000 100000 1000000   # GPU, 200 refits

``--ranks 1 2`` audits through ``wa.Auditor`` instead, in one process and then sharded
over ``torchrun`` processes (gloo): time, and each rank's peak-memory growth during
``analyze()`` (the peak resident set is reset just before it), against the same audit in
one process. ``--comm`` measures the bytes one rank sends per Newton step of a batch of
heads, for several N, D and K (it should not depend on N).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path


def _data(n: int, d: int):
    """Low-rank-plus-noise embeddings, a label, site (3 levels), age, a head."""
    import numpy as np

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
    return Z, y, meta, W


def child(n: int, d: int, refits: int, device: str) -> dict:
    import resource
    import warnings

    import torch

    import wsca_audit as wa

    warnings.simplefilter("ignore")
    Z, y, meta, W = _data(n, d)
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


def _rss_kb(field: str) -> int:
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def ranked_child(n: int, d: int, refits: int) -> dict:
    """One rank (or the one process) of an Auditor audit: rows ``rank::world``."""
    import warnings

    import numpy as np
    import torch

    import wsca_audit as wa

    warnings.simplefilter("ignore")
    torch.set_num_threads(1)  # one core per rank: 1 and 2 ranks compare per core
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1:
        import torch.distributed as dist

        dist.init_process_group("gloo")
    rank = int(os.environ.get("RANK", "0"))
    Z, y, meta, W = _data(n, d)
    rows = np.arange(rank, n, world)
    Z, y = np.ascontiguousarray(Z[rows]), y[rows]
    meta = {k: v[rows] for k, v in meta.items()}
    head = torch.nn.Linear(d, 2)
    with torch.no_grad():
        head.weight.copy_(torch.as_tensor(W))
        head.bias.zero_()
    model = torch.nn.Sequential(head).eval()
    auditor = wa.Auditor(model, kinds={"site": "categorical", "age": "continuous"})
    with auditor.collect(), torch.no_grad():
        for s in range(0, len(rows), 8192):
            model(torch.as_tensor(Z[s : s + 8192]))
            auditor.record(targets=y[s : s + 8192], sample_ids=rows[s : s + 8192],
                           metadata={k: v[s : s + 8192] for k, v in meta.items()})  # fmt: skip
    del Z
    with open("/proc/self/clear_refs", "w") as f:  # the peak resident set starts here
        f.write("5")
    base = _rss_kb("VmRSS")
    t = time.perf_counter()
    res = auditor.analyze(n_bootstrap=refits, n_permutations=refits, progress=False)
    elapsed = time.perf_counter() - t
    out = {"rank": rank, "world": world, "n": n, "seconds": elapsed,
           "growth_gb": (_rss_kb("VmHWM") - base) / 2**20,
           "embeddings_gb": n * d * 4 / 2**30, "usage": res.tasks["site"]["usage"]["value"],
           "verdicts": res.verdicts}  # fmt: skip
    if world > 1:
        import torch.distributed as dist

        dist.destroy_process_group()
    return out


def comm_child(sizes: list[int], dims: list[int], classes: list[int]) -> list[dict]:
    """Bytes this rank sends through the shard's all_reduce per Newton step of a batch of
    41 heads (a point fit, 20 bootstrap and 20 permutation refits), rows split evenly."""
    import torch
    import torch.distributed as dist

    from wsca_audit.heads import BatchedLinearHead
    from wsca_audit.shards import Shard

    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    sent = [0]
    real = Shard.sum

    def counting(self, t):
        sent[0] += t.numel() * t.element_size()
        return real(self, t)

    Shard.sum = counting
    rows = []
    for n in sizes:
        for d in dims:
            for k in classes:
                g = torch.Generator().manual_seed(0)
                X = torch.randn(n, d, generator=g)
                y = (X[:, :k].argmax(1) + (torch.rand(n, generator=g) < 0.3)).remainder(k)
                targets = torch.cat(
                    [y[None], y[torch.randperm(n, generator=g)][None].expand(40, n)]
                )
                index = [torch.arange(r, n, world) for r in range(world)]
                shard = Shard(n, index, rank)
                loss = "binary" if k == 2 else "multinomial"
                head = BatchedLinearHead(loss, n_classes=k if k > 2 else None)
                sent[0] = 0
                head.fit(X[index[rank]], targets[:, index[rank]], shard=shard)
                rows.append({"n": n, "d": d, "k": k, "newton_steps": head.n_iter_,
                             "bytes": sent[0], "per_step": sent[0] / max(head.n_iter_, 1)})  # fmt: skip
    dist.destroy_process_group()
    return rows


def ranks_table(args) -> None:
    print(f"D={args.d}, refits={args.refits}+{args.refits}, one core per rank, gloo\n")
    print("| N | ranks | analyze s | rank 0 peak growth GB | x one process | embeddings GB |")
    print("|---|---|---|---|---|---|")
    for n in args.n:
        single = None
        for k in args.ranks:
            cmd = [__file__, "--ranked-child"]  # torchrun would read "--n" as its own
            child_args = json.dumps({"n": n, "d": args.d, "refits": args.refits})
            if k == 1:
                cmd = [sys.executable, *cmd]
            else:
                torchrun = Path(sys.executable).with_name("torchrun")
                cmd = [str(torchrun), "--standalone", f"--nproc_per_node={k}", *cmd]
            env = {**os.environ, "OMP_NUM_THREADS": "1", "WSCA_BENCH": child_args}
            out = subprocess.run(cmd, capture_output=True, text=True, env=env)
            lines = [ln for ln in out.stdout.splitlines() if ln.startswith("{")]
            if out.returncode != 0 or not lines:
                print(f"| {n:,} | {k} | failed: {out.stderr.strip().splitlines()[-1][:100]} |")
                continue
            r = min((json.loads(ln) for ln in lines), key=lambda r: r["rank"])
            single = r["growth_gb"] if k == 1 else single
            ratio = f"{r['growth_gb'] / single:.2f}" if single else "-"
            print(f"| {n:,} | {k} | {r['seconds']:.1f} | {r['growth_gb']:.2f} | {ratio} | "
                  f"{r['embeddings_gb']:.2f} |", flush=True)  # fmt: skip


def comm_table(args) -> None:
    torchrun = Path(sys.executable).with_name("torchrun")
    cmd = [str(torchrun), "--standalone", "--nproc_per_node=2", __file__, "--comm-child"]
    child_args = json.dumps({"n": args.n, "dims": args.dims, "classes": args.classes})
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WSCA_BENCH": child_args}
    out = subprocess.run(cmd, capture_output=True, text=True, env=env)
    lines = [ln for ln in out.stdout.splitlines() if ln.startswith("[")]
    if not lines:
        print(out.stderr[-2000:])
        return
    print("41 heads per batch, 2 ranks; bytes one rank sends through all_reduce\n")
    print("| N | D | K | Newton steps | MB in all | KB per Newton step |")
    print("|---|---|---|---|---|---|")
    for r in json.loads(lines[0]):
        print(f"| {r['n']:,} | {r['d']} | {r['k']} | {r['newton_steps']} | "
              f"{r['bytes'] / 2**20:.1f} | {r['per_step'] / 2**10:.0f} |")  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--n", type=int, nargs="+", default=[10_000, 100_000])
    ap.add_argument("--d", type=int, default=512)
    ap.add_argument("--refits", type=int, default=20, help="bootstrap and permutation refits each")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--ranks", type=int, nargs="+", help="audit through an Auditor on 1, k ranks")
    ap.add_argument("--comm", action="store_true", help="bytes per Newton step (2 ranks)")
    ap.add_argument("--dims", type=int, nargs="+", default=[64, 256])
    ap.add_argument("--classes", type=int, nargs="+", default=[2, 5])
    ap.add_argument("--ranked-child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--comm-child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.ranked_child:
        a = json.loads(os.environ["WSCA_BENCH"])
        print(json.dumps(ranked_child(a["n"], a["d"], a["refits"])))
        return
    if args.comm_child:
        a = json.loads(os.environ["WSCA_BENCH"])
        rows = comm_child(a["n"], a["dims"], a["classes"])
        if int(os.environ.get("RANK", "0")) == 0:
            print(json.dumps(rows))
        return
    if args.comm:
        comm_table(args)
        return
    if args.ranks:
        ranks_table(args)
        return
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
