"""Resampling keyed by (seed, sample id): the draws a rank makes for its own samples are the
draws one process makes for the same ids, in any order, in any blocks."""

import math

import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import wsca_audit as wa
from wsca_audit import resampling

_MASK = 2**64 - 1


def _splitmix64_finaliser(z: int) -> int:
    """The reference in plain Python integers (Steele, Lea & Flood, 2014)."""
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK
    return z ^ (z >> 31)


@settings(max_examples=30, deadline=None)
@given(st.lists(st.integers(0, _MASK), min_size=1, max_size=50))
def test_mix_is_splitmix64_in_wrapping_int64(xs):
    got = resampling.mix(torch.tensor([resampling._as_int64(x) for x in xs]))
    assert got.tolist() == [resampling._as_int64(_splitmix64_finaliser(x)) for x in xs]


def test_sample_keys_take_integer_ids_as_they_are_and_hash_the_rest_stably():
    assert resampling.sample_keys(None, 3).tolist() == [0, 1, 2]
    assert resampling.sample_keys(np.array([9, 4]), 2).tolist() == [9, 4]
    assert resampling.sample_keys(np.array([9, 4], dtype=object), 2).tolist() == [9, 4]
    words = resampling.sample_keys(np.array(["scan-1", "scan-2"]), 2)
    assert words.tolist() == resampling.sample_keys(["scan-1", "scan-2"], 2).tolist()
    assert words[0] != words[1]
    # BLAKE2b, not Python's salted hash: the same in every process
    assert resampling.stream_id("bootstrap") == 6645818777007932561


def test_poisson_weights_have_poisson_1_moments():
    w = resampling.poisson_counts(torch.arange(100_000), 20, seed=1)
    assert abs(float(w.mean()) - 1) < 0.005 and abs(float(w.var()) - 1) < 0.01
    assert abs(float((w == 0).double().mean()) - math.exp(-1)) < 0.003
    # independent across resamples and samples
    c = torch.corrcoef(w[:5])
    assert float((c - torch.eye(5)).abs().max()) < 0.02
    assert abs(float(torch.corrcoef(torch.stack([w[0, :-1], w[0, 1:]]))[0, 1])) < 0.02


@settings(max_examples=25, deadline=None)
@given(st.integers(1, 80), st.integers(0, 2**40))
def test_a_subset_of_samples_in_any_order_draws_its_columns_of_the_weights(n, seed):
    rng = np.random.default_rng(seed)
    ids = torch.as_tensor(rng.choice(10**9, n, replace=False))
    whole = resampling.poisson_counts(ids, 6, seed)
    some = torch.as_tensor(rng.permutation(n)[: max(1, n // 2)])
    assert torch.equal(resampling.poisson_counts(ids[some], 6, seed), whole[:, some])
    assert not torch.equal(resampling.poisson_counts(ids, 6, seed + 1), whole) or n < 3


def test_poisson_weights_drawn_in_blocks_are_the_draws_made_at_once():
    n, b = 300_000, 12  # 5 resamples per 64 MiB block at this n: three blocks
    keys = torch.arange(n) * 7 + 3
    at_once = torch.searchsorted(
        resampling._POISSON_CDF, resampling.uniforms(2, "bootstrap", torch.arange(b), keys),
        right=True,
    ).float()  # fmt: skip
    assert resampling._CHUNK_BYTES // (resampling._ENTRY_BYTES * n) < b
    assert torch.equal(resampling.poisson_counts(keys, b, 2), at_once)


def test_permutations_shuffle_valid_samples_within_their_stratum_only():
    strata = torch.tensor([0, 0, 0, 1, 1, 1, 1])
    valid = torch.tensor([True, True, False, True, True, True, True])
    perm = resampling.stratified_permutations(strata, valid, 20, 1, torch.arange(7))
    assert torch.all(perm[:, 2] == 2)  # invalid: stays put
    assert torch.all(strata[perm] == strata)
    assert all(sorted(p.tolist()) == list(range(7)) for p in perm)
    assert len({tuple(p.tolist()) for p in perm}) > 10  # they differ


@settings(max_examples=25, deadline=None)
@given(st.integers(2, 60), st.integers(1, 4), st.integers(0, 2**16))
def test_permutations_map_ids_to_ids_whatever_the_order_and_rank(n, n_strata, seed):
    """A rank takes its own samples' columns of the permutations, and a process that
    holds the samples in another order draws the same mapping of ids to ids."""
    rng = np.random.default_rng(seed)
    strata = torch.as_tensor(rng.integers(0, n_strata, n))
    valid = torch.as_tensor(rng.random(n) < 0.8)
    ids = torch.as_tensor(rng.choice(10**6, n, replace=False))
    whole = resampling.stratified_permutations(strata, valid, 7, seed, ids)
    cols = torch.as_tensor(rng.permutation(n)[: max(1, n // 3)])
    some = resampling.stratified_permutations(strata, valid, 7, seed, ids, columns=cols)
    assert torch.equal(some, whole[:, cols])
    order = torch.as_tensor(rng.permutation(n))
    shuffled = resampling.stratified_permutations(strata[order], valid[order], 7, seed, ids[order])
    assert torch.equal(ids[order][shuffled], ids[whole][:, order])


def test_permutations_drawn_in_blocks_are_the_draws_made_at_once():
    n, p = 120_000, 30  # 17 permutations per 64 MiB block of this stratum: two blocks
    strata, valid = torch.zeros(n, dtype=torch.long), torch.ones(n, dtype=torch.bool)
    keys = torch.arange(n)
    at_once = torch.argsort(resampling.uniforms(5, "p", torch.arange(p), keys), dim=1)
    perm = resampling.stratified_permutations(strata, valid, p, 5, keys, stream="p")
    assert resampling._CHUNK_BYTES // (32 * n) < p and torch.equal(perm, at_once)


def _audit_data(seed: int = 0, n: int = 240):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    site = np.where(rng.random(n) < 0.7, y, 1 - y)
    Z = rng.normal(size=(n, 6)) + 1.5 * y[:, None] * np.eye(6)[0] + site[:, None] * np.eye(6)[1]
    W = np.stack([np.zeros(6), np.eye(6)[0] + 0.5 * np.eye(6)[1]])
    return Z.astype(np.float32), y, {"site": site, "age": rng.normal(size=n)}, W


def test_an_audit_with_sample_ids_does_not_depend_on_the_order_of_its_rows():
    """Every draw follows its sample: the rows in another order give the same report."""
    Z, y, meta, W = _audit_data()
    ids = np.arange(len(y)) * 3 + 11
    kw = dict(primary_weight=W, primary_bias=np.zeros(2), n_bootstrap=30, n_permutations=30)
    a = wa.analyze(Z, y, meta, sample_ids=ids, **kw)
    o = np.random.default_rng(1).permutation(len(y))
    b = wa.analyze(Z[o], y[o], {k: v[o] for k, v in meta.items()}, sample_ids=ids[o], **kw)
    for name in ("site", "age"):
        ta, tb = a.tasks[name], b.tasks[name]
        assert ta["verdict"] == tb["verdict"]
        for m in ("encoding", "usage", "effect"):
            for key in ("value", "ci_low", "ci_high"):
                assert abs(ta[m][key] - tb[m][key]) < 1e-4, (name, m, key)
        assert abs(ta["usage"]["p_value"] - tb["usage"]["p_value"]) < 1e-9


def test_a_bootstrap_read_in_blocks_gives_the_values_of_the_whole_matrix():
    """The metrics that read all N samples see the point row and each resample's weights
    a block at a time: the values of the (1 + B) x N matrix, which is never held."""
    n, b = 5_000, 23
    keys = torch.arange(n) * 5 + 1
    scores, y = torch.randn(n, generator=torch.Generator().manual_seed(0)), torch.arange(n) % 3
    boot = resampling.Bootstrap(keys, b, seed=4, budget_mb=40 * n * 5 / 2**20)  # 5 per block
    whole = torch.cat([torch.ones(1, n), resampling.poisson_counts(keys, b, 4)])

    def fn(w):
        return {"mean": w @ scores / w.sum(1), "n1": (w * (y == 1)).sum(1)}

    got, want = boot.apply(fn), fn(whole)
    assert all(torch.allclose(got[k], want[k], atol=1e-6) for k in want)
    assert torch.equal(boot.weights(torch.tensor([4, 2])), whole[1:, [4, 2]])
    given = resampling.Bootstrap.from_counts(whole[1:])
    assert torch.allclose(given.apply(fn)["mean"], want["mean"], atol=1e-6)
    assert resampling.over_weights(whole, fn)["n1"].shape == (b + 1,)
