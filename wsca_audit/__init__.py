"""wsca_audit: does a trained classifier USE a piece of metadata, or merely ENCODE it?

Weight Space Correlation Analysis (Wong et al., MIDL 2026) with a deconfounded,
covariance-aware usage measure, for any PyTorch model. See DESIGN.md and docs/.
"""

from .analysis import AuditSettings, analyze
from .card import write_model_card
from .collect import Auditor
from .correlation import Thresholds
from .embeddings import EmbeddingSet
from .errors import AuditError, AuditWarning
from .heads import BatchedLinearHead, PrimaryHead
from .report import SCHEMA_VERSION, AuditResult
from .tracking import load_from_mlflow, log_to_mlflow

__version__ = "0.1.0"

__all__ = [
    "SCHEMA_VERSION",
    "AuditError",
    "AuditResult",
    "AuditSettings",
    "AuditWarning",
    "Auditor",
    "BatchedLinearHead",
    "EmbeddingSet",
    "PrimaryHead",
    "Thresholds",
    "__version__",
    "analyze",
    "load_from_mlflow",
    "log_to_mlflow",
    "write_model_card",
]
