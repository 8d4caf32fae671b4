"""The compare tables as people read them (cells, compare.csv, compare.md, the summary) and the stored studies'
tables (``study_rows``, ``compared_rows``, ``stored_table``); the statistics they show are the comparison's
(``comparison/statistics.py``)."""

from __future__ import annotations

import math
from pathlib import Path

import optuna
import pandas as pd

from cifar_tune.choices import COMPARE_DIFF
from cifar_tune.comparison.statistics import aggregate, verdict
from cifar_tune.models import metrics
from cifar_tune.models.metrics import ACCURACY, F1
from cifar_tune.storage import handle
from cifar_tune.studies.catalog import (
    Cost,
    best_trial,
    counts_by_state,
    find_studies,
    not_learned,
    split_studies,
    study_arch,
    study_cost,
)
from cifar_tune.studies.records import ComparisonRecord, TrialRecord
from cifar_tune.text import count


def _missing(x) -> bool:
    return x is None or math.isnan(x)


def stat_cell(mean: float, std: float | None, low: float | None = None, high: float | None = None, *,
              diff: bool = False) -> str:
    """One table cell: ``mean ± std`` (4 decimals; ``± n/a`` without a std), a difference signed and with its
    interval ``[low, high]`` when it has one. NaN and None (as a stored record holds it) alike mean none."""
    head = f"{mean:+.4f}" if diff else f"{mean:.4f}"
    interval = f" [{low:+.4f}, {high:+.4f}]" if diff and not _missing(low) else ""
    return f"{head} ± n/a" if _missing(std) else f"{head} ± {std:.4f}{interval}"


def _cell(r, m: str) -> str:
    return stat_cell(r[m], r[f"{m} std"], r.get(f"{m} low"), r.get(f"{m} high"), diff=r["Variant"] == COMPARE_DIFF)


def display_table(agg: pd.DataFrame) -> pd.DataFrame:
    """The table as people read it: each metric as ``mean ± std``; the difference row adds its 95% interval
    ``[low, high]`` and a verdict on accuracy."""
    rows = []
    for _, r in agg.iterrows():
        rows.append({"Model": r["Model"], "Variant": r["Variant"], **{m: _cell(r, m) for m in metrics.COLUMNS},
                     "Verdict": verdict(r) if r["Variant"] == COMPARE_DIFF else ""})
    return pd.DataFrame(rows, columns=["Model", "Variant", *metrics.COLUMNS, "Verdict"])


def csv_frame(per_seed: pd.DataFrame, agg: pd.DataFrame) -> pd.DataFrame:
    """compare.csv: one row per architecture, variant and seed, then the aggregates (Seed ``mean``, ``std``, and
    for the difference ``ci95_low``, ``ci95_high``, ``p``)."""
    cols = ["arch", "Model", "Variant", "Seed", *metrics.COLUMNS, "Trial", "Epochs", "Seconds", "Model file"]
    seeds = per_seed.assign(Seed=per_seed["Seed"].astype(str))[cols]
    agg_rows = []
    for _, r in agg.iterrows():
        stats_ = [("mean", ""), ("std", " std")]
        if r["Variant"] == COMPARE_DIFF:
            stats_ += [("ci95_low", " low"), ("ci95_high", " high"), ("p", " p")]
        for stat, suffix in stats_:
            agg_rows.append({"arch": r["arch"], "Model": r["Model"], "Variant": r["Variant"], "Seed": stat,
                             **{m: r[f"{m}{suffix}"] for m in metrics.COLUMNS}})
    frame = pd.concat([seeds, pd.DataFrame(agg_rows, columns=cols)], ignore_index=True)
    return frame.astype({"Trial": "Int64", "Epochs": "Int64"})


def markdown(per_seed: pd.DataFrame, agg: pd.DataFrame, facts: dict) -> str:
    """compare.md: the facts, the table and the per-seed rows."""
    lines = ["# Tuned vs baseline on the test set", ""]
    lines += [f"- **{k}**: {v}" for k, v in facts.items()]
    lines += ["", "Macro averages (scikit-learn), mean ± standard deviation over seeds. The difference row is the "
              "mean ± std of the per-seed paired differences with its 95% confidence interval [low, high] "
              "(Student's t); the verdict reads the accuracy interval: 'within noise' when it holds 0.", "",
              display_table(agg).to_markdown(index=False), "", "## Per seed", "",
              per_seed[["Model", "Variant", "Seed", *metrics.COLUMNS, "Trial", "Seconds"]]
              .to_markdown(index=False, floatfmt=".4f"), ""]
    return "\n".join(lines)


def summary(per_seed: pd.DataFrame, agg: pd.DataFrame, out, *, seeds: int, seconds: float) -> str:
    """What ``compare`` prints at the end: the table, where the files and models went (what to run next is the
    caller's to say: the ``compare`` command names ``report``, ``run`` writes the report itself)."""
    models = sorted({str(Path(p).parent) for p in per_seed["Model file"]})
    table = display_table(agg).to_markdown(index=False, tablefmt="simple", disable_numparse=True)
    return (f"\nTest-set macro metrics, mean ± std over {count(seeds, 'seed')}; '{COMPARE_DIFF}' = paired per-seed "
            f"differences [95% interval]:\n{table}\n\nDone in {seconds:.0f} s. Wrote {out}/compare.csv and compare.md; "
            f"models in {', '.join(models)}; results stored with the studies (user attribute "
            f"'{ComparisonRecord.ATTRIBUTE}' and the study note).")


def study_rows(storage) -> list[dict]:
    """One row per cifar-tune study in ``storage``: name, arch, trials by state, best value and accuracy, the
    best trial's cost (``cost_columns``), and ``warning``: ``catalog.not_learned``'s reason when its best trial
    learned nothing worth crowning (else ""); foreign studies are skipped (``foreign_studies``)."""
    rows = []
    for s in split_studies(storage)[0]:
        study = optuna.load_study(study_name=s.study_name, storage=storage)
        trials = study.get_trials(deepcopy=False)
        counts = counts_by_state(trials)
        best = best_trial(study)
        rows.append({"study": s.study_name, "arch": study_arch(s) or "?",
                     "trials": len(trials),
                     **{k: counts.get(k, 0) for k in ("complete", "pruned", "fail", "running", "waiting")},
                     "best_val_loss": round(best.value, 4) if best else None,
                     "best_val_acc": round(_or_nan(TrialRecord.read(best).val_accuracy), 4) if best else None,
                     **cost_columns(study_cost(study)), "warning": not_learned(study) or ""})
    return rows


def cost_columns(cost: Cost | None) -> dict:
    """The best trial's cost as table columns: ``s/epoch`` (its seconds per epoch), ``params``, ``x_base_time``
    (its seconds per epoch over the baseline trial's), ``found_h`` (training hours spent until it was found) and
    ``train_h`` (all spent); None where unknown."""
    def rounded(x: float | None, digits: int) -> float | None:
        return None if x is None else round(x, digits)

    if cost is None:
        return dict.fromkeys(("s/epoch", "params", "x_base_time", "found_h", "train_h"))
    return {"s/epoch": rounded(cost.seconds_per_epoch, 3), "params": cost.params,
            "x_base_time": rounded(cost.vs_baseline, 2),
            "found_h": rounded(None if cost.found_after is None else cost.found_after / 3600, 3),
            "train_h": round(cost.total / 3600, 3)}


def foreign_studies(storage) -> dict[str, str]:
    """The studies in ``storage`` that are not cifar-tune's (another program's, multi-objective, maximizing): name
    -> why (``catalog.foreign_reason``)."""
    return split_studies(storage)[1]


def _or_nan(x: float | None) -> float:
    return float("nan") if x is None else x


def compared_rows(storage) -> list[dict]:
    """One row per study that ``compare`` has run on: test accuracy of baseline and tuned (mean and std over the
    seeds), the paired difference with its 95% interval, and the verdict, as compare stored them."""
    rows = []
    for s in split_studies(storage)[0]:
        record = ComparisonRecord.read(s)
        if record is None:
            continue
        table = {r["Variant"]: r for r in record.table}
        base, tuned, diff = table["baseline"], table["tuned"], table[COMPARE_DIFF]
        rows.append({"study": s.study_name, "arch": record.arch, "epochs": record.epochs,
                     "train_images": record.train_images, "test_images": record.test_images,
                     "seeds": len(record.seeds), "best_trial": record.best_trial,
                     "baseline_acc": base[ACCURACY]["mean"], "baseline_std": base[ACCURACY]["std"],
                     "tuned_acc": tuned[ACCURACY]["mean"], "tuned_std": tuned[ACCURACY]["std"],
                     "difference": diff[ACCURACY]["mean"], "ci95_low": diff[ACCURACY].get("low"),
                     "ci95_high": diff[ACCURACY].get("high"), "tuned_f1": tuned[F1]["mean"],
                     "verdict": diff.get("verdict", "")})
    return rows


def stored_table(storage: handle.Storage | str, archs: list[str] | None = None) -> tuple[pd.DataFrame, list[str]]:
    """The comparisons stored with the studies of ``archs`` (default: every architecture with a study), aggregated
    as ``compare`` aggregates its own (``aggregate`` above: per architecture the baseline, tuned and
    paired-difference rows; empty when none is stored), and the not-learned warnings ("<arch>: <why>").
    ``storage``: the command's (``handle.Storage``) or a URL."""
    storage = handle.resolve(storage).reading()
    found = find_studies(storage)
    rows, warnings = [], []
    for arch in (found if archs is None else archs):
        if arch not in found:
            continue
        study = optuna.load_study(study_name=found[arch], storage=storage)
        warning = not_learned(study)
        if warning:
            warnings.append(f"{arch}: {warning}")
        rec = ComparisonRecord.read(study)
        if rec is None:
            continue
        for variant, runs in rec.runs.items():
            rows += [{"arch": arch, "Model": rec.label, "Variant": variant, "Seed": r["seed"],
                      **{m: r[m] for m in metrics.COLUMNS}} for r in runs]
    return (aggregate(pd.DataFrame(rows)) if rows else pd.DataFrame()), warnings
