"""Every random draw: the audit's resampling keyed by (seed, sample id), and the evidence's.

Every random draw of the analysis (the bootstrap weights, the permutations within label
strata, the cross-fitting folds and the halves of a selection) is a function of the seed, a
named stream, a counter (which resample) and the sample's key (its id), through a
counter-based hash: SplitMix64's finaliser (Steele, Lea & Flood, 2014), the mixing step
of counter-based generators such as Philox and of JAX's keyed PRNG. There is no generator
state to replay, so

- a rank of a sharded audit draws its own samples' weights alone, in any order and a few
  resamples at a time, and gets exactly what one process draws for the same ids, whatever
  the number of ranks;
- a sample's draws do not depend on which other samples the audit holds, nor on their
  order; a variable's folds and permutations (streams named after it) do not depend on
  which other variables the audit reads.

The bootstrap is Poisson: each sample's weight in each resample is an independent
Poisson(1) count (Hanley & MacGibbon, 2006; Chamandy et al., 2012, "Estimating uncertainty
for massive data streams"), the multinomial bootstrap's usual stand-in at scale, which
needs no knowledge of N. The arithmetic is int64 with two's-complement wrap-around
(torch's integer kernels wrap on CPU and CUDA alike; tests check it on CPU against a
plain-Python SplitMix64), so the draws do not depend on the device.

The evidence types (ROI masking, interventions, attribution summaries, mitigation) run in
one process on a batch of images: their multinomial bootstrap (:func:`bootstrap_counts`,
:func:`bootstrap_indices`) and subsamples (:func:`stratified_subsample`) are drawn from a
seeded generator, by position.
"""

from __future__ import annotations

import hashlib
import math

import numpy as np
import torch
from torch import Tensor

_U64 = 2**64
# SplitMix64's constants as signed int64
_GOLDEN = 0x9E3779B97F4A7C15 - _U64
_M1 = 0xBF58476D1CE4E5B9 - _U64
_M2 = 0x94D049BB133111EB - _U64
# Poisson(1)'s CDF to k = 19: past that the tail is below float64's resolution of u
_POISSON_CDF = torch.tensor(
    np.cumsum([math.exp(-1) / math.factorial(k) for k in range(20)]), dtype=torch.float64
)
_CHUNK_BYTES = 64 * 2**20  # temporaries per block of resamples
# bytes per (resample, sample) entry while a block is drawn and read: the hash's int64
# temporaries, the float64 uniforms, the weights and what a metric builds from them
_ENTRY_BYTES = 40


def _as_int64(x: int) -> int:
    """``x`` modulo 2**64, as a signed int64."""
    x %= _U64
    return x - _U64 if x >= 2**63 else x


def _srl(x: Tensor, s: int) -> Tensor:
    """Logical right shift of int64 (torch's ``>>`` is arithmetic)."""
    return (x >> s).bitwise_and_((1 << (64 - s)) - 1)


def mix(x: Tensor) -> Tensor:
    """SplitMix64's finaliser on int64 (a bijection that spreads every input bit).

    Examples
    --------
    >>> import torch
    >>> int(mix(torch.tensor([1]))[0]) == _as_int64(0x5692161D100B05E5)
    True
    """
    x = x ^ _srl(x, 30)  # a new tensor; the rest works in place (one temporary at a time)
    x.mul_(_M1)
    x.bitwise_xor_(_srl(x, 27))
    x.mul_(_M2)
    return x.bitwise_xor_(_srl(x, 31))


def stream_id(name: str) -> int:
    """A 64-bit stream number for a named use of the draws (stable across runs and
    machines: BLAKE2b, not Python's salted ``hash``)."""
    digest = hashlib.blake2b(name.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little", signed=True)


def sample_keys(ids: np.ndarray | None, n: int) -> Tensor:
    """One int64 key per sample (n,): integer ids as they are, other ids by a stable hash
    of their text, positions ``0 .. n-1`` without ids.

    Examples
    --------
    >>> sample_keys(None, 3).tolist(), sample_keys(np.array([7, 2]), 2).tolist()
    ([0, 1, 2], [7, 2])
    >>> bool(sample_keys(np.array(["a"]), 1)[0] == sample_keys(np.array(["a"], dtype=object), 1)[0])
    True
    """
    if ids is None:
        return torch.arange(n, dtype=torch.long)
    ids = np.asarray(ids).reshape(-1)
    if ids.dtype.kind in "iub":
        return torch.as_tensor(ids.astype(np.int64))
    if ids.dtype == object and all(
        isinstance(i, (int, np.integer)) and not isinstance(i, bool) for i in ids
    ):
        return torch.as_tensor(np.array([_as_int64(int(i)) for i in ids], dtype=np.int64))
    return torch.as_tensor(np.array([stream_id(str(i)) for i in ids], dtype=np.int64))


def uniforms(seed: int, stream: str, counters: Tensor, keys: Tensor) -> Tensor:
    """Uniform draws in [0, 1) (len(counters) x len(keys), float64): entry (c, i) is a
    hash of (``seed``, ``stream``, counter c, key i) and of nothing else.

    Examples
    --------
    >>> import torch
    >>> u = uniforms(0, "demo", torch.arange(3), torch.arange(5))
    >>> u.shape, bool(((u >= 0) & (u < 1)).all())
    (torch.Size([3, 5]), True)
    >>> bool((uniforms(0, "demo", torch.tensor([1]), torch.tensor([4])) == u[1, 4]).all())
    True
    """
    device = keys.device
    base = mix(torch.tensor([_as_int64(int(seed))], device=device) ^ stream_id(stream))
    per_counter = mix(base + (counters.to(device=device, dtype=torch.long) + 1) * _GOLDEN)
    h = mix(per_counter[:, None] ^ mix(keys.long() * _GOLDEN + _M1)[None, :])
    return _srl(h, 11).double().mul_(2.0**-53)


def poisson_counts(
    keys: Tensor, n_resamples: int, seed: int, stream: str = "bootstrap",
    dtype: torch.dtype = torch.float32,
) -> Tensor:  # fmt: skip
    """Poisson(1) bootstrap weights (n_resamples x len(keys)), keyed by sample.

    Resample b's weight of a sample is a function of (``seed``, ``stream``, b, its key)
    only, so any subset of the samples, on any rank, in any order, draws its own columns
    of the same matrix. Drawn a block of resamples at a time.

    Examples
    --------
    >>> import torch
    >>> w = poisson_counts(torch.arange(10_000), 4, seed=0)
    >>> w.shape, [round(float(m), 1) for m in w.mean(1)]
    (torch.Size([4, 10000]), [1.0, 1.0, 1.0, 1.0])
    >>> bool((poisson_counts(torch.arange(10_000)[5:9], 4, seed=0) == w[:, 5:9]).all())
    True
    """
    n = keys.numel()
    out = torch.empty(n_resamples, n, dtype=dtype, device=keys.device)
    step = max(1, _CHUNK_BYTES // max(_ENTRY_BYTES * n, 1))
    for start in range(0, n_resamples, step):
        stop = min(start + step, n_resamples)
        out[start:stop] = _poisson_block(keys, start, stop, seed, stream, dtype)
    return out


def _poisson_block(
    keys: Tensor, start: int, stop: int, seed: int, stream: str, dtype: torch.dtype
) -> Tensor:
    """Resamples ``start .. stop`` of :func:`poisson_counts` ((stop - start) x len(keys)):
    Poisson(1)'s inverse CDF of the keyed uniforms."""
    u = uniforms(seed, stream, torch.arange(start, stop), keys)
    return torch.searchsorted(_POISSON_CDF.to(u.device), u, right=True).to(dtype)


class Bootstrap:
    """The audit's bootstrap: Poisson(1) weights keyed by sample, drawn where they are read.

    No (resamples x N) matrix is held. The fits draw their rank's columns
    (:meth:`weights`); the metrics that read every sample's score evaluate their function
    on the point row and a block of resamples at a time (:meth:`apply`), so their
    temporaries stay within ``budget_mb`` whatever N.

    Parameters
    ----------
    keys : Tensor (N,)
        The samples' keys (:func:`sample_keys`), in the audit's order.
    n_resamples : int
    seed : int
    dtype : torch.dtype
    budget_mb : float
        The working memory of one block of resamples (its draws, weights and what ``fn``
        builds from them).
    counts : Tensor (n_resamples, N), optional
        Given weights instead of drawn ones (:meth:`from_counts`).

    Examples
    --------
    >>> import torch
    >>> boot = Bootstrap(torch.arange(1000), 50, seed=0)
    >>> means = boot.apply(lambda w: w @ torch.ones(1000) / w.sum(1))
    >>> means.shape, float(means[0])          # the point row first, then each resample
    (torch.Size([51]), 1.0)
    >>> bool(torch.equal(boot.weights(torch.tensor([3, 7])), boot.weights()[:, [3, 7]]))
    True
    """

    def __init__(
        self, keys: Tensor, n_resamples: int, seed: int, dtype: torch.dtype = torch.float32,
        budget_mb: float = 256.0, counts: Tensor | None = None,
    ) -> None:  # fmt: skip
        self.keys, self.n_resamples, self.seed = keys, int(n_resamples), seed
        self.dtype, self.budget_mb, self.counts = dtype, budget_mb, counts

    @classmethod
    def from_counts(cls, counts: Tensor) -> Bootstrap:
        """Given count weights (resamples x N), e.g. a caller's own."""
        keys = torch.arange(counts.shape[1], device=counts.device)
        return cls(keys, counts.shape[0], 0, counts.dtype, counts=counts)

    def weights(self, rows: Tensor | None = None) -> Tensor:
        """The weights of the samples at positions ``rows`` (all by default):
        (n_resamples x len(rows))."""
        if self.counts is not None:
            return self.counts if rows is None else self.counts[:, rows.to(self.counts.device)]
        keys = self.keys if rows is None else self.keys[rows.to(self.keys.device)]
        return poisson_counts(keys, self.n_resamples, self.seed, dtype=self.dtype)

    def apply(self, fn, point: Tensor | None = None):
        """``fn`` over the weights ((1 + n_resamples) x N): the point row (``point``, ones by
        default) then every resample, a block of resamples at a time; ``fn`` maps (m x N)
        weights to (m, ...) tensors, or a dict of them, and the blocks are concatenated."""
        n = self.keys.numel()
        if point is None:
            point = torch.ones(n, dtype=self.dtype, device=self.keys.device)
        parts = [fn(point[None])]
        step = max(1, int(self.budget_mb * 2**20) // max(_ENTRY_BYTES * n, 1))
        for start in range(0, self.n_resamples, step):
            stop = min(start + step, self.n_resamples)
            if self.counts is not None:
                parts.append(fn(self.counts[start:stop]))
            else:
                parts.append(fn(_poisson_block(self.keys, start, stop, self.seed, "bootstrap",
                                               self.dtype)))  # fmt: skip
        if isinstance(parts[0], dict):
            return {k: torch.cat([p[k] for p in parts]) for k in parts[0]}
        return torch.cat(parts)


def over_weights(weights: Tensor | Bootstrap, fn):
    """``fn`` of the weight rows: of a matrix given whole (point row first), or of a
    :class:`Bootstrap`'s point row and resamples, a block at a time."""
    return weights.apply(fn) if isinstance(weights, Bootstrap) else fn(weights)


def stratified_permutations(
    strata: Tensor,
    valid: Tensor,
    n_permutations: int,
    seed: int,
    keys: Tensor,
    stream: str = "permutations",
    columns: Tensor | None = None,
) -> Tensor:
    """Index arrays (n_permutations x n) that shuffle samples within each stratum, keyed
    by sample.

    Only valid samples are shuffled (among themselves); others map to themselves.
    Shuffling within label strata keeps the metadata-label association (the confounding)
    and breaks only the association with the embedding beyond the label. Permutation p of
    a stratum sorts its members by key, then hands member j the sample whose draw
    (``seed``, ``stream``, p, key) is j-th smallest: the same mapping of ids to ids
    whatever the order of the samples. ``columns`` (sample positions) keeps only those
    columns (n_permutations x len(columns)): a rank of a sharded audit takes its own
    samples' columns.

    Examples
    --------
    >>> import torch
    >>> strata = torch.tensor([0, 0, 0, 1, 1, 1])
    >>> perm = stratified_permutations(strata, torch.ones(6, dtype=torch.bool), 5, 0,
    ...                                torch.arange(6))
    >>> bool((strata[perm] == strata).all())
    True
    """
    n = strata.shape[0]
    strata, valid, keys = strata.cpu(), valid.cpu(), keys.cpu()
    cols = torch.arange(n) if columns is None else columns.cpu().long()
    out = cols.repeat(n_permutations, 1)
    where = torch.full((n,), -1, dtype=torch.long)
    where[cols] = torch.arange(cols.numel())  # sample -> output column
    for s in torch.unique(strata[valid]).tolist():
        idx = torch.nonzero(valid & (strata == s)).flatten()
        if idx.numel() < 2:
            continue
        idx = idx[torch.argsort(keys[idx])]  # by key: independent of the samples' order
        mine = where[idx]
        keep = mine >= 0
        step = max(1, _CHUNK_BYTES // (32 * idx.numel()))
        for start in range(0, n_permutations, step):
            stop = min(start + step, n_permutations)
            u = uniforms(seed, stream, torch.arange(start, stop), keys[idx])
            out[start:stop, mine[keep]] = idx[torch.argsort(u, dim=1)][:, keep]
    return out


def keyed_order(keys: Tensor, seed: int, stream: str) -> Tensor:
    """A random order of the samples (positions, n): by one draw per sample from
    (``seed``, ``stream``, key), so two sets of samples order their common ones alike.

    Examples
    --------
    >>> import torch
    >>> sorted(keyed_order(torch.arange(5), 0, "folds").tolist())
    [0, 1, 2, 3, 4]
    """
    return torch.argsort(uniforms(seed, stream, torch.zeros(1), keys.cpu())[0])


# ------------------------------------------------ the evidence types' draws (one process)
def bootstrap_counts(n: int, n_bootstrap: int, generator: torch.Generator) -> Tensor:
    """Bootstrap resamples as count vectors (n_bootstrap x n): one weight per sample.
    Drawn a few resamples at a time (the same draws as all at once: the generator's
    stream is sequential), so the index temporaries stay small."""
    out = torch.zeros(n_bootstrap, n)
    step = max(1, (64 * 2**20) // max(16 * n, 1))
    for start in range(0, n_bootstrap, step):
        m = min(step, n_bootstrap - start)
        idx = torch.randint(0, n, (m, n), generator=generator)
        idx += n * torch.arange(m)[:, None]  # one bin range per resample
        out[start : start + m] = torch.bincount(idx.flatten(), minlength=m * n).view(m, n)
    return out


def bootstrap_indices(n: int, n_bootstrap: int, seed: int) -> Tensor:
    """Resample indices (n_bootstrap x n), drawn with replacement from a generator of
    their own seeded by ``seed`` (evidence types: per-sample values, not refits)."""
    gen = torch.Generator().manual_seed(int(seed))
    return torch.randint(0, max(n, 1), (n_bootstrap, n), generator=gen)


def stratified_subsample(strata: np.ndarray, k: int, seed: int) -> np.ndarray:
    """``k`` sorted indices spread over the strata: in a seeded random order, the j-th
    member of every stratum comes before any stratum's (j+1)-th.

    Examples
    --------
    >>> strata = np.array([0, 0, 0, 0, 1, 1])
    >>> pick = stratified_subsample(strata, 4, seed=0)
    >>> len(pick), sorted(strata[pick].tolist())
    (4, [0, 0, 1, 1])
    """
    gen = torch.Generator().manual_seed(int(seed))
    order = torch.randperm(len(strata), generator=gen).numpy()
    rank = np.zeros(len(strata), dtype=np.int64)
    seen: dict[int, int] = {}
    for i in order:
        rank[i] = seen.get(strata[i], 0)
        seen[strata[i]] = rank[i] + 1
    return np.sort(order[np.argsort(rank[order], kind="stable")][:k])
