"""One Captum attribution method bound to a model, built once: what
:class:`~wsca_audit.evidence.attribution.InputAttribution` calls for every batch.

The habit of Captum's own classes: the attributor is built in ``__init__`` from the
model, the method, the target and the layer, and :meth:`CaptumMethod.attribute` only
computes. What it attributes:

- ``target`` given: that logit of the model (``method(model).attribute(x, target=k)``);
- no target, a model of one or two outputs: the primary score
  (:class:`wsca_audit.primary.ScoreModel`: the logit, or the log-odds ``z1 - z0``);
- no target, more outputs: each image's predicted class
  (:func:`wsca_audit.primary.predictions`);
- a configured Captum instance: used as it is (its forward function is the caller's).

Which of the middle two applies depends on the model's number of outputs, which the
caller reads from the batch (:meth:`CaptumMethod.n_outputs`) and passes in: nothing
about a batch is remembered between calls.
"""

from __future__ import annotations

import inspect
import warnings
from typing import Any

import torch
from torch import Tensor, nn

from ..errors import AuditError
from ..primary import ScoreModel, logits_of, predictions


def resolve_layer(model: nn.Module, layer: nn.Module | str) -> tuple[nn.Module, str]:
    """``layer=`` as a module of ``model``, and its dotted name."""
    names = {id(m): n for n, m in model.named_modules()}
    if isinstance(layer, str):
        try:
            module = model.get_submodule(layer)
        except AttributeError as exc:
            raise AuditError(
                f"layer={layer!r} is not a module of the model; its modules include "
                f"{[n for n in list(names.values())[1:9]]}"
            ) from exc
        return module, layer
    if isinstance(layer, nn.Module) and id(layer) in names:
        return layer, names[id(layer)] or type(layer).__name__
    raise AuditError(f"layer must be a module of the model or its name; got {type(layer).__name__}")


class CaptumMethod:
    """A Captum attribution method bound to ``model``; see the module docstring.

    Parameters
    ----------
    model : torch.nn.Module
    method : Captum attribution class or instance, optional
        Default ``captum.attr.IntegratedGradients``.
    target : int, optional
        The logit to attribute; default: the primary score or the predicted class.
    layer : torch.nn.Module or str, optional
        The layer of a Captum layer method (required by those, refused by the others).

    Attributes
    ----------
    name : str
        The method's class name (the report's ``method``).
    layer_name : str or None
        The attributed layer's dotted name (a layer method's), else None.
    """

    def __init__(
        self,
        model: nn.Module,
        method: Any = None,
        target: int | None = None,
        layer: nn.Module | str | None = None,
    ) -> None:
        from captum.attr import Attribution, IntegratedGradients

        self.model, self.target = model, target
        method = method if method is not None else IntegratedGradients
        self._on_score = None  # the primary score's attributor (no target, a class given)
        if isinstance(method, Attribution):
            self._on_logits, self.name = method, type(method).__name__
            self.layer_name = self._instance_layer(method, layer)
            return
        if not (isinstance(method, type) and issubclass(method, Attribution)):
            raise AuditError(
                f"method must be a Captum attribution class or instance (e.g. "
                f"captum.attr.IntegratedGradients); got {method!r}"
            )
        takes_layer = "layer" in inspect.signature(method.__init__).parameters
        if takes_layer != (layer is not None):
            raise AuditError(
                f"{method.__name__} attributes to a layer: pass layer= (a module of the "
                "model or its name, e.g. its last convolutional block)"
                if takes_layer
                else f"layer= is for Captum's layer methods (LayerGradCam, ...); "
                f"{method.__name__} attributes to the inputs"
            )
        module, self.layer_name = resolve_layer(model, layer) if takes_layer else (None, None)
        args = (module,) if takes_layer else ()
        self.name = method.__name__
        self._on_logits = method(model, *args)
        if target is None:
            self._on_score = method(ScoreModel(model), *args)

    def _instance_layer(self, attributor: Any, layer: nn.Module | str | None) -> str | None:
        """The layer a configured instance attributes to: ``layer=``'s, or its own."""
        if layer is not None:
            return resolve_layer(self.model, layer)[1]
        own = getattr(attributor, "layer", None)
        names = {id(m): n for n, m in self.model.named_modules()}
        return names.get(id(own)) if isinstance(own, nn.Module) else None

    @property
    def needs_outputs(self) -> bool:
        """Whether :meth:`attribute` needs the model's number of outputs (a target to
        check, or the choice between the primary score and the predicted class)."""
        return self.target is not None or self._on_score is not None

    def n_outputs(self, x: Tensor) -> int:
        """The model's number of outputs, read from the first image of ``x``."""
        with torch.no_grad():
            return int(logits_of(self.model(x[:1])).shape[1])

    def _plan(self, x: Tensor, n_outputs: int | None) -> tuple[Any, dict]:
        """The attributor for batch ``x`` and its ``target=`` (none where the forward
        function gives one score per image)."""
        if self.target is not None:
            if not 0 <= int(self.target) < n_outputs:
                raise AuditError(
                    f"target={self.target} is not a class of a model with {n_outputs} outputs"
                )
            return self._on_logits, {"target": int(self.target)}
        if self._on_score is None:  # the caller's instance, used as it is
            return self._on_logits, {}
        if n_outputs <= 2:  # the log-odds z1 - z0, or the single logit
            return self._on_score, {}
        with torch.no_grad():  # more outputs: each image's predicted class
            return self._on_logits, {"target": predictions(logits_of(self.model(x)))}

    def call_kwargs(
        self,
        n_steps: int,
        internal_batch_size: int | None,
        baselines: Any,
        extra: dict[str, Any],
    ) -> dict[str, Any]:
        """Keyword arguments of the method's ``attribute``: the common ones it takes, and
        ``extra`` (an error naming what it does not take)."""
        params = inspect.signature(self._on_logits.attribute).parameters
        kw: dict[str, Any] = {}
        if "n_steps" in params:
            kw["n_steps"] = n_steps
        if "internal_batch_size" in params and internal_batch_size is not None:
            kw["internal_batch_size"] = internal_batch_size
        if "baselines" in params and baselines is not None:
            kw["baselines"] = baselines
        unknown = set(extra) - set(params)
        if unknown and not any(p.kind == p.VAR_KEYWORD for p in params.values()):
            raise AuditError(
                f"{self.name}.attribute takes no {sorted(unknown)}; "
                f"it takes {[p for p in params if p != 'self']}"
            )
        kw.update(extra)
        return kw

    def attribute(
        self,
        x: Tensor,
        n_outputs: int | None,
        kwargs: dict[str, Any],
        interpolate_mode: str = "bilinear",
    ) -> Tensor:
        """Attributions of batch ``x`` (on the model's device) at the image size.

        ``n_outputs`` is needed where :attr:`needs_outputs`; ``kwargs`` come from
        :meth:`call_kwargs`. Returns (n, C, H, W) for input methods, (n, 1, H, W) for
        layer methods (channels summed, upsampled with ``interpolate_mode``).
        """
        attributor, target = self._plan(x, n_outputs)
        # autograd even when called under torch.inference_mode() / no_grad(); Captum's note
        # that it made the inputs require gradients concerns our own copy, not the caller's
        with torch.inference_mode(False), torch.enable_grad(), warnings.catch_warnings():
            warnings.filterwarnings("ignore", "Input Tensor .* did not already require gradients")
            attr = attributor.attribute(x.clone(), **kwargs, **target)
        if isinstance(attr, tuple):
            attr = attr[0]
        return self._on_image(attr, x, interpolate_mode).detach()

    def _on_image(self, attr: Tensor, x: Tensor, interpolate_mode: str) -> Tensor:
        """A layer map summed over channels and upsampled to the images; an input map
        checked against the images' shape."""
        from captum.attr import LayerAttribution

        if not isinstance(self._on_logits, LayerAttribution):
            if attr.shape != x.shape:
                raise AuditError(
                    f"{self.name} returned attributions of shape "
                    f"{tuple(attr.shape)} for inputs {tuple(x.shape)}"
                )
            return attr
        if attr.ndim != 4 or attr.shape[0] != x.shape[0]:
            raise AuditError(
                f"{self.name} returned attributions of shape {tuple(attr.shape)} for "
                f"{x.shape[0]} images: the layer must give a (N, C, h, w) feature map "
                "(choose a convolutional block)"
            )
        attr = attr.sum(1, keepdim=True)
        if attr.shape[-2:] != x.shape[-2:]:
            attr = LayerAttribution.interpolate(
                attr, tuple(x.shape[-2:]), interpolate_mode=interpolate_mode
            )
        return attr
