"""Counterfactual interventions: set a metadata variable in the input, watch the logit move.

``intervene(inputs, value) -> inputs`` sets the variable (adds or removes a scanner
marker, changes the intensity profile, ...). For each image the primary score (the
log-odds ``z1 - z0`` for two logits, the single logit, or the logit of ``target``) is
computed at every value; the effect is the mean change from ``values[0]`` to each other
value, in units of the score's standard deviation at ``values[0]``, with a bootstrap
interval. This is the ground truth for "the model uses it", against which the
weight-space ``usage`` measure is checked (docs/evidence.md).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from ..errors import AuditError
from ..formatting import ci_text, fmt
from ..naming import interval_metrics, sanitize_name
from ..primary import logits_of, primary_score, score_text
from ..stats import bootstrap_ratio_ci
from .base import (
    Evidence,
    iter_image_batches,
    model_as_deployed,
    model_device,
    model_provenance,
    n_images,
    register_evidence,
)
from .plotting import ci_label


@register_evidence
class InterventionResult(Evidence):
    """Effect of setting a variable on the primary score, in score-sd units.

    A mapping with ``value``, ``ci_low``, ``ci_high`` (last value vs the first),
    ``mean_delta`` (raw score units), ``score_sd``, ``values``, ``per_value`` and
    ``n_samples``. ``deltas_`` holds the per-image changes (last vs first value).
    """

    kind = "intervention"
    section = "interventions"
    schema: ClassVar[dict] = {"$ref": "#/$defs/intervention"}
    title = "Counterfactual interventions"
    explanation = (
        "how far setting the variable in the input moves the primary score, in standard "
        "deviations of the score at the reference value: the ground truth that usage and "
        "effect estimate from the embeddings"
    )

    @property
    def default_key(self) -> str:
        """The entry name ``AuditResult.add_evidence`` uses when none is given."""
        return str(self._data.get("variable") or "intervention")

    @classmethod
    def lines(cls, key: str, data: dict, tasks: dict) -> list[str]:
        use = (tasks.get(key) or {}).get("usage") or {}
        extra = f" (usage {fmt(use.get('value'))})" if use else ""
        values = data.get("values") or ["?"]
        return [
            f"intervention '{key}' {values[0]} -> {values[-1]}: "
            f"primary score moves {ci_text(data)} sd{extra}"
        ]

    @classmethod
    def mlflow(cls, key: str, data: dict) -> tuple[dict[str, float], dict[str, str]]:
        """``wsca.intervention.<key>.effect`` with its CI."""
        return interval_metrics(f"wsca.intervention.{sanitize_name(key)}.effect", data), {}

    def __init__(
        self, data: dict, deltas: np.ndarray | None = None, *, ci_level: float = 0.95
    ) -> None:
        super().__init__(data, ci_level=ci_level)
        self.deltas_ = deltas if deltas is not None else np.zeros(0)

    def figure(self):
        """Histogram of the per-image change (sd units) with the mean and its interval."""
        from matplotlib.figure import Figure

        fig = Figure(figsize=(5.0, 3.0), layout="constrained")
        ax = fig.subplots()
        sd = self._data["score_sd"] or 1.0
        d = self.deltas_ / sd
        if d.size:
            ax.hist(d, bins=min(40, max(5, d.size // 10)), color="#95a5a6")
        ax.axvline(0, color="black", lw=0.8)
        v, lo, hi = self._data["value"], self._data["ci_low"], self._data["ci_high"]
        if v is not None:
            ax.axvline(v, color="#c0392b", lw=2, label=f"mean {v:.2f}")
        if lo is not None and hi is not None:
            ax.axvspan(lo, hi, color="#c0392b", alpha=0.2, label=ci_label(self.ci_level))
        name = self._data.get("variable") or "variable"
        first, last = self._data["values"][0], self._data["values"][-1]
        ax.set_xlabel(f"change of the primary score, {name}: {first} -> {last} (sd units)")
        ax.set_ylabel("images")
        ax.legend(fontsize=8)
        return fig


def intervention_effect(
    model: nn.Module,
    inputs: Any,
    intervene: Callable[[Tensor, Any], Tensor],
    values: Sequence[Any] = (0, 1),
    *,
    variable: str | None = None,
    target: int | None = None,
    batch_size: int = 64,
    n_bootstrap: int = 200,
    ci_level: float = 0.95,
    seed: int = 0,
    device: str | torch.device | None = None,
    progress: bool = True,
) -> InterventionResult:
    """Mean change of the primary score when ``intervene`` sets a variable to each value.

    Parameters
    ----------
    model : torch.nn.Module
        The classifier (in eval mode).
    inputs : Tensor or array (N, ...), or an iterable of batches
        Images (N, C, H, W); each batch is passed to ``intervene`` on the model's device.
    intervene : callable ``(inputs, value) -> inputs``
        Sets the variable; must return a tensor with the same batch size (it gets a copy,
        so it may modify it in place).
    values : sequence, default=(0, 1)
        The reference value first; each further value is compared with it.
    variable : str, optional
        The metadata name, for the report (``add_evidence`` files it under it).
    target : int, optional
        Class whose logit to follow (required for more than two outputs).
    batch_size, n_bootstrap, ci_level, seed, device, progress
        As in :func:`wsca_audit.roi_masking`.

    Returns
    -------
    InterventionResult

    Examples
    --------
    >>> import torch, wsca_audit as wa
    >>> x = torch.randn(64, 1, 4, 4)
    >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 1)).eval()
    >>> def marker(x, on):                      # burn a bright corner pixel in or out
    ...     x[:, :, 0, 0] = 3.0 if on else 0.0
    ...     return x
    >>> res = wa.intervention_effect(model, x, marker, n_bootstrap=50, progress=False)
    >>> w = float(model[1].weight.detach()[0, 0])  # the logit moves by 3 w exactly
    >>> abs(res["mean_delta"] - 3 * w) < 1e-5
    True
    """
    values = list(values)
    if len(values) < 2:
        raise AuditError("values needs at least two entries: the reference, then the others")
    if not callable(intervene):
        raise AuditError("intervene must be a callable (inputs, value) -> inputs")
    if n_bootstrap < 0:
        raise AuditError("n_bootstrap must be >= 0")
    _check_distinct(values)
    with model_as_deployed(model, "the intervention"):
        s, n_outputs = _scores(model, inputs, intervene, values, target, batch_size, device,
                               progress)  # fmt: skip
    ref = s[:, 0]
    sd = float(ref.std(ddof=1))
    if not math.isfinite(sd) or sd <= 1e-12:
        raise AuditError(
            "the primary score is constant over the inputs at the reference value: an effect "
            "in standard-deviation units is undefined"
        )
    per_value = _effects(s, values, sd, n_bootstrap, ci_level, seed)
    last = per_value[str(values[-1])]
    out = {
        "variable": variable,
        "values": [v if isinstance(v, (int, float, str, bool)) else str(v) for v in values],
        "target": target,
        "score": score_text(n_outputs, target),
        "unit": "sd of the primary score at the reference value",
        "value": last["value"],
        "ci_low": last["ci_low"],
        "ci_high": last["ci_high"],
        "mean_delta": last["mean_delta"],
        "score_sd": sd,
        "n_samples": s.shape[0],
        "model": model_provenance(model),
        "n_bootstrap": n_bootstrap,
        "per_value": per_value,
    }
    return InterventionResult(out, deltas=s[:, -1] - ref, ci_level=ci_level)


def _check_distinct(values: list) -> None:
    """Each value is reported under its text: two values with the same text (``1`` and
    ``"1"``, or a value given twice) would overwrite one another."""
    seen: dict[str, Any] = {}
    for v in values:
        key = str(v)
        if key in seen:
            raise AuditError(
                f"values {seen[key]!r} and {v!r} are reported under the same name {key!r}: "
                "give each value once, and values that differ as text"
            )
        seen[key] = v


def _scores(
    model, inputs, intervene, values, target, batch_size, device, progress
) -> tuple[np.ndarray, int]:
    """The primary score of every input at every value, (N, n_values) in float64, and
    the model's number of outputs."""
    dev = model_device(model, device)
    scores: list[Tensor] = []
    n_outputs = 0
    bar = tqdm(total=n_images(inputs), desc="wsca: intervention", unit="img", disable=not progress)
    with torch.inference_mode():
        for x in _batches(inputs, batch_size):
            x = x.to(dev)
            per_value = []
            for v in values:
                logits = logits_of(model(_intervened(intervene, x, v)))
                n_outputs = logits.shape[1]
                per_value.append(primary_score(logits, target).float().cpu())
            scores.append(torch.stack(per_value, 1))
            bar.update(x.shape[0])
    bar.close()
    if not scores:
        raise AuditError("inputs held no samples")
    s = torch.cat(scores).double().numpy()
    if s.shape[0] < 2:
        raise AuditError("an intervention effect needs at least 2 samples")
    return s, n_outputs


def _intervened(intervene: Callable[[Tensor, Any], Tensor], x: Tensor, value: Any) -> Tensor:
    """``intervene(copy of x, value)``, checked: a tensor like its input (the same shape,
    dtype and device), so that the model sees the same kind of input at every value."""
    try:
        xv = intervene(x.clone(), value)
    except AuditError:
        raise
    except Exception as exc:
        raise AuditError(
            f"intervene(inputs, {value!r}) raised {type(exc).__name__}: {exc}"
        ) from exc
    if not isinstance(xv, Tensor):
        raise AuditError(f"intervene(inputs, {value!r}) returned {type(xv).__name__}, not a tensor")
    if xv.shape[0] != x.shape[0]:
        raise AuditError(
            f"intervene(inputs, {value!r}) changed the batch size from {x.shape[0]} "
            f"to {xv.shape[0]}: an intervention must return one input per input"
        )
    if xv.shape != x.shape:
        raise AuditError(
            f"intervene(inputs, {value!r}) returned shape {tuple(xv.shape)} for inputs of "
            f"shape {tuple(x.shape)}: an intervention sets the variable in the input, it does "
            "not crop or resize it (the model would see another kind of input)"
        )
    if xv.dtype != x.dtype or xv.device != x.device:
        raise AuditError(
            f"intervene(inputs, {value!r}) returned {xv.dtype} on {xv.device} for inputs of "
            f"{x.dtype} on {x.device}: return a tensor like its input (e.g. "
            "out.to(inputs.dtype))"
        )
    return xv


def _effects(
    s: np.ndarray, values: list, sd: float, n_bootstrap: int, ci_level: float, seed: int
) -> dict[str, dict]:
    """Per further value, the mean change from the reference in units of ``sd``, with a
    bootstrap interval (the same resamples for every value: one seed, paired with the
    reference), and the raw mean change."""
    ref = s[:, 0]
    out: dict[str, dict] = {}
    for j in range(1, len(values)):
        d = s[:, j] - ref
        lo, hi = bootstrap_ratio_ci(d, ref, n_bootstrap, ci_level, seed)
        out[str(values[j])] = {
            "value": float(d.mean() / sd),
            "ci_low": lo,
            "ci_high": hi,
            "mean_delta": float(d.mean()),
        }
    return out


def _batches(inputs: Any, batch_size: int):
    """Image batches; other tensors of shape (N, ...) are accepted as well (tabular models)."""
    if isinstance(inputs, (Tensor, np.ndarray)) and np.ndim(inputs) != 4:
        x = torch.as_tensor(inputs)
        if x.ndim < 2:
            raise AuditError(f"inputs must have a batch dimension; got shape {tuple(x.shape)}")
        yield from x.float().split(batch_size)
        return
    yield from iter_image_batches(inputs, batch_size)
