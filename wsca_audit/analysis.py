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
from . import primary, stats
from .decision import decide
from .embeddings import EmbeddingSet, inferred_kind_note, missing_mask
from .errors import AuditError, AuditWarning
from .heads import BatchedLinearHead
from .measures import get_measures
from .performance import subgroup_performance
from .primary import PrimaryHead
from .report import SCHEMA_VERSION, AuditResult
from .store import SPILL_PREFIX
from .verdict import Thresholds

_MIN_LEVEL_COUNT = 5


@dataclass
class AuditSettings:
    """Every knob of an analysis; all of it is written to the report's ``settings``."""

    n_bootstrap: int = 200
    n_permutations: int = 200
    n_folds: int = 5
    seed: int = 0
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
    max_batch_mb: float = 1024.0
    progress: bool = True
    deconfounding: str = "within_class_centering"
    layer_attribution: bool = True
    max_memory_mb: float | None = None
    max_levels: int = 50
    performance_pairs: list | None = None

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
        for pair in self.performance_pairs or []:
            if not (isinstance(pair, (tuple, list)) and len(pair) == 2):
                raise AuditError(f"performance_pairs holds pairs of metadata names; got {pair!r}")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["thresholds"] = self.thresholds.to_dict()
        d.pop("progress")
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
    targets : array-like of shape (n_samples,), optional
        Primary class labels.
    metadata : mapping of str to array-like
        Metadata columns to audit.
    primary_weight : array-like of shape (n_outputs, embedding_dim)
        The model's final linear layer (``logits = z @ W.T + b``).
    primary_bias : array-like of shape (n_outputs,), optional
    kinds : mapping of str to {"categorical", "continuous"}, optional
    sample_ids : array-like, optional
    drop_nonfinite : bool, default=False
    **settings
        Fields of :class:`AuditSettings`: ``n_bootstrap=200``, ``n_permutations=200``,
        ``seed=0``, ``C=1.0`` (logistic heads), ``alpha=1.0`` (ridge heads),
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
    cfg.validate()
    if es.primary is None:
        raise AuditError(
            "no primary head: pass primary_weight= (the model's final linear layer), or "
            "collect with an Auditor whose model ends in an nn.Linear"
        )
    return _Analysis(es, cfg, model_info or {}).run()


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
        self.gen = torch.Generator().manual_seed(cfg.seed)
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

        # primary labels: class indices for the metric, strata for centring and permutations
        self.labels = None
        if es.targets is not None:
            codes, self.label_values = primary.label_codes(es.targets)
            self.labels = torch.as_tensor(codes, device=self.device)
            if len(self.label_values) < 2:
                self._warn(
                    "the targets hold a single class: the primary metric is undefined and "
                    "usage is not deconfounded from the label"
                )
        else:
            self._warn(
                "no targets were recorded: usage is not deconfounded from the primary label "
                "and the primary metric is not reported"
            )
        strata = self.labels if self.labels is not None else torch.zeros(n, dtype=torch.long)
        self.strata = strata.cpu()

        # standardised embeddings (probe design) and within-class centred ones (usage design)
        self.mu = Z.mean(0)
        self.sd = _safe_std(Z)
        means = self._class_means_of(Z)  # (n_classes, D)
        strata = self.strata.to(self.device)
        # the two working copies of Z, filled chunk by chunk (memory-mapped when spilling)
        self.Zs, Zw = self._big(Z.shape), self._big(Z.shape)
        for sl in _chunks(n):
            self.Zs[sl] = (Z[sl] - self.mu) / self.sd
            Zw[sl] = Z[sl] - means[strata[sl]]
        self.sd_w = _safe_std(Zw)

        self.contrasts = primary.contrasts(self.W)
        self.primary_logits_w = Zw @ self.contrasts.T  # (N, C') usage's primary side
        # the contrasts themselves (the effect's outcome), by chunks of Z
        self.primary_logits = torch.cat([self._t(Z[sl]) @ self.contrasts.T for sl in _chunks(n)])
        for sl in _chunks(n):  # Zw becomes Zws in place: one copy fewer
            Zw[sl] /= self.sd_w
        self.Zws = Zw
        self.primary_vectors = primary.class_vectors(self.W, cfg.center_classes)
        self.basis, self.pca_share = corr.pca_basis(Z, cfg.pca_variance, cfg.pca_min_components)

        self.boot = stats.bootstrap_counts(n, cfg.n_bootstrap, self.gen).to(
            device=self.device, dtype=self.dtype
        )
        if 0 < cfg.n_bootstrap < 50:
            self._warn(f"n_bootstrap={cfg.n_bootstrap} gives rough confidence intervals")

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

    def _class_means_of(self, Z: Tensor) -> Tensor:
        """Mean embedding of each label stratum, (n_strata, D), by chunks."""
        strata = self.strata.to(self.device)
        k = int(strata.max()) + 1 if strata.numel() else 1
        sums = torch.zeros(k, Z.shape[1], dtype=self.dtype, device=self.device)
        for sl in _chunks(Z.shape[0]):
            # a one-hot product, not index_add_ (atomics: nondeterministic on CUDA)
            onehot = torch.nn.functional.one_hot(strata[sl], k).to(self.dtype)
            sums += onehot.T @ Z[sl].to(device=self.device, dtype=self.dtype)
        counts = torch.bincount(strata, minlength=k).clamp_min(1).to(self.dtype)
        return sums / counts[:, None]

    # ------------------------------------------------------------------ primary metric
    def _primary_metric(self) -> dict:
        if self.labels is None:
            return {"name": None, "value": None}
        ones = torch.ones(1, self.es.n_samples, dtype=self.dtype, device=self.device)
        weights = torch.cat([ones, self.boot]) if self.cfg.n_bootstrap else ones
        block, note = primary.headline(
            self._logits, self.labels, len(self.label_values), weights,
            self.cfg.n_bootstrap, self.cfg.ci_level,
        )  # fmt: skip
        if note:
            self._warn(note)
        return block

    @cached_property
    def _logits(self) -> Tensor:
        """The primary head's logits (N x n_outputs), by chunks of Z (computed once)."""
        return torch.cat(
            [self._t(self.Z[sl]) @ self.W.T + self.b for sl in _chunks(self.es.n_samples)]
        )

    def _performance(self) -> dict | None:
        """Primary metric by subgroup of every metadata variable (see performance.py)."""
        if self.labels is None or len(self.label_values) < 2 or not self.es.metadata:
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
        )

    # ------------------------------------------------------------------ head fitting
    def _fit(self, loss, X, k, targets, weights, groups, init=None):
        """Fit a batch of heads, split into chunks that fit the memory budget."""
        n = X.shape[0]
        per_problem = n * max(k, 1) * X.element_size() * 12
        chunk = max(1, int(self.cfg.max_batch_mb * 2**20 // per_problem))
        reg = 1.0 / self.cfg.C if loss != "squared" else self.cfg.alpha
        coefs, icpts = [], []
        for start in range(0, targets.shape[0], chunk):
            sl = slice(start, start + chunk)
            head = BatchedLinearHead(loss, reg=reg, n_classes=k if loss == "multinomial" else None)
            head.fit(
                X,
                targets[sl],
                weights[sl],
                groups=groups[sl],
                init=None if init is None else (init[0][sl], init[1][sl]),
            )
            coefs.append(head.coef_)
            icpts.append(head.intercept_)
        head.coef_, head.intercept_ = torch.cat(coefs), torch.cat(icpts)
        return head

    def _family(self, loss, X, k, target, valid, folds=None, perm_targets=None):
        """Point fit and folds from zero, then bootstrap refits (warm-started from the
        point fit) and permutation refits (from zero), each group one batched solve.

        Returns the head, with problems ordered [point, folds, bootstraps, permutations],
        and the sample weights of each problem.
        """
        n = X.shape[0]
        v = valid.to(self.dtype)
        ttype = torch.long if loss != "squared" else self.dtype
        t = target.to(ttype)
        n_f = 0 if folds is None else folds.shape[0]
        w1 = torch.cat([v[None], folds * v]) if n_f else v[None]
        first = self._fit(
            loss, X, k, t[None].expand(1 + n_f, n), w1, torch.zeros(1 + n_f, dtype=torch.long)
        )

        nb = self.cfg.n_bootstrap
        npm = 0 if perm_targets is None else perm_targets.shape[0]
        if nb + npm == 0:
            return first, w1
        w2 = torch.cat([self.boot * v, v[None].expand(npm, n)])
        t2 = t[None].expand(nb, n)
        if npm:
            t2 = torch.cat([t2, perm_targets.to(device=self.device, dtype=ttype)])
        groups = torch.cat([torch.zeros(nb, dtype=torch.long), torch.ones(npm, dtype=torch.long)])
        zeros_c, zeros_i = torch.zeros_like(first.coef_[:1]), torch.zeros_like(first.intercept_[:1])
        init = (
            torch.cat([first.coef_[:1].expand(nb, -1, -1), zeros_c.expand(npm, -1, -1)]),
            torch.cat([first.intercept_[:1].expand(nb, -1), zeros_i.expand(npm, -1)]),
        )
        second = self._fit(loss, X, k, t2, w2, groups, init=init)
        first.coef_ = torch.cat([first.coef_, second.coef_])
        first.intercept_ = torch.cat([first.intercept_, second.intercept_])
        return first, torch.cat([w1, w2])

    # ------------------------------------------------------------------ one task
    def _levels(self, name: str, kind: str, values: np.ndarray) -> _Levels | None:
        """Code a column as class indices (continuous: the paper's equal-width bins of
        its range), with the warnings a reader needs; None when the task is skipped."""
        cfg, n = self.cfg, self.es.n_samples
        miss = missing_mask(values)
        n_valid = int((~miss).sum())
        if miss.any():
            self._warn(f"{name}: {int(miss.sum())} missing values were masked")
        codes = np.zeros(n, dtype=np.int64)
        if kind == "categorical":
            distinct, codes[~miss] = np.unique(values[~miss].astype(str), return_inverse=True)
            labels = [str(v) for v in distinct]
        else:
            x = values.astype(np.float64)
            distinct = np.unique(x[~miss])
            lo, hi = (float(distinct.min()), float(distinct.max())) if len(distinct) else (0, 0)
            edges = np.linspace(lo, hi, cfg.n_bins + 1)
            bins = np.clip(
                np.searchsorted(edges, np.nan_to_num(x), side="right") - 1, 0, cfg.n_bins - 1
            )
            used, codes[~miss] = np.unique(bins[~miss], return_inverse=True)
            labels = [f"[{edges[b]:.4g}, {edges[b + 1]:.4g}]" for b in used]
        if len(distinct) < 2:
            self._warn(f"{name}: only one distinct value among {n_valid} samples; task skipped")
            return None
        if kind == "categorical" and len(distinct) > cfg.max_levels:
            self._warn(
                f"{name}: {len(distinct)} distinct values among {n_valid} samples (more than "
                f"max_levels={cfg.max_levels}): an identifier or a continuous variable? "
                "Declare it continuous (kinds=...) or group its values; task skipped"
            )
            return None
        counts = np.bincount(codes[~miss], minlength=len(labels))
        if kind == "categorical" and counts.min() < _MIN_LEVEL_COUNT:
            rare = [labels[i] for i in np.flatnonzero(counts < _MIN_LEVEL_COUNT)]
            shown = ", ".join(repr(r) for r in rare[:5]) + (
                f" and {len(rare) - 5} more" if len(rare) > 5 else ""
            )
            self._warn(
                f"{name}: level(s) {shown} have fewer than {_MIN_LEVEL_COUNT} samples; "
                "estimates for them are unstable"
            )
        return _Levels(codes, ~miss, labels)

    def _task(self, name: str, kind: str, values: np.ndarray) -> dict | None:
        """Every registered measure of one task, in report order (the verdict comes later)."""
        levels = self._levels(name, kind, values)
        if levels is None:
            return None
        task = TaskData(self, name, kind, values, levels)
        out: dict = {"kind": kind, "n_valid": task.n_valid, "levels": levels.labels}
        for measure in get_measures():
            if measure.enabled(self.cfg):
                block = measure.compute(task)
                if block is not None:
                    out[measure.report_key] = block
        out.update(verdict=None, reason=None, samples_needed=None)
        out["per_class"] = task.per_class
        return out

    # ------------------------------------------------------------------ run
    def run(self) -> AuditResult:
        try:
            # callers may sit in inference mode (Lightning's evaluation loop): the Captum
            # layer view needs autograd, so the analysis creates ordinary tensors
            with torch.inference_mode(False), torch.no_grad():
                return self._run()
        finally:
            # memory-mapped working copies go, also on errors and KeyboardInterrupt
            self.Z = self.Zs = self.Zws = None
            if self._tmp is not None:
                self._tmp.cleanup()

    def _run(self) -> AuditResult:
        t0 = time.perf_counter()
        self._prepare()
        es = self.es
        for name in getattr(es, "inferred_kinds", []):  # say what was guessed
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
        for name, t in tasks.items():
            d = decide(name, t, self.cfg.thresholds, t["n_valid"])
            t["verdict"], t["reason"], t["samples_needed"] = d.verdict, d.reason, d.samples_needed
            if d.informative_needed is not None:
                t["informative_needed"] = d.informative_needed
        settings = self.cfg.to_dict()
        settings["device"] = str(self.device)
        settings["pca_components"] = int(self.basis.shape[0])
        settings["pca_variance_explained"] = round(min(self.pca_share, 1.0), 6)
        settings["runtime_s"] = round(time.perf_counter() - t0, 3)
        settings["memory_mapped"] = self._tmp is not None
        report = {
            "schema_version": SCHEMA_VERSION,
            "model": dict(self.model_info),
            "layer": es.layer,
            "n_samples": es.n_samples,
            "embedding_dim": es.embedding_dim,
            "primary": {
                "n_classes": int(self.W.shape[0]) if self.W.shape[0] > 1 else 2,
                "n_outputs": int(self.W.shape[0]),
                "head": es.primary.source,
                "metric": self._primary_metric(),
            },
            "tasks": tasks,
            **({"performance": perf} if (perf := self._performance()) is not None else {}),
            "settings": settings,
            "warnings": list(self.warnings),
        }
        return AuditResult(report)


@dataclass
class _Levels:
    codes: np.ndarray  # class index per sample (0 where missing)
    valid: np.ndarray  # bool: value present
    labels: list[str]  # level names (continuous: bin intervals)


class TaskData:
    """What the measures of one metadata task share: the coded variable, its resampling
    plan (folds, bootstrap weights, within-label permutations) and the fitted heads.

    Measures read it and nothing else (see :mod:`wsca_audit.measures`). Heads are fitted
    on first use and shared: ``probe`` (the paper's softmax probe on standardised
    embeddings: point, folds, bootstraps, permutations) and ``usage_heads`` (on
    within-class centred embeddings: point, bootstraps, and permutations when a measure
    selects among several columns). The audit-wide tensors are
    available as attributes: ``Zs`` (standardised embeddings), ``Zws`` (within-class
    centred, standardised), ``sd``, ``sd_w``, ``W``, ``b`` (primary head), ``basis``
    (PCA), ``primary_vectors``, ``contrasts``, ``primary_logits`` (the primary logit
    contrasts, N x C'), ``primary_logits_w`` (the same within-class centred), ``boot``
    (bootstrap weights), ``strata`` (label codes), ``cfg``, ``dtype``, ``device``.
    """

    _SHARED = (
        "Zs", "Zws", "sd", "sd_w", "W", "b", "basis", "primary_vectors", "contrasts",
        "primary_logits_w", "primary_logits", "boot", "strata", "cfg", "dtype", "device",
    )  # fmt: skip

    def __init__(self, run: _Analysis, name: str, kind: str, values: np.ndarray, levels) -> None:
        for attr in self._SHARED:
            setattr(self, attr, getattr(run, attr))
        self._run = run
        self.name, self.kind, self.values = name, kind, values
        self.levels: list[str] = levels.labels
        self.k = len(levels.labels)
        self.loss = "binary" if self.k == 2 else "multinomial"
        self.n = int(levels.codes.shape[0])
        self.codes = torch.as_tensor(levels.codes, device=self.device)
        self.valid = torch.as_tensor(levels.valid, device=self.device)
        self.n_valid = int(levels.valid.sum())
        self.v = self.valid.to(self.dtype)
        self.per_class: dict[str, dict] = {}
        # the resampling plan, drawn in this order from the audit's generator
        self.folds = self._folds()
        perm = stats.stratified_permutations(
            self.strata, self.valid.cpu(), self.cfg.n_permutations, run.gen
        )
        self.perm_idx = perm.to(self.device)  # one set of permutations serves every null
        self.perm_codes = self.codes[self.perm_idx]

    # ------------------------------------------------------------------ layout of blocks
    @property
    def contrast_rows(self) -> list[str]:
        """Row names of per-class matrices over the primary contrasts."""
        if self.W.shape[0] == 2:
            return ["1-0"]
        return [str(c) for c in range(self.contrasts.shape[0])]

    @property
    def level_cols(self) -> list[str]:
        """Column names of per-class matrices over the usage head's outputs."""
        if self.kind == "continuous":
            return ["value"]
        return self.levels[1:] if self.k == 2 else self.levels

    def warn(self, message: str) -> None:
        """A warning that changes a result: raised, and kept in the report's warnings."""
        self._run._warn(message)

    @staticmethod
    def rows(m: Tensor) -> list[list[float]]:
        return [[round(float(x), 6) for x in row] for row in m]

    def ci_block(self, values: Tensor) -> dict:
        return stats.ci_block(values, self.cfg.n_bootstrap, self.cfg.ci_level)

    def ci_block_with_p(self, values: Tensor, null: Tensor, p: float) -> dict:
        return stats.ci_block_with_p(values, self.cfg.n_bootstrap, null, p, self.cfg.ci_level)

    @property
    def selects(self) -> bool:
        """Whether a measure picks the largest of several contrasts or level columns (a
        categorical variable with three or more levels, or a head with three or more
        classes): such a choice is made on one half of the samples and measured on the
        other, or calibrated by the permutation null (see docs/method.md)."""
        return (self.kind == "categorical" and self.k >= 3) or self.contrasts.shape[0] >= 2

    @cached_property
    def halves(self) -> Tensor:
        """Two halves of the valid samples (N,): 0 or 1, and -1 where the value is
        missing. Samples are ordered by level, then label, then at random, and alternate
        between the halves along that order from a random start per level: each level,
        and each label within it, splits as evenly as it can (a level seen once per
        class still lands in both halves). Drawn from a generator of its own (seeded by
        ``seed``), so that it changes no other random draw of the audit."""
        gen = torch.Generator().manual_seed(self.cfg.seed)
        valid, codes = self.valid.cpu(), self.codes.cpu()
        n_strata = int(self.strata.max()) + 1 if self.strata.numel() else 1
        rank = torch.empty(self.n, dtype=torch.long)
        rank[torch.randperm(self.n, generator=gen)] = torch.arange(self.n)
        key = (codes * n_strata + self.strata) * self.n + rank
        idx = torch.nonzero(valid).flatten()
        idx = idx[torch.argsort(key[idx])]
        level = codes[idx]
        first = torch.searchsorted(level, torch.arange(self.k))  # where each level starts
        pos = torch.arange(idx.numel()) - first[level]  # place within the level
        start = torch.randint(0, 2, (self.k,), generator=gen)
        out = torch.full((self.n,), -1, dtype=torch.long)
        out[idx] = (pos + start[level]) % 2
        return out.to(self.device)

    @cached_property
    def level_counts(self) -> Tensor:
        """Valid samples per level (K,)."""
        return torch.bincount(self.codes[self.valid], minlength=self.k)

    @cached_property
    def level_components(self) -> Tensor:
        """Component of each level (K,) in the graph "the two levels meet in some class":
        level effects are identified within class only, so they are compared within a
        component (levels nested in the classes fall into separate ones)."""
        present = torch.zeros(int(self.strata.max()) + 1, self.k, dtype=torch.bool)
        present[self.strata[self.valid.cpu()], self.codes.cpu()[self.valid.cpu()]] = True
        linked = (present.T.float() @ present.float()) > 0
        comp = torch.arange(self.k)
        for _ in range(self.k):  # label propagation: the smallest index in each component
            comp = torch.where(linked, comp[None, :], self.k).amin(1)
        return comp.to(self.device)

    @cached_property
    def strata_onehot(self) -> Tensor:
        """The label strata as one-hot columns (N x n_strata), for within-class sums."""
        return torch.nn.functional.one_hot(self.strata.to(self.device)).to(self.dtype)

    @cached_property
    def n_informative(self) -> int:
        """Valid samples whose level is not the most common one of their class: the
        samples that tell the variable's effect apart from the label's."""
        codes, strata = self.codes.cpu()[self.valid.cpu()], self.strata[self.valid.cpu()]
        counts = torch.zeros(int(strata.max()) + 1 if strata.numel() else 1, self.k)
        counts.index_put_((strata, codes), torch.ones(len(codes)), accumulate=True)
        return int(counts.sum() - counts.max(1).values.sum())

    # ------------------------------------------------------------------ targets
    @cached_property
    def target_std(self) -> Tensor:
        """A continuous variable standardised over its valid samples (0 where missing)."""
        x = torch.as_tensor(np.nan_to_num(self.values.astype(np.float64)), device=self.device)
        valid = self.valid
        t = torch.where(valid, (x - x[valid].mean()) / x[valid].std().clamp_min(1e-12), 0.0)
        return t.to(self.dtype)

    @cached_property
    def target_matrix(self) -> Tensor:
        """The variable as usage reads it: one-hot levels (binary: the second level's
        column), or the standardised value, (N, K)."""
        if self.kind == "continuous":
            return self.target_std[:, None]
        onehot = torch.nn.functional.one_hot(self.codes, self.k).to(self.dtype)
        return onehot[:, 1:] if self.k == 2 else onehot

    # ------------------------------------------------------------------ heads
    @cached_property
    def probe(self) -> BatchedLinearHead:
        """The paper's probe on standardised embeddings: [point, folds, boots, perms]."""
        head, _ = self._run._family(
            self.loss, self.Zs, self.k, self.codes, self.valid, self.folds, self.perm_codes
        )
        return head

    @cached_property
    def usage_heads(self) -> tuple[BatchedLinearHead, Tensor]:
        """Heads on within-class centred embeddings, [point, boots] and, when a measure
        selects (see :attr:`selects`), permutation refits for its chance level; and the
        weights of each problem."""
        npm = self.cfg.n_permutations if self.selects else 0
        if self.kind == "categorical":
            perm = self.perm_codes if npm else None
            return self._run._family(
                self.loss, self.Zws, self.k, self.codes, self.valid, perm_targets=perm
            )
        target = self.center(self.target_std[:, None])[:, 0]
        # permuted within label strata, whose means it keeps: the centred value moves along
        perm = target[self.perm_idx] if npm else None
        return self._run._family("squared", self.Zws, 1, target, self.valid, perm_targets=perm)

    def fit(self, loss, X, k, targets, weights, groups, init=None) -> BatchedLinearHead:
        """A batch of heads (see :class:`~wsca_audit.BatchedLinearHead`), memory-chunked."""
        return self._run._fit(loss, X, k, targets, weights, groups, init)

    # ------------------------------------------------------------------ cross-fitting
    def _folds(self) -> Tensor:
        """Stratified fold train-masks (n_folds x n) over the valid samples."""
        n, nf = self.n, self.cfg.n_folds
        fold_of = torch.full((n,), -1, dtype=torch.long)
        order = torch.randperm(n, generator=self._run.gen)
        c = self.codes.cpu()[order]
        ok = self.valid.cpu()[order]
        for level in torch.unique(c[ok]).tolist():
            idx = order[ok & (c == level)]
            fold_of[idx] = torch.arange(idx.numel()) % nf
        train = torch.stack([(fold_of != f) & (fold_of >= 0) for f in range(nf)])
        self._fold_of = fold_of.to(self.device)
        return train.to(device=self.device, dtype=self.dtype)

    def held_out(self, head: BatchedLinearHead, first_fold: int, X: Tensor) -> Tensor:
        """Held-out scores (N x K): each sample scored by the fold head that did not see it
        (the fold heads are problems ``first_fold .. first_fold + n_folds`` of ``head``)."""
        sl = slice(first_fold, first_fold + self.cfg.n_folds)
        # score only the fold heads, not every bootstrap/permutation refit
        scores = torch.einsum("nd,fkd->fnk", X, head.coef_[sl]) + head.intercept_[sl, None, :]
        idx = self._fold_of.clamp_min(0)
        return scores[idx, torch.arange(X.shape[0], device=self.device)]

    # ------------------------------------------------------------------ strata
    def class_means(self, M: Tensor) -> Tensor:
        """Per-sample mean of M's rows over the valid samples of the sample's label."""
        out = torch.zeros_like(M)
        for s in torch.unique(self.strata).tolist():
            in_s = (self.strata == s).to(self.device)
            m = in_s & self.valid
            if m.any():
                out[in_s] = M[m].mean(0)
        return out

    def center(self, M: Tensor) -> Tensor:
        """M centred within each label over valid samples (zero where invalid)."""
        return torch.where(self.valid[:, None], M - self.class_means(M), 0.0)


def _chunks(n: int, size: int = 65536):
    return [slice(i, i + size) for i in range(0, n, size)]


def _safe_std(Z: Tensor) -> Tensor:
    """Column standard deviation (unbiased), by chunks, 1 where a column is constant."""
    n = Z.shape[0]
    mean = torch.zeros(Z.shape[1], dtype=torch.float64, device=Z.device)
    for sl in _chunks(n):
        mean += Z[sl].to(torch.float64).sum(0)
    mean /= max(n, 1)
    ss = torch.zeros_like(mean)
    amax = torch.zeros_like(mean)
    for sl in _chunks(n):
        c = Z[sl].to(torch.float64)
        ss += ((c - mean) ** 2).sum(0)
        amax = torch.maximum(amax, c.abs().amax(0))
    sd = (ss / max(n - 1, 1)).sqrt()
    sd = torch.where(sd > 1e-12 * (1 + amax), sd, torch.ones_like(sd))
    return sd.to(Z.dtype)
