"""Optuna studies of one architecture: ``run_study(settings)`` runs (or resumes) one and returns the study;
``optimize(settings)`` is the command around it (the summary lines, the exit status).

The public face of the tuning package; the CLI calls only what ``__all__`` names. Inside:
``study.py`` (create or resume, sampler, pruner, baseline first), ``objective.py`` (train one trial, report
validation loss every epoch, prune, record), ``loop.py`` (run trials in this process), ``supervisor.py`` and
``worker.py`` (worker processes), ``display.py`` (what is printed) and ``story.py`` (what optuna-dashboard shows).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import optuna

from cifar_tune import runtime
from cifar_tune.errors import WorkersStopped
from cifar_tune.storage.database import mask_url, storage_for_reading

if TYPE_CHECKING:
    from cifar_tune.studies.presets import OptimizeSettings

__all__ = ["optimize", "print_done", "run_study"]


def optimize(settings: OptimizeSettings) -> int:
    """The ``optimize`` command: run the study (``run_study``), print the summary, and return the exit status: 0,
    the workers' status when they stopped (``WorkersStopped``), or 130 / 143 after Ctrl-C / SIGTERM, which print one
    line with the command that resumes. A user error raised inside propagates (the CLI prints it, status 2)."""
    from cifar_tune.tuning import display

    def command() -> int:
        start = time.perf_counter()
        try:
            study = run_study(settings)
        except WorkersStopped as e:  # the workers said why; the command ends with their status
            return e.status
        print_done(settings, study, time.perf_counter() - start)
        return 0

    return runtime.run_stoppable(
        command,
        lambda: "optimize stopped; the running trial is marked failed, finished trials are stored; resume with: "
                f"{display.resume_command(settings)}")


def run_study(settings: OptimizeSettings) -> optuna.Study:
    """Run (or resume) the study and return it (read back from the storage, every trial in it), printing a line
    per trial as it goes (the Python API's ``cifar_tune.optimize``, the CLI's ``optimize`` and ``run``).

    Raises ``UserError`` for the user's input (data, storage, space), ``WorkersStopped`` when worker processes
    (``--jobs``, or more trials than ``trials_per_process``) stopped before the trials were done, and, after Ctrl-C
    or SIGTERM, KeyboardInterrupt (``errors.Terminated``) once the running trial was failed: the caller says what
    stopped (``optimize``, ``cifar-tune run``)."""
    # Imported here, not above: they load Keras, and a worker (``python -m cifar_tune.tuning.worker``) runs this
    # package's __init__ before its own first line, which loads Keras with TensorFlow's native logs silenced.
    from cifar_tune.tuning import display
    from cifar_tune.tuning.loop import needs_supervisor, run_worker
    from cifar_tune.tuning.supervisor import run_jobs

    display.quiet_optuna()
    if needs_supervisor(settings):
        code = run_jobs(settings)
        if code:
            raise WorkersStopped(settings.arch, code)
    else:
        run_worker(settings, settings.n_trials)
    return optuna.load_study(study_name=settings.study_name, storage=storage_for_reading(settings.storage))


def print_done(settings: OptimizeSettings, study: optuna.Study, seconds: float) -> None:
    """The lines a finished study ends with on the command line: its time, the best trial beside the baseline, and
    how to inspect it."""
    from cifar_tune.tuning import display

    print(f"\nDone in {seconds:.0f} s. {display.summary(study)}")
    print(f"Inspect: cifar-tune dashboard --storage '{mask_url(settings.storage)}'   "
          f"(or: optuna-dashboard '{mask_url(settings.storage)}')")
