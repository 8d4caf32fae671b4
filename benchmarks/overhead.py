"""What cifar-tune costs around ``fit`` (issue 27 item 6): a plain Optuna script and cifar-tune side by side in one
run, on identical work, interleaved repetitions.

    PYTHONPATH=. python benchmarks/overhead.py run --out results/overhead-DATE --data cifar10.npz \
        [--archs mlp_l2 cnn] [--variants plain inline processes jobs2 plain2] [--reps 3] [--trials 6] \
        [--before OLD_CHECKOUT] \
        [--epochs 2] [--subset 5000] [--seed 0]
    PYTHONPATH=. python benchmarks/overhead.py table results/overhead-DATE    # table.md again from results.json

Identical work: every variant trains ``--trials`` times the seed config of the architecture for ``--epochs``
(stock ``fit``, the same seed every trial) on the same split (``--data``, ``--subset``, a tenth for validation,
``--seed``). The plain script (``overhead_plain.py``) builds, compiles and seeds the model with cifar-tune's own
code; cifar-tune is given a space whose one parameter has one choice, the seed's (a parameter a space leaves out
keeps the seed's value), ``--pruner none``, ``--engine keras``. Each run checks it: its validation losses are in
``results.json`` beside the plain run's of the same repetition.

``VARIANTS`` says how each variant runs; ``plain2`` is the plain script as two processes at once, each doing half
the trials (the reference of ``jobs2``). Each run is a child process tree in its own folder
(``runs/<arch>-<variant>-<rep>``: log, study, the plain script's JSON). Measured per run: ``cpu_s`` (user + sys of
the children and all their descendants, ``os.wait4``), ``wall_s``, ``peak_mb`` (the tree's summed RSS,
``benchmarks/peers/measure.tree_rss_mb``, every 0.2 s, and at least its largest process's peak as the kernel
counts it, ``ru_maxrss``; shared pages count once per process), ``startup_s`` (run start to its first trial's
start), ``outside_fit_s`` (per trial: wall between the starts of consecutive trials of one worker slot less the
first one's ``fit``; mean over trials), ``fit_s`` and ``fit_cpu_s`` (the plain script's only: cifar-tune records no
CPU per trial), ``warmup_mb`` and ``growth_mb`` (``memory_steps``: a process's RSS step from its first trial to its
second, and its mean step from one trial to the next after that; cifar-tune's ``rss_mb`` trial attribute).
``results.json`` is written after every run; a run already there is skipped (``run`` resumes).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from importlib import metadata
from itertools import pairwise
from pathlib import Path

HERE = Path(__file__).resolve().parent
# variant -> how it runs: the plain script in `procs` processes, or `python -m cifar_tune optimize` plus `args`
# (`--executor` chooses where the trials run: the command's process, or one worker process under a supervisor).
VARIANTS = {
    "plain": {"plain": 1},
    "inline": {"args": ["--executor", "inline"]},  # the trials in the command's process
    "processes": {"args": ["--executor", "processes"]},  # a light supervisor + one worker process
    "jobs2": {"args": ["--jobs", "2"]},
    "plain2": {"plain": 2},
    # the cifar-tune checkout given by --before (an older commit, e.g. a `git worktree` of it), run the way it ran
    # then: in the command's process, and as "any study over 10 trials" ran (a worker process every 3 trials)
    "inline-before": {"args": [], "before": True},
    "processes-before": {"args": ["--trials-per-process", "3"], "before": True},
}
REFERENCE = {"inline": "plain", "processes": "plain", "jobs2": "plain2", "inline-before": "plain",
             "processes-before": "plain"}  # what each ratio divides by
# (variant, figure, bound, relative to the reference?): issue 27's targets on this 2-core CPU
TARGETS = [("inline", "cpu_s", 1.05, True), ("inline", "peak_mb", 1.10, True),
           ("inline", "outside_fit_s", 0.5, False), ("jobs2", "cpu_s", 1.15, True)]
COLUMNS = [("wall_s", "wall s", "{:.1f}"), ("cpu_s", "CPU s", "{:.1f}"), ("fit_cpu_s", "fit CPU s", "{:.1f}"),
           ("peak_mb", "peak MB", "{:.0f}"), ("startup_s", "to 1st trial s", "{:.1f}"),
           ("outside_fit_s", "outside fit s/trial", "{:.2f}"), ("warmup_mb", "MB 1st→2nd trial", "{:+.1f}"),
           ("growth_mb", "MB/trial after 2nd", "{:+.1f}"),
           ("workers", "workers", "{:.0f}"), ("max_processes", "max procs", "{:.0f}")]
RATIOS = [("cpu_s", "CPU"), ("peak_mb", "peak memory"), ("outside_fit_s", "outside fit")]
BUDGET = ("trials", "epochs", "subset", "data", "seed")


def commands(v: str, arch: str, a, run: Path) -> list[list[str]]:
    """The command lines of variant ``v`` (several: started at once), for run folder ``run``."""
    spec = VARIANTS[v]
    if "plain" in spec:
        n = spec["plain"]
        return [[sys.executable, str(HERE / "overhead_plain.py"), "--arch", arch, "--data", a.data, "--seed",
                 str(a.seed), "--subset", str(a.subset), "--epochs", str(a.epochs), "--trials",
                 str(a.trials // n + (k < a.trials % n)), "--out", str(run / f"plain-{k}.json")] for k in range(n)]
    from cifar_tune.models import configs  # plain data

    space, batch = run / "space.toml", configs.baseline(arch)["batch_size"]  # one parameter, one choice: the seed's
    space.write_text(f'arch = "{arch}"\n[params.batch_size]\ntype = "categorical"\nchoices = [{batch}]\n'
                     f'baseline = {batch}\n')
    extra = list(spec["args"])
    return [[sys.executable, "-m", "cifar_tune", "optimize", "--arch", arch, "--space", str(space), "--data", a.data,
             "--seed", str(a.seed), "--subset", str(a.subset), "--epochs", str(a.epochs), "--n-trials",
             str(a.trials), "--pruner", "none", "--engine", "keras", "--storage", f"sqlite:///{run / 'study.db'}",
             *extra]]


def measure(cmds: list[list[str]], run: Path, env: dict | None = None) -> dict:
    """Start ``cmds`` at once in ``run`` (with ``env``) and wait for them; their trees' CPU seconds, wall, peak RSS,
    exit codes."""
    from benchmarks.peers.measure import tree_rss_mb  # the peers benchmark's instrument: /proc, every descendant

    peak, most, stop, start = [0.0], [0], threading.Event(), time.time()
    with open(run / "log.txt", "w") as log:
        procs = [subprocess.Popen(c, cwd=run, stdout=log, stderr=subprocess.STDOUT, env=env) for c in cmds]

        def sample():
            while not stop.is_set():
                trees = [tree_rss_mb(root.pid) for root in procs]
                mb, n = sum(t[0] for t in trees), sum(t[1] for t in trees)
                peak[0], most[0] = max(peak[0], mb), max(most[0], n)
                stop.wait(0.2)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        cpu, codes, largest = 0.0, [], 0.0
        for p in procs:
            _, status, usage = os.wait4(p.pid, 0)  # the child's usage includes its reaped descendants'
            p.returncode = os.waitstatus_to_exitcode(status)
            cpu, codes = cpu + usage.ru_utime + usage.ru_stime, codes + [p.returncode]
            largest = max(largest, usage.ru_maxrss / 1024)  # the kernel's peak of its largest process (KB on Linux)
        wall = time.time() - start
        stop.set()
        sampler.join()
    # the sampler can miss a process's last moments (a 0.2 s period): the tree's peak is at least the kernel's
    # peak of its largest process
    return {"start": start, "wall_s": wall, "cpu_s": cpu, "peak_mb": max(peak[0], largest), "max_processes": most[0],
            "returncodes": codes}


def trial_rows(v: str, arch: str, run: Path) -> tuple[list[dict], dict]:
    """Each finished trial: worker, number, start, complete, seconds (fit), fit_cpu_s, rss_mb, value; and facts."""
    if "plain" in VARIANTS[v]:
        rows, facts = [], {}
        for k in range(VARIANTS[v]["plain"]):
            out = json.loads((run / f"plain-{k}.json").read_text())
            rows += [{**t, "worker": out["pid"]} for t in out["trials"]]
            facts = {"backend": out["backend"], "data": out["data"],
                     "configs": [json.dumps(out["config"], sort_keys=True)]}
        return rows, facts
    import optuna

    study = optuna.load_study(study_name=f"cifar10-{arch}", storage=f"sqlite:///{run / 'study.db'}")
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    rows = [{"worker": t.user_attrs.get("worker"), "number": t.number, "start": t.datetime_start.timestamp(),
             "complete": t.datetime_complete.timestamp(), "seconds": t.user_attrs.get("seconds"),
             "rss_mb": t.user_attrs.get("rss_mb"), "value": t.value} for t in done]
    attrs = done[0].user_attrs if done else {}
    return rows, {"backend": attrs.get("backend"), "data": study.user_attrs.get("data"),
                  "configs": sorted({json.dumps(t.user_attrs.get("config"), sort_keys=True) for t in done})}


def slots(rows: list[dict], n: int) -> list[list[dict]]:
    """The trials as ``n`` worker slots (a slot's worker may be replaced): each trial follows the slot that
    freed last before it started."""
    chains: list[list[dict]] = [[] for _ in range(n)]
    for t in sorted(rows, key=lambda t: t["start"]):
        free = [c for c in chains if not c or c[-1]["complete"] <= t["start"]] or chains
        max(free, key=lambda c: c[-1]["complete"] if c else float("-inf")).append(t)
    return chains


def memory_steps(rows: list[dict]) -> dict:
    """``warmup_mb``: the mean over worker processes of the resident-memory step from a process's first trial to
    its second (one-time allocations land there: the first checkpoint's buffers, for one); ``growth_mb``: the mean
    step from one trial to the next after that (what each further trial keeps). MB, from the trials' ``rss_mb``
    (after ``fit``); None without two, or three, trials in a process."""
    first, later = [], []
    for w in {t["worker"] for t in rows}:
        rss = [t["rss_mb"] for t in sorted(rows, key=lambda t: t["start"]) if t["worker"] == w]
        steps = [b - a for a, b in pairwise(rss) if a is not None and b is not None]
        first, later = first + steps[:1], later + steps[1:]
    return {"warmup_mb": statistics.mean(first) if first else None,
            "growth_mb": statistics.mean(later) if later else None}


def figures(v: str, rows: list[dict], m: dict) -> dict:
    """A run's derived figures from its trials and its measurement."""
    n_slots = VARIANTS[v].get("plain") or (2 if "--jobs" in VARIANTS[v]["args"] else 1)
    gaps = [b["start"] - a["start"] - a["seconds"] for c in slots(rows, n_slots) for a, b in pairwise(c)]
    fit_cpu = [t.get("fit_cpu_s") for t in rows]
    return {"trials": len(rows), "workers": len({t["worker"] for t in rows}),
            "startup_s": min((t["start"] for t in rows), default=m["start"]) - m["start"],
            "outside_fit_s": statistics.mean(gaps) if gaps else None, "outside_fit_each_s": gaps,
            "fit_s": sum(t["seconds"] for t in rows),
            "fit_cpu_s": sum(fit_cpu) if rows and None not in fit_cpu else None,
            **memory_steps(rows),
            "val_loss": [t["value"] for t in sorted(rows, key=lambda t: t["number"])]}


def meta(a) -> dict:
    """The run's budget, command, machine and versions."""
    cpu = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    model = next((line.split(":", 1)[1].strip() for line in cpu.splitlines() if line.startswith("model name")), "")
    mem = next((line.split()[1] for line in Path("/proc/meminfo").read_text().splitlines()
                if line.startswith("MemTotal")), "0") if Path("/proc/meminfo").exists() else "0"
    import cifar_tune  # the checkout the children run (PYTHONPATH's): its commit, "-dirty" with changes

    package = Path(cifar_tune.__file__).parent
    commit = subprocess.run(["git", "describe", "--always", "--dirty"], cwd=package, capture_output=True, text=True)

    def version(dist: str) -> str | None:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            return None

    return {"budget": {k: getattr(a, k) for k in BUDGET}, "command": " ".join(sys.argv),
            "date": datetime.now(UTC).isoformat(timespec="seconds"),
            "machine": {"cpu": model, "nproc": len(os.sched_getaffinity(0)), "cpus": os.cpu_count(),
                        "memory_gb": round(int(mem) / 2**20, 1), "platform": platform.platform()},
            "versions": {"python": platform.python_version(), "cifar_tune": str(package),
                         "git": commit.stdout.strip() or None,
                         **{d: version(d) for d in ("cifar-tune", "optuna", "keras", "tensorflow")}},
            "variants": {v: VARIANTS[v] for v in a.variants}}


def run(a) -> None:
    out = Path(a.out).resolve()  # the runs work in their own folders
    out.mkdir(parents=True, exist_ok=True)
    path = out / "results.json"
    results = json.loads(path.read_text()) if path.exists() else {"meta": meta(a), "runs": []}
    if results["meta"]["budget"] != meta(a)["budget"]:
        sys.exit(f"{path} holds another budget ({results['meta']['budget']}): use another --out")
    for rep in range(a.reps):
        for arch in a.archs:
            for v in a.variants:
                if any((r["arch"], r["variant"], r["rep"]) == (arch, v, rep) and "error" not in r
                       for r in results["runs"]):
                    print(f"rep {rep} {arch} {v}: done already", flush=True)
                    continue
                folder = out / "runs" / f"{arch}-{v}-{rep}"
                shutil.rmtree(folder, ignore_errors=True)
                folder.mkdir(parents=True)
                cmds = commands(v, arch, a, folder)
                env = {**os.environ, "PYTHONPATH": a.before} if VARIANTS[v].get("before") else None
                m = measure(cmds, folder, env)
                r = {"arch": arch, "variant": v, "rep": rep, "commands": [" ".join(c) for c in cmds], **m}
                try:
                    if any(m["returncodes"]):
                        raise RuntimeError(f"exit codes {m['returncodes']}, see {folder / 'log.txt'}")
                    rows, facts = trial_rows(v, arch, folder)
                    r.update(facts, **figures(v, rows, m), trial_rows=rows)
                except Exception as e:  # recorded and rerun by the next `run`
                    r["error"] = f"{type(e).__name__}: {e}"
                results["runs"] = [x for x in results["runs"] if (x["arch"], x["variant"], x["rep"]) != (arch, v, rep)]
                results["runs"].append(r)
                path.with_suffix(".tmp").write_text(json.dumps(results, indent=1))
                path.with_suffix(".tmp").replace(path)
                print(f"rep {rep} {arch} {v}: " + (r.get("error") or ", ".join(
                    f"{k} {fmt.format(r[k])}" for k, _, fmt in COLUMNS if r.get(k) is not None)), flush=True)
    (out / "table.md").write_text(markdown(results))


# --- the table ---------------------------------------------------------------------------------------------------


def runs_of(results: dict, arch: str, v: str) -> list[dict]:
    """The runs of ``v`` without an error, their memory steps taken from their trials (``memory_steps``: runs
    recorded before it have only the mean of every step, warm-up included)."""
    return [{**r, **memory_steps(r["trial_rows"])} for r in results["runs"]
            if r["arch"] == arch and r["variant"] == v and "error" not in r]


def spread(values: list, fmt: str) -> str:
    """Median, and [min, max] when there are several values; an em dash when there is none."""
    v = [x for x in values if x is not None]
    if not v:
        return "—"
    return fmt.format(statistics.median(v)) + (f" [{fmt.format(min(v))}, {fmt.format(max(v))}]" if len(v) > 1 else "")


def ratios(results: dict, arch: str, v: str, key: str) -> list[float]:
    """``v`` / its reference for ``key``, within each repetition (the same minutes of a shared machine)."""
    ref = {r["rep"]: r.get(key) for r in runs_of(results, arch, REFERENCE[v])}
    return [r[key] / ref[r["rep"]] for r in runs_of(results, arch, v) if r.get(key) and ref.get(r["rep"])]


def markdown(results: dict) -> str:
    """table.md: per architecture, each variant's figures (median [min, max] over repetitions), the ratios to the
    plain script, the targets met or not, and the largest validation-loss difference to the plain script."""
    b, machine = results["meta"]["budget"], results["meta"]["machine"]
    lines = [f"{b['trials']} trials × {b['epochs']} epochs, --subset {b['subset']}, seed {b['seed']}, "
             f"--pruner none; {machine['cpu']}, {machine['nproc']} CPUs, {machine['memory_gb']} GB; "
             f"`{results['meta']['command']}`", ""]
    variants = list(dict.fromkeys(r["variant"] for r in results["runs"]))
    for arch in dict.fromkeys(r["arch"] for r in results["runs"]):
        reps = len({r["rep"] for r in results["runs"] if r["arch"] == arch})
        lines += [f"**{arch}** ({reps} repetition{'s' * (reps > 1)}: median [min, max])", "",
                  "| variant | " + " | ".join(label for _, label, _ in COLUMNS) + " | max abs Δ val loss |",
                  "|---|" + "---|" * (len(COLUMNS) + 1)]
        plain = {r["rep"]: r["val_loss"] for r in runs_of(results, arch, "plain")}
        for v in variants:
            runs = runs_of(results, arch, v)
            diffs = [max(abs(x - y) for x in r["val_loss"] for y in plain[r["rep"]]) for r in runs
                     if r["rep"] in plain and r["val_loss"] and plain[r["rep"]]]
            cells = [spread([r.get(k) for r in runs], fmt) for k, _, fmt in COLUMNS] if runs else ["failed"] * len(
                COLUMNS)
            lines.append(f"| {v} | " + " | ".join(cells) + f" | {spread(diffs, '{:.1e}')} |")
        lines += ["", "| ratio | " + " | ".join(label for _, label in RATIOS) + " |", "|---|" + "---|" * len(RATIOS)]
        for v in variants:
            if v in REFERENCE and REFERENCE[v] in variants:
                lines.append(f"| {v} / {REFERENCE[v]} | "
                             + " | ".join(spread(ratios(results, arch, v, k), "{:.2f}") for k, _ in RATIOS) + " |")
        lines += [""] + [target_line(results, arch, *t) for t in TARGETS if t[0] in variants] + [""]
    return "\n".join(lines).rstrip() + "\n"


def target_line(results: dict, arch: str, v: str, key: str, bound: float, relative: bool) -> str:
    """One of issue 27's targets, judged on the median (of the per-repetition ratios when relative)."""
    values = ratios(results, arch, v, key) if relative else [r.get(key) for r in runs_of(results, arch, v)]
    values = [x for x in values if x is not None]
    what = f"{v} {key} {'≤ ' + format(bound) + '× ' + REFERENCE[v] if relative else '≤ ' + format(bound)}"
    if not values:
        return f"- {what}: not measured"
    median = statistics.median(values)
    return f"- {what}: {median:.2f} — {'met' if median <= bound else 'not met'}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="run the benchmark (resumes an --out folder)")
    r.add_argument("--out", required=True)
    r.add_argument("--data", default=os.environ.get("CIFAR_TUNE_DATA"), help="a CIFAR-10 .npz")
    r.add_argument("--archs", nargs="+", default=["mlp_l2", "cnn"])
    r.add_argument("--variants", nargs="+", choices=list(VARIANTS),
                   help="default: all (the -before ones only with --before)")
    r.add_argument("--before", help="an older cifar-tune checkout, run by the -before variants")
    r.add_argument("--reps", type=int, default=3)
    r.add_argument("--trials", type=int, default=6)
    r.add_argument("--epochs", type=int, default=2)
    r.add_argument("--subset", type=int, default=5000)
    r.add_argument("--seed", type=int, default=0)
    t = sub.add_parser("table", help="write DIR/table.md from DIR/results.json")
    t.add_argument("dir")
    a = p.parse_args()
    if a.command == "table":
        (Path(a.dir) / "table.md").write_text(markdown(json.loads((Path(a.dir) / "results.json").read_text())))
        print((Path(a.dir) / "table.md").read_text())
        return
    if not a.data:
        p.error("--data: give a CIFAR-10 .npz (or set $CIFAR_TUNE_DATA)")
    a.data = str(Path(a.data).resolve())
    if a.variants is None:
        a.variants = [v for v in VARIANTS if a.before or not VARIANTS[v].get("before")]
    if a.before is None and any(VARIANTS[v].get("before") for v in a.variants):
        p.error("the -before variants need --before PATH (an older cifar-tune checkout)")
    if a.before:
        a.before = str(Path(a.before).resolve())
    run(a)


if __name__ == "__main__":
    main()
