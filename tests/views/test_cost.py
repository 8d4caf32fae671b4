"""What a trial costs (issue 27, item 5): seconds per epoch and parameters of the best trial beside the baseline's,
and the best found per hour of training, from what a real SQLite study stores (trials added as Optuna's
``FrozenTrial``s carrying cifar-tune's records), in the optimize summary, ``cifar-tune studies``, the HTML report
and the dashboard note."""

from __future__ import annotations

from datetime import datetime, timedelta

import optuna
import pytest
from optuna.distributions import FloatDistribution
from optuna.trial import FrozenTrial, TrialState

from cifar_tune.cli import display, main
from cifar_tune.studies import catalog
from cifar_tune.studies.records import TrialRecord
from cifar_tune.views import dashboard_content, tables
from cifar_tune.views.study_report import write_study_report

T0 = datetime(2026, 12, 1, 12, 0, 0)
# number: (state, value, seconds per epoch, epochs run, params, seconds after T0 it started, ended)
TRIALS = {
    0: (TrialState.COMPLETE, 1.8, 10.0, 3, 1000, 0, 30),     # the baseline: 30 s of training
    1: (TrialState.PRUNED, None, 20.0, 1, 4000, 30, 50),     # 20 s, pruned: paid for all the same
    2: (TrialState.COMPLETE, 1.5, 23.0, 3, 5000, 50, 200),   # the best: 69 s, 2.3x the baseline's epoch
    3: (TrialState.COMPLETE, 1.6, 5.0, 3, 800, 60, 100),     # 15 s, ends before #2 does
    4: (TrialState.PRUNED, None, None, 1, 900, 200, 212),    # an older record: no seconds; 12 s of wall time
}


def frozen(number: int) -> FrozenTrial:
    state, value, per_epoch, epochs, params, start, end = TRIALS[number]
    record = TrialRecord(baseline=number == 0, arch="mlp_l2", params=params, epochs_run=epochs,
                         seconds_per_epoch=per_epoch, curves={"val_loss": [2.0] * epochs})
    return FrozenTrial(number=number, trial_id=number, state=state, value=value, values=None,
                       datetime_start=T0 + timedelta(seconds=start), datetime_complete=T0 + timedelta(seconds=end),
                       params={"lr": 0.001 * (number + 1)}, distributions={"lr": FloatDistribution(1e-5, 1.0)},
                       user_attrs=record.to_attrs(), system_attrs={}, intermediate_values={})


@pytest.fixture
def url(tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'studies.db'}"


@pytest.fixture
def study(url):
    study = optuna.create_study(study_name="cifar10-mlp_l2", storage=url)
    study.set_user_attr("arch", "mlp_l2")
    for number in TRIALS:
        study.add_trial(frozen(number))
    return optuna.load_study(study_name="cifar10-mlp_l2", storage=url)


def test_the_best_trials_cost_beside_the_baselines(study):
    cost = catalog.study_cost(study)
    assert (cost.best, cost.value, cost.seconds_per_epoch, cost.params) == (2, 1.5, 23.0, 5000)
    assert cost.vs_baseline == pytest.approx(2.3) and cost.params_vs_baseline == pytest.approx(5.0)
    assert catalog.cost_line(cost) == ("trial 2: 23 s per epoch, 5,000 parameters (2.3x the baseline's time per "
                                       "epoch, 5.0x its parameters)")


def test_best_found_against_the_training_time_of_every_finished_trial(study):
    """In the order trials ended; pruned trials' training counts; a record without seconds counts its wall time."""
    assert catalog.best_by_training_time(study) == [(30, 1.8), (50, 1.8), (65, 1.6), (134, 1.5), (146, 1.5)]
    cost = catalog.study_cost(study)
    assert (cost.found_after, cost.total) == pytest.approx((134, 146))
    assert catalog.found_line(cost) == "best val_loss 1.5000 after 2.2 min of training (of 2.4 min)"


def test_no_cost_before_a_trial_completes(tmp_path):
    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 's.db'}")
    study.add_trial(frozen(1))
    assert catalog.study_cost(study) is None and catalog.best_by_training_time(study) == []


def test_the_optimize_summary_says_what_the_best_trial_costs(study):
    text = display.summary(study)
    assert "cost     best trial 2: 23 s per epoch, 5,000 parameters (2.3x the baseline's time per epoch" in text
    assert "found    best val_loss 1.5000 after 2.2 min of training (of 2.4 min)" in text


def test_the_studies_command_shows_the_cost_columns(study, url, capsys):
    row = tables.study_rows(study._storage)[0]
    assert (row["s/epoch"], row["params"], row["x_base_time"], row["found_h"], row["train_h"]) == \
        (23.0, 5000, 2.3, round(134 / 3600, 3), round(146 / 3600, 3))
    assert main(["studies", "--storage", url]) == 0
    out = capsys.readouterr().out
    assert "s/epoch" in out and "x_base_time" in out and "2.3" in out


def test_the_report_and_the_note_show_the_cost(study, url, tmp_path):
    page = write_study_report(url, tmp_path / "r.html").read_text()
    assert "2.3x the baseline&#x27;s time per epoch" in page or "2.3x the baseline's time per epoch" in page
    assert "best found per hour spent" in page and "2.2 min of training (of 2.4 min)" in page
    note = dashboard_content.study_note_section(study)
    assert ("Cost of the best trial 2: 23 s per epoch, 5,000 parameters (2.3x the baseline's time per epoch, 5.0x "
            "its parameters). Found per hour spent: best val_loss 1.5000 after 2.2 min of training (of 2.4 min).") \
        in note


def test_an_older_record_derives_its_seconds_per_epoch():
    """Records stored before ``seconds_per_epoch`` existed: seconds over the epochs trained (a resumed trial's own
    epochs only); a pruned one stored no seconds: unknown."""
    old = TrialRecord.from_attrs({"seconds": 12.0, "epochs_run": 4, "record_version": 1})
    assert old.seconds_per_epoch == 3.0 and old.training_seconds() == 12.0
    resumed = TrialRecord.from_attrs({"seconds": 12.0, "epochs_run": 4, "resumed_from_epoch": 1})
    assert resumed.seconds_per_epoch == 4.0 and resumed.training_seconds() == 12.0
    by_curves = TrialRecord.from_attrs({"seconds": 10.0, "curves": {"loss": [1, 2], "val_loss": [1, 2]}})
    assert by_curves.seconds_per_epoch == 5.0
    pruned = TrialRecord.from_attrs({"epochs_run": 2})
    assert pruned.seconds_per_epoch is None and pruned.training_seconds() is None


def test_training_time_reads_in_hours_minutes_or_seconds():
    assert [catalog.hours(s) for s in (12.34, 134, 1512, 3960)] == ["12.3 s", "2.2 min", "0.42 h", "1.10 h"]


def test_a_best_trial_that_is_the_baseline_says_so(tmp_path):
    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 's.db'}")
    study.add_trial(frozen(0))
    assert catalog.cost_line(catalog.study_cost(study)) == \
        "trial 0: 10 s per epoch, 1,000 parameters (the baseline itself)"
