"""Running the product's commands under a part's deadline, and what every part shares.

Each command runs as a subprocess in ``OUT/work`` (so its ``storage/`` lands there), in a process group of its own
(``--jobs`` workers included), with its standard output and error in ``OUT/logs/<name>.out`` and ``.err``. Those
logs are for people: no part reads a command's standard output; they read what the command stored (its Optuna
study, its JSON or CSV result). At the deadline, or when the user presses Ctrl-C (``Context.stop``), a running
command is ended with its whole group: SIGTERM, then SIGKILL after 3 s.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from .plan import Plan

REPO = Path(__file__).resolve().parents[2]
OK = "ok"
NOT_REACHED = "not reached"


@dataclass
class Context:
    """What every part needs: the plan, the data, the output folder, the subprocesses' environment."""

    plan: Plan
    data: Path
    out: Path
    env: dict[str, str]
    parallel: int
    t0: float = field(default_factory=time.monotonic)
    sizing: dict = field(default_factory=dict)  # plan.size()'s record: how each part's sizes were chosen
    stop: threading.Event = field(default_factory=threading.Event)  # Ctrl-C: every part's commands end now
    stop_reason: str = "interrupted by the user"  # or "terminated (SIGTERM)"
    # (part, result so far) -> None: a long part saves what it has between its commands (runner: results.json)
    checkpoint: Callable[[str, dict], None] = lambda part, result: None

    @property
    def work(self) -> Path:
        return self.out / "work"

    @property
    def logs(self) -> Path:
        return self.out / "logs"


@dataclass
class CommandResult:
    """How one command ended. ``stdout`` is kept for the log and for tests' stand-in commands; parts ignore it."""

    name: str
    argv: list[str]
    returncode: int | None  # None: killed at the deadline
    seconds: float
    stdout: str
    last_stderr: str

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    def reason(self) -> str:
        """Why this command gave no result, in one line."""
        if self.returncode is None:
            return f"timeout: the part's time limit ran out during `{self.name}` (after {self.seconds:.0f} s)"
        return f"`{self.name}` exited with status {self.returncode}: {self.last_stderr or '(no stderr)'}"


def cifar_tune(*args) -> list[str]:
    """The product's command line, as a subprocess of this interpreter."""
    return [sys.executable, "-m", "cifar_tune", *map(str, args)]


def command_text(argv: list[str]) -> str:
    """A command as a person would type it (``cifar-tune ...`` or ``python ...``), for the record."""
    args = ["cifar-tune", *argv[3:]] if argv[1:3] == ["-m", "cifar_tune"] else ["python", *argv[1:]]
    return " ".join(args)


def not_reached(result: dict, reason: str) -> dict:
    """Mark a part's result as not reached, keeping what it measured."""
    result.update(status=NOT_REACHED, reason=reason)
    return result


def log(ctx: Context, message: str) -> None:
    print(f"[gpu_check {time.monotonic() - ctx.t0:6.1f}s] {message}", flush=True)


def run_commands(ctx: Context, commands: list[tuple[str, list[str]]], deadline: float, *,
                 parallel: int = 1, env: dict[str, str] | None = None) -> list[CommandResult]:
    """Run (name, argv) commands, ``parallel`` at a time, until each ends or ``deadline`` (time.monotonic()).

    Commands not started by the deadline (or ``ctx.stop``) are left out of the result; those running then are
    killed with their process group and have returncode None.
    """
    ctx.logs.mkdir(parents=True, exist_ok=True)
    ctx.work.mkdir(parents=True, exist_ok=True)
    pending, running, done = list(commands), [], {}
    try:
        while pending or running:
            while pending and len(running) < parallel and not _halted(ctx, deadline):
                name, argv = pending.pop(0)
                out_path, err_path = ctx.logs / f"{_slug(name)}.out", ctx.logs / f"{_slug(name)}.err"
                with open(out_path, "wb") as out, open(err_path, "wb") as err:
                    proc = subprocess.Popen(argv, stdout=out, stderr=err, cwd=ctx.work, env=env or ctx.env,
                                            start_new_session=True)
                running.append((name, argv, proc, time.monotonic(), out_path, err_path))
                log(ctx, f"  {name}: started")
            if not running:
                break
            for item in list(running):
                name, argv, proc, start, out_path, err_path = item
                code, seconds = proc.poll(), time.monotonic() - start
                expired = code is None and _halted(ctx, deadline)
                if code is None and not expired:
                    continue
                if expired:
                    _kill_group(proc)
                running.remove(item)
                done[name] = res = CommandResult(name, argv, None if expired else code, seconds,
                                                 out_path.read_text(errors="replace"), _last_line(err_path))
                log(ctx, f"  {name}: {'ok' if res.ok else res.reason()} ({res.seconds:.1f} s)")
            time.sleep(0.2)
    finally:  # an error here: the commands run in sessions of their own, so nothing else would end them
        for _, _, proc, *_ in running:
            _kill_group(proc)
    return [done[name] for name, _ in commands if name in done]


def run_one(ctx: Context, name: str, argv: list[str], deadline: float, **kw) -> CommandResult:
    """One command under ``deadline``; a timeout result if the deadline had passed before it could start."""
    results = run_commands(ctx, [(name, argv)], deadline, **kw)
    if results:
        return results[0]
    return CommandResult(name, argv, None, 0.0, "", "")


def _halted(ctx: Context, deadline: float) -> bool:
    return ctx.stop.is_set() or time.monotonic() >= deadline


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_")


def _kill_group(proc: subprocess.Popen) -> None:
    """End a command and every process it started (--jobs workers): they share its process group."""
    for sig, wait in ((signal.SIGTERM, 3.0), (signal.SIGKILL, 10.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def _last_line(path: Path) -> str:
    lines = [s.strip() for s in path.read_text(errors="replace").splitlines() if s.strip()]
    return lines[-1][:300] if lines else ""
