"""Shared plumbing of the input-side evidence (attribution, ROI masking, interventions).

- :class:`Evidence`: the result type of each piece of evidence: a read-only mapping over
  its JSON-ready ``to_dict()``, with ``figure()`` and ``save()``; an
  :class:`~wsca_audit.AuditResult` takes it with ``add_evidence``. Each type describes
  itself (its report section, text lines, MLflow metrics and schema fragment) and is
  listed in one registry (:func:`register_evidence`), which report, tracking and card
  loop over: a new evidence type is one module.
- image batches (``(N, C, H, W)`` tensors or arrays, or an iterable of such batches),
  ROI masks and boxes, all checked here so that each evidence module can trust its input.

The model's primary score comes from :mod:`wsca_audit.primary`, every interval from
:mod:`wsca_audit.stats`.
"""

from __future__ import annotations

import difflib
import io
import json
import warnings
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor, nn

from ..errors import AuditError, AuditWarning
from ..formatting import json_safe
from ..naming import sanitize_name
from ..primary import head_fingerprint


class Evidence(Mapping):
    """One piece of input-side evidence: a mapping over its JSON-ready report section.

    Subclasses set ``kind`` (what the user calls it), ``section`` (the key of
    ``report["evidence"]`` it lands in) and ``schema`` (the JSON Schema of one entry),
    implement :meth:`lines` and :meth:`mlflow` (both read the JSON, so a report loaded
    from disk is shown like a fresh one), may override :meth:`figure` and
    :meth:`_extra_figures`, and are registered with :func:`register_evidence`.
    ``title`` heads its section and ``explanation`` (one sentence) says what it measures,
    once, for the summary, the HTML report and the card. ``ci_level`` is the level of its
    intervals, for its figures (the JSON keeps the intervals' ends only).
    """

    kind: ClassVar[str] = "evidence"
    section: ClassVar[str] = "evidence"
    schema: ClassVar[dict] = {"type": "object"}
    title: ClassVar[str] = ""
    explanation: ClassVar[str] = ""

    @property
    def default_key(self) -> str:
        """The entry name ``AuditResult.add_evidence`` uses when none is given."""
        return self.kind

    @classmethod
    def lines(cls, key: str, data: dict, tasks: dict) -> list[str]:
        """Plain-text lines for one entry (``tasks``: the report's tasks, for context)."""
        return [f"{cls.kind} '{key}'"]

    @classmethod
    def mlflow(cls, key: str, data: dict) -> tuple[dict[str, float], dict[str, str]]:
        """MLflow metrics and tags of one entry (names start ``wsca.``)."""
        return {}, {}

    def __init__(self, data: dict, *, ci_level: float = 0.95) -> None:
        self._data = json_safe(data)
        self.ci_level = ci_level

    def to_dict(self) -> dict:
        """The JSON-ready result (a deep copy)."""
        return json.loads(json.dumps(self._data))

    def __getitem__(self, key: str) -> Any:
        return self._data[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __repr__(self) -> str:
        keys = ", ".join(f"{k}={v!r}" for k, v in self._data.items() if not isinstance(v, dict))
        return f"{type(self).__name__}({keys})"

    def figure(self):
        """A matplotlib Figure summarising the evidence (None when there is nothing to plot)."""
        return None

    def _extra_figures(self) -> dict[str, Any]:
        """Further figures to save: relative file name (no extension) -> Figure."""
        return {}

    def figures_png(self, prefix: str = "") -> dict[str, bytes]:
        """All figures rendered as PNG bytes, keyed by a sanitised relative path."""
        out: dict[str, bytes] = {}
        main = self.figure()
        items = ([(self.kind, main)] if main is not None else []) + list(
            self._extra_figures().items()
        )
        for name, fig in items:
            buf = io.BytesIO()
            fig.savefig(buf, format="png", dpi=100)
            parts = [sanitize_name(p) for p in f"{prefix}{name}".split("/") if p]
            out["/".join(parts) + ".png"] = buf.getvalue()
        return out

    def save(self, directory: str | Path) -> Path:
        """Write ``<kind>.json`` and the figures (PNG) into ``directory``."""
        out = Path(directory)
        try:
            out.mkdir(parents=True, exist_ok=True)
            (out / f"{self.kind}.json").write_text(json.dumps(self._data, indent=2))
            for rel, png in self.figures_png().items():
                (out / rel).parent.mkdir(parents=True, exist_ok=True)
                (out / rel).write_bytes(png)
        except OSError as exc:
            raise AuditError(f"could not write the {self.kind} evidence to {out}: {exc}") from exc
        return out


_REGISTRY: dict[str, type[Evidence]] = {}


def register_evidence(cls: type[Evidence]) -> type[Evidence]:
    """Register an :class:`Evidence` subclass (usable as a class decorator).

    Its ``section`` must be new (or belong to the class it replaces, by ``kind``).
    """
    if not (isinstance(cls, type) and issubclass(cls, Evidence)):
        raise AuditError("register_evidence takes an Evidence subclass")
    other = evidence_type_for_section(cls.section)
    if other is not None and other.kind != cls.kind:
        raise AuditError(f"evidence section {cls.section!r} belongs to {other.kind!r}")
    _REGISTRY[cls.kind] = cls
    return cls


def unregister_evidence(kind: str) -> None:
    """Remove an evidence type from the registry (no error when absent)."""
    _REGISTRY.pop(kind, None)


def evidence_types() -> list[type[Evidence]]:
    """The registered evidence types, in registration order."""
    return list(_REGISTRY.values())


def evidence_type(kind: str) -> type[Evidence] | None:
    """The registered type of that ``kind`` (None when there is none)."""
    return _REGISTRY.get(kind)


def evidence_type_for_section(section: str) -> type[Evidence] | None:
    """The registered type whose entries live in ``report["evidence"][section]``."""
    return next((c for c in _REGISTRY.values() if c.section == section), None)


# --------------------------------------------------------------------------- models
def model_device(model: nn.Module, device: str | torch.device | None) -> torch.device:
    """The device to run on: the caller's choice, else where the model's parameters are."""
    if device is not None:
        return torch.device(device)
    p = next(iter(model.parameters()), None)
    return p.device if p is not None else torch.device("cpu")


def model_provenance(model: nn.Module) -> dict[str, Any]:
    """What a piece of evidence ran on: the model's class and the
    :func:`~wsca_audit.primary.head_fingerprint` of each of its ``nn.Linear`` layers, so
    that :meth:`~wsca_audit.AuditResult.add_evidence` can tell whether the audited head
    is among them.

    Examples
    --------
    >>> import torch
    >>> info = model_provenance(torch.nn.Sequential(torch.nn.Linear(3, 2)))
    >>> info["class"], len(info["linear_fingerprints"])
    ('Sequential', 1)
    """
    return {
        "class": type(model).__qualname__,
        "linear_fingerprints": [
            head_fingerprint(m.weight, m.bias) for m in model.modules() if isinstance(m, nn.Linear)
        ],
    }


def check_provenance(
    data: Mapping[str, Any], variable: str | None, report: Mapping[str, Any]
) -> tuple[dict[str, Any], list[str]]:
    """Whether a piece of evidence describes the audited model and data: its
    ``provenance`` entry (``same_model``: True, False, or None where either side lacks a
    fingerprint; ``n_samples`` beside the audit's) and the problems to warn about (a
    head that is not among the evidence model's layers, a variable the audit lacks).

    Examples
    --------
    >>> rep = {"primary": {"fingerprint": "ab"}, "n_samples": 800, "tasks": {"scanner": {}}}
    >>> ev = {"model": {"linear_fingerprints": ["cd"]}, "n_samples": 40}
    >>> prov, problems = check_provenance(ev, "scaner", rep)
    >>> prov["same_model"], len(problems)
    (False, 2)
    >>> problems[1]
    "variable 'scaner' is not a variable of this audit (did you mean 'scanner'?)"
    """
    audited = (report.get("primary") or {}).get("fingerprint")
    seen = (data.get("model") or {}).get("linear_fingerprints")
    same = None if not audited or not seen else audited in seen
    prov = {"same_model": same, "n_samples": data.get("n_samples"),
            "audit_n_samples": report.get("n_samples")}  # fmt: skip
    problems = []
    if same is False:
        problems.append(
            f"it ran on a {data['model'].get('class', 'model')} none of whose nn.Linear layers "
            f"is the audited head (fingerprint {audited}): another model, or weights changed "
            "since the audit"
        )
    tasks = report.get("tasks") or {}
    if variable is not None and tasks and variable not in tasks:
        close = difflib.get_close_matches(variable, list(tasks), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else f" (it has {sorted(tasks)})"
        problems.append(f"variable {variable!r} is not a variable of this audit{hint}")
    return prov, problems


@contextmanager
def model_as_deployed(model: nn.Module, what: str) -> Iterator[nn.Module]:
    """Run ``model`` in eval mode and leave it exactly as it was: evidence measures the
    model a user deploys, and must not change it.

    A model in train mode is switched to eval mode for the duration (dropout off,
    batch-norm reads its running statistics instead of updating them), with a warning
    that says so; afterwards every module's mode is restored, and so is every buffer that
    changed all the same (a module that updates state in eval mode).

    Examples
    --------
    >>> import torch
    >>> net = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.BatchNorm1d(2)).eval()
    >>> with model_as_deployed(net, "a check") as m:
    ...     _ = m(torch.randn(4, 2))
    >>> float(net[1].running_mean.abs().sum())
    0.0
    """
    modes = [(m, m.training) for m in model.modules()]
    buffers = {name: b.detach().clone() for name, b in model.named_buffers()}
    if model.training:
        warnings.warn(
            f"the model is in train mode: {what} runs it in eval mode (dropout off, "
            "batch-norm reads its running statistics and does not update them) and puts it "
            "back in train mode afterwards",
            AuditWarning,
            stacklevel=3,
        )
    model.eval()
    try:
        yield model
    finally:
        with torch.no_grad():
            for name, b in model.named_buffers():
                old = buffers.get(name)
                if old is not None and (old.shape != b.shape or not torch.equal(old, b)):
                    b.copy_(old) if old.shape == b.shape else b.set_(old)
        for m, training in modes:
            m.training = training


# --------------------------------------------------------------------------- images
def as_image_batch(x: Any, what: str = "inputs") -> Tensor:
    """A float tensor of shape (N, C, H, W); a clear error for anything else."""
    if isinstance(x, (tuple, list)) and x and not isinstance(x[0], (int, float)):
        x = x[0]  # (images, labels, ...) batches from a DataLoader
    if isinstance(x, Mapping) and "pixel_values" in x:
        x = x["pixel_values"]
    if not isinstance(x, Tensor):
        try:
            x = torch.as_tensor(np.asarray(x))
        except Exception as exc:
            raise AuditError(f"{what} could not be read as an image batch: {exc}") from exc
    if x.ndim != 4:
        raise AuditError(
            f"{what} must be images of shape (N, C, H, W); got shape {tuple(x.shape)}. "
            "The input view needs image inputs (for embeddings or tabular data use "
            "wsca_audit.analyze)"
        )
    if not x.is_floating_point():
        x = x.float()
    return x


def iter_image_batches(inputs: Any, batch_size: int) -> Iterator[Tensor]:
    """Yield (n, C, H, W) batches from one tensor/array or from an iterable of batches."""
    if batch_size < 1:
        raise AuditError("batch_size must be >= 1")
    if isinstance(inputs, (Tensor, np.ndarray)):
        x = as_image_batch(inputs)
        yield from x.split(batch_size)
        return
    if not isinstance(inputs, Iterable):
        raise AuditError(
            f"inputs must be a tensor (N, C, H, W) or an iterable of batches; got {type(inputs).__name__}"
        )
    for i, batch in enumerate(inputs):
        yield as_image_batch(batch, f"batch {i} of inputs")


def n_images(inputs: Any) -> int | None:
    """The number of images when it is known up front (for progress bars)."""
    if isinstance(inputs, (Tensor, np.ndarray)):
        return int(inputs.shape[0])
    ds = getattr(inputs, "dataset", None)
    try:
        return len(ds) if ds is not None else None
    except TypeError:
        return None


def boxes_to_roi(boxes: Any, height: int, width: int) -> np.ndarray:
    """Boolean ROI masks from boxes ``(y0, x0, y1, x1)`` (end-exclusive pixel indices).

    Parameters
    ----------
    boxes : array-like of shape (4,) or (N, 4)
    height, width : int
        The image size.

    Returns
    -------
    numpy.ndarray of shape (H, W) or (N, H, W), dtype bool

    Examples
    --------
    >>> boxes_to_roi([1, 1, 3, 4], 4, 5).astype(int)
    array([[0, 0, 0, 0, 0],
           [0, 1, 1, 1, 0],
           [0, 1, 1, 1, 0],
           [0, 0, 0, 0, 0]])
    """
    b = np.asarray(boxes)
    single = b.ndim == 1
    b = np.atleast_2d(b)
    if b.ndim != 2 or b.shape[1] != 4:
        raise AuditError(f"boxes must have shape (4,) or (N, 4) as (y0, x0, y1, x1); got {b.shape}")
    if not np.all(np.isfinite(b)):
        raise AuditError("boxes contain NaN or inf")
    b = b.astype(np.int64)
    y0, x0 = np.clip(b[:, 0], 0, height), np.clip(b[:, 1], 0, width)
    y1, x1 = np.clip(b[:, 2], 0, height), np.clip(b[:, 3], 0, width)
    rows = np.arange(height)[None, :, None]
    cols = np.arange(width)[None, None, :]
    roi = (
        (rows >= y0[:, None, None])
        & (rows < y1[:, None, None])
        & (cols >= x0[:, None, None])
        & (cols < x1[:, None, None])
    )
    return roi[0] if single else roi


class RoiMasks:
    """Validated ROI masks: one (H, W) mask for all images, or one per image.

    ``take(start, x)`` returns the masks of images ``start .. start + len(x)`` as a bool
    tensor on ``x``'s device, checking their size against the images.
    """

    def __init__(self, roi: Any) -> None:
        if isinstance(roi, Tensor):
            roi = roi.detach().cpu().numpy()
        try:
            m = np.asarray(roi)
        except Exception as exc:
            raise AuditError(f"roi could not be read as an array: {exc}") from exc
        if m.dtype != bool:
            if m.dtype.kind in "iu" and m.size and set(np.unique(m).tolist()) <= {0, 1}:
                m = m.astype(bool)
            else:
                raise AuditError(
                    f"roi must be a boolean mask of shape (H, W) or (N, H, W); got dtype "
                    f"{m.dtype}. For boxes use wsca_audit.boxes_to_roi(boxes, H, W)"
                )
        if m.ndim not in (2, 3):
            raise AuditError(f"roi must have shape (H, W) or (N, H, W); got {m.shape}")
        shared = m.ndim == 2
        flat = m.reshape(1 if shared else m.shape[0], -1)
        empty = np.flatnonzero(~flat.any(1))
        if empty.size:
            where = (
                "the shared mask"
                if shared
                else f"{empty.size} image(s) (first: {empty[:5].tolist()})"
            )
            raise AuditError(
                f"the ROI is empty for {where}: every image needs at least one ROI pixel "
                "(drop those images or fix the masks)"
            )
        full = np.flatnonzero(flat.all(1))
        if full.size:
            where = "every image (a shared mask)" if shared else f"{full.size} image(s)"
            warnings.warn(
                f"the ROI covers the whole image for {where}: 'outside the ROI' is empty there",
                AuditWarning,
                stacklevel=3,
            )
        self.masks = torch.from_numpy(np.ascontiguousarray(m))
        self.shared = shared

    @property
    def n(self) -> int | None:
        return None if self.shared else int(self.masks.shape[0])

    def check_count(self, n: int) -> None:
        if not self.shared and self.masks.shape[0] != n:
            raise AuditError(
                f"roi has {self.masks.shape[0]} masks but there are {n} images; pass one "
                "(H, W) mask for all images or one per image"
            )

    def take(self, start: int, x: Tensor) -> Tensor:
        n, hw = x.shape[0], tuple(x.shape[-2:])
        if tuple(self.masks.shape[-2:]) != hw:
            raise AuditError(
                f"roi masks are {tuple(self.masks.shape[-2:])} (H, W) but the images are {hw}"
            )
        if self.shared:
            m = self.masks[None].expand(n, *hw)
        else:
            if start + n > self.masks.shape[0]:
                raise AuditError(
                    f"roi has {self.masks.shape[0]} masks but the inputs hold more images"
                )
            m = self.masks[start : start + n]
        return m.to(x.device)


def display_image(img: Tensor) -> np.ndarray:
    """(C, H, W) -> an (H, W) or (H, W, 3) array scaled to [0, 1] for imshow."""
    a = img.detach().float().cpu().numpy()
    a = a[0] if a.shape[0] == 1 else np.moveaxis(a[:3], 0, -1) if a.shape[0] >= 3 else a.mean(0)
    lo, hi = float(a.min()), float(a.max())
    return (a - lo) / (hi - lo) if hi > lo else np.zeros_like(a)
