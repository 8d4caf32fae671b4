"""What every training engine shares, backend-neutral: the contract and its helpers.

Every engine takes the same inputs (a ``TrainSpec``, uint8 arrays, Keras callbacks whose ``on_epoch_end``
receives ``loss, accuracy, val_loss, val_accuracy``) and returns the same ``TrainResult``, so the Optuna
objective and the comparison never care which engine ran. Here: ``TrainSpec``, ``TrainResult``, ``Resume`` (a
run's state after some epochs), pixel scaling, prediction and the precision policy. The engines themselves:
``keras_fit.py`` (Keras's own ``model.fit``), ``fast.py``; their optimizer and schedule in ``optimizers.py``, the
seed in ``seeding.py``; ``engines/selector.py`` chooses. Nothing here imports a backend at module level or knows
another engine module.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

import keras
import numpy as np

from cifar_tune.choices import (
    DEFAULT_ENGINE,
    DEFAULT_EPOCHS,
    DEFAULT_PRECISION,
    DEFAULT_SEED,
    ENGINES,
    PRECISIONS,
)
from cifar_tune.errors import CheckpointMismatch, UserError
from cifar_tune.models import architectures


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


def scale(x: np.ndarray) -> np.ndarray:
    """uint8 pixels -> float32 in [0, 1], as the seed does."""
    return x.astype("float32") / 255.0


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
