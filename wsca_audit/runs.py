"""The reports an MLflow run holds, and which one to read.

:func:`~wsca_audit.log_to_mlflow` puts a report under ``wsca/``; the integrations put one
per audit under ``wsca/<stage>-epoch<E>-step<S>`` (Lightning) or ``wsca/step<S>``
(Transformers). :func:`report_paths` lists them in the order they were made (by step,
then epoch, then a ``-2``, ``-3`` suffix), and :func:`load_run_report` reads the one asked
for, or the latest: what ``wsca-audit report/card --run-id`` read.
"""

from __future__ import annotations

import re

from .errors import AuditError
from .report import REPORT_JSON, AuditResult
from .tracking import ARTIFACT_PATH, check_store_exists, fast_fail, load_from_mlflow

__all__ = ["load_run_report", "report_paths"]


def _order(path: str) -> tuple[int, int, int, str]:
    """Sort key of a report folder: global step, epoch, repeat suffix, name."""

    def number(pattern: str) -> int:
        m = re.search(pattern, path)
        return int(m.group(1)) if m else -1

    return number(r"step(\d+)"), number(r"epoch(\d+)"), number(r"-(\d+)$"), path


def report_paths(run_id: str, *, tracking_uri: str | None = None) -> list[str]:
    """The artifact folders of a run that hold a ``report.json``, oldest first.

    Examples
    --------
    >>> _order("wsca/validation-epoch1-step16-2") > _order("wsca/validation-epoch1-step16")
    True
    """
    import mlflow
    from mlflow.tracking import MlflowClient

    check_store_exists(tracking_uri or mlflow.get_tracking_uri())  # never create one
    try:
        with fast_fail():
            client = MlflowClient(tracking_uri=tracking_uri)
            top = client.list_artifacts(run_id, ARTIFACT_PATH)
            found = [ARTIFACT_PATH] if any(f.path.endswith(f"/{REPORT_JSON}") for f in top) else []
            for folder in (f for f in top if f.is_dir):
                inner = client.list_artifacts(run_id, folder.path)
                if any(f.path.endswith(f"/{REPORT_JSON}") for f in inner):
                    found.append(folder.path)
    except Exception as exc:
        raise AuditError(
            f"could not list the artifacts of MLflow run {run_id!r}: {type(exc).__name__}: "
            f"{str(exc)[:300]}"
        ) from exc
    return sorted(found, key=_order)


def load_run_report(
    run_id: str, *, tracking_uri: str | None = None, artifact_path: str | None = None
) -> tuple[AuditResult, str, list[str]]:
    """The report at ``artifact_path`` of the run, or its latest one; returns the result,
    the folder it came from and every report folder of the run (for a listing)."""
    if artifact_path is not None:
        path = artifact_path.rstrip("/")
        return load_from_mlflow(run_id, tracking_uri=tracking_uri, artifact_path=path), path, []
    paths = report_paths(run_id, tracking_uri=tracking_uri)
    if not paths:
        # nothing found: let load_from_mlflow say why (no store, no run, no report)
        result = load_from_mlflow(run_id, tracking_uri=tracking_uri)
        return result, ARTIFACT_PATH, [ARTIFACT_PATH]
    path = ARTIFACT_PATH if ARTIFACT_PATH in paths else paths[-1]
    return load_from_mlflow(run_id, tracking_uri=tracking_uri, artifact_path=path), path, paths
