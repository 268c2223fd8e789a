"""Mitigation benchmark: does `wa.mitigate` remove an induced shortcut, and at what cost?

Ground truth by intervention on real digit images (scikit-learn's bundled digits, the
small CNN of ``wsca_audit.demo.shortcut``): for each training bias and seed, train the
CNN, audit it on confounded data (artefact agrees with the label 80%), mitigate the
artefact with each method, and measure on the held-out part that the mitigation never
saw:

- the counterfactual effect of switching the artefact on (logit-sd), original vs patched;
- the AUC with the artefact independent of the label, and anti-correlated with it;
- the AUC on the usual (confounded) data;
- usage and verdict of the artefact after mitigation.

Prints one row per (bias, method) averaged over seeds, and the effect reduction. With
``--mri``, the demo's MRI shortcut model too (needs the demo's wheels).

    python benchmarks/mitigation.py --seeds 0 1 2 [--mri]
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

import wsca_audit as wa
from wsca_audit.demo.shortcut import add_artefact, counterfactual_effect, make_split, train_cnn
from wsca_audit.primary import primary_score

METHODS = ("erase", "dfr", "both")


@torch.no_grad()
def auc(model, x, y) -> float:
    score = primary_score(model(torch.as_tensor(x)))  # the score the audit's AUC ranks
    return float(roc_auc_score(y, score.numpy()))


def digits_rows(biases, seeds, n_resamples):
    rows = []
    for bias in biases:
        for seed in seeds:
            split = make_split(bias, seed=seed)
            model = train_cnn(split.train_x, split.train_y, seed=seed)
            aud = wa.Auditor(model, kinds={"artefact": "categorical"})
            with aud.collect(), torch.no_grad():
                model(torch.as_tensor(split.eval_x))
                aud.record(targets=split.eval_y, metadata={"artefact": split.eval_flags})
            for method in METHODS:
                t = time.perf_counter()
                m = wa.mitigate(model, aud, "artefact", method, seed=seed,
                                n_bootstrap=n_resamples, n_permutations=n_resamples,
                                progress=False)  # fmt: skip
                dt = time.perf_counter() - t
                h = m.holdout_index_
                y = split.eval_y[h]
                anti = add_artefact(split.clean_x[h], torch.as_tensor(1 - y))
                after = m.after.tasks["artefact"]
                row = {"bias": bias, "seed": seed, "method": method, "time_s": dt}
                for tag, mod in (("orig", model), ("patched", m.model)):
                    row[f"effect_{tag}"] = counterfactual_effect(mod, split.clean_x[h])
                    row[f"auc_indep_{tag}"] = auc(mod, split.free_x[h], y)
                    row[f"auc_anti_{tag}"] = auc(mod, np.asarray(anti), y)
                    row[f"auc_usual_{tag}"] = auc(mod, split.eval_x[h], y)
                row["usage_before"] = m.before.tasks["artefact"]["usage"]["value"]
                row["usage_after"] = after["usage"]["value"]
                row["verdict_before"] = m.before.tasks["artefact"]["verdict"]
                row["verdict_after"] = after["verdict"]
                rows.append(row)
    return rows


def print_table(rows, title):
    print(f"\n{title}")
    print(
        "| bias | method | effect orig -> patched (reduction) | AUC indep. | AUC anti | "
        "AUC usual | usage after | verdicts after |"
    )
    print("|---|---|---|---|---|---|---|---|")
    keys = sorted(
        {(r["bias"], r["method"]) for r in rows}, key=lambda k: (k[0], METHODS.index(k[1]))
    )
    for bias, method in keys:
        rs = [r for r in rows if r["bias"] == bias and r["method"] == method]
        mean = lambda k, rs=rs: float(np.mean([r[k] for r in rs]))  # noqa: E731
        red = (
            1 - mean("effect_patched") / mean("effect_orig")
            if abs(mean("effect_orig")) > 0.2
            else float("nan")
        )
        verdicts = {}
        for r in rs:
            verdicts[r["verdict_after"]] = verdicts.get(r["verdict_after"], 0) + 1
        vtext = ", ".join(f"{v} {n}/{len(rs)}" for v, n in sorted(verdicts.items()))
        print(
            f"| {bias} | {method} | {mean('effect_orig'):.2f} -> {mean('effect_patched'):.2f}"
            f" ({red:.0%}) | {mean('auc_indep_orig'):.3f} -> {mean('auc_indep_patched'):.3f} | "
            f"{mean('auc_anti_orig'):.3f} -> {mean('auc_anti_patched'):.3f} | "
            f"{mean('auc_usual_orig'):.3f} -> {mean('auc_usual_patched'):.3f} | "
            f"{mean('usage_before'):.2f} -> {mean('usage_after'):.2f} | {vtext} |"
        )


def mri_rows(n_resamples, cache):
    from pathlib import Path

    from wsca_audit.demo import mri
    from wsca_audit.demo.regions import set_marker

    demo = mri.make_data(0)
    with mri.deterministic_torch(0):
        models = mri.build_models(demo, Path(cache), seed=0, progress=False)
    rows = []
    for name, model in models.items():
        aud = mri.collect(model, demo, progress=False)
        ids_all = aud.embeddings().sample_ids
        for method in METHODS:
            t = time.perf_counter()
            m = wa.mitigate(model, aud, "scanner", method, n_bootstrap=n_resamples,
                            n_permutations=n_resamples, progress=False)  # fmt: skip
            dt = time.perf_counter() - t
            ids = ids_all[m.holdout_index_]
            imgs, y = demo.data.images[ids], demo.data.labels[ids]
            pos = {i: k for k, i in enumerate(demo.eval)}
            usual = demo.eval_flags[[pos[i] for i in ids]]
            indep = np.random.default_rng(1).integers(0, 2, len(y))

            def marked(flags, imgs=imgs):
                return torch.as_tensor(mri.add_scanner_marker(imgs, flags))[:, None]

            row = {"bias": name, "seed": 0, "method": method, "time_s": dt}
            for tag, mod in (("orig", model), ("patched", m.model)):
                eff = wa.intervention_effect(mod, torch.as_tensor(imgs)[:, None], set_marker,
                                             n_bootstrap=0, progress=False)  # fmt: skip
                row[f"effect_{tag}"] = eff["value"]
                row[f"auc_indep_{tag}"] = auc(mod, marked(indep), y)
                row[f"auc_anti_{tag}"] = auc(mod, marked(1 - y), y)
                row[f"auc_usual_{tag}"] = auc(mod, marked(usual), y)
            row["usage_before"] = m.before.tasks["scanner"]["usage"]["value"]
            row["usage_after"] = m.after.tasks["scanner"]["usage"]["value"]
            row["verdict_before"] = m.before.tasks["scanner"]["verdict"]
            row["verdict_after"] = m.after.tasks["scanner"]["verdict"]
            rows.append(row)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--biases", type=float, nargs="+", default=[0.5, 0.9, 0.95, 1.0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--n-resamples", type=int, default=200)
    ap.add_argument("--mri", action="store_true", help="also the demo's MRI models")
    ap.add_argument("--cache", default="wsca-demo/cache", help="the demo's head cache")
    args = ap.parse_args()
    warnings.simplefilter("ignore", wa.AuditWarning)
    torch.set_num_threads(2)
    t0 = time.perf_counter()
    rows = digits_rows(args.biases, args.seeds, args.n_resamples)
    print_table(rows, f"digits CNN, seeds {args.seeds} (means; bias 0.5: no shortcut)")
    if args.mri:
        print_table(
            mri_rows(args.n_resamples, args.cache), "MRI demo models (MobileNetV2 + head), seed 0"
        )
    times = [r["time_s"] for r in rows]
    print(
        f"\nwa.mitigate: median {np.median(times):.1f} s per call (digits); total {time.perf_counter() - t0:.0f} s"
    )


if __name__ == "__main__":
    main()
