"""The per-study lock every worker of one study shares: a PostgreSQL advisory lock, or a lock file beside a
SQLite database. Held only for the few steps workers must not take at once."""

from __future__ import annotations

import optuna

from cifar_tune.storage.database import ADVISORY_KEY


def _rdb(storage) -> optuna.storages.RDBStorage | None:
    """The RDBStorage under a study's storage (Optuna wraps it in a cache), if it is one."""
    inner = getattr(storage, "_backend", storage)
    return inner if isinstance(inner, optuna.storages.RDBStorage) else None


class StudyLock:
    """A lock shared by every worker of one study: PostgreSQL advisory lock, or a lock file beside SQLite.

    Held only for moments (deciding whether to start a trial and creating it; rewriting the study's note and
    figures). A worker that dies holding it releases it with its connection or file descriptor. Other
    databases get no lock (workers may then overshoot a study-wide target by a trial or two).
    """

    _KEY = ADVISORY_KEY  # the study id is the second key

    def __init__(self, storage, study_id: int):
        self._rdb = _rdb(storage)
        self._study_id = study_id
        self._conn = None
        self._file = None
        self._held = False

    def acquire(self) -> None:
        if self._held or self._rdb is None:
            return
        from sqlalchemy import text

        engine = self._rdb.engine
        if engine.dialect.name == "postgresql":
            self._conn = engine.connect()
            self._conn.execute(text("SELECT pg_advisory_lock(:k, :s)"), {"k": self._KEY, "s": self._study_id})
            self._conn.commit()
        elif engine.dialect.name == "sqlite" and engine.url.database not in (None, "", ":memory:"):
            try:
                import fcntl
            except ImportError:  # pragma: no cover - not on POSIX
                return
            self._file = open(f"{engine.url.database}.lock", "a+")  # noqa: SIM115 - held until release()
            fcntl.flock(self._file, fcntl.LOCK_EX)
        self._held = True

    def release(self) -> None:
        """Release if held (safe to call twice)."""
        if not self._held:
            return
        self._held = False
        if self._conn is not None:
            from sqlalchemy import text

            conn, self._conn = self._conn, None
            try:
                conn.execute(text("SELECT pg_advisory_unlock(:k, :s)"), {"k": self._KEY, "s": self._study_id})
                conn.commit()
                conn.close()
            except Exception:  # noqa: BLE001 - whatever went wrong, the connection must not go back
                conn.invalidate()  # never return a connection that may still hold the lock to the pool
        if self._file is not None:
            f, self._file = self._file, None
            f.close()  # closing the descriptor releases the flock

    def __enter__(self) -> StudyLock:  # noqa: PYI034 - typing.Self needs Python 3.11
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def study_lock(study: optuna.Study) -> StudyLock:
    """The lock of ``study``.

    The one place that reads Optuna's private ``Study._storage`` / ``_study_id``: Optuna has no public accessor
    for a study's storage object or database id, and the lock is keyed by them.
    """
    return StudyLock(study._storage, study._study_id)
