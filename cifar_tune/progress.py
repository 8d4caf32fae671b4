"""How the library tells what it is doing: typed events sent to the current reporter; nothing in the library
prints.

Events (small frozen dataclasses): ``Message`` (a line with a ``logging`` level: INFO is progress, WARNING and
above something the user should see, with the Python warning ``category`` a notebook user gets it as),
``StudyStarted`` / ``StudyFinished`` (one study run, and what ended it), ``TrialFinished`` (a trial ended, or
another worker took it over), and a training's ``TrainingStarted``, ``Batch`` (within an epoch, at most every
``BATCH_EVERY`` seconds) and ``Epoch`` (an epoch finished). ``report(event)`` sends one to the current
reporter: any callable taking an event, installed with ``reporting(reporter)`` (a context manager; nests, and the
reporter before comes back after).

With no reporter installed the events go to Python's ``logging`` under the logger ``cifar_tune`` (DEBUG for
epochs, INFO for progress, WARNING for warnings), following Optuna's conventions (``optuna.logging``: one library
root logger, ``get_logger``, ``set_verbosity``, ``enable_default_handler``) with one difference: no handler is
attached by default (a ``logging.NullHandler``, the standard library's advice for libraries), so the library is
silent unless its caller configures logging or installs a reporter. The command line installs its console
reporter (``cifar_tune.cli.console``); the Python API installs ``TqdmReporter`` (progress bars, and warnings as
Python warnings) when its caller installed none (see ``cifar_tune.api``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from cifar_tune.errors import CifarTuneWarning

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
    """A line of progress (``logging.INFO``) or a warning (``logging.WARNING`` and above), said as is.
    ``category``: the Python warning class the Python API's reporter raises a warning as (default
    ``errors.CifarTuneWarning``)."""

    text: str
    level: int = logging.INFO
    category: type[Warning] | None = None

    def __str__(self) -> str:
        return self.text


@dataclass(frozen=True)
class StudyStarted:
    """A study run begins: ``settings`` (``OptimizeSettings``), the ``optuna.Study``, whether this run ``created``
    it, the study-wide ``total`` (None: ``settings.n_trials`` new trials), ``per_process`` (trials per worker
    process when workers run them), ``planned``: the trials this run expects to run (None: unknown), and ``gpus``:
    the GPUs its workers are placed on (``runtime.devices``; empty: none, or one process)."""

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
class TrainingStarted:
    """A training of ``tag`` (an architecture, or ``trial N``) begins: ``epochs`` in all, ``steps`` batches per
    epoch (None where the engine does not say: the fast engine), from epoch ``initial_epoch`` (0-based; a resumed
    trial starts later)."""

    tag: str
    epochs: int
    steps: int | None = None
    initial_epoch: int = 0
    level = logging.DEBUG

    def __str__(self) -> str:
        steps = f", {self.steps} batches each" if self.steps else ""
        return f"[{self.tag}] training: {self.epochs} epochs{steps}"


@dataclass(frozen=True)
class Batch:
    """Within epoch ``epoch`` (0-based) of ``epochs`` of ``tag``'s training: ``step`` batches done of ``steps`` (None:
    unknown), ``seconds`` since the epoch began. Sent at most every ``BATCH_EVERY`` seconds (stock Keras fit; the
    fast engine runs an epoch as one compiled loop and sends none)."""

    tag: str
    epoch: int
    epochs: int
    step: int
    steps: int | None = None
    seconds: float = 0.0
    level = logging.DEBUG

    def __str__(self) -> str:
        of = f"/{self.steps}" if self.steps else ""
        return f"[{self.tag}] epoch {self.epoch + 1}/{self.epochs} batch {self.step}{of} ({self.seconds:.1f}s)"


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


# Why a study run ended (``StudyFinished.ended``): the new trials it was given ran, the study holds its study-wide
# total, the timeout passed (no trial starts after it; the one running finishes).
ENDED_TRIALS, ENDED_TOTAL, ENDED_TIMEOUT = "n_trials", "total_trials", "timeout"
# A trial runner (never a study run: its supervisor goes on in a fresh process) passed its memory ceiling.
ENDED_MEMORY = "worker_memory"


@dataclass(frozen=True)
class StudyFinished:
    """A study run ended after ``seconds``: ``settings``, the ``optuna.Study`` read back (every trial in it), and
    ``ended``: which limit ended it (``ENDED_TRIALS``, ``ENDED_TOTAL``, ``ENDED_TIMEOUT``; None: not known).
    (A run that Ctrl-C, SIGTERM or its stopped workers ended raises instead, and the caller says so.)"""

    settings: Any
    study: Any
    seconds: float
    ended: str | None = None
    level = logging.INFO

    def __str__(self) -> str:
        why = f" ({self.ended} reached)" if self.ended else ""
        return f"study {self.study.study_name}: done in {self.seconds:.0f} s{why}, {len(self.study.trials)} trials"


Event = Message | StudyStarted | TrialFinished | TrainingStarted | Batch | Epoch | StudyFinished
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


def warn(text: str, category: type[Warning] | None = None) -> None:
    """``report(Message(text, logging.WARNING, category))``: something the user should see (the CLI: on standard
    error; the Python API: a Python warning of ``category``, default ``errors.CifarTuneWarning``)."""
    report(Message(text, logging.WARNING, category))


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


BATCH_EVERY = 0.5  # seconds between two Batch events of a training (a bar or a live line moves; no flood)


def epoch_callback(tag: str, epochs: int):
    """A Keras callback reporting ``tag``'s training: ``TrainingStarted`` when ``fit`` begins, ``Batch`` within an
    epoch (at most every ``BATCH_EVERY`` seconds), ``Epoch`` at each epoch's end with its logs and seconds (Keras
    loads on the call)."""
    import keras

    class _Reporting(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.epoch, self.began, self.last = 0, time.perf_counter(), 0.0

        def _steps(self) -> int | None:
            steps = (getattr(self, "params", None) or {}).get("steps")
            return int(steps) if steps else None

        def on_train_begin(self, logs=None):
            self.started = False

        def on_epoch_begin(self, epoch, logs=None):
            if not getattr(self, "started", False):  # the first epoch of this fit (a resumed one: not epoch 0)
                self.started = True
                report(TrainingStarted(tag, epochs, self._steps(), epoch))
            self.epoch, self.began = epoch, time.perf_counter()
            self.last = self.began

        def on_train_batch_end(self, batch, logs=None):  # logs unread: no device sync for the bar
            now = time.perf_counter()
            if now - self.last >= BATCH_EVERY:
                self.last = now
                report(Batch(tag, self.epoch, epochs, batch + 1, self._steps(), now - self.began))

        def on_epoch_end(self, epoch, logs=None):
            report(Epoch(tag, epoch, epochs, dict(logs or {}), time.perf_counter() - self.began))

    return _Reporting()


def _logging_configured() -> bool:
    """Whether a handler other than our NullHandler would see the library's records."""
    return any(not isinstance(h, logging.NullHandler) for lg in (_root, logging.getLogger()) for h in lg.handlers)


_PACKAGE = os.path.dirname(os.path.abspath(__file__)) + os.sep


def _callers_stacklevel() -> int:
    """The ``stacklevel`` of ``warnings.warn`` (called by the function calling this one) that names the frame which
    called into the package (a notebook cell, a script's line): Python 3.12's ``skip_file_prefixes``, which 3.11,
    the oldest Python supported, lacks. 1 (that function) when no frame outside the package called in."""
    frame, level, outermost = sys._getframe(1), 1, None  # level 1: the caller of warnings.warn
    while frame is not None:
        if frame.f_code.co_filename.startswith(_PACKAGE):
            outermost = level
        frame, level = frame.f_back, level + 1
    return outermost + 1 if outermost is not None and outermost + 1 < level else 1


class TqdmReporter:
    """The Python API's reporter: progress bars from ``tqdm.auto`` (a widget in Jupyter with ipywidgets, the
    ``notebook`` extra; text on standard error elsewhere), one for a study's trials and one for the training
    under way, and warnings as Python warnings; every event also goes to ``log_event``.

    A training's bar starts when the training does (``TrainingStarted``), counts batches (or epochs where the
    engine reports no batches), moves within an epoch (``Batch``) and shows the epoch and the last epoch's logs,
    so its elapsed time and rate are true from the first batch. Every event at WARNING or above (a ``Message``,
    a trial another worker took over) becomes ``warnings.warn(text, category)`` (its ``category``, default
    ``errors.CifarTuneWarning``), attributed to the line that called the API: the Python convention for what the
    caller can act on (a notebook shows it, and ``warnings.filterwarnings`` or ``pytest.warns`` select it by
    class), where a log record would be invisible unless the caller configured logging."""

    def __init__(self):
        self.trials = self.bar = None
        self.steps: int | None = None

    def __call__(self, event: Event) -> None:
        log_event(event)
        if event.level >= logging.WARNING:
            self._warn(event)
        elif isinstance(event, StudyStarted):
            self._close_bars()
            self.trials = self._tqdm(total=event.planned, desc=event.study.study_name, unit="trial")
        elif isinstance(event, TrainingStarted):
            self._close_training()
            self.steps = event.steps
            per = self.steps or 1
            self.bar = self._tqdm(total=event.epochs * per, initial=event.initial_epoch * per, leave=False,
                                  unit="batch" if self.steps else "epoch",
                                  desc=f"{event.tag} epoch {event.initial_epoch + 1}/{event.epochs}")
        elif isinstance(event, Batch) and self.bar is not None and self.steps:
            self._move_to(event.epoch * self.steps + event.step, event)
        elif isinstance(event, Epoch) and self.bar is not None:
            self._move_to((event.epoch + 1) * (self.steps or 1), event)
            self.bar.set_postfix({k: f"{float(v):.4f}" for k, v in event.logs.items()}, refresh=True)
        elif isinstance(event, TrialFinished) and not event.taken_over:
            self._close_training()
            if self.trials is not None:
                self.trials.update(1)
                value = "" if event.trial.value is None else f" {event.trial.value:.4f}"
                self.trials.set_postfix(last=f"#{event.trial.number} {event.trial.state.name.lower()}{value}")
        elif isinstance(event, StudyFinished):
            self._close_bars()

    @staticmethod
    def _tqdm(**kwargs):
        from tqdm.auto import tqdm

        return tqdm(**kwargs)

    def _move_to(self, position: int, event: Batch | Epoch) -> None:
        epoch = min(event.epoch + (1 if isinstance(event, Epoch) else 0), event.epochs - 1)
        self.bar.set_description_str(f"{event.tag} epoch {epoch + 1}/{event.epochs}", refresh=False)
        self.bar.update(max(0, position - self.bar.n))

    def _warn(self, event: Event) -> None:
        from tqdm.auto import tqdm

        category = getattr(event, "category", None) or CifarTuneWarning
        with tqdm.external_write_mode():  # the text bars (standard error or output) step aside for the warning
            warnings.warn(str(event), category, stacklevel=_callers_stacklevel())

    def _close_training(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def _close_bars(self) -> None:
        self._close_training()
        if self.trials is not None:
            self.trials.close()
            self.trials = None

    def close(self) -> None:
        """Close the open bars (``reporting`` calls it when the call ends, an interrupted one too)."""
        self._close_bars()
