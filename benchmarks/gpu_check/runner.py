"""The command line: parse the arguments, run the probe, size the plan, run the other parts, record as it goes."""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import signal
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from . import agreement, e2e, jobs, probe, report, throughput
from .common import NOT_REACHED, OK, REPO, Context, log
from .machine import hide_tensorflow, machine_facts, smoke_backend, subprocess_env, synthetic_npz
from .plan import (
    FIRST_PARTS,
    GPU_LADDERS,
    GPU_PLAN,
    LIMITS,
    PART_NAMES,
    SMOKE_LADDERS,
    SMOKE_LIMITS,
    SMOKE_PLAN,
    Times,
    size,
    stretch,
)

DESCRIPTION = ("One check for a lent GPU machine: a probe that sizes the rest, throughput, engine agreement, trials "
               "per hour and the end-to-end job.")
# part name -> run(ctx, deadline) -> result dict, and -> its Markdown section; in PART_NAMES order
PARTS = {"probe": probe.run, "throughput": throughput.run, "agreement": agreement.run, "jobs": jobs.run,
         "e2e": e2e.run}
TABLES = {"probe": probe.markdown, "throughput": throughput.markdown, "agreement": agreement.markdown,
          "jobs": jobs.markdown, "e2e": e2e.markdown}


def run_part(ctx: Context, name: str, limit: float) -> dict:
    """One part under its time limit; whatever goes wrong, a result (``not reached`` with the reason)."""
    log(ctx, f"{name}: start (limit {limit:.0f} s)")
    start = time.monotonic()
    try:
        part = PARTS[name](ctx, start + limit)
    except Exception as e:  # noqa: BLE001 -- a bug in one part must not cost the others their results
        part = {"status": NOT_REACHED, "reason": f"gpu_check error: {type(e).__name__}: {e}"}
    if ctx.stop.is_set() and part["status"] != OK:
        part.update(status=NOT_REACHED, reason=ctx.stop_reason)
    part.update(limit_seconds=limit, wall_seconds=time.monotonic() - start)
    status = part["status"] + (f" ({part['reason']})" if part["status"] != OK else "")
    log(ctx, f"{name}: {status} after {part['wall_seconds']:.1f} s")
    return part


def _run_and_record(ctx: Context, name: str, limit: float, recorder: report.Recorder) -> dict:
    recorder.part(name, {"status": NOT_REACHED, "reason": "running when this file was written", "limit_seconds": limit})
    part = run_part(ctx, name, limit)
    recorder.part(name, part)
    return part


def run_stage(ctx: Context, names: list[str], limits: dict[str, float], recorder: report.Recorder, *,
              at_once: bool) -> None:
    """Run ``names`` (one after another, or all at once), recording each part as it ends.

    On the GPU the parts run one after another (they would compete for the card and spoil each other's timings).
    The smoke runs them all at once: its figures mean nothing, it only checks that every part still runs end to
    end, and most of its time is single-threaded process start-up that overlaps well. Ctrl-C reaches only the
    main thread: it sets ``ctx.stop``, which ends every part's commands (they run in sessions of their own).
    """
    if not names:
        return
    futures = {}
    pool = ThreadPoolExecutor(max_workers=len(names) if at_once else 1)
    try:
        for n in names:
            futures[n] = pool.submit(_run_and_record, ctx, n, limits[n], recorder)
        for future in futures.values():
            future.result()
    except KeyboardInterrupt:
        ctx.stop.set()
        recorder.save()  # now, with the running parts marked as running: the commands may take seconds to end
        for future in futures.values():
            future.cancel()  # parts not started yet
    finally:
        pool.shutdown(wait=True)
    for n in names:
        if n not in futures or futures[n].cancelled():
            recorder.part(n, {"status": NOT_REACHED, "reason": ctx.stop_reason, "limit_seconds": limits[n]})


def size_plan(ctx: Context, smoke: bool, probe_part: dict | None, source: str, limits: dict[str, float],
              e2e_jobs: int) -> dict:
    """Size every later part from the probe's times (``plan.size``); set ``ctx.plan``; return the record."""
    base, ladders = (SMOKE_PLAN, SMOKE_LADDERS) if smoke else (GPU_PLAN, GPU_LADDERS)
    times = Times.from_probe(probe_part)
    ctx.plan, ctx.sizing = size(base, ladders, times, limits, parallel=ctx.parallel, e2e_jobs=e2e_jobs)
    if times.source == "probe":
        ctx.sizing["times_source"] = f"the probe ({source})"
    for part, p in ctx.sizing["parts"].items():
        log(ctx, f"plan {part}: rung {p['rung'] + 1} of {p['rungs']}, estimate {p['estimate_seconds']:.0f} s "
                 f"(budget {p['budget_seconds']:.0f} s)")
    return ctx.sizing


def earlier_results(path: Path | None) -> dict:
    """An earlier invocation's results.json (the probe that sizes ``--part e2e``); ``{}`` if none is readable."""
    try:
        return json.loads(path.read_text()) if path else {}
    except (OSError, ValueError):
        return {}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=DESCRIPTION)
    p.add_argument("--out", required=True, help="output folder: results.json, results.md, logs/, work/")
    p.add_argument("--data", help="CIFAR-10 as .npz (x_train, y_train, x_test, y_test); default $CIFAR_TUNE_DATA, "
                                  "else .data/cifar10.npz in this checkout; --smoke makes its own")
    p.add_argument("--smoke", action="store_true", help="every part on the CPU at toy sizes")
    p.add_argument("--parts", "--part", dest="parts", default=None,
                   help="comma-separated subset of: " + ", ".join(PART_NAMES) + " (default: "
                        + ",".join(FIRST_PARTS) + "; e2e is the second command, --part e2e; --smoke: all five)")
    p.add_argument("--probe", default=None, metavar="RESULTS_JSON",
                   help="an earlier run's results.json whose probe sizes the parts when probe is not run "
                        "(default: OUT/results.json); its other parts are kept in this run's record")
    p.add_argument("--jobs", type=int, default=1, help="--jobs for e2e's optimize commands (default 1)")
    p.add_argument("--copy-to", default=None, metavar="DIR",
                   help="also write results.json and results.md there, every time (on the GPU: $OUT)")
    p.add_argument("--parallel", type=int, default=None,
                   help="agreement runs at a time (default: 4, at most the CPU count; on a GPU each gets its "
                        "share of its memory)")
    p.add_argument("--no-preallocate", dest="preallocate", action="store_false",
                   help="set XLA_PYTHON_CLIENT_PREALLOCATE=false for every product command (see gpu_check.md)")
    for name in PART_NAMES:
        p.add_argument(f"--{name}-limit", type=float, default=None, metavar="SECONDS",
                       help=f"time limit of part {name} (default {LIMITS[name]} s; --smoke {SMOKE_LIMITS[name]} s)")
    a = p.parse_args(argv)
    a.parts = [s.strip() for s in (a.parts or ",".join(PART_NAMES if a.smoke else FIRST_PARTS)).split(",")
               if s.strip()]
    bad = [s for s in a.parts if s not in PART_NAMES]
    if bad or not a.parts:
        p.error(f"--parts: unknown part {bad[0] if bad else a.parts!r}; choose from {', '.join(PART_NAMES)}")
    for name in PART_NAMES:
        limit = getattr(a, f"{name}_limit")
        if limit is not None and limit <= 0:
            p.error(f"--{name}-limit must be positive")
    if a.parallel is not None and a.parallel < 1:
        p.error("--parallel must be at least 1")
    if a.jobs < 1:
        p.error("--jobs must be at least 1")
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


def _on_sigterm(ctx: Context, recorder: report.Recorder):
    def handler(signum, frame):  # the main thread, between two bytecodes: save now, then let the parts end
        ctx.stop_reason = "terminated (SIGTERM)"
        ctx.stop.set()
        recorder.save()
    return handler


def _first_results(a: argparse.Namespace, argv, started: str, env: dict, data, limits, ctx: Context,
                   shim) -> dict:
    results = {"started": started, "smoke": a.smoke, "argv": sys.argv if argv is None else argv,
               "data": str(data), "machine": machine_facts(env), "limits_seconds": limits,
               "hidden_tensorflow": shim is not None, "jax_preallocate": a.preallocate, "parallel": ctx.parallel,
               "e2e_jobs": a.jobs, "plan": None, "parts": {}}
    earlier_path = Path(a.probe) if a.probe else ctx.out / "results.json"
    earlier = earlier_results(earlier_path) if "probe" not in a.parts else {}
    for n in PART_NAMES:  # an earlier command's parts stay in the record (the e2e command keeps the first's)
        old = earlier.get("parts", {}).get(n)
        keep = n not in a.parts and old and old.get("reason") != "not selected (--parts)"
        results["parts"][n] = ({**old, "earlier_run": earlier.get("started"), "earlier_file": str(earlier_path)}
                               if keep else {"status": NOT_REACHED, "reason": "not selected (--parts)"
                                             if n not in a.parts else "not started", "limit_seconds": limits[n]})
    return results


def main(argv: list[str] | None = None) -> int:
    """Run the check; 0, or 130 / 143 after Ctrl-C / SIGTERM (bad arguments exit 2 before anything is written)."""
    a = parse_args(argv)
    t0, started = time.monotonic(), datetime.now(UTC).isoformat(timespec="seconds")
    out = Path(a.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    folders = [out] + ([Path(a.copy_to).resolve()] if a.copy_to else [])
    for folder in folders[1:]:
        folder.mkdir(parents=True, exist_ok=True)
    shim = None
    with tempfile.TemporaryDirectory(prefix="gpu_check-") as tmp:
        backend = os.environ.get("KERAS_BACKEND") or (smoke_backend() if a.smoke else "jax")
        if a.smoke and backend == "jax" and importlib.util.find_spec("tensorflow"):
            shim = hide_tensorflow(Path(tmp) / "no_tensorflow")
        env = subprocess_env(a.smoke, backend, shim, preallocate=a.preallocate)
        data = a.data or synthetic_npz(out / "smoke_data.npz")
        limits = {n: getattr(a, f"{n}_limit") or (SMOKE_LIMITS if a.smoke else LIMITS)[n] for n in PART_NAMES}
        ctx = Context(plan=SMOKE_PLAN if a.smoke else GPU_PLAN, data=Path(data), out=out, env=env,
                      parallel=a.parallel or max(1, min(4, os.cpu_count() or 1)), t0=t0)
        results = _first_results(a, argv, started, env, data, limits, ctx, shim)
        recorder = report.Recorder(results, TABLES, folders, t0)
        ctx.checkpoint = lambda n, r: recorder.part(n, {**r, "limit_seconds": limits[n]})
        previous = signal.signal(signal.SIGTERM, _on_sigterm(ctx, recorder))
        try:
            md = _run(ctx, a, results, recorder, limits)
        finally:
            signal.signal(signal.SIGTERM, previous)
    log(ctx, f"wrote {out / 'results.json'} and {out / 'results.md'}")
    print(md)
    if ctx.stop.is_set():
        return 143 if ctx.stop_reason.startswith("terminated") else 130
    return 0


def _run(ctx: Context, a: argparse.Namespace, results: dict, recorder: report.Recorder, limits: dict) -> str:
    log(ctx, f"{'smoke ' if a.smoke else ''}check: backend {ctx.env['KERAS_BACKEND']}, data {ctx.data}, "
             f"out {ctx.out}, parts {','.join(a.parts)}")
    recorder.save()
    run_stage(ctx, ["probe"] if "probe" in a.parts else [], limits, recorder, at_once=False)
    probe_part = results["parts"]["probe"]
    later = [n for n in PART_NAMES if n in a.parts and n != "probe" and getattr(a, f"{n}_limit") is None]
    if "probe" in a.parts:
        limits.update(stretch(limits, later, limits["probe"] - probe_part.get("wall_seconds", limits["probe"])))
    source = "this run" if "probe" in a.parts else results["parts"]["probe"].get("earlier_file", "none")
    results["plan"] = size_plan(ctx, a.smoke, probe_part if probe_part.get("rows") else None, source, limits,
                                a.jobs)
    if probe_part.get("machine"):
        results["machine"]["seen_by_probe"] = probe_part["machine"]
    recorder.save()
    rest = [n for n in PART_NAMES if n in a.parts and n != "probe"]
    if ctx.stop.is_set():
        for n in rest:
            recorder.part(n, {"status": NOT_REACHED, "reason": ctx.stop_reason, "limit_seconds": limits[n]})
    else:
        run_stage(ctx, rest, limits, recorder, at_once=a.smoke)
    machine = results["parts"]["throughput"].get("machine")
    if machine:
        results["machine"]["seen_by_throughput"] = machine
    return recorder.save()
