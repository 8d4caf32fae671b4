"""One check for a lent GPU machine: throughput, engine agreement, trials per hour and the end-to-end job.

    KERAS_BACKEND=jax python benchmarks/gpu_check.py --out /tmp/gpu_check --data .data/cifar10.npz   # < 9 min
    python benchmarks/gpu_check.py --smoke --out /tmp/gpu_check_smoke       # every part on the CPU, toy sizes

Four parts, each with its own time limit (``--<part>-limit SECONDS``; defaults below, 500 s together):

1. ``throughput``: ``benchmarks/throughput.py`` for all five architectures, stock fit (engine keras) against the
   fast engine at batch 32 float32, 512 float32 and 512 bf16 (throughput.py's ``--bf16`` always adds the largest
   batch in bf16 on top of the float32 ones), one warm-up and one timed epoch of 50,000 images.
2. ``agreement``: ``cifar-tune baseline --archs cnn,resnet --epochs 5 --protocol seed`` for seeds 0 and 1 with
   ``--engine keras`` and ``--engine fast``: mean test accuracy per engine, the difference in points, and whether
   it is within 1.5 points. The runs only measure accuracy, so up to four run at once (each with its share of
   GPU memory: ``XLA_PYTHON_CLIENT_MEM_FRACTION``).
3. ``jobs``: the same short study (``cifar-tune optimize --arch cnn``, 8 trials of 2 epochs on a 10,000-image
   subset, no pruning) with ``--jobs`` 1, 2 and 4: trials per hour on one GPU, process start-up included.
4. ``e2e``: the end-to-end job (``E2E`` below: a 20-trial study per architecture, then ``compare --seeds 2``),
   its wall time against the 8-minute target. Its default limit is less than 8 minutes so that the whole check
   fits in 9; give it ``--e2e-limit 480`` (with ``--parts e2e``) to see the target decided.

The product is driven only through its command line (``python -m cifar_tune``) and ``benchmarks/throughput.py``,
as subprocesses in ``OUT/work`` (their ``storage/`` lands there), with this checkout first on ``PYTHONPATH``,
``KERAS_BACKEND=jax`` unless set, and each command's output in ``OUT/logs/``. A part that runs out of time or
whose command fails is recorded as ``"not reached"`` with the reason (the timeout, or the command's last stderr
line), with whatever it measured before; the later parts still run. ``OUT/results.json`` and ``OUT/results.md``
are always written, and the exit status is 0 unless this script's own arguments are bad (then 2). ``--parts``
runs a subset (the others are recorded as not reached); ``--no-preallocate`` sets
``XLA_PYTHON_CLIENT_PREALLOCATE=false`` for every product command (see benchmarks/gpu_check.md).

``--smoke`` runs every part on the CPU at toy sizes on its own synthetic .npz (300 train / 100 test images with a
learnable class stripe): ``mlp_l2`` at batch 32 for throughput and agreement (1 epoch, seed 0), ``--jobs`` 1 and 2
on ``mlp_l2``, and a two-trial ``mlp_l2`` study with ``compare --seeds 1``; the four parts at once (see
``run_parts``). That is ten product commands, each of which imports TensorFlow (about 7 CPU-seconds), so two cores
cannot do it much faster: 53 s on an idle 2-core Xeon. Its backend, unless ``KERAS_BACKEND`` says otherwise, is
TensorFlow where installed (faster here, see ``smoke_backend``), else JAX. With JAX it hides an installed TensorFlow
from the subprocesses, as on the GPU machine (which has none): otherwise ``keras.utils.set_random_seed`` imports
TensorFlow in every process just to seed it, several seconds each.
"""

from __future__ import annotations

import argparse
import csv
import importlib.metadata
import importlib.util
import json
import math
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
THROUGHPUT = REPO / "benchmarks" / "throughput.py"
PART_NAMES = ("throughput", "agreement", "jobs", "e2e")
NOT_REACHED = "not reached"
OK = "ok"
# Seconds per part on the GPU: 500 s together, which leaves room for the set-up inside 9 minutes.
LIMITS = {"throughput": 130, "agreement": 70, "jobs": 80, "e2e": 220}
SMOKE_LIMITS = {"throughput": 240, "agreement": 240, "jobs": 240, "e2e": 240}  # generous: a shared, busy CPU
AGREEMENT_POINTS = 1.5  # fast vs stock fit, mean test accuracy, in points
E2E_TARGET_SECONDS = 8 * 60
ALL_ARCHS = ("mlp_bn", "mlp_l2", "cnn", "cnn_da", "resnet")


@dataclass(frozen=True)
class Plan:
    """The sizes of every part: the GPU run's, or the smoke run's."""

    throughput_archs: tuple[str, ...]
    throughput_args: tuple[str, ...]  # --images, --epochs, --batches, --bf16 ... for benchmarks/throughput.py
    agreement_archs: tuple[str, ...]
    agreement_epochs: int
    agreement_seeds: tuple[int, ...]
    jobs_arch: str
    jobs_counts: tuple[int, ...]
    jobs_trials: int
    jobs_epochs: int
    jobs_args: tuple[str, ...]  # --subset, --val-size
    e2e_archs: tuple[str, ...]
    e2e_trials: int
    e2e_optimize_args: tuple[str, ...]  # extra optimize options (the GPU run: none, the default preset)
    e2e_seeds: int


GPU_PLAN = Plan(
    # heaviest first: if the part runs out of time, the light MLPs are the ones missing
    throughput_archs=("resnet", "cnn", "cnn_da", "mlp_bn", "mlp_l2"),
    throughput_args=("--images", "50000", "--epochs", "1", "--batches", "32,512", "--bf16"),
    agreement_archs=("cnn", "resnet"), agreement_epochs=5, agreement_seeds=(0, 1),
    jobs_arch="cnn", jobs_counts=(1, 2, 4), jobs_trials=8, jobs_epochs=2,
    jobs_args=("--subset", "10000", "--val-size", "1000"),
    e2e_archs=ALL_ARCHS, e2e_trials=20, e2e_optimize_args=(), e2e_seeds=2,
)
SMOKE_PLAN = Plan(  # one architecture, one seed: what keeps every code path of the script running, no more
    throughput_archs=("mlp_l2",),
    throughput_args=("--images", "300", "--val", "100", "--epochs", "1", "--batches", "32", "--no-bf16"),
    agreement_archs=("mlp_l2",), agreement_epochs=1, agreement_seeds=(0,),
    jobs_arch="mlp_l2", jobs_counts=(1, 2), jobs_trials=2, jobs_epochs=1,
    jobs_args=("--subset", "200", "--val-size", "50"),
    e2e_archs=("mlp_l2",), e2e_trials=2, e2e_optimize_args=("--epochs", "1", "--val-size", "50"), e2e_seeds=1,
)


def cifar_tune(*args: str) -> list[str]:
    """The product's command line, as a subprocess of this interpreter."""
    return [sys.executable, "-m", "cifar_tune", *map(str, args)]


def e2e_commands(plan: Plan, data: Path, out: Path) -> list[tuple[str, list[str]]]:
    """The end-to-end job, as (name, command) steps in order: the one place to change for ``cifar-tune run``."""
    storage = f"sqlite:///{out / 'e2e.db'}"
    steps = [(f"optimize {arch}", cifar_tune("optimize", "--arch", arch, "--n-trials", plan.e2e_trials,
                                             "--storage", storage, "--data", data, *plan.e2e_optimize_args))
             for arch in plan.e2e_archs]
    steps.append(("compare", cifar_tune("compare", "--seeds", plan.e2e_seeds, "--storage", storage, "--data", data,
                                        "--out", out / "compare")))
    return steps


# --- running commands under a deadline ---------------------------------------------------------------------------


@dataclass
class Context:
    """What every part needs: the plan, the data, the output folder, the subprocesses' environment."""

    plan: Plan
    data: Path
    out: Path
    env: dict[str, str]
    parallel: int
    t0: float = field(default_factory=time.monotonic)
    stop: threading.Event = field(default_factory=threading.Event)  # Ctrl-C: every part's commands end now

    @property
    def work(self) -> Path:
        return self.out / "work"

    @property
    def logs(self) -> Path:
        return self.out / "logs"


@dataclass
class CommandResult:
    name: str
    argv: list[str]
    returncode: int | None  # None: killed at the deadline
    seconds: float
    stdout: str
    last_stderr: str

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    def reason(self) -> str:
        """Why this command gave no result, in one line."""
        if self.returncode is None:
            return f"timeout: the part's time limit ran out during `{self.name}` (after {self.seconds:.0f} s)"
        return f"`{self.name}` exited with status {self.returncode}: {self.last_stderr or '(no stderr)'}"


def log(ctx: Context, message: str) -> None:
    print(f"[gpu_check {time.monotonic() - ctx.t0:6.1f}s] {message}", flush=True)


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_")


def _kill_group(proc: subprocess.Popen) -> None:
    """End a command and every process it started (--jobs workers): they share its process group."""
    for sig, wait in ((signal.SIGTERM, 3.0), (signal.SIGKILL, 10.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def _last_line(path: Path) -> str:
    lines = [s.strip() for s in path.read_text(errors="replace").splitlines() if s.strip()]
    return lines[-1][:300] if lines else ""


def run_commands(ctx: Context, commands: list[tuple[str, list[str]]], deadline: float, *,
                 parallel: int = 1, env: dict[str, str] | None = None) -> list[CommandResult]:
    """Run (name, argv) commands, ``parallel`` at a time, until each ends or ``deadline`` (time.monotonic()).

    Output goes to OUT/logs/<name>.out and .err. Commands not started by the deadline (or ``ctx.stop``) are left
    out of the result; those running then are killed with their process group and have returncode None.
    """
    ctx.logs.mkdir(parents=True, exist_ok=True)
    ctx.work.mkdir(parents=True, exist_ok=True)
    pending, running, done = list(commands), [], {}
    try:
        while pending or running:
            while pending and len(running) < parallel and not _halted(ctx, deadline):
                name, argv = pending.pop(0)
                out_path, err_path = ctx.logs / f"{_slug(name)}.out", ctx.logs / f"{_slug(name)}.err"
                with open(out_path, "wb") as out, open(err_path, "wb") as err:
                    proc = subprocess.Popen(argv, stdout=out, stderr=err, cwd=ctx.work, env=env or ctx.env,
                                            start_new_session=True)
                running.append((name, argv, proc, time.monotonic(), out_path, err_path))
                log(ctx, f"  {name}: started")
            if not running:
                break
            for item in list(running):
                name, argv, proc, start, out_path, err_path = item
                code, seconds = proc.poll(), time.monotonic() - start
                expired = code is None and _halted(ctx, deadline)
                if code is None and not expired:
                    continue
                if expired:
                    _kill_group(proc)
                running.remove(item)
                done[name] = res = CommandResult(name, argv, None if expired else code, seconds,
                                                 out_path.read_text(errors="replace"), _last_line(err_path))
                log(ctx, f"  {name}: {'ok' if res.ok else res.reason()} ({res.seconds:.1f} s)")
            time.sleep(0.2)
    finally:  # an error here: the commands run in sessions of their own, so nothing else would end them
        for _, _, proc, *_ in running:
            _kill_group(proc)
    return [done[name] for name, _ in commands if name in done]


def _halted(ctx: Context, deadline: float) -> bool:
    return ctx.stop.is_set() or time.monotonic() >= deadline


def run_one(ctx: Context, name: str, argv: list[str], deadline: float, **kw) -> CommandResult:
    results = run_commands(ctx, [(name, argv)], deadline, **kw)
    if results:
        return results[0]
    return CommandResult(name, argv, None, 0.0, "", "")  # the deadline had passed before it could start


def _not_reached(result: dict, reason: str) -> dict:
    result.update(status=NOT_REACHED, reason=reason)
    return result


def _command_text(argv: list[str]) -> str:
    args = ["cifar-tune", *argv[3:]] if argv[1:3] == ["-m", "cifar_tune"] else ["python", *argv[1:]]
    return " ".join(args)


# --- the parts ---------------------------------------------------------------------------------------------------

_PROGRESS = re.compile(r"^\s+(\S+) batch (\d+) (\S+) (keras|fast): ([0-9.]+) s/epoch", re.MULTILINE)


def part_throughput(ctx: Context, deadline: float) -> dict:
    plan = ctx.plan
    out_json = ctx.out / "throughput.json"
    out_json.unlink(missing_ok=True)
    argv = [sys.executable, str(THROUGHPUT), "--archs", ",".join(plan.throughput_archs), "--engines", "keras,fast",
            *plan.throughput_args, "--data", str(ctx.data), "--json", str(out_json)]
    images = int(plan.throughput_args[plan.throughput_args.index("--images") + 1])
    res = run_one(ctx, "throughput", argv, deadline)
    result = {"command": _command_text(argv), "images": images, "seconds": res.seconds}
    if res.ok and out_json.is_file():
        report = json.loads(out_json.read_text())
        result["machine"] = report.get("machine")
        result["rows"] = [_throughput_row(r) for r in report["rows"]]
        result["status"] = OK
        return result
    # throughput.py writes its JSON only at the end: salvage the rows it printed as it went (no compile times)
    rows: dict[tuple, dict] = {}
    for arch, batch, precision, engine, seconds in _PROGRESS.findall(res.stdout):
        row = rows.setdefault((arch, int(batch), precision), {"arch": arch, "batch": int(batch),
                                                              "precision": precision})
        row[engine] = {"seconds_per_epoch": float(seconds), "images_per_second": images / float(seconds),
                       "compile_seconds": None}
    result["rows"] = [_throughput_row(r) for r in rows.values()]
    return _not_reached(result, res.reason())


def _throughput_row(row: dict) -> dict:
    out = {"arch": row["arch"], "batch": row["batch"], "precision": row["precision"]}
    for engine in ("keras", "fast"):
        if engine in row:
            m = row[engine]
            out[engine] = {k: m.get(k) for k in ("seconds_per_epoch", "images_per_second", "compile_seconds")}
    if "keras" in out and "fast" in out:
        out["ratio"] = out["keras"]["seconds_per_epoch"] / out["fast"]["seconds_per_epoch"]
    return out


def part_agreement(ctx: Context, deadline: float) -> dict:
    plan = ctx.plan
    runs = [(seed, engine) for seed in plan.agreement_seeds for engine in ("keras", "fast")]
    commands = []
    for seed, engine in runs:
        folder = ctx.out / "agreement" / f"seed{seed}-{engine}"
        shutil.rmtree(folder, ignore_errors=True)
        commands.append((f"agreement seed{seed} {engine}",
                         cifar_tune("baseline", "--archs", ",".join(plan.agreement_archs), "--epochs",
                                    plan.agreement_epochs, "--seed", seed, "--engine", engine, "--data", ctx.data,
                                    "--out", folder, "--protocol", "seed")))
    parallel = min(ctx.parallel, len(commands))
    env = dict(ctx.env)
    if parallel > 1:  # several JAX processes on one GPU: each takes its slice instead of 75% of the card
        env["XLA_PYTHON_CLIENT_MEM_FRACTION"] = f"{math.floor(90 / parallel) / 100:.2f}"
    start = time.monotonic()
    results = run_commands(ctx, commands, deadline, parallel=parallel, env=env)
    accuracy: dict[str, dict[str, dict[int, float]]] = {a: {"keras": {}, "fast": {}} for a in plan.agreement_archs}
    runs_out, failures = [], []
    for (seed, engine), (name, argv) in zip(runs, commands):
        res = next((r for r in results if r.name == name), None)
        entry = {"seed": seed, "engine": engine, "command": _command_text(argv)}
        if res is None:
            failures.append(f"timeout: the part's time limit ran out before `{name}` started")
        elif not res.ok:
            failures.append(res.reason())
        else:
            entry["seconds"] = res.seconds
            table = _read_metrics(Path(argv[argv.index("--out") + 1]) / "metrics.csv")
            if len(table) != len(plan.agreement_archs):
                failures.append(f"`{name}`: metrics.csv has {len(table)} rows for {len(plan.agreement_archs)} archs")
            for arch, row in zip(plan.agreement_archs, table):
                accuracy[arch][engine][seed] = float(row["Accuracy"])
                entry.setdefault("accuracy", {})[arch] = float(row["Accuracy"])
        runs_out.append(entry)
    rows = []
    for arch in plan.agreement_archs:
        row: dict = {"arch": arch}
        for engine in ("keras", "fast"):
            values = accuracy[arch][engine]
            row[f"{engine}_seeds"] = sorted(values)
            row[f"{engine}_accuracy"] = float(np.mean(list(values.values()))) if values else None
        if row["keras_accuracy"] is not None and row["fast_accuracy"] is not None:
            row["difference_points"] = 100 * (row["fast_accuracy"] - row["keras_accuracy"])
            row["within_1.5_points"] = abs(row["difference_points"]) <= AGREEMENT_POINTS
        rows.append(row)
    result = {"epochs": plan.agreement_epochs, "seeds": list(plan.agreement_seeds), "parallel": parallel,
              "seconds": time.monotonic() - start, "rows": rows, "runs": runs_out}
    if failures:
        return _not_reached(result, failures[0])
    result["status"] = OK
    return result


def _read_metrics(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


_TRIAL_LINE = re.compile(r"^trial\s+(\d+)\s+(complete|pruned|fail\w*)", re.MULTILINE)


def _trials_finished(stdout: str) -> dict[str, int]:
    """Finished trials by state, counted from the trial lines `cifar-tune optimize` prints (workers' included)."""
    counts: dict[str, int] = {}
    for _, state in _TRIAL_LINE.findall(stdout):
        counts[state] = counts.get(state, 0) + 1
    return counts


def part_jobs(ctx: Context, deadline: float) -> dict:
    plan = ctx.plan
    rows, reason = [], None
    for jobs in plan.jobs_counts:
        db = ctx.out / f"jobs{jobs}.db"
        db.unlink(missing_ok=True)
        argv = cifar_tune("optimize", "--arch", plan.jobs_arch, "--jobs", jobs, "--n-trials", plan.jobs_trials,
                          "--epochs", plan.jobs_epochs, "--pruner", "none", "--storage", f"sqlite:///{db}",
                          "--data", ctx.data, *plan.jobs_args)
        row = {"jobs": jobs, "trials": plan.jobs_trials, "command": _command_text(argv)}
        if reason is None:
            res = run_one(ctx, f"jobs{jobs}", argv, deadline)
            row["trials_finished"] = _trials_finished(res.stdout)
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
    result = {"arch": plan.jobs_arch, "epochs": plan.jobs_epochs, "rows": rows}
    if reason:
        return _not_reached(result, reason)
    result["status"] = OK
    return result


def part_e2e(ctx: Context, deadline: float) -> dict:
    (ctx.out / "e2e.db").unlink(missing_ok=True)
    shutil.rmtree(ctx.out / "compare", ignore_errors=True)
    steps, reason, start = [], None, time.monotonic()
    for name, argv in e2e_commands(ctx.plan, ctx.data, ctx.out):
        step = {"step": name, "command": _command_text(argv)}
        if reason is None:
            res = run_one(ctx, f"e2e {name}", argv, deadline)
            step["seconds"] = res.seconds
            if name.startswith("optimize"):
                step["trials_finished"] = _trials_finished(res.stdout)
            if res.ok:
                step["status"] = OK
            else:
                reason = res.reason()
                step.update(status=NOT_REACHED, reason=reason)
        else:
            step.update(status=NOT_REACHED, reason="an earlier step was not reached")
        steps.append(step)
    seconds = time.monotonic() - start
    result = {"steps": steps, "seconds": seconds, "target_seconds": E2E_TARGET_SECONDS}
    if reason:
        return _not_reached(result, reason)
    result.update(status=OK, within_target=seconds <= E2E_TARGET_SECONDS)
    return result


PARTS = {"throughput": part_throughput, "agreement": part_agreement, "jobs": part_jobs, "e2e": part_e2e}


# --- machine facts, the smoke data, the environment --------------------------------------------------------------


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def machine_facts(env: dict[str, str]) -> dict:
    facts = {"hostname": platform.node(), "platform": platform.platform(), "python": platform.python_version(),
             "executable": sys.executable, "cpu_count": os.cpu_count(),
             "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
             "load_average_1m": round(os.getloadavg()[0], 2), "backend": env.get("KERAS_BACKEND"),
             "versions": {p: _version(p) for p in ("keras", "jax", "jaxlib", "tensorflow", "optuna", "numpy")},
             "gpus": None}
    if shutil.which("nvidia-smi"):
        try:
            out = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total,driver_version",
                                  "--format=csv,noheader"], check=False, capture_output=True, text=True,
                                 timeout=30).stdout
            facts["gpus"] = [dict(zip(("name", "memory", "driver"), (s.strip() for s in line.split(","))))
                             for line in out.splitlines() if line.strip()]
        except (OSError, subprocess.SubprocessError) as e:
            facts["gpus"] = f"nvidia-smi failed: {e}"
    return facts


def synthetic_npz(path: Path, n_train: int = 300, n_test: int = 100, seed: int = 0) -> Path:
    """The tests' tiny learnable CIFAR-shaped data (tests/synthetic.py, numpy only) as an .npz."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from synthetic import synthetic_cifar

    x_train, y_train, x_test, y_test = synthetic_cifar(n_train, n_test, seed)
    np.savez(path, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    return path


def smoke_backend() -> str:
    """The smoke run's Keras backend when the caller names none: TensorFlow where installed, else JAX.

    Measured on a 2-core CPU, the whole smoke beside a training study: TensorFlow 78 s, JAX 99 s (TensorFlow
    hidden; 120 user-s against 85). JAX imports faster (3 s against 7 s) but compiles every stock-fit step with
    XLA, which costs more on a CPU than TensorFlow's graph tracing.
    """
    return "tensorflow" if importlib.util.find_spec("tensorflow") else "jax"


def subprocess_env(smoke: bool, backend: str, shim_dir: Path | None, preallocate: bool = True) -> dict[str, str]:
    """The environment of every product command: this checkout first on PYTHONPATH, the backend, quiet logs."""
    env = dict(os.environ)
    env["KERAS_BACKEND"] = backend
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    env["PYTHONUNBUFFERED"] = "1"
    env.pop("CIFAR_TUNE_TOTAL_TRIALS", None)  # it would turn every --n-trials into a study-wide total
    env["PYTHONPATH"] = os.pathsep.join(
        [*([str(shim_dir)] if shim_dir else []), str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])])
    if not preallocate:  # --jobs workers still get the product's own per-worker settings, which override this
        env["XLA_PYTHON_CLIENT_PREALLOCATE"] = "false"
    if smoke:  # the CPU, whatever the machine has
        env["JAX_PLATFORMS"] = "cpu"
        env["CUDA_VISIBLE_DEVICES"] = ""
    return env


def hide_tensorflow(folder: Path) -> Path:
    """A folder that, first on PYTHONPATH, makes ``import tensorflow`` fail, as on a machine without it."""
    package = folder / "tensorflow"
    package.mkdir(parents=True, exist_ok=True)
    (package / "__init__.py").write_text('raise ImportError("hidden by benchmarks/gpu_check.py --smoke")\n')
    return folder


# --- the report --------------------------------------------------------------------------------------------------


def _fmt(value, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return str(value)


def _table(head: list[str], rows: list[list]) -> list[str]:
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(c if isinstance(c, str) else _fmt(c) for c in row) + " |" for row in rows]
    return lines


def markdown(results: dict) -> str:
    m = results["machine"]
    gpus = m.get("gpus")
    gpu = ", ".join(f"{g['name']} ({g['memory']})" for g in gpus) if isinstance(gpus, list) and gpus else "none"
    v = m["versions"]
    facts = (f"Machine: {m['platform']}, {m['cpu_count']} CPUs, GPU: {gpu}; backend {m['backend']}, Python "
             f"{m['python']}, Keras {v['keras']}, JAX {v['jax']}, TensorFlow {v['tensorflow']}. Data: "
             f"{results['data']}. Wall time {results['seconds']:.1f} s.")
    lines = [f"# gpu_check {'(smoke) ' if results['smoke'] else ''}{results['started']}", "", facts, ""]
    for name in PART_NAMES:
        part = results["parts"][name]
        limit = part.get("limit_seconds")
        lines += [f"## {name}", "", f"Status: **{part['status']}**" + (f" — {part['reason']}" if "reason" in part
                                                                        else "") + f" (limit {limit:g} s)", ""]
        body = MARKDOWN[name](part)
        lines += (body[2:] if not body[0] else body) + [""]  # no intro line for a part that measured nothing
    return "\n".join(lines)


def _md_throughput(part: dict) -> list[str]:
    rows = []
    for r in part.get("rows", []):
        k, f = r.get("keras", {}), r.get("fast", {})
        rows.append([r["arch"], str(r["batch"]), r["precision"],
                     _fmt(k.get("seconds_per_epoch")), _fmt(k.get("images_per_second"), 0),
                     _fmt(f.get("seconds_per_epoch")), _fmt(f.get("images_per_second"), 0),
                     f"{r['ratio']:.2f}x" if "ratio" in r else "-",
                     _fmt(k.get("compile_seconds"), 1), _fmt(f.get("compile_seconds"), 1)])
    images = part.get("images")
    intro = (f"Seconds per epoch of {images:,} images (one timed epoch after a warm-up); ratio = keras s / fast s."
             if isinstance(images, int) else "")
    head = ["arch", "batch", "precision", "keras s/epoch", "keras img/s", "fast s/epoch", "fast img/s", "ratio",
            "keras compile s", "fast compile s"]
    return [intro, ""] + _table(head, rows or [["-"] * len(head)])


def _md_agreement(part: dict) -> list[str]:
    rows = [[r["arch"], _fmt(r.get("keras_accuracy"), 4), _fmt(r.get("fast_accuracy"), 4),
             _fmt(r.get("difference_points"), 2), _fmt(r.get("within_1.5_points"))] for r in part.get("rows", [])]
    intro = (f"Mean test accuracy over seeds {part['seeds']}, {part['epochs']} epoch(s), seed protocol."
             if "seeds" in part else "")
    head = ["arch", "keras accuracy", "fast accuracy", "fast − keras (points)", f"within {AGREEMENT_POINTS}"]
    return [intro, ""] + _table(head, rows or [["-"] * len(head)])


def _md_jobs(part: dict) -> list[str]:
    rows = [[str(r["jobs"]), str(r["trials"]), _fmt(r.get("seconds"), 1), _fmt(r.get("trials_per_hour"), 0),
             _fmt(r.get("speedup"), 2), r["status"]] for r in part.get("rows", [])]
    intro = (f"`cifar-tune optimize --arch {part['arch']}`, {part['epochs']} epoch(s) per trial, no pruning; "
             "wall clock of the whole command." if "arch" in part else "")
    head = ["jobs", "trials", "seconds", "trials/hour", "speed-up", "status"]
    return [intro, ""] + _table(head, rows or [["-"] * len(head)])


def _md_e2e(part: dict) -> list[str]:
    rows = [[s["step"], f"`{s['command']}`", _fmt(s.get("seconds"), 1),
             " ".join(f"{n} {k}" for k, n in s.get("trials_finished", {}).items()) or "-", s["status"]]
            for s in part.get("steps", [])]
    rows.append(["total", "", _fmt(part.get("seconds"), 1), "", part["status"]])
    intro = (f"Target {part.get('target_seconds', E2E_TARGET_SECONDS)} s; within target: "
             f"{_fmt(part.get('within_target'))}.")
    return [intro, ""] + _table(["step", "command", "seconds", "trials finished", "status"], rows)


MARKDOWN = {"throughput": _md_throughput, "agreement": _md_agreement, "jobs": _md_jobs, "e2e": _md_e2e}


# --- main --------------------------------------------------------------------------------------------------------


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
    end, and most of its time is single-threaded process start-up that overlaps well.
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
    except KeyboardInterrupt:  # the commands run in sessions of their own: the terminal's signal missed them
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
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
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
        path = Path(a.data).expanduser()
        if path.suffix != ".npz" or not path.is_file():
            p.error(f"--data: not an .npz file: {a.data}")
        try:
            with np.load(path) as f:
                missing = {"x_train", "y_train", "x_test", "y_test"} - set(f.files)
        except (OSError, ValueError) as e:
            p.error(f"--data: cannot read {a.data}: {e}")
        if missing:
            p.error(f"--data: {a.data} lacks {', '.join(sorted(missing))}")
        a.data = path.resolve()
    return a


def main(argv: list[str] | None = None) -> int:
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
        (out / "results.json").write_text(json.dumps(results, indent=2, default=str))
        (out / "results.md").write_text(markdown(results))
    log(ctx, f"wrote {out / 'results.json'} and {out / 'results.md'}")
    print(markdown(results))
    return 130 if interrupted else 0


if __name__ == "__main__":
    sys.exit(main())
