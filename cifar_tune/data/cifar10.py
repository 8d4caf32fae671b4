"""CIFAR-10 sources -> validated uint8 arrays; the validation split; stratified subsets for quick runs.

Sources (``load(source)``; the CLI's ``--data PATH`` or ``$CIFAR_TUNE_DATA``, else the default):
- ``None`` / ``"keras"``: ``keras.datasets.cifar10.load_data()`` (the official download, cached by Keras);
- ``cifar-10-python.tar.gz``: the official archive, checked against its published SHA-256;
- a ``cifar-10-batches-py/`` directory (or a directory that contains one);
- an ``.npz`` with ``x_train``, ``y_train``, ``x_test``, ``y_test``.

Every file is opened only if it is a regular file (no FIFO, device or directory: nothing can block), and
everything that is not CIFAR-10 ends as one ``DataError``, before anything large is allocated:
- a batch pickle may be at most ``MAX_BATCH_BYTES`` (64 MiB; official batches are ~31 MB) and must be a dict
  with ``b"data"``, a native uint8 array (N, 3072), and ``b"labels"``, N ints as a list or 1-D integer array;
  ``restricted_unpickle`` builds nothing else, runs at most ``MAX_PICKLE_OPCODES`` opcodes and creates at most
  twice the pickle's size in arrays and bytes;
- an ``.npz`` array may claim at most ``MAX_IMAGES`` (1,000,000) CIFAR images' worth of bytes, and no more
  bytes than its archive member holds (read from its .npy header before loading).

Validation split: ``split_validation`` carves ``val_size`` images out of the training set; by default
``default_val_size(n)``: a tenth of the n training images, at most 5,000 (so 5,000 of the full 50,000), at least
NUM_CLASSES, so that ``--subset N`` works without ``--val-size``.
"""
from __future__ import annotations

import hashlib
import math
import os
import pickle
import tarfile
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cifar_tune.choices import DATA_ENV, KERAS_DATA
from cifar_tune.data import safe_files
from cifar_tune.data.safe_pickle import MAX_BATCH_BYTES, check_batch_size, restricted_unpickle
from cifar_tune.errors import DataError, UserError, one_line

ENV_VAR = DATA_ENV  # the data source when --data is not given
CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
NUM_CLASSES = 10
IMAGE_SHAPE = (32, 32, 3)
# SHA-256 of the official https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz (the one Keras checks too).
OFFICIAL_TARBALL_SHA256 = "6d958be074577803d12ecdefd02955f39262c83c16fe9348329d7fe0b5c001ce"
BATCH_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_FILE = "test_batch"
MAX_IMAGES = 1_000_000  # an .npz array may hold at most this many CIFAR images' bytes (~2.9 GiB; CIFAR-10: 60,000)
NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test")


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
    if source is None or str(source) == KERAS_DATA:
        return _validated(*_load_keras(), source="keras.datasets.cifar10")
    path = Path(source).expanduser()
    try:
        path.stat()
    except FileNotFoundError:
        raise DataError(f"data path not found: {path}") from None
    except OSError as e:  # a symlink loop, a path through a file, ...
        raise DataError(f"cannot use data path {path}: {e.strerror}") from None
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
        raise DataError(f"cannot read {path}: {one_line(e)}") from e
    return _validated(*arrays, source=str(path))


def _load_keras():
    import keras

    try:
        (x_train, y_train), (x_test, y_test) = keras.datasets.cifar10.load_data()
    except Exception as e:  # offline, keras.utils.get_file raises a bare Exception("URL fetch failure on ...")
        raise DataError(f"the default source keras.datasets.cifar10 could not download or read CIFAR-10 "
                        f"({one_line(e)}); point at local data with --data PATH or ${ENV_VAR} "
                        "(.npz, cifar-10-python.tar.gz or cifar-10-batches-py/)") from e
    return x_train, y_train.reshape(-1), x_test, y_test.reshape(-1)


def _open_regular(path: Path):
    """Open ``path`` for binary reading, refusing anything but a regular file (``safe_files.open_regular``)."""
    return safe_files.open_regular(path, error=DataError)


def _load_npz(path: Path):
    with _open_regular(path) as f:
        if f.read(len(np.lib.format.MAGIC_PREFIX)) == np.lib.format.MAGIC_PREFIX:
            raise DataError(f"{path} is a single .npy array, not an .npz archive of {', '.join(NPZ_KEYS)}")
        f.seek(0)
        with zipfile.ZipFile(f) as z:
            names = set(z.namelist())
            missing = [k for k in NPZ_KEYS if f"{k}.npy" not in names]
            if missing:
                raise DataError(f"{path}: missing arrays {', '.join(missing)} (expected {', '.join(NPZ_KEYS)})")
            return tuple(_read_npz_member(z, k) for k in NPZ_KEYS)


def _read_npz_member(z: zipfile.ZipFile, key: str) -> np.ndarray:
    """One array of an .npz, its .npy header checked first: numpy would allocate whatever shape it claims."""
    info = z.getinfo(f"{key}.npy")
    with z.open(info) as member:
        version = np.lib.format.read_magic(member)
        if version == (1, 0):
            shape, _, dtype = np.lib.format.read_array_header_1_0(member)
        elif version == (2, 0):
            shape, _, dtype = np.lib.format.read_array_header_2_0(member)
        else:
            raise ValueError(f"{key}: .npy format version {version} is not supported (1.0 or 2.0)")
    if dtype.hasobject:
        raise ValueError(f"{key} has dtype {dtype}: Python objects are not CIFAR-10 data")
    nbytes = math.prod(shape) * dtype.itemsize
    if nbytes > MAX_IMAGES * 3072:
        raise ValueError(f"{key} claims shape {shape} of {dtype} ({nbytes:,} bytes): more than {MAX_IMAGES:,} "
                         "CIFAR images")
    if nbytes > info.file_size:
        raise ValueError(f"{key} claims shape {shape} of {dtype} ({nbytes:,} bytes) but its archive member holds "
                         f"{info.file_size:,} bytes")
    with z.open(info) as member:
        return np.lib.format.read_array(member, allow_pickle=False)


def _find_batches_dir(path: Path) -> Path:
    for candidate in (path, path / "cifar-10-batches-py"):
        if (candidate / BATCH_FILES[0]).exists():
            return candidate
    raise DataError(f"{path}: no cifar-10-batches-py/ layout found (expected data_batch_1..5 and test_batch)")


def _load_batches_dir(d: Path):
    def read(name: str):
        f = d / name
        if not f.exists():
            raise DataError(f"{d}: missing {name}")
        with _open_regular(f) as fh:
            check_batch_size(os.fstat(fh.fileno()).st_size, str(f))  # before reading anything
            blob = fh.read(MAX_BATCH_BYTES + 1)  # + 1: a file that grew since fstat is still refused
        return _batch_xy(restricted_unpickle(blob, where=str(f)), where=str(f))

    return _arrays_from_batches([read(n) for n in BATCH_FILES], read(TEST_FILE))


def _load_tarball(path: Path, expected_sha256: str = OFFICIAL_TARBALL_SHA256):
    with _open_regular(path) as f:
        digest = hashlib.sha256()
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
        if digest.hexdigest() != expected_sha256:
            raise DataError(f"{path} is not the official cifar-10-python.tar.gz (SHA-256 {digest.hexdigest()[:12]}… "
                            f"!= {expected_sha256[:12]}…)")
        f.seek(0)
        members: dict[str, tuple] = {}
        with tarfile.open(fileobj=f, mode="r:gz") as tar:
            for m in tar.getmembers():  # read members in memory: nothing is extracted to disk
                name = Path(m.name).name
                if m.isfile() and (name in BATCH_FILES or name == TEST_FILE):
                    where = f"{path}:{m.name}"
                    check_batch_size(m.size, where)
                    members[name] = _batch_xy(restricted_unpickle(tar.extractfile(m).read(), where), where)
    missing = [n for n in (*BATCH_FILES, TEST_FILE) if n not in members]
    if missing:
        raise DataError(f"{path}: archive lacks {', '.join(missing)}")
    return _arrays_from_batches([members[n] for n in BATCH_FILES], members[TEST_FILE])


def _batch_xy(batch: object, where: str) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, 32, 32, 3) and labels (N,) of one unpickled batch, which must be a dict holding ``b"data"``, a
    uint8 array (N, 3072), and ``b"labels"``, N ints as a list or a 1-D integer array. Anything else is refused:
    in particular data as a list, which numpy would expand to (N, 3072) whatever it holds."""
    if not isinstance(batch, dict):
        raise DataError(f"{where}: a CIFAR-10 batch is a dict, this pickle holds {_describe(batch)}")
    if b"data" not in batch or b"labels" not in batch:
        raise DataError(f"{where}: a CIFAR-10 batch lacks its 'data' or 'labels' entry")
    data, labels = batch[b"data"], batch[b"labels"]
    if not (isinstance(data, np.ndarray) and data.dtype == np.uint8 and data.ndim == 2 and data.shape[1] == 3072):
        raise DataError(f"{where}: a CIFAR-10 batch's data must be a uint8 array (N, 3072), not {_describe(data)}")
    # ints beyond 64 bits make an object or float array, refused with the rest
    y = np.array(labels) if isinstance(labels, list) and all(type(v) is int for v in labels) else labels
    if not (isinstance(y, np.ndarray) and y.shape == (len(data),) and y.dtype.kind in "iu"):
        raise DataError(f"{where}: a CIFAR-10 batch's labels must be {len(data)} ints, as a list or a 1-D integer "
                        f"array, not {_describe(labels)}")
    # Official layout: each row holds 1024 red, then 1024 green, then 1024 blue values.
    return np.asarray(data).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), np.asarray(y)


def _describe(v: object) -> str:
    if isinstance(v, np.ndarray):
        return f"an array of shape {v.shape} and dtype {v.dtype}"
    return f"a list of {len(v)} items" if isinstance(v, list) else f"a {type(v).__name__}"


def _arrays_from_batches(train: list[tuple], test: tuple):
    """x_train, y_train, x_test, y_test from the (images, labels) pairs of ``_batch_xy``."""
    return np.concatenate([x for x, _ in train]), np.concatenate([y for _, y in train]), *test


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


def default_val_size(n_train: int) -> int:
    """Validation images to carve from ``n_train`` training images when none is asked for: a tenth, at most 5,000
    (the full 50,000 give 5,000), at least NUM_CLASSES (one per class)."""
    return max(NUM_CLASSES, min(5000, n_train // 10))


def split_validation(ds: Dataset, val_size: int | None = None, seed: int = 0) -> Split:
    """Carve a stratified, seeded validation set of ``val_size`` images (None: ``default_val_size``) out of the
    training set."""
    n = len(ds.y_train)
    if val_size is None:
        val_size = default_val_size(n)
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
