"""Optuna studies of one architecture: ``optimize(settings)`` runs (or resumes) one and returns the exit status.

The public face of the tuning package; the CLI calls only what ``__all__`` names. Inside:
``study.py`` (create or resume, sampler, pruner, baseline first), ``objective.py`` (train one trial, report
validation loss every epoch, prune, record), ``loop.py`` (run trials in this process), ``supervisor.py`` and
``worker.py`` (worker processes), ``display.py`` (what is printed) and ``story.py`` (what optuna-dashboard shows).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import optuna

from .. import runtime
from ..database import mask_url, storage_for_reading

if TYPE_CHECKING:
    from ..presets import OptimizeSettings

__all__ = ["optimize", "run_study"]


def optimize(settings: OptimizeSettings) -> int:
    """The ``optimize`` command: run the study (``run_study``) and return the exit status: 0, 2 for a user error
    raised inside, or 130 / 143 after Ctrl-C / SIGTERM, which print one line with the command that resumes."""
    from . import display

    return runtime.run_stoppable(
        lambda: run_study(settings),
        lambda: "optimize stopped; the running trial is marked failed, finished trials are stored; resume with: "
                f"{display.resume_command(settings)}")


def run_study(settings: OptimizeSettings) -> int:
    """Run (or resume) the study, print a line per trial and the best trial beside the baseline; returns 0 or the
    exit status of workers that stopped. Ctrl-C and SIGTERM raise KeyboardInterrupt (``runtime.Terminated``)
    after the running trial was failed: the caller says what stopped (``optimize``, ``cifar-tune run``)."""
    # Imported here, not above: they load Keras, and a worker (``python -m cifar_tune.tuning.worker``) runs this
    # package's __init__ before its own first line, which loads Keras with TensorFlow's native logs silenced.
    from . import display
    from .loop import needs_supervisor, run_worker
    from .supervisor import run_jobs

    display.quiet_optuna()
    start = time.perf_counter()
    if needs_supervisor(settings):
        code = run_jobs(settings)
        if code:
            return code
    else:
        run_worker(settings, settings.n_trials)
    study = optuna.load_study(study_name=settings.study_name, storage=storage_for_reading(settings.storage))
    print(f"\nDone in {time.perf_counter() - start:.0f} s. {display.summary(study)}")
    print(f"Inspect: cifar-tune dashboard --storage '{mask_url(settings.storage)}'   "
          f"(or: optuna-dashboard '{mask_url(settings.storage)}')")
    return 0
