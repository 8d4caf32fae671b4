"""Shared fixtures: tiny synthetic CIFAR-shaped data that a few epochs can learn, and an isolated working dir."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

REPO = Path(__file__).resolve().parents[1]
SHARED_CIFAR = REPO.parent / "shared" / "cifar10"


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


@pytest.fixture
def tiny_npz(tmp_path: Path) -> Path:
    """A tiny learnable CIFAR-shaped .npz (300 train / 100 test images)."""
    path = tmp_path / "tiny.npz"
    x_train, y_train, x_test, y_test = synthetic_cifar()
    np.savez(path, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    return path


@pytest.fixture(autouse=True)
def isolated_cwd(tmp_path: Path, monkeypatch) -> Path:
    """Every test runs in its own folder, so the default storage/ never touches the repo; no ambient data."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("CIFAR_TUNE_DATA", raising=False)
    return tmp_path


@pytest.fixture
def real_npz() -> Path:
    """The shared JPEG-derived CIFAR-10 copy as .npz (materialized once into .data/ by .ci/run or by hand)."""
    path = Path(os.environ.get("CIFAR_TUNE_REAL_NPZ", REPO / ".data" / "cifar10.npz"))
    if not path.is_file():
        pytest.skip(f"real data not materialized at {path} (run: python ../shared/cifar10/materialize.py {path})")
    return path
