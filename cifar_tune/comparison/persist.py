"""What a comparison keeps: the record stored with the study (``studies.records.ComparisonRecord``, read back by
``cifar-tune report``, ``studies`` and the Python API's ``load``) and a section of the study note that
optuna-dashboard shows."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from cifar_tune import progress
from cifar_tune.choices import COMPARE_DIFF, COMPARE_HEADING, COMPARE_VARIANTS
from cifar_tune.comparison.statistics import verdict
from cifar_tune.comparison.targets import Target
from cifar_tune.models import metrics
from cifar_tune.storage.locks import study_lock
from cifar_tune.studies.records import ComparisonRecord
from cifar_tune.text import count
from cifar_tune.views import dashboard_content
from cifar_tune.views.tables import display_table


def jsonable(value):
    """``value`` as JSON-able plain data: numpy numbers as Python ones, NaN as None, keys as strings."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating, float)):
        return None if math.isnan(float(value)) else float(value)
    return value


def note_section(target: Target, agg: pd.DataFrame, record: ComparisonRecord) -> str:
    """The Markdown section compare writes into the study note (optuna-dashboard shows it)."""
    table = display_table(agg[agg["arch"] == target.arch]).drop(columns=["Model"]).to_markdown(index=False)
    params = ", ".join(f"`{k}={v:.4g}`" if isinstance(v, float) else f"`{k}={v}`"
                       for k, v in target.best.params.items())
    return "\n".join([
        COMPARE_HEADING, "",
        f"{record.date}: best trial #{target.best.number} and the seed baseline, each retrained from scratch on "
        f"all {record.train_images:,} training images for {count(record.epochs, 'epoch')} with seeds "
        f"{', '.join(map(str, record.seeds))}, then evaluated once on {record.test_images:,} test images.", "",
        table, "",
        f"Best trial params: {params}", "",
        f"Data: {record.data}. Models: `{Path(record.models['tuned'][0]).parent}/`. "
        f"Output: `{record.out_dir}`.", ""])


def store(target: Target, record: ComparisonRecord, agg: pd.DataFrame) -> None:
    """Put the compare results into the study: its ``ComparisonRecord`` and a section of the study note.

    The note is ``dashboard``'s (its own section, the user's text, and this section under COMPARE_HEADING); it
    is rewritten under the study's lock, as optimize workers do. A note that cannot be written costs a warning,
    not the results: those are in the attribute and the files already.
    """
    record.write(target.study)  # and drops the ledger of runs under way: the next compare trains afresh
    try:
        from optuna_dashboard import get_note, save_note

        with study_lock(target.study):
            save_note(target.study, dashboard_content.updated_note(get_note(target.study), target.study,
                                                                   note_section(target, agg, record)))
    except Exception as e:
        progress.warn(f"cifar-tune: warning: the study note of {target.study.study_name} was not updated "
                      f"({type(e).__name__}: {str(e)[:200]}); the results are in its "
                      f"'{ComparisonRecord.ATTRIBUTE}' attribute")


def make_record(t: Target, runs: dict[str, list[dict]], agg: pd.DataFrame, *, date: str, seeds: list[int],
                precision: str, out: Path) -> ComparisonRecord:
    """What the study keeps of one comparison (its fields plain JSON data; read back by ``cifar-tune report``)."""
    def stats_of(r, m):
        interval = {"low": r[f"{m} low"], "high": r[f"{m} high"], "p": r[f"{m} p"]}
        return {"mean": r[m], "std": r[f"{m} std"], **(interval if r["Variant"] == COMPARE_DIFF else {})}

    return ComparisonRecord.from_attrs(jsonable(dict(
        date=date, arch=t.arch, label=t.label, seeds=seeds, epochs=t.epochs, best_trial=t.best.number,
        baseline_trial=t.baseline_trial.number if t.baseline_trial else None,
        tuned_config=t.tuned_config, baseline_config=t.baseline_config,
        data=t.ds.source, data_fingerprint=t.ds.fingerprint(), train_images=len(t.ds.y_train),
        test_images=len(t.ds.y_test), engine=runs["baseline"][0]["engine"], precision=precision,
        out_dir=str(out), notes=t.notes,
        table=[{"Variant": r["Variant"], **{m: stats_of(r, m) for m in metrics.COLUMNS},
                **({"verdict": verdict(r)} if r["Variant"] == COMPARE_DIFF else {})} for _, r in agg.iterrows()],
        runs={v: [{"seed": seed, **r["metrics"], "seconds": r["seconds"]}
                  for seed, r in zip(seeds, runs[v], strict=True)] for v in COMPARE_VARIANTS},
        confusion={v: [r["confusion"] for r in runs[v]] for v in COMPARE_VARIANTS},
        models={v: [r["model"] for r in runs[v]] for v in COMPARE_VARIANTS})))
