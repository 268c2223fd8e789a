"""MLflow evaluator plugin: ``mlflow.models.evaluate(..., evaluators=["wsca"])``.

Registered under the entry-point group ``mlflow.model_evaluator`` as ``wsca``. It loads the
logged PyTorch model (``mlflow.pytorch`` flavour, logged with
``serialization_format="pickle"``: MLflow's ``pt2`` format inlines the layers, so there is
nothing to hook), feeds it the evaluation table in
batches with an :class:`wsca_audit.Auditor` attached, analyses, and logs the report into
the evaluation run with :func:`wsca_audit.log_to_mlflow`.

``evaluator_config={"wsca": {...}}`` keys (MLflow wants one config per evaluator name):

- ``kinds`` (required): ``{column: "categorical" | "continuous"}``, as ``kinds=`` of
  :class:`wsca_audit.Auditor`; these columns of ``data`` are audit variables, not model
  inputs (``metadata`` is its old name, deprecated).
- ``feature_columns``: model input columns (default: every other column). A single column
  whose cells are arrays is stacked (images, sequences).
- ``input_shape``: shape of one sample, e.g. ``[1, 28, 28]``; rows are reshaped to it.
- ``layer`` (default ``"auto"``), ``batch_size`` (256), ``device`` (the model's),
- ``settings``: keyword arguments of ``analyze()`` (``n_bootstrap``, ``seed``...).

Example
-------
>>> mlflow.models.evaluate(model_uri, data=df, targets="label", model_type="classifier",
...     evaluators=["wsca"], evaluator_config={"wsca": {"kinds": {"site": "categorical"}}})
... # doctest: +SKIP
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
from mlflow.models.evaluation import EvaluationResult, ModelEvaluator

import wsca_audit as wa

from .plain import renamed_keyword

_KNOWN = {
    "kinds",
    "metadata",
    "feature_columns",
    "input_shape",
    "layer",
    "batch_size",
    "device",
    "settings",
}


def _inputs(features, config: dict) -> np.ndarray:
    meta_cols = set(config["kinds"])
    missing = meta_cols - set(features.columns)
    if missing:
        raise wa.AuditError(
            f"metadata columns {sorted(missing)} are not in the evaluation data; keep them in "
            "`data` (and out of `feature_names`)"
        )
    cols = config.get("feature_columns") or [c for c in features.columns if c not in meta_cols]
    if not cols:
        raise wa.AuditError("no feature columns left after removing the metadata columns")
    if len(cols) == 1 and isinstance(features[cols[0]].iloc[0], (list, tuple, np.ndarray)):
        x = np.stack([np.asarray(v, dtype=np.float32) for v in features[cols[0]]])
    else:
        x = features[cols].to_numpy(dtype=np.float32)
    if config.get("input_shape"):
        try:
            x = x.reshape(len(x), *config["input_shape"])
        except ValueError as exc:
            raise wa.AuditError(f"cannot reshape inputs {x.shape} to input_shape: {exc}") from exc
    return x


def _forward(net, xb, features, config: dict) -> None:
    """Run the model on a batch; a failure names the columns that were fed to it."""
    try:
        net(xb)
    except wa.AuditError:
        raise
    except Exception as exc:
        meta = set(config["kinds"])
        fed = config.get("feature_columns") or [c for c in features.columns if c not in meta]
        raise wa.AuditError(
            f"the model could not run on the evaluation data: {type(exc).__name__}: "
            f"{str(exc)[:200]}. It was fed the columns {list(fed)} as inputs of shape "
            f"{tuple(xb.shape[1:])}: name its inputs with evaluator_config feature_columns=[...]"
            " (an id column such as patient_id is not an input), or set input_shape="
        ) from exc


class WSCAEvaluator(ModelEvaluator):
    """The ``wsca`` evaluator (see the module docstring for ``evaluator_config``)."""

    @classmethod
    def can_evaluate(cls, *, model_type: str, evaluator_config: dict, **kwargs: Any) -> bool:
        config = evaluator_config or {}
        ready = "kinds" in config or "metadata" in config
        if model_type == "classifier" and not ready:
            # MLflow would only say that no evaluator could evaluate the model
            warnings.warn(
                "the wsca evaluator did not run: it needs evaluator_config={'wsca': {'kinds': "
                "{column: 'categorical' | 'continuous'}}}, the metadata columns of `data` to "
                "audit",
                wa.AuditWarning,
                stacklevel=2,
            )
        return model_type == "classifier" and ready

    def evaluate(
        self,
        *,
        model_type: str,
        dataset,
        run_id: str,
        evaluator_config: dict,
        model=None,
        **kwargs: Any,
    ):
        import torch

        config = dict(evaluator_config or {})
        unknown = set(config) - _KNOWN
        if unknown:
            raise wa.AuditError(
                f"unknown wsca evaluator_config keys {sorted(unknown)}; known: {sorted(_KNOWN)}"
            )
        config["kinds"] = renamed_keyword(
            "metadata", "kinds", config.pop("metadata", None), config.get("kinds"),
            "evaluator_config",  # "evaluator_config(metadata=...)" names the old key
        )  # fmt: skip
        if model is None:
            raise wa.AuditError("the wsca evaluator needs a model (not a static predictions table)")
        net = model.get_raw_model() if hasattr(model, "get_raw_model") else None
        if not isinstance(net, torch.nn.Module):
            raise wa.AuditError(
                "the wsca evaluator needs a model logged with mlflow.pytorch (got "
                f"{type(net).__name__})"
            )
        if isinstance(net, torch.fx.GraphModule) and not any(
            isinstance(m, torch.nn.Linear) for m in net.modules()
        ):
            raise wa.AuditError(
                "the logged model is a torch.export graph (MLflow's 'pt2' serialization): its "
                "layers are inlined and cannot be hooked. Log it with "
                "mlflow.pytorch.log_model(..., serialization_format='pickle') to audit it"
            )
        features = dataset.features_data
        x = _inputs(features, config)
        y = np.asarray(dataset.labels_data)
        meta = {c: features[c].to_numpy() for c in config["kinds"]}
        device = torch.device(config.get("device") or next(net.parameters()).device)
        net = net.to(device).eval()
        auditor = wa.Auditor(net, layer=config.get("layer", "auto"), kinds=config["kinds"])
        bs = int(config.get("batch_size", 256))
        with auditor.collect(), torch.inference_mode():
            for i in range(0, len(x), bs):
                _forward(net, torch.as_tensor(x[i : i + bs], device=device), features, config)
                auditor.record(
                    targets=y[i : i + bs], metadata={c: v[i : i + bs] for c, v in meta.items()}
                )
        result = auditor.analyze(**config.get("settings", {}))
        wa.log_to_mlflow(result, run_id)
        metrics, _, _ = wa.mlflow_payload(result)
        return EvaluationResult(metrics=metrics, artifacts={}, run_id=run_id)
