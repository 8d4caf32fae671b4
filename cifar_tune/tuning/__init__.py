"""Optuna studies of one architecture: ``optimize(settings)`` runs (or resumes) one and returns the exit status.

The public face of the tuning package; the CLI calls only what ``__all__`` names. Inside:
``study.py`` (create or resume, sampler, pruner, baseline first), ``objective.py`` (train one trial, report
validation loss every epoch, prune, record), ``loop.py`` (run trials in this process), ``supervisor.py`` and
``worker.py`` (worker processes), ``display.py`` (what is printed) and ``story.py`` (what optuna-dashboard shows).
"""

from __future__ import annotations

import logging
import sys
import time

import optuna

from .. import runtime
from ..database import mask_url, storage_for_reading
from ..presets import OptimizeSettings
from . import display
from .loop import needs_supervisor, run_worker
from .supervisor import run_jobs

__all__ = ["optimize"]


class _NoInterruptTraceback(logging.Filter):
    """Optuna logs a failed trial with its traceback; for Ctrl-C / SIGTERM our one line says it all."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], KeyboardInterrupt):
            record.exc_info = None
        return True


def quiet_optuna() -> None:
    """Our one line per trial replaces Optuna's INFO lines; interruptions lose their traceback."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    logging.getLogger("optuna").addFilter(_NoInterruptTraceback())
    for handler in logging.getLogger("optuna").handlers:
        handler.addFilter(_NoInterruptTraceback())


def optimize(settings: OptimizeSettings) -> int:
    """The ``optimize`` command: run the study, print a line per trial and the best trial beside the baseline."""
    quiet_optuna()
    runtime.stop_on_sigterm()
    start = time.perf_counter()
    try:
        if needs_supervisor(settings):
            code = run_jobs(settings)
            if code:
                return code
        else:
            run_worker(settings, settings.n_trials)
    except KeyboardInterrupt as e:
        signal_name = "SIGTERM" if isinstance(e, runtime.Terminated) else "Ctrl-C"
        print(f"\nInterrupted ({signal_name}): the running trial is marked failed; finished trials are stored.\n"
              f"Resume with: {display.resume_command(settings)}", file=sys.stderr)
        return 143 if isinstance(e, runtime.Terminated) else 130
    study = optuna.load_study(study_name=settings.study_name, storage=storage_for_reading(settings.storage))
    print(f"\nDone in {time.perf_counter() - start:.0f} s. {display.summary(study)}")
    print(f"Inspect: cifar-tune dashboard --storage '{mask_url(settings.storage)}'   "
          f"(or: optuna-dashboard '{mask_url(settings.storage)}')")
    return 0

