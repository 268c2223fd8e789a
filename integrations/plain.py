"""Plain evaluation loops: audit an existing ``evaluate(model, loader)`` function unchanged.

:func:`audit_loop` runs the function with the auditor attached and a wrapped loader that
records each batch's labels and metadata after the model has seen it (when the loop asks
for the next batch). :func:`audited` is the same as a decorator.

A batch is read with ``batch_fn(batch) -> (targets, metadata)``; the default understands
``(x, y)``, ``(x, y, metadata_dict)`` and dict batches (``"label"``/``"labels"``/
``"target"``/``"y"`` for the labels; the audited metadata names as keys).
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import wsca_audit as wa

_LABEL_KEYS = ("labels", "label", "targets", "target", "y")


def renamed_keyword(old: str, new: str, old_value: Any, new_value: Any, where: str) -> Any:
    """The value of a keyword renamed from ``old`` to ``new`` (the metadata's kinds are
    ``kinds=`` everywhere, their values ``metadata=``): the old one still works, with a
    ``DeprecationWarning``; both at once are an error."""
    if old_value is None:
        return new_value
    if new_value is not None:
        raise wa.AuditError(f"{where}: pass {new}= only ({old}= is its old name)")
    warnings.warn(
        f"{where}({old}=...) is now {where}({new}=...); the old keyword will be removed",
        DeprecationWarning,
        stacklevel=3,
    )
    return old_value


def artifact_path_of(result: wa.AuditResult) -> str | None:
    """The artifact folder an integration logged an audit under (its identity within a
    run), from ``report["model"]["context"]``."""
    try:
        model = result["model"] or {}
    except KeyError:
        return None
    return (model.get("context") or {}).get("artifact_path")


def unused_artifact_path(name: str, results: Iterable[tuple[Any, wa.AuditResult]]) -> str:
    """``name``, or ``name-2``, ``name-3``... when an earlier audit of ``results`` (a
    callback's ``results_``) used it: no audit is logged over another.

    Examples
    --------
    >>> unused_artifact_path("wsca/step8", [])
    'wsca/step8'
    """
    used = {artifact_path_of(r) for _, r in results}
    path, k = name, 1
    while path in used:
        k += 1
        path = f"{name}-{k}"
    return path


def default_batch_fn(metadata_names: Iterable[str]) -> Callable[[Any], tuple[Any, dict]]:
    """The default reader: tuples ``(x, y[, meta])`` and dict batches."""
    names = list(metadata_names)

    def read(batch: Any) -> tuple[Any, dict]:
        if isinstance(batch, Mapping):
            label = next((batch[k] for k in _LABEL_KEYS if k in batch), None)
            missing = [n for n in names if n not in batch]
            if label is None or missing:
                _explain_dict(batch, label is None, missing)
            return label, {n: batch[n] for n in names if n in batch}
        if isinstance(batch, (tuple, list)):
            y = batch[1] if len(batch) > 1 else None
            meta = batch[2] if len(batch) > 2 and isinstance(batch[2], Mapping) else {}
            if names and not meta:
                _explain_tuple(batch, names)
            return y, dict(meta)
        raise wa.AuditError(
            f"cannot read labels and metadata from a {type(batch).__name__} batch: pass "
            "batch_fn=lambda batch: (targets, {name: values})"
        )

    return read


def _explain_dict(batch: Mapping, no_label: bool, missing: list[str]) -> None:
    """A dict batch without a label key the reader knows, or without a metadata key:
    name the keys looked for and the keys the batch has."""
    have = sorted(map(str, batch))
    if missing:
        raise wa.AuditError(
            f"the batch has no key {missing[0]!r} (metadata {missing}); its keys are {have}. "
            "Pass batch_fn= (metadata_fn= for the callbacks): "
            "lambda batch: (targets, {name: values})"
        )
    warnings.warn(
        f"the batch has none of the label keys {list(_LABEL_KEYS)} (its keys are {have}), so "
        "no targets are recorded and usage is not deconfounded from the label; pass "
        "batch_fn= (metadata_fn= for the callbacks) to name the label",
        wa.AuditWarning,
        stacklevel=4,
    )


def _explain_tuple(batch: Sequence, names: list[str]) -> None:
    """A tuple batch whose third element is not a dict of metadata (a
    ``TensorDataset(x, y, site)`` batch): say how its columns can be named."""
    kinds = ", ".join(type(b).__name__ for b in batch)
    raise wa.AuditError(
        f"cannot find metadata {names} in a batch of {len(batch)} elements ({kinds}): the "
        "default reader takes (x, y, {name: values}) tuples and dict batches. For a "
        "TensorDataset(x, y, site) pass batch_fn= (metadata_fn= for the callbacks), e.g. "
        f"lambda b: (b[1], {{{names[0]!r}: b[2]}})"
    )


class _RecordingLoader:
    """Yields the loader's batches; records each one once the model has run on it."""

    def __init__(self, loader: Iterable, auditor: wa.Auditor, batch_fn, ids_fn) -> None:
        self.loader = loader
        self.auditor = auditor
        self.batch_fn = batch_fn
        self.ids_fn = ids_fn
        self._last = None

    def __len__(self) -> int:
        return len(self.loader)  # type: ignore[arg-type]

    def __getattr__(self, name: str) -> Any:  # dataset, batch_size, ... of the real loader
        return getattr(self.loader, name)

    def flush(self) -> None:
        """Record the last batch handed out if the model has run on it."""
        if self._last is not None and self.auditor.pending_count:
            targets, meta = self.batch_fn(self._last)
            ids = self.ids_fn(self._last) if self.ids_fn else None
            self.auditor.record(targets=targets, metadata=meta, sample_ids=ids)
        self._last = None

    def __iter__(self):
        for batch in self.loader:
            self.flush()
            self._last = batch
            yield batch
        self.flush()


def audit_loop(
    evaluate: Callable[..., Any],
    model: Any,
    loader: Iterable,
    *args: Any,
    kinds: Mapping[str, str] | None = None,
    metadata: Mapping[str, str] | None = None,
    batch_fn: Callable[[Any], tuple[Any, dict]] | None = None,
    ids_fn: Callable[[Any], Any] | None = None,
    layer: Any = "auto",
    analyze_kwargs: Mapping[str, Any] | None = None,
    **kwargs: Any,
) -> tuple[Any, wa.AuditResult | None]:
    """Run ``evaluate(model, loader, *args, **kwargs)`` with an auditor attached.

    Returns
    -------
    (whatever evaluate returned, AuditResult)
        Under ``torch.distributed`` every rank gets the (sharded) audit; rank 0 logs it.

    Examples
    --------
    >>> import torch, wsca_audit as wa
    >>> from wsca_audit.integrations.plain import audit_loop
    >>> model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2)).eval()
    >>> def evaluate(model, loader):                 # an existing function, unchanged
    ...     with torch.no_grad():
    ...         return sum(int((model(x).argmax(1) == y).sum()) for x, y, _ in loader)
    >>> g = torch.Generator().manual_seed(0)
    >>> xs = [torch.randn(40, 4, generator=g) for _ in range(5)]
    >>> loader = [(x, (x[:, 0] > 0).long(), {"site": (x[:, 1] > 0).long()}) for x in xs]
    >>> correct, result = audit_loop(evaluate, model, loader, kinds={"site": "categorical"},
    ...                              analyze_kwargs={"n_bootstrap": 20, "n_permutations": 20,
    ...                                              "progress": False})
    >>> result["n_samples"], sorted(result.tasks)
    (200, ['site'])
    """
    kinds = renamed_keyword("metadata", "kinds", metadata, kinds, "audit_loop")
    auditor = wa.Auditor(model, layer=layer, kinds=kinds)
    reader = batch_fn or default_batch_fn(kinds or {})
    wrapped = _RecordingLoader(loader, auditor, reader, ids_fn)
    with auditor.collect():
        out = evaluate(model, wrapped, *args, **kwargs)
        wrapped.flush()  # the loop may have stopped early
    return out, auditor.analyze(**dict(analyze_kwargs or {}))


def audited(
    kinds: Mapping[str, str] | None = None,
    *,
    metadata: Mapping[str, str] | None = None,
    batch_fn: Callable[[Any], tuple[Any, dict]] | None = None,
    ids_fn: Callable[[Any], Any] | None = None,
    layer: Any = "auto",
    log_to_mlflow: bool = False,
    **analyze_kwargs: Any,
):
    """Decorator for ``evaluate(model, loader, ...)``: it returns what it returned before;
    the audit is in ``evaluate.last_result`` (and logged to the active MLflow run with
    ``log_to_mlflow=True``).

    Examples
    --------
    >>> import torch
    >>> from wsca_audit.integrations.plain import audited
    >>> @audited({"site": "categorical"}, n_bootstrap=20, n_permutations=20, progress=False)
    ... def evaluate(model, loader):
    ...     with torch.no_grad():
    ...         for x, y, meta in loader:
    ...             model(x)
    >>> model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2)).eval()
    >>> g = torch.Generator().manual_seed(0)
    >>> xs = [torch.randn(40, 4, generator=g) for _ in range(5)]
    >>> evaluate(model, [(x, (x[:, 0] > 0).long(), {"site": (x[:, 1] > 0).long()}) for x in xs])
    >>> evaluate.last_result["n_samples"]
    200
    """

    kinds = renamed_keyword("metadata", "kinds", metadata, kinds, "audited")

    def wrap(evaluate: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(evaluate)
        def run(model: Any, loader: Iterable, *args: Any, **kwargs: Any) -> Any:
            out, result = audit_loop(
                evaluate,
                model,
                loader,
                *args,
                kinds=kinds,
                batch_fn=batch_fn,
                ids_fn=ids_fn,
                layer=layer,
                analyze_kwargs=analyze_kwargs,
                **kwargs,
            )
            run.last_result = result
            if log_to_mlflow and result is not None:
                wa.log_to_mlflow(result)
            return out

        run.last_result = None
        return run

    return wrap
