"""The whole job in one command (``cifar-tune run``): a study per architecture, compare, the study report.

1. **Studies.** For each architecture, ``tuning.optimize`` with the preset's budget as a study-wide total
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
"""

from __future__ import annotations

import sys
import time
from dataclasses import replace
from pathlib import Path

import optuna
import pandas as pd

from . import compare, data, database, records, study_report, tuning
from .compare_table import aggregate, display_table
from .names import StudyAttr
from .presets import OptimizeSettings


def study_settings(settings: OptimizeSettings, share: float | None) -> OptimizeSettings:
    """One architecture's optimize settings in the job: its trials as a study-wide total, and the shorter of its
    preset's timeout and its share of the job's."""
    limits = [t for t in (settings.timeout, share) if t is not None]
    return replace(settings, timeout=min(limits) if limits else None,
                   total_trials=settings.total_trials or settings.n_trials)


def run_studies(plan: list[OptimizeSettings], timeout: float | None) -> int:
    """Phase 1: each architecture's study in turn, sharing ``timeout`` (see the module docstring); returns 0, or
    the exit status of a study that stopped (interrupted: 130 or 143)."""
    start = time.monotonic()
    for i, settings in enumerate(plan):
        share = None
        if timeout is not None:
            left = timeout - (time.monotonic() - start)
            if left <= 0:
                print(f"\n== {settings.arch}: the job's --timeout is spent; its study gets no new trials", flush=True)
                continue
            share = left / (len(plan) - i)
        print(f"\n== {settings.arch}: study" + (f" (may start trials for {share:.0f} s)" if share else ""),
              flush=True)
        code = tuning.optimize(study_settings(settings, share))
        if code:
            print(f"cifar-tune run: the {settings.arch} study stopped; the same `cifar-tune run` command resumes "
                  "the job", file=sys.stderr)
            return code
    return 0


def to_compare(storage_url: str, archs: list[str], seeds: int) -> list[str]:
    """The architectures with a completed trial whose stored comparison is missing or out of date (another best
    trial since, or fewer seeds than asked)."""
    storage = database.storage_for_reading(storage_url)
    found, todo = compare.find_studies(storage), []
    for arch in archs:
        if arch not in found:
            continue
        study = optuna.load_study(study_name=found[arch], storage=storage)
        best, rec = records.best_trial(study), study.user_attrs.get(StudyAttr.COMPARE)
        up_to_date = isinstance(rec, dict) and best is not None and rec.get("best_trial") == best.number \
            and len(rec.get("seeds", [])) >= seeds
        if best is not None and not up_to_date:
            todo.append(arch)
    return todo


def stored_table(storage_url: str, archs: list[str]) -> tuple[pd.DataFrame, list[str]]:
    """The macro-metric table rebuilt from the comparisons stored with the studies, and the not-learned warnings."""
    storage = database.storage_for_reading(storage_url)
    found = compare.find_studies(storage)
    rows, warnings = [], []
    for arch in archs:
        if arch not in found:
            continue
        study = optuna.load_study(study_name=found[arch], storage=storage)
        warning = records.not_learned(study)
        if warning:
            warnings.append(f"{arch}: {warning}")
        rec = study.user_attrs.get(StudyAttr.COMPARE)
        if not isinstance(rec, dict):
            continue
        for variant, runs in rec["runs"].items():
            rows += [{"arch": arch, "Model": rec["label"], "Variant": variant, "Seed": r["seed"],
                      **{m: r[m] for m in ("Accuracy", "Precision", "Recall", "F1 Score")}} for r in runs]
    return (aggregate(pd.DataFrame(rows)) if rows else pd.DataFrame()), warnings


def run(plan: list[OptimizeSettings], *, seeds: int, timeout: float | None, out_dir: str | None) -> int:
    """``cifar-tune run``: studies, compare, report; prints the table and the report's path."""
    start = time.perf_counter()
    first, archs = plan[0], [s.arch for s in plan]
    for source, subset, seed in {(s.data, s.subset, s.seed) for s in plan}:  # bad data end here, before any
        data.load_for_run(source, subset, seed)  # storage is touched
    code = run_studies(plan, timeout)
    if code:
        return code
    todo = to_compare(first.storage, archs, seeds)
    out = Path(out_dir) if out_dir else None
    if todo:
        print(f"\n== compare: {', '.join(todo)} ({seeds} seeds each)", flush=True)
        # without --data, compare takes each study's recorded data and subset
        compare.run_cli(first.data, None, archs=todo, seeds=seeds, epochs=None, storage=first.storage,
                        out_dir=str(out / "compare") if out else None, engine=first.engine,
                        precision=first.precision, verbose=int(first.verbose))
    else:
        print("\n== compare: every architecture's comparison is up to date", flush=True)
    path = study_report.write_study_report(first.storage, out)
    agg, warnings = stored_table(first.storage, archs)
    print(f"\nThe job is done in {time.perf_counter() - start:.0f} s. Test-set macro metrics (mean ± std over "
          f"seeds; tuned - baseline: paired differences [95% interval]):")
    if not agg.empty:
        print(display_table(agg).to_markdown(index=False, tablefmt="simple", disable_numparse=True))
    for warning in warnings:
        print(f"WARNING: {warning}")
    print(f"\nReport: {path}")
    return 0
