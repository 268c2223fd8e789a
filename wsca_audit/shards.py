"""Which samples this rank holds, and the collectives of an audit over them: :class:`Shard`.

A sharded audit keeps each rank's embeddings where they were collected. Columns of one
value per sample (targets, metadata, sample ids, the primary scores) are known to every
rank in one global order; the embedding rows are not. Every sum over samples is then a
local sum plus :meth:`Shard.sum` (``all_reduce``), and a per-sample score computed from
the local rows becomes a global column with :meth:`Shard.gather` (``all_gather``).

One process holds the whole audit (:meth:`Shard.whole`): both are the identity there,
so the single-process audit and the sharded one run the same code.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from .errors import AuditError


class Shard:
    """The rows of the audit's samples that this rank holds.

    Parameters
    ----------
    n : int
        Samples of the whole audit (every rank's, duplicates dropped).
    indices : sequence of Tensor, optional
        Every rank's rows: ``indices[r][i]`` is the global position of rank ``r``'s
        ``i``-th local row. None: one process holds all ``n`` rows in order.
    rank : int, default=0
    group : torch.distributed.ProcessGroup, optional
        The group the collectives run on (None: the default group).
    timeout : float, optional
        The ``group``'s timeout in seconds, for the message of the
        :class:`~wsca_audit.AuditError` that a rank that died or stalled causes.

    Examples
    --------
    >>> import torch
    >>> shard = Shard.whole(4)
    >>> shard.sum(torch.ones(2)), shard.gather(torch.arange(4)).tolist()
    (tensor([1., 1.]), [0, 1, 2, 3])
    """

    def __init__(
        self,
        n: int,
        indices: Sequence[Tensor] | None = None,
        rank: int = 0,
        group=None,
        timeout: float | None = None,
    ) -> None:
        self.n = int(n)
        self.indices = None if indices is None else [torch.as_tensor(i).long() for i in indices]
        self.rank = rank
        self.group = group
        self.timeout = timeout
        if self.indices is not None:
            every = torch.cat(self.indices) if self.indices else torch.zeros(0, dtype=torch.long)
            if every.numel() != self.n or not torch.equal(
                torch.sort(every).values, torch.arange(self.n)
            ):
                raise AuditError("the ranks' rows must cover every sample exactly once")
        self._on: dict[torch.device, Tensor] = {}

    @classmethod
    def whole(cls, n: int) -> Shard:
        """All ``n`` samples in one process: no collective."""
        return cls(n)

    @property
    def is_whole(self) -> bool:
        return self.indices is None

    @property
    def world(self) -> int:
        return 1 if self.indices is None else len(self.indices)

    @property
    def n_local(self) -> int:
        return self.n if self.indices is None else int(self.indices[self.rank].numel())

    def index(self, device: torch.device | str = "cpu") -> Tensor:
        """Global positions of this rank's rows (on ``device``)."""
        device = torch.device(device)
        if device not in self._on:
            own = torch.arange(self.n) if self.indices is None else self.indices[self.rank]
            self._on[device] = own.to(device)
        return self._on[device]

    # ------------------------------------------------------------------ row selection
    def rows(self, t: Tensor, dim: int = 0) -> Tensor:
        """This rank's rows of a global tensor (``dim``: the sample axis)."""
        if self.indices is None:
            return t
        return t.index_select(dim, self.index(t.device))

    def subset(self, keep: Tensor) -> tuple[Shard, Tensor]:
        """The shard of the samples where the global mask ``keep`` (n,) holds, renumbered,
        and which local rows stay."""
        keep = keep.cpu().bool()
        if self.indices is None:
            return Shard(int(keep.sum())), keep
        new = torch.cumsum(keep.long(), 0) - 1
        indices = [new[i[keep[i]]] for i in self.indices]
        out = Shard(int(keep.sum()), indices, self.rank, self.group, self.timeout)
        return out, keep[self.indices[self.rank]]

    # ------------------------------------------------------------------ collectives
    def sum(self, t: Tensor) -> Tensor:
        """``t`` summed over the ranks (in place on a contiguous ``t``; returned)."""
        if self.indices is None or self.world == 1:
            return t
        import torch.distributed as dist

        t = t.contiguous()
        self._run(lambda: dist.all_reduce(t, group=self.group), "all_reduce")
        return t

    def max(self, t: Tensor) -> Tensor:
        """``t``'s elementwise maximum over the ranks."""
        if self.indices is None or self.world == 1:
            return t
        import torch.distributed as dist

        t = t.contiguous()
        op = dist.ReduceOp.MAX
        self._run(lambda: dist.all_reduce(t, op=op, group=self.group), "all_reduce")
        return t

    def gather(self, t: Tensor) -> Tensor:
        """Every rank's rows of a per-sample tensor (n_local, ...) as the global one
        (n, ...), in the global order, on every rank."""
        if self.indices is None:
            return t
        if self.world == 1:
            out = t.new_empty((self.n, *t.shape[1:]))
            out[self.index(t.device)] = t
            return out
        import torch.distributed as dist

        sizes = [int(i.numel()) for i in self.indices]
        big = max(sizes)
        pad = t.new_zeros((big, *t.shape[1:]))
        pad[: t.shape[0]] = t
        bufs = [torch.empty_like(pad) for _ in sizes]
        self._run(lambda: dist.all_gather(bufs, pad, group=self.group), "all_gather")
        out = t.new_empty((self.n, *t.shape[1:]))
        for idx, buf, size in zip(self.indices, bufs, sizes):
            out[idx.to(t.device)] = buf[:size]
        return out

    def _run(self, call, what: str) -> None:
        run_collective(call, what, self.rank, self.timeout)


def run_collective(call, what: str, rank: int, timeout: float | None) -> None:
    """Run a collective (``call()``); a peer that died, or one that stalled past the
    group's timeout (``timeout``: the audit's group waits that long), becomes an
    :class:`~wsca_audit.AuditError` that says so."""
    try:
        call()
    except RuntimeError as exc:  # gloo: a peer closed its connection, or the op timed out
        cause = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise AuditError(
            f"rank {rank}: the audit's {what} failed: another rank died, stalled or left "
            "the audit"
            + (f" (each collective waits at most dist_timeout={timeout:g} s)" if timeout else "")
            + f"; nothing was logged. Cause: {cause}"
        ) from exc


def total(t: Tensor, shard: Shard | None) -> Tensor:
    """A local sum over samples made the audit's: summed over the ranks of ``shard``
    (as it is without one)."""
    return t if shard is None else shard.sum(t)


def largest(t: Tensor, shard: Shard | None) -> Tensor:
    """A local maximum over samples made the audit's (see :func:`total`)."""
    return t if shard is None else shard.max(t)


def local(t: Tensor, shard: Shard | None, dim: int = 0) -> Tensor:
    """This rank's rows of a per-sample tensor of the audit (along ``dim``; all of them
    without a shard)."""
    return t if shard is None else shard.rows(t, dim)


def audit_wide(t: Tensor, shard: Shard | None) -> Tensor:
    """Per-sample rows computed on this rank, as the audit's (N, ...) on every rank."""
    return t if shard is None else shard.gather(t)


def count(n_local: int, shard: Shard | None) -> int:
    """The audit's number of samples, from this rank's ``n_local``."""
    return n_local if shard is None else shard.n
