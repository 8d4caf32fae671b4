"""Part ``e2e``: the wall time of the end-to-end job against its 8-minute target.

A study of 20 trials per architecture (``cifar-tune optimize --arch A --n-trials 20``, the default preset), all
in ``OUT/e2e.db``, then ``cifar-tune compare --seeds 2``. Time limit: 220 s on the GPU (``--e2e-limit``), less than
the target so that the whole check fits in 9 minutes; ``--parts e2e --e2e-limit 480`` decides the target.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from cifar_tune.choices import study_name

from .common import NOT_REACHED, OK, Context, cifar_tune, command_text, not_reached, run_one
from .plan import Plan
from .report import fmt, table
from .stored import finished_trials

TARGET_SECONDS = 8 * 60


def commands(plan: Plan, data: Path, out: Path) -> list[tuple[str, list[str], str | None]]:
    """The job as (name, command, study it fills or None) steps in order: the one place to change for
    ``cifar-tune run``."""
    storage = f"sqlite:///{out / 'e2e.db'}"
    steps = [(f"optimize {arch}", cifar_tune("optimize", "--arch", arch, "--n-trials", plan.e2e_trials,
                                             "--storage", storage, "--data", data, *plan.e2e_optimize_args),
              study_name(arch)) for arch in plan.e2e_archs]
    steps.append(("compare", cifar_tune("compare", "--seeds", plan.e2e_seeds, "--storage", storage, "--data", data,
                                        "--out", out / "compare"), None))
    return steps


def run(ctx: Context, deadline: float) -> dict:
    """Per step: seconds, status and, for a study, ``trials_finished`` by state (read from ``OUT/e2e.db``); the
    total ``seconds`` and ``within_target``. A step that fails or times out ends the job: later steps not reached."""
    db = ctx.out / "e2e.db"
    db.unlink(missing_ok=True)
    shutil.rmtree(ctx.out / "compare", ignore_errors=True)
    steps, reason, start = [], None, time.monotonic()
    for name, argv, study in commands(ctx.plan, ctx.data, ctx.out):
        step = {"step": name, "command": command_text(argv)}
        if reason is None:
            res = run_one(ctx, f"e2e {name}", argv, deadline)
            step["seconds"] = res.seconds
            if study:
                step["trials_finished"] = finished_trials(db, study)
            if res.ok:
                step["status"] = OK
            else:
                reason = res.reason()
                step.update(status=NOT_REACHED, reason=reason)
        else:
            step.update(status=NOT_REACHED, reason="an earlier step was not reached")
        steps.append(step)
    seconds = time.monotonic() - start
    result = {"steps": steps, "seconds": seconds, "target_seconds": TARGET_SECONDS}
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
    intro = f"Target {part.get('target_seconds', TARGET_SECONDS)} s; within target: {fmt(part.get('within_target'))}."
    return [intro, ""] + table(["step", "command", "seconds", "trials finished", "status"], rows)
