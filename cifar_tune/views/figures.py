"""Plotly figures, tables as CSV/Markdown, and one self-contained HTML report that opens offline.

Small building blocks, shared by every command that reports: a figure function per kind of plot, ``write_tables``
for the metric tables and ``write_html`` to put figures (with an optional HTML introduction) into one file with
plotly.js embedded once, so the page needs no network.
"""

from __future__ import annotations

import html
import os
from pathlib import Path

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from cifar_tune.choices import REPORTS_DIR
from cifar_tune.data import safe_files
from cifar_tune.errors import UserError
from cifar_tune.models.metrics import COLUMNS
from cifar_tune.text import count

TRAIN_COLOR = "#1f77b4"
VAL_COLOR = "#ff7f0e"
METRIC_COLORS = {"Accuracy": "#1f77b4", "Precision": "#2ca02c", "Recall": "#ff7f0e", "F1 Score": "#9467bd"}
_CURVES = (("accuracy", "val_accuracy", "accuracy"), ("loss", "val_loss", "loss"))


# --- figures -------------------------------------------------------------------------------------------------


def check_out_dir(out_dir: str | Path | None) -> None:
    """Refuse, creating nothing, an output folder ``make_out_dir`` could not make or write (None: the default
    under ``storage/reports/``): a path that is not a folder, a file where a folder above it should be, or a
    folder that cannot be written. Every command checks its outputs so before it touches a storage or trains.
    Raises ``UserError``."""
    out = Path(out_dir).expanduser() if out_dir else REPORTS_DIR
    existing = out
    while not existing.exists() and existing != existing.parent:  # the nearest folder that is there
        existing = existing.parent
    if existing == out and not out.is_dir():
        raise UserError(f"output path {out} exists and is not a folder")
    if existing != out and not existing.is_dir():
        raise UserError(f"cannot create output folder {out}: {existing} is not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UserError(f"output folder {existing} is not writable" if existing == out else
                        f"cannot create output folder {out}: {existing} is not writable")


def make_out_dir(out_dir: str | Path | None, prefix: str) -> Path:
    """Create the output folder: ``out_dir``, or a new ``storage/reports/<prefix>-YYYYmmdd-HHMMSS[-n]``."""
    from datetime import datetime

    if out_dir:
        out = Path(out_dir).expanduser()
    else:
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        out, n = REPORTS_DIR / f"{prefix}-{stamp}", 1
        while out.exists():
            n += 1
            out = REPORTS_DIR / f"{prefix}-{stamp}-{n}"
    if out.exists() and not out.is_dir():
        raise UserError(f"output path {out} exists and is not a folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot create output folder {out}: {e.strerror or e}") from None
    if not os.access(out, os.W_OK):
        raise UserError(f"output folder {out} is not writable")
    return out


def learning_curves_figure(histories: dict[str, dict[str, list[float]]]) -> go.Figure:
    """Per model (one row each): accuracy and loss by epoch, train vs validation."""
    labels = list(histories)
    rows = max(1, len(labels))
    titles = [f"{label} — {name}" for label in labels for _, _, name in _CURVES]
    fig = make_subplots(rows=rows, cols=2, subplot_titles=titles or None, vertical_spacing=min(0.3, 0.5 / rows))
    for row, label in enumerate(labels, start=1):
        hist = histories[label]
        for col, (train_key, val_key, name) in enumerate(_CURVES, start=1):
            for key, part, color in ((train_key, "train", TRAIN_COLOR), (val_key, "validation", VAL_COLOR)):
                values = hist.get(key)
                if not values:
                    continue
                fig.add_trace(go.Scatter(x=list(range(1, len(values) + 1)), y=list(values), mode="lines+markers",
                                         name=part, legendgroup=part, line={"color": color},
                                         showlegend=(row == 1 and col == 1),
                                         hovertemplate=f"{label}<br>{part} {name}: %{{y:.4f}}<br>"
                                                       "epoch %{x}<extra></extra>"),
                              row=row, col=col)
            fig.update_xaxes(title_text="epoch", dtick=1 if len(hist.get(train_key) or []) <= 20 else None,
                             row=row, col=col)
            fig.update_yaxes(title_text=name, row=row, col=col)
    fig.update_layout(height=300 * rows + 100, template="plotly_white", margin={"t": 80, "b": 40},
                      legend={"orientation": "h", "yref": "container", "y": 0.995, "yanchor": "top", "x": 0.0,
                              "xanchor": "left"})
    return fig


def best_by_time_figure(history: list[tuple[float, float]]) -> go.Figure:
    """The best validation loss found against the training hours spent (``catalog.best_by_training_time``'s
    (seconds, best value) points), as a step line: what the search had found by each hour it paid for."""
    fig = go.Figure(go.Scatter(x=[s / 3600 for s, _ in history], y=[v for _, v in history], mode="lines+markers",
                               line={"shape": "hv", "color": VAL_COLOR}, name="best so far",
                               hovertemplate="%{x:.3f} h: best val_loss %{y:.4f}<extra></extra>"))
    fig.update_layout(xaxis_title="training hours spent (all finished trials)", yaxis_title="best validation loss",
                      template="plotly_white")
    return fig


def metric_bars_figure(table: pd.DataFrame) -> go.Figure:
    """Grouped bars: the four macro metrics (Accuracy, Precision, Recall, F1 Score) per model."""
    fig = go.Figure()
    for metric in COLUMNS:
        if metric not in table.columns:
            continue
        fig.add_trace(go.Bar(x=list(table["Model"]), y=list(table[metric]), name=metric,
                             marker_color=METRIC_COLORS.get(metric), text=[f"{v:.3f}" for v in table[metric]],
                             textposition="outside",
                             hovertemplate=f"%{{x}}<br>{metric}: %{{y:.4f}}<extra></extra>"))
    fig.update_layout(barmode="group", template="plotly_white", height=450, yaxis={"title": "score",
                      "range": [0, 1.1]}, legend={"orientation": "h", "y": 1.02, "yanchor": "bottom"})
    return fig


# --- tables --------------------------------------------------------------------------------------------------


def write_tables(table: pd.DataFrame, out_dir: str | Path, stem: str = "metrics") -> list[Path]:
    """Write ``table`` as ``<stem>.csv`` (full precision) and ``<stem>.md`` (4 decimals) into ``out_dir``, each
    whole or not at all (``safe_files.replaced_whole``); raises the ``OSError`` of a failed write."""
    out = Path(out_dir)
    csv_path, md_path = out / f"{stem}.csv", out / f"{stem}.md"
    with safe_files.replaced_whole(csv_path) as tmp:
        table.to_csv(tmp, index=False)
    safe_files.write_text_whole(md_path, table.to_markdown(index=False, floatfmt=".4f") + "\n")
    return [csv_path, md_path]


def table_html(table: pd.DataFrame, digits: int = 4) -> str:
    """An HTML table (numbers rounded to ``digits``) for a report's introduction."""
    return table.to_html(index=False, float_format=lambda v: f"{v:.{digits}f}", border=0, classes="metrics")


# --- the HTML page -------------------------------------------------------------------------------------------

_PLOT_CONFIG = {"displaylogo": False, "showSendToCloud": False, "responsive": True}
_STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 2rem auto; max-width: 1200px;
       padding: 0 1rem; color: #222; }
h1 { font-size: 1.6rem; } h2 { font-size: 1.25rem; margin-top: 2rem; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; margin: 0.5rem 0 1rem; } th, td { padding: 0.25rem 0.75rem; text-align: right; }
th { border-bottom: 1px solid #999; } td:first-child, th:first-child { text-align: left; }
dl.facts { display: grid; grid-template-columns: max-content auto; gap: 0.2rem 1rem; }
dl.facts dt { font-weight: 600; } dl.facts dd { margin: 0; }
"""


def facts_html(facts: dict[str, object]) -> str:
    """A definition list of ``name: value`` lines (values are escaped)."""
    items = "".join(f"<dt>{html.escape(str(k))}</dt><dd>{html.escape(str(v))}</dd>" for k, v in facts.items())
    return f'<dl class="facts">{items}</dl>'


def write_html(figures: list[tuple[str, go.Figure]], path: str | Path, title: str, intro_html: str = "") -> Path:
    """Write one self-contained HTML page: ``title``, ``intro_html``, then each titled figure.

    plotly.js is embedded (inline, once, before the first figure), so the page opens offline. The page is
    written whole or not at all (``safe_files.replaced_whole``); raises the ``OSError`` of a failed write.
    """
    path = Path(path)
    parts = [f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
             f"<title>{html.escape(title)}</title>\n<style>{_STYLE}</style>\n</head>\n<body>\n"
             f"<h1>{html.escape(title)}</h1>\n{intro_html}\n"]
    for i, (fig_title, fig) in enumerate(figures):
        parts.append(f"<h2>{html.escape(fig_title)}</h2>\n")
        parts.append(fig.to_html(full_html=False, include_plotlyjs=(i == 0), config=_PLOT_CONFIG))
        parts.append("\n")
    parts.append("</body>\n</html>\n")
    path.parent.mkdir(parents=True, exist_ok=True)
    return safe_files.write_text_whole(path, "".join(parts))


def confusion_figure(matrices: dict[str, list[list[int]]], class_names: list[str] | tuple[str, ...]) -> go.Figure:
    """One heatmap per model (rows: true class, columns: predicted), counts written in the cells."""
    labels = list(matrices)
    cols = min(2, max(1, len(labels)))
    rows = max(1, -(-len(labels) // cols))
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=labels or None, horizontal_spacing=0.12,
                        vertical_spacing=min(0.15, 0.4 / rows))
    for i, label in enumerate(labels):
        row, col = i // cols + 1, i % cols + 1
        fig.add_trace(go.Heatmap(z=matrices[label], x=list(class_names), y=list(class_names), colorscale="Blues",
                                 showscale=False, texttemplate="%{z}", name=label,
                                 hovertemplate=f"{label}<br>true %{{y}}<br>predicted %{{x}}: %{{z}}<extra></extra>"),
                      row=row, col=col)
        fig.update_xaxes(title_text="predicted", row=row, col=col)
        fig.update_yaxes(title_text="true", autorange="reversed", row=row, col=col)
    fig.update_layout(height=520 * rows + 60, template="plotly_white", margin={"t": 60, "b": 40})
    return fig


def compare_figures(compared: dict[str, dict]) -> list[tuple[str, go.Figure]]:
    """The figures of stored comparisons (``comparison.persist.make_record``'s records, by study name): the test
    metrics of baseline and tuned (scikit-learn macro averages on the test set, mean over the seeds, error bars
    one standard deviation) and the tuned models' confusion matrices (test set, summed over the seeds)."""
    import numpy as np

    from cifar_tune.data.cifar10 import CLASSES

    means, stds, matrices = [], [], {}
    for study_name, rec in compared.items():
        label = rec.get("label") or rec.get("arch") or study_name
        for row in rec.get("table", []):
            if row.get("Variant") in ("baseline", "tuned"):
                means.append({"Model": f"{label} — {row['Variant']}", **{m: row[m]["mean"] for m in COLUMNS}})
                stds.append({m: (row[m]["std"] if row[m]["std"] is not None else 0.0) for m in COLUMNS})
        per_seed = (rec.get("confusion") or {}).get("tuned") or []
        if per_seed:
            matrices[f"{label} — tuned (trial #{rec.get('best_trial')}), {count(len(per_seed), 'seed')} summed"] = (
                np.sum(np.asarray(per_seed), axis=0).tolist())
    bars = metric_bars_figure(pd.DataFrame(means))
    for trace in bars.data:  # error bars: the standard deviation over seeds
        trace.error_y = {"type": "data", "array": [s[trace.name] for s in stds], "visible": True}
    figures = [("Test metrics, baseline vs tuned (mean over seeds; error bars: std)", bars)]
    if matrices:
        figures.append(("Confusion matrices of the tuned models (test set)", confusion_figure(matrices, CLASSES)))
    return figures
