"""Part ``e2e`` (its own command, ``--part e2e``): the end-to-end job's wall time, at the largest size that fits.

The full job: a study per architecture, all five, at the seed's 10 epochs on the full split (the default
preset's sampler and Hyperband pruning; ``GPU_PLAN``: 4 trials each, ``--jobs N`` passed through), all in
``OUT/e2e.db``, then ``cifar-tune compare --seeds 3``. When the probe's times say it does not fit the part's
limit (330 s on the GPU, ``--e2e-limit``), the plan takes the largest smaller job that does (``plan.GPU_LADDERS``:
fewer trials, then ``cnn_da`` and ``resnet`` alone at 10 epochs, then fewer seeds, then a subset) and the part
records what it cut (``cut``). ``TARGET_SECONDS`` (8 minutes) is the full job's target.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from cifar_tune.choices import study_name

from .common import NOT_REACHED, OK, Context, cifar_tune, command_text, not_reached, run_one
from .plan import Plan
from .report import fmt, table
from .stored import compiles, finished_trials

TARGET_SECONDS = 8 * 60


def commands(plan: Plan, data: Path, out: Path) -> list[tuple[str, list[str], str | None]]:
    """The job as (name, command, study it fills or None) steps in order: the one place to change for
    ``cifar-tune run``."""
    storage = f"sqlite:///{out / 'e2e.db'}"
    sizes = ["--epochs", plan.e2e_epochs, *(["--subset", plan.e2e_subset] if plan.e2e_subset else []),
             *(["--val-size", plan.e2e_val_size] if plan.e2e_val_size else [])]
    jobs = ["--jobs", plan.e2e_jobs] if plan.e2e_jobs > 1 else []
    steps = [(f"optimize {arch}", cifar_tune("optimize", "--arch", arch, "--n-trials", plan.e2e_trials, *sizes, *jobs,
                                             "--storage", storage, "--data", data), study_name(arch))
             for arch in plan.e2e_archs]
    steps.append(("compare", cifar_tune("compare", "--seeds", plan.e2e_seeds, "--storage", storage, "--data", data,
                                        "--out", out / "compare"), None))
    return steps


def run(ctx: Context, deadline: float) -> dict:
    """Per step: seconds, status and, for a study, ``trials_finished`` by state (read from ``OUT/e2e.db``); the
    total ``seconds``, ``within_target``, ``sizes`` and ``cut``. A step that fails or times out ends the job: later
    steps not reached. After every step the result so far goes to ``ctx.checkpoint`` (results.json)."""
    db = ctx.out / "e2e.db"
    db.unlink(missing_ok=True)
    shutil.rmtree(ctx.out / "compare", ignore_errors=True)
    steps, reason, start = [], None, time.monotonic()
    record = {"sizes": ctx.plan.sizes("e2e"), "cut": ctx.sizing.get("parts", {}).get("e2e", {}).get("cut", [])}
    for name, argv, study in commands(ctx.plan, ctx.data, ctx.out):
        step = {"step": name, "command": command_text(argv)}
        if reason is None:
            res = run_one(ctx, f"e2e {name}", argv, deadline)
            step["seconds"] = res.seconds
            if study:
                step["trials_finished"] = finished_trials(db, study)
                step.update(compiles(db, study))  # compiles per study and their seconds (fast engine on JAX)
            if res.ok:
                step["status"] = OK
            else:
                reason = res.reason()
                step.update(status=NOT_REACHED, reason=reason)
        else:
            step.update(status=NOT_REACHED, reason="an earlier step was not reached")
        steps.append(step)
        ctx.checkpoint("e2e", {"status": NOT_REACHED, "reason": "running", "steps": [dict(s) for s in steps],
                               **record})
    seconds = time.monotonic() - start
    result = {"steps": steps, "seconds": seconds, "target_seconds": TARGET_SECONDS, **record}
    if reason:
        return not_reached(result, reason)
    result.update(status=OK, within_target=seconds <= TARGET_SECONDS)
    return result


def markdown(part: dict) -> list[str]:
    """The part's intro line (the target and the verdict) and a table of its steps and their total."""
    rows = [[s["step"], f"`{s['command']}`", fmt(s.get("seconds"), 1),
             " ".join(f"{n} {k}" for k, n in s.get("trials_finished", {}).items()) or "-", s["status"]]
            for s in part.get("steps", [])]
    rows.append(["total", "", fmt(part.get("seconds"), 1), "", part["status"]])
    cut = ", ".join(part.get("cut") or []) or "nothing"
    intro = (f"Target {part.get('target_seconds', TARGET_SECONDS)} s (the full job); within target: "
             f"{fmt(part.get('within_target'))}. Cut from the full job: {cut}.")
    return [intro, ""] + table(["step", "command", "seconds", "trials finished", "status"], rows)
