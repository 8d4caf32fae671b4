"""Optuna studies of one architecture: ``optimize(settings)`` runs (or resumes) one and returns the exit status.

The public face of the tuning package; the CLI calls only what ``__all__`` names. Inside:
``study.py`` (create or resume, sampler, pruner, baseline first), ``objective.py`` (train one trial, report
validation loss every epoch, prune, record), ``loop.py`` (run trials in this process), ``supervisor.py`` and
``worker.py`` (worker processes), ``display.py`` (what is printed) and ``story.py`` (what optuna-dashboard shows).
"""

from __future__ import annotations

import sys
import time
from typing import TYPE_CHECKING

import optuna

from .. import runtime
from ..database import mask_url, storage_for_reading

if TYPE_CHECKING:
    from ..presets import OptimizeSettings

__all__ = ["optimize"]


def optimize(settings: OptimizeSettings) -> int:
    """The ``optimize`` command: run the study, print a line per trial and the best trial beside the baseline."""
    # Imported here, not above: they load Keras, and a worker (``python -m cifar_tune.tuning.worker``) runs this
    # package's __init__ before its own first line, which loads Keras with TensorFlow's native logs silenced.
    from . import display
    from .loop import needs_supervisor, run_worker
    from .supervisor import run_jobs

    display.quiet_optuna()
    runtime.stop_on_signals()
    start = time.perf_counter()
    try:
        if needs_supervisor(settings):
            code = run_jobs(settings)
            if code:
                return code
        else:
            run_worker(settings, settings.n_trials)
    except KeyboardInterrupt as e:
        terminated = isinstance(e, runtime.Terminated) or runtime.stopping() == runtime.TERMINATED
        print(f"\nInterrupted ({'SIGTERM' if terminated else 'Ctrl-C'}): the running trial is marked failed; "
              f"finished trials are stored.\nResume with: {display.resume_command(settings)}", file=sys.stderr)
        return 143 if terminated else 130
    study = optuna.load_study(study_name=settings.study_name, storage=storage_for_reading(settings.storage))
    print(f"\nDone in {time.perf_counter() - start:.0f} s. {display.summary(study)}")
    print(f"Inspect: cifar-tune dashboard --storage '{mask_url(settings.storage)}'   "
          f"(or: optuna-dashboard '{mask_url(settings.storage)}')")
    return 0

