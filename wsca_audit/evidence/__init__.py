"""Input-side evidence: one module per evidence type (``attribution``, ``masking``,
``intervention``), each registered with the base's registry (``Evidence``,
:func:`register_evidence`); the report, tracking and the card loop over the registry and
never name a type. Helpers: ``captum_method`` (a Captum method bound to the model),
``attribution_summary`` (the per-batch reduction of attribution maps),
``attribution_figures`` and ``plotting`` (figures)."""

from .attribution import AttributionResult, InputAttribution, attribution_mass
from .base import (
    Evidence,
    boxes_to_roi,
    check_provenance,
    evidence_type,
    evidence_type_for_section,
    evidence_types,
    register_evidence,
    unregister_evidence,
)
from .intervention import InterventionResult, intervention_effect
from .masking import MaskingResult, fill_region, roi_masking

__all__ = [
    "AttributionResult",
    "Evidence",
    "InputAttribution",
    "InterventionResult",
    "MaskingResult",
    "attribution_mass",
    "boxes_to_roi",
    "check_provenance",
    "evidence_type",
    "evidence_type_for_section",
    "evidence_types",
    "fill_region",
    "intervention_effect",
    "register_evidence",
    "roi_masking",
    "unregister_evidence",
]
