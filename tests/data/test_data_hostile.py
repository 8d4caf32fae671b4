"""Hostile data inputs, each built here by hand: every one must end as one DataError line (exit 2 from the CLI),
never as a crash, a hang, a traceback or gigabytes of memory."""

from __future__ import annotations

import codecs
import os
import pickle
import struct
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest
from numpy._core.multiarray import _reconstruct

from cifar_tune.data import cifar10
from cifar_tune.errors import UserError
from tests.helpers.data_files import write_batches_dir, write_tarball
from tests.helpers.paths import REPO
from tests.helpers.synthetic import synthetic_cifar


class _Reduce:
    """Pickles as ``func(*args)``, then ``BUILD(state)`` if a state is given: how a hostile pickle hands numpy's
    own functions arguments that numpy never writes itself."""

    def __init__(self, func, args, state=None):
        self.func, self.args, self.state = func, args, state

    def __reduce__(self):
        return (self.func, self.args) if self.state is None else (self.func, self.args, self.state)


def raw_array(shape: tuple, dtype, raw: bytes) -> _Reduce:
    """An array as numpy pickles one (``_reconstruct`` + state), but with any dtype object and any raw bytes."""
    return _Reduce(_reconstruct, (np.ndarray, (0,), b"b"), (1, shape, dtype, False, raw))


def dtype_with_state(name: str, state: tuple) -> _Reduce:
    return _Reduce(np.dtype, (name, False, True), state)


N = 60  # images in each of the tiny batches of conftest.write_batches_dir
ROWS = np.zeros((N, 3072), np.uint8)
# dtype('O') whose state drops the flags that make numpy treat its items as references: raw bytes become pointers.
OBJECT_AS_BYTES = dtype_with_state("O8", (3, "|", None, None, None, -1, -1, 0))
OBJECT_FIELD = dtype_with_state("V8", (3, "|", None, ("a",), {"a": (np.dtype("O"), 0)}, 8, 1, 0))


def evil_batches_dir(root: Path, batch: object, protocol: int = 2) -> Path:
    """The tiny layout with data_batch_1 replaced by a pickle of ``batch``; returns the folder to load."""
    d = write_batches_dir(root)
    (d / "data_batch_1").write_bytes(batch if isinstance(batch, bytes) else pickle.dumps(batch, protocol=protocol))
    return root


def refused(path, match: str) -> str:
    with pytest.raises(cifar10.DataError, match=match) as e:
        cifar10.load(path)
    message = str(e.value)
    assert "\n" not in message and len(message) < 1000
    return message




# --- batch pickles: numpy reconstruction with hostile arguments ------------------------------------------------


def test_segfault_pickle_exits_2_in_one_line_through_the_cli(tmp_path):
    """Object items built from raw bytes crashed the process (exit 139); now: exit 2, one line, nothing written."""
    evil = evil_batches_dir(tmp_path / "evil", {b"data": ROWS, b"labels": raw_array((N,), OBJECT_AS_BYTES,
                                                                                   b"\x41" * 8 * N)})
    env = {k: v for k, v in os.environ.items() if k != cifar10.ENV_VAR}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), *filter(None, [env.get("PYTHONPATH")])])
    proc = subprocess.run([sys.executable, "-m", "cifar_tune", "baseline", "--data", str(evil), "--archs", "cnn",
                           "--epochs", "1"], check=False, capture_output=True, text=True, stdin=subprocess.DEVNULL,
                          env=env, cwd=tmp_path, timeout=300)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("cifar-tune: error: ")
    assert "refusing dtype 'O8'" in proc.stderr
    assert not (tmp_path / "storage").exists()


@pytest.mark.parametrize("batch, message", [
    ({b"data": raw_array((N, 3072), OBJECT_AS_BYTES, b"\x41" * 8 * N * 3072), b"labels": [0] * N},
     "refusing dtype 'O8'"),
    ({b"data": ROWS, b"labels": raw_array((N,), OBJECT_FIELD, b"\x41" * 8 * N)}, "refusing dtype 'V8'"),
    ({b"data": ROWS, b"labels": np.zeros(N, dtype=object)}, "refusing dtype 'O8'"),
    ({b"data": np.zeros(N, "V3072"), b"labels": [0] * N}, "refusing dtype 'V3072'"),
    ({b"data": ROWS, b"labels": np.zeros(N, [("a", "u1")])}, "refusing dtype 'V1'"),
    # an allowed dtype name whose state adds fields (an object one would be refused as 'O8' before)
    ({b"data": raw_array((N, 3072), dtype_with_state("u1", (3, "|", None, ("a",), {"a": (np.dtype("u1"), 0)},
                                                              1, 1, 0)), bytes(N * 3072)), b"labels": [0] * N},
     "refusing dtype u1 with fields"),
    ({b"data": ROWS, b"labels": (np.arange(N) % 10).astype(">i8")}, "refusing dtype i8 in byte order '>'"),
    ({b"data": raw_array((N, 3072), dtype_with_state("u1", (3, ">", None, None, None, -1, -1, 0)),
                         bytes(N * 3072)), b"labels": [0] * N}, "refusing dtype u1 in byte order '>'"),
], ids=["object data", "object field labels", "object labels", "void data", "structured labels",
        "u1 with fields", "big-endian i8 labels", "big-endian u1 data"])
def test_dtypes_a_batch_does_not_need_are_refused_before_numpy_builds_them(tmp_path, batch, message):
    refused(evil_batches_dir(tmp_path / "evil", batch), f"data_batch_1: {message}")


@pytest.mark.parametrize("protocol", [2, 5])
def test_native_integer_label_arrays_are_accepted(tmp_path, protocol):
    x_train, y_train, _, _ = synthetic_cifar()
    root = tmp_path / "ok"
    d = write_batches_dir(root)
    (d / "data_batch_1").write_bytes(pickle.dumps({b"data": x_train[:N].transpose(0, 3, 1, 2).reshape(N, 3072),
                                                   b"labels": y_train[:N].astype("=i8")}, protocol=protocol))
    np.testing.assert_array_equal(cifar10.load(root).y_train, y_train)


class _Python2Pickler(pickle._Pickler):
    """Writes str and bytes as Python 2 str (SHORT_BINSTRING/BINSTRING), as in the official batches, which Python 2
    pickled: unpickled with encoding="bytes", even numpy's dtype name and byte order come back as bytes."""

    dispatch: ClassVar[dict] = dict(pickle._Pickler.dispatch)

    def save_python2_str(self, obj):
        raw = obj.encode("latin1") if isinstance(obj, str) else obj
        n = len(raw)
        self.write((pickle.SHORT_BINSTRING + bytes([n]) if n < 256 else pickle.BINSTRING + struct.pack("<i", n)) + raw)
        self.memoize(obj)

    dispatch[str] = dispatch[bytes] = save_python2_str


def test_batches_pickled_as_python_2_did_load(tmp_path):
    x_train, y_train, x_test, y_test = synthetic_cifar()
    d = write_batches_dir(tmp_path / "py2")
    for f in d.iterdir():
        with open(f, "rb") as src:
            batch = pickle.load(src)
        with open(f, "wb") as dst:
            _Python2Pickler(dst, protocol=2).dump(batch)
    assert b"U\x02u1" in (d / "data_batch_1").read_bytes()
    ds = cifar10.load(tmp_path / "py2")
    for got, want in ((ds.x_train, x_train), (ds.y_train, y_train), (ds.x_test, x_test), (ds.y_test, y_test)):
        np.testing.assert_array_equal(got, want)


# --- batch pickles: growth from a few bytes ------------------------------------------------------------------


def test_chained_codecs_encode_cannot_grow_a_tiny_pickle(tmp_path):
    grow = _Reduce(codecs.encode, ("x", "latin1"))
    for _ in range(40):  # hex doubles the bytes each time: 2**40 bytes from a few hundred
        grow = _Reduce(codecs.encode, (grow, "hex"))
    assert len(pickle.dumps(grow, protocol=2)) < 1000
    blob = pickle.dumps({b"data": ROWS, b"labels": [0] * N, b"filenames": grow}, protocol=2)
    refused(evil_batches_dir(tmp_path / "evil", blob), r"refusing _codecs.encode of bytes to 'hex' \(only latin1\)")


def test_repeated_constructors_cannot_build_more_bytes_than_the_pickle_holds(tmp_path):
    big = "x" * 100_000  # memoized once, encoded 1,000 times: 100 MB from a ~300 kB pickle
    blob = pickle.dumps({b"data": ROWS, b"labels": [0] * N,
                         b"filenames": [_Reduce(codecs.encode, (big, "latin1")) for _ in range(1000)]}, protocol=2)
    assert len(blob) < 400_000
    refused(evil_batches_dir(tmp_path / "evil", blob), "builds more bytes than it holds")
    # numpy copies the bytes of small arrays: 5,000 arrays over one memoized kilobyte are 5 MB from ~300 kB
    u1, raw = dtype_with_state("u1", (3, "|", None, None, None, -1, -1, 0)), bytes(1000)
    blob = pickle.dumps({b"data": ROWS, b"labels": [0] * N,
                         b"filenames": [raw_array((1000,), u1, raw) for _ in range(5000)]}, protocol=3)
    assert len(blob) < 400_000
    refused(evil_batches_dir(tmp_path / "evil2", blob), "builds more bytes than it holds")


def test_memo_index_far_beyond_the_pickle_is_refused():
    """A ten-byte pickle whose memo index makes the C unpickler size its memo table to 2**33 entries."""
    blob = b"\x80\x02N" + b"r" + struct.pack("<I", 0xFFFFFFF0) + b"."
    with pytest.raises(cifar10.DataError, match="refusing memo index 4294967280"):
        cifar10.restricted_unpickle(blob, where="memo.pkl")


def test_data_as_ten_million_references_to_one_row_is_refused(tmp_path):
    """20 MB of pickle that numpy would expand to 28.6 GiB: refused by its opcode count, never expanded."""
    blob = pickle.dumps({b"data": [ROWS[0]] * 10_000_000, b"labels": [0] * N}, protocol=4)
    assert len(blob) < 32 << 20
    refused(evil_batches_dir(tmp_path / "evil", blob), "refusing a pickle of more than 1,000,000 opcodes")


# --- batch pickles: the shape of the batch -------------------------------------------------------------------


@pytest.mark.parametrize("batch, message", [
    (np.zeros((N, 3072), np.uint8), r"a CIFAR-10 batch is a dict, this pickle holds an array of shape \(60, 3072\)"),
    ([ROWS, [0] * N], "a CIFAR-10 batch is a dict, this pickle holds a list of 2 items"),
    ({b"data": [ROWS[0]] * N, b"labels": [0] * N}, r"data must be a uint8 array \(N, 3072\), not a list of 60 items"),
    ({b"data": ROWS.astype(np.int64), b"labels": [0] * N}, r"not an array of shape \(60, 3072\) and dtype int64"),
    ({b"data": ROWS, b"labels": np.zeros((N, 1), np.int64)},
     r"labels .* not an array of shape \(60, 1\) and dtype int64"),
    ({b"data": ROWS, b"labels": [np.int64(0)] * N}, "refusing to unpickle numpy._core.multiarray.scalar"),
    ({b"data": ROWS, b"labels": [np.array(0)] * N},
     "labels must be 60 ints, as a list or a 1-D integer array, not a list"),
    ({b"data": ROWS, b"labels": bytes(N)}, "labels must be 60 ints, .* not a bytes"),
    ({b"data": ROWS, b"labels": [0] * (N - 1)}, "labels must be 60 ints, .* not a list of 59 items"),
    ({b"data": ROWS, b"labels": [2 ** 70] * N}, "labels must be 60 ints, .* not a list of 60 items"),
], ids=["top-level array", "top-level list", "data list", "int64 data", "column labels", "numpy scalar labels",
        "0-d array labels", "bytes labels", "59 labels", "huge labels"])
def test_a_batch_is_a_dict_of_a_uint8_array_and_integer_labels(tmp_path, batch, message):
    refused(evil_batches_dir(tmp_path / "evil", batch), f"data_batch_1: .*{message}")


def test_batch_file_larger_than_any_cifar_batch_is_refused_before_reading(tmp_path, monkeypatch):
    root = evil_batches_dir(tmp_path / "sparse", b"")
    with open(root / "cifar-10-batches-py" / "data_batch_1", "wb") as f:
        f.truncate(16 << 30)  # 16 GiB of nothing (a sparse file): reading it would take 16 GiB of memory
    refused(root, r"data_batch_1: 17,179,869,184 bytes, more than a CIFAR-10 batch can be \(67,108,864\)")
    # the same bound on tarball members (read from the tar header) and on bytes handed over directly
    from cifar_tune.data import safe_pickle

    monkeypatch.setattr(safe_pickle, "MAX_BATCH_BYTES", 1000)
    inner = write_batches_dir(tmp_path / "tar")
    sha = write_tarball(tmp_path / "big.tar.gz", inner)
    with pytest.raises(cifar10.DataError, match="data_batch_1: .* bytes, more than a CIFAR-10 batch can be"):
        cifar10._load_tarball(tmp_path / "big.tar.gz", expected_sha256=sha)
    with pytest.raises(cifar10.DataError, match="more than a CIFAR-10 batch can be"):
        cifar10.restricted_unpickle(bytes(1001))


# --- other inputs ------------------------------------------------------------------------------------------


def test_npy_file_named_npz_is_refused(tmp_path):
    path = tmp_path / "cifar.npz"
    with open(path, "wb") as f:
        np.save(f, np.zeros((10, 32, 32, 3), np.uint8))
    refused(path, "cifar.npz is a single .npy array, not an .npz archive of x_train, y_train, x_test, y_test")


def npz_with_member(path: Path, key: str, header: dict, payload: bytes = b"\0" * 16) -> Path:
    """A real .npz except for member ``key``, whose .npy header says ``header`` over a few bytes."""
    arrays = dict(zip(("x_train", "y_train", "x_test", "y_test"), synthetic_cifar(), strict=True))
    np.savez(path, **{k: v for k, v in arrays.items() if k != key})
    with zipfile.ZipFile(path, "a") as z, z.open(f"{key}.npy", "w") as member:
        np.lib.format.write_array_header_1_0(member, header)
        member.write(payload)
    return path


@pytest.mark.parametrize("shape, message", [
    ((1_000_000_000, 32, 32, 3), (r"x_train claims shape \(1000000000, 32, 32, 3\) of uint8 \(3,072,000,000,000 "
                                  r"bytes\): more than 1,000,000 CIFAR images")),
    ((100_000, 32, 32, 3), (r"x_train claims shape \(100000, 32, 32, 3\) of uint8 \(307,200,000 bytes\) but its "
                            r"archive member holds 144 bytes")),
])
def test_npz_member_claiming_a_huge_shape_is_refused_before_allocating(tmp_path, shape, message):
    path = npz_with_member(tmp_path / "huge.npz", "x_train", {"descr": "|u1", "fortran_order": False,
                                                              "shape": shape})
    refused(path, message)


def test_symlink_loop_as_the_data_path(tmp_path):
    loop = tmp_path / "cifar.npz"
    loop.symlink_to(loop)
    refused(loop, "cannot use data path .*cifar.npz: Too many levels of symbolic links")


def test_fifo_and_devices_are_refused_without_blocking(tmp_path, no_hang):
    fifo = tmp_path / "cifar.npz"
    os.mkfifo(fifo)  # opening it for reading would wait for a writer forever
    refused(fifo, "cifar.npz is not a regular file")
    zero = tmp_path / "cifar-10-python.tgz"
    zero.symlink_to("/dev/zero")  # hashing it would never end
    refused(zero, "cifar-10-python.tgz is not a regular file")
    d = write_batches_dir(tmp_path / "fifo-batch")
    (d / "test_batch").unlink()
    os.mkfifo(d / "test_batch")
    refused(tmp_path / "fifo-batch", "test_batch is not a regular file")


def test_failed_default_download_names_the_local_alternatives(monkeypatch):
    keras = pytest.importorskip("keras")

    def offline():  # keras.utils.get_file raises exactly this bare Exception when the download fails
        raise Exception("URL fetch failure on https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz: "  # noqa: TRY002
                        "None -- [Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(keras.datasets.cifar10, "load_data", offline)
    for source in (None, "keras"):
        with pytest.raises(cifar10.DataError) as e:
            cifar10.load(source)
        message = str(e.value)
        assert "keras.datasets.cifar10 could not download or read CIFAR-10 (URL fetch failure on" in message
        assert "--data PATH or $CIFAR_TUNE_DATA" in message and "\n" not in message


# --- the default validation size -------------------------------------------------------------------------------


@pytest.mark.parametrize("n_train, expected", [(50_000, 5000), (45_000, 4500), (2000, 200), (300, 30), (20, 10),
                                               (99, 10), (80_000, 5000)])
def test_default_val_size_is_a_tenth_between_one_per_class_and_5000(n_train, expected):
    assert cifar10.default_val_size(n_train) == expected


def test_subset_works_without_a_validation_size():
    x_train, y_train, x_test, y_test = synthetic_cifar(2500, 500)
    ds = cifar10.Dataset(x_train, y_train, x_test, y_test, source="synthetic")
    sub = cifar10.subset(ds, 2000)
    split = cifar10.split_validation(sub)  # what --subset 2000 without --val-size does
    assert len(split.y_val) == 200 and len(split.y_train) == 1800
    assert np.bincount(split.y_val, minlength=10).tolist() == [20] * 10
    assert split.description.endswith("val 200 seed 0")
    assert len(cifar10.split_validation(sub, 500).y_val) == 500  # an explicit size still wins
    with pytest.raises(UserError, match="validation size 5000 does not fit 2000"):
        cifar10.split_validation(sub, 5000)
    assert len(cifar10.split_validation(cifar10.subset(ds, 20)).y_val) == 10


def test_tarball_with_a_hostile_member(tmp_path):
    inner = write_batches_dir(tmp_path / "b")
    (inner / "data_batch_4").write_bytes(pickle.dumps({b"data": ROWS, b"labels": np.zeros(N, dtype=object)}))
    sha = write_tarball(tmp_path / "evil.tar.gz", inner)
    with pytest.raises(cifar10.DataError, match=r"evil.tar.gz:cifar-10-batches-py/data_batch_4: refusing dtype 'O8'"):
        cifar10._load_tarball(tmp_path / "evil.tar.gz", expected_sha256=sha)
