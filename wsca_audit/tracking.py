"""MLflow logging of an AuditResult, and reading it back.

Names (stable across versions; metadata names are sanitised to ``[A-Za-z0-9_.-]``):

- metrics ``wsca.<task>.<measure>`` for each measure of the report (``encoding``, ``wsc``,
  ``usage``, ``attribution``; each declares its names in :mod:`wsca_audit.measures`), each
  with ``_ci_low`` / ``_ci_high`` and, for tested ones, ``_p_value``;
  ``wsca.<task>.<output>.effect`` (with CI) for each output of a head of several outputs
  (up to 50); ``wsca.primary.<metric>`` (the headline and every metric of the head's kind:
  ``auc``, ``accuracy``, ``macro_auc``, ``r2``, ``mae``..., with CI) and ``wsca.runtime_s``;
  input-side evidence,
  as each evidence type declares it (``Evidence.mlflow``):
  ``wsca.attribution.<key>.inside``, ``wsca.masking.<key>.<full|roi_removed|roi_only>``
  (and ``_drop``), ``wsca.intervention.<key>.effect`` (each with its CI);
- params ``wsca.<setting>`` (nested settings joined with dots, e.g. ``wsca.thresholds.usage``);
- headline metrics (:func:`headline_payload`) ``wsca.n_flagged``, ``wsca.n_inconclusive``,
  ``wsca.max_usage``, ``wsca.max_abs_effect`` and ``wsca.worst_group.<metric>``;
- the run description (tag ``mlflow.note.content``, unless the run has one of its own):
  the outcome in one line;
- tags ``wsca.verdict.<task>``, ``wsca.task.<task>`` (the original metadata name, where the
  key had to change it), ``wsca.flagged`` (tasks the head uses, comma-separated; absent
  when none), ``wsca.primary.task`` (the head's kind), ``wsca.schema_version``,
  ``wsca.version``, ``wsca.layer``,
  ``wsca.masking.<key>.verdict``;
- artifacts under ``wsca/``: ``report.json``, ``report.html``, ``figures/*.png``, the model
  card (``MODEL_CARD.md``, and ``MODEL_CARD.html`` for MLflow's artifact viewer) and any
  other file saved with the report (attribution overlays);
- a mitigation's child run adds ``wsca.mitigation.*`` (:func:`mitigation_payload`).

MLflow calls whatever it logs "metrics": here those are the *payload* (``mlflow_*``
names), kept apart from the audit's measures and the subgroup ``performance``.

Nothing is lost when the tracking server is down: the report is first written to a local
staging folder; if the upload fails it is moved to ``fallback_dir`` with a note of the
intended run, an :class:`AuditWarning` says where, and ``wsca-audit log DIR`` uploads it
later.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import time
import urllib.request
import warnings
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from .card import write_model_card
from .errors import AuditError, AuditWarning
from .evidence import evidence_type_for_section
from .fix import Mitigation
from .formatting import fmt as fmt_value
from .naming import interval_metrics, sanitize_name, task_keys
from .report import AuditResult
from .verdict import INCONCLUSIVE, USES
from .version import __version__

MlflowPayload = tuple[dict[str, float], dict[str, str], dict[str, str]]  # metrics, params, tags

CARD_FILE = "MODEL_CARD.md"
ARTIFACT_PATH = "wsca"
DESCRIPTION_TAG = "mlflow.note.content"  # what the MLflow UI shows as the run's description
DESCRIPTION_PREFIX = "WSCA audit:"
MITIGATION_PREFIX = "WSCA mitigation:"
PENDING_NOTE = "mlflow-target.json"
# MLflow's own defaults retry 7 times with exponential back-off (minutes when a server is
# gone); an audit should fall back to disk quickly instead. User settings take precedence.
_FAST_FAIL_ENV = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_TIMEOUT": "20"}


def _flatten(prefix: str, d: dict) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}.{sanitize_name(k)}"
        if isinstance(v, dict):
            out.update(_flatten(key, v))
        else:
            out[key] = v
    return out


def mitigation_payload(m: Mitigation) -> tuple[dict[str, float], dict[str, str]]:
    """The before/after MLflow metrics and tags of a mitigation's child run.

    Metrics ``wsca.mitigation.<before|after>.<usage|effect|<metric>>`` and
    ``wsca.mitigation.<before|after>.worst_group.<metric>`` (each with its CI; also under
    the older name ``worst_level``, which dashboards may read), and
    ``wsca.mitigation.cost`` (patched minus original primary metric, paired CI); tags
    ``wsca.mitigation.<variable|method|verdict_before|verdict_after|patched>`` and the
    run description.
    """
    d = m.to_dict()
    mlflow_metrics: dict[str, float] = {}
    for side in ("before", "after"):
        block = d[side]
        performance = block["performance"]
        name = performance.get("metric") or "metric"
        stem = f"wsca.mitigation.{side}"
        mlflow_metrics.update(interval_metrics(f"{stem}.usage", block["usage"]))
        mlflow_metrics.update(interval_metrics(f"{stem}.effect", block["effect"]))
        mlflow_metrics.update(interval_metrics(f"{stem}.{name}", performance.get("overall")))
        worst = performance.get("worst_group") or performance.get("worst_level")
        for word in ("worst_group", "worst_level"):  # worst_level: its older name
            mlflow_metrics.update(interval_metrics(f"{stem}.{word}.{name}", worst))
    mlflow_metrics.update(interval_metrics("wsca.mitigation.cost", d["cost"]))
    b, a = d["before"], d["after"]

    def eff(side):
        e = (side.get("effect") or {}).get("value")
        return "n/a" if e is None else f"{e:.2f}"

    cost = d["cost"]
    note = (
        f"{MITIGATION_PREFIX} {m.variable} removed from the head "
        f"({m.method}): effect {eff(b)} -> {eff(a)} sd, verdict {b['verdict']} -> "
        f"{a['verdict']}; {cost.get('metric')} cost {fmt_value(cost.get('value'))} on "
        f"{m.settings_['n_holdout']} held-out samples."
    )
    tags = {
        "wsca.mitigation.variable": m.variable,
        "wsca.mitigation.method": m.method,
        "wsca.mitigation.verdict_before": str(b["verdict"]),
        "wsca.mitigation.verdict_after": str(a["verdict"]),
        "wsca.mitigation.patched": str(m.model is not None).lower(),
        DESCRIPTION_TAG: note,
    }
    return mlflow_metrics, tags


# past this many outputs a head's per-output effects stay in report.json only
MAX_OUTPUT_METRICS = 50


def mlflow_payload(result: AuditResult) -> MlflowPayload:
    """The (metrics, params, tags) that :func:`log_to_mlflow` writes, as plain dicts.

    Examples
    --------
    >>> from wsca_audit.report import AuditResult
    >>> rep = {"schema_version": 1, "warnings": [], "settings": {"seed": 0}, "tasks": {
    ...     "site A": {"kind": "categorical", "verdict": USES,
    ...     "encoding": {"metric": "auc", "value": 0.9, "ci_low": 0.8, "ci_high": 0.95},
    ...     "wsc": {"value": 0.1, "ci_low": 0.0, "ci_high": 0.2, "p_value": 0.5},
    ...     "usage": {"value": 0.6, "ci_low": 0.5, "ci_high": 0.7, "p_value": 0.01}}}}
    >>> mlflow_metrics, params, tags = mlflow_payload(AuditResult(rep))
    >>> mlflow_metrics["wsca.site_A.usage"], params["wsca.seed"], tags["wsca.flagged"]
    (0.6, '0', 'site A')
    """
    report = result.to_dict()
    keys = task_keys(list(result.tasks))
    mlflow_metrics: dict[str, float] = {}
    measures = result.measures()
    for name, task in result.tasks.items():
        for measure in measures:
            stem = f"wsca.{keys[name]}.{measure.metric_stem}"
            for suffix, value in measure.metrics(task.get(measure.report_key)).items():
                mlflow_metrics[stem + suffix] = value
        outputs = task.get("by_output") or {}
        if len(outputs) <= MAX_OUTPUT_METRICS:  # each output's effect: wsca.<var>.<output>.effect
            for out, block in outputs.items():
                stem = f"wsca.{keys[name]}.{sanitize_name(out)}.effect"
                mlflow_metrics.update(interval_metrics(stem, block.get("effect")))
    primary = (report.get("primary") or {}).get("metric") or {}
    if primary.get("name"):
        stem = f"wsca.primary.{sanitize_name(primary['name'])}"
        mlflow_metrics.update(interval_metrics(stem, primary))
    for name, block in ((report.get("primary") or {}).get("metrics") or {}).items():
        mlflow_metrics.update(interval_metrics(f"wsca.primary.{sanitize_name(name)}", block))
    settings = dict(report.get("settings") or {})
    runtime = settings.pop("runtime_s", None)
    if runtime is not None:
        mlflow_metrics["wsca.runtime_s"] = float(runtime)
    params = {k: str(v)[:6000] for k, v in _flatten("wsca", settings).items()}
    mlflow_metrics.update(headline_payload(result))
    tags = {
        "wsca.schema_version": str(report.get("schema_version")),
        "wsca.version": __version__,
        "wsca.layer": str(report.get("layer")),
        "wsca.primary.task": str((report.get("primary") or {}).get("task")),
        DESCRIPTION_TAG: description(result),
    }
    flagged = [n for n, v in result.verdicts.items() if v == USES]
    if flagged:
        tags["wsca.flagged"] = ",".join(flagged)
    for name, task in result.tasks.items():
        tags[f"wsca.verdict.{keys[name]}"] = str(task.get("verdict"))
        if keys[name] != name:  # the original name, only where the key had to change it
            tags[f"wsca.task.{keys[name]}"] = name[:5000]
    for section, entries in result.evidence.items():
        cls = evidence_type_for_section(section)
        for key, data in entries.items() if cls is not None else ():
            m, t = cls.mlflow(key, data)
            mlflow_metrics.update(m)
            tags.update(t)
    return mlflow_metrics, params, tags


def headline_payload(result: AuditResult) -> dict[str, float]:
    """The MLflow metrics to sort and chart runs by: ``wsca.n_flagged``,
    ``wsca.n_inconclusive``, ``wsca.max_usage``, ``wsca.max_abs_effect`` and
    ``wsca.worst_group.<metric>``.

    Examples
    --------
    >>> from wsca_audit.report import AuditResult
    >>> from wsca_audit.verdict import ENCODED_NOT_USED
    >>> rep = {"schema_version": 1, "warnings": [], "tasks": {
    ...     "a": {"verdict": USES, "usage": {"value": 0.6}, "effect": {"value": -0.7}},
    ...     "b": {"verdict": ENCODED_NOT_USED, "usage": {"value": 0.1}}}}
    >>> headline_payload(AuditResult(rep))
    {'wsca.n_flagged': 1.0, 'wsca.n_inconclusive': 0.0, 'wsca.max_usage': 0.6, 'wsca.max_abs_effect': 0.7}
    """
    verdicts = list(result.verdicts.values())
    out = {
        "wsca.n_flagged": float(verdicts.count(USES)),
        "wsca.n_inconclusive": float(verdicts.count(INCONCLUSIVE)),
    }
    for name, key in (("max_usage", "usage"), ("max_abs_effect", "effect")):
        values = [
            abs(t[key]["value"])
            for t in result.tasks.values()
            if isinstance(t.get(key), dict) and t[key].get("value") is not None
        ]
        if values:
            out[f"wsca.{name}"] = float(max(values))
    worst = result.performance.get("worst_group") or {}
    if worst.get("value") is not None:
        out[f"wsca.worst_group.{sanitize_name(worst['metric'])}"] = float(worst["value"])
    return out


def description(result: AuditResult) -> str:
    """The run description (``mlflow.note.content``): the report's headline in one line.

    Examples
    --------
    >>> from wsca_audit.report import AuditResult
    >>> from wsca_audit.verdict import ENCODED_NOT_USED
    >>> rep = {"schema_version": 1, "warnings": [], "tasks": {
    ...     "scanner": {"verdict": USES, "effect": {"value": 0.52}},
    ...     "site": {"verdict": ENCODED_NOT_USED}}}
    >>> description(AuditResult(rep))
    'WSCA audit: FLAGGED - the head uses scanner (moves the score by 0.52 sd). Encoded, not used: site.'
    """
    return f"{DESCRIPTION_PREFIX} {result.headline()}"[:5000]


def fast_fail() -> contextlib.AbstractContextManager[None]:
    """Bound MLflow's HTTP retries and timeout inside the block (user settings win)."""
    return scoped_env(_FAST_FAIL_ENV, override=False)


def import_mlflow():
    try:
        import mlflow
    except ImportError as exc:
        raise AuditError(
            "MLflow is not installed; `pip install 'wsca-audit[mlflow]'` (or `pip install mlflow`)"
        ) from exc
    return mlflow


def check_reachable(uri: str, timeout: float = 5.0) -> None:
    """Fail in seconds, not minutes, when an HTTP tracking server does not answer."""
    if not uri.startswith(("http://", "https://")):
        return
    try:
        with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout) as resp:
            resp.read(64)
    except OSError as exc:  # URLError, ConnectionRefused, timeouts
        raise ConnectionError(f"MLflow tracking server {uri} is unreachable: {exc}") from exc


def _open_run(mlflow: Any, client: Any, uri: str, *, run_id: str | None,
              parent_run_id: str | None, experiment_name: str | None, run_name: str | None,
              tracking_uri: str | None) -> tuple[str, bool]:  # fmt: skip
    """The run to log into, and whether it was created here: ``run_id``; else a new child
    of ``parent_run_id``; else the active run (of this store); else a new run."""
    if run_id is not None:
        return run_id, False
    if parent_run_id is not None:  # a child run of the audit's run
        try:
            parent = client.get_run(parent_run_id)
        except Exception as exc:
            raise AuditError(
                f"parent run {parent_run_id!r} not found in the store {uri}: {str(exc)[:200]}"
            ) from exc
        run = client.create_run(parent.info.experiment_id, run_name=run_name,
                                tags={"mlflow.parentRunId": parent_run_id})  # fmt: skip
        return run.info.run_id, True
    active = mlflow.active_run()
    if active is not None and tracking_uri in (None, mlflow.get_tracking_uri()):
        return active.info.run_id, False
    exp_id = "0"
    if experiment_name:
        exp = client.get_experiment_by_name(experiment_name)
        exp_id = exp.experiment_id if exp else client.create_experiment(experiment_name)
    return client.create_run(exp_id, run_name=run_name).info.run_id, True


def _upload(
    directory: Path,
    payload: MlflowPayload,
    *,
    run_id: str | None,
    experiment_name: str | None,
    run_name: str | None,
    tracking_uri: str | None,
    step: int | None,
    artifact_path: str,
    before_artifacts: Callable[[Any, str], None] | None = None,
    parent_run_id: str | None = None,
    audit_set: Mapping[str, Any] | None = None,
) -> str:
    mlflow = import_mlflow()
    from mlflow.entities import Metric, Param, RunTag
    from mlflow.tracking import MlflowClient

    mlflow_metrics, params, tags = payload
    uri = tracking_uri or mlflow.get_tracking_uri()
    check_reachable(uri)
    client = MlflowClient(tracking_uri=uri)
    run_id, created = _open_run(mlflow, client, uri, run_id=run_id, parent_run_id=parent_run_id,
                                experiment_name=experiment_name, run_name=run_name,
                                tracking_uri=tracking_uri)  # fmt: skip
    try:
        # Params are immutable in MLflow: re-auditing into the same run (e.g. every epoch)
        # keeps the first value and says so instead of failing.
        run = client.get_run(run_id)  # read once: params, description and name below
        existing = run.data.params
        clash = sorted(k for k, v in params.items() if k in existing and existing[k] != v)
        if clash:
            warnings.warn(
                f"run {run_id} already has different values for params {clash}; kept the old ones",
                AuditWarning,
                stacklevel=3,
            )
        # the run's description is ours to write only when it is empty or one of ours
        note = run.data.tags.get(DESCRIPTION_TAG)
        if note and not note.startswith((DESCRIPTION_PREFIX, MITIGATION_PREFIX)):
            tags = {k: v for k, v in tags.items() if k != DESCRIPTION_TAG}
        now = int(time.time() * 1000)
        client.log_batch(
            run_id,
            metrics=[Metric(k, v, now, step or 0) for k, v in mlflow_metrics.items()],
            params=[Param(k, v) for k, v in params.items() if k not in existing],
            tags=[RunTag(k, v) for k, v in tags.items()],
        )
        if audit_set:
            client.log_inputs(run_id, datasets=[_audit_input(audit_set)])
        if before_artifacts is not None:  # e.g. the model card, which names the run
            before_artifacts(run, run_id)
        client.log_artifacts(run_id, str(directory), artifact_path)
    except BaseException:
        if created:  # a half-made run would stay RUNNING and a retry would duplicate it
            with contextlib.suppress(Exception):
                client.delete_run(run_id)
        raise
    if created:
        client.set_terminated(run_id)
    return run_id


def _mitigation_parent(run_id: str | None, parent_run_id: str | None,
                       tracking_uri: str | None) -> str | None:  # fmt: skip
    """The audit run a mitigation's child run hangs under: ``parent_run_id``, else
    ``run_id``, else the active run of this store (None, with a warning, when none)."""
    if parent_run_id is None:
        mlflow = import_mlflow()
        active = mlflow.active_run() if run_id is None else None
        if active is not None and tracking_uri not in (None, mlflow.get_tracking_uri()):
            active = None  # the active run lives in another store
        parent_run_id = run_id or (active.info.run_id if active is not None else None)
    if parent_run_id is None:
        warnings.warn(
            "no audit run to attach the mitigation to (parent_run_id=, run_id= or an "
            "active run): it is logged as a top-level run",
            AuditWarning,
            stacklevel=3,
        )
    return parent_run_id


def _keep_on_disk(stage: Path, fallback_dir: str | Path, target: dict, exc: Exception) -> None:
    """The upload failed: keep the staged report in ``fallback_dir`` with a note of the
    run it was meant for (``target``), and say where (``wsca-audit log`` uploads it)."""
    folder = Path(fallback_dir) / time.strftime("%Y%m%d-%H%M%S")
    n = 1
    while folder.exists():
        n += 1
        folder = Path(fallback_dir) / f"{time.strftime('%Y%m%d-%H%M%S')}-{n}"
    shutil.copytree(stage, folder)
    note = {**target, "error": f"{type(exc).__name__}: {exc}"[:2000]}
    (folder / PENDING_NOTE).write_text(json.dumps(note, indent=2))
    warnings.warn(
        f"could not log to MLflow ({type(exc).__name__}: {str(exc)[:300]}). The report "
        f"is saved in {folder}; upload it later with `wsca-audit log {folder}`",
        AuditWarning,
        stacklevel=3,
    )


def log_to_mlflow(
    result: AuditResult,
    run_id: str | None = None,
    *,
    experiment_name: str | None = None,
    run_name: str | None = None,
    tracking_uri: str | None = None,
    step: int | None = None,
    extra_dir: str | Path | None = None,
    artifact_path: str = ARTIFACT_PATH,
    fallback_dir: str | Path = "wsca-pending",
    model_card: bool = True,
    parent_run_id: str | None = None,
) -> str | None:
    """Log an audit into an MLflow run: metrics, params, tags, the report and a model card.

    Parameters
    ----------
    result : AuditResult or Mitigation
        A :class:`~wsca_audit.fix.mitigation.Mitigation` is logged into a new *child* run of
        the audit's run (``parent_run_id``, else ``run_id``, else the active run): the
        patched head's audit as the run's ``wsca.*`` names, the before/after metrics
        ``wsca.mitigation.*``, and the new head under ``wsca/mitigation/``.
    run_id : str, optional
        Log into this run. Default: the active run (``mlflow.start_run()``), else a new
        run in ``experiment_name`` (MLflow's default experiment when None), ended after.
    parent_run_id : str, optional
        Open a new run as a child of this one (the tag ``mlflow.parentRunId``), in its
        experiment.
    tracking_uri : str, optional
        Default: MLflow's own (``MLFLOW_TRACKING_URI`` or the local ``sqlite:///mlflow.db``).
    step : int, optional
        Metric step, e.g. the epoch when auditing during training.
    extra_dir : path, optional
        A folder whose files are uploaded with the report (e.g. attribution overlays).
    fallback_dir : path
        Where the report is kept when the upload fails.
    model_card : bool, default=True
        Also log ``MODEL_CARD.md`` and ``MODEL_CARD.html`` (MLflow's artifact viewer
        renders the HTML; it shows Markdown front matter as plain text), named after the
        run and stating its id. A ``MODEL_CARD.md`` in ``extra_dir`` is logged instead.

    Returns
    -------
    str or None
        The run id, or None when MLflow could not be reached (see the warning: the
        report was saved under ``fallback_dir`` and ``wsca-audit log DIR`` uploads it).
        On ranks other than 0 of a distributed audit (a sharded result, which every rank
        holds, or ``result`` None) nothing is logged: rank 0 logs.

    Examples
    --------
    >>> import tempfile, wsca_audit as wa
    >>> res = wa.AuditResult({"schema_version": 1, "tasks": {}, "warnings": []})
    >>> store = f"sqlite:///{tempfile.mkdtemp()}/mlflow.db"
    >>> run_id = wa.log_to_mlflow(res, tracking_uri=store, experiment_name="audits")
    >>> wa.load_from_mlflow(run_id, tracking_uri=store).verdicts
    {}
    """
    from .distributed import is_rank_zero

    if not is_rank_zero() and (result is None or _sharded(result)):
        return None  # a distributed audit: every rank may hold the result, rank 0 logs it
    mitigation = result if isinstance(result, Mitigation) else None
    if mitigation is not None:
        parent_run_id = _mitigation_parent(run_id, parent_run_id, tracking_uri)
        run_id = None
        run_name = run_name or f"mitigate-{mitigation.variable}-{mitigation.method}"
        result = mitigation.after
    elif not isinstance(result, AuditResult):
        raise AuditError(
            f"log_to_mlflow expects an AuditResult or a Mitigation, got {type(result).__name__}"
        )
    if parent_run_id is not None and run_id is not None:
        raise AuditError("pass run_id (log into that run) or parent_run_id (a new child run)")
    mlflow_metrics, params, tags = mlflow_payload(result)
    # a mitigation's own names, which its saved (patched) report cannot rebuild
    extra_metrics, extra_tags = mitigation_payload(mitigation) if mitigation else ({}, {})
    payload = ({**mlflow_metrics, **extra_metrics}, params, {**tags, **extra_tags})
    target = {"run_id": run_id, "experiment_name": experiment_name, "run_name": run_name,
              "tracking_uri": tracking_uri, "step": step, "artifact_path": artifact_path,
              "parent_run_id": parent_run_id}  # fmt: skip
    stage = Path(tempfile.mkdtemp(prefix="wsca-stage-"))
    try:
        # the figures are drawn once here and reused by the card below (cached on result)
        result.save(stage)
        if mitigation is not None:
            mitigation.save(stage / "mitigation")
        if extra_dir is not None:
            shutil.copytree(extra_dir, stage, dirs_exist_ok=True)
        card = None
        if model_card and not (stage / CARD_FILE).exists():

            def card(run: Any, run_id: str) -> None:
                write_model_card(
                    result, stage / CARD_FILE, model_name=run.info.run_name or "model",
                    run_id=run_id, mitigation=mitigation,
                )  # fmt: skip

        try:
            with fast_fail():
                return _upload(stage, payload, before_artifacts=card,
                               audit_set=_set_of(result), **target)  # fmt: skip
        except AuditError:
            raise
        except Exception as exc:  # any transport/server failure: keep the report on disk
            pending = {**target, "extra_metrics": extra_metrics, "extra_tags": extra_tags}
            _keep_on_disk(stage, fallback_dir, pending, exc)
            return None
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def _set_of(result: Any) -> dict | None:
    """What MLflow's dataset column shows for the audit set: the report's ``data`` digest
    and its size (None for a report without one, or a mitigation)."""
    try:
        data, n = result["data"], result["n_samples"]
    except (KeyError, TypeError):
        return None
    return {**data, "n_samples": n} if data and data.get("digest") else None


def _audit_input(audit_set: Mapping[str, Any]) -> Any:
    """The audit set as an MLflow dataset input (context ``audit``): the runs table's
    Dataset column then shows what was audited (its size in the name, its digest)."""
    from mlflow.entities import Dataset, DatasetInput, InputTag
    from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

    n = int(audit_set["n_samples"])
    ids = "sample ids" if audit_set.get("sample_ids") else "row order"
    source = json.dumps({"wsca_audit": "audit set", "identified_by": ids})
    dataset = Dataset(name=f"wsca-audit-{n}", digest=str(audit_set["digest"]),
                      source_type="wsca_audit", source=source,
                      profile=json.dumps({"num_rows": n}))  # fmt: skip
    return DatasetInput(dataset, tags=[InputTag(MLFLOW_DATASET_CONTEXT, "audit")])


def log_saved(
    directory: str | Path,
    run_id: str | None = None,
    *,
    experiment_name: str | None = None,
    run_name: str | None = None,
    tracking_uri: str | None = None,
) -> str:
    """Upload a saved report folder (``result.save(...)`` or a fallback) to MLflow.

    Arguments left as None are taken from the folder's ``mlflow-target.json`` when it
    has one (the run the failed upload meant to reach). Raises :class:`AuditError` when
    the server is still unreachable; nothing is deleted. Returns the run id.
    """
    directory = Path(directory)
    result = AuditResult.load(directory)  # validates before anything is sent
    note: dict[str, Any] = {}
    if (directory / PENDING_NOTE).is_file():
        note = json.loads((directory / PENDING_NOTE).read_text())
    mlflow_metrics, params, tags = mlflow_payload(result)
    mlflow_metrics.update(note.get("extra_metrics") or {})
    tags.update(note.get("extra_tags") or {})
    parent = None if run_id else note.get("parent_run_id")
    stage = Path(tempfile.mkdtemp(prefix="wsca-stage-"))
    try:
        shutil.copytree(directory, stage, dirs_exist_ok=True)
        (stage / PENDING_NOTE).unlink(missing_ok=True)
        with fast_fail():
            return _upload(
                stage,
                (mlflow_metrics, params, tags),
                run_id=run_id or note.get("run_id"),
                experiment_name=experiment_name or note.get("experiment_name"),
                run_name=run_name or note.get("run_name"),
                tracking_uri=tracking_uri or note.get("tracking_uri"),
                step=note.get("step"),
                artifact_path=note.get("artifact_path") or ARTIFACT_PATH,
                parent_run_id=parent,
                audit_set=_set_of(result),
            )
    except AuditError:
        raise
    except Exception as exc:
        raise AuditError(
            f"could not upload {directory} to MLflow ({type(exc).__name__}: {str(exc)[:300]}); "
            "the folder is unchanged, try again when the server is back"
        ) from exc
    finally:
        shutil.rmtree(stage, ignore_errors=True)


@contextlib.contextmanager
def scoped_env(values: dict[str, str], *, override: bool = True) -> Iterator[None]:
    """Environment variables set inside the block (``override=False``: only those the
    user has not set), restored after it."""
    old = {k: os.environ.get(k) for k in values}
    for k, v in values.items():
        if override:
            os.environ[k] = v
        else:
            os.environ.setdefault(k, v)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _sharded(result: Any) -> bool:
    """Whether ``result`` is a sharded audit's (held by every rank of its group)."""
    audit = result.after if isinstance(result, Mitigation) else result
    if not isinstance(audit, AuditResult):
        return False
    return int(audit.settings.get("ranks", 1)) > 1
