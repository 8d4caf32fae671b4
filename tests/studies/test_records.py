"""The typed records (``studies.records``): every study, trial and comparison of the committed database reads
through them unchanged; each class round-trips write -> read on a fresh study; an unknown version is refused."""

from __future__ import annotations

import dataclasses

import optuna
import pytest

from cifar_tune.errors import UserError
from cifar_tune.models import metrics
from cifar_tune.storage import database
from cifar_tune.studies.records import ComparisonRecord, StudyRecord, TrialRecord
from tests.helpers.paths import REPO

DB = REPO / "results" / "cpu-2core-2026-11-29" / "studies.db"


def test_every_record_of_the_committed_database_reads():
    storage = database.storage_for_reading(f"sqlite:///{DB}")
    summaries = optuna.get_all_study_summaries(storage, include_best_trial=False)
    assert len(summaries) == 5
    for s in summaries:
        study = optuna.load_study(study_name=s.study_name, storage=storage)
        rec = StudyRecord.read(study)
        assert rec.version == 1 and rec.arch == s.study_name.removeprefix("cifar10-")
        assert rec.epochs == rec.settings["epochs"] and rec.epochs in (5, 10)
        # the structured data fields, derived from the stored description "data <fp> val <n> seed <s>"
        assert rec.data == f"data {rec.fingerprint} val {rec.val_size} seed {rec.seed}"
        assert len(rec.fingerprint) == 16 and rec.seed == 0 and rec.source.endswith("cifar10.npz")
        assert (rec.subset, rec.val_size) in ((None, 5000), (20000, 2000))
        assert rec.space["params"] and rec.baseline_params
        assert StudyRecord.read(s) == rec  # a summary reads alike
        trials = [TrialRecord.read(t) for t in study.get_trials()]
        assert all(t.version == 1 and t.arch == rec.arch and t.data == rec.data and t.config for t in trials)
        assert sum(t.baseline for t in trials) == 1 and all(t.curves and t.epochs_run for t in trials)
        done = [t for t, f in zip(trials, study.get_trials(), strict=True)
                if f.state == optuna.trial.TrialState.COMPLETE]
        assert done and all(0 < t.val_accuracy < 1 and t.val_accuracy == t.curves["val_accuracy"][-1] for t in done)
        # stored before seconds_per_epoch existed: derived from the seconds over the epochs run
        assert all(t.seconds_per_epoch == round(t.seconds / t.epochs_run, 4) > 0 for t in done)
        cmp = ComparisonRecord.read(study)
        assert cmp.version == 1 and cmp.arch == rec.arch and cmp.epochs == rec.epochs and cmp.seeds
        assert [r["Variant"] for r in cmp.table] == ["baseline", "tuned", "tuned - baseline"]
        assert all(set(metrics.COLUMNS) <= set(r) for r in cmp.table)
        assert all(len(cmp.runs[v]) == len(cmp.seeds) == len(cmp.confusion[v]) for v in ("baseline", "tuned"))
        assert cmp.to_attrs() == {**study.user_attrs["compare"], "version": 1}  # nothing dropped or renamed
        assert ComparisonRecord.kept_runs(study) == {}
    retries = [TrialRecord.read(t) for s in summaries
               for t in optuna.load_study(study_name=s.study_name, storage=storage).get_trials()]
    assert any(t.retry_of is not None for t in retries) and any(t.fail_reason for t in retries)


@pytest.fixture
def study():
    return optuna.create_study(storage="sqlite:///:memory:", study_name="cifar10-cnn")


def test_a_study_record_round_trips(study):
    rec = StudyRecord(arch="cnn", epochs=3, data="data 0123456789abcdef val 100 seed 7", space={"params": {}},
                      baseline_params={"lr": 0.001}, settings={"subset": 500, "seed": 7, "data": "x.npz", "epochs": 3})
    rec.write(study)
    back = StudyRecord.read(optuna.load_study(study_name="cifar10-cnn", storage=study._storage))
    assert back == rec and back.version == StudyRecord.VERSION
    assert (back.fingerprint, back.val_size, back.seed, back.subset, back.source) == \
        ("0123456789abcdef", 100, 7, 500, "x.npz")
    assert StudyRecord.from_attrs({"settings": {"epochs": 4}}).epochs == 4  # the epochs stored once: one place


def test_a_trial_record_round_trips(study):
    rec = TrialRecord(baseline=True, worker="h:1", config={"lr": 0.1}, arch="cnn", data="d", backend="tensorflow",
                      device="cpu", engine="keras", precision="float32", curves={"val_loss": [1.0, 0.5]},
                      epochs_run=2, val_accuracy=0.5, params=10, seconds=1.5, engine_info={"a": 1}, rss_mb=12.0,
                      fail_reason=None, retry_of=3)
    study.enqueue_trial({}, user_attrs=rec.to_attrs())
    trial = study.ask()
    TrialRecord.update(trial, fail_reason="boom")
    study.tell(trial, 1.0)
    back = TrialRecord.read(study.trials[0])
    assert back == dataclasses.replace(rec, fail_reason="boom")
    with pytest.raises(TypeError):
        TrialRecord.update(trial, nonsense=1)
    assert TrialRecord.retry_attrs(study.trials[0]) == \
        {"record_version": 1, "baseline": True, "retry_of": 0}


def test_a_comparison_record_round_trips(study):
    rec = ComparisonRecord(date="2026-01-01T00:00:00+00:00", arch="cnn", label="Simple CNN", seeds=[1000],
                           epochs=1, best_trial=2, baseline_trial=0, table=[{"Variant": "baseline"}],
                           runs={"baseline": [{"seed": 1000, "Accuracy": 0.5}]}, models={"tuned": ["m.keras"]})
    ComparisonRecord.keep_runs(study, {"baseline seed 1000": {"key": {}, "run": {}}})
    assert list(ComparisonRecord.kept_runs(study)) == ["baseline seed 1000"]
    rec.write(study)
    assert ComparisonRecord.read(study) == rec and ComparisonRecord.kept_runs(study) == {}


@pytest.mark.parametrize("what", ["study", "trial", "comparison"])
def test_a_record_of_an_unknown_version_is_refused(study, what):
    if what == "study":
        study.set_user_attr("record_version", 2)
        read = lambda: StudyRecord.read(study)  # noqa: E731
    elif what == "trial":
        study.enqueue_trial({}, user_attrs={"record_version": 99, "val_accuracy": 0.5})
        read = lambda: TrialRecord.read(study.trials[0])  # noqa: E731
    else:
        study.set_user_attr("compare", {**ComparisonRecord(arch="cnn").to_attrs(), "version": 2})
        read = lambda: ComparisonRecord.read(study)  # noqa: E731
    with pytest.raises(UserError, match=r"record version (2|99), which this cifar-tune does not know .*newer"):
        read()


def test_a_study_another_program_made_reads_without_an_arch(study):
    study.set_user_attr("data", 12)
    rec = StudyRecord.read(study)
    assert rec.arch is None and rec.data is None and rec.fingerprint is None and rec.version == 1
