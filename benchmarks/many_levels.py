"""A site variable with many levels: the whole audit vs a loop of scikit-learn fits.

The setting of issue 18: N = 5,000 embeddings of D = 128, a 30-level site variable
written into them, the label correlated with site, a head that reads the even sites;
``--n-resamples`` bootstrap and as many permutation refits (default 100 + 100).

Times, in one run on this machine:

- the whole audit of the 30-level variable (``wa.analyze``, layer view off), with the
  Kronecker-factored softmax preconditioner (the default from 8 classes on) and with
  the full K(D+1)-square factor it replaces;
- a loop of scikit-learn ``LogisticRegression`` fits doing the audit's softmax fits: the
  number of problems the audit hands the solver (counted), times the mean time of
  ``--sk-sample`` scikit-learn fits on the same standardised design (lbfgs, C = 1);
- the agreement of the batched point fit with scikit-learn's (cosine of the centred
  coefficient matrices).

    python benchmarks/many_levels.py [--levels 30] [--n-resamples 100]
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression

import wsca_audit as wa
from wsca_audit import heads


def make_data(n: int, d: int, levels: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    site = rng.integers(0, levels, n)
    centers = rng.normal(size=(levels, d)) * 0.5
    y = (rng.random(n) < np.where(site % 2 == 0, 0.65, 0.35)).astype(int)
    z = rng.normal(size=(n, d)) + centers[site] + np.outer(y, rng.normal(size=d)) * 0.4
    w = np.linalg.lstsq(z, y - 0.5, rcond=None)[0]
    even = np.linalg.lstsq(z, (site % 2 == 0) - 0.5, rcond=None)[0]
    W = np.stack([-w, w]) / 2 + np.stack([-even, even]) * 0.75 / 2
    return z, y, site, W


def audit(z, y, site, W, n_resamples: int):
    problems = []
    fit = heads.BatchedLinearHead.fit

    def counting(self, X, targets, *a, **k):
        if self.loss == "multinomial":
            problems.append(int(targets.shape[0]))
        return fit(self, X, targets, *a, **k)

    heads.BatchedLinearHead.fit = counting
    try:
        t = time.perf_counter()
        res = wa.analyze(z, y, {"site": site}, kinds={"site": "categorical"},
                         primary_weight=W, n_bootstrap=n_resamples,
                         n_permutations=n_resamples, progress=False,
                         layer_attribution=False)  # fmt: skip
        return time.perf_counter() - t, sum(problems), res
    finally:
        heads.BatchedLinearHead.fit = fit


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=5000)
    ap.add_argument("--d", type=int, default=128)
    ap.add_argument("--levels", type=int, default=30)
    ap.add_argument("--n-resamples", type=int, default=100)
    ap.add_argument("--sk-sample", type=int, default=8)
    ap.add_argument("--skip-full", action="store_true", help="skip the full-factor run")
    args = ap.parse_args()
    warnings.simplefilter("ignore")
    torch.set_num_threads(2)
    z, y, site, W = make_data(args.n, args.d, args.levels)

    t_kron, n_problems, res = audit(z, y, site, W, args.n_resamples)
    t_full = float("nan")
    if not args.skip_full:
        keep = heads.KRON_MIN_CLASSES
        heads.KRON_MIN_CLASSES = 10**9
        try:
            t_full, _, res_full = audit(z, y, site, W, args.n_resamples)
        finally:
            heads.KRON_MIN_CLASSES = keep
        same = res.tasks["site"]["usage"]["value"] - res_full.tasks["site"]["usage"]["value"]
        print(f"usage, Kronecker minus full preconditioner: {same:+.2e}")

    Zs = (z - z.mean(0)) / z.std(0)
    times, coefs = [], []
    for i in range(args.sk_sample):
        w = np.random.default_rng(i).multinomial(len(y), np.full(len(y), 1 / len(y))) if i else None
        t = time.perf_counter()
        sk = LogisticRegression(C=1.0, max_iter=1000, tol=1e-6).fit(Zs, site, sample_weight=w)
        times.append(time.perf_counter() - t)
        coefs.append(sk.coef_)
    head = heads.BatchedLinearHead("multinomial", reg=1.0, n_classes=args.levels, tol=1e-8)
    head.fit(torch.as_tensor(Zs), torch.as_tensor(site)[None])
    a = head.coef_[0].numpy()
    b = coefs[0]
    a, b = a - a.mean(0), b - b.mean(0)
    cosine = float((a * b).sum() / np.linalg.norm(a) / np.linalg.norm(b))
    sk_loop = float(np.mean(times)) * n_problems
    u = res.tasks["site"]["usage"]
    print(
        f"N={args.n}, D={args.d}, {args.levels} levels, {args.n_resamples} + "
        f"{args.n_resamples} refits; {n_problems} softmax problems in the audit\n"
        f"| | seconds | vs scikit-learn loop |\n|---|---|---|\n"
        f"| audit, Kronecker-factored preconditioner | {t_kron:.1f} | {sk_loop / t_kron:.1f}x faster |\n"
        f"| audit, full K(D+1) factor | {t_full:.1f} | {sk_loop / t_full:.1f}x faster |\n"
        f"| scikit-learn loop ({np.mean(times):.3f} s a fit x {n_problems}) | {sk_loop:.1f} | 1 |\n"
        f"agreement with scikit-learn (point fit): cosine {cosine:.5f}; usage "
        f"{u['value']:.3f} [{u['ci_low']:.3f}, {u['ci_high']:.3f}], verdict "
        f"{res.tasks['site']['verdict']}"
    )


if __name__ == "__main__":
    main()
