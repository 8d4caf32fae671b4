"""The fast engine on TensorFlow: the closest compiled equivalent Keras offers: ``fit`` with ``steps_per_execution`` =
steps per epoch (one host round trip per epoch instead of per batch) and Keras's own ``jit_compile="auto"``
(XLA on GPU), fed uint8 images that a ``Rescaling`` layer scales inside the compiled step. The data still
stream through tf.data from host memory: not device-resident. Other backends fall back to the keras engine
with a one-line notice.
"""

from __future__ import annotations

import math
import time

import keras

from cifar_tune.engines import base, keras_fit, optimizers
from cifar_tune.models import architectures
from cifar_tune.runtime import devices


def train(spec: base.TrainSpec, x_train, y_train, x_val, y_val, callbacks: list, resume: base.Resume | None = None,
          checkpoint=None) -> base.TrainResult:
    """``fit`` with one host round trip per epoch and XLA where Keras chooses it (``engines.train``'s contract)."""
    config = spec.config
    keras.utils.set_random_seed(spec.seed)
    with base.precision_policy(spec.precision):
        model = architectures.get(spec.arch).build(config)
        # uint8 in, scaled inside the compiled step: a quarter of the host-to-device traffic of float32 pixels.
        # The returned model is the inner one, which takes [0, 1] floats like the keras engine's.
        wrapper = keras.Sequential([keras.Input(architectures.IMAGE_SHAPE, dtype="uint8"),
                                    keras.layers.Rescaling(1 / 255.0, dtype="float32"), model])
        batch_size = int(config["batch_size"])
        steps = math.ceil(len(x_train) / batch_size)
        wrapper.compile(optimizer=optimizers.make_optimizer(config, spec.epochs * steps),
                        loss="sparse_categorical_crossentropy", metrics=["accuracy"], steps_per_execution=steps)
        start = time.perf_counter()
        history = keras_fit.resumed_fit(wrapper, model, x_train, y_train, spec=spec, callbacks=callbacks,
                                        resume=resume, checkpoint=checkpoint, batch_size=batch_size,
                                        validation_data=(x_val, y_val))
        seconds = time.perf_counter() - start
    optimizers.compile_model(model, config)
    info = {"backend": "tensorflow", "device": devices.device_name(), "steps_per_execution": steps,
            "ragged_batch": "smaller last batch (fit)"}
    return base.TrainResult(model, history, seconds, len(history.get("loss", [])), engine="fast",
                            precision=spec.precision, info=info)
