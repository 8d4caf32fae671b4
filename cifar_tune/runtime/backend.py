"""The process's compute setup, before Keras loads: which backend, quietly imported, on which device.

The backend chooses itself (``choose_backend``) when neither ``$KERAS_BACKEND`` nor Keras's config file
(``~/.keras/keras.json``, ``$KERAS_HOME``) names one: JAX when a CUDA-enabled JAX is installed and sees a GPU,
else TensorFlow (the fast CPU backend, Keras's default). ``$KERAS_BACKEND`` and the config file still win.
This must run before Keras is imported: Keras fixes its backend at import.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

from cifar_tune.choices import ENGINES, NATIVE_LOGS_ENV
from cifar_tune.errors import UserError


def _configured_backend() -> str | None:
    """The backend named by $KERAS_BACKEND or Keras's config file, if any."""
    if os.environ.get("KERAS_BACKEND"):
        return os.environ["KERAS_BACKEND"]
    home = Path(os.environ.get("KERAS_HOME") or Path.home() / ".keras")
    try:
        return json.loads((home / "keras.json").read_text()).get("backend")
    except (OSError, ValueError, AttributeError):
        return None


@functools.cache
def _jax_sees_gpu() -> bool:
    """Whether a CUDA-enabled JAX is installed and finds a GPU (asked in a subprocess: importing JAX here would
    claim GPU memory in every process, and its answer is what counts; asked once per process)."""
    if importlib.util.find_spec("jax") is None or importlib.util.find_spec("jax_plugins") is None:
        return False  # no JAX, or a JAX without its CUDA plugin package
    probe = "import jax; print(any(d.platform == 'gpu' for d in jax.devices()))"
    try:
        out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120,
                             env={**os.environ, "XLA_PYTHON_CLIENT_PREALLOCATE": "false"})
    except (OSError, subprocess.TimeoutExpired):
        return False
    return out.stdout.strip().endswith("True")


def choose_backend() -> str:
    """Set $KERAS_BACKEND when nothing names a backend (see the module docstring); returns the backend."""
    chosen = _configured_backend()
    if chosen:
        return chosen
    chosen = "jax" if _jax_sees_gpu() else "tensorflow"
    os.environ["KERAS_BACKEND"] = chosen
    return chosen


def resolve_engine(engine: str) -> str:
    """``engines.resolve_engine`` without loading Keras (for the processes that train nothing: a supervisor, the
    Ray driver): 'auto' is 'fast' when the chosen backend is JAX and JAX sees a GPU, else 'keras'. Where Keras is
    loaded already, the loaded backend answers. Raises ``UserError`` for an unknown engine."""
    if engine not in ENGINES:
        raise UserError(f"unknown engine {engine!r}; choose from {', '.join(ENGINES)}")
    if engine != "auto":
        return engine
    if "keras" in sys.modules:  # a process that trains: the backend it loaded answers, as its training's does
        from cifar_tune import engines

        return engines.resolve_engine(engine)
    return "fast" if choose_backend() == "jax" and _jax_sees_gpu() else "keras"


@contextlib.contextmanager
def quiet_native_stderr():
    """Silence what TensorFlow's C++ runtime writes to fd 2 while it loads.

    TF 2.21 prints oneDNN/CUDA notices on import that no environment variable turns off; without this every
    command, even one that only reports a bad argument, would print them. Python-level errors still show.
    """
    if os.environ.get(NATIVE_LOGS_ENV):
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def import_keras() -> None:
    """Choose the backend, then load Keras and discover the device once, quietly."""
    choose_backend()
    # JAX would reserve 75% of the GPU when it first looks at the device, also in a process that trains
    # nothing (the CLI of a supervisor): allocate on demand instead; --jobs workers get their share explicitly.
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    with quiet_native_stderr():
        from cifar_tune import engines  # loads Keras and its backend

        engines.device_name()  # device discovery prints its own notices (CUDA probes)


def driver_cuda_version() -> tuple[int, int] | None:
    """The newest CUDA the NVIDIA driver supports, as ``nvidia-smi``'s header says (``CUDA Version: 13.0`` ->
    ``(13, 0)``); None without nvidia-smi or that line."""
    import re
    import shutil

    if not shutil.which("nvidia-smi"):
        return None
    try:
        out = subprocess.run(["nvidia-smi"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    found = re.search(r"CUDA Version:\s*(\d+)\.(\d+)", out)
    return (int(found[1]), int(found[2])) if found else None


def jax_cuda_builds() -> dict[int, str]:
    """The CUDA builds of JAX installed: CUDA major -> plugin version (``{13: "0.10.2"}``; empty: CPU-only JAX)."""
    import importlib.metadata

    builds = {}
    for major in (12, 13):
        try:
            builds[major] = importlib.metadata.version(f"jax-cuda{major}-plugin")
        except importlib.metadata.PackageNotFoundError:
            pass
    return builds


def cuda_match(builds: dict[int, str], driver: tuple[int, int] | None) -> str:
    """One line: which CUDA build of JAX is installed and whether the driver runs it (a driver runs a CUDA major
    up to the one nvidia-smi reports), with the extra to install when it does not."""
    installed = ", ".join(f"jax-cuda{m}-plugin {v}" for m, v in sorted(builds.items())) or "no CUDA build of JAX"
    if driver is None:
        return f"{installed}; no NVIDIA driver found (nvidia-smi): training runs on the CPU"
    cuda = f"the driver supports CUDA {driver[0]}.{driver[1]}"
    fits = [m for m in builds if m <= driver[0]]
    if fits:
        return f"{installed}; {cuda}: matches (CUDA {max(fits)})"
    extra = "gpu" if driver[0] >= 13 else "gpu-cuda12"
    return f"{installed}; {cuda}: NO MATCH, install pip install 'cifar-tune[{extra}]'"
