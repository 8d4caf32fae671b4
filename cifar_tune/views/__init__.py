"""What a user looks at, rendered from stored records: plotly figures and HTML (``figures``), the comparison
tables (``tables``), the study report (``study_report``), the note, figures and learning-curve artifacts
optuna-dashboard shows of each study (``study_note``), and the dashboard served (``dashboard``). Views never
train or tune."""

__all__ = ["dashboard", "figures", "study_note", "study_report", "tables"]
