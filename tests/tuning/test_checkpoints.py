"""Trials that survive preemption (tuning/checkpoints.py), with real processes: a `cifar-tune optimize` worker is
SIGKILLed once its trial's checkpoint after epoch 3 of 5 is in the artifact store; a second worker fails the
dead trial by its heartbeat, retries it, and the retry resumes from that checkpoint. Its curves and final
validation loss match an uninterrupted run of the same trial (same parameters, seed and data) in a study of its
own, on both engines: stock fit on TensorFlow and the fast JAX loop (KERAS_BACKEND=jax, JAX_PLATFORMS=cpu).

Determinism on CPU: no ``enable_op_determinism`` is needed; both engines repeat a run bit for bit on this CPU
(TensorFlow's CPU kernels and XLA:CPU reduce in a fixed order), and the tolerance below is 1e-6 relative.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import optuna
import pytest
from optuna.trial import TrialState

from cifar_tune.storage import database
from cifar_tune.studies.records import TrialRecord
from tests.helpers.paths import REPO
from tests.helpers.synthetic import synthetic_cifar

ARCH, STUDY, EPOCHS = "mlp_bn", "cifar10-mlp_bn", 5
GRACE = 3  # seconds (--grace-period); the heartbeat beats every second
ENGINES = {"keras": {"KERAS_BACKEND": "tensorflow"},
           "fast": {"KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu"}}


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """4,000 training images: epochs long enough (about a second) that the test sees epoch 3's checkpoint
    before the worker is far into epoch 5."""
    path = tmp_path_factory.mktemp("data") / "cifar.npz"
    x_train, y_train, x_test, y_test = synthetic_cifar(n_train=4000, n_test=100)
    np.savez(path, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    return path


def worker(engine: str, db: Path, data: Path, artifacts: Path, cwd: Path) -> subprocess.Popen:
    """A real optimize worker running one trial (trial 0 of a new study: the baseline configuration)."""
    cmd = [sys.executable, "-m", "cifar_tune", "optimize", "--arch", ARCH, "--storage", f"sqlite:///{db}",
           "--data", str(data), "--val-size", "500", "--epochs", str(EPOCHS), "--n-trials", "1", "--pruner", "none",
           "--engine", engine, "--heartbeat-interval", "1", "--grace-period", str(GRACE)]
    env = {**os.environ, **ENGINES[engine], "CIFAR_TUNE_ARTIFACTS": str(artifacts), "PYTHONUNBUFFERED": "1",
           "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO),
                                                                                   os.environ.get("PYTHONPATH")]))}
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=cwd, env=env)


def finish(proc: subprocess.Popen, timeout: float = 400) -> tuple[str, str]:
    try:
        out, err = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err[-3000:]
    return out, err


def checkpoint_epoch(db: Path) -> int:
    """The epoch of trial 0's latest checkpoint, read from the SQLite file as another process sees it (0: none)."""
    if not db.exists():
        return 0
    try:
        with sqlite3.connect(db, timeout=5) as con:
            row = con.execute("select a.value_json from trial_user_attributes a join trials t using (trial_id) "
                              "where t.number = 0 and a.key = 'checkpoint'").fetchone()
    except sqlite3.OperationalError:  # the schema is not there yet
        return 0
    return (json.loads(row[0]).get("epoch") or 0) if row else 0


def trials(db: Path) -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(study_name=STUDY, storage=database.storage_for_reading(f"sqlite:///{db}")).get_trials()


@pytest.mark.parametrize("engine", ["keras", pytest.param("fast", marks=[pytest.mark.jax, pytest.mark.skipif(
    __import__("importlib").util.find_spec("jax") is None, reason="JAX is not installed")])])
def test_a_killed_workers_trial_resumes_from_its_checkpoint(engine, data, tmp_path):
    artifacts, db, ref_db = tmp_path / "artifacts", tmp_path / "a.db", tmp_path / "ref.db"
    reference = worker(engine, ref_db, data, tmp_path / "ref-artifacts", tmp_path)  # uninterrupted, meanwhile
    a = worker(engine, db, data, artifacts, tmp_path)
    deadline = time.monotonic() + 400
    while (epoch := checkpoint_epoch(db)) < 3:  # the checkpoint after epoch 3 is stored (its pointer follows it)
        assert a.poll() is None and time.monotonic() < deadline, a.communicate()[1][-3000:]
        time.sleep(0.02)
    os.kill(a.pid, signal.SIGKILL)
    a.wait()
    assert epoch in (3, 4)
    killed = trials(db)[0]
    assert killed.state == TrialState.RUNNING and len(killed.user_attrs["curves"]["val_loss"]) in (3, 4)
    assert (artifacts / TrialRecord.read(killed).checkpoint["artifact_id"]).is_file()
    time.sleep(GRACE + 1)  # the killed worker's last beat is older than the grace period now (it beat at most then)
    out, err = finish(worker(engine, db, data, artifacts, tmp_path))
    assert f"trial   1 resumes trial 0 from its checkpoint after epoch {epoch}" in out + err

    dead, retry = trials(db)
    record = TrialRecord.read(retry)
    assert dead.state == TrialState.FAIL and retry.state == TrialState.COMPLETE and retry.params == dead.params
    assert record.retry_of == 0 and record.resumed_from_epoch == epoch and record.resumed_from_trial == 0
    assert record.epochs_run == EPOCHS and sorted(retry.intermediate_values) == list(range(EPOCHS))
    # the retry trained only the remaining epochs: it wrote checkpoints after those but the last one alone
    assert record.checkpoint["count"] == EPOCHS - 1 - epoch and record.checkpoint["artifact_id"] is None
    assert not list(artifacts.glob("checkpoint-*"))  # the dead trial's checkpoint and the retry's are removed

    finish(reference)
    (whole,) = trials(ref_db)
    assert whole.params == retry.params and whole.state == TrialState.COMPLETE
    curves, resumed = whole.user_attrs["curves"], record.curves
    print(f"\n{engine} val_loss uninterrupted: {curves['val_loss']}\n{engine} val_loss resumed at epoch {epoch}: "
          f"{resumed['val_loss']}")
    for key in ("loss", "val_loss", "val_accuracy"):
        np.testing.assert_allclose(resumed[key], curves[key], rtol=1e-6, err_msg=key)
    assert retry.value == pytest.approx(whole.value, rel=1e-6)
    assert [retry.intermediate_values[i] for i in range(EPOCHS)] == pytest.approx(curves["val_loss"], rel=1e-6)


def test_stock_fit_resumed_in_process_repeats_the_uninterrupted_run(tmp_path):
    """The engine contract alone (TensorFlow, stock fit): a run resumed from its state after epoch 2 (through a
    saved .npz) has the uninterrupted run's history; a state that does not fit, or lies outside the run, is refused."""
    from cifar_tune import engines

    x, y, xv, yv = synthetic_cifar(n_train=200, n_test=60)
    spec = engines.TrainSpec("cnn_da", {"batch_size": 32, "flip": True, "translate": 0.1}, epochs=4, seed=3,
                             engine="keras")
    states = []
    whole = engines.train(spec, x, y, xv, yv, checkpoint=states.append)
    assert [s.epoch for s in states] == [1, 2, 3, 4]
    states[1].save(tmp_path / "state.npz")
    resume = engines.Resume.load(tmp_path / "state.npz")
    later = []
    resumed = engines.train(spec, x, y, xv, yv, resume=resume, checkpoint=later.append)
    assert [s.epoch for s in later] == [3, 4] and resumed.epochs_run == 4
    assert resumed.history == whole.history  # bit for bit on CPU
    with pytest.raises(ValueError, match="does not fit"):
        engines.train(engines.TrainSpec("cnn", {"batch_size": 32}, epochs=4, engine="keras"), x, y, xv, yv,
                      resume=resume)
    with pytest.raises(ValueError, match="cannot resume at epoch 4 of 4"):
        engines.train(spec, x, y, xv, yv, resume=states[3])


def test_a_retry_of_a_retry_finds_the_nearest_checkpoint_and_a_lost_one_starts_afresh(tmp_path):
    """The chain of retries (Optuna's ``failed_trial`` where no record names it) and the removal of every
    checkpoint of the chain once the trial ends; a checkpoint whose file is gone (an artifact folder not shared)
    costs one warning and the trial starts at epoch 0."""
    from cifar_tune import engines, progress
    from cifar_tune.tuning.checkpoints import TrialCheckpoints

    store = optuna.artifacts.FileSystemArtifactStore(str(tmp_path))
    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 'db.sqlite'}")
    state = engines.Resume(2, [np.ones((2, 2), np.float32)], [np.zeros(1, np.int64)], {"val_loss": [0.5, 0.25]})
    first = study.ask()
    TrialCheckpoints(first, store, epochs=5).save(state)
    study.tell(first, state=TrialState.FAIL)
    second = study.ask()  # a retry of the first (Optuna's own mark) that died before its first checkpoint
    study._storage.set_trial_system_attr(second._trial_id, "failed_trial", first.number)
    study.tell(second, state=TrialState.FAIL)
    third = study.ask()
    TrialRecord.update(third, retry_of=second.number)
    saved, events = TrialCheckpoints(third, store, epochs=5), []
    with progress.reporting(events.append):
        resumed = saved.resume()
        assert events == [] and "resumed_from_epoch" not in third.user_attrs  # nothing before the engine restored it
        saved.resumed()
    assert [e.text for e in events] == ["trial   2 resumes trial 0 from its checkpoint after epoch 2"]
    assert resumed.epoch == 2 and resumed.history == state.history and resumed.model[0].tolist() == [[1, 1], [1, 1]]
    assert third.user_attrs["resumed_from_epoch"] == 2 and third.user_attrs["resumed_from_trial"] == first.number
    assert study.trials[2].intermediate_values == {0: 0.5, 1: 0.25}
    saved.save(engines.Resume(3, resumed.model, resumed.optimizer, {"val_loss": [0.5, 0.25, 0.125]}))
    saved.save(engines.Resume(4, resumed.model, resumed.optimizer, {"val_loss": [0.5, 0.25, 0.125, 0.1]}))
    assert len(list(tmp_path.glob("checkpoint-*"))) == 2  # the first trial's and the third's latest
    saved.remove()
    assert not list(tmp_path.glob("checkpoint-*"))
    stats = TrialRecord.read(study.trials[2]).checkpoint
    assert stats["artifact_id"] is None and stats["epoch"] == 4 and stats["count"] == 2 and stats["bytes"] > 100
    study.tell(third, 0.1)

    fourth = study.ask()  # a retry of the first again, whose checkpoint is gone now
    TrialRecord.update(fourth, retry_of=first.number)
    with progress.reporting(events.append):
        assert TrialCheckpoints(fourth, store, epochs=5).resume() is None
    assert "the checkpoint of trial 0 cannot be read" in events[-1].text and events[-1].level == logging.WARNING
    assert "resumed_from_epoch" not in fourth.user_attrs
