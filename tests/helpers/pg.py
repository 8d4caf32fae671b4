"""A throwaway PostgreSQL server for tests: Debian's binaries, a cluster under /tmp, a local port, a password.

tests/conftest.py loads it as a pytest plugin, so every test module finds the fixtures by name. ``pg_cluster`` (one per
module) runs initdb + pg_ctl as a non-root user (``postgres`` when the tests run as root, as CI does), listens on
127.0.0.1 on a free port with a unix socket in the cluster's /tmp folder, and stops and deletes everything afterwards.
``pg_url`` gives each test a fresh database owned by a password-protected role, as the scaling-out recipe
(docs/scaling.md) creates it, and yields its SQLAlchemy URL. Without the binaries the tests skip with the reason (CI
installs them: .ci/run).
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest

ROLE = "cifar"


def find_bindir() -> Path | None:
    """The folder with initdb and pg_ctl: $CIFAR_TUNE_PG_BIN, Debian's newest /usr/lib/postgresql/*/bin, or PATH."""
    candidates = [os.environ.get("CIFAR_TUNE_PG_BIN", "")]
    candidates += sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(Path(p).parent.name)
                         if Path(p).parent.name.isdigit() else 0, reverse=True)
    on_path = shutil.which("initdb")
    candidates.append(str(Path(on_path).parent) if on_path else "")
    for c in candidates:
        if c and (Path(c) / "initdb").is_file() and (Path(c) / "pg_ctl").is_file():
            return Path(c)
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Cluster:
    """A running throwaway server: connect as the superuser ``ROLE`` with ``password`` on 127.0.0.1:``port``."""

    port: int
    password: str
    root: Path

    def url(self, database: str = "postgres", user: str = ROLE, password: str | None = None,
            host: str = "127.0.0.1", port: int | None = None) -> str:
        return (f"postgresql+psycopg://{user}:{self.password if password is None else password}@{host}:"
                f"{self.port if port is None else port}/{database}")

    def sql(self, *statements: str) -> None:
        """Run statements as the superuser (autocommit: CREATE DATABASE needs it)."""
        import psycopg

        with psycopg.connect(host="127.0.0.1", port=self.port, user=ROLE, password=self.password,
                             dbname="postgres", autocommit=True) as con:
            for s in statements:
                con.execute(s)


def _as_server_user(cmd: list[str]) -> list[str]:
    """PostgreSQL refuses to run as root: run as ``postgres`` (Debian's package creates it) via runuser."""
    if os.geteuid() != 0:
        return cmd
    return ["runuser", "-u", "postgres", "--", *cmd]


class Unavailable(Exception):
    """No PostgreSQL server can be started here; the message says why."""


@contextlib.contextmanager
def throwaway_cluster():
    """Start a PostgreSQL server under /tmp on a free local port; yield its :class:`Cluster`; stop and delete it."""
    bindir = find_bindir()
    if bindir is None:
        raise Unavailable("PostgreSQL server binaries (initdb, pg_ctl) not found: apt-get install postgresql")
    owner = None
    if os.geteuid() == 0:
        try:
            owner = pwd.getpwnam("postgres")
        except KeyError:
            raise Unavailable("running as root without a 'postgres' user to run the server as") from None
        if not shutil.which("runuser"):
            raise Unavailable("running as root without runuser to drop privileges")
    root = Path(tempfile.mkdtemp(prefix="cifar-tune-pg-", dir="/tmp"))
    password = secrets.token_urlsafe(12)
    port = free_port()
    data = root / "data"
    (root / "pw").write_text(password + "\n")
    if owner is not None:
        for p in (root, root / "pw"):
            os.chown(p, owner.pw_uid, owner.pw_gid)
    run = dict(check=True, capture_output=True, text=True, timeout=120)
    started = False
    try:
        try:
            subprocess.run(_as_server_user([str(bindir / "initdb"), "-D", str(data), "-U", ROLE, "--pwfile",
                                            str(root / "pw"), "-A", "scram-sha-256", "--no-sync", "-E", "UTF8"]),
                           **run)
            # fsync off and a small footprint: a test server, thrown away afterwards.
            options = (f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off "
                       "-c synchronous_commit=off -c full_page_writes=off -c max_connections=60 "
                       "-c shared_buffers=32MB")
            subprocess.run(_as_server_user([str(bindir / "pg_ctl"), "-D", str(data), "-l", str(root / "log"),
                                            "-w", "-t", "60", "-o", options, "start"]), **run)
        except subprocess.CalledProcessError as e:
            log = (root / "log").read_text()[-2000:] if (root / "log").exists() else ""
            raise RuntimeError(f"could not start PostgreSQL: {e.stderr}{log}") from None
        started = True
        yield Cluster(port=port, password=password, root=root)
    finally:
        if started:
            subprocess.run(_as_server_user([str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w",
                                            "stop"]), capture_output=True, timeout=60)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def pg_cluster():
    """A PostgreSQL server for this test module (skips, with the reason, where none can be started)."""
    try:
        with throwaway_cluster() as cluster:
            yield cluster
    except Unavailable as e:
        pytest.skip(str(e))


@pytest.fixture
def pg_url(pg_cluster: Cluster) -> str:
    """A fresh database owned by its own password-protected role; yields its postgresql+psycopg URL."""
    return new_database(pg_cluster)


def new_database(cluster: Cluster, name: str | None = None) -> str:
    """Create a database owned by a new password-protected role; its URL."""
    name = name or f"t{secrets.token_hex(4)}"
    password = secrets.token_urlsafe(10)
    cluster.sql(f"CREATE ROLE {name} LOGIN PASSWORD '{password}'", f"CREATE DATABASE {name} OWNER {name}")
    return cluster.url(database=name, user=name, password=password)
