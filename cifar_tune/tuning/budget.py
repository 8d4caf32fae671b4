"""How many trials a command runs and where: the study-wide target, trials per worker process, whether a
supervisor runs worker processes, how often to poll. Plain arithmetic on the settings (and one read of the
storage): no Keras, so the supervisor and the Ray driver, which train nothing, never load it."""

from __future__ import annotations

import os

import optuna

from cifar_tune import runtime
from cifar_tune.choices import TOTAL_TRIALS_ENV
from cifar_tune.errors import InvalidValue, UserError
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


def needs_supervisor(settings: OptimizeSettings, storage: handle.Storage | None = None) -> bool:
    """Whether this command runs its trials in worker processes (``--jobs``, or more trials than one process
    should run: Keras's TensorFlow trainer does not give all memory back between trials). ``storage``: the
    command's (default: ``settings.storage``'s), read for the trials a study-wide target has left."""
    if settings.jobs > 1:
        return True
    per_process, total = trials_per_process(settings), total_trials(settings)
    if per_process is None:
        return False
    if total is None:
        return settings.n_trials > per_process
    try:
        opened = handle.resolve(storage or settings.storage).reading()
        study = optuna.load_study(study_name=settings.study_name, storage=opened)
        return total - catalog.started_trials(study) > per_process
    except (UserError, KeyError):  # no storage or no study yet
        return total > per_process


TF_TRIALS_PER_PROCESS = 10  # Keras's TensorFlow trainer does not give all memory back between trials


def trials_per_process(settings: OptimizeSettings) -> int | None:
    """Trials one worker process runs before a fresh one replaces it: the setting when given, else 10 on
    TensorFlow and no bound on other backends (JAX frees a trial's buffers, and a fresh process would compile
    every program again)."""
    if settings.trials_per_process is not None:
        return settings.trials_per_process
    return TF_TRIALS_PER_PROCESS if runtime.choose_backend() == "tensorflow" else None


def poll_seconds(storage) -> float:
    """How often to look at the storage while waiting: the heartbeat interval, within 0.5 .. 5 s."""
    return max(0.5, min(float(getattr(storage, "heartbeat_interval", None) or DEFAULT_HEARTBEAT_INTERVAL), 5.0))
