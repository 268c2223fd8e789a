"""The new head as a module: patched into a copy of the model, built as an ``nn.Linear``,
and read back from ``head.safetensors`` without unpickling anything."""

from __future__ import annotations

import copy
from pathlib import Path

import torch
from torch import Tensor, nn

from ..errors import AuditError

__all__ = [
    "ERASER_FILE",
    "HEAD_FILE",
    "copy_without_audit",
    "linear_head",
    "load_head",
    "patch_model",
]

# the module dicts in which torch keeps a module's hooks (and their flags), by hook id
_HOOK_DICTS = (
    "_forward_hooks",
    "_forward_hooks_with_kwargs",
    "_forward_hooks_always_called",
    "_forward_pre_hooks",
    "_forward_pre_hooks_with_kwargs",
    "_backward_hooks",
    "_backward_pre_hooks",
)
_HOOK_HOLDERS = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks")
_HOOK_HOLDERS = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks")

HEAD_FILE = "head.safetensors"
ERASER_FILE = "eraser.safetensors"


def linear_head(weight: Tensor, bias: Tensor) -> nn.Linear:
    """The head ``x -> x @ weight.T + bias`` as a float32 ``nn.Linear`` on the CPU.

    Examples
    --------
    >>> linear_head(torch.ones(2, 3, dtype=torch.float64), torch.zeros(2)).weight.dtype
    torch.float32
    """
    head = nn.Linear(weight.shape[1], weight.shape[0])
    with torch.no_grad():
        head.weight.copy_(weight.float())
        head.bias.copy_(bias.float())
    return head


def patch_model(
    model: nn.Module | None, layer: str, source: str, weight: Tensor, bias: Tensor
) -> tuple[nn.Module | None, str | None]:
    """A deep copy of ``model`` whose head ``source`` has the new weights, or (None, why not).

    The model is patched only where the embedding is the head's own input (``layer ==
    source``) and the head is an ``nn.Linear`` of the same shape; ``model`` itself is
    never changed. A head without a bias gains one where the new bias is not zero (the
    eraser's offset goes there).

    Parameters
    ----------
    model : torch.nn.Module or None
    layer : str
        The module whose input the audit recorded as the embedding.
    source : str
        The head's module name.
    weight, bias : Tensor
        The new head.

    Returns
    -------
    (torch.nn.Module or None, str or None)
        The patched copy and None, or None and the reason it could not be patched.
    """
    if model is None:
        return None, "no model was given"
    try:
        module = model.get_submodule(source)
    except (AttributeError, ValueError):
        return None, f"the model has no module {source!r}"
    if not isinstance(module, nn.Linear):
        return None, f"{source!r} is a {type(module).__name__}, not an nn.Linear"
    if layer != source:
        return None, (
            f"the embedding is the input of {layer!r}, not of the head {source!r}; audit with "
            "layer='auto' (or the head's name) to patch the model"
        )
    if tuple(module.weight.shape) != tuple(weight.shape):
        return (
            None,
            f"{source!r} has weight {tuple(module.weight.shape)}, the new head {tuple(weight.shape)}",
        )
    patched = copy_without_audit(model)
    target = patched.get_submodule(source)
    with torch.no_grad():
        target.weight.copy_(weight.to(target.weight))
        if target.bias is not None:
            target.bias.copy_(bias.to(target.bias))
        elif bool(bias.abs().max() > 0):
            target.bias = nn.Parameter(bias.to(target.weight))
    return patched, None


def _is_ours(hook) -> bool:
    """Whether a hook was registered by this library (an auditor's, or its trace's)."""
    fn = getattr(hook, "__func__", hook)
    return str(getattr(fn, "__module__", "") or "").startswith("wsca_audit.")


def copy_without_audit(model: nn.Module) -> nn.Module:
    """A deep copy of ``model`` that carries nothing of an audit: the hooks that an
    attached :class:`~wsca_audit.Auditor` put on the model (and through them the
    auditor, with every embedding and metadata value it recorded) stay behind. The
    user's own hooks are copied; ``model`` itself is left as it was.

    Examples
    --------
    >>> import torch, wsca_audit as wa
    >>> net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 2)).eval()
    >>> auditor = wa.Auditor(net).attach()
    >>> _ = net(torch.randn(5, 3))
    >>> copied = copy_without_audit(net)
    >>> sum(len(m._forward_pre_hooks) for m in copied.modules())
    0
    >>> auditor.detach()
    """
    set_aside: list[tuple[dict, dict]] = []
    for module in model.modules():
        ours = {
            hid
            for name in _HOOK_HOLDERS
            for hid, hook in getattr(module, name, {}).items()
            if _is_ours(hook)
        }
        if not ours:
            continue
        for name in _HOOK_DICTS:
            hooks = getattr(module, name, None)
            if hooks and ours & set(hooks):
                set_aside.append((hooks, dict(hooks)))
                for hid in ours & set(hooks):
                    del hooks[hid]
    try:
        return copy.deepcopy(model)
    finally:  # the same dict objects, in their order: the auditor's handles still work
        for hooks, original in set_aside:
            hooks.clear()
            hooks.update(original)


def load_head(path: str | Path) -> nn.Linear:
    """The new head saved by :meth:`~wsca_audit.fix.result.Mitigation.save` (or logged to
    MLflow) as an ``nn.Linear``, read without unpickling anything.

    Examples
    --------
    >>> import tempfile, torch
    >>> from safetensors.torch import save_file
    >>> p = tempfile.mkdtemp() + "/head.safetensors"
    >>> save_file({"weight": torch.ones(2, 3), "bias": torch.zeros(2)}, p)
    >>> load_head(p).weight.shape
    torch.Size([2, 3])
    """
    from safetensors.torch import load_file

    state = load_file(str(path))
    if "weight" not in state:
        raise AuditError(f"{path} holds no 'weight' tensor (not a head saved by wsca_audit)")
    w = state["weight"]
    head = nn.Linear(w.shape[1], w.shape[0], bias="bias" in state, dtype=w.dtype)
    head.load_state_dict(state)
    return head
