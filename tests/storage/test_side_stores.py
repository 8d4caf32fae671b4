"""Side stores never cost a trial, and nothing loses the baseline (issue 28, items 1 and 2).

1. A checkpoint that does not fit (an older layout, another model) falls back to epoch 0 with one warning, as an
   unreadable one does; a study never ends up without its baseline trial while one is owed.
2. A full disk under the artifacts (a real 64 KiB tmpfs mounted for the test; skipped where mounting is not
   permitted): a checkpoint that cannot be written is a warning, the trial goes on, nothing half-written stays.
   The same for every file a command writes as output (``baseline --out``: each file whole or absent).

Real parts: a real SQLite storage, Optuna's own heartbeat failing a stale trial and queueing its retry, the CLI
in-process, a real small tmpfs for the full disk.
"""

from __future__ import annotations

import contextlib
import logging
import subprocess
import time
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
import pytest
from optuna.trial import TrialState

from cifar_tune import cli, engines, progress
from cifar_tune.data import safe_files
from cifar_tune.storage.artifacts import WholeFileArtifactStore, artifact_store
from cifar_tune.studies import presets
from cifar_tune.studies.records import TrialRecord
from cifar_tune.tuning import loop
from cifar_tune.tuning.checkpoints import TrialCheckpoints
from cifar_tune.tuning.study import create_or_load, open_and_prepare

ARCH, STUDY, EPOCHS = "mlp_l2", "cifar10-mlp_l2", 2
GRACE = 3  # seconds; the heartbeat beats every second
# The command every test runs (and the settings it creates the study with: a resume must match them).
KEYWORDS = dict(val_size=100, epochs=EPOCHS, pruner="none", heartbeat_interval=1, grace_period=GRACE)
FLAGS = ["--val-size", "100", "--epochs", str(EPOCHS), "--pruner", "none", "--heartbeat-interval", "1",
         "--grace-period", str(GRACE)]


def optimize(capsys, data: Path, n_trials: int = 1) -> tuple[int, str, str]:
    status = cli.main(["optimize", "--arch", ARCH, "--data", str(data), "--n-trials", str(n_trials), *FLAGS])
    out, err = capsys.readouterr()
    return status, out, err


def new_study(data: Path):
    """The study as ``optimize`` creates it (the baseline queued first), without running a trial; its space."""
    settings = presets.make_settings(ARCH, data=str(data), **KEYWORDS)
    storage, space, split = open_and_prepare(settings)
    study, created = create_or_load(settings, storage, space, split)
    assert created
    return study, space


def start_baseline(study: optuna.Study, space) -> optuna.Trial:
    """Trial 0, the queued baseline, started as a worker starts it (its parameters suggested, a heartbeat)."""
    trial = study.ask()
    space.suggest(trial)
    assert TrialRecord.read(trial).baseline
    study._storage.record_heartbeat(trial._trial_id)
    return trial


def die(study: optuna.Study) -> None:
    """The worker of the running trial is gone: its heartbeat goes stale, and Optuna's heartbeat check fails it
    and queues its retry (the baseline flag and ``retry_of`` carried over), as the next worker's would."""
    time.sleep(GRACE + 1)
    optuna.storages.fail_stale_trials(study)


def trials() -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(study_name=STUDY, storage="sqlite:///storage/cifar_tune.db").get_trials()


# --- 1. a checkpoint that does not fit costs a warning, never the (baseline) trial ------------------------------


def misfit(epoch: int = 1, curves: int | None = None) -> engines.Resume:
    """A checkpoint of another layout: arrays of shapes no model of the study has."""
    history = {k: [2.0] * (epoch if curves is None else curves) for k in ("loss", "accuracy", "val_loss",
                                                                          "val_accuracy")}
    return engines.Resume(epoch, [np.zeros((3, 3), np.float32)], [np.zeros((), np.int64)], history)


def test_the_baselines_retry_with_a_checkpoint_that_does_not_fit_trains_from_epoch_0(tiny_npz, capsys,
                                                                                        monkeypatch, tmp_path):
    """The issue's case: the baseline's worker died after a checkpoint that does not fit this model (an older
    layout). Its retry said it resumed, then failed with ``ValueError: the checkpoint does not fit``, and the study
    lost its baseline. Now one warning, epoch 0, and the retry completes as the baseline."""
    monkeypatch.setenv("CIFAR_TUNE_ARTIFACTS", str(tmp_path / "artifacts"))
    study, space = new_study(tiny_npz)
    dead = start_baseline(study, space)
    TrialCheckpoints(dead, artifact_store(), EPOCHS).save(misfit())
    die(study)
    status, out, err = optimize(capsys, tiny_npz)
    assert status == 0, err
    assert "resumes trial 0" not in out + err
    assert ("warning: trial 1: the checkpoint of trial 0 cannot be used (the checkpoint does not fit this model and "
            "optimizer); starting at epoch 0") in err
    first, retry = trials()
    record = TrialRecord.read(retry)
    assert first.state == TrialState.FAIL and retry.state == TrialState.COMPLETE
    assert record.baseline and record.retry_of == 0 and retry.params == first.params
    assert record.resumed_from_epoch is None and record.epochs_run == EPOCHS
    assert sorted(retry.intermediate_values) == list(range(EPOCHS))  # its own curve, not the checkpoint's 2.0
    assert retry.intermediate_values[0] != 2.0
    assert not list((tmp_path / "artifacts").glob("checkpoint-*"))  # the useless checkpoint is removed too


@pytest.mark.parametrize(("state", "problem"), [
    (misfit(epoch=2), "it is after epoch 2, outside this trial's 2"),
    (misfit(epoch=1, curves=0), "its curves do not match its 1 epochs (an older layout?)"),
], ids=["epoch outside the trial", "curves of another length"])
def test_every_checkpoint_problem_found_before_training_is_one_warning_and_epoch_0(tmp_path, state, problem):
    """What can be checked without the model: the epoch inside the trial's (a checkpoint of a longer run) and
    the curves as long as the epoch (an older layout). Both were taken silently, or half-reported, before."""
    store = WholeFileArtifactStore(tmp_path)
    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 'db.sqlite'}")
    first = study.ask()
    TrialCheckpoints(first, store, epochs=5).save(state)
    study.tell(first, state=TrialState.FAIL)
    retry, events = study.ask(), []
    TrialRecord.update(retry, retry_of=first.number)
    with progress.reporting(events.append):
        saved = TrialCheckpoints(retry, store, epochs=EPOCHS)
        assert saved.resume() is None
        saved.resumed()  # the engine starts afresh: nothing reaches the trial
    assert [(e.level, e.text) for e in events] == [
        (logging.WARNING, f"warning: trial 1: the checkpoint of trial 0 cannot be used ({problem}); starting at "
                          "epoch 0")]
    assert "resumed_from_epoch" not in retry.user_attrs and study.trials[1].intermediate_values == {}


# --- 1. the baseline is queued again while it is owed -------------------------------------------------------


def lose_baseline(study: optuna.Study, space, reason: str | None) -> None:
    """The baseline's worker dies; its retry (Optuna's) then fails with ``reason`` (None: its worker died too, and
    a retry is not retried again)."""
    start_baseline(study, space)
    die(study)
    retry = study.ask()
    assert TrialRecord.read(retry).baseline and TrialRecord.read(retry).retry_of == 0
    if reason:
        TrialRecord.update(retry, fail_reason=reason)
    study.tell(retry, state=TrialState.FAIL)


LOST = [
    ("ValueError: the checkpoint does not fit this model and optimizer", True),  # the (an older version)
    (None, True),  # the retry's worker died too: Optuna retries a dead trial once only
    ("interrupted by the user", True),
    ("diverged at epoch 1: loss nan", False),  # failed by itself: it would fail again
]


@pytest.mark.parametrize(("reason", "owed"), LOST, ids=["checkpoint", "dead retry", "interrupted", "diverged"])
def test_a_resume_runs_the_baseline_again_when_the_study_lost_it(tiny_npz, capsys, reason, owed):
    """The issue's study: the baseline's retry failed, and the next resume ran a sampled trial instead: the
    study had lost its baseline for good. A resume queues it again, as it was queued the first time."""
    study, space = new_study(tiny_npz)
    lose_baseline(study, space, reason)
    status, out, err = optimize(capsys, tiny_npz)
    assert status == 0, err
    last = trials()[-1]
    assert last.number == 2 and last.state == TrialState.COMPLETE
    assert TrialRecord.read(last).baseline is owed
    assert (last.params == space.baseline_params()) is owed
    assert TrialRecord.read(last).retry_of is None


def test_a_baseline_lost_while_the_study_runs_is_queued_before_the_next_trial(tiny_npz):
    """Not only at a resume: the tuning loop looks before every trial it asks for (a dead retry of the baseline
    while other workers go on), under the study lock, and queues it once."""
    study, space = new_study(tiny_npz)
    lose_baseline(study, space, None)
    asked = []

    def objective(trial: optuna.Trial) -> float:  # no training: which trial the loop asked for is the point
        asked.append(trial)
        space.suggest(trial)
        return 1.0

    for _ in range(2):
        loop.run_trial(study, objective)
    assert [TrialRecord.read(t).baseline for t in asked] == [True, False]
    assert study.trials[2].params == space.baseline_params() and study.trials[2].state == TrialState.COMPLETE
    assert len([t for t in study.trials if t.state == TrialState.WAITING]) == 0  # queued once


# --- 2. a full disk ----------------------------------------------------------------------------------------


@contextlib.contextmanager
def full_disk(path: Path, size: str = "64k"):
    """A real tmpfs of ``size`` mounted at ``path`` (root only; skipped where mounting is not permitted)."""
    path.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True,
                          text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here ({done.stderr.strip() or done.returncode})")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def test_a_checkpoint_write_on_a_full_disk_is_a_warning_and_leaves_nothing(tiny_npz, capsys, monkeypatch,
                                                                            tmp_path):
    """The issue's case: ``$CIFAR_TUNE_ARTIFACTS`` on a small tmpfs. The checkpoint write failed every trial
    (``OSError: [Errno 28] No space left on device``, "No trial completed yet") and left partial and empty files
    nothing referenced. Now one warning per trial, the trials complete, and every file left is one a trial
    references, whole."""
    with full_disk(tmp_path / "artifacts") as folder:
        monkeypatch.setenv("CIFAR_TUNE_ARTIFACTS", str(folder))
        # mlp_l2's checkpoint is about 19 MB: no checkpoint fits; 3 epochs: two checkpoints tried per trial
        status = cli.main(["optimize", "--arch", ARCH, "--data", str(tiny_npz), "--n-trials", "2", "--val-size",
                           "100", "--epochs", "3", "--pruner", "none"])
        out, err = capsys.readouterr()
        assert status == 0, err
        done = optuna.load_study(study_name=STUDY, storage="sqlite:///storage/cifar_tune.db").get_trials()
        assert [t.state for t in done] == [TrialState.COMPLETE] * 2
        for t in done:
            assert err.count(f"warning: trial {t.number}: its checkpoint after epoch") == 1  # the first only
        assert ("warning: trial 0: its checkpoint after epoch 1 was not stored in $CIFAR_TUNE_ARTIFACTS (OSError: "
                "[Errno 28] No space left on device") in err
        assert "a retry starts afresh" in err
        referenced = {k.split(":", 1)[1] for t in done for k in t.system_attrs if k.startswith("artifacts:")}
        left = {p.name for p in folder.iterdir()}
        assert left <= referenced, f"files nothing references: {left - referenced}"


def test_baseline_out_on_a_full_disk_leaves_only_whole_files(tiny_npz, capsys, tmp_path):
    """The issue's case: ``baseline --out`` on a full disk left partial history.csv, metrics.* and report.html.
    Now every file there is whole or absent (the report, about 5 MB with plotly.js, cannot fit in 64 KiB), and the
    command ends with its one line."""
    with full_disk(tmp_path / "out") as out_dir:
        status = cli.main(["baseline", "--archs", "mlp_l2", "--epochs", "1", "--data", str(tiny_npz), "--out",
                           str(out_dir)])
        out, err = capsys.readouterr()
        assert status == 1 and "No space left on device" in err.strip().splitlines()[-1], err
        assert "Traceback" not in err
        left = sorted(p.name for p in out_dir.iterdir())
        assert "report.html" not in left and not [n for n in left if n.startswith(".")], left
        assert "kept-runs.json" in left  # the training is kept: the same command, with room, writes the rest
        if "metrics.csv" in left:
            assert list(pd.read_csv(out_dir / "metrics.csv")["Model"]) == ["MLP with L2"]
        if "history.csv" in left:
            assert len(pd.read_csv(out_dir / "history.csv")) == 1


def test_a_write_that_fails_leaves_the_old_file_and_no_temporary_one(tmp_path):
    """The one way every output is written (``safe_files.replaced_whole``: tables, reports, models, the
    artifact store): on a full disk the target keeps its old content and nothing else stays."""
    with full_disk(tmp_path / "disk") as disk:
        target = safe_files.write_text_whole(disk / "report.html", "old report\n")
        with pytest.raises(OSError, match="No space left on device"):
            safe_files.write_text_whole(target, "x" * 200_000)
        assert target.read_text() == "old report\n" and [p.name for p in disk.iterdir()] == ["report.html"]
        (tmp_path / "big").write_bytes(b"y" * 200_000)
        with pytest.raises(OSError, match="No space left on device"), open(tmp_path / "big", "rb") as f:
            WholeFileArtifactStore(disk).write("learning-curves.svg", f)
        assert [p.name for p in disk.iterdir()] == ["report.html"]
