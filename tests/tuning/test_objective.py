"""``tuning.objective.make_objective`` on its own: one trial of a real in-memory Optuna study trains the MLP on the
tiny synthetic split (stock Keras fit, 1-3 epochs) and leaves its record; divergence, pruning and a trial that
another worker ended meanwhile end it as the tuning loop expects."""

from __future__ import annotations

import re
import textwrap

import keras
import optuna
import pytest
from optuna.trial import TrialState

from cifar_tune import engines, progress
from cifar_tune.data import cifar10
from cifar_tune.errors import TakenOver, TrialFailed
from cifar_tune.models import architectures
from cifar_tune.runtime import devices
from cifar_tune.studies import spaces
from cifar_tune.studies.records import TrialRecord
from cifar_tune.tuning.objective import make_objective

GOOD_LR, HUGE_LR = 0.001, 1e30  # 1e30: Adam's first step sends the weights to ~1e30, the loss to inf, then NaN


@pytest.fixture(autouse=True)
def no_gpu(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")


@pytest.fixture
def space(tmp_path) -> spaces.Space:
    """The MLP (L2) with one knob: the seed's learning rate or a diverging one."""
    path = tmp_path / "lr.toml"
    path.write_text(textwrap.dedent(f"""
        arch = "mlp_l2"
        [params.learning_rate]
        type = "categorical"
        choices = [{GOOD_LR}, {HUGE_LR}]
        baseline = {GOOD_LR}
        """))
    return spaces.load("mlp_l2", path)


@pytest.fixture
def split(tiny_npz) -> cifar10.Split:
    return cifar10.split_validation(cifar10.load(str(tiny_npz)), 100, seed=0)


def objective_and_trial(space, split, lr: float, epochs: int = 2, pruner=None):
    """The objective and a trial of a fresh in-memory study that will train ``lr``."""
    study = optuna.create_study(storage=optuna.storages.InMemoryStorage(), pruner=pruner or optuna.pruners.NopPruner())
    study.enqueue_trial({"learning_rate": lr})
    template = engines.TrainSpec("mlp_l2", epochs=epochs, seed=0, engine="auto", precision="float32")
    return study, make_objective(space, split, template), study.ask()


def test_a_completed_trial_and_its_record(space, split):
    study, objective, trial = objective_and_trial(space, split, GOOD_LR)
    value = objective(trial)
    study.tell(trial, value)
    frozen = study.trials[0]
    rec = TrialRecord.read(frozen)
    assert frozen.state == TrialState.COMPLETE and rec.fail_reason is None
    assert rec.config == {**space_baseline(space), "learning_rate": GOOD_LR}
    assert rec.arch == "mlp_l2" and rec.data == split.description
    assert rec.backend == keras.backend.backend() and rec.device == devices.device_name()
    assert rec.engine == "keras" and rec.precision == "float32"  # auto: stock fit on a CPU
    assert rec.gpu is None  # not a worker placed on a GPU
    assert set(rec.curves) == {"loss", "accuracy", "val_loss", "val_accuracy"}
    assert all(len(v) == 2 for v in rec.curves.values()) and rec.epochs_run == 2  # one entry per epoch
    assert value == rec.curves["val_loss"][-1] == frozen.value  # the final epoch's validation loss
    assert rec.val_accuracy == rec.curves["val_accuracy"][-1] and 0 <= rec.val_accuracy <= 1
    assert rec.params == mlp_params() and rec.seconds > 0 and rec.engine_info is not None
    assert 0 < rec.seconds_per_epoch <= rec.seconds / 2 + 1e-3  # the epochs' own seconds, within fit's
    assert frozen.intermediate_values == pytest.approx(dict(enumerate(rec.curves["val_loss"])))  # for pruning


def space_baseline(space) -> dict:
    return dict(architectures.get(space.arch).baseline)


def mlp_params() -> int:
    """Weights of Flatten, Dense(512) and Dense(10) over 32x32x3 inputs."""
    return 3072 * 512 + 512 + 512 * 10 + 10


def test_a_diverging_config_fails_with_a_one_line_reason(space, split):
    study, objective, trial = objective_and_trial(space, split, HUGE_LR)
    with pytest.raises(TrialFailed) as e:
        objective(trial)
    assert re.fullmatch(r"diverged at epoch \d+: loss (nan|inf|-inf)", str(e.value))
    assert e.value.__cause__ is None  # no traceback to show
    rec = TrialRecord.read(study.trials[0])
    assert rec.fail_reason == str(e.value) and rec.val_accuracy is None


def test_pruning_propagates_as_trial_pruned_and_keeps_the_curves(space, split):
    """A threshold no validation loss meets: Optuna's pruner stops the trial after its first epoch, through the
    pruning callback."""
    study, objective, trial = objective_and_trial(space, split, GOOD_LR, epochs=3,
                                                  pruner=optuna.pruners.ThresholdPruner(upper=1e-9))
    with pytest.raises(optuna.TrialPruned):
        objective(trial)
    study.tell(trial, state=TrialState.PRUNED)
    frozen = study.trials[0]
    rec = TrialRecord.read(frozen)
    assert rec.epochs_run == 1 and len(rec.curves["val_loss"]) == 1 and rec.fail_reason is None
    assert list(frozen.intermediate_values) == [0] and rec.val_accuracy is None
    assert rec.seconds is None and rec.seconds_per_epoch > 0  # what its one epoch cost, though it never ended
    assert rec.training_seconds() == rec.seconds_per_epoch


def test_a_trial_another_worker_ended_stops_training_as_taken_over(space, split):
    """Another worker fails the trial during its first epoch (its heartbeat was late, say): the first write after
    that is refused, and the objective stops training with TakenOver (Optuna's UpdateFinishedTrialError)."""
    study, objective, trial = objective_and_trial(space, split, GOOD_LR, epochs=3)

    def meanwhile(event):
        if isinstance(event, progress.Epoch) and event.epoch == 0:  # the reporter sees epoch 0 end first
            study.tell(trial.number, state=TrialState.FAIL)

    with progress.reporting(meanwhile), pytest.raises(TakenOver, match=f"trial {trial.number} was ended by another"):
        objective(trial)
    frozen = study.trials[0]
    assert isinstance(TakenOver(), optuna.exceptions.UpdateFinishedTrialError)
    assert frozen.state == TrialState.FAIL and TrialRecord.read(frozen).epochs_run is None  # nothing written after
