"""Part ``jobs``: trials per hour on one GPU with ``--jobs`` 1, 2 and 4.

The same short study each time (``cifar-tune optimize --arch cnn``, at most 8 trials of 2 epochs on a 10,000-image
subset, no pruning: the plan sizes it from the probe), in a fresh SQLite file ``OUT/jobs<N>.db``; the wall clock of
the whole command, process start-up included. Time limit: 40 s on the GPU (``--jobs-limit``), for all the
commands together.
"""

from __future__ import annotations

from cifar_tune.choices import study_name

from .common import NOT_REACHED, OK, Context, cifar_tune, command_text, not_reached, run_one
from .report import fmt, table
from .stored import finished_trials


def run(ctx: Context, deadline: float) -> dict:
    """Per ``--jobs`` count: seconds, trials per hour, speed-up over ``--jobs 1``, and ``trials_finished`` (by
    state, read from the stored study). Once one command fails or times out, the later counts are not run."""
    plan = ctx.plan
    rows, reason = [], None
    for jobs in plan.jobs_counts:
        db = ctx.out / f"jobs{jobs}.db"
        db.unlink(missing_ok=True)
        argv = cifar_tune("optimize", "--arch", plan.jobs_arch, "--jobs", jobs, "--n-trials", plan.jobs_trials,
                          "--epochs", plan.jobs_epochs, "--pruner", "none", "--storage", f"sqlite:///{db}",
                          "--data", ctx.data, "--subset", plan.jobs_subset, "--val-size",
                          max(50, plan.jobs_subset // 10))
        row = {"jobs": jobs, "trials": plan.jobs_trials, "command": command_text(argv)}
        if reason is None:
            res = run_one(ctx, f"jobs{jobs}", argv, deadline)
            row["trials_finished"] = finished_trials(db, study_name(plan.jobs_arch))
            if res.ok:
                row.update(status=OK, seconds=res.seconds, trials_per_hour=plan.jobs_trials / (res.seconds / 3600))
            else:
                reason = res.reason()
                row.update(status=NOT_REACHED, reason=reason)
        else:
            row.update(status=NOT_REACHED, reason="an earlier --jobs run was not reached")
        rows.append(row)
    first = rows[0].get("trials_per_hour")
    for row in rows:
        if first and row.get("trials_per_hour"):
            row["speedup"] = row["trials_per_hour"] / first
    result = {"arch": plan.jobs_arch, "epochs": plan.jobs_epochs, "subset": plan.jobs_subset, "rows": rows}
    if reason:
        return not_reached(result, reason)
    result["status"] = OK
    return result


def markdown(part: dict) -> list[str]:
    """The part's intro line and table (seconds, trials per hour and speed-up per ``--jobs`` count)."""
    rows = [[str(r["jobs"]), str(r["trials"]), fmt(r.get("seconds"), 1), fmt(r.get("trials_per_hour"), 0),
             fmt(r.get("speedup"), 2), r["status"]] for r in part.get("rows", [])]
    intro = (f"`cifar-tune optimize --arch {part['arch']}`, {part['epochs']} epoch(s) per trial, no pruning; "
             "wall clock of the whole command." if "arch" in part else "")
    head = ["jobs", "trials", "seconds", "trials/hour", "speed-up", "status"]
    return [intro, ""] + table(head, rows)
