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

from .metrics import COLUMNS as METRIC_COLUMNS

TRAIN_COLOR = "#1f77b4"
VAL_COLOR = "#ff7f0e"
METRIC_COLORS = {"Accuracy": "#1f77b4", "Precision": "#2ca02c", "Recall": "#ff7f0e", "F1 Score": "#9467bd"}
_CURVES = (("accuracy", "val_accuracy", "accuracy"), ("loss", "val_loss", "loss"))


# --- figures -------------------------------------------------------------------------------------------------


REPORTS_DIR = Path("storage") / "reports"


def make_out_dir(out_dir: str | Path | None, prefix: str) -> Path:
    """Create the output folder: ``out_dir``, or a new ``storage/reports/<prefix>-YYYYmmdd-HHMMSS[-n]``."""
    from datetime import datetime

    from .errors import UserError

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


def metric_bars_figure(table: pd.DataFrame) -> go.Figure:
    """Grouped bars: the four macro metrics (Accuracy, Precision, Recall, F1 Score) per model."""
    fig = go.Figure()
    for metric in METRIC_COLUMNS:
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
    """Write ``table`` as ``<stem>.csv`` (full precision) and ``<stem>.md`` (4 decimals) into ``out_dir``."""
    out = Path(out_dir)
    csv_path, md_path = out / f"{stem}.csv", out / f"{stem}.md"
    table.to_csv(csv_path, index=False)
    md_path.write_text(table.to_markdown(index=False, floatfmt=".4f") + "\n", encoding="utf-8")
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

    plotly.js is embedded (inline, once, before the first figure), so the page opens offline.
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
    path.write_text("".join(parts), encoding="utf-8")
    return path


# --- the study report (``cifar-tune report``): Optuna's own plots per study, the compare results across them ----

STUDY_REPORT_NAME = "study-report.html"
MIN_TRIALS_FOR_IMPORTANCE = 4  # fANOVA on fewer completed trials says nothing


def study_report_path(out: str | Path | None) -> Path:
    """Where the study report goes: ``out`` if it names an .html file, else ``study-report.html`` inside it."""
    if out is None:
        return Path("storage") / "reports" / STUDY_REPORT_NAME
    path = Path(out).expanduser()
    if path.suffix.lower() in (".html", ".htm") and not path.is_dir():
        return path
    return path / STUDY_REPORT_NAME


def _importance_blocker(study) -> str | None:
    """Why hyperparameter importances cannot be computed for ``study`` yet (None: they can)."""
    from optuna.trial import TrialState

    done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if len(done) < MIN_TRIALS_FOR_IMPORTANCE:
        return f"needs at least {MIN_TRIALS_FOR_IMPORTANCE} completed trials ({len(done)} so far)"
    if len({t.value for t in done}) < 2:
        return "every completed trial has the same value"
    names = {name for t in done for name in t.params}
    if not any(len({repr(t.params.get(n)) for t in done}) > 1 for n in names):
        return "no hyperparameter varies among the completed trials"
    return None


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


def _study_title(study, label: str | None) -> str:
    arch = study.user_attrs.get("arch", "?")
    return f"{label} ({arch}, study {study.study_name})" if label else f"{arch} (study {study.study_name})"


def _study_figures(study, title: str, notes: list[str]) -> list[tuple[str, go.Figure]]:
    """Optuna's plots of one study and the best trial's learning curves beside the baseline trial's."""
    import optuna
    from optuna.trial import TrialState

    from .studies import baseline_trial

    figures: list[tuple[str, go.Figure]] = []

    def add(name: str, make) -> None:
        try:
            figures.append((f"{title}: {name}", make()))
        except Exception as e:  # one plot that cannot be drawn must not cost the whole report
            notes.append(f"{title}: {name} not drawn ({type(e).__name__}: {str(e)[:200]})")

    vis = optuna.visualization
    add("optimization history (final validation loss per trial)", lambda: vis.plot_optimization_history(study))
    if any(t.intermediate_values for t in study.get_trials(deepcopy=False)):
        add("intermediate values (validation loss per epoch; pruned trials stop early)",
            lambda: vis.plot_intermediate_values(study))
    else:
        notes.append(f"{title}: no trial has reported intermediate values yet")
    blocker = _importance_blocker(study)
    if blocker is None:
        add("hyperparameter importances (fANOVA on the completed trials)",
            lambda: vis.plot_param_importances(
                study, evaluator=optuna.importance.FanovaImportanceEvaluator(seed=0)))
    else:
        notes.append(f"{title}: hyperparameter importances skipped: {blocker}")
    if study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        add("parallel coordinates (hyperparameters of the completed trials)",
            lambda: vis.plot_parallel_coordinate(study))
    try:
        best = study.best_trial
    except ValueError:
        notes.append(f"{title}: no completed trial yet: no learning curves")
        return figures
    base = baseline_trial(study)
    curves = {}
    if base is not None and base.number != best.number and base.user_attrs.get("curves"):
        curves[f"baseline (trial {base.number})"] = base.user_attrs["curves"]
    if best.user_attrs.get("curves"):
        tag = "best = baseline" if base is not None and base.number == best.number else "best"
        curves[f"{tag} (trial {best.number})"] = best.user_attrs["curves"]
    if curves:
        add("learning curves of the baseline and the best trial (train vs validation)",
            lambda: learning_curves_figure(curves))
    return figures


def _compare_rows(records: dict[str, dict]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """From stored compare records: a means table (one row per model and variant) and its standard deviations."""
    means, stds = [], []
    for study_name, rec in records.items():
        label = rec.get("label") or rec.get("arch") or study_name
        for row in rec.get("table", []):
            variant = row.get("Variant")
            if variant not in ("baseline", "tuned"):
                continue
            means.append({"Model": f"{label} — {variant}", **{m: row[m]["mean"] for m in METRIC_COLUMNS}})
            stds.append({"Model": f"{label} — {variant}",
                         **{m: (row[m]["std"] if row[m]["std"] is not None else 0.0) for m in METRIC_COLUMNS}})
    return pd.DataFrame(means), pd.DataFrame(stds)


def _compare_table_html(records: dict[str, dict]) -> str:
    rows = []
    for study_name, rec in records.items():
        label = rec.get("label") or rec.get("arch") or study_name
        for row in rec.get("table", []):
            diff = row.get("Variant") not in ("baseline", "tuned")
            cells = {"Model": label, "Variant": row.get("Variant")}
            for m in METRIC_COLUMNS:
                mean, std = row[m]["mean"], row[m]["std"]
                head = f"{mean:+.4f}" if diff else f"{mean:.4f}"
                cells[m] = f"{head} ± {std:.4f}" if std is not None else f"{head} ± n/a"
            rows.append(cells)
    return pd.DataFrame(rows).to_html(index=False, border=0, classes="metrics")


def _study_rows(studies_: list) -> pd.DataFrame:
    from optuna.trial import TrialState

    from .studies import baseline_trial

    rows = []
    for study in studies_:
        states = [t.state for t in study.get_trials(deepcopy=False)]
        row = {"Study": study.study_name, "Arch": study.user_attrs.get("arch", "?"),
               "Epochs": study.user_attrs.get("epochs", ""), "Trials": len(states),
               **{s.name.lower(): states.count(s) for s in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)}}
        base = baseline_trial(study)
        try:
            best = study.best_trial
        except ValueError:
            best = None
        for name, t in (("Baseline", base), ("Best", best)):
            row[f"{name} val_loss"] = f"{t.value:.4f}" if t is not None else "—"
            row[f"{name} val_acc"] = (f"{t.user_attrs['val_accuracy']:.4f}"
                                      if t is not None and "val_accuracy" in t.user_attrs else "—")
        row["Best trial"] = f"#{best.number}" if best is not None else "—"
        rows.append(row)
    return pd.DataFrame(rows)


def write_study_report(storage_url: str, out: str | Path | None = None) -> Path:
    """One self-contained HTML page about every study in the storage, and the compare results stored with them."""
    from datetime import datetime

    import numpy as np
    import optuna

    from . import data
    from .cli import ARCH_KEYS
    from .errors import UserError
    from .database import mask_url, storage_for_reading

    storage = storage_for_reading(storage_url)
    summaries = optuna.get_all_study_summaries(storage, include_best_trial=False)
    if not summaries:
        raise UserError(f"no studies in {mask_url(storage_url)} (run `cifar-tune optimize --arch ...` first)")

    def order(s):
        arch = s.user_attrs.get("arch")
        return (ARCH_KEYS.index(arch) if arch in ARCH_KEYS else len(ARCH_KEYS), s.study_name)

    studies_ = [optuna.load_study(study_name=s.study_name, storage=storage) for s in sorted(summaries, key=order)]
    records = {s.study_name: s.user_attrs["compare"] for s in studies_ if isinstance(s.user_attrs.get("compare"), dict)}

    figures: list[tuple[str, go.Figure]] = []
    notes: list[str] = []
    for study in studies_:
        label = (records.get(study.study_name) or {}).get("label")
        figures += _study_figures(study, _study_title(study, label), notes)

    compare_html = "<h2>Tuned vs baseline on the test set (cifar-tune compare)</h2>\n"
    missing = [s.study_name for s in studies_ if s.study_name not in records]
    if records:
        means, stds = _compare_rows(records)
        bars = metric_bars_figure(means)
        for trace in bars.data:  # error bars: the standard deviation over seeds
            if trace.name in stds.columns:
                trace.error_y = {"type": "data", "array": list(stds[trace.name]), "visible": True}
        figures.append(("Test metrics, baseline vs tuned (mean over seeds; error bars: std)", bars))
        matrices = {}
        for study_name, rec in records.items():
            per_seed = (rec.get("confusion") or {}).get("tuned") or []
            if per_seed:
                label = rec.get("label") or rec.get("arch") or study_name
                matrices[f"{label} — tuned (trial #{rec.get('best_trial')}), {len(per_seed)} seed(s) summed"] = (
                    np.sum(np.asarray(per_seed), axis=0).tolist())
        if matrices:
            figures.append(("Confusion matrices of the tuned models (test set)",
                            confusion_figure(matrices, data.CLASSES)))
        dates = sorted({str(r.get("date", "?")) for r in records.values()})
        compare_html += ("<p>Each best trial and the seed baseline retrained from scratch on all training images, "
                         "each seed evaluated once on the test set; macro averages, mean ± std over seeds; the "
                         "difference row holds the per-seed paired differences. Compared: "
                         f"{html.escape(', '.join(dates))}.</p>\n" + _compare_table_html(records))
    if missing:
        compare_html += (f"<p><strong>Compare has not run yet</strong> for {html.escape(', '.join(missing))}: "
                         f"run <code>cifar-tune compare</code> to retrain the best trials and the baselines and "
                         f"evaluate them on the test set; the metric bars and confusion matrices appear here then."
                         f"</p>\n")

    facts = {"Storage": mask_url(storage_url), "Generated": datetime.now().astimezone().isoformat(timespec="seconds"),
             "Studies": len(studies_)}
    intro = (facts_html(facts) + "<h2>Studies</h2>\n"
             + _study_rows(studies_).to_html(index=False, border=0, classes="metrics") + "\n" + compare_html)
    if notes:
        intro += "<h2>Notes</h2>\n<ul>" + "".join(f"<li>{html.escape(n)}</li>" for n in notes) + "</ul>\n"
    path = study_report_path(out)
    try:
        return write_html(figures, path, title="cifar-tune: study report", intro_html=intro)
    except OSError as e:
        raise UserError(f"cannot write {path}: {e.strerror or e}") from None
