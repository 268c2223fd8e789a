"""The fix after a finding: remove a variable from the model's head (LEACE erasure,
group-balanced refit) and audit again on samples the fix never saw.

Modules: :mod:`.mitigation` (:func:`mitigate`, step by step), :mod:`.result`
(:class:`Mitigation`), :mod:`.erasure` (the eraser), :mod:`.reweighting` (DFR),
:mod:`.sampling` (the seeded split and balanced subsamples), :mod:`.patching` (the
patched copy of the model, :func:`load_head`).
"""

from .erasure import LinearEraser, concept_matrix, fit_eraser
from .mitigation import mitigate
from .patching import load_head
from .result import Mitigation
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
