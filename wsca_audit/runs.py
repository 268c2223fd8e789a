"""The reports an MLflow run holds, and which one to read.

:func:`~wsca_audit.log_to_mlflow` puts a report under ``wsca/``; the integrations put one
per audit under ``wsca/<stage>-epoch<E>-step<S>`` (Lightning) or ``wsca/step<S>``
(Transformers). :func:`report_paths` lists them in the order they were made (by step,
then epoch, then a ``-2``, ``-3`` suffix), and :func:`load_run_report` reads the one asked
for, or the latest: what ``wsca-audit report/card --run-id`` read.
"""

from __future__ import annotations

import re
import tempfile
from pathlib import Path

from .errors import AuditError
from .report import REPORT_JSON, AuditResult
from .tracking import (
    ARTIFACT_PATH,
    DESCRIPTION_PREFIX,
    DESCRIPTION_TAG,
    MITIGATION_PREFIX,
    fast_fail,
    import_mlflow,
    scoped_env,
)

__all__ = [
    "check_store_exists",
    "load_from_mlflow",
    "load_run_report",
    "report_paths",
    "run_details",
]


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


def load_from_mlflow(
    run_id: str, *, tracking_uri: str | None = None, artifact_path: str = ARTIFACT_PATH
) -> AuditResult:
    """Read the report logged by :func:`log_to_mlflow` back into an AuditResult.

    Examples
    --------
    >>> import contextlib, io, tempfile
    >>> store = f"sqlite:///{tempfile.mkdtemp()}/mlflow.db"
    >>> load_from_mlflow("no-such-run", tracking_uri=store)
    Traceback (most recent call last):
    ...
    wsca_audit.errors.AuditError: no MLflow store at ... set MLFLOW_TRACKING_URI or pass --tracking-uri ...
    """
    mlflow = import_mlflow()
    from mlflow.tracking import MlflowClient

    uri = tracking_uri or mlflow.get_tracking_uri()
    check_store_exists(uri)
    with tempfile.TemporaryDirectory(prefix="wsca-load-") as tmp:
        try:
            # no download progress bar: this output may be a pipeline's
            with fast_fail(), scoped_env({"MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"}):
                local = MlflowClient(tracking_uri=uri).download_artifacts(
                    run_id, f"{artifact_path}/{REPORT_JSON}", tmp
                )
        except Exception as exc:
            raise AuditError(
                f"could not read {artifact_path}/{REPORT_JSON} of MLflow run {run_id!r} in the "
                f"store {uri}: {type(exc).__name__}: {str(exc)[:300]}"
            ) from exc
        return AuditResult.load(local)


def run_details(run_id: str, *, tracking_uri: str | None = None) -> dict[str, str]:
    """What a model card takes from the run itself: its name, its own description and
    its parameters other than the audit's (``wsca.*``).

    Returns ``{"run_name", "experiment", "description", "params"}`` (``params`` as one
    ``k=v, ...`` string; empty strings where the run has nothing).
    """
    mlflow = import_mlflow()
    from mlflow.tracking import MlflowClient

    uri = tracking_uri or mlflow.get_tracking_uri()
    check_store_exists(uri)
    try:
        with fast_fail():
            client = MlflowClient(tracking_uri=uri)
            run = client.get_run(run_id)
            exp = client.get_experiment(run.info.experiment_id)
    except Exception as exc:
        raise AuditError(
            f"could not read MLflow run {run_id!r} in the store {uri}: "
            f"{type(exc).__name__}: {str(exc)[:300]}"
        ) from exc
    note = run.data.tags.get(DESCRIPTION_TAG, "")
    own = {k: v for k, v in sorted(run.data.params.items()) if not k.startswith("wsca.")}
    return {
        "run_name": run.info.run_name or "",
        "experiment": exp.name if exp else "",
        "description": "" if note.startswith((DESCRIPTION_PREFIX, MITIGATION_PREFIX)) else note,
        "params": ", ".join(f"{k}={v}" for k, v in own.items())[:2000],
    }


def check_store_exists(uri: str) -> None:
    """Reading never creates a store: a local sqlite store that is not there is an error
    that names it (MLflow itself would create an empty one and then miss the run)."""
    if uri.startswith("sqlite:///"):
        path = Path(uri.removeprefix("sqlite:///"))
        if not path.is_file():
            raise AuditError(
                f"no MLflow store at {path} (tracking URI {uri}); set MLFLOW_TRACKING_URI or "
                "pass --tracking-uri to the store the run was logged to"
            )
