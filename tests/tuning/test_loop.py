"""``tuning.loop`` on its own: its pure helpers, and ``run_trial``/``run_trials``/``run_until_total`` driving a
trivial objective on a real SQLite study (heartbeat storage, study lock file), with other workers played by a
second study object on the same database."""

from __future__ import annotations

import math
import threading
import time
from dataclasses import replace
from types import SimpleNamespace

import optuna
import pytest
from optuna.trial import TrialState

from cifar_tune import progress
from cifar_tune.choices import TOTAL_TRIALS_ENV
from cifar_tune.errors import TrialFailed, UserError
from cifar_tune.storage import database
from cifar_tune.studies.presets import make_settings
from cifar_tune.studies.records import TrialRecord
from cifar_tune.tuning import budget, loop

# Optuna calls its heartbeat machinery experimental and expects heartbeats with study.optimize only (the loop's
# ask-and-tell beats its own): both warnings are noise here, as tuning/study.py and loop.run_trial say.
pytestmark = [pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning"),
              pytest.mark.filterwarnings("ignore:Heartbeat of storage is supposed")]


@pytest.fixture(autouse=True)
def quiet(monkeypatch):
    monkeypatch.delenv(TOTAL_TRIALS_ENV, raising=False)
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # failed trials are this file's business


@pytest.fixture
def url(tmp_path) -> str:
    return f"sqlite:///{tmp_path}/loop.db"


def open_study(url: str, **heartbeat) -> optuna.Study:
    """A study on the storage as the loop opens it (heartbeat and retry of dead workers' trials)."""
    storage = database.open_storage(url, retry_attrs=TrialRecord.retry_attrs, **heartbeat)
    return optuna.create_study(study_name="s", storage=storage, load_if_exists=True)


def other_worker(url: str) -> optuna.Study:
    """The same study as another process sees it: its own storage object and connections."""
    return optuna.load_study(study_name="s", storage=database.open_storage(url))


def settings(url: str, **given):
    return make_settings("mlp_l2", storage=url, jobs=given.pop("jobs", 1), **given)


def constant(value: float = 1.0):
    def objective(trial: optuna.Trial) -> float:
        TrialRecord.update(trial, worker="me")
        return value
    return objective


# --- the pure helpers --------------------------------------------------------------------------------------------


def test_total_trials_from_the_settings_or_the_environment(url, monkeypatch):
    assert budget.total_trials(settings(url)) is None
    monkeypatch.setenv(TOTAL_TRIALS_ENV, "")
    assert budget.total_trials(settings(url)) is None  # empty: not set
    monkeypatch.setenv(TOTAL_TRIALS_ENV, " 7")
    assert budget.total_trials(settings(url)) == 7
    assert budget.total_trials(settings(url, total_trials=3)) == 3  # the setting wins


@pytest.mark.parametrize("raw", ["0", "-2", "abc", "2.5", "1000001"])
def test_an_invalid_total_in_the_environment_is_a_user_error_naming_the_variable(url, monkeypatch, raw):
    monkeypatch.setenv(TOTAL_TRIALS_ENV, raw)
    with pytest.raises(UserError) as e:
        budget.total_trials(settings(url))
    assert str(e.value).startswith(f"{TOTAL_TRIALS_ENV}: must be an integer in 1..1000000, got ")
    assert "\n" not in str(e.value)


def test_executor_kind(url, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    for backend in ("tensorflow", "jax"):  # no count of trials per process by default: the memory ceiling
        monkeypatch.setenv("KERAS_BACKEND", backend)
        assert budget.trials_per_process(settings(url)) is None
        assert budget.executor_kind(settings(url, n_trials=1000)) == "inline"
    assert budget.executor_kind(settings(url, n_trials=1, jobs=2)) == "processes"
    assert budget.executor_kind(settings(url, n_trials=3, trials_per_process=3)) == "inline"
    assert budget.executor_kind(settings(url, n_trials=4, trials_per_process=3)) == "processes"  # fresh ones asked
    assert budget.executor_kind(settings(url, n_trials=1, executor="processes")) == "processes"
    assert budget.executor_kind(settings(url, n_trials=4, trials_per_process=3, executor="inline")) == "inline"
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    assert budget.executor_kind(settings(url, n_trials=1, jobs=1)) == "processes"  # a GPU machine


def test_executor_kind_with_a_total_counts_what_the_study_holds(url, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    s = replace(settings(url, trials_per_process=2, total_trials=4), study_name="s")
    assert budget.executor_kind(s) == "processes"  # no storage yet: 4 to run, more than 2
    study = open_study(url)
    for _ in range(2):
        study.enqueue_trial({})
    assert budget.executor_kind(s) == "processes"  # waiting trials have not started: still 4
    study.optimize(constant(), n_trials=2)
    assert budget.executor_kind(s) == "inline"  # 2 of 4 started: 2 left, one process runs them
    assert budget.executor_kind(replace(s, study_name="other")) == "processes"  # no such study: the whole total


def test_the_memory_ceiling_defaults_to_the_size_after_the_first_trial_plus_headroom():
    ceiling = budget.MemoryCeiling(None)
    assert not ceiling.passed() and not ceiling.stopped  # the first trial sets it
    assert ceiling.mb == pytest.approx(budget.resident_mb() + budget.DEFAULT_HEADROOM_MB, abs=50)
    assert not ceiling.passed()
    low = budget.MemoryCeiling(64)  # below any Python process
    assert low.passed() and low.stopped


def test_poll_seconds_follows_the_heartbeat_within_bounds(url):
    assert budget.poll_seconds(database.open_storage(url, heartbeat_interval=2, grace_period=6)) == 2.0
    assert budget.poll_seconds(database.open_storage(url)) == 5.0  # the default 30 s beat: at most 5 s
    assert budget.poll_seconds(SimpleNamespace(heartbeat_interval=0.1)) == 0.5
    assert budget.poll_seconds(optuna.storages.InMemoryStorage()) == 5.0  # no heartbeat: the default


# --- run_trial: the states --------------------------------------------------------------------------------------


def test_run_trial_states_and_callbacks(url):
    study = open_study(url)
    seen = []

    def callback(study, trial):
        seen.append((trial.number, trial.state))

    def pruned(trial):
        raise optuna.TrialPruned

    def failed(trial):
        raise TrialFailed("diverged at epoch 1: loss nan")

    for objective in (constant(0.5), pruned, failed):
        assert loop.run_trial(study, objective, [callback]).number == len(seen) - 1
    states = [TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL]
    assert seen == list(enumerate(states))
    assert [t.state for t in study.trials] == states and study.trials[0].value == 0.5


def test_an_objective_returning_nan_fails_its_trial_and_the_study_goes_on(url):
    study = open_study(url)
    assert loop.run_trial(study, constant(math.nan)).state == TrialState.FAIL
    assert loop.run_trial(study, constant(math.inf)).state == TrialState.FAIL  # not a result either
    assert loop.run_trial(study, constant(0.5)).state == TrialState.COMPLETE  # and the study goes on
    assert [t.state for t in study.trials] == [TrialState.FAIL, TrialState.FAIL, TrialState.COMPLETE]


@pytest.mark.parametrize("error", [UserError("bad data"), KeyboardInterrupt()])
def test_run_trial_fails_the_trial_and_propagates_anything_else(url, error):
    study = open_study(url)

    def objective(trial):
        raise error

    with pytest.raises(type(error)):
        loop.run_trial(study, objective, [lambda s, t: pytest.fail("no callback for a stopped study")])
    assert [t.state for t in study.trials] == [TrialState.FAIL]  # never left RUNNING


# --- run_trials: n new trials ------------------------------------------------------------------------------------


def test_run_trials_runs_exactly_n_new_trials(url):
    study = open_study(url)
    assert loop.run_trials(study, constant(), 2) == 2
    assert loop.run_trials(study, constant(), 1) == 1  # new trials, whatever the study holds
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 3


def test_failed_and_pruned_trials_count_towards_n(url):
    study = open_study(url)
    outcomes = iter([TrialFailed("x"), optuna.TrialPruned(), None])

    def objective(trial):
        outcome = next(outcomes)
        if outcome is not None:
            raise outcome
        return 1.0

    assert loop.run_trials(study, objective, 3) == 3
    assert [t.state for t in study.trials] == [TrialState.FAIL, TrialState.PRUNED, TrialState.COMPLETE]


def test_run_trials_stops_at_the_timeout(url):
    study = open_study(url)

    def slow(trial):
        time.sleep(1.0)
        return 1.0

    assert loop.run_trials(study, slow, 5, timeout=0.5) == 1  # a trial started in time runs to its end
    assert len(study.trials) == 1


def test_a_trial_another_worker_ended_meanwhile_does_not_count(url):
    """The other worker fails our running trial as dead (its heartbeat came late, say): our result is not kept,
    the trial is reported as taken over, no callback sees it, and this command still runs its n new trials."""
    study, other = open_study(url), other_worker(url)
    calls, events, seen = [], [], []

    def objective(trial):
        calls.append(trial.number)
        if len(calls) == 1:
            other.tell(trial.number, state=TrialState.FAIL)  # meanwhile, elsewhere
        return 0.25

    with progress.reporting(events.append):
        assert loop.run_trials(study, objective, 2, callbacks=[lambda s, t: seen.append(t.number)]) == 2
    assert calls == [0, 1, 2] and seen == [1, 2]
    assert [t.state for t in study.trials] == [TrialState.FAIL, TrialState.COMPLETE, TrialState.COMPLETE]
    assert study.trials[0].value is None  # the stored FAIL stays
    taken = [e for e in events if isinstance(e, progress.TrialFinished) and e.taken_over]
    assert [(e.trial.number, e.value) for e in taken] == [(0, 0.25)]


def test_a_write_refused_on_an_ended_trial_counts_as_taken_over(url):
    """The objective's own write to a trial another worker ended fails with Optuna's UpdateFinishedTrialError
    (the objective's TakenOver): taken over, not a failure of this worker."""
    study, other = open_study(url), other_worker(url)
    calls = []

    def objective(trial):
        calls.append(trial.number)
        if len(calls) == 1:
            other.tell(trial.number, state=TrialState.FAIL)
            trial.set_user_attr("curves", {})  # refused: the trial is finished
        return 1.0

    assert loop.run_trials(study, objective, 1) == 1
    assert calls == [0, 1] and [t.state for t in study.trials] == [TrialState.FAIL, TrialState.COMPLETE]


def test_run_trials_gives_up_after_max_taken_over_in_a_row(url):
    study, other = open_study(url), other_worker(url)

    def objective(trial):
        other.tell(trial.number, state=TrialState.FAIL)
        return 1.0

    with pytest.raises(UserError, match=f"{loop.MAX_TAKEN_OVER} trials in a row .* --grace-period"):
        loop.run_trials(study, objective, 10)
    assert [t.state for t in study.trials] == [TrialState.FAIL] * loop.MAX_TAKEN_OVER


# --- run_until_total: a study-wide target ------------------------------------------------------------------------


def test_run_until_total_fills_the_study_to_the_total(url):
    study = open_study(url)
    assert loop.run_until_total(study, constant(), 2, poll=0.1) == 2
    assert loop.run_until_total(study, constant(), 2, poll=0.1) == 0  # already there
    assert loop.run_until_total(study, constant(), 3, poll=0.1) == 1
    assert len(study.trials) == 3


def test_run_until_total_counts_other_workers_trials_and_max_trials(url):
    study, other = open_study(url), other_worker(url)
    other.optimize(constant(), n_trials=2)
    assert loop.run_until_total(study, constant(), 5, max_trials=1, poll=0.1) == 1
    assert loop.run_until_total(study, constant(), 5, poll=0.1) == 2
    assert len(study.trials) == 5


def test_waiting_trials_are_run_not_counted(url):
    study = open_study(url)
    study.enqueue_trial({"x": 1.0})

    def objective(trial):
        return trial.suggest_float("x", 0.0, 2.0)

    assert loop.run_until_total(study, objective, 2, poll=0.1) == 2
    assert [t.params["x"] for t in study.trials][0] == 1.0
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 2


def test_run_until_total_stays_until_other_workers_trials_end(url):
    """With ``stay``, the target reached, it waits for another worker's running trial (which might yet fail and
    need a retry); without, it returns at once."""
    study, other = open_study(url), other_worker(url)
    running = other.ask()
    running.set_user_attr("worker", "elsewhere:1")  # a cifar-tune worker's trial (live_trials)
    assert loop.run_until_total(study, constant(), 2, stay=False, poll=0.1) == 1
    timer = threading.Timer(1.0, lambda: other.tell(running, 1.0))
    start = time.monotonic()
    timer.start()
    try:
        assert loop.run_until_total(study, constant(), 2, stay=True, poll=0.1) == 0
    finally:
        timer.join()
    assert time.monotonic() - start >= 1.0
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 2


def test_a_dead_workers_trial_is_retried_and_its_retry_counts_instead(url):
    """Trial 0's worker beat once and died: after the grace period it is failed, retried once with the same
    parameters, and the retry (not the dead trial) counts towards the total."""
    study = open_study(url, heartbeat_interval=1, grace_period=3)
    dead = other_worker(url).ask()
    dead.suggest_float("x", 0.0, 2.0)
    dead.set_user_attr("worker", "elsewhere:1")
    study._storage.record_heartbeat(dead._trial_id)  # its last beat
    time.sleep(4.2)  # past the grace period in whole seconds (SQLite's clock, which judges staleness)

    def objective(trial):
        return trial.suggest_float("x", 0.0, 2.0)

    assert loop.run_until_total(study, objective, 2, poll=0.1) == 2
    trials = study.trials
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.COMPLETE, TrialState.COMPLETE]
    assert TrialRecord.read(trials[1]).retry_of == 0 and trials[1].params == trials[0].params
