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
(the paper's weight-space cosine), ``usage`` (deconfounded; the verdict rests on it),
``alignment`` (Captum layer attributions; report key ``attribution``).
"""

from __future__ import annotations

from .alignment import Alignment
from .base import (
    INTERVAL_SCHEMA,
    TESTED_SCHEMA,
    Measure,
    get_measures,
    register_measure,
    unregister_measure,
)
from .encoding import Encoding
from .usage import Usage
from .wsc import WSC

# report order: what a reader needs first (is it encoded?), then the paper's measure,
# then the one the verdict rests on, then its Captum counterpart
for _m in (Encoding(), WSC(), Usage(), Alignment()):
    register_measure(_m)

__all__ = [
    "INTERVAL_SCHEMA",
    "TESTED_SCHEMA",
    "WSC",
    "Alignment",
    "Encoding",
    "Measure",
    "Usage",
    "get_measures",
    "register_measure",
    "unregister_measure",
]
