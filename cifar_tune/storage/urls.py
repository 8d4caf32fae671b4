"""Storage URLs: parsed, checked and refused in one line before anything connects (a missing or asyncio driver,
an in-memory or read-only SQLite database, a SQLite argument that would not act), masked when printed, and turned
into the URL SQLAlchemy opens (``engine_url``). ``database.py`` opens what these allow."""

from __future__ import annotations

import functools
import os
import re
from pathlib import Path

from cifar_tune.choices import DEFAULT_STORAGE, SQLITE_TIMEOUT_ENV
from cifar_tune.errors import UserError


def url_or_default(url: str | None) -> str:
    """The storage URL a command uses: ``url``, or the default storage's (``sqlite:///storage/cifar_tune.db``)
    when None."""
    return DEFAULT_STORAGE if url is None else url


@functools.lru_cache(maxsize=64)
def parse(url: str):
    """SQLAlchemy's ``URL`` of ``url`` (immutable), parsed once per process however often a command looks at its
    storage's URL. Raises what ``sqlalchemy.engine.make_url`` raises (``ArgumentError``, ``ValueError``)."""
    from sqlalchemy.engine import make_url

    return make_url(url)


def normalize_url(url: str) -> str:
    """``postgres://`` and ``postgresql://`` (libpq style) mean the installed psycopg 3 driver; a SQLite path
    starting with ``~`` is the home folder, as in every other path option (SQLite itself would make a ``~``)."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix):]
    m = re.match(r"(sqlite(?:\+\w+)?:///)(~[^/?]*)(.*)", url)
    if m:
        return m[1] + os.path.expanduser(m[2]) + m[3]
    return url


def mask_url(url: str) -> str:
    """The URL with any password (user part or ``?password=``) replaced by ***, safe to print or log."""
    from sqlalchemy.exc import ArgumentError

    try:
        u = parse(url)
        if "password" in u.query:
            u = u.update_query_dict({"password": "***"})
        return u.render_as_string(hide_password=True).replace("password=%2A%2A%2A", "password=***")
    except (ArgumentError, ValueError):  # unparsable: hide whatever stands where a password would
        return re.sub(r"(password=)[^&]*", r"\1***", re.sub(r"(://[^:/@?#]*:)[^@]*@", r"\1***@", url))


def _passwords(url: str) -> list[str]:
    from sqlalchemy.exc import ArgumentError

    try:
        u = parse(url)
    except (ArgumentError, ValueError):
        return []
    return [str(p) for p in (u.password, u.query.get("password")) if p]


def scrub(text: str, url: str) -> str:
    """``text`` with the URL's passwords (if any) replaced by ***: driver messages must not leak them."""
    for password in _passwords(url):
        text = text.replace(password, "***")
    return text


# A SQLite URL's query: what SQLite's Python driver takes itself (SQLAlchemy passes these on; any other argument it
# ignores with a warning) and the one SQLite argument cifar-tune honours, mode (ro, rw, rwc: SQLITE_MODES).
# timeout is $CIFAR_TUNE_SQLITE_TIMEOUT's (the URL's would be overridden); uri would change what the path means.
SQLITE_DRIVER_ARGS = ("isolation_level", "detect_types", "check_same_thread", "cached_statements")
SQLITE_MODES = {"ro": "read-only: the reading commands open it, nothing writes to it",
                "rw": "read-write: the file must exist", "rwc": "read-write, created if missing: the default"}


def check_url(url: str, writes: str | None = None) -> None:
    """Refuse, without connecting, a storage URL SQLAlchemy cannot parse, whose database driver is missing (the
    message names the driver and what installs it) or is an asyncio one (Optuna's storage is synchronous), an
    in-memory SQLite database, and a SQLite argument that would be ignored. ``writes``: the command that will
    write to the storage (``optimize``, ``compare``), which a read-only SQLite URL (``?mode=ro``) refuses.
    Raises ``UserError``."""
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError

    shown = mask_url(url)
    try:
        u = parse(normalize_url(url))
    except (ArgumentError, ValueError) as e:  # ValueError: a port that is not a number, an unclosed [ of IPv6
        m = re.search(r"invalid literal for int\(\) with base 10: ('.*')", str(e))
        why = (f"its port {scrub(m[1], url)} is not a number" if m else
               scrub(str(e).splitlines()[0], url) if isinstance(e, ValueError) else "not a URL")
        raise UserError(f"invalid storage URL {shown!r} ({why}): expected e.g. {DEFAULT_STORAGE} or "
                        "postgresql+psycopg://user:password@host/db") from None
    try:
        dialect = u.get_dialect()
    except NoSuchModuleError:
        raise UserError(f"storage URL {shown}: SQLAlchemy knows no database {u.drivername!r}; expected "
                        f"e.g. {DEFAULT_STORAGE} or postgresql+psycopg://user:password@host/db") from None
    except ImportError as e:  # a dialect that imports its driver as it loads
        raise UserError(_missing_driver(shown, u.drivername, e)) from None
    if getattr(dialect, "is_async", False):
        raise UserError(f"storage URL {shown}: {u.drivername} is an asyncio driver, and Optuna's storage needs a "
                        "synchronous one: use postgresql+psycopg://... (or sqlite:///PATH)")
    try:
        dialect.import_dbapi()
    except ImportError as e:
        raise UserError(_missing_driver(shown, u.drivername, e)) from None
    if u.get_backend_name() == "sqlite":
        _check_sqlite_url(url, u, writes)


def _missing_driver(shown: str, drivername: str, e: ImportError) -> str:
    module = getattr(e, "name", None) or str(e)
    if drivername in ("postgresql+psycopg", "postgresql"):
        fix = "pip install 'cifar-tune[postgres]' (psycopg 3)"
    elif drivername == "postgresql+psycopg2":
        fix = ("psycopg2 is in no cifar-tune extra: use postgresql+psycopg://... (pip install "
               "'cifar-tune[postgres]' brings psycopg 3), or pip install psycopg2-binary")
    else:
        fix = ("install the driver's package; cifar-tune is tested with SQLite and with PostgreSQL through psycopg 3 "
               "(postgresql+psycopg://..., pip install 'cifar-tune[postgres]')")
    return f"storage URL {shown}: its database driver {module} is not installed: {fix}"


def _check_sqlite_url(url: str, u, writes: str | None) -> None:
    query = dict(u.query)
    mode = query.pop("mode", None)
    if u.database in (None, "", ":memory:") or mode == "memory" or u.database.startswith("file::memory:"):
        raise UserError(f"storage URL {url}: an in-memory database would lose the study when the "
                        f"command ends; give a file, e.g. {DEFAULT_STORAGE}")
    ignored = sorted(k for k in query if k not in SQLITE_DRIVER_ARGS)
    if ignored:
        env = f"; ${SQLITE_TIMEOUT_ENV} sets how long SQLite waits for a lock" if "timeout" in ignored else ""
        raise UserError(f"storage URL {url}: SQLite argument{'s' if len(ignored) > 1 else ''} "
                        f"{', '.join(ignored)} would not act (cifar-tune takes mode={'|'.join(SQLITE_MODES)} and "
                        f"{', '.join(SQLITE_DRIVER_ARGS)}){env}")
    if mode is not None and mode not in SQLITE_MODES:
        raise UserError(f"storage URL {url}: mode={mode} is not a SQLite mode; expected one of "
                        + "; ".join(f"{k} ({v})" for k, v in SQLITE_MODES.items()))
    if mode == "ro" and writes:
        raise UserError(f"storage {url} is read-only (mode=ro): {writes} writes to it; drop ?mode=ro, or "
                        "read it with studies, report, dashboard or cifar_tune.load")


def read_only(url: str) -> bool:
    """Whether ``url`` is a SQLite URL marked read-only (``?mode=ro``): SQLite itself then refuses any write."""
    u = parse(normalize_url(url))
    return u.get_backend_name() == "sqlite" and u.query.get("mode") == "ro"


def engine_url(url: str) -> str:
    """The URL SQLAlchemy opens: ``normalize_url``'s, with a SQLite ``mode`` handed to SQLite itself (SQLAlchemy
    ignores a SQLite URL's query unless it is in SQLite's URI form): ``ro`` opens the file read-only
    (``file:/abs/path?mode=ro`` with ``uri=true``); ``rw`` and ``rwc`` are checked by ``open_storage``."""
    from urllib.parse import quote

    real = normalize_url(url)
    u = parse(real)
    if u.get_backend_name() != "sqlite" or "mode" not in u.query:
        return real
    mode, u = u.query["mode"], u.difference_update_query(["mode"])
    if mode == "ro":
        u = u.set(database=f"file:{quote(os.path.abspath(u.database))}").update_query_dict({"mode": "ro",
                                                                                           "uri": "true"})
    return u.render_as_string(hide_password=False)


def sqlite_path(url: str) -> Path | None:
    """The database file of a SQLite URL (check_url refused in-memory ones); None for a server URL."""
    u = parse(normalize_url(url))
    return Path(u.database) if u.get_backend_name() == "sqlite" else None


def sqlite_mode(url: str) -> str | None:
    return parse(normalize_url(url)).query.get("mode")
