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

``--source mri``: the same two cases on Br35H brain MRI (3,000 real images at 64 x 64)
through the frozen ImageNet MobileNetV2 of the validation suite, with a trained head of
1280 -> 64 (the embedding) -> K on its features. Multi-label findings: *tumour* (the data
set's label) and *large* (the head fills more of the field of view than the median);
regression: ``head_fraction`` (the share of the field of view the head occupies, in
percent: a real, image-derived quantity). The marker follows the tumour label
(multi-label) or a head larger than the median (regression) in training, and at 0.8 in
the audit sample.

A model is "shortcut" when its truth is at least 0.5 sd, "free" below 0.1 sd, "grey"
between (benchmarks/validation.py's rule).

    python benchmarks/head_kinds.py [--source digits|mri] [--seeds 0 1 2 3 4] [--biases 0.95 0.8 0.65 0.5] [--n-resamples 100] [--out rows.json]
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
from wsca_audit.head_kinds import regression_strata

FREE, SHORTCUT = 0.1, 0.5
NAMES = {
    ("digits", "multilabel"): ["even", "high", "loop"],
    ("mri", "multilabel"): ["tumour", "large"],
}
UNITS = {("digits", "regression"): "digits", ("mri", "regression"): "% of the field of view"}


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
    """The prediction's residual sd with the target held fixed, as the audit holds it:
    within each value of a target of a few whole numbers, else within quantile bins and
    along the target inside them."""
    if len(np.unique(target)) <= 20:
        strata = np.unique(target, return_inverse=True)[1].reshape(-1)
        X = np.eye(strata.max() + 1)[strata]
    else:
        strata, _ = regression_strata(target)
        X = np.concatenate([np.eye(strata.max() + 1)[strata], target[:, None]], 1)
    resid = pred - X @ np.linalg.lstsq(X, pred, rcond=None)[0]
    return float(np.sqrt((resid**2).sum() / max(len(pred) - X.shape[1], 1)))


def judge(source, kind, bias, seed, z, y_audit, flags, head, before, after, target, n_res):
    """Audit one model and compare it with the intervention (``before`` / ``after``: the
    model's outputs on the clean audit images and with the marker burnt in)."""
    names = NAMES.get((source, kind))
    if kind == "multilabel":
        shifts = (after - before).mean(0) / before.std(0, ddof=1)
        j = int(np.abs(shifts).argmax())
        truth, truth_units, where = float(shifts[j]), None, names[j]
    else:
        shift = float((after - before)[:, 0].mean())
        truth = shift / within_sd(before[:, 0].astype(np.float64), target)
        truth_units, where = shift, "prediction"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = wa.analyze(
            z, y_audit, {"marker": flags}, kinds={"marker": "categorical"},
            primary_weight=head.weight.detach().numpy(), primary_bias=head.bias.detach().numpy(),
            task=kind, output_names=names, target_unit=UNITS.get((source, kind)),
            n_bootstrap=n_res, n_permutations=n_res, progress=False, layer_attribution=False,
        )  # fmt: skip
    t = res.tasks["marker"]
    e = t["effect"]
    return {
        "source": source, "case": kind, "bias": bias, "seed": seed, "truth": truth,
        "truth_class": "free" if abs(truth) < FREE else "shortcut" if abs(truth) >= SHORTCUT else "grey",
        "truth_units": truth_units, "where": where,
        "metric": res.to_dict()["primary"]["metric"]["value"],
        "effect": e["value"], "effect_ci": [e["ci_low"], e["ci_high"]],
        "target_units": (e.get("target_units") or {}).get("value"),
        "contrast": e.get("contrast"), "verdict": t["verdict"], "reason": t["reason"],
    }  # fmt: skip


def digits_case(kind: str, seed: int, biases: list[float], n_resamples: int) -> list[dict]:
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
        rows.append(judge("digits", kind, b, seed, z, ye, flags_e, model.head, before, after,
                          de.astype(np.float64), n_resamples))  # fmt: skip
    return rows


def mri_case(kind: str, seed: int, biases: list[float], n_resamples: int, source) -> list[dict]:
    """The two cases on Br35H MRI features (see the module docstring)."""
    from wsca_audit.demo.br35h import load_br35h

    data = load_br35h(64)
    clean, marked = source.inputs("patch", 0), source.inputs("patch", 1)
    area = 100.0 * data.head_fraction.astype(np.float64)
    tumour = data.labels.astype(bool)
    # the marker follows the tumour (multi-label) or a large head (regression): a shortcut
    # for the regression target needs an artefact that goes with it
    follows = tumour if kind == "multilabel" else area > np.median(area)
    train_idx, pool = source.split(seed)
    rng = np.random.default_rng([seed, 64])
    rows = []
    for b in biases:
        torch.manual_seed(seed)
        if kind == "multilabel":
            y = np.stack([tumour, area > np.median(area)], 1).astype(np.int64)
            width, loss = 2, nn.functional.binary_cross_entropy_with_logits
        else:
            y = area[:, None]
            width, loss = 1, nn.functional.mse_loss
        net = nn.Sequential(nn.Linear(clean.shape[1], 64), nn.ReLU(), nn.Linear(64, width))
        with torch.no_grad():  # a regression head starts at the mean
            net[2].bias.fill_(float(area.mean()) if kind == "regression" else 0.0)
        flags_t = flags_following(follows[train_idx], b, rng)
        xt = torch.as_tensor(np.where(flags_t[:, None] == 1, marked[train_idx], clean[train_idx]))
        yt = torch.as_tensor(y[train_idx], dtype=torch.float32)
        opt = torch.optim.AdamW(net.parameters(), lr=3e-3, weight_decay=1e-2)
        for _ in range(500):  # full batch, as the validation suite's MRI heads
            opt.zero_grad()
            loss(net(xt), yt).backward()
            opt.step()
        net.eval()
        flags_e = flags_following(follows[pool], 0.8, np.random.default_rng([seed, 80]))
        x_e = np.where(flags_e[:, None] == 1, marked[pool], clean[pool])
        with torch.no_grad():
            z = net[:2](torch.as_tensor(x_e)).numpy()
        before, after = outputs(net, clean[pool]), outputs(net, marked[pool])
        y_audit = y[pool] if kind == "multilabel" else area[pool]
        rows.append(judge("mri", kind, b, seed, z, y_audit, flags_e, net[2], before, after,
                          area[pool], n_resamples))  # fmt: skip
    return rows


def report(rows: list[dict]) -> None:
    print(f"{'source':6} {'case':10} {'bias':>5} {'seed':>4} {'truth':>6} {'class':8} "
          f"{'where':10} {'metric':>6}  {'effect [95% CI]':22} {'units':>6} {'truth':>6}  "
          "verdict")  # fmt: skip
    for r in rows:
        e = r["effect_ci"]
        units = "" if r["target_units"] is None else f"{r['target_units']:6.2f}"
        tu = "" if r["truth_units"] is None else f"{r['truth_units']:6.2f}"
        print(f"{r['source']:6} {r['case']:10} {r['bias']:5.2f} {r['seed']:>4} {r['truth']:6.2f} "
              f"{r['truth_class']:8} {r['where']:10} {r['metric']:6.3f}  {r['effect']:5.2f} "
              f"[{e[0]:5.2f}, {e[1]:5.2f}]   {units:>6} {tu:>6}  {r['verdict']}")  # fmt: skip
    table = defaultdict(Counter)
    for r in rows:
        table[(r["source"], r["case"], r["truth_class"])][r["verdict"]] += 1
    print("\nverdicts by source, case and truth:")
    for key in sorted(table):
        print(f"  {key[0]:6} {key[1]:10} {key[2]:8}: {dict(table[key])}")
    for src, case in sorted({(r["source"], r["case"]) for r in rows}):
        sel = [r for r in rows if (r["source"], r["case"]) == (src, case)]
        err = [abs(r["effect"] - r["truth"]) for r in sel if r["effect"] is not None]
        units = [abs(r["target_units"] - r["truth_units"]) for r in sel
                 if r["target_units"] is not None]  # fmt: skip
        extra = f", in the target's units {np.median(units):.3f}" if units else ""
        print(f"  {src} {case}: median |effect - truth| = {np.median(err):.3f} sd{extra}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--source", choices=["digits", "mri"], nargs="+", default=["digits"])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    ap.add_argument("--biases", type=float, nargs="+", default=[0.95, 0.8, 0.65, 0.5])
    ap.add_argument("--n-resamples", type=int, default=100)
    ap.add_argument("--cases", nargs="+", default=["multilabel", "regression"])
    ap.add_argument("--out")
    args = ap.parse_args()
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    rows = []
    for src in args.source:
        mri = None
        if src == "mri":
            from validation import mri_source

            mri = mri_source(64)
        for seed in args.seeds:
            for kind in args.cases:
                if src == "digits":
                    rows += digits_case(kind, seed, args.biases, args.n_resamples)
                else:
                    rows += mri_case(kind, seed, args.biases, args.n_resamples, mri)
    report(rows)
    print(f"\n{len(rows)} audits in {time.perf_counter() - t0:.0f} s")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
