"""What a user looks at, rendered from stored records: plotly figures and HTML (``figures``), the comparison
tables (``tables``), the study report (``study_report``), the note, figures and learning-curve images
optuna-dashboard shows of each study (``dashboard_content``), and the dashboard served (``dashboard``). Views
never train or tune, and write nothing to a study: the tuning loop and compare store what they render."""

__all__ = ["dashboard", "dashboard_content", "figures", "study_report", "tables"]
