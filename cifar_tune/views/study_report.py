"""The study report (``cifar-tune report``): one self-contained HTML page with Optuna's own plots per study and
the compare results stored with the studies (tables, metric bars, confusion matrices). Reads records only."""

from __future__ import annotations

import html
from datetime import datetime
from pathlib import Path

import optuna
import pandas as pd
import plotly.graph_objects as go
from optuna.trial import TrialState

from cifar_tune import runtime
from cifar_tune.choices import ARCH_KEYS, DEFAULT_STORAGE, REPORTS_DIR
from cifar_tune.errors import UserError
from cifar_tune.models.metrics import COLUMNS
from cifar_tune.storage import handle
from cifar_tune.storage.naming import storage_tag
from cifar_tune.storage.urls import check_url
from cifar_tune.studies import catalog
from cifar_tune.studies.records import ComparisonRecord, StudyRecord, TrialRecord
from cifar_tune.views.figures import (
    best_by_time_figure,
    check_out_dir,
    compare_figures,
    facts_html,
    learning_curves_figure,
    write_html,
)
from cifar_tune.views.tables import stat_cell

STUDY_REPORT_NAME = "study-report.html"
MIN_TRIALS_FOR_IMPORTANCE = 4  # fANOVA on fewer completed trials says nothing


def default_report_path(storage_url: str) -> Path:
    """The study report of a storage when no folder is given: ``storage/reports/study-report.html`` for the
    default storage, else ``storage/reports/study-report-<database>-<6 hex digits of the storage>.html``, so that
    reports of different storages never overwrite each other (``naming.storage_tag``). Named after the storage
    rather than written beside it: a SQLite file may sit in a read-only or committed folder (``results/...``),
    and a server has no folder."""
    tag = storage_tag(storage_url)
    return REPORTS_DIR / (STUDY_REPORT_NAME if tag is None else f"study-report-{tag}.html")


def study_report_path(out: str | Path | None, storage_url: str = DEFAULT_STORAGE) -> Path:
    """Where the study report goes: ``out`` if it names an .html file, else ``study-report.html`` inside it;
    without ``out``, the storage's own file in ``storage/reports/`` (``default_report_path``)."""
    if out is None:
        return default_report_path(storage_url)
    path = Path(out).expanduser()
    if path.suffix.lower() in (".html", ".htm") and not path.is_dir():
        return path
    return path / STUDY_REPORT_NAME


def check_report_path(out: str | Path | None, storage_url: str = DEFAULT_STORAGE) -> Path:
    """The report's path (``study_report_path``), refused (``UserError``) before anything is read or written when
    it could not be written: a folder there, or a folder above it that is a file or not writable. Creates
    nothing."""
    path = study_report_path(out, storage_url)
    if path.is_dir():
        raise UserError(f"cannot write the report {path}: it is a folder")
    check_out_dir(path.parent)
    return path


def _importance_blocker(study) -> str | None:
    """Why hyperparameter importances cannot be computed for ``study`` yet (None: they can)."""

    done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if len(done) < MIN_TRIALS_FOR_IMPORTANCE:
        return f"needs at least {MIN_TRIALS_FOR_IMPORTANCE} completed trials ({len(done)} so far)"
    if len({t.value for t in done}) < 2:
        return "every completed trial has the same value"
    names = {name for t in done for name in t.params}
    if not any(len({repr(t.params.get(n)) for t in done}) > 1 for n in names):
        return "no hyperparameter varies among the completed trials"
    return None


def _study_title(study, label: str | None) -> str:
    arch = StudyRecord.read(study).arch or "?"
    return f"{label} ({arch}, study {study.study_name})" if label else f"{arch} (study {study.study_name})"


def _study_figures(study, title: str, notes: list[str]) -> list[tuple[str, go.Figure]]:
    """Optuna's plots of one study and the best trial's learning curves beside the baseline trial's."""

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
    best = catalog.best_trial(study)
    if best is None:
        notes.append(f"{title}: no completed trial yet: no learning curves")
        return figures
    base = catalog.baseline_trial(study)
    curves, best_curves = {}, TrialRecord.read(best).curves
    if base is not None and base.number != best.number and TrialRecord.read(base).curves:
        curves[f"baseline (trial {base.number})"] = TrialRecord.read(base).curves
    if best_curves:
        tag = "best = baseline" if base is not None and base.number == best.number else "best"
        curves[f"{tag} (trial {best.number})"] = best_curves
    if curves:
        add("learning curves of the baseline and the best trial (train vs validation)",
            lambda: learning_curves_figure(curves))
    history = catalog.best_by_training_time(study)
    if history:
        add("best found per hour spent (best validation loss against the training hours of the finished trials)",
            lambda: best_by_time_figure(history))
    return figures


def _compare_table_html(compared: dict[str, ComparisonRecord]) -> str:
    rows = []
    for study_name, rec in compared.items():
        label = rec.label or rec.arch or study_name
        for row in rec.table:
            diff = row.get("Variant") not in ("baseline", "tuned")
            cells = {"Model": label, "Variant": row.get("Variant")}
            for m in COLUMNS:
                cells[m] = stat_cell(row[m]["mean"], row[m]["std"], row[m].get("low"), row[m].get("high"), diff=diff)
            cells["Verdict"] = row.get("verdict", "")
            rows.append(cells)
    return pd.DataFrame(rows).to_html(index=False, border=0, classes="metrics")


def _study_rows(studies_: list) -> pd.DataFrame:
    rows = []
    for study in studies_:
        states = [t.state for t in study.get_trials(deepcopy=False)]
        record = StudyRecord.read(study)
        row = {"Study": study.study_name, "Arch": record.arch or "?",
               "Epochs": "" if record.epochs is None else record.epochs, "Trials": len(states),
               **{s.name.lower(): states.count(s) for s in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)}}
        base, best = catalog.baseline_trial(study), catalog.best_trial(study)
        for name, t in (("Baseline", base), ("Best", best)):
            row[f"{name} val_loss"] = f"{t.value:.4f}" if t is not None else "—"
            acc = TrialRecord.read(t).val_accuracy if t is not None else None
            row[f"{name} val_acc"] = f"{acc:.4f}" if acc is not None else "—"
        row["Best trial"] = f"#{best.number}" if best is not None else "—"
        cost = catalog.study_cost(study)  # what the best trial costs, and the training spent to find it
        row["Best trial's cost"] = catalog.cost_line(cost).split(": ", 1)[1] if cost is not None else "—"
        row["Best found after"] = "—" if cost is None or cost.found_after is None else \
            f"{catalog.hours(cost.found_after)} of training (of {catalog.hours(cost.total)})"
        row["Warning"] = catalog.not_learned(study) or ""  # beside the study, as `cifar-tune studies` shows it
        rows.append(row)
    return pd.DataFrame(rows)


def _compare_section(studies_: list, compared: dict[str, ComparisonRecord]) -> tuple[str, list[tuple[str, go.Figure]]]:
    """The compare results stored with the studies: an HTML table and the metric bars and confusion matrices."""
    section = "<h2>Tuned vs baseline on the test set (cifar-tune compare)</h2>\n"
    figures: list[tuple[str, go.Figure]] = []
    missing = [s.study_name for s in studies_ if s.study_name not in compared]
    if compared:
        figures += compare_figures({name: r.to_attrs() for name, r in compared.items()})
        dates = sorted({str(r.date or "?") for r in compared.values()})
        section += ("<p>Each best trial and the seed baseline retrained from scratch on all training images, on "
                    "seeds the studies never trained with, each evaluated once on the test set; macro averages, "
                    "mean ± std over seeds; the difference row holds the per-seed paired differences with their 95% "
                    f"interval. Compared: {html.escape(', '.join(dates))}.</p>\n" + _compare_table_html(compared))
    if missing:
        section += (f"<p><strong>Compare has not run yet</strong> for {html.escape(', '.join(missing))}: "
                    f"run <code>cifar-tune compare</code> to retrain the best trials and the baselines and "
                    f"evaluate them on the test set; the metric bars and confusion matrices appear here then.</p>\n")
    return section, figures


def write_study_report(storage: handle.Storage | str, out: str | Path | None = None) -> Path:
    """One self-contained HTML page about every study in the storage (the command's ``handle.Storage``, or a
    URL), and the compare results stored with them, written to ``study_report_path(out, storage URL)``; returns
    its path. Raises ``UserError`` (no studies, a storage that cannot be read, a path that cannot be written)."""
    storage = handle.resolve(storage)
    check_url(storage.url)  # a URL that cannot be parsed: one line, before its name is made into the report's
    path = check_report_path(out, storage.url)  # before the storage is read: a bad path costs nothing
    opened = storage.reading()
    summaries, foreign = catalog.split_studies(opened)
    if not summaries:
        raise UserError(f"no {'cifar-tune ' if foreign else ''}studies in {storage.shown} (run `cifar-tune "
                        f"optimize --arch ...` first){'; ' + catalog.foreign_line(foreign) if foreign else ''}")

    def order(s):
        arch = catalog.study_arch(s)
        return (ARCH_KEYS.index(arch) if arch in ARCH_KEYS else len(ARCH_KEYS), s.study_name)

    studies_ = [optuna.load_study(study_name=s.study_name, storage=opened) for s in sorted(summaries, key=order)]
    compared = {s.study_name: rec for s in studies_ if (rec := ComparisonRecord.read(s)) is not None}
    figures: list[tuple[str, go.Figure]] = []
    notes: list[str] = [catalog.foreign_line(foreign)] if foreign else []
    # Ctrl-C / SIGTERM (the CLI's run_stoppable) stop the drawing between studies, not inside plotly or fANOVA.
    with runtime.signals_deferred():
        for study in studies_:
            runtime.raise_if_stopping()
            label = compared[study.study_name].label if study.study_name in compared else None
            figures += _study_figures(study, _study_title(study, label), notes)
            warning = catalog.not_learned(study)
            if warning:
                notes.insert(0, f"{study.study_name}: {warning}")
        compare_html, compare_figures = _compare_section(studies_, compared)
    facts = {"Storage": storage.shown, "Generated": datetime.now().astimezone().isoformat(timespec="seconds"),
             "Studies": len(studies_)}
    intro = (facts_html(facts) + "<h2>Studies</h2>\n"
             + _study_rows(studies_).to_html(index=False, border=0, classes="metrics") + "\n" + compare_html)
    if notes:
        intro += "<h2>Notes</h2>\n<ul>" + "".join(f"<li>{html.escape(n)}</li>" for n in notes) + "</ul>\n"
    try:
        return write_html(figures + compare_figures, path, title="cifar-tune: study report", intro_html=intro)
    except OSError as e:
        raise UserError(f"cannot write {path}: {e.strerror or e}") from None
