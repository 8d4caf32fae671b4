"""What a new user sees in the first hour at the terminal: a typo is refused (never abbreviated into another option),
every error speaks in one voice on stderr, every option says what it does, counts agree in number, outputs of
different storages do not overwrite each other, and the dashboard prints one line."""

from __future__ import annotations

import argparse
import contextlib
import io
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cifar_tune import cli
from tests.helpers.paths import REPO


def run_cli(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli.main(argv)
    return code, out.getvalue(), err.getvalue()


def parsers() -> dict[str, argparse.ArgumentParser]:
    """``cifar-tune`` and each subcommand's parser, by command."""
    top = cli.build_parser()
    found = {"cifar-tune": top}
    for action in top._actions:
        if isinstance(action, argparse._SubParsersAction):
            found.update(action.choices)
    return found


@pytest.mark.parametrize("argv, meant", [
    (["optimize", "--arch", "cnn", "--trials", "5"], "--n-trials"),  # not --trials-per-process
    (["optimize", "--arch", "cnn", "--trials=5"], "--n-trials"),
    (["optimize", "--arch", "cnn", "--epoch", "2"], "--epochs"),
    (["run", "--archs", "cnn", "--seed", "1", "--trial", "3"], "--n-trials"),
    (["compare", "--seed", "2"], "--seeds"),  # compare has --seeds only
    (["studies", "--stor", "sqlite:///x.db"], "--storage"),
    (["baseline", "--batch", "64"], "--batch-size"),
])
def test_an_abbreviated_or_misspelt_option_is_refused_with_the_closest_real_one(tiny_npz, argv, meant):
    code, out, err = run_cli([*argv, "--data", str(tiny_npz)] if argv[0] in ("optimize", "run") else argv)
    known = parsers()[argv[0]]._option_string_actions
    typed = next(a.split("=")[0] for a in argv if a.startswith("--") and a.split("=")[0] not in known)
    assert code == 2 and out == ""
    assert err == f"cifar-tune: error: unknown option {typed} (did you mean {meant}?)\n"
    assert not Path("storage").exists()  # no study started


def test_no_parser_takes_abbreviations():
    for name, parser in parsers().items():
        assert parser.allow_abbrev is False, name


def test_every_usage_error_speaks_as_cifar_tune(tiny_npz):
    for argv in (["optimize", "--arch", "nope"], ["optimize", "--epochs", "0", "--arch", "cnn"], ["studies", "x"],
                 ["compare", "--seeds", "many"], ["nope"], [], ["optimize", "--arch", "cnn", "--zzz"]):
        code, out, err = run_cli(argv)
        assert code == 2 and out == "" and err.count("\n") == 1, (argv, err)
        assert err.startswith("cifar-tune: error: "), (argv, err)


def test_a_typo_is_refused_in_well_under_a_second_of_its_own():
    """The refusal of a mistyped option in a fresh process: parsing precedes every heavy import."""
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "cifar_tune", "optimize", "--arch", "cnn", "--trials", "5"],
                          capture_output=True, text=True, timeout=120)
    took = time.perf_counter() - start
    assert proc.returncode == 2 and proc.stderr.startswith("cifar-tune: error: unknown option --trials")
    assert "keras" not in proc.stderr.lower()
    print(f"\n[typo refused in {took:.2f} s]")


def test_every_option_and_command_has_help_text():
    missing = []
    for name, parser in parsers().items():
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                missing += [f"{name} {c.dest}" for c in action._choices_actions if not c.help]
            elif action.option_strings and not action.help:
                missing.append(f"{name} {'/'.join(action.option_strings)}")
    assert missing == [], "options without help text: " + ", ".join(missing)


def test_counts_agree_in_number_and_a_warning_goes_to_stderr(tiny_npz):
    import optuna
    from optuna.trial import TrialState, create_trial

    from cifar_tune.studies.records import TrialRecord

    argv = ["optimize", "--arch", "mlp_l2", "--n-trials", "1", "--epochs", "1", "--val-size", "100",
            "--data", str(tiny_npz)]
    code, out, err = run_cli(argv)
    assert code == 0, err
    assert "new study; 1 new trial of 1 epoch, " in out and ", 1 worker" in out, out
    assert "1 new trials" not in out and "1 epochs" not in out and "worker(s)" not in out
    # a trial with a lower loss but a lower accuracy than the baseline: the summary warns that nothing was learned
    study = optuna.load_study(study_name="cifar10-mlp_l2", storage="sqlite:///storage/cifar_tune.db")
    study.add_trial(create_trial(value=1e-6, state=TrialState.COMPLETE, params={}, distributions={},
                                 user_attrs=TrialRecord(val_accuracy=0.5).to_attrs()))
    code, out, err = run_cli(argv)
    assert code == 0, err
    assert "resuming (2 trials stored); 1 new trial of 1 epoch" in out
    assert "WARNING" not in out
    warnings = [line for line in err.splitlines() if "not learned:" in line]  # the library's one warning
    assert len(warnings) == 1 and "lower accuracy" in warnings[0], err


def _planted_storage(path: Path) -> str:
    """A SQLite storage holding one finished cnn study (no training), as optimize leaves it."""
    import optuna
    from optuna.trial import create_trial

    from cifar_tune.studies.records import StudyRecord, TrialRecord

    url = f"sqlite:///{path}"
    study = optuna.create_study(study_name="cifar10-cnn", storage=url)
    StudyRecord(arch="cnn", epochs=1).write(study)
    dist = {"learning_rate": optuna.distributions.FloatDistribution(1e-4, 1e-2, log=True)}
    for i, loss in enumerate((1.5, 1.2)):
        study.add_trial(create_trial(value=loss, params={"learning_rate": 1e-3 * (i + 1)}, distributions=dist,
                                     user_attrs=TrialRecord(val_accuracy=0.5 + i / 10, baseline=i == 0).to_attrs()))
    return url


def test_reports_of_different_storages_do_not_overwrite_each_other(tmp_path):
    for folder in ("storage", "a", "b"):
        Path(folder).mkdir()
    urls = [_planted_storage(Path("storage/cifar_tune.db")), _planted_storage(tmp_path / "a" / "studies.db"),
            _planted_storage(tmp_path / "b" / "studies.db")]
    written = []
    for url in urls:
        code, out, err = run_cli(["report", "--storage", url])
        assert code == 0, err
        written.append(Path(out.strip().removeprefix("Wrote ")))
    assert written[0] == Path("storage/reports/study-report.html")  # the default storage's, as before
    assert len(set(written)) == 3 and all(p.parent == Path("storage/reports") for p in written), written
    assert written[1].name.startswith("study-report-studies-") and written[1].suffix == ".html"
    for path, url in zip(written, urls, strict=True):
        assert path.is_file() and url.removeprefix("sqlite:///") in path.read_text()  # each its own storage's
    # the same storage named another way (relative path) gets the same report
    code, out, _ = run_cli(["report", "--storage", f"sqlite:///{Path('storage/cifar_tune.db').resolve()}"])
    assert code == 0 and out.strip() == f"Wrote {written[0]}"


def test_compare_keeps_each_storages_models_apart(tmp_path):
    from cifar_tune.comparison.targets import models_dir

    assert models_dir("sqlite:///storage/cifar_tune.db") == Path("storage/models")
    a, b = models_dir(f"sqlite:///{tmp_path}/a/x.db"), models_dir(f"sqlite:///{tmp_path}/b/x.db")
    assert a != b and a.parent == b.parent == Path("storage/models")
    assert models_dir("postgresql+psycopg://u:secret@host/cifar").name.startswith("cifar-")
    assert "secret" not in str(models_dir("postgresql+psycopg://u:secret@host/cifar"))


def test_the_dashboard_says_one_line_and_nothing_per_request(tmp_path):
    import os
    import urllib.error
    import urllib.request

    from tests.helpers.pg import free_port
    from tests.helpers.processes import interrupt

    url = _planted_storage(tmp_path / "d.db")
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "cifar_tune", "dashboard", "--storage", url, "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        deadline = time.time() + 120
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies", timeout=5).read()
                break
            except urllib.error.HTTPError:
                raise
            except OSError:  # not serving yet
                assert proc.poll() is None and time.time() < deadline, proc.stderr.read()
                time.sleep(0.3)
        for page in ("/dashboard/", "/dashboard/studies/1", "/api/studies"):  # each logged a line before
            assert urllib.request.urlopen(f"http://127.0.0.1:{port}{page}", timeout=30).status == 200
    finally:
        out, err = interrupt(proc, timeout=30)
    assert proc.returncode == 0, err
    assert out.splitlines() == [f"optuna-dashboard on {url} (artifacts in storage/artifacts/): "
                                f"http://127.0.0.1:{port}/dashboard/  (Ctrl-C to stop)"], out
    assert err == "", err  # no Bottle banner, no access log


def test_the_process_ends_without_walking_its_heap(monkeypatch):
    """The command as the process's own (argv None): its objects are put beyond the final collection."""
    import gc

    Path("storage").mkdir()
    _planted_storage(Path("storage/cifar_tune.db"))
    monkeypatch.setattr(sys, "argv", ["cifar-tune", "studies"])
    before = gc.get_freeze_count()
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            assert cli.main() == 0
        assert gc.get_freeze_count() > before
    finally:
        gc.unfreeze()
    with contextlib.redirect_stdout(io.StringIO()):
        assert cli.main(["studies"]) == 0 and gc.get_freeze_count() == 0  # called in-process with arguments: untouched


def test_an_idle_gpu_is_a_warning_on_stderr(tmp_path, monkeypatch, capsys):
    """nvidia-smi lists a GPU (the stand-in) that the CPU-only backend here does not use: the training line on
    stdout, the warning on stderr, as the console prints them before a command's first epoch."""
    from cifar_tune import engines, progress
    from cifar_tune.cli.console import Console
    from cifar_tune.runtime import devices
    from tests.helpers.fake_gpus import fake_nvidia_smi

    if devices.device_name() != "cpu":
        pytest.skip("the backend here trains on a GPU: none sits idle")
    monkeypatch.setenv("PATH", fake_nvidia_smi(tmp_path / "bin", n=1)["PATH"])
    with progress.reporting(Console()):
        engines.report_device()
    out, err = capsys.readouterr()
    assert out.startswith("Training on: ") and "WARNING" not in out
    assert err.startswith("WARNING: nvidia-smi lists ") and err.count("\n") == 1, err


def test_a_reader_that_goes_away_ends_the_command_quietly(tmp_path):
    """`cifar-tune studies | head -1` ended in a BrokenPipeError traceback and status 1; now it stops as `ls | head`
    does: nothing on standard error, status 141 (128 + SIGPIPE)."""
    db = REPO / "results" / "cpu-2core-2026-11-29" / "studies.db"
    proc = subprocess.Popen([sys.executable, "-m", "cifar_tune", "studies", "--storage", f"sqlite:///{db}?mode=ro"],
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()  # the reader is gone before the first line: every write fails with EPIPE
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 141, err
    assert "Traceback" not in err and "BrokenPipe" not in err, err
