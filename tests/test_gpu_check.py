"""benchmarks/gpu_check: the smoke run end to end, a part over its time limit, failing commands, bad arguments."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "gpu_check.py"  # the entry script; the check is the package benchmarks/gpu_check/
PACKAGE = REPO / "benchmarks" / "gpu_check"
PARTS = ("throughput", "agreement", "jobs", "e2e")


@pytest.fixture(scope="module")
def gpu_check():
    """The package benchmarks/gpu_check (the checkout's root is on sys.path: tests is a package). Tests
    monkeypatch its modules' names."""
    return importlib.import_module("benchmarks.gpu_check")


def positive(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0


def tables_per_part(md: str) -> dict[str, list[str]]:
    """The Markdown table lines under each '## part' heading."""
    sections: dict[str, list[str]] = {}
    current = None
    for line in md.splitlines():
        if line.startswith("## "):
            current = line[3:].strip()
            sections[current] = []
        elif current and line.startswith("|"):
            sections[current].append(line)
    return sections


@pytest.mark.slow
def test_smoke_run_measures_every_part(tmp_path: Path):
    out = tmp_path / "smoke"
    start = time.monotonic()
    proc = subprocess.run([sys.executable, str(SCRIPT), "--smoke", "--out", str(out)], check=False,
                          capture_output=True, text=True, timeout=1500)
    seconds = time.monotonic() - start
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    print(f"smoke run: {seconds:.0f} s")
    parts = results["parts"]
    for name in PARTS:
        assert parts[name]["status"] == "ok", (name, parts[name].get("reason"))

    rows = parts["throughput"]["rows"]
    assert {r["arch"] for r in rows} == {"mlp_l2"}
    for r in rows:
        for engine in ("keras", "fast"):
            assert positive(r[engine]["seconds_per_epoch"]) and positive(r[engine]["images_per_second"]), r
            assert r[engine]["compile_seconds"] is not None and r[engine]["compile_seconds"] >= 0, r
        assert positive(r["ratio"]), r

    for r in parts["agreement"]["rows"]:
        assert 0 <= r["keras_accuracy"] <= 1 and 0 <= r["fast_accuracy"] <= 1, r
        assert r["keras_seeds"] == r["fast_seeds"] == [0], r
        assert isinstance(r["within_1.5_points"], bool), r
    assert {r["arch"] for r in parts["agreement"]["rows"]} == {"mlp_l2"}

    jobs = parts["jobs"]["rows"]
    assert [r["jobs"] for r in jobs] == [1, 2]
    for r in jobs:
        assert positive(r["seconds"]) and positive(r["trials_per_hour"]), r
        assert sum(r["trials_finished"].values()) == r["trials"], r

    e2e = parts["e2e"]
    assert positive(e2e["seconds"]) and isinstance(e2e["within_target"], bool)
    assert [s["step"] for s in e2e["steps"]] == ["optimize mlp_l2", "compare"]
    assert all(positive(s["seconds"]) for s in e2e["steps"])
    assert (out / "compare" / "compare.csv").is_file()

    machine = results["machine"]
    assert machine["cpu_count"] >= 1 and machine["backend"] in ("jax", "tensorflow")
    assert machine["versions"]["keras"]

    tables = tables_per_part((out / "results.md").read_text())
    for name in PARTS:
        assert len(tables.get(name, [])) >= 3, (name, tables.get(name))  # head, rule, at least one row
        assert "not reached" not in "\n".join(tables[name])


def test_part_over_its_limit_is_not_reached_and_later_parts_run(gpu_check, tmp_path: Path, monkeypatch):
    """Throughput gets 1 s (its real command is killed); the later parts, stand-ins here, still run."""
    ran = []

    def stand_in(name, result):
        def part(ctx, deadline):
            ran.append(name)
            assert deadline > time.monotonic()
            return {"status": "ok", **result}
        return part

    monkeypatch.setitem(gpu_check.PARTS, "agreement", stand_in("agreement", {"rows": [
        {"arch": "mlp_bn", "keras_accuracy": 0.5, "fast_accuracy": 0.51, "difference_points": 1.0,
         "within_1.5_points": True}]}))
    monkeypatch.setitem(gpu_check.PARTS, "jobs", stand_in("jobs", {"rows": [
        {"jobs": 1, "trials": 2, "seconds": 10.0, "trials_per_hour": 720.0, "status": "ok"}]}))
    monkeypatch.setitem(gpu_check.PARTS, "e2e", stand_in("e2e", {"steps": [], "seconds": 1.0}))
    out = tmp_path / "limited"
    start = time.monotonic()
    assert gpu_check.main(["--smoke", "--out", str(out), "--throughput-limit", "1"]) == 0
    assert time.monotonic() - start < 60
    assert sorted(ran) == ["agreement", "e2e", "jobs"]  # the smoke runs its parts at once
    results = json.loads((out / "results.json").read_text())
    throughput = results["parts"]["throughput"]
    assert throughput["status"] == "not reached"
    assert throughput["reason"].startswith("timeout") and "throughput" in throughput["reason"]
    assert throughput["limit_seconds"] == 1 and throughput["wall_seconds"] < 20
    assert [results["parts"][n]["status"] for n in PARTS[1:]] == ["ok"] * 3
    md = (out / "results.md").read_text()
    assert "Status: **not reached** — timeout" in md
    assert set(tables_per_part(md)) == set(PARTS)


def test_ctrl_c_ends_every_running_part_and_keeps_the_record(gpu_check, tmp_path: Path, monkeypatch):
    """The smoke runs its parts in threads: Ctrl-C reaches only the main thread, which must end the others'
    commands (they run in sessions of their own) and still write results.json, each part 'interrupted'."""
    pids = []

    def interrupts(ctx, deadline):
        os.kill(os.getpid(), signal.SIGINT)  # the main thread gets KeyboardInterrupt while it waits
        ctx.stop.wait(30)
        return {"status": "not reached", "reason": "stand-in"}

    def sleeps(ctx, deadline):
        argv = [sys.executable, "-c", "import os, time; print(os.getpid(), flush=True); time.sleep(120)"]
        res = gpu_check.run_one(ctx, "sleeps", argv, deadline)
        pids.append(int(res.stdout.split()[0]) if res.stdout.strip() else None)
        return {"status": "ok" if res.ok else "not reached", "reason": res.reason()}

    monkeypatch.setitem(gpu_check.PARTS, "throughput", interrupts)
    monkeypatch.setitem(gpu_check.PARTS, "agreement", sleeps)
    out = tmp_path / "interrupted"
    start = time.monotonic()
    assert gpu_check.main(["--smoke", "--out", str(out), "--parts", "throughput,agreement"]) == 130
    assert time.monotonic() - start < 60  # the sleeping command was killed, not waited for
    results = json.loads((out / "results.json").read_text())
    for name in ("throughput", "agreement"):
        assert results["parts"][name]["status"] == "not reached"
        assert results["parts"][name]["reason"] == "interrupted by the user"
    assert results["parts"]["jobs"]["reason"] == "not selected (--parts)"
    if pids and pids[0]:
        with pytest.raises(ProcessLookupError):
            os.kill(pids[0], 0)


def test_a_failing_command_is_not_reached_with_its_last_stderr_line(gpu_check, tmp_path: Path):
    ctx = gpu_check.Context(plan=gpu_check.SMOKE_PLAN, data=tmp_path / "d.npz", out=tmp_path,
                            env={"PATH": "/usr/bin:/bin"}, parallel=1)
    argv = [sys.executable, "-c", "import sys; print('noise', file=sys.stderr); sys.exit('the real reason')"]
    res = gpu_check.run_one(ctx, "fails", argv, time.monotonic() + 60)
    assert res.returncode == 1
    assert res.reason() == "`fails` exited with status 1: the real reason"
    slow = gpu_check.run_one(ctx, "sleeps", [sys.executable, "-c", "import time; time.sleep(60)"],
                             time.monotonic() + 1)
    assert slow.returncode is None and slow.reason().startswith("timeout") and slow.seconds < 15


@pytest.mark.parametrize("argv, message", [
    (["--parts", "nope"], "unknown part"),
    (["--data", "missing.npz"], "not an .npz file"),
    (["--jobs-limit", "0"], "must be positive"),
])
def test_bad_arguments_exit_2_without_results(gpu_check, tmp_path: Path, capsys, argv, message):
    with pytest.raises(SystemExit) as e:
        gpu_check.main(["--smoke", "--out", str(tmp_path / "bad"), *argv])
    assert e.value.code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()


# A stand-in for `cifar-tune optimize` / `compare`: its standard output lies (nine "complete" trial lines, the
# console's format); its storage holds the truth (2 complete, 1 pruned, 1 failed, 1 still running when it ended).
STAND_IN = r'''
import sys
import optuna
args = sys.argv[1:]
print("\n".join(f"trial {i:>3} complete  val_loss 1.0 | lr 0.001 | best 1.0" for i in range(9)), flush=True)
if args[0] == "optimize":
    study = optuna.create_study(study_name="cifar10-" + args[args.index("--arch") + 1],
                                storage=args[args.index("--storage") + 1])
    for state in ("COMPLETE", "COMPLETE", "PRUNED", "FAIL"):
        trial = study.ask()
        if state == "COMPLETE":
            study.tell(trial, 1.0)
        else:
            study.tell(trial, state=getattr(optuna.trial.TrialState, state))
    study.ask()  # left running, as a worker killed at the deadline leaves it
'''
STORED = {"complete": 2, "pruned": 1, "fail": 1}


def test_jobs_and_e2e_count_trials_from_the_stored_study_not_stdout(gpu_check, tmp_path: Path, monkeypatch):
    from benchmarks.gpu_check import e2e, jobs

    def stand_in(*args):
        return [sys.executable, "-c", STAND_IN, *map(str, args)]

    monkeypatch.setattr(jobs, "cifar_tune", stand_in)
    monkeypatch.setattr(e2e, "cifar_tune", stand_in)
    ctx = gpu_check.Context(plan=gpu_check.SMOKE_PLAN, data=tmp_path / "d.npz", out=tmp_path,
                            env=dict(os.environ), parallel=1)
    stored_jobs = jobs.run(ctx, time.monotonic() + 120)
    assert stored_jobs["status"] == "ok", stored_jobs
    assert [r["trials_finished"] for r in stored_jobs["rows"]] == [STORED, STORED]
    ran = e2e.run(ctx, time.monotonic() + 120)
    assert ran["status"] == "ok", ran
    assert [s.get("trials_finished") for s in ran["steps"]] == [STORED, None]
    assert "2 complete 1 pruned 1 fail" in "\n".join(e2e.markdown(ran))


def test_finished_trials_of_a_study_that_was_never_stored(gpu_check, tmp_path: Path):
    from benchmarks.gpu_check.stored import finished_trials

    assert finished_trials(tmp_path / "missing.db", "cifar10-cnn") == {}
    assert not (tmp_path / "missing.db").exists()  # reading creates nothing
    (tmp_path / "empty.db").touch()  # the command died before it created the tables
    assert finished_trials(tmp_path / "empty.db", "cifar10-cnn") == {}


def test_throughput_cut_short_keeps_the_rows_its_json_holds(gpu_check, tmp_path: Path, monkeypatch):
    """throughput.py saves its JSON after every measurement; a run that fails keeps those rows (no stdout read)."""
    from benchmarks.gpu_check import throughput

    script = tmp_path / "stand_in_throughput.py"
    script.write_text(
        "import json, sys\n"
        "path = sys.argv[sys.argv.index('--json') + 1]\n"
        "row = {'arch': 'mlp_l2', 'batch': 32, 'precision': 'float32', 'keras': {'seconds_per_epoch': 2.0, "
        "'images_per_second': 150.0, 'compile_seconds': 1.5, 'epoch_seconds': [3.5, 2.0]}}\n"
        "json.dump({'rows': [row], 'complete': False}, open(path, 'w'))\n"
        "print('  mlp_l2 batch 32 float32 fast: 9.000 s/epoch')\n"  # printed, never stored: must not count
        "sys.exit('killed while measuring the fast engine')\n")
    monkeypatch.setattr(throughput, "SCRIPT", script)
    ctx = gpu_check.Context(plan=gpu_check.SMOKE_PLAN, data=tmp_path / "d.npz", out=tmp_path,
                            env=dict(os.environ), parallel=1)
    part = throughput.run(ctx, time.monotonic() + 60)
    assert part["status"] == "not reached"
    assert part["reason"].endswith("killed while measuring the fast engine")
    assert part["rows"] == [{"arch": "mlp_l2", "batch": 32, "precision": "float32", "keras": {
        "seconds_per_epoch": 2.0, "images_per_second": 150.0, "compile_seconds": 1.5}}]
