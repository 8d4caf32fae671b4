"""Every storage a user can name is opened or refused cleanly, and every output a command writes is checked before
it touches a storage or trains (issue 28, items 7 to 12): URLs the parser or the driver rejects, a read-only
SQLite URL, another application's database, a database missing one of Optuna's tables, foreign studies (another
program's, multi-objective, maximizing), a dashboard stopped while a response is in flight, output paths that are
files."""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import optuna
import pytest

import cifar_tune as ct
from cifar_tune import cli
from cifar_tune.errors import UserError
from cifar_tune.storage import database
from tests.helpers.pg import free_port

PY = [sys.executable, "-m", "cifar_tune"]
TINY = ["--epochs", "1", "--val-size", "100", "--n-trials", "1"]


def fingerprint(path: Path) -> tuple[str, int]:
    """The file's bytes and modification time: what "touching nothing" keeps."""
    return hashlib.sha256(path.read_bytes()).hexdigest(), path.stat().st_mtime_ns


def one_line(capsys, *words: str) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("cifar-tune: error: "), err
    assert "Traceback" not in err
    for w in words:
        assert w in err, err
    return err


def optimize(npz: Path, url: str, *more: str) -> int:
    return cli.main(["optimize", "--arch", "mlp_l2", *TINY, "--data", str(npz), "--storage", url, *more])


def plain_study(path: Path, name: str = "cifar10-mlp_l2", **kwargs) -> optuna.Study:
    """A finished study written by Optuna alone (fast); ``arch`` recorded as cifar-tune records it."""
    study = optuna.create_study(study_name=name, storage=f"sqlite:///{path}", **kwargs)
    n = len(study.directions)
    study.optimize(lambda t: tuple(t.suggest_float(f"x{i}", 0, 1) for i in range(n)) if n > 1
                   else t.suggest_float("x0", 0, 1), n_trials=3)
    return study


# --- item 7: URLs the parser or the driver rejects -------------------------------------------------------------

missing = [m for m in ("psycopg2", "MySQLdb") if importlib.util.find_spec(m) is None]
URLS = [("postgresql://[::1/db", "its port ':1' is not a number"),
        ("postgresql://u:hunter2@db.example:5x/db", "its port '5x' is not a number"),
        ("nosuchdb://u@h/db", "SQLAlchemy knows no database 'nosuchdb'"),
        ("postgresql+asyncpg://u@h/db", "asyncio driver")]
if "psycopg2" in missing:
    URLS.append(("postgresql+psycopg2://u:hunter2@h/db", "driver psycopg2 is not installed: psycopg2 is in no "
                 "cifar-tune extra: use postgresql+psycopg://... (pip install 'cifar-tune[postgres]' brings "
                 "psycopg 3), or pip install psycopg2-binary"))
if "MySQLdb" in missing:
    URLS.append(("mysql://u@h/db", "driver MySQLdb is not installed"))


@pytest.mark.parametrize(("url", "words"), URLS, ids=[u for u, _ in URLS])
def test_a_url_the_parser_or_the_driver_rejects_is_one_line(url, words, tiny_npz, capsys):
    with pytest.raises(UserError, match="storage URL") as e:
        database.check_url(url)
    assert words in str(e.value) and "hunter2" not in str(e.value)
    for argv in (["studies", "--storage", url], ["report", "--storage", url],
                 ["optimize", "--arch", "mlp_l2", *TINY, "--data", str(tiny_npz), "--storage", url],
                 ["compare", "--storage", url]):
        assert cli.main(argv) == 2, argv
        assert "hunter2" not in one_line(capsys, words)
    with pytest.raises(UserError, match="storage URL"):
        ct.load(url)
    with pytest.raises(UserError, match="storage URL"):
        ct.make_settings("mlp_l2", storage=url)


def test_the_issues_urls_end_in_one_line_in_a_real_process(tmp_path):
    urls = ["postgresql://[::1/db"] + (["postgresql+psycopg2://u@localhost/db"] if "psycopg2" in missing else [])
    for url in urls:
        proc = subprocess.run([*PY, "studies", "--storage", url], capture_output=True, text=True, timeout=120,
                              check=False)
        assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr[-3000:]
        assert proc.stderr.startswith("cifar-tune: error:") and proc.stdout == ""


# --- item 8: a read-only SQLite URL -----------------------------------------------------------------------------


def test_a_read_only_url_is_read_read_only_and_every_writer_refuses_it(tmp_path, tiny_npz, capsys):
    path = tmp_path / "s.db"
    plain_study(path).set_user_attr("arch", "mlp_l2")
    url = f"sqlite:///{path}?mode=ro"
    before = fingerprint(path)
    # the readers work
    assert cli.main(["studies", "--storage", url]) == 0
    assert "cifar10-mlp_l2" in capsys.readouterr().out
    assert cli.main(["report", "--storage", url, "--out", str(tmp_path / "r.html")]) == 0
    assert list(ct.load(url).studies) == ["mlp_l2"]
    # ... and SQLite itself refuses a write through what they open
    study = optuna.load_study(study_name="cifar10-mlp_l2", storage=database.storage_for_reading(url))
    with pytest.raises(optuna.exceptions.StorageInternalError) as e:
        study.set_user_attr("x", 1)
    assert "readonly database" in database.db_message(e.value)
    # the writers refuse it before anything
    for argv, command in ((["optimize", "--arch", "mlp_l2", *TINY, "--data", str(tiny_npz)], "optimize"),
                          (["run", "--archs", "mlp_l2", *TINY, "--data", str(tiny_npz)], "optimize"),
                          (["compare", "--seeds", "1"], "compare")):
        assert cli.main([*argv, "--storage", url]) == 2
        one_line(capsys, "is read-only (mode=ro)", f"{command} writes to it")
    with pytest.raises(UserError, match="read-only"):
        database.open_storage(url)
    with pytest.raises(UserError, match="read-only"):
        ct.make_settings("mlp_l2", storage=url)
    assert fingerprint(path) == before
    assert len(optuna.load_study(study_name="cifar10-mlp_l2", storage=f"sqlite:///{path}").trials) == 3
    assert not (tmp_path / "storage").exists()  # no default database either


@pytest.mark.parametrize(("query", "words"), [("foo=1", "SQLite argument foo would not act"),
                                              ("timeout=5", "$CIFAR_TUNE_SQLITE_TIMEOUT sets"),
                                              ("mode=rx", "mode=rx is not a SQLite mode"),
                                              ("uri=true", "SQLite argument uri would not act")])
def test_a_sqlite_argument_that_would_not_act_is_refused(query, words, tmp_path, capsys):
    url = f"sqlite:///{tmp_path}/s.db?{query}"
    assert cli.main(["studies", "--storage", url]) == 2
    one_line(capsys, words)
    with pytest.raises(UserError, match="storage URL"):
        database.open_storage(url)
    assert list(tmp_path.iterdir()) == []


def test_mode_rw_opens_an_existing_file_only(tmp_path):
    with pytest.raises(UserError, match="mode=rw opens an existing file only"):
        database.open_storage(f"sqlite:///{tmp_path}/sub/s.db?mode=rw", with_heartbeat=False)
    assert list(tmp_path.iterdir()) == []  # no file, no folder
    plain_study(tmp_path / "s.db")
    database.open_storage(f"sqlite:///{tmp_path}/s.db?mode=rw", with_heartbeat=False)


# --- items 9 and 10: databases that are not (whole) Optuna storages ----------------------------------------------


def test_optimize_refuses_another_applications_database_touching_nothing(tmp_path, tiny_npz, capsys):
    path = tmp_path / "app.db"
    with contextlib.closing(sqlite3.connect(path)) as con, con:
        con.execute("CREATE TABLE patients (id INTEGER PRIMARY KEY, name TEXT)")
        con.execute("INSERT INTO patients (name) VALUES ('x')")
    before = fingerprint(path)
    time.sleep(0.01)  # a write now would show in the modification time
    assert optimize(tiny_npz, f"sqlite:///{path}") == 2
    one_line(capsys, "is not an Optuna storage", "another application's tables (patients)", "nothing was written")
    with pytest.raises(UserError, match="not an Optuna storage"):
        database.open_storage(f"sqlite:///{path}")
    assert fingerprint(path) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["app.db", "tiny.npz"]  # no journal, lock or storage/


@pytest.mark.postgres
def test_optimize_refuses_another_applications_postgres_database(pg_url, tiny_npz, capsys):
    import sqlalchemy

    engine = sqlalchemy.create_engine(pg_url)
    try:
        with engine.begin() as con:
            con.execute(sqlalchemy.text("CREATE TABLE patients (id serial PRIMARY KEY, name text)"))
        assert optimize(tiny_npz, pg_url) == 2
        one_line(capsys, "is not an Optuna storage", "(patients)")
        assert sqlalchemy.inspect(engine).get_table_names() == ["patients"]
    finally:
        engine.dispose()


def test_an_empty_database_file_is_a_new_storage(tmp_path):
    (tmp_path / "new.db").write_bytes(b"")
    database.open_storage(f"sqlite:///{tmp_path}/new.db", with_heartbeat=False)
    assert database.storage_for_reading(f"sqlite:///{tmp_path}/new.db") is not None


@pytest.mark.parametrize("table", ["trial_values", "trial_params"])
def test_optimize_refuses_a_database_missing_one_of_optunas_tables_before_writing(table, tmp_path, tiny_npz,
                                                                                  capsys):
    path = tmp_path / "s.db"
    plain_study(path, name="other")
    with contextlib.closing(sqlite3.connect(path)) as con, con:
        con.execute(f"DROP TABLE {table}")
    before = fingerprint(path)
    assert optimize(tiny_npz, f"sqlite:///{path}") == 2
    one_line(capsys, f"lacks Optuna's table {table}", "nothing was written")
    with pytest.raises(UserError, match=f"lacks Optuna's table {table}"):
        ct.optimize(arch="mlp_l2", n_trials=1, epochs=1, data=str(tiny_npz), val_size=100, storage=f"sqlite:///{path}")
    assert fingerprint(path) == before


# --- item 11: foreign studies ------------------------------------------------------------------------------------


def storage_with_foreign_studies(tmp_path: Path) -> Path:
    path = tmp_path / "s.db"
    plain_study(path, name="mo", directions=["minimize", "maximize"])
    plain_study(path, name="up", direction="maximize")
    plain_study(path, name="theirs")
    return path


def test_every_reader_lists_foreign_studies_and_skips_them(tmp_path, capsys):
    path = storage_with_foreign_studies(tmp_path)
    ours = plain_study(path)
    ours.set_user_attr("arch", "mlp_l2")
    url = f"sqlite:///{path}"
    assert cli.main(["studies", "--storage", url]) == 0
    out = capsys.readouterr().out
    assert ("Foreign studies (not cifar-tune's; skipped): mo (multi-objective (minimize, maximize)); up (maximizes "
            "its objective); theirs (not created by cifar-tune (no cifar-tune record))") in out
    assert "cifar10-mlp_l2" in out
    assert cli.main(["report", "--storage", url, "--out", str(tmp_path / "r.html")]) == 0
    page = (tmp_path / "r.html").read_text()
    assert "skipped 3 foreign studies: mo (multi-objective (minimize, maximize))" in page
    assert list(ct.load(url).studies) == ["mlp_l2"]


def test_a_storage_of_foreign_studies_only_is_said_so(tmp_path, capsys):
    url = f"sqlite:///{storage_with_foreign_studies(tmp_path)}"
    assert cli.main(["studies", "--storage", url]) == 0
    out = capsys.readouterr().out
    assert "Foreign studies" in out and "No cifar-tune studies in" in out
    assert cli.main(["report", "--storage", url, "--out", str(tmp_path / "r.html")]) == 2
    one_line(capsys, "no cifar-tune studies", "skipped 3 foreign studies")
    assert ct.load(url).studies == {}


@contextlib.contextmanager
def held_exclusively(path: Path):
    """This process holds ``path`` in an exclusive transaction: every reader waits (SQLite's busy timeout)."""
    con = sqlite3.connect(path, timeout=0, isolation_level=None)
    con.execute("BEGIN EXCLUSIVE")
    try:
        yield
    finally:
        con.execute("ROLLBACK")
        con.close()


def test_the_dashboard_stops_on_the_first_ctrl_c_while_a_response_is_in_flight(tmp_path):
    """A real dashboard process on a storage with a multi-objective study; a request that waits on a lock held
    elsewhere is in flight when SIGINT comes: the process ends at once (wsgiref's handler used to swallow it)."""
    path = storage_with_foreign_studies(tmp_path)
    port = free_port()
    proc = subprocess.Popen([*PY, "dashboard", "--storage", f"sqlite:///{path}", "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "CIFAR_TUNE_SQLITE_TIMEOUT": "60"})
    try:
        deadline = time.time() + 120
        while True:
            assert proc.poll() is None, proc.communicate()[1]
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies", timeout=2) as r:
                    assert r.status == 200
                break
            except OSError:
                assert time.time() < deadline, "dashboard not serving"
                time.sleep(0.3)
        with held_exclusively(path):
            def ask() -> None:
                with contextlib.suppress(OSError):
                    urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies/1", timeout=60).read()

            threading.Thread(target=ask, daemon=True).start()
            time.sleep(1.5)  # the request now waits for the lock inside the dashboard
            start = time.monotonic()
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                pytest.fail("the dashboard kept serving after Ctrl-C")
            assert time.monotonic() - start < 20
    finally:
        if proc.poll() is None:
            proc.kill()
        out, err = proc.communicate()
    assert proc.returncode == 0, err[-2000:]
    assert "Traceback" not in err, err[-2000:]


# --- item 12: outputs checked before a storage is touched or anything trains --------------------------------------


def test_run_with_a_file_as_out_is_refused_before_any_study(tmp_path, tiny_npz, capsys):
    (tmp_path / "afile").write_text("mine")
    for out in ("afile", "afile/sub"):
        assert cli.main(["run", "--archs", "mlp_l2", *TINY, "--data", str(tiny_npz), "--out", out]) == 2
        one_line(capsys, "afile")
    with pytest.raises(UserError, match="afile"):
        ct.run(["mlp_l2"], epochs=1, n_trials=1, val_size=100, data=str(tiny_npz), out=tmp_path / "afile")
    assert not (tmp_path / "storage").exists()  # no default database, no study trained
    assert (tmp_path / "afile").read_text() == "mine"


def test_baseline_compare_and_report_check_their_outputs_first(tmp_path, tiny_npz, capsys):
    (tmp_path / "afile").write_text("mine")
    missing_storage = f"sqlite:///{tmp_path}/none.db"
    for argv in (["baseline", "--archs", "mlp_l2", "--epochs", "1", "--data", str(tiny_npz), "--out", "afile"],
                 ["compare", "--storage", missing_storage, "--out", "afile"],
                 ["report", "--storage", missing_storage, "--out", "afile/r.html"],
                 ["report", "--storage", missing_storage, "--out", str(tmp_path)]):  # a folder: report in it
        assert cli.main(argv) == 2, argv
        err = capsys.readouterr().err
        expected = "no storage at" if argv[-1] == str(tmp_path) else "afile"
        assert err.count("\n") == 1 and expected in err, (argv, err)
    with pytest.raises(UserError, match="is not a folder"):
        ct.baseline(["mlp_l2"], epochs=1, data=str(tiny_npz), out=tmp_path / "afile")
    with pytest.raises(UserError, match="is not a folder"):
        ct.compare(storage=missing_storage, out=tmp_path / "afile")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile", "tiny.npz"]
