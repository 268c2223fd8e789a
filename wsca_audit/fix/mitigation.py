"""From finding to fix: remove a variable from the model's head, then audit it again.

:func:`mitigate` works on what the auditor already holds (embeddings, labels, metadata,
the head), in five steps:

1. split it into a fitting part and a held-out part (stratified by label x level,
   seeded; samples without a value of the variable are all held out);
2. fit the new head on the fitting part, per method (:func:`fit_new_head`);
3. audit the original and the patched head on the held-out part, with the same
   resamples, so that the "after" numbers are not fitted to themselves, and the paired
   cost in the primary metric;
4. patch a deep copy of the model with the new head (:mod:`.patching`);
5. gather it all in a :class:`~wsca_audit.fix.result.Mitigation`.

Methods:

- ``"erase"``: a class-conditional LEACE eraser of the variable (:mod:`.erasure`), folded
  into the head: ``W (I - P)``, ``b + W P mu``;
- ``"dfr"``: the head refitted on group-balanced subsamples (label x level), L2 strength
  chosen by worst-group accuracy (:mod:`.reweighting`); a continuous variable is binned
  in quartiles first;
- ``"both"``: erase, then refit the erased embeddings.

The patched model is a deep copy with the new weights in its head; the original is not
touched. It is patched only where the embedding is the head's own input (``layer="auto"``
or the head named as the layer); otherwise ``Mitigation.model`` is None and
``Mitigation.head_`` holds the new head, with a warning.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ..analysis import analyze_embeddings
from ..collect import Auditor
from ..embeddings import EmbeddingSet, missing_mask
from ..errors import AuditError, AuditWarning
from ..performance import group_codes
from ..primary import PrimaryHead, class_strata, label_codes, metric_values, resolve_task
from ..report import AuditResult
from ..resampling import bootstrap_counts
from ..stats import ci_block
from ..verdict import USES
from .erasure import LinearEraser, concept_matrix, fit_eraser
from .patching import linear_head, load_head, patch_model
from .result import Mitigation
from .reweighting import fit_balanced_head
from .sampling import stratified_split

__all__ = [
    "DEFAULT_METHOD",
    "METHODS",
    "FitData",
    "Mitigation",
    "NewHead",
    "audit_both",
    "fit_new_head",
    "load_head",
    "mitigate",
    "split_parts",
]

METHODS = ("erase", "dfr", "both")
DEFAULT_METHOD = "erase"  # measured best on the benchmarks (docs/mitigation.md)
MIN_PART = 10  # samples needed in each of the fitting and the held-out part


@dataclass(frozen=True)
class FitData:
    """What the new head is fitted on: the fitting part of the audit set.

    Attributes
    ----------
    embeddings : numpy.ndarray of float64, shape (n_fit, D)
    labels : numpy.ndarray of int64, shape (n_fit,)
        Class indices of the head's outputs.
    values : numpy.ndarray of shape (n_fit,)
        The variable (no missing value).
    kind : {"categorical", "continuous"}
    groups : numpy.ndarray of int64, shape (n_fit,)
        Label x level group per sample (continuous: quartile bins), for DFR.
    level_names : list of str
        The variable's levels (continuous: its quartile bins).
    group_names : list of str
        Name of every possible group code, ``"label=<label>, <variable>=<level>"``.
    """

    embeddings: np.ndarray
    labels: np.ndarray
    values: np.ndarray
    kind: str
    groups: np.ndarray
    level_names: list[str]
    group_names: list[str]

    @classmethod
    def of(
        cls,
        es: EmbeddingSet,
        variable: str,
        idx: np.ndarray,
        labels: tuple[np.ndarray, np.ndarray],
        levels: tuple[np.ndarray, list[str]],
    ) -> FitData:
        """The samples ``idx`` of ``es``; ``labels``: the head's class index per sample
        and the classes present (:func:`~wsca_audit.primary.label_codes`); ``levels``:
        level code per sample and the levels (:func:`~wsca_audit.performance.group_codes`)."""
        (index, classes), (lvl, names) = labels, levels
        y_codes = class_strata(index, classes)
        return cls(
            embeddings=es.embeddings[idx].astype(np.float64),
            labels=index[idx],
            values=es.metadata[variable][idx],
            kind=es.kinds[variable],
            groups=y_codes[idx] * len(names) + lvl[idx],
            level_names=names,
            group_names=[f"label={lab}, {variable}={n}" for lab in classes for n in names],
        )


@dataclass(frozen=True)
class NewHead:
    """The fitted head, folded into one linear map, and what the fit chose.

    Attributes
    ----------
    weight : Tensor of float64, shape (n_outputs, D)
    bias : Tensor of float64, shape (n_outputs,)
    eraser : LinearEraser or None
    info : dict
        ``erased_rank``; ``C`` and ``worst_group_accuracy_by_C`` for DFR.
    notes : list of str
        Warnings for the user (a continuous variable balanced over quartile bins).
    """

    weight: Tensor
    bias: Tensor
    eraser: LinearEraser | None = None
    info: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------- inputs
def _embedding_set(auditor: Auditor | EmbeddingSet) -> tuple[EmbeddingSet, dict]:
    """The audit set and the model's description from an Auditor or an EmbeddingSet."""
    if isinstance(auditor, Auditor):
        return auditor.embeddings(), auditor.model_info()
    if isinstance(auditor, EmbeddingSet):
        return auditor, {}
    raise AuditError(
        f"auditor must be a wsca_audit.Auditor or EmbeddingSet; got {type(auditor).__name__}"
    )


def _check(
    es: EmbeddingSet, variable: str, classes=None, task: str | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Refuse what cannot be mitigated; the head's class index per sample and the
    classes present (:func:`~wsca_audit.primary.label_codes`: matched by value)."""
    if variable not in es.metadata:
        raise AuditError(
            f"variable {variable!r} was not audited; the auditor recorded {sorted(es.metadata)}"
        )
    if es.primary is None or es.targets is None:
        raise AuditError("mitigation needs the model's head and the labels (targets)")
    task, _ = resolve_task(task, es.targets, es.primary.n_outputs, classes)
    if task not in ("binary", "multiclass"):
        raise AuditError(
            f"wa.mitigate refits single-label classifier heads (task 'binary' or "
            f"'multiclass'); this head is {task!r}. Its audit is supported; to remove the "
            "variable from the embeddings whatever the head, fit "
            "wsca_audit.fix.erasure.fit_eraser (LEACE) and refit the head on erased embeddings"
        )
    index, present = label_codes(es.targets, es.primary.n_outputs, classes)
    if len(present) < 2:
        raise AuditError(
            f"mitigation needs at least two classes among the labels; got {present.tolist()}"
        )
    return index, present


# --------------------------------------------------------------------------- step 1
def split_parts(
    groups: np.ndarray, present: np.ndarray, holdout: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Positions of the fitting and the held-out part.

    Every label x level group (``groups``) is split alike, drawn with ``seed``; samples
    without a value of the variable (``~present``) cannot be fitted on, so all of them
    are held out (and audited).

    Examples
    --------
    >>> groups = np.repeat([0, 1], 20); present = np.arange(40) >= 2
    >>> fit, held = split_parts(groups, present, 0.3, seed=0)
    >>> len(fit), len(held), {0, 1} <= set(held.tolist())
    (27, 13, True)
    """
    strata = np.where(present, groups, -1)
    held = stratified_split(strata, holdout, np.random.default_rng(seed))
    fit_idx, held_idx = np.flatnonzero(~held), np.flatnonzero(held)
    held_idx = np.sort(np.concatenate([held_idx, fit_idx[~present[fit_idx]]]))
    fit_idx = fit_idx[present[fit_idx]]
    if len(fit_idx) < MIN_PART or len(held_idx) < MIN_PART:
        raise AuditError(
            f"too few samples to fit and audit ({len(fit_idx)} to fit, {len(held_idx)} held out)"
        )
    return fit_idx, held_idx


# --------------------------------------------------------------------------- step 2
def fit_new_head(
    data: FitData,
    primary: PrimaryHead,
    method: str,
    *,
    variable: str = "variable",
    seed: int = 0,
    n_subsamples: int = 10,
) -> NewHead:
    """Fit the head that replaces ``primary``: the eraser folded into it (``"erase"``),
    a group-balanced refit (``"dfr"``), or a refit of the erased embeddings folded
    through the eraser (``"both"``).

    Parameters
    ----------
    data : FitData
        The fitting part.
    primary : PrimaryHead
        The model's head (kept by ``"erase"``, replaced by ``"dfr"`` and ``"both"``).
    method : {"erase", "dfr", "both"}
    variable : str
        The variable's name, for the messages.
    seed, n_subsamples : int
        DFR's inner split and balanced subsamples.

    Returns
    -------
    NewHead
    """
    weight = torch.as_tensor(primary.weight, dtype=torch.float64)
    bias = torch.as_tensor(primary.bias, dtype=torch.float64)
    if method == "erase":
        eraser = _erase(data)
        return NewHead(*eraser.fold(weight, bias), eraser, {"erased_rank": eraser.rank})
    eraser = _erase(data) if method == "both" else None
    info = {} if eraser is None else {"erased_rank": eraser.rank}
    notes = []
    if data.kind == "continuous":
        notes.append(
            f"{variable!r} is continuous: DFR balances its quartile bins "
            f"({', '.join(data.level_names)})"
        )
    z = data.embeddings if eraser is None else eraser(torch.as_tensor(data.embeddings)).numpy()
    present = np.unique(data.groups)
    refit = fit_balanced_head(
        z, data.labels, data.groups, primary.n_outputs, n_subsamples=n_subsamples, seed=seed,
        group_names=[data.group_names[i] for i in present],  # as fit_balanced_head codes them
    )  # fmt: skip
    info.update(C=refit.C, worst_group_accuracy_by_C=refit.worst_group_accuracy)
    if eraser is None:
        return NewHead(refit.weight, refit.bias, None, info, notes)
    return NewHead(*eraser.fold(refit.weight, refit.bias), eraser, info, notes)


def _erase(data: FitData) -> LinearEraser:
    """The class-conditional LEACE eraser of the variable on the fitting part."""
    return fit_eraser(data.embeddings, concept_matrix(data.values, data.kind), data.labels)


# --------------------------------------------------------------------------- step 3
def _subset(es: EmbeddingSet, idx: np.ndarray, primary: PrimaryHead) -> EmbeddingSet:
    """The samples ``idx`` of ``es``, with ``primary`` as the head."""
    return EmbeddingSet(
        es.embeddings[idx],
        es.targets[idx],
        {k: v[idx] for k, v in es.metadata.items()},
        kinds=dict(es.kinds),
        primary=primary,
        sample_ids=None if es.sample_ids is None else es.sample_ids[idx],
        layer=es.layer,
    )


def _cost(
    before: Tensor, after: Tensor, labels: Tensor, n_bootstrap: int, seed: int, level: float
) -> dict:
    """Paired bootstrap of the primary metric (logits ``before`` and ``after``), patched
    minus original: both heads are scored on the same resamples."""
    gen = torch.Generator().manual_seed(seed)
    w = torch.cat([torch.ones(1, len(labels)), bootstrap_counts(len(labels), n_bootstrap, gen)])
    w = w.to(torch.float64)
    mb, ma = metric_values(before, labels, w), metric_values(after, labels, w)
    metric = "auc" if "auc" in mb else "accuracy"
    return {"metric": metric, **ci_block(ma[metric] - mb[metric], n_bootstrap, level)}


def _logits(z: Tensor, weight: Tensor | np.ndarray, bias: Tensor | np.ndarray) -> Tensor:
    """The head's logits in float64 (the embeddings through ``weight`` and ``bias``)."""
    w = torch.as_tensor(weight, dtype=torch.float64)
    return z @ w.T + torch.as_tensor(bias, dtype=torch.float64)


def audit_both(
    es: EmbeddingSet,
    held_idx: np.ndarray,
    new: NewHead,
    model_info: dict,
    labels: np.ndarray,
    *,
    variable: str,
    method: str,
    seed: int,
    settings: dict,
) -> tuple[AuditResult, AuditResult, dict]:
    """Audit the original and the new head on the held-out part, with the same settings
    and resamples, and the paired cost (patched minus original primary metric).

    Returns
    -------
    (AuditResult, AuditResult, dict)
        Before, after, and the cost block ``{"metric", "value", "ci_low", "ci_high"}``.
    """
    primary = es.primary
    new_primary = PrimaryHead.from_arrays(
        new.weight.numpy(), new.bias.numpy(), source=primary.source
    )
    audit = {"seed": seed, **settings}
    before = analyze_embeddings(_subset(es, held_idx, primary), model_info, **audit)
    after_info = {**model_info, "mitigation": {"variable": variable, "method": method}}
    after = analyze_embeddings(_subset(es, held_idx, new_primary), after_info, **audit)
    z = torch.as_tensor(es.embeddings[held_idx], dtype=torch.float64)
    cost = _cost(
        _logits(z, primary.weight, primary.bias),
        _logits(z, new.weight, new.bias),
        torch.as_tensor(labels[held_idx]),
        before.settings.get("n_bootstrap", 200),
        seed,
        before.ci_level,
    )
    return before, after, cost


def _outcome_notes(
    has_model: bool, why: str | None, before: AuditResult, variable: str
) -> list[str]:
    """Warnings about the outcome: a model that could not be patched, and a variable
    that the held-out audit does not flag."""
    notes = []
    if why is not None and has_model:
        notes.append(
            f"the model's head cannot be patched ({why}); Mitigation.head_ holds the new head"
        )
    verdict = before.tasks.get(variable, {}).get("verdict")
    if verdict != USES:
        notes.append(
            f"{variable!r} is not flagged on the held-out part (verdict {verdict!r}): "
            "mitigating it anyway"
        )
    return notes


# --------------------------------------------------------------------------- the whole
def mitigate(
    model: nn.Module | None,
    auditor: Auditor | EmbeddingSet,
    variable: str,
    method: str = DEFAULT_METHOD,
    *,
    holdout: float = 0.3,
    seed: int = 0,
    n_subsamples: int = 10,
    **settings: Any,
) -> Mitigation:
    """Remove a variable from the model's head, and audit the original and the patched
    head on samples the fit never saw.

    Parameters
    ----------
    model : torch.nn.Module or None
        The audited model; it is not modified (the patched model is a copy).
    auditor : Auditor or EmbeddingSet
        What the audit collected (embeddings, labels, metadata and the head).
    variable : str
        The metadata variable to remove (one the auditor recorded).
    method : {"erase", "dfr", "both"}, default="erase"
        Class-conditional LEACE erasure folded into the head, group-balanced refit of
        the head (DFR), or erasure then refit (see the module docstring).
    holdout : float, default=0.3
        Share of each label x level group kept out of the fit and audited.
    seed : int, default=0
        The split, the balanced subsamples and the audits' resamples.
    n_subsamples : int, default=10
        Balanced subsamples averaged by ``"dfr"``.
    **settings
        Audit settings for the before/after audits (as :func:`wsca_audit.analyze`:
        ``n_bootstrap``, ``n_permutations``, ``progress``, ...).

    Returns
    -------
    Mitigation

    Examples
    --------
    >>> import numpy as np, torch, wsca_audit as wa
    >>> rng = np.random.default_rng(0)
    >>> y = rng.integers(0, 2, 3000); s = np.where(rng.random(3000) < 0.8, y, 1 - y)
    >>> z = np.c_[y + 0.5 * rng.normal(size=3000), s + 0.3 * rng.normal(size=3000)]
    >>> es = wa.EmbeddingSet(z, y, {"scanner": s}, primary=wa.PrimaryHead.from_arrays(
    ...     [[-1.0, -1.0], [1.0, 1.0]], [1.0, -1.0]))                # reads the scanner
    >>> m = wa.mitigate(None, es, "scanner", n_bootstrap=50, n_permutations=50, progress=False)
    >>> m.before.tasks["scanner"]["verdict"], m.after.tasks["scanner"]["verdict"]
    ('uses', 'encoded_not_used')
    """
    t0 = time.perf_counter()
    if method not in METHODS:
        raise AuditError(f"method must be one of {METHODS}; got {method!r}")
    if not 0.05 <= holdout <= 0.9:
        raise AuditError(f"holdout must be between 0.05 and 0.9; got {holdout}")
    es, model_info = _embedding_set(auditor)
    index, classes = _check(es, variable, settings.get("classes"), settings.get("task"))
    y_codes = class_strata(index, classes)  # compact: the strata of the split
    kind, values = es.kinds[variable], es.metadata[variable]
    present = ~missing_mask(values)

    # 1. split: strata are label x level (continuous: quartile bins)
    lvl, lvl_names = group_codes(values, kind)
    fit_idx, held_idx = split_parts(y_codes * (len(lvl_names) + 1) + lvl, present, holdout, seed)

    # 2. fit the new head on the fitting part
    data = FitData.of(es, variable, fit_idx, (index, classes), (lvl, lvl_names))
    new = fit_new_head(
        data, es.primary, method, variable=variable, seed=seed, n_subsamples=n_subsamples
    )
    for note in new.notes:
        warnings.warn(note, AuditWarning, stacklevel=2)

    # 3. audit both heads on the held-out part
    before, after, cost = audit_both(
        es, held_idx, new, model_info, index,
        variable=variable, method=method, seed=seed, settings=settings,
    )  # fmt: skip

    # 4. patch a copy of the model
    head = linear_head(new.weight, new.bias)
    patched, why = patch_model(model, es.layer, es.primary.source, new.weight, new.bias)
    for note in _outcome_notes(model is not None, why, before, variable):
        warnings.warn(note, AuditWarning, stacklevel=2)

    # 5. the result
    settings_ = {
        "holdout": holdout,
        "seed": seed,
        "n_fit": len(fit_idx),
        "n_holdout": len(held_idx),
        "kind": kind,
        "n_subsamples": n_subsamples,
        "runtime_s": round(time.perf_counter() - t0, 3),
        **new.info,
    }
    return Mitigation(
        variable=variable,
        method=method,
        model=patched,
        head_=head,
        before=before,
        after=after,
        eraser_=new.eraser,
        fit_index_=fit_idx,
        holdout_index_=held_idx,
        cost_=cost,
        head_source_=es.primary.source,
        not_patched_reason_=why,
        settings_=settings_,
    )
