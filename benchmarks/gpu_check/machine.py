"""The machine's facts, the product commands' environment, and the smoke run's data and backend."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

from .common import REPO


def machine_facts(env: dict[str, str]) -> dict:
    """Host, Python, CPU count and load, the backend, package versions, and the GPUs ``nvidia-smi`` lists."""
    facts = {"hostname": platform.node(), "platform": platform.platform(), "python": platform.python_version(),
             "executable": sys.executable, "cpu_count": os.cpu_count(),
             "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
             "load_average_1m": round(os.getloadavg()[0], 2), "backend": env.get("KERAS_BACKEND"),
             "versions": {p: _version(p) for p in ("keras", "jax", "jaxlib", "tensorflow", "optuna", "numpy")},
             "gpus": None}
    if shutil.which("nvidia-smi"):
        try:
            out = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total,driver_version",
                                  "--format=csv,noheader"], check=False, capture_output=True, text=True,
                                 timeout=30).stdout
            facts["gpus"] = [dict(zip(("name", "memory", "driver"), (s.strip() for s in line.split(",")), strict=False))
                             for line in out.splitlines() if line.strip()]
        except (OSError, subprocess.SubprocessError) as e:
            facts["gpus"] = f"nvidia-smi failed: {e}"
    return facts


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def subprocess_env(smoke: bool, backend: str, shim_dir: Path | None, preallocate: bool = True) -> dict[str, str]:
    """The environment of every product command: this checkout first on PYTHONPATH, the backend, quiet logs."""
    env = dict(os.environ)
    env["KERAS_BACKEND"] = backend
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    env["PYTHONUNBUFFERED"] = "1"
    env.pop("CIFAR_TUNE_TOTAL_TRIALS", None)  # it would turn every --n-trials into a study-wide total
    env["PYTHONPATH"] = os.pathsep.join(
        [*([str(shim_dir)] if shim_dir else []), str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])])
    if not preallocate:  # --jobs workers still get the product's own per-worker settings, which override this
        env["XLA_PYTHON_CLIENT_PREALLOCATE"] = "false"
    if smoke:  # the CPU, whatever the machine has
        env["JAX_PLATFORMS"] = "cpu"
        env["CUDA_VISIBLE_DEVICES"] = ""
    return env


def smoke_backend() -> str:
    """The smoke run's Keras backend when the caller names none: TensorFlow where installed, else JAX.

    Measured on a 2-core CPU, the whole smoke beside a training study: TensorFlow 78 s, JAX 99 s (TensorFlow
    hidden; 120 user-s against 85). JAX imports faster (3 s against 7 s) but compiles every stock-fit step with
    XLA, which costs more on a CPU than TensorFlow's graph tracing.
    """
    return "tensorflow" if importlib.util.find_spec("tensorflow") else "jax"


def hide_tensorflow(folder: Path) -> Path:
    """A folder that, first on PYTHONPATH, makes ``import tensorflow`` fail, as on a machine without it."""
    package = folder / "tensorflow"
    package.mkdir(parents=True, exist_ok=True)
    (package / "__init__.py").write_text('raise ImportError("hidden by benchmarks/gpu_check --smoke")\n')
    return folder


def synthetic_npz(path: Path, n_train: int = 300, n_test: int = 100, seed: int = 0) -> Path:
    """The tests' tiny learnable CIFAR-shaped data (tests/helpers/synthetic.py, numpy only) as .npz."""
    from tests.helpers.synthetic import synthetic_cifar

    x_train, y_train, x_test, y_test = synthetic_cifar(n_train, n_test, seed)
    np.savez(path, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    return path
