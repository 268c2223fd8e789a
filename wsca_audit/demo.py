"""The bundled demo: audit two CNNs trained on real digit images, one with a shortcut.

Both models learn "digit >= 5" from scikit-learn's handwritten digits; the second was
trained where a scanner-like artefact agreed with the label 95% of the time. Both are
audited on the same data (artefact correlated with the label at 0.8) for the "scanner"
artefact and the amount of ink in the digit. Reports go to ``wsca-demo/<model>/``.

    python -m wsca_audit.demo [--out wsca-demo]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from .collect import Auditor
from .shortcut import make_split, train_cnn

MODELS = {"clean": 0.5, "shortcut": 0.95}


def run(out: str | Path = "wsca-demo", n_resamples: int = 200, progress: bool = True) -> dict:
    """Train (seconds on a CPU), audit and save both models; returns name -> AuditResult."""
    results = {}
    for name, bias in MODELS.items():
        split = make_split(bias, seed=0)
        model = train_cnn(split.train_x, split.train_y, seed=0)
        auditor = Auditor(model, metadata={"scanner": "categorical", "ink": "continuous"})
        ink = split.clean_x.reshape(len(split.clean_x), -1).sum(1)
        with auditor.collect(), torch.no_grad():
            for i in range(0, len(split.eval_x), 128):
                sl = slice(i, i + 128)
                model(torch.as_tensor(split.eval_x[sl]))
                auditor.record(
                    targets=split.eval_y[sl],
                    metadata={"scanner": split.eval_flags[sl], "ink": ink[sl]},
                )
        res = auditor.analyze(
            n_bootstrap=n_resamples, n_permutations=n_resamples, progress=progress
        )
        path = res.save(Path(out) / name)
        print(f"\n== model '{name}' (training bias {bias}) -> {path}/report.html")
        print(res.summary())
        results[name] = res
    return results


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--out", default="wsca-demo", help="output directory (default: wsca-demo)")
    ap.add_argument("--n-resamples", type=int, default=200, help="bootstrap and permutation refits")
    args = ap.parse_args(argv)
    res = run(args.out, args.n_resamples)
    ok = (
        res["shortcut"].verdicts["scanner"] == "uses" and res["clean"].verdicts["scanner"] != "uses"
    )
    print("\nverdicts tell the two models apart:", "yes" if ok else "NO")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
