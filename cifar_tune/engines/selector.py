"""The one place an engine is chosen: ``train(spec, arrays)`` runs ``spec.engine`` resolved
(``runtime.resolve_engine``): ``keras`` is stock ``fit`` (``keras_fit.train_keras``, every backend); ``fast`` is the
compiled device loop (``fast.py``: JAX; compiled ``fit`` on TensorFlow); ``auto`` takes ``fast`` on JAX with a GPU.
Also the line a training command says before its first epoch (``describe``, ``report_device``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import keras
import numpy as np

from cifar_tune import progress
from cifar_tune.choices import DEFAULT_ENGINE, DEFAULT_PRECISION
from cifar_tune.engines import keras_fit
from cifar_tune.engines.base import Resume, TrainResult, TrainSpec
from cifar_tune.errors import CheckpointMismatch
from cifar_tune.runtime import devices
from cifar_tune.runtime.backend import resolve_engine


def describe(engine: str = DEFAULT_ENGINE, precision: str = DEFAULT_PRECISION) -> str:
    """The line every training command prints before its first epoch (plus a warning line when a GPU is idle)."""
    warning = idle_gpu_warning()
    return _training_line(engine, precision) + (f"\n{warning}" if warning else "")


def report_device(engine: str = DEFAULT_ENGINE, precision: str = DEFAULT_PRECISION) -> None:
    """``describe`` as progress before a command's first epoch: the line as progress, an idle GPU as a warning
    (the CLI prints it on standard error, the Python API shows it as a warning)."""
    progress.info(_training_line(engine, precision))
    warning = idle_gpu_warning()
    if warning:
        progress.warn(warning)


def _training_line(engine: str, precision: str) -> str:
    return (f"Training on: {keras.backend.backend()} backend, {devices.device_description()}, engine "
            f"{resolve_engine(engine)}, precision {precision}")


def idle_gpu_warning() -> str | None:
    """A warning when nvidia-smi lists a GPU that the backend does not use (None: no GPU sits idle)."""
    gpus = devices.nvidia_gpus()
    if not gpus or devices.device_name() != "cpu":
        return None
    return (f"WARNING: nvidia-smi lists {gpus[0]} but training runs on the CPU: this {keras.backend.backend()} "
            "has no CUDA support here. Install the GPU extra (pip install 'cifar-tune[gpu]': JAX with CUDA) and "
            "leave KERAS_BACKEND unset, or set KERAS_BACKEND=jax.")


def train(spec: TrainSpec, x_train: np.ndarray, y_train: np.ndarray, x_val: np.ndarray | None = None,
          y_val: np.ndarray | None = None, *, callbacks: list | None = None, resume: Resume | None = None,
          checkpoint: Callable[[Resume], None] | None = None) -> TrainResult:
    """Build ``spec.arch`` with ``spec.config``, train it on uint8 arrays (``x``: N x 32 x 32 x 3, ``y``: N class
    indices) for ``spec.epochs`` on the engine ``spec.engine`` resolves to, and validate after every epoch.

    Without ``x_val``/``y_val`` (``compare``'s final retraining on all training images) nothing is validated and
    the history has no ``val_*`` entries. ``callbacks``: Keras callbacks (every engine calls their epoch hooks).

    Preemption (the tuning loop's trials): ``resume`` continues a run of the same spec from its state after
    ``resume.epoch`` epochs (variables, optimizer, curves so far; callbacks see only the epochs after it, numbered
    as in the whole run; the history returned is the whole run's); ``checkpoint`` is called after each epoch's
    callbacks with the run's state (a ``Resume``, host arrays), not after an epoch a callback stopped or pruned.
    Given the same data and seed, a resumed run repeats an uninterrupted one (bit for bit on CPU, measured for
    both engines: ``tests/tuning/test_checkpoints.py``): the fast JAX loop keys epoch k's shuffle by (seed, k), stock
    fit's data shuffle comes from the seed alone in each epoch's fresh iterator, and every other random draw
    from the restored seed-generator states. The state is restored before any callback is called (their
    ``on_train_begin`` sees the resumed model). Raises ``CheckpointMismatch`` (a ``ValueError``), before any
    callback is called and anything trained, when ``resume`` does not fit the model the spec builds, or its
    epoch is not inside the run.
    """
    spec = dataclasses.replace(spec, engine=resolve_engine(spec.engine))
    callbacks = list(callbacks or [])
    if resume is not None and not 0 < resume.epoch < spec.epochs:
        raise CheckpointMismatch(f"cannot resume at epoch {resume.epoch} of {spec.epochs}")
    state = dict(resume=resume, checkpoint=checkpoint)
    if spec.engine == "keras":
        return keras_fit.train_keras(spec, x_train, y_train, x_val, y_val, callbacks, **state)
    from cifar_tune.engines import fast  # backend-specific; imported only when asked for

    if x_val is None:  # the fast engine always evaluates: give it a few training images, drop what it reports
        result = fast.train(spec, x_train, y_train, x_train[:256], y_train[:256], callbacks, **state)
        result.history = {k: v for k, v in result.history.items() if not k.startswith("val_")}
        return result
    return fast.train(spec, x_train, y_train, x_val, y_val, callbacks, **state)
