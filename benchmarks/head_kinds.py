"""Validation of the audit for multi-label and regression heads, on real digit images.

scikit-learn's bundled handwritten digits (8x8), a small CNN (``SmallCNN``'s trunk, a
32-d embedding) with the head of each kind, and the corner marker of the induced-shortcut
benchmark as the artefact, judged against the counterfactual shift that burning the
marker into the clean audit images gives:

``multilabel``
    Three findings per image: *even* (the digit is even), *high* (>= 5) and *loop*
    (0, 6, 8 or 9), one sigmoid each (BCE). A shortcut model is trained where the marker
    follows *high* (``--biases``, default 0.95, 0.8 and 0.65: P(marker | high) = bias,
    P(marker | not high) = 1 - bias); a shortcut-free one (bias 0.5) where the marker is
    independent. The audit
    sample is confounded (the marker follows *high* at 0.8). Truth: over the three
    logits, the largest mean shift when the marker is added, in that logit's sd on the
    clean images.
``regression``
    The digit's value as a number (0-9, one output, squared error; ``task="regression"``:
    ten whole numbers would otherwise be refused as ambiguous). The marker follows the
    digit being >= 5 as above. Truth: the mean shift of the prediction when the marker is
    added, in the prediction's residual sd with the digit held fixed (the unit of the
    audit's effect for a regression head); the audit's ``effect.target_units`` is compared
    with the shift in digits.

A model is "shortcut" when its truth is at least 0.5 sd, "free" below 0.1 sd, "grey"
between (benchmarks/validation.py's rule).

    python benchmarks/head_kinds.py [--seeds 0 1 2 3 4] [--biases 0.95 0.8 0.65 0.5] [--n-resamples 100] [--out rows.json]
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from collections import Counter, defaultdict

import numpy as np
import torch
from many_levels_validation import embed, marker, split  # benchmarks/ is on the path
from torch import nn

import wsca_audit as wa
from wsca_audit.demo.shortcut import SmallCNN

FREE, SHORTCUT = 0.1, 0.5
FINDINGS = ["even", "high", "loop"]


def findings(digit: np.ndarray) -> np.ndarray:
    """The three 0/1 findings of each digit (N, 3)."""
    return np.stack([digit % 2 == 0, digit >= 5, np.isin(digit, [0, 6, 8, 9])], 1).astype(np.int64)


def train(model: nn.Module, x: np.ndarray, y: np.ndarray, loss, *, seed: int, epochs: int = 30):
    """Adam, mini-batches of 64 in a seeded order; returns the model in eval mode."""
    opt = torch.optim.Adam(model.parameters(), lr=3e-3, weight_decay=1e-4)
    xt, yt = torch.as_tensor(x), torch.as_tensor(y)
    g = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(epochs):
        for idx in torch.randperm(len(xt), generator=g).split(64):
            opt.zero_grad()
            loss(model(xt[idx]), yt[idx]).backward()
            opt.step()
    return model.eval()


def flags_following(follows: np.ndarray, p: float, rng) -> np.ndarray:
    return np.where(rng.random(len(follows)) < p, follows, ~follows).astype(np.int64)


def outputs(model, x) -> np.ndarray:
    with torch.no_grad():
        return model(torch.as_tensor(x)).numpy()


def within_sd(pred: np.ndarray, target: np.ndarray) -> float:
    """The prediction's pooled sd within each target value (its residual sd)."""
    resid = pred - np.array([pred[target == v].mean() for v in target])
    return float(np.sqrt((resid**2).sum() / max(len(pred) - len(np.unique(target)), 1)))


def case(kind: str, seed: int, biases: list[float], n_resamples: int) -> list[dict]:
    (xt, _, dt), (xe, _, de) = split(seed)
    rng = np.random.default_rng([seed, 25])
    rows = []
    for b in biases:
        torch.manual_seed(seed)
        net = SmallCNN()
        if kind == "multilabel":
            net.head = nn.Linear(32, 3)
            yt, ye = findings(dt).astype(np.float32), findings(de)
            loss = nn.functional.binary_cross_entropy_with_logits
        else:
            net.head = nn.Linear(32, 1)
            yt, ye = dt.astype(np.float32)[:, None], de.astype(np.float64)
            loss = nn.functional.mse_loss
        model = train(net, marker(xt, flags_following(dt >= 5, b, rng)), yt, loss, seed=seed)
        flags_e = flags_following(de >= 5, 0.8, np.random.default_rng([seed, 80]))
        z = embed(model, marker(xe, flags_e))
        before, after = outputs(model, xe), outputs(model, marker(xe, np.ones(len(de), int)))
        if kind == "multilabel":
            shifts = (after - before).mean(0) / before.std(0, ddof=1)
            j = int(np.abs(shifts).argmax())
            truth, truth_units, where = float(shifts[j]), None, FINDINGS[j]
        else:
            shift = float((after - before)[:, 0].mean())
            truth = shift / within_sd(before[:, 0], de)
            truth_units, where = shift, "prediction"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            res = wa.analyze(
                z, ye, {"marker": flags_e}, kinds={"marker": "categorical"},
                primary_weight=model.head.weight.detach().numpy(),
                primary_bias=model.head.bias.detach().numpy(),
                task=kind, output_names=FINDINGS if kind == "multilabel" else None,
                target_unit="digits" if kind == "regression" else None,
                n_bootstrap=n_resamples, n_permutations=n_resamples, progress=False,
                layer_attribution=False,
            )  # fmt: skip
        t = res.tasks["marker"]
        e = t["effect"]
        rows.append({
            "case": kind, "bias": b, "seed": seed, "truth": truth,
            "truth_class": "free" if abs(truth) < FREE else "shortcut" if abs(truth) >= SHORTCUT else "grey",
            "truth_units": truth_units, "where": where,
            "metric": res.to_dict()["primary"]["metric"]["value"],
            "effect": e["value"], "effect_ci": [e["ci_low"], e["ci_high"]],
            "target_units": (e.get("target_units") or {}).get("value"),
            "contrast": e.get("contrast"), "verdict": t["verdict"], "reason": t["reason"],
        })  # fmt: skip
    return rows


def report(rows: list[dict]) -> None:
    print(f"{'case':10} {'bias':>5} {'seed':>4} {'truth':>6} {'class':8} {'where':10} "
          f"{'metric':>6}  {'effect [95% CI]':22} {'units':>6} {'truth':>6}  verdict")  # fmt: skip
    for r in rows:
        e = r["effect_ci"]
        units = "" if r["target_units"] is None else f"{r['target_units']:6.2f}"
        tu = "" if r["truth_units"] is None else f"{r['truth_units']:6.2f}"
        print(f"{r['case']:10} {r['bias']:5.2f} {r['seed']:>4} {r['truth']:6.2f} {r['truth_class']:8} "
              f"{r['where']:10} {r['metric']:6.3f}  {r['effect']:5.2f} [{e[0]:5.2f}, {e[1]:5.2f}]"
              f"   {units:>6} {tu:>6}  {r['verdict']}")  # fmt: skip
    table = defaultdict(Counter)
    for r in rows:
        table[(r["case"], r["truth_class"])][r["verdict"]] += 1
    print("\nverdicts by case and truth:")
    for key in sorted(table):
        print(f"  {key[0]:10} {key[1]:8}: {dict(table[key])}")
    err = [abs(r["effect"] - r["truth"]) for r in rows if r["effect"] is not None]
    print(f"median |effect - truth| = {np.median(err):.2f} sd over {len(err)} audits")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    ap.add_argument("--biases", type=float, nargs="+", default=[0.95, 0.8, 0.65, 0.5])
    ap.add_argument("--n-resamples", type=int, default=100)
    ap.add_argument("--cases", nargs="+", default=["multilabel", "regression"])
    ap.add_argument("--out")
    args = ap.parse_args()
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    rows = [
        r for s in args.seeds for c in args.cases for r in case(c, s, args.biases, args.n_resamples)
    ]
    report(rows)
    print(f"\n{len(rows)} audits in {time.perf_counter() - t0:.0f} s")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
