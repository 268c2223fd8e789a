"""``alignment`` (report key ``attribution``): the Captum counterpart of ``usage``.

The primary logit contrast is attributed to the embedding with Captum's
``LayerGradientXActivation`` on the head, taking each sample's class mean as the
reference (for a linear head this is exact: ``w ⊙ (z - μ_y)``). The alignment of a task
is the cosine, pooled over samples and embedding units, between these attributions and
those of the task's usage head. It is ``usage`` with the embedding covariance replaced
by its diagonal: do the prediction and the metadata rest on the same units?

(Input attributions, the evidence type, are :mod:`wsca_audit.evidence.attribution`.)
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .. import correlation as corr
from ..primary import output_contrasts
from ..shards import Shard, total
from .base import Computed, Measure


class Alignment(Measure):
    """Pooled cosine of the primary and auxiliary layer attributions (max-abs)."""

    name = "alignment"
    key = "attribution"  # the report key of schema_version 1
    label = "attribution alignment"
    explanation = (
        "the Captum counterpart of usage: the same comparison with the covariance's "
        "diagonal only (do the prediction and the metadata rest on the same embedding units)"
    )

    def enabled(self, settings) -> bool:
        return bool(settings.layer_attribution)

    def compute(self, task) -> dict:
        head_aux, weights = task.usage_heads
        keep = 1 + task.cfg.n_bootstrap  # [point, boots]; permutation refits are usage's
        coef, weights = head_aux.coef_[:keep], weights[:keep]
        if coef.shape[1] > 1:
            coef = coef - coef.mean(1, keepdim=True)
        # The usage heads act on Zws = Zw / sd_w; attributing a head with weights W * sd_w
        # on Zws gives exactly the attributions of W on Zw (grad x input is invariant to
        # rescaling a unit), so no second copy of Zw is kept.
        head = linear_head(task.W * task.sd_w, task.b)
        contrasts = output_contrasts(task.W.shape[0], task.dtype, task.device)
        # the usage heads' weights, like Zws, are this rank's samples
        matrix = layer_alignment(head, contrasts, task.Zws, coef, weights, shard=task.shard)
        per_class = {
            "rows": task.contrast_rows,
            "cols": task.level_cols,
            "matrix": task.rows(matrix[0]),
        }
        block = {
            "method": "captum.attr.LayerGradientXActivation",
            "reference": "class mean",
            **task.ci_block(corr.max_abs(matrix)),
        }
        return Computed(block, per_class)


def linear_head(weight: Tensor, bias: Tensor | None = None) -> nn.Linear:
    """An ``nn.Linear`` holding a primary head's weights (for Captum's layer methods)."""
    head = nn.Linear(weight.shape[1], weight.shape[0], dtype=weight.dtype, device=weight.device)
    with torch.no_grad():
        head.weight.copy_(weight)
        head.bias.copy_(bias if bias is not None else torch.zeros_like(head.bias))
    return head.requires_grad_(False)


def layer_attributions(head: nn.Module, embeddings: Tensor, contrasts: Tensor) -> Tensor:
    """Attributions of each logit contrast to the head's input, shape (N, C', D).

    Captum ``LayerGradientXActivation(forward, head).attribute(..., attribute_to_layer_input=True)``
    with ``forward(z) = head(z) @ contrasts.T``; pass embeddings minus their reference
    (e.g. the class means) to attribute relative to it.

    Examples
    --------
    >>> import torch
    >>> head = linear_head(torch.tensor([[1.0, 0.0], [0.0, 2.0]]))
    >>> layer_attributions(head, torch.tensor([[1.0, 1.0]]), output_contrasts(2))
    tensor([[[-1.,  2.]]])
    """
    from captum.attr import LayerGradientXActivation

    def forward(z: Tensor) -> Tensor:
        return head(z) @ contrasts.T

    lgxa = LayerGradientXActivation(forward, head)
    out = []
    with torch.enable_grad():
        for c in range(contrasts.shape[0]):
            # Captum sets requires_grad on its inputs in place: give it a detached alias
            a = lgxa.attribute(embeddings.detach(), target=c, attribute_to_layer_input=True)
            out.append(a.detach())
    return torch.stack(out, 1)


def layer_alignment(
    head: nn.Module,
    contrasts: Tensor,
    embeddings: Tensor,
    aux_coef: Tensor,
    weights: Tensor,
    chunk: int = 4096,
    shard: Shard | None = None,
) -> Tensor:
    """Pooled cosine between primary and auxiliary attributions, shape (P, C', K).

    Parameters
    ----------
    head : nn.Module
        The primary head (as it acts on ``embeddings``).
    contrasts : Tensor (C', n_outputs)
    embeddings : Tensor (N, D)
        Centred on the reference (class means), in the coordinates ``aux_coef`` acts on.
    aux_coef : Tensor (P, K, D)
        Auxiliary heads (one per problem: point fit, bootstrap refits).
    weights : Tensor (P, N)
        Sample weights of each problem (bootstrap counts, validity).

    The attributions are accumulated chunk by chunk: only (P, D) sums are kept (and,
    with a ``shard``, summed over the ranks: ``embeddings`` and ``weights`` then hold
    this rank's samples).
    """
    n, d = embeddings.shape
    c_out = contrasts.shape[0]
    p = weights.shape[0]
    cross = torch.zeros(p, c_out, d, dtype=embeddings.dtype, device=embeddings.device)
    norm_a = torch.zeros(p, c_out, dtype=embeddings.dtype, device=embeddings.device)
    sq = torch.zeros(p, d, dtype=embeddings.dtype, device=embeddings.device)
    for start in range(0, n, chunk):
        z = embeddings[start : start + chunk]
        w = weights[:, start : start + chunk]
        a = layer_attributions(head, z, contrasts)  # (n, C', D)
        for c in range(c_out):
            cross[:, c] += w @ (a[:, c] * z)
            norm_a[:, c] += w @ a[:, c].pow(2).sum(1)
        sq += w @ z.pow(2)
    cross, norm_a, sq = (total(t, shard) for t in (cross, norm_a, sq))
    num = torch.einsum("pcd,pkd->pck", cross, aux_coef)
    norm_b = torch.einsum("pkd,pd->pk", aux_coef.pow(2), sq)
    den = (norm_a[:, :, None] * norm_b[:, None, :]).sqrt()
    return torch.where(den > 0, num / den.clamp_min(1e-30), torch.zeros_like(num))
