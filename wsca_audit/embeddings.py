"""EmbeddingSet: the validated data every analysis starts from (embeddings, targets, metadata).

It is what ``Auditor`` collects from a model, and what ``wsca_audit.analyze`` builds from
arrays of any source (numpy, torch, lists, pandas); ``wsca_audit.analyze(es)`` audits one.
The checks of the data as a whole live here (shapes, kinds, missing values, duplicate
ids, non-finite rows), built on the shared helpers of :mod:`wsca_audit.validation`.
"""

from __future__ import annotations

import hashlib
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import torch

from .errors import AuditError, AuditWarning
from .primary import PrimaryHead
from .shards import Shard
from .stats import DEFAULT_BUDGET_MB, chunk_rows, chunks
from .validation import as_array, check_consistent_length, target_array

KINDS = ("categorical", "continuous")


def _nonfinite_rows(Z: np.ndarray, chunk: int | None = None) -> np.ndarray:
    """Rows holding NaN or inf, checked in chunks (Z may be a memory-mapped file)."""
    chunk = chunk or chunk_rows(Z.shape[1], DEFAULT_BUDGET_MB, Z.itemsize)
    parts = [~np.isfinite(Z[sl]).all(1) for sl in chunks(Z.shape[0], chunk)]
    return np.concatenate(parts) if parts else np.zeros(0, dtype=bool)


def missing_mask(values: np.ndarray) -> np.ndarray:
    """True where a metadata value is missing (None, NaN, pandas NA, NaT)."""
    if values.dtype.kind in "fc":
        return ~np.isfinite(values)
    if values.dtype.kind in "iub":
        return np.zeros(values.shape, dtype=bool)
    out = np.zeros(values.shape, dtype=bool)
    for i, v in enumerate(values.tolist()):
        if v is None:
            out[i] = True
        elif isinstance(v, float) and not np.isfinite(v):
            out[i] = True
        elif type(v).__name__ in ("NAType", "NaTType"):
            out[i] = True
    return out


def infer_kind(values: np.ndarray) -> str:
    """``continuous`` for numbers with more than 10 distinct values, else ``categorical``."""
    valid = values[~missing_mask(values)]
    if valid.dtype.kind in "fiu" and len(np.unique(valid)) > 10:
        return "continuous"
    return "categorical"


ID_MIN_PER_VALUE = 5  # integers repeated this often per value look like codes, not measurements


def inferred_kind_note(
    name: str, values: np.ndarray, kind: str, max_levels: int
) -> tuple[str, bool]:
    """What the report says about a kind that was inferred, and whether it is a warning
    (an integer column that looks like an id but was read as a number).

    Examples
    --------
    >>> site = np.repeat(np.arange(30), 20)
    >>> inferred_kind_note("site", site, "continuous", 50)[1]
    True
    """
    valid = values[~missing_mask(values)]
    n_distinct = len(np.unique(valid))
    declare = f"kinds={{{name!r}: ...}}"
    if kind == "categorical":
        return (
            f"{name}: kind inferred as categorical ({n_distinct} levels); pass {declare} to declare it",
            False,
        )
    integral = valid.dtype.kind in "iu" or (
        valid.dtype.kind == "f" and bool(np.all(np.isfinite(valid) & (valid == np.round(valid))))
    )
    per_value = len(valid) / max(n_distinct, 1)
    if integral and per_value >= ID_MIN_PER_VALUE:
        fix = f"kinds={{{name!r}: 'categorical'}}"
        if n_distinct > max_levels:
            fix += f" and max_levels={n_distinct} (now {max_levels})"
        return (
            f"{name}: integers with {n_distinct} distinct values, about {per_value:.0f} samples "
            "each, were inferred to be continuous and audited as a number: that looks like an "
            f"id (a site or scanner code). If it is one, declare {fix}",
            True,
        )
    return (
        f"{name}: kind inferred as continuous ({n_distinct} distinct values); pass {declare} to declare it",
        False,
    )


@dataclass
class EmbeddingSet:
    """Embeddings with their targets and metadata, validated.

    Parameters
    ----------
    embeddings : array-like of shape (n_samples, embedding_dim)
        Penultimate-layer embeddings (numpy, torch, half precision accepted).
    targets : array-like of shape (n_samples,), optional
        Primary labels (class indices). Needed for the primary metric and to remove the
        label from the usage measure.
    metadata : mapping of str to array-like of shape (n_samples,)
        One column per metadata variable; missing values (None, NaN) are masked per task.
    kinds : mapping of str to {"categorical", "continuous"}, optional
        Kind of each column; inferred when missing.
    primary : PrimaryHead, optional
        The model's own head.
    sample_ids : array-like of shape (n_samples,), optional
    drop_nonfinite : bool, default=False
        Drop samples with NaN/inf embeddings (with a warning) instead of raising.
    layer : str, default="user"
        Where the embeddings came from.
    shard : Shard, optional
        A sharded audit (:mod:`wsca_audit.shards`): ``embeddings`` are this rank's rows
        (they may be none), every other column holds all ``shard.n`` samples in the
        audit's order.

    Examples
    --------
    >>> import numpy as np
    >>> es = EmbeddingSet(np.random.randn(50, 4), np.arange(50) % 2, {"site": np.arange(50) % 3})
    >>> es.n_samples, es.embedding_dim, es.kinds
    (50, 4, {'site': 'categorical'})
    """

    embeddings: np.ndarray
    targets: np.ndarray | None = None
    metadata: Mapping[str, object] = field(default_factory=dict)
    kinds: Mapping[str, str] | None = None
    primary: PrimaryHead | None = None
    sample_ids: np.ndarray | None = None
    drop_nonfinite: bool = False
    layer: str = "user"
    warnings: list[str] = field(default_factory=list)
    shard: Shard | None = None

    inferred_kinds: list[str] = field(init=False, default_factory=list)

    def __post_init__(self) -> None:
        Z = _check_embeddings(self.embeddings, empty_ok=self.shard is not None)
        n = Z.shape[0] if self.shard is None else self.shard.n
        columns = _metadata_columns(self.metadata, n)
        kinds, self.inferred_kinds = _declared_kinds(columns, self.kinds)
        targets = None
        if self.targets is not None:
            targets = target_array(self.targets, "targets")
            check_consistent_length(n, "embeddings", targets=targets)
            if missing_mask(targets.reshape(-1)).any():
                raise AuditError("targets contain missing values (None/NaN); drop those samples")
        ids = None
        if self.sample_ids is not None:
            ids = as_array(self.sample_ids, "sample_ids").reshape(-1)
            check_consistent_length(n, "embeddings", sample_ids=ids)
            keep = _first_of_each_id(ids)
            if not keep.all() and self.shard is not None:
                raise AuditError("a sharded audit's sample ids must be unique (shard_columns)")
            if not keep.all():
                # e.g. a DistributedSampler's padding, or a loader that repeats samples
                self._warn(
                    f"{int((~keep).sum())} duplicate sample_ids were dropped (the first "
                    "occurrence of each id is kept)"
                )
                Z, columns, targets, ids = _keep_rows(keep, Z, columns, targets, ids)
        bad = _nonfinite_rows(Z)
        if self.shard is not None:  # every rank's rows, so that every rank decides alike
            bad = self.shard.gather(torch.as_tensor(bad)).numpy()
        if bad.any():
            msg = f"{int(bad.sum())} of {n} embeddings contain NaN or inf"
            if not self.drop_nonfinite:
                raise AuditError(msg + "; pass drop_nonfinite=True to drop them")
            if self.shard is not None:
                self.shard, local = self.shard.subset(torch.as_tensor(~bad))
                Z = Z[local.numpy()]
                _, columns, targets, ids = _keep_rows(~bad, bad, columns, targets, ids)
            else:
                Z, columns, targets, ids = _keep_rows(~bad, Z, columns, targets, ids)
            self._warn(msg + "; they were dropped")
            if n == int(bad.sum()):
                raise AuditError("every embedding is NaN or inf")
        if self.primary is not None and self.primary.weight.shape[1] != Z.shape[1]:
            raise AuditError(
                f"the primary head reads {self.primary.weight.shape[1]} features but the "
                f"embeddings have {Z.shape[1]}: the layer does not feed the head"
            )
        self.embeddings = Z
        self.metadata = columns
        self.kinds = kinds
        self.targets = targets
        self.sample_ids = ids

    def _warn(self, message: str) -> None:
        self.warnings.append(message)
        warnings.warn(message, AuditWarning, stacklevel=3)

    @property
    def n_samples(self) -> int:
        """Samples of the audit (every rank's, in a sharded audit)."""
        return int(self.embeddings.shape[0]) if self.shard is None else self.shard.n

    @property
    def embedding_dim(self) -> int:
        return int(self.embeddings.shape[1])

    @property
    def digest(self) -> str:
        """A short hash of which samples were audited and their targets (sample ids, or
        the row order without them): two audits of the same data share it. It names
        the audit set in MLflow's dataset column.

        Examples
        --------
        >>> import numpy as np
        >>> a = EmbeddingSet(np.zeros((3, 2)), [0, 1, 0], sample_ids=["x", "y", "z"])
        >>> a.digest == EmbeddingSet(np.ones((3, 2)), [0, 1, 0], sample_ids=["x", "y", "z"]).digest
        True
        """
        h = hashlib.sha256()
        ids = self.sample_ids if self.sample_ids is not None else np.arange(self.n_samples)
        for part in (ids, self.targets):
            h.update(b"|" + ("-" if part is None else "\x1f".join(map(str, part))).encode())
        return h.hexdigest()[:16]


def _check_embeddings(embeddings, empty_ok: bool = False) -> np.ndarray:
    """The embeddings as a float32 (n_samples, embedding_dim) array, or a clear error
    (``empty_ok``: a rank of a sharded audit may hold no sample)."""
    Z = as_array(embeddings, "embeddings")
    if Z.dtype == object or Z.dtype.kind not in "fiub":
        raise AuditError(f"embeddings must be numeric; got dtype {Z.dtype}")
    if Z.ndim == 1:
        Z = Z[:, None]
    if Z.ndim != 2:
        raise AuditError(
            f"embeddings must have shape (n_samples, embedding_dim); got {Z.shape}. "
            "Pick a layer whose input is one vector per sample (e.g. after pooling)."
        )
    if Z.shape[1] == 0:
        raise AuditError(f"embeddings have no features (shape {Z.shape}): pick another layer")
    if Z.shape[0] == 0 and not empty_ok:
        raise AuditError(
            "no embeddings were recorded: run the model inside `auditor.collect()` "
            "and call `auditor.record(...)` after each batch before analyze()"
        )
    return Z.astype(np.float32, copy=False)


def _metadata_columns(metadata, n: int) -> dict[str, np.ndarray]:
    """Each metadata column as a 1-d array of ``n`` values (a DataFrame is accepted)."""
    if not isinstance(metadata, Mapping):
        if not hasattr(metadata, "columns"):  # a pandas DataFrame has columns
            raise AuditError("metadata must be a mapping of column name -> values")
        metadata = {c: metadata[c] for c in metadata.columns}
    columns: dict[str, np.ndarray] = {}
    for name, col in metadata.items():
        if not isinstance(name, str) or not name:
            raise AuditError(f"metadata names must be non-empty strings; got {name!r}")
        arr = as_array(col, f"metadata[{name!r}]")
        if arr.ndim != 1:
            arr = arr.reshape(len(arr), -1) if arr.ndim > 1 else arr.reshape(-1)
            if arr.ndim != 1:
                raise AuditError(f"metadata[{name!r}] must be one value per sample")
        check_consistent_length(n, "embeddings", **{f"metadata[{name!r}]": arr})
        columns[name] = arr
    return columns


def _declared_kinds(
    columns: dict[str, np.ndarray], declared: Mapping[str, str] | None
) -> tuple[dict[str, str], list[str]]:
    """Every column's kind (declared, else inferred) and the names whose kind was
    inferred; continuous columns become float64 in place (NaN where missing)."""
    kinds = dict(declared or {})
    for name in kinds:
        if name not in columns:
            raise AuditError(
                f"metadata column {name!r} was declared but no values were given; "
                f"got columns {sorted(columns)}"
            )
        if kinds[name] not in KINDS:
            raise AuditError(f"kind of {name!r} must be one of {KINDS}; got {kinds[name]!r}")
    inferred = [name for name in columns if name not in kinds]
    for name, arr in columns.items():
        if name not in kinds:
            kinds[name] = infer_kind(arr)
        if kinds[name] == "continuous":
            valid = ~missing_mask(arr)
            try:
                columns[name] = np.where(valid, arr, np.nan).astype(np.float64)
            except (TypeError, ValueError) as exc:
                raise AuditError(
                    f"metadata[{name!r}] is declared continuous but has non-numeric "
                    f"values such as {arr[valid][:3].tolist()}"
                ) from exc
    return kinds, inferred


def _first_of_each_id(ids: np.ndarray) -> np.ndarray:
    """True at the first occurrence of each sample id."""
    try:
        _, first = np.unique(ids, return_index=True)
    except TypeError:  # ids of mixed types: compare their text
        _, first = np.unique(ids.astype(str), return_index=True)
    keep = np.zeros(len(ids), dtype=bool)
    keep[first] = True
    return keep


def _keep_rows(keep: np.ndarray, Z, columns: dict, targets, ids):
    """The rows of every per-sample array where ``keep`` is true."""
    columns = {k: v[keep] for k, v in columns.items()}
    targets = None if targets is None else targets[keep]
    ids = None if ids is None else ids[keep]
    return Z[keep], columns, targets, ids
