"""The analysis pipeline: EmbeddingSet -> auxiliary heads -> measures -> AuditResult.

For each metadata task three families of heads are fitted, each as one batched solve
(point fit, bootstrap refits, permutation refits, cross-fitting folds):

1. the *probe* on standardised embeddings: the paper's softmax probe (continuous
   variables binned into equal-width intervals of their range), used for ``wsc`` and,
   for categorical variables, for the held-out encoding AUC;
2. for continuous variables, a ridge head on standardised embeddings for the held-out
   encoding R²;
3. the *usage head* on embeddings centred within each primary class, for ``usage``.
"""

from __future__ import annotations

import math
import os
import tempfile
import time
import warnings
from dataclasses import asdict, dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from . import correlation as corr
from . import primary, resampling, stats
from .decision import decide, decide_outputs
from .embeddings import EmbeddingSet, inferred_kind_note
from .errors import AuditError, AuditWarning
from .levels import Levels, code_levels
from .measures import get_measures
from .performance import subgroup_performance
from .primary import PrimaryHead
from .report import SCHEMA_VERSION, AuditResult
from .shards import audit_wide, local
from .store import SPILL_PREFIX
from .support import MAX_EFFECT_SD, MIN_LEVEL_COUNT, permutations_needed, support_block
from .taskdata import AuditTensors, Fitter, TaskData
from .verdict import Thresholds


@dataclass
class AuditSettings:
    """Every knob of an analysis; all of it is written to the report's ``settings``."""

    n_bootstrap: int = 200
    n_permutations: int = 200
    n_folds: int = 5
    seed: int | None = 0
    C: float = 1.0
    alpha: float = 1.0
    n_bins: int = 5
    pca_variance: float = 0.99
    pca_min_components: int = 50
    center_classes: bool = True
    ci_level: float = 0.95
    thresholds: Thresholds = field(default_factory=Thresholds)
    device: str | None = None
    dtype: str = "float32"
    max_batch_mb: float = stats.DEFAULT_BUDGET_MB
    progress: bool = True
    layer_attribution: bool = True
    max_memory_mb: float | None = None
    max_levels: int = 50
    performance_pairs: list | None = None
    classes: list | None = None
    task: str | None = None
    output_names: list | None = None
    target_unit: str | None = None

    def validate(self) -> None:
        if self.n_bootstrap < 0 or self.n_permutations < 0:
            raise AuditError("n_bootstrap and n_permutations must be >= 0")
        if self.n_folds < 2:
            raise AuditError("n_folds must be >= 2 (encoding is measured on held-out folds)")
        if not 2 <= self.n_bins <= 50:
            raise AuditError("n_bins must be between 2 and 50 (the paper uses 3-8)")
        if self.C <= 0 or self.alpha <= 0:
            raise AuditError("C and alpha must be > 0")
        if not 0 < self.ci_level < 1:
            raise AuditError("ci_level must be in (0, 1)")
        if self.dtype not in ("float32", "float64"):
            raise AuditError("dtype must be 'float32' or 'float64'")
        if self.max_levels < 2:
            raise AuditError("max_levels must be >= 2")
        if self.max_memory_mb is not None and self.max_memory_mb < 0:
            raise AuditError("max_memory_mb must be >= 0")
        if not isinstance(self.seed, (int, np.integer)) or isinstance(self.seed, bool):
            raise AuditError(
                f"seed must be an int, or None for fresh randomness; got {self.seed!r}"
            )
        if self.classes is not None:
            if isinstance(self.classes, (str, bytes)) or not hasattr(self.classes, "__len__"):
                raise AuditError(
                    f"classes is the class of each head output, in order; got {self.classes!r}"
                )
            self.classes = [c.item() if isinstance(c, np.generic) else c for c in self.classes]
        if self.task is not None and self.task not in primary.TASKS:
            raise AuditError(f"task={self.task!r} is not one of {list(primary.TASKS)}")
        if self.output_names is not None:
            if isinstance(self.output_names, (str, bytes)):
                raise AuditError("output_names is a list of names, one per head output")
            self.output_names = [str(x) for x in self.output_names]
            if len(set(self.output_names)) != len(self.output_names):
                raise AuditError(f"output_names must be distinct; got {self.output_names}")
        for pair in self.performance_pairs or []:
            if not (isinstance(pair, (tuple, list)) and len(pair) == 2):
                raise AuditError(f"performance_pairs holds pairs of metadata names; got {pair!r}")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["thresholds"] = self.thresholds.to_dict()
        d.pop("progress")
        # a schema_version 1 key: usage is always deconfounded this way (no setting)
        d["deconfounding"] = "within_class_centering"
        return d


def analyze(
    embeddings,
    targets=None,
    metadata=None,
    *,
    primary_weight=None,
    primary_bias=None,
    kinds: dict[str, str] | None = None,
    sample_ids=None,
    drop_nonfinite: bool = False,
    **settings,
) -> AuditResult:
    """Audit embeddings from any source against a primary head, with no model needed.

    Parameters
    ----------
    embeddings : array-like of shape (n_samples, embedding_dim)
    targets : array-like of shape (n_samples,) or (n_samples, n_outputs), optional
        Primary labels: the head's class indices (never renumbered), or any labels with
        ``classes=[...]`` naming the class of each output in order; a 0/1 column per
        output for a multi-label head; the target value for a regression head.
    metadata : mapping of str to array-like, or a pandas DataFrame
        Metadata columns to audit.
    primary_weight : array-like of shape (n_outputs, embedding_dim)
        The model's final linear layer (``logits = z @ W.T + b``).
    primary_bias : array-like of shape (n_outputs,), optional
    kinds : mapping of str to {"categorical", "continuous"}, optional
    sample_ids : array-like, optional
    drop_nonfinite : bool, default=False
    **settings
        Fields of :class:`AuditSettings`: ``n_bootstrap=200``, ``n_permutations=200``,
        ``seed=0`` (None: fresh randomness, the seed drawn is in the report's settings),
        ``task=None`` (``"binary"``, ``"multiclass"``, ``"multilabel"`` or
        ``"regression"``; None: inferred from the head and the targets, and said in the
        warnings; docs/heads.md), ``output_names=None`` (class or finding names, for
        per-output results), ``target_unit=None`` (a regression target's unit),
        ``classes=None`` (the class of each head output, in order, for targets that are
        not class indices), ``C=1.0`` (logistic heads), ``alpha=1.0`` (ridge heads),
        ``n_folds=5``, ``n_bins=5``, ``thresholds=Thresholds()``, ``device=None`` (CUDA
        when available, else CPU), ``dtype="float32"``, ``progress=True``, ...

    Returns
    -------
    AuditResult

    Examples
    --------
    >>> import numpy as np, wsca_audit as wa
    >>> rng = np.random.default_rng(0)
    >>> z = rng.normal(size=(300, 8)); y = (z[:, 0] > 0).astype(int)
    >>> site = (z[:, 1] > 0).astype(int)                      # encoded, not read by the head
    >>> W = np.zeros((2, 8)); W[1, 0] = 1.0
    >>> res = wa.analyze(z, y, {"site": site}, primary_weight=W, n_bootstrap=50,
    ...                  n_permutations=50, progress=False)
    >>> res.tasks["site"]["verdict"]
    'encoded_not_used'
    """
    if isinstance(embeddings, EmbeddingSet):
        given = [targets, metadata, primary_weight, primary_bias, kinds, sample_ids]
        if any(x is not None for x in given):
            raise AuditError("an EmbeddingSet carries its own data: pass only settings with it")
        return analyze_embeddings(embeddings, **settings)
    if metadata is None:
        metadata = {}
    primary = None
    if primary_weight is not None:
        primary = PrimaryHead.from_arrays(primary_weight, primary_bias)
    elif primary_bias is not None:
        raise AuditError("primary_bias was given without primary_weight")
    es = EmbeddingSet(
        embeddings,
        targets,
        metadata,
        kinds=kinds,
        primary=primary,
        sample_ids=sample_ids,
        drop_nonfinite=drop_nonfinite,
    )
    return analyze_embeddings(es, **settings)


def analyze_embeddings(es: EmbeddingSet, model_info: dict | None = None, **settings) -> AuditResult:
    """Audit a validated :class:`EmbeddingSet` (see :func:`analyze` for the settings)."""
    if settings.pop("deconfounding", None) is not None:  # never read: usage always centres
        warnings.warn(
            "the deconfounding setting is removed (usage is always deconfounded by "
            "within-class centring); it has no effect",
            DeprecationWarning,
            stacklevel=2,
        )
    thresholds = settings.pop("thresholds", None)
    if isinstance(thresholds, dict):
        thresholds = Thresholds(**thresholds)
    unknown = set(settings) - set(AuditSettings.__dataclass_fields__)
    if unknown:
        raise AuditError(
            f"unknown setting(s) {sorted(unknown)}; valid: "
            f"{sorted(AuditSettings.__dataclass_fields__)}"
        )
    cfg = AuditSettings(**settings, **({"thresholds": thresholds} if thresholds else {}))
    drawn = cfg.seed is None
    if drawn:  # fresh randomness, recorded so that the run can be repeated (random_state)
        cfg.seed = int(np.random.SeedSequence().generate_state(1)[0] >> 1)
        if es.shard is not None:  # one seed for every rank: they must draw alike
            cfg.seed = int(es.shard.max(torch.tensor([cfg.seed], dtype=torch.int64))[0])
    cfg.validate()
    if es.primary is None:
        raise AuditError(
            "no primary head: pass primary_weight= (the model's final linear layer), or "
            "collect with an Auditor whose model ends in an nn.Linear"
        )
    run = _Analysis(es, cfg, model_info or {})
    if drawn:
        run.warnings.append(f"seed=None drew seed {cfg.seed}; pass seed={cfg.seed} to repeat")
    return run.run()


class _Analysis:
    """One audit run; holds the shared tensors so that each task only adds its heads."""

    def __init__(self, es: EmbeddingSet, cfg: AuditSettings, model_info: dict) -> None:
        self.es = es
        self.cfg = cfg
        self.model_info = model_info
        self.warnings = list(es.warnings)
        # CUDA where present, unless the caller chose a device
        auto = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = torch.device(cfg.device or auto)
        self.dtype = getattr(torch, cfg.dtype)
        # which samples this rank holds: all of them in one process (see shards.py)
        self.shard = es.shard
        self._tmp: tempfile.TemporaryDirectory | None = None  # memory-mapped working copies

    def _warn(self, message: str) -> None:
        self.warnings.append(message)
        warnings.warn(message, AuditWarning, stacklevel=4)

    def _t(self, x) -> Tensor:
        return torch.as_tensor(x, dtype=self.dtype, device=self.device)

    # ------------------------------------------------------------------ shared pieces
    def _prepare(self) -> None:
        es, cfg = self.es, self.cfg
        n = es.n_samples
        if n < 2 * cfg.n_folds:
            raise AuditError(f"{n} samples are too few for {cfg.n_folds}-fold cross-fitting")
        Z = self._embeddings_tensor()
        self.Z = Z
        self.W = self._t(es.primary.weight)
        self.b = self._t(es.primary.bias)
        # rows of Z per chunk: a handful of (rows x D) temporaries within the budget
        self.rows = stats.chunk_rows(4 * Z.shape[1], cfg.max_batch_mb, Z.element_size())
        self._labels()
        contrasts = primary.contrasts(self.W, self.task)
        Zs, Zws, sd, sd_w, scores_w = self._designs(Z, contrasts)
        basis, self.pca_share = corr.pca_basis(
            Z, cfg.pca_variance, cfg.pca_min_components, self.rows, self.shard
        )
        # every draw is keyed by (seed, sample id): the same on any number of ranks
        keys = resampling.sample_keys(es.sample_ids, n).to(self.device)
        self.boot = resampling.Bootstrap(  # drawn where read: no (resamples x N) matrix
            keys, cfg.n_bootstrap, cfg.seed, self.dtype, budget_mb=cfg.max_batch_mb / 16
        )
        if 0 < cfg.n_bootstrap < 50:
            self._warn(f"n_bootstrap={cfg.n_bootstrap} gives rough confidence intervals")
        self.shared = AuditTensors(
            Zs=Zs, Zws=Zws, sd=sd, sd_w=sd_w, W=self.W, b=self.b, basis=basis,
            primary_vectors=primary.class_vectors(self.W, cfg.center_classes, self.task),
            contrasts=contrasts,
            # the contrasts' scores (the effect's outcome), by chunks of Z
            contrast_scores=self._scores(contrasts.T),
            contrast_scores_w=scores_w, boot=self.boot, strata=self.strata, cfg=cfg,
            task=self.task,
            covariate=self.covariate,
            contrast_labels=primary.contrast_names(self.W.shape[0], self.task, cfg.output_names),
            dtype=self.dtype, device=self.device, shard=self.shard,
        )  # fmt: skip
        self.fitter = Fitter(cfg, self.boot, self.dtype, self.device, self.shard)

    def _labels(self) -> None:
        """The task (given, or inferred and said) and the primary labels: what the metric
        reads and the strata that centring and permutations hold fixed (the classes
        present, the label vectors, or bins of a regression target; see
        :func:`wsca_audit.primary.encode_targets`)."""
        n, n_out = self.es.n_samples, self.es.primary.n_outputs
        self.labels, self.covariate = None, None
        enc = primary.encode_targets(
            self.es.targets, n_out, task=self.cfg.task, classes=self.cfg.classes
        )
        self.task, self.encoded = enc.task, enc
        if enc.note:
            self.warnings.append(enc.note)
        if self.cfg.output_names is not None:  # checked against the head here
            primary.contrast_names(n_out, self.task, self.cfg.output_names)
        if self.es.targets is None:
            self._warn(
                "no targets were recorded: usage is not deconfounded from the primary label "
                "and the primary metric is not reported"
            )
            self.strata = torch.zeros(n, dtype=torch.long)
            return
        self.labels = torch.as_tensor(enc.labels, device=self.device)
        self.strata = torch.as_tensor(enc.strata, dtype=torch.long)
        self.covariate = self._t(enc.covariate()) if self.task == "regression" else None
        self.label_values = enc.present
        if self.task in ("multilabel", "regression"):
            self.warnings.append(f"the target is held fixed within {enc.strata_text}")
            alone = int((np.bincount(enc.strata)[enc.strata] < 2).sum())
            if self.task == "multilabel" and alone > 0.1 * n:  # many findings: sparse vectors
                self._warn(
                    f"{alone} of {n} samples are alone in their label vector: they tell "
                    "nothing once every label is held fixed (audit more samples, or fewer "
                    "findings at a time)"
                )
            if enc.n_strata < 2:
                self._warn("the targets do not vary: usage is not deconfounded from them")
            return
        absent = primary.absent_classes(self.label_values, n_out)
        if absent:
            self._warn(
                f"class(es) {absent} of the head's {n_out} outputs have no sample in the "
                "audit data: they stay absent (the metric and the strata use the "
                f"classes present, {self.label_values.tolist()})"
            )
        if len(self.label_values) < 2:
            self._warn(
                "the targets hold a single class: the primary metric is undefined and "
                "usage is not deconfounded from the label"
            )

    def _designs(self, Z: Tensor, contrasts: Tensor) -> tuple[Tensor, ...]:
        """Standardised embeddings (the probe's design) and within-class centred,
        standardised ones (usage's), their scales, and the within-class centred scores
        of the contrasts; the working copies are filled chunk by chunk (memory-mapped
        when spilling). ``Z`` holds this rank's rows; scales and means are the audit's."""
        shard = self.shard
        chunks = stats.chunks(Z.shape[0], self.rows)
        mu64 = stats.column_mean(Z, self.rows, shard, torch.float64)  # one pass for both
        mu, sd = mu64.to(Z.dtype), stats.safe_std(Z, self.rows, shard, mean=mu64)
        k = int(self.strata.max()) + 1 if self.strata.numel() else 1
        strata = local(self.strata.to(self.device), shard)
        # (n_classes, D)
        means = stats.stratum_mean_table(Z, strata, k, self.dtype, self.device, self.rows, shard)
        Zs, Zw = self._big(Z.shape), self._big(Z.shape)
        for sl in chunks:
            Zs[sl] = (Z[sl] - mu) / sd
            Zw[sl] = Z[sl] - means[strata[sl]]
        if self.covariate is not None:  # a regression target: its slope within bins too
            stats.residualise(Zw, local(self.covariate, shard), chunks, shard)
        sd_w = stats.safe_std(Zw, self.rows, shard)
        scores_w = audit_wide(Zw @ contrasts.T, shard)  # (N, C') usage's primary side
        for sl in chunks:  # Zw becomes Zws in place: one copy fewer
            Zw[sl] /= sd_w
        return Zs, Zw, sd, sd_w, scores_w

    def _scores(self, weight_t: Tensor, bias: Tensor | None = None) -> Tensor:
        """``Z @ weight_t (+ bias)`` for every sample of the audit, by chunks of this
        rank's rows (the primary scores: columns of length N every rank holds)."""
        parts = [self._t(self.Z[sl]) @ weight_t for sl in stats.chunks(self.Z.shape[0], self.rows)]
        out = torch.cat(parts) if parts else self._t(self.Z[:0]) @ weight_t
        return audit_wide(out if bias is None else out + bias, self.shard)

    def _embeddings_tensor(self) -> Tensor:
        """Z on the device; a memory-mapped Z stays mapped on the CPU (no copy)."""
        E = self.es.embeddings
        mapped = isinstance(E, np.memmap) and E.dtype == np.float32 and E.flags.writeable
        if mapped and self.device.type == "cpu" and self.dtype == torch.float32:
            return torch.from_numpy(E)
        return self._t(E)

    def _spilling(self, shape) -> bool:
        if self.device.type != "cpu":
            return False
        if isinstance(self.es.embeddings, np.memmap):
            return True
        limit = self.cfg.max_memory_mb
        nbytes = math.prod(shape) * torch.finfo(self.dtype).bits // 8
        return limit is not None and nbytes > limit * 2**20

    def _big(self, shape) -> Tensor:
        """An empty embedding-sized tensor: memory-mapped in a temp dir when over budget."""
        if not self._spilling(shape):
            return torch.empty(shape, dtype=self.dtype, device=self.device)
        if self._tmp is None:
            self._tmp = tempfile.TemporaryDirectory(prefix=SPILL_PREFIX)
        path = Path(self._tmp.name) / f"work-{len(os.listdir(self._tmp.name))}.bin"
        np_dtype = np.float32 if self.dtype == torch.float32 else np.float64
        return torch.from_numpy(np.memmap(path, dtype=np_dtype, mode="w+", shape=tuple(shape)))

    # ------------------------------------------------------------------ primary metric
    def _primary_block(self) -> dict:
        """The report's ``primary`` metrics (see :func:`wsca_audit.primary.metrics_block`)."""
        return primary.metrics_block(
            self._logits if self.labels is not None else None, self.labels, self.boot,
            task=self.task, n_labels=len(getattr(self, "label_values", [])),
            n_bootstrap=self.cfg.n_bootstrap, level=self.cfg.ci_level,
            output_names=self.cfg.output_names, target_unit=self.cfg.target_unit,
        )  # fmt: skip

    @cached_property
    def _logits(self) -> Tensor:
        """The primary head's logits (N x n_outputs), by chunks of Z (computed once)."""
        return self._scores(self.W.T, self.b)

    def _performance(self) -> dict | None:
        """Primary metric by subgroup of every metadata variable (see performance.py)."""
        if self.labels is None or self.encoded.n_strata < 2 or not self.es.metadata:
            return None
        pairs = [tuple(p) for p in self.cfg.performance_pairs or []]
        unknown = sorted({v for p in pairs for v in p} - set(self.es.metadata))
        if unknown:
            raise AuditError(
                f"performance_pairs name unknown metadata {unknown}; got {sorted(self.es.metadata)}"
            )
        return subgroup_performance(
            self._logits,
            self.labels,
            dict(self.es.metadata),
            dict(self.es.kinds),
            self.boot,
            pairs=pairs,
            level=self.cfg.ci_level,
            task=self.task,
        )

    # ------------------------------------------------------------------ one task
    def _levels(self, name: str, kind: str, values: np.ndarray) -> Levels | None:
        """Code a column as class indices (continuous: the paper's equal-width bins of
        its range), with the warnings a reader needs; None when the task is skipped."""
        cfg = self.cfg
        coded = code_levels(values, kind, n_bins=cfg.n_bins, binning="width")
        n_missing = int((~coded.valid).sum())
        n_valid = len(values) - n_missing
        if n_missing:
            self._warn(f"{name}: {n_missing} missing values were masked")
        if coded.n_distinct < 2:
            self._warn(f"{name}: only one distinct value among {n_valid} samples; task skipped")
            return None
        if kind == "categorical" and coded.n_distinct > cfg.max_levels:
            self._warn(
                f"{name}: {coded.n_distinct} distinct values among {n_valid} samples (more "
                f"than max_levels={cfg.max_levels}): an identifier or a continuous variable? "
                "Declare it continuous (kinds=...) or group its values; task skipped"
            )
            return None
        counts = coded.counts
        if kind == "categorical" and counts.min() < MIN_LEVEL_COUNT:
            rare = [coded.labels[i] for i in np.flatnonzero(counts < MIN_LEVEL_COUNT)]
            shown = ", ".join(repr(r) for r in rare[:5]) + (
                f" and {len(rare) - 5} more" if len(rare) > 5 else ""
            )
            self._warn(
                f"{name}: level(s) {shown} have fewer than {MIN_LEVEL_COUNT} samples; "
                "no verdict rests on so few (group rare levels, or audit more samples)"
            )
        return coded

    def _task(self, name: str, kind: str, values: np.ndarray) -> dict | None:
        """Every registered measure of one task, in report order (the verdict comes later)."""
        coded = self._levels(name, kind, values)
        if coded is None:
            return None
        task = TaskData.for_task(
            self.shared, name=name, kind=kind, values=values, coded=coded,
            fitter=self.fitter, warn_to=self._warn,
        )  # fmt: skip
        out: dict = {"kind": kind, "n_valid": task.n_valid, "levels": coded.labels}
        per_class: dict[str, dict] = {}
        for measure in get_measures():
            if measure.enabled(self.cfg):
                result = measure.run(task)
                if result.block is not None:
                    out[measure.report_key] = result.block
                if result.per_class is not None:
                    per_class[measure.report_key] = result.per_class
        _hide_absurd_effect(out)
        out.update(verdict=None, reason=None, samples_needed=None)
        out["per_class"] = per_class
        out["support"] = support_block(task)
        return out

    def _check_permutations(self, n_tested: int) -> None:
        """Warn at the start when ``n_permutations`` cannot give a significant test: the
        smallest p is 1 / (B + 1), and BH over m variables raises that of a variable
        that alone stands out to m / (B + 1)."""
        b, alpha = self.cfg.n_permutations, self.cfg.thresholds.alpha
        m = max(n_tested, 1)
        if not n_tested or m / (b + 1) <= alpha:
            return
        need = permutations_needed(m, alpha)
        if b == 0:
            why = "no permutation test is run"
        else:
            why = (
                f"a variable that alone stands out gets a p-value of at least {m}/{b + 1} = "
                f"{m / (b + 1):.3f} after BH over {m} variable(s), above alpha {alpha:g}"
            )
        reach = "is out of reach" if b == 0 or 1 / (b + 1) > alpha else "may be out of reach"
        self._warn(
            f"n_permutations={b}: {why}, so a verdict of uses (which needs a significant "
            f"test) {reach}; use n_permutations={need} or more"
        )

    # ------------------------------------------------------------------ run
    def run(self) -> AuditResult:
        try:
            # callers may sit in inference mode (Lightning's evaluation loop): the Captum
            # layer view needs autograd, so the analysis creates ordinary tensors
            with torch.inference_mode(False), torch.no_grad():
                return self._run()
        finally:
            # memory-mapped working copies go, also on errors and KeyboardInterrupt
            self.Z = self.shared = None
            if self._tmp is not None:
                self._tmp.cleanup()

    def _run(self) -> AuditResult:
        t0 = time.perf_counter()
        self._prepare()
        es = self.es
        for name in es.inferred_kinds:  # say what was guessed
            note, warn = inferred_kind_note(
                name, es.metadata[name], es.kinds[name], self.cfg.max_levels
            )
            if warn:
                self._warn(note)
            else:
                self.warnings.append(note)
        tasks: dict[str, dict] = {}
        names = list(es.metadata)
        if not names:
            self._warn("no metadata columns were given: the report holds the primary metric only")
        self._check_permutations(len(names))
        bar = tqdm(names, desc="wsca: auditing", disable=not self.cfg.progress, unit="task")
        for name in bar:
            bar.set_postfix_str(name)
            res = self._task(name, es.kinds[name], es.metadata[name])
            if res is not None:
                tasks[name] = res
        bar.close()

        for measure in get_measures():
            key = measure.report_key
            blocks = [t[key] for t in tasks.values() if key in t]
            if not measure.tested or not blocks:
                continue
            adj = stats.benjamini_hochberg([b["p_value"] for b in blocks])
            for block, p in zip(blocks, adj):
                block["p_value_raw"] = block["p_value"]
                block["p_value"] = p
        n_tested = sum(1 for t in tasks.values() if "usage" in t)
        for name, t in tasks.items():
            d = decide(
                name, t, self.cfg.thresholds, t["n_valid"], self.cfg.ci_level,
                n_permutations=self.cfg.n_permutations, n_tested=n_tested,
            )  # fmt: skip
            d, outputs = decide_outputs(
                name, t, self.cfg.thresholds, d,
                n_permutations=self.cfg.n_permutations, n_tested=n_tested,
            )  # fmt: skip
            if outputs is not None:
                t["by_output"] = outputs
            t["verdict"], t["reason"], t["samples_needed"] = d.verdict, d.reason, d.samples_needed
            if d.informative_needed is not None:
                t["informative_needed"] = d.informative_needed
        settings = self.cfg.to_dict()
        settings["device"] = str(self.device)
        settings["pca_components"] = int(self.shared.basis.shape[0])
        settings["pca_variance_explained"] = round(min(self.pca_share, 1.0), 6)
        settings["runtime_s"] = round(time.perf_counter() - t0, 3)
        settings["memory_mapped"] = self._tmp is not None
        # the ranks whose embeddings the audit read where they lay (1: one process)
        settings["ranks"] = 1 if self.shard is None else self.shard.world
        report = {
            "schema_version": SCHEMA_VERSION,
            "model": dict(self.model_info),
            "layer": es.layer,
            "n_samples": es.n_samples,
            "data": {"digest": es.digest, "sample_ids": es.sample_ids is not None},
            "embedding_dim": es.embedding_dim,
            "primary": {
                "task": self.task,
                "n_classes": primary.n_classes(self.task, int(self.W.shape[0])),
                "n_outputs": int(self.W.shape[0]),
                "head": es.primary.source,
                "fingerprint": es.primary.fingerprint,
                **self._primary_block(),
            },
            "tasks": tasks,
            **({"performance": perf} if (perf := self._performance()) is not None else {}),
            "settings": settings,
            "warnings": list(self.warnings),
        }
        return AuditResult(report)


def _hide_absurd_effect(task: dict) -> None:
    """An effect interval end beyond ±MAX_EFFECT_SD is a symptom of too few samples, not
    a size: it is not reported (a note says why) and the verdict does not rest on it."""
    eff = task.get("effect")
    if not eff:
        return
    ends = [eff.get(k) for k in ("value", "ci_low", "ci_high")]
    if any(v is not None and math.isfinite(v) and abs(v) > MAX_EFFECT_SD for v in ends):
        eff.update(value=None, ci_low=None, ci_high=None)
        for key in ("by_output", "target_units"):  # sizes from the same fits
            eff.pop(key, None)
        eff["note"] = (
            f"not reported: an interval end lay beyond ±{MAX_EFFECT_SD:g} sd, far beyond any "
            "real effect: a symptom of too few samples"
        )
