"""How the library tells what it is doing: typed events sent to the current reporter; nothing in the library
prints.

Events (small frozen dataclasses): ``Message`` (a line with a ``logging`` level: INFO is progress, WARNING and
above something the user should see), ``StudyStarted`` / ``StudyFinished`` (one study run), ``TrialFinished`` (a
trial ended, or another worker took it over), ``Epoch`` (a training finished an epoch). ``report(event)`` sends
one to the current reporter: any callable taking an event, installed with ``reporting(reporter)`` (a context
manager; nests, and the reporter before comes back after).

With no reporter installed the events go to Python's ``logging`` under the logger ``cifar_tune`` (DEBUG for
epochs, INFO for progress, WARNING for warnings), following Optuna's conventions (``optuna.logging``: one library
root logger, ``get_logger``, ``set_verbosity``, ``enable_default_handler``) with one difference: no handler is
attached by default (a ``logging.NullHandler``, the standard library's advice for libraries), so the library is
silent unless its caller configures logging or installs a reporter. The command line installs its console
reporter (``cifar_tune.cli.console``); the Python API installs ``TqdmReporter`` (progress bars) when its caller
installed none (see ``cifar_tune.api``).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

LOGGER_NAME = "cifar_tune"
_root = logging.getLogger(LOGGER_NAME)
_root.addHandler(logging.NullHandler())  # silent unless configured (see the module docstring)
_default_handler: logging.Handler | None = None


def get_logger(name: str | None = None) -> logging.Logger:
    """The library's root logger ``cifar_tune``, or its child ``cifar_tune.<name>``."""
    return _root.getChild(name) if name else _root


def set_verbosity(level: int) -> None:
    """The threshold of the library's root logger (``logging.INFO``, ``logging.WARNING``, ...)."""
    _root.setLevel(level)


def enable_default_handler() -> None:
    """Attach a ``logging.StreamHandler`` (standard error, ``[LEVEL] message``) to the library's root logger and
    set it to INFO: what a script without its own logging set-up needs to see the default reporter's lines."""
    global _default_handler
    if _default_handler is None:
        _default_handler = logging.StreamHandler()
        _default_handler.setFormatter(logging.Formatter("[%(levelname)s] %(message)s"))
        _root.addHandler(_default_handler)
    if _root.level == logging.NOTSET:
        _root.setLevel(logging.INFO)


def disable_default_handler() -> None:
    """Remove the handler ``enable_default_handler`` attached."""
    global _default_handler
    if _default_handler is not None:
        _root.removeHandler(_default_handler)
        _default_handler = None


# --- the events ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Message:
    """A line of progress (``logging.INFO``) or a warning (``logging.WARNING`` and above), said as is."""

    text: str
    level: int = logging.INFO

    def __str__(self) -> str:
        return self.text


@dataclass(frozen=True)
class StudyStarted:
    """A study run begins: ``settings`` (``OptimizeSettings``), the ``optuna.Study``, whether this run ``created``
    it, the study-wide ``total`` (None: ``settings.n_trials`` new trials), ``per_process`` (trials per worker
    process when workers run them), ``planned``: the trials this run expects to run (None: unknown), and ``gpus``:
    the GPUs its workers are placed on (``runtime.gpus``; empty: none, or one process)."""

    settings: Any
    study: Any
    created: bool
    total: int | None = None
    per_process: int | None = None
    planned: int | None = None
    gpus: tuple[str, ...] | list[str] = ()
    level = logging.INFO

    def __str__(self) -> str:
        return f"study {self.study.study_name}: {'created' if self.created else 'resumed'}, {self.planned} trials"


@dataclass(frozen=True)
class TrialFinished:
    """A trial of ``study`` ended (``trial``: its ``optuna.trial.FrozenTrial`` as stored). ``taken_over``: another
    worker failed it as dead while this one ran it, and this worker's result (``value``, or None) is not kept."""

    study: Any
    trial: Any
    taken_over: bool = False
    value: float | None = None

    @property
    def level(self) -> int:
        return logging.WARNING if self.taken_over else logging.INFO

    def __str__(self) -> str:
        if self.taken_over:
            return f"trial {self.trial.number} taken over by another worker; this worker's result is not kept"
        value = f" value {self.trial.value:.4f}" if self.trial.value is not None else ""
        return f"trial {self.trial.number} {self.trial.state.name.lower()}{value}"


@dataclass(frozen=True)
class Epoch:
    """A training of ``tag`` (an architecture, or ``trial N``) finished epoch ``epoch`` (0-based) of ``epochs``:
    its Keras ``logs`` (loss, accuracy, val_loss, val_accuracy when validated) and its ``seconds``."""

    tag: str
    epoch: int
    epochs: int
    logs: dict = field(default_factory=dict)
    seconds: float = 0.0
    level = logging.DEBUG

    def __str__(self) -> str:
        logs = " ".join(f"{k} {float(v):.4f}" for k, v in self.logs.items())
        return f"[{self.tag}] epoch {self.epoch + 1}/{self.epochs} {logs} ({self.seconds:.1f}s)"


@dataclass(frozen=True)
class StudyFinished:
    """A study run ended after ``seconds``: ``settings`` and the ``optuna.Study`` read back (every trial in it)."""

    settings: Any
    study: Any
    seconds: float
    level = logging.INFO

    def __str__(self) -> str:
        return f"study {self.study.study_name}: done in {self.seconds:.0f} s, {len(self.study.trials)} trials"


Event = Message | StudyStarted | TrialFinished | Epoch | StudyFinished
Reporter = Callable[[Event], None]


# --- reporters -------------------------------------------------------------------------------------------------


def log_event(event: Event) -> None:
    """The default reporter: the event as one ``logging`` record of the ``cifar_tune`` logger at its level."""
    if _root.isEnabledFor(event.level):
        _root.log(event.level, "%s", event)


_installed: list[Reporter] = []


def installed() -> bool:
    """Whether a reporter was installed (``reporting``); else events go to ``log_event``."""
    return bool(_installed)


def current() -> Reporter | None:
    """The reporter installed last (``reporting``), or None when events go to ``log_event``."""
    return _installed[-1] if _installed else None


def report(event: Event) -> None:
    """Send ``event`` to the current reporter."""
    (_installed[-1] if _installed else log_event)(event)


def info(text: str) -> None:
    """``report(Message(text))``: a line of progress."""
    report(Message(text))


def warn(text: str) -> None:
    """``report(Message(text, logging.WARNING))``: something the user should see (the CLI: on standard error)."""
    report(Message(text, logging.WARNING))


@contextlib.contextmanager
def reporting(reporter: Reporter) -> Iterator[Reporter]:
    """Within, events go to ``reporter``; its ``close()`` (if it has one) is called on the way out."""
    _installed.append(reporter)
    try:
        yield reporter
    finally:
        _installed.remove(reporter)
        if hasattr(reporter, "close"):
            reporter.close()


@contextlib.contextmanager
def reporting_unless_installed(make: Callable[[], Reporter]) -> Iterator[None]:
    """``reporting(make())`` when no reporter is installed; else the installed one stays (the CLI's console)."""
    with reporting(make()) if not _installed else contextlib.nullcontext():
        yield


def epoch_callback(tag: str, epochs: int):
    """A Keras callback that reports an ``Epoch`` event at the end of each epoch (Keras loads on the call)."""
    import keras

    began = [time.perf_counter()]

    def begin(epoch, logs=None):
        began[0] = time.perf_counter()

    def end(epoch, logs=None):
        report(Epoch(tag, epoch, epochs, dict(logs or {}), time.perf_counter() - began[0]))

    return keras.callbacks.LambdaCallback(on_epoch_begin=begin, on_epoch_end=end)


def _logging_configured() -> bool:
    """Whether a handler other than our NullHandler would see the library's records."""
    return any(not isinstance(h, logging.NullHandler) for lg in (_root, logging.getLogger()) for h in lg.handlers)


class TqdmReporter:
    """Progress bars from ``tqdm.auto`` (a widget in Jupyter, text on standard error elsewhere): one for a study's
    trials, one for the epochs of the training under way; every event also goes to ``log_event``. Warnings must
    not vanish behind the bars: while the reporter is in use and logging is not configured, a standard-error
    handler for WARNING and above is attached to the ``cifar_tune`` logger (``close`` removes it)."""

    def __init__(self):
        self.trials = self.epochs = None
        self._handler = None
        if not _logging_configured():
            self._handler = logging.StreamHandler()  # standard error
            self._handler.setLevel(logging.WARNING)
            _root.addHandler(self._handler)

    def __call__(self, event: Event) -> None:
        from tqdm.auto import tqdm

        log_event(event)
        if isinstance(event, StudyStarted):
            self._close_bars()
            self.trials = tqdm(total=event.planned, desc=event.study.study_name, unit="trial")
        elif isinstance(event, Epoch):
            if self.epochs is None or event.epoch == 0 or self.epochs.total != event.epochs:
                self._close_epochs()
                self.epochs = tqdm(total=event.epochs, desc=event.tag, unit="epoch", leave=False)
            self.epochs.update(1)
            self.epochs.set_postfix({k: f"{float(v):.4f}" for k, v in event.logs.items()}, refresh=True)
        elif isinstance(event, TrialFinished) and not event.taken_over:
            self._close_epochs()
            if self.trials is not None:
                self.trials.update(1)
                value = "" if event.trial.value is None else f" {event.trial.value:.4f}"
                self.trials.set_postfix(last=f"#{event.trial.number} {event.trial.state.name.lower()}{value}")
        elif isinstance(event, StudyFinished):
            self._close_bars()

    def _close_epochs(self) -> None:
        if self.epochs is not None:
            self.epochs.close()
            self.epochs = None

    def _close_bars(self) -> None:
        self._close_epochs()
        if self.trials is not None:
            self.trials.close()
            self.trials = None

    def close(self) -> None:
        """Close the open bars and remove the warnings' handler (``reporting`` calls it when the call ends, an
        interrupted one too)."""
        self._close_bars()
        if self._handler is not None:
            _root.removeHandler(self._handler)
            self._handler = None
