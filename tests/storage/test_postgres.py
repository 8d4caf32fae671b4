"""Many workers on one study in a real PostgreSQL server: sharing, dead workers, bad credentials.

Each worker is a real `python -m cifar_tune optimize` process on tiny data, as on separate machines.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from cifar_tune import cli
from cifar_tune.storage import database
from tests.helpers.pg import free_port
from tests.helpers.trial_states import assert_no_duplicate_samples

pytestmark = pytest.mark.postgres

STUDY = "cifar10-mlp_l2"
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


def optimize_cmd(url: str, data: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "cifar_tune", "optimize", "--arch", "mlp_l2", "--storage", url, "--data",
            str(data), "--val-size", "100", *args]


def env(**extra: str) -> dict:
    return {**os.environ, "PYTHONUNBUFFERED": "1", **extra}


def load(storage) -> optuna.Study:
    return optuna.load_study(study_name=STUDY, storage=storage)


def assert_distinct_numbers(trials) -> None:
    numbers = [t.number for t in trials]
    assert sorted(numbers) == list(range(len(trials))), f"duplicated or missing trial numbers: {numbers}"


@pytest.mark.slow  # 44 CPU-s (three processes); in the fast suite two workers share a study (test_races.py)
def test_three_workers_share_one_study_exactly(pg_url, tiny_npz, tmp_path, capsys):
    """Three processes started at once (as on three machines) on a new database (no tables yet: the schema race)
    with one study-wide target: exactly that many finished trials, numbered 0..n-1 without duplicates, one
    baseline, and no configuration drawn twice."""
    total = 6
    cmd = optimize_cmd(pg_url, tiny_npz, "--epochs", "1", "--heartbeat-interval", "2", "--grace-period", "8")
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path,
                              env=env(CIFAR_TUNE_TOTAL_TRIALS=str(total))) for _ in range(3)]
    try:
        outs = [p.communicate(timeout=300) for p in procs]
    finally:
        for p in procs:
            p.kill()
    for p, (out, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err[-3000:]
        assert "Traceback" not in err and "Warning" not in err, err[-3000:]
        assert pg_url.split("@")[0].rsplit(":", 1)[1] not in out + err  # the password never shows
    trials = load(pg_url).get_trials()
    assert len(trials) == total
    assert all(t.state in FINISHED for t in trials)
    assert_distinct_numbers(trials)
    assert sum(bool(t.user_attrs.get("baseline")) for t in trials) == 1 and trials[0].user_attrs["baseline"]
    assert_no_duplicate_samples(trials)
    assert all(t.user_attrs["worker"] for t in trials)  # host:pid of the process that ran it

    # The study note and figures are in the database, for a dashboard on any machine.
    import optuna_dashboard

    assert "tuning around the seed baseline" in optuna_dashboard.get_note(load(pg_url))
    assert cli.main(["studies", "--storage", pg_url]) == 0
    out = capsys.readouterr().out
    assert STUDY in out and str(total) in out and "***" not in out


@pytest.mark.slow  # 46 CPU-s (three processes); the fast suite kills a worker on SQLite (test_checkpoints.py)
def test_a_killed_worker_trial_is_failed_by_the_heartbeat_and_retried(pg_url, tiny_npz, tmp_path):
    """`--jobs 2`; SIGKILL one worker in the middle of a trial. Its trial is failed by another worker once the
    grace period passed, retried with the same parameters (linked to it), and the study still ends with the
    requested number of finished trials."""
    n, epochs = 3, 5
    cmd = optimize_cmd(pg_url, tiny_npz, "--jobs", "2", "--n-trials", str(n), "--epochs", str(epochs),
                       "--pruner", "none", "--heartbeat-interval", "1", "--grace-period", "4")
    parent = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path,
                              env=env(), start_new_session=True)  # its own process group: cleanup kills all
    try:
        victim = None
        deadline = time.time() + 180
        watcher = optuna.storages.RDBStorage(pg_url)  # one engine for every look (each load_study(url) pools its own)
        while victim is None and time.time() < deadline and parent.poll() is None:
            time.sleep(0.5)
            try:
                running = load(watcher).get_trials(states=(TrialState.RUNNING,))
            except KeyError:  # the study does not exist yet
                continue
            # In the middle of a trial: at least one epoch reported, more to come.
            victim = next((t for t in running if t.intermediate_values and "worker" in t.user_attrs), None)
        assert victim is not None, "no trial was seen running"
        pid = int(victim.user_attrs["worker"].rsplit(":", 1)[1])
        assert pid != parent.pid
        os.kill(pid, signal.SIGKILL)
        killed_at = datetime.now()
        out, err = parent.communicate(timeout=300)
    finally:
        try:
            os.killpg(parent.pid, signal.SIGKILL)  # only left-overs of a failed test: the group is ours
        except ProcessLookupError:
            pass
    assert parent.returncode == 0, err[-3000:]
    assert "was killed by SIGKILL" in err

    trials = load(pg_url).get_trials()
    assert_distinct_numbers(trials)
    dead = trials[victim.number]
    assert dead.state == TrialState.FAIL
    retries = [t for t in trials if t.system_attrs.get("failed_trial") == victim.number]
    assert len(retries) == 1
    retry = retries[0]
    assert retry.user_attrs["retry_of"] == victim.number
    assert retry.params == dead.params
    assert retry.state == TrialState.COMPLETE and retry.user_attrs["epochs_run"] == epochs
    assert retry.user_attrs["worker"] != victim.user_attrs["worker"]
    assert f"retried as trial {retry.number}" in out
    # The requested count: every trial but the dead one finished; one trial more than requested in all.
    assert [t.number for t in trials if t.state != TrialState.COMPLETE] == [victim.number]
    assert len(trials) == n + 1

    failed_after = (dead.datetime_complete - killed_at).total_seconds()
    retried_after = (retry.datetime_start - killed_at).total_seconds()
    print(f"\nkill test: trial {victim.number} killed at epoch {len(victim.intermediate_values)}; failed by the "
          f"heartbeat {failed_after:.1f} s later (grace 4 s, beat 1 s); retry trial {retry.number} started "
          f"{retried_after:.1f} s after the kill and completed {retry.duration.total_seconds():.1f} s later")
    assert 4 - 1 - 0.5 <= failed_after < 60  # stale 4 s after the last beat, which was at most 1 s before the kill


@pytest.mark.parametrize("command", ["studies", "dashboard", "optimize"])
def test_wrong_password_exits_2_in_one_line(pg_cluster, tiny_npz, tmp_path, command):
    wrong = "not-the-Password-42"
    url = pg_cluster.url(password=wrong)
    args = {"studies": ["studies"], "dashboard": ["dashboard", "--port", str(free_port())],
            "optimize": ["optimize", "--arch", "mlp_l2", "--data", str(tiny_npz), "--n-trials", "1"]}[command]
    proc = subprocess.run([sys.executable, "-m", "cifar_tune", *args, "--storage", url], capture_output=True,
                          text=True, cwd=tmp_path, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert proc.stdout == ""
    assert proc.stderr.count("\n") == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    assert wrong not in proc.stderr + proc.stdout
    assert "password authentication failed" in proc.stderr and "***" in proc.stderr
    assert not (tmp_path / "storage").exists()


def test_unreachable_server_exits_2_in_one_line(pg_cluster, tmp_path):
    url = pg_cluster.url(port=free_port())  # nothing listens there
    proc = subprocess.run([sys.executable, "-m", "cifar_tune", "studies", "--storage", url], capture_output=True,
                          text=True, cwd=tmp_path, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "cannot open storage" in proc.stderr and "Traceback" not in proc.stderr
    assert pg_cluster.password not in proc.stderr + proc.stdout


def test_libpq_style_url_and_masking(pg_url):
    """A `postgresql://` URL (as libpq and most hosting providers print it) means the installed psycopg 3."""
    plain = pg_url.replace("postgresql+psycopg://", "postgresql://")
    database.check_url(plain)
    storage = database.open_storage(plain, with_heartbeat=False)
    assert isinstance(storage, optuna.storages.RDBStorage)
    password = plain.split("@")[0].rsplit(":", 1)[1]
    assert password not in database.mask_url(plain) and "***" in database.mask_url(plain)


def test_workers_starting_at_once_on_an_empty_database(pg_url):
    """N machines started together all create Optuna's tables; plain RDBStorage lets all but one fail with a
    duplicate-key error. Every one of ours opens the storage."""
    code = ("import sys\nfrom cifar_tune.storage import database\ntry:\n    database.open_storage(sys.argv[1])\n"
            "except Exception as e:\n    print(e)\n    sys.exit(3)\n")
    procs = [subprocess.Popen([sys.executable, "-c", code, pg_url], stdout=subprocess.PIPE, text=True)
             for _ in range(6)]
    results = [(p.wait(timeout=120), p.stdout.read()) for p in procs]
    assert [rc for rc, _ in results] == [0] * 6, results
