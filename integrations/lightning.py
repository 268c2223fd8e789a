"""PyTorch Lightning: audit during validation or test with a ``Callback``.

The callback attaches a :class:`wsca_audit.Auditor` at the start of each audited
validation (or test) epoch, records every batch's labels and metadata after the model has
run on it, and at the end of the epoch analyses, keeps the result, logs the scalars with
the trainer's loggers and, for an ``MLFlowLogger``, the whole report into its run. The
sanity-check pass is skipped. Under DDP every rank collects its shard and rank 0 gets
and logs the gathered audit. ``results_`` is saved in Lightning checkpoints (as JSON-safe
reports) and restored when training or evaluation resumes from one (``ckpt_path=``).

Example
-------
>>> from wsca_audit.integrations.lightning import WSCACallback   # doctest: +SKIP
>>> trainer = lightning.Trainer(callbacks=[WSCACallback({"scanner": "categorical"})],
...                             logger=MLFlowLogger(...))        # doctest: +SKIP
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import wsca_audit as wa

from .plain import default_batch_fn, renamed_keyword

try:  # Lightning 2.x ships as `lightning` (and the older `pytorch_lightning`)
    from lightning.pytorch.callbacks import Callback
except ImportError:  # pragma: no cover - depends on what is installed
    from pytorch_lightning.callbacks import Callback


class WSCACallback(Callback):
    """Audit a LightningModule during validation or test.

    Parameters
    ----------
    kinds : mapping of str to {"categorical", "continuous"}, or sequence of str
        Metadata to audit, read from each batch by key (kinds inferred from a sequence of
        names), as ``kinds=`` of :class:`wsca_audit.Auditor`. ``metadata_keys=`` is its
        old name (deprecated).
    metadata_fn : callable, optional
        ``metadata_fn(batch) -> (targets, {name: values})`` when batches are not
        ``(x, y, meta)`` tuples or dicts holding the keys (see
        ``wsca_audit.integrations.plain.default_batch_fn``).
    every_n_epochs : int, default=1
        Audit every n-th validation epoch of ``Trainer.fit`` (``Trainer.validate`` and
        ``Trainer.test``: always).
    stage : {"validation", "test"}, default="validation"
    module : str, optional
        Attribute of the LightningModule to audit when ``*_step`` calls a submodule
        (``self.net(x)``) rather than ``self(x)``.
    layer : "auto", str or module, default="auto"
        As in :class:`wsca_audit.Auditor`.
    ids_fn : callable, optional
        ``ids_fn(batch) -> sample ids`` (removes DistributedSampler padding under DDP).
    log_report : bool, default=True
        Log the full report into an ``MLFlowLogger``'s run.
    **analyze_kwargs
        Settings for ``analyze()`` (``n_bootstrap``, ``n_permutations``, ``seed``, ...).

    Attributes
    ----------
    results_ : list of (epoch, AuditResult)
        One entry per audited epoch (rank 0). Saved in checkpoints (:meth:`state_dict`)
        and restored from them (:meth:`load_state_dict`).

    Notes
    -----
    The checkpoint entry is keyed by :attr:`state_key`, made of ``stage``, ``module`` and
    the metadata names: callbacks that differ in one of them (a validation and a test
    callback) keep separate states; keep them unchanged to restore from a checkpoint.
    """

    def __init__(
        self,
        kinds: Mapping[str, str] | Sequence[str] | None = None,
        *,
        metadata_keys: Mapping[str, str] | Sequence[str] | None = None,
        metadata_fn: Callable[[Any], tuple[Any, dict]] | None = None,
        every_n_epochs: int = 1,
        stage: str = "validation",
        module: str | None = None,
        layer: Any = "auto",
        ids_fn: Callable[[Any], Any] | None = None,
        log_report: bool = True,
        **analyze_kwargs: Any,
    ) -> None:
        if stage not in ("validation", "test"):
            raise wa.AuditError(f"stage must be 'validation' or 'test'; got {stage!r}")
        if every_n_epochs < 1:
            raise wa.AuditError("every_n_epochs must be >= 1")
        kinds = renamed_keyword("metadata_keys", "kinds", metadata_keys, kinds, "WSCACallback")
        if kinds is None:
            raise wa.AuditError("WSCACallback needs kinds= (the metadata names, or names -> kind)")
        if isinstance(kinds, Mapping):
            self.kinds: dict[str, str] | None = dict(kinds)
            names = list(kinds)
        else:
            self.kinds, names = None, list(kinds)
        self.names = names
        self.metadata_fn = metadata_fn or default_batch_fn(names)
        self.every_n_epochs = every_n_epochs
        self.stage = stage
        self.module = module
        self.layer = layer
        self.ids_fn = ids_fn
        self.log_report = log_report
        self.analyze_kwargs = {"progress": False, **analyze_kwargs}
        self.results_: list[tuple[int, wa.AuditResult]] = []
        self._auditor: wa.Auditor | None = None

    @property
    def metadata_keys(self) -> list[str]:
        """Deprecated: :attr:`names`."""
        warnings.warn("WSCACallback.metadata_keys is now .names", DeprecationWarning, 2)
        return self.names

    @property
    def metadata_kinds(self) -> dict[str, str] | None:
        """Deprecated: :attr:`kinds`."""
        warnings.warn("WSCACallback.metadata_kinds is now .kinds", DeprecationWarning, 2)
        return self.kinds

    @property
    def last_result_(self) -> wa.AuditResult | None:
        return self.results_[-1][1] if self.results_ else None

    # ------------------------------------------------------------------ checkpoint state
    @property
    def state_key(self) -> str:
        """Key of this callback's state in ``checkpoint["callbacks"]``."""
        return self._generate_state_key(stage=self.stage, module=self.module, metadata=self.names)

    def state_dict(self) -> dict[str, Any]:
        """``results_`` as ``{"results": [{"epoch": int, "report": dict}, ...]}`` (JSON-safe)."""
        return {
            "results": [
                {"epoch": int(epoch), "report": result.to_dict()} for epoch, result in self.results_
            ]
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore ``results_`` from :meth:`state_dict`'s output (reports are validated)."""
        self.results_ = [
            (int(entry["epoch"]), wa.AuditResult.from_dict(entry["report"]))
            for entry in state_dict.get("results", [])
        ]

    # ------------------------------------------------------------------ shared logic
    def _active(self, trainer) -> bool:
        if trainer.sanity_checking:
            return False
        if self.stage == "test" or getattr(trainer.state, "fn", "fit") != "fit":
            return True  # Trainer.validate()/test(): always; during fit: every n epochs
        return (trainer.current_epoch + 1) % self.every_n_epochs == 0

    def _start(self, trainer, pl_module) -> None:
        self._close()
        self._auditor = None
        if not self._active(trainer):
            return
        model = getattr(pl_module, self.module) if self.module else pl_module
        self._auditor = wa.Auditor(model, layer=self.layer, kinds=self.kinds).attach()

    def _batch(self, batch) -> None:
        if self._auditor is None:
            return
        targets, meta = self.metadata_fn(batch)
        ids = self.ids_fn(batch) if self.ids_fn else None
        self._auditor.record(targets=targets, metadata=meta, sample_ids=ids)

    def _end(self, trainer, pl_module) -> None:
        if self._auditor is None:
            return
        auditor, self._auditor = self._auditor, None
        auditor.detach()  # removes the hooks
        result = auditor.analyze(**self.analyze_kwargs)  # collective under DDP
        auditor.reset()
        if result is None:  # not rank 0
            return
        epoch = trainer.current_epoch
        self.results_.append((epoch, result))
        self._log(trainer, result, epoch)

    def _log(self, trainer, result: wa.AuditResult, epoch: int) -> None:
        metrics, _, _ = wa.mlflow_payload(result)
        step = trainer.global_step
        for logger in trainer.loggers:
            if type(logger).__name__ == "MLFlowLogger" and self.log_report:
                wa.log_to_mlflow(
                    result,
                    run_id=logger.run_id,
                    tracking_uri=getattr(logger, "_tracking_uri", None),
                    step=step,
                    artifact_path=f"wsca/{self.stage}-epoch{epoch}",
                )
            else:
                logger.log_metrics(metrics, step=step)

    def _close(self) -> None:
        if self._auditor is not None:
            self._auditor.detach()  # removes the hooks

    # ------------------------------------------------------------------ Lightning hooks
    def on_validation_epoch_start(self, trainer, pl_module) -> None:
        if self.stage == "validation":
            self._start(trainer, pl_module)

    def on_validation_batch_end(
        self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0
    ) -> None:
        if self.stage == "validation":
            self._batch(batch)

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        if self.stage == "validation":
            self._end(trainer, pl_module)

    def on_test_epoch_start(self, trainer, pl_module) -> None:
        if self.stage == "test":
            self._start(trainer, pl_module)

    def on_test_batch_end(
        self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0
    ) -> None:
        if self.stage == "test":
            self._batch(batch)

    def on_test_epoch_end(self, trainer, pl_module) -> None:
        if self.stage == "test":
            self._end(trainer, pl_module)

    def on_exception(self, trainer, pl_module, exception) -> None:
        self._close()
        self._auditor = None
