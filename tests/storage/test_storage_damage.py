"""Storages that are damaged, locked, shared at creation or fail mid-run, and side stores that cannot be used:
each ends in one line (never a traceback), nothing stored is written over or lost (issue 19, items 3, 8, 9, 10,
13 and the heartbeat rule). A command that needs no process of its own (no signal, nothing running beside it)
runs in this process (``cli.main``), with its environment variables set for the call."""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest

from cifar_tune import cli
from cifar_tune.errors import UserError
from cifar_tune.storage import artifacts, database

PY = [sys.executable, "-m", "cifar_tune"]
TINY = ["--epochs", "1", "--val-size", "100", "--n-trials", "1"]


def cifar_tune(*args: str, **env: str) -> subprocess.CompletedProcess:
    """``cifar-tune ARGS`` run in this process with ``env`` added to the environment for the call: its exit status,
    stdout and stderr (an exception it lets out fails the test, as a traceback would)."""
    out, err = io.StringIO(), io.StringIO()
    with pytest.MonkeyPatch.context() as mp, contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        for name, value in env.items():
            mp.setenv(name, value)
        mp.setattr(artifacts, "_warned_artifacts", [])  # the artifact folder's warning: once per command
        code = cli.main(list(args))
    return subprocess.CompletedProcess(["cifar-tune", *args], code, out.getvalue(), err.getvalue())


def one_error_line(proc: subprocess.CompletedProcess, *words: str) -> str:
    """The one error line on stderr (warnings may precede it), with no traceback anywhere."""
    assert "Traceback" not in proc.stderr + proc.stdout, proc.stderr[-3000:]
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("cifar-tune: error:")]
    assert len(errors) == 1, proc.stderr[-3000:]
    for w in words:
        assert w in errors[0], errors[0]
    return errors[0]


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def optuna_db(path: Path, n_trials: int = 3) -> str:
    """A SQLite storage with a finished study (Optuna alone: fast), as cifar-tune's reading commands see one."""
    url = f"sqlite:///{path}"
    study = optuna.create_study(study_name="cifar10-mlp_l2", storage=url)
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=n_trials)
    return url


def damage_table(path: Path, table: str) -> None:
    """Overwrite one page of ``table`` (its b-tree root, from sqlite_master) with garbage, as a bad disk would."""
    with contextlib.closing(sqlite3.connect(path)) as con:
        page_size = con.execute("PRAGMA page_size").fetchone()[0]
        root = con.execute("SELECT rootpage FROM sqlite_master WHERE name = ?", (table,)).fetchone()[0]
    assert root > 1
    with open(path, "r+b") as f:
        f.seek((root - 1) * page_size)
        f.write(bytes((i * 37 + 11) % 256 for i in range(page_size)))


# --- item 8: a damaged page, a missing table, a lock held for ever --------------------------------------------


@pytest.mark.parametrize("command", ["studies", "report", "optimize"])
def test_a_damaged_table_page_is_one_line_and_nothing_is_written(command, tmp_path, tiny_npz):
    path = tmp_path / "studies.db"
    url = optuna_db(path)
    damage_table(path, "trials")
    before = sha256(path)
    args = {"studies": ["studies"], "report": ["report", "--out", str(tmp_path / "r.html")],
            "optimize": ["optimize", "--arch", "mlp_l2", *TINY, "--data", str(tiny_npz)]}[command]
    proc = cifar_tune(*args, "--storage", url)
    assert proc.returncode == 2, proc.stderr[-3000:]
    one_error_line(proc, "database disk image is malformed", str(path.name))
    assert sha256(path) == before
    assert not (tmp_path / "r.html").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["studies.db", "tiny.npz"]  # no journal, no lock file


@pytest.mark.parametrize("table", ["trial_intermediate_values", "alembic_version"])
def test_a_database_missing_one_of_optunas_tables_is_refused_not_repaired(tmp_path, table):
    path = tmp_path / "studies.db"
    url = optuna_db(path)
    with contextlib.closing(sqlite3.connect(path)) as con, con:
        con.execute(f"DROP TABLE {table}")
    before = sha256(path)
    proc = cifar_tune("studies", "--storage", url)
    assert proc.returncode == 2, proc.stderr
    one_error_line(proc, table)
    assert proc.stdout == "" and sha256(path) == before
    with pytest.raises(UserError, match=f"lacks Optuna's table {table}"):
        database.storage_for_reading(url)


def test_a_damaged_record_that_passes_the_page_check_is_one_line(tmp_path):
    """One byte of a stored JSON attribute changed: SQLite's quick_check sees nothing wrong, Optuna's decoder
    does; every reading command and the Python API say so in one line and write nothing."""
    path = tmp_path / "studies.db"
    url = optuna_db(path)
    optuna.load_study(study_name="cifar10-mlp_l2", storage=url).set_user_attr("arch", "mlp_l2")
    blob = bytearray(path.read_bytes())
    at = blob.find(b'"mlp_l2"')
    blob[at] = ord("#")  # no longer JSON
    path.write_bytes(bytes(blob))
    before = sha256(path)
    for args in (["studies"], ["report", "--out", str(tmp_path / "r.html")]):
        proc = cifar_tune(*args, "--storage", url)
        assert proc.returncode == 2, proc.stderr[-2000:]
        one_error_line(proc, "a stored record is not valid JSON")
    import cifar_tune as ct

    with pytest.raises(UserError, match="not valid JSON"):
        ct.load(url)
    assert sha256(path) == before


@contextlib.contextmanager
def held_exclusively(path: Path):
    """Another process holds ``path`` in an exclusive transaction (as an open sqlite3 shell can) until the end."""
    code = ("import sqlite3, sys, time\n"
            f"c = sqlite3.connect({str(path)!r}, isolation_level=None)\n"
            "c.execute('BEGIN EXCLUSIVE')\nprint('held', flush=True)\ntime.sleep(600)\n")
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        yield
    finally:
        holder.kill()
        holder.wait()


@pytest.mark.parametrize("command", ["optimize", "studies"])
def test_a_database_held_by_another_process_is_waited_for_a_stated_time(command, tmp_path, tiny_npz):
    path = tmp_path / "studies.db"
    url = optuna_db(path)
    args = ["optimize", "--arch", "mlp_l2", *TINY, "--data", str(tiny_npz)] if command == "optimize" else [command]
    with held_exclusively(path):
        # Before: optimize retried "database is locked" six times 60 s (SQLITE_TIMEOUT could not be set).
        proc = cifar_tune(*args, "--storage", url, CIFAR_TUNE_SQLITE_TIMEOUT="1")
    assert proc.returncode == 2, proc.stderr[-3000:]
    one_error_line(proc, "database is locked", "more than 1 s", "CIFAR_TUNE_SQLITE_TIMEOUT")
    assert len(optuna.load_study(study_name="cifar10-mlp_l2", storage=url).trials) == 3


# --- item 9: ~ in a SQLite path ---------------------------------------------------------------------------------


def test_tilde_in_a_sqlite_url_is_the_home_folder(tmp_path, tiny_npz, monkeypatch):
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    assert database.normalize_url("sqlite:///~/s.db") == f"sqlite:///{home}/s.db"
    assert database.normalize_url("sqlite:///~/s.db?timeout=3") == f"sqlite:///{home}/s.db?timeout=3"
    proc = cifar_tune("optimize", "--arch", "mlp_l2", *TINY, "--data", str(tiny_npz), "--storage",
                      "sqlite:///~/studies.db")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (home / "studies.db").is_file() and not (tmp_path / "~").exists()
    proc = cifar_tune("studies", "--storage", "sqlite:///~/studies.db")
    assert proc.returncode == 0 and "cifar10-mlp_l2" in proc.stdout, proc.stderr


# --- item 10: an artifact folder that is a file ----------------------------------------------------------------


def test_an_artifact_folder_that_is_a_file_costs_a_warning_not_the_study(tmp_path, tiny_npz):
    (tmp_path / "share").write_text("an unmounted share\n")
    url = f"sqlite:///{tmp_path}/studies.db"
    proc = cifar_tune("optimize", "--arch", "mlp_l2", *TINY, "--data", str(tiny_npz), "--storage", url,
                      CIFAR_TUNE_ARTIFACTS=str(tmp_path / "share"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    warnings = [ln for ln in proc.stderr.splitlines() if "artifact folder" in ln]
    assert len(warnings) == 1 and "not a folder" in warnings[0], proc.stderr
    trials = optuna.load_study(study_name="cifar10-mlp_l2", storage=url).trials
    assert [t.state.name for t in trials] == ["COMPLETE"]


def test_the_dashboard_serves_without_an_unusable_artifact_folder(tmp_path):
    url = optuna_db(tmp_path / "studies.db")
    (tmp_path / "share").write_text("x")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "CIFAR_TUNE_ARTIFACTS": str(tmp_path / "share")}
    proc = subprocess.Popen([*PY, "dashboard", "--storage", url, "--port", str(port)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)
    try:
        first = proc.stdout.readline()  # the serving line, or nothing if the command died
    finally:
        proc.kill()
        _, err = proc.communicate(timeout=60)
    assert "optuna-dashboard on" in first and "no artifacts" in first, err[-3000:]
    assert "Traceback" not in err and "artifact folder" in err


def test_artifact_store_warns_once_and_gives_none(tmp_path, monkeypatch):
    from cifar_tune import progress

    (tmp_path / "f").write_text("x")
    monkeypatch.setenv("CIFAR_TUNE_ARTIFACTS", str(tmp_path / "f"))
    monkeypatch.setattr(artifacts, "_warned_artifacts", [])
    events = []
    with progress.reporting(events.append):
        assert artifacts.artifact_store() is None and artifacts.artifact_store() is None
    assert [str(e) for e in events if "warning: artifact folder" in str(e)] and len(events) == 1


# --- item 3: commands starting together on a new storage --------------------------------------------------------

OPEN_AT = """
import sys, time
from cifar_tune.storage import database
start = float(sys.argv[2])
time.sleep(max(0.0, start - time.time()))
database.open_storage(sys.argv[1])
"""


def open_together(url: str, n: int) -> list[subprocess.CompletedProcess]:
    """``n`` processes opening (creating) one new storage at the same instant."""
    start = str(time.time() + 4.0)  # after every interpreter and its imports are up
    procs = [subprocess.Popen([sys.executable, "-c", OPEN_AT, url, start], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(n)]
    return [subprocess.CompletedProcess(p.args, p.wait(timeout=120), *p.communicate()) for p in procs]


def test_commands_starting_together_on_a_new_sqlite_file_all_open_it(tmp_path):
    for k in range(3):  # the race was lost about once in three tries of three
        url = f"sqlite:///{tmp_path}/new-{k}.db"
        results = open_together(url, 4)
        assert all(r.returncode == 0 for r in results), [r.stderr[-2000:] for r in results if r.returncode]
        assert optuna.get_all_study_summaries(database.storage_for_reading(url)) == []


@pytest.mark.postgres
def test_commands_starting_together_on_a_new_postgres_database_all_open_it(pg_url):
    results = open_together(pg_url, 4)
    assert all(r.returncode == 0 for r in results), [r.stderr[-2000:] for r in results if r.returncode]
    assert optuna.get_all_study_summaries(database.storage_for_reading(pg_url)) == []


# --- the heartbeat rule -----------------------------------------------------------------------------------------


def test_a_grace_period_must_span_three_heartbeats(tiny_npz, capsys):
    with pytest.raises(UserError, match=r"at least 3 x --heartbeat-interval \(30 s\)"):
        database._heartbeat_kwargs(10, 20)
    assert database._heartbeat_kwargs(1, 4)["grace_period"] == 4  # what the tests' workers use
    assert database._heartbeat_kwargs(2, 8)["grace_period"] == 8
    assert database._heartbeat_kwargs(60, None)["grace_period"] == 240
    assert cli.main(["optimize", "--arch", "mlp_l2", *TINY, "--data", str(tiny_npz), "--heartbeat-interval", "10",
                     "--grace-period", "20"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "busy machine" in err
    assert not Path("storage").exists()  # refused before any storage was created


# --- item 13: failures in the middle of a run ------------------------------------------------------------------


@pytest.fixture
def small_disk(tmp_path):
    """A 64 KiB file system: real 'No space left on device' errors."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mnt)], capture_output=True,
                      check=False).returncode != 0:
        pytest.skip("cannot mount a small tmpfs here (not root, or no permission in this container)")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_baseline_on_a_full_disk_is_one_line_naming_the_folder(small_disk, tiny_npz):
    out = small_disk / "out"
    proc = cifar_tune("baseline", "--archs", "mlp_l2", "--epochs", "1", "--data", str(tiny_npz), "--out", str(out))
    assert proc.returncode == 1, proc.stderr[-3000:]
    one_error_line(proc, "No space left on device", str(out))
    assert "MLP with L2" in proc.stdout  # the results are printed all the same


def _when_a_trial_runs(path: Path, proc: subprocess.Popen, act) -> None:
    deadline = time.monotonic() + 150
    while time.monotonic() < deadline and proc.poll() is None:
        with contextlib.suppress(sqlite3.Error), contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro",
                                                                                   uri=True)) as con:
            if con.execute("SELECT count(*) FROM trials WHERE state = 'RUNNING'").fetchone()[0]:
                act()
                return
        time.sleep(0.2)
    pytest.fail("no trial started")


@pytest.mark.parametrize("what", ["deleted", "made read-only"])
def test_a_storage_that_fails_while_a_trial_trains_is_one_line(what, tmp_path, tiny_npz):
    path = tmp_path / "studies.db"
    # Many epochs: the failure comes at the next epoch's report, long before the trial could end.
    proc = subprocess.Popen([*PY, "optimize", "--arch", "mlp_l2", "--n-trials", "1", "--epochs", "3000",
                             "--pruner", "none", "--val-size", "100", "--data", str(tiny_npz), "--storage",
                             f"sqlite:///{path}"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    immutable = False
    try:
        if what == "deleted":
            _when_a_trial_runs(path, proc, path.unlink)
        else:
            def chattr():
                nonlocal immutable
                if subprocess.run(["chattr", "+i", str(path)], capture_output=True, check=False).returncode:
                    pytest.skip("chattr +i is not available here")
                immutable = True
            _when_a_trial_runs(path, proc, chattr)
        out, err = proc.communicate(timeout=150)
    finally:
        if immutable:
            subprocess.run(["chattr", "-i", str(path)], check=True)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    result = subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
    assert proc.returncode == 2, err[-3000:]
    one_error_line(result, str(path.name))
    if what == "made read-only":  # what was stored before stays readable (the study and its trial)
        trials = optuna.load_study(study_name="cifar10-mlp_l2", storage=database.storage_for_reading(
            f"sqlite:///{path}")).trials
        assert len(trials) == 1
