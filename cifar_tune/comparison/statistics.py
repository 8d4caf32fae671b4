"""The comparison's statistics: per-seed test metrics -> mean ± std per variant, and the paired
tuned-minus-baseline row with its 95% confidence interval and p-value (Student's t on the per-seed differences,
scipy), and the verdict it supports. Plain functions of tables: the views that show them import them too."""

from __future__ import annotations

import math

import pandas as pd
from scipy import stats

from cifar_tune.choices import COMPARE_DIFF, COMPARE_VARIANTS
from cifar_tune.models import metrics
from cifar_tune.models.metrics import ACCURACY

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
        by_variant = {v: group[group["Variant"] == v].sort_values("Seed").set_index("Seed") for v in COMPARE_VARIANTS}
        diffs = by_variant["tuned"][list(metrics.COLUMNS)] - by_variant["baseline"][list(metrics.COLUMNS)]
        for variant, frame in (*by_variant.items(), (COMPARE_DIFF, diffs)):
            row = {"arch": arch, "Model": label, "Variant": variant, "Seeds": len(frame)}
            for m in metrics.COLUMNS:
                values = frame[m].astype(float)
                row[m] = float(values.mean())
                row[f"{m} std"] = float(values.std(ddof=1)) if len(values) > 1 else float("nan")
                if variant == COMPARE_DIFF:
                    row[f"{m} low"], row[f"{m} high"], row[f"{m} p"] = paired_interval(values)
            rows.append(row)
    return pd.DataFrame(rows)


def verdict(row) -> str:
    """For a difference row: 'better', 'worse', 'within noise' (the 95% interval of accuracy holds 0), or 'no
    difference' when every seed trained the same configuration (the best trial is the baseline)."""
    low, high = row.get(f"{ACCURACY} low"), row.get(f"{ACCURACY} high")
    if low is None or high is None or math.isnan(low) or math.isnan(high):
        return "within noise (too few seeds for an interval)"
    if low == high == 0:
        return "no difference (the same configuration)"
    if low > 0:
        return f"better (p = {row[f'{ACCURACY} p']:.3g})"
    if high < 0:
        return f"worse (p = {row[f'{ACCURACY} p']:.3g})"
    return f"within noise (p = {row[f'{ACCURACY} p']:.3g})"
