"""Training engines behind one call: ``train(TrainSpec(arch, config, epochs, ...), arrays) -> TrainResult``.

``base.py``: the contract every engine shares (``TrainSpec`` completes the config; ``TrainResult``; ``Resume``);
``selector.py``: the one place an engine is chosen; ``keras_fit.py``: stock ``fit`` (every backend); ``fast.py``:
the compiled device loop (``jax_loop.py`` + ``jax_program.py`` on JAX, ``tf_fit.py`` on TensorFlow);
``optimizers.py``: the optimizer and schedule a config asks for; ``seeding.py``: the seed; ``numerics.py``: the
numerics check of ``doctor --check``. The devices are the runtime's (``runtime/devices.py``).
"""

from cifar_tune.engines.base import Resume, TrainResult, TrainSpec, precision_policy, predict_classes, scale
from cifar_tune.engines.optimizers import compile_model  # and registers the schedule for loading a model
from cifar_tune.engines.selector import describe, report_device, train

__all__ = ["Resume", "TrainResult", "TrainSpec", "compile_model", "describe", "precision_policy", "predict_classes",
           "report_device", "scale", "train"]
