"""Held-out validation of the audit's verdicts and effect size against counterfactual truth.

Nothing here was used to set the audit's thresholds: the grid spans artefact kinds,
architectures, training biases, audit confounding, seeds and audit sizes, and each trained
model is judged against its own *counterfactual* shift, measured by editing its inputs.

Ground truth (per trained model): the mean change of the primary logit contrast
``z1 - z0`` when the artefact is switched on (binary) or its dose moved from the 25th to
the 75th percentile of its distribution (continuous: 0.25 -> 0.75), over the clean audit
pool, in units of the contrast's sd on the clean images (as
``wsca_audit.demo.shortcut.counterfactual_effect``). "Shortcut-free": |shift| < 0.1;
"shortcut": |shift| >= 0.5 (a model that reacts strongly in the unexpected direction uses
the artefact too; every such row is counted in the report).

Grid (default):

- artefacts (``wsca_audit.demo.artefacts``): ``patch`` (corner patch), ``stripe`` (edge
  stripe), ``texture`` (fixed seeded pattern), ``blur`` and ``gain`` (global intensity
  gain), each switched on or off (binary, audited as categorical), and ``gain_dose``: the
  gain's strength as a continuous variable in [0, 1] (nine levels), audited as continuous;
- architectures: ``cnn`` (``SmallCNN`` on 8x8 digits), ``mlp`` (an MLP on the flattened
  digits), ``mobilenet`` (frozen ImageNet MobileNetV2 + a trained 1280-64-2 head,
  ``MRIClassifier``, on Br35H brain MRI at 64x64);
- training bias 0.5 / 0.7 / 0.9 / 1.0 (probability that the artefact flag equals the
  label; for the continuous dose, that it lies in the label's half of [0, 1]);
- audit confounding 0.5 / 0.8 / 0.95 (the same, in the audit sample); seeds 0 1 2; audit
  sizes 300 and 800 drawn from the held-out pool (digits: 899 images, MRI: about 1,500).

Each model's embeddings (the input of its final ``nn.Linear``) are computed once per
artefact level over the held-out pool, so an audit is a row selection: indices drawn
without replacement, then each sample's artefact level drawn at the audit confounding.
The audit is ``wa.analyze`` on those embeddings with the model's final layer
(``primary_weight``/``primary_bias``), default settings but ``n_bootstrap`` =
``n_permutations`` = ``--n-resamples`` (100). The MRI backbone is frozen, so each image
is embedded once per artefact level and training touches only the head.

Every ``inconclusive`` verdict with a ``samples_needed`` is re-audited at that size on a
fresh draw from the pool (capped by the pool; capped reruns are counted apart).

    python benchmarks/validation.py [--out rows.json]     # the full suite (see below)
    python benchmarks/validation.py --quick               # one small slice (seconds)

Measured: the full grid (6 artefacts x 3 architectures x 4 biases x 3 seeds = 216 models,
1,296 audits plus 292 reruns) took 994 s (17 min) and 1,173 s (20 min) on a shared 2-core
machine, one thread, with other jobs keeping the load near 4 and 6.

Runs single-threaded by default (``--threads``): the audits' matrices are small, and on a
shared 2-core machine a second thread made them several times slower, not faster.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
import warnings
from collections import defaultdict
from collections.abc import Callable, Iterable
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from scipy.stats import spearmanr
from sklearn.metrics import roc_auc_score
from torch import nn

import wsca_audit as wa
from wsca_audit.demo.artefacts import apply_artefact
from wsca_audit.demo.shortcut import (
    artefact_flags,
    load_digits_images,
    train_classifier,
    train_cnn,
)

# ----------------------------------------------------------------------------- settings

#: artefact variant -> (artefact kind, continuous?)
VARIANTS: dict[str, tuple[str, bool]] = {
    "patch": ("patch", False),
    "stripe": ("stripe", False),
    "texture": ("texture", False),
    "blur": ("blur", False),
    "gain": ("gain", False),
    "gain_dose": ("gain", True),
}
ARCHS = ("cnn", "mlp", "mobilenet")
SOURCE_OF = {"cnn": "digits", "mlp": "digits", "mobilenet": "mri"}
#: the doses of a continuous variable: (flag + u) / 2 rounded to eighths, so the dose is
#: spread over [0, 1] with its quartiles at 0.25 and 0.75 (levels 2 and 6)
CONTINUOUS_LEVELS = np.linspace(0.0, 1.0, 9)
BINARY_LEVELS = np.array([0.0, 1.0])
Q25, Q75 = 2, 6
FREE, SHORTCUT = 0.1, 0.5  # |shift| thresholds of "shortcut-free" and "shortcut"
TASK = "artefact"


@dataclass
class Config:
    """One run of the suite: the grid and the audit settings."""

    artefacts: tuple[str, ...] = tuple(VARIANTS)
    archs: tuple[str, ...] = ARCHS
    biases: tuple[float, ...] = (0.5, 0.7, 0.9, 1.0)
    confounding: tuple[float, ...] = (0.5, 0.8, 0.95)
    seeds: tuple[int, ...] = (0, 1, 2)
    sizes: tuple[int, ...] = (300, 800)
    n_resamples: int = 100
    rerun_inconclusive: bool = True
    mri_size: int = 64
    threads: int = 1
    verbose: bool = True


def quick_config(**overrides) -> Config:
    """The ``--quick`` slice: patch artefact, the MLP, biases 0.5 and 1.0, one seed, audit
    confounding 0.8, one audit size of 300."""
    cfg = Config(
        artefacts=("patch",),
        archs=("mlp",),
        biases=(0.5, 1.0),
        confounding=(0.8,),
        seeds=(0,),
        sizes=(300,),
    )
    return replace(cfg, **overrides)


class Timer:
    """Wall time per stage (seconds, summed over calls): ``with timer("train"): ...``."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)

    @contextmanager
    def __call__(self, stage: str):
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[stage] += time.perf_counter() - t0


# ----------------------------------------------------------------------------- data


@dataclass
class Source:
    """One image data set, its labels, and the model inputs at every artefact level.

    ``inputs(variant, level)`` is what the trained part of a model sees for every image
    of the data set with the artefact at that level: images for the digits, frozen
    backbone features for the MRI (computed once, then kept).
    """

    name: str
    labels: np.ndarray
    make_input: Callable[[str, float], np.ndarray]
    groups: np.ndarray | None = None
    backbone: nn.Module | None = None  # the frozen backbone (MRI), shared by every head
    _inputs: dict = field(default_factory=dict)

    def inputs(self, variant: str, level: int) -> np.ndarray:
        kind = VARIANTS[variant][0]
        dose = float(levels_of(variant)[level])
        key = ("clean", 0.0) if dose == 0 else (kind, dose)
        if key not in self._inputs:
            self._inputs[key] = self.make_input(kind, dose)
        return self._inputs[key]

    def split(self, seed: int) -> tuple[np.ndarray, np.ndarray]:
        """Training indices and the held-out audit pool (half each)."""
        if self.groups is not None:
            from wsca_audit.demo.br35h import group_split

            train, pool = group_split(self.groups, (0.5, 0.5), seed=seed)
            return train, pool
        order = np.random.default_rng(seed).permutation(len(self.labels))
        n_train = len(order) // 2
        return np.sort(order[:n_train]), np.sort(order[n_train:])


def select_levels(source: Source, variant: str, idx: np.ndarray, level: np.ndarray):
    """Inputs of images ``idx``, each at its own artefact level (a row selection)."""
    first = source.inputs(variant, 0)
    out = np.empty((len(idx), *first.shape[1:]), first.dtype)
    for k in np.unique(level):
        sel = level == k
        out[sel] = source.inputs(variant, int(k))[idx[sel]]
    return out


def levels_of(variant: str) -> np.ndarray:
    return CONTINUOUS_LEVELS if VARIANTS[variant][1] else BINARY_LEVELS


def digits_source() -> Source:
    """scikit-learn's 1,797 digits (N, 1, 8, 8); label: digit >= 5."""
    x, y, _ = load_digits_images()

    def make(kind: str, dose: float) -> np.ndarray:
        return x if dose == 0 else apply_artefact(kind, x, dose)

    return Source("digits", y, make)


def mri_source(size: int = 64) -> Source:
    """Br35H brain MRI (3,000 images at ``size`` x ``size``); the inputs are the frozen
    ImageNet MobileNetV2's 1280-d features of the edited images."""
    from wsca_audit.demo.br35h import load_br35h
    from wsca_audit.demo.mobilenet import pretrained_mobilenet_v2
    from wsca_audit.demo.mri import MRIClassifier

    data = load_br35h(size)
    net = MRIClassifier(pretrained_mobilenet_v2()).eval()

    @torch.inference_mode()
    def make(kind: str, dose: float) -> np.ndarray:
        imgs = data.images if dose == 0 else apply_artefact(kind, data.images, dose)
        x = torch.as_tensor(imgs)[:, None]
        feats = torch.cat([net.features(x[i : i + 200]) for i in range(0, len(x), 200)])
        return feats.numpy()

    return Source("mri", data.labels, make, groups=data.groups, backbone=net.backbone)


def draw_levels(
    labels: np.ndarray, bias: float, rng: np.random.Generator, continuous: bool
) -> np.ndarray:
    """Artefact level per sample: the flag equals the label with probability ``bias``;
    a continuous dose is ``(flag + u) / 2`` (u uniform) rounded to eighths (level 0..8).

    >>> lv = draw_levels(np.array([0, 1] * 500), 1.0, np.random.default_rng(0), True)
    >>> int(lv[::2].max()) <= 4 <= int(lv[1::2].min())
    True
    """
    flags = artefact_flags(labels, bias, rng)
    if not continuous:
        return flags
    u = rng.random(len(labels))
    return np.rint((flags + u) / 2 * 8).astype(np.int64)


# ----------------------------------------------------------------------------- models


class FlatMLP(nn.Module):
    """An MLP on flattened pixels: 64 -> 128 -> 32 (embedding) -> 2 (``head``)."""

    def __init__(self, n_in: int = 64, hidden: int = 128, embedding_dim: int = 32) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Flatten(),
            nn.Linear(n_in, hidden),
            nn.ReLU(),
            nn.Linear(hidden, embedding_dim),
            nn.ReLU(),
        )
        self.head = nn.Linear(embedding_dim, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def train_mlp(images: np.ndarray, labels: np.ndarray, *, seed: int = 0, epochs: int = 40):
    torch.manual_seed(seed)
    model = FlatMLP(int(np.prod(images.shape[1:])))
    return train_classifier(model, images, labels, epochs=epochs, seed=seed)


def train_mri_head(source: Source, feats: np.ndarray, labels: np.ndarray, *, seed: int = 0):
    """``MRIClassifier`` on the shared frozen backbone, its head trained on cached features
    (full-batch AdamW, as the MRI demo does)."""
    from wsca_audit.demo.mri import MRIClassifier

    torch.manual_seed(seed)
    model = MRIClassifier(source.backbone)
    x, y = torch.as_tensor(feats), torch.as_tensor(labels)
    opt = torch.optim.AdamW(model.head.parameters(), lr=1e-3, weight_decay=1e-2)
    model.head.train()
    for _ in range(300):
        opt.zero_grad()
        nn.functional.cross_entropy(model.head(x), y).backward()
        opt.step()
    return model.eval()


@dataclass
class Trained:
    """The trained part of a model as (embedding map, final linear layer)."""

    trunk: nn.Module
    final: nn.Linear


def train(arch: str, source: Source, x: np.ndarray, y: np.ndarray, seed: int) -> Trained:
    if arch == "cnn":
        m = train_cnn(x, y, seed=seed)
        return Trained(m.features, m.head)
    if arch == "mlp":
        m = train_mlp(x, y, seed=seed)
        return Trained(m.features, m.head)
    if arch == "mobilenet":
        m = train_mri_head(source, x, y, seed=seed)
        return Trained(m.head[:-1], m.head[-1])  # embedding: the 64-d hidden layer
    raise ValueError(f"unknown architecture {arch!r}")


@torch.inference_mode()
def embed_levels(model: Trained, source: Source, variant: str, pool: np.ndarray):
    """Embeddings (L, n_pool, d) and logit contrasts (L, n_pool) at every artefact level."""
    zs, cs = [], []
    for level in range(len(levels_of(variant))):
        z = model.trunk(torch.as_tensor(source.inputs(variant, level)[pool]))
        logits = model.final(z)
        zs.append(z.numpy())
        cs.append((logits[:, 1] - logits[:, 0]).numpy())
    return np.stack(zs), np.stack(cs)


def truth_of(shift: float) -> str:
    """ "free" (|shift| < 0.1), "shortcut" (|shift| >= 0.5) or "grey" (between)."""
    a = abs(shift)
    return "free" if a < FREE else "shortcut" if a >= SHORTCUT else "grey"


def counterfactual_shift(contrasts: np.ndarray, continuous: bool) -> float:
    """Mean shift of the contrast, artefact on vs off (binary) or dose 0.25 -> 0.75
    (continuous), in units of the contrast's sd on the clean images (level 0)."""
    lo, hi = (Q25, Q75) if continuous else (0, 1)
    sd = max(float(contrasts[0].std(ddof=1)), 1e-12)
    return float((contrasts[hi] - contrasts[lo]).mean() / sd)


# ----------------------------------------------------------------------------- audits


def audit(
    Z: np.ndarray,
    y_pool: np.ndarray,
    final: nn.Linear,
    variant: str,
    confounding: float,
    size: int,
    rng: np.random.Generator,
    n_resamples: int,
) -> tuple[dict, int, float]:
    """One audit of ``size`` samples drawn from the pool at the given confounding.

    Returns the task's report block, the size actually used and the audit's wall time.
    """
    continuous = VARIANTS[variant][1]
    n = min(size, Z.shape[1])
    idx = rng.choice(Z.shape[1], n, replace=False)
    y = y_pool[idx]
    level = draw_levels(y, confounding, rng, continuous)
    meta = levels_of(variant)[level] if continuous else level
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = wa.analyze(
            Z[level, idx],
            y,
            {TASK: meta},
            primary_weight=final.weight.detach().numpy(),
            primary_bias=final.bias.detach().numpy(),
            kinds={TASK: "continuous" if continuous else "categorical"},
            n_bootstrap=n_resamples,
            n_permutations=n_resamples,
            progress=False,
        )
    return res.tasks[TASK], n, time.perf_counter() - t0


def _interval(block: dict | None) -> dict | None:
    if not block:
        return None
    return {k: block.get(k) for k in ("value", "ci_low", "ci_high") if k in block}


def audit_row(task: dict) -> dict:
    """The fields of a report's task block that the validation reads (``.get`` for those
    newer reports add)."""
    eff = task.get("effect")
    return {
        "verdict": task.get("verdict"),
        "reason": task.get("reason"),
        "samples_needed": task.get("samples_needed"),
        "informative_needed": task.get("informative_needed"),
        "n_informative": (task.get("support") or {}).get("n_informative"),
        "effect": _interval(eff),
        "effect_unit": eff.get("unit") if eff else None,
        "usage": _interval(task.get("usage")),
        "usage_p": (task.get("usage") or {}).get("p_value"),
        "encoding": _interval(task.get("encoding")),
        "wsc": (task.get("wsc") or {}).get("value"),
    }


def run_suite(cfg: Config, timer: Timer | None = None, log=print) -> list[dict]:
    """Train every model of the grid, measure its ground truth, audit it at every
    confounding and size, and rerun the inconclusive audits at the size they name.

    Returns one row (a JSON-safe dict) per audit.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(cfg.threads)
    try:
        return _run_suite(cfg, timer or Timer(), log)
    finally:
        torch.set_num_threads(threads)


def _run_suite(cfg: Config, timer: Timer, log) -> list[dict]:
    sources: dict[str, Source] = {}
    rows: list[dict] = []
    for arch in cfg.archs:
        src_name = SOURCE_OF[arch]
        if src_name not in sources:
            with timer(f"load {src_name}"):
                sources[src_name] = (
                    digits_source() if src_name == "digits" else mri_source(cfg.mri_size)
                )
        source = sources[src_name]
        for variant in cfg.artefacts:
            stage = "embed MRI (frozen backbone)" if src_name == "mri" else "artefacts on digits"
            with timer(stage):  # every image at every level of this artefact, once
                for level in range(len(levels_of(variant))):
                    source.inputs(variant, level)
            for seed in cfg.seeds:
                split = source.split(seed)
                for bias in cfg.biases:
                    spec = Spec(arch, variant, seed, bias)
                    rows += evaluate_model(cfg, source, spec, split, timer, log)
    return rows


@dataclass(frozen=True)
class Spec:
    """One trained model of the grid."""

    arch: str
    artefact: str
    seed: int
    bias: float

    @property
    def continuous(self) -> bool:
        return VARIANTS[self.artefact][1]


def evaluate_model(
    cfg: Config,
    source: Source,
    spec: Spec,
    split: tuple[np.ndarray, np.ndarray],
    timer: Timer,
    log=print,
) -> list[dict]:
    """Train one model, measure its counterfactual shift, and audit it at every audit
    confounding and size (rerunning an ``inconclusive`` audit at its ``samples_needed``)."""
    train_idx, pool = split
    y_train, y_pool = source.labels[train_idx], source.labels[pool]
    key = [spec.seed, int(spec.bias * 1000)]
    lv = draw_levels(y_train, spec.bias, np.random.default_rng([*key, 7]), spec.continuous)
    with timer(f"train {spec.arch}"):
        x_train = select_levels(source, spec.artefact, train_idx, lv)
        model = train(spec.arch, source, x_train, y_train, spec.seed)
    with timer("embed pool + ground truth"):
        Z, C = embed_levels(model, source, spec.artefact, pool)
        shift = counterfactual_shift(C, spec.continuous)
        auc_clean = float(roc_auc_score(y_pool, C[0]))
    base = {
        "source": source.name,
        "arch": spec.arch,
        "artefact": spec.artefact,
        "kind": "continuous" if spec.continuous else "categorical",
        "bias": spec.bias,
        "seed": spec.seed,
        "shift": shift,
        "truth": truth_of(shift),
        "auc_clean": auc_clean,
        "pool": len(pool),
    }

    def run(conf: float, size: int, *extra: int) -> tuple[dict, int, float]:
        rng = np.random.default_rng([*key, int(conf * 1000), size, *extra])
        return audit(Z, y_pool, model.final, spec.artefact, conf, size, rng, cfg.n_resamples)

    rows = []
    for conf in cfg.confounding:
        for size in cfg.sizes:
            with timer("audits"):
                task, n, secs = run(conf, size)
            row = {**base, "confounding": conf, "size": n, **audit_row(task), "audit_s": secs}
            row["rerun"] = None
            need = row["samples_needed"]
            if cfg.rerun_inconclusive and row["verdict"] == "inconclusive" and need is not None:
                with timer("reruns at samples_needed"):
                    # a fresh draw of int(need) samples (the rng differs from the audit's)
                    t2, n2, s2 = run(conf, int(need), size)
                row["rerun"] = {
                    "size": n2,
                    "capped": int(need) > n2,
                    "verdict": t2.get("verdict"),
                    "decided": t2.get("verdict") != "inconclusive",
                    "samples_needed": t2.get("samples_needed"),
                    "effect": _interval(t2.get("effect")),
                    "audit_s": s2,
                }
            rows.append(row)
    if cfg.verbose:
        verdicts = " ".join(_abbrev(r["verdict"]) for r in rows)
        effs = " ".join(_num(r["effect"] and r["effect"]["value"], 2) for r in rows)
        log(
            f"{spec.arch:9s} {spec.artefact:9s} seed {spec.seed} bias {spec.bias:.2f}: "
            f"shift {shift:+7.2f} sd, clean AUC {auc_clean:.3f} | verdicts {verdicts} | "
            f"effects {effs}",
            flush=True,
        )
    return rows


_ABBREV = {"uses": "U", "encoded_not_used": "E", "not_encoded": "N", "inconclusive": "?"}


def _abbrev(v: str | None) -> str:
    return _ABBREV.get(v, "-")


def _num(x, digits: int = 3) -> str:
    return "-" if x is None or not math.isfinite(x) else f"{x:.{digits}f}"


# ----------------------------------------------------------------------------- summary


def _share(hits: int, n: int) -> float | None:
    return hits / n if n else None


def _rho(a: list[float], b: list[float]) -> float | None:
    if len(a) < 3 or len(set(a)) < 2 or len(set(b)) < 2:
        return None
    return float(spearmanr(a, b).statistic)


def summarize(rows: Iterable[dict]) -> dict:
    """The validation statistics of a set of rows (see the module docstring)."""
    rows = list(rows)
    free = [r for r in rows if abs(r["shift"]) < FREE]
    pos = [r for r in rows if abs(r["shift"]) >= SHORTCUT]
    grey = [r for r in rows if FREE <= abs(r["shift"]) < SHORTCUT]
    with_eff = [r for r in rows if r["effect"] and r["effect"].get("value") is not None]
    err = [abs(r["effect"]["value"] - r["shift"]) for r in with_eff]
    inc = [r for r in rows if r["verdict"] == "inconclusive"]
    reruns = [r["rerun"] for r in inc if r["rerun"]]
    out = {
        "n": len(rows),
        "n_free": len(free),
        "fpr": _share(sum(r["verdict"] == "uses" for r in free), len(free)),
        "n_shortcut": len(pos),
        "n_shortcut_negative": sum(r["shift"] <= -SHORTCUT for r in pos),
        "tpr": _share(sum(r["verdict"] == "uses" for r in pos), len(pos)),
        "decisiveness": _share(sum(r["verdict"] == "encoded_not_used" for r in free), len(free)),
        "free_not_encoded": _share(sum(r["verdict"] == "not_encoded" for r in free), len(free)),
        "n_grey": len(grey),
        "grey_uses": _share(sum(r["verdict"] == "uses" for r in grey), len(grey)),
        "n_effect": len(with_eff),
        "effect_abs_err_median": float(np.median(err)) if err else None,
        "effect_abs_err_q90": float(np.quantile(err, 0.9)) if err else None,
        "effect_within_0.25": _share(sum(e <= 0.25 for e in err), len(err)),
        "effect_ci_covers_shift": _share(
            sum(
                r["effect"].get("ci_low") is not None
                and r["effect"]["ci_low"] <= r["shift"] <= r["effect"]["ci_high"]
                for r in with_eff
            ),
            len(with_eff),
        ),
        "rho_effect_shift": _rho(
            [r["effect"]["value"] for r in with_eff], [r["shift"] for r in with_eff]
        ),
        "rho_usage_abs_shift": _rho(
            [r["usage"]["value"] for r in rows if r["usage"]],
            [abs(r["shift"]) for r in rows if r["usage"]],
        ),
        "n_inconclusive": len(inc),
        # the permutation test's part: audits the effect rule alone would call uses
        "without_p_test": _without_p_test(rows),
        "n_samples_needed": sum(r["samples_needed"] is not None for r in inc),
        # inconclusive because the data cannot separate the artefact from the label
        "n_informative_needed": sum(
            r.get("informative_needed") is not None and r["samples_needed"] is None for r in inc
        ),
        "samples_needed_median": (
            float(np.median([r["samples_needed"] for r in inc if r["samples_needed"]]))
            if any(r["samples_needed"] for r in inc)
            else None
        ),
        "n_rerun": len(reruns),
        "rerun_decided": _share(sum(x["decided"] for x in reruns), len(reruns)),
        "n_rerun_capped": sum(x["capped"] for x in reruns),
        "rerun_decided_uncapped": _share(
            sum(x["decided"] for x in reruns if not x["capped"]),
            sum(not x["capped"] for x in reruns),
        ),
        "rerun_correct": _share(
            sum(_correct(r["truth"], r["rerun"]["verdict"]) for r in inc if _rerun_decided(r)),
            sum(_rerun_decided(r) and r["truth"] != "grey" for r in inc),
        ),
        "rerun_decided_capped": _share(
            sum(x["decided"] for x in reruns if x["capped"]), sum(x["capped"] for x in reruns)
        ),
        "rerun_by_truth": {
            t: {
                "n": sum(r["truth"] == t for r in inc if r["rerun"]),
                "n_uncapped": sum(
                    r["truth"] == t for r in inc if r["rerun"] and not r["rerun"]["capped"]
                ),
                "decided": _share(
                    sum(_rerun_decided(r) for r in inc if r["truth"] == t),
                    sum(r["truth"] == t for r in inc if r["rerun"]),
                ),
                "decided_uncapped": _share(
                    sum(
                        _rerun_decided(r) and not r["rerun"]["capped"]
                        for r in inc
                        if r["truth"] == t
                    ),
                    sum(r["truth"] == t for r in inc if r["rerun"] and not r["rerun"]["capped"]),
                ),
            }
            for t in ("free", "grey", "shortcut")
        },
        "verdicts": {
            v: sum(r["verdict"] == v for r in rows)
            for v in ("uses", "encoded_not_used", "not_encoded", "inconclusive")
        },
    }
    return out


def _without_p_test(rows: list[dict]) -> dict[str, int]:
    """Audits not called ``uses`` that would be if the permutation test were not required
    (encoded, and the effect interval beyond ±0.25 sd), by ground truth."""
    out = {"free": 0, "grey": 0, "shortcut": 0}
    for r in rows:
        enc, eff = r.get("encoding") or {}, r.get("effect") or {}
        thr = 0.6 if r["kind"] == "categorical" else 0.05
        encoded = enc.get("ci_low") is not None and enc["ci_low"] >= thr
        clears = eff.get("ci_low") is not None and (
            eff["ci_low"] >= 0.25 or eff["ci_high"] <= -0.25
        )
        # too few informative samples: the support rule, not the permutation test, decides
        support = r.get("informative_needed") is not None and r["samples_needed"] is None
        if r["verdict"] != "uses" and encoded and clears and not support:
            out[r["truth"]] += 1
    return out


def _rerun_decided(r: dict) -> bool:
    return bool(r["rerun"] and r["rerun"]["decided"])


def _correct(truth: str, verdict: str | None) -> bool:
    """A decided verdict agrees with the ground truth (grey-zone models count as neither)."""
    return (truth == "shortcut" and verdict == "uses") or (
        truth == "free" and verdict in ("encoded_not_used", "not_encoded")
    )


SLICES = ("arch", "artefact", "bias", "confounding", "size")


def summaries(rows: list[dict]) -> dict:
    """``summarize`` overall, per value of each slice, and decisiveness by confounding x
    size."""
    out: dict = {"overall": summarize(rows)}
    for key in SLICES:
        out[key] = {
            str(v): summarize([r for r in rows if r[key] == v])
            for v in sorted({r[key] for r in rows})
        }
    out["confounding_x_size"] = {
        f"{c}/{s}": summarize([r for r in rows if r["confounding"] == c and r["size"] == s])
        for c in sorted({r["confounding"] for r in rows})
        for s in sorted({r["size"] for r in rows})
    }
    out["arch_x_artefact"] = {
        f"{a}/{v}": summarize([r for r in rows if r["arch"] == a and r["artefact"] == v])
        for a in sorted({r["arch"] for r in rows})
        for v in sorted({r["artefact"] for r in rows})
    }
    return out


def _pct(x) -> str:
    return "-" if x is None else f"{100 * x:.0f}%"


def _f(x, d=2) -> str:
    return "-" if x is None else f"{x:.{d}f}"


def format_report(summ: dict) -> str:
    """Markdown tables of the summaries."""
    head = (
        "| slice | audits | free | FPR | shortcut | TPR | decisive (free) | grey: uses | "
        "med abs(effect-shift) | effect CI covers shift | rho(effect, shift) | "
        "rho(usage, abs shift) | inconclusive | rerun decided |"
    )
    sep = "|" + "---|" * 14

    def line(name: str, s: dict) -> str:
        rr = "-" if not s["n_rerun"] else f"{_pct(s['rerun_decided'])} of {s['n_rerun']}"
        return (
            f"| {name} | {s['n']} | {s['n_free']} | {_pct(s['fpr'])} | {s['n_shortcut']} | "
            f"{_pct(s['tpr'])} | {_pct(s['decisiveness'])} | {_pct(s['grey_uses'])} | "
            f"{_f(s['effect_abs_err_median'])} | {_pct(s['effect_ci_covers_shift'])} | "
            f"{_f(s['rho_effect_shift'])} | "
            f"{_f(s['rho_usage_abs_shift'])} | {s['n_inconclusive']} | {rr} |"
        )

    parts = [head, sep, line("**overall**", summ["overall"])]
    for key in (*SLICES, "arch_x_artefact"):
        for v, s in summ[key].items():
            parts.append(line(f"{key} = {v}", s))
    parts.append("")
    parts.append("Decisiveness on shortcut-free models (|shift| < 0.1): share `encoded_not_used`")
    sizes = sorted({k.split("/")[1] for k in summ["confounding_x_size"]}, key=int)
    confs = sorted({k.split("/")[0] for k in summ["confounding_x_size"]}, key=float)
    parts.append("| confounding | " + " | ".join(f"n = {s}" for s in sizes) + " |")
    parts.append("|---|" + "---|" * len(sizes))
    for c in confs:
        cells = []
        for s in sizes:
            x = summ["confounding_x_size"][f"{c}/{s}"]
            cells.append(f"{_pct(x['decisiveness'])} of {x['n_free']} (FPR {_pct(x['fpr'])})")
        parts.append(f"| {c} | " + " | ".join(cells) + " |")
    o = summ["overall"]
    parts += [
        "",
        f"verdicts: {o['verdicts']}",
        f"effect: {o['n_effect']} of {o['n']} audits report it; median abs(effect - shift) "
        f"{_f(o['effect_abs_err_median'])} sd (90% quantile {_f(o['effect_abs_err_q90'])}), "
        f"within 0.25 sd: {_pct(o['effect_within_0.25'])}, CI covers the shift: "
        f"{_pct(o['effect_ci_covers_shift'])}",
        f"inconclusive: {o['n_inconclusive']}, with samples_needed: {o['n_samples_needed']} "
        f"(median {_f(o['samples_needed_median'], 0)}), for too few informative samples "
        f"(informative_needed, no samples_needed): {o.get('n_informative_needed', 0)}; rerun "
        "at that size: "
        f"{o['n_rerun']}, "
        f"decided {_pct(o['rerun_decided'])} (uncapped {_pct(o['rerun_decided_uncapped'])}; "
        f"capped by the pool: {o['n_rerun_capped']}, decided "
        f"{_pct(o['rerun_decided_capped'])}); decided reruns that agree with the ground truth "
        f"(shortcut: uses, free: not uses; grey zone left out): {_pct(o['rerun_correct'])}",
        "without the permutation test (uses on the effect interval alone), audits that would "
        f"become uses, by ground truth: {o.get('without_p_test')}",
        "reruns decided, by ground truth: "
        + "; ".join(
            f"{t} {_pct(x['decided'])} of {x['n']} (uncapped {_pct(x['decided_uncapped'])} of "
            f"{x['n_uncapped']})"
            for t, x in o["rerun_by_truth"].items()
        ),
    ]
    return "\n".join(parts)


def model_table(rows: list[dict]) -> str:
    """One line per trained model: its ground truth and the verdicts of its audits."""
    models: dict[tuple, list[dict]] = defaultdict(list)
    for r in rows:
        models[(r["arch"], r["artefact"], r["seed"], r["bias"])].append(r)
    out = ["| arch | artefact | seed | bias | shift (sd) | clean AUC | verdicts | effects |"]
    out.append("|---|---|---|---|---|---|---|---|")
    for (arch, variant, seed, bias), rs in models.items():
        out.append(
            f"| {arch} | {variant} | {seed} | {bias:.2f} | {rs[0]['shift']:+.2f} | "
            f"{rs[0]['auc_clean']:.3f} | {' '.join(_abbrev(r['verdict']) for r in rs)} | "
            f"{' '.join(_num(r['effect'] and r['effect']['value'], 2) for r in rs)} |"
        )
    return "\n".join(out)


# ----------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--quick", action="store_true", help="the small slice (see quick_config)")
    ap.add_argument("--artefacts", nargs="+", choices=list(VARIANTS))
    ap.add_argument("--archs", nargs="+", choices=list(ARCHS))
    ap.add_argument("--biases", type=float, nargs="+")
    ap.add_argument("--confounding", type=float, nargs="+")
    ap.add_argument("--seeds", type=int, nargs="+")
    ap.add_argument("--sizes", type=int, nargs="+")
    ap.add_argument("--n-resamples", type=int, default=100)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--mri-size", type=int, default=64)
    ap.add_argument("--no-rerun", action="store_true", help="skip the samples_needed reruns")
    ap.add_argument("--out", help="write every row, the summaries and the timings as JSON")
    ap.add_argument("--report", metavar="JSON", help="print the tables of a saved --out file")
    args = ap.parse_args(argv)
    if args.report:
        saved = json.loads(Path(args.report).read_text())
        print(model_table(saved["rows"]), "", format_report(summaries(saved["rows"])), sep="\n")
        for stage, secs in saved.get("timings_s", {}).items():
            print(f"  {stage:32s} {secs:8.1f} s")
        return 0
    cfg = quick_config() if args.quick else Config()
    over = {
        k: tuple(v)
        for k, v in dict(
            artefacts=args.artefacts,
            archs=args.archs,
            biases=args.biases,
            confounding=args.confounding,
            seeds=args.seeds,
            sizes=args.sizes,
        ).items()
        if v
    }
    cfg = replace(
        cfg,
        **over,
        n_resamples=args.n_resamples,
        threads=args.threads,
        mri_size=args.mri_size,
        rerun_inconclusive=not args.no_rerun,
    )
    t0 = time.perf_counter()
    timer = Timer()
    print(f"config: {asdict(cfg)}", flush=True)
    rows = run_suite(cfg, timer)
    with timer("summary"):
        summ = summaries(rows)
    total = time.perf_counter() - t0
    print("\n## Models\n")
    print(model_table(rows))
    print("\n## Validation\n")
    print(format_report(summ))
    print("\n## Wall time per stage\n")
    for stage, secs in timer.seconds.items():
        print(f"  {stage:32s} {secs:8.1f} s")
    print(f"  {'total':32s} {total:8.1f} s  ({cfg.threads} thread(s))")
    if args.out:
        payload = {
            "config": asdict(cfg),
            "rows": rows,
            "summaries": summ,
            "timings_s": {**timer.seconds, "total": total},
            "version": wa.__version__,
        }
        Path(args.out).write_text(json.dumps(payload, indent=1, default=float))
        print(f"rows written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
