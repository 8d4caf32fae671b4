"""The official CIFAR-10 python layout built tiny (the data-source and bad-input tests): ``cifar-10-batches-py/``
and its ``.tar.gz``."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tests.helpers.synthetic import synthetic_cifar


def write_batches_dir(root: Path, arrays=None, protocol: int = 4) -> Path:
    """Write ``root/cifar-10-batches-py/`` (data_batch_1..5, test_batch, batches.meta) as the official archive
    and ``materialize.py --batches`` lay it out: dicts of bytes keys, rows of 1024 R, 1024 G, 1024 B values."""
    import pickle

    x_train, y_train, x_test, y_test = arrays if arrays is not None else synthetic_cifar()
    d = Path(root) / "cifar-10-batches-py"
    d.mkdir(parents=True, exist_ok=True)

    def dump(name, x, y):
        rows = x.transpose(0, 3, 1, 2).reshape(len(x), 3072)
        batch = {b"batch_label": name.encode(), b"labels": [int(v) for v in y], b"data": rows,
                 b"filenames": [f"{i}.png".encode() for i in range(len(x))]}
        (d / name).write_bytes(pickle.dumps(batch, protocol=protocol))

    for i, part in enumerate(np.array_split(np.arange(len(x_train)), 5), start=1):
        dump(f"data_batch_{i}", x_train[part], y_train[part])
    dump("test_batch", x_test, y_test)
    (d / "batches.meta").write_bytes(pickle.dumps({b"label_names": [b"airplane"]}, protocol=protocol))
    return d


def write_tarball(path: Path, batches_dir: Path) -> str:
    """Pack a ``cifar-10-batches-py/`` folder as ``cifar-10-python.tar.gz`` does; returns the file's SHA-256."""
    import hashlib
    import tarfile

    with tarfile.open(path, "w:gz") as tar:
        tar.add(batches_dir, arcname="cifar-10-batches-py")
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()
