"""Linear concept erasure of a metadata variable *beyond the label* (LEACE, class-conditional).

LEACE (Belrose et al., "LEACE: Perfect linear concept erasure in closed form", NeurIPS
2023) finds the affine map ``r(x) = x - P (x - mu)`` that changes the embedding least (in
the whitened metric) while making its cross-covariance with the concept ``s`` exactly
zero: with the covariance ``S`` of ``x``, ``W = S^{-1/2}`` (pseudo-inverse on its
support) and the orthogonal projection ``Q`` onto the column space of ``W Cov(x, s)``,

    P = W^+ Q W.

To erase the scanner and not the tumour signal it is correlated with, both covariances
are *within-class* ones (``x`` and ``s`` centred on their class means), so that only the
variable's variation beyond the label is removed: after erasure, a linear head can no
longer read the variable within any class, while the class means are moved only as far
as they lie along the erased directions. The map is affine and a classification head is
linear, so :meth:`LinearEraser.fold` returns the head ``W_h (I - P)`` with bias
``b + W_h P mu``: the patched model needs no extra module.

The closed form matches EleutherAI's ``concept_erasure.LeaceFitter`` (with
``constrain_cov_trace=False``) fitted on the class-centred data; the tests check it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from ..errors import AuditError
from ..validation import as_array


@dataclass(frozen=True)
class LinearEraser:
    """An affine eraser ``r(x) = x - (x - mean) @ proj.T``.

    Attributes
    ----------
    proj : Tensor of shape (D, D)
        ``P``, the (oblique) projection onto what is removed.
    mean : Tensor of shape (D,)
        The embedding mean the eraser is centred on (``E[r(x)] = E[x]``).
    rank : int
        Number of directions removed (at most the concept's dimension).
    """

    proj: Tensor
    mean: Tensor
    rank: int

    def __call__(self, x: Tensor) -> Tensor:
        """Erase from (N, D) embeddings."""
        x = torch.as_tensor(x).to(self.proj)
        return x - (x - self.mean) @ self.proj.T

    def fold(self, weight: Tensor, bias: Tensor) -> tuple[Tensor, Tensor]:
        """The linear head ``x -> weight @ r(x) + bias`` as one ``(weight', bias')``."""
        w = torch.as_tensor(weight).to(self.proj)
        b = torch.as_tensor(bias).to(self.proj)
        return w - w @ self.proj, b + w @ (self.proj @ self.mean)


def concept_matrix(values: np.ndarray, kind: str) -> np.ndarray:
    """The concept as columns: one-hot levels (categorical) or the standardised value."""
    if kind == "categorical":
        _, codes = np.unique(values.astype(str), return_inverse=True)
        return np.eye(int(codes.max()) + 1)[codes]
    v = values.astype(np.float64)
    sd = v.std()
    return ((v - v.mean()) / (sd if sd > 0 else 1.0))[:, None]


def fit_eraser(
    embeddings,
    concept,
    labels=None,
    *,
    svd_tol: float = 0.01,
    shrinkage: bool = True,
    dtype: torch.dtype = torch.float64,
    device: str | torch.device | None = None,
) -> LinearEraser:
    """Fit a (class-conditional) LEACE eraser.

    Parameters
    ----------
    embeddings : array-like of shape (n_samples, D)
    concept : array-like of shape (n_samples,) or (n_samples, k)
        What to erase: e.g. :func:`concept_matrix` of a metadata column.
    labels : array-like of shape (n_samples,), optional
        Class labels: given, both covariances are within-class (the variable is erased
        beyond the label); None gives plain LEACE.
    svd_tol : float, default=0.01
        Singular values of the whitened cross-covariance below this are not erased (as
        in ``concept_erasure``).
    shrinkage : bool, default=True
        Shrink the covariance towards a multiple of the identity with the optimal linear
        shrinkage of Bai et al. (arXiv:1308.2608), as ``concept_erasure`` does: with
        embedding dimensions near the sample size the plain estimate whitens noise.

    Returns
    -------
    LinearEraser

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> y = rng.integers(0, 2, 500); s = rng.integers(0, 2, 500)
    >>> x = np.c_[y + 0.3 * rng.normal(size=500), s + 0.3 * rng.normal(size=500), rng.normal(size=500)]
    >>> er = fit_eraser(x, concept_matrix(s, "categorical"), y)
    >>> z = er(torch.as_tensor(x)).numpy()
    >>> bool(abs(np.corrcoef(z[y == 0, 1], s[y == 0])[0, 1]) < 0.05), er.rank
    (True, 1)
    """
    x = torch.as_tensor(as_array(embeddings, "embeddings"), dtype=dtype, device=device)
    z = torch.as_tensor(as_array(concept, "concept"), dtype=dtype, device=device)
    if x.ndim != 2:
        raise AuditError(f"embeddings must have shape (n_samples, D); got {tuple(x.shape)}")
    z = z.reshape(len(z), -1)
    n, d = x.shape
    if len(z) != n:
        raise AuditError(f"concept has {len(z)} rows but there are {n} embeddings")
    if n < 3:
        raise AuditError("an eraser needs at least 3 samples")
    mean = x.mean(0)
    if labels is None:
        xc, zc = x - mean, z - z.mean(0)
    else:
        y = as_array(labels, "labels").reshape(-1)
        if len(y) != n:
            raise AuditError(f"labels have {len(y)} values but there are {n} embeddings")
        _, codes = np.unique(y, return_inverse=True)
        g = torch.as_tensor(codes, device=x.device)
        onehot = torch.nn.functional.one_hot(g).to(dtype)
        counts = onehot.sum(0)[:, None]
        xc = x - onehot @ ((onehot.T @ x) / counts)
        zc = z - onehot @ ((onehot.T @ z) / counts)
    sigma = _shrink(xc.T @ xc / n, n) if shrinkage else xc.T @ xc / (n - 1)
    sigma_xz = xc.T @ zc / (n - 1)
    evals, evecs = torch.linalg.eigh(sigma)
    keep = evals > evals[-1] * d * torch.finfo(dtype).eps  # torch.linalg.pinv's rule
    evals = evals.clamp_min(0.0)
    whiten = (evecs * torch.where(keep, evals.rsqrt(), 0.0)) @ evecs.T
    unwhiten = (evecs * torch.where(keep, evals.sqrt(), 0.0)) @ evecs.T
    u, s, _ = torch.linalg.svd(whiten @ sigma_xz, full_matrices=False)
    u = u[:, s > svd_tol]
    proj = unwhiten @ u @ u.T @ whiten
    return LinearEraser(proj=proj, mean=mean, rank=int(u.shape[1]))


def _shrink(s_n: Tensor, n: int) -> Tensor:
    """Optimal linear shrinkage of a sample covariance towards ``tr(S)/p * I`` (the
    formula of ``concept_erasure.shrinkage.optimal_linear_shrinkage``)."""
    p = s_n.shape[-1]
    eps = torch.finfo(s_n.dtype).eps
    tr = torch.trace(s_n)
    sigma0 = torch.eye(p, dtype=s_n.dtype, device=s_n.device) * tr / p
    s0_sq = sigma0.norm() ** 2
    prod = torch.trace(s_n @ sigma0)
    top = tr * tr * s0_sq / n
    bottom = s_n.norm() ** 2 * s0_sq - prod * prod
    alpha = 1 - (top + eps) / (bottom + eps)
    beta = (1 - alpha) * (prod + eps) / (s0_sq + eps)
    return alpha * s_n + beta * sigma0
