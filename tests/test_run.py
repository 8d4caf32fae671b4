"""`cifar-tune run` end to end on tiny data (two architectures), its resume, and the not-learned warning."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState, create_trial

from cifar_tune import cli
from cifar_tune.cli import display
from cifar_tune.studies import catalog
from cifar_tune.studies.records import StudyRecord, TrialRecord
from cifar_tune.views import dashboard_content, tables

URL = "sqlite:///storage/cifar_tune.db"


def run_cli(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli.main(argv)
    return code, out.getvalue(), err.getvalue()


def test_run_does_studies_compare_and_report_and_resumes_without_redoing(tiny_npz):
    argv = ["run", "--archs", "mlp_l2,cnn", "--n-trials", "2", "--epochs", "1", "--val-size", "100", "--seeds", "2",
            "--data", str(tiny_npz), "--out", "job"]
    code, out, err = run_cli(argv)
    assert code == 0, err
    table = out[out.rindex("Test-set macro metrics"):]  # the job's final table (compare printed its own)
    for label in ("MLP with L2", "Simple CNN"):
        rows = [line for line in table.splitlines() if line.startswith(label)]
        assert [r.split()[len(label.split())] for r in rows] == ["baseline", "tuned", "tuned"], rows
    assert Path("job/study-report.html").is_file() and "Report: job/study-report.html" in out
    assert Path("job/compare/compare.csv").is_file()
    assert "Next:" not in out  # the job writes the report itself: nothing is left for the user to run
    storage = optuna.storages.RDBStorage(URL)
    first = {}
    for arch in ("mlp_l2", "cnn"):
        study = optuna.load_study(study_name=f"cifar10-{arch}", storage=storage)
        assert len(study.trials) == 2  # the preset's n_trials as the study's total
        first[arch] = study.user_attrs["compare"]
        assert first[arch]["seeds"] == [1000, 1001]

    code, out, err = run_cli(argv)  # everything is complete: nothing is trained again
    assert code == 0, err
    assert "every architecture's comparison is up to date" in out
    for arch in ("mlp_l2", "cnn"):
        study = optuna.load_study(study_name=f"cifar10-{arch}", storage=storage)
        assert len(study.trials) == 2
        assert study.user_attrs["compare"]["date"] == first[arch]["date"]
    assert "MLP with L2" in out[out.rindex("Test-set macro metrics"):]


def test_run_with_bad_data_touches_no_storage(tmp_path):
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip")
    code, _, err = run_cli(["run", "--archs", "mlp_l2", "--data", str(bad)])
    assert code == 2 and err.count("\n") == 1 and not Path("storage/cifar_tune.db").exists()


def _planted(storage, name: str, trials: list[tuple[float, float, bool]]) -> optuna.Study:
    """A study whose trials have (val_loss, val_accuracy, is_baseline), stored as optimize would."""
    study = optuna.create_study(study_name=name, storage=storage)
    StudyRecord(arch="resnet").write(study)
    for loss, acc, baseline in trials:
        study.add_trial(create_trial(value=loss, state=TrialState.COMPLETE, params={},
                                     distributions={},
                                     user_attrs=TrialRecord(val_accuracy=acc, baseline=baseline).to_attrs()))
    return study


@pytest.mark.parametrize("trials, says", [
    ([(2.2, 0.155, True), (2.3026, 0.100, False)], None),  # the baseline is best: nothing crowned wrongly
    ([(2.32, 0.155, True), (2.3026, 0.100, False)], "within 0.05 of chance"),  # the README's ResNet case
    ([(1.60, 0.45, True), (1.55, 0.41, False)], "lower accuracy"),  # lower loss, lower accuracy
    ([(1.60, 0.45, True), (1.40, 0.52, False)], None),  # a sound winner
])
def test_a_study_that_has_not_learned_says_so_everywhere(trials, says):
    Path("storage").mkdir()
    storage = optuna.storages.RDBStorage(URL)
    study = _planted(storage, "cifar10-resnet", trials)
    warning = catalog.not_learned(study)
    assert "WARNING" not in display.summary(study)  # the library warns (tuning.run_study), on standard error
    if says is None:
        assert warning is None
        assert [r["warning"] for r in tables.study_rows(storage)] == [""]
        return
    assert says in warning and "budget" in warning
    assert [r["warning"] for r in tables.study_rows(storage)] == [warning]  # `studies`: beside the study
    assert warning in dashboard_content.study_note_section(study)
    _, warnings = tables.stored_table(URL, ["resnet"])
    assert warnings == [f"resnet: {warning}"]
