"""``studies.presets`` on its own: how ``make_settings`` merges built-in defaults, a preset and the given keywords,
what it refuses, the settings' plain-dict form (a worker's JSON), ``make_plan`` and the default number of jobs."""

from __future__ import annotations

import json
import textwrap
from dataclasses import replace
from pathlib import Path

import pytest

from cifar_tune import choices
from cifar_tune.errors import InvalidValue, UserError
from cifar_tune.studies import presets
from cifar_tune.studies.presets import BUILT_IN, NOT_IN_A_JOB, OptimizeSettings, make_plan, make_settings
from tests.helpers.fake_gpus import fake_nvidia_smi


@pytest.fixture(autouse=True)
def no_gpus(monkeypatch, tmp_path):
    """No GPU visible (an empty CUDA_VISIBLE_DEVICES hides any nvidia-smi): jobs default to 1 unless a test adds
    a stand-in nvidia-smi."""
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")


def preset_file(tmp_path: Path, body: str, name: str = "mine.toml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(body))
    return path


# --- merge order -------------------------------------------------------------------------------------------------


def test_built_in_then_preset_then_keywords(tmp_path):
    path = preset_file(tmp_path, """
        n_trials = 7
        epochs = 4
        sampler = "random"
        """)
    s = make_settings("mlp_l2", preset=str(path), epochs=2)
    assert s.epochs == 2  # given beats the preset
    assert s.n_trials == 7 and s.sampler == "random"  # the preset beats the built-in defaults
    assert s.pruner == BUILT_IN["pruner"] == choices.DEFAULT_PRUNER  # nothing else sets it: built in
    assert s.seed == choices.DEFAULT_SEED and s.timeout is None and s.subset is None
    assert s.preset == str(path)


def test_a_keyword_of_none_is_not_given(tmp_path):
    path = preset_file(tmp_path, "n_trials = 7\nepochs = 4\n")
    s = make_settings("mlp_l2", preset=str(path), n_trials=None, epochs=None, jobs=None, verbose=None)
    assert (s.n_trials, s.epochs, s.jobs, s.verbose) == (7, 4, 1, False)


def test_defaults_without_preset_are_the_default_preset():
    s = make_settings("cnn")
    assert s.preset == presets.DEFAULT_PRESET == "default"
    assert (s.n_trials, s.epochs, s.sampler, s.pruner) == (50, 10, "tpe", "hyperband")
    assert s.study_name == choices.study_name("cnn") == "cifar10-cnn"
    assert s.storage == choices.DEFAULT_STORAGE and s.jobs == 1 and s.total_trials is None


def test_a_preset_by_name_and_the_same_file_by_path_agree(tmp_path):
    by_name = make_settings("mlp_l2", preset="quick")
    copy = preset_file(tmp_path, (presets.resources.path("study", "quick.toml")).read_text(), "quick_copy.toml")
    by_path = make_settings("mlp_l2", preset=str(copy))
    assert replace(by_path, preset="quick") == by_name
    assert (by_name.n_trials, by_name.epochs, by_name.timeout) == (8, 3, 600)


def test_a_presets_arch_table_applies_to_that_arch_alone():
    mlp, cnn = make_settings("mlp_l2", preset="quick"), make_settings("cnn", preset="quick")
    assert (mlp.subset, mlp.val_size, mlp.timeout) == (20000, 2000, 600)  # [archs.mlp_l2]
    assert (cnn.subset, cnn.val_size, cnn.timeout) == (10000, 1000, 300)  # the preset's top level


def test_a_given_subset_drops_the_presets_val_size():
    """quick's val_size (1,000) belongs to its subset: with --subset 200 the default split (a tenth) applies."""
    s = make_settings("cnn", preset="quick", subset=200)
    assert (s.subset, s.val_size) == (200, None)
    s = make_settings("cnn", preset="quick", subset=2000, val_size=300)
    assert (s.subset, s.val_size) == (2000, 300)


def test_a_split_that_does_not_fit_names_where_each_number_came_from(tmp_path):
    path = preset_file(tmp_path, "subset = 100\n")
    with pytest.raises(UserError, match="--val-size") as e:
        make_settings("cnn", preset=str(path), val_size=5000)
    assert f"subset of preset {path}" in str(e.value)


# --- what is refused ---------------------------------------------------------------------------------------------


def test_unknown_keywords_are_refused():
    with pytest.raises(UserError, match=r"unknown settings 'bogus', 'nope'; known: arch, preset, n_trials"):
        make_settings("cnn", bogus=1, nope=2)
    with pytest.raises(UserError, match="unknown setting 'n_trial'; known"):  # one: singular
        make_settings("cnn", n_trial=3)


def test_unknown_arch_and_bad_values_are_refused():
    with pytest.raises(InvalidValue, match="arch"):
        make_settings("transformer")
    with pytest.raises(InvalidValue, match="n-trials must be an integer in 1..1000000, got 0"):
        make_settings("cnn", n_trials=0)
    with pytest.raises(InvalidValue, match="sampler"):
        make_settings("cnn", sampler="grid")
    with pytest.raises(InvalidValue, match="epochs"):
        make_settings("cnn", epochs=2.5)


@pytest.mark.parametrize(("body", "message"), [
    ("bogus = 1\n", "bogus: unknown preset key (known: n_trials"),
    ("[archs.mlp_l2]\nbogus = 1\n", "archs.mlp_l2.bogus: unknown preset key"),
    ("[archs.transformer]\nepochs = 1\n", "archs: expected tables [archs.<arch>]"),
    ('sampler = "grid"\n', "sampler"),
    ("epochs = 0\n", "epochs: must be an integer in 1..10000, got 0"),
    ("n_trials = \n", "cannot read preset"),
])
def test_a_bad_preset_file_is_refused_naming_the_file(tmp_path, body, message):
    path = preset_file(tmp_path, body)
    with pytest.raises(UserError) as e:
        make_settings("mlp_l2", preset=str(path))
    assert message in str(e.value) and str(path) in str(e.value)


def test_an_unknown_preset_name_or_a_missing_file_is_refused(tmp_path):
    with pytest.raises(UserError, match=r"unknown preset 'nope'; built-in: default, quick, seed"):
        make_settings("cnn", preset="nope")
    with pytest.raises(UserError, match="missing.toml"):
        make_settings("cnn", preset=str(tmp_path / "missing.toml"))
    with pytest.raises(InvalidValue, match="preset"):
        make_settings("cnn", preset="")


def test_a_bad_space_or_storage_is_refused_before_anything_is_stored(tmp_path):
    with pytest.raises(UserError):
        make_settings("cnn", space=str(tmp_path / "missing.toml"))
    with pytest.raises(UserError, match="storage"):
        make_settings("cnn", storage="nonsense://")
    assert not (tmp_path / "storage").exists()


def test_a_data_path_is_kept_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert make_settings("cnn", data="sub/../tiny.npz").data == str(tmp_path / "tiny.npz")
    assert make_settings("cnn", data=choices.KERAS_DATA).data == choices.KERAS_DATA


# --- pruner settings that cannot act (issue 28, item 6) -----------------------------------------------------------


def test_a_median_warm_up_not_shorter_than_the_epochs_is_refused_naming_both(tmp_path, capsys):
    """The median pruner prunes from epoch index median_warmup_epochs on: a warm-up of 5 in a study of 2 epochs
    would never prune. Refused in the API and in one line (exit 2) on the command line, both values named."""
    from cifar_tune import cli

    path = preset_file(tmp_path, 'pruner = "median"\nmedian_warmup_epochs = 5\nepochs = 2\n')
    with pytest.raises(InvalidValue, match=r"median_warmup_epochs = 5 \(preset .*mine.toml\) is not shorter than "
                                           r"epochs = 2 \(preset .*mine.toml\)"):
        make_settings("cnn", preset=str(path))
    with pytest.raises(InvalidValue, match=r"median_warmup_epochs = 1 \(built-in default\) is not shorter than "
                                           r"epochs = 1 \(--epochs\)"):
        make_settings("cnn", pruner="median", epochs=1)
    assert cli.main(["optimize", "--arch", "cnn", "--preset", str(path), "--storage",
                     f"sqlite:///{tmp_path}/s.db"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "median_warmup_epochs = 5" in err and "epochs = 2" in err, err
    assert not (tmp_path / "s.db").exists()
    # a warm-up one epoch shorter may prune, and more epochs given on the command line make the preset's work
    assert make_settings("cnn", preset=str(path), epochs=6).median_warmup_epochs == 5
    assert make_settings("cnn", pruner="median", epochs=2).pruner == "median"


def test_a_median_setting_with_another_pruner_is_refused(tmp_path):
    with pytest.raises(InvalidValue, match=r"median_startup_trials = 2 \(keyword median_startup_trials\) acts only "
                                           r"with the median pruner, and the pruner is hyperband \(preset default\)"):
        make_settings("cnn", median_startup_trials=2)
    path = preset_file(tmp_path, "median_warmup_epochs = 2\n")
    with pytest.raises(InvalidValue, match=r"median_warmup_epochs = 2 \(preset .*\) .* the pruner is none "
                                           r"\(--pruner\)"):
        make_settings("cnn", preset=str(path), pruner="none")
    assert make_settings("cnn", preset=str(path), pruner="median").median_warmup_epochs == 2


def test_settings_from_a_workers_json_are_checked_for_the_pruner_too():
    d = {**make_settings("cnn", pruner="median", epochs=3).to_dict(), "median_warmup_epochs": 3}
    with pytest.raises(InvalidValue, match="is not shorter than epochs = 3"):
        OptimizeSettings(**d)


# --- the plain-dict form (a supervised worker's JSON) ------------------------------------------------------------


def test_settings_round_trip_through_a_workers_json(tmp_path):
    s = make_settings("mlp_l2", preset="quick", storage=f"sqlite:///{tmp_path}/s.db", study_name="x", jobs=3,
                      jobs_per_gpu=2, heartbeat_interval=5, grace_period=20, verbose=True, total_trials=12,
                      data=str(tmp_path / "d.npz"), seed=4, trials_per_process=2)
    d = s.to_dict()
    assert d["jobs"] == 3 and d["total_trials"] == 12 and d["arch"] == "mlp_l2" and d["timeout"] == 600
    assert OptimizeSettings(**json.loads(json.dumps(d))) == s
    # what the supervisor sends a worker: one job, the time left, the study-wide target
    job = replace(s, jobs=1, timeout=12.5, total_trials=None).to_dict()
    assert OptimizeSettings(**json.loads(json.dumps(job))) == replace(s, jobs=1, timeout=12.5, total_trials=None)


@pytest.mark.parametrize(("key", "value"), [("epochs", 0), ("engine", "turbo"), ("jobs", 0), ("storage", ""),
                                            ("timeout", float("nan")), ("arch", "nope")])
def test_settings_rebuilt_from_a_dict_are_checked_again(key, value):
    d = {**make_settings("cnn").to_dict(), key: value}
    with pytest.raises(InvalidValue):
        OptimizeSettings(**d)


# --- make_plan ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("key", NOT_IN_A_JOB)
def test_a_plan_refuses_what_a_job_does_not_take(key, tmp_path):
    value = {"space": str(tmp_path / "s.toml"), "study_name": "x", "total_trials": 5}[key]
    with pytest.raises(UserError, match=f"{key} cannot be given"):
        make_plan(["cnn"], **{key: value})
    make_plan(["cnn"], **{key: None})  # None is not given


def test_a_plan_gives_each_arch_its_settings():
    plan = make_plan(["cnn", "mlp_l2"], preset="quick", epochs=1)
    assert [s.arch for s in plan] == ["cnn", "mlp_l2"]
    assert [s.study_name for s in plan] == ["cifar10-cnn", "cifar10-mlp_l2"]
    assert [s.subset for s in plan] == [10000, 20000]  # each arch's table of the preset
    assert {s.epochs for s in plan} == {1} and {s.preset for s in plan} == {"quick"}
    with pytest.raises(UserError):
        make_plan(["cnn", "cnn"])
    with pytest.raises(UserError):
        make_plan(["cnn"], bogus=1)


# --- jobs by default ---------------------------------------------------------------------------------------------


def test_jobs_default_to_one_without_gpus(monkeypatch, tmp_path):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))  # no nvidia-smi at all
    assert make_settings("cnn").jobs == 1
    assert make_settings("cnn", jobs_per_gpu=3).jobs == 1


def test_jobs_default_to_one_per_gpu(monkeypatch, tmp_path):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    monkeypatch.setenv("PATH", fake_nvidia_smi(tmp_path / "bin", n=4)["PATH"])
    assert make_settings("cnn").jobs == 4
    assert make_settings("cnn", jobs_per_gpu=2).jobs == 8
    assert make_settings("cnn", jobs=3).jobs == 3  # given: as given
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1,3")  # the GPUs this process may use
    assert make_settings("cnn").jobs == 2
