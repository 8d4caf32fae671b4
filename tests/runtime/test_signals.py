"""Ctrl-C and SIGTERM stop cleanly: the running trial is failed with its reason, no traceback, no worker left
behind; the printed resume command resumes (run in this process, ``cli.main``: it needs no signal)."""

from __future__ import annotations

import contextlib
import io
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from cifar_tune import cli
from tests.helpers.trial_states import wait_for_states

DB = "storage/cifar_tune.db"
# Epochs of each trial: trial 1 must still train when the signal comes, up to 3 s after it was seen RUNNING (a poll
# every second, then 2 s); 20 epochs of the CNN on tiny data take longer than that on this 2-core CPU.
EPOCHS = "20"


def start(tiny_npz: Path, cwd: Path, *extra: str) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "cifar_tune", "optimize", "--arch", "cnn", "--data", str(tiny_npz),
           "--val-size", "100", "--epochs", EPOCHS, "--n-trials", "4", "--pruner", "none", "--seed", "7", *extra]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=cwd,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"}, start_new_session=True)


def wait_for(cwd: Path, want, timeout: float = 240) -> None:
    wait_for_states(cwd / DB, want, timeout)


def descendants(pid: int) -> set[int]:
    parents = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parents[int(stat.parent.name)] = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            pass
    found, frontier = set(), {pid}
    while frontier:
        frontier = {p for p, pp in parents.items() if pp in frontier} - found
        found |= frontier
    return found


@pytest.mark.parametrize("sig, code, reason", [(signal.SIGINT, 130, "interrupted by the user"),
                                               (signal.SIGTERM, 143, "terminated (SIGTERM)")])
def test_a_signal_fails_the_running_trial_and_the_printed_command_resumes(tiny_npz, tmp_path, sig, code, reason):
    proc = start(tiny_npz, tmp_path)
    try:
        wait_for(tmp_path, lambda s: s[:2] == ["COMPLETE", "RUNNING"])  # trial 0 done, trial 1 running
        time.sleep(2)
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == code, err
    assert "Traceback" not in err, err
    study = optuna.load_study(study_name="cifar10-cnn", storage=f"sqlite:///{tmp_path / DB}")
    assert [t.state for t in study.trials] == [TrialState.COMPLETE, TrialState.FAIL]
    assert study.trials[1].user_attrs["fail_reason"] == reason
    assert len(err.strip().splitlines()) == 1, err  # one line: what stopped, what is kept, the resume command
    line = err.strip()
    assert line.startswith(f"cifar-tune: {'interrupted (Ctrl-C)' if code == 130 else 'terminated (SIGTERM)'}: ")
    resume = shlex.split(line.split("resume with: ", 1)[1])
    assert resume[:2] == ["cifar-tune", "optimize"] and "--epochs" in resume and "--seed" in resume
    err = io.StringIO()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
        status = cli.main([*resume[1:], "--n-trials", "1"])  # in tmp_path, this test's working folder
    assert status == 0, err.getvalue()  # the study's settings were all kept: it resumes, not refuses
    study = optuna.load_study(study_name="cifar10-cnn", storage=f"sqlite:///{tmp_path / DB}")
    assert [t.state for t in study.trials][-1] == TrialState.COMPLETE and len(study.trials) == 3


@pytest.mark.parametrize("to_group, sig, code, reason", [
    (False, signal.SIGTERM, 143, "terminated (SIGTERM)"),  # a scheduler or `docker stop`: the supervisor only
    (True, signal.SIGINT, 130, "interrupted by the user"),  # Ctrl-C in a terminal: every process of the group
])
def test_a_signal_to_a_supervisor_stops_its_workers_and_fails_their_trials(tiny_npz, tmp_path, to_group, sig, code,
                                                                           reason):
    proc = start(tiny_npz, tmp_path, "--jobs", "2")
    try:
        wait_for(tmp_path, lambda s: s.count("RUNNING") == 2)
        workers = descendants(proc.pid)
        assert len(workers) >= 2
        if to_group:
            os.killpg(proc.pid, sig)
        else:
            proc.send_signal(sig)
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == code, err
    assert "Traceback" not in err, err
    time.sleep(1)
    assert not [p for p in workers if Path(f"/proc/{p}").exists()], "a worker outlived its supervisor"
    study = optuna.load_study(study_name="cifar10-cnn", storage=f"sqlite:///{tmp_path / DB}")
    assert TrialState.RUNNING not in [t.state for t in study.trials]
    failed = [t for t in study.trials if t.state == TrialState.FAIL]
    assert len(failed) == 2 and all(t.user_attrs.get("fail_reason") == reason for t in failed)
