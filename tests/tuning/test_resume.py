"""Resuming a study under changed conditions (issue 19, items 4 and 5): every setting a study keeps for life is
compared at the door, in one place (``tuning.study.RESUME_KEEPS``); a study of that name that cifar-tune did not
create, or that maximizes, is refused. Each refusal is one line, exit status 2, and stores nothing."""

from __future__ import annotations

import hashlib
import shutil
import textwrap
from pathlib import Path

import numpy as np
import optuna
import pytest

from cifar_tune import cli
from cifar_tune.tuning.study import RESUME_KEEPS
from tests.helpers.synthetic import synthetic_cifar

DB = Path("storage/cifar_tune.db")
URL = "sqlite:///storage/cifar_tune.db"
STUDY = "cifar10-mlp_l2"


def optimize(data: Path, *args: str) -> int:
    return cli.main(["optimize", "--arch", "mlp_l2", "--data", str(data), "--val-size", "100", "--epochs", "1",
                     "--n-trials", "1", *args])


def digest() -> str:
    return hashlib.sha256(DB.read_bytes()).hexdigest()


def space_file(tmp_path: Path, batch_choices: str) -> Path:
    path = tmp_path / "space.toml"
    path.write_text(textwrap.dedent(f"""
        arch = "mlp_l2"
        [params.batch_size]
        type = "categorical"
        choices = {batch_choices}
        baseline = 32
        """))
    return path


# (a flag that changes one kept setting, its value, a word the refusal names). The first run uses the defaults
# (preset default, 1 epoch, the built-in space, engine auto = keras on this CPU, float32, hyperband).
CHANGES = [
    ("--preset", "p.toml", "preset 'default' in the study, 'p' now"),
    ("--epochs", "2", "epochs"),
    ("--val-size", "120", "data"),
    ("--subset", "250", "subset"),
    ("--engine", "fast", "engine"),
    ("--precision", "bf16", "precision"),
    ("--pruner", "none", "pruner"),  # (median cannot act at 1 epoch: refused before the study is read)
    ("--grace-period", "500", "heartbeat '30 s beat, 120 s grace' in the study, '30 s beat, 500 s grace' now"),
    ("--space", None, "search space: batch_size.choices [32, 64, 128, 256] in the study, [16, 32, 64] now"),
]


def test_every_kept_setting_is_checked():
    """The table above covers every setting the study keeps but its architecture (another arch is another
    study name)."""
    named = {word.split(":")[0].split()[0].replace("search", "space") for _, _, word in CHANGES}
    assert named == set(RESUME_KEEPS) - {"arch"}


@pytest.fixture(scope="module")
def first_study(tmp_path_factory) -> tuple[Path, Path, Path]:
    """(data, space, database): one study of one trial, made once for the module's refusals (each test works on
    its own copy of the database)."""
    folder = tmp_path_factory.mktemp("first")
    data = folder / "tiny.npz"
    x_train, y_train, x_test, y_test = synthetic_cifar()
    np.savez(data, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    space = folder / "first.toml"
    space.write_text(space_file(folder, "[32, 64, 128, 256]").read_text())
    db = folder / "studies.db"
    assert cli.main(["optimize", "--arch", "mlp_l2", "--data", str(data), "--val-size", "100", "--epochs", "1",
                     "--n-trials", "1", "--space", str(space), "--storage", f"sqlite:///{db}"]) == 0
    return data, space, db


@pytest.mark.parametrize(("flag", "value", "named"), CHANGES, ids=[c[0] for c in CHANGES])
def test_a_resume_with_a_changed_setting_is_refused_in_one_line(first_study, tmp_path, capsys, flag, value, named):
    tiny_npz, space, db = first_study
    DB.parent.mkdir()
    shutil.copyfile(db, DB)  # the study, as made by the default storage's command with the defaults
    before, trials = digest(), len(optuna.load_study(study_name=STUDY, storage=URL).trials)
    capsys.readouterr()
    if value is None:
        value = str(space_file(tmp_path, "[16, 32, 64]"))
    Path("p.toml").write_text("epochs = 1\n")  # a preset of the same values as the flags: only its name differs
    args = ["--space", str(space)] if flag != "--space" else []
    assert optimize(tiny_npz, *args, flag, value) == 2
    out, err = capsys.readouterr()
    assert err.count("\n") == 1 and err.startswith("cifar-tune: error: study 'cifar10-mlp_l2' was created with")
    assert named in err and "--study-name" in err, err
    assert "Traceback" not in out + err
    assert digest() == before  # nothing stored: no FAIL trial with partial parameters
    assert len(optuna.load_study(study_name=STUDY, storage=URL).trials) == trials


def test_a_resume_with_the_same_settings_still_runs(tiny_npz, capsys):
    assert optimize(tiny_npz) == 0
    assert optimize(tiny_npz, "--engine", "keras") == 0  # auto was keras on this CPU: the same engine
    assert len(optuna.load_study(study_name=STUDY, storage=URL).trials) == 2


@pytest.mark.parametrize("direction", ["maximize", "minimize"])
def test_a_study_cifar_tune_did_not_create_is_refused(tiny_npz, capsys, direction):
    """A study of the default name made by another program (either direction), with a trial in it."""
    DB.parent.mkdir()
    study = optuna.create_study(study_name=STUDY, storage=URL, direction=direction)
    study.add_trial(optuna.trial.create_trial(value=0.5, params={}, distributions={}))
    before = digest()
    assert optimize(tiny_npz) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--study-name" in err
    assert ("maximize study" in err) if direction == "maximize" else ("not created by cifar-tune" in err)
    assert digest() == before
    assert len(optuna.load_study(study_name=STUDY, storage=URL).trials) == 1


def test_the_same_preset_by_another_path_resumes(tiny_npz, tmp_path):
    """A preset is kept by its name: the same file given by a relative and an absolute path (another machine's
    checkout) is the same preset; its values are compared apart (epochs, subset, pruner, ...)."""
    Path("mine.toml").write_text("epochs = 1\n")
    assert optimize(tiny_npz, "--preset", "./mine.toml") == 0
    assert optimize(tiny_npz, "--preset", str(Path("mine.toml").resolve())) == 0
    assert len(optuna.load_study(study_name=STUDY, storage=URL).trials) == 2


def test_a_worker_with_another_grace_period_is_refused(tiny_npz, capsys):
    """Every worker must judge dead workers alike: one with a shorter grace period would take live trials."""
    assert optimize(tiny_npz) == 0
    capsys.readouterr()
    assert optimize(tiny_npz, "--heartbeat-interval", "1", "--grace-period", "3") == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "heartbeat '30 s beat, 120 s grace' in the study, '1 s beat, 3 s grace' now" in err


def test_compare_and_run_leave_a_study_cifar_tune_did_not_create_alone(tiny_npz, capsys):
    """A maximize study of the default name (plain Optuna) is not a cifar-tune study: compare refuses in one line
    and writes nothing into it."""
    DB.parent.mkdir()
    study = optuna.create_study(study_name=STUDY, storage=URL, direction="maximize")
    study.add_trial(optuna.trial.create_trial(value=0.5, params={}, distributions={}))
    before = digest()
    assert cli.main(["compare", "--data", str(tiny_npz), "--seeds", "1", "--epochs", "1"]) == 2
    assert "no studies" in capsys.readouterr().err
    assert digest() == before
