"""The JSON Schema of report.json (``report.schema.json``), shipped in the package."""
