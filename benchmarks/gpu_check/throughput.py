"""Part ``throughput``: seconds per training epoch, stock fit (engine keras) against the fast engine.

Runs ``benchmarks/throughput.py`` once for the plan's architectures (on the GPU all five, heaviest first, so the
light MLPs are the ones missing if time runs out) with both engines at batch 32 float32, 512 float32 and 512 bf16
(``--bf16`` adds the largest batch in bf16 on top of the float32 ones), one warm-up and one timed epoch of up to
50,000 images (the plan sizes it from the probe). Every row keeps each engine's validation accuracy and whether
its losses were finite. Time limit: 60 s on the GPU (``--throughput-limit``).
"""

from __future__ import annotations

import json
import sys

from .common import OK, REPO, Context, command_text, not_reached, run_one
from .report import fmt, table

SCRIPT = REPO / "benchmarks" / "throughput.py"
METRICS = ("seconds_per_epoch", "images_per_second", "compile_seconds", "val_accuracy", "finite")


def run(ctx: Context, deadline: float) -> dict:
    """Per (arch, batch, precision) row and engine: seconds per epoch, images per second, compile seconds; the
    ratio keras s / fast s. Read from the JSON throughput.py writes after every measurement, so a run cut short
    keeps the rows it finished (``not reached``, with the reason)."""
    plan = ctx.plan
    out_json = ctx.out / "throughput.json"
    out_json.unlink(missing_ok=True)
    argv = [sys.executable, str(SCRIPT), "--archs", ",".join(plan.throughput_archs), "--engines", "keras,fast",
            "--images", str(plan.throughput_images), *(["--val", str(plan.throughput_val)] if plan.throughput_val
                                                       else []), "--epochs", "1",
            "--batches", ",".join(map(str, plan.throughput_batches)), "--bf16" if plan.throughput_bf16 else "--no-bf16",
            "--data", str(ctx.data), "--json", str(out_json)]
    res = run_one(ctx, "throughput", argv, deadline)
    result = {"command": command_text(argv), "images": plan.throughput_images, "seconds": res.seconds}
    report = read_json(out_json)
    result["rows"] = [_row(r) for r in report.get("rows", []) if "keras" in r or "fast" in r]
    if res.ok and report.get("complete"):
        result["machine"] = report.get("machine")
        result["status"] = OK
        return result
    return not_reached(result, res.reason() if not res.ok else "throughput.py ended without its complete JSON")


def read_json(path) -> dict:
    """throughput.py's JSON; ``{}`` when it wrote none (it writes whole files only)."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _row(row: dict) -> dict:
    out = {"arch": row["arch"], "batch": row["batch"], "precision": row["precision"]}
    for engine in ("keras", "fast"):
        if engine in row:
            out[engine] = {k: row[engine].get(k) for k in METRICS}
    if "keras" in out and "fast" in out:
        out["ratio"] = out["keras"]["seconds_per_epoch"] / out["fast"]["seconds_per_epoch"]
    return out


def markdown(part: dict) -> list[str]:
    """The part's intro line and table (seconds, images per second, compile seconds per engine)."""
    rows = []
    for r in part.get("rows", []):
        k, f = r.get("keras", {}), r.get("fast", {})
        rows.append([r["arch"], str(r["batch"]), r["precision"],
                     fmt(k.get("seconds_per_epoch")), fmt(k.get("images_per_second"), 0),
                     fmt(f.get("seconds_per_epoch")), fmt(f.get("images_per_second"), 0),
                     f"{r['ratio']:.2f}x" if "ratio" in r else "-",
                     fmt(k.get("compile_seconds"), 1), fmt(f.get("compile_seconds"), 1),
                     fmt(k.get("val_accuracy")), fmt(f.get("val_accuracy")), fmt(k.get("finite")),
                     fmt(f.get("finite"))])
    images = part.get("images")
    intro = (f"Seconds per epoch of {images:,} images (one timed epoch after a warm-up); ratio = keras s / fast s."
             if isinstance(images, int) else "")
    head = ["arch", "batch", "precision", "keras s/epoch", "keras img/s", "fast s/epoch", "fast img/s", "ratio",
            "keras compile s", "fast compile s", "keras val acc", "fast val acc", "keras finite", "fast finite"]
    return [intro, ""] + table(head, rows)
