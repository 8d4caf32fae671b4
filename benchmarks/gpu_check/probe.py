"""Part ``probe`` (first, ≤ 2 minutes on the GPU): per-epoch times that size the later parts, and the numerics check.

``benchmarks/throughput.py`` trains every architecture (heaviest first) with both engines (keras, fast) at batch 32
and 512 in float32 for two epochs of 5,000 images (plus 1,000 for validation). 5,000 images because the probe
must fit its two minutes with 20 compiles on a fresh machine (compile dominates there), yet an epoch must be long
enough to time the steady state: 157 steps at batch 32 (10 at 512), and accuracy clearly above chance after two
epochs. The first epoch includes the compile (the fast engine's ahead-of-time compile is added to it); the second
is the steady state. Each row also keeps the validation accuracy and whether every loss was finite.

Then, if this checkout's ``cifar-tune doctor`` has ``--check`` (the per-architecture float32/bf16 numerics
check, in ``cifar_tune/engines/numerics.py``), it runs with what is left of the part's time; its exit status is
the verdict (the output is in ``OUT/logs/``). Otherwise the numerics entry says it is not available.
"""

from __future__ import annotations

import subprocess
import sys
import time

from .common import OK, REPO, Context, cifar_tune, command_text, not_reached, run_one
from .report import fmt, table
from .throughput import read_json

SCRIPT = REPO / "benchmarks" / "throughput.py"
NUMERICS_SHARE = 0.25  # of the part's time, kept for doctor --check when this checkout has it
NOT_AVAILABLE = "not available in this checkout"


def run(ctx: Context, deadline: float) -> dict:
    """``rows``: per (arch, engine, batch) ``first_epoch_seconds`` (compile included), ``second_epoch_seconds``,
    ``compile_seconds`` (first − second), ``val_accuracy`` (a fraction) and ``finite``; ``startup_seconds`` (the
    command's wall time less everything it timed: a process's start-up, data loading, model building);
    ``numerics``: the doctor check's status."""
    plan = ctx.plan
    has_check = doctor_has_check(ctx)
    start = time.monotonic()
    timing_deadline = deadline - NUMERICS_SHARE * (deadline - start) if has_check else deadline
    out_json = ctx.out / "probe.json"
    out_json.unlink(missing_ok=True)
    argv = [sys.executable, str(SCRIPT), "--archs", ",".join(plan.probe_archs), "--engines", "keras,fast",
            "--images", str(plan.probe_images), "--val", str(plan.probe_val), "--epochs", "1",
            "--batches", ",".join(map(str, plan.probe_batches)), "--no-bf16", "--data", str(ctx.data),
            "--json", str(out_json)]
    res = run_one(ctx, "probe", argv, timing_deadline)
    stored = read_json(out_json)
    rows = [row for r in stored.get("rows", []) for row in _rows(r)]
    timed = sum(r["first_epoch_seconds"] + r["second_epoch_seconds"] for r in rows)
    result = {"command": command_text(argv), "images": plan.probe_images, "val_images": plan.probe_val,
              "seconds": res.seconds, "startup_seconds": max(0.0, res.seconds - timed), "rows": rows,
              "machine": stored.get("machine")}
    result["numerics"] = numerics(ctx, deadline) if has_check else {"status": NOT_AVAILABLE}
    if res.ok and stored.get("complete"):
        result["status"] = OK
        return result
    return not_reached(result, res.reason() if not res.ok else "throughput.py ended without its complete JSON")


def _rows(stored_row: dict) -> list[dict]:
    out = []
    for engine in ("keras", "fast"):
        m = stored_row.get(engine)
        if not m or len(m.get("epoch_seconds", [])) < 2:
            continue
        aot = (m.get("info") or {}).get("compile_seconds") or 0.0 if engine == "fast" else 0.0  # before epoch 1 (JAX)
        first, second = m["epoch_seconds"][0] + aot, m["epoch_seconds"][1]
        out.append({"arch": stored_row["arch"], "engine": engine, "batch": stored_row["batch"],
                    "first_epoch_seconds": first, "second_epoch_seconds": second,
                    "compile_seconds": max(0.0, first - second), "val_accuracy": m.get("val_accuracy"),
                    "finite": m.get("finite")})
    return out


def doctor_has_check(ctx: Context) -> bool:
    """Whether ``cifar-tune doctor --help`` lists ``--check`` (its help text: the one stdout read, for a flag)."""
    try:
        proc = subprocess.run(cifar_tune("doctor", "--help"), capture_output=True, text=True, env=ctx.env,
                              cwd=REPO, timeout=60, check=False)
    except (OSError, subprocess.SubprocessError):
        return False
    return proc.returncode == 0 and "--check" in proc.stdout


def numerics(ctx: Context, deadline: float) -> dict:
    """``cifar-tune doctor --check`` under the deadline: ``passed`` when it exits 0, else the reason."""
    argv = cifar_tune("doctor", "--check", "--data", ctx.data)
    res = run_one(ctx, "numerics", argv, deadline)
    entry = {"command": command_text(argv), "seconds": res.seconds, "log": "logs/numerics.out"}
    if res.ok:
        return {**entry, "status": "passed"}
    return {**entry, "status": "failed" if res.returncode is not None else "not reached", "reason": res.reason()}


def markdown(part: dict) -> list[str]:
    """The part's intro line (images, numerics verdict) and table (epoch seconds, accuracy, finite per row)."""
    rows = [[r["arch"], r["engine"], str(r["batch"]), fmt(r.get("first_epoch_seconds"), 2),
             fmt(r.get("second_epoch_seconds"), 2), fmt(r.get("compile_seconds"), 1), fmt(r.get("val_accuracy"), 3),
             fmt(r.get("finite"))] for r in part.get("rows", [])]
    numerics_entry = part.get("numerics", {})
    intro = (f"Two epochs of {part['images']:,} images (+{part['val_images']:,} validation), float32; start-up "
             f"{part.get('startup_seconds', 0):.1f} s. Numerics check (doctor --check): {numerics_entry.get('status')}"
             + (f" — {numerics_entry['reason']}" if "reason" in numerics_entry else "") + "."
             if "images" in part else "")
    head = ["arch", "engine", "batch", "epoch 1 s (compile incl.)", "epoch 2 s", "compile s", "val accuracy",
            "finite"]
    return [intro, ""] + table(head, rows)
