"""How few informative samples can an audit decide from? The check behind
``wsca_audit.support.MIN_INFORMATIVE``.

Data built so that the truth is known: N samples, a binary label ``y`` and a binary
``site`` equal to ``y`` except for ``k`` samples (half in each class) whose site is
flipped; those ``k`` are the only samples that separate site from the label (the audit's
``n_informative``). The embedding carries the site marker in dim 0 (``+2 * site``) and the
label's own signal in dim 1 (``+2 * y``). The head reads dim 0 ("reads site": the truth
is ``uses``) or dim 1 ("clean": the truth is "not uses").

Each (k, head, seed) is audited with the support minimum switched off
(``MIN_INFORMATIVE = 0``), and the table counts the verdicts: a *wrong* decided verdict is
``uses`` for the clean head, or ``encoded_not_used`` / ``not_encoded`` for the head that
reads the site. The minimum is then the smallest k above which no verdict was wrong, with
a margin; the validation suite (``benchmarks/validation.py``) shows what it costs.

    python benchmarks/informative_minimum.py [--seeds 80] [--n 800] [--n-resamples 100] [--ks 4 6 8]
"""

from __future__ import annotations

import argparse
import time
import warnings
from collections import Counter

import numpy as np
import torch

import wsca_audit as wa
import wsca_audit.support as support

KS = (0, 2, 4, 6, 7, 8, 9, 10, 12, 16)
WRONG = {"clean": {"uses"}, "reads site": {"encoded_not_used", "not_encoded"}}


def build(k: int, reads_site: bool, n: int, seed: int):
    """Embeddings, labels, site and head weights for one case (see the module docstring)."""
    rng = np.random.default_rng(seed)
    y = rng.permutation(np.arange(n) % 2)
    site = y.copy()
    for c in (0, 1):  # flip k/2 samples in each class (k odd: the extra one in class 1)
        idx = np.flatnonzero(y == c)[: k // 2 + (c == 1) * (k % 2)]
        site[idx] = 1 - site[idx]
    z = rng.normal(size=(n, 8))
    z[:, 0] += 2.0 * site
    z[:, 1] += 2.0 * y
    w = np.zeros((2, 8))
    w[1, 0 if reads_site else 1] = 1.0
    return z, y, site, w


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=80)
    ap.add_argument("--n", type=int, default=800)
    ap.add_argument("--n-resamples", type=int, default=100)
    ap.add_argument("--ks", type=int, nargs="+", default=list(KS))
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    support.MIN_INFORMATIVE = 0  # measure what the audit says without the minimum
    t0 = time.perf_counter()
    print(f"N={args.n}, {args.seeds} seeds, {args.n_resamples} bootstrap/permutation refits")
    print("| k informative | head | verdicts | wrong | decided |")
    print("|---|---|---|---|---|")
    for k in args.ks:
        for head in ("clean", "reads site"):
            verdicts = Counter()
            for seed in range(args.seeds):
                z, y, site, w = build(k, head == "reads site", args.n, seed)
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    res = wa.analyze(
                        z,
                        y,
                        {"site": site},
                        primary_weight=w,
                        seed=seed,
                        progress=False,
                        n_bootstrap=args.n_resamples,
                        n_permutations=args.n_resamples,
                    )
                verdicts[res.tasks["site"]["verdict"]] += 1
            wrong = sum(verdicts[v] for v in WRONG[head])
            decided = args.seeds - verdicts["inconclusive"]
            shown = ", ".join(f"{v} {c}" for v, c in sorted(verdicts.items()))
            print(f"| {k} | {head} | {shown} | {wrong} | {decided} of {args.seeds} |", flush=True)
    print(f"\n{time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
