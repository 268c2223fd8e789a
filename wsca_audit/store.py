"""Embedding storage that spills to a memory-mapped file past a memory budget.

Collection appends (batch, D) float32 blocks. Under ``max_memory_mb`` they stay in
memory; past it, everything is moved to a raw float32 file in a private temporary folder
and later blocks are appended there. :meth:`EmbeddingStore.array` returns an ``np.memmap``
over that file, so the analysis reads (and pages) it from disk instead of holding a
second copy. The folder is deleted by :meth:`EmbeddingStore.close`, when the store is
garbage-collected, or at interpreter exit.
"""

from __future__ import annotations

import shutil
import tempfile
import weakref
from pathlib import Path

import numpy as np
import torch

from .errors import AuditError

SPILL_PREFIX = "wsca-spill-"


def _remove(path: str) -> None:
    shutil.rmtree(path, ignore_errors=True)


class EmbeddingStore:
    """Append-only (N, D) float32 storage with an optional memory budget.

    Parameters
    ----------
    max_memory_mb : float, optional
        Spill to disk once the stored embeddings exceed this many MiB (None: never).
    spill_dir : str, optional
        Parent folder for the temporary file (default: the system temp dir).

    Examples
    --------
    >>> import torch
    >>> store = EmbeddingStore(max_memory_mb=0.001)          # 1 KiB: spills at once
    >>> store.append(torch.ones(100, 4)); store.append(torch.zeros(20, 4))
    >>> store.spilled, store.array().shape, float(store.array()[:100].sum())
    (True, (120, 4), 400.0)
    >>> store.close()
    """

    def __init__(self, max_memory_mb: float | None = None, spill_dir: str | None = None) -> None:
        if max_memory_mb is not None and max_memory_mb < 0:
            raise AuditError("max_memory_mb must be >= 0")
        self.max_bytes = None if max_memory_mb is None else max_memory_mb * 2**20
        self.spill_dir = spill_dir
        self._blocks: list[torch.Tensor] = []
        self._bytes = 0
        self._rows = 0
        self._dim: int | None = None
        self._dir: str | None = None
        self._file = None
        self._finalizer = None

    @property
    def spilled(self) -> bool:
        return self._dir is not None

    @property
    def path(self) -> Path | None:
        """The spill file, once spilled."""
        return None if self._dir is None else Path(self._dir) / "embeddings.f32"

    def __len__(self) -> int:
        return self._rows

    def append(self, z: torch.Tensor) -> None:
        if self._dim is None:
            self._dim = int(z.shape[1])
        elif int(z.shape[1]) != self._dim:
            raise AuditError(
                f"embedding dimension changed between batches: {self._dim} then {int(z.shape[1])}"
            )
        self._rows += int(z.shape[0])
        if self._file is not None:
            self._write(z)
            return
        self._blocks.append(z)
        self._bytes += z.numel() * 4
        if self.max_bytes is not None and self._bytes > self.max_bytes:
            self._spill()

    def _write(self, z: torch.Tensor) -> None:
        if z.is_pinned() and torch.cuda.is_available():
            torch.cuda.synchronize()  # the pinned copy may still be in flight
        self._file.write(z.to("cpu", torch.float32).contiguous().numpy().tobytes())

    def _spill(self) -> None:
        try:
            self._dir = tempfile.mkdtemp(prefix=SPILL_PREFIX, dir=self.spill_dir)
            self._finalizer = weakref.finalize(self, _remove, self._dir)
            self._file = open(self.path, "wb")  # kept open for appends
            for z in self._blocks:
                self._write(z)
        except OSError as exc:
            raise AuditError(
                f"could not spill embeddings to disk ({self.spill_dir}): {exc}"
            ) from exc
        self._blocks, self._bytes = [], 0

    def blocks(self) -> list[torch.Tensor]:
        """The in-memory blocks (empty once spilled)."""
        return list(self._blocks)

    def array(self) -> np.ndarray:
        """Everything stored, (N, D) float32: an ``np.memmap`` once spilled."""
        if self._rows == 0:
            return np.zeros((0, self._dim or 0), dtype=np.float32)
        if self._file is None:
            return torch.cat([z.to("cpu") for z in self._blocks]).numpy()
        self._file.flush()
        return np.memmap(self.path, dtype=np.float32, mode="c", shape=(self._rows, self._dim))

    def close(self) -> None:
        """Drop everything and delete the spill folder."""
        if self._file is not None:
            self._file.close()
            self._file = None
        if self._finalizer is not None:
            self._finalizer()
        self._dir = None
        self._blocks, self._bytes, self._rows, self._dim = [], 0, 0, None
