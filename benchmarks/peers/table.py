"""results.json -> medians, ranges, pairs and the Markdown table (docs/benchmarks.md's table is this text).

Every figure comes from ``results.json``'s runs (``bench.record``): a cell is the median over repetitions, with
the range in brackets when there is more than one. Ratios are cifar-tune / peer, taken within one repetition (the
machine is shared and noisy; the same repetition ran the tools back to back), then summarised alike. The test
accuracy difference pairs each peer's retraining with cifar-tune's on the same seed and repetition: the mean of
(peer - cifar-tune) with its 95% t interval over the pairs.
"""

from __future__ import annotations

import statistics

import numpy as np
from scipy import stats

COLUMNS = (("trials", "trials", "{:.0f}"), ("epochs", "epochs", "{:.0f}"), ("wall_s", "wall s", "{:.0f}"),
           ("trials_per_hour", "trials/h", "{:.0f}"), ("time_to_best_s", "to best s", "{:.0f}"),
           ("best_val_loss", "best val loss", "{:.3f}"), ("best_val_accuracy", "val acc", "{:.3f}"),
           ("test_accuracy", "test acc", "{:.3f}"), ("peak_rss_mb", "peak MB", "{:.0f}"),
           ("end_rss_mb", "end MB", "{:.0f}"), ("growth_mb_per_trial", "MB/trial", "{:+.0f}"),
           ("disk_mb", "disk MB", "{:.1f}"))
RATIOS = (("wall_s", "wall time"), ("time_to_best_s", "time to best"), ("peak_rss_mb", "peak memory"))
OURS = "cifar-tune"


def value(run: dict, key: str):
    """One metric of one run; ``test_accuracy`` is the mean over its retraining seeds."""
    if key == "test_accuracy":
        accs = [t["accuracy"] for t in run.get("test", [])]
        return float(np.mean(accs)) if accs else None
    return run.get(key)


def spread(values: list, fmt: str) -> str:
    """Median, and [min, max] when there are several values; an em dash when there is none."""
    v = [x for x in values if x is not None]
    if not v:
        return "—"
    cell = fmt.format(statistics.median(v))
    return cell + (f" [{fmt.format(min(v))}, {fmt.format(max(v))}]" if len(v) > 1 else "")


def runs_of(results: dict, arch: str, tool: str) -> list[dict]:
    return [r for r in results["runs"] if r["arch"] == arch and r["tool"] == tool and "error" not in r]


def paired_accuracy(results: dict, arch: str, a: str, b: str) -> dict | None:
    """Test accuracy of ``b`` minus ``a``, paired by (repetition, seed): mean, 95% t interval, number of pairs."""
    diffs = []
    for ra in runs_of(results, arch, a):
        for rb in runs_of(results, arch, b):
            if rb["rep"] == ra["rep"]:
                acc_a = {t["seed"]: t["accuracy"] for t in ra.get("test", [])}
                diffs += [t["accuracy"] - acc_a[t["seed"]] for t in rb.get("test", []) if t["seed"] in acc_a]
    if not diffs:
        return None
    d = np.array(diffs)
    half = stats.t.ppf(0.975, len(d) - 1) * d.std(ddof=1) / np.sqrt(len(d)) if len(d) > 1 else float("nan")
    return {"mean": float(d.mean()), "low": float(d.mean() - half), "high": float(d.mean() + half), "n": len(d)}


def ratios(results: dict, arch: str, a: str, b: str) -> dict:
    """``a`` / ``b`` for wall time, time to best and peak memory, per repetition: key -> list of ratios."""
    out: dict[str, list[float]] = {k: [] for k, _ in RATIOS}
    for ra in runs_of(results, arch, a):
        for rb in runs_of(results, arch, b):
            if rb["rep"] == ra["rep"]:
                for k, _ in RATIOS:
                    if ra.get(k) and rb.get(k):
                        out[k].append(ra[k] / rb[k])
    return out


def _diff_cell(p: dict | None) -> str:
    if p is None:
        return "—"
    if p["n"] < 2:
        return f"{p['mean']:+.3f}"
    return f"{p['mean']:+.3f} [{p['low']:+.3f}, {p['high']:+.3f}]"


def arch_table(results: dict, arch: str) -> list[str]:
    """The Markdown rows of one architecture: a row per tool, then the ratios cifar-tune / peer."""
    tools = list(dict.fromkeys(r["tool"] for r in results["runs"] if r["arch"] == arch))
    head = ["tool", *(label for _, label, _ in COLUMNS), "test acc − cifar-tune [95% CI]"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for tool in tools:
        runs = runs_of(results, arch, tool)
        if not runs:
            lines.append(f"| {tool} | failed" + " |" * (len(head) - 1))
            continue
        cells = [spread([value(r, k) for r in runs], fmt) for k, _, fmt in COLUMNS]
        diff = "(reference)" if tool == OURS else _diff_cell(paired_accuracy(results, arch, OURS, tool))
        lines.append("| " + " | ".join([tool, *cells, diff]) + " |")
    lines += ["", "| cifar-tune / peer | " + " | ".join(label for _, label in RATIOS) + " |",
              "|---|" + "---|" * len(RATIOS)]
    for tool in tools:
        if tool != OURS and runs_of(results, arch, tool):
            r = ratios(results, arch, OURS, tool)
            lines.append(f"| {tool} | " + " | ".join(spread(r[k], "{:.2f}") for k, _ in RATIOS) + " |")
    return lines


def markdown(results: dict) -> str:
    """The whole table: the budget line, then per architecture the tools' rows and the ratios."""
    meta = results.get("meta", {})
    lines = [f"Budget: {meta.get('budget_line', '')}", ""]
    for arch in dict.fromkeys(r["arch"] for r in results["runs"]):
        reps = len({r["rep"] for r in results["runs"] if r["arch"] == arch})
        lines += [f"**{arch}** ({reps} repetition{'s' if reps > 1 else ''}: median [min, max])" if reps > 1
                  else f"**{arch}** (1 repetition)", "", *arch_table(results, arch), ""]
    return "\n".join(lines).rstrip() + "\n"


def pair_lines(results: dict, a: str, b: str) -> list[str]:
    """``peers.py pair A B``: per architecture, the ratios A / B and the paired test accuracy B − A."""
    out = []
    for arch in dict.fromkeys(r["arch"] for r in results["runs"]):
        r, p = ratios(results, arch, a, b), paired_accuracy(results, arch, a, b)
        cells = ", ".join(f"{label} {spread(r[k], '{:.2f}')}" for k, label in RATIOS)
        out.append(f"{arch}: {a} / {b}: {cells}; test accuracy {b} − {a}: {_diff_cell(p)}"
                   + (f" over {p['n']} pairs" if p else ""))
    return out
