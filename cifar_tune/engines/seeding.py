"""The one way a training run seeds its random draws (``set_random_seed``), on every backend."""

from __future__ import annotations

import random

import keras
import numpy as np


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

