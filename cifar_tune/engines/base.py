"""What every training engine shares, backend-neutral, and the reference engine: Keras's own ``model.fit``.

Every engine takes the same inputs (a ``TrainSpec``, uint8 arrays, Keras callbacks whose ``on_epoch_end``
receives ``loss, accuracy, val_loss, val_accuracy``) and returns the same ``TrainResult``, so the Optuna
objective and the comparison never care which engine ran. Here: ``TrainSpec``, ``TrainResult``, pixel
scaling, the device query, the optimizer and learning-rate schedule a config asks for, and ``train_keras``.
Nothing here imports a backend at module level or knows the fast engine (``engines/fast.py``);
``engines/__init__.py`` chooses.
"""

from __future__ import annotations

import contextlib
import math
import os
import random
import shutil
import subprocess
import time
from dataclasses import dataclass, field

import keras
import numpy as np

from cifar_tune.choices import (
    DEFAULT_ENGINE,
    DEFAULT_EPOCHS,
    DEFAULT_PRECISION,
    DEFAULT_SEED,
    ENGINES,
    OPTIMIZERS,
    PRECISIONS,
    SCHEDULES,
)
from cifar_tune.errors import CheckpointMismatch, UserError
from cifar_tune.models import architectures
from cifar_tune.runtime.gpus import gpu_of_this_process


@dataclass(frozen=True)
class TrainSpec:
    """One training run's contract, the same for every engine: ``arch`` (one of ``choices.ARCH_KEYS``), its
    ``config`` (hyperparameters; missing keys take the architecture's baseline), ``epochs``, ``seed`` (Keras's
    global seed: initial weights, shuffling, augmentation, dropout), ``engine`` (``choices.ENGINES``),
    ``precision`` (``choices.PRECISIONS``) and ``verbose`` (0: quiet, 1: Keras's progress output).

    ``config`` is completed here, and only here: the spec holds the architecture's baseline overlaid with the
    given values (``Architecture.config``), so every engine receives a complete config. The arrays and the
    callbacks travel beside the spec (``engines.train(spec, x_train, y_train, x_val, y_val, callbacks=...)``):
    a spec is a small value (compared, printed, kept as a run's key), while the images (up to 150 MB, cached on
    the device by identity) and the callbacks (stateful, bound to one trial) are not.

    Raises ``UserError`` for an unknown architecture, hyperparameter, engine or precision.
    """

    arch: str
    config: dict = field(default_factory=dict)
    epochs: int = DEFAULT_EPOCHS
    seed: int = DEFAULT_SEED
    engine: str = DEFAULT_ENGINE
    precision: str = DEFAULT_PRECISION
    verbose: int = 0

    def __post_init__(self):
        if self.engine not in ENGINES:
            raise UserError(f"unknown engine {self.engine!r}; choose from {', '.join(ENGINES)}")
        check_precision(self.precision)
        object.__setattr__(self, "config", architectures.get(self.arch).config(self.config))  # frozen otherwise


def check_precision(precision: str) -> str:
    """``precision`` if it is one of ``choices.PRECISIONS``; else ``UserError``."""
    if precision not in PRECISIONS:
        raise UserError(f"unknown precision {precision!r}; choose from {', '.join(PRECISIONS)}")
    return precision


@dataclass
class TrainResult:
    """A trained model, its per-epoch history (lists keyed like Keras's logs) and how the run went."""

    model: keras.Model
    history: dict[str, list[float]]
    seconds: float
    epochs_run: int
    engine: str
    precision: str = DEFAULT_PRECISION
    info: dict = field(default_factory=dict)


@dataclass
class Resume:
    """A training run's state after ``epoch`` whole epochs: what a preempted run continues from, and what an
    engine's per-epoch checkpoint hook (``checkpoint(state)``) receives.

    ``model``: the values of ``model.trainable_variables`` then ``model.non_trainable_variables`` (BatchNorm
    statistics and the Dropout / augmentation seed-generator states: the RNG state the engines need), host
    arrays in that order; ``optimizer``: ``optimizer.variables`` (step count, Adam moments; the step count drives
    the learning-rate schedule); ``history``: the per-epoch logs so far ({name: [float per epoch]}, ``epoch``
    long). The data shuffle needs no state: both engines draw epoch k's order from (seed, k) alone.

    Stored as one uncompressed ``.npz`` (``save``/``load``), not a ``.keras`` file: the fast JAX engine holds its
    state as arrays, not a compiled model, and ``.keras`` leaves the seed-generator states out; the arrays are
    restored by position, so a checkpoint fits the architecture and config that wrote it (``restore`` checks the
    shapes and raises ``CheckpointMismatch``, a ``ValueError``, otherwise).
    """

    epoch: int
    model: list[np.ndarray]
    optimizer: list[np.ndarray]
    history: dict[str, list[float]]

    @staticmethod
    def variables(model: keras.Model) -> list:
        """The model variables a checkpoint holds, in its order."""
        return [*model.trainable_variables, *model.non_trainable_variables]

    @classmethod
    def of(cls, epoch: int, model: keras.Model, optimizer: keras.optimizers.Optimizer, history: dict) -> Resume:
        """The state of a Keras model and its optimizer after ``epoch`` epochs (host copies)."""
        return cls(epoch, [np.array(v.numpy()) for v in cls.variables(model)],
                   [np.array(v.numpy()) for v in optimizer.variables],
                   {k: [float(x) for x in v] for k, v in history.items()})

    def restore(self, model: keras.Model, optimizer: keras.optimizers.Optimizer) -> None:
        """Assign the stored values to ``model`` and a built ``optimizer``. Raises ``CheckpointMismatch`` (a
        ``ValueError``) when they do not fit: another count of arrays, another shape, a value Keras cannot assign
        (variables already assigned then are the caller's to discard)."""
        # lengths are compared next: zip must not raise before the one-line reason
        pairs = [*zip(self.variables(model), self.model, strict=False),
                 *zip(optimizer.variables, self.optimizer, strict=False)]
        if len(self.model) != len(self.variables(model)) or len(self.optimizer) != len(optimizer.variables) \
                or any(tuple(v.shape) != tuple(np.shape(a)) for v, a in pairs):
            raise CheckpointMismatch("the checkpoint does not fit this model and optimizer")
        for variable, value in pairs:
            try:
                variable.assign(value)
            except Exception as e:  # a dtype Keras cannot cast (an older layout): the same refusal
                raise CheckpointMismatch(f"the checkpoint does not fit this model and optimizer ({variable.path}: "
                                         f"{type(e).__name__})") from None

    def save(self, path) -> None:
        """Write the state to ``path`` (an ``.npz`` file)."""
        arrays = {f"model_{i}": a for i, a in enumerate(self.model)}
        arrays.update({f"optimizer_{i}": a for i, a in enumerate(self.optimizer)})
        arrays.update({f"history_{k}": np.asarray(v, np.float64) for k, v in self.history.items()})
        np.savez(path, epoch=np.int64(self.epoch), **arrays)

    @classmethod
    def load(cls, path) -> Resume:
        """The state stored at ``path`` by ``save``."""
        with np.load(path, allow_pickle=False) as f:
            def numbered(prefix: str) -> list[np.ndarray]:
                return [f[f"{prefix}{i}"] for i in range(sum(k.startswith(prefix) for k in f.files))]

            history = {k[len("history_"):]: f[k].tolist() for k in f.files if k.startswith("history_")}
            return cls(int(f["epoch"]), numbered("model_"), numbered("optimizer_"), history)


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


def scale(x: np.ndarray) -> np.ndarray:
    """uint8 pixels -> float32 in [0, 1], as the seed does."""
    return x.astype("float32") / 255.0


def set_random_seed(seed: int) -> None:
    """Seed Python, NumPy and Keras's global seed generator, as ``keras.utils.set_random_seed`` does, but without
    importing TensorFlow on another backend: Keras's own imports TensorFlow whenever it is installed (+7 s per
    JAX process and TensorFlow's CUDA notices in its output). On TensorFlow it is Keras's own."""
    if keras.backend.backend() == "tensorflow":
        keras.utils.set_random_seed(seed)
        return
    # The rest of keras.utils.set_random_seed (keras/src/utils/rng_utils.py), less tf.random.set_seed.
    from keras.src.backend.common import global_state
    from keras.src.random import seed_generator
    from keras.src.utils import rng_utils

    global_state.set_global_attribute(rng_utils.GLOBAL_RANDOM_SEED, seed)
    global_state.set_global_attribute(seed_generator.GLOBAL_SEED_GENERATOR, None)  # recreated from the seed
    random.seed(seed)
    np.random.seed(seed)


def nvidia_gpus() -> list[str]:
    """The GPUs nvidia-smi lists, as ``NAME, N GiB`` (empty without nvidia-smi or GPUs)."""
    if not shutil.which("nvidia-smi"):
        return []
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return []
    gpus = []
    for line in out.stdout.splitlines():
        name, _, mib = line.rpartition(",")
        if name.strip() and mib.strip().isdigit():
            gpus.append(f"{name.strip()}, {int(mib) / 1024:.0f} GiB")
    return gpus


def device_description() -> str:
    """Where training computes, for people: ``NVIDIA H200, 140 GiB`` or ``CPU, 2 cores``."""
    if device_name() == "gpu":
        gpus = nvidia_gpus()
        placed = gpu_of_this_process()  # a --jobs worker sees one GPU: name its index
        if gpus and placed is not None:
            return f"{gpus[0]} (GPU {placed})"
        if gpus:
            return f"{gpus[0]}" + (f" (+{len(gpus) - 1} more)" if len(gpus) > 1 else "")
        return "GPU"
    return f"CPU, {os.cpu_count()} cores"


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


def predict_classes(model: keras.Model, x: np.ndarray, batch_size: int = 1024) -> np.ndarray:
    """Predicted class per uint8 image."""
    return np.asarray(model.predict(scale(x), batch_size=batch_size, verbose=0)).argmax(axis=1)


@contextlib.contextmanager
def precision_policy(precision: str):
    """Build models under Keras's ``mixed_bfloat16`` policy for ``bf16`` (float32 weights), else float32."""
    check_precision(precision)
    keras.mixed_precision.set_global_policy("mixed_bfloat16" if precision == "bf16" else "float32")
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy("float32")
