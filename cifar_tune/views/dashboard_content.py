"""What optuna-dashboard shows of each study, rendered from its records (the writes are the callers': the
tuning loop's ``tuning/dashboard_updates.py`` and compare's ``comparison/persist.py``).

What a user who only opens the dashboard sees, and where it comes from:

* the study's **note** (Markdown): architecture, objective, data, search space with the baseline's values, the
  results so far (baseline beside best), retries of dead workers' trials, the workers that ran trials, and the
  compare section (compare passes it under its own heading; :func:`updated_note` keeps the rest of the note);
* two **plotly figures** on the study page (:func:`study_figures`): learning curves of the best trial against the
  baseline, and the validation loss of every trial by epoch (where pruning stopped the weak ones);
* each trial's **learning curves as an SVG** (:func:`curves_svg`; the dashboard previews the artifact on the
  trial's page).

A view: it reads the records (``studies/records.py``) and returns text and figures; it writes nothing.
"""


from __future__ import annotations

import html
from datetime import UTC, datetime
from pathlib import Path

import optuna
from optuna.trial import TrialState

from cifar_tune.choices import (
    ARCH_LABELS,
    COMPARE_HEADING,
    FIGURE_CURVES,
    FIGURE_TRIALS,
    NOTE_TAG,
)
from cifar_tune.studies import catalog
from cifar_tune.studies.records import StudyRecord, TrialRecord
from cifar_tune.text import count

# --- the study note ------------------------------------------------------------------------------------------


def _fmt(v) -> str:
    if isinstance(v, bool):
        return "on" if v else "off"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def _searched(p: dict) -> str:
    kind = p.get("kind")
    if kind == "categorical":
        text = "one of " + ", ".join(_fmt(c) for c in p.get("choices", ()))
    else:
        text = f"{_fmt(p.get('low', 0))} … {_fmt(p.get('high', 0))}"
        if p.get("log"):
            text += " (log scale)"
        if p.get("step"):
            text += f", step {_fmt(p['step'])}"
    if p.get("optional"):
        text = f"off ({_fmt(p.get('off', 0.0))}), or {text}"
    return text


def _arch_label(arch: str) -> str:
    return ARCH_LABELS.get(arch, arch)


def _params(params: dict) -> str:
    return ", ".join(f"`{k}={_fmt(v)}`" for k, v in params.items() if not k.startswith("use_") or not v)


def _row(name: str, t: optuna.trial.FrozenTrial | None) -> str:
    if t is None:
        return f"| {name} | – | not finished yet | | |"
    acc = TrialRecord.read(t).val_accuracy
    return (f"| {name} | #{t.number} | {t.value:.4f} | {'' if acc is None else f'{acc:.4f}'} | "
            f"{_params(t.params)} |")


def study_note_section(study: optuna.Study) -> str:
    """The note section this module owns: what the study is, its search space and its results so far."""
    record = StudyRecord.read(study)
    arch, settings = record.arch or "?", record.settings or {}
    epochs = "?" if record.epochs is None else record.epochs
    pruner = settings.get("pruner", "?")
    lines = [f"## {_arch_label(arch)} (`{arch}`): tuning around the seed baseline {NOTE_TAG}", "",
             f"Objective: **validation loss after {count(epochs, 'epoch')}** (minimize), reported every epoch so "
             f"that the {pruner} pruner can stop weak trials early. The first trial is the seed notebook's baseline, "
             "enqueued before any other, so the study can only improve on it. Validation images are carved from "
             "the training set; the test set is used only by `cifar-tune compare`.", "",
             "| setting | value |", "|---|---|",
             f"| data | {record.data or '?'} |",
             f"| sampler / pruner | {settings.get('sampler', '?')} / {pruner} |",
             f"| preset | {settings.get('preset', '?')} |", ""]
    space = record.space or {}
    if space.get("params"):
        where = Path(space.get("path", "")).name or f"{arch}.toml"
        lines += [f"### Search space (`{where}`)", "", "| parameter | baseline | searched |", "|---|---|---|"]
        for name, p in space["params"].items():
            base = p.get("baseline")
            shown = _fmt(base) + (" (off)" if p.get("optional") and base == p.get("off", 0.0) else "")
            lines.append(f"| `{name}` | {shown} | {_searched(p)} |")
        lines.append("")

    trials = study.get_trials(deepcopy=False)
    counts = ", ".join(f"{n} {state}" for state, n in catalog.counts_by_state(trials).items())
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines += [f"### Results so far ({stamp})", "", f"{count(len(trials), 'trial')}: {counts or 'none yet'}."]
    workers = sorted({w for w in (TrialRecord.read(t).worker for t in trials) if w})
    if workers:
        hosts = sorted({w.rsplit(":", 1)[0] for w in workers})
        lines[-1] += (f" Run by {len(workers)} worker process{'es' if len(workers) != 1 else ''} on "
                      f"{len(hosts)} machine{'s' if len(hosts) != 1 else ''} ({', '.join(hosts)}).")
    base, best = catalog.baseline_trial(study), catalog.best_trial(study)
    if base or best:
        lines += ["", "| | trial | val_loss | val_accuracy | parameters |", "|---|---|---|---|---|",
                  _row("baseline", base), _row("best", best)]
        cost = catalog.study_cost(study)
        if cost is not None:  # what the best trial costs, and what the search spent to find it
            lines += ["", f"Cost of the best {catalog.cost_line(cost)}. Found per hour spent: "
                          f"{catalog.found_line(cost)}."]
        if base and best and best.number != base.number:
            lines += ["", f"The best trial lowers the validation loss by {base.value - best.value:.4f} "
                          f"({100 * (base.value - best.value) / base.value:.1f} %) against the baseline."]
        warning = catalog.not_learned(study)
        if warning:
            lines += ["", f"**Warning — {warning}.** Do not take the best trial as a winner."]
    retries = catalog.retried_trials(trials)
    if retries:
        lines += ["", "Dead workers: " + "; ".join(
            f"trial {TrialRecord.read(t).retry_of} stopped beating its heartbeat and was failed; "
            f"trial {t.number} retried it with the same parameters ({t.state.name.lower()})" for t in retries) + "."]
    lines += ["", "On the study's main page: learning curves of the best trial against the baseline, and the "
                  "validation loss of every trial by epoch. On each trial's page: its own learning curves (an "
                  "artifact), and the worker (`host:pid`) that ran it.", "",
              "_cifar-tune rewrites this section as trials finish: write your own notes under a `## ` heading "
              "of your own._", ""]
    return "\n".join(lines)


def _replace_section(note: str, is_heading, section: str, first: bool) -> str:
    """``note`` with the section whose heading line satisfies ``is_heading`` (up to the next ``## `` heading)
    replaced by ``section``; a missing section goes first (``first``) or last."""
    lines = note.splitlines()
    start = next((i for i, line in enumerate(lines) if is_heading(line)), None)
    if start is None:
        rest = "\n".join(lines).strip()
        if not rest:
            return section
        if first and not rest.startswith("## "):
            rest = f"## Notes\n\n{rest}"  # under a heading of its own, so that our rewrites never touch it
        return f"{section.rstrip()}\n\n{rest}\n" if first else f"{rest}\n\n{section}"
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
    return "\n".join(lines[:start] + section.rstrip().splitlines() + [""] + lines[end:]).rstrip() + "\n"


def updated_note(note: str, study: optuna.Study, compare_table_markdown: str | None = None) -> str:
    """``note`` (the study's note as stored) with this module's section rewritten from the study: other text (the
    user's own, and the section ``cifar-tune compare`` writes) stays. With ``compare_table_markdown`` the compare
    section is replaced by that Markdown under the compare heading."""
    note = _replace_section(note, lambda line: line.startswith("## ") and line.endswith(NOTE_TAG),
                            study_note_section(study), first=True)
    if compare_table_markdown is not None:
        body = compare_table_markdown.strip()
        section = body if body.startswith(COMPARE_HEADING) else f"{COMPARE_HEADING}\n\n{body}\n"
        note = _replace_section(note, lambda line: line == COMPARE_HEADING, section, first=False)
    return note


# --- figures -------------------------------------------------------------------------------------------------


def best_vs_baseline_figure(study: optuna.Study):
    """Validation loss and accuracy by epoch: the best trial against the baseline (None before any result)."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    base, best = catalog.baseline_trial(study), catalog.best_trial(study)
    shown = [(f"baseline (trial {base.number})", base, "#7f7f7f")] if base else []
    if best is not None and (base is None or best.number != base.number):
        shown.append((f"best (trial {best.number})", best, "#d62728"))
    if not shown:
        return None
    fig = make_subplots(rows=1, cols=2, subplot_titles=("validation loss", "validation accuracy"))
    for label, t, color in shown:
        curves = TrialRecord.read(t).curves or {}
        for col, key in ((1, "val_loss"), (2, "val_accuracy")):
            values = curves.get(key) or []
            fig.add_trace(go.Scatter(x=list(range(1, len(values) + 1)), y=values, mode="lines+markers", name=label,
                                     legendgroup=label, showlegend=col == 1, line={"color": color}),
                          row=1, col=col)
    fig.update_xaxes(title_text="epoch")
    fig.update_layout(title="Learning curves: best trial vs the seed baseline", template="plotly_white",
                      legend={"orientation": "h", "y": -0.2})
    return fig


def trials_figure(study: optuna.Study):
    """Validation loss by epoch of every trial (pruned ones stop early), baseline and best highlighted."""
    import plotly.graph_objects as go

    trials = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))
              if (TrialRecord.read(t).curves or {}).get("val_loss")]
    if not trials:
        return None
    base, best_trial = catalog.baseline_trial(study), catalog.best_trial(study)
    best = best_trial.number if best_trial is not None else None
    fig = go.Figure()
    for t in trials:
        values = TrialRecord.read(t).curves["val_loss"]
        if base is not None and t.number == base.number:
            style, name = {"color": "#7f7f7f", "width": 3}, f"baseline (trial {t.number})"
        elif t.number == best:
            style, name = {"color": "#d62728", "width": 3}, f"best (trial {t.number})"
        else:
            color = "rgba(31,119,180,0.45)" if t.state == TrialState.COMPLETE else "rgba(255,127,14,0.45)"
            style, name = {"color": color, "width": 1}, f"trial {t.number} ({t.state.name.lower()})"
        fig.add_trace(go.Scatter(x=list(range(1, len(values) + 1)), y=values, mode="lines", name=name, line=style,
                                 showlegend=name.startswith(("baseline", "best")),
                                 hovertemplate=f"{name}<br>epoch %{{x}}: %{{y:.4f}}<extra></extra>"))
    fig.update_layout(title="Validation loss of every trial (orange: pruned)", xaxis_title="epoch",
                      yaxis_title="validation loss", template="plotly_white", legend={"orientation": "h", "y": -0.2})
    return fig


def study_figures(study: optuna.Study) -> dict:
    """The study page's figures, by the id optuna-dashboard keeps them under (a figure without data left out)."""
    figures = {graph_id: make(study) for graph_id, make in ((FIGURE_CURVES, best_vs_baseline_figure),
                                                             (FIGURE_TRIALS, trials_figure))}
    return {graph_id: fig for graph_id, fig in figures.items() if fig is not None}


# --- one trial's learning curves as an artifact ---------------------------------------------------------------


def curves_svg(curves: dict[str, list[float]], title: str) -> str:
    """A small self-contained SVG: loss and accuracy by epoch, train (blue) and validation (orange)."""
    width, height, pad = 400, 260, 44
    panels = []
    for i, (name, keys) in enumerate((("loss", ("loss", "val_loss")), ("accuracy", ("accuracy", "val_accuracy")))):
        series = [(k, [v for v in curves.get(k) or [] if v == v]) for k in keys]  # drop NaN
        values = [v for _, vs in series for v in vs]
        x0 = i * width
        parts = [f'<text x="{x0 + width / 2}" y="16" text-anchor="middle" font-size="18">{name}</text>',
                 f'<rect x="{x0 + pad}" y="{pad - 12}" width="{width - 2 * pad + 12}" height="{height - 2 * pad}" '
                 'fill="none" stroke="#ccc"/>']
        if values:
            lo, hi = min(values), max(values)
            hi = hi if hi > lo else lo + 1e-9
            n = max(len(vs) for _, vs in series)

            def xy(j, v, x0=x0, n=n, lo=lo, hi=hi):  # this panel's frame (bound now: the loop moves on)
                x = x0 + pad + (width - 2 * pad) * (j / max(n - 1, 1))
                return x, pad - 12 + (height - 2 * pad) * (1 - (v - lo) / (hi - lo))

            for key, vs in series:
                color = "#ff7f0e" if key.startswith("val_") else "#1f77b4"
                pts = " ".join(f"{x:.1f},{y:.1f}" for x, y in (xy(j, v) for j, v in enumerate(vs)))
                parts.append(f'<polyline points="{pts}" fill="none" stroke="{color}" stroke-width="3"/>')
                parts += [f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3.5" fill="{color}"/>'
                          for x, y in (xy(j, v) for j, v in enumerate(vs))]
            parts += [f'<text x="{x0 + pad - 4}" y="{pad - 8}" text-anchor="end" font-size="14">{hi:.3g}</text>',
                      f'<text x="{x0 + pad - 4}" y="{height - pad - 12}" text-anchor="end" font-size="14">{lo:.3g}'
                      '</text>',
                      f'<text x="{x0 + width / 2}" y="{height - pad + 8}" text-anchor="middle" font-size="14">'
                      f'epoch 1 … {n}</text>']
        panels.append("".join(parts))
    legend = (f'<text x="20" y="{height - 6}" font-size="15"><tspan fill="#1f77b4">— train</tspan>  '
              f'<tspan fill="#ff7f0e">— validation</tspan>  {html.escape(title)}</text>')
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{2 * width}" height="{height}" '
            f'viewBox="0 0 {2 * width} {height}" font-family="sans-serif">'
            f'<rect width="100%" height="100%" fill="white"/>{"".join(panels)}{legend}</svg>\n')
