"""The GPU install as the doctor sees it (a stand-in nvidia-smi: no GPU here) and the extras' pins."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from cifar_tune.runtime import devices
from tests.helpers.fake_gpus import fake_nvidia_smi
from tests.helpers.paths import REPO


@pytest.mark.parametrize(("builds", "driver", "says"), [
    ({13: "0.10.2"}, (13, 0), "jax-cuda13-plugin 0.10.2; the driver supports CUDA 13.0: matches (CUDA 13)"),
    ({13: "0.10.2"}, (12, 4), "NO MATCH, install pip install 'cifar-tune[gpu-cuda12]'"),
    ({12: "0.10.2"}, (13, 1), "matches (CUDA 12)"),  # a newer driver runs an older CUDA build
    ({}, (13, 0), "no CUDA build of JAX; the driver supports CUDA 13.0: NO MATCH, install pip install "
                  "'cifar-tune[gpu]'"),
    ({}, None, "no NVIDIA driver found"),
])
def test_the_cuda_build_is_matched_against_the_driver(builds, driver, says):
    assert says in devices.cuda_match(builds, driver)


def test_doctor_reads_the_drivers_cuda_version_from_nvidia_smi(tmp_path: Path):
    env = fake_nvidia_smi(tmp_path / "bin", n=2, cuda="12.4")
    out = subprocess.run([sys.executable, "-m", "cifar_tune", "doctor", "--storage", f"sqlite:///{tmp_path}/s.db"],
                         capture_output=True, text=True, env={**env, "KERAS_BACKEND": "tensorflow"}, timeout=300,
                         cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    line = next(x for x in out.stdout.splitlines() if "jax cuda" in x)
    assert "the driver supports CUDA 12.4" in line and "gpu-cuda12" in line, line
    assert "NVIDIA H200, 140 GiB" in out.stdout  # the stand-in's two GPUs, as nvidia-smi lists them


def test_the_gpu_extras_pin_their_floors():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    assert extras["gpu"] == ["jax[cuda13]>=0.7.2"]  # 0.7.2: the first JAX with a cuda13 extra
    assert extras["gpu-cuda12"][0].startswith("jax[cuda12]>=")
    assert project["requires-python"] == ">=3.11"


@pytest.mark.slow
def test_pip_resolves_the_gpu_extra_to_a_cuda_jax():
    """What pip would install for '.[gpu]' on this Python (a dry run against the registry): JAX with its CUDA 13
    plugin, never a JAX without it."""
    out = subprocess.run([sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--no-deps",
                          "jax[cuda13]>=0.7.2", "jax-cuda13-plugin>=0.7.2"], capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "jax-cuda13-plugin" in out.stdout


@pytest.mark.slow
def test_the_floor_turns_pips_silent_fallback_into_an_error(tmp_path):
    """On a platform without CUDA wheels (macOS arm64 here), plain ``jax[cuda13]`` makes pip fall back to a JAX that
    lacks the extra, saying only "does not provide the extra"; the extra's floor (pyproject's ``gpu``) makes it an
    error instead."""
    def dry_run(requirement: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed",
                               "--only-binary=:all:", "--platform", "macosx_11_0_arm64", "--python-version", "3.11",
                               "--target", str(tmp_path), requirement], capture_output=True, text=True, timeout=600)

    unpinned = dry_run("jax[cuda13]")
    assert unpinned.returncode == 0 and "does not provide the extra 'cuda13'" in unpinned.stderr  # the fallback
    gpu = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]["gpu"]
    pinned = dry_run(gpu[0])
    assert pinned.returncode != 0 and "ResolutionImpossible" in pinned.stderr, pinned.stdout[-1000:]


NO_TF = """
import sys
import cifar_tune as ct
study = ct.optimize(arch="mlp_l2", n_trials=1, epochs=1, data=sys.argv[1], val_size=100, engine=sys.argv[2],
                    pruner="none")
assert study.trials[0].state.name == "COMPLETE", study.trials[0]
print("TF LOADED" if "tensorflow" in sys.modules else "NO TF")
"""


@pytest.mark.jax
@pytest.mark.parametrize("engine", ["keras", "fast"])
def test_a_jax_trial_never_imports_tensorflow(engine, tiny_npz: Path, tmp_path: Path):
    """TensorFlow is installed here, yet a trial on the JAX backend (either engine) never loads it: nothing on
    the JAX path (seeding included) may import it."""
    env = {**__import__("os").environ, "KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu"}
    out = subprocess.run([sys.executable, "-c", NO_TF, str(tiny_npz), engine], capture_output=True, text=True,
                         env=env, cwd=tmp_path, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "NO TF" in out.stdout, out.stdout[-2000:]
