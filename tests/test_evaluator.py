"""The MLflow evaluator plugin, through `mlflow.models.evaluate` itself."""

import mlflow
import numpy as np
import pandas as pd
import pytest
import torch
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

import wsca_audit as wa


@pytest.fixture(scope="module")
def logged_model(digits_std, tmp_path_factory):
    X, y = digits_std
    label = (y >= 5).astype(np.int64)
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(64, 32), torch.nn.ReLU(), torch.nn.Linear(32, 2))
    opt = torch.optim.Adam(net.parameters(), 1e-2)
    xt, yt = torch.as_tensor(X[:1000], dtype=torch.float32), torch.as_tensor(label[:1000])
    for _ in range(100):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(net(xt), yt).backward()
        opt.step()
    root = tmp_path_factory.mktemp("evaluator")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    try:
        exp = mlflow.create_experiment("evaluator", artifact_location=(root / "art").as_uri())
        with mlflow.start_run(experiment_id=exp):
            # pip_requirements given: MLflow would otherwise infer them in a subprocess that
            # imports the model (about 10 s a model, and nothing this test looks at)
            info = mlflow.pytorch.log_model(
                net.eval(), name="model", serialization_format="pickle", pip_requirements=["torch"]
            )
            pt2 = mlflow.pytorch.log_model(
                net, name="pt2", input_example=X[:2].astype(np.float32), pip_requirements=["torch"]
            )
    finally:
        mlflow.set_tracking_uri(None)
    rng = np.random.default_rng(0)
    Xe, ye = X[1000:], label[1000:]
    df = pd.DataFrame(Xe.astype(np.float32), columns=[f"px{i}" for i in range(64)])
    df["label"] = ye
    df["site"] = np.where(rng.random(len(ye)) < 0.8, ye, 1 - ye)
    df["ink"] = Xe.sum(1)
    return uri, exp, info.model_uri, df, pt2.model_uri


def test_evaluate_with_wsca_evaluator(logged_model):
    uri, exp, model_uri, df, _ = logged_model
    mlflow.set_tracking_uri(uri)
    try:
        with mlflow.start_run(experiment_id=exp) as run:
            result = mlflow.models.evaluate(
                model_uri,
                data=df,
                targets="label",
                model_type="classifier",
                evaluators=["wsca"],
                evaluator_config={
                    "wsca": {
                        "kinds": {"site": "categorical", "ink": "continuous"},
                        "settings": {"n_bootstrap": 30, "n_permutations": 30, "progress": False},
                    }
                },
            )
        assert result.metrics["wsca.site.usage"] == pytest.approx(
            MlflowClient().get_run(run.info.run_id).data.metrics["wsca.site.usage"]
        )
        back = wa.load_from_mlflow(run.info.run_id)
        assert set(back.tasks) == {"site", "ink"}
        assert back["n_samples"] == len(df) and back["embedding_dim"] == 32
        # the same audit done by hand gives the same report
        net = mlflow.pytorch.load_model(model_uri)
        auditor = wa.Auditor(net, kinds={"site": "categorical", "ink": "continuous"})
        x = torch.as_tensor(df[[f"px{i}" for i in range(64)]].to_numpy())
        with auditor.collect(), torch.no_grad():
            net(x)
            auditor.record(
                targets=df["label"].to_numpy(), metadata={"site": df["site"], "ink": df["ink"]}
            )
        direct = auditor.analyze(n_bootstrap=30, n_permutations=30, progress=False)
        assert direct.tasks["site"]["usage"]["value"] == pytest.approx(
            back.tasks["site"]["usage"]["value"], abs=1e-6
        )
    finally:
        mlflow.set_tracking_uri(None)


def test_evaluator_explains_pt2_models(logged_model):
    uri, exp, _, df, pt2_uri = logged_model
    mlflow.set_tracking_uri(uri)
    try:
        with mlflow.start_run(experiment_id=exp), pytest.raises(wa.AuditError, match="pickle"):
            mlflow.models.evaluate(
                pt2_uri, data=df, targets="label", model_type="classifier",
                evaluators=["wsca"], evaluator_config={"wsca": {"metadata": {"site": "categorical"}}},
            )  # fmt: skip
    finally:
        mlflow.set_tracking_uri(None)


def test_evaluator_reports_missing_metadata_column(logged_model):
    uri, exp, model_uri, df, _ = logged_model
    mlflow.set_tracking_uri(uri)
    try:
        with mlflow.start_run(experiment_id=exp), pytest.raises(wa.AuditError, match="scanner"):
            mlflow.models.evaluate(
                model_uri, data=df, targets="label", model_type="classifier",
                evaluators=["wsca"], evaluator_config={"wsca": {"metadata": {"scanner": "categorical"}}},
            )  # fmt: skip
    finally:
        mlflow.set_tracking_uri(None)


def test_evaluator_names_the_columns_it_fed_and_the_config_it_needs(logged_model):
    """An id column fed as an input gave a raw `mat1 and mat2 shapes` RuntimeError, and a
    missing config only MLflow's generic 'could not be evaluated'."""
    uri, exp, model_uri, df, _ = logged_model
    mlflow.set_tracking_uri(uri)
    try:
        with mlflow.start_run(experiment_id=exp):
            extra = df.assign(patient_id=np.arange(len(df)))
            with pytest.raises(wa.AuditError, match=r"'patient_id'\].*feature_columns="):
                mlflow.models.evaluate(
                    model_uri, data=extra, targets="label", model_type="classifier",
                    evaluators=["wsca"], evaluator_config={"wsca": {"kinds": {"site": "categorical"}}},
                )  # fmt: skip
            with (
                pytest.warns(wa.AuditWarning, match="needs evaluator_config"),
                pytest.raises(MlflowException),
            ):
                mlflow.models.evaluate(
                    model_uri, data=df, targets="label", model_type="classifier",
                    evaluators=["wsca"],
                )  # fmt: skip
    finally:
        mlflow.set_tracking_uri(None)
