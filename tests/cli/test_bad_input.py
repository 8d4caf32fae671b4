"""Bad input of every kind a user can type ends in one line on stderr, exit status 2, and no storage written."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import pytest

from cifar_tune import cli
from cifar_tune.errors import SpaceError
from cifar_tune.studies import spaces


def run_cli(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli.main(argv)
    return code, out.getvalue(), err.getvalue()


def refused(argv: list[str], message: str) -> None:
    code, _, err = run_cli(argv)
    assert code == 2, err
    assert err.count("\n") == 1 and "Traceback" not in err and message in err, err
    assert not Path("storage").exists()


SPACE = 'arch = "mlp_l2"\n[params.{name}]\ntype = "{kind}"\n{body}\n'


@pytest.mark.parametrize("name, kind, body, message", [
    ("learning_rate", "categorical", 'choices = ["fast", "slow"]\nbaseline = "fast"', "must be a number, got 'fast'"),
    ("batch_size", "int", "low = -32\nhigh = 64\nbaseline = 32", "-32 is outside what the model accepts"),
    ("dropout", "float", "low = 0.0\nhigh = 1.5\nbaseline = 0.2", "1.5 is outside what the model accepts"),
    ("learning_rate", "float", "low = 0.0\nhigh = 0.1\nbaseline = 0.001", "0.0 is outside what the model accepts"),
    ("units", "categorical", "choices = [256, 512.5]\nbaseline = 256", "must be an integer, got 512.5"),
    ("optimizer", "categorical", 'choices = ["adam", "sgd"]\nbaseline = "adam"', "'sgd' is not one of adam, adamw"),
])
def test_a_space_the_model_cannot_train_is_refused_before_anything_is_stored(tmp_path, tiny_npz, name, kind, body,
                                                                              message):
    path = tmp_path / "space.toml"
    path.write_text(SPACE.format(name=name, kind=kind, body=body))
    with pytest.raises(SpaceError, match=message):
        spaces.load("mlp_l2", path)
    refused(["optimize", "--arch", "mlp_l2", "--space", str(path), "--data", str(tiny_npz)], message)


@pytest.mark.parametrize("preset, message", [
    ("epochs = 0", "epochs: must be an integer in 1..10000, got 0"),
    ("n_trials = 0", "n_trials: must be an integer in 1..1000000, got 0"),
    ("median_startup_trials = -1", "median_startup_trials: must be an integer in 0..1000000, got -1"),
    ("timeout = nan", "timeout: must be a number in 0.001..1e+09, got nan"),
])
def test_preset_values_out_of_range(tmp_path, tiny_npz, preset, message):
    path = tmp_path / "p.toml"
    path.write_text(preset + "\n")
    refused(["optimize", "--arch", "mlp_l2", "--preset", str(path), "--data", str(tiny_npz)], message)


@pytest.mark.parametrize("flags, message", [
    (["--timeout", "nan", "--jobs", "2"], "argument --timeout: must be a number in 0.001..1e+09, got 'nan'"),
    (["--timeout", "-5"], "argument --timeout: must be a number in"),
    (["--seed", "-1"], "argument --seed: must be an integer in 0..4294967295, got '-1'"),
    (["--seed", "4294967296"], "argument --seed: must be an integer in 0..4294967295"),
])
def test_flags_out_of_range(tiny_npz, flags, message):
    refused(["optimize", "--arch", "mlp_l2", "--data", str(tiny_npz), *flags], message)


def test_the_largest_seed_resumes(tiny_npz):
    argv = ["optimize", "--arch", "mlp_l2", "--n-trials", "1", "--epochs", "1", "--val-size", "100",
            "--seed", "4294967295", "--data", str(tiny_npz)]
    assert run_cli(argv)[0] == 0
    code, _, err = run_cli(argv)  # the resumed sampler's seed moves on, within numpy's range
    assert code == 0, err


def test_dashboard_port_out_of_range():
    Path("storage").mkdir()
    import optuna

    optuna.storages.RDBStorage("sqlite:///storage/cifar_tune.db")  # an Optuna storage, so the port is what fails
    code, _, err = run_cli(["dashboard", "--port", "70000"])
    assert code == 2 and "--port: must be an integer in 1..65535, got '70000'" in err and err.count("\n") == 1


def test_compare_on_an_empty_storage_never_tries_the_download(monkeypatch):
    import keras

    def no_download():
        raise AssertionError("compare tried the download")

    monkeypatch.setattr(keras.datasets.cifar10, "load_data", no_download)
    refused(["compare"], "no storage")
