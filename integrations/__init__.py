"""Framework integrations, shipped in the wsca-audit wheel as ``wsca_audit.integrations``.

Each module uses only the public ``wsca_audit`` API and imports its framework lazily:

- ``wsca_audit.integrations.mlflow_evaluator``: ``mlflow.models.evaluate(...,
  evaluators=["wsca"])``.
"""
