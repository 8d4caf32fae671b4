"""Side costs paid once (issue 27 item 4): a trial's user attributes written in one transaction, and the study's
dashboard note and figures refreshed at the end and at most every ``dashboard_updates.REFRESH_EVERY`` seconds, not
after every trial. (The numerics cache per user: tests/engines/test_numerics.py.)"""

from __future__ import annotations

import optuna
import pytest
from sqlalchemy import event

from cifar_tune.storage import attrs, database
from cifar_tune.studies.records import TrialRecord
from cifar_tune.tuning import dashboard_updates

FIELDS = dict(worker="host:1", config={"units": 512, "dropout": 0.2}, arch="mlp_l2", data="data 0123456789abcdef",
              backend="tensorflow", device="cpu", engine="keras", precision="float32")


@pytest.fixture
def study(tmp_path) -> optuna.Study:
    storage = database.open_storage(f"sqlite:///{tmp_path}/attrs.db", retry_attrs=TrialRecord.retry_attrs)
    return optuna.create_study(study_name="s", storage=storage)


def commits(study: optuna.Study) -> list:
    """The commits the study's database sees from now on (SQLAlchemy's event on Optuna's own engine)."""
    seen: list = []
    engine = getattr(study._storage, "_backend", study._storage).engine
    event.listen(engine, "commit", lambda conn: seen.append(conn))
    return seen


def test_a_trials_record_is_one_transaction_and_reads_back_as_optuna_stores_it(study):
    trial = study.ask()
    assert attrs.batched(trial)  # the installed Optuna has what the one-transaction path needs
    seen = commits(study)
    TrialRecord(**FIELDS).write(trial)
    assert len(seen) == 1
    TrialRecord.update(trial, params=1_578_506, seconds=12.5, val_accuracy=0.41, engine_info={"loop": "fit"},
                       rss_mb=900.0)
    assert len(seen) == 2
    assert trial.user_attrs["arch"] == "mlp_l2" and trial.user_attrs["params"] == 1_578_506  # the live trial too
    study.tell(trial, 1.0)
    stored = optuna.load_study(study_name="s", storage=study._storage).trials[0]  # read back by Optuna
    record = TrialRecord.read(stored)
    assert (record.arch, record.config, record.worker, record.params, record.val_accuracy) == \
        ("mlp_l2", FIELDS["config"], "host:1", 1_578_506, 0.41)
    assert stored.user_attrs == {**TrialRecord(**FIELDS).to_attrs(), "params": 1_578_506, "seconds": 12.5,
                                 "val_accuracy": 0.41, "engine_info": {"loop": "fit"}, "rss_mb": 900.0}


def test_a_trial_ended_by_another_worker_takes_none_of_the_attributes(study):
    trial = study.ask()
    study.tell(trial.number, state=optuna.trial.TrialState.FAIL)  # as a watchdog fails a dead worker's trial
    with pytest.raises(optuna.exceptions.UpdateFinishedTrialError):
        TrialRecord.update(trial, params=1, seconds=2.0)
    assert optuna.load_study(study_name="s", storage=study._storage).trials[0].user_attrs == {}


def test_the_note_and_figures_are_refreshed_at_most_every_refresh_every_seconds(study, monkeypatch):
    refreshed: list = []
    monkeypatch.setattr(dashboard_updates, "refresh_story", lambda s: refreshed.append(len(s.trials)))
    monkeypatch.setitem(dashboard_updates._state, "last", 1000.0)
    clock = [1000.0]
    monkeypatch.setattr(dashboard_updates.time, "monotonic", lambda: clock[0])
    for _ in range(5):  # five short trials finish within a minute: no refresh
        clock[0] += 10
        study.tell(study.ask(), 1.0)
        dashboard_updates.callback(study, study.trials[-1])
    assert refreshed == [] and dashboard_updates.REFRESH_EVERY >= 120
    clock[0] += dashboard_updates.REFRESH_EVERY
    study.tell(study.ask(), 1.0)
    dashboard_updates.callback(study, study.trials[-1])
    assert refreshed == [6]
    dashboard_updates.tell(study)  # the end of the command: once more
    assert refreshed == [6, 6]
