"""What kind of head is audited, and what its targets are: ``task=`` in torchmetrics'
vocabulary (``"binary"``, ``"multiclass"``, ``"multilabel"``, ``"regression"``).

Targets are named before anything uses them (the habit of scikit-learn's
``type_of_target``), the task is inferred from the head's outputs and the targets when the
caller does not give it (and the inference is said in the report's warnings), and a case
that could be read two ways, or that does not fit the head, is an :class:`AuditError`
naming the fix. Nothing is ever read silently as hundreds of classes.

Per kind (:func:`encode_targets`), the labels each stage reads and the strata that
"holding the target fixed" means:

- binary / multiclass: the head's class index of each target (:func:`label_codes`), the
  classes present as strata;
- multilabel: the 0/1 label matrix, and the label vector as the stratum, so that every
  label is held fixed at once (a variable that follows one finding does not pass for a
  reliance of another);
- regression: the target as a float, and fine quantile bins of it as strata (the target
  as a flexible covariate: samples are compared only with samples of nearly the same
  target).

:mod:`wsca_audit.primary` owns the head itself (scores, contrasts, metrics) and asks this
module what the targets are.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .errors import AuditError

__all__ = [
    "REGRESSION_BIN_SIZE",
    "TASKS",
    "EncodedTargets",
    "class_strata",
    "encode_targets",
    "label_codes",
    "regression_strata",
    "resolve_task",
    "type_of_targets",
]

TASKS = ("binary", "multiclass", "multilabel", "regression")

# regression targets are held fixed within quantile bins of about this many samples (at
# least 4 bins, at most 50): fine enough that a variable correlated with the target
# differs little in target within a bin, coarse enough that each bin holds informative
# samples of the variable (docs/heads.md)
REGRESSION_BIN_SIZE = 40
_MAX_REGRESSION_BINS = 50
# whole-number targets on a one-output head are inferred as regression past this many values
_MIN_REGRESSION_VALUES = 10


def type_of_targets(targets: Any) -> str:
    """Name what the targets are, in scikit-learn's ``type_of_target`` words.

    ``"binary"`` (at most two values, 0/1 when numeric), ``"multiclass"`` (integer-valued,
    more than two values), ``"multilabel-indicator"`` (a 0/1 matrix of two or more
    columns), ``"continuous"`` (floats that are not all whole numbers),
    ``"continuous-multioutput"``, ``"labels"`` (strings or other non-numeric values), or
    ``"unknown"`` (empty, or not finite).

    Examples
    --------
    >>> type_of_targets([0, 1, 1]), type_of_targets([0, 3, 9]), type_of_targets([1.5, 50.2])
    ('binary', 'multiclass', 'continuous')
    >>> type_of_targets(np.eye(3, dtype=int)), type_of_targets(["well", "sick"])
    ('multilabel-indicator', 'labels')
    """
    y = np.asarray(targets)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.size == 0 or y.ndim > 2:
        return "unknown"
    if y.dtype.kind not in "biuf":
        try:
            y = y.astype(np.float64)
        except (TypeError, ValueError):
            return "labels"
    if not np.all(np.isfinite(y.astype(np.float64))):
        return "unknown"
    whole = bool(np.all(y == np.round(y)))
    if y.ndim == 2:
        if whole and set(np.unique(y).tolist()) <= {0, 1}:
            return "multilabel-indicator"
        return "continuous-multioutput" if not whole else "multiclass-multioutput"
    if not whole:
        return "continuous"
    return "binary" if set(np.unique(y).tolist()) <= {0, 1} else "multiclass"


def resolve_task(
    task: str | None, targets: Any, n_outputs: int, classes: Any = None
) -> tuple[str, str | None]:
    """The task of a head with ``n_outputs`` outputs and these targets, and the sentence
    that says how it was inferred (None when ``task`` was given).

    Raises
    ------
    AuditError
        For a word outside :data:`TASKS`, targets that do not fit the given task or the
        head, or a case that could be read two ways.

    Examples
    --------
    >>> resolve_task(None, [0, 1, 1], 1)[0], resolve_task(None, [0, 2, 1], 3)[0]
    ('binary', 'multiclass')
    >>> resolve_task(None, [51.5, 62.0, 48.25], 1)[0]
    'regression'
    >>> resolve_task(None, [[1, 1, 0], [0, 0, 1], [0, 0, 0]], 3)[0]
    'multilabel'
    """
    if task is not None and task not in TASKS:
        raise AuditError(f"task={task!r} is not one of {list(TASKS)}")
    kind = "unknown" if targets is None else type_of_targets(targets)
    if task is not None:
        _check_given(task, kind, targets, n_outputs)
        return task, None
    inferred = _infer(kind, targets, n_outputs, classes)
    what = "no targets" if targets is None else f"{kind} targets"
    note = (
        f"task inferred as {inferred!r} from a head of {n_outputs} output(s) and {what}; "
        f"pass task=... to say it (one of {list(TASKS)})"
    )
    return inferred, note


def _infer(kind: str, targets: Any, n_outputs: int, classes: Any) -> str:
    if targets is None:  # a softmax classifier unless said (the note names task=)
        return "binary" if n_outputs <= 2 else "multiclass"
    if kind in ("multilabel-indicator", "continuous-multioutput", "multiclass-multioutput"):
        width = np.asarray(targets).shape[1]
        if kind != "multilabel-indicator":
            raise AuditError(
                f"targets are {width} columns of {kind.split('-')[0]} values: a multi-label "
                "head takes 0/1 targets, one column per output (multi-output regression is "
                "not audited: audit each output as its own head with primary_weight=W[k:k+1])"
            )
        if width != n_outputs:
            raise AuditError(
                f"targets are multi-hot with {width} columns but the head has {n_outputs} "
                "outputs: a multi-label head takes one 0/1 column per output"
            )
        if np.all(np.asarray(targets).sum(1) == 1):
            raise AuditError(
                "targets are one-hot rows (exactly one 1 each): for a softmax classifier give "
                "each sample's class index (targets.argmax(1)); for independent sigmoids "
                "pass task='multilabel'"
            )
        return "multilabel"
    if kind == "continuous":
        values = np.unique(np.asarray(targets))
        if len(values) <= 2 and classes is None:
            raise AuditError(
                f"targets take two values, {values.tolist()}: smoothed class labels? Give "
                "0/1 class labels for a classifier, or task='regression' for a head that "
                "predicts a number"
            )
        if n_outputs != 1:
            raise AuditError(
                f"targets are continuous but the head has {n_outputs} outputs: a regression "
                "head has one output (audit each output as its own head with "
                "primary_weight=W[k:k+1]); a classifier takes class indices, not binned values"
            )
        return "regression"
    n_distinct = len(np.unique(np.asarray(targets))) if kind == "multiclass" else 0
    if n_distinct > _MIN_REGRESSION_VALUES and n_outputs == 1 and classes is None:
        # one output scores at most two classes: many whole numbers are a quantity (an
        # age in years); a handful stay an error that names both readings
        return "regression"
    if kind == "unknown" and targets is not None:
        raise AuditError("targets are empty or not finite: nothing tells the task apart")
    if n_outputs == 1:
        return "binary"
    if n_outputs == 2:
        return "binary"
    return "multiclass"


def _check_given(task: str, kind: str, targets: Any, n_outputs: int) -> None:
    """Targets and head that do not fit the task the caller named."""
    if task == "regression":
        if n_outputs != 1:
            raise AuditError(
                f"task='regression' needs a head of one output; this one has {n_outputs} "
                "(audit each output as its own head with primary_weight=W[k:k+1])"
            )
        if targets is not None and kind not in ("continuous", "multiclass", "binary"):
            raise AuditError(f"task='regression' needs numeric targets, one per sample; got {kind}")
        return
    if task == "multilabel":
        if targets is None:
            return
        if kind != "multilabel-indicator" and not (n_outputs == 1 and kind == "binary"):
            raise AuditError(
                f"task='multilabel' needs 0/1 targets, one column per output (N x "
                f"{n_outputs}); got {kind} targets"
            )
        width = 1 if np.asarray(targets).ndim == 1 else np.asarray(targets).shape[1]
        if width != n_outputs:
            raise AuditError(
                f"task='multilabel': targets have {width} columns but the head has "
                f"{n_outputs} outputs"
            )
        return
    # classifiers
    if kind in ("multilabel-indicator", "continuous-multioutput", "multiclass-multioutput"):
        raise AuditError(
            f"task={task!r} takes one class label per sample; these targets have "
            f"{np.asarray(targets).shape[1]} columns (task='multilabel' for multi-hot targets)"
        )
    if kind == "continuous":
        raise AuditError(
            f"task={task!r} takes class labels; these targets are continuous (task="
            "'regression' for a head that predicts a number)"
        )
    if task == "binary" and n_outputs > 2:
        raise AuditError(
            f"task='binary' needs a head of one or two outputs; this one has {n_outputs} "
            "(task='multiclass')"
        )
    if task == "multiclass" and n_outputs < 2:
        raise AuditError(
            "task='multiclass' needs a head of two or more outputs; a one-output head is "
            "task='binary' (a logit) or task='regression'"
        )


@dataclass(frozen=True)
class EncodedTargets:
    """Targets as the stages read them, for one task.

    Attributes
    ----------
    task : str
    labels : numpy.ndarray
        Class index per sample (binary, multiclass), the 0/1 matrix (multilabel), or the
        float target (regression).
    strata : numpy.ndarray of shape (n_samples,)
        Compact codes of what holding the target fixed means (classes present, label
        vectors, target bins).
    present : numpy.ndarray
        The classes present (classifiers); empty otherwise.
    note : str or None
        How the task was inferred (None when given).
    strata_text : str
        What the strata are, in words (for the report's warnings and docs).
    """

    task: str
    labels: np.ndarray
    strata: np.ndarray
    present: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    note: str | None = None
    strata_text: str = "the classes"

    @property
    def n_strata(self) -> int:
        return int(self.strata.max()) + 1 if self.strata.size else 1

    def covariate(self) -> np.ndarray:
        """A regression target standardised and centred within its bins (N,): held fixed
        beside the bins, it removes what the target still varies within a bin (a variable
        that follows the target differs in target inside a wide bin too).

        Examples
        --------
        >>> enc = encode_targets(np.arange(8.0), 1, task="regression")
        >>> bool(abs(enc.covariate()[enc.strata == 0].sum()) < 1e-12)
        True
        """
        y = np.asarray(self.labels, dtype=np.float64)
        y = (y - y.mean()) / max(float(y.std(ddof=1)), 1e-12)
        means = np.bincount(self.strata, weights=y) / np.bincount(self.strata)
        return y - means[self.strata]


def encode_targets(
    targets: Any, n_outputs: int, *, task: str | None = None, classes: Any = None
) -> EncodedTargets:
    """Resolve the task (:func:`resolve_task`) and code the targets for it.

    Examples
    --------
    >>> enc = encode_targets(np.array([[1, 1], [1, 1], [0, 1]]), 2)
    >>> enc.task, enc.strata.tolist()
    ('multilabel', [1, 1, 0])
    >>> encode_targets(np.linspace(20, 80, 200), 1).n_strata  # 200 / 40 samples
    5
    """
    task, note = resolve_task(task, targets, n_outputs, classes)
    if targets is None:  # nothing to hold fixed: one stratum
        return EncodedTargets(task, np.zeros(0), np.zeros(0, np.int64), note=note, strata_text="")
    if task == "regression":
        y = np.asarray(targets, dtype=np.float64).reshape(-1)
        strata, text = regression_strata(y)
        return EncodedTargets(task, y, strata, note=note, strata_text=text)
    if task == "multilabel":
        y = np.asarray(targets).astype(np.int64).reshape(len(targets), -1)
        _, strata = np.unique(y, axis=0, return_inverse=True)
        text = f"the label vectors ({int(strata.max()) + 1} distinct)"
        return EncodedTargets(task, y, strata.reshape(-1), note=note, strata_text=text)
    index, present = label_codes(targets, n_outputs, classes)
    return EncodedTargets(task, index, class_strata(index, present), present, note)


def regression_strata(y: np.ndarray) -> tuple[np.ndarray, str]:
    """Quantile bins of a regression target (about :data:`REGRESSION_BIN_SIZE` samples
    each, 4 to 50 bins; ties stay in one bin), and their description.

    Examples
    --------
    >>> codes, text = regression_strata(np.arange(400.0))
    >>> int(codes.max()) + 1, text
    (10, '10 quantile bins of the target (about 40 samples each)')
    """
    n = y.shape[0]
    k = int(np.clip(n // REGRESSION_BIN_SIZE, 4, _MAX_REGRESSION_BINS))
    edges = np.unique(np.quantile(y, np.linspace(0, 1, k + 1)[1:-1]))
    codes = np.searchsorted(edges, y, side="right")
    _, codes = np.unique(codes, return_inverse=True)  # empty bins (ties) leave no gap
    k = int(codes.max()) + 1
    return codes.reshape(-1), f"{k} quantile bins of the target (about {n // k} samples each)"


# --------------------------------------------------------------------------- classes
def label_codes(
    targets: Any, n_outputs: int | None = None, classes: Any = None
) -> tuple[np.ndarray, np.ndarray]:
    """The head's class index of each target, and the indices present (sorted).

    Targets are matched to the head's outputs by value, never renumbered: an integer
    target *is* the output index (a class absent from the data stays absent), and other
    labels (strings, say) need ``classes``, the class of each output in the head's order.
    A head of one output (a logit) has the classes 0 and 1.

    Parameters
    ----------
    targets : array-like of shape (n_samples,)
    n_outputs : int, optional
        The head's outputs; when given, every index must be one of them.
    classes : sequence, optional
        The class of each output, in the head's order (``["well", "sick"]``: output 1 is
        "sick").

    Raises
    ------
    AuditError
        For labels that are not class indices and no ``classes``, a label that
        ``classes`` lacks, or an index the head does not have.

    Examples
    --------
    >>> index, present = label_codes(np.array([2, 0, 2]), n_outputs=3)
    >>> index.tolist(), present.tolist()
    ([2, 0, 2], [0, 2])
    >>> label_codes(np.array(["sick", "well"]), 2, classes=["well", "sick"])[0].tolist()
    [1, 0]
    """
    y = np.asarray(targets).reshape(-1)
    n_classes = None if n_outputs is None else max(int(n_outputs), 2)
    if classes is not None:
        index = _index_by_name(y, list(classes), n_classes)
    else:
        index = _integer_index(y)
    if n_outputs == 1 and index.size and (index.min() < 0 or index.max() > 1):
        values = np.unique(index)
        raise AuditError(
            f"targets hold {len(values)} distinct values from {values[0]} to {values[-1]}, but "
            "a single-output classifier scores two classes (0 and 1): give 0/1 targets, or "
            "task='regression' for a head that predicts a number (an age, say)"
        )
    if n_classes is not None and index.size and (index.min() < 0 or index.max() >= n_classes):
        bad = sorted({int(v) for v in index if not 0 <= v < n_classes})[:5]
        raise AuditError(
            f"targets hold class index(es) {bad}, but the head has {n_outputs} output(s) "
            f"(classes 0..{n_classes - 1}); targets are the head's class indices (pass "
            "classes=[...] to name them)"
        )
    return index, np.unique(index)


def _integer_index(y: np.ndarray) -> np.ndarray:
    """Targets that are class indices as int64, or an error that asks for ``classes``."""
    if y.dtype.kind in "biu":
        return y.astype(np.int64)
    try:
        numeric = y.astype(np.float64)
    except (TypeError, ValueError):
        numeric = None
    if (
        numeric is not None
        and np.all(np.isfinite(numeric))
        and np.all(numeric == np.round(numeric))
    ):
        return numeric.astype(np.int64)
    shown = ", ".join(repr(v) for v in list(dict.fromkeys(y.tolist()))[:4])
    if numeric is not None and y.dtype.kind == "f":
        raise AuditError(
            f"targets are continuous (values such as {shown}): a classifier takes class "
            "labels (the head's class indices, or names with classes=[...]); a head that "
            "predicts a number is task='regression'. Do not bin its target into classes "
            "for a head that does not predict them"
        )
    raise AuditError(
        f"targets are not class indices (values such as {shown}): pass classes=[...], the "
        "class of each of the head's outputs in its order (e.g. classes=['well', 'sick'] "
        "when output 1 is 'sick'); labels are never matched to outputs by sorting"
    )


def _index_by_name(y: np.ndarray, classes: list, n_classes: int | None) -> np.ndarray:
    if len(set(map(str, classes))) != len(classes):
        raise AuditError(f"classes must be distinct; got {classes}")
    if n_classes is not None and len(classes) != n_classes:
        raise AuditError(
            f"classes names {len(classes)} classes but the head has {n_classes} "
            "(one per output; two for a single-logit head)"
        )
    lookup = {str(c): i for i, c in enumerate(classes)}
    keys = y.astype(str)
    unknown = sorted(set(keys.tolist()) - set(lookup))
    if unknown:
        raise AuditError(f"targets {unknown[:5]} are not among classes={classes}")
    return np.array([lookup[k] for k in keys.tolist()], dtype=np.int64)


def class_strata(index: np.ndarray, present: np.ndarray) -> np.ndarray:
    """Compact code (0 .. len(present) - 1) of each class index: the strata that the
    measures hold fixed, contiguous even where a class of the head is absent.

    Examples
    --------
    >>> class_strata(np.array([2, 0, 2]), np.array([0, 2])).tolist()
    [1, 0, 1]
    """
    return np.searchsorted(present, index)
