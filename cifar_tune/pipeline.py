"""The whole job in one command (``cifar-tune run``): a study per architecture, compare, the study report.

1. **Studies.** For each architecture, ``tuning.run_study`` with the preset's budget as a study-wide total
   (``n_trials`` trials in the study, whoever ran them): a rerun continues a study that has fewer and runs
   nothing for one that is complete, and many machines running the same command against one PostgreSQL storage
   share the trials exactly (the study lock counts them).
2. **Compare.** Each best trial and the baseline retrained on ``seeds`` seeds the studies never used and tested
   once (``compare``); an architecture whose stored comparison already covers its current best trial with as
   many seeds and the same epochs is not retrained.
3. **Report.** The study report (``study_report``), and the macro-metric table from the stored comparisons.

``timeout`` is a budget for the studies, shared among the architectures in turn: each study may start trials
during an equal part of the time still left when it begins (time a quick study leaves unused goes to the next
ones); a trial that has started finishes. Compare and the report then run without a time limit: cutting them
short would leave a comparison on fewer seeds than asked.

The job's verdict is its parts': an architecture whose study has no completed trial (every trial diverged,
failed or was pruned, or the --timeout left it none) cannot be compared, and the job then ends with one line
naming it and why, and exit status 1, after comparing and reporting the others. Ctrl-C or SIGTERM stop it in
any phase as ``optimize`` stops (one line, 130 or 143, the CLI's ``run_stoppable``); what finished is kept
(trials, and compare's trainings in its ledger) and the printed ``cifar-tune run`` command continues.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import optuna

from cifar_tune import runtime, tuning
from cifar_tune.choices import DEFAULT_STORAGE
from cifar_tune.comparison.retrain import CompareSettings, compare_studies
from cifar_tune.data import cifar10
from cifar_tune.progress import info
from cifar_tune.results import Comparison, JobResult
from cifar_tune.storage import handle
from cifar_tune.storage.urls import mask_url
from cifar_tune.studies import catalog, validate
from cifar_tune.studies.presets import OptimizeSettings
from cifar_tune.studies.records import ComparisonRecord, TrialRecord
from cifar_tune.text import count
from cifar_tune.tuning.study import storage_of
from cifar_tune.views import figures, study_report, tables


def study_settings(settings: OptimizeSettings, share: float | None) -> OptimizeSettings:
    """One architecture's optimize settings in the job: its trials as a study-wide total, and the shorter of its
    preset's timeout and its share of the job's."""
    limits = [t for t in (settings.timeout, share) if t is not None]
    return replace(settings, timeout=min(limits) if limits else None,
                   total_trials=settings.total_trials or settings.n_trials)


def run_studies(plan: list[OptimizeSettings], timeout: float | None,
                storage: handle.Storage | None = None) -> dict[str, optuna.Study]:
    """Phase 1: each architecture's study in turn, sharing ``timeout`` (see the module docstring), in ``storage``
    (default: the plan's storage, ``storage_of(plan[0])``); returns the studies that ran by architecture. A study
    whose workers stopped raises ``WorkersStopped``; one stopped by a signal raises KeyboardInterrupt (the CLI's
    ``run_stoppable`` says the rest)."""
    storage = storage or storage_of(plan[0])
    start, studies = time.monotonic(), {}
    for i, settings in enumerate(plan):
        share = None
        if timeout is not None:
            left = timeout - (time.monotonic() - start)
            if left <= 0:
                info(f"\n== {settings.arch}: the job's --timeout is spent; its study gets no new trials")
                continue
            share = left / (len(plan) - i)
        info(f"\n== {settings.arch}: study" + (f" (may start trials for {share:.0f} s)" if share else ""))
        # a signal raises: the job's line says it
        studies[settings.arch] = tuning.run_study(study_settings(settings, share), storage)
    return studies


def without_result(storage: handle.Storage | str, archs: list[str]) -> dict[str, str]:
    """The architectures whose study has no completed trial (nothing to compare), and why."""
    storage = handle.resolve(storage).reading()
    found, why = catalog.find_studies(storage), {}
    for arch in archs:
        if arch not in found:
            why[arch] = "no study (the job's --timeout was spent before it began)"
            continue
        study = optuna.load_study(study_name=found[arch], storage=storage)
        if catalog.best_trial(study) is not None:
            continue
        trials = study.get_trials(deepcopy=False)
        states = ", ".join(f"{n} {'failed' if state == 'fail' else state}"
                           for state, n in catalog.counts_by_state(trials).items())
        reasons = [r for r in (TrialRecord.read(t).fail_reason for t in trials) if r]
        why[arch] = (f"study {found[arch]} has no completed trial ({states or 'no trials'}"
                     + (f"; last failure: {reasons[-1][:120]}" if reasons else "") + ")")
    return why


def resume_command(plan: list[OptimizeSettings], *, seeds: int, timeout: float | None, out_dir: str | None) -> str:
    """The ``cifar-tune run`` command that continues this job: its architectures and every setting the studies
    share (a value the preset sets per architecture differs among them and is left to the preset again)."""
    first = plan[0]

    def common(attr: str):
        values = {getattr(s, attr) for s in plan}
        return values.pop() if len(values) == 1 else None

    return runtime.command_line(
        ["cifar-tune", "run", "--archs", ",".join(s.arch for s in plan), "--preset", first.preset],
        [("--storage", None if first.storage == DEFAULT_STORAGE else mask_url(first.storage)),
         *((f"--{attr.replace('_', '-')}", common(attr)) for attr in ("n_trials", "epochs", "val_size", "seed", "data",
                                                                     "subset", "sampler", "pruner", "engine",
                                                                     "precision")),
         ("--jobs", first.jobs if first.jobs > 1 else None), ("--ray", first.ray), ("--workers", first.workers),
         ("--timeout", timeout), ("--seeds", seeds),
         ("--out", out_dir)])


def to_compare(storage: handle.Storage | str, archs: list[str], seeds: int) -> list[str]:
    """The architectures with a completed trial whose stored comparison is missing or out of date (another best
    trial since, or fewer seeds than asked)."""
    storage = handle.resolve(storage).reading()
    found, todo = catalog.find_studies(storage), []
    for arch in archs:
        if arch not in found:
            continue
        study = optuna.load_study(study_name=found[arch], storage=storage)
        best, rec = catalog.best_trial(study), ComparisonRecord.read(study)
        up_to_date = rec is not None and best is not None and rec.best_trial == best.number \
            and len(rec.seeds) >= seeds
        if best is not None and not up_to_date:
            todo.append(arch)
    return todo


KEPT = {"studies": "finished trials are stored", "compare": "the trainings compare finished are kept in the studies",
        "report": "the report reads the stored records only: nothing is lost"}


def check_outputs(out_dir: str | Path | None) -> None:
    """Refuse, creating nothing, an ``out_dir`` the job could not write its outputs in (compare's folder
    ``out_dir/compare`` and the study report), before any study trains or a storage is touched. Raises
    ``UserError``."""
    figures.check_out_dir(out_dir)
    figures.check_out_dir(Path(out_dir) / "compare" if out_dir else None)
    study_report.check_report_path(out_dir)


def run_job(plan: list[OptimizeSettings], *, seeds: int = 3, timeout: float | None = None,
            out_dir: str | Path | None = None, progress: dict | None = None,
            show_comparison: Callable[[Comparison], None] | None = None) -> JobResult:
    """The whole job (the Python API's ``cifar_tune.run``, the ``run`` command): studies, compare, report; returns
    what it made (``results.JobResult``). ``progress["phase"]`` follows the phase it is in; ``show_comparison``
    is called with compare's result as soon as it has one. Raises ``UserError`` (bad data, storage),
    ``WorkersStopped``, or KeyboardInterrupt after Ctrl-C / SIGTERM with what finished kept."""
    validate.check_args(seeds=seeds, timeout=timeout, out_dir=None if out_dir is None else str(out_dir))
    check_outputs(out_dir)
    start, progress = time.perf_counter(), {} if progress is None else progress
    progress["phase"] = "studies"
    first, archs = plan[0], [s.arch for s in plan]
    for source, subset, seed in {(s.data, s.subset, s.seed) for s in plan}:  # bad data end here, before any
        cifar10.load_for_run(source, subset, seed)  # storage is touched
    storage = storage_of(first)  # the job's, opened once (as optimize's) for every phase
    run_studies(plan, timeout, storage)
    progress["phase"] = "compare"
    todo, missing = to_compare(storage, archs, seeds), without_result(storage, archs)
    out, comparison = Path(out_dir) if out_dir else None, None
    if todo:
        info(f"\n== compare: {', '.join(todo)} ({count(seeds, 'seed')} each)")
        # without --data, compare takes each study's recorded data and subset
        comparison = compare_studies(CompareSettings(
            archs=tuple(todo), seeds=seeds, storage=first.storage, out_dir=str(out / "compare") if out else None,
            engine=first.engine, precision=first.precision, verbose=int(first.verbose), data=first.data), storage)
        if show_comparison is not None:
            show_comparison(comparison)
    elif not missing:
        info("\n== compare: every architecture's comparison is up to date")
    progress["phase"] = "report"
    path = study_report.write_study_report(storage, out)
    agg, warnings = tables.stored_table(storage, archs)
    opened = storage.reading()
    found = catalog.find_studies(opened)
    studies = {a: optuna.load_study(study_name=found[a], storage=opened) for a in archs if a in found}
    return JobResult(studies=studies, table=agg, report=path, comparison=comparison, not_compared=missing,
                     warnings=tuple(warnings), seconds=time.perf_counter() - start)
