"""The command line: parse the arguments, run the selected parts under their limits, write the results."""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from . import agreement, e2e, jobs, report, throughput
from .common import NOT_REACHED, OK, REPO, Context, log
from .machine import hide_tensorflow, machine_facts, smoke_backend, subprocess_env, synthetic_npz
from .plan import GPU_PLAN, LIMITS, PART_NAMES, SMOKE_LIMITS, SMOKE_PLAN

DESCRIPTION = "One check for a lent GPU machine: throughput, engine agreement, trials per hour and the end-to-end job."
# part name -> run(ctx, deadline) -> result dict, and -> its Markdown section; in PART_NAMES order
PARTS = {"throughput": throughput.run, "agreement": agreement.run, "jobs": jobs.run, "e2e": e2e.run}
TABLES = {"throughput": throughput.markdown, "agreement": agreement.markdown, "jobs": jobs.markdown,
          "e2e": e2e.markdown}


def run_part(ctx: Context, name: str, limit: float) -> dict:
    """One part under its time limit; whatever goes wrong, a result (``not reached`` with the reason)."""
    log(ctx, f"{name}: start (limit {limit:.0f} s)")
    start = time.monotonic()
    try:
        part = PARTS[name](ctx, start + limit)
    except Exception as e:  # noqa: BLE001 -- a bug in one part must not cost the others their results
        part = {"status": NOT_REACHED, "reason": f"gpu_check error: {type(e).__name__}: {e}"}
    if ctx.stop.is_set() and part["status"] != OK:
        part.update(status=NOT_REACHED, reason="interrupted by the user")
    part.update(limit_seconds=limit, wall_seconds=time.monotonic() - start)
    status = part["status"] + (f" ({part['reason']})" if part["status"] != OK else "")
    log(ctx, f"{name}: {status} after {part['wall_seconds']:.1f} s")
    return part


def run_parts(ctx: Context, selected: list[str], limits: dict[str, float], *, at_once: bool) -> tuple[dict, bool]:
    """Every part's result, in PART_NAMES order, and whether the user interrupted.

    On the GPU the parts run one after another (they would compete for the card and spoil each other's timings).
    The smoke runs them all at once: its figures mean nothing, it only checks that every part still runs end to
    end, and most of its time is single-threaded process start-up that overlaps well. Ctrl-C reaches only the
    main thread: it sets ``ctx.stop``, which ends every part's commands (they run in sessions of their own).
    """
    names = [n for n in PART_NAMES if n in selected]
    results = {n: {"status": NOT_REACHED, "reason": "not selected (--parts)", "limit_seconds": limits[n]}
               for n in PART_NAMES if n not in selected}
    interrupted, futures = False, {}
    pool = ThreadPoolExecutor(max_workers=len(names) if at_once else 1)
    try:
        for n in names:
            futures[n] = pool.submit(run_part, ctx, n, limits[n])
        for future in futures.values():
            future.result()
    except KeyboardInterrupt:
        interrupted = True
        ctx.stop.set()
        for future in futures.values():
            future.cancel()  # parts not started yet
    finally:
        pool.shutdown(wait=True)
    for n in names:
        future = futures.get(n)
        results[n] = future.result() if future and not future.cancelled() else {
            "status": NOT_REACHED, "reason": "interrupted by the user", "limit_seconds": limits[n]}
    return {n: results[n] for n in PART_NAMES}, interrupted


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=DESCRIPTION)
    p.add_argument("--out", required=True, help="output folder: results.json, results.md, logs/, work/")
    p.add_argument("--data", help="CIFAR-10 as .npz (x_train, y_train, x_test, y_test); default $CIFAR_TUNE_DATA, "
                                  "else .data/cifar10.npz in this checkout; --smoke makes its own")
    p.add_argument("--smoke", action="store_true", help="every part on the CPU at toy sizes")
    p.add_argument("--parts", default=",".join(PART_NAMES), help="comma-separated subset of: " + ", ".join(PART_NAMES))
    p.add_argument("--parallel", type=int, default=None,
                   help="agreement runs at a time (default: 4, at most the CPU count; on a GPU each gets its "
                        "share of its memory)")
    p.add_argument("--no-preallocate", dest="preallocate", action="store_false",
                   help="set XLA_PYTHON_CLIENT_PREALLOCATE=false for every product command (see gpu_check.md)")
    for name in PART_NAMES:
        p.add_argument(f"--{name}-limit", type=float, default=None, metavar="SECONDS",
                       help=f"time limit of part {name} (default {LIMITS[name]} s; --smoke {SMOKE_LIMITS[name]} s)")
    a = p.parse_args(argv)
    a.parts = [s.strip() for s in a.parts.split(",") if s.strip()]
    bad = [s for s in a.parts if s not in PART_NAMES]
    if bad or not a.parts:
        p.error(f"--parts: unknown part {bad[0] if bad else a.parts!r}; choose from {', '.join(PART_NAMES)}")
    for name in PART_NAMES:
        limit = getattr(a, f"{name}_limit")
        if limit is not None and limit <= 0:
            p.error(f"--{name}-limit must be positive")
    if a.parallel is not None and a.parallel < 1:
        p.error("--parallel must be at least 1")
    if not a.smoke:
        a.data = a.data or os.environ.get("CIFAR_TUNE_DATA") or str(REPO / ".data" / "cifar10.npz")
    if a.data:
        a.data = _check_npz(p, a.data)
    return a


def _check_npz(p: argparse.ArgumentParser, data: str) -> Path:
    path = Path(data).expanduser()
    if path.suffix != ".npz" or not path.is_file():
        p.error(f"--data: not an .npz file: {data}")
    try:
        with np.load(path) as f:
            missing = {"x_train", "y_train", "x_test", "y_test"} - set(f.files)
    except (OSError, ValueError) as e:
        p.error(f"--data: cannot read {data}: {e}")
    if missing:
        p.error(f"--data: {data} lacks {', '.join(sorted(missing))}")
    return path.resolve()


def main(argv: list[str] | None = None) -> int:
    """Run the check; 0, or 130 when the user interrupted it (bad arguments exit 2 before anything is written)."""
    a = parse_args(argv)
    t0, started = time.monotonic(), datetime.now(timezone.utc).isoformat(timespec="seconds")
    out = Path(a.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    shim = None
    with tempfile.TemporaryDirectory(prefix="gpu_check-") as tmp:
        backend = os.environ.get("KERAS_BACKEND") or (smoke_backend() if a.smoke else "jax")
        if a.smoke and backend == "jax" and importlib.util.find_spec("tensorflow"):
            shim = hide_tensorflow(Path(tmp) / "no_tensorflow")
        env = subprocess_env(a.smoke, backend, shim, preallocate=a.preallocate)
        data = a.data or synthetic_npz(out / "smoke_data.npz")
        limits = SMOKE_LIMITS if a.smoke else LIMITS
        limits = {n: getattr(a, f"{n}_limit") or limits[n] for n in PART_NAMES}
        ctx = Context(plan=SMOKE_PLAN if a.smoke else GPU_PLAN, data=Path(data), out=out, env=env,
                      parallel=a.parallel or max(1, min(4, os.cpu_count() or 1)), t0=t0)
        results = {"started": started, "smoke": a.smoke, "argv": sys.argv if argv is None else argv,
                   "data": str(data), "machine": machine_facts(env), "limits_seconds": limits,
                   "hidden_tensorflow": shim is not None, "jax_preallocate": a.preallocate,
                   "parallel": ctx.parallel, "parts": {}}
        log(ctx, f"{'smoke ' if a.smoke else ''}check: backend {env['KERAS_BACKEND']}, data {data}, out {out}")
        results["parts"], interrupted = run_parts(ctx, a.parts, limits, at_once=a.smoke)
        machine = results["parts"]["throughput"].get("machine")
        if machine:
            results["machine"]["seen_by_throughput"] = machine
        results["seconds"] = time.monotonic() - t0
        md = report.write(out, results, TABLES)
    log(ctx, f"wrote {out / 'results.json'} and {out / 'results.md'}")
    print(md)
    return 130 if interrupted else 0
