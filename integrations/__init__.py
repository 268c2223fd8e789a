"""Framework integrations, shipped in the wsca-audit wheel as ``wsca_audit.integrations``.

Each module uses only the public ``wsca_audit`` API and imports its framework lazily
(importing one module never imports another framework):

- ``wsca_audit.integrations.plain``: ``audit_loop`` / ``audited`` for an existing
  ``evaluate(model, loader)`` function;
- ``wsca_audit.integrations.lightning``: ``WSCACallback`` (PyTorch Lightning);
- ``wsca_audit.integrations.transformers``: ``WSCATrainerCallback`` (HF ``Trainer``);
- ``wsca_audit.integrations.mlflow_evaluator``: ``mlflow.models.evaluate(...,
  evaluators=["wsca"])``;
- ``wsca_audit.integrations.ignite``: ``WSCAHandler`` (pytorch-ignite engines and MONAI's
  evaluators and bundles).

Examples: docs/integrations.md.
"""
