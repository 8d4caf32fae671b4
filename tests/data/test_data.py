"""Data sources (.npz, cifar-10-batches-py/, tarball, $CIFAR_TUNE_DATA), validation, the restricted unpickler,
stratified seeded subsets and splits: all on tiny files the tests build themselves."""

from __future__ import annotations

import builtins
import os
import pickle
import subprocess
from pathlib import Path

import numpy as np
import pytest

from cifar_tune.data import cifar10
from cifar_tune.errors import UserError
from tests.helpers.data_files import write_batches_dir, write_tarball
from tests.helpers.synthetic import synthetic_cifar


def save_npz(path: Path, **arrays) -> Path:
    base = dict(zip(("x_train", "y_train", "x_test", "y_test"), synthetic_cifar(), strict=True))
    base.update(arrays)
    np.savez(path, **{k: v for k, v in base.items() if v is not None})
    return path


def assert_same_as_synthetic(ds: cifar10.Dataset) -> None:
    x_train, y_train, x_test, y_test = synthetic_cifar()
    for got, want in ((ds.x_train, x_train), (ds.y_train, y_train), (ds.x_test, x_test), (ds.y_test, y_test)):
        assert got.dtype == np.uint8
        np.testing.assert_array_equal(got, want)


class _CallOnLoad:
    """Pickles as ``func(*args)``: what a hostile pickle does to run code on load."""

    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


def hostile_pickles(marker: Path) -> dict[str, bytes]:
    """Pickles that would create ``marker`` if anything but numpy array reconstruction were allowed."""
    batch = {b"labels": [0, 1], b"data": _CallOnLoad(os.system, f"touch {marker}")}
    return {
        "os.system": pickle.dumps(_CallOnLoad(os.system, f"touch {marker}")),
        "builtins.exec": pickle.dumps(_CallOnLoad(builtins.exec, f"open({str(marker)!r}, 'w').close()")),
        "builtins.eval": pickle.dumps(_CallOnLoad(builtins.eval, f"open({str(marker)!r}, 'w')")),
        "subprocess.Popen": pickle.dumps(_CallOnLoad(subprocess.Popen, ["touch", str(marker)])),
        "numpy.save": pickle.dumps(_CallOnLoad(np.save, str(marker), np.zeros(1))),
        "inside a batch, protocol 2": pickle.dumps(batch, protocol=2),
        "inside a batch, protocol 5": pickle.dumps(batch, protocol=5),
    }


# --- .npz ----------------------------------------------------------------------------------------------------


def test_npz_loads_validated_uint8_arrays(tiny_npz):
    ds = cifar10.load(tiny_npz)
    assert ds.x_train.shape == (300, 32, 32, 3) and ds.x_test.shape == (100, 32, 32, 3)
    assert ds.y_train.shape == (300,) and ds.y_test.shape == (100,)
    assert ds.source == str(tiny_npz)
    assert_same_as_synthetic(ds)


def test_npz_accepts_keras_style_column_labels_of_any_integer_type(tmp_path):
    x_train, y_train, x_test, y_test = synthetic_cifar()
    path = save_npz(tmp_path / "col.npz", y_train=y_train.reshape(-1, 1).astype(np.int64),
                    y_test=y_test.reshape(-1, 1).astype(np.int32))
    ds = cifar10.load(path)
    assert ds.y_train.shape == (300,) and ds.y_train.dtype == np.uint8
    np.testing.assert_array_equal(ds.y_train, y_train)


@pytest.mark.parametrize("arrays, message", [
    ({"x_test": None}, "missing arrays x_test"),
    ({"x_train": np.zeros((10, 32, 32), np.uint8)}, "x_train has shape (10, 32, 32)"),
    ({"x_test": np.zeros((10, 3, 32, 32), np.uint8)}, "x_test has shape (10, 3, 32, 32)"),
    ({"x_train": np.zeros((0, 32, 32, 3), np.uint8), "y_train": np.zeros(0, np.uint8)}, "x_train has shape (0,"),
    ({"x_train": np.zeros((300, 32, 32, 3), np.float32)}, "x_train has dtype float32"),
    ({"y_train": np.zeros(299, np.uint8)}, "y_train has shape (299,)"),
    ({"y_test": np.zeros((100, 2), np.uint8)}, "y_test has shape (100, 2)"),
    ({"y_train": np.full(300, 0.5)}, "y_train has dtype float64"),
    ({"y_train": np.arange(300) % 11}, "labels in 0..10"),
    ({"y_test": np.arange(100) % 10 - 1}, "labels in -1..8"),
])
def test_npz_with_wrong_contents_is_refused_by_name(tmp_path, arrays, message):
    path = save_npz(tmp_path / "bad.npz", **arrays)
    with pytest.raises(cifar10.DataError) as e:
        cifar10.load(path)
    assert message in str(e.value)
    assert str(path) in str(e.value)


def test_npz_holding_pickled_objects_is_refused(tmp_path):
    path = save_npz(tmp_path / "objects.npz", y_train=np.array([{"a": 1}] * 300, dtype=object))
    with pytest.raises(cifar10.DataError, match="cannot read"):
        cifar10.load(path)


def test_garbage_npz_and_unknown_suffix_and_missing_path(tmp_path, tiny_npz):
    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"this is not a zip file at all")
    with pytest.raises(cifar10.DataError, match=r"cannot read .*garbage\.npz"):
        cifar10.load(garbage)
    whole = tiny_npz.read_bytes()
    for name, blob in (("cut.npz", whole[: len(whole) // 2]), ("flipped.npz", whole[:5000] + b"\0" + whole[5001:])):
        (tmp_path / name).write_bytes(blob)  # a zip cut short, a zip with a damaged member
        with pytest.raises(cifar10.DataError, match=f"cannot read .*{name}"):
            cifar10.load(tmp_path / name)
    other = tmp_path / "cifar.csv"
    other.write_text("1,2,3\n")
    with pytest.raises(cifar10.DataError, match="unsupported data file"):
        cifar10.load(other)
    with pytest.raises(cifar10.DataError, match="data path not found"):
        cifar10.load(tmp_path / "nope.npz")


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their permissions")
def test_unreadable_file_is_a_data_error(tiny_npz):
    tiny_npz.chmod(0)
    with pytest.raises(cifar10.DataError, match="permission denied"):
        cifar10.load(tiny_npz)


# --- cifar-10-batches-py/ ------------------------------------------------------------------------------------


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_batches_dir_in_official_layout(tmp_path, protocol):
    parent = tmp_path / "extracted"
    inner = write_batches_dir(parent, protocol=protocol)
    for path in (parent, inner):  # the folder above cifar-10-batches-py/ or the folder itself
        ds = cifar10.load(path)
        assert_same_as_synthetic(ds)  # rows of 1024 R, 1024 G, 1024 B map back to (32, 32, 3) exactly


def test_batches_dir_without_layout_or_with_a_file_missing(tmp_path, tiny_batches_dir):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(cifar10.DataError, match="no cifar-10-batches-py/ layout"):
        cifar10.load(empty)
    (tiny_batches_dir / "cifar-10-batches-py" / "test_batch").unlink()
    with pytest.raises(cifar10.DataError, match="missing test_batch"):
        cifar10.load(tiny_batches_dir)


def test_batch_with_wrong_row_length_or_labels_is_refused(tmp_path):
    x_train, y_train, x_test, y_test = synthetic_cifar()
    d = write_batches_dir(tmp_path / "b")
    (d / "data_batch_3").write_bytes(pickle.dumps({b"data": np.zeros((60, 3000), np.uint8), b"labels": [0] * 60}))
    with pytest.raises(cifar10.DataError, match=r"uint8 array \(N, 3072\), not an array of shape \(60, 3000\)"):
        cifar10.load(tmp_path / "b")
    d = write_batches_dir(tmp_path / "c", arrays=(x_train, y_train, x_test, (y_test + 5)))
    with pytest.raises(cifar10.DataError, match="y_test has labels in 5..14"):
        cifar10.load(tmp_path / "c")
    (d / "data_batch_1").write_bytes(pickle.dumps({b"labels": [0]}))
    with pytest.raises(cifar10.DataError, match="lacks its 'data' or 'labels'"):
        cifar10.load(tmp_path / "c")


# --- the restricted unpickler --------------------------------------------------------------------------------


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
def test_restricted_unpickler_reads_numpy_batches(protocol):
    rows = np.arange(2 * 3072).reshape(2, 3072).astype(np.uint8)
    got = cifar10.restricted_unpickle(pickle.dumps({b"data": rows, b"labels": [3, 7]}, protocol=protocol))
    np.testing.assert_array_equal(got[b"data"], rows)
    assert got[b"labels"] == [3, 7]


def test_restricted_unpickler_refuses_code_and_runs_nothing(tmp_path):
    marker = tmp_path / "pwned"
    for name, blob in hostile_pickles(marker).items():
        with pytest.raises(cifar10.DataError, match="refusing to unpickle") as e:
            cifar10.restricted_unpickle(blob, where=name)
        assert "only numpy arrays are allowed" in str(e.value)
        assert not marker.exists(), f"{name} ran code"
    with pytest.raises(cifar10.DataError, match="garbage.pkl: "):
        cifar10.restricted_unpickle(b"\x80\x04garbage", where="garbage.pkl")
    with pytest.raises(cifar10.DataError, match="cut.pkl: .*truncated"):
        cifar10.restricted_unpickle(pickle.dumps({b"data": np.zeros(5)})[:-10], where="cut.pkl")


def test_hostile_pickle_in_a_batches_dir_is_refused_by_load(tmp_path):
    marker = tmp_path / "pwned"
    d = write_batches_dir(tmp_path / "evil")
    (d / "data_batch_2").write_bytes(hostile_pickles(marker)["inside a batch, protocol 2"])
    with pytest.raises(cifar10.DataError, match=r"data_batch_2: refusing to unpickle posix\.system"):
        cifar10.load(tmp_path / "evil")
    assert not marker.exists()


# --- the tarball ---------------------------------------------------------------------------------------------


def test_tarball_with_its_hash_loads_in_memory(tiny_tarball, tmp_path):
    path, sha = tiny_tarball
    before = sorted(tmp_path.rglob("*"))
    arrays = cifar10._load_tarball(path, expected_sha256=sha)
    assert_same_as_synthetic(cifar10._validated(*arrays, source=str(path)))
    assert sorted(tmp_path.rglob("*")) == before  # read in memory: nothing extracted


def test_load_refuses_a_tarball_that_is_not_the_official_archive(tiny_tarball):
    path, sha = tiny_tarball
    with pytest.raises(cifar10.DataError) as e:
        cifar10.load(path)
    message = str(e.value)
    assert "is not the official cifar-10-python.tar.gz" in message
    assert sha[:12] in message and cifar10.OFFICIAL_TARBALL_SHA256[:12] in message
    other = path.with_name("other.tgz")
    other.write_bytes(b"not even gzip")
    with pytest.raises(cifar10.DataError, match="not the official"):
        cifar10.load(other)


def test_tarball_lacking_batches_or_carrying_a_hostile_pickle(tmp_path, tiny_batches_dir):
    inner = tiny_batches_dir / "cifar-10-batches-py"
    (inner / "data_batch_5").unlink()
    sha = write_tarball(tmp_path / "short.tar.gz", inner)
    with pytest.raises(cifar10.DataError, match="archive lacks data_batch_5"):
        cifar10._load_tarball(tmp_path / "short.tar.gz", expected_sha256=sha)
    marker = tmp_path / "pwned"
    (inner / "data_batch_5").write_bytes(hostile_pickles(marker)["os.system"])
    sha = write_tarball(tmp_path / "evil.tar.gz", inner)
    with pytest.raises(cifar10.DataError, match="refusing to unpickle"):
        cifar10._load_tarball(tmp_path / "evil.tar.gz", expected_sha256=sha)
    assert not marker.exists()


# --- choosing the source -------------------------------------------------------------------------------------


def test_environment_variable_chooses_the_source_and_an_explicit_path_wins(tmp_path, tiny_npz, monkeypatch,
                                                                           tiny_batches_dir):
    monkeypatch.setenv(cifar10.ENV_VAR, str(tiny_npz))
    assert cifar10.load().source == str(tiny_npz)
    assert cifar10.load(tiny_batches_dir).source == str(tiny_batches_dir)
    monkeypatch.setenv(cifar10.ENV_VAR, str(tmp_path / "gone.npz"))
    with pytest.raises(cifar10.DataError, match="gone.npz"):
        cifar10.load()


# --- subsets and splits --------------------------------------------------------------------------------------


def class_counts(y: np.ndarray) -> np.ndarray:
    return np.bincount(y, minlength=10)


def test_subset_is_stratified_seeded_and_scales_the_test_set(tiny_npz):
    ds = cifar10.load(tiny_npz)
    sub = cifar10.subset(ds, 100, seed=1)
    assert len(sub.y_train) == 100 and len(sub.y_test) == 33  # test scaled alike: 100 * 100/300
    assert class_counts(sub.y_train).tolist() == [10] * 10
    assert class_counts(sub.y_test).max() - class_counts(sub.y_test).min() <= 1
    again, other = cifar10.subset(ds, 100, seed=1), cifar10.subset(ds, 100, seed=2)
    np.testing.assert_array_equal(sub.x_train, again.x_train)
    assert not np.array_equal(sub.x_train, other.x_train)
    assert "subset 100/33, seed 1" in sub.source
    # a subset's images are the source's images (with their own labels), not copies with shuffled labels
    rows = {ds.x_train[i].tobytes(): ds.y_train[i] for i in range(len(ds.y_train))}
    assert all(rows[x.tobytes()] == y for x, y in zip(sub.x_train, sub.y_train, strict=True))
    full = cifar10.subset(ds, 300)
    np.testing.assert_array_equal(full.x_train, ds.x_train)
    assert len(full.y_test) == 100


@pytest.mark.parametrize("n, message", [(19, "at least 20"), (301, "exceeds the 300"),
                                        (295, "cannot draw a stratified sample of 5 of 300")])
def test_subset_sizes_that_do_not_work_are_user_errors(tiny_npz, n, message):
    ds = cifar10.load(tiny_npz)
    with pytest.raises(UserError, match=message.replace("5 of", r"\d+ of")):
        cifar10.subset(ds, n)


def test_load_for_run_takes_the_subset(tiny_npz):
    assert len(cifar10.load_for_run(str(tiny_npz), None).y_train) == 300
    assert len(cifar10.load_for_run(str(tiny_npz), 50, seed=3).y_train) == 50


def test_validation_split_is_stratified_seeded_and_disjoint(tiny_npz):
    ds = cifar10.load(tiny_npz)
    split = cifar10.split_validation(ds, 50, seed=0)
    assert len(split.y_val) == 50 and len(split.y_train) == 250
    assert class_counts(split.y_val).tolist() == [5] * 10
    assert class_counts(split.y_train).tolist() == [25] * 10
    seen = {x.tobytes() for x in split.x_train}
    assert not any(x.tobytes() in seen for x in split.x_val)
    assert seen | {x.tobytes() for x in split.x_val} == {x.tobytes() for x in ds.x_train}
    np.testing.assert_array_equal(cifar10.split_validation(ds, 50, seed=0).x_val, split.x_val)
    assert not np.array_equal(cifar10.split_validation(ds, 50, seed=1).x_val, split.x_val)
    assert f"data {ds.fingerprint()} val 50 seed 0" == split.description


def test_validation_split_errors_and_test_as_validation(tiny_npz):
    ds = cifar10.load(tiny_npz)
    for bad in (5, 291, 5000):
        with pytest.raises(UserError, match=f"validation size {bad} does not fit 300 training images"):
            cifar10.split_validation(ds, bad)
    y = ds.y_train.copy()
    y[y == 9] = 8
    y[0] = 9  # a class with one image cannot be stratified
    lonely = cifar10.Dataset(ds.x_train, y, ds.x_test, ds.y_test, source="lonely")
    with pytest.raises(UserError, match="cannot carve a stratified validation set"):
        cifar10.split_validation(lonely, 50)
    seed_split = cifar10.test_as_validation(ds)
    assert seed_split.x_val is ds.x_test and seed_split.x_train is ds.x_train
    assert seed_split.description.endswith("val=test")


def test_fingerprint_identifies_the_data(tiny_npz):
    ds = cifar10.load(tiny_npz)
    assert ds.fingerprint() == cifar10.load(tiny_npz).fingerprint()
    assert ds.fingerprint() != cifar10.subset(ds, 100).fingerprint()
