"""Validation of the audit with many levels and many classes, on real digit images.

Two cases (issue 18), each with shortcut models and shortcut-free ones, judged against
the counterfactual shift that editing the inputs gives:

``scanners``
    A binary head (digit >= 5) and ten synthetic "scanners", each burning the corner
    patch in at its own intensity (0, 0.11, ..., 1). A shortcut model is trained where
    the brighter five scanners go with label 1 (``--bias``, default 0.95); a shortcut-free
    one where the scanner is drawn independently of the label. The audit sample is
    confounded (0.8). The same scanner variable is audited in four codings: bright /
    dim (2 levels), pairs of scanners (5), the scanners (10), and 30 "sites" (each scanner
    split in three at random). Truth: the mean shift of the logit contrast when the
    clean audit images are moved from the dimmest scanner to the brightest, in the
    contrast's sd.
``classes``
    A ten-class head (the digit itself) and a binary corner marker that follows class 3
    in training (``--bias``: P(marker | 3); P(marker | other) = 1 - bias); shortcut-free:
    the marker independent of the class. Audit sample confounded at 0.8. Truth: over the
    ten class-vs-mean contrasts, the largest mean shift when the marker is added, in that
    contrast's sd. The binary head of the same images (digit >= 5, marker following the
    label) is audited beside it, so the two rates can be compared.

``sites`` (``--fpr-seeds``, synthetic embeddings)
    The setting of issue 18: N = 5,000, D = 128, 30 sites written into the embedding,
    the label tied to site parity; heads blind to site (orthogonal to every site's mean)
    and heads that add 0.75 to the logit of the even sites, one per seed, audited with
    the site coded in 2 (parity), 6 (site mod 6) and 30 levels (false and true positive
    rates over seeds).

    python benchmarks/many_levels_validation.py [--seeds 0 1 2] [--fpr-seeds 10] [--cases ...] [--out rows.json]
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from collections import Counter, defaultdict

import numpy as np
import torch

import wsca_audit as wa
from wsca_audit.demo.shortcut import PATCH, SmallCNN, load_digits_images, train_classifier
from wsca_audit.demo.sites import synthetic_sites

INTENSITY = np.linspace(0.0, 1.0, 10)  # scanner k burns the patch in at INTENSITY[k]


def burn(images: np.ndarray, intensity: np.ndarray) -> np.ndarray:
    out = images.copy()
    out[:, 0, PATCH[0], PATCH[1]] = intensity[:, None, None]
    return out


def marker(images: np.ndarray, flags: np.ndarray) -> np.ndarray:
    return burn(images, np.where(flags == 1, 1.0, images[:, 0, 0, 0]))


def split(seed: int):
    x, y, digit = load_digits_images()
    order = np.random.default_rng(seed).permutation(len(y))
    n_train = int(0.6 * len(y))
    return (x[order[:n_train]], y[order[:n_train]], digit[order[:n_train]]), (
        x[order[n_train:]],
        y[order[n_train:]],
        digit[order[n_train:]],
    )


def scanners_for(labels: np.ndarray, bias: float, rng) -> np.ndarray:
    """Bright scanners (5-9) for label 1 and dim ones (0-4) for label 0 with prob ``bias``."""
    bright = np.where(rng.random(len(labels)) < bias, labels, 1 - labels)
    return 5 * bright + rng.integers(0, 5, len(labels))


def embed(model, x):
    with torch.no_grad():
        return model.features(torch.as_tensor(x)).numpy()


def audit(model, z, y, meta, kinds, n_resamples):
    res = wa.analyze(
        z, y, meta, kinds=kinds,
        primary_weight=model.head.weight.detach().numpy(),
        primary_bias=model.head.bias.detach().numpy(),
        n_bootstrap=n_resamples, n_permutations=n_resamples, progress=False,
        layer_attribution=False,
    )  # fmt: skip
    return res


def contrast_shift(model, before, after, contrasts) -> float:
    with torch.no_grad():
        lb, la = model(torch.as_tensor(before)), model(torch.as_tensor(after))
    cb, ca = lb @ contrasts.T, la @ contrasts.T
    shift = (ca - cb).mean(0) / cb.std(0).clamp_min(1e-12)
    return float(shift[shift.abs().argmax()])


def scanners_case(seed: int, bias: float, n_resamples: int) -> list[dict]:
    (xt, yt, _), (xe, ye, _) = split(seed)
    rng = np.random.default_rng([seed, 18])
    rows = []
    for kind, b in (("shortcut", bias), ("free", 0.5)):
        s_train = scanners_for(yt, b, rng)
        torch.manual_seed(seed)
        model = train_classifier(SmallCNN(), burn(xt, INTENSITY[s_train]), yt, seed=seed)
        s_eval = scanners_for(ye, 0.8, np.random.default_rng([seed, 81]))
        z = embed(model, burn(xe, INTENSITY[s_eval]))
        two = torch.tensor([[-1.0, 1.0]])
        truth = contrast_shift(
            model, burn(xe, np.full(len(ye), INTENSITY[0])), burn(xe, np.full(len(ye), 1.0)), two
        )
        sites = 3 * s_eval + np.random.default_rng([seed, 30]).integers(0, 3, len(ye))
        codings = {"2": s_eval // 5, "5": s_eval // 2, "10": s_eval, "30": sites}
        for name, m in codings.items():
            t = audit(model, z, ye, {"scanner": m}, {"scanner": "categorical"}, n_resamples)
            rows.append(_row("scanners", kind, seed, name, truth, t.tasks["scanner"]))
    return rows


def classes_case(seed: int, bias: float, n_resamples: int) -> list[dict]:
    (xt, yt, dt), (xe, ye, de) = split(seed)
    rng = np.random.default_rng([seed, 3])
    rows = []
    for n_classes in (10, 2):
        labels_t, labels_e = (dt, de) if n_classes == 10 else (yt, ye)
        follows_t = (dt == 3) if n_classes == 10 else (yt == 1)
        follows_e = (de == 3) if n_classes == 10 else (ye == 1)
        for kind, b in (("shortcut", bias), ("free", 0.5)):
            flags_t = np.where(rng.random(len(yt)) < b, follows_t, ~follows_t).astype(int)
            torch.manual_seed(seed)
            net = SmallCNN()
            net.head = torch.nn.Linear(32, n_classes)
            model = train_classifier(net, marker(xt, flags_t), labels_t, seed=seed)
            flags_e = np.where(rng.random(len(ye)) < 0.8, follows_e, ~follows_e).astype(int)
            z = embed(model, marker(xe, flags_e))
            if n_classes == 2:
                contrasts = torch.tensor([[-1.0, 1.0]])
            else:
                contrasts = torch.eye(n_classes) - 1.0 / n_classes
            truth = contrast_shift(model, xe, marker(xe, np.ones(len(ye), int)), contrasts)
            t = audit(model, z, labels_e, {"marker": flags_e}, {"marker": "categorical"},
                      n_resamples)  # fmt: skip
            rows.append(_row("classes", kind, seed, f"C={n_classes}", truth, t.tasks["marker"]))
    return rows


def sites_case(seed: int, n_resamples: int) -> list[dict]:
    rows = []
    for kind, use in (("shortcut", 0.75), ("free", 0.0)):
        z, y, site, W = synthetic_sites(use=use, seed=seed)
        # truth: the head adds `use` to the logit of the even sites, in sd of the score
        # with that part removed (the unit of the effect)
        truth = use / float((z @ (W[1] - W[0]) - use * ((site % 2 == 0) - 0.5)).std())
        for coding, m in (("2", site % 2), ("6", site % 6), ("30", site)):
            res = wa.analyze(z, y, {"site": m}, kinds={"site": "categorical"},
                             primary_weight=W, n_bootstrap=n_resamples,
                             n_permutations=n_resamples, progress=False,
                             layer_attribution=False)  # fmt: skip
            rows.append(_row("sites", kind, seed, coding, truth, res.tasks["site"]))
    return rows


def _row(case, kind, seed, coding, truth, task) -> dict:
    u, e = task["usage"], task["effect"]
    return {
        "case": case, "model": kind, "seed": seed, "coding": coding, "truth": truth,
        "verdict": task["verdict"], "usage": u["value"], "usage_ci": [u["ci_low"], u["ci_high"]],
        "canonical": u.get("canonical"), "chance": u.get("chance"), "p": u["p_value"],
        "effect": e["value"], "effect_ci": [e["ci_low"], e["ci_high"]],
    }  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--bias", type=float, default=0.95)
    ap.add_argument("--n-resamples", type=int, default=100)
    ap.add_argument("--fpr-seeds", type=int, default=10, help="seeds of the sites case")
    ap.add_argument("--cases", nargs="+", default=["scanners", "classes", "sites"])
    ap.add_argument("--out")
    args = ap.parse_args()
    warnings.simplefilter("ignore")
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    rows = []
    for seed in args.seeds:
        if "scanners" in args.cases:
            rows += scanners_case(seed, args.bias, args.n_resamples)
        if "classes" in args.cases:
            rows += classes_case(seed, args.bias, args.n_resamples)
    if "sites" in args.cases:
        for seed in range(args.fpr_seeds):
            rows += sites_case(seed, args.n_resamples)
    print(f"{'case':9} {'model':9} {'seed':>4} {'coding':>6} {'truth':>6}  {'usage [95% CI]':24} "
          f"{'canon':>6} {'chance':>6} {'p':>6}  {'effect [95% CI]':22} verdict")  # fmt: skip

    def f(v, spec=".3f"):  # None: not reported (usage at a chance level above 0.5)
        return "  -  " if v is None else format(v, spec)

    for r in rows:
        u, e = r["usage_ci"], r["effect_ci"]
        print(f"{r['case']:9} {r['model']:9} {r['seed']:>4} {r['coding']:>6} {r['truth']:6.2f}  "
              f"{f(r['usage'])} [{f(u[0])}, {f(u[1])}]     {f(r['canonical'], '6.3f')} "
              f"{f(r['chance'], '6.3f')} {r['p']:6.3f}  "
              f"{r['effect']:5.2f} [{e[0]:5.2f}, {e[1]:5.2f}]   {r['verdict']}")  # fmt: skip
    print("\nverdicts by case, model and coding:")
    table = defaultdict(Counter)
    for r in rows:
        table[(r["case"], r["model"], r["coding"])][r["verdict"]] += 1
    for key in sorted(table):
        print(f"  {key[0]:9} {key[1]:9} {key[2]:>6}: {dict(table[key])}")
    print(f"\n{len(rows)} audits in {time.perf_counter() - t0:.0f} s")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
