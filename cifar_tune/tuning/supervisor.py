"""Supervise worker processes on this machine (``optimize --jobs N``, or more trials than one process should run).

The supervisor trains nothing. It creates the study (so the baseline is queued before any worker starts),
starts ``jobs`` workers (``python -m cifar_tune.cli.worker``, a process entry point that prints as the CLI does,
the settings as JSON on their standard input: nothing of them, a password least of all, is on a command line),
replaces each with a fresh process after
``trials_per_process`` trials (Keras's TensorFlow trainer does not give all memory back between trials), and
watches the heartbeats: the trial of a worker that died is failed after the grace period and retried once
(same parameters) by a worker, and the dead worker's share goes to the others, so the command still ends with
the requested count. SIGINT or SIGTERM: every worker is asked to stop (its trial is failed with the reason),
and one that does not stop within ``STOP_GRACE`` seconds is killed and its running trial failed.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field, replace

import optuna
from optuna.trial import TrialState

from cifar_tune import progress, runtime
from cifar_tune.runtime import devices
from cifar_tune.storage import handle
from cifar_tune.studies import catalog
from cifar_tune.studies.presets import OptimizeSettings
from cifar_tune.studies.records import TrialRecord
from cifar_tune.tuning import dashboard_updates
from cifar_tune.tuning.budget import poll_seconds, total_trials, trials_per_process
from cifar_tune.tuning.entry import INTERRUPTED, USER_ERROR  # statuses every other worker would repeat: stop
from cifar_tune.tuning.study import create_or_load, open_and_prepare

MAX_FAILED_STARTS = 3  # workers in a row that end without running a trial: give up (the cause would repeat)
STOP_GRACE = 30.0  # seconds a worker has to fail its trial and exit after SIGTERM before it is killed


@dataclass
class Child:
    """A worker process, the trials it was asked for, and its id as trials record it."""

    proc: subprocess.Popen
    trials: int
    wid: str


@dataclass
class Supervisor:
    """The state of one supervised run: the study, the budget and the workers."""

    settings: OptimizeSettings
    study: optuna.Study
    total: int | None
    per_process: int | None  # trials per worker process before a fresh one (None: no bound)
    children: dict[int, Child] = field(default_factory=dict)  # slot -> worker
    mine: set[str] = field(default_factory=set)  # every worker id this command started
    failed_starts: int = 0
    stop_code: int = 0
    deaths: list[str] = field(default_factory=list)
    described: bool = False  # the first worker said where it trains (this process loads no Keras to know)

    def ran_by(self, trials, wid: str) -> int:
        return sum(1 for t in trials if TrialRecord.read(t).worker == wid)

    def left(self, trials) -> int:
        """Trials still to hand out: the budget less those started (but not replaced) and those promised."""
        gone = catalog.replaced_trials(trials)
        promised = sum(max(0, c.trials - self.ran_by(trials, c.wid)) for c in self.children.values())
        if self.total is not None:
            started = sum(1 for t in trials if t.state != TrialState.WAITING and t.number not in gone)
            return self.total - started - promised
        done = sum(1 for t in trials if TrialRecord.read(t).worker in self.mine and t.number not in gone)
        return self.settings.n_trials - done - promised

    def reap(self) -> None:
        """Collect the workers that ended; note deaths and the exit statuses that must stop the run."""
        trials = self.study.get_trials(deepcopy=False)
        for slot, child in list(self.children.items()):
            code = child.proc.poll()
            if code is None:
                continue
            del self.children[slot]
            if code != 0:
                self.deaths.append(f"worker {slot} (pid {child.proc.pid}) {_describe_exit(code)}")
                progress.warn(self.deaths[-1])
            if code in (USER_ERROR, INTERRUPTED):
                self.stop_code = code
            self.failed_starts = self.failed_starts + 1 if code != 0 or self.ran_by(trials, child.wid) == 0 else 0
            if self.failed_starts >= MAX_FAILED_STARTS and not self.stop_code:
                progress.warn(f"{MAX_FAILED_STARTS} workers in a row ended without a trial; giving up")
                self.stop_code = code or 1

    def spawn(self, remaining: float | None) -> None:
        """Start workers in the free slots, each with an even share of what is left (at most ``per_process``)."""
        budget = self.left(self.study.get_trials(deepcopy=False))
        free = [slot for slot in range(1, self.settings.jobs + 1) if slot not in self.children]
        for i, slot in enumerate(free):
            if budget <= 0:
                break
            n = -(-budget // (len(free) - i))
            n = n if self.per_process is None else min(self.per_process, n)
            proc = start_worker(self.settings, slot, n, remaining, self.total, describe=not self.described)
            self.described = True
            self.children[slot] = Child(proc, n, f"{socket.gethostname()}:{proc.pid}")
            self.mine.add(self.children[slot].wid)
            budget -= n

    def finished(self, out_of_time: bool) -> bool:
        """No worker left and nothing more to do (or a reason to stop)."""
        if self.children:
            return False
        waiting = catalog.live_trials(self.study, None if self.total is not None else self.mine)
        return bool(self.stop_code) or out_of_time or (self.left(self.study.get_trials(deepcopy=False)) <= 0
                                                        and not waiting)

    def stop_children(self) -> None:
        """Ask every worker to stop (SIGTERM: it fails its trial), kill those still there after STOP_GRACE."""
        for child in self.children.values():
            if child.proc.poll() is None:
                child.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE
        for child in self.children.values():
            try:
                child.proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                child.proc.kill()
                child.proc.wait()
                fail_running_trials(self.study, child.wid, "its worker did not stop in time and was killed")


def start_worker(settings: OptimizeSettings, slot: int, n_trials: int, timeout: float | None,
                 total: int | None, describe: bool = False) -> subprocess.Popen:
    """A worker process, its settings as JSON on standard input (kept off the command line and environment);
    ``describe``: it reports the ``Training on: ...`` line (the supervisor loads no Keras to know it)."""
    job = {"settings": replace(settings, jobs=1, timeout=timeout, total_trials=total).to_dict(),
           "n_trials": n_trials, "worker": slot, "describe": describe}
    proc = subprocess.Popen([sys.executable, "-m", "cifar_tune.cli.worker"], stdin=subprocess.PIPE, text=True,
                            env=worker_env(settings, slot))
    proc.stdin.write(json.dumps(job))
    proc.stdin.close()
    return proc


def worker_env(settings: OptimizeSettings, slot: int) -> dict[str, str]:
    """This process's environment, plus worker ``slot``'s GPU and its share of that GPU's memory (runtime.devices)."""
    placement = devices.worker_placement(slot, settings.jobs, settings.jobs_per_gpu, devices.visible_gpus())
    return {**os.environ, **placement}


def fail_running_trials(study: optuna.Study, wid: str, reason: str) -> None:
    """Fail the trials a killed worker left running (Optuna would, after the grace period; we know now)."""
    for t in catalog.live_trials(study, {wid}):
        study.tell(t.number, state=TrialState.FAIL)
        progress.warn(f"trial {t.number:>3} fail     {reason}")


def _describe_exit(code: int) -> str:
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with status {code}"


def run_jobs(settings: OptimizeSettings, storage: handle.Storage | None = None) -> tuple[int, str]:
    """Supervise workers until this command's trials are done; returns the exit status (0, or why it stopped) and
    which limit ended the run (``progress.ENDED_TRIALS``, ``ENDED_TOTAL`` or ``ENDED_TIMEOUT``). ``storage``: the
    command's (default: the settings', ``study.storage_of``); each worker opens its own."""
    opened, space, split = open_and_prepare(settings, storage)
    study, created = create_or_load(settings, opened, space, split)  # study and baseline exist before workers
    del split  # the workers load their own copy; this process holds no data and loads no Keras
    total = total_trials(settings)
    sup = Supervisor(settings, study, total, trials_per_process(settings))
    planned = settings.n_trials if total is None else max(0, total - catalog.started_trials(study))
    progress.report(progress.StudyStarted(settings, study, created, total, trials_per_process(settings), planned,
                                          devices.visible_gpus()))
    poll, start, timed_out = poll_seconds(opened), time.monotonic(), False
    try:
        # A signal is seen at the next poll, never raised inside a library call (where it could be swallowed
        # or leave a just-started worker unrecorded); leaving the block raises it.
        with runtime.signals_deferred():
            while not runtime.stopping():
                sup.reap()
                optuna.storages.fail_stale_trials(study)  # the watchdog: dead workers' trials become retries
                remaining = None if settings.timeout is None else settings.timeout - (time.monotonic() - start)
                if not sup.stop_code and (remaining is None or remaining > 0):
                    sup.spawn(remaining)
                timed_out = remaining is not None and remaining <= 0 and sup.left(study.get_trials(deepcopy=False)) > 0
                if sup.finished(remaining is not None and remaining <= 0):
                    break
                time.sleep(poll)
    except KeyboardInterrupt:  # Ctrl-C (the workers got it too) or SIGTERM (they did not): stop them all
        sup.stop_children()
        raise
    finally:
        dashboard_updates.tell(study)
    if sup.stop_code == INTERRUPTED:
        raise KeyboardInterrupt
    if sup.deaths and not sup.stop_code:
        progress.warn("the other workers ran the lost trials: the command ran all its trials")
    ended = progress.ENDED_TIMEOUT if timed_out else progress.ENDED_TRIALS if total is None else progress.ENDED_TOTAL
    return sup.stop_code, ended
