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

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from .errors import AuditError
from .head_kinds import (
    TASKS,
    EncodedTargets,
    class_strata,
    encode_targets,
    label_codes,
    resolve_task,
)
from .metrics import weighted_accuracy, weighted_auc
from .resampling import Bootstrap, over_weights
from .stats import ci_block
from .validation import as_array

__all__ = [
    "HEADLINE",
    "TASKS",
    "EncodedTargets",
    "PrimaryHead",
    "ScoreModel",
    "absent_classes",
    "auc_score_text",
    "class_strata",
    "class_vectors",
    "contrast_names",
    "contrasts",
    "encode_targets",
    "head_fingerprint",
    "headline",
    "headline_name",
    "label_aucs",
    "label_codes",
    "logits_of",
    "metric_values",
    "metrics_block",
    "n_classes",
    "output_contrasts",
    "outputs_auc",
    "predictions",
    "primary_score",
    "resolve_task",
    "score_text",
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

    @property
    def fingerprint(self) -> str:
        """:func:`head_fingerprint` of this head."""
        return head_fingerprint(self.weight, self.bias)

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


def head_fingerprint(weight: Any, bias: Any = None) -> str:
    """A short hash of a head's weights (as float32, a missing bias as zeros): the same
    for the head an audit read and the ``nn.Linear`` it came from, so that evidence can
    say whether it ran on the audited model.

    Examples
    --------
    >>> lin = torch.nn.Linear(3, 2)
    >>> head_fingerprint(lin.weight, lin.bias) == head_fingerprint(
    ...     lin.weight.detach().double().numpy(), lin.bias.detach().numpy())
    True
    """
    w = np.ascontiguousarray(_float32(weight))
    b = np.zeros(w.shape[0], np.float32) if bias is None else _float32(bias).reshape(-1)
    digest = hashlib.sha256(str(w.shape).encode())
    digest.update(w.tobytes())
    digest.update(np.ascontiguousarray(b).tobytes())
    return digest.hexdigest()[:16]


def _float32(x: Any) -> np.ndarray:
    if isinstance(x, Tensor):
        x = x.detach().to("cpu", torch.float32).numpy()
    return np.asarray(x, dtype=np.float32)


def class_vectors(weight: Tensor, center: bool = True, task: str | None = None) -> Tensor:
    """The primary head's class vectors as the paper compares them (C x d).

    A softmax head is defined only up to a vector added to every class, which changes
    no prediction; ``center`` removes it (the mean class vector), so two heads that
    predict identically get identical cosines. A single-logit head, and the independent
    sigmoids of a multi-label head, are left as they are.
    """
    if center and weight.shape[0] > 1 and task != "multilabel":
        return weight - weight.mean(0, keepdim=True)
    return weight


def contrasts(weight: Tensor, task: str | None = None) -> Tensor:
    """Directions along which the primary prediction changes (one row per contrast).

    One logit (a binary logit, a regression output): ``w``; two logits: ``w1 - w0``;
    ``C >= 3`` classes: each class against the mean; multi-label: each label's logit.
    """
    if task == "multilabel":
        return weight
    if weight.shape[0] == 2:
        return weight[1:] - weight[:1]
    return class_vectors(weight, center=True)


def contrast_names(n_outputs: int, task: str | None = None, names: Any = None) -> list[str]:
    """The name of each contrast of :func:`contrasts`: ``output_names`` where given (class
    or finding names), else output indices (``"1-0"`` for a two-logit head).

    Examples
    --------
    >>> contrast_names(2), contrast_names(3), contrast_names(2, "multilabel", ["edema", "mass"])
    (['1-0'], ['0', '1', '2'], ['edema', 'mass'])
    """
    if names is not None and len(names) != n_outputs:
        raise AuditError(
            f"output_names has {len(names)} names but the head has {n_outputs} outputs"
        )
    if n_outputs == 2 and task != "multilabel":
        return ["1-0"] if names is None else [f"{names[1]}-{names[0]}"]
    if names is not None:
        return [str(x) for x in names]
    return [str(c) for c in range(n_outputs)]


# --------------------------------------------------------------------------- scores
def output_contrasts(
    n_outputs: int, dtype=torch.float32, device=None, task: str | None = None
) -> Tensor:
    """Rows map logits to the contrasts the prediction rests on (see :func:`contrasts`).

    One output: itself; two: ``z1 - z0``; ``C >= 3``: each logit minus the mean logit;
    multi-label: each logit.
    """
    if n_outputs == 1 or task == "multilabel":
        return torch.eye(n_outputs, dtype=dtype, device=device)
    if n_outputs == 2:
        return torch.tensor([[-1.0, 1.0]], dtype=dtype, device=device)
    eye = torch.eye(n_outputs, dtype=dtype, device=device)
    return eye - 1.0 / n_outputs


def logits_of(output: Any, key: str | int | None = None) -> Tensor:
    """The logits tensor of a model output (a tensor, a tuple's first item, ``.logits`` or
    the ``"logits"`` entry; ``key``: that entry, attribute or tuple index instead)."""
    if isinstance(key, int) and isinstance(output, (tuple, list)):
        if not -len(output) <= key < len(output):
            raise AuditError(f"output_key={key}: the model's output has {len(output)} elements")
        output = output[key]
    elif key is not None:
        if isinstance(output, Mapping) and key in output:
            output = output[key]
        elif hasattr(output, key):
            output = getattr(output, key)
        else:
            raise AuditError(f"the model's output has no {key!r} (output_key=)")
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


def score_text(n_outputs: int, target: int | None = None, *, many: str = "predicted class") -> str:
    """The score evidence read, in words: what :func:`primary_score` (or ``many`` for a
    head of three or more outputs without ``target``) stands for.

    Examples
    --------
    >>> score_text(2), score_text(10, 8), score_text(10)
    ('log-odds (logit 1 − logit 0)', 'logit 8', 'predicted class')
    """
    if target is not None:
        return f"logit {int(target)}"
    if n_outputs == 1:
        return "the single output (a logit, or a regression prediction)"
    if n_outputs == 2:
        return "log-odds (logit 1 − logit 0)"
    return many


class ScoreModel(nn.Module):
    """``model`` followed by :func:`primary_score`: one scalar per sample, for Captum."""

    def __init__(self, model: nn.Module, target: int | None = None) -> None:
        super().__init__()
        self.model = model
        self.target = target

    def forward(self, x: Tensor) -> Tensor:
        return primary_score(logits_of(self.model(x)), self.target)


# --------------------------------------------------------------------------- targets
def absent_classes(present: np.ndarray, n_outputs: int) -> list[int]:
    """Head classes with no sample (only for heads of three or more outputs: with two,
    a missing class leaves a single class, which is said elsewhere)."""
    if n_outputs < 3:
        return []
    return sorted(set(range(n_outputs)) - {int(c) for c in present})


# --------------------------------------------------------------------------- metrics
def predictions(logits: Tensor) -> Tensor:
    """The model's decision: ``argmax`` of several outputs, ``logit > 0`` of one."""
    return logits.argmax(1) if logits.shape[1] > 1 else (logits[:, 0] > 0).long()


def metric_values(
    logits: Tensor, labels: Tensor, weights: Tensor, task: str | None = None
) -> dict[str, Tensor]:
    """Each metric of the task for each weight row (point and bootstrap resamples). A row
    with no weight, or a class that a row lacks, gives NaN.

    - classifiers: ``accuracy`` always; ``auc`` of the score, ``sensitivity`` and
      ``specificity`` at the model's own decision when the head has one or two outputs
      and the labels are 0/1; ``macro_auc`` (:func:`outputs_auc`) for ``"multiclass"``
      heads of three or more outputs;
    - ``"multilabel"``: ``macro_auc``, the mean of each label's AUC of its own logit;
    - ``"regression"``: ``r2`` and ``mae`` (mean absolute error, in the target's units).

    Examples
    --------
    >>> lg = torch.tensor([[0.0, 1.0], [0.0, -1.0], [0.0, 2.0]])
    >>> m = metric_values(lg, torch.tensor([1, 0, 0]), torch.ones(1, 3))
    >>> {k: round(float(v[0]), 3) for k, v in m.items()}
    {'accuracy': 0.667, 'auc': 0.5, 'sensitivity': 1.0, 'specificity': 0.5}
    >>> m = metric_values(torch.tensor([[1.0], [2.0], [4.0]]), torch.tensor([1.0, 2.0, 3.0]),
    ...                   torch.ones(1, 3), task="regression")
    >>> {k: round(float(v[0]), 3) for k, v in m.items()}
    {'r2': 0.5, 'mae': 0.333}
    """
    total = weights.sum(1)
    if task == "regression":
        out = _regression_metrics(logits[:, 0].to(weights.dtype), labels.to(weights.dtype), weights)
    elif task == "multilabel":
        out = {"macro_auc": torch.nanmean(label_aucs(logits, labels, weights), dim=0)}
    else:
        out = _class_metrics(logits, labels, weights)
        if task == "multiclass" and logits.shape[1] >= 3:
            out["macro_auc"] = outputs_auc(logits, labels, weights)
    empty = total <= 0
    return {k: torch.where(empty, torch.full_like(v, float("nan")), v) for k, v in out.items()}


def _class_metrics(logits: Tensor, labels: Tensor, weights: Tensor) -> dict[str, Tensor]:
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
    return out


def _regression_metrics(pred: Tensor, y: Tensor, weights: Tensor) -> dict[str, Tensor]:
    """Weighted R² and MAE per weight row (R² NaN where the target does not vary)."""
    total = weights.sum(1).clamp_min(1e-30)
    mean = (weights @ y) / total
    ss_tot = (weights * (y[None, :] - mean[:, None]) ** 2).sum(1)
    ss_res = weights @ (y - pred) ** 2
    r2 = 1 - ss_res / ss_tot.clamp_min(1e-30)
    r2 = torch.where(ss_tot > 0, r2, torch.full_like(r2, float("nan")))
    return {"r2": r2, "mae": (weights @ (y - pred).abs()) / total}


def label_aucs(logits: Tensor, labels: Tensor, weights: Tensor) -> Tensor:
    """Each label's AUC of its own logit, (n_labels, n_weight_rows): a multi-label head."""
    return torch.stack(
        [weighted_auc(logits[:, j], labels[:, j] == 1, weights) for j in range(logits.shape[1])]
    )


HEADLINE = {
    "binary": "auc",
    "multiclass": "accuracy",
    "multilabel": "macro_auc",
    "regression": "r2",
}


def headline(
    logits: Tensor,
    labels: Tensor,
    n_labels: int,
    weights: Tensor,
    n_bootstrap: int,
    level: float,
    task: str | None = None,
) -> tuple[dict, str | None]:
    """The report's primary metric, ``{"name", "value", "ci_low", "ci_high"}``, and None
    (where a warning once was): ``r2`` for regression, ``macro_auc`` for multi-label, AUC
    of the score for a head of one or two outputs on two classes, accuracy otherwise.

    Examples
    --------
    >>> lg = torch.tensor([[0.0, 1.0], [0.0, -1.0], [0.0, 2.0], [0.0, -2.0]])
    >>> block, note = headline(lg, torch.tensor([1, 0, 1, 0]), 2, torch.ones(1, 4), 0, 0.95)
    >>> block["name"], block["value"], note
    ('auc', 1.0, None)
    """
    name = headline_name(task, logits.shape[1], n_labels)
    if task in ("regression", "multilabel"):
        vals = metric_values(logits, labels, weights, task)[name]
    elif name == "auc":
        vals = weighted_auc(primary_score(logits), labels == 1, weights)
    else:
        vals = weighted_accuracy(predictions(logits), labels, weights)
    return {"name": name, **ci_block(vals, n_bootstrap, level)}, None


def headline_name(task: str | None, n_outputs: int, n_labels: int) -> str:
    """Which of :func:`metric_values`' metrics is the report's primary one.

    Examples
    --------
    >>> headline_name("binary", 2, 2), headline_name("multiclass", 10, 7), headline_name("regression", 1, 0)
    ('auc', 'accuracy', 'r2')
    """
    if task in ("regression", "multilabel"):
        return HEADLINE[task]
    return "auc" if n_outputs <= 2 and n_labels == 2 else "accuracy"


def n_classes(task: str, n_outputs: int) -> int | None:
    """The report's ``n_classes``: a classifier's classes (two for a single logit), a
    multi-label head's labels, None for regression."""
    if task == "regression":
        return None
    return n_outputs if n_outputs > 1 else 2


def metrics_block(
    logits: Tensor | None,
    labels: Tensor | None,
    weights: Tensor | Bootstrap,
    *,
    task: str,
    n_labels: int,
    n_bootstrap: int,
    level: float,
    output_names: list | None = None,
    target_unit: str | None = None,
) -> dict:
    """The report's ``primary`` metrics: ``metric`` (:func:`headline_name`'s), ``metrics`` (every
    metric of the task, :func:`metric_values`), each label's AUC in ``by_output`` for a
    multi-label head, and a regression target's ``target_unit``. ``labels`` None (no
    targets): the metric is not reported. ``weights``: the point row then each resample
    (a matrix, or the audit's :class:`~wsca_audit.resampling.Bootstrap`, read a block of
    resamples at a time).

    Examples
    --------
    >>> lg, y = torch.tensor([[1.0], [2.0], [4.0]]), torch.tensor([1.0, 2.0, 3.0])
    >>> b = metrics_block(lg, y, torch.ones(1, 3), task="regression", n_labels=0,
    ...                   n_bootstrap=0, level=0.95)
    >>> b["metric"]["name"], round(b["metrics"]["mae"]["value"], 3)
    ('r2', 0.333)
    """
    if labels is None or logits is None:
        return {"metric": {"name": None, "value": None}}
    # the headline is one of them
    values = over_weights(weights, lambda w: metric_values(logits, labels, w, task))
    metrics = {k: ci_block(v, n_bootstrap, level) for k, v in values.items()}
    name = headline_name(task, logits.shape[1], n_labels)
    out: dict = {"metric": {"name": name, **metrics[name]}, "metrics": metrics}
    if task == "multilabel":
        names = contrast_names(logits.shape[1], task, output_names)
        aucs = over_weights(weights, lambda w: label_aucs(logits, labels, w).T).T
        out["by_output"] = {
            n: {"auc": ci_block(a, n_bootstrap, level)} for n, a in zip(names, aucs)
        }
    if task == "regression" and target_unit:
        out["target_unit"] = target_unit
    return out


def outputs_auc(
    outputs: Tensor, labels: Tensor, weights: Tensor, *, target: int | None = None
) -> Tensor:
    """AUC of model outputs (N x K) against the head's class indices ``labels``, per
    weight row, of the score :func:`auc_score_text` names:

    - ``target`` given: class ``target`` against the rest, scored by its log-odds
      against the others (``logit c - logsumexp`` of the other logits);
    - two classes present: the head's log-odds between them (``z1 - z0``, the single
      logit, or ``logit b - logit a`` on a head of more outputs);
    - more: macro one-vs-rest of the softmax over the classes present.

    Examples
    --------
    >>> lg = torch.tensor([[0.0, 1.0, 0.0], [0.0, 0.0, 2.0], [0.0, 3.0, 0.0]])
    >>> float(outputs_auc(lg, torch.tensor([2, 1, 2]), torch.ones(1, 3))[0])  # logit 2 - logit 1
    0.0
    """
    present = torch.unique(labels)
    k = outputs.shape[1]
    if target is not None:
        score = _one_vs_rest_logodds(outputs, int(target)) if k > 1 else outputs[:, 0]
        return weighted_auc(score, labels == int(target), weights)
    if len(present) == 2:
        low, high = (int(c) for c in present)
        score = primary_score(outputs) if k <= 2 else outputs[:, high] - outputs[:, low]
        return weighted_auc(score, labels == high, weights)
    probs = torch.softmax(outputs, 1)
    per_class = [weighted_auc(probs[:, int(c)], labels == c, weights) for c in present]
    return torch.nanmean(torch.stack(per_class), dim=0)


def _one_vs_rest_logodds(outputs: Tensor, target: int) -> Tensor:
    if not 0 <= target < outputs.shape[1]:
        raise AuditError(
            f"target={target} is not a class of a model with {outputs.shape[1]} outputs"
        )
    others = torch.cat([outputs[:, :target], outputs[:, target + 1 :]], 1)
    return outputs[:, target] - torch.logsumexp(others, 1)


def auc_score_text(n_outputs: int, present: Any, target: int | None = None) -> str:
    """In words, the score whose AUC :func:`outputs_auc` gives.

    Examples
    --------
    >>> auc_score_text(10, [3, 8]), auc_score_text(2, [0, 1]), auc_score_text(10, [3, 8], 3)
    ('logit 8 − logit 3', 'log-odds (logit 1 − logit 0)', 'class 3 against the rest (logit 3 − logsumexp of the others)')
    """
    present = [int(c) for c in present]
    if target is not None:
        return (
            f"class {int(target)} against the rest (logit {int(target)} − logsumexp of the others)"
        )
    if len(present) == 2:
        if n_outputs <= 2:
            return score_text(n_outputs)
        return f"logit {present[1]} − logit {present[0]}"
    return f"softmax, macro one-vs-rest over the {len(present)} classes present"
