"""The fix after a finding: remove a variable from the model's head (LEACE erasure,
group-balanced refit) and audit again on samples the fix never saw."""

from .erasure import LinearEraser, concept_matrix, fit_eraser
from .mitigation import Mitigation, load_head, mitigate
from .reweighting import fit_balanced_head

__all__ = [
    "LinearEraser",
    "Mitigation",
    "concept_matrix",
    "fit_balanced_head",
    "fit_eraser",
    "load_head",
    "mitigate",
]
