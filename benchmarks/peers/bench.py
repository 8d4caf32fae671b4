"""The benchmark loop: for each repetition, architecture and tool, the search in its own measured process, then the
retraining of its best config on compare's fresh seeds; every finished run is written to ``results.json`` (and the
Markdown table remade) at once, so a partial run still leaves its data.

Per run (``record``): wall time of the search process (start-up included: imports, Ray's cluster), trials, epochs
trained, trials per hour, time from the process start until the best validation loss was first recorded, the best
validation loss and accuracy as the tool reports them, the test accuracy of the best config per retraining seed,
peak and end-of-study resident memory of the process tree and its least-squares growth per trial, and what the
search left on disk (the tool's own files; the benchmark's logs are not counted).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

from . import common, measure, table

OURS = {"epochs.jsonl", "search.json", "search.log", "retrain.json", "retrain.log", "cifar-tune.log"}


def _env(tool: str, ray_tmp: str | None) -> dict:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": str(common.REPO)}
    if ray_tmp:
        env["RAY_TMPDIR"] = ray_tmp
    return env


def _disk(workdir: Path, ray_tmp: str | None) -> int:
    own = sum(measure.du_bytes(p) if p.is_dir() else p.stat().st_size
              for p in workdir.iterdir() if p.name not in OURS)
    return own + (measure.du_bytes(Path(ray_tmp)) if ray_tmp else 0)


def record(rep: int, tool: str, budget: common.Budget, workdir: Path) -> dict:
    """Search and retrain ``tool`` on ``budget`` in ``workdir``; the measured record (``error`` set on failure)."""
    if workdir.exists():
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True)
    ray_tmp = tempfile.mkdtemp(prefix="ctp", dir="/tmp") if tool == "ray-tune" else None
    cmd = [sys.executable, "-m", "benchmarks.peers.runner"]
    out = {"rep": rep, "arch": budget.arch, "tool": tool, "seed": budget.seed}
    try:
        m = measure.run_measured([*cmd, "search", tool, budget.to_json(), str(workdir)], workdir / "search.log",
                                 _env(tool, ray_tmp))
        (workdir / "series.json").write_text(json.dumps(m["series"]))
        if m["returncode"] != 0:
            return {**out, "error": _tail(workdir / "search.log"), "wall_s": m["wall_s"]}
        out.update(_search_metrics(json.loads((workdir / "search.json").read_text()), m))
        out["disk_mb"] = round(_disk(workdir, ray_tmp) / 2**20, 2)
    finally:
        if ray_tmp:
            shutil.rmtree(ray_tmp, ignore_errors=True)
    r = measure.run_measured([*cmd, "retrain", tool, budget.to_json(), str(workdir)], workdir / "retrain.log",
                             _env(tool, None))
    if r["returncode"] != 0:
        return {**out, "error": "retrain: " + _tail(workdir / "retrain.log")}
    out["test"] = json.loads((workdir / "retrain.json").read_text())["runs"]
    out["retrain_s"] = round(r["wall_s"], 1)
    return out


def _search_metrics(s: dict, m: dict) -> dict:
    series, ends = m["series"], s["trial_ends"]
    wall = m["wall_s"]
    return {"wall_s": round(wall, 1), "trials": s["trials"], "epochs": s["epochs"],
            "trials_per_hour": round(s["trials"] / wall * 3600, 1),
            "time_to_best_s": round(s["best_time"] - m["start"], 1) if s.get("best_time") else None,
            "best_val_loss": s["best_val_loss"], "best_val_accuracy": s["best_val_accuracy"],
            "peak_rss_mb": max((x[1] for x in series), default=None),
            "end_rss_mb": measure.rss_at(series, ends[-1]) if ends else None,
            "growth_mb_per_trial": _round(measure.growth_per_trial(series, ends)),
            "max_processes": max((x[2] for x in series), default=None),
            "split": s["split"], "split_matches": s["split"] == s.get("split_peers", s["split"]),
            "best_config": s["best_config"], "versions": s["versions"], "notes": s["notes"],
            # [[s since the search process started, best validation loss so far], ...] (common.anytime)
            "anytime": [[round(t - m["start"], 1), v] for t, v in s.get("anytime", [])]}


def _round(x, n=2):
    return None if x is None else round(x, n)


def _tail(path: Path, n: int = 1500) -> str:
    return path.read_text(errors="replace")[-n:] if path.exists() else ""


def run(budgets: list[common.Budget], tools: list[str], repeats: int, out: Path, work: Path, meta: dict,
        vary_seed: bool = False) -> dict:
    """Every (repetition, architecture, tool) in turn; ``out/results.json`` and ``out/table.md`` rewritten after
    each run (runs already in results.json, same repetition, architecture and tool, are kept and skipped).
    ``vary_seed``: repetition r runs each budget with its seed + r (each run records its ``seed``). Raises
    ``SystemExit`` before running anything when results.json holds a repetition run on another study seed."""
    out.mkdir(parents=True, exist_ok=True)
    path = out / "results.json"
    results = json.loads(path.read_text()) if path.exists() else {"runs": []}
    per_rep = [[replace(b, seed=b.seed + rep) if vary_seed else b for b in budgets] for rep in range(repeats)]
    plan = {(rep, b.arch): b.seed for rep, bs in enumerate(per_rep) for b in bs}
    for r in (r for r in results["runs"] if "error" not in r):  # kept runs; before "seed" was recorded: seed 0
        if plan.get((r["rep"], r["arch"]), r.get("seed", 0)) != r.get("seed", 0):
            raise SystemExit(f"{path}: repetition {r['rep']} of {r['arch']} ran on study seed {r.get('seed', 0)}, "
                             f"this command gives it {plan[(r['rep'], r['arch'])]}; choose another --out")
    earlier = results.get("commands", [results["meta"]["command"]] if "meta" in results else [])
    results["meta"], results["commands"] = meta, [*earlier, meta["command"]]  # every invocation that added runs
    done = {(r["rep"], r["arch"], r["tool"]) for r in results["runs"] if "error" not in r}
    results["runs"] = [r for r in results["runs"] if (r["rep"], r["arch"], r["tool"]) in done]
    for rep, rep_budgets in enumerate(per_rep):
        for budget in rep_budgets:
            for tool in tools:
                if (rep, budget.arch, tool) in done:
                    continue
                print(f"[peers] rep {rep} {budget.arch} {tool} ...", flush=True)
                rec = record(rep, tool, budget, work / f"rep{rep}" / budget.arch / tool)
                print(f"[peers]   {json.dumps({k: v for k, v in rec.items() if k not in ('best_config',)})[:600]}",
                      flush=True)
                results["runs"].append(rec)
                path.write_text(json.dumps(results, indent=1))
                (out / "table.md").write_text(table.markdown(results))
    return results
