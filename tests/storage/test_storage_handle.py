"""One storage per command (``storage.handle``): the default applied once, the URL masked once, and the Optuna
storage opened once per process by every command that reads or writes it."""

from __future__ import annotations

import contextlib
import io

import optuna
import pytest

from cifar_tune import cli
from cifar_tune.choices import DEFAULT_STORAGE
from cifar_tune.errors import UserError
from cifar_tune.storage import handle


@pytest.fixture
def opens(monkeypatch) -> list[str]:
    """The URL of every Optuna ``RDBStorage`` constructed from here on (Optuna's own constructor runs)."""
    seen: list[str] = []
    real = optuna.storages.RDBStorage.__init__

    def counted(self, url, *args, **kwargs):
        seen.append(url)
        real(self, url, *args, **kwargs)

    monkeypatch.setattr(optuna.storages.RDBStorage, "__init__", counted)
    return seen


def run_cli(argv: list[str]) -> int:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli.main(argv)
    assert code == 0, err.getvalue()
    return code


def test_each_command_opens_its_storage_once(tiny_npz, opens):
    small = ["--n-trials", "2", "--epochs", "1", "--val-size", "100", "--data", str(tiny_npz)]
    commands = [
        ["optimize", "--arch", "mlp_l2", *small],  # creates the storage: opened for writing first
        ["compare", "--seeds", "2", "--epochs", "1", "--data", str(tiny_npz), "--out", "cmp"],
        ["report", "--out", "rep"],
        ["studies"],
        # a job on the same storage: its study is complete and compared (a look at the trials left first, then
        # the study loaded for writing, compare's look, the report and the table all through one storage)
        ["run", "--archs", "mlp_l2", "--seeds", "2", *small, "--out", "job"],
        # a new storage: nothing to read before the study creates it
        ["run", "--archs", "mlp_l2", "--seeds", "2", *small, "--out", "job2", "--storage", "sqlite:///other.db"],
    ]
    for argv in commands:
        opens.clear()
        run_cli(argv)
        assert len(opens) == 1, (argv[0], opens)


def test_resolve_applies_the_default_and_passes_a_storage_through():
    store = handle.resolve(None)
    assert store.url == DEFAULT_STORAGE and handle.resolve(store) is store
    secret = handle.resolve("postgresql+psycopg://me:s3cret@db.example/cifar")
    assert "s3cret" not in secret.shown and "s3cret" not in repr(secret) and secret.shown.endswith("/cifar")


def test_a_storage_is_opened_at_its_first_use_and_kept(tmp_path):
    store = handle.resolve(f"sqlite:///{tmp_path}/s.db")
    with pytest.raises(UserError, match="no storage at"):  # a reader creates nothing, and a refusal is not kept
        store.reading()
    assert not (tmp_path / "s.db").exists()
    written = store.writing()
    assert store.reading() is written and store.writing() is written


def test_a_read_only_storage_opened_for_reading_refuses_a_writer_later(tmp_path):
    handle.resolve(f"sqlite:///{tmp_path}/s.db").writing()
    store = handle.resolve(f"sqlite:///{tmp_path}/s.db?mode=ro")
    store.reading()
    with pytest.raises(UserError, match="read-only"):
        store.reading(writes="compare")
    with pytest.raises(UserError, match="read-only"):
        store.writing()
