"""A light driver (issue 27 item 1, issue 30 item 5): the process that builds a command's settings, opens a study,
supervises worker processes or refuses a typo imports no TensorFlow, Keras or JAX, and a refused command writes
nothing. Each check runs in a fresh interpreter (this test process has Keras loaded by other tests)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
HEAVY = ("keras", "tensorflow", "jax")


def run_probe(code: str, cwd: Path, timeout: float = 300, **env) -> dict:
    """Run ``code`` in a fresh interpreter in ``cwd``; it leaves its answers in the dict ``out``, printed last as
    JSON with the heavy modules it imported (``loaded``)."""
    script = ("import json, sys\nout = {}\n" + code + "\nout['loaded'] = [m for m in " + repr(HEAVY)
              + " if m in sys.modules]\nprint('PROBE ' + json.dumps(out))\n")
    proc = subprocess.run([sys.executable, "-c", script], cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "PYTHONPATH": str(REPO), **env})
    lines = [line for line in proc.stdout.splitlines() if line.startswith("PROBE ")]
    assert lines, f"probe failed (status {proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return json.loads(lines[-1][len("PROBE "):])


def test_the_probe_sees_keras_when_it_is_loaded(tmp_path):
    """The check itself can fail: importing the training engines loads Keras and the probe says so."""
    out = run_probe("from cifar_tune import runtime\nruntime.import_keras()", tmp_path)
    assert "keras" in out["loaded"]


SETTINGS = r"""
from cifar_tune.cli.commands import build_parser, optimize_settings, run_plan, main
import cifar_tune as ct
from cifar_tune.comparison.seed_baseline import BaselineSettings, load_data
from cifar_tune.comparison.retrain import CompareSettings
from cifar_tune.studies import presets, spaces
from cifar_tune.tuning import budget, executors, study, supervisor, ray_backend
from cifar_tune import runtime
parse = build_parser().parse_args
common = ["--data", DATA, "--subset", "100", "--storage", URL]
s = optimize_settings(parse(["optimize", "--arch", "cnn", "--preset", "quick", "--jobs", "2", *common]))
out["kind"] = budget.executor_kind(s)
plan = run_plan(parse(["run", "--archs", "mlp_l2,cnn_da", "--n-trials", "30", *common]))
b = BaselineSettings(archs=["cnn"], data=DATA, subset=100)
ds = load_data(b)
CompareSettings(archs=("cnn",), storage=URL, data=DATA)
ct.make_settings("resnet", preset="quick")
ct.OptimizeSettings
for arch in ("mlp_bn", "mlp_l2", "cnn", "cnn_da", "resnet"):
    spaces.load(arch).baseline_params()
out["engine"] = runtime.resolve_engine("auto")
# open the study as the supervisor does: data checked, storage opened, study created with its baseline queued
storage, space, split = study.open_and_prepare(s)
st, created = study.create_or_load(s, storage, space, split)
out["created"], out["trials"] = created, len(st.trials)
sup = supervisor.Supervisor(s, st, None, budget.trials_per_process(s), executors.Processes(s))
out["left"] = sup.left(st.get_trials(deepcopy=False))
out["studies"] = main(["studies", "--storage", URL])
out["report"] = main(["report", "--storage", URL, "--out", "report.html"])
out["load"] = sorted(ct.load(URL).studies)
"""


def test_building_every_commands_settings_and_opening_a_study_loads_no_keras(tmp_path, tiny_npz):
    url = f"sqlite:///{tmp_path / 'light.db'}"
    out = run_probe(f"DATA, URL = {str(tiny_npz)!r}, {url!r}\n" + SETTINGS, tmp_path)
    assert out["loaded"] == []
    assert out["kind"] == "processes" and out["created"] and out["trials"] == 1  # the baseline queued, nothing trained
    assert out["left"] == 8 and out["studies"] == 0 and out["report"] == 0 and out["load"] == ["cnn"]
    assert out["engine"] in ("keras", "fast")


REFUSALS = [
    ["optimize", "--arch", "cnn", "--preset", "quik"],
    ["optimize", "--arch", "cnn", "--data", "missing.npz"],
    ["optimize", "--arch", "cnx"],
    ["run", "--archs", "cnn", "--preset", "nope"],
    ["run", "--archs", "cnn", "--data", "missing.npz"],
    ["run", "--archs", "cnn,cnx"],
    ["baseline", "--archs", "cnn", "--data", "missing.npz"],
    ["baseline", "--archs", "cnx"],
    ["compare", "--data", "missing.npz"],
]


@pytest.mark.parametrize("argv", REFUSALS, ids=lambda a: " ".join(a))
def test_a_refusal_loads_no_keras_and_writes_nothing(tmp_path, argv):
    """A typo in a preset, a data path or an architecture is refused with one line (status 2) before Keras loads,
    and the command leaves nothing behind: no storage/, no database, no numerics cache (issue 30 item 5)."""
    work, cache = tmp_path / "work", tmp_path / "cache"
    work.mkdir()
    cache.mkdir()
    code = ("import io, contextlib\nfrom cifar_tune.cli.commands import main\nerr = io.StringIO()\n"
            f"with contextlib.redirect_stderr(err):\n    out['status'] = main({argv!r})\nout['err'] = err.getvalue()")
    out = run_probe(code, work, XDG_CACHE_HOME=str(cache), CIFAR_TUNE_NUMERICS_DIR=str(cache / "numerics"))
    assert out["status"] == 2 and out["err"].count("\n") == 1 and "error:" in out["err"], out
    assert out["loaded"] == []
    assert list(work.iterdir()) == [] and list(cache.iterdir()) == []


@pytest.mark.slow
def test_a_supervisor_of_worker_processes_loads_no_keras(tmp_path, tiny_npz):
    """``optimize`` with more trials than one process runs (a supervisor and fresh worker processes, as any study
    over 10 trials): the workers train, the supervising process never loads Keras."""
    url = f"sqlite:///{tmp_path / 'sup.db'}"
    argv = ["optimize", "--arch", "mlp_l2", "--n-trials", "2", "--trials-per-process", "1", "--epochs", "1",
            "--pruner", "none", "--data", str(tiny_npz), "--storage", url, "--engine", "keras"]
    code = f"from cifar_tune.cli.commands import main\nout['status'] = main({argv!r})"
    out = run_probe(code, tmp_path, timeout=600)
    assert out["status"] == 0
    assert out["loaded"] == []
    import optuna

    trials = optuna.load_study(study_name="cifar10-mlp_l2", storage=url).trials
    assert [t.state.name for t in trials] == ["COMPLETE", "COMPLETE"]  # trained, in the workers
