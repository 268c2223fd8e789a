"""Hook registration, layer resolution and the ``Auditor`` that collects embeddings.

The embedding is the INPUT of a chosen module (a forward pre-hook sees exactly the
tensor the head consumes). ``layer="auto"`` traces one forward pass with pre-hooks on
every ``nn.Linear`` and takes the last one called, in forward order (registration order
is not trusted: heads are often defined before the backbone).
"""

from __future__ import annotations

import difflib
import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
from torch import nn

from . import distributed as dist_data
from .embeddings import KINDS, EmbeddingSet
from .errors import AuditError, AuditWarning, renamed
from .head_search import auto_head
from .primary import TASKS, PrimaryHead
from .store import EmbeddingStore
from .validation import check_consistent_length, column_or_1d, target_array


def _module_name(model: nn.Module, module: nn.Module) -> str:
    for name, m in model.named_modules():
        if m is module:
            return name or "<root>"
    raise AuditError(f"layer {type(module).__name__} is not a submodule of the model")


def resolve_layer(model: nn.Module, layer: str | nn.Module) -> tuple[str, nn.Module]:
    """Find the module named by ``layer`` (a dotted name or a module object).

    Raises an AuditError that lists the closest candidate names when it does not exist.
    """
    if isinstance(layer, nn.Module):
        return _module_name(model, layer), layer
    if not isinstance(layer, str):
        raise AuditError(f"layer must be 'auto', a dotted module name or a module; got {layer!r}")
    try:
        return layer, model.get_submodule(layer)
    except AttributeError:
        names = [n for n, _ in model.named_modules() if n]
        close = difflib.get_close_matches(layer, names, n=5, cutoff=0.4)
        linear = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
        hint = f" Closest names: {close}." if close else ""
        raise AuditError(
            f"the model has no module named {layer!r}.{hint} Linear layers: {linear[-8:]}; "
            f"all modules: {names[:30]}{' ...' if len(names) > 30 else ''}"
        ) from None


class Auditor:
    """Collect penultimate-layer embeddings from any ``torch.nn.Module`` and audit them.

    Parameters
    ----------
    model : torch.nn.Module
        A trained classifier.
    layer : "auto", str or torch.nn.Module, default="auto"
        The embedding is this module's INPUT. ``"auto"`` is the last ``nn.Linear`` reached
        in forward order (its weight is then the primary head).
    kinds : mapping of str to {"categorical", "continuous"}, optional
        The metadata columns to audit and their kinds (their values are given to
        :meth:`record` as ``metadata=``). ``None`` accepts every recorded column and
        infers its kind. ``metadata=`` is its old name (deprecated).
    primary_weight, primary_bias : array-like, optional
        The primary head, when it is not the chosen layer (or the next ``nn.Linear``).
    keep_on_device : bool, default=False
        Keep embeddings on the GPU instead of copying them to pinned host memory.
    max_memory_mb : float, optional
        Memory budget for the collected embeddings: past it they are spilled to a
        memory-mapped file in a temporary folder, and :meth:`analyze` keeps its working
        copies memory-mapped as well (on the CPU). None: no limit.
    skip_train_mode : bool, default=False
        Ignore forward passes made while the model is in train mode (for hooks that stay
        on across training and evaluation, as in the framework integrations).
    name : str, optional
        The model's name, for the report's and card's titles (default: its class name).
    task : {"binary", "multiclass", "multilabel", "regression"}, optional
        The head's kind (torchmetrics' words); None infers it from the head's outputs and
        the targets and says so in the report's warnings (docs/heads.md).
    output_names : sequence of str, optional
        The name of each head output (class or finding names), for per-output results.
    target_unit : str, optional
        A regression target's unit (``"years"``), for the effect in the target's units.
    classes : sequence, optional
        The class of each output in the head's order, for targets that are not class
        indices (integer targets ARE class indices).
    output_key : str or int, optional
        The entry, attribute or tuple index of the model's output that is its primary
        output, when it is not the ``"logits"`` entry or the first element:
        ``layer="auto"`` takes the ``nn.Linear`` whose output it is.

    Notes
    -----
    Under ``torch.distributed`` every rank collects its shard and calls :meth:`analyze`:
    the audit runs where the embeddings lie (only per-sample columns and D x D or D x K
    statistics move) and every rank gets the result; rank 0 logs it. Pass ``sample_ids``
    to :meth:`record` so that a ``DistributedSampler``'s padding is removed (samples are
    then in sample-id order, whatever the number of ranks).

    Examples
    --------
    >>> import torch, wsca_audit as wa
    >>> model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    >>> auditor = wa.Auditor(model.eval(), kinds={"site": "categorical"})
    >>> with auditor.collect(), torch.no_grad():
    ...     for _ in range(4):
    ...         x = torch.randn(50, 4)
    ...         _ = model(x)
    ...         auditor.record(targets=(x[:, 0] > 0).long(), metadata={"site": (x[:, 1] > 0).long()})
    >>> auditor.layer_name, auditor.embeddings().embeddings.shape
    ('2', (200, 8))
    """

    def __init__(
        self,
        model: nn.Module,
        layer: str | nn.Module = "auto",
        kinds: Mapping[str, str] | None = None,
        *,
        metadata: Mapping[str, str] | None = None,
        primary_weight=None,
        primary_bias=None,
        keep_on_device: bool = False,
        max_memory_mb: float | None = None,
        skip_train_mode: bool = False,
        name: str | None = None,
        task: str | None = None,
        output_names: Sequence[str] | None = None,
        target_unit: str | None = None,
        classes: Sequence | None = None,
        output_key: str | int | None = None,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise AuditError(f"model must be a torch.nn.Module; got {type(model).__name__}")
        if isinstance(model, torch.jit.ScriptModule):
            raise AuditError(
                f"the model is a TorchScript module ({type(model).__name__}): it runs no Python "
                "forward hooks, so nothing can be collected from it. Audit the eager model, "
                "or pass the embeddings it exports (and its head's weights) to wa.analyze"
            )
        self.model = model
        if name is not None and not isinstance(name, str):
            raise AuditError(f"name must be a string; got {type(name).__name__}")
        self.name = name
        self.layer = layer
        kinds = renamed("metadata", "kinds", metadata, kinds, "Auditor")
        self.kinds = dict(kinds) if kinds is not None else None
        for name, kind in (self.kinds or {}).items():
            if kind not in KINDS:
                raise AuditError(f"metadata kind of {name!r} must be one of {KINDS}; got {kind!r}")
        if task is not None and task not in TASKS:
            raise AuditError(f"task={task!r} is not one of {list(TASKS)}")
        # the head's kind and names: defaults of analyze() (see wsca_audit.head_kinds)
        self.task, self.target_unit = task, target_unit
        self.output_names = None if output_names is None else list(output_names)
        self.classes = None if classes is None else list(classes)
        self.output_key = output_key
        self.keep_on_device = keep_on_device
        self.max_memory_mb = max_memory_mb
        self.skip_train_mode = skip_train_mode
        self._user_head = (
            PrimaryHead.from_arrays(primary_weight, primary_bias)
            if primary_weight is not None
            else None
        )
        self.layer_name: str | None = None
        self._layer_module: nn.Module | None = None
        self._head: PrimaryHead | None = None
        # the nn.Linear the head is read from: read again whenever an audit is made, so an
        # auditor reused across epochs (or attached before training) audits the weights
        # as they are then, not as they were at the first forward pass
        self._head_module: nn.Linear | None = None
        self._head_states: set[tuple] = set()  # the head's weights at each record()
        self._collecting = False
        self._handles: list = []  # hook handles while attached
        self._pending: list[torch.Tensor] = []
        self._embeddings = EmbeddingStore(max_memory_mb)
        self._targets: list[np.ndarray] = []
        self._meta: dict[str, list[np.ndarray]] = {}
        self._ids: list[np.ndarray] = []
        self._n_batches = 0
        self._warnings: list[str] = []
        self._was_training = False
        if layer != "auto":
            self.layer_name, self._layer_module = resolve_layer(model, layer)

    @property
    def metadata_kinds(self) -> dict[str, str] | None:
        """Deprecated: :attr:`kinds`."""
        warnings.warn("Auditor.metadata_kinds is now Auditor.kinds", DeprecationWarning, 2)
        return self.kinds

    # ------------------------------------------------------------------ hooks
    def _store(self, z) -> None:
        if self.skip_train_mode and self.model.training:
            return
        if not isinstance(z, torch.Tensor):
            raise AuditError(
                f"layer {self.layer_name!r} received a {type(z).__name__}, not a tensor"
            )
        z = z.detach()
        if z.dim() == 1:
            z = z[:, None]
        if z.dim() != 2:
            raise AuditError(
                f"the input of layer {self.layer_name!r} has shape {tuple(z.shape)}; an embedding "
                "must be (batch, features). Choose a layer after pooling/flattening."
            )
        if z.is_cuda and not self.keep_on_device:
            # pinned buffer + non_blocking: no host synchronisation per batch
            buf = torch.empty(z.shape, dtype=torch.float32, pin_memory=True)
            buf.copy_(z, non_blocking=True)
            z = buf
        else:
            # a copy: the caller may reuse the tensor's storage for the next batch
            z = z.to(torch.float32, copy=True)
        self._pending.append(z)

    def _pre_hook(self, module, args):
        if not args:
            raise AuditError(f"layer {self.layer_name!r} was called without positional input")
        self._store(args[0])

    def attach(self) -> Auditor:
        """Register the hooks on the model; they stay until :meth:`detach`.

        The lifecycle behind :meth:`collect`, for framework callbacks whose start and end
        of evaluation are separate events. Run the model and call :meth:`record` after
        each forward pass in between.

        Returns
        -------
        Auditor
            ``self``.

        Raises
        ------
        AuditError
            If the hooks are already attached (by :meth:`attach` or :meth:`collect`).

        Examples
        --------
        >>> import torch, wsca_audit as wa
        >>> model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
        >>> auditor = wa.Auditor(model.eval()).attach()
        >>> auditor.attached
        True
        >>> with torch.no_grad():
        ...     x = torch.randn(30, 4)
        ...     _ = model(x)
        >>> auditor.record(targets=(x[:, 0] > 0).long())
        >>> auditor.detach()
        >>> auditor.attached, auditor.n_recorded
        (False, 30)
        """
        if self._collecting:
            raise AuditError(
                "the auditor's hooks are already attached (attach() or collect() is active); "
                "call detach() first"
            )
        self._collecting = True
        try:
            if self.model.training and not self.skip_train_mode:
                self._warn(
                    "the model is in train mode during collection: dropout and batch-norm make "
                    "the embeddings noisy; call model.eval() first"
                )
            self._ensure_head()
            if self._layer_module is not None and self._head is not None:
                self._handles.append(self._layer_module.register_forward_pre_hook(self._pre_hook))
            else:
                self._install_trace(self._handles)
        except BaseException:
            self.detach()
            raise
        return self

    def detach(self) -> None:
        """Remove the hooks; what was recorded is kept.

        Idempotent: calling it twice, or on an auditor that was never attached, does
        nothing. Waits for pending copies of CUDA embeddings into pinned host memory.

        Examples
        --------
        >>> import torch, wsca_audit as wa
        >>> model = torch.nn.Sequential(torch.nn.Linear(4, 2)).eval()
        >>> auditor = wa.Auditor(model).attach()
        >>> len(model[0]._forward_pre_hooks)
        1
        >>> auditor.detach()
        >>> auditor.detach()  # a second call is harmless
        >>> len(model[0]._forward_pre_hooks), auditor.attached
        (0, False)
        """
        was_attached = self._collecting or bool(self._handles)
        for h in self._handles:
            h.remove()
        self._handles.clear()
        self._collecting = False
        if (
            was_attached
            and any(z.is_pinned() for z in self._pending + self._embeddings.blocks())
            and torch.cuda.is_available()
        ):
            torch.cuda.synchronize()

    @property
    def attached(self) -> bool:
        """Whether the hooks are registered (between :meth:`attach` and :meth:`detach`)."""
        return self._collecting

    @contextmanager
    def collect(self) -> Iterator[Auditor]:
        """Register the hooks; they are removed on exit, also when the loop raises.

        Inside, run the model and call :meth:`record` after each forward pass. A context
        manager over :meth:`attach` and :meth:`detach`.
        """
        if self._collecting:
            raise AuditError("collect() is already active on this auditor")
        self.attach()
        try:
            yield self
        finally:
            self.detach()

    def _install_trace(self, handles: list) -> None:
        """First forward pass: find the head (and, for 'auto', the layer) in forward order."""
        calls: list[tuple[nn.Module, torch.Tensor | None]] = []
        linears = [m for m in self.model.modules() if isinstance(m, nn.Linear)]
        trace_handles: list = []
        target = self._layer_module

        def linear_hook(module, args):
            calls.append((module, args[0] if args else None))

        def layer_hook(module, args):
            calls.append((module, None))
            if not args:
                raise AuditError(f"layer {self.layer_name!r} was called without positional input")
            self._store(args[0])

        def root_hook(module, args, output):
            for h in trace_handles:
                h.remove()
            if target is None:  # layer="auto": the Linear whose output the model returns
                lin = [(m, z) for m, z in calls if isinstance(m, nn.Linear)]
                if not lin:
                    raise AuditError(
                        "no nn.Linear was called in the forward pass, so layer='auto' cannot find "
                        "the head. Pass layer='<module name>' (its input is the embedding) and "
                        "primary_weight=<the head's weight>"
                    )
                head, z = self._auto_head(lin, output)
                self._layer_module = head
                self.layer_name = _module_name(self.model, head)
                self._store(z)
                self._head = PrimaryHead.from_linear(head, self.layer_name)
                self._head_module = head
            else:  # a named layer that is not the head: the next Linear called after it
                pos = next((i for i, (m, _) in enumerate(calls) if m is target), None)
                if pos is None:
                    raise AuditError(
                        f"layer {self.layer_name!r} was not called in the forward pass"
                    )
                nxt = [
                    m for m, _ in calls[pos + 1 :] if isinstance(m, nn.Linear) and m is not target
                ]
                if not nxt:
                    raise AuditError(
                        f"no nn.Linear is called after layer {self.layer_name!r}; pass "
                        "primary_weight= (and primary_bias=) for the head"
                    )
                self._head = PrimaryHead.from_linear(nxt[0], _module_name(self.model, nxt[0]))
                self._head_module = nxt[0]
            handles.append(self._layer_module.register_forward_pre_hook(self._pre_hook))

        if target is None:
            for m in linears:
                trace_handles.append(m.register_forward_pre_hook(linear_hook))
        else:
            trace_handles.append(target.register_forward_pre_hook(layer_hook))
            for m in linears:
                if m is not target:
                    trace_handles.append(m.register_forward_pre_hook(linear_hook))
        root = self.model.register_forward_hook(root_hook)
        trace_handles.append(root)
        handles.extend(trace_handles)

    def _auto_head(self, lin: list, output: Any) -> tuple[nn.Linear, Any]:
        """The head ``layer="auto"`` takes (:func:`wsca_audit.head_search.auto_head`)."""
        head, z, note = auto_head(
            lin, output, lambda m: _module_name(self.model, m), self.output_key
        )
        if note:
            self._warn(note)
        return head, z

    def _ensure_head(self) -> None:
        if self._head is None:
            if self._user_head is not None:
                self._head = self._user_head
            elif isinstance(self._layer_module, nn.Linear):
                self._head = PrimaryHead.from_linear(self._layer_module, self.layer_name)
                self._head_module = self._layer_module

    def _current_head(self) -> PrimaryHead | None:
        """The head as it is now: the user's weights, or read afresh from its module."""
        if self._user_head is not None:
            return self._user_head
        if self._head_module is not None:
            self._head = PrimaryHead.from_linear(self._head_module, self._head.source)
        return self._head

    def _head_state(self) -> tuple | None:
        """Which weights the head holds (tensor identity and in-place version counters:
        an optimiser step or a loaded state dict changes them; reading them costs nothing)."""
        m = self._head_module
        if m is None or self._user_head is not None:
            return None
        params = [p for p in (m.weight, m.bias) if p is not None]
        return tuple((id(p), p._version) for p in params)

    # ------------------------------------------------------------------ recording
    def record(self, targets=None, metadata: Mapping | None = None, sample_ids=None) -> None:
        """Attach labels and metadata to the embeddings of the forward pass(es) just run.

        Parameters
        ----------
        targets : array-like of shape (batch,), optional
        metadata : mapping of str to array-like of shape (batch,), optional
        sample_ids : array-like of shape (batch,), optional
        """
        if not self._pending:
            raise AuditError(
                "record() was called but no forward pass reached the audited layer since the "
                "last record(); run model(x) inside `with auditor.collect():` first"
            )
        n = sum(int(z.shape[0]) for z in self._pending)
        batch_targets = None
        if targets is not None:
            batch_targets = target_array(targets, "targets")
        if self._n_batches and (batch_targets is None) != (not self._targets):
            raise AuditError("give targets for every batch or for none")
        # a DataFrame is a mapping of columns too (its truth value is undefined)
        metadata = {} if metadata is None else dict(metadata)
        if self.kinds is not None:
            missing = [c for c in self.kinds if c not in metadata]
            if missing:
                raise AuditError(
                    f"record() is missing metadata column(s) {missing}; got {sorted(metadata)}"
                )
            metadata = {c: metadata[c] for c in self.kinds}
        if self._n_batches and set(metadata) != set(self._meta):
            raise AuditError(
                f"metadata columns changed between batches: {sorted(self._meta)} then {sorted(metadata)}"
            )
        cols = {
            name: column_or_1d(col, f"metadata[{name!r}]", flatten=True)
            for name, col in metadata.items()
        }
        batch_ids = None
        if sample_ids is not None:
            batch_ids = column_or_1d(sample_ids, "sample_ids", flatten=True)
        # one length check for every column, in the order the user gave them
        check_consistent_length(
            n,
            "embeddings",
            batch=True,
            targets=batch_targets,
            **{f"metadata[{k!r}]": v for k, v in cols.items()},
            sample_ids=batch_ids,
        )
        for z in self._pending:
            self._embeddings.append(z)
        self._pending = []
        if batch_targets is not None:
            self._targets.append(batch_targets)
        for name, arr in cols.items():
            self._meta.setdefault(name, []).append(arr)
        if batch_ids is not None:
            self._ids.append(batch_ids)
        self._n_batches += 1
        self._head_states.add(self._head_state())

    def _warn(self, message: str) -> None:
        self._warnings.append(message)
        warnings.warn(message, AuditWarning, stacklevel=3)

    @property
    def pending_count(self) -> int:
        """Embeddings captured since the last :meth:`record` (the batch awaiting labels)."""
        return sum(int(z.shape[0]) for z in self._pending)

    @property
    def n_recorded(self) -> int:
        """Embeddings recorded so far on this process."""
        return len(self._embeddings)

    def discard_pending(self, keep_last: int = 0) -> int:
        """Forget embeddings captured since the last :meth:`record`, but those of the last
        ``keep_last`` forward passes; returns how many were forgotten."""
        keep = self._pending[len(self._pending) - keep_last :] if keep_last > 0 else []
        n = self.pending_count - sum(int(z.shape[0]) for z in keep)
        self._pending = keep
        return n

    # ------------------------------------------------------------------ results
    def embeddings(
        self, drop_nonfinite: bool = False, gather: bool | None = True
    ) -> EmbeddingSet | None:
        """Everything recorded so far, as a validated :class:`EmbeddingSet`.

        Under ``torch.distributed`` a collective call. ``gather=True``: rank 0 gets every
        rank's samples, the others ``None``; ``None``: every rank a sharded set (its own
        embedding rows, every rank's columns: :mod:`wsca_audit.shards`); ``False``: its own.
        """
        if self._pending:
            self._warn(
                f"{self.pending_count} embeddings from forward passes without a record() "
                "call were ignored"
            )
        if len(self._head_states - {None}) > 1:
            self._warn(
                "the head's weights changed while these embeddings were recorded (a training "
                "step between record() calls?): they come from different models, and the "
                "audit reads the head as it is now; call reset() after each change"
            )
        Z = self._embeddings.array()
        columns = {
            "__targets__": _concat(self._targets) if self._targets else None,
            "__sample_ids__": _concat(self._ids) if self._ids else None,
            **{f"meta:{name}": _concat(parts) for name, parts in self._meta.items()},
        }
        shard = None
        if gather is None and dist_data.rank_and_world()[1] > 1:
            Z, columns, shard = dist_data.shard_columns(Z, columns)
        elif gather and dist_data.rank_and_world()[1] > 1:
            gathered = dist_data.gather_to_rank0(Z, columns)
            if gathered is None:
                return None
            Z, columns = gathered
        if (Z.shape[0] if shard is None else shard.n) == 0:
            raise AuditError(
                "nothing was recorded: run the model inside `with auditor.collect():` and call "
                "auditor.record(targets=..., metadata=...) after each batch"
            )
        meta = {k[5:]: v for k, v in columns.items() if k.startswith("meta:")}
        return EmbeddingSet(
            Z,
            columns["__targets__"],
            meta,
            kinds=self.kinds,
            primary=self._current_head(),
            sample_ids=columns["__sample_ids__"],
            drop_nonfinite=drop_nonfinite,
            layer=self.layer_name or "auto",
            warnings=list(self._warnings),
            shard=shard,
        )

    def model_info(self) -> dict:
        """What the report says about the model."""
        info = {"name": self.name} if self.name else {}
        return info | {
            "class": type(self.model).__module__ + "." + type(self.model).__qualname__,
            "n_parameters": int(sum(p.numel() for p in self.model.parameters())),
            "head": None if self._head is None else self._head.source,
        }

    def analyze(
        self,
        drop_nonfinite: bool = False,
        gather: bool | None = None,
        *,
        context: Mapping[str, Any] | None = None,
        dist_timeout: float | None = 600.0,
        **settings,
    ):
        """Audit what was collected; settings as :func:`wsca_audit.analyze`.

        ``context`` says where the audit was made (``{"stage": "validation", "epoch": 3,
        "global_step": 120}``, as the integrations pass it); it is kept in
        ``report["model"]["context"]``, beside the head's ``primary.fingerprint``.

        Under an initialised ``torch.distributed`` process group every rank must call it.
        By default (``gather=None``) the audit is sharded: embeddings stay on their rank,
        sums over samples are ``all_reduce`` calls, and every rank gets the result of one
        process auditing every sample. A collective waiting over ``dist_timeout`` seconds
        (a rank died or stalled) raises :class:`~wsca_audit.AuditError`. ``gather=True``:
        rank 0 audits every sample alone; ``gather=False``: each rank its own.

        Returns
        -------
        AuditResult, or None on ranks other than 0 with ``gather=True``.
        ``max_memory_mb`` defaults to the auditor's (per rank).
        """
        from .analysis import analyze_embeddings

        settings.setdefault("max_memory_mb", self.max_memory_mb)
        for key in ("task", "output_names", "target_unit", "classes"):
            if getattr(self, key) is not None:
                settings.setdefault(key, getattr(self, key))
        if gather is not False and dist_data.rank_and_world()[1] > 1:  # before data moves
            head = self._current_head()
            dist_data.agree_across_ranks(settings, self.kinds, self.layer_name, head, dist_timeout)
            if gather is None:
                self._borrow_head(head)
        es = self.embeddings(drop_nonfinite=drop_nonfinite, gather=gather)
        if es is None:
            return None
        info = self.model_info()
        if context:
            info["context"] = dict(context)
        return analyze_embeddings(es, model_info=info, **settings)

    def _borrow_head(self, head: PrimaryHead | None) -> None:
        """A rank with an empty shard ran no forward pass: it takes the head and layer of
        the first rank that did, so that it can take part in a sharded audit."""
        has = head is not None and (self._user_head is not None or self._head_module is not None)
        lent = dist_data.lend_to_empty_ranks(head if has else None, self.layer_name)
        if not has and lent is not None:  # kept until a forward pass reads the model's own
            self._head = PrimaryHead.from_arrays(lent["weight"], lent["bias"], lent["source"])
            self.layer_name = lent["layer"]

    def reset(self) -> None:
        """Forget everything recorded (the resolved layer is kept; the head is read again
        whenever an audit is made)."""
        self._embeddings.close()
        self._pending, self._targets, self._ids = [], [], []
        self._meta, self._n_batches, self._warnings = {}, 0, []
        self._head_states = set()


def _concat(parts: list[np.ndarray]) -> np.ndarray:
    kinds = {p.dtype.kind for p in parts}
    if len(kinds) > 1 or "O" in kinds:
        return np.concatenate([p.astype(object) for p in parts])
    return np.concatenate(parts)
