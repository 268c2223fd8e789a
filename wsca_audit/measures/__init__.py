"""The measures of a metadata task: one module per measure, one registry for all of them.

A measure is one named step with one signature, ``compute(task) -> block``: it reads the
task's shared data and fitted heads (a :class:`~wsca_audit.analysis.TaskData`) and returns
the JSON-ready block that lands in ``report["tasks"][name][measure.key]``. It also declares
how it is shown, so that the report, the MLflow payload and the model card loop over the
declarations and know no measure by name:

- ``label``, ``cells(block)``: its column(s) in the summary, the HTML report and the card;
- ``mlflow``, ``metrics(block)``: metric names ``wsca.<task>.<mlflow><suffix>``;
- ``panel`` / ``hatch``: where the summary figure draws it (``"alignment"`` bars or the
  ``"encoding"`` panel; None: not drawn);
- ``schema``: the JSON Schema fragment of its block (the built-in ones are also in the
  shipped ``report.schema.json``; :func:`wsca_audit.report_schema` adds registered ones).

Adding a measure is one module with a :class:`Measure` subclass passed to
:func:`register_measure`. The built-in measures, in report order: ``encoding``, ``wsc``
(the paper's weight-space cosine), ``usage`` (deconfounded, covariance-aware), ``effect``
(the within-class shift of the primary score in its sd units; the verdict rests on usage
and effect), ``alignment`` (Captum layer attributions; report key ``attribution``).
"""

from __future__ import annotations

from .alignment import Alignment
from .base import (
    INTERVAL_SCHEMA,
    TESTED_SCHEMA,
    Computed,
    Measure,
    get_measures,
    register_measure,
    unregister_measure,
)
from .effect import Effect
from .encoding import Encoding
from .usage import Usage
from .wsc import WSC

# report order: is it encoded?, the paper's measure, then the two the verdict rests on
# (usage, and effect in the score's own units), then usage's Captum counterpart
for _m in (Encoding(), WSC(), Usage(), Effect(), Alignment()):
    register_measure(_m)

__all__ = [
    "INTERVAL_SCHEMA",
    "TESTED_SCHEMA",
    "WSC",
    "Alignment",
    "Computed",
    "Effect",
    "Encoding",
    "Measure",
    "Usage",
    "get_measures",
    "register_measure",
    "unregister_measure",
]
