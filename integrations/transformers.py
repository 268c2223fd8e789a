"""Hugging Face Transformers: audit during ``Trainer.evaluate()`` with a ``TrainerCallback``.

The Trainer's callbacks see no batches (``on_prediction_step`` gets none), so the
callback hooks the model itself: the :class:`wsca_audit.Auditor` is attached when the
Trainer is built (``Trainer(callbacks=[...])``) and ignores train-mode forward passes.
After each evaluation step it records the labels and metadata of the samples just seen,
read from the columns of the dataset *being evaluated* (the Trainer's evaluation
dataloader: ``evaluate(eval_dataset=other)`` is read from ``other``), at the rows its
batch sampler yields, which are recorded as the sample ids (under accelerate on several
processes, each rank's own shard; the audit then runs sharded, docs/integrations.md).
Columns that ``remove_unused_columns`` stripped from it are taken from the callback's
``eval_dataset`` only when that is the evaluated data (the same labels, row for row);
otherwise the callback says which columns to keep. Forward passes outside an
evaluation are never recorded; ``on_evaluate`` analyses, adds ``eval_wsca.*`` scalars to the returned
metrics and, when ``report_to`` includes ``"mlflow"``, logs the report into the active
MLflow run (the one the Trainer's ``MLflowCallback`` opened).

Example
-------
>>> cb = WSCATrainerCallback({"scanner": "categorical"}, eval_dataset)   # doctest: +SKIP
>>> trainer = Trainer(model, args, eval_dataset=eval_dataset, callbacks=[cb])  # doctest: +SKIP
>>> trainer.evaluate()["eval_wsca.scanner.usage"], cb.last_result_       # doctest: +SKIP
"""

from __future__ import annotations

import itertools
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

import wsca_audit as wa

from .plain import renamed_keyword, unused_artifact_path

try:
    from transformers import TrainerCallback
except ImportError as exc:  # pragma: no cover - depends on what is installed
    raise ImportError(
        "wsca_audit.integrations.transformers needs `pip install transformers`"
    ) from exc


def _evaluation_order(loader: Any) -> np.ndarray | None:
    """The rows of the evaluated dataset that this process sees, in order: the batches of
    the evaluation dataloader's batch sampler (the Trainer's is sequential). Under
    accelerate on several processes that is this rank's shard: batches rank, rank +
    world, ..., the last padded with rows from the start (the audit keeps the first of
    each sample id). None when the loader has no batch sampler (an iterable dataset)."""
    batches = getattr(loader, "batch_sampler", None)
    if batches is None:
        return None
    try:
        return np.fromiter(itertools.chain.from_iterable(batches), dtype=np.int64)
    except (TypeError, ValueError):
        return None


def _column(data: Any, name: str) -> np.ndarray:
    """One column of a datasets.Dataset, a mapping of columns, or a sequence of dict rows."""
    if isinstance(data, Mapping) or hasattr(data, "column_names"):
        try:
            values = data[name]
        except (KeyError, ValueError) as exc:
            raise wa.AuditError(f"the evaluation data has no column {name!r}") from exc
    elif isinstance(data, Sequence) or hasattr(data, "__getitem__"):
        try:
            values = [data[i][name] for i in range(len(data))]
        except (KeyError, TypeError) as exc:
            raise wa.AuditError(
                f"cannot read column {name!r} from the evaluation rows ({type(data).__name__})"
            ) from exc
    else:
        raise wa.AuditError(f"cannot read columns from {type(data).__name__}")
    if hasattr(values, "detach"):
        values = values.detach().cpu().numpy()
    values = [v.item() if hasattr(v, "item") and getattr(v, "ndim", 0) == 0 else v for v in values]
    return np.asarray(values)


class WSCATrainerCallback(TrainerCallback):
    """Audit a Transformers model at every ``evaluate()``.

    Parameters
    ----------
    kinds : mapping of str to {"categorical", "continuous"}
        Columns of ``eval_dataset`` to audit, as ``kinds=`` of :class:`wsca_audit.Auditor`
        (``metadata_columns=`` is its old name, deprecated).
    eval_dataset : datasets.Dataset, mapping of column -> values, or sequence of dict rows
        The evaluation data, in the order the Trainer evaluates it (its own
        ``eval_dataset``, or the columns that ``remove_unused_columns`` strips from it).
    label_column : str, default="labels"
        Column with the class labels (``"label"`` is tried when it is missing).
    layer : "auto", str or module, default="auto"
    log_to_mlflow : bool, optional
        Log the report into the active MLflow run; default: when ``report_to`` has mlflow.
    **analyze_kwargs
        Settings for ``analyze()``.

    Attributes
    ----------
    results_ : list of (global_step, AuditResult)
    """

    def __init__(
        self,
        kinds: Mapping[str, str] | None = None,
        eval_dataset: Any = None,
        *,
        metadata_columns: Mapping[str, str] | None = None,
        label_column: str = "labels",
        layer: Any = "auto",
        log_to_mlflow: bool | None = None,
        **analyze_kwargs: Any,
    ) -> None:
        kinds = renamed_keyword(
            "metadata_columns", "kinds", metadata_columns, kinds, "WSCATrainerCallback"
        )
        if kinds is None or eval_dataset is None:
            raise wa.AuditError("WSCATrainerCallback needs kinds= and eval_dataset=")
        self.kinds = dict(kinds)
        self.eval_dataset = eval_dataset
        self.label_column = label_column
        self.layer = layer
        self.log_to_mlflow = log_to_mlflow
        self.analyze_kwargs = {"progress": False, **analyze_kwargs}
        self.results_: list[tuple[int, wa.AuditResult]] = []
        self._auditor: wa.Auditor | None = None
        self._offset = 0
        self._columns: dict[str, np.ndarray] | None = None
        self._order: np.ndarray | None = None  # the rows this process evaluates

    @property
    def metadata_columns(self) -> dict[str, str]:
        """Deprecated: :attr:`kinds`."""
        warnings.warn("WSCATrainerCallback.metadata_columns is now .kinds", DeprecationWarning, 2)
        return self.kinds

    @property
    def last_result_(self) -> wa.AuditResult | None:
        return self.results_[-1][1] if self.results_ else None

    def _labels(self, data: Any) -> np.ndarray:
        try:
            return _column(data, self.label_column)
        except wa.AuditError:
            try:
                return _column(data, "label")
            except wa.AuditError:
                raise wa.AuditError(
                    f"the evaluated data has no label column {self.label_column!r} (nor "
                    "'label'): pass label_column= to WSCATrainerCallback"
                ) from None

    def _read_columns(self, loader: Any = None) -> dict[str, np.ndarray]:
        """The labels and metadata of the data being evaluated (see the module docstring)."""
        if self._columns is not None:
            return self._columns
        data = getattr(loader, "dataset", None)
        data = self.eval_dataset if data is None else data
        labels = self._labels(data)
        cols: dict[str, np.ndarray] = {}
        for name in self.kinds:
            try:
                cols[name] = _column(data, name)
            except wa.AuditError:
                pass
        missing = [n for n in self.kinds if n not in cols]
        if missing and data is not self.eval_dataset:
            ref = self._labels(self.eval_dataset)
            if len(ref) != len(labels) or not np.array_equal(ref, labels):
                raise wa.AuditError(
                    f"the dataset being evaluated ({len(labels)} rows) lacks the metadata "
                    f"column(s) {missing} and is not the callback's eval_dataset "
                    f"({len(ref)} rows, other labels): keep the columns in the evaluated "
                    "data (TrainingArguments(remove_unused_columns=False) and a collator "
                    "that drops them), or give this dataset to the callback"
                )
            cols.update({n: _column(self.eval_dataset, n) for n in missing})
        self._columns = {"__labels__": labels, **cols}
        return self._columns

    def _read_order(self, loader: Any, n_rows: int) -> np.ndarray:
        """The rows of the evaluated data this process sees, in order (see
        :func:`_evaluation_order`); all of them in turn when the loader does not say,
        which only one process may assume."""
        if self._order is None:
            order = _evaluation_order(loader)
            if order is None:
                import torch.distributed as dist

                if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
                    raise wa.AuditError(
                        "cannot tell which rows of the evaluated data this rank sees: its "
                        f"evaluation dataloader ({type(loader).__name__}) has no batch "
                        "sampler (an iterable dataset?); evaluate a map-style dataset"
                    )
                order = np.arange(n_rows)
            self._order = order
        return self._order

    def _attach(self, model) -> None:
        if self._auditor is not None or model is None:
            return
        self._auditor = wa.Auditor(
            model, layer=self.layer, kinds=self.kinds, skip_train_mode=True
        ).attach()

    def _detach(self) -> None:
        if self._auditor is not None:
            self._auditor.detach()
        self._auditor, self._offset = None, 0

    # ------------------------------------------------------------------ Trainer events
    def on_init_end(self, args, state, control, model=None, **kwargs):
        self._attach(model)

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self._attach(model)  # when the callback was added after the Trainer was built

    def on_step_end(self, args, state, control, **kwargs):
        if self._auditor is not None:
            self._auditor.discard_pending()  # forwards made outside evaluation

    def on_prediction_step(self, args, state, control, model=None, eval_dataloader=None, **kwargs):
        if self._auditor is None:
            warnings.warn(
                "WSCATrainerCallback was not attached before evaluation: pass it in "
                "Trainer(callbacks=[...]) so that it can hook the model",
                wa.AuditWarning,
                stacklevel=2,
            )
            return
        stray = self._auditor.discard_pending(keep_last=1)  # forwards outside this step
        if stray:
            warnings.warn(
                f"{stray} embedding(s) from forward passes outside the evaluation were "
                "ignored (a model(...) call after the Trainer was built)",
                wa.AuditWarning,
                stacklevel=2,
            )
        n = self._auditor.pending_count
        if n == 0:
            return
        cols = self._read_columns(eval_dataloader)
        order = self._read_order(eval_dataloader, len(cols["__labels__"]))
        end = self._offset + n
        if end > len(order):
            raise wa.AuditError(
                f"evaluation reached sample {end} but this process evaluates "
                f"{len(order)} rows: does the model's forward run the head more than once "
                "per batch?"
            )
        rows = order[self._offset : end]  # the dataset's rows, which are the sample ids
        self._auditor.record(
            targets=cols["__labels__"][rows],
            metadata={name: cols[name][rows] for name in self.kinds},
            sample_ids=rows,
        )
        self._offset = end

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        if self._auditor is None or self._auditor.n_recorded == 0:
            return
        auditor = self._auditor
        # the next evaluation may read other data
        self._offset, self._columns, self._order = 0, None, None
        # a folder per audit: a second evaluate() at the same step gets its own
        path = unused_artifact_path(f"wsca/step{state.global_step}", self.results_)
        context = {"stage": "evaluate", "epoch": state.epoch, "global_step": state.global_step,
                   "artifact_path": path}  # fmt: skip
        result = auditor.analyze(context=context, **self.analyze_kwargs)
        auditor.reset()
        if result is None:  # gather=True, not rank 0
            return
        self.results_.append((state.global_step, result))
        if metrics is not None:
            scalars, _, _ = wa.mlflow_payload(result)
            metrics.update({f"eval_{k}": v for k, v in scalars.items()})
        report_to = (
            args.report_to if isinstance(args.report_to, (list, tuple)) else [args.report_to]
        )
        use_mlflow = self.log_to_mlflow
        if use_mlflow is None:
            use_mlflow = "mlflow" in report_to or "all" in report_to
        if use_mlflow:
            import mlflow

            if mlflow.active_run() is None:
                warnings.warn(
                    "no active MLflow run: the audit report was not logged",
                    wa.AuditWarning,
                    stacklevel=2,
                )
            else:
                wa.log_to_mlflow(result, step=state.global_step, artifact_path=path)

    def on_predict(self, args, state, control, metrics=None, **kwargs):
        # Trainer.predict() runs the same loop: its samples are not an evaluation
        if self._auditor is not None:
            self._auditor.discard_pending()
            self._auditor.reset()
        self._offset, self._columns, self._order = 0, None, None

    def on_train_end(self, args, state, control, **kwargs):
        if self._auditor is not None:
            self._auditor.discard_pending()

    def close(self) -> None:
        """Remove the hooks from the model."""
        self._detach()
