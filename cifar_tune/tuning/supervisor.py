"""The one loop above the executors (``executors.py``: inline, worker processes, Ray tasks): it counts the trials,
keeps the executor's slots busy while trials are left, and stops.

It creates the study first (so the baseline is queued before any runner starts), then gives each free slot a
runner with its share of what is left. It watches the heartbeats: the trial of a runner that died is failed after
the grace period and retried once (same parameters) by a runner, and the dead runner's share goes to the others,
so the command still ends with the requested count. A runner that passed its memory ceiling ends after its trial;
its replacement starts as soon as it ended. SIGINT or SIGTERM: every runner is asked to stop (its trial is failed
with the reason), and one that does not stop within ``executors.STOP_GRACE`` seconds is killed and its running
trial failed.

Two ways of counting: ``--n-trials K`` (K new trials for this command, however many other commands add; each runner
gets a share) and a study-wide total (``--total-trials``, and always on a Ray cluster, where ``--n-trials K``
becomes "K more than the study holds now"): runners then check the total under the study lock before each trial
(``loop.run_until_total``), so any number of them run exactly that many, none twice.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field, replace

import optuna
from optuna.trial import TrialState

from cifar_tune import progress, runtime
from cifar_tune.storage import handle
from cifar_tune.studies import catalog
from cifar_tune.studies.presets import OptimizeSettings
from cifar_tune.studies.records import TrialRecord
from cifar_tune.tuning import dashboard_updates
from cifar_tune.tuning.budget import poll_seconds, total_trials, trials_per_process
from cifar_tune.tuning.entry import INTERRUPTED, USER_ERROR  # statuses every other runner would repeat: stop
from cifar_tune.tuning.executors import Executor
from cifar_tune.tuning.study import create_or_load, open_study_storage, prepare

MAX_FAILED_STARTS = 3  # worker processes in a row that end without running a trial: give up (the cause would repeat)


@dataclass
class Runner:
    """A runner: its slot, the trials it was asked for, its worker id as trials record it (when known) and, once
    ended, the trials it ran (when its executor said)."""

    slot: int
    trials: int
    wid: str | None
    ran: int | None = None


@dataclass
class Supervisor:
    """The state of one supervised run: the study, the budget and the runners. ``total``: the study-wide target
    (None: ``settings.n_trials`` new trials); ``per_process``: trials per runner (None: no count)."""

    settings: OptimizeSettings
    study: optuna.Study
    total: int | None
    per_process: int | None
    executor: Executor
    runners: dict[int, Runner] = field(default_factory=dict)  # slot -> running
    ended: list[Runner] = field(default_factory=list)
    failed_starts: int = 0
    stop_code: int = 0
    deaths: list[str] = field(default_factory=list)
    fatal: Exception | None = None
    described: bool = False  # the first runner said where it trains (a supervisor loads no Keras to know)
    # the trials finished before this command started: none is its runners' (a kernel's kept worker keeps its id)
    finished_before: frozenset[int] = frozenset()

    @property
    def mine(self) -> set[str]:
        """Every worker id this command started (where the executor knows them)."""
        return {r.wid for r in (*self.runners.values(), *self.ended) if r.wid is not None}

    def ran_by(self, trials, runner: Runner) -> int:
        """Trials ``runner`` ran: as its executor said, else as its trials record it (a dead runner's trial that
        was retried does not count: its retry counts for whoever runs it)."""
        if runner.ran is not None:
            return runner.ran
        other = catalog.replaced_trials(trials) | self.finished_before
        return sum(1 for t in trials if TrialRecord.read(t).worker == runner.wid and t.number not in other)

    def left(self, trials) -> int:
        """Trials still to hand out: study-wide, the total less those started; else this command's ``n_trials``
        less those its runners ran and those promised to the runners still running."""
        if self.total is not None:
            return self.total - catalog.started_trials(self.study)
        done = sum(self.ran_by(trials, r) for r in (*self.ended, *self.runners.values()))
        promised = sum(max(0, r.trials - self.ran_by(trials, r)) for r in self.runners.values())
        return self.settings.n_trials - done - promised

    def reap(self, wait: float) -> None:
        """Collect the runners that ended within ``wait`` seconds (at once when one ends); note deaths, the exit
        statuses that must stop the run, and runners that end without a trial."""
        for e in self.executor.poll(wait):
            runner = self.runners.pop(e.slot)
            runner.ran = e.ran
            self.ended.append(runner)
            self.fatal = self.fatal or e.fatal
            if e.death:
                self.deaths.append(e.death)
                progress.warn(e.death)
            if e.status in (USER_ERROR, INTERRUPTED):
                self.stop_code = e.status
            if runner.wid is None:  # a Ray task or this process: its executor watches its own failures
                continue
            idle = e.status != 0 or self.ran_by(self.study.get_trials(deepcopy=False), runner) == 0
            self.failed_starts = self.failed_starts + 1 if idle else 0
            if self.failed_starts >= MAX_FAILED_STARTS and not self.stop_code:
                progress.warn(f"{MAX_FAILED_STARTS} workers in a row ended without a trial; giving up")
                self.stop_code = e.status or 1

    def spawn(self, remaining: float | None) -> None:
        """Start runners in the free slots: study-wide, as many as the trials left plus those live (a dead
        runner's retry needs one), each running until the total is reached (at most ``per_process``); else each
        with an even share of what is left (at most ``per_process``)."""
        trials = self.study.get_trials(deepcopy=False)
        budget = self.left(trials)
        free = [slot for slot in range(1, self.executor.slots + 1) if slot not in self.runners]
        if self.total is not None:
            wanted = min(self.executor.slots, max(0, budget) + len(catalog.live_trials(self.study)))
            for slot in free[:max(0, wanted - len(self.runners))]:
                self._start(slot, self.per_process or self.total, remaining)
            return
        for i, slot in enumerate(free):
            if budget <= 0:
                break
            n = -(-budget // (len(free) - i))
            n = n if self.per_process is None else min(self.per_process, n)
            self._start(slot, n, remaining)
            budget -= n

    def _start(self, slot: int, n: int, remaining: float | None) -> None:
        job = {"settings": replace(self.settings, jobs=1, timeout=remaining, total_trials=self.total).to_dict(),
               "n_trials": n, "worker": slot, "describe": not self.described}
        self.described = True
        self.runners[slot] = Runner(slot, n, None)  # there before start returns: an inline runner ends within it
        self.runners[slot].wid = self.executor.start(slot, job)

    def finished(self, out_of_time: bool) -> bool:
        """No runner left and nothing more to do (or a reason to stop)."""
        if self.runners:
            return False
        waiting = catalog.live_trials(self.study, None if self.total is not None else self.mine)
        return (bool(self.stop_code) or self.fatal is not None or out_of_time
                or (self.left(self.study.get_trials(deepcopy=False)) <= 0 and not waiting))

    def relay(self, seen: set[int]) -> None:
        """Report a ``TrialFinished`` for each trial of this command's runners that finished since the last call
        (``seen``: the numbers reported, or finished before): where the runners' own lines do not reach the
        caller (a Jupyter kernel's worker processes print to the kernel's terminal, not the cell)."""
        mine = self.mine
        for t in self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED,
                                                                TrialState.FAIL)):
            if t.number not in seen and TrialRecord.read(t).worker in mine:
                seen.add(t.number)
                progress.report(progress.TrialFinished(self.study, t))

    def stop(self) -> None:
        """Stop every runner (each fails its trial); fail the trials of those that had to be killed."""
        for wid in self.executor.stop():
            fail_running_trials(self.study, wid, "its worker did not stop in time and was killed")
        self.runners.clear()


def fail_running_trials(study: optuna.Study, wid: str, reason: str) -> None:
    """Fail the trials a killed worker left running (Optuna would, after the grace period; we know now)."""
    for t in catalog.live_trials(study, {wid}):
        study.tell(t.number, state=TrialState.FAIL)
        progress.warn(f"trial {t.number:>3} fail     {reason}")


def supervise(settings: OptimizeSettings, executor: Executor, storage: handle.Storage | None = None,
              study_wide: bool = False) -> tuple[int, str]:
    """Run this command's trials on ``executor`` until they are done; returns the exit status (0, or why the
    runners stopped) and which limit ended the run (``progress.ENDED_TRIALS``, ``ENDED_TOTAL`` or
    ``ENDED_TIMEOUT``). ``storage``: the command's (default: the settings', ``study.storage_of``); each worker
    process or Ray task opens its own. ``study_wide``: count ``--n-trials`` as that many more than the study holds
    (a Ray cluster's tasks, which the supervisor cannot tell apart).

    Raises ``UserError`` for the user's data, space or storage before anything is stored (an inline executor:
    also for the device's numerics, before the study is created), an executor's fatal error (``ClusterError``)
    once its runners were stopped, and KeyboardInterrupt after Ctrl-C, SIGTERM or a runner that was interrupted,
    once every runner was stopped."""
    space, split = prepare(settings)  # bad data or space: refused before anything is written
    if executor.trains_here:  # Keras, and the device's numerics checked: a faulty device writes nothing either
        executor.prepare(space, split)
    opened = open_study_storage(settings, storage)
    study, created = create_or_load(settings, opened, space, split)  # study and baseline exist before runners
    if executor.trains_here:
        executor.created = (study, created)
    del split  # runners elsewhere load their own copy: this process holds no data and loads no Keras
    asked = total_trials(settings)
    total = catalog.started_trials(study) + settings.n_trials if asked is None and study_wide else asked
    per_process = trials_per_process(settings)
    finished_before = frozenset(t.number for t in study.get_trials(deepcopy=False) if t.state.is_finished())
    sup = Supervisor(settings, study, total, per_process, executor, finished_before=finished_before)
    if not executor.trains_here:  # an inline runner reports the study's start itself, after its device
        planned = settings.n_trials if total is None else max(0, total - catalog.started_trials(study))
        progress.report(progress.StudyStarted(replace(settings, jobs=executor.slots), study, created, total,
                                              per_process, planned, getattr(executor, "gpus", ())))
    poll, start, timed_out = poll_seconds(opened), time.monotonic(), False
    relayed = set(finished_before) if getattr(executor, "relay", False) else None
    # A signal is seen at the next poll, never raised inside a library call (where it could be swallowed or leave
    # a just-started worker unrecorded); leaving the block raises it. An inline runner defers it around each trial.
    deferred = contextlib.nullcontext() if executor.trains_here else runtime.signals_deferred()
    try:
        with deferred:
            while not runtime.stopping():
                optuna.storages.fail_stale_trials(study)  # the watchdog: dead runners' trials become retries
                remaining = None if settings.timeout is None else settings.timeout - (time.monotonic() - start)
                if not sup.stop_code and sup.fatal is None and (remaining is None or remaining > 0):
                    sup.spawn(remaining)
                timed_out = remaining is not None and remaining <= 0 and sup.left(study.get_trials(deepcopy=False)) > 0
                if sup.finished(remaining is not None and remaining <= 0):
                    break
                sup.reap(poll)
                if relayed is not None:
                    sup.relay(relayed)
    except KeyboardInterrupt:  # Ctrl-C (the worker processes got it too) or SIGTERM (they did not): stop them all
        sup.stop()
        raise
    finally:
        if not executor.trains_here or getattr(executor, "handover", None) is not None:
            dashboard_updates.tell(study)  # (an inline runner refreshed it itself, unless it handed trials over)
    if sup.fatal is not None:
        sup.stop()
        raise sup.fatal
    if sup.stop_code == INTERRUPTED:
        raise KeyboardInterrupt
    if sup.deaths and not sup.stop_code:
        progress.warn("the other workers ran the lost trials: the command ran all its trials")
    ended = progress.ENDED_TIMEOUT if timed_out else progress.ENDED_TRIALS if asked is None else progress.ENDED_TOTAL
    return sup.stop_code, ended

