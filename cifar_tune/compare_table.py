"""The compare tables: per-seed test metrics -> mean ± std per variant, and the paired tuned-minus-baseline row
with its 95% confidence interval and p-value (Student's t on the per-seed differences, scipy)."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
from scipy import stats

from . import metrics
from .names import COMPARE_DIFF as DIFF
from .names import COMPARE_VARIANTS as VARIANTS
from .names import StudyAttr

CONFIDENCE = 0.95


def paired_interval(diffs: pd.Series) -> tuple[float, float, float]:
    """(low, high, p) of the mean paired difference: a t interval at CONFIDENCE and the two-sided p-value of
    "no difference" (NaN with fewer than two seeds; a zero-width interval when every seed gave the same one)."""
    values = diffs.astype(float)
    n, sd = len(values), float(values.std(ddof=1)) if len(values) > 1 else float("nan")
    if n < 2:
        return float("nan"), float("nan"), float("nan")
    if sd == 0:  # every seed gave the same difference (0 when the best trial is the baseline): no spread
        mean = float(values.mean())
        return mean, mean, 1.0 if mean == 0 else 0.0
    half = float(stats.t.ppf(0.5 + CONFIDENCE / 2, n - 1)) * sd / math.sqrt(n)
    p = float(stats.ttest_1samp(values, 0.0).pvalue)
    return float(values.mean()) - half, float(values.mean()) + half, p


def aggregate(per_seed: pd.DataFrame) -> pd.DataFrame:
    """Per architecture: baseline and tuned means and standard deviations, and the paired tuned - baseline row
    (mean and std of the per-seed differences, with ``<metric> low``/``high``/``p`` of its interval)."""
    rows = []
    for arch, group in per_seed.groupby("arch", sort=False):
        label = group["Model"].iloc[0]
        by_variant = {v: group[group["Variant"] == v].sort_values("Seed").set_index("Seed") for v in VARIANTS}
        diffs = by_variant["tuned"][list(metrics.COLUMNS)] - by_variant["baseline"][list(metrics.COLUMNS)]
        for variant, frame in (*by_variant.items(), (DIFF, diffs)):
            row = {"arch": arch, "Model": label, "Variant": variant, "Seeds": len(frame)}
            for m in metrics.COLUMNS:
                values = frame[m].astype(float)
                row[m] = float(values.mean())
                row[f"{m} std"] = float(values.std(ddof=1)) if len(values) > 1 else float("nan")
                if variant == DIFF:
                    row[f"{m} low"], row[f"{m} high"], row[f"{m} p"] = paired_interval(values)
            rows.append(row)
    return pd.DataFrame(rows)


def verdict(row) -> str:
    """For a difference row: 'better', 'worse', 'within noise' (the 95% interval of accuracy holds 0), or 'no
    difference' when every seed trained the same configuration (the best trial is the baseline)."""
    low, high = row.get("Accuracy low"), row.get("Accuracy high")
    if low is None or high is None or math.isnan(low) or math.isnan(high):
        return "within noise (too few seeds for an interval)"
    if low == high == 0:
        return "no difference (the same configuration)"
    if low > 0:
        return f"better (p = {row['Accuracy p']:.3g})"
    if high < 0:
        return f"worse (p = {row['Accuracy p']:.3g})"
    return f"within noise (p = {row['Accuracy p']:.3g})"


def _cell(r, m: str) -> str:
    mean, std = r[m], r[f"{m} std"]
    if r["Variant"] != DIFF:
        return f"{mean:.4f} ± {std:.4f}" if not math.isnan(std) else f"{mean:.4f} ± n/a"
    low, high = r.get(f"{m} low", float("nan")), r.get(f"{m} high", float("nan"))
    interval = f" [{low:+.4f}, {high:+.4f}]" if not math.isnan(low) else ""
    return f"{mean:+.4f} ± {std:.4f}{interval}" if not math.isnan(std) else f"{mean:+.4f} ± n/a"


def display_table(agg: pd.DataFrame) -> pd.DataFrame:
    """The table as people read it: each metric as ``mean ± std``; the difference row adds its 95% interval
    ``[low, high]`` and a verdict on accuracy."""
    rows = []
    for _, r in agg.iterrows():
        rows.append({"Model": r["Model"], "Variant": r["Variant"], **{m: _cell(r, m) for m in metrics.COLUMNS},
                     "Verdict": verdict(r) if r["Variant"] == DIFF else ""})
    return pd.DataFrame(rows, columns=["Model", "Variant", *metrics.COLUMNS, "Verdict"])


def csv_frame(per_seed: pd.DataFrame, agg: pd.DataFrame) -> pd.DataFrame:
    """compare.csv: one row per architecture, variant and seed, then the aggregates (Seed ``mean``, ``std``, and
    for the difference ``ci95_low``, ``ci95_high``, ``p``)."""
    cols = ["arch", "Model", "Variant", "Seed", *metrics.COLUMNS, "Trial", "Epochs", "Seconds", "Model file"]
    seeds = per_seed.assign(Seed=per_seed["Seed"].astype(str))[cols]
    agg_rows = []
    for _, r in agg.iterrows():
        stats_ = [("mean", ""), ("std", " std")]
        if r["Variant"] == DIFF:
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


def summary(per_seed: pd.DataFrame, agg: pd.DataFrame, out, *, seeds: int, seconds: float, storage: str) -> str:
    """What ``compare`` prints at the end: the table, where the files and models went, and what to run next.
    ``storage`` is the URL as it may be shown (password masked)."""
    models = sorted({str(Path(p).parent) for p in per_seed["Model file"]})
    table = display_table(agg).to_markdown(index=False, tablefmt="simple", disable_numparse=True)
    return (f"\nTest-set macro metrics, mean ± std over {seeds} seed(s); '{DIFF}' = paired per-seed differences "
            f"[95% interval]:\n{table}\n\nDone in {seconds:.0f} s. Wrote {out}/compare.csv and compare.md; models "
            f"in {', '.join(models)}; results stored with the studies (user attribute '{StudyAttr.COMPARE}' and the "
            f"study note).\nNext: cifar-tune report --storage '{storage}'")
