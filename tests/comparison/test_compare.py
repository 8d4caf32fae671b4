"""`cifar-tune compare` end to end on tiny data: two real studies in SQLite, two seeds, files, stored results."""

from __future__ import annotations

import contextlib
import io
import os
import re
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
import pytest
from scipy import stats

from cifar_tune import choices, cli
from cifar_tune.comparison import retrain, targets
from cifar_tune.views import tables

URL = "sqlite:///storage/cifar_tune.db"
METRICS = ["Accuracy", "Precision", "Recall", "F1 Score"]
PM = re.compile(r"^[+-]?\d\.\d{4} ± \d\.\d{4}$")


def run_cli(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli.main(argv)
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def compared(tmp_path_factory):
    """Two small studies (cnn, mlp_l2) and one `compare --seeds 2` over them (and a study-less mlp_bn)."""
    from tests.helpers.synthetic import synthetic_cifar

    root = tmp_path_factory.mktemp("compare")
    data = root / "tiny.npz"
    x_train, y_train, x_test, y_test = synthetic_cifar()
    np.savez(data, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    before = Path.cwd()
    os.chdir(root)
    try:
        tiny = ["--data", str(data), "--epochs", "1", "--val-size", "100"]
        assert run_cli(["optimize", "--arch", "cnn", "--n-trials", "3", *tiny])[0] == 0
        assert run_cli(["optimize", "--arch", "mlp_l2", "--n-trials", "2", *tiny])[0] == 0
        optuna_dashboard_note(optuna.load_study(study_name="cifar10-cnn", storage=URL), "## My notes\n\nkeep me\n")
        code, out, err = run_cli(["compare", "--seeds", "2", "--archs", "cnn,mlp_bn,mlp_l2", "--data", str(data),
                                  "--out", "cmp"])
        assert code == 0, err
        yield {"root": root, "out": out, "err": err, "dir": root / "cmp"}
    finally:
        os.chdir(before)


def optuna_dashboard_note(study: optuna.Study, body: str) -> None:
    from optuna_dashboard import save_note

    save_note(study, body)


def test_table_has_baseline_tuned_and_difference_rows_per_arch(compared):
    out = compared["out"]
    table = out[out.index("Test-set macro metrics"):]
    for label in ("Simple CNN", "MLP with L2"):
        lines = [line for line in table.splitlines() if line.startswith(label)]
        assert [line.split()[len(label.split())] for line in lines] == ["baseline", "tuned", "tuned"]
        assert "tuned - baseline" in lines[2]
        cells = re.findall(r"[+-]?\d\.\d{4} ± \d\.\d{4}", lines[2])
        assert len(cells) == 4 and all(c.startswith(("+", "-")) for c in cells)  # differences are signed
        # two seeds give a 95% interval per metric, and a verdict on accuracy
        assert len(re.findall(r"\[[+-]\d\.\d{4}, [+-]\d\.\d{4}\]", lines[2])) in (0, 4)
        assert any(v in lines[2] for v in ("within noise", "better", "worse", "no difference"))
    # the seeds are ones the studies never trained with (their trials all used seed 0)
    assert "[cnn] baseline seed 1001" in out and "[mlp_l2] tuned    seed 1001" in out and " seed 0:" not in out


def test_arch_without_study_is_skipped_with_a_message(compared):
    assert "skipping mlp_bn: no study" in compared["err"]
    assert "mlp_bn" not in compared["out"].split("Test-set macro metrics")[1]


def test_csv_rows_per_seed_and_aggregates_match(compared):
    df = pd.read_csv(compared["dir"] / "compare.csv")
    seeds = df[df["Seed"].isin(["1000", "1001"])]
    assert len(seeds) == 2 * 2 * 2  # arch x variant x seed
    assert set(map(tuple, seeds[["arch", "Variant"]].drop_duplicates().values)) == {
        ("cnn", "baseline"), ("cnn", "tuned"), ("mlp_l2", "baseline"), ("mlp_l2", "tuned")}
    for arch in ("cnn", "mlp_l2"):
        mine = df[df["arch"] == arch]
        per = {v: mine[(mine["Variant"] == v) & mine["Seed"].isin(["1000", "1001"])].sort_values("Seed")
               for v in ("baseline", "tuned")}
        agg = {(r["Variant"], r["Seed"]): r for _, r in mine[~mine["Seed"].isin(["1000", "1001"])].iterrows()}
        assert len(agg) == 9  # mean and std of each variant; the difference adds ci95_low, ci95_high and p
        for m in METRICS:
            for v in ("baseline", "tuned"):
                assert agg[(v, "mean")][m] == pytest.approx(per[v][m].mean())
                assert agg[(v, "std")][m] == pytest.approx(per[v][m].std(ddof=1), abs=1e-12)
            diff = per["tuned"][m].to_numpy() - per["baseline"][m].to_numpy()
            assert agg[("tuned - baseline", "mean")][m] == pytest.approx(diff.mean())
            assert agg[("tuned - baseline", "std")][m] == pytest.approx(diff.std(ddof=1), abs=1e-12)
            if diff.std(ddof=1) > 0:  # the paired t interval, as scipy computes it
                low, high = stats.t.interval(0.95, 1, loc=diff.mean(), scale=diff.std(ddof=1) / np.sqrt(2))
                assert agg[("tuned - baseline", "ci95_low")][m] == pytest.approx(low)
                assert agg[("tuned - baseline", "ci95_high")][m] == pytest.approx(high)
                assert agg[("tuned - baseline", "p")][m] == pytest.approx(stats.ttest_rel(
                    per["tuned"][m].to_numpy(), per["baseline"][m].to_numpy()).pvalue)
            assert 0.0 <= per["tuned"][m].min() <= per["tuned"][m].max() <= 1.0
        assert (per["tuned"]["Trial"].astype(int) >= 0).all() and (per["baseline"]["Trial"] == 0).all()


def test_markdown_has_the_mean_pm_std_table(compared):
    md = (compared["dir"] / "compare.md").read_text()
    rows = [line for line in md.splitlines() if line.startswith("| Simple CNN") and "±" in line]
    assert [r.split("|")[2].strip() for r in rows] == ["baseline", "tuned", "tuned - baseline"]
    for r in rows:
        assert all(PM.match(c.strip().split(" [")[0]) for c in r.split("|")[3:7])
    assert "## Per seed" in md and "MLP with L2" in md


def test_results_are_stored_with_the_study_and_the_note_keeps_other_text(compared):
    from optuna_dashboard import get_note

    for arch, label in (("cnn", "Simple CNN"), ("mlp_l2", "MLP with L2")):
        study = optuna.load_study(study_name=f"cifar10-{arch}", storage=f"sqlite:///{compared['root']}/storage/"
                                                                          "cifar_tune.db")
        rec = study.user_attrs["compare"]
        assert rec["seeds"] == [1000, 1001] and rec["epochs"] == 1 and rec["label"] == label
        assert rec["best_trial"] == study.best_trial.number and rec["baseline_trial"] == 0
        assert rec["train_images"] == 300 and rec["test_images"] == 100  # train + validation: all 300 images
        assert [r["Variant"] for r in rec["table"]] == ["baseline", "tuned", "tuned - baseline"]
        assert set(rec["table"][0]) == {"Variant", *METRICS}
        for variant in ("baseline", "tuned"):
            assert len(rec["confusion"][variant]) == 2
            assert all(np.asarray(cm).shape == (10, 10) and np.asarray(cm).sum() == 100
                       for cm in rec["confusion"][variant])
        note = get_note(study)
        assert note.count(choices.COMPARE_HEADING) == 1 and "| tuned - baseline |" in note
        assert f"best trial #{rec['best_trial']}" in note
    assert "keep me" in get_note(optuna.load_study(study_name="cifar10-cnn",
                                                   storage=f"sqlite:///{compared['root']}/storage/cifar_tune.db"))


def test_studies_lists_what_compare_stored(compared):
    """`cifar-tune studies` adds compare's results: the rows records.compared_rows reads back from the studies,
    equal to compare.csv's aggregates."""
    from cifar_tune.storage import database

    url = f"sqlite:///{compared['root']}/storage/cifar_tune.db"
    rows = {r["arch"]: r for r in tables.compared_rows(database.storage_for_reading(url))}
    assert set(rows) == {"cnn", "mlp_l2"}
    csv = pd.read_csv(compared["dir"] / "compare.csv")
    for arch, r in rows.items():
        mine = csv[(csv["arch"] == arch) & (csv["Seed"] == "mean")].set_index("Variant")
        assert r["baseline_acc"] == pytest.approx(mine.loc["baseline", "Accuracy"])
        assert r["tuned_acc"] == pytest.approx(mine.loc["tuned", "Accuracy"])
        assert r["difference"] == pytest.approx(r["tuned_acc"] - r["baseline_acc"])
        assert r["seeds"] == 2 and r["epochs"] == 1 and r["test_images"] == 100
        assert r["verdict"].split(" (")[0] in ("better", "worse", "within noise", "no difference")
    code, out, _ = run_cli(["studies", "--storage", url])
    assert code == 0 and "Compared on the test set" in out and "cifar10-mlp_l2" in out.split("Compared")[1]


def test_models_are_saved_as_keras_files_that_load(compared):
    import keras

    from cifar_tune import engines

    x = np.zeros((2, 32, 32, 3), np.uint8)
    for arch in ("cnn", "mlp_l2"):
        folder = compared["root"] / "storage" / "models" / f"cifar10-{arch}"
        assert sorted(p.name for p in folder.iterdir()) == [
            "baseline-seed1000.keras", "baseline-seed1001.keras", "tuned-seed1000.keras", "tuned-seed1001.keras"]
        model = keras.saving.load_model(folder / "tuned-seed1001.keras")
        assert engines.predict_classes(model, x).shape == (2,)


def test_no_storage_exits_2_in_one_line_and_writes_nothing(tiny_npz, capsys):
    assert cli.main(["compare", "--data", str(tiny_npz)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("cifar-tune: error: no storage")
    assert not Path("storage").exists()


def test_storage_without_studies_exits_2(tiny_npz, capsys):
    Path("storage").mkdir()
    optuna.storages.RDBStorage(URL)  # an empty database
    assert cli.main(["compare", "--data", str(tiny_npz)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no studies" in err
    assert not Path("storage/reports").exists() and not Path("storage/models").exists()


def test_compare_follows_the_studys_subset(tiny_npz, capsys):
    tiny = ["--data", str(tiny_npz), "--epochs", "1"]
    assert cli.main(["optimize", "--arch", "mlp_l2", "--n-trials", "1", "--subset", "100", "--val-size", "20",
                     *tiny]) == 0
    capsys.readouterr()
    assert cli.main(["compare", "--seeds", "1", "--data", str(tiny_npz)]) == 0
    out = capsys.readouterr().out
    assert "using the study's subset of 100 training images" in out
    rec = optuna.load_study(study_name="cifar10-mlp_l2", storage=URL).user_attrs["compare"]
    assert rec["train_images"] == 100 and "subset 100" in rec["data"]
    assert rec["table"][0]["Accuracy"]["std"] is None  # one seed: no spread
    assert "± n/a" in out
    assert len(list(Path("storage/reports").glob("compare-*/compare.csv"))) == 1  # the default output folder
    assert out.rstrip().endswith("\nNext: cifar-tune report")  # the user's next step, the default storage

    # --full-data: the final verdict on all 300 training and all 100 test images, whatever the study was tuned on
    assert cli.main(["compare", "--seeds", "1", "--data", str(tiny_npz), "--full-data"]) == 0
    out = capsys.readouterr().out
    assert "tuned on a subset of 100 training images; comparing on all 300 and 100 test images" in out
    rec = optuna.load_study(study_name="cifar10-mlp_l2", storage=URL).user_attrs["compare"]
    assert (rec["train_images"], rec["test_images"]) == (300, 100) and "subset" not in rec["data"]
    # ... and it does not go with --subset: one line, status 2, the stored comparison kept
    assert cli.main(["compare", "--data", str(tiny_npz), "--full-data", "--subset", "100"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--full-data" in err
    assert optuna.load_study(study_name="cifar10-mlp_l2", storage=URL).user_attrs["compare"] == rec


@pytest.mark.parametrize("engine", ["keras", "fast"])
def test_training_without_validation_data(engine):
    from cifar_tune import engines
    from tests.helpers.synthetic import synthetic_cifar

    x, y, _, _ = synthetic_cifar(n_train=64, n_test=10)
    result = engines.train(engines.TrainSpec("mlp_l2", {"units": 16, "batch_size": 32}, epochs=1, engine=engine), x, y)
    assert set(result.history) == {"loss", "accuracy"} and result.epochs_run == 1


def test_compare_defaults_to_the_data_the_study_was_tuned_on(tiny_npz, tmp_path):
    """Without --data (and $CIFAR_TUNE_DATA), compare takes the source optimize recorded: no download needed."""
    other = tmp_path / "elsewhere"
    other.mkdir()
    assert run_cli(["optimize", "--arch", "mlp_l2", "--n-trials", "1", "--epochs", "1", "--val-size", "100",
                    "--data", str(tiny_npz.relative_to(tmp_path))])[0] == 0
    study = optuna.load_study(study_name="cifar10-mlp_l2", storage=URL)
    assert study.user_attrs["settings"]["data"] == str(tiny_npz.resolve())  # recorded as an absolute path
    code, out, err = run_cli(["compare", "--seeds", "1", "--out", str(other / "cmp")])
    assert code == 0, err
    assert (other / "cmp" / "compare.csv").is_file() and "MLP with L2" in out


def test_compare_seeds_skip_the_seed_the_study_trained_with():
    class Study:
        user_attrs = {"settings": {"seed": 1001}}

    assert retrain.compare_seeds(Study(), 3) == [1000, 1002, 1003]
    Study.user_attrs = {"settings": {"seed": 0}}
    assert retrain.compare_seeds(Study(), 2) == [1000, 1001]


@pytest.mark.parametrize("diffs, verdict", [([0.02, 0.03, 0.025, 0.028], "better"),
                                            ([-0.02, -0.03, -0.025], "worse"),
                                            ([0.02, -0.01, 0.005], "within noise"),
                                            ([0.02], "within noise (too few seeds"),
                                            ([0.0, 0.0, 0.0], "no difference (the same configuration)")])
def test_the_difference_row_says_within_noise_when_its_interval_holds_zero(diffs, verdict):
    base = [0.5] * len(diffs)
    per_seed = pd.DataFrame([{"arch": "cnn", "Model": "Simple CNN", "Variant": v, "Seed": k,
                              **{m: b + (d if v == "tuned" else 0.0) for m in METRICS}}
                             for k, (b, d) in enumerate(zip(base, diffs, strict=True)) for v in ("baseline", "tuned")])
    agg = tables.aggregate(per_seed)
    row = agg[agg["Variant"] == tables.COMPARE_DIFF].iloc[0]
    assert tables.verdict(row).startswith(verdict)
    shown = tables.display_table(agg)
    assert shown.iloc[2]["Verdict"].startswith(verdict)


def test_an_interrupted_compare_resumes_with_the_runs_it_finished(tiny_npz, monkeypatch, capsys):
    """Ctrl-C in the third of four trainings; the next compare trains only the two it lacks, and its record holds
    the two finished runs as they were measured. Once stored, the ledger is empty: a new compare trains afresh."""
    from cifar_tune.models import architectures

    tiny = ["--data", str(tiny_npz), "--epochs", "1"]
    assert cli.main(["optimize", "--arch", "mlp_l2", "--n-trials", "1", "--val-size", "50", *tiny]) == 0
    # whichever trial wins on tiny data, the tuned model differs from the baseline (else it is not trained)
    monkeypatch.setattr(targets, "_tuned_config",
                        lambda arch, study, best: architectures.get(arch).config({"units": 32}))
    real, trained, fail = retrain._train_and_test, [], True

    def train(t, variant, spec):
        trained.append((variant, spec.seed))
        if len(trained) == 3 and fail:
            raise KeyboardInterrupt
        return real(t, variant, spec)

    monkeypatch.setattr(retrain, "_train_and_test", train)
    assert cli.main(["compare", "--seeds", "2", *tiny]) == 130
    study = optuna.load_study(study_name="cifar10-mlp_l2", storage=URL)
    assert "compare" not in study.user_attrs
    ledger = study.user_attrs["compare_runs"]
    assert sorted(ledger) == ["baseline seed 1000", "tuned seed 1000"]
    first = {k: v["run"]["metrics"]["Accuracy"] for k, v in ledger.items()}
    capsys.readouterr()

    fail, trained[:] = False, []
    assert cli.main(["compare", "--seeds", "2", *tiny]) == 0
    out = capsys.readouterr().out
    assert trained == [("baseline", 1001), ("tuned", 1001)]
    assert out.count("kept from the interrupted compare") == 2
    rec = optuna.load_study(study_name="cifar10-mlp_l2", storage=URL).user_attrs["compare"]
    assert {f"{v} seed {r['seed']}": r["Accuracy"] for v in ("baseline", "tuned") for r in rec["runs"][v]
            if r["seed"] == 1000} == first
    assert optuna.load_study(study_name="cifar10-mlp_l2", storage=URL).user_attrs["compare_runs"] == {}

    trained[:] = []
    assert cli.main(["compare", "--seeds", "1", *tiny]) == 0
    assert trained == [("baseline", 1000), ("tuned", 1000)]
