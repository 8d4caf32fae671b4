"""How many trials a command runs and where: the study-wide target, which executor runs them, a runner's memory
ceiling, how often to poll. Plain arithmetic on the settings (and one read of the storage): no Keras, so the
supervisor and the Ray driver, which train nothing, never load it."""

from __future__ import annotations

import os
import sys

import optuna

from cifar_tune.choices import TOTAL_TRIALS_ENV
from cifar_tune.errors import InvalidValue, UserError
from cifar_tune.runtime import devices
from cifar_tune.storage import handle
from cifar_tune.storage.database import DEFAULT_HEARTBEAT_INTERVAL
from cifar_tune.studies import catalog, validate
from cifar_tune.studies.presets import OptimizeSettings


def total_trials(settings: OptimizeSettings) -> int | None:
    """The study-wide target of this run (``settings.total_trials`` or $CIFAR_TUNE_TOTAL_TRIALS), if any."""
    if settings.total_trials is not None:
        return settings.total_trials
    raw = os.environ.get(TOTAL_TRIALS_ENV)
    if not raw:
        return None
    try:
        return validate.parse_number("total_trials", raw)
    except InvalidValue as e:
        raise UserError(f"{TOTAL_TRIALS_ENV}: {e.rule}") from None


def executor_kind(settings: OptimizeSettings, storage: handle.Storage | None = None) -> str:
    """Where this command's trials run (``executors.py``): ``"ray"`` (``--ray``), ``--executor`` when given, else
    ``"processes"`` for ``--jobs`` over 1, on a machine with GPUs (a process per GPU slot, each with its share of
    the device), in a Jupyter kernel (``in_a_kernel``) or for more trials than ``--trials-per-process`` allows
    one process; ``"inline"`` otherwise (one worker on a CPU: the trials run in the calling process, which the
    memory ceiling hands over to a fresh worker process when Keras's kept memory passes it). ``storage``: the
    command's (default: ``settings.storage``'s), read for the trials a study-wide target has left."""
    if settings.ray is not None:
        return "ray"
    if settings.executor != "auto":
        return settings.executor
    if settings.jobs > 1 or devices.visible_gpus() or in_a_kernel():
        return "processes"
    per_process, total = settings.trials_per_process, total_trials(settings)
    if per_process is None:
        return "inline"
    if total is None:
        return "processes" if settings.n_trials > per_process else "inline"
    try:
        opened = handle.resolve(storage or settings.storage).reading()
        study = optuna.load_study(study_name=settings.study_name, storage=opened)
        left = total - catalog.started_trials(study)
    except (UserError, KeyError):  # no storage or no study yet
        left = total
    return "processes" if left > per_process else "inline"


def in_a_kernel() -> bool:
    """Whether this process is a Jupyter (IPython) kernel. There the trials run in a worker process: Keras keeps
    memory per trial that only a process's end returns (~26 MB per mlp_l2 trial after ``clear_session()``), and a
    kernel that tunes again and again would keep it all; the kernel itself then never loads Keras. Its lines reach
    the cell through ipykernel's capture of the workers' standard output."""
    ipython = sys.modules.get("IPython")  # never imported here: a process that has not imported it is no kernel
    shell = ipython.get_ipython() if ipython is not None else None
    return getattr(shell, "kernel", None) is not None


DEFAULT_HEADROOM_MB = 2048  # a runner's ceiling above its size after its first trial (``worker_memory`` unset)


class MemoryCeiling:
    """A trial runner's resident-memory ceiling (``settings.worker_memory`` MB; None: its resident memory after
    its first trial plus ``DEFAULT_HEADROOM_MB``). ``passed()``, asked after each trial, says whether the runner
    should hand its remaining trials to a fresh process: Keras's TensorFlow trainer keeps ~26 MB per trial after
    ``clear_session()`` that ``malloc_trim`` does not return (measured on this project's 2-core CPU), so a long
    study is bounded by replacing its runner, not by a fixed count of trials."""

    def __init__(self, mb: int | None):
        self.mb, self.stopped = mb, False

    def passed(self) -> bool:
        rss = resident_mb()
        if rss is None:  # not Linux: no ceiling
            return False
        if self.mb is None:
            self.mb = rss + DEFAULT_HEADROOM_MB
        self.stopped = rss > self.mb
        return self.stopped


def resident_mb() -> float | None:
    """This process's resident memory in MB (Linux ``/proc/self/status``; None elsewhere)."""
    try:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) / 1024 for line in f if line.startswith("VmRSS:"))
    except (OSError, StopIteration):
        return None


def trials_per_process(settings: OptimizeSettings) -> int | None:
    """Trials one worker process runs before a fresh one replaces it: the setting when given, else no count (the
    memory ceiling, ``MemoryCeiling``, replaces a worker)."""
    return settings.trials_per_process


def poll_seconds(storage) -> float:
    """How often to look at the storage while waiting: the heartbeat interval, within 0.5 .. 5 s."""
    return max(0.5, min(float(getattr(storage, "heartbeat_interval", None) or DEFAULT_HEARTBEAT_INTERVAL), 5.0))
