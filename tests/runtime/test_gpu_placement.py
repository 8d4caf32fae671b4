"""Every GPU used: ``--jobs`` workers placed round robin over the visible GPUs (a stand-in nvidia-smi listing
four GPUs: no GPU here), one per GPU by default, ``--jobs-per-gpu`` for several with a memory share each."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import optuna
import pytest

from cifar_tune.runtime import devices
from tests.helpers.fake_gpus import fake_nvidia_smi


def test_workers_go_round_robin_over_the_gpus_with_a_memory_share_each():
    four = ["0", "1", "2", "3"]
    placed = [devices.worker_placement(slot, 4, None, four) for slot in range(1, 5)]
    assert [p["CUDA_VISIBLE_DEVICES"] for p in placed] == four
    assert all("XLA_PYTHON_CLIENT_MEM_FRACTION" not in p for p in placed)  # alone on its GPU: all of it
    placed = [devices.worker_placement(slot, 8, None, four) for slot in range(1, 9)]
    assert [p["CUDA_VISIBLE_DEVICES"] for p in placed] == four * 2
    assert {p["XLA_PYTHON_CLIENT_MEM_FRACTION"] for p in placed} == {"0.45"}  # two per GPU
    assert devices.worker_placement(1, 3, 3, ["5"]) == {"CUDA_VISIBLE_DEVICES": "5",
                                                       **devices.memory_share_env(3)}
    assert devices.worker_placement(2, 2, None, []) == devices.memory_share_env(2)  # no GPU listed: as before


def test_without_jobs_every_gpu_gets_a_worker():
    assert devices.default_jobs(None, None, ["0", "1", "2", "3"]) == 4
    assert devices.default_jobs(None, 2, ["0", "1"]) == 4
    assert devices.default_jobs(None, None, []) == 1
    assert devices.default_jobs(3, None, ["0", "1", "2", "3"]) == 3  # given: as given


def test_memory_shares_split_one_gpu_between_workers():
    assert devices.memory_share_env(1) == {}
    env = devices.memory_share_env(4)
    assert env["XLA_PYTHON_CLIENT_PREALLOCATE"] == "true" and env["XLA_PYTHON_CLIENT_MEM_FRACTION"] == "0.22"
    assert float(devices.memory_share_env(3)["XLA_PYTHON_CLIENT_MEM_FRACTION"]) * 3 <= 0.9


@pytest.mark.parametrize(("visible", "expected"), [("2,3", ["2", "3"]), ("", []), ("-1", []),
                                                  ("GPU-1a2b", ["GPU-1a2b"])])
def test_cuda_visible_devices_is_respected(visible, expected, monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", fake_nvidia_smi(tmp_path, n=4)["PATH"])
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
    assert devices.visible_gpus() == expected


def test_nvidia_smi_lists_the_gpus_when_nothing_restricts_them(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", fake_nvidia_smi(tmp_path, n=4)["PATH"])
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert devices.visible_gpus() == ["0", "1", "2", "3"]


def optimize(tmp_path: Path, data: Path, env: dict, *flags: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "cifar_tune", "optimize", "--arch", "mlp_l2", "--data", str(data), "--val-size",
           "100", "--epochs", "1", "--pruner", "none", "--n-trials", "4", *flags]
    return subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, timeout=900,
                          env={**env, "KERAS_BACKEND": "tensorflow"})


def stored_gpus(tmp_path: Path) -> list[str]:
    study = optuna.load_study(study_name="cifar10-mlp_l2", storage=f"sqlite:///{tmp_path}/storage/cifar_tune.db")
    assert [t.state.name for t in study.trials] == ["COMPLETE"] * 4
    return sorted(t.user_attrs.get("gpu") for t in study.trials)


def test_optimize_without_jobs_uses_every_visible_gpu_one_worker_each(tmp_path: Path, tiny_npz: Path):
    """Four GPUs listed, CUDA_VISIBLE_DEVICES=1,3, no --jobs: two workers, each on its own visible GPU (the trials
    record which), said in the first line. One run for both rules, every visible GPU gets a worker and the
    variable is respected (each worker imports TensorFlow); without the variable every listed GPU is visible
    (test_nvidia_smi_lists_the_gpus_when_nothing_restricts_them), and a given --jobs is kept
    (test_without_jobs_every_gpu_gets_a_worker)."""
    env = {**fake_nvidia_smi(tmp_path / "bin", n=4), "CUDA_VISIBLE_DEVICES": "1,3"}
    out = optimize(tmp_path, tiny_npz, env)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "2 workers on 2 GPUs 1,3" in out.stdout, out.stdout[:2000]
    assert set(stored_gpus(tmp_path)) == {"1", "3"}
    # issue 30: the supervisor's summary says which limit ended the run; the workers, through a pipe, print a
    # line per epoch and no status line
    assert "Ended: its 4 new trials ran (n_trials reached)." in out.stdout
    assert out.stdout.count("] epoch 1/1 loss") == 4 and "\r" not in out.stdout


def test_jobs_per_gpu_is_checked_at_the_door(tmp_path: Path, tiny_npz: Path):
    out = optimize(tmp_path, tiny_npz, dict(os.environ), "--jobs-per-gpu", "0")
    assert out.returncode == 2 and "--jobs-per-gpu" in out.stderr and not (tmp_path / "storage").exists()
