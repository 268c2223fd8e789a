"""wsca_audit: does a trained classifier USE a piece of metadata, or merely ENCODE it?

Weight Space Correlation Analysis (Wong et al., MIDL 2026) with a deconfounded,
covariance-aware usage measure, for any PyTorch model. See docs/architecture.md for the
map of the code and docs/method.md for the science.
"""

from .analysis import AuditSettings, analyze
from .card import write_model_card
from .collect import Auditor
from .embeddings import EmbeddingSet
from .errors import AuditError, AuditWarning
from .evidence import (
    AttributionResult,
    Evidence,
    InputAttribution,
    InterventionResult,
    MaskingResult,
    attribution_mass,
    boxes_to_roi,
    fill_region,
    intervention_effect,
    register_evidence,
    roi_masking,
)
from .fix import Mitigation, load_head, mitigate
from .heads import BatchedLinearHead
from .measures import Measure, register_measure
from .primary import PrimaryHead
from .report import SCHEMA_VERSION, AuditResult, report_schema, validate_report
from .runs import load_from_mlflow
from .tracking import log_to_mlflow, mlflow_payload
from .verdict import Thresholds
from .version import __version__

__all__ = [
    "SCHEMA_VERSION",
    "AttributionResult",
    "AuditError",
    "AuditResult",
    "AuditSettings",
    "AuditWarning",
    "Auditor",
    "BatchedLinearHead",
    "EmbeddingSet",
    "Evidence",
    "InputAttribution",
    "InterventionResult",
    "MaskingResult",
    "Measure",
    "Mitigation",
    "PrimaryHead",
    "Thresholds",
    "__version__",
    "analyze",
    "attribution_mass",
    "boxes_to_roi",
    "fill_region",
    "intervention_effect",
    "load_from_mlflow",
    "load_head",
    "log_to_mlflow",
    "mitigate",
    "mlflow_payload",
    "register_evidence",
    "register_measure",
    "report_schema",
    "roi_masking",
    "validate_report",
    "write_model_card",
]
