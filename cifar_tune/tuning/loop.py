"""Running trials in this process: a number of new trials, or until the study holds a study-wide total.

How many trials a command runs:

* ``--n-trials K`` runs K NEW trials for this command (Optuna's own ``optimize(n_trials=...)`` meaning), whatever
  other commands on other machines add to the same study meanwhile.
* A study-wide target (``total_trials``, or ``CIFAR_TUNE_TOTAL_TRIALS`` in the environment) instead runs trials
  until the study holds that many, with any number of commands on any machines contributing. A trial counts once
  it started, except a dead worker's trial once its retry exists; the check and the creation of the trial happen
  under a per-study lock (a PostgreSQL advisory lock; a lock file beside a SQLite database), so concurrent
  workers never overshoot the target, and every command stays until all trials have finished (to fail and
  retry those of dead workers).
* Up to ``trials_per_process`` of them (and with ``--jobs 1``) run in this process; otherwise a supervisor runs
  them in worker processes (``supervisor.py``).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable

import optuna

from .. import engines, records
from ..database import DEFAULT_HEARTBEAT_INTERVAL, storage_for_reading, study_lock
from ..errors import UserError
from ..names import TOTAL_TRIALS_ENV
from ..presets import OptimizeSettings
from . import display, story
from .objective import TrialFailed, make_objective
from .study import create_or_load, open_and_prepare


def total_trials(settings: OptimizeSettings) -> int | None:
    """The study-wide target of this run (``settings.total_trials`` or $CIFAR_TUNE_TOTAL_TRIALS), if any."""
    if settings.total_trials is not None:
        return settings.total_trials
    raw = os.environ.get(TOTAL_TRIALS_ENV)
    if not raw:
        return None
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value < 1:
        raise UserError(f"{TOTAL_TRIALS_ENV}={raw!r}: expected a positive integer")
    return value


def needs_supervisor(settings: OptimizeSettings) -> bool:
    """Whether this command runs its trials in worker processes (``--jobs``, or more trials than one process
    should run: Keras's TensorFlow trainer does not give all memory back between trials)."""
    if settings.jobs > 1:
        return True
    total = total_trials(settings)
    if total is None:
        return settings.n_trials > settings.trials_per_process
    try:
        study = optuna.load_study(study_name=settings.study_name, storage=storage_for_reading(settings.storage))
        return total - records.started_trials(study) > settings.trials_per_process
    except (UserError, KeyError):  # no storage or no study yet
        return total > settings.trials_per_process


def poll_seconds(storage) -> float:
    """How often to look at the storage while waiting: the heartbeat interval, within 0.5 .. 5 s."""
    return max(0.5, min(float(getattr(storage, "heartbeat_interval", None) or DEFAULT_HEARTBEAT_INTERVAL), 5.0))


def run_worker(settings: OptimizeSettings, n_trials: int, worker: int = 0) -> optuna.Study:
    """Run trials of the study in this process; returns the study.

    Without a study-wide target: ``n_trials`` new trials (or until the timeout). With one: until the study holds
    that many trials, at most ``n_trials`` of them here when this process is a supervisor's worker (``worker`` > 0).
    """
    storage, space, split = open_and_prepare(settings)
    study, created = create_or_load(settings, storage, space, split, worker)
    total = total_trials(settings)
    if worker == 0:
        print(engines.describe(settings.engine, settings.precision), flush=True)
        print(display.header(settings, study, created, total), flush=True)
    objective = story.recorded(make_objective(space, split, epochs=settings.epochs, seed=settings.seed,
                                              engine=settings.engine, precision=settings.precision,
                                              verbose=int(settings.verbose)))
    callbacks = [display.print_trial, story.callback]
    try:
        if total is None:
            study.optimize(objective, n_trials=n_trials, timeout=settings.timeout, callbacks=callbacks,
                           catch=(TrialFailed,), gc_after_trial=True)
        else:
            supervised = worker > 0
            run_until_total(study, objective, total, max_trials=n_trials if supervised else None,
                            stay=not supervised, timeout=settings.timeout, poll=poll_seconds(storage),
                            callbacks=callbacks)
    finally:
        story.tell(study)
    return study


def run_until_total(study: optuna.Study, objective: Callable[[optuna.Trial], float], total: int, *,
                    max_trials: int | None = None, stay: bool = True, timeout: float | None = None,
                    poll: float = 5.0, callbacks=()) -> int:
    """Start trials while the study holds fewer than ``total`` (at most ``max_trials`` here); returns how many.

    With ``stay``, wait until every trial has finished: a trial whose worker died is failed (after the grace
    period) by a worker still here and retried by one, so the study ends with ``total`` trials although a
    worker was lost. (A supervisor's workers do not stay: the supervisor watches for them.)
    """
    lock = study_lock(study)

    def released_first(trial: optuna.Trial) -> float:
        lock.release()  # the trial exists now: other workers may count it and start theirs
        return objective(trial)

    start, ran = time.monotonic(), 0
    while (timeout is None or time.monotonic() - start < timeout) and (max_trials is None or ran < max_trials):
        lock.acquire()
        try:
            optuna.storages.fail_stale_trials(study)  # a dead worker's trial becomes a waiting retry first
            if records.started_trials(study) < total:
                study.optimize(released_first, n_trials=1, callbacks=list(callbacks), catch=(TrialFailed,),
                               gc_after_trial=True)
                ran += 1
                continue
            running = records.live_trials(study)
        finally:
            lock.release()
        if not (stay and running):
            break
        time.sleep(poll)
    return ran
