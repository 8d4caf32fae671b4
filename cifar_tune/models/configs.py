"""The five classifiers' configs as plain data: the seed's hyperparameters of each architecture and the rule that
completes a config, with no Keras import (``architectures`` builds the models from them; the search spaces, the
presets and the comparison read them here, so a process that trains nothing never loads Keras).

A config is a plain dict of hyperparameters: model knobs, and the training knobs (``TRAINING_KEYS``) that the
training engines read. Missing keys take the seed's values (``complete``).
"""

from __future__ import annotations

from cifar_tune.choices import ARCH_KEYS
from cifar_tune.errors import UserError

TRAINING_KEYS = ("learning_rate", "batch_size", "optimizer", "weight_decay", "lr_schedule")
# The seed trains every model with Adam at a constant 1e-3, batch 32 (L2, where a model has it, is in the loss).
# "adamw" adds decoupled weight decay (``weight_decay``); ``lr_schedule`` may be "cosine" or "warmup_cosine".
SEED_TRAINING = {"learning_rate": 1e-3, "batch_size": 32, "optimizer": "adam", "weight_decay": 0.0,
                 "lr_schedule": "constant"}
_AUGMENTATION = {"flip": False, "translate": 0.0}
# Each architecture's seed config (model knobs and training knobs), in ARCH_KEYS' order.
BASELINES: dict[str, dict] = {
    "mlp_bn": {"units1": 512, "units2": 256, "dropout": 0.2, "l2": 0.0, **SEED_TRAINING},
    "mlp_l2": {"units": 512, "dropout": 0.2, "l2": 1e-3, **SEED_TRAINING},
    "cnn": {"width": 1.0, "dense_units": 64, "dropout": 0.0, "l2": 0.0, **SEED_TRAINING},
    "cnn_da": {"width": 1.0, "dense_units": 128, "dropout": 0.5, "l2": 0.0, **_AUGMENTATION, **SEED_TRAINING},
    "resnet": {"width": 1.0, "dense_units": 128, "dropout": 0.5, "l2": 0.0, **_AUGMENTATION, **SEED_TRAINING},
}
# The seed's parameter count of each model (tests check the built models against it).
SEED_PARAMS = {"mlp_bn": 1_710_346, "mlp_l2": 1_578_506, "cnn": 167_562, "cnn_da": 315_722, "resnet": 437_674}
assert tuple(BASELINES) == ARCH_KEYS == tuple(SEED_PARAMS)


def baseline(arch: str) -> dict:
    """A copy of ``arch``'s seed config. Raises ``UserError`` for an unknown architecture, naming the known ones."""
    try:
        return dict(BASELINES[arch])
    except KeyError:
        raise UserError(f"unknown architecture {arch!r}; choose from {', '.join(ARCH_KEYS)}") from None


def complete(arch: str, config: dict | None = None) -> dict:
    """The full config of ``arch``: its seed config overlaid with ``config``. Raises ``UserError`` for an unknown
    architecture or hyperparameter."""
    seed, config = baseline(arch), dict(config or {})
    unknown = sorted(set(config) - set(seed))
    if unknown:
        raise UserError(f"{arch}: unknown hyperparameter(s) {', '.join(unknown)}; known: {', '.join(sorted(seed))}")
    return {**seed, **config}
