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
* Where they run is the executor's choice (``executors.py``): in this process (``inline``), in worker processes
  or on a Ray cluster, each of which runs this loop. A runner stops after a trial that leaves it above its memory
  ceiling (``budget.MemoryCeiling``); the supervisor hands its remaining trials to a fresh worker process.

Each trial runs through Optuna's ask-and-tell interface (``run_trial``) rather than ``study.optimize``: a worker
whose heartbeat came late may find, when it tells its result, that another worker already failed its trial as
dead and queued a retry. ``study.optimize`` then raises (``Cannot tell a FAIL trial``); ``tell`` with
``skip_if_finished`` keeps the stored state, and this worker says so in one line and goes on. Such a trial does
not count towards this command's ``--n-trials`` (its retry counts for whoever runs it).
"""

from __future__ import annotations

import contextlib
import math
import threading
import time
import warnings
from collections.abc import Callable

import optuna
from optuna.trial import FrozenTrial, TrialState

from cifar_tune import engines, progress, runtime
from cifar_tune.engines import numerics
from cifar_tune.errors import TrialFailed, UserError
from cifar_tune.storage import handle
from cifar_tune.storage.locks import study_lock
from cifar_tune.studies import catalog
from cifar_tune.studies.presets import OptimizeSettings
from cifar_tune.text import count
from cifar_tune.tuning import dashboard_updates
from cifar_tune.tuning.budget import MemoryCeiling, poll_seconds, total_trials
from cifar_tune.tuning.objective import make_objective
from cifar_tune.tuning.study import create_or_load, open_study_storage, prepare, requeue_lost_baseline

MAX_TAKEN_OVER = 3  # trials in a row another worker declared dead: this worker's heartbeat cannot keep up


def run_worker(settings: OptimizeSettings, n_trials: int, worker: int = 0, node: str | None = None,
               describe: bool = False, prepared: tuple | None = None, storage: handle.Storage | None = None,
               created: tuple[optuna.Study, bool] | None = None) -> tuple[optuna.Study, str, int]:
    """Run trials of the study in this process; returns the study, which limit ended the run
    (``progress.ENDED_TRIALS``, ``ENDED_TOTAL``, ``ENDED_TIMEOUT``, or ``ENDED_MEMORY``: this process passed its
    memory ceiling, ``settings.worker_memory``, after a trial) and how many trials ran here.

    Without a study-wide target: ``n_trials`` new trials (or until the timeout). With one: until the study holds
    that many trials, at most ``n_trials`` of them here when this process is a supervisor's or a Ray cluster's
    worker (``worker`` > 0; ``node``: the Ray node id each trial records; ``describe``: this worker reports the
    ``Training on: ...`` line, as a command running its trials here does). ``prepared``: ``study.prepare``'s
    (space, split), when the caller loaded them already; ``storage``: the command's (default: the
    settings', ``study.storage_of``); ``created``: ``study.create_or_load``'s (study, created), when the caller
    (the supervisor of an inline runner) made it already.
    Raises ``UserError`` before anything is written for bad data or space, and before any trial when the device
    computes the architecture wrongly in the precision.
    """
    space, split = prepared or prepare(settings)  # bad data or space: refused before anything is written
    numerics.verify(settings.arch, settings.precision)  # then numerics (once per process, cached per device)
    opened = open_study_storage(settings, storage)
    study, created = created or create_or_load(settings, opened, space, split)
    total = total_trials(settings)
    if worker == 0 or describe:
        engines.report_device(settings.engine, settings.precision)
    if worker == 0:
        planned = n_trials if total is None else max(0, total - catalog.started_trials(study))
        progress.report(progress.StudyStarted(settings, study, created, total, planned=planned))
    template = engines.TrainSpec(space.arch, epochs=settings.epochs, seed=settings.seed, engine=settings.engine,
                                 precision=settings.precision, verbose=int(settings.verbose))
    objective = dashboard_updates.recorded(make_objective(space, split, template), node)
    callbacks = [_report_trial, dashboard_updates.callback]
    ceiling = MemoryCeiling(settings.worker_memory)
    try:
        if total is None:
            ran = run_trials(study, objective, n_trials, timeout=settings.timeout, callbacks=callbacks,
                             until=ceiling.passed)
            ended = progress.ENDED_TRIALS if ran >= n_trials else progress.ENDED_TIMEOUT
        else:
            supervised = worker > 0
            ran = run_until_total(study, objective, total, max_trials=n_trials if supervised else None,
                                  stay=not supervised, timeout=settings.timeout, poll=poll_seconds(opened),
                                  callbacks=callbacks, until=ceiling.passed)
            reached = catalog.started_trials(study) >= total or (supervised and ran >= n_trials)
            ended = progress.ENDED_TOTAL if reached else progress.ENDED_TIMEOUT
        if ended == progress.ENDED_TIMEOUT and ceiling.stopped:
            ended = progress.ENDED_MEMORY
            progress.info(f"This process holds more than its memory ceiling of {ceiling.mb:,.0f} MB (--worker-memory) "
                          f"after {count(ran, 'trial')}: a fresh worker process runs the remaining trials.")
    finally:
        if worker == 0:  # a supervisor or a Ray driver refreshes the story once its workers are done
            dashboard_updates.tell(study)
    return study, ended, ran


def _report_trial(study: optuna.Study, trial: FrozenTrial) -> None:
    """A trial callback: its ``TrialFinished`` event (the CLI prints the trial's line)."""
    progress.report(progress.TrialFinished(study, trial))


def run_until_total(study: optuna.Study, objective: Callable[[optuna.Trial], float], total: int, *,
                    max_trials: int | None = None, stay: bool = True, timeout: float | None = None,
                    poll: float = 5.0, callbacks=(), until: Callable[[], bool] = lambda: False) -> int:
    """Start trials while the study holds fewer than ``total`` (at most ``max_trials`` here, and until ``until()``
    says so after a trial: the memory ceiling); returns how many.

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
        runtime.raise_if_stopping()  # Ctrl-C while this worker waits for the others' trials
        lock.acquire()
        try:
            optuna.storages.fail_stale_trials(study)  # a dead worker's trial becomes a waiting retry first
            if catalog.started_trials(study) < total:
                # asked under the lock held here; a trial taken over still counts (its retry is a study trial)
                run_trial(study, released_first, callbacks, locked=True)
                ran += 1
                if until():
                    return ran
                continue
            running = catalog.live_trials(study)
        finally:
            lock.release()
        if not (stay and running):
            break
        time.sleep(poll)
    return ran


def run_trials(study: optuna.Study, objective: Callable[[optuna.Trial], float], n_trials: int, *,
               timeout: float | None = None, callbacks=(), until: Callable[[], bool] = lambda: False) -> int:
    """Run ``n_trials`` trials of this process (trials another worker took over do not count), or until
    ``timeout`` seconds have passed, or until ``until()`` says so after a trial (the memory ceiling); returns how
    many finished here.

    Raises ``UserError`` after ``MAX_TAKEN_OVER`` take-overs in a row: this worker's heartbeat is too late for
    the study's grace period, and every further trial would be lost the same way.
    """
    start, done, taken_in_a_row = time.monotonic(), 0, 0
    while done < n_trials and (timeout is None or time.monotonic() - start < timeout):
        if run_trial(study, objective, callbacks) is None:
            taken_in_a_row += 1
            if taken_in_a_row >= MAX_TAKEN_OVER:
                raise UserError(f"{MAX_TAKEN_OVER} trials in a row of this worker were declared dead by other "
                                "workers (its heartbeat came late): give the study a longer --grace-period")
            continue
        done, taken_in_a_row = done + 1, 0
        if until():
            break
    return done


def run_trial(study: optuna.Study, objective: Callable[[optuna.Trial], float], callbacks=(),
              locked: bool = False) -> FrozenTrial | None:
    """One trial through Optuna's ask-and-tell, as ``study.optimize`` runs it (dead workers' trials failed and
    retried first, a heartbeat while it runs, the callbacks after it); returns the finished trial, or None when
    another worker took it over.

    States: the objective's value -> COMPLETE (a value that is not a finite number: FAIL, Optuna's rule);
    ``optuna.TrialPruned`` -> PRUNED; ``TrialFailed`` -> FAIL, and the study goes on. Anything else (Ctrl-C, a
    ``UserError``) fails the trial and propagates: it would repeat in every trial.

    A baseline trial the study owes (``study.requeue_lost_baseline``: its dead retry, a stop) is queued again
    first, so the next trial asked for is the baseline. The trial is asked for under the study lock (``locked``:
    the caller holds it already). On SQLite, Optuna's
    pop of a queued trial (the baseline, a retry) is not atomic between processes (no SELECT ... FOR UPDATE), and
    two commands starting together were seen to run the same queued trial, one of them losing a trial.
    """
    optuna.storages.fail_stale_trials(study)  # a dead worker's trial becomes a waiting retry first
    with warnings.catch_warnings(), (contextlib.nullcontext() if locked else study_lock(study)):
        # Optuna warns that heartbeats belong to study.optimize: ours beats (below)
        warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used with Study.optimize")
        requeue_lost_baseline(study)  # a baseline lost while the study runs (its dead retry) is queued first
        trial = study.ask()
    state, value, taken = TrialState.FAIL, None, False
    try:
        with _heartbeat_thread(study, trial):
            try:
                value = objective(trial)
                # Optuna's rule, as study.optimize applies it: a value that is not a finite number fails the
                # trial (tell refuses NaN with state COMPLETE, and would store inf as a result)
                state = TrialState.COMPLETE if _finite(value) else TrialState.FAIL
            except optuna.TrialPruned:
                state = TrialState.PRUNED
            except TrialFailed:
                pass
            except optuna.exceptions.UpdateFinishedTrialError:  # TakenOver, or a write Optuna refused
                taken = True
    finally:  # also on Ctrl-C: the trial never stays RUNNING; a trial already ended keeps its stored state
        frozen = study.tell(trial, value if state == TrialState.COMPLETE else None, state=state,
                            skip_if_finished=True)
    # Told a result Optuna would have stored, yet the stored trial failed: it had ended before our tell.
    kept = state in (TrialState.PRUNED, TrialState.COMPLETE)
    if taken or (kept and frozen.state == TrialState.FAIL):
        progress.report(progress.TrialFinished(study, frozen, taken_over=True, value=value if kept else None))
        return None
    for callback in callbacks:
        callback(study, frozen)
    return frozen


def _finite(value) -> bool:
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


@contextlib.contextmanager
def _heartbeat_thread(study: optuna.Study, trial: optuna.Trial):
    """Beat the trial's heartbeat while it runs, as ``study.optimize`` does (ask-and-tell has no heartbeat of its
    own): a daemon thread of this process records it through the storage every heartbeat interval.

    Unlike Optuna's thread, one failed beat (a dropped connection, a locked SQLite file) does not end the beating:
    a worker that lost its heartbeat thread would look dead while it trains on. The one place that reads Optuna's
    private ``Study._storage`` / ``Trial._trial_id`` besides ``locks.study_lock``: heartbeats are keyed by them.
    """
    storage = study._storage
    interval = getattr(storage, "get_heartbeat_interval", lambda: None)()
    if interval is None:
        yield
        return
    stop = threading.Event()

    def beat() -> None:
        while True:
            with contextlib.suppress(Exception):  # the next beat may get through; a dead storage ends the trial
                storage.record_heartbeat(trial._trial_id)
            if stop.wait(interval):
                return

    thread = threading.Thread(target=beat, name=f"heartbeat-trial-{trial.number}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=5)
