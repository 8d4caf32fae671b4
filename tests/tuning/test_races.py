"""Several real `cifar-tune optimize` processes on one study, on SQLite and on the PostgreSQL fixture: commands
started together on a new storage, a worker paused past the grace period and resumed, a resume racing a running
study. Each process is a real `python -m cifar_tune` on tiny synthetic data, as on separate machines; a command
that races nothing (the seed's reproducibility, a refused resume) runs in this process (``cli.main``).
"""

from __future__ import annotations

import contextlib
import io
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from cifar_tune import cli
from cifar_tune.storage import database
from tests.helpers.trial_states import assert_no_duplicate_samples

STUDY = "cifar10-mlp_l2"
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
HEARTBEAT, GRACE = "1", "5"  # short, so the test is quick (the rule allows a grace of 3 beats or more)
# Epochs of the paused worker's trials: its trial 0 must still run when the test, polling every 0.2 s, has seen its
# first epoch stored and paused it (20 epochs of a fraction of a second each on tiny data: several seconds left).
LATE_EPOCHS = "20"
# Epochs of the racing study's trials: its 3 trials (10 epochs each, on tiny data: over ten seconds) still run when
# the joining command, started once the refused one has returned, has imported TensorFlow and asks for its trials.
RACE_EPOCHS = "10"


def optimize_cmd(storage: str, data: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "cifar_tune", "optimize", "--arch", "mlp_l2", "--storage", storage, "--data",
            str(data), "--val-size", "100", "--pruner", "none", *args]


def start(cmd: list[str], cwd: Path) -> subprocess.Popen:
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=cwd,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})


def finish(procs: list[subprocess.Popen], timeout: float = 400) -> list[tuple[int, str, str]]:
    try:
        outs = [p.communicate(timeout=timeout) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    return [(p.returncode, out, err) for p, (out, err) in zip(procs, outs, strict=True)]


def in_process(cmd: list[str]) -> tuple[int, str, str]:
    """An ``optimize_cmd`` command run in this process: (exit status, stdout, stderr)."""
    assert cmd[1:3] == ["-m", "cifar_tune"]
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli.main(cmd[3:])
    return code, out.getvalue(), err.getvalue()


def load(storage: str) -> optuna.Study:
    return optuna.load_study(study_name=STUDY, storage=database.storage_for_reading(storage))


# the PostgreSQL case runs in CI's second step (slow: a paused worker on a server is 53 CPU-s of a 2-core CPU;
# the fast suite keeps the SQLite case, the same code path on the default storage)
@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=[pytest.mark.postgres, pytest.mark.slow])])
def new_storage(request, tmp_path) -> str:
    """A storage no process has opened yet: a new SQLite file, or a new database in the PostgreSQL fixture."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'new' / 'studies.db'}"
    return request.getfixturevalue("pg_url")


# slow: 40 CPU-s; the fast suite opens a new file from four commands at once (test_storage_damage.py) and has
# two workers share a study (the late worker below)
@pytest.mark.slow
def test_commands_started_together_on_a_new_storage_share_it_without_duplicates(tiny_npz, tmp_path):
    """Items 2 and 3: three commands started at once on a storage nobody created yet all open it (no schema
    race), each runs its own trials, and no two trials drew the same configuration (one seed, three
    processes asking at the same moment). On SQLite; on a new PostgreSQL database the same start is
    tests/storage/test_postgres.py's three workers."""
    new_storage = f"sqlite:///{tmp_path / 'new' / 'studies.db'}"
    cmd = optimize_cmd(new_storage, tiny_npz, "--epochs", "1", "--n-trials", "2")
    results = finish([start(cmd, tmp_path) for _ in range(3)])
    for code, _out, err in results:
        assert code == 0, err[-3000:]
        assert "Traceback" not in err and "Warning" not in err, err[-3000:]
    trials = load(new_storage).get_trials()
    assert len(trials) == 6 and all(t.state in FINISHED for t in trials), [(t.number, t.state) for t in trials]
    assert sum(bool(t.user_attrs.get("baseline")) for t in trials) == 1
    assert_no_duplicate_samples(trials)


def test_one_process_with_one_seed_stays_reproducible(tiny_npz, tmp_path):
    """The samples depend on the seed and the trial number only: the same command on two new storages draws the
    same configurations, and another seed draws others."""
    def params(name: str, seed: str) -> list[dict]:
        url = f"sqlite:///{tmp_path / name}"
        code, _, err = in_process(optimize_cmd(url, tiny_npz, "--epochs", "1", "--n-trials", "2", "--seed", seed))
        assert code == 0, err[-3000:]
        return [t.params for t in load(url).get_trials()]

    first = params("a.db", "0")
    assert params("b.db", "0") == first
    assert params("c.db", "7")[1:] != first[1:]  # trial 0 is the baseline either way


def _outside_a_write(storage: str) -> bool:
    """Whether no connection of the paused worker is inside a transaction (a worker paused there would block
    every other worker on its lock, which is not the late heartbeat this test is about)."""
    if storage.startswith("sqlite"):
        con = sqlite3.connect(storage.removeprefix("sqlite:///"), timeout=0.5)
        try:
            con.execute("BEGIN IMMEDIATE")
            con.rollback()
            return True
        except sqlite3.OperationalError:
            return False
        finally:
            con.close()
    from sqlalchemy import create_engine, text

    engine = create_engine(database.normalize_url(storage))
    try:
        with engine.connect() as conn:
            busy = conn.execute(text("SELECT count(*) FROM pg_stat_activity WHERE application_name = 'cifar-tune' "
                                     "AND state <> 'idle'")).scalar()
    finally:
        engine.dispose()
    return busy == 0


def _pause_between_writes(proc: subprocess.Popen, storage: str) -> None:
    for _ in range(50):
        os.kill(proc.pid, signal.SIGSTOP)
        if _outside_a_write(storage):
            return
        os.kill(proc.pid, signal.SIGCONT)
        time.sleep(0.05)
    raise AssertionError("the worker was always inside a write")


def test_a_late_worker_whose_trial_was_taken_over_goes_on(new_storage, tiny_npz, tmp_path):
    """Item 1: worker A is paused (SIGSTOP) in the middle of its trial for longer than the grace period; worker B
    fails that trial as dead and runs its retry; A, resumed, finds its trial ended: one line, nothing of its
    result stored, and it goes on to run the trial it was asked for."""
    beat = ("--heartbeat-interval", HEARTBEAT, "--grace-period", GRACE)
    a = start(optimize_cmd(new_storage, tiny_npz, "--epochs", LATE_EPOCHS, "--n-trials", "1", *beat), tmp_path)
    try:
        deadline = time.monotonic() + 300
        while True:  # until A's first trial has stored an epoch
            assert a.poll() is None and time.monotonic() < deadline, a.communicate()[1][-3000:]
            try:
                trials = load(new_storage).get_trials(deepcopy=False)
            except Exception:  # noqa: BLE001 - the study does not exist yet
                trials = []
            if trials and trials[0].state == TrialState.RUNNING and trials[0].user_attrs.get("epochs_run"):
                break
            time.sleep(0.2)
        _pause_between_writes(a, new_storage)
        time.sleep(int(GRACE) + 2)  # A's heartbeat is now older than the grace period
        b = start(optimize_cmd(new_storage, tiny_npz, "--epochs", LATE_EPOCHS, "--n-trials", "1", *beat), tmp_path)
        code_b, out_b, err_b = finish([b])[0]
        assert code_b == 0, err_b[-3000:]
        assert "trial   0 fail     its worker stopped (no heartbeat); retried as trial 1" in out_b
    finally:
        if a.poll() is None:
            os.kill(a.pid, signal.SIGCONT)
    code_a, out_a, err_a = finish([a])[0]
    assert code_a == 0, err_a[-3000:]
    assert "Traceback" not in err_a and "Should not reach" not in err_a, err_a[-3000:]
    taken = [line for line in err_a.splitlines() if "taken over" in line]
    assert len(taken) == 1 and taken[0].startswith("trial   0 taken over") and "retried as trial 1" in taken[0]

    trials = load(new_storage).get_trials()
    assert trials[0].state == TrialState.FAIL and trials[0].value is None  # A's result was not kept
    assert trials[1].user_attrs["retry_of"] == 0 and trials[1].state in FINISHED
    workers = {t.user_attrs["worker"] for t in trials}
    a_trials = [t for t in trials if t.user_attrs["worker"] == trials[0].user_attrs["worker"]]
    assert len(workers) == 2 and len(a_trials) == 2  # A: the lost trial, then the trial it was asked for
    assert all(t.state in FINISHED for t in a_trials[1:])
    assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    assert_no_duplicate_samples(trials)


@pytest.mark.slow  # 54 CPU-s (trials long enough to race); a changed space is refused in test_resume.py
def test_a_resume_racing_a_running_study(tiny_npz, tmp_path):
    """While a command runs the study, a second one with a changed space is refused in one line and stores
    nothing; a third with the same settings joins, and the study ends with every trial of both."""
    url = f"sqlite:///{tmp_path / 'studies.db'}"
    a = start(optimize_cmd(url, tiny_npz, "--epochs", RACE_EPOCHS, "--n-trials", "3"), tmp_path)
    deadline = time.monotonic() + 300
    while True:
        assert a.poll() is None and time.monotonic() < deadline, a.communicate()[1][-3000:]
        try:
            if any(t.state == TrialState.RUNNING for t in load(url).get_trials(deepcopy=False)):
                break
        except Exception:  # noqa: BLE001 - not created yet
            pass
        time.sleep(0.2)
    space = tmp_path / "space.toml"
    space.write_text('arch = "mlp_l2"\n[params.batch_size]\ntype = "categorical"\nchoices = [16, 32, 64]\n'
                     'baseline = 32\n')
    changed = in_process(optimize_cmd(url, tiny_npz, "--epochs", RACE_EPOCHS, "--n-trials", "1", "--space", str(space)))
    same = start(optimize_cmd(url, tiny_npz, "--epochs", RACE_EPOCHS, "--n-trials", "2"), tmp_path)
    (code_a, _, err_a), (code_same, _, err_same) = finish([a, same])
    code, _, err = changed
    assert code == 2 and err.count("\n") == 1, err
    assert "search space" in err and "--study-name" in err
    assert code_a == 0 and code_same == 0, err_a[-2000:] + err_same[-2000:]
    trials = load(url).get_trials()
    assert len(trials) == 5 and all(t.state in FINISHED for t in trials)
    assert all("batch_size" not in t.params or t.params["batch_size"] in (32, 64, 128, 256) for t in trials)
    assert_no_duplicate_samples(trials)
