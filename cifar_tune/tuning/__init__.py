"""Optuna studies of one architecture: ``run_study(settings)`` runs (or resumes) one and returns the study;
``run_job(job)`` is the one entry of a worker (a supervised worker process or a Ray task); ``MemoryCeiling`` is
a runner's resident-memory ceiling (a kernel's kept worker asks it after each job). Progress goes to
``cifar_tune.progress`` (the header, a ``TrialFinished`` per trial, the summary): nothing here prints.

The public face of the tuning package; the CLI calls only what ``__all__`` names. Inside: ``runner.py``
(``run_study``: where the trials run), ``study.py`` (create or resume, sampler, pruner, baseline first),
``objective.py`` (train one trial, report validation loss every epoch, prune, record), ``checkpoints.py`` (a
trial's state between preemptions), ``loop.py`` (run trials in this process), ``entry.py`` (the one entry of a
worker), ``executors.py`` (where runners run: start, poll, stop; inline, worker processes ``python -m
cifar_tune.cli.worker``), ``ray_backend.py`` (runners as tasks on a Ray cluster, ``--ray``), ``supervisor.py``
(the one loop above every executor: counts the trials, keeps the slots busy, stops), ``budget.py`` (how many
trials, which executor, a runner's memory ceiling), ``optuna_logging.py`` (Optuna's logs quieted) and
``dashboard_updates.py`` (what optuna-dashboard shows, kept current while trials run).
"""

from cifar_tune.tuning.budget import MemoryCeiling
from cifar_tune.tuning.entry import run_job
from cifar_tune.tuning.runner import run_study

__all__ = ["MemoryCeiling", "run_job", "run_study"]
