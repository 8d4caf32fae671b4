"""`cifar-tune optimize` / `studies` end to end on tiny data, with a real SQLite file."""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import optuna
import pytest
from optuna.trial import TrialState

from cifar_tune import cli
from cifar_tune.studies import spaces
from tests.helpers.synthetic import synthetic_cifar

DB = Path("storage/cifar_tune.db")
URL = "sqlite:///storage/cifar_tune.db"
TINY = ["--epochs", "2", "--val-size", "100"]


def optimize(data: Path, *args: str) -> int:
    return cli.main(["optimize", "--data", str(data), *TINY, *args])


def load(name: str = "cifar10-cnn") -> optuna.Study:
    return optuna.load_study(study_name=name, storage=URL)


def write(path: Path, body: str) -> Path:
    path.write_text(textwrap.dedent(body))
    return path


def lr_space(tmp_path: Path, other_lr: float) -> Path:
    """A space whose only knob is the learning rate: the seed's 1e-3 or ``other_lr``."""
    return write(tmp_path / "lr.toml", f"""
        arch = "mlp_l2"
        [params.learning_rate]
        type = "categorical"
        choices = [0.001, {other_lr!r}]
        baseline = 0.001
        """)


def test_study_with_baseline_first_and_full_trial_records(tiny_npz, capsys):
    assert optimize(tiny_npz, "--arch", "cnn", "--n-trials", "3") == 0
    out = capsys.readouterr().out
    assert DB.is_file()
    study = load()
    trials = study.get_trials()
    assert len(trials) == 3
    assert trials[0].params == spaces.load("cnn").baseline_params()
    assert trials[0].user_attrs["baseline"] is True
    assert sum(bool(t.user_attrs.get("baseline")) for t in trials) == 1
    done = [t for t in trials if t.state == TrialState.COMPLETE]
    assert done and trials[0].state == TrialState.COMPLETE
    for t in done:
        assert sorted(t.intermediate_values) == [0, 1]  # validation loss reported every epoch
        assert t.value == pytest.approx(t.intermediate_values[1])
        a = t.user_attrs
        assert set(a["curves"]) == {"loss", "accuracy", "val_loss", "val_accuracy"}
        assert all(len(v) == 2 for v in a["curves"].values())
        assert a["val_accuracy"] == a["curves"]["val_accuracy"][-1]
        assert a["epochs_run"] == 2 and a["params"] > 0 and a["seconds"] > 0
        assert a["backend"] == "tensorflow" and a["device"] == "cpu" and a["engine"] == "keras"
        assert "val 100 seed 0" in a["data"] and a["config"]["batch_size"] in (32, 64, 128, 256)
    assert "trial   0 complete" in out and "(baseline)" in out
    assert "baseline trial   0" in out and "best     trial" in out
    assert "cifar-tune dashboard --storage" in out


def test_resume_adds_trials_and_never_a_second_baseline(tiny_npz, capsys):
    assert optimize(tiny_npz, "--arch", "mlp_l2", "--n-trials", "2") == 0
    first = [t.params for t in load("cifar10-mlp_l2").trials]
    assert optimize(tiny_npz, "--arch", "mlp_l2", "--n-trials", "2") == 0
    trials = load("cifar10-mlp_l2").get_trials()
    assert [t.number for t in trials] == [0, 1, 2, 3]
    assert sum(bool(t.user_attrs.get("baseline")) for t in trials) == 1
    assert [t.params for t in trials[2:]] != first  # the resumed sampler does not replay the first run
    assert "resuming (2 trials stored)" in capsys.readouterr().out

    assert cli.main(["studies"]) == 0
    out = capsys.readouterr().out
    assert "cifar10-mlp_l2" in out and "mlp_l2" in out


def test_resume_with_other_data_is_refused(tiny_npz, tmp_path, capsys):
    assert optimize(tiny_npz, "--arch", "mlp_l2", "--n-trials", "1") == 0
    capsys.readouterr()
    assert optimize(tiny_npz, "--arch", "mlp_l2", "--n-trials", "1", "--val-size", "120") == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--study-name" in err and "val 120" in err
    assert len(load("cifar10-mlp_l2").trials) == 1


def test_median_pruner_prunes_the_hopeless_trials(tiny_npz, tmp_path):
    """Deterministic pruning: a learning rate of 1e-9 cannot lower the loss, so at epoch 1 such a trial is
    worse than the completed baseline and the median pruner (1 startup trial, no warm-up) stops it."""
    preset = write(tmp_path / "prune.toml", """
        n_trials = 8
        sampler = "random"
        pruner = "median"
        median_startup_trials = 1
        median_warmup_epochs = 0
        seed = 3
        """)
    space = lr_space(tmp_path, 1e-9)
    assert optimize(tiny_npz, "--arch", "mlp_l2", "--preset", str(preset), "--space", str(space)) == 0
    trials = load("cifar10-mlp_l2").trials
    slow = [t for t in trials if t.params["learning_rate"] == 1e-9]
    assert slow, "the seeded sampler must pick the hopeless learning rate at least once"
    assert all(t.state == TrialState.PRUNED and t.last_step == 0 for t in slow)
    assert all(t.state == TrialState.COMPLETE for t in trials if t.params["learning_rate"] == 0.001)
    assert all(t.user_attrs["curves"]["val_loss"] for t in slow)  # pruned trials keep their curves


def test_successive_halving_prunes_the_hopeless_trials_at_its_first_rung(tiny_npz, tmp_path):
    """Optuna's SuccessiveHalvingPruner on epoch indexes: its first rung is after the second epoch (step 1), where a
    trial must be as good as the best of those that reached it (fewer than 3 there). A learning rate of 1e-9 cannot
    lower the loss, so such a trial stops after two of its three epochs; the seed's learning rate trains as the
    baseline does (the same curve) and finishes."""
    preset = write(tmp_path / "sha.toml", """
        n_trials = 6
        sampler = "random"
        pruner = "successive-halving"
        seed = 3
        """)
    space = lr_space(tmp_path, 1e-9)
    assert optimize(tiny_npz, "--arch", "mlp_l2", "--preset", str(preset), "--space", str(space),
                    "--epochs", "3") == 0
    trials = load("cifar10-mlp_l2").trials
    slow = [t for t in trials if t.params["learning_rate"] == 1e-9]
    assert slow, "the seeded sampler must pick the hopeless learning rate at least once"
    assert all(t.state == TrialState.PRUNED and t.last_step == 1 for t in slow)
    assert all(t.state == TrialState.COMPLETE and t.last_step == 2
               for t in trials if t.params["learning_rate"] == 0.001)


def test_diverging_trial_fails_with_its_reason_and_the_study_goes_on(tiny_npz, tmp_path, capsys):
    preset = write(tmp_path / "p.toml", 'n_trials = 5\nsampler = "random"\npruner = "none"\nseed = 1\n')
    space = lr_space(tmp_path, 1e30)  # Adam's first step sends the weights to ~1e30: inf, then NaN
    assert optimize(tiny_npz, "--arch", "mlp_l2", "--preset", str(preset), "--space", str(space)) == 0
    trials = load("cifar10-mlp_l2").trials
    assert len(trials) == 5
    bad = [t for t in trials if t.params["learning_rate"] == 1e30]
    assert bad
    for t in bad:  # one line each, "diverged at epoch k: loss nan" (or inf), shown in the trial's line
        assert t.state == TrialState.FAIL
        assert re.fullmatch(r"diverged at epoch \d+: loss (nan|inf|-inf)", t.user_attrs["fail_reason"])
    assert all(t.state == TrialState.COMPLETE for t in trials if t.params["learning_rate"] == 0.001)
    out, err = capsys.readouterr()
    assert f"trial {bad[0].number:>3} fail     diverged at epoch" in out
    assert "Traceback" not in out + err and "Trial" not in err  # no traceback, no Optuna failure log


def db_digest() -> str:
    return hashlib.sha256(DB.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def one_study(tmp_path_factory) -> tuple[Path, Path]:
    """(data, database): a study of one mlp_l2 trial, made once for the module's refusals (each test works on its
    own copy of the database)."""
    folder = tmp_path_factory.mktemp("one-study")
    data = folder / "tiny.npz"
    x_train, y_train, x_test, y_test = synthetic_cifar()
    np.savez(data, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    db = folder / "studies.db"
    assert optimize(data, "--arch", "mlp_l2", "--n-trials", "1", "--storage", f"sqlite:///{db}") == 0
    return data, db


@pytest.mark.parametrize("args, message", [
    (["--arch", "cnn", "--space", "{bad}"], "params.dropout"),
    (["--arch", "nope"], "invalid choice: 'nope'"),
    (["--arch", "cnn", "--preset", "nope"], "unknown preset 'nope'"),
    (["--arch", "cnn", "--storage", "nonsense://"], "storage"),
    (["--arch", "cnn", "--n-trials", "0"], "argument --n-trials: must be an integer in 1..1000000, got '0'"),
])
def test_bad_input_exits_2_and_leaves_storage_untouched(one_study, tmp_path, capsys, args, message):
    tiny_npz, db = one_study
    DB.parent.mkdir()
    shutil.copyfile(db, DB)  # a study in the default storage, as `optimize --arch mlp_l2 --n-trials 1` left it
    before = db_digest()
    bad = write(tmp_path / "bad.toml", 'arch = "cnn"\n[params.dropout]\ntype = "float"\nlow = 0.3\nhigh = 0.5\n'
                                       'baseline = 0.0\n')
    capsys.readouterr()
    assert optimize(tiny_npz, *[a.replace("{bad}", str(bad)) for a in args]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err and "Traceback" not in err
    assert db_digest() == before
    assert [s.study_name for s in optuna.get_all_study_summaries(URL)] == ["cifar10-mlp_l2"]


def test_bad_data_creates_no_storage(tmp_path, capsys):
    assert cli.main(["optimize", "--arch", "cnn", "--data", str(tmp_path / "missing.npz")]) == 2
    assert "data path not found" in capsys.readouterr().err
    assert not DB.exists()


@pytest.mark.slow
def test_memory_stays_bounded_over_many_trials(tiny_npz, tmp_path):
    """KerasTuner's known weakness: memory grows with every trial. Keras's TensorFlow trainer keeps each fitted
    model's variables alive even after `clear_session()` (an open TF/Keras issue), about 50 MB a trial for these
    MLPs. A runner past its memory ceiling (--worker-memory) therefore hands its trials to a fresh process: the
    resident memory recorded by the last trials must not exceed the first trials' by more than 200 MB, where
    without that it grows by about a gigabyte over the 20 trials in between, and no trial ends far above the
    ceiling (one trial's growth at most)."""
    space = write(tmp_path / "wide.toml", """
        arch = "mlp_l2"
        [params.units]
        type = "categorical"
        choices = [512, 2048]
        baseline = 512
        """)
    preset = write(tmp_path / "many.toml", 'sampler = "random"\npruner = "none"\nepochs = 1\n')
    cmd = [sys.executable, "-m", "cifar_tune", "optimize", "--arch", "mlp_l2", "--data", str(tiny_npz),
           "--val-size", "100", "--preset", str(preset), "--space", str(space), "--n-trials", "28",
           "--worker-memory", "1300"]
    r = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr
    trials = optuna.load_study(study_name="cifar10-mlp_l2", storage=f"sqlite:///{tmp_path / DB}").trials
    assert len(trials) == 28 and all(t.state == TrialState.COMPLETE for t in trials)
    rss = [t.user_attrs["rss_mb"] for t in trials]
    first, last = max(rss[:8]), max(rss[-8:])
    assert last - first < 200, f"resident memory {first:.0f} MB over trials 0-7, {last:.0f} MB over 20-27"
    assert max(rss) < 1300 + 300 and len({t.user_attrs["worker"] for t in trials}) > 1  # replaced, not grown

