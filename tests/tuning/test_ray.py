"""Workers on a real Ray cluster (``optimize --ray``): two Ray nodes on this machine (``ray.cluster_utils.Cluster``,
each declaring two GPUs: Ray gives each task its own ``CUDA_VISIBLE_DEVICES`` entry without a device), a real
PostgreSQL server (tests/helpers/pg.py), the driver a real ``cifar-tune`` process, the workers Ray's own worker
processes.

The workers take the database password from their node, as on a real cluster: here libpq's ``$PGPASSFILE`` (a
``~/.pgpass``-format file), set before the nodes start, so every Ray process inherits it. Skipped without Ray
(``pip install '.[ray]'``; the ``test`` extra includes it, so CI runs these).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

ray = pytest.importorskip("ray")
from ray.cluster_utils import Cluster  # noqa: E402

pytestmark = [pytest.mark.postgres, pytest.mark.ray]

STUDY = "cifar10-mlp_l2"
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, short_tmp_dir):
    """Two Ray nodes of 2 CPUs and 2 declared GPUs each; their own temp folder (``$RAY_TMPDIR``), whose logs the
    tests search; yields (cluster, the second node, the temp folder, the password file)."""
    root = short_tmp_dir  # short: socket paths
    passfile = tmp_path_factory.mktemp("pgpass") / "pgpass"  # outside the folder searched for the password
    passfile.write_text("")
    passfile.chmod(0o600)  # libpq ignores a password file others can read
    saved = {k: os.environ.get(k) for k in ("RAY_TMPDIR", "PGPASSFILE", "CIFAR_TUNE_ARTIFACTS")}
    # the nodes' processes inherit them (the artifacts folder too: Ray's workers run in the nodes' folder)
    os.environ.update(RAY_TMPDIR=str(root), PGPASSFILE=str(passfile), CIFAR_TUNE_ARTIFACTS=str(root / "artifacts"))
    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 2, "num_gpus": 2})
    second = c.add_node(num_cpus=2, num_gpus=2)
    c.wait_for_nodes()
    try:
        yield c, second, root, passfile
    finally:
        c.shutdown()
        for k, v in saved.items():
            os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)


def split_url(url: str) -> tuple[str, str]:
    """(the URL without its password, the password)."""
    from sqlalchemy.engine import make_url

    u = make_url(url)
    return url.replace(f":{u.password}@", "@"), u.password


def grant(passfile: Path, url: str) -> str:
    """Add the database's line to the nodes' password file; returns the password."""
    from sqlalchemy.engine import make_url

    u = make_url(url)
    with passfile.open("a") as f:
        f.write(f"{u.host}:{u.port}:{u.database}:{u.username}:{u.password}\n")
    return u.password


def optimize(address: str, url: str, data: Path, *args: str, grace: int = 30, **popen) -> subprocess.Popen:
    """The driver: ``cifar-tune optimize --ray ADDRESS``. A long grace period (4 TensorFlow processes starting on 2
    cores delay heartbeats by seconds) unless the test kills a node."""
    cmd = [sys.executable, "-m", "cifar_tune", "optimize", "--arch", "mlp_l2", "--ray", address, "--storage", url,
           "--data", str(data), "--val-size", "100", "--heartbeat-interval", "1", "--grace-period", str(grace),
           *args]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"}, **popen)


def settled(url: str) -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(study_name=STUDY, storage=url).get_trials()


def running(url: str) -> list[optuna.trial.FrozenTrial]:
    """The study's running trials; none while the driver has not created it (read without creating Optuna's
    tables: creating them here would race the driver's creation)."""
    from cifar_tune.errors import UserError
    from cifar_tune.storage.database import storage_for_reading

    try:
        study = optuna.load_study(study_name=STUDY, storage=storage_for_reading(url))
    except (UserError, KeyError):
        return []
    return study.get_trials(states=(TrialState.RUNNING,))


def text_under(folder: Path) -> str:
    """Every file under ``folder`` (Ray's session: logs, its dashboard's and GCS's files), as text."""
    return "\n".join(p.read_bytes().decode("utf-8", "replace") for p in folder.rglob("*")
                     if p.is_file() and not p.is_symlink())


def test_workers_share_the_study_exactly_each_on_its_own_gpu(cluster, pg_url, tiny_npz):
    """4 workers (1 GPU each) over 2 nodes: exactly the total, no duplicate parameters or numbers, every trial
    with its node and GPU, and no two workers on the same (node, GPU); the password is nowhere in Ray."""
    c, _, root, passfile = cluster
    password = grant(passfile, pg_url)
    bare, _ = split_url(pg_url)
    total, start = 10, time.monotonic()
    proc = optimize(c.address, bare, tiny_npz, "--workers", "4", "--total-trials", str(total), "--epochs", "1")
    out, _ = proc.communicate(timeout=400)
    took = time.monotonic() - start
    assert proc.returncode == 0, out[-4000:]
    trials = settled(pg_url)
    reasons = [t.user_attrs.get("fail_reason") for t in trials if t.state not in FINISHED]
    assert len(trials) == total and not reasons, (reasons, out[-3000:])
    assert sorted(t.number for t in trials) == list(range(total))
    assert len({tuple(sorted(t.params.items())) for t in trials}) == total  # no configuration twice
    placed = {}
    for t in trials:
        node, gpu, worker = t.user_attrs.get("node"), t.user_attrs.get("gpu"), t.user_attrs["worker"]
        assert node and gpu in ("0", "1"), t.user_attrs
        placed.setdefault(worker, set()).add((node, gpu))
    pairs = [p for ps in placed.values() for p in ps]
    assert all(len(ps) == 1 for ps in placed.values()) and len(pairs) == len(set(pairs)), placed
    assert len(placed) >= 2, placed
    assert "Ray cluster" in out and "4 workers" in out and "trial   9" in out  # workers' lines reach the driver
    # The password: not in any task's arguments, the dashboard's task and job lists, or any file Ray wrote.
    from ray.util.state import list_jobs, list_tasks

    shown = str(list_tasks(address=c.address, detail=True, limit=1000)) + str(list_jobs(address=c.address))
    assert "ray_worker" in shown and password not in shown
    assert password not in text_under(root) and password not in out
    print(f"\n[ray] 4 workers, 2 nodes, {total} trials of 1 epoch: {took:.0f} s (driver start to end)")


@pytest.mark.parametrize("args, says", [
    (["--workers", "2"], "--workers counts a Ray cluster's workers"),
    (["--ray", "auto", "--jobs", "2"], "with --ray, Ray places them"),
    (["--ray", "auto"], "not a SQLite file"),
    (["--ray", "auto", "--workers", "0"], "--workers: must be an integer in 1..1024"),
])
def test_ray_flags_that_do_not_fit_are_refused_in_one_line(args, says, tiny_npz, tmp_path, capsys):
    from cifar_tune import cli

    code = cli.main(["optimize", "--arch", "mlp_l2", "--data", str(tiny_npz), *args])
    err = capsys.readouterr().err
    assert code == 2 and says in err and err.count("\n") == 1, err
    assert not (tmp_path / "storage").exists()  # nothing stored


def test_a_password_on_the_command_line_is_refused_before_anything_is_stored(cluster, pg_url, tiny_npz):
    c, *_ = cluster
    proc = optimize(c.address, pg_url, tiny_npz, "--workers", "1", "--n-trials", "1")
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 2 and out.strip().count("\n") == 0, out
    assert "PGPASSWORD" in out and split_url(pg_url)[1] not in out
    assert optuna.get_all_study_names(pg_url) == []


def test_a_node_lost_mid_study_ends_with_the_study_complete(cluster, pg_url, tiny_npz):
    """SIGKILL the second node's raylet while its workers run trials: Ray runs their tasks again on the head
    node, the dead workers' trials are failed after the grace period and retried; the study ends with its total,
    nothing RUNNING. (Runs last: the second node stays dead.)"""
    c, second, _, passfile = cluster
    grant(passfile, pg_url)
    bare, _ = split_url(pg_url)
    total, start = 8, time.monotonic()
    proc = optimize(c.address, bare, tiny_npz, "--workers", "4", "--total-trials", str(total), "--epochs", "15",
                    grace=8)
    victim = second.node_id
    try:
        while time.monotonic() - start < 300:  # wait for a trial running on the second node
            if any(t.user_attrs.get("node") == victim and t.user_attrs.get("epochs_run") for t in running(pg_url)):
                break
            time.sleep(0.3)
        else:
            pytest.fail("no trial ran on the second node")
        second.kill_raylet()
        killed = time.monotonic() - start
        out, _ = proc.communicate(timeout=400)
    finally:
        proc.kill()
    took = time.monotonic() - start
    assert proc.returncode == 0, out[-4000:]
    trials = settled(pg_url)
    assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    lost = [t for t in trials if t.state == TrialState.FAIL and t.user_attrs.get("node") == victim]
    retries = [t for t in trials if t.user_attrs.get("retry_of") is not None]
    assert lost and {t.user_attrs["retry_of"] for t in retries} >= {t.number for t in lost}, out[-3000:]
    assert all(t.state in FINISHED for t in retries)
    counted = [t for t in trials if t.number not in {r.user_attrs["retry_of"] for r in retries}]
    assert len(counted) == total and all(t.state in FINISHED for t in counted)
    print(f"\n[ray] node killed at {killed:.0f} s; {len(lost)} trial(s) lost and retried; study of {total} done "
          f"at {took:.0f} s")
