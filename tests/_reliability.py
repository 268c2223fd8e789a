"""Shared helpers of the reliability tests (edge cases, fuzzing, faults, determinism, security)."""

import warnings
from pathlib import Path

import numpy as np

import wsca_audit as wa

ROOT = Path(__file__).parents[1]
FAST = dict(n_bootstrap=8, n_permutations=8, progress=False, device="cpu")


def toy_data(n=300, d=8, seed=0):
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, d))
    W = np.zeros((2, d))
    W[1, 0] = 1.0
    return rng, z, (z[:, 0] > 0).astype(int), W


def audit_with_warnings(metadata, z=None, y=None, W=None, **kw):
    _rng, z0, y0, W0 = toy_data()
    z = z0 if z is None else z
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        res = wa.analyze(z, y0 if y is None else y, metadata, primary_weight=W0 if W is None else W,
                         **{**FAST, **kw})  # fmt: skip
    res.validate()
    return res, [str(w.message) for w in caught]


# a real audit that the reader tests mutate
BASE_REPORT, _ = audit_with_warnings({"site": np.random.default_rng(0).integers(0, 2, 300)})
