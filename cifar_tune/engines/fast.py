"""The fast engine: the backend's fastest training loop behind ``engines.train``'s contract.

JAX: ``jax_loop.py``, a device-resident loop with one compiled program per epoch (the GPU engine).
TensorFlow: ``tf_fit.py``, ``fit`` with one host round trip per epoch. Other backends fall back to the keras
engine with a one-line notice (each ``--jobs`` worker's share of a GPU's memory: ``runtime/devices.py``).
"""

from __future__ import annotations

import keras
import numpy as np

from cifar_tune import progress
from cifar_tune.engines import base, keras_fit


def train(spec: base.TrainSpec, x_train: np.ndarray, y_train: np.ndarray, x_val: np.ndarray, y_val: np.ndarray,
          callbacks: list, resume: base.Resume | None = None, checkpoint=None) -> base.TrainResult:
    """Train ``spec`` on uint8 arrays in the backend's fastest loop (``engines.train``'s contract)."""
    args = (spec, x_train, y_train, x_val, y_val, callbacks, resume, checkpoint)
    backend = keras.backend.backend()
    if backend == "jax":
        from cifar_tune.engines import jax_loop

        return jax_loop.train(*args)
    if backend == "tensorflow":
        from cifar_tune.engines import tf_fit

        return tf_fit.train(*args)
    progress.warn(f"cifar-tune: the fast engine has no {backend} loop; using the keras engine")
    return keras_fit.train_keras(*args)

