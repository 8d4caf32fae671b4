"""Optuna studies of one architecture: ``run_study(settings)`` runs (or resumes) one and returns the study;
``run_worker`` runs trials in this process (a supervised worker process's loop). Progress goes to
``cifar_tune.progress`` (the header, a ``TrialFinished`` per trial, the summary): nothing here prints.

The public face of the tuning package; the CLI calls only what ``__all__`` names. Inside:
``study.py`` (create or resume, sampler, pruner, baseline first), ``objective.py`` (train one trial, report
validation loss every epoch, prune, record), ``loop.py`` (run trials in this process), ``entry.py`` (the one
entry of a worker), ``supervisor.py`` (worker processes, ``python -m cifar_tune.cli.worker``), ``ray_backend.py``
(workers as tasks on a Ray cluster, ``--ray``) and ``story.py`` (what optuna-dashboard shows).
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

import optuna

from cifar_tune import progress
from cifar_tune.errors import NotLearnedWarning, WorkersStopped
from cifar_tune.storage import handle

if TYPE_CHECKING:
    from cifar_tune.studies.presets import OptimizeSettings

__all__ = ["quiet_optuna", "run_job", "run_study", "run_worker"]


def run_study(settings: OptimizeSettings, storage: handle.Storage | None = None) -> optuna.Study:
    """Run (or resume) the study and return it (read back from the storage, every trial in it), reporting its
    progress as it goes (``progress.StudyStarted``, a ``TrialFinished`` per trial, ``StudyFinished`` at the end;
    the Python API's ``cifar_tune.optimize``, the CLI's ``optimize`` and ``run``).

    Raises ``UserError`` for the user's input (data, storage, space), ``WorkersStopped`` when worker processes
    (``--jobs``, a Ray cluster's with ``--ray``, or more trials than ``trials_per_process``) stopped before the
    trials were done, and, after Ctrl-C or SIGTERM, KeyboardInterrupt (``errors.Terminated``) once the running
    trial was failed: the caller says what stopped (``optimize``, ``cifar-tune run``).

    Keras loads only where this process trains (one worker: the trials run here); a supervisor of worker
    processes and a Ray driver never load it (nor keep the data: they read it once, for the study's record).
    ``storage``: the command's (default: the settings', ``study.storage_of``), opened once here."""
    from cifar_tune.tuning.budget import needs_supervisor, total_trials
    from cifar_tune.tuning.study import storage_of

    start = time.perf_counter()
    quiet_optuna()
    storage = storage or storage_of(settings)
    if settings.ray is not None:  # workers on a Ray cluster (ray_backend.py)
        from cifar_tune.tuning.ray_backend import run_on_ray

        code = run_on_ray(settings, storage)
        if code:
            raise WorkersStopped(settings.arch, code)
        timed_out = settings.timeout is not None and time.perf_counter() - start >= settings.timeout
        ended = progress.ENDED_TIMEOUT if timed_out else (
            progress.ENDED_TRIALS if total_trials(settings) is None else progress.ENDED_TOTAL)
    elif needs_supervisor(settings, storage):
        from cifar_tune.tuning.supervisor import run_jobs

        code, ended = run_jobs(settings, storage)
        if code:
            raise WorkersStopped(settings.arch, code)
    else:  # one worker: the trials run in this process, which loads Keras once the data and space passed
        from cifar_tune import runtime
        from cifar_tune.tuning.study import prepare

        prepared = prepare(settings)  # bad data or space: refused before Keras loads and before any write
        runtime.import_keras()  # first: the loop's imports load Keras (backend chosen, native logs silenced)
        from cifar_tune.tuning.loop import run_worker as run_here

        ended = run_here(settings, settings.n_trials, prepared=prepared, storage=storage)[1]
    study = optuna.load_study(study_name=settings.study_name, storage=storage.reading())
    progress.report(progress.StudyFinished(settings, study, time.perf_counter() - start, ended))
    _warn_if_not_learned(study)
    return study


def _warn_if_not_learned(study: optuna.Study) -> None:
    """The study's best trial learned nothing worth crowning: a warning (the CLI: on standard error; the Python
    API: a ``NotLearnedWarning``), after the run's summary."""
    from cifar_tune.studies import catalog

    warning = catalog.not_learned(study)
    if warning:
        progress.warn(f"{study.study_name}: {warning}", NotLearnedWarning)


def run_worker(settings: OptimizeSettings, n_trials: int, worker: int = 0) -> optuna.Study:
    """``loop.run_worker``: run trials of the study in this process (``worker`` > 0: as a supervisor's worker
    process, at most ``n_trials`` of a study-wide total); returns the study. Raises as ``run_study``. Loads Keras
    (``runtime.import_keras``)."""
    from cifar_tune import runtime

    runtime.import_keras()  # first: the loop's imports load Keras
    from cifar_tune.tuning.loop import run_worker as run_here

    return run_here(settings, n_trials, worker=worker)[0]


def run_job(job: dict) -> int:
    """``entry.run_job``: a worker's job (settings, trials, slot) run in this process; returns its exit status
    (0, 2, 130). The one entry of ``python -m cifar_tune.cli.worker`` and of a Ray cluster's workers."""
    from cifar_tune.tuning.entry import run_job as run

    return run(job)


class _NoInterruptTraceback(logging.Filter):
    """Optuna logs a failed trial with its traceback; for Ctrl-C / SIGTERM our one line says it all."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], KeyboardInterrupt):
            record.exc_info = None
        return True


def quiet_optuna() -> None:
    """Our one event per trial replaces Optuna's INFO lines; interruptions lose their traceback."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    logging.getLogger("optuna").addFilter(_NoInterruptTraceback())
    for handler in logging.getLogger("optuna").handlers:
        handler.addFilter(_NoInterruptTraceback())
