"""Executors: where a study's trial runners run. A runner is one call of ``loop.run_worker`` (the one worker entry:
trials through Optuna's ask-and-tell, until its share is done, the timeout passes or its memory ceiling is
passed); an executor starts, watches and stops runners. The shape is syne-tune's ``TrialBackend`` (start, poll,
stop); one loop above the executors (``supervisor.supervise``) counts the trials and decides when to stop.

    start(slot, job) -> str | None   start a runner for ``job`` in ``slot`` (1 .. ``slots``); returns the worker
                                     id its trials record (``host:pid``) when the executor knows it
    poll(timeout) -> list[Ended]     the runners that ended, waiting up to ``timeout`` seconds for the first (it
                                     returns as soon as one ends: a replacement starts without a polling delay)
    stop() -> list[str]              ask every runner to stop (it fails its running trial with the reason); kill
                                     those still there after ``STOP_GRACE`` s; returns the worker ids killed

Four executors:

* ``Inline``: the runner is this process (one worker on a CPU, the default in the CLI and the Python API outside a
  Jupyter kernel). Once this process passes its memory ceiling after a trial, the rest goes to worker processes
  (``Processes``).
* ``Processes``: ``python -m cifar_tune.cli.worker`` per slot (``--jobs``; the default on a GPU machine, each
  slot placed on a GPU with its share of its memory), the job as JSON on standard input.
* ``KeptProcesses``: in a Jupyter kernel, ``Processes`` whose workers stay for the kernel's next call
  (``python -m cifar_tune.cli.worker --serve``: a job per line; each call's trials run in them without a new
  TensorFlow import), replaced once past their memory ceiling or when they end.
* ``RayTasks`` (``ray_backend.py``): a Ray task per slot, placed by Ray.

A job is plain data: ``{"settings": OptimizeSettings.to_dict(), "n_trials": N, "worker": slot, "describe": bool}``
(and ``"cwd"``, the caller's folder, for a kept worker).
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import select
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Protocol

from cifar_tune import progress
from cifar_tune.runtime import devices
from cifar_tune.studies.presets import OptimizeSettings

STOP_GRACE = 30.0  # seconds a runner has to fail its trial and end after it was asked to stop, before it is killed


@dataclass(frozen=True)
class Ended:
    """A runner that ended: its ``slot``, exit ``status`` (0; 2: a user error or a failed storage; 130:
    interrupted; anything else: it died), ``death`` (one line saying how, when it died), ``ran`` (the trials it
    ran, where the executor knows: inline), ``fatal`` (an error that stops the whole run: a Ray task that cannot
    run the study)."""

    slot: int
    status: int = 0
    death: str | None = None
    ran: int | None = None
    fatal: Exception | None = None


class Executor(Protocol):
    slots: int  # runners at a time
    trains_here: bool  # the runner is this process: it reports the study's start itself and keeps the data

    def start(self, slot: int, job: dict) -> str | None: ...

    def poll(self, timeout: float) -> list[Ended]: ...

    def stop(self) -> list[str]: ...


@dataclass
class Processes:
    """Worker processes on this machine, ``settings.jobs`` at a time. ``command``: what a worker runs (default:
    ``python -m cifar_tune.cli.worker``; a test gives a stand-in). ``relay``: the supervisor reports each trial
    the workers finish (their own lines print where the caller may not see them: a Jupyter kernel's terminal)."""

    settings: OptimizeSettings
    relay: bool = False
    command: list[str] = field(default_factory=lambda: [sys.executable, "-m", "cifar_tune.cli.worker"])
    procs: dict[int, subprocess.Popen] = field(default_factory=dict)  # slot -> worker
    trains_here = False

    @property
    def slots(self) -> int:
        return self.settings.jobs

    @property
    def gpus(self) -> list[str]:
        """The GPUs the workers are placed on (``worker_env``), for the study's first line."""
        return devices.visible_gpus()

    def start(self, slot: int, job: dict) -> str:
        """A worker process for ``job``, its settings as JSON on standard input (kept off the command line and the
        environment: a storage password stays out of ``ps``), placed on slot ``slot``'s GPU (``worker_env``)."""
        proc = subprocess.Popen(self.command, stdin=subprocess.PIPE, text=True, env=worker_env(self.settings, slot))
        try:
            proc.stdin.write(json.dumps(job))
            proc.stdin.close()
        except BrokenPipeError:  # it died before it read its job: a death, which poll reports
            pass
        self.procs[slot] = proc
        return f"{socket.gethostname()}:{proc.pid}"

    def poll(self, timeout: float) -> list[Ended]:
        if not any(p.poll() is not None for p in self.procs.values()):
            _wait_any(list(self.procs.values()), timeout)
        ended = []
        for slot, proc in list(self.procs.items()):
            code = proc.poll()
            if code is not None:
                del self.procs[slot]
                ended.append(_ended(slot, proc.pid, code))
        return ended

    def stop(self) -> list[str]:
        """SIGTERM to every worker (each fails its trial and exits), SIGKILL to those still there after
        ``STOP_GRACE`` seconds; returns the worker ids killed."""
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline, killed = time.monotonic() + STOP_GRACE, []
        for proc in self.procs.values():
            try:
                proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                killed.append(f"{socket.gethostname()}:{proc.pid}")
        return killed


@dataclass
class _Kept:
    """A worker process kept between calls (``python -m cifar_tune.cli.worker --serve``): jobs as JSON lines on
    its standard input, and for each job one line ``{"status": S, "kept": bool}`` on its status pipe (its standard
    output stays the console's). ``env``: the environment it started with (its GPU placement)."""

    proc: subprocess.Popen
    status: object  # the status pipe's reading end (a text file)
    env: dict[str, str]

    @classmethod
    def spawn(cls, command: list[str], env: dict[str, str]) -> _Kept:
        read, write = os.pipe()
        try:
            proc = subprocess.Popen([*command, "--serve", "--status-fd", str(write)], stdin=subprocess.PIPE,
                                    text=True, env=env, pass_fds=(write,))
        finally:
            os.close(write)  # the worker holds the writing end: its end is the pipe's end of file
        return cls(proc, os.fdopen(read), env)

    def send(self, job: dict) -> None:
        try:
            self.proc.stdin.write(json.dumps(job) + "\n")
            self.proc.stdin.flush()
        except BrokenPipeError:  # it died before it read the job: poll reports the death
            pass

    def close(self, wait: float = STOP_GRACE) -> bool:
        """End of jobs: the worker ends when it has read them all; killed after ``wait`` s. Returns whether it
        had to be killed."""
        with contextlib.suppress(BrokenPipeError, OSError):
            self.proc.stdin.close()
        killed = False
        try:
            self.proc.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            killed = True
        self.status.close()
        return killed


_KEPT: dict[int, _Kept] = {}  # slot -> the worker kept for a kernel's next call


@atexit.register
def _end_kept_workers() -> None:
    while _KEPT:
        _KEPT.popitem()[1].close(wait=5.0)


@dataclass
class KeptProcesses(Processes):
    """``Processes`` for a Jupyter kernel: each slot's worker stays after the call's trials, idle, and runs the
    next call's (it imports TensorFlow and Keras once per kernel instead of once per call: about 9 CPU-s on this
    project's 2-core CPU). Within one call a slot whose worker ended its share gets a fresh worker, as with
    ``Processes`` (a worker past its memory ceiling or its ``--trials-per-process`` hands over so). A worker leaves
    after a job that did not end with status 0, after a job with ``trials_per_process`` set, once past its memory
    ceiling (``settings.worker_memory`` MB, or its size after its first job plus ``budget.DEFAULT_HEADROOM_MB``;
    Keras keeps memory per trial that only a process's end returns), when the kernel's environment changed (its
    GPU placement, ``KERAS_BACKEND``: compared whole), when a call uses fewer slots, and when the kernel ends (its
    standard input closes); the next call then starts a fresh one. Each job carries the caller's working folder,
    so relative paths mean what they mean in the kernel."""

    running: dict[int, _Kept] = field(default_factory=dict)  # slot -> its worker, while it runs a job
    used: set[int] = field(default_factory=set)  # the pids that ran a job of this call

    def start(self, slot: int, job: dict) -> str:
        if not self.used:  # this call's first: workers of slots it does not use leave (they hold memory, a GPU)
            for extra in [n for n in _KEPT if n > self.slots]:
                _KEPT.pop(extra).close()
        env = worker_env(self.settings, slot)
        kept = _KEPT.pop(slot, None)  # out while it runs: a call that ends otherwise never hands it on half-done
        if kept is not None and (kept.proc.poll() is not None or kept.env != env or kept.proc.pid in self.used):
            kept.close()
            kept = None
        kept = kept or _Kept.spawn(self.command, env)
        self.used.add(kept.proc.pid)
        kept.send({**job, "cwd": os.getcwd()})
        self.running[slot] = kept
        return f"{socket.gethostname()}:{kept.proc.pid}"

    def poll(self, timeout: float) -> list[Ended]:
        ready, _, _ = select.select([k.status for k in self.running.values()], [], [], timeout)
        ended = []
        for slot, kept in list(self.running.items()):
            if kept.status not in ready:
                continue
            del self.running[slot]
            line = kept.status.readline()
            if not line:  # the pipe ended mid-job: the worker died
                code = kept.proc.wait()
                kept.status.close()
            else:
                said = json.loads(line)
                code = said["status"]
                if said["kept"]:
                    _KEPT[slot] = kept
                else:
                    kept.close()
            ended.append(_ended(slot, kept.proc.pid, code))
        return ended

    def stop(self) -> list[str]:
        """SIGTERM to every worker running a job (it fails its trial and leaves), SIGKILL to those still there
        after ``STOP_GRACE`` seconds; returns the worker ids killed. Idle kept workers stay."""
        for kept in self.running.values():
            if kept.proc.poll() is None:
                kept.proc.send_signal(signal.SIGTERM)
        deadline, killed = time.monotonic() + STOP_GRACE, []
        for kept in self.running.values():
            if kept.close(wait=max(0.0, deadline - time.monotonic())):
                killed.append(f"{socket.gethostname()}:{kept.proc.pid}")
        self.running.clear()
        return killed


def _wait_any(procs: list[subprocess.Popen], timeout: float) -> None:
    """Wait up to ``timeout`` seconds for any of ``procs`` to end. Linux: on their pidfds (``select`` returns the
    moment one ends; ``subprocess`` has no wait-for-any); elsewhere, a poll every 50 ms."""
    if not procs:
        time.sleep(timeout)
        return
    fds = []
    try:
        fds = [os.pidfd_open(p.pid) for p in procs]
        select.select(fds, [], [], timeout)
    except (AttributeError, OSError):  # no pidfd_open (not Linux, an old kernel), or a pid already reaped
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and all(p.poll() is None for p in procs):
            time.sleep(0.05)
    finally:
        for fd in fds:
            os.close(fd)


def worker_env(settings: OptimizeSettings, slot: int) -> dict[str, str]:
    """This process's environment, plus worker ``slot``'s GPU and its share of that GPU's memory (runtime.devices)."""
    placement = devices.worker_placement(slot, settings.jobs, settings.jobs_per_gpu, devices.visible_gpus())
    return {**os.environ, **placement}


def _ended(slot: int, pid: int, code: int) -> Ended:
    """A worker process's end with its exit status ``code``, and a line saying how when that is not 0."""
    return Ended(slot, code, None if code == 0 else f"worker {slot} (pid {pid}) {describe_exit(code)}")


def describe_exit(code: int) -> str:
    """``exited with status 3``, ``was killed by SIGKILL``: a process's end from its ``returncode``."""
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with status {code}"


@dataclass
class Inline:
    """The runner is this process: ``start`` trains the job's trials here (Keras loads at ``prepare``) and
    returns when they are done; ``poll`` then reports it. ``storage``: the command's handle. Once the runner
    stops on its memory ceiling with trials left, the rest runs in worker processes (``handover``): Keras's
    TensorFlow trainer keeps memory per trial that only a process's end returns."""

    settings: OptimizeSettings
    storage: object = None
    prepared: tuple | None = None  # (space, split): the supervisor's, loaded once
    created: tuple | None = None  # (study, created): the supervisor's
    handover: Processes | None = None
    ended: list[Ended] = field(default_factory=list)
    trains_here = True
    slots = 1

    def prepare(self, space, split) -> None:
        """Keep the space and data (loaded once, by the supervisor), load Keras and check the device's numerics:
        before the study is created, as a command training in its own process always did."""
        from cifar_tune import runtime

        runtime.import_keras()  # first: the loop's imports load Keras (backend chosen, native logs silenced)
        from cifar_tune.engines import numerics

        numerics.verify(self.settings.arch, self.settings.precision)
        self.prepared = (space, split)

    def start(self, slot: int, job: dict) -> str | None:
        if self.handover is not None:
            return self.handover.start(slot, job)
        from cifar_tune.tuning.loop import run_worker

        # this process's settings as given (its timeout counts from the command's start, as the job's does)
        _, ended, ran = run_worker(self.settings, job["n_trials"], prepared=self.prepared, storage=self.storage,
                                   created=self.created)
        if ended == progress.ENDED_MEMORY:  # run_worker said so
            self.handover, self.prepared, self.created = Processes(self.settings), None, None
        self.ended.append(Ended(slot, ran=ran))
        return None

    def poll(self, timeout: float) -> list[Ended]:
        ended, self.ended = self.ended, []
        if self.handover is not None:
            ended += self.handover.poll(0 if ended else timeout)
        return ended

    def stop(self) -> list[str]:
        return self.handover.stop() if self.handover is not None else []

