"""The five classifiers of the seed notebook, built from a config whose baseline reproduces the seed exactly.

A config is a plain dict of hyperparameters (its seed values and completion are plain data, ``configs.py``: no
Keras there). Model knobs are read here; the training knobs (``TRAINING_KEYS``: ``learning_rate``,
``batch_size``, ``optimizer``, ...) travel in the same dict and are read by the training engines
(``cifar_tune.engines``). Missing keys take the seed's values (``Architecture.config``, which
``engines.TrainSpec`` applies once per run), so ``get(key).build({})`` is the seed's model. Inputs are images
scaled to [0, 1] (pixels / 255).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import keras
from keras import layers

from cifar_tune.choices import ARCH_KEYS, ARCH_LABELS
from cifar_tune.data.cifar10 import IMAGE_SHAPE, NUM_CLASSES
from cifar_tune.models import configs
from cifar_tune.models.configs import SEED_TRAINING, TRAINING_KEYS  # noqa: F401  (re-exported: their first home)


@dataclass(frozen=True)
class Architecture:
    """One of the seed's classifiers: key, display label, builder and the seed's config."""

    key: str
    label: str
    builder: Callable[[dict], keras.Model]
    baseline: dict = field(default_factory=dict)  # model knobs and training knobs at the seed's values
    seed_params: int = 0  # the seed's parameter count, checked by the tests

    def build(self, config: dict | None = None) -> keras.Model:
        """Build the model for ``config`` (missing keys take the baseline's values)."""
        return self.builder(self.config(config))

    def config(self, config: dict | None = None) -> dict:
        """The full config: the baseline overlaid with ``config``; unknown keys are refused."""
        return configs.complete(self.key, config)


def _l2(strength: float):
    return keras.regularizers.L2(strength) if strength > 0 else None


def _scaled(n: int, width: float) -> int:
    return max(1, int(round(n * width)))


def _augmentation(c: dict) -> list:
    """Training-only augmentation layers (Keras's random layers are identity at inference)."""
    out = []
    if c.get("flip"):
        out.append(layers.RandomFlip("horizontal"))
    if c.get("translate", 0) > 0:
        out.append(layers.RandomTranslation(c["translate"], c["translate"], fill_mode="reflect"))
    return out


def _output() -> layers.Layer:
    """Dense10 softmax, always computed in float32: under ``mixed_bfloat16`` the softmax and the loss stay exact
    (Keras's advice for mixed precision); under float32 it is the seed's layer."""
    return layers.Dense(NUM_CLASSES, activation="softmax", dtype="float32")


def _head(c: dict, units: int) -> list:
    out = [layers.Flatten(), layers.Dense(units, activation="relu", kernel_regularizer=_l2(c["l2"]))]
    if c["dropout"] > 0:
        out.append(layers.Dropout(c["dropout"]))
    return out + [_output()]


def _sequential(name: str, stack: list) -> keras.Model:
    return keras.Sequential([keras.Input(IMAGE_SHAPE), *stack], name=name)


def build_mlp_bn(c: dict) -> keras.Model:
    """Flatten, Dense, BN, ReLU, Dropout, Dense, BN, ReLU, Dropout, Dense10 softmax."""
    stack: list = [layers.Flatten()]
    for units in (c["units1"], c["units2"]):
        stack += [layers.Dense(units, kernel_regularizer=_l2(c["l2"])), layers.BatchNormalization(),
                  layers.Activation("relu")]
        if c["dropout"] > 0:
            stack.append(layers.Dropout(c["dropout"]))
    return _sequential("mlp_bn", stack + [_output()])


def build_mlp_l2(c: dict) -> keras.Model:
    """Flatten, Dense relu with L2, Dropout, Dense10 softmax."""
    return _sequential("mlp_l2", _head(c, c["units"]))


def _conv(filters: int, c: dict, padding: str = "valid") -> layers.Layer:
    return layers.Conv2D(filters, (3, 3), activation="relu", padding=padding, kernel_regularizer=_l2(c["l2"]))


def build_cnn(c: dict, name: str = "cnn") -> keras.Model:
    """[augmentation] Conv32, MaxPool, Conv64, MaxPool, Flatten, Dense relu, [Dropout], Dense10 softmax."""
    w = c["width"]
    stack = _augmentation(c) + [_conv(_scaled(32, w), c), layers.MaxPooling2D(),
                                _conv(_scaled(64, w), c), layers.MaxPooling2D()]
    return _sequential(name, stack + _head(c, c["dense_units"]))


def build_cnn_da(c: dict) -> keras.Model:
    """The Simple CNN with a wider head, dropout and (when switched on) data augmentation."""
    return build_cnn(c, name="cnn_da")


def build_resnet(c: dict) -> keras.Model:
    """The seed's "ResNet": three blocks of conv+BN (no skip connections, as in the seed), pooling, dense head."""
    w = c["width"]
    stack = _augmentation(c) + [_conv(_scaled(32, w), c), layers.BatchNormalization(),
                                _conv(_scaled(32, w), c, "same"), layers.BatchNormalization(), layers.MaxPooling2D()]
    for filters in (64, 128):
        for _ in range(2):
            stack += [_conv(_scaled(filters, w), c, "same"), layers.BatchNormalization()]
        stack.append(layers.MaxPooling2D())
    return _sequential("resnet", stack + _head(c, c["dense_units"]))


_BUILDERS = {"mlp_bn": build_mlp_bn, "mlp_l2": build_mlp_l2, "cnn": build_cnn, "cnn_da": build_cnn_da,
             "resnet": build_resnet}
# the configs are plain data (configs.py), shared with the processes that train nothing
_BUILT = {key: Architecture(key, ARCH_LABELS[key], _BUILDERS[key], configs.baseline(key), configs.SEED_PARAMS[key])
          for key in ARCH_KEYS}
ARCHITECTURES = {key: _BUILT[key] for key in ARCH_KEYS}  # names.ARCH_KEYS is the one list of keys (and order)


def get(key: str) -> Architecture:
    """The architecture called ``key``; an unknown key is a user error naming the known ones."""
    configs.baseline(key)  # UserError for an unknown key
    return ARCHITECTURES[key]
