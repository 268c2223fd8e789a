"""The audit's data across ranks (``torch.distributed``; gloo or NCCL).

Every rank calls ``Auditor.analyze``, which first refuses ranks whose settings, metadata
kinds or head differ (:func:`check_same_on_all_ranks`). By default the audit is then
sharded: :func:`shard_columns` gives every rank every rank's columns of one value per
sample (targets, metadata, sample ids) while each rank keeps its own embedding rows, and
the :class:`~wsca_audit.shards.Shard` it returns runs the audit's sums across ranks. With
``gather=True``, :func:`gather_to_rank0` moves everything to rank 0 instead (the others
get ``None``). Shards may differ in size, and may be empty. Nothing is pickled: numeric
columns travel as tensors, other columns (strings, mixed objects) as UTF-8 JSON bytes.
When sample ids were recorded, duplicates (a ``DistributedSampler`` pads the last shard
with repeated samples) are dropped and the samples are put in sample-id order, so the
result does not depend on the number of ranks. Each collective waits at most
:func:`set_timeout`'s ``dist_timeout``.
"""

from __future__ import annotations

import atexit
import json
import math
from typing import Any

import numpy as np
import torch

from .errors import AuditError
from .shards import Shard, run_collective


def rank_and_world() -> tuple[int, int]:
    """(rank, world size); (0, 1) without an initialised process group."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def is_rank_zero() -> bool:
    return rank_and_world()[0] == 0


def _device() -> torch.device:
    import torch.distributed as dist

    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


# The group the audit's collectives run on, and its timeout (set by ``set_timeout``): one
# audit at a time runs collectives in a process. One group per timeout, made once.
_GROUP: dict[str, Any] = {"group": None, "timeout": None}
_GROUPS: dict[float, Any] = {}
# let go of the groups before the interpreter tears torch down
atexit.register(lambda: (_GROUPS.clear(), _GROUP.update(group=None)))


def set_timeout(seconds: float | None) -> None:
    """Every collective of the audit that follows runs on a group whose operations wait at
    most ``seconds`` (None: the default group and its timeout). Collective: it makes the
    group, once per timeout (``new_group(timeout=...)``); a rank that never comes makes
    every other one raise :class:`~wsca_audit.AuditError` after ``seconds``. With NCCL the
    group's timeout is enforced by its watchdog."""
    import datetime

    import torch.distributed as dist

    if seconds is not None and not seconds > 0:
        raise AuditError(f"dist_timeout must be a positive number of seconds; got {seconds!r}")
    group = None
    if seconds is not None and rank_and_world()[1] > 1:
        if seconds not in _GROUPS:
            try:
                _GROUPS[seconds] = dist.new_group(timeout=datetime.timedelta(seconds=seconds))
            except RuntimeError as exc:  # DistStoreError: a rank never came
                raise AuditError(
                    f"rank {rank_and_world()[0]}: not every rank reached analyze() within "
                    f"dist_timeout={seconds:g} s (a rank died, stalled, or does not call "
                    f"it); nothing was logged. Cause: {str(exc).splitlines()[0]}"
                ) from exc
        group = _GROUPS[seconds]
    _GROUP.update(group=group, timeout=seconds)


def _run(call, what: str) -> None:
    run_collective(call, what, rank_and_world()[0], _GROUP["timeout"])


def _sizes(n: int, dev: torch.device) -> list[int]:
    import torch.distributed as dist

    t = torch.tensor([n], dtype=torch.int64, device=dev)
    out = [torch.zeros_like(t) for _ in range(dist.get_world_size())]
    _run(lambda: dist.all_gather(out, t, group=_GROUP["group"]), "all_gather")
    return [int(x) for x in out]


def _gather_rows(t: torch.Tensor, to_all: bool = False) -> list[torch.Tensor] | None:
    """Gather (n_r, ...) tensors of varying n_r: pad to the largest, gather, trim."""
    import torch.distributed as dist

    dev = _device()
    t = t.to(dev)
    sizes = _sizes(int(t.shape[0]), dev)
    pad = max(sizes) - int(t.shape[0])
    if pad:
        t = torch.cat([t, t.new_zeros((pad, *t.shape[1:]))])
    if to_all:
        bufs = [torch.empty_like(t) for _ in sizes]
        t = t.contiguous()
        _run(lambda: dist.all_gather(bufs, t, group=_GROUP["group"]), "all_gather")
    else:
        bufs = [torch.empty_like(t) for _ in sizes] if dist.get_rank() == 0 else None
        t = t.contiguous()
        _run(lambda: dist.gather(t, bufs, dst=0, group=_GROUP["group"]), "gather")
        if bufs is None:
            return None
    return [b[:s].cpu() for b, s in zip(bufs, sizes)]


def _gather_json(obj: Any, to_all: bool = False) -> list[Any] | None:
    raw = json.dumps(obj, default=_json_default, allow_nan=True).encode("utf-8")
    parts = _gather_rows(torch.frombuffer(bytearray(raw), dtype=torch.uint8), to_all)
    if parts is None:
        return None
    return [json.loads(bytes(p.numpy()).decode("utf-8")) for p in parts]


def check_same_on_all_ranks(what: dict[str, Any], optional: tuple[str, ...] = ()) -> None:
    """Refuse ranks that disagree: every rank receives every rank's ``what`` (JSON-able
    values) and raises the same :class:`AuditError`, naming each key that differs and
    every rank's value. Keys in ``optional`` are compared among the ranks that have a
    value (a rank with an empty shard has run no forward pass, so it knows no head).

    Examples
    --------
    >>> check_same_on_all_ranks({"seed": 0})  # one process: nothing to compare
    """
    if rank_and_world()[1] == 1:
        return
    every = [_flat(d) for d in _gather_json(what, to_all=True)]
    text = lambda v: json.dumps(v, sort_keys=True, default=_json_default)  # noqa: E731
    differ = []
    for key in sorted({k for d in every for k in d}):
        values = [d.get(key) for d in every]
        if key.split(".")[0] in optional:
            values = [v for v in values if v is not None]
        if len({text(v) for v in values}) > 1:
            differ.append(key)
    if differ:
        shown = "; ".join(
            f"{k}: " + ", ".join(f"rank {r} {d.get(k)!r}" for r, d in enumerate(every))
            for k in differ[:5]
        )
        raise AuditError(
            f"the ranks disagree on {', '.join(differ)} ({shown}); every rank must call "
            "analyze() with the same settings, metadata kinds and head"
        )


def _flat(d: dict[str, Any]) -> dict[str, Any]:
    """One level of nesting spelled out (``settings.seed``), so a difference is named."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update({f"{k}.{sk}": sv for sk, sv in v.items()} or {k: v})
        else:
            out[k] = v
    return out


def _json_default(x: Any) -> Any:
    if hasattr(x, "item"):
        return x.item()
    return str(x)


def _to_list(col: np.ndarray) -> list:
    out = []
    for v in col.tolist():
        if isinstance(v, float) and math.isnan(v):
            v = None
        out.append(v)
    return out


def _headers(embeddings: np.ndarray, columns: dict) -> tuple[list[dict], int]:
    """Every rank's row count, width and column kinds (checked alike), and the width."""
    n, d = int(embeddings.shape[0]), int(embeddings.shape[1]) if embeddings.ndim == 2 else 0
    header = {
        "n": n,
        "d": d,
        "columns": {
            k: (
                None if v is None else ("num" if v.dtype.kind in "biuf" else "obj"),
                str(getattr(v, "dtype", "")),
            )
            for k, v in columns.items()
        },
    }
    headers = _gather_json(header, to_all=True)
    # a rank that recorded nothing has no columns to compare (it sends empty ones)
    names = [sorted(h["columns"]) for h in headers if h["n"]] or [sorted(headers[0]["columns"])]
    if any(x != names[0] for x in names):
        raise AuditError(f"ranks recorded different columns: {names}")
    dims = {h["d"] for h in headers if h["n"]}
    if len(dims) > 1:
        raise AuditError(f"ranks collected embeddings of different dimensions: {sorted(dims)}")
    return headers, (dims.pop() if dims else d)


def _gather_columns(columns: dict, headers: list[dict], to_all: bool) -> dict | None:
    """Every rank's columns, concatenated in rank order (None on ranks other than 0
    unless ``to_all``)."""
    out_cols: dict[str, np.ndarray | None] = {}
    full = [h for h in headers if h["n"]] or headers[:1]
    for name in full[0]["columns"]:  # the first full rank's order (it sets task order)
        kinds = [h["columns"][name] for h in full]
        present = [k[0] is not None for k in kinds]  # (None, "") for a column not recorded
        if not any(present):
            out_cols[name] = None
            continue
        if not all(present):
            raise AuditError(f"{name!r} was recorded on some ranks but not on others")
        col = columns.get(name)
        if col is None or len(col) == 0:  # a rank that recorded nothing
            col = np.zeros(0) if all(k[0] == "num" for k in kinds) else np.zeros(0, dtype=object)
        if all(k[0] == "num" for k in kinds):
            parts = _gather_rows(torch.as_tensor(col.astype(np.float64)), to_all)
            if parts is not None:
                dtypes = {k[1] for k in kinds}
                dtype = np.result_type(*dtypes) if dtypes else np.float64
                out_cols[name] = np.concatenate([p.numpy() for p in parts]).astype(dtype)
        else:
            parts = _gather_json(_to_list(col), to_all)
            if parts is not None:
                flat = [v for p in parts for v in p]
                arr = np.empty(len(flat), dtype=object)
                arr[:] = flat
                out_cols[name] = arr
    return out_cols if (to_all or rank_and_world()[0] == 0) else None


def _first_by_id(ids: np.ndarray | None, n: int) -> np.ndarray:
    """Positions kept, in the audit's order: the first of each sample id in id order, or
    every position in rank order without ids."""
    if ids is None:
        return np.arange(n)
    try:
        _, first = np.unique(ids, return_index=True)
    except TypeError:  # mixed id types: order by their text
        _, first = np.unique(ids.astype(str), return_index=True)
    return first


# settings that may differ between ranks: each machine's own
PER_MACHINE = ("device", "progress", "max_memory_mb", "max_batch_mb")


def agree_across_ranks(
    settings: dict, kinds: Any, layer: str | None, head: Any, timeout: float | None
) -> None:
    """Before any data moves: every collective that follows waits at most ``timeout``
    seconds, and ranks that disagree on the settings (but for :data:`PER_MACHINE`),
    the metadata kinds, the layer or the head are refused. Collective."""
    set_timeout(timeout)
    check_same_on_all_ranks(
        {"settings": {k: v for k, v in settings.items() if k not in PER_MACHINE},
         "kinds": kinds, "layer": layer,
         "head": None if head is None else head.fingerprint},
        optional=("layer", "head"),
    )  # fmt: skip


def lend_to_empty_ranks(head: Any, layer: str | None) -> dict | None:
    """The head (``weight``, ``bias``, ``source``) and ``layer`` of the first rank whose
    ``head`` is not None, on every rank (a rank that ran no forward pass takes them from
    one that did); None when every rank has its own, or none has. Collective."""
    flags = _gather_json(head is not None, to_all=True)
    if all(flags) or not any(flags):
        return None
    donor = flags.index(True)
    mine = None
    if rank_and_world()[0] == donor:
        mine = {"weight": head.weight.tolist(), "bias": head.bias.tolist(),
                "source": head.source, "layer": layer}  # fmt: skip
    return _gather_json(mine, to_all=True)[donor]


def gather_to_rank0(
    embeddings: np.ndarray, columns: dict[str, np.ndarray | None]
) -> tuple[np.ndarray, dict[str, np.ndarray | None]] | None:
    """Concatenate every rank's (embeddings, columns) on rank 0; None on the others.

    ``columns`` maps names (targets, sample ids, metadata) to 1-d arrays of the rank's
    length, or None where a column was not recorded (it must then be None on every rank).
    The column ``"__sample_ids__"``, when present, drives de-duplication and ordering.
    """
    rank, world = rank_and_world()
    if world == 1:
        return embeddings, columns
    headers, dim = _headers(embeddings, columns)
    n = int(embeddings.shape[0])
    z = torch.as_tensor(np.ascontiguousarray(embeddings, dtype=np.float32)).reshape(n, dim)
    zs = _gather_rows(z)
    out_cols = _gather_columns(columns, headers, to_all=False)
    if rank != 0:
        return None
    Z = torch.cat(zs).numpy()
    first = _first_by_id(out_cols.get("__sample_ids__"), Z.shape[0])
    Z = Z[first]
    out_cols = {k: (None if v is None else v[first]) for k, v in out_cols.items()}
    return Z, out_cols


def shard_columns(
    embeddings: np.ndarray, columns: dict[str, np.ndarray | None]
) -> tuple[np.ndarray, dict[str, np.ndarray | None], Shard]:
    """The sharded audit's data on every rank: this rank's embedding rows (they do not
    move), every rank's columns in the audit's order, and the :class:`~wsca_audit.shards.Shard`
    saying which global samples the local rows are.

    Its collectives, and the shard's, wait at most :func:`set_timeout`'s seconds. The
    order is :func:`gather_to_rank0`'s (the first of each sample id, in id order;
    rank order without ids), so a sharded audit and a gathered one see the same samples
    in the same order, whatever the number of ranks.
    """
    rank, world = rank_and_world()
    headers, dim = _headers(embeddings, columns)
    sizes = [h["n"] for h in headers]
    cols = _gather_columns(columns, headers, to_all=True)
    first = _first_by_id(cols.get("__sample_ids__"), sum(sizes))
    where = np.full(sum(sizes), -1, dtype=np.int64)  # concatenated position -> global
    where[first] = np.arange(len(first))
    offsets = np.concatenate([[0], np.cumsum(sizes)])
    indices = []
    for r in range(world):
        pos = where[offsets[r] : offsets[r + 1]]
        indices.append(torch.as_tensor(pos[pos >= 0]))
        if r == rank:
            keep = pos >= 0
    shard = Shard(len(first), indices, rank, _GROUP["group"], _GROUP["timeout"])
    Z = embeddings.reshape(sizes[rank], dim) if embeddings.shape[0] == 0 else embeddings
    n_kept = int(keep.sum())
    if keep[:n_kept].all():  # a DistributedSampler's padding ends a shard: a view (a
        Z = Z[:n_kept]  # memory-mapped Z stays mapped)
    else:
        Z = Z[keep]
    return Z, {k: (None if v is None else v[first]) for k, v in cols.items()}, shard
