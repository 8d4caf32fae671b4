"""Optuna's RDB storage: URLs (masked when printed), opening with heartbeats and retry-once of dead workers'
trials, refusing damaged or locked files, and every storage error as one line. The per-study lock that workers
take for the few steps they must not take at once is in ``locks.py``."""

from __future__ import annotations

import contextlib
import math
import os
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import optuna

from cifar_tune import progress
from cifar_tune.choices import SQLITE_TIMEOUT_ENV
from cifar_tune.errors import UserError
from cifar_tune.storage.urls import (  # noqa: F401  (check_url, mask_url, normalize_url, read_only: used as database.*)
    check_url,
    engine_url,
    mask_url,
    normalize_url,
    read_only,
    scrub,
    sqlite_mode,
    sqlite_path,
)

# Heartbeats and the retry callback are marked experimental; they are the documented way to do what we need,
# so their warnings would only be noise in every command's output.
warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)

DEFAULT_HEARTBEAT_INTERVAL = 30  # seconds; trials take minutes, so a beat every 30 s costs nothing
DEFAULT_GRACE_PERIOD = 120  # four missed beats: a trial silent this long belongs to a dead worker
SQLITE_TIMEOUT = 60  # seconds a SQLite writer waits for another process's lock before failing
HEARTBEAT_GRACE_BEATS = 3  # a grace period spans at least this many heartbeat intervals
PG_CONNECT_TIMEOUT = 10  # seconds: an unreachable PostgreSQL host fails fast instead of hanging
ADVISORY_KEY = 0x63696661  # "cifa": our PostgreSQL advisory locks' namespace (locks.py; 0: schema creation)
OPTUNA_TABLES = {"version_info", "studies", "trials"}  # in every Optuna schema since 1.0


def sqlite_timeout() -> float:
    """Seconds a SQLite connection waits for another process's lock: $CIFAR_TUNE_SQLITE_TIMEOUT (0.1 .. 3600) or 60.
    Raises ``UserError`` for any other value."""
    raw = os.environ.get(SQLITE_TIMEOUT_ENV)
    if not raw:
        return SQLITE_TIMEOUT
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not 0.1 <= value <= 3600:  # NaN fails too
        raise UserError(f"${SQLITE_TIMEOUT_ENV}={raw!r}: expected seconds in 0.1 .. 3600")
    return value


def _engine_kwargs(url: str, pooled: bool = True) -> dict:
    if url.startswith("sqlite"):
        # Several local processes may write at once: wait for the lock instead of failing at once.
        return {"connect_args": {"timeout": sqlite_timeout()}}
    if not pooled:  # a reader (studies, report, compare's look-ups): no idle connections held on the server
        from sqlalchemy.pool import NullPool

        return {"poolclass": NullPool, "connect_args": {"connect_timeout": PG_CONNECT_TIMEOUT,
                                                        "application_name": "cifar-tune"}}
    kwargs: dict = {
        # One worker runs one trial at a time: its main session, the heartbeat thread and the study lock need
        # three connections at most; a few spare for the dashboard's writes. Pre-ping survives server restarts
        # and connections a firewall dropped while a long trial ran.
        "pool_pre_ping": True, "pool_size": 3, "max_overflow": 2, "pool_recycle": 3600}
    if url.startswith("postgresql"):
        kwargs["connect_args"] = {"connect_timeout": PG_CONNECT_TIMEOUT, "application_name": "cifar-tune"}
    return kwargs


class _RetryDeadWorkerTrial(optuna.storages.RetryHeartbeatStaleTrialCallback):
    """Optuna's retry of a heartbeat-stale trial (same parameters, once), made visible.

    The retry carries Optuna's system attrs ``failed_trial``/``retry_history`` and the user attrs ``retry_attrs``
    gives for the dead trial (the tuning loop passes ``studies.records.TrialRecord.retry_attrs``: its baseline flag
    and ``retry_of``, which the dashboard shows; none: no user attrs); it does not inherit the dead trial's partial
    curves or results. The storage layer knows no record keys: they are the records' (a layer above).
    """

    def __init__(self, retry_attrs: Callable[[optuna.trial.FrozenTrial], dict] | None = None, **kwargs):
        super().__init__(**kwargs)
        self._retry_attrs = retry_attrs

    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        trial.user_attrs = self._retry_attrs(trial) if self._retry_attrs is not None else {}
        # Pruner bookkeeping (Hyperband's completed rungs) and artifacts belong to the dead run, not the retry.
        trial.system_attrs = {k: v for k, v in trial.system_attrs.items()
                              if not k.startswith(("completed_rung_", "artifacts:"))}
        before = len(study.get_trials(deepcopy=False))
        super().__call__(study, trial)
        added = study.get_trials(deepcopy=False)[before:]
        retry = next((t for t in added if t.system_attrs.get("failed_trial") == trial.number), None)
        then = f"retried as trial {retry.number}" if retry else "not retried again (it was a retry already)"
        progress.info(f"trial {trial.number:>3} fail     its worker stopped (no heartbeat); {then}")


def heartbeat_timing(interval: int | None, grace: int | None) -> tuple[int, int]:
    """(heartbeat interval, grace period) in seconds: the given values, else the defaults (30 s; 120 s and at
    least 4 intervals). A study keeps the pair for life (tuning.study.RESUME_KEEPS): every worker must judge
    staleness alike, or one with a shorter grace period would take live workers' trials for dead."""
    interval = interval or DEFAULT_HEARTBEAT_INTERVAL
    return interval, grace or max(DEFAULT_GRACE_PERIOD, 4 * interval)


def _heartbeat_kwargs(interval: int | None, grace: int | None, retry_attrs=None) -> dict:
    """Heartbeat settings, and retry-once of a dead worker's trial (Optuna's callback, renamed in 4.9).

    The heartbeat is a daemon thread of the worker process that writes the running trial's beat every
    ``interval`` seconds through the storage's connection pool (``tuning.loop._heartbeat_thread``). On a busy machine
    (training holds the CPUs, the database is slow) a live worker's beat comes late, so the grace period must span
    at least ``HEARTBEAT_GRACE_BEATS`` intervals: one late beat must never make a live trial look dead.
    """
    interval, grace = heartbeat_timing(interval, grace)
    if grace < HEARTBEAT_GRACE_BEATS * interval:
        raise UserError(f"--grace-period ({grace} s) must be at least {HEARTBEAT_GRACE_BEATS} x --heartbeat-interval "
                        f"({HEARTBEAT_GRACE_BEATS * interval} s): a live worker's beat may come late on a busy "
                        "machine, and its trial must not look dead")
    return {"heartbeat_interval": interval, "grace_period": grace,
            "heartbeat_stale_trial_callback": _RetryDeadWorkerTrial(retry_attrs, max_retry=1)}


def _check_writable_sqlite(url: str, path: Path) -> None:
    """Create the SQLite file's folder; refuse a file or folder SQLite could not write (it needs the folder for
    its journal). ``os.access`` sees what permissions, read-only mounts and immutable files allow, even to root."""
    folder = path.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise UserError(f"storage {mask_url(url)}: {folder} is not a folder") from None
    except OSError as e:
        raise UserError(f"storage {mask_url(url)}: cannot create the folder {folder}: {e.strerror}") from None
    for p in (path, folder):
        if p.exists() and not os.access(p, os.W_OK):
            raise UserError(f"storage {mask_url(url)}: {p} is read-only; optimize needs to write to it")


def check_writable(url: str, writes: str = "optimize") -> None:
    """Refuse (``UserError``) to write through a storage already opened: a read-only URL, a SQLite file or folder
    that cannot be written (what ``open_storage`` checks besides what opening checked)."""
    check_url(url, writes=writes)
    path = sqlite_path(url)
    if path is not None:
        _check_writable_sqlite(url, path)


def open_storage(url: str, *, heartbeat_interval: int | None = None, grace_period: int | None = None,
                 with_heartbeat: bool = True, writes: str = "optimize",
                 retry_attrs: Callable[[optuna.trial.FrozenTrial], dict] | None = None) -> optuna.storages.RDBStorage:
    """Open (and for SQLite create) the storage for writing; any trial run through it beats a heartbeat, and a
    dead worker's trial is retried once with the user attrs ``retry_attrs(dead trial)`` (default: none).
    Refused before anything is written to it (``UserError``, naming ``writes``, the command): a read-only URL, a
    damaged or locked SQLite file, a database that holds other tables but not Optuna's (another application's),
    and one that lacks some of Optuna's tables (``check_schema``)."""
    check_url(url, writes=writes)
    kwargs = _heartbeat_kwargs(heartbeat_interval, grace_period, retry_attrs) if with_heartbeat else {}
    path = sqlite_path(url)
    if path is not None:
        if sqlite_mode(url) == "rw" and not path.exists():
            raise UserError(f"no storage at {mask_url(url)}: mode=rw opens an existing file only (drop it to create "
                            "one)")
        _check_writable_sqlite(url, path)
        if path.exists():
            check_sqlite_file(url, path)
    settled = True  # Optuna's tables all there (or none yet: a new storage)
    if path is None or path.exists():
        settled = check_schema(url, _table_names(url), writes)  # another application's database ends here
    with _creation_lock(url, path):
        if not settled:  # Optuna's tables in part: another command may have been creating them under this lock
            check_schema(url, _table_names(url), writes, settled=True)
        return _open(url, kwargs)


def check_sqlite_file(url: str, path: Path) -> None:
    """Refuse a damaged SQLite file (SQLite's quick_check reads every page; it writes nothing, but SQLite rolls
    back a crashed writer's journal first, as any reader must); a file another process holds locked is waited
    for at most :func:`sqlite_timeout` seconds."""
    import sqlite3
    from urllib.parse import quote

    try:
        connect = (dict(database=f"file:{quote(os.path.abspath(path))}?mode=ro", uri=True) if read_only(url)
                   else dict(database=path))  # a read-only URL is never opened for writing, even to check it
        with contextlib.closing(sqlite3.connect(**connect, timeout=sqlite_timeout())) as con:
            problems = [row[0] for row in con.execute("PRAGMA quick_check(3)")]
    except sqlite3.Error as e:
        raise storage_error(url, e) from None
    if problems != ["ok"]:
        raise storage_error(url, sqlite3.DatabaseError(f"database disk image is malformed ({problems[0]})"))


@contextlib.contextmanager
def _creation_lock(url: str, path: Path | None):
    """Held while RDBStorage's constructor runs: commands started together on a new storage would all create
    Optuna's schema, and all but one fail on its version row (Optuna takes no lock of its own). A lock file
    beside SQLite (the one StudyLock uses; neither is held long), a PostgreSQL advisory lock on a server."""
    if path is not None:
        try:
            import fcntl
        except ImportError:  # pragma: no cover - not on POSIX: the retry in _open is all there is
            yield
            return
        with open(f"{path}.lock", "a+") as f:
            fcntl.flock(f, fcntl.LOCK_EX)  # released when the file closes
            yield
        return
    real = normalize_url(url)
    if not real.startswith("postgresql"):
        yield
        return
    from sqlalchemy import create_engine, text
    from sqlalchemy.exc import SQLAlchemyError

    engine = create_engine(real, **_engine_kwargs(real, pooled=False))
    try:
        conn = engine.connect()
        conn.execute(text("SELECT pg_advisory_lock(:k, 0)"), {"k": ADVISORY_KEY})  # study ids start at 1
    except SQLAlchemyError as e:
        engine.dispose()
        raise _cannot_open(url, e) from None
    try:
        yield
    finally:
        conn.close()  # no pool: the server's session ends, and its advisory lock with it
        engine.dispose()


def _open(url: str, kwargs: dict, pooled: bool = True) -> optuna.storages.RDBStorage:
    real = engine_url(url)
    for attempt in range(6):
        try:
            with _quiet_sqlalchemy():
                return optuna.storages.RDBStorage(real, engine_kwargs=_engine_kwargs(real, pooled), **kwargs)
        except Exception as e:  # noqa: BLE001 - drivers and Optuna raise many types: each becomes one line
            if attempt < 5 and _creation_race(e):
                # Another program (cifar-tune commands take _creation_lock) created Optuna's tables at the same
                # moment. They exist now: open again.
                time.sleep(0.2 + 0.3 * attempt)
                continue
            raise _cannot_open(url, e) from None
    raise AssertionError("unreachable")


def _creation_race(e: BaseException) -> bool:
    """Whether ``e`` is two creators of one schema colliding: a unique row (the version) or a table twice.
    Optuna wraps some driver errors (StorageInternalError "... during the commit"): look at the whole chain."""
    from sqlalchemy.exc import IntegrityError

    return any(isinstance(x, IntegrityError) or "already exists" in str(x) for x in _causes(e))


def _cannot_open(url: str, e: BaseException) -> UserError:
    return storage_error(url, e, "cannot open storage")


# What a database's message means for the user ({timeout}: sqlite_timeout(); FILE: the SQLite file).
_HINTS = (
    ("malformed", "the file is damaged; nothing was written: restore a copy, or salvage the rest with "
                  "`sqlite3 FILE .recover`"),
    ("file is not a database", "the file is not a SQLite database, or is damaged; nothing was written"),
    ("database is locked", "another process has held it locked for more than {timeout:g} s, e.g. an open sqlite3 "
                           "shell or a stuck program; ${env} sets how long to wait"),
    ("no such table", "was the database file deleted or replaced while the command ran?"),
    ("readonly database", "the file was deleted, moved or made read-only while the command ran"),
    ("disk i/o error", "the file or its disk failed: deleted, full or unmounted?"),
)


def storage_error(url: str, e: BaseException, doing: str = "storage") -> UserError:
    """One line for a storage failure: the storage (for SQLite, its file), the database's own message and what
    it means, any password masked."""
    lines = [ln.strip() for ln in db_message(e).splitlines() if ln.strip()]
    reason = " ".join(lines[:2])[:300] if lines else type(e).__name__
    hint = next((h for key, h in _HINTS if key in reason.lower()), "")
    if hint:
        path = sqlite_path(url) if url.startswith("sqlite") else None
        hint = " (" + hint.format(timeout=sqlite_timeout(), env=SQLITE_TIMEOUT_ENV).replace("FILE", str(path)) + ")"
    return UserError(f"{doing} {mask_url(url)}: {scrub(reason, url)}{hint}")


def db_message(e: BaseException) -> str:
    """The driver's message in ``e``'s chain of causes (SQLAlchemy and Optuna wrap it), else ``e``'s own."""
    for x in _causes(e):
        orig = getattr(x, "orig", None)
        if orig is not None:
            return str(orig)
        if type(x).__module__.split(".")[0] in ("sqlite3", "psycopg", "psycopg2"):
            return str(x)
    return str(e)


def storage_failure(url: str, e: BaseException) -> UserError | None:
    """``e`` as one line if a database error caused it (SQLAlchemy's, a driver's or Optuna's storage error,
    also behind Optuna's ``AssertionError: Should not reach`` when a trial could not be told), else None."""
    import sqlite3

    from sqlalchemy.exc import SQLAlchemyError

    kinds = (SQLAlchemyError, sqlite3.Error, optuna.exceptions.StorageInternalError)
    if any(isinstance(x, ValueError) and _raised_reading_storage(x) for x in _causes(e)):
        # Optuna stores attributes and distributions as JSON: SQLite's page check cannot see a damaged record
        return UserError(f"storage {mask_url(url)}: a stored record is not valid JSON ({scrub(str(e), url)[:120]}; "
                         "the file is damaged or was written by another program; nothing was written)")
    if not any(isinstance(x, kinds) or type(x).__module__.startswith("psycopg") for x in _causes(e)):
        return None
    return storage_error(url, e)


def _raised_reading_storage(e: BaseException) -> bool:
    """Whether ``e`` (a JSON decoding error, say) was raised inside Optuna's storage code."""
    tb = e.__traceback__
    while tb is not None:
        if f"optuna{os.sep}storages" in tb.tb_frame.f_code.co_filename:
            return True
        tb = tb.tb_next
    return False


def _causes(e: BaseException) -> list[BaseException]:
    out: list[BaseException] = []
    while e is not None and e not in out and len(out) < 8:
        out.append(e)
        e = e.__cause__ or e.__context__
    return out


@contextlib.contextmanager
def _quiet_sqlalchemy():
    """Optuna logs a failed connection at ERROR with the driver's message; our one-line error replaces it."""
    import logging

    logger = logging.getLogger("optuna.storages._rdb.storage")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)


def _table_names(url: str) -> set[str]:
    """The tables of the storage's database (its default schema), read without writing anything."""
    from sqlalchemy import create_engine, inspect
    from sqlalchemy.exc import SQLAlchemyError

    real = engine_url(url)
    engine = create_engine(real, **_engine_kwargs(real, pooled=False))
    try:
        return set(inspect(engine).get_table_names())
    except SQLAlchemyError as e:
        raise _cannot_open(url, e) from None
    finally:
        engine.dispose()


def check_schema(url: str, tables: set[str], writes: str | None = None, settled: bool = False) -> bool:
    """Refuse a database that is not an Optuna storage before anything touches it (RDBStorage's constructor would
    create the tables it lacks: in another application's database, or in a damaged or partly copied one).

    ``tables``: the database's (``_table_names``). For a reader (``writes`` None) a database without Optuna's
    tables holds no studies. For a writer (``writes``: the command) an empty database is a new storage, and one
    with tables but not Optuna's is another application's. Either way a database with some of Optuna's tables
    but not all (``alembic_version`` too: RDBStorage stamps a missing one) is damaged or partly copied, refused
    once ``settled``; True when the schema is whole or empty, False when a writer should look again under the
    creation lock (another command may be creating it). Raises ``UserError``."""
    from optuna.storages._rdb.models import BaseModel  # Optuna's schema: it has no public list of its tables

    optuna_tables = {*BaseModel.metadata.tables, "alembic_version"}
    if writes and not tables:
        return True
    if not OPTUNA_TABLES <= tables and (not writes or tables - optuna_tables):
        if writes:
            theirs = sorted(tables - optuna_tables)
            raise UserError(f"storage {mask_url(url)} is not an Optuna storage: it holds another application's "
                            f"tables ({', '.join(theirs[:5])}{', ...' if len(theirs) > 5 else ''}) and not "
                            f"Optuna's; {writes} would add Optuna's tables to it: give another --storage "
                            "(nothing was written)")
        raise UserError(f"storage {mask_url(url)} holds no Optuna studies (it lacks Optuna's tables; run "
                        "`cifar-tune optimize` on it first, or check --storage)")
    missing = sorted(optuna_tables - tables)
    if not missing:
        return True
    if writes and not settled:
        return False
    raise UserError(f"storage {mask_url(url)} lacks Optuna's table{'s' if len(missing) > 1 else ''} "
                    f"{', '.join(missing)}: a damaged or partly copied database, or one of an older Optuna "
                    "(`optuna storage upgrade` upgrades it); nothing was written")


def storage_for_reading(url: str, writes: str | None = None, *, tuning: bool = False,
                        heartbeat_interval: int | None = None, grace_period: int | None = None,
                        retry_attrs: Callable[[optuna.trial.FrozenTrial], dict] | None = None,
                        ) -> optuna.storages.RDBStorage:
    """Open an existing storage, writing nothing: no SQLite file that is not there, no damaged SQLite file, and
    no Optuna table in a database that lacks one (``check_schema``). A read-only SQLite URL (``?mode=ro``) is
    opened read-only. ``writes``: the command that will write through it later (``compare`` stores its results
    in the studies), which a read-only URL refuses. ``tuning``: pooled, with ``open_storage``'s heartbeat and
    retries, for ``optimize`` to run trials through later (``handle.Storage``). Raises ``UserError``."""
    check_url(url, writes=writes)
    path = sqlite_path(url)
    if path is not None and not path.exists():
        raise UserError(f"no storage at {mask_url(url)} (run `cifar-tune optimize` first, or pass --storage)")
    if path is not None:
        check_sqlite_file(url, path)
    check_schema(url, _table_names(url))
    if tuning:
        return _open(url, _heartbeat_kwargs(heartbeat_interval, grace_period, retry_attrs))
    return _open(url, {}, pooled=False)
