"""Tiny synthetic CIFAR-shaped data (numpy only, no pytest): used by the tests and by benchmarks/gpu_check/."""

from __future__ import annotations

import numpy as np


def synthetic_cifar(n_train: int = 300, n_test: int = 100, seed: int = 0):
    """CIFAR-shaped uint8 data whose class is visible (a bright class-specific stripe over noise)."""
    rng = np.random.default_rng(seed)

    def make(n):
        y = np.arange(n) % 10
        rng.shuffle(y)
        x = rng.integers(0, 96, size=(n, 32, 32, 3), dtype=np.uint8)
        for c in range(10):
            rows = slice(3 * c, 3 * c + 3)
            x[y == c, rows, :, c % 3] = 255
        return x, y.astype(np.uint8)

    x_train, y_train = make(n_train)
    x_test, y_test = make(n_test)
    return x_train, y_train, x_test, y_test
