"""The run's outputs, one module per concern:

- :mod:`~vitcompress.report.format`: how numbers, signs and intervals are written; LaTeX escaping; the Jinja
  environment every template renders in.
- :mod:`~vitcompress.report.cells`: the cells as a frame, metrics.csv's columns, the DVC metrics files, the
  summary, the jobs' resources; the study's published figures.
- :mod:`~vitcompress.report.findings`: the study's claims (``reference/study_claims.yaml``) judged on a run, the
  run beside the study, the deployment targets.
- :mod:`~vitcompress.report.tables`: every table, each through its template.
- :mod:`~vitcompress.report.figures`: the trade-off figures (families from the methods themselves).
- :mod:`~vitcompress.report.reference`: the committed training reference and a retraining against it.
"""
