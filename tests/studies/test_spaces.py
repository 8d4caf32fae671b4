"""Search spaces as data: the built-in files, validation of user files, and what Optuna samples from them."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import optuna
import pytest

from cifar_tune.errors import SpaceError, UserError
from cifar_tune.models import architectures
from cifar_tune.studies import spaces
from tests.helpers.paths import REPO


@pytest.mark.parametrize("arch", architectures.ARCH_KEYS)
def test_builtin_space_baseline_is_the_seed(arch):
    space = spaces.load(arch)
    a = architectures.get(arch)
    study = optuna.create_study()
    study.enqueue_trial(space.baseline_params())
    trial = study.ask()
    config = space.suggest(trial)
    assert config == a.baseline  # the enqueued point is exactly the seed's config
    assert space.config_from_params(trial.params) == a.baseline
    assert a.build(config).count_params() == a.seed_params
    # The knobs the issue asks for are searched.
    for knob in ("dropout", "l2", "learning_rate", "batch_size"):
        assert knob in space.params
    assert {"units1", "units", "width"} & set(space.params)


def test_cnn_da_searches_augmentation():
    assert {"flip", "translate"} <= set(spaces.load("cnn_da").params)


def test_l2_zero_stays_reachable_and_on_values_are_log_scaled():
    space = spaces.load("cnn")
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    values = [space.suggest(study.ask())["l2"] for _ in range(40)]
    assert 0.0 in values
    on = [v for v in values if v > 0]
    assert on and all(1e-6 <= v <= 1e-2 for v in on)


def write(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "space.toml"
    path.write_text(textwrap.dedent(body))
    return path


@pytest.mark.parametrize("body, message", [
    ("""arch = "cnn"
     [params.nonsense]
     type = "float"
     low = 0
     high = 1
     baseline = 0.5
     """, "params.nonsense: unknown parameter"),
    ("""arch = "cnn"
     [params.dropout]
     type = "float"
     low = 0.1
     high = 0.5
     baseline = 0.0
     """, "params.dropout: baseline 0.0 is outside"),
    ("""arch = "cnn"
     [params.dropout]
     type = "float"
     low = "a"
     high = 0.5
     baseline = 0.2
     """, "params.dropout: needs numeric low <= high"),
    ("""arch = "cnn"
     [params.batch_size]
     type = "categorical"
     choices = [64, 128]
     baseline = 32
     """, "params.batch_size: baseline 32 is not among the choices"),
    ("""arch = "resnet"
     [params.dropout]
     type = "float"
     low = 0
     high = 1
     baseline = 0
     """, "arch: this file is for 'resnet'"),
    ("""arch = "cnn"
     [params.l2]
     type = "float"
     low = 0
     high = 0.01
     log = true
     baseline = 0
     """, "params.l2: log scale needs low > 0"),
    ("arch = \"cnn\"\n[params\n", "not valid TOML"),
])
def test_bad_space_files_name_file_and_key(tmp_path, body, message):
    path = write(tmp_path, textwrap.indent(textwrap.dedent(body), ""))
    with pytest.raises(UserError) as err:
        spaces.load("cnn", path)
    assert message in str(err.value)
    assert str(path) in str(err.value)


def test_user_space_leaves_other_knobs_at_baseline(tmp_path):
    path = write(tmp_path, """
        arch = "cnn"
        [params.learning_rate]
        type = "categorical"
        choices = [0.001, 0.01]
        baseline = 0.001
        """)
    space = spaces.load("cnn", path)
    config = space.suggest(optuna.create_study().ask())
    assert {k: v for k, v in config.items() if k != "learning_rate"} == \
        {k: v for k, v in architectures.get("cnn").baseline.items() if k != "learning_rate"}


def test_builtin_files_ship_in_a_plain_wheel(tmp_path):
    """A non-editable install finds the spaces and presets (force-included into the wheel)."""
    repo = REPO
    out = tmp_path / "wheel"
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", str(out),
                        str(repo)], capture_output=True, text=True)  # hatchling comes with the test extra
    assert r.returncode == 0, r.stdout + r.stderr
    import zipfile

    names = zipfile.ZipFile(next(out.glob("*.whl"))).namelist()
    for arch in architectures.ARCH_KEYS:
        assert f"cifar_tune/_data/search_spaces/{arch}.toml" in names
    for preset in ("default", "quick", "seed"):
        assert f"cifar_tune/_data/study/{preset}.toml" in names


def test_conditional_parameters_are_searched_only_where_their_condition_holds():
    import optuna

    space = spaces.load("cnn")
    assert space.params["weight_decay"].when == (("optimizer", ("adamw",)),)
    assert "weight_decay" not in space.baseline_params()  # the seed's Adam: no decay to search
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    seen = set()
    for _ in range(30):
        trial = study.ask()
        config = space.suggest(trial)
        seen.add(config["optimizer"])
        assert ("weight_decay" in trial.params) == (config["optimizer"] == "adamw")
        if config["optimizer"] == "adam":
            assert config["weight_decay"] == 0.0
        assert config["lr_schedule"] in ("constant", "cosine", "warmup_cosine")
        study.tell(trial, 1.0)
    assert seen == {"adam", "adamw"}


def test_a_condition_must_name_an_earlier_parameter(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('arch = "cnn"\n[params.weight_decay]\ntype = "float"\nlow = 1e-5\nhigh = 1e-1\nlog = true\n'
                   'baseline = 0.0\nwhen = { optimizer = "adamw" }\n')
    with pytest.raises(SpaceError, match="params.weight_decay.when: 'optimizer' must be a parameter"):
        spaces.load("cnn", bad)


def test_schedule_matches_keras_cosine_decay_and_adamw_decays_kernels_only():
    import keras

    from cifar_tune.engines import optimizers

    ours = optimizers.Schedule(1e-3, 100, warmup_steps=10, cosine=1)
    theirs = keras.optimizers.schedules.CosineDecay(0.0, 90, warmup_target=1e-3, warmup_steps=10)
    for step in (0, 5, 10, 40, 99, 100):
        assert float(ours(step)) == pytest.approx(float(theirs(step)), rel=1e-5, abs=1e-9)
    assert float(optimizers.Schedule(1e-3, 100, 0, 0)(57)) == pytest.approx(1e-3)  # constant
    config = {"learning_rate": 1e-3, "optimizer": "adamw", "weight_decay": 0.1, "lr_schedule": "cosine"}
    optimizer = optimizers.make_optimizer(config, 100)
    assert isinstance(optimizer, keras.optimizers.AdamW) and optimizer.weight_decay == pytest.approx(0.1)
    dense = keras.layers.Dense(2)
    dense.build((None, 3))
    assert optimizer._use_weight_decay(dense.kernel) and not optimizer._use_weight_decay(dense.bias)
    assert isinstance(optimizers.make_optimizer({**config, "optimizer": "adam", "lr_schedule": "constant"}, 1),
                      keras.optimizers.Adam)



def test_a_preset_can_differ_per_architecture(tmp_path):
    from cifar_tune.errors import UserError
    from cifar_tune.studies import presets

    assert presets.load_preset("quick", "mlp_l2")["subset"] == 20000
    assert presets.load_preset("quick", "resnet")["subset"] == 10000
    bad = tmp_path / "bad.toml"
    bad.write_text("epochs = 3\n[archs.resnet]\nepochs = 0\n")
    with pytest.raises(UserError, match=r"archs.resnet.epochs: must be an integer in 1..10000, got 0"):
        presets.load_preset(str(bad), "cnn")
    bad.write_text("[archs.vgg]\nepochs = 3\n")
    with pytest.raises(UserError, match="archs: expected tables"):
        presets.load_preset(str(bad), "cnn")
