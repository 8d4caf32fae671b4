"""CIFAR-10 sources -> validated uint8 arrays; the validation split; stratified subsets for quick runs.

Sources (``load(source)``; the CLI's ``--data PATH`` or ``$CIFAR_TUNE_DATA``, else the default):
- ``None`` / ``"keras"``: ``keras.datasets.cifar10.load_data()`` (the official download, cached by Keras);
- ``cifar-10-python.tar.gz``: the official archive, checked against its published SHA-256;
- a ``cifar-10-batches-py/`` directory (or a directory that contains one);
- an ``.npz`` with ``x_train``, ``y_train``, ``x_test``, ``y_test``.
"""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import tarfile
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import UserError

ENV_VAR = "CIFAR_TUNE_DATA"
CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
NUM_CLASSES = 10
IMAGE_SHAPE = (32, 32, 3)
# SHA-256 of the official https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz (the one Keras checks too).
OFFICIAL_TARBALL_SHA256 = "6d958be074577803d12ecdefd02955f39262c83c16fe9348329d7fe0b5c001ce"
BATCH_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_FILE = "test_batch"


class DataError(UserError):
    """The data source is missing, unreadable or not CIFAR-10."""


@dataclass(frozen=True)
class Dataset:
    """CIFAR-10 as uint8 images (N, 32, 32, 3) and uint8 labels (N,), with a description of its source."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    source: str

    def fingerprint(self) -> str:
        """Short SHA-256 over all four arrays: identifies the exact data a run used."""
        h = hashlib.sha256()
        for a in (self.x_train, self.y_train, self.x_test, self.y_test):
            h.update(str(a.shape).encode())
            h.update(np.ascontiguousarray(a).data)
        return h.hexdigest()[:16]


@dataclass(frozen=True)
class Split:
    """Training and validation arrays (uint8) carved from the training set, plus how they were made."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    description: str


# --- loading -------------------------------------------------------------------------------------------------


def load(source: str | os.PathLike | None = None) -> Dataset:
    """Load CIFAR-10 from ``source`` (path, ``"keras"`` or None; None falls back to ``$CIFAR_TUNE_DATA``)."""
    if source is None:
        source = os.environ.get(ENV_VAR) or None
    if source is None or str(source) == "keras":
        return _validated(*_load_keras(), source="keras.datasets.cifar10")
    path = Path(source).expanduser()
    if not path.exists():
        raise DataError(f"data path not found: {path}")
    try:
        if path.is_dir():
            arrays = _load_batches_dir(_find_batches_dir(path))
        elif path.name.endswith((".tar.gz", ".tgz")):
            arrays = _load_tarball(path)
        elif path.suffix == ".npz":
            arrays = _load_npz(path)
        else:
            raise DataError(f"unsupported data file {path}: expected .npz, cifar-10-python.tar.gz or a "
                            "cifar-10-batches-py/ directory")
    except PermissionError as e:
        raise DataError(f"cannot read {path}: permission denied") from e
    except (OSError, EOFError, ValueError, tarfile.TarError, pickle.UnpicklingError, zipfile.BadZipFile,
            zlib.error) as e:
        if isinstance(e, DataError):
            raise
        raise DataError(f"cannot read {path}: {e}") from e
    return _validated(*arrays, source=str(path))


def _load_keras():
    import keras

    (x_train, y_train), (x_test, y_test) = keras.datasets.cifar10.load_data()
    return x_train, y_train.reshape(-1), x_test, y_test.reshape(-1)


def _load_npz(path: Path):
    with np.load(path, allow_pickle=False) as z:
        missing = [k for k in ("x_train", "y_train", "x_test", "y_test") if k not in z.files]
        if missing:
            raise DataError(f"{path}: missing arrays {', '.join(missing)} (expected x_train, y_train, x_test, y_test)")
        return z["x_train"], z["y_train"], z["x_test"], z["y_test"]


def _find_batches_dir(path: Path) -> Path:
    for candidate in (path, path / "cifar-10-batches-py"):
        if (candidate / BATCH_FILES[0]).is_file():
            return candidate
    raise DataError(f"{path}: no cifar-10-batches-py/ layout found (expected data_batch_1..5 and test_batch)")


def _load_batches_dir(d: Path):
    def read(name: str) -> dict:
        f = d / name
        if not f.is_file():
            raise DataError(f"{d}: missing {name}")
        return restricted_unpickle(f.read_bytes(), where=str(f))

    return _arrays_from_batches([read(n) for n in BATCH_FILES], read(TEST_FILE))


def _load_tarball(path: Path, expected_sha256: str = OFFICIAL_TARBALL_SHA256):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    if digest.hexdigest() != expected_sha256:
        raise DataError(f"{path} is not the official cifar-10-python.tar.gz (SHA-256 {digest.hexdigest()[:12]}… "
                        f"!= {expected_sha256[:12]}…)")
    members: dict[str, dict] = {}
    with tarfile.open(path, "r:gz") as tar:
        for m in tar.getmembers():  # read members in memory: nothing is extracted to disk
            name = Path(m.name).name
            if m.isfile() and (name in BATCH_FILES or name == TEST_FILE):
                members[name] = restricted_unpickle(tar.extractfile(m).read(), where=f"{path}:{m.name}")
    missing = [n for n in (*BATCH_FILES, TEST_FILE) if n not in members]
    if missing:
        raise DataError(f"{path}: archive lacks {', '.join(missing)}")
    return _arrays_from_batches([members[n] for n in BATCH_FILES], members[TEST_FILE])


def _arrays_from_batches(train_batches: list[dict], test_batch: dict):
    def xy(batch: dict):
        try:
            data, labels = batch[b"data"], batch[b"labels"]
        except (KeyError, TypeError) as e:
            raise DataError("a CIFAR-10 batch lacks its 'data' or 'labels' entry") from e
        data = np.asarray(data)
        if data.ndim != 2 or data.shape[1] != 3072:
            raise DataError(f"a CIFAR-10 batch has data of shape {data.shape}, expected (N, 3072)")
        # Official layout: each row holds 1024 red, then 1024 green, then 1024 blue values.
        return data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), np.asarray(labels)

    train = [xy(b) for b in train_batches]
    x_test, y_test = xy(test_batch)
    return (np.concatenate([x for x, _ in train]), np.concatenate([y for _, y in train]), x_test, y_test)


# Only what a pickled numpy array needs; everything else (os.system, builtins.eval, ...) is refused.
_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy._core.numeric", "_frombuffer"),
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("_codecs", "encode"),  # how Python 3 pickles bytes at protocol 2
}


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) in _ALLOWED_GLOBALS:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to unpickle {module}.{name} (only numpy arrays are allowed)")


def restricted_unpickle(blob: bytes, where: str = "pickle") -> object:
    """Unpickle CIFAR-10 batch bytes, allowing nothing but numpy array reconstruction."""
    try:
        return _RestrictedUnpickler(io.BytesIO(blob), encoding="bytes").load()
    except pickle.UnpicklingError as e:
        raise DataError(f"{where}: {e}") from e
    except Exception as e:  # truncated or garbage bytes raise all sorts of errors
        raise DataError(f"{where}: not a readable pickle ({type(e).__name__}: {e})") from e


def _validated(x_train, y_train, x_test, y_test, source: str) -> Dataset:
    arrays = {"x_train": x_train, "y_train": y_train, "x_test": x_test, "y_test": y_test}
    for name, a in arrays.items():
        if not isinstance(a, np.ndarray):
            raise DataError(f"{source}: {name} is not an array")
    for split in ("train", "test"):
        x, y = arrays[f"x_{split}"], arrays[f"y_{split}"]
        if x.ndim != 4 or x.shape[1:] != IMAGE_SHAPE or len(x) == 0:
            raise DataError(f"{source}: x_{split} has shape {x.shape}, expected (N, 32, 32, 3)")
        if x.dtype != np.uint8:
            raise DataError(f"{source}: x_{split} has dtype {x.dtype}, expected uint8 pixels 0..255")
        y = y.reshape(-1) if y.ndim == 2 and y.shape[1] == 1 else y
        if y.ndim != 1 or len(y) != len(x):
            raise DataError(f"{source}: y_{split} has shape {y.shape}, expected ({len(x)},)")
        if not np.issubdtype(y.dtype, np.integer):
            raise DataError(f"{source}: y_{split} has dtype {y.dtype}, expected integer labels")
        if y.min() < 0 or y.max() >= NUM_CLASSES:
            raise DataError(f"{source}: y_{split} has labels in {y.min()}..{y.max()}, expected 0..9")
        arrays[f"y_{split}"] = y.astype(np.uint8)
    return Dataset(arrays["x_train"], arrays["y_train"], arrays["x_test"], arrays["y_test"], source=source)


# --- splits and subsets --------------------------------------------------------------------------------------


def _stratified_take(y: np.ndarray, n: int, seed: int) -> np.ndarray:
    """Indices of a stratified sample of ``n`` items of ``y`` (sorted, so order follows the source)."""
    from sklearn.model_selection import train_test_split

    if n >= len(y):
        return np.arange(len(y))
    try:
        idx, _ = train_test_split(np.arange(len(y)), train_size=n, stratify=y, random_state=seed)
    except ValueError as e:  # too few images per class (or left over) to stratify: a user error, not a crash
        raise UserError(f"cannot draw a stratified sample of {n} of {len(y)} images: {e}") from None
    return np.sort(idx)


def subset(ds: Dataset, n_train: int, seed: int = 0) -> Dataset:
    """A stratified subset of ``n_train`` training images; the test set is scaled alike (n_train / 5).

    CIFAR-10 has five training images per test image; keeping that ratio keeps quick runs quick end to end
    (evaluation included) while every class stays represented in both.
    """
    if n_train < 2 * NUM_CLASSES:
        raise UserError(f"--subset must be at least {2 * NUM_CLASSES} images, got {n_train}")
    if n_train > len(ds.y_train):
        raise UserError(f"--subset {n_train} exceeds the {len(ds.y_train)} training images")
    n_test = max(NUM_CLASSES, round(n_train * len(ds.y_test) / len(ds.y_train)))
    tr = _stratified_take(ds.y_train, n_train, seed)
    te = _stratified_take(ds.y_test, n_test, seed)
    return Dataset(ds.x_train[tr], ds.y_train[tr], ds.x_test[te], ds.y_test[te],
                   source=f"{ds.source} (subset {n_train}/{n_test}, seed {seed})")


def split_validation(ds: Dataset, val_size: int = 5000, seed: int = 0) -> Split:
    """Carve a stratified, seeded validation set of ``val_size`` images out of the training set."""
    n = len(ds.y_train)
    if val_size < NUM_CLASSES or val_size > n - NUM_CLASSES:
        raise UserError(f"validation size {val_size} does not fit {n} training images "
                        f"(needs {NUM_CLASSES}..{n - NUM_CLASSES})")
    from sklearn.model_selection import train_test_split

    try:
        tr, va = train_test_split(np.arange(n), test_size=val_size, stratify=ds.y_train, random_state=seed)
    except ValueError as e:  # a class with a single image cannot be stratified
        raise UserError(f"cannot carve a stratified validation set of {val_size} from {n} training images: "
                        f"{e}") from None
    tr, va = np.sort(tr), np.sort(va)
    return Split(ds.x_train[tr], ds.y_train[tr], ds.x_train[va], ds.y_train[va],
                 description=f"data {ds.fingerprint()} val {val_size} seed {seed}")


def test_as_validation(ds: Dataset) -> Split:
    """The notebook's protocol: train on all training images, validate on the test set."""
    return Split(ds.x_train, ds.y_train, ds.x_test, ds.y_test, description=f"data {ds.fingerprint()} val=test")


def load_for_run(source: str | None, subset_size: int | None, seed: int = 0) -> Dataset:
    """Load a source and, if asked, take the stratified subset: what every command starts from."""
    ds = load(source)
    return subset(ds, subset_size, seed) if subset_size else ds
