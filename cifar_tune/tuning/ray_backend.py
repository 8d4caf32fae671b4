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

This process, the driver, trains nothing: it creates the study (the baseline queued first), keeps ``workers``
tasks in flight while trials are left, fails the trials of dead workers (``fail_stale_trials``, as the
supervisor does), and ends when every trial has finished. A worker whose node dies: Ray runs its task again on a
node still alive (``max_retries``), and the trial it was running stops beating, is failed after the grace period
and retried once by whichever worker asks next. The workers' lines reach this terminal through Ray's log
forwarding (Ray prefixes each with the task and its node).

The storage's password never travels through Ray: the job a task gets holds the storage URL without it (Ray keeps
task arguments in its object store and its dashboard lists tasks), and each worker connects with the password of
its node, through libpq's own ``$PGPASSWORD`` or ``~/.pgpass``. A password typed on the command line is refused:
Ray's dashboard lists each driver with its command line.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import time
from dataclasses import dataclass, field, replace
from typing import Any

import optuna

from cifar_tune import engines, progress, runtime
from cifar_tune.errors import UserError
from cifar_tune.runtime import gpus
from cifar_tune.studies import catalog as records
from cifar_tune.studies.presets import OptimizeSettings
from cifar_tune.text import count
from cifar_tune.tuning import story
from cifar_tune.tuning.entry import OK, ray_worker
from cifar_tune.tuning.loop import poll_seconds, total_trials, trials_per_process
from cifar_tune.tuning.study import create_or_load, open_and_prepare

MAX_RETRIES = 3  # Ray runs a lost worker's task (its node died, or its process) again this many times
MAX_LOST = 3  # workers in a row lost for good (Ray's retries spent): give up, the cause would repeat
STOP_GRACE = 30.0  # seconds cancelled workers have to fail their trials and end


def run_on_ray(settings: OptimizeSettings) -> int:
    """Run the study's trials on the Ray cluster at ``settings.ray`` until the study holds its total; returns the
    exit status (0, or a worker's: 2 for a user error or a failed storage, 1 when workers kept being lost).

    Raises ``UserError`` before anything is stored when Ray is not installed, the cluster cannot be reached, or
    the storage's password is on this process's command line; KeyboardInterrupt after Ctrl-C or SIGTERM, once
    the workers were cancelled (each fails its running trial)."""
    ray, connected = connect(settings)
    try:
        return _run(ray, settings)
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
    try:
        ray.init(address=settings.ray, logging_level=logging.WARNING)
    except (ConnectionError, ValueError, RuntimeError, TimeoutError) as e:
        raise UserError(f"cannot connect to the Ray cluster at {settings.ray}: {e}") from None
    return ray, True


def passwords(url: str) -> list[str]:
    """The passwords a storage URL holds (user part, ``?password=``): none, one or two."""
    from sqlalchemy.engine import make_url

    try:
        u = make_url(url)
    except Exception:  # unparsable: make_settings refused it already
        return []
    return [str(p) for p in (u.password, u.query.get("password")) if p]


def without_password(url: str) -> str:
    """``url`` without its password (user part and ``?password=``): what travels to the workers, which take the
    password from their node (libpq's ``$PGPASSWORD`` or ``~/.pgpass``)."""
    from sqlalchemy.engine import URL, make_url

    u = make_url(url).difference_update_query(["password"])  # URL.set(password=None) would keep it ("unchanged")
    return URL.create(u.drivername, u.username, None, u.host, u.port, u.database,
                      u.query).render_as_string(hide_password=False)


def placement(settings: OptimizeSettings, resources: dict, nodes: int) -> tuple[int, float]:
    """(workers, GPUs each worker asks Ray for): ``--workers``, else ``--jobs-per-gpu`` (default 1) per GPU of the
    cluster (``resources``: ``ray.cluster_resources()``), else one per node (``nodes``) of a cluster without GPUs;
    each asks for ``1/jobs_per_gpu`` of a GPU, or none without GPUs."""
    per_gpu, cluster_gpus = settings.jobs_per_gpu or 1, int(resources.get("GPU", 0))
    workers = settings.workers or (cluster_gpus * per_gpu if cluster_gpus else max(1, nodes))
    return workers, (round(1 / per_gpu, 4) if cluster_gpus else 0.0)


def _run(ray, settings: OptimizeSettings) -> int:
    storage, space, split = open_and_prepare(settings)
    study, created = create_or_load(settings, storage, space, split)  # study and baseline exist before workers
    del split  # the workers load their own copy
    total = total_trials(settings)
    if total is None:  # --n-trials N: N more trials than the study holds now, counted as a study-wide total
        total = records.started_trials(study) + settings.n_trials
    per_process = trials_per_process(settings)
    nodes = sum(1 for n in ray.nodes() if n.get("Alive"))
    workers, share = placement(settings, ray.cluster_resources(), nodes)
    engines.report_device(settings.engine, settings.precision)
    progress.report(progress.StudyStarted(replace(settings, jobs=workers), study, created, total, per_process,
                                          max(0, total - records.started_trials(study))))
    progress.info(f"Ray cluster {settings.ray}: {count(nodes, 'node')}; {count(workers, 'worker')}, each 1 CPU"
                  + (f" and {share:g} GPU" if share else ", no GPU") + ", placed by Ray")
    driver = Driver(ray, settings, study, total, workers, share, per_process)
    try:
        with runtime.signals_deferred():  # a signal is seen at the next poll (see supervisor.run_jobs)
            return driver.drive(poll_seconds(storage))
    except KeyboardInterrupt:
        driver.cancel()
        raise
    finally:
        story.tell(study)


@dataclass
class Driver:
    """The tasks of one study run on a Ray cluster: ``pending`` (Ray object ref -> worker slot)."""

    ray: Any
    settings: OptimizeSettings
    study: optuna.Study
    total: int
    workers: int
    share: float
    per_process: int | None
    pending: dict = field(default_factory=dict)
    slots: int = 0
    lost_in_a_row: int = 0
    code: int = 0

    def drive(self, poll: float) -> int:
        """Keep workers in flight until the study holds ``total`` finished trials; returns the exit status."""
        remote = self.ray.remote(num_cpus=1, num_gpus=self.share, max_calls=1, max_retries=MAX_RETRIES)(ray_worker)
        reporter, env = shippable(progress.current()), gpus.memory_share_env(round(1 / self.share) if self.share
                                                                              else 1)
        start, timeout = time.monotonic(), self.settings.timeout
        while not runtime.stopping():
            self.collect(poll)
            optuna.storages.fail_stale_trials(self.study)  # the watchdog: dead workers' trials become retries
            remaining = None if timeout is None else timeout - (time.monotonic() - start)
            live = len(records.live_trials(self.study))
            left = self.total - records.started_trials(self.study)
            if self.code or (remaining is not None and remaining <= 0):
                if not self.pending:
                    break
                continue
            if not self.pending and left <= 0 and not live:
                break
            # workers that have no trial yet are at most the trials left: a worker with nothing to do ends at once
            while len(self.pending) < min(self.workers, max(0, left) + live):
                self.slots += 1
                self.pending[remote.remote(self.job(remaining), reporter, env)] = self.slots
        if self.code:
            self.cancel()
        return self.code

    def job(self, remaining: float | None) -> dict:
        """The next worker's job: the settings (storage URL without its password), its trials and slot."""
        settings = replace(self.settings, storage=without_password(self.settings.storage), ray=None,
                           workers=None, jobs=1, total_trials=self.total, timeout=remaining)
        return {"settings": settings.to_dict(), "n_trials": self.per_process or self.total, "worker": self.slots}

    def collect(self, poll: float) -> None:
        """Wait up to ``poll`` seconds for workers to end; note their statuses, and workers lost for good."""
        if not self.pending:
            time.sleep(poll)
            return
        ready, _ = self.ray.wait(list(self.pending), num_returns=len(self.pending), timeout=poll)
        for ref in ready:
            slot = self.pending.pop(ref)
            try:
                status = self.ray.get(ref)
            except self.ray.exceptions.RayError as e:  # lost after Ray's retries: others take its share
                self.lost_in_a_row += 1
                progress.warn(f"Ray worker {slot} was lost ({type(e).__name__}) after {MAX_RETRIES} retries")
                if self.lost_in_a_row >= MAX_LOST:
                    progress.warn(f"{MAX_LOST} Ray workers in a row were lost; giving up")
                    self.code = self.code or 1
                continue
            self.lost_in_a_row = 0
            if status != OK:
                progress.warn(f"Ray worker {slot} exited with status {status}")
                self.code = self.code or status

    def cancel(self) -> None:
        """Cancel every worker still running (each fails its trial, as after Ctrl-C) and wait for them a while."""
        for ref in self.pending:
            with contextlib.suppress(Exception):
                self.ray.cancel(ref)
        with contextlib.suppress(Exception):
            self.ray.wait(list(self.pending), num_returns=len(self.pending), timeout=STOP_GRACE)
        self.pending.clear()


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
