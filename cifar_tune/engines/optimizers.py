"""The optimizer and learning-rate schedule a config asks for, shared by every engine: ``Schedule`` (warm-up,
cosine or constant; traced values allowed), ``make_optimizer`` (Adam or AdamW), ``compile_model`` (the seed's
compile) and ``steps_per_epoch``."""

from __future__ import annotations

import math

import keras

from cifar_tune.choices import OPTIMIZERS, SCHEDULES
from cifar_tune.errors import UserError

NO_DECAY = ("bias", "gamma", "beta")  # AdamW decays kernels only, the usual choice (BatchNorm scales stay free)
WARMUP_FRACTION = 0.1  # "warmup_cosine": linear warm-up over the first 10% of all steps, then cosine to 0


@keras.saving.register_keras_serializable(package="cifar_tune")
class Schedule(keras.optimizers.schedules.LearningRateSchedule):
    """Learning rate at an optimizer step: optional linear warm-up, then cosine decay to 0, or constant.

    Keras's ``CosineDecay`` takes Python numbers; here every attribute may also be a traced value, so the fast
    engine compiles one program for every schedule and learning rate (``cosine`` = 0 and ``warmup_steps`` = 0
    is the constant rate). Same formula as ``CosineDecay(0, total - warmup, warmup_target=lr, warmup_steps=
    warmup)``.
    """

    def __init__(self, learning_rate, total_steps, warmup_steps=0, cosine=1):
        self.learning_rate, self.total_steps = learning_rate, total_steps
        self.warmup_steps, self.cosine = warmup_steps, cosine

    def __call__(self, step):
        ops = keras.ops
        step = ops.cast(step, "float32")
        warmup = ops.cast(self.warmup_steps, "float32")
        decay_steps = ops.maximum(ops.cast(self.total_steps, "float32") - warmup, 1.0)
        warm = ops.where(warmup > 0, ops.minimum(step / ops.maximum(warmup, 1.0), 1.0), 1.0)
        fraction = ops.clip((step - warmup) / decay_steps, 0.0, 1.0)
        cosine = 0.5 * (1.0 + ops.cos(math.pi * fraction))
        decay = ops.where(ops.cast(self.cosine, "float32") > 0, cosine, 1.0)
        return ops.cast(self.learning_rate, "float32") * warm * decay

    def get_config(self) -> dict:
        return {k: float(getattr(self, k)) for k in ("learning_rate", "total_steps", "warmup_steps", "cosine")}


def schedule_values(config: dict, total_steps: int) -> dict:
    """The schedule of ``config`` as plain numbers (``Schedule``'s arguments)."""
    kind = config["lr_schedule"]
    if kind not in SCHEDULES:
        raise UserError(f"unknown lr_schedule {kind!r}; choose from {', '.join(SCHEDULES)}")
    warmup = int(total_steps * WARMUP_FRACTION) if kind == "warmup_cosine" else 0
    return {"learning_rate": float(config["learning_rate"]), "total_steps": int(total_steps),
            "warmup_steps": warmup, "cosine": int(kind != "constant")}


def make_optimizer(config: dict, total_steps: int) -> keras.optimizers.Optimizer:
    """Adam (the seed; L2 lives in the loss) or AdamW (decoupled ``weight_decay``), at the config's schedule."""
    if config["optimizer"] not in OPTIMIZERS:
        raise UserError(f"unknown optimizer {config['optimizer']!r}; choose from {', '.join(OPTIMIZERS)}")
    values = schedule_values(config, total_steps)
    rate = values["learning_rate"] if config["lr_schedule"] == "constant" else Schedule(**values)
    if config["optimizer"] == "adamw":
        optimizer = keras.optimizers.AdamW(learning_rate=rate, weight_decay=float(config["weight_decay"]))
        optimizer.exclude_from_weight_decay(var_names=NO_DECAY)
        return optimizer
    return keras.optimizers.Adam(learning_rate=rate)


def steps_per_epoch(n_images: int, batch_size: int) -> int:
    """Optimizer steps in one epoch (the last, partial batch counts)."""
    return -(-n_images // batch_size)


def compile_model(model: keras.Model, config: dict, total_steps: int = 1) -> keras.Model:
    """The seed's compile (Adam, sparse categorical cross-entropy, accuracy), with the config's optimizer."""
    model.compile(optimizer=make_optimizer(config, total_steps), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    return model

