"""Batched head fitting vs a loop of scikit-learn fits (same problems, same answers).

The workload of issue 6: N samples x D dimensions, 4 categorical tasks (2 binary, one with
3 and one with 4 levels) and 2 continuous tasks; for each task a point fit, B bootstrap
refits (count weights, warm-started from the point fit) and B permutation refits
(metadata permuted). Categorical tasks use L2 logistic regression (C=1), continuous ones
ridge (alpha=1): ``BatchedLinearHead`` solves each task's 1+2B problems together.

scikit-learn is timed on a sample of the fits of every task (``--sk-sample`` bootstrap and
as many permutation fits, plus the point fit) and its loop time is extrapolated linearly
to all fits (each fit is independent, so the loop's time is the sum). For each task the
faster of scikit-learn's ``lbfgs`` and ``newton-cholesky`` solvers is used; the sampled
fits also give the agreement (cosine of coefficient vectors, minimum over fits).

    python benchmarks/solver_vs_sklearn.py                    # N=20000, D=512, B=200, CPU
    python benchmarks/solver_vs_sklearn.py --device cuda      # on a GPU
"""

from __future__ import annotations

import argparse
import os
import platform
import time
import warnings

import numpy as np
import torch

from wsca_audit.heads import BatchedLinearHead

TASKS = {"cat2_a": 2, "cat2_b": 2, "cat3": 3, "cat4": 4, "cont_a": 0, "cont_b": 0}


def make_data(n: int, d: int, seed: int = 0):
    """Embeddings with a low-rank signal (label + metadata) plus isotropic noise."""
    g = np.random.default_rng(seed)
    latent = g.normal(size=(n, 16))
    Z = latent @ g.normal(size=(16, d)) / 4 + g.normal(size=(n, d))
    Z = ((Z - Z.mean(0)) / Z.std(0)).astype(np.float32)
    targets = {}
    for name, k in TASKS.items():
        score = latent[:, : max(k, 2)] + g.normal(size=(n, max(k, 2)))
        targets[name] = score.argmax(1) if k else latent[:, 3] + g.normal(size=n)
    return Z, targets


def problems(y: np.ndarray, n_refits: int, seed: int = 0):
    """(targets, weights) for point + n_refits bootstraps + n_refits permutations."""
    g = np.random.default_rng(seed)
    n = len(y)
    boots = np.stack([np.bincount(g.integers(0, n, n), minlength=n) for _ in range(n_refits)])
    perms = np.stack([y[g.permutation(n)] for _ in range(n_refits)])
    T = np.concatenate([y[None], np.repeat(y[None], n_refits, 0), perms])
    W = np.concatenate([np.ones((1, n)), boots, np.ones((n_refits, n))]).astype(np.float32)
    return T, W


def torch_task(Z, y, k, n_refits, device):
    T, W = problems(y, n_refits)
    X = torch.as_tensor(Z, device=device)
    loss = "squared" if k == 0 else ("binary" if k == 2 else "multinomial")
    head = BatchedLinearHead(loss, reg=1.0, n_classes=k if k > 2 else None)
    Tt = torch.as_tensor(T, device=device)
    Wt = torch.as_tensor(W, device=device)
    if device.type == "cuda":
        torch.cuda.synchronize()
    t = time.perf_counter()
    point = BatchedLinearHead(loss, reg=1.0, n_classes=head.n_classes).fit(X, Tt[:1], Wt[:1])
    P = len(T)
    groups = torch.tensor([0] + [1] * n_refits + [2] * n_refits)
    init = (point.coef_.expand(P, -1, -1), point.intercept_.expand(P, -1))
    head.fit(X, Tt, Wt, groups=groups, init=init)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t, head, T, W


def sk_fit(Z, y, w, k, solver):
    from sklearn.linear_model import LogisticRegression, Ridge

    if k == 0:
        return Ridge(alpha=1.0).fit(Z, y, sample_weight=w)
    return LogisticRegression(C=1.0, solver=solver, max_iter=2000, tol=1e-6).fit(
        Z, y, sample_weight=w
    )


def sk_coef(model, k):
    c = np.atleast_2d(model.coef_)
    if k > 2:  # compare in the sum-zero gauge (the intercept is free in softmax)
        return np.c_[c, model.intercept_ - model.intercept_.mean()].ravel()
    return np.r_[c.ravel(), np.ravel(model.intercept_)]


def our_coef(head, i, k):
    c = head.coef_[i].cpu().numpy()
    b = head.intercept_[i].cpu().numpy()
    if k > 2:
        return np.c_[c, b - b.mean()].ravel()
    if k == 2:
        return np.r_[c.ravel(), b]
    return np.r_[c.ravel(), b]


def cosine(a, b):
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--n", type=int, default=20000)
    ap.add_argument("--d", type=int, default=512)
    ap.add_argument("--refits", type=int, default=200, help="bootstrap and permutation refits each")
    ap.add_argument(
        "--sk-sample",
        type=int,
        default=3,
        help="sampled bootstrap (and permutation) sklearn fits per task",
    )
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    warnings.simplefilter("ignore")
    device = torch.device(args.device)
    Z, targets = make_data(args.n, args.d)
    name = torch.cuda.get_device_name() if device.type == "cuda" else platform.processor() or "cpu"
    print(
        f"N={args.n} D={args.d} refits={args.refits}+{args.refits} device={device} ({name}), "
        f"torch threads={torch.get_num_threads()}, cores={os.cpu_count()}"
    )
    print()
    print(
        "| task | fits | torch s | sklearn s/fit | sklearn loop s (extrapolated) | ratio | min cosine |"
    )
    print("|---|---|---|---|---|---|---|")
    tot_ours = tot_sk = 0.0
    worst = 1.0
    for task, k in TASKS.items():
        y = targets[task]
        t_ours, head, T, W = torch_task(Z, y, k, args.refits, device)
        P = len(T)
        # sample: the point fit, the first sk_sample bootstraps and permutations
        idx = [
            0,
            *range(1, 1 + args.sk_sample),
            *range(1 + args.refits, 1 + args.refits + args.sk_sample),
        ]
        solvers = ["auto"] if k == 0 else ["lbfgs", "newton-cholesky"]
        best = None
        for solver in solvers:
            t = time.perf_counter()
            models = [sk_fit(Z, T[i], W[i], k, solver) for i in idx]
            per_fit = (time.perf_counter() - t) / len(idx)
            if best is None or per_fit < best[0]:
                best = (per_fit, solver, models)
        per_fit, solver, models = best
        cos = min(cosine(sk_coef(m, k), our_coef(head, i, k)) for m, i in zip(models, idx))
        worst = min(worst, cos)
        loop = per_fit * P
        tot_ours += t_ours
        tot_sk += loop
        print(
            f"| {task} ({solver}) | {P} | {t_ours:.1f} | {per_fit:.3f} | {loop:.0f} | "
            f"{loop / t_ours:.1f}x | {cos:.6f} |"
        )
    print(
        f"| **all** | {P * len(TASKS)} | {tot_ours:.1f} | | {tot_sk:.0f} | "
        f"**{tot_sk / tot_ours:.1f}x** | {worst:.6f} |"
    )


if __name__ == "__main__":
    main()
