"""Train one config on arrays -> trained model + per-epoch history.

The reference engine is Keras's own ``model.fit``; every engine takes the same inputs (uint8 arrays, a config,
Keras callbacks whose ``on_epoch_end`` receives ``loss, accuracy, val_loss, val_accuracy``) and returns the
same ``TrainResult``, so the Optuna objective and the comparison never care which engine ran.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import keras
import numpy as np

from . import architectures
from .errors import UserError

ENGINES = ("auto", "keras", "fast")
PRECISIONS = ("float32", "bf16")


@dataclass
class TrainResult:
    """A trained model, its per-epoch history (lists keyed like Keras's logs) and how the run went."""

    model: keras.Model
    history: dict[str, list[float]]
    seconds: float
    epochs_run: int
    engine: str
    precision: str = "float32"
    info: dict = field(default_factory=dict)


def scale(x: np.ndarray) -> np.ndarray:
    """uint8 pixels -> float32 in [0, 1], as the seed does."""
    return x.astype("float32") / 255.0


def device_name() -> str:
    """'gpu' or 'cpu': where the current Keras backend computes."""
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        return jax.devices()[0].platform
    if backend == "tensorflow":  # the only place the core asks TensorFlow directly: Keras has no such query
        import tensorflow as tf

        return "gpu" if tf.config.list_physical_devices("GPU") else "cpu"
    if backend == "torch":
        import torch

        return "gpu" if torch.cuda.is_available() else "cpu"
    return "cpu"


def resolve_engine(engine: str) -> str:
    """'auto' becomes 'fast' when an accelerator and the fast engine's backend are present, else 'keras'."""
    if engine not in ENGINES:
        raise UserError(f"unknown engine {engine!r}; choose from {', '.join(ENGINES)}")
    if engine != "auto":
        return engine
    return "fast" if keras.backend.backend() == "jax" and device_name() == "gpu" else "keras"


def compile_model(model: keras.Model, learning_rate: float) -> keras.Model:
    """The seed's compile: Adam, sparse categorical cross-entropy, accuracy."""
    model.compile(optimizer=keras.optimizers.Adam(learning_rate=learning_rate),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def train(arch: str, config: dict, x_train: np.ndarray, y_train: np.ndarray, x_val: np.ndarray | None = None,
          y_val: np.ndarray | None = None, *, epochs: int, seed: int = 0, callbacks: list | None = None,
          verbose: int = 0, engine: str = "auto", precision: str = "float32") -> TrainResult:
    """Build ``arch`` with ``config``, train it on uint8 arrays for ``epochs`` and validate after every epoch.

    Without ``x_val``/``y_val`` (``compare``'s final retraining on all training images) nothing is validated and
    the history has no ``val_*`` entries.
    """
    if precision not in PRECISIONS:
        raise UserError(f"unknown precision {precision!r}; choose from {', '.join(PRECISIONS)}")
    engine = resolve_engine(engine)
    config = architectures.get(arch).config(config)
    if engine == "fast":
        from . import fast_engine  # backend-specific; imported only when asked for

        if x_val is None:  # the fast engine always evaluates: give it a few training images, drop what it reports
            result = fast_engine.train(arch, config, x_train, y_train, x_train[:256], y_train[:256], epochs=epochs,
                                       seed=seed, callbacks=callbacks, verbose=verbose, precision=precision)
            result.history = {k: v for k, v in result.history.items() if not k.startswith("val_")}
            return result
        return fast_engine.train(arch, config, x_train, y_train, x_val, y_val, epochs=epochs, seed=seed,
                                 callbacks=callbacks, verbose=verbose, precision=precision)
    return _train_keras(arch, config, x_train, y_train, x_val, y_val, epochs=epochs, seed=seed,
                        callbacks=callbacks, verbose=verbose, precision=precision)


def _train_keras(arch, config, x_train, y_train, x_val, y_val, *, epochs, seed, callbacks, verbose, precision):
    keras.utils.set_random_seed(seed)
    keras.mixed_precision.set_global_policy("mixed_bfloat16" if precision == "bf16" else "float32")
    try:
        model = compile_model(architectures.get(arch).build(config), config["learning_rate"])
        start = time.perf_counter()
        validation = None if x_val is None else (scale(x_val), y_val)
        hist = model.fit(scale(x_train), y_train, batch_size=int(config["batch_size"]), epochs=epochs,
                         validation_data=validation, callbacks=list(callbacks or []), verbose=verbose, shuffle=True)
        seconds = time.perf_counter() - start
    finally:
        keras.mixed_precision.set_global_policy("float32")
    history = {k: [float(v) for v in vals] for k, vals in hist.history.items()}
    return TrainResult(model, history, seconds, len(history.get("loss", [])), engine="keras", precision=precision)


def predict_classes(model: keras.Model, x: np.ndarray, batch_size: int = 1024) -> np.ndarray:
    """Predicted class per uint8 image."""
    return np.asarray(model.predict(scale(x), batch_size=batch_size, verbose=0)).argmax(axis=1)
