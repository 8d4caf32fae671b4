"""A Jupyter kernel's kept workers (``executors.KeptProcesses``): a call's trials run in the worker process the
previous call left (no second TensorFlow import), in the caller's working folder at the time of the call; a
worker that died between calls, or one past its memory ceiling, is replaced by a fresh one. Real worker processes
(``python -m cifar_tune.cli.worker --serve``) on tiny data, driven by the supervisor as ``ct.optimize`` in a
kernel drives them (tests/test_notebook_memory.py does it in a real kernel)."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from cifar_tune import progress
from cifar_tune.storage import database
from cifar_tune.studies.presets import make_settings
from cifar_tune.studies.records import TrialRecord
from cifar_tune.tuning import executors
from cifar_tune.tuning.supervisor import supervise


@pytest.fixture
def call(tmp_path, tiny_npz, monkeypatch):
    """``call(name, **settings)``: one call's study ``name`` (one 1-epoch trial) on kept workers; returns the
    worker ids its trials recorded. The workers are ended after the test, as at a kernel's end."""
    monkeypatch.setattr(executors, "_KEPT", {})
    url = f"sqlite:///{tmp_path / 'kept.db'}"

    def run(name: str, **given) -> list[str]:
        given = {"data": str(tiny_npz), "val_size": 60, "n_trials": 1, "epochs": 1, "pruner": "none",
                 "storage": url, "study_name": name, **given}
        settings = make_settings("mlp_l2", **given)
        assert supervise(settings, executors.KeptProcesses(settings, relay=True)) == (0, progress.ENDED_TRIALS)
        reading = database.storage_for_reading(given["storage"])
        trials = optuna.load_study(study_name=name, storage=reading).get_trials()
        assert [t.state for t in trials] == [TrialState.COMPLETE] * given["n_trials"]
        return [TrialRecord.read(t).worker for t in trials]

    yield run
    executors._end_kept_workers()


def _ended(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] == "Z"  # a zombie: dead, not yet reaped
    except FileNotFoundError:
        return True


def test_the_next_call_runs_in_the_kept_worker_and_a_dead_one_is_replaced(call, tiny_npz, tmp_path, monkeypatch):
    (first,) = call("a")
    # the kernel changed folders after the worker started: a relative storage URL (the default one is) means the
    # new folder's file
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert call("b", storage="sqlite:///relative.db") == [first]
    assert (elsewhere / "relative.db").is_file() and not (tmp_path / "relative.db").exists()

    pid = int(first.rsplit(":", 1)[1])
    os.kill(pid, signal.SIGKILL)  # dies between calls
    deadline = time.monotonic() + 30
    while not _ended(pid):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    (fresh,) = call("c")
    assert fresh != first

    # a worker past its memory ceiling (64 MB, the least allowed) leaves after its job: the next call starts another
    (heavy,) = call("d", worker_memory=64)
    assert heavy == fresh
    (after,) = call("e")
    assert after != heavy

    # within a call a slot whose worker ended its share gets a fresh worker (one trial per process here: the kept
    # one runs the first), and a worker asked for a count of trials per process is not kept for the next call
    first_share, second_share = call("f", n_trials=2, trials_per_process=1)
    assert first_share == after and second_share != after
    (last,) = call("g")
    assert last not in (after, second_share)
