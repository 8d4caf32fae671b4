"""The one entry of a worker: ``run_job(job)`` runs the trials of a job and returns its exit status. Both kinds of
worker call it: a supervised worker process on this machine (``python -m cifar_tune.cli.worker``, the job as JSON
on its standard input) and a Ray cluster's worker task (``ray_backend.py``, the job as the task's argument).

A job is plain data: ``{"settings": OptimizeSettings.to_dict(), "n_trials": N, "worker": slot}``, and ``"node"``
(the Ray node id every trial records) on a Ray cluster.
"""

from __future__ import annotations

import contextlib
import logging
import os

from cifar_tune import progress
from cifar_tune.errors import INTERRUPTED_STATUS, UserError

# the statuses a worker process ends with, errors.py's (the supervisor and the Ray driver read them)
OK, USER_ERROR, INTERRUPTED = 0, UserError.status, INTERRUPTED_STATUS


def run_job(job: dict) -> int:
    """Run ``job``'s trials in this process through ``loop.run_worker``; returns 0, 2 (a user error, or a storage
    that failed: one ``cifar-tune: error: ...`` line at ERROR level through ``progress``, and whoever started the
    worker stops) or 130 (interrupted: the running trial was failed with the reason). Loads Keras first (with its
    native logs silenced): call it before anything else imported Keras. Other exceptions propagate."""
    from cifar_tune import runtime

    runtime.import_keras()  # first: the imports below load Keras

    from cifar_tune.studies.presets import OptimizeSettings
    from cifar_tune.tuning.loop import run_worker
    from cifar_tune.tuning.optuna_logging import quiet_optuna

    quiet_optuna()
    settings = None
    try:
        settings = OptimizeSettings(**job["settings"])
        run_worker(settings, job["n_trials"], worker=job["worker"], node=job.get("node"),
                   describe=job.get("describe", False))
    except UserError as e:
        return _error(e)
    except KeyboardInterrupt:
        return INTERRUPTED
    except Exception as e:  # the storage failed under the worker: one line, as the command itself says it
        from cifar_tune.storage.database import storage_failure

        err = storage_failure(settings.storage, e) if settings is not None else None
        if err is None:
            raise
        return _error(err)
    return OK


def _error(e: BaseException) -> int:
    progress.report(progress.Message(f"cifar-tune: error: {e}", logging.ERROR))
    return USER_ERROR


def ray_worker(job: dict, reporter, env: dict[str, str]) -> int:
    """A Ray task (``ray_backend.py``): one worker (``run_job``) in this fresh Ray worker process, its GPU set by Ray
    (``CUDA_VISIBLE_DEVICES``), ``env`` its share of that GPU's memory (set before Keras loads), each trial
    recording this node's id; returns the worker's exit status. Here, not in ``ray_backend.py``: a Ray worker imports
    the task's module before the task runs, and this one loads no Keras (``run_job`` loads it, quietly, first)."""
    import ray

    os.environ.update(env)
    job = {**job, "node": ray.get_runtime_context().get_node_id()}
    if reporter is None:
        progress.enable_default_handler()
    with progress.reporting(reporter) if reporter is not None else contextlib.nullcontext():
        return run_job(job)
