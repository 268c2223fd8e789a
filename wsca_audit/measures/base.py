"""The :class:`Measure` base class and the registry (see the package docstring)."""

from __future__ import annotations

from typing import Any, ClassVar, NamedTuple

from ..errors import AuditError
from ..formatting import ci_text, fmt

__all__ = [
    "INTERVAL_SCHEMA",
    "TESTED_SCHEMA",
    "Measure",
    "get_measures",
    "register_measure",
    "unregister_measure",
]

INTERVAL_SCHEMA = {"$ref": "#/$defs/interval"}
TESTED_SCHEMA = {"$ref": "#/$defs/tested"}

_REGISTRY: dict[str, Measure] = {}


class Computed(NamedTuple):
    """What a measure returns for one task: its report block and, optionally, its
    per-class matrix (``{"rows", "cols", "matrix"}``, filed under the task's
    ``per_class[<report key>]``)."""

    block: dict | None
    per_class: dict | None = None


class Measure:
    """One measure of a task: how it is computed and how it is shown.

    Subclasses set the class attributes and implement :meth:`compute`.

    Attributes
    ----------
    name : str
        The measure's name in code.
    key : str
        Its key in a task's report block (default: ``name``).
    label : str
        Column header.
    mlflow : str
        Metric stem: ``wsca.<task>.<mlflow>`` (default: ``key``).
    tested : bool
        The block has a permutation ``p_value``, Benjamini-Hochberg adjusted across tasks.
    show_p : bool
        Show the p-value of a tested measure as a column of its own.
    panel, hatch : str or None
        Summary-figure panel (``"alignment"`` or ``"encoding"``) and bar hatch.
    schema : dict
        JSON Schema fragment of the block.
    card_metric : bool
        List its value in a model card's ``model-index`` metrics.
    explanation : str
        One sentence on what the measure says, for every reader of a report (summary,
        HTML, card); ``{usage}`` and ``{effect}`` stand for the thresholds in force.

    Examples
    --------
    >>> class Spread(Measure):
    ...     name, label = "spread", "spread"
    ...     def compute(self, task):
    ...         return {"value": 0.5, "ci_low": 0.4, "ci_high": 0.6}
    >>> m = Spread()
    >>> m.cells(m.compute(None)), m.metrics({"value": 0.5, "ci_low": 0.4, "ci_high": 0.6})
    (('0.500 [0.400, 0.600]',), {'': 0.5, '_ci_low': 0.4, '_ci_high': 0.6})
    """

    name: ClassVar[str] = ""
    key: ClassVar[str] = ""
    label: ClassVar[str] = ""
    mlflow: ClassVar[str] = ""
    tested: ClassVar[bool] = False
    panel: ClassVar[str | None] = None
    hatch: ClassVar[str | None] = None
    schema: ClassVar[dict] = INTERVAL_SCHEMA
    card_metric: ClassVar[bool] = False
    show_p: ClassVar[bool] = True
    explanation: ClassVar[str] = ""

    @property
    def report_key(self) -> str:
        return self.key or self.name

    @property
    def metric_stem(self) -> str:
        return self.mlflow or self.report_key

    def enabled(self, settings: Any) -> bool:
        """Whether the measure runs with these :class:`~wsca_audit.AuditSettings`."""
        return True

    def compute(self, task: Any) -> dict | Computed | None:
        """The measure's block for one task (None: nothing to report), or a
        :class:`Computed` with its per-class matrix too."""
        raise NotImplementedError

    def run(self, task: Any) -> Computed:
        """:meth:`compute`, always as a :class:`Computed`."""
        out = self.compute(task)
        return out if isinstance(out, Computed) else Computed(out)

    # ------------------------------------------------------------------ how it is shown
    def headers(self, level: float = 0.95) -> tuple[str, ...]:
        """Column headers (one per cell), the interval's level in the first."""
        first = f"{self.label} [{level * 100:.4g}% CI]"
        return (first,) + ((f"p ({self.name}, BH)",) if self._p else ())

    @property
    def _p(self) -> bool:
        return self.tested and self.show_p

    def cells(self, block: dict | None) -> tuple[str, ...]:
        """The block as text cells (``-`` when the measure did not run for the task)."""
        # "-": the measure did not run for the task, or gave no value (see its warning)
        cell = ci_text(block) if block and block.get("value") is not None else "-"
        if not self._p:
            return (cell,)
        return cell, fmt((block or {}).get("p_value"), 4)

    def metrics(self, block: dict | None) -> dict[str, float]:
        """Metric-name suffix -> value: value, CI ends and p-value when present."""
        out: dict[str, float] = {}
        for suffix, field in (
            ("", "value"),
            ("_ci_low", "ci_low"),
            ("_ci_high", "ci_high"),
            ("_p_value", "p_value"),
        ):
            if block and block.get(field) is not None:
                out[suffix] = float(block[field])
        return out


def register_measure(measure: Measure, *, replace: bool = False) -> Measure:
    """Add a measure to every later audit (report, MLflow payload and card show it).

    Raises :class:`~wsca_audit.AuditError` when one of that name or report key exists
    (``replace=True`` swaps it).
    """
    if not isinstance(measure, Measure) or not measure.name:
        raise AuditError("register_measure takes a Measure instance with a name")
    clash = [
        m.name
        for m in _REGISTRY.values()
        if m.name != measure.name and m.report_key == measure.report_key
    ]
    if clash or (measure.name in _REGISTRY and not replace):
        raise AuditError(f"a measure named {measure.name!r} (or with its report key) exists")
    _REGISTRY[measure.name] = measure
    return measure


def unregister_measure(name: str) -> None:
    """Remove a registered measure (no error when absent)."""
    _REGISTRY.pop(name, None)


def get_measures() -> list[Measure]:
    """The registered measures, in report order (built-ins first)."""
    return list(_REGISTRY.values())
