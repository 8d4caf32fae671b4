"""The reference engine: Keras's own ``model.fit`` (``train_keras``), and ``resumed_fit``, the stock fit from a
``Resume`` with a checkpoint after every epoch (the compiled ``fit`` of ``tf_fit.py`` runs it too)."""

from __future__ import annotations

import time

import keras
import numpy as np

from cifar_tune.engines.base import Resume, TrainResult, TrainSpec, precision_policy, scale
from cifar_tune.engines.optimizers import compile_model, steps_per_epoch
from cifar_tune.engines.seeding import set_random_seed
from cifar_tune.models import architectures


class _CheckpointEachEpoch(keras.callbacks.Callback):
    """Stock fit's per-epoch checkpoint hook, called last among the epoch callbacks (a pruned epoch raises first
    and is not checkpointed). ``model``: the model whose variables a checkpoint holds (fit may run a wrapper)."""

    def __init__(self, hook, model: keras.Model, start: Resume | None):
        super().__init__()
        self.hook, self.inner = hook, model
        self.history = {k: list(v) for k, v in (start.history if start else {}).items()}

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        for key, value in (logs or {}).items():
            self.history.setdefault(key, []).append(float(value))
        self.hook(Resume.of(epoch + 1, self.inner, self.model.optimizer, self.history))


def resumed_fit(model: keras.Model, inner: keras.Model, x, y, *, spec: TrainSpec, callbacks: list,
                resume: Resume | None, checkpoint, **fit_kwargs) -> dict[str, list[float]]:
    """``model.fit`` (compiled already) for ``spec.epochs``, from ``resume`` when given (variables and optimizer
    restored, ``initial_epoch`` = the epochs done), calling ``checkpoint(Resume)`` after every epoch when given;
    returns the whole history (the resumed epochs' included). ``inner``: the model a checkpoint holds."""
    if resume is not None:
        model.optimizer.build(model.trainable_variables)  # Keras builds it lazily; its variables must exist
        resume.restore(inner, model.optimizer)
    if checkpoint is not None:
        callbacks = [*callbacks, _CheckpointEachEpoch(checkpoint, inner, resume)]
    hist = model.fit(x, y, epochs=spec.epochs, initial_epoch=resume.epoch if resume else 0, callbacks=callbacks,
                     verbose=spec.verbose, shuffle=True, **fit_kwargs)
    history = {k: list(v) for k, v in (resume.history if resume else {}).items()}
    for key, values in hist.history.items():
        history[key] = history.get(key, []) + [float(v) for v in values]
    return history


def train_keras(spec: TrainSpec, x_train: np.ndarray, y_train: np.ndarray, x_val: np.ndarray | None,
                y_val: np.ndarray | None, callbacks: list, resume: Resume | None = None,
                checkpoint=None) -> TrainResult:
    """The stock-fit engine: Keras's own ``model.fit`` on [0, 1] floats (the reference every engine matches).

    Without validation arrays nothing is validated. ``resume``/``checkpoint``: see ``engines.train``.
    """
    set_random_seed(spec.seed)
    with precision_policy(spec.precision):
        batch_size = int(spec.config["batch_size"])
        model = compile_model(architectures.get(spec.arch).build(spec.config), spec.config,
                              spec.epochs * steps_per_epoch(len(x_train), batch_size))
        start = time.perf_counter()
        validation = None if x_val is None else (scale(x_val), y_val)
        history = resumed_fit(model, model, scale(x_train), y_train, spec=spec, callbacks=list(callbacks),
                              resume=resume, checkpoint=checkpoint, batch_size=batch_size, validation_data=validation)
        seconds = time.perf_counter() - start
    return TrainResult(model, history, seconds, len(history.get("loss", [])), engine="keras",
                       precision=spec.precision)

