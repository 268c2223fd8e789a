"""One owner of the model's outputs: which scores are audited, what holding the target
fixed means, and the primary metric with its intervals.

Every stage asks this module and computes none of it itself (the habit of torchmetrics'
``AUROC(task=...)``: one facade over the head kinds, each with its own checks):

- the head: :class:`PrimaryHead` (``logits = z @ weight.T + bias``), its class vectors
  (:func:`class_vectors`, the paper's ``wsc`` side) and :func:`contrasts`, the
  directions along which the prediction changes (what ``usage`` and ``effect`` audit);
- the score of a model's output that the prediction rests on: :func:`logits_of`,
  :func:`primary_score` and :class:`ScoreModel` (the evidence types and Captum);
- holding the target fixed: :func:`label_codes`, the strata the measures condition on;
- the metric: :func:`metric_values` (AUC, accuracy, sensitivity, specificity for every
  weight row), :func:`headline` (the report's primary metric) and :func:`outputs_auc`
  (AUC of model outputs against labels, for the ROI-masking evidence).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from .errors import AuditError
from .metrics import macro_ovr_auc, weighted_accuracy, weighted_auc
from .stats import ci_block
from .validation import as_array

__all__ = [
    "PrimaryHead",
    "ScoreModel",
    "class_vectors",
    "contrasts",
    "headline",
    "label_codes",
    "logits_of",
    "metric_values",
    "output_contrasts",
    "outputs_auc",
    "predictions",
    "primary_score",
]


# --------------------------------------------------------------------------- the head
@dataclass(frozen=True)
class PrimaryHead:
    """The model's own classification head: ``logits = embedding @ weight.T + bias``.

    Attributes
    ----------
    weight : numpy.ndarray of shape (n_outputs, embedding_dim)
    bias : numpy.ndarray of shape (n_outputs,)
    source : str
        Where the head came from (a module name, or ``"user"``).
    """

    weight: np.ndarray
    bias: np.ndarray
    source: str = "user"

    @property
    def n_outputs(self) -> int:
        return int(self.weight.shape[0])

    @classmethod
    def from_arrays(cls, weight, bias=None, source: str = "user") -> PrimaryHead:
        """Validate user-given head weights (array-like or tensor)."""
        w = as_array(weight, "primary_weight").astype(np.float64)
        if w.ndim == 1:
            w = w[None, :]
        if w.ndim != 2:
            raise AuditError(
                f"primary_weight must have shape (n_outputs, embedding_dim); got {w.shape}"
            )
        if bias is None:
            b = np.zeros(w.shape[0])
        else:
            b = as_array(bias, "primary_bias").astype(np.float64).reshape(-1)
            if b.shape[0] != w.shape[0]:
                raise AuditError(
                    f"primary_bias has {b.shape[0]} entries but primary_weight has "
                    f"{w.shape[0]} outputs"
                )
        if not (np.isfinite(w).all() and np.isfinite(b).all()):
            raise AuditError("primary_weight / primary_bias contain NaN or inf")
        return cls(weight=w, bias=b, source=source)

    @classmethod
    def from_linear(cls, module: torch.nn.Linear, source: str) -> PrimaryHead:
        bias = None if module.bias is None else module.bias.detach()
        return cls.from_arrays(module.weight.detach(), bias, source=source)


def class_vectors(weight: Tensor, center: bool = True) -> Tensor:
    """The primary head's class vectors as the paper compares them (C x d).

    A softmax head is defined only up to a vector added to every class, which changes
    no prediction; ``center`` removes it (the mean class vector), so two heads that
    predict identically get identical cosines. A single-logit head is left as it is.
    """
    if center and weight.shape[0] > 1:
        return weight - weight.mean(0, keepdim=True)
    return weight


def contrasts(weight: Tensor) -> Tensor:
    """Directions along which the primary prediction changes (one row per contrast).

    One logit: ``w``; two logits: ``w1 - w0``; ``C >= 3``: each class against the mean.
    """
    if weight.shape[0] == 2:
        return weight[1:] - weight[:1]
    return class_vectors(weight, center=True)


# --------------------------------------------------------------------------- scores
def output_contrasts(n_outputs: int, dtype=torch.float32, device=None) -> Tensor:
    """Rows map logits to the contrasts the prediction rests on (see :func:`contrasts`).

    One output: itself; two: ``z1 - z0``; ``C >= 3``: each logit minus the mean logit.
    """
    if n_outputs == 1:
        return torch.ones(1, 1, dtype=dtype, device=device)
    if n_outputs == 2:
        return torch.tensor([[-1.0, 1.0]], dtype=dtype, device=device)
    eye = torch.eye(n_outputs, dtype=dtype, device=device)
    return eye - 1.0 / n_outputs


def logits_of(output: Any) -> Tensor:
    """The logits tensor of a model output (a tensor, a tuple's first item, or ``.logits``)."""
    if isinstance(output, Tensor):
        out = output
    elif isinstance(output, Mapping) and "logits" in output:
        out = output["logits"]
    elif hasattr(output, "logits"):
        out = output.logits
    elif isinstance(output, (tuple, list)) and output and isinstance(output[0], Tensor):
        out = output[0]
    else:
        raise AuditError(f"cannot find logits in a model output of type {type(output).__name__}")
    if out.ndim == 1:
        out = out[:, None]
    if out.ndim != 2:
        raise AuditError(f"expected logits of shape (batch, classes); got {tuple(out.shape)}")
    return out


def primary_score(logits: Tensor, target: int | None = None) -> Tensor:
    """The score the prediction rests on, one per sample.

    One output: that logit; two outputs: ``z1 - z0`` (the log-odds of class 1);
    more: the logit of ``target`` (required).
    """
    k = logits.shape[1]
    if target is not None:
        if not 0 <= int(target) < k:
            raise AuditError(f"target={target} is not a class of a model with {k} outputs")
        return logits[:, int(target)]
    if k == 1:
        return logits[:, 0]
    if k == 2:
        return logits[:, 1] - logits[:, 0]
    raise AuditError(
        f"the model has {k} outputs: say which class's logit to follow with target=<index>"
    )


class ScoreModel(nn.Module):
    """``model`` followed by :func:`primary_score`: one scalar per sample, for Captum."""

    def __init__(self, model: nn.Module, target: int | None = None) -> None:
        super().__init__()
        self.model = model
        self.target = target

    def forward(self, x: Tensor) -> Tensor:
        return primary_score(logits_of(self.model(x)), self.target)


# --------------------------------------------------------------------------- targets
def label_codes(targets: Any) -> tuple[np.ndarray, np.ndarray]:
    """Class index per sample (the strata the measures hold fixed) and the sorted
    distinct target values they stand for.

    Examples
    --------
    >>> codes, values = label_codes(np.array([3, 1, 3]))
    >>> codes.tolist(), values.tolist()
    ([1, 0, 1], [1, 3])
    """
    values, codes = np.unique(np.asarray(targets), return_inverse=True)
    return codes.reshape(-1), values


# --------------------------------------------------------------------------- metrics
def predictions(logits: Tensor) -> Tensor:
    """The model's decision: ``argmax`` of several outputs, ``logit > 0`` of one."""
    return logits.argmax(1) if logits.shape[1] > 1 else (logits[:, 0] > 0).long()


def metric_values(logits: Tensor, labels: Tensor, weights: Tensor) -> dict[str, Tensor]:
    """Each metric for each weight row (point and bootstrap resamples): ``accuracy``
    always; ``auc`` of the score, ``sensitivity`` and ``specificity`` at the model's own
    decision when the head has one or two outputs and the labels are 0/1. A row with no
    weight, or a class that a row lacks, gives NaN.

    Examples
    --------
    >>> lg = torch.tensor([[0.0, 1.0], [0.0, -1.0], [0.0, 2.0]])
    >>> m = metric_values(lg, torch.tensor([1, 0, 0]), torch.ones(1, 3))
    >>> {k: round(float(v[0]), 3) for k, v in m.items()}
    {'accuracy': 0.667, 'auc': 0.5, 'sensitivity': 1.0, 'specificity': 0.5}
    """
    n_out = logits.shape[1]
    hit = (predictions(logits) == labels).to(weights.dtype)
    total = weights.sum(1)
    out = {"accuracy": (weights * hit).sum(1) / total.clamp_min(1e-30)}
    binary_labels = not labels.numel() or int(labels.max()) <= 1
    if n_out <= 2 and binary_labels:
        pos = labels == 1
        out["auc"] = weighted_auc(primary_score(logits), pos, weights)
        p, n = pos.to(weights.dtype), (~pos).to(weights.dtype)
        out["sensitivity"] = (weights * hit * p).sum(1) / (weights * p).sum(1).clamp_min(1e-30)
        out["specificity"] = (weights * hit * n).sum(1) / (weights * n).sum(1).clamp_min(1e-30)
        for k in ("sensitivity", "specificity"):  # undefined without that class
            has = (weights * (p if k == "sensitivity" else n)).sum(1) > 0
            out[k] = torch.where(has, out[k], torch.full_like(out[k], float("nan")))
    empty = total <= 0
    return {k: torch.where(empty, torch.full_like(v, float("nan")), v) for k, v in out.items()}


def headline(
    logits: Tensor, labels: Tensor, n_labels: int, weights: Tensor, n_bootstrap: int, level: float
) -> tuple[dict, str | None]:
    """The report's primary metric: AUC of the score for a head of one or two outputs
    on two classes, accuracy otherwise; ``{"name", "value", "ci_low", "ci_high"}`` and a
    warning when the targets cannot be the head's class indices (else None).

    Examples
    --------
    >>> lg = torch.tensor([[0.0, 1.0], [0.0, -1.0], [0.0, 2.0], [0.0, -2.0]])
    >>> block, note = headline(lg, torch.tensor([1, 0, 1, 0]), 2, torch.ones(1, 4), 0, 0.95)
    >>> block["name"], block["value"], note
    ('auc', 1.0, None)
    """
    n_out = logits.shape[1]
    note = None
    if n_out <= 2 and n_labels == 2:
        name, vals = "auc", weighted_auc(primary_score(logits), labels == 1, weights)
    else:
        if n_out != 1 and int(labels.max()) >= n_out:
            note = (
                f"targets have {n_labels} classes but the head has {n_out} outputs; "
                "the primary metric compares argmax indices with sorted target values"
            )
        name, vals = "accuracy", weighted_accuracy(predictions(logits), labels, weights)
    return {"name": name, **ci_block(vals, n_bootstrap, level)}, note


def outputs_auc(outputs: Tensor, labels: Tensor, n_labels: int, weights: Tensor) -> Tensor:
    """AUC of model outputs (N x K) against class indices, per weight row: of the score
    for two classes (a head of three or more outputs: class 1's logit), macro
    one-vs-rest of the softmax for more."""
    k = outputs.shape[1]
    if n_labels == 2:
        score = primary_score(outputs, target=1 if k > 2 else None)
        return weighted_auc(score, labels == 1, weights)
    if k != n_labels:
        raise AuditError(
            f"targets have {n_labels} classes but the model has {k} outputs; for "
            "multi-class AUC the labels must be the class indices 0..K-1"
        )
    return macro_ovr_auc(torch.softmax(outputs, 1), labels, weights)
