"""The main demo: audit a pretrained MobileNetV2 classifier on real brain MRI (Br35H).

Two tumour classifiers share an ImageNet-pretrained MobileNetV2 backbone (frozen) and
differ only in the data their head was trained on: in the "shortcut" model's training
data a burned-in scanner marker (a bright block in the corner, like a vendor annotation)
agrees with the label 95% of the time; in the "clean" model's it is random. Both are
audited on the same held-out MRI, where the marker still agrees with the label 80% of the
time (so a naive correlation would blame both), for three variables:

- ``scanner``: the induced marker (the shortcut we planted);
- ``source_square``: whether the original image was square, a real acquisition trait of
  Br35H's mixed sources that predicts the label in this data set;
- ``head_fraction``: share of the image the head occupies (anatomy / field of view).

Each audit becomes an MLflow run (local sqlite store under ``--out`` unless
``MLFLOW_TRACKING_URI`` is set) with the report and a model card. The trained heads are
cached under ``<out>/cache`` so a second run skips training.

Reproducible: two runs with the same ``--seed`` and ``--threads`` give identical reports
and MLflow metrics (all but ``wsca.runtime_s``), whether the heads come from the cache
or are trained afresh. Every random draw is seeded from ``--seed``; torch runs with
deterministic algorithms and a fixed number of threads (its float sums are split by
thread, so the audit's last digits depend on the count); the heads are always trained
on one thread, so a cached head is the head a fresh run would train, whatever
``--threads``. Every MLflow run the demo opens is ended (``FINISHED``, or ``FAILED``).

    wsca-audit demo [--out wsca-demo]       (or: python -m wsca_audit.demo)
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

import wsca_audit as wa

from . import maps  # Captum maps: where the model looks (docs/evidence.md)
from .br35h import Br35H, group_split, load_br35h
from .mobilenet import MobileNetV2, pretrained_mobilenet_v2
from .regions import add_scanner_marker, head_roi, marker_mask, set_marker

MODELS = {"clean": 0.5, "shortcut": 0.95}
EVAL_BIAS = 0.8
IMAGE_SIZE = 128
METADATA = {"scanner": "categorical", "source_square": "categorical", "head_fraction": "continuous"}
_CACHE_VERSION = 2  # in the file name (2: trained on channels-last backbone features)
# In the file: a head saved without this format (before training was reproducible) or by
# another torch is retrained, so a reused cache gives what a fresh one would.
_CACHE_FORMAT = 3
# torch threads for the demo (--threads; the audit's last digits depend on it): this
# machine's two cores. The heads are always trained on one (TRAIN_THREADS).
DEFAULT_THREADS = 2
TRAIN_THREADS = 1  # building the heads, whatever --threads: the cache does not depend on it
HEAD_STEPS = 300
# images per forward pass: 1,000 images took 7.1 s in batches of 100 and 4.0 s in batches
# of 32 here, the difference in the kernel (glibc returns each activation over its mmap
# threshold on free and faults it in again). Each image's backbone features (batches of
# 20, 25, 100) and audited embedding (32, 64) were checked the same bitwise across batches.
BATCH = 32
EVIDENCE_IMAGES = 128  # input-side evidence runs the full CNN per image: a subsample
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


@contextmanager
def deterministic_torch(seed: int, threads: int = DEFAULT_THREADS) -> Iterator[None]:
    """Run the enclosed torch code reproducibly; every setting is restored on exit.

    ``threads`` intra-op threads (CPU float reductions are split by thread, so results
    depend on the count), ``torch.use_deterministic_algorithms(True)``, and the global RNG
    (parameter initialisation, dropout) seeded with ``seed`` inside a fork of the caller's
    RNG state, which is left as it was.

    Examples
    --------
    >>> threads, state = torch.get_num_threads(), torch.random.get_rng_state()
    >>> with deterministic_torch(3, threads=1):
    ...     a = torch.rand(2)
    >>> with deterministic_torch(3, threads=1):
    ...     b = torch.rand(2)
    >>> torch.equal(a, b), torch.get_num_threads() == threads
    (True, True)
    >>> torch.equal(torch.random.get_rng_state(), state)
    True
    """
    threads_before = torch.get_num_threads()
    det_before = torch.are_deterministic_algorithms_enabled()
    warn_before = torch.is_deterministic_algorithms_warn_only_enabled()
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True)
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            yield
    finally:
        torch.use_deterministic_algorithms(det_before, warn_only=warn_before)
        torch.set_num_threads(threads_before)


class MRIClassifier(nn.Module):
    """Frozen pretrained MobileNetV2 features + a small trained head (1280 -> 64 -> 2).

    Takes grey-scale images (N, 1, H, W) in [0, 1]; the audited embedding is the 64-d input
    of the final ``nn.Linear`` (``layer="auto"``).
    """

    def __init__(self, backbone: MobileNetV2, hidden: int = 64) -> None:
        super().__init__()
        self.backbone = backbone.requires_grad_(False)
        self.head = nn.Sequential(
            nn.Linear(1280, hidden), nn.ReLU(), nn.Dropout(0.2), nn.Linear(hidden, 2)
        )
        self.register_buffer("mean", torch.tensor(_IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(_IMAGENET_STD).view(1, 3, 1, 1))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        x = (x.expand(-1, 3, -1, -1) - self.mean) / self.std
        return self.backbone.embed(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


@dataclass
class DemoData:
    data: Br35H
    train: np.ndarray
    eval: np.ndarray
    train_flags: dict[str, np.ndarray]  # model name -> marker flag per training image
    eval_flags: np.ndarray


def _flags(labels: np.ndarray, bias: float, rng: np.random.Generator) -> np.ndarray:
    """Marker present with probability ``bias`` for tumours and ``1 - bias`` for the rest."""
    return np.where(rng.random(len(labels)) < bias, labels, 1 - labels).astype(np.int64)


def make_data(seed: int = 0) -> DemoData:
    data = load_br35h(IMAGE_SIZE)
    train, evaluation = group_split(data.groups, (0.65, 0.35), seed=seed)
    rng = np.random.default_rng(seed)
    train_flags = {name: _flags(data.labels[train], b, rng) for name, b in MODELS.items()}
    return DemoData(
        data, train, evaluation, train_flags, _flags(data.labels[evaluation], EVAL_BIAS, rng)
    )


@torch.inference_mode()
def _embed(model: MRIClassifier, images: np.ndarray, desc: str, progress: bool) -> np.ndarray:
    out = []
    for i in tqdm(range(0, len(images), BATCH), desc=desc, disable=not progress, leave=False):
        out.append(model.features(torch.as_tensor(images[i : i + BATCH])[:, None]))
    return torch.cat(out).numpy()


def training_features(
    model: MRIClassifier, demo: DemoData, progress: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """Backbone features of the training images, without and with the scanner marker.

    Each image's features depend on that image alone (the backbone is frozen, in eval mode,
    and fed in fixed batches of :data:`BATCH`), so they are the same for both models and any seed;
    measured identical on 1 and 2 threads.
    """
    imgs = demo.data.images[demo.train]
    marked = add_scanner_marker(imgs, np.ones(len(imgs)))
    return (
        _embed(model, imgs, "features (no marker)", progress),
        _embed(model, marked, "features (marker)", progress),
    )


def head_inputs(
    name: str, demo: DemoData, feats: tuple[np.ndarray, np.ndarray]
) -> tuple[np.ndarray, np.ndarray]:
    """Model ``name``'s training set: features (with the marker where its flags say) and labels."""
    flags = demo.train_flags[name][:, None].astype(bool)
    return np.where(flags, feats[1], feats[0]), demo.data.labels[demo.train]


def train_head(
    model: MRIClassifier, feats: np.ndarray, labels: np.ndarray, seed: int = 0
) -> MRIClassifier:
    """Train ``model.head`` on backbone features (the backbone is frozen: seconds).

    Full-batch AdamW from an initialisation drawn from ``seed``, with dropout drawn from
    ``seed``, on :data:`TRAIN_THREADS` threads with deterministic algorithms: the weights
    are a function of (``feats``, ``labels``, ``seed``) alone, bitwise, whatever the head
    held before and whatever the caller's RNG state and thread count (both left as they
    were). Returns ``model``, in eval mode.
    """
    with deterministic_torch(seed, threads=TRAIN_THREADS):
        for layer in model.head.modules():
            if isinstance(layer, nn.Linear):
                layer.reset_parameters()
        x = torch.as_tensor(feats, dtype=torch.float32)
        y = torch.as_tensor(labels, dtype=torch.int64)
        opt = torch.optim.AdamW(model.head.parameters(), lr=1e-3, weight_decay=1e-2)
        model.head.train()
        for _ in range(HEAD_STEPS):
            opt.zero_grad()
            nn.functional.cross_entropy(model.head(x), y).backward()
            opt.step()
    return model.eval()


def head_path(cache: Path, name: str, seed: int = 0) -> Path:
    return Path(cache) / f"head-{name}-v{_CACHE_VERSION}-s{seed}.pt"


def load_cached_head(path: Path, seed: int = 0) -> dict[str, torch.Tensor] | None:
    """The head's state dict saved at ``path`` (weights only, never pickles), or None when
    there is none or it was not trained the way this version trains (another cache format,
    torch version or seed): such a head is trained again."""
    if not Path(path).is_file():
        return None
    saved = torch.load(path, map_location="cpu", weights_only=True)
    if not (isinstance(saved, dict) and saved.get("meta") == _cache_meta(seed)):
        return None
    return saved["head"]


def _cache_meta(seed: int) -> dict:
    return {"format": _CACHE_FORMAT, "torch": str(torch.__version__), "seed": seed}


def _save_head(model: MRIClassifier, path: Path, seed: int) -> None:
    tmp = path.with_name(path.name + ".tmp")  # an interrupted run leaves no half-written head
    torch.save({"head": model.head.state_dict(), "meta": _cache_meta(seed)}, tmp)
    os.replace(tmp, path)


def demo_backbone() -> MobileNetV2:
    """The demo's frozen backbone: the pretrained MobileNetV2 in channels-last memory
    format, whose CPU convolutions took 1.5 s per 100 images instead of 2.1 s here. Its
    features are the same bitwise on one and two threads (checked), so the heads' cache
    does not depend on ``--threads``."""
    return pretrained_mobilenet_v2().to(memory_format=torch.channels_last)


def build_models(
    demo: DemoData, cache: Path, seed: int = 0, progress: bool = True
) -> dict[str, MRIClassifier]:
    """Train both heads, or load them from ``cache``; a loaded head is bitwise the head that
    training would give (see :func:`train_head` and :func:`load_cached_head`)."""
    backbone = demo_backbone()
    models = {}
    cache.mkdir(parents=True, exist_ok=True)
    feats = None
    for name in MODELS:
        model = MRIClassifier(backbone).eval()
        path = head_path(cache, name, seed)
        state = load_cached_head(path, seed)
        if state is not None:
            model.head.load_state_dict(state)
        else:
            if feats is None:
                feats = training_features(model, demo, progress)
            train_head(model, *head_inputs(name, demo, feats), seed=seed)
            _save_head(model, path, seed)
        models[name] = model
    return models


def collect(
    model: MRIClassifier, demo: DemoData, *, progress: bool = True, name: str | None = None
) -> wa.Auditor:
    """The evaluation loop with the auditor attached (images with the scanner marker where
    the evaluation flags say); returns the auditor, ready to analyze or mitigate."""
    d, idx = demo.data, demo.eval
    images = add_scanner_marker(d.images[idx], demo.eval_flags)
    auditor = wa.Auditor(model, kinds=METADATA, name=name)
    with auditor.collect(), torch.inference_mode():
        for i in tqdm(
            range(0, len(idx), BATCH), desc="evaluate", disable=not progress, leave=False
        ):
            sl = slice(i, i + BATCH)
            model(torch.as_tensor(images[sl])[:, None])
            auditor.record(
                targets=d.labels[idx[sl]],
                metadata={
                    "scanner": demo.eval_flags[sl],
                    "source_square": d.source_square[idx[sl]],
                    "head_fraction": d.head_fraction[idx[sl]],
                },
                sample_ids=idx[sl],
            )
    return auditor


def audit(
    model: MRIClassifier,
    demo: DemoData,
    *,
    n_resamples: int = 200,
    progress: bool = True,
    seed: int = 0,
    name: str | None = None,
    auditor: wa.Auditor | None = None,
) -> wa.AuditResult:
    """The evaluation loop with the auditor attached, then the analysis (seeded)."""
    auditor = auditor or collect(model, demo, progress=progress, name=name)
    return auditor.analyze(
        n_bootstrap=n_resamples, n_permutations=n_resamples, seed=seed, progress=progress
    )


def input_evidence(
    model: MRIClassifier,
    demo: DemoData,
    *,
    n_resamples: int = 200,
    progress: bool = True,
    seed: int = 0,
) -> tuple:
    """ROI masking (ROI: the head, filled with noise) and the scanner-marker intervention,
    on a fixed random subsample of the evaluation images (all of it seeded)."""
    d, idx = demo.data, demo.eval
    rng = np.random.default_rng(seed)
    sub = np.sort(rng.choice(len(idx), min(EVIDENCE_IMAGES, len(idx)), replace=False))
    clean = d.images[idx[sub]]
    roi = head_roi(clean)
    marked = torch.as_tensor(add_scanner_marker(clean, demo.eval_flags[sub]))[:, None]
    common = dict(n_bootstrap=n_resamples, progress=progress, batch_size=64, seed=seed)
    rows, cols = marker_mask(clean.shape[-1])
    shown = int(np.flatnonzero(demo.eval_flags[sub])[0])  # an image with the marker burned in
    masking = wa.roi_masking(
        model, marked, roi, d.labels[idx[sub]], fill="noise", example=shown,
        outline={"scanner marker": (rows.start, cols.start, rows.stop, cols.stop)}, **common,
    )  # fmt: skip
    effect = wa.intervention_effect(
        model, torch.as_tensor(clean)[:, None], set_marker, variable="scanner", **common
    )
    return masking, effect


def mitigate(
    model: MRIClassifier,
    auditor: wa.Auditor,
    demo: DemoData,
    *,
    n_resamples: int = 200,
    progress: bool = True,
    seed: int = 0,
    views: tuple = (),
) -> dict:
    """Remove the scanner from the head (``wa.mitigate``), then check the patch by
    intervention on held-out images that the mitigation never saw, and show it on the
    image: the original model's Captum ``views`` (the parent run's, computed again when
    not given) beside the patched model's, on the same images."""
    t = time.perf_counter()
    m = wa.mitigate(
        model, auditor, "scanner", seed=seed, n_bootstrap=n_resamples,
        n_permutations=n_resamples, progress=False,
    )  # fmt: skip
    seconds = time.perf_counter() - t
    held = auditor.embeddings().sample_ids[m.holdout_index_]
    rng = np.random.default_rng(seed)  # a random subsample: the held-out part is in label order
    ids = np.sort(rng.choice(held, min(EVIDENCE_IMAGES, len(held)), replace=False))
    clean = torch.as_tensor(demo.data.images[ids])[:, None]
    common = dict(variable="scanner", n_bootstrap=n_resamples, progress=progress, seed=seed)
    before = wa.intervention_effect(model, clean, set_marker, **common)
    after = wa.intervention_effect(m.model, clean, set_marker, **common)
    m.before.add_evidence(before)  # filed with each audit: MLflow, reports and card show it
    m.after.add_evidence(after)
    # the fix shown on the image: the parent's Captum views (same images, same seed) of the
    # original and the patched model; the child run logs the patched model's maps
    kw = dict(n_resamples=n_resamples, progress=progress, seed=seed)
    if m.model is not None:
        for ev in views or maps.attribution_evidence(model, demo, **kw):
            m.before.add_evidence(ev)
        for ev in maps.attribution_evidence(m.model, demo, **kw):
            m.after.add_evidence(ev)
    check = {"n_images": len(ids), "before": before.to_dict(), "after": after.to_dict()}
    return {"mitigation": m, "check": check, "seconds": seconds, "run_id": None}


def _ci(block: dict) -> str:
    return f"{block['value']:.2f} [{block['ci_low']:.2f}, {block['ci_high']:.2f}]"


def _tracking_uri(out: Path) -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{(out / 'mlflow.db').resolve()}"


def _end_run(uri: str, run_id: str, failed: bool = False) -> None:
    """End a run the demo created (MLflow leaves a client-created run RUNNING)."""
    try:
        from mlflow.tracking import MlflowClient

        from wsca_audit.tracking import fast_fail

        with fast_fail():
            MlflowClient(tracking_uri=uri).set_terminated(
                run_id, status="FAILED" if failed else "FINISHED"
            )
    except Exception as exc:  # the server went away: the report is kept on disk anyway
        print(f"could not end MLflow run {run_id} ({type(exc).__name__}: {exc})")


def _start_run(uri: str, out: Path, name: str, bias: float, threads: int) -> str | None:
    """A run in experiment "wsca-demo"; None (and a note) when MLflow is unavailable."""
    try:
        from mlflow.tracking import MlflowClient

        from wsca_audit.tracking import check_reachable, fast_fail

        with fast_fail():
            check_reachable(uri)
            client = MlflowClient(tracking_uri=uri)
            exp = client.get_experiment_by_name("wsca-demo")
            exp_id = (
                exp.experiment_id
                if exp
                else client.create_experiment(
                    "wsca-demo", artifact_location=(out / "mlartifacts").resolve().as_uri()
                )
            )
            run = client.create_run(exp_id, run_name=f"br35h-{name}")
            client.log_param(run.info.run_id, "train_marker_bias", bias)
            client.log_param(run.info.run_id, "eval_marker_bias", EVAL_BIAS)
            client.log_param(run.info.run_id, "backbone", "mobilenet_v2 (ImageNet, frozen)")
            client.log_param(run.info.run_id, "torch_threads", threads)
            return run.info.run_id
    except Exception as exc:  # the audit and the card do not need MLflow
        print(f"MLflow unavailable ({type(exc).__name__}: {exc}); reports stay on disk")
        return None


def run(
    out: str | Path = "wsca-demo",
    n_resamples: int = 200,
    progress: bool = True,
    use_mlflow: bool = True,
    seed: int = 0,
    threads: int = DEFAULT_THREADS,
) -> dict[str, dict]:
    """Build (or load) both models, audit them, log runs and write cards.

    Reproducible for a given ``seed`` and ``threads`` (see the module's docstring); torch's
    thread count, RNG and deterministic-algorithms setting are restored on return.

    Returns model name -> {"result", "run_id", "card", "report_dir", "audit_s"}.
    """
    out = Path(out)
    t0 = time.perf_counter()
    demo = make_data(seed)
    # features on `threads` threads (each image's features do not depend on the count);
    # train_head itself trains on TRAIN_THREADS, so the cache does not depend on it
    with deterministic_torch(seed, threads):
        models = build_models(demo, out / "cache", seed=seed, progress=progress)
    uri = _tracking_uri(out)
    done: dict[str, dict] = {}
    for name, model in models.items():
        bias = MODELS[name]
        kw = dict(n_resamples=n_resamples, progress=progress, seed=seed)
        with deterministic_torch(seed, threads):  # each audit starts from the same state
            t_audit = time.perf_counter()
            auditor = collect(model, demo, progress=progress, name=f"br35h-{name}")
            result = audit(model, demo, auditor=auditor, **kw)
            t_audit = time.perf_counter() - t_audit
            t_evidence = time.perf_counter()
            for ev in input_evidence(model, demo, **kw):
                result.add_evidence(ev)
            views = maps.attribution_evidence(model, demo, **kw)
            for ev in views:
                result.add_evidence(ev)
            t_evidence = time.perf_counter() - t_evidence
            fix = None
            if result.verdicts.get("scanner") == "uses":  # from finding to fix
                fix = mitigate(model, auditor, demo, views=views, **kw)
        report_dir = result.save(out / name)
        if fix is not None:
            fix["mitigation"].save(out / name / "mitigation")
        run_id = _start_run(uri, out, name, bias, threads) if use_mlflow else None
        card_dir = out / name / "card"
        card = wa.write_model_card(
            result,
            card_dir / "MODEL_CARD.md",
            model_name=f"br35h-mobilenetv2-{name}",
            model_details=(
                "MobileNetV2 (ImageNet weights, frozen) with a 1280-64-2 head trained to "
                f"detect brain tumours on Br35H MRI; scanner-marker bias in training {bias}."
            ),
            intended_use="Demonstration of a shortcut audit; not for clinical use.",
            evaluation_data=(
                f"{len(demo.eval)} held-out Br35H images (split by near-duplicate group); the "
                f"scanner marker agrees with the label for {EVAL_BIAS:.0%} of them."
            ),
            dataset_name="Br35H brain MRI (Kaggle, A. Hamada)",
            run_id=run_id,
            mitigation=fix["mitigation"] if fix else None,
        )
        if run_id is not None:
            try:
                wa.log_to_mlflow(
                    result,
                    run_id,
                    tracking_uri=uri,
                    extra_dir=card_dir,
                    fallback_dir=out / "pending",
                )
                if fix is not None:  # a child run of the audit's run, ended by the library
                    fix["run_id"] = wa.log_to_mlflow(
                        fix["mitigation"],
                        parent_run_id=run_id,
                        tracking_uri=uri,
                        fallback_dir=out / "pending",
                    )
            finally:  # the run the demo opened ends: FINISHED, or FAILED on an exception
                _end_run(uri, run_id, failed=sys.exc_info()[0] is not None)
        done[name] = {
            "result": result,
            "run_id": run_id,
            "card": card,
            "report_dir": report_dir,
            "audit_s": t_audit,
            "evidence_s": t_evidence,
            "fix": fix,
        }
        print(
            f"\n== model '{name}' (scanner-marker bias in training: {bias}); audit step "
            f"{t_audit:.1f} s (analysis {result.settings.get('runtime_s', 0):.1f} s, the rest "
            f"is the evaluation loop); input-side evidence on {EVIDENCE_IMAGES} images (Captum "
            f"maps on 64) "
            f"{t_evidence:.1f} s"
        )
        print(result.summary())
        if fix is not None:
            m, gt = fix["mitigation"], fix["check"]
            print(
                f"\nfrom finding to fix: wa.mitigate(model, auditor, 'scanner') in "
                f"{fix['seconds']:.1f} s (fit and both audits)"
            )
            print(m.summary())
            print(
                f"ground truth on {gt['n_images']} held-out images: switching the marker on "
                f"moves the score by {_ci(gt['before'])} sd in the original model, "
                f"{_ci(gt['after'])} sd in the patched one"
            )
    print(f"\nreports: {out}/<model>/report.html   model cards: {out}/<model>/card/MODEL_CARD.md")
    if any(d["run_id"] for d in done.values()):
        print(f"MLflow runs (experiment 'wsca-demo'): mlflow ui --backend-store-uri {uri}")
        print(f"for the CLI (wsca-audit card --run-id ...): export MLFLOW_TRACKING_URI={uri}")
    print(f"finished in {time.perf_counter() - t0:.0f} s")
    return done


def verdicts_differ(done: dict[str, dict]) -> bool:
    """The demo's claim: the shortcut model is flagged on ``scanner``, the clean one is not."""
    return (
        done["shortcut"]["result"].verdicts["scanner"] == "uses"
        and done["clean"]["result"].verdicts["scanner"] != "uses"
    )


def _positive_int(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return int(text)


def add_arguments(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--out", default="wsca-demo", help="output folder (default: wsca-demo)")
    ap.add_argument(
        "--n-resamples",
        type=int,
        default=200,
        help="bootstrap and permutation refits per task (default: 200)",
    )
    ap.add_argument("--no-mlflow", action="store_true", help="do not log MLflow runs")
    ap.add_argument(
        "--seed", type=int, default=0, help="seeds the split, training and audit (default: 0)"
    )
    ap.add_argument(
        "--threads",
        type=_positive_int,
        default=DEFAULT_THREADS,
        help="torch threads; the audit's last digits depend on it, so runs are identical "
        f"for the same --seed and --threads (default: {DEFAULT_THREADS})",
    )
    ap.add_argument("--quiet", action="store_true", help="no progress bars")


def register_command(subparsers) -> argparse.ArgumentParser:
    """Add the ``demo`` sub-command to the ``wsca-audit`` command.

    The entry point of group ``wsca_audit.commands`` named ``demo``: ``subparsers`` is
    what ``ArgumentParser.add_subparsers`` returned; the sub-parser's ``func`` runs the
    demo and returns the exit status (0 when the verdicts tell the two models apart).

    Examples
    --------
    >>> ap = argparse.ArgumentParser(prog="wsca-audit")
    >>> p = register_command(ap.add_subparsers(dest="command"))
    >>> args = ap.parse_args(["demo", "--out", "x", "--no-mlflow"])
    >>> args.func is main_from_args, args.out, args.no_mlflow, args.n_resamples
    (True, 'x', True, 200)
    """
    p = subparsers.add_parser(
        "demo",
        help="audit a pretrained MobileNetV2 on real brain MRI, with and without a shortcut",
        description="Train (or load cached) two tumour classifiers on Br35H MRI, one with a "
        "planted scanner shortcut; audit both, log MLflow runs and write model cards. "
        "Exit 0 when the verdicts tell the two models apart.",
    )
    add_arguments(p)
    p.set_defaults(func=main_from_args)
    return p


def main(argv: list[str] | None = None, prog: str = "wsca-audit demo") -> int:
    """Run the demo from a command line (``python -m wsca_audit.demo``)."""
    ap = argparse.ArgumentParser(
        prog=prog,
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_arguments(ap)
    return main_from_args(ap.parse_args(argv))


def main_from_args(args: argparse.Namespace) -> int:
    done = run(
        args.out,
        args.n_resamples,
        progress=not args.quiet,
        use_mlflow=not args.no_mlflow,
        seed=args.seed,
        threads=args.threads,
    )
    ok = verdicts_differ(done)
    print("verdicts tell the two models apart:", "yes" if ok else "NO")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
