"""Group-balanced last-layer retraining (Deep Feature Reweighting).

Kirichenko, Izmailov & Wilson ("Last Layer Re-Training is Sufficient for Robustness to
Spurious Correlations", ICLR 2023) refit only the final linear layer on data in which
every group (label x spurious attribute) is equally frequent, average the heads of several
balanced subsamples, and choose the regularisation by worst-group accuracy on held-out
data. Here every balanced subsample x regularisation value is one problem of the batched
solver (:class:`~wsca_audit.heads.BatchedLinearHead`), so the whole path is one solve; we
use an L2 penalty (the solver's) where the paper uses L1.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from ..errors import AuditError
from ..heads import BatchedLinearHead
from ..primary import metric_values
from .sampling import balanced_subsamples, stratified_split

DEFAULT_CS = (0.003, 0.01, 0.03, 0.1, 0.3, 1.0)
MIN_GROUP = 5


@dataclass
class BalancedHead:
    """The refitted head, in the original head's shape, and how it was chosen.

    Attributes
    ----------
    weight : Tensor of shape (n_outputs, D)
    bias : Tensor of shape (n_outputs,)
    C : float
        The chosen inverse regularisation strength (for a subsample of the inner split;
        the final refit scales it by the ratio of subsample sizes, so that the penalty per
        sample is the one chosen).
    worst_group_accuracy : dict of float to float
        Inner-split worst-group accuracy for every ``C`` tried.
    """

    weight: Tensor
    bias: Tensor
    C: float
    worst_group_accuracy: dict = field(default_factory=dict)


def _fit_path(X, y, weights, Cs, loss, n_classes):
    """Average over subsamples of the heads for each C: (len(Cs), K, D), (len(Cs), K)."""
    n_sub = weights.shape[0]
    regs = np.repeat([1.0 / c for c in Cs], n_sub)
    S = torch.as_tensor(np.tile(weights, (len(Cs), 1)), dtype=X.dtype, device=X.device)
    T = torch.as_tensor(y, device=X.device)[None].expand(len(regs), -1)
    head = BatchedLinearHead(loss, reg=regs, n_classes=n_classes).fit(X, T, S)
    coef = head.coef_.reshape(len(Cs), n_sub, *head.coef_.shape[1:]).mean(1)
    icpt = head.intercept_.reshape(len(Cs), n_sub, -1).mean(1)
    return coef, icpt


def _inner_accuracy(
    X: Tensor, y: np.ndarray, groups: np.ndarray, n_groups: int, coef: Tensor, icpt: Tensor
) -> tuple[np.ndarray, np.ndarray]:
    """Worst-group and overall accuracy of each C's head (``coef``: (len(Cs), K, D)) on
    the inner split, as :func:`wsca_audit.primary.metric_values` scores the model."""
    rows = np.vstack([np.ones(len(y)), np.eye(n_groups)[groups].T])  # all, then each group
    weights = torch.as_tensor(rows, dtype=X.dtype, device=X.device)
    labels = torch.as_tensor(y, device=X.device)
    logits = torch.einsum("nd,ckd->cnk", X, coef) + icpt[:, None, :]
    acc = torch.stack([metric_values(lg, labels, weights)["accuracy"] for lg in logits])
    acc = acc.cpu().numpy()
    return acc[:, 1:].min(1), acc[:, 0]


def _choose_C(Xs, y, g, n_groups, Cs, loss, k, n_subsamples, inner_holdout, rng):
    """Index of the C with the best inner-split worst-group accuracy (then mean accuracy),
    the worst-group accuracy of every C, and the subsample size the C was chosen for."""
    inner = stratified_split(g, inner_holdout, rng, at_least=1)
    train = ~inner
    w = balanced_subsamples(g[train], n_subsamples, rng)
    coef, icpt = _fit_path(Xs[train], y[train], w, Cs, loss, k)
    worst, mean = _inner_accuracy(Xs[inner], y[inner], g[inner], n_groups, coef, icpt)
    best = int(np.lexsort((mean, worst))[-1])  # worst-group accuracy, then the mean
    return best, worst, float(w[0].sum())


def fit_balanced_head(
    embeddings,
    labels,
    groups,
    n_outputs: int,
    *,
    Cs: tuple[float, ...] = DEFAULT_CS,
    n_subsamples: int = 10,
    inner_holdout: float = 0.3,
    seed: int = 0,
    group_names: list[str] | None = None,
    device: str | torch.device | None = None,
) -> BalancedHead:
    """Refit a linear head on group-balanced subsamples (DFR), C by worst-group accuracy.

    Parameters
    ----------
    embeddings : array-like of shape (n_samples, D)
    labels : array-like of shape (n_samples,)
        Class indices ``0 .. n_classes - 1``.
    groups : array-like of shape (n_samples,)
        Group index per sample (label x level; any integers).
    n_outputs : int
        Outputs of the head to replace: 1 (one logit), 2 (two-class softmax) or the
        number of classes.
    Cs : tuple of float
        Inverse L2 strengths tried (on standardised embeddings).
    n_subsamples : int, default=10
        Balanced subsamples averaged per head.
    inner_holdout : float, default=0.3
        Share of each group held out to choose ``C``.
    group_names : list of str, optional
        Names of the groups, for the error on a group too small to balance.

    Returns
    -------
    BalancedHead

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> y = rng.integers(0, 2, 400); s = np.where(rng.random(400) < 0.9, y, 1 - y)
    >>> x = np.c_[y + rng.normal(size=400), 3 * s + 0.3 * rng.normal(size=400)]
    >>> h = fit_balanced_head(x, y, 2 * y + s, n_outputs=2)
    >>> bool(abs(h.weight[1, 1] - h.weight[0, 1]) < abs(h.weight[1, 0] - h.weight[0, 0]))
    True
    """
    X = np.asarray(embeddings, dtype=np.float64)
    y = np.asarray(labels).astype(np.int64).reshape(-1)
    _, g = np.unique(np.asarray(groups).reshape(-1), return_inverse=True)
    n_classes = int(y.max()) + 1
    if n_outputs > 2 and n_classes > n_outputs:
        raise AuditError(f"labels go up to {n_classes - 1} but the head has {n_outputs} outputs")
    sizes = np.bincount(g)
    small = np.flatnonzero(sizes < MIN_GROUP)
    if small.size:
        names = group_names or [str(i) for i in range(len(sizes))]
        listed = ", ".join(f"{names[i]} (n={sizes[i]})" for i in small)
        raise AuditError(
            f"group(s) too small to balance: {listed}; each label x level group needs at "
            f"least {MIN_GROUP} samples in the fitting part (audit more samples, merge rare "
            "levels, or use method='erase')"
        )
    rng = np.random.default_rng(seed)
    dev = torch.device(device) if device is not None else torch.device("cpu")
    mu, sd = X.mean(0), X.std(0)
    sd[sd == 0] = 1.0
    Xs = torch.as_tensor((X - mu) / sd, dtype=torch.float64, device=dev)
    loss = "multinomial" if n_outputs > 2 else "binary"
    k = n_outputs if n_outputs > 2 else None

    # choose C by worst-group accuracy on an inner split, stratified by group
    best, worst, n_chosen = _choose_C(
        Xs, y, g, len(sizes), Cs, loss, k, n_subsamples, inner_holdout, rng
    )

    # refit on all of it with the chosen C, per sample: the loss is a sum, so C grows
    # with the subsample size (else the final fit would be less regularised than chosen)
    w_all = balanced_subsamples(g, n_subsamples, rng)
    c_final = Cs[best] * float(w_all[0].sum()) / n_chosen
    coef, icpt = _fit_path(Xs, y, w_all, (c_final,), loss, k)
    coef, icpt = coef[0], icpt[0]  # (k, D), (k,)
    # back to the raw embedding scale
    sd_t = torch.as_tensor(sd, dtype=coef.dtype, device=dev)
    mu_t = torch.as_tensor(mu, dtype=coef.dtype, device=dev)
    coef = coef / sd_t
    icpt = icpt - coef @ mu_t
    if n_outputs == 2:  # one logit difference -> two softmax logits
        coef = torch.cat([-coef / 2, coef / 2])
        icpt = torch.cat([-icpt / 2, icpt / 2])
    return BalancedHead(
        weight=coef,
        bias=icpt,
        C=float(Cs[best]),
        worst_group_accuracy={float(c): float(a) for c, a in zip(Cs, worst)},
    )
