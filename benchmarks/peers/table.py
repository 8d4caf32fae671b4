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
    if not runs_of(results, arch, OURS):  # a run without cifar-tune itself (a variant alone) has no ratios
        return lines
    lines += ["", "| cifar-tune / peer | " + " | ".join(label for _, label in RATIOS) + " |",
              "|---|" + "---|" * len(RATIOS)]
    for tool in tools:
        if tool != OURS and runs_of(results, arch, tool):
            r = ratios(results, arch, OURS, tool)
            lines.append(f"| {tool} | " + " | ".join(spread(r[k], "{:.2f}") for k, _ in RATIOS) + " |")
    return lines


# The anytime table's columns: seconds since the search process started (fixed times, the same for every
# architecture and budget; a smoke run ends before most of them).
ANYTIME_AT = (60, 120, 240, 480, 960)


def best_by(run: dict, seconds: float) -> float | None:
    """The best validation loss ``run`` had found ``seconds`` after its search started (its ``anytime`` curve);
    None if no trial had ended by then."""
    reached = [v for t, v in run.get("anytime", []) if t <= seconds]
    return reached[-1] if reached else None


def anytime_table(results: dict, arch: str) -> list[str]:
    """The Markdown rows of the anytime view: per tool, the best validation loss found by each of ``ANYTIME_AT``
    (median [min, max] over repetitions that had one), then at the end of the search."""
    tools = list(dict.fromkeys(r["tool"] for r in results["runs"] if r["arch"] == arch))
    head = ["best val loss by", *(f"{s} s" for s in ANYTIME_AT), "end"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for tool in tools:
        runs = [r for r in runs_of(results, arch, tool) if r.get("anytime")]
        if runs:
            cells = [spread([best_by(r, s) for r in runs], "{:.3f}") for s in ANYTIME_AT]
            lines.append("| " + " | ".join([tool, *cells, spread([r["anytime"][-1][1] for r in runs], "{:.3f}")])
                         + " |")
    return lines


def anytime_figure(results: dict):
    """The anytime view as a plotly figure: per architecture, each run's best validation loss so far against
    seconds since its search started (a step line per repetition, one colour per tool)."""
    import plotly.graph_objects as go
    from plotly.colors import qualitative
    from plotly.subplots import make_subplots

    archs = list(dict.fromkeys(r["arch"] for r in results["runs"]))
    tools = list(dict.fromkeys(r["tool"] for r in results["runs"]))
    fig = make_subplots(rows=1, cols=len(archs), subplot_titles=archs)
    in_legend: set[str] = set()  # one legend entry per tool, whatever its runs and architectures
    for col, arch in enumerate(archs, start=1):
        for i, tool in enumerate(tools):
            for run in runs_of(results, arch, tool):
                points = run.get("anytime") or []
                if not points:
                    continue
                x = [p[0] for p in points] + [run["wall_s"]]  # the best so far holds until the search ends
                y = [p[1] for p in points] + [points[-1][1]]
                fig.add_trace(go.Scatter(x=x, y=y, mode="lines+markers", line_shape="hv", name=tool,
                                         legendgroup=tool, showlegend=tool not in in_legend,
                                         line={"color": qualitative.Plotly[i % 10]},
                                         hovertemplate=f"{tool} rep {run['rep']}: %{{y:.3f}} at %{{x:.0f}} s"),
                              row=1, col=col)
                in_legend.add(tool)
        fig.update_xaxes(title_text="seconds since the search started", row=1, col=col)
    fig.update_yaxes(title_text="best validation loss so far", row=1, col=1)
    fig.update_layout(title="Anytime: the best validation loss each tool had found by each time",
                      height=420, width=520 * len(archs))
    return fig


def markdown(results: dict) -> str:
    """The whole table: the budget line, then per architecture the tools' rows and the ratios, and, for runs that
    recorded it, the anytime view (``anytime_table``)."""
    meta = results.get("meta", {})
    lines = [f"Budget: {meta.get('budget_line', '')}", ""]
    for arch in dict.fromkeys(r["arch"] for r in results["runs"]):
        reps = len({r["rep"] for r in results["runs"] if r["arch"] == arch})
        lines += [f"**{arch}** ({reps} repetition{'s' if reps > 1 else ''}: median [min, max])" if reps > 1
                  else f"**{arch}** (1 repetition)", "", *arch_table(results, arch), ""]
        if any(r.get("anytime") for r in results["runs"] if r["arch"] == arch):
            lines += ["", *anytime_table(results, arch), ""]
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
