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
import threading
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


# Who holds fd 2 silenced (``quiet_native_stderr``): the count of callers inside and the real fd 2 they saved. One
# saved copy for the whole process, whatever the threads: the first caller in saves and silences, the last one out
# restores, so overlapping calls (two threads of the Python API) can never restore /dev/null as "the" stderr.
_quiet = {"count": 0, "saved": None}
_quiet_lock = threading.Lock()
_keras_lock = threading.Lock()  # one import of Keras at a time; the first one does it (``import_keras``)
_keras_loaded = False


@contextlib.contextmanager
def quiet_native_stderr():
    """Silence what TensorFlow's C++ runtime writes to fd 2 while it loads.

    TF 2.21 prints oneDNN/CUDA notices on import that no environment variable turns off; without this every
    command, even one that only reports a bad argument, would print them. Python-level errors still show.
    Safe to nest and to overlap across threads: fd 2 is silenced while any caller is inside and restored, to the
    one it was before the first caller came in, when the last one leaves (a count under a lock).
    """
    if os.environ.get(NATIVE_LOGS_ENV):
        yield
        return
    with _quiet_lock:
        if _quiet["count"] == 0:
            sys.stderr.flush()
            saved = os.dup(2)
            devnull = os.open(os.devnull, os.O_WRONLY)
            try:
                os.dup2(devnull, 2)
            except OSError:
                os.close(saved)
                raise
            finally:
                os.close(devnull)
            _quiet["saved"] = saved
        _quiet["count"] += 1
    try:
        yield
    finally:
        with _quiet_lock:
            _quiet["count"] -= 1
            if _quiet["count"] == 0:
                sys.stderr.flush()
                saved, _quiet["saved"] = _quiet["saved"], None
                os.dup2(saved, 2)
                os.close(saved)


def import_keras() -> None:
    """Choose the backend, then load Keras and discover the device once, quietly. Thread-safe: a second caller
    waits for the first one's import (fd 2 silenced once) and then returns; later calls return at once."""
    global _keras_loaded
    if _keras_loaded:
        return
    with _keras_lock:
        if _keras_loaded:
            return
        choose_backend()
        # JAX would reserve 75% of the GPU when it first looks at the device, also in a process that trains
        # nothing (the CLI of a supervisor): allocate on demand instead; --jobs workers get their share explicitly.
        os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        with quiet_native_stderr():
            from cifar_tune import engines  # loads Keras and its backend

            engines.device_name()  # device discovery prints its own notices (CUDA probes)
        _keras_loaded = True


_training = threading.RLock()  # see one_training_at_a_time
_training_thread = {"name": None}


@contextlib.contextmanager
def one_training_at_a_time(call: str):
    """Within, this thread is the process's only caller that trains: a call of the Python API from another thread
    waits here until this one has finished (``call`` names the waiting call in the one line it logs under the
    ``cifar_tune`` logger). Re-entrant (the same thread may nest calls).

    Why wait rather than train at once: what a training relies on is the process's, not the thread's: Keras's
    random seeds and mixed-precision policy, ``clear_session``, the signal handlers and the progress reporter.
    Two trainings overlapping in one process would change each other's seeds and precision and fail each other's
    trials (seen: Keras's "All layers added to a Sequential model should have unique names"); one after the other
    each gets what it would get alone. Parallel trials are worker processes (``jobs``) or a Ray cluster (``ray``).
    """
    from cifar_tune import progress

    if not _training.acquire(blocking=False):
        progress.log_event(progress.Message(
            f"{call} waits: the cifar-tune call in thread {_training_thread['name']!r} is training (one training "
            "at a time per process; for parallel trials use jobs=N)"))
        _training.acquire()
    outer, _training_thread["name"] = _training_thread["name"], threading.current_thread().name
    try:
        yield
    finally:
        _training_thread["name"] = outer
        _training.release()


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
