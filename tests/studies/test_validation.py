"""One set of checks for every value (every command's flags, presets, the Python API) and one safe reader for every
file the product reads (issue 19, items 11 and 12). Nothing here trains except the one --preset quick --subset run.

Argument tests pass a data path that does not exist: a check that is missing lets the command go on to the data,
which fails with another message, so these tests fail fast (instead of training) on code without the check.
"""

from __future__ import annotations

import contextlib
import io
import os
import textwrap
from pathlib import Path

import pytest

from cifar_tune import cli
from cifar_tune.choices import ARCH_KEYS
from cifar_tune.errors import SpaceError, UserError
from cifar_tune.studies import presets, spaces

HUGE = "99999999999999999999"  # int() takes it; numpy, TensorFlow and range() do not


def run_cli(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli.main([str(a) for a in argv])
    return code, out.getvalue(), err.getvalue()


def refused(argv: list, message: str) -> str:
    """The command exits 2 with one line on stderr holding ``message``, prints nothing else, stores nothing."""
    code, out, err = run_cli(argv)
    assert code == 2, (code, out, err)
    assert err.count("\n") == 1 and "Traceback" not in err and message in err, err
    assert "epoch" not in out.lower()
    assert not Path("storage").exists()
    return err


@pytest.fixture
def no_data(tmp_path) -> list[str]:
    return ["--data", str(tmp_path / "not-there.npz")]




# --- item 11: every command checks every flag alike ------------------------------------------------------------


@pytest.mark.parametrize("argv, message", [
    (["baseline", "--batch-size", HUGE], f"argument --batch-size: must be an integer in 1..65536, got '{HUGE}'"),
    (["baseline", "--batch-size", "70000"], "argument --batch-size: must be an integer in 1..65536"),
    (["baseline", "--seed", "-1"], "argument --seed: must be an integer in 0..4294967295, got '-1'"),
    (["baseline", "--epochs", HUGE], f"argument --epochs: must be an integer in 1..10000, got '{HUGE}'"),
    (["baseline", "--archs", "mlp_l2,mlp_l2"], "argument --archs: names 'mlp_l2' twice; give each once"),
    (["run", "--archs", "cnn, resnet,cnn"], "argument --archs: names 'cnn' twice"),
    (["compare", "--archs", "cnn,cnn"], "argument --archs: names 'cnn' twice"),
    (["compare", "--seeds", "1000000"], "argument --seeds: must be an integer in 1..100, got '1000000'"),
    (["run", "--seeds", "1000000"], "argument --seeds: must be an integer in 1..100, got '1000000'"),
    (["compare", "--storage", ""], "argument --storage: must not be empty, got ''"),
    (["optimize", "--arch", "cnn", "--storage", " "], "argument --storage: must not be empty, got ' '"),
    (["run", "--storage", ""], "argument --storage: must not be empty"),
    (["optimize", "--arch", "cnn", "--study-name", ""], "argument --study-name: must not be empty"),
    (["optimize", "--arch", "cnn", "--preset", ""], "argument --preset: must not be empty"),
    (["optimize", "--arch", "cnn", "--space", ""], "argument --space: must not be empty"),
    (["baseline", "--out", ""], "argument --out: must not be empty"),
    (["optimize", "--arch", "cnn", "--jobs", "5000"], "argument --jobs: must be an integer in 1..1024"),
    (["optimize", "--arch", "cnn", "--timeout", "inf"], "argument --timeout: must be a number in 0.001..1e+09"),
    (["run", "--timeout", "1e99"], "argument --timeout: must be a number in 0.001..1e+09, got '1e99'"),
    (["baseline", "--protocol", "holdout", "--subset", "100", "--val-size", "95"],
     "validation size 95 (--val-size) does not fit the subset of 100 training images (--subset): at most 90"),
    (["baseline", "--val-size", "100"], "--val-size applies to --protocol holdout"),
])
def test_flags_are_checked_at_the_door(no_data, argv, message):
    refused([*argv, *no_data], message)


@pytest.mark.parametrize("command", ["studies", "report", "dashboard", "doctor"])
def test_an_empty_storage_is_refused_by_every_command(command):
    """--storage '' used to mean the default database without a word."""
    refused([command, "--storage", ""], "argument --storage: must not be empty, got ''")


COMMANDS = {"baseline": [], "optimize": ["--arch", "mlp_l2"], "run": [], "compare": []}


@pytest.mark.parametrize("flag, value, rule", [
    ("--epochs", HUGE, "must be an integer in 1..10000"),
    ("--epochs", "0", "must be an integer in 1..10000, got '0'"),
    ("--subset", HUGE, "must be an integer in 20..10000000"),
    ("--subset", "5", "must be an integer in 20..10000000, got '5'"),
    ("--seed", "4294967296", "must be an integer in 0..4294967295"),
    ("--val-size", "1.5", "must be an integer in 10..10000000, got '1.5'"),
])
def test_every_command_with_a_flag_checks_it_alike(no_data, flag, value, rule):
    """One rule per flag, whichever command takes it."""
    parsers = cli.build_parser()._subparsers._group_actions[0].choices
    takers = [c for c in COMMANDS if flag in parsers[c]._option_string_actions]
    assert len(takers) >= 2
    for command in takers:
        refused([command, *COMMANDS[command], flag, value, *no_data], f"argument {flag}: {rule}")


@pytest.fixture
def never_trains(monkeypatch):
    from cifar_tune import engines

    def train(*_, **__):
        raise AssertionError("trained despite a bad argument")

    monkeypatch.setattr(engines, "train", train)


@pytest.mark.parametrize("kwargs, message", [
    ({"archs": ["mlp_l2", "mlp_l2"]}, "archs names 'mlp_l2' twice"),
    ({"archs": ["vgg"]}, "unknown architecture 'vgg'"),
    ({"epochs": 10**20}, "epochs must be an integer in 1..10000"),
    ({"batch_size": 10**20}, "batch-size must be an integer in 1..65536"),
    ({"batch_size": 0}, "batch-size must be an integer in 1..65536, got 0"),
    ({"seed": -1}, "seed must be an integer in 0..4294967295, got -1"),
    ({"epochs": 2.5}, "epochs must be an integer in 1..10000, got 2.5"),
    ({"val_size": True, "protocol": "holdout"}, "val-size must be an integer in 10..10000000, got True"),
])
def test_baseline_run_checks_its_arguments_as_the_cli_does(tmp_path, never_trains, kwargs, message):
    from cifar_tune.comparison import seed_baseline
    from cifar_tune.data import cifar10
    from tests.helpers.synthetic import synthetic_cifar

    ds = cifar10.Dataset(*synthetic_cifar(), source="synthetic")
    kwargs = {"archs": ["mlp_l2"], "out_dir": tmp_path / "out", **kwargs}
    with pytest.raises(UserError, match=message):
        seed_baseline.run(ds, seed_baseline.BaselineSettings(**kwargs))
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("kwargs, message", [
    ({"seeds": 1_000_000}, "seeds must be an integer in 1..100, got 1000000"),
    ({"seeds": 0}, "seeds must be an integer in 1..100, got 0"),
    ({"epochs": 10**20}, "epochs must be an integer in 1..10000"),
    ({"archs": ["cnn", "cnn"]}, "archs names 'cnn' twice"),
    ({"storage": ""}, "storage must not be empty"),
])
def test_compare_run_cli_checks_its_arguments_before_the_storage(kwargs, message):
    from cifar_tune.cli import jobs
    from cifar_tune.comparison import retrain

    kwargs = {"archs": None, "seeds": 3, "epochs": None, "storage": "sqlite:///storage/cifar_tune.db",
              "out_dir": None, "engine": "auto", "precision": "float32", "verbose": 0, **kwargs}
    with pytest.raises(UserError, match=message):
        jobs.compare(retrain.CompareSettings(**kwargs))
    assert not Path("storage").exists()


def _settings(**changes) -> dict:
    values = {**presets.BUILT_IN, "arch": "mlp_l2", "space_path": None, "storage": "sqlite:///storage/x.db",
              "study_name": "s", "preset": "default"}
    return {**values, **changes}


@pytest.mark.parametrize("changes, message", [
    ({"storage": ""}, "storage must not be empty"),
    ({"study_name": "  "}, "study-name must not be empty"),
    ({"arch": "vgg"}, "arch must be one of mlp_bn"),
    ({"epochs": 10**20}, "epochs must be an integer in 1..10000"),
    ({"epochs": 3.0}, "epochs must be an integer in 1..10000, got 3.0"),
    ({"subset": 100, "val_size": 95}, "validation size 95 (val_size) does not fit the subset of 100"),
])
def test_optimize_settings_check_the_python_api(changes, message):
    with pytest.raises(UserError, match=message.replace("(", r"\(").replace(")", r"\)")):
        presets.OptimizeSettings(**_settings(**changes))


def test_settings_as_a_worker_reads_them_still_build():
    """The worker's JSON round trip (ints stay ints, None stays None) passes the stricter checks."""
    import json

    s = presets.OptimizeSettings(**_settings(subset=2000, val_size=200, timeout=12.5, total_trials=4))
    assert presets.OptimizeSettings(**json.loads(json.dumps(s.to_dict()))) == s


# --- item 11: spaces' optional and off --------------------------------------------------------------------------


def _space(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "space.toml"
    path.write_text('arch = "mlp_l2"\n' + textwrap.dedent(body))
    return path


L2 = "[params.l2]\ntype = \"float\"\nlow = 1e-6\nhigh = 1e-2\nlog = true\nbaseline = 1e-3\n"
DROPOUT = "[params.dropout]\ntype = \"float\"\nlow = 0.1\nhigh = 0.5\nbaseline = 0.2\n"


@pytest.mark.parametrize("body, message", [
    (L2 + 'optional = "false"\n', "params.l2: optional must be true or false, got 'false'"),
    (L2 + "optional = 1\n", "params.l2: optional must be true or false, got 1"),
    (L2 + "optional = true\noff = -0.5\n", "params.l2: off -0.5 is outside what the model accepts (0.0 .. 1.0)"),
    (DROPOUT + "optional = true\noff = 1.5\n", "params.dropout: off 1.5 is outside what the model accepts"),
    (L2 + 'optional = true\noff = "none"\n', "params.l2: off must be a number, got 'none'"),
    (L2 + "optional = true\noff = nan\n", "params.l2: off must be a number, got nan"),
    (L2 + "off = 0.0\n", "params.l2: off is the value used when an optional parameter is switched off"),
    ('[params.units]\ntype = "categorical"\nchoices = [256, 512]\nbaseline = 512\noff = 0\n',
     "params.units: optional and off apply to float parameters only"),
])
def test_optional_and_off_are_checked(tmp_path, no_data, body, message):
    path = _space(tmp_path, body)
    with pytest.raises(SpaceError, match=message.replace("(", r"\(").replace(")", r"\)")):
        spaces.load("mlp_l2", path)
    refused(["optimize", "--arch", "mlp_l2", "--space", path, *no_data], message)


def test_a_valid_off_value_still_loads(tmp_path):
    space = spaces.load("mlp_l2", _space(tmp_path, L2 + "optional = true\noff = 0.0\n"))
    assert space.params["l2"].optional is True and space.params["l2"].off == 0.0
    dropout = spaces.load("mlp_l2", _space(tmp_path, DROPOUT + "optional = true\noff = 0.0\n")).params["dropout"]
    assert dropout.off == 0.0


# --- item 11: one safe reader for spaces, presets and data ------------------------------------------------------


def _hostile(tmp_path: Path, kind: str, name: str) -> Path:
    path = tmp_path / name
    if kind == "fifo":
        os.mkfifo(path)  # opening it for reading waits for a writer for ever
    elif kind == "zero":
        path.symlink_to("/dev/zero")  # reading it never ends (MemoryError)
    elif kind == "dir":
        path.mkdir()
    else:
        path.write_text("# " + "x" * (1 << 20) + "\n")  # a TOML comment larger than any space or preset
    return path


KINDS = {"fifo": "is not a regular file (it is a FIFO)", "zero": "is not a regular file (it is a character device)",
         "dir": "is not a regular file (it is a directory)", "huge": "is larger than 1,048,576 bytes"}


@pytest.mark.parametrize("kind", KINDS)
def test_a_space_file_that_is_no_file_is_refused_without_blocking(tmp_path, no_data, no_hang, kind):
    path = _hostile(tmp_path, kind, "space.toml")
    with pytest.raises(SpaceError, match=f"space file {path} {KINDS[kind]}".replace("(", r"\(")
                       .replace(")", r"\)")):
        spaces.load("mlp_l2", path)
    refused(["optimize", "--arch", "mlp_l2", "--space", path, *no_data], f"space file {path} {KINDS[kind]}")


@pytest.mark.parametrize("kind", KINDS)
def test_a_preset_file_that_is_no_file_is_refused_without_blocking(tmp_path, no_data, no_hang, kind):
    path = _hostile(tmp_path, kind, "preset.toml")
    with pytest.raises(UserError, match="preset file"):
        presets.load_preset(str(path), "cnn")
    refused(["optimize", "--arch", "cnn", "--preset", path, *no_data], f"preset file {path} {KINDS[kind]}")
    refused(["run", "--archs", "cnn", "--preset", path, *no_data], f"preset file {path} {KINDS[kind]}")


def test_the_one_reader_words_every_refusal_in_one_line(tmp_path, no_hang):
    from cifar_tune.data import cifar10, safe_files

    (tmp_path / "latin1.toml").write_bytes(b"# caf\xe9\n")
    with pytest.raises(UserError, match=r"latin1.toml is not UTF-8 text \(byte 5\)"):
        safe_files.read_text(tmp_path / "latin1.toml", "space file")
    with pytest.raises(UserError, match="space file not found: .*missing.toml"):
        safe_files.read_text(tmp_path / "missing.toml", "space file")
    assert safe_files.read_text(_space(tmp_path, L2), "space file").startswith('arch = "mlp_l2"')
    # data files go through the same opener (their refusal stays a DataError)
    fifo = _hostile(tmp_path, "fifo", "cifar.npz")
    with pytest.raises(cifar10.DataError, match="cifar.npz is not a regular file"):
        cifar10.load(fifo)


# --- item 12: a preset's split follows the user's --subset -----------------------------------------------------


def _plan(argv: list[str]) -> list[presets.OptimizeSettings]:
    """The settings ``cifar-tune run`` builds for each architecture (what cmd_run does, without running)."""
    args = cli.build_parser().parse_args(["run", *argv])
    args.space, args.study_name, args.total_trials = None, None, None
    plan = []
    for arch in args.archs:
        args.arch = arch
        plan.append(cli.optimize_settings(args))
    return plan


def test_run_preset_quick_subset_2000_uses_the_default_split_of_the_users_subset():
    plan = _plan(["--preset", "quick", "--subset", "2000"])
    assert [(s.arch, s.subset, s.val_size) for s in plan] == [(a, 2000, None) for a in ARCH_KEYS]
    # the rest of the preset stays: its epochs, trials and per-architecture timeouts
    assert {(s.arch, s.epochs, s.n_trials, s.timeout) for s in plan} >= {("mlp_l2", 3, 8, 600), ("cnn", 3, 8, 300)}
    # an explicit --val-size is the user's and is kept
    assert {s.val_size for s in _plan(["--preset", "quick", "--subset", "2000", "--val-size", "300"])} == {300}
    # without --subset the preset keeps its own split
    assert {(s.subset, s.val_size) for s in _plan(["--preset", "quick"])} == {(10000, 1000), (20000, 2000)}


@pytest.mark.parametrize("argv, message", [
    (["--arch", "cnn", "--preset", "quick", "--val-size", "15000"],
     "validation size 15,000 (--val-size) does not fit the subset of 10,000 training images (subset of preset "
     "quick): at most 9,990"),
    (["--arch", "cnn", "--subset", "100", "--val-size", "95"],
     "validation size 95 (--val-size) does not fit the subset of 100 training images (--subset): at most 90"),
])
def test_a_split_that_does_not_fit_names_where_each_number_came_from(no_data, argv, message):
    refused(["optimize", *argv, *no_data], message)


def test_a_preset_file_whose_split_does_not_fit_its_subset(tmp_path, no_data):
    path = tmp_path / "p.toml"
    path.write_text("subset = 1000\nval_size = 2000\n")
    refused(["optimize", "--arch", "cnn", "--preset", path, *no_data],
            f"validation size 2,000 (val_size of preset {path}) does not fit the subset of 1,000 training images "
            f"(subset of preset {path})")
    # --subset replaces the preset's subset and, with it, the preset's split
    settings = _plan(["--archs", "cnn", "--preset", str(path), "--subset", "500"])[0]
    assert (settings.subset, settings.val_size) == (500, None)


def test_optimize_preset_quick_with_a_small_subset_runs(tiny_npz):
    """The issue's example at test size: quick's MLP split (2,000) no longer breaks a smaller --subset."""
    code, out, err = run_cli(["optimize", "--arch", "mlp_l2", "--preset", "quick", "--subset", "200", "--n-trials",
                              "1", "--epochs", "1", "--data", tiny_npz])
    assert code == 0, err
    assert "Traceback" not in err
