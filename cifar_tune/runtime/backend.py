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
from cifar_tune.runtime import devices


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
    """The engine ``engine`` names: 'auto' is 'fast' when the backend is JAX and it computes on a GPU, else 'keras'.
    Without loading Keras in the processes that train nothing (a supervisor, the Ray driver): there the chosen
    backend and a JAX probe answer; where Keras is loaded already, the loaded backend and its device answer.
    Raises ``UserError`` for an unknown engine."""
    if engine not in ENGINES:
        raise UserError(f"unknown engine {engine!r}; choose from {', '.join(ENGINES)}")
    if engine != "auto":
        return engine
    if "keras" in sys.modules:  # a process that trains: the backend it loaded and its device answer
        import keras

        return "fast" if keras.backend.backend() == "jax" and devices.device_name() == "gpu" else "keras"
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
            import keras  # noqa: F401  (loads Keras and its backend)

            devices.device_name()  # device discovery prints its own notices (CUDA probes)
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
