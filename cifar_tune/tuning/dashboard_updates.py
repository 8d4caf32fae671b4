"""What the tuning loop writes for optuna-dashboard as trials finish: the study note and figures (rendered by
``views/dashboard_content.py``), each trial's worker and learning-curve artifact. Never allowed to fail a trial or
a study: a failure costs one warning."""

from __future__ import annotations

import os
import socket
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import optuna
from optuna.trial import TrialState

from cifar_tune import progress
from cifar_tune.storage import artifacts
from cifar_tune.storage.database import db_message
from cifar_tune.storage.locks import study_lock
from cifar_tune.studies.records import TrialRecord
from cifar_tune.views import dashboard_content

# Seconds between refreshes of a study's note and figures while trials finish; the command that runs the study
# refreshes them once more at its end. A refresh costs ~9 s the first time in a process (plotly and
# optuna-dashboard load) and ~0.2 s after (21 trials; measured on this 2-core CPU): after every trial it was the
# largest side cost of a short trial.
REFRESH_EVERY = 180.0
WORKER_ID = f"{socket.gethostname()}:{os.getpid()}"
_state = {"last": time.monotonic(), "warned": False}  # the clock starts with the process: no refresh at trial 1


def tell(study: optuna.Study, what: str = "all") -> None:
    """Rewrite the study's dashboard note (``what="note"``) or note and figures, under the study lock."""
    try:
        with study_lock(study):  # two workers writing at once would interleave the note's chunks
            if what == "note":
                write_study_note(study)
            else:
                refresh_story(study)
        _state["last"] = time.monotonic()
    except Exception as e:  # what the dashboard shows is a view: a failure here must not stop the trials
        if not _state["warned"]:
            _state["warned"] = True
            reason = db_message(e).strip().splitlines()  # a storage error: the database's own words
            progress.warn(f"warning: could not update the study's dashboard note/figures: {type(e).__name__}: "
                          f"{reason[0][:200] if reason else ''}")


def callback(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
    """An ``optimize`` callback: refresh the note and figures at most every ``REFRESH_EVERY`` seconds."""
    if trial.state in (TrialState.COMPLETE, TrialState.PRUNED) and time.monotonic() - _state["last"] >= REFRESH_EVERY:
        tell(study)


def recorded(objective: Callable[[optuna.Trial], float], node: str | None = None) -> Callable[[optuna.Trial], float]:
    """The objective, plus: which worker ran the trial (and on which Ray ``node``, when Ray placed it), and its
    learning-curve figure as a trial artifact."""
    where = {"worker": WORKER_ID} if node is None else {"worker": WORKER_ID, "node": node}
    store = artifacts.artifact_store()  # None (after one warning) when its folder cannot be used

    def run(trial: optuna.Trial) -> float:
        TrialRecord.update(trial, **where)
        ours = True
        try:
            return objective(trial)
        except optuna.exceptions.UpdateFinishedTrialError:
            ours = False  # another worker ended the trial: it takes no more writes (see loop.run_trial)
            raise
        finally:  # the trial is still running here (Optuna tells the result after we return): artifacts attach
            if ours and store is not None:
                attach_trial_curves(trial, store)

    return run


def write_study_note(study: optuna.Study, compare_table_markdown: str | None = None) -> str:
    """Write (or rewrite) the study's dashboard note (``dashboard_content.updated_note``); returns it."""
    from optuna_dashboard import get_note, save_note

    note = dashboard_content.updated_note(get_note(study), study, compare_table_markdown)
    save_note(study, note)
    return note


def write_study_figures(study: optuna.Study) -> list[str]:
    """Store the study's figures where optuna-dashboard shows them (overwriting earlier versions); their ids."""
    from optuna_dashboard import save_plotly_graph_object

    return [save_plotly_graph_object(study, fig, graph_object_id=graph_id)
            for graph_id, fig in dashboard_content.study_figures(study).items()]


def refresh_story(study: optuna.Study) -> None:
    """Rewrite the study's note and figures from its current trials."""
    write_study_note(study)
    write_study_figures(study)


def attach_trial_curves(trial: optuna.Trial, store=None) -> str | None:
    """Upload the running trial's learning curves (from its ``curves`` user attr) as an SVG artifact.

    Called while the trial still runs (Optuna refuses attributes on finished trials). Returns the artifact id,
    or None when there is nothing to draw or the upload failed (a warning, never an exception: a figure must
    not fail a trial).
    """
    try:
        curves = TrialRecord.read(trial).curves
        if not curves:
            return None
        store = store or artifacts.artifact_store()
        if store is None:  # the folder cannot be used: artifact_store warned once
            return None
        title = f"trial {trial.number} ({trial.study.study_name})"
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / f"learning-curves-trial-{trial.number}.svg"
            path.write_text(dashboard_content.curves_svg(curves, title))
            return optuna.artifacts.upload_artifact(artifact_store=store, file_path=str(path), study_or_trial=trial,
                                                    mimetype="image/svg+xml")
    except Exception as e:
        progress.warn(f"warning: trial {trial.number}: learning-curve artifact not stored: {type(e).__name__}: {e}")
        return None
