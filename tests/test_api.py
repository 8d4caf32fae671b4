"""The Python API (``import cifar_tune as ct``) on tiny synthetic data: real training, real SQLite files."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
import plotly.graph_objects as go
import pytest

import cifar_tune as ct
from cifar_tune import cli
from cifar_tune.choices import COMPARE_DIFF
from cifar_tune.studies import presets
from tests.helpers.synthetic import synthetic_cifar

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "cifar_tune"
METRICS = ["Accuracy", "Precision", "Recall", "F1 Score"]
TINY = {"epochs": 1, "val_size": 100}


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --- the package face ------------------------------------------------------------------------------------------


def test_import_cifar_tune_loads_no_keras_and_no_tensorflow():
    probe = ("import sys, cifar_tune as ct; assert callable(ct.optimize) and ct.UserError; "
             "print(sorted(m for m in ('keras', 'tensorflow', 'jax', 'optuna') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]", out.stdout  # not even Optuna: ct.optimize is bound from api.py (no Keras)


def test_the_api_names_are_the_functions_and_no_submodule_takes_them():
    from cifar_tune import api

    # a submodule cifar_tune/compare.py would replace ct.compare by itself the moment anything imported it
    names = {p.stem for p in PACKAGE.iterdir() if p.suffix == ".py" or (p / "__init__.py").is_file()}
    assert not names & set(api.__all__), names & set(api.__all__)
    import cifar_tune.comparison.retrain  # noqa: F401  (what the CLI imports: the names stay the API's)
    import cifar_tune.comparison.seed_baseline  # noqa: F401
    import cifar_tune.pipeline  # noqa: F401

    for name in api.__all__:
        assert getattr(ct, name) is getattr(api, name)
        assert "Raises" in getattr(api, name).__doc__, name
    assert ct.__version__ and issubclass(ct.WorkersStopped, ct.UserError) and ct.Comparison.__doc__
    with pytest.raises(AttributeError):
        ct.no_such_name  # noqa: B018


# --- one path for settings -------------------------------------------------------------------------------------


def test_keywords_and_the_equivalent_flags_build_equal_settings(tmp_path):
    space = tmp_path / "space.toml"
    space.write_text((REPO / "search_spaces" / "cnn.toml").read_text())
    argv = ["optimize", "--arch", "cnn", "--preset", "quick", "--subset", "2000", "--n-trials", "4", "--epochs",
            "2", "--seed", "3", "--sampler", "random", "--pruner", "median", "--engine", "keras", "--precision",
            "bf16", "--jobs", "2", "--timeout", "30", "--data", "data.npz", "--storage", "sqlite:///x.db",
            "--study-name", "mine", "--space", str(space), "--grace-period", "60", "--verbose"]
    from_flags = cli.optimize_settings(cli.build_parser().parse_args(argv))
    from_keywords = ct.make_settings("cnn", preset="quick", subset=2000, n_trials=4, epochs=2, seed=3,
                                     sampler="random", pruner="median", engine="keras", precision="bf16", jobs=2,
                                     timeout=30.0, data="data.npz", storage="sqlite:///x.db", study_name="mine",
                                     space=str(space), grace_period=60, verbose=True)
    assert from_keywords == from_flags
    assert from_flags.val_size is None and from_flags.data == str(Path("data.npz").resolve())  # preset rules held
    # the defaults alike: nothing given but the architecture
    assert ct.make_settings("mlp_l2") == cli.optimize_settings(
        cli.build_parser().parse_args(["optimize", "--arch", "mlp_l2"]))
    # a job's plan: `run` flags and the keywords ct.run passes
    args = cli.build_parser().parse_args(["run", "--archs", "cnn,mlp_l2", "--preset", "quick", "--n-trials", "3",
                                          "--timeout", "50", "--seed", "7"])
    assert cli.run_plan(args) == presets.make_plan(["cnn", "mlp_l2"], preset="quick", n_trials=3, timeout=50.0,
                                                   seed=7)
    assert [s.timeout for s in cli.run_plan(args)] == [50.0, 50.0]


@pytest.mark.parametrize("call, message", [
    (lambda: ct.optimize(arch="mlp_l2", n_trail=3), "unknown setting 'n_trail'"),
    (lambda: ct.optimize(arch="vgg"), "arch must be one of"),
    (lambda: ct.optimize(n_trials=3), "optimize needs arch="),
    (lambda: ct.optimize(arch="mlp_l2", epochs=0), "epochs must be an integer in 1..10000, got 0"),
    (lambda: ct.optimize(arch="mlp_l2", sampler="grid"), "sampler must be one of tpe, random"),
    (lambda: ct.optimize(arch="mlp_l2", val_size="100"), "val-size must be an integer"),
    (lambda: ct.optimize(arch="mlp_l2", preset="nope"), "unknown preset 'nope'"),
    (lambda: ct.optimize(ct.make_settings("mlp_l2"), n_trials=2), "not both"),
    (lambda: ct.baseline(["vgg"]), "unknown architecture 'vgg'"),
    (lambda: ct.baseline(["cnn"], protocol="holdout2"), "protocol must be one of seed, holdout"),
    (lambda: ct.baseline(["cnn"], val_size=100), "--val-size applies to --protocol holdout"),
    (lambda: ct.compare(seeds=0), "seeds must be an integer in 1..100, got 0"),
    (lambda: ct.compare(full_data=True, subset=1000), "does not go with --subset"),
    (lambda: ct.compare(engine="turbo"), "engine must be one of auto, keras, fast"),
    (lambda: ct.compare(), "no storage at sqlite:///storage/cifar_tune.db"),
    (lambda: ct.run(["mlp_l2"], space="x.toml"), "space cannot be given"),
    (lambda: ct.run("mlp_l2"), "archs must be a non-empty list"),
    (lambda: ct.load("sqlite:///storage/none.db"), "no storage at"),
])
def test_a_bad_argument_raises_user_error_and_writes_nothing(call, message):
    with pytest.raises(ct.UserError, match=re.escape(message)):
        call()
    assert not Path("storage").exists()


# --- the functions, end to end ---------------------------------------------------------------------------------


def test_optimize_returns_the_study_and_resumes_it(tiny_npz, capsys):
    url = "sqlite:///storage/api.db"
    study = ct.optimize(arch="mlp_l2", n_trials=2, data=str(tiny_npz), storage=url, **TINY)
    assert isinstance(study, optuna.Study) and study.study_name == "cifar10-mlp_l2"
    assert len(study.trials) == 2 and all(t.state.is_finished() for t in study.trials)
    assert study.user_attrs["arch"] == "mlp_l2"
    out, err = capsys.readouterr()
    assert out == "" and "cifar10-mlp_l2" in err and "Done in" not in err  # a progress bar, no printed lines
    # an OptimizeSettings instead of keywords: the same study, resumed
    again = ct.optimize(ct.make_settings("mlp_l2", n_trials=1, data=str(tiny_npz), storage=url, **TINY))
    assert len(again.trials) == 3 and again.study_name == study.study_name


def test_baseline_returns_the_table_the_histories_and_the_folder(tiny_npz, capsys):
    result = ct.baseline(["mlp_l2", "cnn"], data=tiny_npz, epochs=2, out="base")
    assert isinstance(result, ct.BaselineResult)
    assert list(result.table.columns) == ["Model", *METRICS]
    assert list(result.table["Model"]) == ["MLP with L2", "Simple CNN"]
    assert result.table[METRICS].apply(lambda c: c.between(0, 1)).all().all()
    assert set(result.histories) == {"MLP with L2", "Simple CNN"}
    assert all(len(h["loss"]) == 2 and len(h["val_accuracy"]) == 2 for h in result.histories.values())
    assert result.out == Path("base") and {p.name for p in result.out.iterdir()} >= {"metrics.csv", "metrics.md",
                                                                                     "report.html", "history.csv"}
    written = pd.read_csv(result.out / "metrics.csv")
    assert np.allclose(written[METRICS].to_numpy(), result.table[METRICS].to_numpy(), atol=1e-4)
    figures = result.figures()
    assert len(figures) == 2 and all(isinstance(f, go.Figure) for f in figures.values())
    out, err = capsys.readouterr()
    assert out == "" and "cnn" in err and "Wrote" not in err  # the epochs' progress bars, not the table


def test_compare_then_load_reads_what_compare_stored_and_writes_nothing(tiny_npz):
    url = "sqlite:///storage/cifar_tune.db"
    ct.optimize(arch="mlp_l2", n_trials=2, data=str(tiny_npz), **TINY)
    comparison = ct.compare(seeds=2, out="cmp")  # the default storage, the studies' recorded data
    assert isinstance(comparison, ct.Comparison)
    assert len(comparison.per_seed) == 4 and set(comparison.per_seed["Variant"]) == {"baseline", "tuned"}
    assert list(comparison.table["Variant"]) == ["baseline", "tuned", COMPARE_DIFF]
    assert {f"{m} low" for m in METRICS} <= set(comparison.table.columns)
    assert list(comparison.display.columns) == ["Model", "Variant", *METRICS, "Verdict"]
    assert (Path("cmp") / "compare.csv").is_file() and comparison.out == Path("cmp")
    assert list(comparison.records) == ["cifar10-mlp_l2"]
    figures = comparison.figures()
    assert len(figures) == 2 and all(isinstance(f, go.Figure) for f in figures.values())  # bars, confusion
    bars = next(iter(figures.values()))
    assert [t.name for t in bars.data] == METRICS and len(bars.data[0].y) == 2  # baseline, tuned

    db = Path("storage/cifar_tune.db")
    before = sha256(db)
    studies = ct.load(url)
    assert isinstance(studies, ct.Studies) and list(studies.studies) == ["mlp_l2"]
    assert isinstance(studies.studies["mlp_l2"], optuna.Study) and len(studies.studies["mlp_l2"].trials) == 2
    pd.testing.assert_frame_equal(studies.table[["Variant", *METRICS]], comparison.table[["Variant", *METRICS]],
                                  atol=1e-9)
    assert list(studies.figures()) == list(figures)
    assert sha256(db) == before and not Path("storage/cifar_tune.db-journal").exists()


def test_run_returns_the_studies_the_table_and_the_report(tiny_npz, capsys):
    result = ct.run(["mlp_l2"], n_trials=2, seeds=1, data=str(tiny_npz), out="job", **TINY)
    assert isinstance(result, ct.JobResult)
    assert list(result.studies) == ["mlp_l2"] and len(result.studies["mlp_l2"].trials) == 2
    assert result.report == Path("job/study-report.html") and result.report.is_file()
    assert result.not_compared == {} and isinstance(result.comparison, ct.Comparison)
    assert list(result.table["Variant"]) == ["baseline", "tuned", COMPARE_DIFF]
    out, err = capsys.readouterr()
    assert out == "" and "cifar10-mlp_l2" in err and "Test-set macro metrics" not in err  # bars, no table
    again = ct.run(["mlp_l2"], n_trials=2, seeds=1, data=str(tiny_npz), out="job", **TINY)  # complete: nothing new
    assert again.comparison is None and len(again.studies["mlp_l2"].trials) == 2


# --- the README's example --------------------------------------------------------------------------------------


def readme_example() -> str:
    text = (REPO / "README.md").read_text()
    section = text[text.index("## Python API"):]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


@pytest.mark.slow  # 39 CPU-s: a fresh interpreter loads TensorFlow and tunes; the API's calls are tested above
def test_the_readme_example_runs(tmp_path):
    code = readme_example()
    source = re.search(r'data="([^"]+)"', code).group(1)
    path = tmp_path / source
    path.parent.mkdir(parents=True, exist_ok=True)
    x_train, y_train, x_test, y_test = synthetic_cifar(2500, 500)
    np.savez(path, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=900,
                         env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert out.returncode == 0, out.stderr[-3000:]
    assert COMPARE_DIFF in out.stdout and (tmp_path / "storage" / "api.db").is_file()


# --- Ctrl-C ----------------------------------------------------------------------------------------------------


def test_ctrl_c_in_optimize_fails_the_running_trial_raises_keyboardinterrupt_and_restores_the_handler(tiny_npz,
                                                                                                    tmp_path):
    import signal
    import time

    from tests.helpers.trial_states import wait_for_states

    code = ("import signal, cifar_tune as ct\n"
            "before = signal.getsignal(signal.SIGINT)\n"
            "try:\n"
            f"    ct.optimize(arch='cnn', data={str(tiny_npz)!r}, val_size=100, epochs=20, n_trials=4, pruner='none')\n"
            "except KeyboardInterrupt:\n"
            "    print('raised KeyboardInterrupt; handler restored:', signal.getsignal(signal.SIGINT) is before)\n")
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"},
                            start_new_session=True)
    db = tmp_path / "storage" / "cifar_tune.db"
    try:
        wait_for_states(db, lambda s: s[:2] == ["COMPLETE", "RUNNING"])  # trial 0 done, trial 1 running
        time.sleep(2)  # trial 1 (20 epochs: longer than the 1 s poll and these 2 s) is mid-training
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    assert "raised KeyboardInterrupt; handler restored: True" in out
    study = optuna.load_study(study_name="cifar10-cnn", storage=f"sqlite:///{db}")
    assert [t.state.name for t in study.trials] == ["COMPLETE", "FAIL"]
    assert study.trials[1].user_attrs["fail_reason"] == "interrupted by the user"


# --- threads ---------------------------------------------------------------------------------------------------


def test_quiet_imports_that_overlap_in_two_threads_leave_standard_error_as_it_was(monkeypatch):
    """Thread A silences fd 2, thread B too, A leaves, then B: fd 2 is the one it was before A came in (each used to
    restore the fd it had saved, and B had saved /dev/null: standard error silenced for good)."""
    import threading

    from cifar_tune import runtime
    from cifar_tune.choices import NATIVE_LOGS_ENV

    monkeypatch.delenv(NATIVE_LOGS_ENV, raising=False)
    keep = os.dup(2)  # to put back whatever happens, so pytest's capture goes on
    before = os.fstat(2)
    steps = [threading.Event() for _ in range(4)]  # A in, B in, A out, B out

    def quiet(enter: int, leave: int, done: int | None):
        with runtime.quiet_native_stderr():
            steps[enter].set()
            steps[leave].wait(10)
        if done is not None:
            steps[done].set()

    a = threading.Thread(target=quiet, args=(0, 1, 2))
    b = threading.Thread(target=lambda: (steps[0].wait(10), quiet(1, 2, 3)))
    try:
        a.start()
        b.start()
        a.join(10)
        b.join(10)
        after = os.fstat(2)
    finally:
        os.dup2(keep, 2)
        os.close(keep)
    assert all(s.is_set() for s in steps)
    assert (after.st_dev, after.st_ino) == (before.st_dev, before.st_ino), "fd 2 left pointing elsewhere"


@pytest.mark.parametrize("call", ["optimize", "baseline", "compare", "run"])
def test_a_call_that_trains_waits_for_the_one_training_in_another_thread(call, caplog):
    """Every API function that trains takes the process's one training: while another thread trains, it waits (a
    line logged), then runs. Here each then fails on missing data / storage, which it meets only past the wait."""
    import logging
    import threading

    from cifar_tune import runtime

    calls = {"optimize": lambda: ct.optimize(arch="mlp_l2", data="none.npz", n_trials=1),
             "baseline": lambda: ct.baseline(["mlp_l2"], data="none.npz"),
             "compare": lambda: ct.compare(), "run": lambda: ct.run(["mlp_l2"], data="none.npz")}
    runtime.import_keras()  # first, so that the wait below is the call's wait for the training, not Keras loading
    training, release = threading.Event(), threading.Event()

    def other_training():
        with runtime.one_training_at_a_time("the other"):
            training.set()
            release.wait(30)

    holder = threading.Thread(target=other_training)
    holder.start()
    training.wait(10)
    raised = []
    waiter = threading.Thread(target=lambda: raised.append(_raised(calls[call])))
    with caplog.at_level(logging.INFO, logger="cifar_tune"):
        waiter.start()
        waiter.join(3)
        still_waiting = waiter.is_alive()
        release.set()
        waiter.join(60)
        holder.join(10)
    assert still_waiting and raised[0] is not None, raised
    assert isinstance(raised[0], ct.UserError) and ("none.npz" in str(raised[0]) or "no storage" in str(raised[0]))
    assert any(f"{call} waits" in r.getMessage() and "Thread-" in r.getMessage() for r in caplog.records)


def _raised(call) -> BaseException | None:
    try:
        call()
    except BaseException as e:  # what the call raised, checked by the test
        return e
    return None


@pytest.mark.slow  # about 50 s on a busy 2-core CPU (a fresh process loads TensorFlow; 4 trials one after another)
def test_two_threads_optimizing_at_once_both_complete_and_standard_error_stays(tiny_npz, tmp_path):
    """Issue 28, item 3: two threads call ct.optimize at once (one process, two studies), the second while the first
    loads Keras with fd 2 silenced (it used to save /dev/null as "the" stderr and restore it last: standard error
    silenced for good). Both studies finish every trial (none failed by the other's Keras state: a
    ``clear_session`` in one thread resets the Keras state of every thread), and standard error still writes."""
    code = f"""
import json, os, sys, threading, time, cifar_tune as ct
results = {{}}
def study(name):
    s = ct.optimize(arch="mlp_l2", n_trials=2, epochs=1, val_size=100, data={str(tiny_npz)!r},
                    storage=f"sqlite:///storage/{{name}}.db")
    results[name] = [t.state.name for t in s.trials]
first, second = (threading.Thread(target=study, args=(n,)) for n in ("first", "second"))
first.start()
while "keras" not in sys.modules:  # the first call is inside its quiet import of Keras
    time.sleep(0.005)
second.start()
first.join()
second.join()
os.write(2, b"standard error still writes\\n")
print(json.dumps(results))
"""
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=600,
                         env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert out.returncode == 0, out.stderr[-3000:]
    assert "standard error still writes" in out.stderr, out.stderr[-2000:]
    results = json.loads(out.stdout.strip().splitlines()[-1])
    assert results.keys() == {"first", "second"} and all(len(states) == 2 for states in results.values()), results
    assert all(state in ("COMPLETE", "PRUNED") for states in results.values() for state in states), results
