"""Run (or resume) one architecture's study, wherever its trials run: in this process (``loop.py``), in worker
processes (``supervisor.py``) or on a Ray cluster (``ray_backend.py``); then read it back, say how it ended and
warn when its best trial learned nothing."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import optuna

from cifar_tune import progress
from cifar_tune.errors import NotLearnedWarning, WorkersStopped
from cifar_tune.storage import handle
from cifar_tune.tuning.optuna_logging import quiet_optuna

if TYPE_CHECKING:
    from cifar_tune.studies.presets import OptimizeSettings


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
        from cifar_tune.tuning.loop import run_worker

        ended = run_worker(settings, settings.n_trials, prepared=prepared, storage=storage)[1]
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
