"""Part ``agreement``: do the two engines reach the same test accuracy?

``cifar-tune baseline --archs cnn,resnet --epochs 5 --protocol seed`` for seeds 0 and 1 with ``--engine keras`` and
``--engine fast`` (the largest of the plan's sizes; fewer epochs, seeds, images or archs when the probe says so):
mean test accuracy (a fraction) per engine, the difference in points, and whether it is within
1.5 points. The runs only measure accuracy, so up to ``--parallel`` (default 4) run at once, each with its share of
GPU memory (``XLA_PYTHON_CLIENT_MEM_FRACTION``). Time limit: 50 s on the GPU (``--agreement-limit``).
"""

from __future__ import annotations

import csv
import math
import shutil
import time
from pathlib import Path

import numpy as np

from .common import OK, Context, cifar_tune, command_text, not_reached, run_commands
from .report import fmt, table

POINTS = 1.5  # fast vs stock fit, mean test accuracy, in points
ENGINES = ("keras", "fast")


def run(ctx: Context, deadline: float) -> dict:
    """Per architecture: each engine's mean test accuracy over the seeds (read from each run's ``metrics.csv``),
    ``difference_points`` (fast − keras, in points) and ``within_1.5_points``; per run its seconds."""
    plan = ctx.plan
    runs = [(seed, engine) for seed in plan.agreement_seeds for engine in ENGINES]
    commands = []
    for seed, engine in runs:
        folder = ctx.out / "agreement" / f"seed{seed}-{engine}"
        shutil.rmtree(folder, ignore_errors=True)
        commands.append((f"agreement seed{seed} {engine}",
                         cifar_tune("baseline", "--archs", ",".join(plan.agreement_archs), "--epochs",
                                    plan.agreement_epochs, "--seed", seed, "--engine", engine, "--data", ctx.data,
                                    "--out", folder, "--protocol", "seed",
                                    *(["--subset", plan.agreement_subset] if plan.agreement_subset else []))))
    parallel = min(ctx.parallel, len(commands))
    env = dict(ctx.env)
    if parallel > 1:  # several JAX processes on one GPU: each takes its slice instead of 75% of the card
        env["XLA_PYTHON_CLIENT_MEM_FRACTION"] = f"{math.floor(90 / parallel) / 100:.2f}"
    start = time.monotonic()
    results = {r.name: r for r in run_commands(ctx, commands, deadline, parallel=parallel, env=env)}
    accuracy: dict[str, dict[str, dict[int, float]]] = {a: {e: {} for e in ENGINES} for a in plan.agreement_archs}
    runs_out, failures = [], []
    for (seed, engine), (name, argv) in zip(runs, commands, strict=True):
        res = results.get(name)
        entry = {"seed": seed, "engine": engine, "command": command_text(argv)}
        if res is None:
            failures.append(f"timeout: the part's time limit ran out before `{name}` started")
        elif not res.ok:
            failures.append(res.reason())
        else:
            entry["seconds"] = res.seconds
            metrics = _read_metrics(Path(argv[argv.index("--out") + 1]) / "metrics.csv")
            if len(metrics) != len(plan.agreement_archs):
                failures.append(f"`{name}`: metrics.csv has {len(metrics)} rows for {len(plan.agreement_archs)} archs")
            for arch, row in zip(plan.agreement_archs, metrics, strict=False):  # a short file is a failure above
                accuracy[arch][engine][seed] = float(row["Accuracy"])
                entry.setdefault("accuracy", {})[arch] = float(row["Accuracy"])
        runs_out.append(entry)
    result = {"epochs": plan.agreement_epochs, "seeds": list(plan.agreement_seeds), "parallel": parallel,
              "subset": plan.agreement_subset,
              "seconds": time.monotonic() - start, "rows": [_row(arch, accuracy[arch]) for arch in accuracy],
              "runs": runs_out}
    if failures:
        return not_reached(result, failures[0])
    result["status"] = OK
    return result


def _row(arch: str, accuracy: dict[str, dict[int, float]]) -> dict:
    row: dict = {"arch": arch}
    for engine in ENGINES:
        values = accuracy[engine]
        row[f"{engine}_seeds"] = sorted(values)
        row[f"{engine}_accuracy"] = float(np.mean(list(values.values()))) if values else None
    if row["keras_accuracy"] is not None and row["fast_accuracy"] is not None:
        row["difference_points"] = 100 * (row["fast_accuracy"] - row["keras_accuracy"])
        row["within_1.5_points"] = abs(row["difference_points"]) <= POINTS
    return row


def _read_metrics(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def markdown(part: dict) -> list[str]:
    """The part's intro line and table (accuracy per engine, the difference, the verdict)."""
    rows = [[r["arch"], fmt(r.get("keras_accuracy"), 4), fmt(r.get("fast_accuracy"), 4),
             fmt(r.get("difference_points"), 2), fmt(r.get("within_1.5_points"))] for r in part.get("rows", [])]
    intro = (f"Mean test accuracy over seeds {part['seeds']}, {part['epochs']} epoch(s), seed protocol."
             if "seeds" in part else "")
    head = ["arch", "keras accuracy", "fast accuracy", "fast − keras (points)", f"within {POINTS}"]
    return [intro, ""] + table(head, rows)
