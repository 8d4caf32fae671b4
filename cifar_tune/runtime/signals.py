"""Ctrl-C and SIGTERM in long commands: recorded while a step runs and raised at the next step (a second one
forces), so a running trial or training is failed with its reason and what finished is kept."""

from __future__ import annotations

import contextlib
import shlex
import signal
import threading

from cifar_tune.errors import Terminated

INTERRUPTED, TERMINATED = "interrupted by the user", "terminated (SIGTERM)"
_stop = {"reason": None, "deferred": False}


def stop_on_signals(always_deferred: bool = False) -> None:
    """Ctrl-C and SIGTERM stop this process: outside training at once (KeyboardInterrupt, ``Terminated``);
    while a model trains (``signals_deferred``) at the next batch, where the trial's callback calls
    ``raise_if_stopping``. Raised at an arbitrary point inside TensorFlow, the exception can be swallowed (seen:
    in a weakref callback) or turned into another error (seen: a TypeError while a model was traced).
    ``always_deferred`` (a supervised worker): never raise from the handler; the worker stops at the next batch
    or trial, and its supervisor kills it if that takes too long. A second signal while deferred raises at once
    (a way out of a step that never reaches a check)."""
    def handler(signum, frame):
        second = _stop["reason"] is not None
        _stop["reason"] = _stop["reason"] or (TERMINATED if signum == signal.SIGTERM else INTERRUPTED)  # the first
        if not always_deferred and (second or not _stop["deferred"]):
            raise_if_stopping()

    _stop["reason"] = None  # a new command
    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)


def stopping() -> str | None:
    """Why this process was asked to stop (None: it was not)."""
    return _stop["reason"]


def raise_if_stopping() -> None:
    """Raise ``Terminated`` or KeyboardInterrupt if a signal asked this process to stop."""
    if _stop["reason"] == TERMINATED:
        raise Terminated(TERMINATED)
    if _stop["reason"]:
        raise KeyboardInterrupt(INTERRUPTED)


@contextlib.contextmanager
def signals_deferred():
    """Within: a signal only records itself; the training loop's callback raises at the next batch. Leaving the
    block raises a recorded signal. Nests (a command deferred as a whole around a step that defers too)."""
    outer, _stop["deferred"] = _stop["deferred"], True
    try:
        yield
    finally:
        _stop["deferred"] = outer
    raise_if_stopping()


def stop_callback():
    """A Keras callback that stops training at the next batch (and at the end of an epoch: the fast engine calls
    only epoch callbacks) when a signal asked this process to stop. Train inside ``signals_deferred``."""
    import keras  # not at module level: this module chooses the backend before Keras loads

    return keras.callbacks.LambdaCallback(on_train_batch_end=lambda batch, logs: raise_if_stopping(),
                                          on_epoch_end=lambda epoch, logs: raise_if_stopping())


@contextlib.contextmanager
def stops_on_signals():
    """For the Python API and each long command (``cli.jobs.run_stoppable``): within, Ctrl-C and SIGTERM stop a
    call or a command as ``stop_on_signals`` says (training stops at the next batch, the running trial is failed,
    finished work is kept) and KeyboardInterrupt (``Terminated`` for SIGTERM) propagates to the caller; the
    handlers that were there before come back after, and the stop is forgotten. Outside the main thread (where no
    handler can be set) it changes nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    stop_on_signals()
    try:
        with signals_deferred():  # as the CLI does: the steps check, the exception never lands in a callback
            yield
    finally:
        for signum, handler in zip((signal.SIGINT, signal.SIGTERM), before, strict=True):
            if handler is not None:  # None: set outside Python, cannot be put back
                signal.signal(signum, handler)
        _stop["reason"] = None


def command_line(words: list[str], options) -> str:
    """A shell command line (quoted) that continues a stopped command: ``words`` then each ``(flag, value)`` of
    ``options`` whose value is not None, a value of True as the bare flag (a switch), False left out."""
    parts = list(words)
    for flag, value in options:
        if value is True:
            parts.append(flag)
        elif value is not None and value is not False:
            parts += [flag, str(value)]
    return shlex.join(parts)
