"""pytorch-ignite and MONAI: audit an evaluation with a handler, ``WSCAHandler``.

A MONAI handler is an object with ``attach(engine)``; MONAI's workflows
(``SupervisedEvaluator(..., val_handlers=[...])``, ``EnsembleEvaluator``) call it, and a
plain ignite ``Engine`` takes it the same way. The handler

- hooks the engine's network when an epoch starts (``Events.EPOCH_STARTED``: an
  evaluator runs one) and unhooks it when the epoch completes, when the engine completes,
  or when it raises: the model is left without a hook in every case;
- after each iteration reads the batch's labels and metadata (MONAI's dict batches, or
  the lists of per-sample dicts that ``decollate=True`` leaves; a metadata name that is no
  batch key is read from the image ``MetaTensor``'s ``.meta``, where a DICOM header's
  ``Manufacturer`` lands) and records them;
- at the end of the epoch analyses (``result_``), puts headline numbers into
  ``engine.state.metrics`` under ``wsca.*`` before the other epoch handlers run (so that
  ``StatsHandler`` prints them and ``MLFlowHandler`` logs them), and logs the report and
  the model card into MLflow: into the run of a ``monai.handlers.MLFlowHandler`` attached
  to the same engine (whatever the order of the two, and whether it closes its run on
  completion), else into the active MLflow run, else nowhere unless ``log_to_mlflow=True``.

Every argument is a plain JSON value, so a MONAI bundle builds it with
``{"_target_": "wsca_audit.integrations.ignite.WSCAHandler", "kinds": {...}}``.

Example
-------
>>> handler = WSCAHandler({"scanner": "categorical"}, n_bootstrap=100)   # doctest: +SKIP
>>> evaluator = SupervisedEvaluator(device, loader, net, val_handlers=[handler])  # doctest: +SKIP
>>> evaluator.run(); handler.result_.verdicts                           # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

import wsca_audit as wa

try:
    from ignite.engine import Engine, Events
except ImportError as exc:  # pragma: no cover - depends on what is installed
    raise ImportError(
        "wsca_audit.integrations.ignite needs `pip install pytorch-ignite` (or "
        '`pip install "wsca-audit[monai]"`)'
    ) from exc


def _as_array(values: Any) -> np.ndarray:
    if hasattr(values, "detach"):
        values = values.detach().cpu().numpy()
    arr = np.asarray(values)
    return arr.reshape(len(arr), -1)[:, 0] if arr.ndim > 1 and arr[0].size == 1 else arr


def _meta_value(image: Any, name: str) -> Any:
    meta = getattr(image, "meta", None)
    if not isinstance(meta, Mapping) or name not in meta:
        return None
    return meta[name]


def read_monai_batch(
    batch: Any, names: Sequence[str], label_key: str = "label", image_key: str = "image"
) -> tuple[Any, dict[str, np.ndarray]]:
    """Labels and metadata of a MONAI batch: a dict of batched values, or the list of
    per-sample dicts that decollation leaves. A metadata name that is not a key is read
    from the image's ``MetaTensor.meta`` (a DICOM or NIfTI header field).

    Examples
    --------
    >>> y, meta = read_monai_batch([{"label": 1, "site": "a"}, {"label": 0, "site": "b"}],
    ...                            ["site"])
    >>> y.tolist(), meta["site"].tolist()
    ([1, 0], ['a', 'b'])
    """
    if isinstance(batch, Mapping):
        rows = None
    elif isinstance(batch, Sequence) and batch and isinstance(batch[0], Mapping):
        rows = list(batch)
    else:
        raise wa.AuditError(
            f"cannot read labels and metadata from a {type(batch).__name__} batch: pass "
            "batch_transform=lambda batch: (targets, {name: values})"
        )

    def column(key: str, required: bool) -> np.ndarray | None:
        if rows is None:
            if key in batch:
                return _as_array(batch[key])
            value = _meta_value(batch.get(image_key), key)
        elif key in rows[0]:
            return _as_array([_as_array([r[key]])[0] for r in rows])
        else:
            found = [_meta_value(r.get(image_key), key) for r in rows]
            value = None if any(v is None for v in found) else [_as_array([v])[0] for v in found]
        if value is None:
            if not required:
                return None
            keys = sorted(map(str, batch if rows is None else rows[0]))
            raise wa.AuditError(
                f"metadata {key!r} is neither a key of the batch ({keys}) nor a field of the "
                f"{image_key!r} MetaTensor's .meta: add it to the batch, or pass "
                "batch_transform=lambda batch: (targets, {name: values})"
            )
        return _as_array(value)

    return column(label_key, False), {name: column(name, True) for name in names}


class WSCAHandler:
    """Audit an ignite / MONAI evaluation (see the module docstring).

    Parameters
    ----------
    kinds : mapping of str to {"categorical", "continuous"}
        The metadata to audit, by batch key (or ``MetaTensor.meta`` field).
    label_key, image_key : str, default "label", "image"
        Where MONAI's batches keep the labels and the images.
    batch_transform : callable, optional
        ``batch_transform(engine.state.batch) -> (targets, {name: values})`` for other
        batch layouts.
    output_transform : callable, optional
        ``output_transform(engine.state.output) -> (targets, {name: values})``: read them
        from the step's output instead (MONAI's output dicts keep ``"label"``).
    network : str, optional
        Attribute of the engine holding the model (default: ``network``, or the first of
        ``networks`` for an ``EnsembleEvaluator``; ``network_index`` picks another).
    network_index : int, default=0
    ids_key : str, optional
        Batch key of each sample's id: under ``torchrun``, the padding that
        ``DistributedSampler`` repeats is then dropped from the (sharded) audit.
    layer, task : as :class:`wsca_audit.Auditor` / :func:`wsca_audit.analyze`.
    log_to_mlflow : bool, optional
        ``True``: always log (the usual rules pick the run); ``False``: never; default:
        when an ``MLFlowHandler`` is attached to the engine or an MLflow run is active.
    card : bool, default=True
        Log the model card with the report.
    **analyze_kwargs
        Settings of ``analyze()`` (``n_bootstrap``, ``seed``, ...), plain JSON values.

    Attributes
    ----------
    result_ : AuditResult or None
        The last audit (on every rank under ``torchrun``: the audit is sharded, rank 0
        logs it).
    results_ : list of (epoch, AuditResult)
        Every audit of this handler, one per epoch run.
    run_id_ : str or None
        The MLflow run it was logged into.
    """

    def __init__(
        self,
        kinds: Mapping[str, str],
        *,
        label_key: str = "label",
        image_key: str = "image",
        batch_transform: Callable[[Any], tuple[Any, dict]] | None = None,
        output_transform: Callable[[Any], tuple[Any, dict]] | None = None,
        network: str | None = None,
        network_index: int = 0,
        ids_key: str | None = None,
        layer: Any = "auto",
        log_to_mlflow: bool | None = None,
        card: bool = True,
        **analyze_kwargs: Any,
    ) -> None:
        if not isinstance(kinds, Mapping) or not kinds:
            raise wa.AuditError("WSCAHandler needs kinds={name: 'categorical' | 'continuous'}")
        self.kinds = dict(kinds)
        self.label_key, self.image_key = label_key, image_key
        self.batch_transform, self.output_transform = batch_transform, output_transform
        self.network, self.network_index = network, network_index
        self.ids_key = ids_key
        self.layer = layer
        self.log_to_mlflow = log_to_mlflow
        self.card = card
        self.analyze_kwargs = {"progress": False, **analyze_kwargs}
        self.result_: wa.AuditResult | None = None
        self.results_: list[tuple[int, wa.AuditResult]] = []
        self.run_id_: str | None = None
        self._auditor: wa.Auditor | None = None
        self._mlflow: Any = None  # the engine's MLFlowHandler, if any
        self._run: tuple[str, str | None] | None = None  # its (run id, tracking URI)

    # ------------------------------------------------------------------ ignite
    def attach(self, engine: Engine) -> None:
        """Register the handler's events on ``engine`` (MONAI calls this itself)."""
        if not engine.has_event_handler(self._started, Events.EPOCH_STARTED):
            # each epoch is an audit (an evaluator runs one; an engine run for several
            # epochs gets one audit per epoch, the last in result_)
            engine.add_event_handler(Events.EPOCH_STARTED, self._started)
            engine.add_event_handler(Events.ITERATION_COMPLETED, self._iteration)
            engine.add_event_handler(Events.EPOCH_COMPLETED, self._epoch_completed)
            engine.add_event_handler(Events.COMPLETED, self._unhook)
            engine.add_event_handler(Events.EXCEPTION_RAISED, self._failed)
            # first among the epoch's handlers: StatsHandler and MLFlowHandler, attached
            # before or after, then see the wsca.* metrics
            _move_first(engine, Events.EPOCH_COMPLETED, self._epoch_completed)
            _move_first(engine, Events.EXCEPTION_RAISED, self._failed)

    def _model(self, engine: Engine):
        if self.network is not None:
            return getattr(engine, self.network)
        if getattr(engine, "network", None) is not None:
            return engine.network
        nets = getattr(engine, "networks", None)
        if nets:
            return nets[self.network_index]
        raise wa.AuditError(
            "the engine has no `network` (a plain ignite Engine): pass network='<attribute "
            "of the engine holding the model>' to WSCAHandler"
        )

    def _started(self, engine: Engine) -> None:
        self._unhook(engine)
        self._mlflow = _find_mlflow_handler(engine)
        self._run = None
        self._auditor = wa.Auditor(self._model(engine), layer=self.layer, kinds=self.kinds)
        self._auditor.attach()

    def _iteration(self, engine: Engine) -> None:
        if self._auditor is None:
            return
        if self._mlflow is not None and self._run is None:
            self._note_run()  # before a closing MLFlowHandler forgets it
        if not self._auditor.pending_count:
            raise wa.AuditError(
                "no forward pass reached the audited layer during this iteration: pass "
                "network=<the engine attribute that holds the model> and layer="
            )
        batch = engine.state.batch
        if self.output_transform is not None:
            targets, meta = self.output_transform(engine.state.output)
        elif self.batch_transform is not None:
            targets, meta = self.batch_transform(batch)
        else:
            targets, meta = read_monai_batch(batch, list(self.kinds), self.label_key,
                                             self.image_key)  # fmt: skip
        ids = None
        if self.ids_key is not None:
            ids = read_monai_batch(batch, [self.ids_key], self.label_key, self.image_key)[1]
            ids = ids[self.ids_key]
        self._auditor.record(targets=targets, metadata=meta, sample_ids=ids)

    def _epoch_completed(self, engine: Engine) -> None:
        auditor = self._auditor
        if auditor is None:
            return
        self._unhook(engine)
        context = {"stage": "ignite", "epoch": int(engine.state.epoch),
                   "iteration": int(engine.state.iteration)}  # fmt: skip
        result = auditor.analyze(context=context, **self.analyze_kwargs)  # collective
        auditor.reset()
        if result is None:  # gather=True, not rank 0
            return
        self.result_ = result
        self.results_.append((int(engine.state.epoch), result))
        engine.state.metrics.update(_headline(result))
        # one report per epoch when the engine runs several (none overwrites another)
        several = (engine.state.max_epochs or 1) > 1
        self._log(result, step=int(engine.state.epoch),
                  artifact_path=f"wsca/epoch{engine.state.epoch}" if several else "wsca")  # fmt: skip

    def _unhook(self, engine: Engine | None = None) -> None:
        if self._auditor is not None:
            self._auditor.detach()
        if self._mlflow is not None and self._run is None:
            self._note_run()

    def _failed(self, engine: Engine, exc: BaseException) -> None:
        self._unhook(engine)
        self._auditor = None
        handlers = [h for h, *_ in getattr(engine, "_event_handlers", {}).get(
            Events.EXCEPTION_RAISED, [])]  # fmt: skip
        if not handlers or handlers[-1] == self._failed:
            raise exc  # the last handler: ignite would swallow it otherwise

    # ------------------------------------------------------------------ MLflow
    def _note_run(self) -> None:
        run = getattr(self._mlflow, "cur_run", None)
        if run is not None:
            client = getattr(self._mlflow, "client", None)
            self._run = (run.info.run_id, getattr(client, "tracking_uri", None))

    def _log(self, result: wa.AuditResult, *, step: int, artifact_path: str) -> None:
        """Into the MLFlowHandler's run, else the active run; elsewhere only when
        ``log_to_mlflow=True`` (the usual rules of :func:`wsca_audit.log_to_mlflow`)."""
        if self.log_to_mlflow is False:
            return
        if self._mlflow is not None and self._run is None:
            self._note_run()
        target = self._run
        if target is None:
            import mlflow

            active = mlflow.active_run()
            target = (active.info.run_id, None) if active is not None else None
        if target is None and not self.log_to_mlflow:
            return
        run_id, uri = target or (None, None)
        self.run_id_ = wa.log_to_mlflow(result, run_id, tracking_uri=uri, model_card=self.card,
                                        step=step, artifact_path=artifact_path)  # fmt: skip


def _headline(result: wa.AuditResult) -> dict[str, float]:
    """The numbers ``StatsHandler`` prints: the flagged count, the largest effect, and
    each variable's effect and usage."""
    metrics, _, _ = wa.mlflow_payload(result)
    return {
        k: v
        for k, v in metrics.items()
        if k in ("wsca.n_flagged", "wsca.max_abs_effect")
        or (k.count(".") == 2 and k.endswith((".effect", ".usage")))
    }


def _find_mlflow_handler(engine: Engine) -> Any:
    """The ``monai.handlers.MLFlowHandler`` attached to ``engine``, if any."""
    for handlers in getattr(engine, "_event_handlers", {}).values():
        for func, *_ in handlers:
            owner = getattr(func, "__self__", None)
            if type(owner).__name__ == "MLFlowHandler":
                return owner
    return None


def _move_first(engine: Engine, event: Any, func: Callable) -> None:
    """Put ``func`` first among ``event``'s handlers (ignite runs them in list order)."""
    handlers = getattr(engine, "_event_handlers", {}).get(event)
    if not handlers:
        return
    for i, entry in enumerate(handlers):
        if entry[0] == func:
            handlers.insert(0, handlers.pop(i))
            return
