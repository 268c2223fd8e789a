"""PyTorch Lightning: audit during validation or test with a ``Callback``.

The callback attaches a :class:`wsca_audit.Auditor` at the start of each audited
validation (or test) epoch, records every batch's labels and metadata after the model has
run on it, and at the end of the epoch analyses, keeps the result, logs the scalars with
the trainer's loggers and, for an ``MLFlowLogger``, the whole report into its run. The
sanity-check pass is skipped. Under DDP every rank collects its shard, the audit runs
where the embeddings lie, every rank gets it and rank 0 logs it. Each dataloader of a
validation is audited on its own.

Every audit is kept and findable: its artifact folder is
``wsca/<stage>-epoch<E>-step<S>[-dl<i>]`` (``-2``, ``-3``... when that name was used
before: two ``validate()`` calls, or a mid-epoch validation with ``val_check_interval``),
its metrics are logged at the global step, moved on by one where an earlier audit of the
same run used it (``validate()`` after ``fit``, ``test()``, a second dataloader: every
audit its own point, in order; ``wsca.epoch`` and ``wsca.global_step`` beside), and
``report["model"]["context"]`` holds the stage, epoch, global step, dataloader and
artifact path. ``results_`` is saved in Lightning checkpoints (as JSON-safe reports),
merged back when training or evaluation resumes from one (``ckpt_path=``), and an audit
of a checkpoint's weights is labelled with that checkpoint's epoch and step.

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

from .plain import artifact_path_of, default_batch_fn, renamed_keyword, unused_artifact_path

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
        One entry per audit, in order (on every rank): per validation (or test) epoch, per
        mid-epoch validation and per dataloader; each result's
        ``["model"]["context"]`` says which. Saved in checkpoints (:meth:`state_dict`)
        and merged back from them (:meth:`load_state_dict`).

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
        self._auditors: dict[int, wa.Auditor] = {}  # per dataloader of this epoch
        self._current: int | None = None  # the dataloader whose auditor is attached
        self._model: Any = None
        self._ckpt: tuple[int, int] | None = None  # (epoch, step) of loaded weights

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
        """Merge the audits of :meth:`state_dict`'s output into ``results_``: those this
        callback does not hold yet (by artifact path) come first, in their order; none
        that it holds is lost (``validate(ckpt_path=...)`` after ``fit`` keeps them all)."""
        held = {artifact_path_of(r) for _, r in self.results_}
        restored = [
            (int(entry["epoch"]), wa.AuditResult.from_dict(entry["report"]))
            for entry in state_dict.get("results", [])
        ]
        fresh = [(e, r) for e, r in restored if artifact_path_of(r) not in held]
        self.results_ = fresh + self.results_

    def on_load_checkpoint(self, trainer, pl_module, checkpoint: dict[str, Any]) -> None:
        # the weights now loaded are those of the checkpoint's epoch, not the trainer's
        self._ckpt = (int(checkpoint.get("epoch", 0)), int(checkpoint.get("global_step", 0)))

    # ------------------------------------------------------------------ shared logic
    def _active(self, trainer) -> bool:
        if trainer.sanity_checking:
            return False
        if self.stage == "test" or getattr(trainer.state, "fn", "fit") != "fit":
            return True  # Trainer.validate()/test(): always; during fit: every n epochs
        return (trainer.current_epoch + 1) % self.every_n_epochs == 0

    def _start(self, trainer, pl_module) -> None:
        self._close()
        self._auditors, self._current, self._model = {}, None, None
        if not self._active(trainer):
            return
        if self.module and not hasattr(pl_module, self.module):
            raise wa.AuditError(
                f"the LightningModule has no attribute module={self.module!r}; its "
                f"submodules are {[n for n, _ in pl_module.named_children()]}"
            )
        self._model = getattr(pl_module, self.module) if self.module else pl_module

    def _switch(self, dataloader_idx: int) -> None:
        """Hook the auditor of this dataloader (validation runs its dataloaders one after
        the other, so this switches once per dataloader)."""
        if self._model is None or self._current == dataloader_idx:
            return
        if self._current is not None:
            self._auditors[self._current].detach()
        if dataloader_idx not in self._auditors:
            self._auditors[dataloader_idx] = wa.Auditor(
                self._model, layer=self.layer, kinds=self.kinds
            )
        self._auditors[dataloader_idx].attach()
        self._current = dataloader_idx

    def _batch(self, batch, dataloader_idx: int) -> None:
        if self._model is None:
            return
        auditor = self._auditors[dataloader_idx]
        if not auditor.pending_count:
            raise wa.AuditError(_NO_FORWARD)
        targets, meta = self.metadata_fn(batch)
        ids = self.ids_fn(batch) if self.ids_fn else None
        auditor.record(targets=targets, metadata=meta, sample_ids=ids)

    def _end(self, trainer, pl_module) -> None:
        if self._model is None:
            return
        self._close()
        auditors, self._auditors, self._current, self._model = self._auditors, {}, None, None
        for idx, auditor in sorted(auditors.items()):
            context = self._context(trainer, idx if len(auditors) > 1 else None)
            result = auditor.analyze(context=context, **self.analyze_kwargs)  # collective
            auditor.reset()
            if result is not None:  # every rank (None: gather=True, not rank 0)
                self.results_.append((context["epoch"], result))
                self._log(trainer, result, context)

    def _context(self, trainer, dataloader_idx: int | None) -> dict[str, Any]:
        """Where this audit was made, and the unique artifact folder it gets."""
        loaded = self._ckpt if getattr(trainer.state, "fn", "fit") != "fit" else None
        epoch, step = loaded or (int(trainer.current_epoch), int(trainer.global_step))
        name = f"wsca/{self.stage}-epoch{epoch}-step{step}"
        if dataloader_idx is not None:
            name += f"-dl{dataloader_idx}"
        path = unused_artifact_path(name, self.results_)
        return {"stage": self.stage, "epoch": epoch, "global_step": step,
                "dataloader_idx": dataloader_idx, "artifact_path": path,
                "audit_index": len(self.results_),
                **({"checkpoint": True} if loaded else {})}  # fmt: skip

    def _log(self, trainer, result: wa.AuditResult, context: dict[str, Any]) -> None:
        metrics, _, _ = wa.mlflow_payload(result)
        keys = [str(getattr(lg, "run_id", None) or id(lg)) for lg in trainer.loggers]
        # the global step, moved on where an audit of this run already used it (validate()
        # after fit, test(), two dataloaders): each audit its own point, in order
        step = max([int(context["global_step"])] + [_LAST_STEP.get(k, -1) + 1 for k in keys])
        _LAST_STEP.update(dict.fromkeys(keys, step))
        extra = {"wsca.epoch": float(context["epoch"]),
                 "wsca.global_step": float(context["global_step"])}  # fmt: skip
        for logger in trainer.loggers:
            if type(logger).__name__ == "MLFlowLogger" and self.log_report:
                run = wa.log_to_mlflow(
                    result,
                    run_id=logger.run_id,
                    tracking_uri=getattr(logger, "_tracking_uri", None),
                    step=step,
                    artifact_path=context["artifact_path"],
                )
                if run is not None:
                    logger.log_metrics(extra, step=step)
            else:
                logger.log_metrics({**metrics, **extra}, step=step)

    def _close(self) -> None:
        for auditor in self._auditors.values():
            auditor.detach()  # removes the hooks

    # ------------------------------------------------------------------ Lightning hooks
    def on_validation_epoch_start(self, trainer, pl_module) -> None:
        if self.stage == "validation":
            self._start(trainer, pl_module)

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0):
        if self.stage == "validation":
            self._switch(dataloader_idx)

    def on_validation_batch_end(
        self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0
    ) -> None:
        if self.stage == "validation":
            self._batch(batch, dataloader_idx)

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        if self.stage == "validation":
            self._end(trainer, pl_module)

    def on_test_epoch_start(self, trainer, pl_module) -> None:
        if self.stage == "test":
            self._start(trainer, pl_module)

    def on_test_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0):
        if self.stage == "test":
            self._switch(dataloader_idx)

    def on_test_batch_end(
        self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0
    ) -> None:
        if self.stage == "test":
            self._batch(batch, dataloader_idx)

    def on_test_epoch_end(self, trainer, pl_module) -> None:
        if self.stage == "test":
            self._end(trainer, pl_module)

    def on_exception(self, trainer, pl_module, exception) -> None:
        self._close()
        self._auditors, self._current, self._model = {}, None, None

    def teardown(self, trainer, pl_module, stage: str) -> None:
        self._ckpt = None  # a later validate() without ckpt_path= reads the live weights


# the last metric step an audit used, per logger run (shared by every callback of a run)
_LAST_STEP: dict[str, int] = {}

_NO_FORWARD = (
    "no forward pass reached the audited layer during this batch: the step ran a "
    "submodule (self.net(x)) rather than the LightningModule itself; pass "
    "WSCACallback(..., module='net'), the attribute it calls"
)
