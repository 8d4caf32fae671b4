"""``tuning.supervisor`` on its own: the ``Supervisor``'s bookkeeping (the budget split over free slots, deaths,
``MAX_FAILED_STARTS``, when it is finished, stopping workers) on a real SQLite study, over the ``Processes``
executor with real short-lived stand-in worker processes (``python -c ...`` instead of a Keras worker), and
``executors.worker_env`` placing each slot on a GPU."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

import optuna
import pytest
from optuna.trial import TrialState

from cifar_tune import progress
from cifar_tune.storage import database
from cifar_tune.studies.presets import make_settings
from cifar_tune.studies.records import TrialRecord
from cifar_tune.tuning import executors, supervisor
from cifar_tune.tuning.executors import Processes
from cifar_tune.tuning.supervisor import MAX_FAILED_STARTS, Supervisor
from tests.helpers.fake_gpus import fake_nvidia_smi

# Optuna calls its heartbeat machinery experimental and expects heartbeats with study.optimize only (the tuning
# loop's ask-and-tell beats its own): both warnings are noise here.
pytestmark = [pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning"),
              pytest.mark.filterwarnings("ignore:Heartbeat of storage is supposed")]

EXIT_0 = "import sys; sys.exit(0)"


@pytest.fixture(autouse=True)
def no_gpus(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")


@pytest.fixture
def study(tmp_path) -> optuna.Study:
    storage = database.open_storage(f"sqlite:///{tmp_path}/sup.db", retry_attrs=TrialRecord.retry_attrs)
    return optuna.create_study(study_name="s", storage=storage)


class Started(list):
    """Each start of the test's stand-in workers, as (slot, n_trials, timeout, total); ``code``: what they run."""

    code = EXIT_0

    def __init__(self):
        super().__init__()
        self.executors = []


class StandIns(Processes):
    """Worker processes that run ``started.code`` (``python -c``) instead of a Keras worker."""

    def __init__(self, settings, started: Started):
        super().__init__(settings)
        self.started = started
        started.executors.append(self)

    def start(self, slot, job):
        self.started.append((slot, job["n_trials"], job["settings"]["timeout"], job["settings"]["total_trials"]))
        self.command = [sys.executable, "-c", self.started.code]
        return super().start(slot, job)


@pytest.fixture
def started() -> Started:
    """The starts of this test's supervisors (``make``); no stand-in is left behind by a failed test."""
    calls = Started()
    yield calls
    for executor in calls.executors:
        for proc in executor.procs.values():
            if proc.poll() is None:
                proc.kill()
            proc.wait()


def make(study, started: Started, *, jobs=3, n_trials=10, total=None, per_process=None) -> Supervisor:
    settings = make_settings("mlp_l2", storage="sqlite:///unused.db", study_name="s", jobs=jobs, n_trials=n_trials)
    return Supervisor(settings, study, total, per_process, StandIns(settings, started))


def wait_all(sup: Supervisor) -> None:
    for proc in sup.executor.procs.values():
        proc.wait(timeout=60)


def trial_by(study: optuna.Study, wid: str, state=TrialState.COMPLETE) -> None:
    """A trial run by worker ``wid`` (``TrialState.RUNNING``: still running)."""
    trial = study.ask()
    TrialRecord.update(trial, worker=wid)
    if state != TrialState.RUNNING:
        study.tell(trial, 1.0 if state == TrialState.COMPLETE else None, state=state)


# --- the budget over the free slots ------------------------------------------------------------------------------


def test_n_trials_are_split_evenly_over_the_free_slots(study, started):
    sup = make(study, started, jobs=3, n_trials=10)
    sup.spawn(remaining=60.0)
    assert started == [(1, 4, 60.0, None), (2, 3, 60.0, None), (3, 3, 60.0, None)]
    assert sorted(sup.runners) == [1, 2, 3]
    host = socket.gethostname()
    assert sup.mine == {f"{host}:{p.pid}" for p in sup.executor.procs.values()}
    assert sup.left(study.get_trials()) == 0  # all promised
    sup.spawn(remaining=None)
    assert len(started) == 3  # no free slot
    wait_all(sup)


def test_a_per_process_bound_caps_each_share(study, started):
    sup = make(study, started, jobs=3, n_trials=10, per_process=2)
    sup.spawn(remaining=None)
    assert [n for _, n, _, _ in started] == [2, 2, 2]
    assert sup.left(study.get_trials()) == 4  # for the fresh workers that replace these
    wait_all(sup)


def test_a_study_wide_total_counts_every_started_trial(study, started):
    for _ in range(2):
        trial_by(study, "elsewhere:1")  # another command's trials count
    study.enqueue_trial({})  # waiting: not started, does not count
    sup = make(study, started, jobs=2, total=5)
    sup.spawn(remaining=None)
    assert started == [(1, 5, None, 5), (2, 5, None, 5)]  # 3 left: both run until the total
    wait_all(sup)


def test_nothing_left_starts_no_worker(study, started):
    for _ in range(3):
        trial_by(study, "elsewhere:1")
    sup = make(study, started, jobs=2, total=3)
    sup.spawn(remaining=None)
    assert started == [] and sup.runners == {}
    assert sup.finished(out_of_time=False)


def test_trials_run_are_no_longer_promised_and_a_fresh_worker_gets_the_rest(study, started):
    sup = make(study, started, jobs=1, n_trials=5, per_process=3)
    sup.spawn(remaining=None)
    (runner,) = sup.runners.values()
    trial_by(study, runner.wid)  # the worker ran one of its three
    assert sup.left(study.get_trials()) == 2  # 5 - 1 done - 2 still promised
    trial_by(study, "elsewhere:1")  # another command's trial: not this command's n_trials
    assert sup.left(study.get_trials()) == 2
    wait_all(sup)
    sup.reap(0)
    assert sup.runners == {} and sup.failed_starts == 0 and sup.deaths == []
    assert not sup.finished(out_of_time=False)
    sup.spawn(remaining=None)
    assert [n for _, n, _, _ in started] == [3, 3]  # 4 left, at most 3 a process
    wait_all(sup)


# --- workers that end ------------------------------------------------------------------------------------------


def test_workers_ending_without_a_trial_give_up_after_max_failed_starts(study, started):
    events = []
    sup = make(study, started, jobs=1, n_trials=5)
    with progress.reporting(events.append):
        for i in range(1, MAX_FAILED_STARTS + 1):
            sup.spawn(remaining=None)
            wait_all(sup)
            sup.reap(0)
            assert sup.failed_starts == i and sup.deaths == []  # exit 0: not a death
            assert sup.stop_code == (1 if i == MAX_FAILED_STARTS else 0)
    assert [str(e) for e in events] == [f"{MAX_FAILED_STARTS} workers in a row ended without a trial; giving up"]
    assert sup.finished(out_of_time=False)


def test_a_worker_that_ran_a_trial_resets_the_failed_starts(study, started):
    sup = make(study, started, jobs=1, n_trials=5)
    for _ in range(MAX_FAILED_STARTS - 1):
        sup.spawn(remaining=None)
        wait_all(sup)
        sup.reap(0)
    sup.spawn(remaining=None)
    trial_by(study, sup.runners[1].wid)
    wait_all(sup)
    sup.reap(0)
    assert sup.failed_starts == 0 and sup.stop_code == 0


def test_a_worker_that_dies_is_a_death_and_the_others_go_on(study, started):
    started.code = "import sys; sys.exit(3)"
    events = []
    sup = make(study, started, jobs=1, n_trials=5)
    sup.spawn(remaining=None)
    pid = sup.executor.procs[1].pid
    wait_all(sup)
    with progress.reporting(events.append):
        sup.reap(0)
    assert sup.deaths == [f"worker 1 (pid {pid}) exited with status 3"] == [str(e) for e in events]
    assert sup.failed_starts == 1 and sup.stop_code == 0 and not sup.finished(out_of_time=False)
    assert sup.finished(out_of_time=True)
    for _ in range(MAX_FAILED_STARTS - 1):
        sup.spawn(remaining=None)
        wait_all(sup)
        sup.reap(0)
    assert sup.stop_code == 3  # the last worker's status


def test_a_killed_worker_is_described_by_its_signal(study, started):
    started.code = "import os, signal; os.kill(os.getpid(), signal.SIGKILL)"
    sup = make(study, started, jobs=1)
    sup.spawn(remaining=None)
    pid = sup.executor.procs[1].pid
    wait_all(sup)
    sup.reap(0)
    assert sup.deaths == [f"worker 1 (pid {pid}) was killed by SIGKILL"]


@pytest.mark.parametrize("code", [supervisor.USER_ERROR, supervisor.INTERRUPTED])
def test_a_user_error_or_an_interrupt_stops_the_run_at_once(study, started, code):
    started.code = f"import sys; sys.exit({code})"
    sup = make(study, started, jobs=2)
    sup.spawn(remaining=None)
    wait_all(sup)
    sup.reap(0)
    assert sup.stop_code == code and sup.failed_starts == 2
    assert sup.finished(out_of_time=False)


def test_finished_waits_for_this_commands_running_trials(study, started):
    sup = make(study, started, jobs=1, n_trials=1)
    sup.spawn(remaining=None)
    wid = sup.runners[1].wid
    assert not sup.finished(out_of_time=False)  # a worker is there
    trial_by(study, wid, TrialState.RUNNING)  # it started its trial, then its process ended
    wait_all(sup)
    sup.reap(0)
    assert sup.left(study.get_trials()) == 0
    assert not sup.finished(out_of_time=False)  # its trial may yet fail as dead and be retried
    supervisor.fail_running_trials(study, wid, "its worker was killed")
    assert sup.finished(out_of_time=False)


def test_fail_running_trials_fails_only_that_workers_trials(study):
    trial_by(study, "h:1", TrialState.RUNNING)
    trial_by(study, "h:2", TrialState.RUNNING)
    trial_by(study, "h:1")
    events = []
    with progress.reporting(events.append):
        supervisor.fail_running_trials(study, "h:1", "its worker did not stop in time and was killed")
    assert [t.state for t in study.trials] == [TrialState.FAIL, TrialState.RUNNING, TrialState.COMPLETE]
    assert [str(e) for e in events] == ["trial   0 fail     its worker did not stop in time and was killed"]


READY = "import os; open(os.path.join(os.environ['READY_DIR'], str(os.getpid())), 'w').close()"


def wait_ready(tmp_path, n: int) -> None:
    """Until ``n`` stand-ins said they are ready (a file each under ``tmp_path``)."""
    deadline = time.monotonic() + 60
    while len(list(tmp_path.glob("[0-9]*"))) < n:
        assert time.monotonic() < deadline, "the stand-in workers did not start"
        time.sleep(0.05)


def test_stop_terminates_and_kills_the_stubborn(study, started, monkeypatch, tmp_path):
    """SIGTERM first; a worker still there after STOP_GRACE is killed and its running trial failed."""
    monkeypatch.setattr(executors, "STOP_GRACE", 2.0)
    monkeypatch.setenv("READY_DIR", str(tmp_path))
    started.code = f"import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); {READY}; time.sleep(120)"
    sup = make(study, started, jobs=2)
    sup.spawn(remaining=None)
    wait_ready(tmp_path, 2)  # SIGTERM is ignored from here on
    trial_by(study, sup.runners[1].wid, TrialState.RUNNING)
    procs = list(sup.executor.procs.values())
    sup.stop()
    assert [p.returncode for p in procs] == [-9, -9]
    assert [t.state for t in study.trials] == [TrialState.FAIL]


def test_stop_lets_workers_stop_on_sigterm(study, started, monkeypatch, tmp_path):
    monkeypatch.setenv("READY_DIR", str(tmp_path))
    started.code = f"import time; {READY}; time.sleep(120)"
    sup = make(study, started, jobs=2)
    sup.spawn(remaining=None)
    wait_ready(tmp_path, 2)
    procs = list(sup.executor.procs.values())
    sup.stop()
    assert [p.returncode for p in procs] == [-15, -15]


def test_a_replacement_starts_as_soon_as_a_worker_ends(study, started):
    """poll waits on the workers themselves (pidfds), not a fixed interval: a worker that ends within a long
    poll is reported at once."""
    started.code = "import time; time.sleep(1)"
    sup = make(study, started, jobs=1, n_trials=2)
    sup.spawn(remaining=None)
    began = time.monotonic()
    sup.reap(60.0)
    assert sup.runners == {} and time.monotonic() - began < 30  # not the 60 s poll


# --- worker_env: each slot's GPU ---------------------------------------------------------------------------------


def env_of(settings, slot: int) -> dict:
    """What the worker process of ``slot`` sees, asked of a real process started with its environment."""
    code = ("import json, os; print(json.dumps({k: os.environ.get(k) for k in ('CUDA_VISIBLE_DEVICES', "
            "'XLA_PYTHON_CLIENT_MEM_FRACTION', 'PATH')}))")
    out = subprocess.run([sys.executable, "-c", code], env=executors.worker_env(settings, slot),
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def test_worker_env_places_the_slots_round_robin_on_the_visible_gpus(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3")
    s = make_settings("mlp_l2", jobs=4)
    envs = [env_of(s, slot) for slot in range(1, 5)]
    assert [e["CUDA_VISIBLE_DEVICES"] for e in envs] == ["2", "3", "2", "3"]
    assert {e["XLA_PYTHON_CLIENT_MEM_FRACTION"] for e in envs} == {"0.45"}  # two workers a GPU
    assert {e["PATH"] for e in envs} == {os.environ["PATH"]}  # the rest of this process's environment
    s = make_settings("mlp_l2", jobs=2, jobs_per_gpu=4)  # room for four a GPU: a quarter each
    assert executors.worker_env(s, 2)["XLA_PYTHON_CLIENT_MEM_FRACTION"] == "0.22"


def test_worker_env_one_gpu_each_from_nvidia_smi(monkeypatch, tmp_path):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    monkeypatch.setenv("PATH", fake_nvidia_smi(tmp_path / "bin", n=4)["PATH"])
    s = make_settings("mlp_l2")  # one job per GPU by default
    assert s.jobs == 4
    envs = [executors.worker_env(s, slot) for slot in range(1, 5)]
    assert [e["CUDA_VISIBLE_DEVICES"] for e in envs] == ["0", "1", "2", "3"]
    assert all("XLA_PYTHON_CLIENT_MEM_FRACTION" not in e for e in envs)  # alone on its GPU: all of it


def test_worker_env_without_gpus_shares_one_device(monkeypatch):
    s = make_settings("mlp_l2", jobs=2)
    env = executors.worker_env(s, 1)
    assert env["CUDA_VISIBLE_DEVICES"] == ""  # as this process has it: no GPU
    assert env["XLA_PYTHON_CLIENT_MEM_FRACTION"] == "0.45"
