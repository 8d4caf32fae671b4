"""Workers on a Ray cluster (``optimize --ray ADDRESS``, ``run --ray``): Ray places them, the study's storage
coordinates them. Ray is an optional extra (``pip install 'cifar-tune[ray]'``), imported only here and only then.

Ray Core is the cluster's executor and nothing more. Each worker is a Ray task with one CPU and ``1/K`` of a GPU
(K = ``--jobs-per-gpu``, default 1; no GPU on a cluster that has none), running the one worker entry
``entry.run_job`` (the same as ``python -m cifar_tune.cli.worker``) in a fresh process (``max_calls=1``: Keras's
TensorFlow trainer does not give all memory back between trials). Ray sets each task's ``CUDA_VISIBLE_DEVICES``,
which every trial records (``TrialRecord.gpu``) beside its Ray node (``TrialRecord.node``). The trials are
counted by the study, as when many machines share it: a study-wide total (``--total-trials``; ``--n-trials N``
becomes "N more than the study holds now"), checked under the study lock before each trial is created
(``loop.run_until_total``), so W workers together run exactly that many, none twice.

This process, the driver, trains nothing: the one loop above every executor (``supervisor.supervise``, here over
``RayTasks``) creates the study (the baseline queued first), keeps ``workers`` tasks in flight while trials are
left, fails the trials of dead workers (``fail_stale_trials``), and ends when every trial has finished. A worker
whose node dies: Ray runs its task again on a node still alive (``max_retries``), and the trial it was running
stops beating, is failed after the grace period and retried once by whichever worker asks next. A worker that fails
in a way that would repeat (its task raised: cifar-tune not importable on the node, a bug) is not replaced: the run
stops with its cause in one line (``ClusterError``). The address must answer within ``CONNECT_TIMEOUT`` seconds
(``answers``: ray.init has no connect timeout of its own). The workers' lines reach this terminal through Ray's log
forwarding (Ray prefixes each with the task and its node).

The storage's password never travels through Ray: the job a task gets holds the storage URL without it (Ray keeps
task arguments in its object store and its dashboard lists tasks), and each worker connects with the password of
its node, through libpq's own ``$PGPASSWORD`` or ``~/.pgpass``. A password typed on the command line is refused:
Ray's dashboard lists each driver with its command line.
"""

from __future__ import annotations

import contextlib
import logging
import re
import socket
import sys
import time
from dataclasses import dataclass, field
from typing import Any

from cifar_tune import progress, runtime
from cifar_tune.errors import ClusterError, UserError
from cifar_tune.runtime import devices
from cifar_tune.storage import handle, urls
from cifar_tune.studies.presets import OptimizeSettings
from cifar_tune.text import count
from cifar_tune.tuning.entry import OK, ray_worker
from cifar_tune.tuning.executors import STOP_GRACE, Ended
from cifar_tune.tuning.supervisor import supervise

MAX_RETRIES = 3  # Ray runs a lost worker's task (its node died, or its process) again this many times
MAX_LOST = 3  # workers in a row lost for good (Ray's retries spent): give up, the cause would repeat
CONNECT_TIMEOUT = 10.0  # seconds the cluster's address has to answer before ray.init is tried


def run_on_ray(settings: OptimizeSettings, storage: handle.Storage | None = None) -> tuple[int, str]:
    """Run the study's trials on the Ray cluster at ``settings.ray`` until the study holds its total
    (``supervisor.supervise`` over ``RayTasks``); returns the exit status (0, or a worker's: 2 for a user error or a
    failed storage) and which limit ended the run. ``storage``: the command's
    (default: the settings', ``study.storage_of``); each task opens its own from the URL.

    Raises ``UserError`` before anything is stored when Ray is not installed or the storage's password is on this
    process's command line; ``ClusterError`` (one line) before anything is stored when nothing answers at the
    address within ``CONNECT_TIMEOUT`` seconds, and once the workers were cancelled when they cannot run the study
    (an error that would repeat on every worker, such as cifar-tune not importable on the nodes: not retried) or
    ``MAX_LOST`` in a row were lost; KeyboardInterrupt after Ctrl-C or SIGTERM, once the workers were cancelled
    (each fails its running trial)."""
    ray, connected = connect(settings)
    try:
        return _run(ray, settings, storage)
    finally:
        if connected:
            ray.shutdown()


def connect(settings: OptimizeSettings):
    """Ray, connected to ``settings.ray`` (a connection this process holds already is used as it is); returns
    (the ``ray`` module, whether this call connected). Raises ``UserError``."""
    secrets = passwords(settings.storage)
    if secrets and any(s in arg for s in (*secrets, settings.storage) for arg in sys.orig_argv):
        raise UserError("with --ray, give the storage URL without its password, and set PGPASSWORD (or a "
                        "~/.pgpass line) here and on every node of the cluster: Ray's dashboard lists this "
                        "command's line, the password with it")
    try:
        import ray
    except ImportError:
        raise UserError("--ray needs Ray here and on the cluster: pip install 'cifar-tune[ray]'") from None
    if ray.is_initialized():
        return ray, False
    answers(settings.ray)
    try:
        ray.init(address=settings.ray, logging_level=logging.WARNING)
    except (ConnectionError, ValueError, RuntimeError, TimeoutError) as e:
        raise ClusterError(f"cannot connect to the Ray cluster at {settings.ray}: {e}") from None
    return ray, True


def answers(address: str, timeout: float | None = None) -> None:
    """Wait up to ``timeout`` seconds (default ``CONNECT_TIMEOUT``) for the cluster's address to accept a TCP
    connection (its GCS port, or Ray Client's for ``ray://``); raises ``ClusterError`` naming the address and the
    timeout, or KeyboardInterrupt at once after Ctrl-C. ``local`` (a Ray started here) is not checked; ``auto`` is
    checked where Ray finds an address.

    Why not ray.init alone: ray.init has no connect timeout. Against an address where nothing listens, Ray's GCS
    client retries for minutes (20 tries of 5 s connects and 30 s waits, only its own warnings meanwhile) inside
    native code that does not see Ctrl-C; its knobs (``RAY_gcs_rpc_server_connect_timeout_s``,
    ``RAY_NUM_REDIS_GET_RETRIES``) are internal settings that would also govern the rest of the run."""
    target = _host_port(address)
    if target is None:
        return
    timeout = CONNECT_TIMEOUT if timeout is None else timeout
    where = "" if f"{target[0]}:{target[1]}" == address else f" at {target[0]}:{target[1]}"
    deadline, last = time.monotonic() + timeout, None
    while True:
        runtime.raise_if_stopping()  # Ctrl-C while waiting: at once, not after the timeout
        try:
            socket.create_connection(target, timeout=min(1.0, timeout)).close()
            return
        except OSError as e:
            last = e.strerror or type(e).__name__
        if time.monotonic() >= deadline:
            raise ClusterError(f"cannot connect to the Ray cluster at {address}: nothing answered{where} "
                               f"within {timeout:g} s ({last}); is its head node "
                               "started (ray start --head) and the address right?")
        time.sleep(0.25)


def _host_port(address: str) -> tuple[str, int] | None:
    """(host, port) that ``address`` connects to: ``host:port`` (the GCS), ``ray://host[:port]`` (Ray Client,
    port 10001 by default), ``auto`` as Ray resolves it ($RAY_ADDRESS or the cluster started on this machine);
    None for ``local``, and where Ray will say itself that it finds nothing."""
    if address == "auto":
        try:
            from ray._private.services import canonicalize_bootstrap_address

            address = canonicalize_bootstrap_address(address) or ""
        except Exception:  # no running cluster found, or Ray moved its helper: ray.init says what it finds
            return None
    client = address.startswith("ray://")
    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if not sep or not port.isdigit():
        host, port = (address.removeprefix("ray://"), "10001") if client else ("", "")
    return (host.strip("[]"), int(port)) if host and port else None


def passwords(url: str) -> list[str]:
    """The passwords a storage URL holds (user part, ``?password=``): none, one or two."""
    try:
        u = urls.parse(url)
    except Exception:  # unparsable: make_settings refused it already
        return []
    return [str(p) for p in (u.password, u.query.get("password")) if p]


def without_password(url: str) -> str:
    """``url`` without its password (user part and ``?password=``): what travels to the workers, which take the
    password from their node (libpq's ``$PGPASSWORD`` or ``~/.pgpass``)."""
    from sqlalchemy.engine import URL

    u = urls.parse(url).difference_update_query(["password"])  # URL.set(password=None) would keep it ("unchanged")
    return URL.create(u.drivername, u.username, None, u.host, u.port, u.database,
                      u.query).render_as_string(hide_password=False)


def placement(settings: OptimizeSettings, resources: dict, nodes: int) -> tuple[int, float]:
    """(workers, GPUs each worker asks Ray for): ``--workers``, else ``--jobs-per-gpu`` (default 1) per GPU of the
    cluster (``resources``: ``ray.cluster_resources()``), else one per node (``nodes``) of a cluster without GPUs;
    each asks for ``1/jobs_per_gpu`` of a GPU, or none without GPUs."""
    per_gpu, cluster_gpus = settings.jobs_per_gpu or 1, int(resources.get("GPU", 0))
    workers = settings.workers or (cluster_gpus * per_gpu if cluster_gpus else max(1, nodes))
    return workers, (round(1 / per_gpu, 4) if cluster_gpus else 0.0)


def failure(e: Exception) -> tuple[str, bool]:
    """What a worker that ended with ``e`` (a Ray error from ``ray.get``) died of, as one line
    (``ModuleNotFoundError: No module named 'cifar_tune'``), and whether it would repeat: a ``RayTaskError`` (the
    task raised, or its function or arguments could not be loaded in the worker: an import error) repeats on every
    worker and is not retried; a lost worker (its process or node died: Ray retried it already) may not."""
    import ray

    cause = getattr(e, "cause", None)
    inner = getattr(cause, "client_exc", None)  # RaySystemError: the exception that unpickling raised
    if isinstance(inner, BaseException):
        line = f"{type(inner).__name__}: {inner}"
    else:  # the exception's last line in the worker's traceback, which Ray's text carries
        text = re.sub(r"\x1b\[[0-9;]*m", "", str(e))
        found = [m[0] for raw in text.splitlines() if (m := _EXCEPTION_LINE.match(raw.strip()))]
        line = found[-1] if found else f"{type(cause or e).__name__}: {str(cause or e).strip()}"
    return line.splitlines()[0][:300], isinstance(e, ray.exceptions.RayTaskError)


_EXCEPTION_LINE = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Exit|Interrupt): .+")


def _run(ray, settings: OptimizeSettings, storage: handle.Storage | None) -> tuple[int, str]:
    nodes = sum(1 for n in ray.nodes() if n.get("Alive"))
    workers, share = placement(settings, ray.cluster_resources(), nodes)
    cluster = (f"Ray cluster {settings.ray}: {count(nodes, 'node')}; {count(workers, 'worker')}, each 1 CPU"
               + (f" and {share:g} GPU" if share else ", no GPU") + ", placed by Ray")
    return supervise(settings, RayTasks(ray, settings, workers, share, cluster), storage, study_wide=True)


@dataclass
class RayTasks:
    """The executor of a Ray cluster (``executors.py``): a Ray task per slot running the one worker entry
    (``entry.ray_worker``) in a fresh Ray worker process, ``workers`` at a time, each with ``share`` of a GPU;
    ``pending``: Ray object ref -> slot. ``cluster``: the line said before the first task starts."""

    ray: Any
    settings: OptimizeSettings
    slots: int
    share: float
    cluster: str
    pending: dict = field(default_factory=dict)
    lost_in_a_row: int = 0
    remote: Any = None
    trains_here = False
    gpus = ()

    def start(self, slot: int, job: dict) -> None:
        """A task for ``job``: its settings with the storage URL without its password, and no cluster of its own."""
        if self.remote is None:
            progress.info(self.cluster)
            self.remote = self.ray.remote(num_cpus=1, num_gpus=self.share, max_calls=1,
                                          max_retries=MAX_RETRIES)(ray_worker)
            self.reporter = shippable(progress.current())
            self.env = devices.memory_share_env(round(1 / self.share) if self.share else 1)
        settings = {**job["settings"], "storage": without_password(self.settings.storage), "ray": None,
                    "workers": None}
        self.pending[self.remote.remote({**job, "settings": settings}, self.reporter, self.env)] = slot
        return None

    def poll(self, timeout: float) -> list[Ended]:
        """The tasks that ended within ``timeout`` seconds (``ray.wait`` returns at the first)."""
        if not self.pending:
            time.sleep(timeout)
            return []
        ready, _ = self.ray.wait(list(self.pending), num_returns=1, timeout=timeout)
        if ready:  # and every other one that ended meanwhile
            ready, _ = self.ray.wait(list(self.pending), num_returns=len(self.pending), timeout=0)
        ended = []
        for ref in ready:
            slot = self.pending.pop(ref)
            try:
                status = self.ray.get(ref)
            except self.ray.exceptions.RayError as e:
                ended.append(self.lost(slot, e))
                continue
            self.lost_in_a_row = 0
            death = None if status == OK else f"Ray worker {slot} exited with status {status}"
            ended.append(Ended(slot, status, death))
        return ended

    def lost(self, slot: int, e: Exception) -> Ended:
        """A task that ended with a Ray error: one that would repeat (``failure``) stops the run at once, with its
        cause (``Ended.fatal``); a lost one (Ray's retries spent) is replaced, up to ``MAX_LOST`` in a row."""
        cause, repeats = failure(e)
        node = f" on {e.ip}" if getattr(e, "ip", None) else ""
        if repeats:
            hint = ("; install cifar-tune on every node of the cluster (pip install 'cifar-tune[ray]', in the "
                    "environment its `ray start` runs in)" if cause.startswith(("ModuleNotFoundError", "ImportError"))
                    else "")
            return Ended(slot, 1, fatal=ClusterError(
                f"the Ray workers cannot run the study ({self.settings.ray}): worker {slot} failed{node} with "
                f"{cause}{hint}; not retried, it would fail the same way"))
        self.lost_in_a_row += 1
        death = f"Ray worker {slot} was lost{node} ({cause}) after {MAX_RETRIES} retries by Ray"
        if self.lost_in_a_row < MAX_LOST:
            return Ended(slot, 1, death)
        return Ended(slot, 1, death, fatal=ClusterError(
            f"{MAX_LOST} Ray workers in a row were lost ({self.settings.ray}), each after {MAX_RETRIES} retries "
            f"by Ray; giving up (the last: {cause})", status=1))

    def stop(self) -> list[str]:
        """Cancel every task still running (each fails its trial, as after Ctrl-C) and wait for them a while."""
        for ref in self.pending:
            with contextlib.suppress(Exception):
                self.ray.cancel(ref)
        with contextlib.suppress(Exception):
            ready, _ = self.ray.wait(list(self.pending), num_returns=len(self.pending), timeout=STOP_GRACE)
            for ref in ready:  # read, so that Ray does not print each ended worker's error as "unhandled"
                with contextlib.suppress(Exception):
                    self.ray.get(ref)
        self.pending.clear()
        return []


def shippable(reporter):
    """The driver's reporter when a copy of it can print a worker's lines (the CLI's console); else None (the
    worker logs them: ``progress.enable_default_handler``). Progress bars are left here: through Ray's log
    forwarding they would come out as a stream of fragments."""
    if reporter is None or isinstance(reporter, progress.TqdmReporter):
        return None
    import ray

    try:
        ray.cloudpickle.dumps(reporter)
    except Exception:  # a reporter holding a file, a lock, a closure over the caller's state: stays here
        return None
    return reporter
