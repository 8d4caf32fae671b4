"""The command line's reporter: ``cifar_tune.progress`` events printed as the commands' lines. Progress on standard
output, warnings (``logging.WARNING`` and above, a trial another worker took over) on standard error, each line
flushed at once (a command's output through a pipe or a log file keeps the order it happened in).

A training (a trial, a baseline or compare run) shows where it is in one of two ways, chosen by whether standard
output is a terminal:

* a terminal: a live status line at the bottom, redrawn in place (``\\r``, erase to the end of the line) as the
  training's events arrive (at most every ``progress.BATCH_EVERY`` seconds) and every ``TICK`` second between
  them: ``trial 3: epoch 2/3 batch 120/282, 1m12s, last val_loss 2.1034``. Every line printed erases it first
  and it is drawn again below, so lines never mix with it; it is erased when the training ends. One row, never
  cursor movements: the lines of other processes on the same terminal (a supervisor's worker processes) only
  overwrite it until its next redraw.
* a pipe or a file: no status line (no ``\\r`` in a log); a line per finished epoch instead (``epoch_line``),
  so a log shows every few minutes that the run is alive, bounded by trials × epochs, never by batches.

``--verbose`` (Keras's own progress bar) turns both off.
"""

from __future__ import annotations

import logging
import shutil
import sys
import threading
import time
from dataclasses import dataclass

from cifar_tune import progress

ERASE = "\r\x1b[K"  # back to the row's start, erase to its end (ANSI; every terminal emulator in use)
TICK = 1.0  # seconds between redraws of the status line when no event came (its elapsed time moves on)


@dataclass
class _Training:
    """What the status line shows of one training under way."""

    epochs: int
    started: float
    epoch: int = 0
    step: int = 0
    steps: int | None = None
    val_loss: float | None = None


def _is_terminal(stream) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # a replaced stream without isatty, or a closed one
        return False


class Console:
    """A ``progress`` reporter printing each event as its line.

    ``live``: the status line of the training under way (default: when standard output is a terminal and not
    ``verbose``). ``epoch_lines``: a line per finished epoch (``[cnn] epoch 3/10 loss .. acc .. val_loss ..
    val_acc .. (12.3s)``; default: when there is no status line and not ``verbose``). ``verbose``: Keras prints
    its own progress bar, so neither. ``studies_started``: how many studies it announced (``StudyStarted``)."""

    def __init__(self, epoch_lines: bool | None = None, live: bool | None = None, verbose: bool = False):
        self.given, self.verbose = epoch_lines, verbose
        self.studies_started = 0  # StudyStarted events seen: an interrupted optimize says what it had begun
        self.warned: set[str] = set()  # the warnings said: each once per command
        self.live = (not verbose and _is_terminal(sys.stdout)) if live is None else live
        self.epoch_lines = (not verbose and not self.live) if epoch_lines is None else epoch_lines
        self.running: dict[str, _Training] = {}
        self.shown = False  # the status line is on the terminal now
        # A training's events stop for seconds at times (the first batch's tracing, validation): a daemon thread
        # redraws the line every TICK seconds meanwhile, so its elapsed time moves; the lock keeps whole lines.
        self.lock, self.ticker, self.stop = threading.RLock(), None, threading.Event()

    def __getstate__(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k not in ("lock", "ticker", "stop")}

    def __setstate__(self, state: dict) -> None:
        """A copy printing in another process whose output is forwarded line by line (a Ray worker's, see
        ``ray_backend.shippable``): no status line there, a line per epoch instead."""
        self.__dict__.update(state, live=False, shown=False, running={}, lock=threading.RLock(), ticker=None,
                             stop=threading.Event())
        self.epoch_lines = not self.verbose if self.given is None else self.given

    def __call__(self, event: progress.Event) -> None:
        with self.lock:  # the status line's thread reads what this changes
            self._show(event)

    def _show(self, event: progress.Event) -> None:
        from cifar_tune.cli import display  # the study's lines (imported late: the CLI has not loaded Keras yet)

        if isinstance(event, (progress.TrainingStarted, progress.Batch, progress.Epoch)):
            self._training(event)
        elif isinstance(event, progress.Message) and event.level >= logging.WARNING:
            if event.text not in self.warned:  # `run`: optimize and compare warn of the same study; say it once
                self.warned.add(event.text)
                self.say(event.text, True)
        elif isinstance(event, progress.Message):
            self.say(event.text)
        elif isinstance(event, progress.StudyStarted):
            self.studies_started += 1
            self.say(display.header(event.settings, event.study, event.created, event.total, event.per_process,
                                    list(event.gpus)))
        elif isinstance(event, progress.TrialFinished) and event.taken_over:
            self.say(display.taken_over_line(event.study, event.trial, event.value), True)  # a state not chosen here
        elif isinstance(event, progress.TrialFinished):
            self.running.pop(f"trial {event.trial.number}", None)
            self.say(display.trial_line(event.study, event.trial))
        elif isinstance(event, progress.StudyFinished):
            self.running.clear()
            self.say(f"\nDone in {event.seconds:.0f} s. {display.ended_line(event)}\n{display.summary(event.study)}")
            where = display.mask_url(event.settings.storage)
            self.say(f"Inspect: cifar-tune dashboard --storage '{where}'   (or: optuna-dashboard '{where}')")

    def _training(self, event) -> None:
        if isinstance(event, progress.TrainingStarted):
            self.running[event.tag] = _Training(event.epochs, time.monotonic(), event.initial_epoch, 0, event.steps)
            if self.live and self.ticker is None:
                self.ticker = threading.Thread(target=self._tick, name="cifar-tune-status-line", daemon=True)
                self.ticker.start()
        run = self.running.get(event.tag)
        if isinstance(event, progress.Epoch):
            if self.epoch_lines:
                self.say(epoch_line(event))
            if run is not None:
                run.epoch, run.step, run.val_loss = event.epoch + 1, 0, event.logs.get("val_loss", run.val_loss)
                if run.epoch >= run.epochs:  # the training is over (its evaluation follows)
                    del self.running[event.tag]
        elif isinstance(event, progress.Batch) and run is not None:
            run.epoch, run.step, run.steps = event.epoch, event.step, event.steps or run.steps
        self._draw()

    def status_line(self) -> str:
        """The status line: each training under way as ``<tag>: epoch k/N batch b/B, elapsed, last val_loss v``
        (several, joined by `` | ``), cut to the terminal's width so it never wraps."""
        now, parts = time.monotonic(), []
        for tag, run in self.running.items():
            batch = f" batch {run.step}/{run.steps}" if run.steps and run.step else ""
            loss = f"{run.val_loss:.4f}" if run.val_loss is not None else "-"
            parts.append(f"{tag}: epoch {min(run.epoch + 1, run.epochs)}/{run.epochs}{batch}, "
                         f"{_elapsed(now - run.started)}, last val_loss {loss}")
        width = shutil.get_terminal_size((100, 24)).columns - 1
        return " | ".join(parts)[:width]

    def _tick(self) -> None:
        while not self.stop.wait(TICK):
            with self.lock:
                if self.running:
                    self._draw()

    def _draw(self) -> None:
        if not self.live:
            return
        with self.lock:
            line = self.status_line()
            if line or self.shown:
                sys.stdout.write(ERASE + line)
                sys.stdout.flush()
            self.shown = bool(line)

    def say(self, line: str, to_stderr: bool = False) -> None:
        """Print ``line`` (standard error for a warning), the status line erased first and drawn again after."""
        with self.lock:
            if self.live:
                sys.stdout.write(ERASE)
                sys.stdout.flush()
                self.shown = False
            _say(line, to_stderr)
            self._draw()

    def close(self) -> None:
        """Erase the status line and stop its redraws (``progress.reporting`` calls it when the command ends, an
        interrupted one too)."""
        self.stop.set()
        if self.ticker is not None:
            self.ticker.join(timeout=5)
            self.ticker = None
        with self.lock:
            self.running.clear()
            self._draw()


def _elapsed(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def epoch_line(event: progress.Epoch) -> str:
    """``[tag] epoch 3/10 loss .. acc .. val_loss .. val_acc .. (12.3s)`` (``n/a`` for what was not measured)."""
    def fmt(key: str) -> str:
        return f"{event.logs[key]:.4f}" if key in event.logs else "n/a"

    return (f"[{event.tag}] epoch {event.epoch + 1}/{event.epochs} loss {fmt('loss')} acc {fmt('accuracy')} "
            f"val_loss {fmt('val_loss')} val_acc {fmt('val_accuracy')} ({event.seconds:.1f}s)")


def _say(line: str, to_stderr: bool = False) -> None:
    print(line, file=sys.stderr if to_stderr else sys.stdout, flush=True)
