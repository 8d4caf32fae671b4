"""Ctrl-C and SIGTERM stop every long-running command as they stop ``optimize``: at the next batch, one line that
says what stopped and the command that continues, exit status 130 or 143, and the printed command continues
(what finished is kept). Real processes and real signals; the signal is sent once a marker line was printed. The
printed command then runs in this process (``cli.main``: the same command, without a second TensorFlow import).
Also: ``run`` ends with its parts' verdict when a study has no completed trial."""

from __future__ import annotations

import contextlib
import io
import os
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import optuna
import pytest

from cifar_tune import cli
from cifar_tune.cli import jobs
from tests.helpers.paths import REPO

URL = "sqlite:///storage/cifar_tune.db"
# Epochs of each training: the signal is sent the moment the marker line (one training or architecture done) is read,
# so it lands within a second at most; 10 epochs (the next training's model build and its epochs: several seconds on
# this 2-core CPU) leave that window, and the continuing command trains each training in full again.
EPOCHS = "10"
# Both signals take one path in every command (runtime.signals turns either into the command's stop); each command
# here gets one of them and `run` both (in two phases), so every signal reaches every kind of stop at least once,
# without paying every pair. optimize's trial-level stop takes both: tests/runtime/test_signals.py.
CODES = [(signal.SIGINT, 130, "interrupted (Ctrl-C)"), (signal.SIGTERM, 143, "terminated (SIGTERM)")]


class Command:
    """A ``python -m cifar_tune`` process whose stdout lines are read as they come (to wait for a marker)."""

    def __init__(self, cwd: Path, *argv: str):
        self.err_path = cwd / f"stderr-{time.monotonic_ns()}.txt"
        with open(self.err_path, "w") as err:
            self.proc = subprocess.Popen([sys.executable, "-m", "cifar_tune", *argv], cwd=cwd, text=True,
                                         stdout=subprocess.PIPE, stderr=err,
                                         env={**os.environ, "PYTHONUNBUFFERED": "1"})
        self.lines: list[str] = []
        self.seen = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            with self.seen:
                self.lines.append(line)
                self.seen.notify_all()

    def wait_for(self, pattern: str, timeout: float = 300) -> None:
        """Block until a stdout line matches ``pattern`` (fail if the process ends or time runs out first)."""
        deadline = time.monotonic() + timeout
        with self.seen:
            while not any(re.search(pattern, line) for line in self.lines):
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.proc.kill()
                    pytest.fail(f"never printed {pattern!r}:\n{''.join(self.lines)}{self.err_path.read_text()}")
                self.seen.wait(0.5)

    def finish(self, timeout: float = 300) -> tuple[int, str, str]:
        try:
            code = self.proc.wait(timeout)
        finally:
            self.proc.kill()
        time.sleep(0.1)  # the reader thread takes the last lines
        return code, "".join(self.lines), self.err_path.read_text()


def stopped(proc: Command, sig: signal.Signals, code: int, says: str) -> tuple[str, str]:
    """Signal ``proc``; check it ended as optimize does (status, one line, no traceback); return that line and
    the command it prints to continue."""
    proc.proc.send_signal(sig)
    status, out, err = proc.finish()
    assert status == code, out + err
    assert "Traceback" not in err and "Exception ignored" not in err, err
    lines = err.strip().splitlines()
    assert lines[-1].startswith(f"cifar-tune: {says}: "), err
    return lines[-1], re.search(r"continue[^:]* with: (cifar-tune .*)$", lines[-1]).group(1)


def err_lines(proc: Command) -> list[str]:
    return proc.err_path.read_text().strip().splitlines()


def again(command: str) -> subprocess.CompletedProcess:
    """The printed command, run in this process (the test's folder is its working folder, as for the first)."""
    argv = shlex.split(command)
    assert argv[0] == "cifar-tune"
    code, out, err = cli_main(argv[1:])
    return subprocess.CompletedProcess(argv, code, out, err)


def cli_main(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli.main(argv)
    return code, out.getvalue(), err.getvalue()


def test_compare_stops_after_a_training_and_the_printed_command_reuses_it(tiny_npz, tmp_path):
    sig, code, says = CODES[0]  # Ctrl-C (baseline takes SIGTERM; run and optimize take both)
    study = ["--data", str(tiny_npz), "--epochs", "1", "--val-size", "100"]
    assert cli_main(["optimize", "--arch", "mlp_l2", "--n-trials", "2", *study])[0] == 0
    proc = Command(tmp_path, "compare", "--seeds", "2", "--epochs", EPOCHS, "--data", str(tiny_npz), "--out", "cmp")
    proc.wait_for(r"^\[mlp_l2\] baseline seed 1000: ")  # the first training is done (and kept); the next runs
    line, command = stopped(proc, sig, code, says)
    assert len(err_lines(proc)) == 1 and "compare stopped; the trainings it finished are kept" in line
    kept = optuna.load_study(study_name="cifar10-mlp_l2", storage=URL).user_attrs["compare_runs"]
    assert "baseline seed 1000" in kept and len(kept) < 4
    assert "compare" not in optuna.load_study(study_name="cifar10-mlp_l2", storage=URL).user_attrs

    done = again(command)
    assert done.returncode == 0, done.stderr
    assert re.search(r"\[mlp_l2\] baseline seed 1000: .*kept from the interrupted compare", done.stdout), done.stdout
    assert optuna.load_study(study_name="cifar10-mlp_l2", storage=URL).user_attrs["compare"]["seeds"] == \
        [1000, 1001]


def test_baseline_stops_after_an_architecture_and_the_printed_command_keeps_it(tiny_npz, tmp_path):
    sig, code, says = CODES[1]  # SIGTERM (compare takes Ctrl-C)
    proc = Command(tmp_path, "baseline", "--archs", "mlp_l2,mlp_bn", "--epochs", EPOCHS, "--data", str(tiny_npz))
    proc.wait_for(r"^\[mlp_l2\] test accuracy ")  # mlp_l2 is done and kept; mlp_bn trains
    line, command = stopped(proc, sig, code, says)
    assert len(err_lines(proc)) == 1 and "baseline stopped; 1 of 2 architectures finished (mlp_l2)" in line
    out = Path(shlex.split(command)[shlex.split(command).index("--out") + 1])
    assert not (tmp_path / out / "metrics.csv").exists() and (tmp_path / out / "kept-runs.json").is_file()

    done = again(command)
    assert done.returncode == 0, done.stderr
    assert re.search(r"\[mlp_l2\] test accuracy .*kept from the interrupted baseline", done.stdout), done.stdout
    assert f"[mlp_bn] epoch {EPOCHS}/{EPOCHS}" in done.stdout and "[mlp_l2] epoch" not in done.stdout
    assert (tmp_path / out / "metrics.csv").read_text().count("MLP") == 2
    assert not (tmp_path / out / "kept-runs.json").exists()


@pytest.mark.parametrize("phase, sig, code, says, marker", [
    ("compare", signal.SIGINT, 130, "interrupted (Ctrl-C)", r"^\[mlp_l2\] baseline seed 1000: "),
    ("studies", signal.SIGTERM, 143, "terminated (SIGTERM)", r"^trial +0 complete"),
])
def test_run_stops_in_any_phase_and_the_printed_command_continues_the_job(tiny_npz, tmp_path, phase, sig, code,
                                                                          says, marker):
    # compare trains for the study's epochs; 3 trials: the signal lands in trial 1 or 2 (each EPOCHS long)
    epochs = "1" if phase == "compare" else EPOCHS
    proc = Command(tmp_path, "run", "--archs", "mlp_l2", "--n-trials", "3", "--epochs", epochs, "--val-size", "100",
                   "--seeds", "2", "--data", str(tiny_npz), "--out", "job")
    proc.wait_for(marker)
    line, command = stopped(proc, sig, code, says)
    assert shlex.split(command)[:4] == ["cifar-tune", "run", "--archs", "mlp_l2"]
    assert len(err_lines(proc)) == 1 and f"run stopped in its {phase} phase" in line
    done = again(command)
    assert done.returncode == 0, done.stderr
    assert "The job is done" in done.stdout
    if phase == "compare":
        assert "kept from the interrupted compare" in done.stdout
    study = optuna.load_study(study_name="cifar10-mlp_l2", storage=URL)
    assert len([t for t in study.trials if t.state.is_finished()]) >= 3
    assert study.user_attrs["compare"]["seeds"] == [1000, 1001]


def test_run_says_which_study_has_no_completed_trial_and_fails(tiny_npz, tmp_path):
    """Every trial diverges (learning rate 1e20: the weights' L2 penalty overflows float32): nothing to compare,
    so the job fails with one line naming the architecture, as compare alone does, not "The job is done"."""
    space = REPO / "search_spaces" / "mlp_l2.toml"
    text = re.sub(r"(\[params\.learning_rate\]\n)[^\[]*", r'\1type = "float"\nlow = 1e20\nhigh = 1e20\n'
                  r"baseline = 1e20\n\n", space.read_text())
    (tmp_path / "diverge.toml").write_text(text)
    args = cli.build_parser().parse_args(["optimize", "--arch", "mlp_l2", "--space", "diverge.toml", "--n-trials",
                                          "2", "--epochs", "1", "--val-size", "100", "--data", str(tiny_npz)])
    plan = [cli.optimize_settings(args)]
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = jobs.run(plan, seeds=2, timeout=None, out_dir="job")
    study = optuna.load_study(study_name="cifar10-mlp_l2", storage=URL)
    assert [t.state.name for t in study.trials] == ["FAIL", "FAIL"]  # really diverged, the baseline too
    assert code == 1, err.getvalue()
    assert "The job is done" not in out.getvalue() and "up to date" not in out.getvalue()
    last = err.getvalue().strip().splitlines()[-1]
    assert last.startswith("cifar-tune: error: nothing to compare for mlp_l2: study cifar10-mlp_l2 has no "
                           "completed trial (2 failed; last failure: "), last
    assert "diverged at epoch 1" in last


@pytest.mark.parametrize("sig, code, says", CODES)
def test_a_command_run_in_process_gives_back_the_signal_handlers_it_found(sig, code, says, capsys):
    """``cli.main`` in a process that goes on (this one, a notebook): a long command stopped by a real signal
    ends as in its own process (status, one line), then the handler it found is back and its stop forgotten, so
    a later signal goes where it went before and a later step is not stopped by this one's signal."""
    from cifar_tune import runtime

    seen = []
    before = signal.signal(sig, lambda signum, frame: seen.append(signum))
    try:
        def command() -> int:
            os.kill(os.getpid(), sig)  # delivered to this (the main) thread at once; recorded, not raised
            time.sleep(0.05)
            runtime.raise_if_stopping()  # the command's next step
            return 0

        assert jobs.run_stoppable(command, lambda: "what was kept") == code
        assert capsys.readouterr().err == f"cifar-tune: {says}: what was kept\n"
        assert runtime.stopping() is None
        runtime.raise_if_stopping()  # nothing to raise
        os.kill(os.getpid(), sig)
        time.sleep(0.05)
        assert seen == [sig]  # the handler found before the command
    finally:
        signal.signal(sig, before)
