"""Ten ``ct.optimize`` calls in one real Jupyter kernel (a notebook executed with nbclient) leave the kernel within
150 MB of its size when the second call began (issue 27): in a kernel the trials run in a worker process
(``budget.in_a_kernel``), because Keras keeps memory per trial that only a process's end returns (about 38 MB per
trial stayed in the kernel when the trials ran there: 1,094 -> 1,775 MB over 10 calls of 2 trials). The worker
stays for the kernel's next call (``executors.KeptProcesses``): one worker process runs all ten calls' trials, and
TensorFlow loads once, not ten times. The supervisor reports each trial the workers finish, so the call's progress
bar still counts them."""

from __future__ import annotations

import json

import nbformat
import numpy as np
import optuna
import pytest
from nbclient import NotebookClient

from cifar_tune.storage import database
from cifar_tune.studies.records import TrialRecord
from tests.helpers.synthetic import synthetic_cifar
from tests.test_notebook import kernel_environment

CALLS = 10

SETUP = """
import json, os, warnings
import cifar_tune as ct
from cifar_tune import progress
warnings.simplefilter("ignore")
def rss_mb():
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) / 1024 for line in f if line.startswith("VmRSS:"))
sizes, finished = [], []
"""

CALL = """
sizes.append(rss_mb())  # before the call
events = []
with progress.reporting(events.append):  # what a progress bar hears
    study = ct.optimize(arch="mlp_l2", data="tiny.npz", val_size=60, n_trials=2, epochs=1, pruner="none",
                        study_name="s{i}", storage="sqlite:///kernel.db")
assert len(study.trials) == 2, study.trials
finished.append(sum(isinstance(e, progress.TrialFinished) for e in events))
"""

REPORT = """
import sys
sizes.append(rss_mb())
loaded = sorted(m for m in ("keras", "tensorflow") if m in sys.modules)
print(json.dumps({"sizes": sizes, "finished": finished, "keras": loaded}))
"""


@pytest.mark.slow
def test_ten_optimize_calls_leave_the_kernel_within_150_mb(tmp_path, monkeypatch):
    x, y, xt, yt = synthetic_cifar(300, 60)
    np.savez(tmp_path / "tiny.npz", x_train=x, y_train=y, x_test=xt, y_test=yt)
    cells = [nbformat.v4.new_code_cell(SETUP)]
    cells += [nbformat.v4.new_code_cell(CALL.format(i=i)) for i in range(CALLS)]
    cells.append(nbformat.v4.new_code_cell(REPORT))
    nb = nbformat.v4.new_notebook(cells=cells)
    kernel_environment(monkeypatch)
    NotebookClient(nb, kernel_name="python3", timeout=600, allow_errors=False,
                   resources={"metadata": {"path": str(tmp_path)}}).execute()
    out = json.loads(next(o["text"] for o in nb.cells[-1].outputs if o["output_type"] == "stream"))
    sizes = out["sizes"]  # before each call, then after the last
    print("kernel resident MB before each call, then after the last:", [round(s) for s in sizes])
    assert len(sizes) == CALLS + 1
    assert sizes[-1] - sizes[1] < 150, f"the kernel grew from {sizes[1]:.0f} MB to {sizes[-1]:.0f} MB: {sizes}"
    assert out["keras"] == []  # the kernel never loaded Keras: its workers trained
    assert out["finished"] == [2] * CALLS  # the caller's reporter heard of each trial the workers ran
    storage = database.storage_for_reading(f"sqlite:///{tmp_path / 'kernel.db'}")
    workers = {TrialRecord.read(t).worker for i in range(CALLS)
               for t in optuna.load_study(study_name=f"s{i}", storage=storage).get_trials()}
    assert len(workers) == 1, workers  # the kept worker ran every call's trials
