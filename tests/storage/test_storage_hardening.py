"""Storage inputs that must fail in one line without touching any storage, and passwords that must stay off
command lines (`ps` shows every process's command line to every user of the machine)."""

from __future__ import annotations

import contextlib
import hashlib
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest

from cifar_tune import cli
from cifar_tune.errors import UserError
from cifar_tune.storage import database

# --- passwords --------------------------------------------------------------------------------------------------


def test_mask_url_hides_a_query_parameter_password():
    masked = database.mask_url("postgresql+psycopg://u@h/db?sslmode=require&password=hunter2")
    assert "hunter2" not in masked and "password=***" in masked and "sslmode=require" in masked
    assert "hunter2" not in database.mask_url("postgresql+psycopg://u:hunter2@h/db?password=hunter2")


def _descendants(root: int) -> set[int]:
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            # "pid (comm) state ppid ...": comm may hold spaces and parentheses, so split after the last ")"
            parents[int(stat.parent.name)] = int(stat.read_text().rsplit(")", 1)[1].split()[1])
    found, frontier = set(), {root}
    while frontier:
        frontier = {pid for pid, ppid in parents.items() if ppid in frontier} - found
        found |= frontier
    return found


@pytest.mark.postgres
def test_workers_command_lines_carry_no_password(pg_url, tiny_npz, tmp_path):
    """`optimize --jobs 2` with the password in the URL: no worker's command line holds it, and the run works
    (the workers read their settings, URL included, from a pipe)."""
    password = pg_url.split("@")[0].rsplit(":", 1)[1]
    cmd = [sys.executable, "-m", "cifar_tune", "optimize", "--arch", "mlp_l2", "--jobs", "2", "--n-trials", "2",
           "--epochs", "1", "--val-size", "100", "--data", str(tiny_npz), "--storage", pg_url]
    parent = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path,
                              env={**os.environ, "PYTHONUNBUFFERED": "1"}, start_new_session=True)
    own = Path(f"/proc/{parent.pid}/cmdline").read_bytes()
    seen: dict[int, bytes] = {}
    try:
        deadline = time.time() + 300
        while parent.poll() is None and time.time() < deadline:
            for pid in _descendants(parent.pid) - seen.keys():
                with contextlib.suppress(OSError):
                    line = Path(f"/proc/{pid}/cmdline").read_bytes()
                    if line and line != own:  # a fork not yet exec'ed still shows the parent's command line
                        seen[pid] = line
            time.sleep(0.1)
        out, err = parent.communicate(timeout=60)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(parent.pid, 9)  # left-overs of a failed test only: the group is ours
    assert parent.returncode == 0, err[-3000:]
    workers = [line for line in seen.values() if b"cifar_tune.cli.worker" in line]
    assert len(workers) >= 2, seen
    leaks = [line.replace(b"\0", b" ").decode() for line in seen.values() if password.encode() in line]
    assert not leaks
    assert password not in out + err
    assert "absl::InitializeLog" not in err and "oneDNN" not in err  # the workers load TensorFlow quietly too
    assert len(optuna.load_study(study_name="cifar10-mlp_l2", storage=pg_url).trials) == 2


# --- SQLite paths that cannot be written ------------------------------------------------------------------------


@contextlib.contextmanager
def immutable(path: Path):
    """chattr +i: what a read-only file or folder is even to root (the tests run as root in CI)."""
    if subprocess.run(["chattr", "+i", str(path)], check=False, capture_output=True).returncode != 0:
        pytest.skip("chattr +i is not available here (not root, or a file system without it)")
    try:
        yield path
    finally:
        subprocess.run(["chattr", "-i", str(path)], check=True)


def _optuna_db(path: Path) -> str:
    url = f"sqlite:///{path}"
    optuna.create_study(study_name="kept", storage=url)
    return url


@pytest.fixture(params=["folder cannot be created", "parent is a file", "read-only database"])
def unwritable_sqlite(request, tmp_path):
    """A SQLite URL that `optimize` cannot write to, and the words its error must say."""
    if request.param == "folder cannot be created":
        locked = tmp_path / "locked"
        locked.mkdir()
        with immutable(locked):
            yield f"sqlite:///{locked}/sub/cifar_tune.db", "cannot create the folder"
    elif request.param == "parent is a file":
        (tmp_path / "afile").write_text("x")
        yield f"sqlite:///{tmp_path}/afile/cifar_tune.db", "is not a folder"
    else:
        url = _optuna_db(tmp_path / "ro.db")
        with immutable(tmp_path / "ro.db"):
            yield url, "read-only"


def test_unwritable_sqlite_storage_is_a_user_error(unwritable_sqlite):
    url, words = unwritable_sqlite
    with pytest.raises(UserError, match=words):
        database.open_storage(url)


def test_unwritable_sqlite_storage_exits_2_in_one_line(unwritable_sqlite, tiny_npz, capsys):
    url, words = unwritable_sqlite
    assert cli.main(["optimize", "--arch", "mlp_l2", "--n-trials", "1", "--epochs", "1", "--val-size", "100",
                     "--data", str(tiny_npz), "--storage", url]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and words in err, err


def test_a_read_only_database_can_still_be_read(tmp_path):
    url = _optuna_db(tmp_path / "ro.db")
    with immutable(tmp_path / "ro.db"):
        storage = database.storage_for_reading(url)
        assert [s.study_name for s in optuna.get_all_study_summaries(storage)] == ["kept"]


# --- in-memory SQLite -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("url", ["sqlite://", "sqlite:///:memory:"])
def test_in_memory_sqlite_is_refused(url, capsys):
    with pytest.raises(UserError, match="in-memory database would lose the study"):
        database.check_url(url)
    assert cli.main(["studies", "--storage", url]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "in-memory" in err


# --- databases without Optuna's tables --------------------------------------------------------------------------


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("kind", ["another application's database", "empty file"])
def test_reading_a_sqlite_file_without_optuna_tables_leaves_it_byte_identical(kind, tmp_path):
    path = tmp_path / "app.db"
    if kind == "empty file":
        path.write_bytes(b"")
    else:
        with contextlib.closing(sqlite3.connect(path)) as con, con:
            # A table named like one of Optuna's must not fool the check.
            con.execute("CREATE TABLE studies (id INTEGER PRIMARY KEY, patient TEXT)")
            con.execute("INSERT INTO studies (patient) VALUES ('x')")
    before = _sha256(path)
    url = f"sqlite:///{path}"
    with pytest.raises(UserError, match="holds no Optuna studies"):
        database.storage_for_reading(url)
    proc = subprocess.run([sys.executable, "-m", "cifar_tune", "studies", "--storage", url], check=False,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.count("\n") == 1 and "holds no Optuna studies" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr and proc.stdout == ""
    assert _sha256(path) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["app.db"]  # no journal or lock file left either


@pytest.mark.postgres
def test_reading_a_postgres_database_without_optuna_tables_creates_none(pg_url, capsys):
    import sqlalchemy

    with pytest.raises(UserError, match="holds no Optuna studies"):
        database.storage_for_reading(pg_url)
    assert cli.main(["studies", "--storage", pg_url]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "holds no Optuna studies" in err
    assert pg_url.split("@")[0].rsplit(":", 1)[1] not in err
    engine = sqlalchemy.create_engine(pg_url)
    try:
        assert sqlalchemy.inspect(engine).get_table_names() == []
    finally:
        engine.dispose()
