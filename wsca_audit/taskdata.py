"""What the measures of one metadata task read: :class:`TaskData`.

The audit-wide tensors (:class:`AuditTensors`) are prepared once by the pipeline
(:mod:`wsca_audit.analysis`); a :class:`TaskData` adds one task's coded variable, its
resampling plan (folds, bootstrap weights, permutations within label strata, halves)
and its heads, fitted on first use and shared between measures. A measure reads this
and nothing else (see :mod:`wsca_audit.measures`), and returns its blocks.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from functools import cached_property
from typing import Any

import numpy as np
import torch
from torch import Tensor

from . import resampling, stats
from .heads import BatchedLinearHead
from .levels import Levels
from .resampling import Bootstrap
from .shards import Shard, audit_wide, local


class Fitter:
    """Fits batches of auxiliary heads for one audit, chunked by the memory budget.

    Parameters
    ----------
    cfg : AuditSettings
        ``C``, ``alpha``, ``n_bootstrap`` and ``max_batch_mb`` are read.
    boot : Bootstrap
        The audit's bootstrap (:class:`~wsca_audit.resampling.Bootstrap`): each rank draws
        its own samples' weights.
    dtype, device
        Where the heads are solved.
    shard : Shard, optional
        The samples of a sharded audit that this rank holds (see :mod:`wsca_audit.shards`).
    """

    def __init__(
        self,
        cfg: Any,
        boot: Bootstrap,
        dtype: torch.dtype,
        device: torch.device,
        shard: Shard | None = None,
    ) -> None:
        self.cfg, self.boot, self.dtype, self.device = cfg, boot, dtype, device
        self.shard = shard

    def fit(self, loss, X, k, targets, weights, groups, init=None) -> BatchedLinearHead:
        """Fit a batch of heads, split into chunks that fit the memory budget. ``X`` holds
        this rank's rows (all of them in one process); ``targets`` and ``weights`` are
        the audit's (problems x N): each rank takes its own columns."""
        targets, weights = local(targets, self.shard, 1), local(weights, self.shard, 1)
        return self._fit(loss, X, k, targets, weights, groups, init)

    @cached_property
    def local_boot(self) -> Tensor:
        """The bootstrap weights of this rank's samples (resamples x rows), drawn here."""
        return self.boot.weights(None if self.shard is None else self.shard.index())

    def _fit(self, loss, X, k, targets, weights, groups, init=None) -> BatchedLinearHead:
        """:meth:`fit` with ``targets`` and ``weights`` already this rank's columns."""
        # about a dozen (N x k) working tensors per problem in the Newton solve; problems
        # are batched by the audit's N, so that each rank of a sharded audit solves the
        # batches one process would, with 1/k of its working memory
        n = X.shape[0] if self.shard is None else self.shard.n
        chunk = stats.chunk_rows(n * max(k, 1) * 12, self.cfg.max_batch_mb, X.element_size())
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
                shard=self.shard,
            )
            coefs.append(head.coef_)
            icpts.append(head.intercept_)
        head.coef_, head.intercept_ = torch.cat(coefs), torch.cat(icpts)
        return head

    def family(self, loss, X, k, target, valid, folds=None, perm_targets=None):
        """Point fit and folds from zero, then bootstrap refits (warm-started from the
        point fit) and permutation refits (from zero), each group one batched solve.

        ``target``, ``valid`` (N,) and ``folds`` (n_folds x N) are the audit's;
        ``perm_targets`` (n_permutations x rows) and ``X`` hold this rank's samples.

        Returns the head, with problems ordered [point, folds, bootstraps, permutations],
        and the sample weights of each problem (on this rank's samples).
        """
        # this rank's samples
        target, valid = local(target, self.shard), local(valid, self.shard)
        folds = None if folds is None else local(folds, self.shard, 1)
        n = target.shape[0]
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
        w2 = torch.cat([self.local_boot * v, v[None].expand(npm, n)])
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


@dataclass(eq=False, repr=False)
class AuditTensors:
    """The audit-wide tensors every task shares (prepared once by the pipeline).

    Attributes
    ----------
    Zs, Zws : Tensor (N, D)
        Standardised embeddings, and within-class centred then standardised ones.
    sd, sd_w : Tensor (D,)
        Their column scales.
    W, b : Tensor
        The primary head (n_outputs x D, n_outputs).
    basis : Tensor (k, D)
        PCA basis of the paper's ``wsc``.
    primary_vectors : Tensor
        The primary head's class vectors (see :func:`wsca_audit.primary.class_vectors`).
    contrasts : Tensor (C', D)
        Directions along which the prediction changes (:func:`wsca_audit.primary.contrasts`).
    contrast_scores, contrast_scores_w : Tensor (N, C')
        The embeddings along the contrasts, raw and within-class centred.
    boot : Tensor (n_bootstrap, N)
        Bootstrap count weights.
    strata : Tensor (N,)
        Label codes (what holding the target fixed means), on the CPU.
    cfg : AuditSettings
    dtype, device
    task : str
        The head's kind (``"binary"``, ``"multiclass"``, ``"multilabel"``, ``"regression"``).
    covariate : Tensor (N,) or None
        Held fixed beside the strata: a regression target, standardised and centred within
        its bins (``Zws`` and ``contrast_scores_w`` are residualised on it, the effect
        adjusts for it).
    contrast_labels : list of str
        The name of each contrast (:func:`wsca_audit.primary.contrast_names`).
    shard : Shard or None
        Which samples this rank holds (:mod:`wsca_audit.shards`). ``Zs`` and ``Zws`` are
        this rank's rows; every other per-sample tensor holds all N samples, in the
        audit's order, on every rank. None: one process holds everything.
    """

    Zs: Tensor
    Zws: Tensor
    sd: Tensor
    sd_w: Tensor
    W: Tensor
    b: Tensor
    basis: Tensor
    primary_vectors: Tensor
    contrasts: Tensor
    contrast_scores: Tensor
    contrast_scores_w: Tensor
    boot: Bootstrap
    strata: Tensor
    cfg: Any
    dtype: torch.dtype
    device: torch.device
    task: str = "binary"
    covariate: Tensor | None = None
    contrast_labels: list = field(default_factory=list)
    shard: Shard | None = None

    def local(self, t: Tensor, dim: int = 0) -> Tensor:
        """This rank's rows of a per-sample tensor of the audit (along ``dim``): those
        that ``Zs`` and ``Zws`` hold."""
        return local(t, self.shard, dim)

    def audit_wide(self, t: Tensor) -> Tensor:
        """A per-sample tensor computed from this rank's rows, as the audit's (N, ...)."""
        return audit_wide(t, self.shard)


@dataclass(eq=False, repr=False, kw_only=True)
class TaskData(AuditTensors):
    """What the measures of one metadata task share: the audit-wide tensors, the coded
    variable, its resampling plan and its heads.

    Heads are fitted on first use and shared: ``probe`` (the paper's softmax probe on
    standardised embeddings: point, folds, boots, perms) and ``usage_heads`` (on
    within-class centred embeddings: point, boots, and permutations when a measure
    selects among several columns). Build one with :meth:`for_task`.

    Attributes
    ----------
    name, kind : str
        The variable and its kind.
    values : numpy.ndarray
        Its raw values.
    coded : Levels
        Its coding (``codes`` -1 where missing, ``labels``).
    fitter : Fitter
        Fits the heads.
    warn_to : callable
        Files a warning in the report (see :meth:`warn`).

    In a sharded audit the permutations (``perm_idx``, ``perm_codes``: permutations x
    rows) and the usage heads' weights hold this rank's samples' columns, as ``Zs`` and
    ``Zws`` hold its rows; every other per-sample tensor holds all N samples.
    """

    name: str
    kind: str
    values: np.ndarray
    coded: Levels
    fitter: Fitter
    warn_to: Callable[[str], None]
    # derived in __post_init__
    levels: list[str] = field(init=False)
    k: int = field(init=False)
    loss: str = field(init=False)
    n: int = field(init=False)
    codes: Tensor = field(init=False)
    valid: Tensor = field(init=False)
    n_valid: int = field(init=False)
    v: Tensor = field(init=False)
    folds: Tensor = field(init=False)
    perm_idx: Tensor = field(init=False)
    perm_codes: Tensor = field(init=False)
    _fold_of: Tensor = field(init=False)

    @classmethod
    def for_task(cls, shared: AuditTensors, **task: Any) -> TaskData:
        """A task's data over ``shared`` (``task``: the fields :class:`TaskData` adds)."""
        return cls(**{f.name: getattr(shared, f.name) for f in fields(AuditTensors)}, **task)

    def __post_init__(self) -> None:
        coded = self.coded
        self.levels = coded.labels
        self.k = len(coded.labels)
        self.loss = "binary" if self.k == 2 else "multinomial"
        self.n = int(coded.codes.shape[0])
        self.codes = torch.as_tensor(np.maximum(coded.codes, 0), device=self.device)
        self.valid = torch.as_tensor(coded.valid, device=self.device)
        self.n_valid = int(coded.valid.sum())
        self.v = self.valid.to(self.dtype)
        # the resampling plan, keyed by (seed, this variable, sample id): see resampling.py
        self.folds = self._folds()
        # one set of permutations serves every null: this rank's columns of it
        local = None if self.shard is None else self.shard.index()
        perm = resampling.stratified_permutations(
            self.strata, self.valid, self.cfg.n_permutations, self.cfg.seed, self.boot.keys,
            stream=f"permutations/{self.name}", columns=local,
        )  # fmt: skip
        self.perm_idx = perm.to(self.device)
        self.perm_codes = self.codes[self.perm_idx]

    # ------------------------------------------------------------------ layout of blocks
    @property
    def contrast_rows(self) -> list[str]:
        """Row names of per-class matrices over the primary contrasts."""
        if self.contrast_labels:
            return list(self.contrast_labels)
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
        self.warn_to(message)

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
        class still lands in both halves). Keyed by sample (stream ``halves/<name>``)."""
        valid, codes = self.valid.cpu(), self.codes.cpu()
        n_strata = int(self.strata.max()) + 1 if self.strata.numel() else 1
        rank = torch.empty(self.n, dtype=torch.long)
        rank[resampling.keyed_order(self.boot.keys, self.cfg.seed, f"halves/{self.name}")] = (
            torch.arange(self.n)
        )
        key = (codes * n_strata + self.strata) * self.n + rank
        idx = torch.nonzero(valid).flatten()
        idx = idx[torch.argsort(key[idx])]
        level = codes[idx]
        first = torch.searchsorted(level, torch.arange(self.k))  # where each level starts
        pos = torch.arange(idx.numel()) - first[level]  # place within the level
        start = (
            resampling.uniforms(  # per level, keyed by the level's index
                self.cfg.seed, f"halves-start/{self.name}", torch.zeros(1), torch.arange(self.k)
            )[0]
            .lt(0.5)
            .long()
        )
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
        head, _ = self.fitter.family(
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
            return self.fitter.family(
                self.loss, self.Zws, self.k, self.codes, self.valid, perm_targets=perm
            )
        target = self.center(self.target_std[:, None])[:, 0]
        # permuted within label strata, whose means it keeps: the centred value moves along
        perm = target[self.perm_idx] if npm else None  # this rank's columns
        return self.fitter.family("squared", self.Zws, 1, target, self.valid, perm_targets=perm)

    def fit(self, loss, X, k, targets, weights, groups, init=None) -> BatchedLinearHead:
        """A batch of heads (see :class:`~wsca_audit.BatchedLinearHead`), memory-chunked."""
        return self.fitter.fit(loss, X, k, targets, weights, groups, init)

    # ------------------------------------------------------------------ cross-fitting
    def _folds(self) -> Tensor:
        """Stratified fold train-masks (n_folds x n) over the valid samples."""
        n, nf = self.n, self.cfg.n_folds
        fold_of = torch.full((n,), -1, dtype=torch.long)
        order = resampling.keyed_order(self.boot.keys, self.cfg.seed, f"folds/{self.name}")
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
        (the fold heads are problems ``first_fold .. first_fold + n_folds`` of ``head``;
        ``X`` holds this rank's rows, the scores are the audit's)."""
        sl = slice(first_fold, first_fold + self.cfg.n_folds)
        # score only the fold heads, not every bootstrap/permutation refit
        scores = torch.einsum("nd,fkd->fnk", X, head.coef_[sl]) + head.intercept_[sl, None, :]
        idx = self.local(self._fold_of).clamp_min(0)
        return self.audit_wide(scores[idx, torch.arange(X.shape[0], device=self.device)])

    # ------------------------------------------------------------------ strata
    def class_means(self, M: Tensor) -> Tensor:
        """Per-sample mean of M's rows over the valid samples of the sample's label."""
        return stats.stratum_means(M, self.strata, self.valid)

    def center(self, M: Tensor) -> Tensor:
        """M centred within each label over valid samples (zero where invalid)."""
        return stats.center_within(M, self.strata, self.valid)

    def chunk_rows(self, row_elements: int, itemsize: int = 4) -> int:
        """Rows (or problems) per chunk of a step whose row holds ``row_elements`` values
        of ``itemsize`` bytes, under the audit's memory budget (``max_batch_mb``)."""
        return stats.chunk_rows(row_elements, self.cfg.max_batch_mb, itemsize)

    # ------------------------------------------------------------------ deprecated names
    @property
    def primary_logits(self) -> Tensor:
        """Deprecated: the contrasts' scores are :attr:`contrast_scores`."""
        warnings.warn("TaskData.primary_logits is contrast_scores", DeprecationWarning, 2)
        return self.contrast_scores

    @property
    def primary_logits_w(self) -> Tensor:
        """Deprecated: :attr:`contrast_scores_w`."""
        warnings.warn("TaskData.primary_logits_w is contrast_scores_w", DeprecationWarning, 2)
        return self.contrast_scores_w
