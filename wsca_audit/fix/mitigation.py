"""From finding to fix: remove a variable from the model's head, then audit it again.

:func:`mitigate` works on what the auditor already holds (embeddings, labels, metadata,
the head), splits it into a fitting part and a held-out part (stratified by label x
level, seeded), fits a new head on the first and audits the original and the patched
head on the second, so that the "after" numbers are not fitted to themselves.

Methods:

- ``"erase"``: a class-conditional LEACE eraser of the variable (:mod:`.erasure`), folded
  into the head: ``W (I - P)``, ``b + W P mu``;
- ``"dfr"``: the head refitted on group-balanced subsamples (label x level), L2 strength
  chosen by worst-group accuracy (:mod:`.reweighting`); a continuous variable is binned
  in quartiles first;
- ``"both"``: erase, then refit the erased embeddings.

The patched model is a deep copy with the new weights in its head; the original is not
touched. It is patched only where the embedding is the head's own input (``layer="auto"``
or the head named as the layer); otherwise ``Mitigation.model`` is None and
``Mitigation.head_`` holds the new head, with a warning.
"""

from __future__ import annotations

import copy
import json
import math
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ..analysis import analyze_embeddings
from ..collect import Auditor
from ..embeddings import EmbeddingSet, missing_mask
from ..errors import AuditError, AuditWarning
from ..formatting import ci_text, json_safe
from ..performance import group_codes, rankable
from ..primary import PrimaryHead, metric_values
from ..report import AuditResult
from ..stats import bootstrap_counts, ci_block
from .erasure import LinearEraser, concept_matrix, fit_eraser
from .reweighting import fit_balanced_head

METHODS = ("erase", "dfr", "both")
DEFAULT_METHOD = "erase"  # measured best on the benchmarks (docs/mitigation.md)
HEAD_FILE = "head.safetensors"
ERASER_FILE = "eraser.safetensors"


class Mitigation:
    """The patched model, its new head, and the audits before and after (held-out part).

    Attributes
    ----------
    variable, method : str
    model : torch.nn.Module or None
        A patched deep copy of the model (None where the head could not be patched).
    head_ : torch.nn.Linear
        The new head (on the CPU).
    before, after : AuditResult
        The original and the patched head, audited on the held-out part.
    eraser_ : LinearEraser or None
    fit_index_, holdout_index_ : numpy.ndarray
        Positions, in the auditor's samples, of the fitting and the held-out part.
    cost_ : dict
        The patched minus the original primary metric on the held-out part
        (``metric``, ``value``, ``ci_low``, ``ci_high``; paired bootstrap).
    settings_ : dict
    """

    def __init__(self, **fields: Any) -> None:
        self.__dict__.update(fields)

    # ------------------------------------------------------------------ views
    def _side(self, res: AuditResult) -> dict:
        task = res.tasks.get(self.variable, {})
        perf = res.performance
        metric = perf.get("metric")
        levels = (perf.get("by_group") or {}).get(self.variable) or {}
        by_level = {lvl: v.get(metric) for lvl, v in levels.items()}
        ranked = rankable(levels, metric)  # the rule the report's worst group follows
        worst = None
        if ranked:
            lvl = min(ranked)[1]
            worst = {"level": lvl, "n": levels[lvl].get("n"), **by_level[lvl]}
        return {
            "verdict": task.get("verdict"),
            "usage": task.get("usage"),
            "effect": task.get("effect"),
            "reason": task.get("reason"),
            "performance": {
                "metric": metric,
                "overall": perf.get("overall"),
                "by_level": by_level,
                "worst_level": worst,
            },
            "verdicts": res.verdicts,
        }

    def to_dict(self) -> dict:
        """``{"variable", "method", "before", "after", "cost", "patched", "settings"}``."""
        return json_safe(
            {
                "variable": self.variable,
                "method": self.method,
                "before": self._side(self.before),
                "after": self._side(self.after),
                "cost": self.cost_,
                "patched": self.model is not None,
                "head_source": self.head_source_,
                "settings": self.settings_,
            }
        )

    def rows(self) -> list[tuple[str, str, str]]:
        """(quantity, before, after) rows: usage, effect, verdict, the primary metric
        overall and for the worst group, and the cost."""
        b, a = self._side(self.before), self._side(self.after)
        metric = b["performance"]["metric"] or "metric"

        def worst(side):
            w = side["performance"]["worst_level"]
            return f"{self.variable}={w['level']}: {ci_text(w)}" if w else "-"

        return [
            (f"{self.variable}: usage", ci_text(b["usage"]), ci_text(a["usage"])),
            (f"{self.variable}: effect (logit sd)", ci_text(b["effect"], 2), ci_text(a["effect"], 2)),
            (f"{self.variable}: verdict", str(b["verdict"]), str(a["verdict"])),
            (f"{metric} overall", ci_text(b["performance"]["overall"]), ci_text(a["performance"]["overall"])),
            (f"{metric}, worst {self.variable} level", worst(b), worst(a)),
            (f"cost ({metric}, after - before)", "", ci_text(self.cost_)),
        ]  # fmt: skip

    def summary(self) -> str:
        """A fixed-width before/after table."""
        from ..formatting import text_table

        head = (
            f"Mitigation of '{self.variable}' ({self.method}), audited on "
            f"{self.settings_['n_holdout']} held-out samples (fitted on {self.settings_['n_fit']})"
        )
        why = self.not_patched_reason_
        note = f"\n(the model was not patched: {why}; head_ holds the new head)" if why else ""
        return "\n".join([head, *text_table([("", "before", "after"), *self.rows()])]) + note

    def figure(self):
        """Usage and effect of the variable (left) and the primary metric overall and in
        the worst group (right), before and after, with 95% CIs."""
        from matplotlib.figure import Figure

        fig = Figure(figsize=(8.5, 3.2), layout="constrained")
        ax1, ax2 = fig.subplots(1, 2)
        b, a = self._side(self.before), self._side(self.after)
        colours = ("#c0392b", "#27ae60")

        def bars(ax, labels, pairs):
            x = np.arange(len(labels))
            for j, (side, colour) in enumerate(zip(("before", "after"), colours)):
                blocks = [p[j] or {} for p in pairs]
                v = np.array([_num(bl.get("value")) for bl in blocks])
                lo = np.array([_num(bl.get("ci_low")) for bl in blocks])
                hi = np.array([_num(bl.get("ci_high")) for bl in blocks])
                err = np.nan_to_num(np.abs(np.stack([v - lo, hi - v])))
                ax.bar(x + (j - 0.5) * 0.38, v, 0.38, yerr=err, capsize=3, color=colour,
                       label=side)  # fmt: skip
            ax.set_xticks(x, labels)
            ax.legend(fontsize=8)

        bars(
            ax1,
            ["usage", "effect (logit sd)"],
            [(b["usage"], a["usage"]), (b["effect"], a["effect"])],
        )
        ax1.axhline(0, color="grey", lw=0.8)
        ax1.set_title(f"{self.variable}: {b['verdict']} -> {a['verdict']}", fontsize=9)
        metric = b["performance"]["metric"] or "metric"
        wb = b["performance"]["worst_level"] or {}
        wa_ = a["performance"]["worst_level"] or {}
        bars(ax2, [f"{metric} overall", f"{metric}, worst {self.variable} level"], [
            (b["performance"]["overall"], a["performance"]["overall"]), (wb, wa_),
        ])  # fmt: skip
        lows = [
            _num(bl.get("ci_low", bl.get("value")))
            for bl in (
                b["performance"]["overall"] or {},
                a["performance"]["overall"] or {},
                wb,
                wa_,
            )
        ]
        lowest = np.nanmin(lows) if not np.all(np.isnan(lows)) else 0.0
        ax2.set_ylim(max(0.0, lowest - 0.05), 1.01)  # the differences are small: zoom in
        ax2.set_title(f"cost {ci_text(self.cost_)} ({self.method})", fontsize=9)
        return fig

    # ------------------------------------------------------------------ files
    def save(self, directory: str | Path) -> Path:
        """Write ``mitigation.json``, ``mitigation.png``, the new head (``head.safetensors``:
        ``weight`` and ``bias``, loads with ``safetensors.torch.load_file`` and no pickle),
        the eraser where there is one, and the two audits (``before/``, ``after/``)."""
        from safetensors.torch import save_file

        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        (out / "mitigation.json").write_text(json.dumps(self.to_dict(), indent=2, allow_nan=False))
        self.figure().savefig(out / "mitigation.png", dpi=110)
        meta = {"variable": self.variable, "method": self.method, "source": str(self.head_source_)}
        state = {k: v.detach().cpu().contiguous() for k, v in self.head_.state_dict().items()}
        save_file(state, str(out / HEAD_FILE), metadata=meta)
        if self.eraser_ is not None:
            save_file(
                {"proj": self.eraser_.proj.cpu().contiguous(), "mean": self.eraser_.mean.cpu().contiguous()},
                str(out / ERASER_FILE),
                metadata=meta,
            )  # fmt: skip
        self.before.save(out / "before")
        self.after.save(out / "after")
        return out


def _num(x) -> float:
    return float(x) if isinstance(x, (int, float)) else math.nan


def load_head(path: str | Path) -> nn.Linear:
    """The new head saved by :meth:`Mitigation.save` (or logged to MLflow) as an
    ``nn.Linear``, read without unpickling anything.

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


# --------------------------------------------------------------------------- fitting
def _split(strata: np.ndarray, holdout: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Positions of the fitting and held-out parts, stratified (each stratum split alike)."""
    rng = np.random.default_rng(seed)
    held = np.zeros(len(strata), dtype=bool)
    for s in np.unique(strata):
        idx = rng.permutation(np.flatnonzero(strata == s))
        held[idx[: round(holdout * len(idx))]] = True
    return np.flatnonzero(~held), np.flatnonzero(held)


def _subset(es: EmbeddingSet, idx: np.ndarray, primary: PrimaryHead) -> EmbeddingSet:
    return EmbeddingSet(
        es.embeddings[idx],
        es.targets[idx],
        {k: v[idx] for k, v in es.metadata.items()},
        kinds=dict(es.kinds),
        primary=primary,
        sample_ids=None if es.sample_ids is None else es.sample_ids[idx],
        layer=es.layer,
    )


def _patch(model: nn.Module | None, layer: str, source: str, weight: Tensor, bias: Tensor):
    """A deep copy of ``model`` with the new head, or (None, why not)."""
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
    patched = copy.deepcopy(model)
    target = patched.get_submodule(source)
    with torch.no_grad():
        target.weight.copy_(weight.to(target.weight))
        if target.bias is not None:
            target.bias.copy_(bias.to(target.bias))
        elif bool(bias.abs().max() > 0):
            target.bias = nn.Parameter(bias.to(target.weight))
    return patched, None


def _cost(
    before: Tensor, after: Tensor, labels: Tensor, n_bootstrap: int, seed: int, level: float
) -> dict:
    """Paired bootstrap of the primary metric, patched minus original."""
    gen = torch.Generator().manual_seed(seed)
    w = torch.cat([torch.ones(1, len(labels)), bootstrap_counts(len(labels), n_bootstrap, gen)])
    w = w.to(torch.float64)
    mb, ma = metric_values(before, labels, w), metric_values(after, labels, w)
    metric = "auc" if "auc" in mb else "accuracy"
    return {"metric": metric, **ci_block(ma[metric] - mb[metric], n_bootstrap, level)}


def mitigate(
    model: nn.Module | None,
    auditor: Auditor | EmbeddingSet,
    variable: str,
    method: str = DEFAULT_METHOD,
    *,
    holdout: float = 0.3,
    seed: int = 0,
    n_subsamples: int = 10,
    **settings: Any,
) -> Mitigation:
    """Remove a variable from the model's head, and audit the original and the patched
    head on samples the fit never saw.

    Parameters
    ----------
    model : torch.nn.Module or None
        The audited model; it is not modified (the patched model is a copy).
    auditor : Auditor or EmbeddingSet
        What the audit collected (embeddings, labels, metadata and the head).
    variable : str
        The metadata variable to remove (one the auditor recorded).
    method : {"erase", "dfr", "both"}, default="erase"
        Class-conditional LEACE erasure folded into the head, group-balanced refit of
        the head (DFR), or erasure then refit (see the module docstring).
    holdout : float, default=0.3
        Share of each label x level group kept out of the fit and audited.
    seed : int, default=0
        The split, the balanced subsamples and the audits' resamples.
    n_subsamples : int, default=10
        Balanced subsamples averaged by ``"dfr"``.
    **settings
        Audit settings for the before/after audits (as :func:`wsca_audit.analyze`:
        ``n_bootstrap``, ``n_permutations``, ``progress``, ...).

    Returns
    -------
    Mitigation

    Examples
    --------
    >>> import numpy as np, torch, wsca_audit as wa
    >>> rng = np.random.default_rng(0)
    >>> y = rng.integers(0, 2, 3000); s = np.where(rng.random(3000) < 0.8, y, 1 - y)
    >>> z = np.c_[y + 0.5 * rng.normal(size=3000), s + 0.3 * rng.normal(size=3000)]
    >>> es = wa.EmbeddingSet(z, y, {"scanner": s}, primary=wa.PrimaryHead.from_arrays(
    ...     [[-1.0, -1.0], [1.0, 1.0]], [1.0, -1.0]))                # reads the scanner
    >>> m = wa.mitigate(None, es, "scanner", n_bootstrap=50, n_permutations=50, progress=False)
    >>> m.before.tasks["scanner"]["verdict"], m.after.tasks["scanner"]["verdict"]
    ('uses', 'encoded_not_used')
    """
    t0 = time.perf_counter()
    if method not in METHODS:
        raise AuditError(f"method must be one of {METHODS}; got {method!r}")
    if not 0.05 <= holdout <= 0.9:
        raise AuditError(f"holdout must be between 0.05 and 0.9; got {holdout}")
    if isinstance(auditor, Auditor):
        es = auditor.embeddings()
        model_info = auditor.model_info()
    elif isinstance(auditor, EmbeddingSet):
        es, model_info = auditor, {}
    else:
        raise AuditError(
            f"auditor must be a wsca_audit.Auditor or EmbeddingSet; got {type(auditor).__name__}"
        )
    if variable not in es.metadata:
        raise AuditError(
            f"variable {variable!r} was not audited; the auditor recorded {sorted(es.metadata)}"
        )
    if es.primary is None or es.targets is None:
        raise AuditError("mitigation needs the model's head and the labels (targets)")
    primary = es.primary
    kind = es.kinds[variable]
    values = es.metadata[variable]
    present = ~missing_mask(values)
    labels_all = es.targets
    classes, y_codes = np.unique(labels_all, return_inverse=True)
    k_out = primary.n_outputs
    try:
        numeric = classes.astype(np.float64)
        as_index = bool(np.all(numeric == np.round(numeric)) and numeric.min() >= 0)
        as_index = as_index and numeric.max() < max(k_out, 2)
    except (TypeError, ValueError):
        as_index = False
    if not as_index or len(classes) < 2:
        raise AuditError(
            f"mitigation needs labels that are class indices of the head's {k_out} "
            f"output(s) (0 .. {max(k_out, 2) - 1}), at least two of them; got {classes[:10].tolist()}"
        )

    # strata: label x level (continuous: quartile bins); missing values are audited only
    lvl, lvl_names = group_codes(values, kind)
    strata = np.where(present, y_codes * (len(lvl_names) + 1) + lvl, -1)
    fit_idx, held_idx = _split(strata, holdout, seed)
    # samples without a value cannot be fitted on: they are all audited (held out)
    held_idx = np.sort(np.concatenate([held_idx, fit_idx[~present[fit_idx]]]))
    fit_idx = fit_idx[present[fit_idx]]
    if len(fit_idx) < 10 or len(held_idx) < 10:
        raise AuditError(
            f"too few samples to fit and audit ({len(fit_idx)} to fit, {len(held_idx)} held out)"
        )
    Z = es.embeddings[fit_idx].astype(np.float64)
    y = labels_all[fit_idx].astype(np.int64)
    W = torch.as_tensor(primary.weight, dtype=torch.float64)
    b = torch.as_tensor(primary.bias, dtype=torch.float64)

    eraser: LinearEraser | None = None
    info: dict[str, Any] = {}
    if method in ("erase", "both"):
        eraser = fit_eraser(Z, concept_matrix(values[fit_idx], kind), y)
        info["erased_rank"] = eraser.rank
        W, b = eraser.fold(W, b)
    if method in ("dfr", "both"):
        if kind == "continuous":
            warnings.warn(
                f"{variable!r} is continuous: DFR balances its quartile bins "
                f"({', '.join(lvl_names)})",
                AuditWarning,
                stacklevel=2,
            )
        group = y_codes[fit_idx] * len(lvl_names) + lvl[fit_idx]
        every = [f"label={lab}, {variable}={n}" for lab in np.unique(labels_all) for n in lvl_names]
        names = [every[i] for i in np.unique(group)]  # as fit_balanced_head codes them
        Zf = Z if eraser is None else eraser(torch.as_tensor(Z)).numpy()
        refit = fit_balanced_head(
            Zf, y, group, k_out, n_subsamples=n_subsamples, seed=seed, group_names=names
        )
        info.update(C=refit.C, worst_group_accuracy_by_C=refit.worst_group_accuracy)
        W_new, b_new = refit.weight, refit.bias
        W, b = (W_new, b_new) if eraser is None else eraser.fold(W_new, b_new)

    new_primary = PrimaryHead.from_arrays(W.numpy(), b.numpy(), source=primary.source)
    audit = {"seed": seed, **settings}
    before = analyze_embeddings(_subset(es, held_idx, primary), model_info, **audit)
    after_info = {**model_info, "mitigation": {"variable": variable, "method": method}}
    after = analyze_embeddings(_subset(es, held_idx, new_primary), after_info, **audit)

    Zh = torch.as_tensor(es.embeddings[held_idx], dtype=torch.float64)
    yh = torch.as_tensor(y_codes[held_idx])
    cost = _cost(
        Zh @ torch.as_tensor(primary.weight, dtype=torch.float64).T + torch.as_tensor(primary.bias, dtype=torch.float64),
        Zh @ W.T + b,
        yh,
        before.settings.get("n_bootstrap", 200),
        seed,
        before.settings.get("ci_level", 0.95),
    )  # fmt: skip

    head = nn.Linear(W.shape[1], W.shape[0])
    with torch.no_grad():
        head.weight.copy_(W.float())
        head.bias.copy_(b.float())
    patched, why = _patch(model, es.layer, primary.source, W, b)
    if patched is None and model is not None:
        warnings.warn(
            f"the model's head cannot be patched ({why}); Mitigation.head_ holds the new head",
            AuditWarning,
            stacklevel=2,
        )
    if before.tasks.get(variable, {}).get("verdict") != "uses":
        warnings.warn(
            f"{variable!r} is not flagged on the held-out part (verdict "
            f"{before.tasks.get(variable, {}).get('verdict')!r}): mitigating it anyway",
            AuditWarning,
            stacklevel=2,
        )
    return Mitigation(
        variable=variable,
        method=method,
        model=patched,
        head_=head,
        before=before,
        after=after,
        eraser_=eraser,
        fit_index_=fit_idx,
        holdout_index_=held_idx,
        cost_=cost,
        head_source_=primary.source,
        not_patched_reason_=why,
        settings_={
            "holdout": holdout,
            "seed": seed,
            "n_fit": len(fit_idx),
            "n_holdout": len(held_idx),
            "kind": kind,
            "n_subsamples": n_subsamples,
            "runtime_s": round(time.perf_counter() - t0, 3),
            **info,
        },
    )
