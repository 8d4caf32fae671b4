"""Every exception class of the package, and the one-line form the CLI prints.

The user's (``UserError`` and its subclasses): the CLI prints each as one line and exits with its ``status``
(2; ``WorkersStopped``: the workers' status); the Python API raises them as they are. A trial's outcome inside
the tuning loop (``TrialFailed``, ``Diverged``, ``TakenOver``: defined on first use, see ``__getattr__``): the
study records it and goes on. A stop (``Terminated``: SIGTERM, a KeyboardInterrupt like Ctrl-C): the command
stops at the next step, with ``INTERRUPTED_STATUS`` or ``TERMINATED_STATUS``.
"""

from __future__ import annotations

INTERRUPTED_STATUS = 130  # the exit status after Ctrl-C (SIGINT), as a shell reports a process it killed
TERMINATED_STATUS = 143  # after SIGTERM


class UserError(Exception):
    """A problem with the user's input: the CLI prints it as one line and exits with ``status`` (2)."""

    status = 2


class DataError(UserError):
    """The data source is missing, unreadable or not CIFAR-10."""


class InvalidValue(UserError):
    """A value outside what it may be; ``rule`` says what it may be and what was given, without its name."""

    def __init__(self, label: str, rule: str):
        super().__init__(f"{label} {rule}")
        self.rule = rule


class SpaceError(UserError):
    """A space file is malformed; the message names the file and the key."""


class WorkersStopped(UserError):
    """An optimize run's worker processes stopped before its trials were done (a worker's user error, or workers
    that kept ending without a trial); each worker said why on standard error. ``status``: the exit status the
    ``optimize`` command ends with (2 for a user error); ``arch``: the study's architecture."""

    def __init__(self, arch: str, status: int):
        super().__init__(f"the {arch} study stopped: its worker processes ended with exit status {status} (each "
                         "said why on standard error)")
        self.arch, self.status = arch, status


class ClusterError(UserError):
    """A Ray cluster (``--ray``) that cannot run the study: nothing answers at its address within the connect
    timeout, its workers cannot run cifar-tune (not importable there, an error that would repeat), or they kept
    being lost. One line naming the address or the cause; ``status``: the exit status (2, 1 for lost workers)."""

    def __init__(self, message: str, status: int = 2):
        super().__init__(message)
        self.status = status


class CifarTuneWarning(UserWarning):
    """Something the user should see (what the CLI prints on standard error): the Python API's progress reporter
    (``progress.TqdmReporter``) issues every warning-level event as a Python warning of this class or a
    subclass, so a notebook shows it and ``warnings.filterwarnings`` / ``pytest.warns`` can select it."""


class NotLearnedWarning(CifarTuneWarning):
    """A study's best trial learned nothing worth crowning (``catalog.not_learned``: near chance, or a lower
    accuracy than the baseline): its budget (epochs, training images) was likely too small."""


class TrialFailed(Exception):
    """This trial failed (the reason is stored with it); the study goes on. The tuning loop catches only this:
    anything else, a ``UserError`` above all, stops the study instead of failing trial after trial."""


class Diverged(Exception):
    """Training produced a non-finite loss, an expected outcome of a search: the trial fails with this one-line
    reason (``diverged at epoch k: loss nan``) and the study goes on."""

    def __init__(self, epoch: int, name: str, value: float):
        super().__init__(f"diverged at epoch {epoch}: {name} {value}")


class CheckpointMismatch(ValueError):
    """A checkpoint (``engines.Resume``) that the run cannot continue from: its arrays do not fit the model and
    optimizer the spec builds (written by an older layout, or for another model), or its epoch lies outside the
    run. Raised by the engines before anything trained; the tuning loop's objective warns and trains the trial
    from epoch 0 instead (a side store never costs a trial)."""


class Terminated(KeyboardInterrupt):
    """SIGTERM (a scheduler, ``docker stop``, a supervisor): handled like Ctrl-C, so the running trial is failed
    with its reason and the process exits without a traceback, with ``status`` (143)."""

    status = TERMINATED_STATUS


def __getattr__(name: str):
    """``TakenOver``, defined on first use (PEP 562, as the package's API names): it subclasses Optuna's error, and
    ``import cifar_tune`` (which imports this module) loads no Optuna."""
    if name != "TakenOver":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import optuna.exceptions

    class TakenOver(optuna.exceptions.UpdateFinishedTrialError):
        """Another worker failed this trial as dead (its heartbeat came late) while it trained: stop training it.
        Optuna's own error for a write to a finished trial, named for what it means here (the tuning loop
        catches the Optuna error, this one included)."""

    TakenOver.__module__ = __name__
    globals()[name] = TakenOver  # one class: found directly from now on
    return TakenOver


def one_line(e: BaseException) -> str:
    """An exception's message cut to one line of at most 300 characters (the CLI prints errors as one line)."""
    lines = str(e).splitlines() or [type(e).__name__]
    return lines[0][:300]
