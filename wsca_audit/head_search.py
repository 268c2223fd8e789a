"""Which ``nn.Linear`` of a model is its head: the one whose output the model returns.

``layer="auto"`` records the ``nn.Linear`` calls of the first forward pass; :func:`auto_head`
takes the one whose output is the model's primary output (:func:`~wsca_audit.primary.logits_of`)
or a per-element monotone view of it (:func:`is_monotone_view`: softmax or sigmoid
probabilities, a temperature), and refuses, naming ``layer=`` and ``primary_weight=``,
what it cannot tell (a cosine or prototype classifier, several candidate heads, a head run
twice per forward pass). See docs/heads.md.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from .errors import AuditError
from .primary import logits_of

__all__ = ["auto_head", "is_monotone_view"]


def is_monotone_view(head_out: Tensor, output: Tensor) -> bool:
    """Whether a model's output is the head's logits up to a per-element monotone map
    (softmax or sigmoid probabilities, a temperature): the same shape, not constant unless
    the logits are, and the order of the logits kept, within each row for several
    outputs (softmax keeps no order across samples), across samples for one.

    Examples
    --------
    >>> z = torch.randn(8, 5)
    >>> is_monotone_view(z, torch.softmax(z / 2, 1)), is_monotone_view(z, z[:, [1, 0, 2, 3, 4]])
    (True, False)
    """
    if head_out.shape != output.shape or head_out.ndim != 2:
        return False
    h, o = head_out.detach().double(), output.detach().double()
    if h.shape[1] == 1:  # one output: the order over the samples
        h, o = h.T, o.T
    if (
        o.numel() > 1
        and bool((o == o.flatten()[0]).all())
        and not bool((h == h.flatten()[0]).all())
    ):
        return False
    ordered = o.gather(1, h.argsort(1))
    tol = 1e-6 * (1.0 + float(o.abs().max()))
    return bool((ordered[:, 1:] - ordered[:, :-1] >= -tol).all())


def auto_head(
    calls: list[tuple[nn.Module, Any]], output: Any, name_of: Any, key: str | int | None = None
) -> tuple[nn.Linear, Any, str | None]:
    """The ``nn.Linear`` (and its input) whose output is the model's primary output
    (:func:`logits_of`, ``key``), or a per-element monotone view of it
    (:func:`is_monotone_view`), among the ``(module, input)`` calls of one forward pass in
    order, and a warning to file (None when there is nothing to say).

    The last one called when it gives the primary output (or, for a tuple output, any of
    its tensors). Another one only when the primary output is *named* (``key``, a
    ``"logits"`` entry or attribute: a multi-task model whose other head runs last), said
    in the warning. An :class:`AuditError` naming ``layer=`` otherwise, when several
    match, or when the head runs more than once per forward pass.
    """
    last = calls[-1]
    named = key is not None or (
        not isinstance(output, (Tensor, tuple, list)) and _has_logits(output)
    )
    try:
        out = logits_of(output, key)
    except AuditError as exc:
        note = (
            f"layer='auto' takes {name_of(last[0])!r}, the last nn.Linear called, unchecked: "
            f"{exc}; pass output_key= to name the model's primary output"
        )
        return (*_called_once(calls, last, name_of), note)
    with torch.no_grad():
        if _gives(*last, out):
            return (*_called_once(calls, last, name_of), None)
        if isinstance(output, (tuple, list)) and any(
            isinstance(o, Tensor) and _gives(*last, logits_of(o)) for o in output
        ):  # (features, logits) and the like: the head's output is one of them
            return (*_called_once(calls, last, name_of), None)
        seen: dict[nn.Module, Any] = {}
        for m, z in calls:
            seen.setdefault(m, z)
        match = [(m, z) for m, z in seen.items() if _gives(m, z, out)] if named else []
    if len(match) == 1:
        note = (
            f"layer='auto' takes {name_of(match[0][0])!r}: its output is the model's primary "
            f"output; {name_of(last[0])!r}, called after it, is another head (pass layer= "
            "to audit that one)"
        )
        return (*_called_once(calls, match[0], name_of), note)
    _called_once(calls, last, name_of)  # a head run twice (TTA) explains a mismatch first
    if match:
        raise AuditError(
            f"several nn.Linear layers ({', '.join(repr(name_of(m)) for m, _ in match)}) give "
            "the model's primary output: pass layer='<the head>' to say which is audited"
        )
    raise AuditError(
        f"layer='auto' found {name_of(last[0])!r} (the last nn.Linear called, "
        f"{last[0].out_features} outputs), but the model's output {tuple(out.shape)} is "
        "neither its logits nor a per-element monotone view of them (softmax, sigmoid, "
        "a temperature): a cosine or prototype classifier, or a Linear followed by more "
        "layers? Pass layer='<module whose input is the embedding>' and primary_weight= "
        "(and primary_bias=): the head as a linear map of that embedding; or output_key= "
        "to name the output that is the head's"
    )


def _has_logits(output: Any) -> bool:
    return (isinstance(output, Mapping) and "logits" in output) or hasattr(output, "logits")


def _called_once(calls: list, chosen: tuple, name_of: Any) -> tuple:
    times = sum(1 for m, _ in calls if m is chosen[0])
    if times > 1:
        raise AuditError(
            f"the head {name_of(chosen[0])!r} was called {times} times in one forward pass "
            "(test-time augmentation, or views of one sample): every call's input would be "
            "recorded as a sample. Audit the model with one call per sample (TTA off), or "
            "pass the embeddings to wa.analyze"
        )
    return chosen


def _gives(m: nn.Module, z: Any, out: Tensor) -> bool:
    """Whether Linear ``m`` on its input ``z`` gives ``out`` (up to a monotone view)."""
    return z is not None and is_monotone_view(nn.functional.linear(z, m.weight, m.bias), out)
