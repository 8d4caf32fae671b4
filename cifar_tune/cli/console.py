"""The command line's reporter: ``cifar_tune.progress`` events printed as the commands' lines. Progress on standard
output, warnings (``logging.WARNING`` and above, a trial another worker took over) on standard error, each line
flushed at once (a command's output through a pipe or a log file keeps the order it happened in)."""

from __future__ import annotations

import logging
import sys

from cifar_tune import progress


class Console:
    """A ``progress`` reporter printing each event as its line. ``epoch_lines``: a line per finished epoch
    (``baseline``: ``[cnn] epoch 3/10 loss .. acc .. val_loss .. val_acc .. (12.3s)``); other commands show none."""

    def __init__(self, epoch_lines: bool = False):
        self.epoch_lines = epoch_lines

    def __call__(self, event: progress.Event) -> None:
        from cifar_tune.cli import display  # the study's lines (imported late: the CLI has not loaded Keras yet)

        if isinstance(event, progress.Message):
            _say(event.text, event.level >= logging.WARNING)
        elif isinstance(event, progress.StudyStarted):
            _say(display.header(event.settings, event.study, event.created, event.total, event.per_process,
                                 list(event.gpus)))
        elif isinstance(event, progress.TrialFinished) and event.taken_over:
            _say(display.taken_over_line(event.study, event.trial, event.value), True)  # a state not chosen here
        elif isinstance(event, progress.TrialFinished):
            _say(display.trial_line(event.study, event.trial))
        elif isinstance(event, progress.StudyFinished):
            _say(f"\nDone in {event.seconds:.0f} s. {display.summary(event.study)}")
            warning = display.not_learned_line(event.study)
            if warning:
                _say(warning, True)
            where = display.mask_url(event.settings.storage)
            _say(f"Inspect: cifar-tune dashboard --storage '{where}'   (or: optuna-dashboard '{where}')")
        elif isinstance(event, progress.Epoch) and self.epoch_lines:
            _say(epoch_line(event))


def epoch_line(event: progress.Epoch) -> str:
    """``[tag] epoch 3/10 loss .. acc .. val_loss .. val_acc .. (12.3s)`` (``n/a`` for what was not measured)."""
    def fmt(key: str) -> str:
        return f"{event.logs[key]:.4f}" if key in event.logs else "n/a"

    return (f"[{event.tag}] epoch {event.epoch + 1}/{event.epochs} loss {fmt('loss')} acc {fmt('accuracy')} "
            f"val_loss {fmt('val_loss')} val_acc {fmt('val_accuracy')} ({event.seconds:.1f}s)")


def _say(line: str, to_stderr: bool = False) -> None:
    print(line, file=sys.stderr if to_stderr else sys.stdout, flush=True)
