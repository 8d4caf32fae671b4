"""What a user looks at, rendered from stored records: plotly figures and HTML (``figures``), the comparison
tables (``tables``), the study report (``study_report``), optuna-dashboard's notes and artifacts
(``dashboard``). Views never train or tune."""

__all__ = ["dashboard", "figures", "study_report", "tables"]
