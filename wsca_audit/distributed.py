"""Gather what each rank collected to rank 0 (``torch.distributed``; gloo or NCCL).

Every rank calls :func:`gather_to_rank0` (``Auditor.analyze`` does, when a process group
is initialised, after :func:`check_same_on_all_ranks` has refused ranks whose settings,
metadata kinds or head differ); rank 0 gets the concatenation, the others ``None``. Shards may differ in
size. Nothing is pickled: embeddings and numeric columns travel as tensors, other columns
(strings, mixed objects) as UTF-8 JSON bytes. When sample ids were recorded, duplicates
(a ``DistributedSampler`` pads the last shard with repeated samples) are dropped and the
samples are put in sample-id order, so the result does not depend on the number of ranks.
"""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import torch

from .errors import AuditError


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


def _sizes(n: int, dev: torch.device) -> list[int]:
    import torch.distributed as dist

    t = torch.tensor([n], dtype=torch.int64, device=dev)
    out = [torch.zeros_like(t) for _ in range(dist.get_world_size())]
    dist.all_gather(out, t)
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
        dist.all_gather(bufs, t.contiguous())
    else:
        bufs = [torch.empty_like(t) for _ in sizes] if dist.get_rank() == 0 else None
        dist.gather(t.contiguous(), bufs, dst=0)
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
    names = [sorted(h["columns"]) for h in headers]
    if any(x != names[0] for x in names):
        raise AuditError(f"ranks recorded different columns: {names}")
    dims = {h["d"] for h in headers if h["n"]}
    if len(dims) > 1:
        raise AuditError(f"ranks collected embeddings of different dimensions: {sorted(dims)}")
    dim = dims.pop() if dims else d

    z = torch.as_tensor(np.ascontiguousarray(embeddings, dtype=np.float32)).reshape(n, dim)
    zs = _gather_rows(z)
    out_cols: dict[str, np.ndarray | None] = {}
    for name in headers[0]["columns"]:  # rank 0's order on every rank (it sets task order)
        kinds = [h["columns"][name] for h in headers]
        present = [k is not None for k in kinds]
        if not any(present):
            out_cols[name] = None
            continue
        if not all(present):
            raise AuditError(f"{name!r} was recorded on some ranks but not on others")
        col = columns[name]
        numeric = all(k[0] == "num" for k in kinds)
        if numeric:
            parts = _gather_rows(torch.as_tensor(col.astype(np.float64)))
            if parts is not None:
                dtypes = {k[1] for k in kinds}
                dtype = np.result_type(*dtypes) if dtypes else np.float64
                out_cols[name] = np.concatenate([p.numpy() for p in parts]).astype(dtype)
        else:
            parts = _gather_json(_to_list(col))
            if parts is not None:
                flat = [v for p in parts for v in p]
                arr = np.empty(len(flat), dtype=object)
                arr[:] = flat
                out_cols[name] = arr
    if rank != 0:
        return None
    Z = torch.cat(zs).numpy()
    ids = out_cols.get("__sample_ids__")
    if ids is not None:
        try:
            _, first = np.unique(ids, return_index=True)
        except TypeError:  # mixed id types: order by their text
            _, first = np.unique(ids.astype(str), return_index=True)
        Z = Z[first]
        out_cols = {k: (None if v is None else v[first]) for k, v in out_cols.items()}
    return Z, out_cols
