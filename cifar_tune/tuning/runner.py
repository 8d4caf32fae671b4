"""Run (or resume) one architecture's study, wherever its trials run (``executors.py``: in this process, in worker
processes or on a Ray cluster, under the one loop of ``supervisor.py``); then read it back, say how it ended and
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
    from cifar_tune.tuning.budget import executor_kind, in_a_kernel
    from cifar_tune.tuning.executors import Inline, KeptProcesses, Processes
    from cifar_tune.tuning.study import storage_of
    from cifar_tune.tuning.supervisor import supervise

    start = time.perf_counter()
    quiet_optuna()
    storage = storage or storage_of(settings)
    kind = executor_kind(settings, storage)
    if kind == "ray":  # workers on a Ray cluster (ray_backend.py)
        from cifar_tune.tuning.ray_backend import run_on_ray

        code, ended = run_on_ray(settings, storage)
    else:  # inline: Keras loads here once the data and space passed
        if kind == "inline":
            executor = Inline(settings, storage)
        else:  # in a kernel, the workers stay for its next call
            executor = KeptProcesses(settings, relay=True) if in_a_kernel() else Processes(settings)
        code, ended = supervise(settings, executor, storage)
    if code:
        raise WorkersStopped(settings.arch, code)
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
