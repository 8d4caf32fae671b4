"""Shared fixtures: tiny synthetic CIFAR-shaped data that a few epochs can learn, and an isolated working dir."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest

from tests.helpers.data_files import write_batches_dir, write_tarball
from tests.helpers.paths import REPO
from tests.helpers.synthetic import synthetic_cifar

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

pytest_plugins = ("tests.helpers.pg",)  # the PostgreSQL fixtures (pg_cluster, pg_url) for every test module


@pytest.fixture
def tiny_npz(tmp_path: Path) -> Path:
    """A tiny learnable CIFAR-shaped .npz (300 train / 100 test images)."""
    path = tmp_path / "tiny.npz"
    x_train, y_train, x_test, y_test = synthetic_cifar()
    np.savez(path, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    return path


@pytest.fixture(autouse=True, scope="session")
def shared_numerics_cache(tmp_path_factory) -> None:
    """One numerics-check cache for the whole session and its subprocesses (every test has its own storage/):
    each command's worker still checks its architecture, but each is measured once per session, not per test."""
    os.environ.setdefault("CIFAR_TUNE_NUMERICS_DIR", str(tmp_path_factory.mktemp("numerics")))


@pytest.fixture(autouse=True)
def isolated_cwd(tmp_path: Path, monkeypatch) -> Path:
    """Every test runs in its own folder, so the default storage/ never touches the repo; no ambient data."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("CIFAR_TUNE_DATA", raising=False)
    return tmp_path


@pytest.fixture(scope="module")
def short_tmp_dir():
    """A new folder right under the system's temp folder, for Ray's (``$RAY_TMPDIR``): its Unix sockets lie about
    70 characters below it and a socket's path has at most 107 bytes, which pytest's temp folders leave too little
    of under an xdist worker (``/tmp/pytest-of-USER/pytest-N/popen-gw0/...``)."""
    path = Path(tempfile.mkdtemp(prefix="ct-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def real_npz() -> Path:
    """The shared JPEG-derived CIFAR-10 copy as .npz (materialized once into .data/ by .ci/run or by hand)."""
    path = Path(os.environ.get("CIFAR_TUNE_REAL_NPZ", REPO / ".data" / "cifar10.npz"))
    if not path.is_file():
        pytest.skip(f"real data not materialized at {path} (run: python ../shared/cifar10/materialize.py {path})")
    return path


@pytest.fixture
def tiny_batches_dir(tmp_path: Path) -> Path:
    """A tiny ``cifar-10-batches-py/`` folder (the synthetic 300/100 data); returns the folder above it."""
    write_batches_dir(tmp_path / "batches")
    return tmp_path / "batches"


@pytest.fixture
def tiny_tarball(tmp_path: Path, tiny_batches_dir: Path) -> tuple[Path, str]:
    """A tiny ``cifar-10-python.tar.gz`` (not the official file) and its SHA-256."""
    path = tmp_path / "cifar-10-python.tar.gz"
    return path, write_tarball(path, tiny_batches_dir / "cifar-10-batches-py")


class Blocked(BaseException):
    """Raised by ``no_hang``: a BaseException, so that no ``except Exception`` turns it into a one-line error."""


@pytest.fixture
def no_hang():
    """Fail (instead of waiting for ever) when a test blocks for 20 s: opening a FIFO, reading /dev/zero."""
    import signal

    def timeout(*_):
        raise Blocked("blocked for 20 s")

    previous = signal.signal(signal.SIGALRM, timeout)
    signal.alarm(20)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


# --- the order of files (a hint to pytest-xdist) ---------------------------------------------------------------
# Longest files first. pytest-xdist's `--dist loadfile` hands whole files to the workers in order, by default the
# files with most tests first, which can leave a file of one 5-minute test for the end while the other workers
# idle. xdist has no duration-aware order, so this is a scheduling hint only: each file's wall seconds, the second
# step's from CI's run of 1c0d25b (the 20 slowest tests it printed, summed per file), the fast suite's from its run
# on three workers on 2026-12-06 (`CIFAR_TUNE_CPU_LOG`'s per-test wall seconds summed, less the tests since marked
# slow; test_kept_workers.py: CI's run of 1c0d25b); a file in both steps has the larger figure. Other files come
# after, in collection order. A stale figure costs balance, never a test.
FILE_SECONDS = {
    # the second step
    "tests/tuning/test_ray.py": 428, "tests/engines/test_fast_engine.py": 371, "tests/data/test_real_data.py": 212,
    "tests/benchmarks/test_peers.py": 191, "tests/tuning/test_races.py": 128, "tests/engines/test_numerics.py": 103,
    "tests/tuning/test_optimize.py": 97, "tests/benchmarks/test_overhead.py": 96,
    "tests/benchmarks/test_gpu_check.py": 70, "tests/storage/test_postgres.py": 70,
    "tests/test_notebook_memory.py": 66, "tests/test_notebook.py": 60, "tests/runtime/test_gpu_setup.py": 45,
    # the fast suite
    "tests/cli/test_interrupts.py": 171, "tests/comparison/test_compare.py": 143,
    "tests/runtime/test_signals.py": 141, "tests/test_api.py": 95, "tests/storage/test_storage_damage.py": 72,
    "tests/storage/test_side_stores.py": 62, "tests/tuning/test_checkpoints.py": 62, "tests/test_run.py": 36,
    "tests/storage/test_storage_handle.py": 36, "tests/test_progress.py": 36, "tests/runtime/test_gpu_placement.py": 32,
    "tests/storage/test_storage_hardening.py": 31, "tests/test_light_driver.py": 28,
    "tests/tuning/test_kept_workers.py": 28, "tests/tuning/test_resume.py": 22,
}


def pytest_configure(config):
    if hasattr(config.option, "loadscopereorder"):
        config.option.loadscopereorder = False  # keep the order below (xdist would sort files by test count)


def pytest_collection_modifyitems(config, items):
    items.sort(key=lambda item: -FILE_SECONDS.get(item.nodeid.split("::")[0], 0))  # stable: files stay whole


# --- CPU-seconds per test (opt-in: CIFAR_TUNE_CPU_LOG=DIR) -------------------------------------------------------
# Each test's setup + call + teardown: user + system CPU seconds of the pytest process and of the children it reaped
# (its `python -m cifar_tune` subprocesses), one JSON line per test in DIR/<worker>.jsonl; the controller prints the
# 40 largest and the total at the end. Used to find what makes the fast suite slow on a 2-core CPU.
def _cpu_seconds() -> float:
    import resource

    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    log_dir = os.environ.get("CIFAR_TUNE_CPU_LOG")
    if not log_dir:
        yield
        return
    import json
    import time

    cpu, wall = _cpu_seconds(), time.monotonic()
    yield
    record = {"test": item.nodeid, "cpu_s": round(_cpu_seconds() - cpu, 2), "wall_s": round(time.monotonic() - wall, 2)}
    worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
    with open(Path(log_dir) / f"{worker}.jsonl", "a") as f:
        f.write(json.dumps(record) + "\n")


def pytest_terminal_summary(terminalreporter):
    log_dir = os.environ.get("CIFAR_TUNE_CPU_LOG")
    if not log_dir or os.environ.get("PYTEST_XDIST_WORKER"):
        return
    import json

    records = [json.loads(line) for f in sorted(Path(log_dir).glob("*.jsonl")) for line in f.read_text().splitlines()]
    records.sort(key=lambda r: -r["cpu_s"])
    total = sum(r["cpu_s"] for r in records)
    terminalreporter.write_sep("=", f"CPU seconds per test (40 of {len(records)}; total {total:.0f})")
    for r in records[:40]:
        terminalreporter.write_line(f"{r['cpu_s']:8.1f} cpu {r['wall_s']:8.1f} wall  {r['test']}")
