"""One storage per command: ``resolve(url)`` makes the ``Storage`` a command or API call passes down (the default
URL applied, the URL masked for printing), and the Optuna storage behind it is opened at its first use and kept,
so that a command opens its storage once per process. Nothing is checked or opened when it is made: each command
keeps the order of its refusals (its arguments, its output paths, its data, then the storage). Worker processes
and Ray tasks receive the URL (plain data) and resolve their own."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property

import optuna

from cifar_tune.errors import UserError
from cifar_tune.storage import artifacts, database
from cifar_tune.storage.urls import mask_url, url_or_default


@dataclass(frozen=True)
class Tuning:
    """How ``optimize`` opens its storage: heartbeats every ``heartbeat_interval`` seconds, a trial silent for
    ``grace_period`` seconds failed and retried once with the user attrs ``retry_attrs(dead trial)`` (None: the
    defaults of ``database.heartbeat``; no user attrs)."""

    heartbeat_interval: int | None = None
    grace_period: int | None = None
    retry_attrs: Callable[[optuna.trial.FrozenTrial], dict] | None = None


class Storage:
    """A command's storage: ``url`` (as given, the default applied; what settings and workers carry), ``shown``
    (the URL with any password masked, to print), the Optuna storage (``reading``, ``writing``: opened once, at
    the first of them) and the artifact store (``artifacts``). The lock of one of its studies is the study's
    (``locks.study_lock(study)``: keyed by the study's id in the opened storage).

    ``tuning``: the storage is ``optimize``'s (``cifar-tune run`` and ``optimize``): opened with heartbeats and
    retries (``Tuning``) and pooled connections whichever call opens it. Without it, it is opened as a reader
    (studies, report, compare): no idle connections held on a server."""

    def __init__(self, url: str, tuning: Tuning | None = None):
        self.url = url
        self.tuning = tuning
        self._opened: optuna.storages.RDBStorage | None = None

    def __repr__(self) -> str:
        return f"Storage({self.shown!r})"

    @cached_property
    def shown(self) -> str:
        return mask_url(self.url)

    def _tuning_kwargs(self) -> dict:
        t = self.tuning
        return {} if t is None else {"heartbeat_interval": t.heartbeat_interval, "grace_period": t.grace_period,
                                     "retry_attrs": t.retry_attrs}

    def reading(self, writes: str | None = None) -> optuna.storages.RDBStorage:
        """The existing storage, opened at the first call (``database.storage_for_reading``: no file or table is
        created, a damaged or foreign database refused) and the same object after. ``writes``: the command that
        writes through it later (``compare``), which a read-only URL refuses. Raises ``UserError``."""
        if self._opened is None:
            self._opened = database.storage_for_reading(self.url, writes, tuning=self.tuning is not None,
                                                        **self._tuning_kwargs())
        elif writes:
            database.check_url(self.url, writes=writes)
        return self._opened

    def writing(self, writes: str = "optimize") -> optuna.storages.RDBStorage:
        """The storage for ``writes`` (the command), created when missing (``database.open_storage``), opened at
        the first call and the same object after (a storage ``reading`` opened is checked as writable then).
        Raises ``UserError`` before anything is written."""
        if self._opened is None:
            self._opened = database.open_storage(self.url, writes=writes, with_heartbeat=self.tuning is not None,
                                                 **self._tuning_kwargs())
        else:
            database.check_writable(self.url, writes)
        return self._opened

    @cached_property
    def artifacts(self) -> artifacts.WholeFileArtifactStore | None:
        """The artifact store beside the studies (``artifacts.artifact_store``: None, after one warning, when its
        folder cannot be used)."""
        return artifacts.artifact_store()

    def failure(self, e: BaseException) -> UserError | None:
        """``e`` as one line when a database error caused it (``database.storage_failure``), else None."""
        return database.storage_failure(self.url, e)


def resolve(storage: Storage | str | None = None, tuning: Tuning | None = None) -> Storage:
    """The ``Storage`` of ``storage``: a URL (None: the default, ``sqlite:///storage/cifar_tune.db``; a SQLite
    path may start with ``~``), or a ``Storage`` already resolved (returned as it is: a command resolves once and
    passes it down). ``tuning``: open it as ``optimize``'s (``Tuning``). Checks and opens nothing."""
    if isinstance(storage, Storage):
        return storage
    return Storage(url_or_default(storage), tuning)
