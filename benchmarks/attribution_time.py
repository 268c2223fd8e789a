"""Seconds per image of Captum attribution methods on the MRI demo's models, and what each
method says about the head and the scanner marker.

Both demo models (MobileNetV2, frozen, + head; "clean" and "shortcut"), the demo's images
(128x128, the marker burned in where the evaluation flags say) on a seeded sample balanced
over label x marker (``wsca_audit.demo.maps.balanced_sample``), the log-odds of "tumour"
attributed with ``wa.InputAttribution`` (the demo's ROI = the head, and the marker box as a
region), on ``--threads`` torch threads. For each method: seconds per image (the best of
``--repeats`` runs; summarising included), the share of the positive attribution inside
the head and inside the marker box with bootstrap CIs, and whether the two models' marker
CIs are apart. Slow methods (Integrated Gradients, GradientShap) run on the first
``--n-slow`` images of the sample. Then, for the fast methods, how robust the separation
is: per-image shares on a pool of ``--pool`` other-seeded balanced images, and in
``--subsamples`` balanced subsamples of ``--n-images`` from it, how often the shortcut
model's marker share is the larger and how often the two CIs are apart. Last, the demo's
own step (``maps.attribution_evidence`` for both models, figures rendered) timed end to end.

    python benchmarks/attribution_time.py                 # about 6 minutes on 2 cores
    python benchmarks/attribution_time.py --n-slow 8 --repeats 1 --pool 0   # quicker

The heads are trained (about a minute) or loaded from ``--cache`` (the demo's own cache,
``wsca-demo/cache`` after ``wsca-audit demo``).
"""

from __future__ import annotations

import argparse
import os
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from captum.attr import (
    GradientShap,
    InputXGradient,
    IntegratedGradients,
    LayerGradCam,
    Saliency,
)

import wsca_audit as wa
from wsca_audit.demo import maps, mri
from wsca_audit.stats import bootstrap_mean_ci


def methods(n_images: int) -> list[tuple[str, str, dict, bool]]:
    """(name, detail, InputAttribution keywords, slow)."""
    out = [
        ("IntegratedGradients", "n_steps=50", {"n_steps": 50, "internal_batch_size": 64}, True),
        ("IntegratedGradients", "n_steps=8", {"n_steps": 8, "internal_batch_size": 64}, True),
        (
            "GradientShap",
            "n_samples=8, zero baseline",
            {"attribute_kwargs": {"n_samples": 8}, "baselines": torch.zeros(1, 1, 128, 128)},
            True,
        ),
        ("Saliency", "abs=False", {"attribute_kwargs": {"abs": False}}, False),
        ("InputXGradient", "", {}, False),
    ]
    for block in (18, 17, 16, 15, 14, 13, 7):
        out.append(
            ("LayerGradCam", f"features.{block}", {"layer": f"backbone.features.{block}"}, False)
        )
    return out


CLASSES = {
    "IntegratedGradients": IntegratedGradients,
    "GradientShap": GradientShap,
    "Saliency": Saliency,
    "InputXGradient": InputXGradient,
    "LayerGradCam": LayerGradCam,
}


def sample(demo: mri.DemoData, n: int, seed: int):
    d, idx = demo.data, demo.eval
    pick = maps.balanced_sample(d.labels[idx], demo.eval_flags, n, seed)
    clean = d.images[idx[pick]]
    flags = demo.eval_flags[pick]
    rows, cols = mri.marker_mask(clean.shape[-1])
    roi = clean > 0.1
    roi[:, rows, cols] = False
    x = torch.as_tensor(mri.add_scanner_marker(clean, flags))[:, None]
    box = (rows.start, cols.start, rows.stop, cols.stop)
    return x, roi, d.labels[idx[pick]], flags, box


def run(model, x, roi, labels, flags, box, cls, kw, repeats: int):
    best, res = float("inf"), None
    for _ in range(repeats):
        t0 = time.perf_counter()
        res = wa.InputAttribution(
            model, cls, batch_size=32, n_examples=0, progress=False, **kw
        ).attribute(
            x, roi=roi, targets=labels, metadata={"scanner": flags}, regions={maps.MARKER: box}
        )
        best = min(best, time.perf_counter() - t0)
    return best / len(x), res


def marker_shares(model, x, box, kw, cls) -> np.ndarray:
    """Per image, the share of the positive mass in the marker box (NaN without any)."""
    att = wa.InputAttribution(model, cls, progress=False, **kw)
    pos = torch.cat([att.attribute_batch(b)[:, 0].clamp_min(0) for b in x.split(32)]).numpy()
    marker = wa.boxes_to_roi(box, *x.shape[-2:])
    total = pos.sum((1, 2))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, pos[:, marker].sum(1) / total, np.nan)


def robustness(models, demo, args) -> None:
    """How often the two models' marker shares separate in balanced subsamples."""
    x, _, labels, flags, box = sample(demo, args.pool, args.seed + 1)
    cells = [np.flatnonzero((labels == y) & (flags == f)) for y in (0, 1) for f in (0, 1)]
    print(
        f"\nrobustness: {args.subsamples} balanced subsamples of {args.n_images} from a pool of "
        f"{args.pool} (seed {args.seed + 1}); 95% bootstrap CIs of the marker share\n"
    )
    print("| method | setting | shortcut's share larger | CIs apart |")
    print("|---|---|---|---|")
    for name, detail, kw, slow in methods(args.n_images):
        if slow or name == "Saliency":
            continue
        with mri.deterministic_torch(args.seed, args.threads):
            shares = {
                m: marker_shares(model, x, box, kw, CLASSES[name]) for m, model in models.items()
            }
        larger = apart = 0
        for s in range(args.subsamples):
            rng = np.random.default_rng(s)
            sub = np.concatenate([rng.choice(c, args.n_images // 4, replace=False) for c in cells])
            v = {m: np.nanmean(a[sub]) for m, a in shares.items()}
            ci_ = {m: bootstrap_mean_ci(a[sub], 200, 0.95, s) for m, a in shares.items()}
            larger += v["shortcut"] > v["clean"]
            apart += ci_["shortcut"][0] > ci_["clean"][1]
        print(
            f"| {name} | {detail} | {larger}/{args.subsamples} | {apart}/{args.subsamples} |",
            flush=True,
        )


def ci(block: dict, digits: int = 3) -> str:
    return (
        f"{block['value']:.{digits}f} [{block['ci_low']:.{digits}f}, {block['ci_high']:.{digits}f}]"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n-images", type=int, default=maps.N_IMAGES)
    ap.add_argument("--n-slow", type=int, default=16, help="images for IG and GradientShap")
    ap.add_argument("--repeats", type=int, default=3, help="timing runs of the fast methods")
    ap.add_argument("--threads", type=int, default=mri.DEFAULT_THREADS)
    ap.add_argument("--pool", type=int, default=400, help="robustness pool (0: skip)")
    ap.add_argument("--subsamples", type=int, default=40)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cache", type=Path, default=Path("wsca-demo/cache"))
    args = ap.parse_args()
    warnings.simplefilter("ignore", UserWarning)

    demo = mri.make_data(args.seed)
    with mri.deterministic_torch(args.seed, args.threads):
        models = mri.build_models(demo, args.cache, seed=args.seed, progress=False)
    x, roi, labels, flags, box = sample(demo, args.n_images, args.seed)
    print(
        f"torch {torch.__version__}, {args.threads} threads, {os.cpu_count()} CPUs, load average "
        f"{os.getloadavg()[0]:.1f} at the start; {args.n_images} images "
        f"(IG and GradientShap: the first {args.n_slow}), 128x128\n"
    )
    print(
        "| method | setting | images | s / image (clean, shortcut) | share in head: clean | "
        "shortcut | share in marker box: clean | shortcut | marker CIs apart |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for name, detail, kw, slow in methods(args.n_images):
        n = min(args.n_slow, len(x)) if slow else len(x)
        row, secs = {}, []
        for model_name, model in models.items():
            with mri.deterministic_torch(args.seed, args.threads):
                s, res = run(
                    model, x[:n], roi[:n], labels[:n], flags[:n], box, CLASSES[name], kw,
                    1 if slow else args.repeats,
                )  # fmt: skip
            secs.append(s)
            row[model_name] = res
        head = [ci({"value": r["inside"], "ci_low": r["ci_low"], "ci_high": r["ci_high"]}) for r in row.values()]  # fmt: skip
        mark = [r["regions"][maps.MARKER] for r in row.values()]
        apart = "yes" if mark[1]["ci_low"] > mark[0]["ci_high"] else "no"
        print(
            f"| {name} | {detail} | {n} | {secs[0]:.3f}, {secs[1]:.3f} | {head[0]} | {head[1]} | "
            f"{ci(mark[0], 4)} | {ci(mark[1], 4)} | {apart} |",
            flush=True,
        )

    if args.pool:
        robustness(models, demo, args)

    total = 0.0
    for model in models.values():
        with mri.deterministic_torch(args.seed, args.threads):
            t0 = time.perf_counter()
            for ev in maps.attribution_evidence(
                model, demo, n_images=args.n_images, progress=False
            ):
                ev.figures_png()
            total += time.perf_counter() - t0
    print(
        f"\nthe demo's step (maps.attribution_evidence: Grad-CAM on {maps.GRADCAM_LAYER} and "
        f"input x gradient, {args.n_images} images, figures rendered) for both models: "
        f"{total:.1f} s; load average {os.getloadavg()[0]:.1f} at the end"
    )


if __name__ == "__main__":
    main()
