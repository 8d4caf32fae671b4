"""benchmarks/gpu_check: the smoke run end to end, a part over its time limit, SIGTERM and Ctrl-C mid-run, the
sizing rule, failing commands, bad arguments."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.helpers.paths import REPO

SCRIPT = REPO / "benchmarks" / "gpu_check.py"  # the entry script; the check is the package benchmarks/gpu_check/
PACKAGE = REPO / "benchmarks" / "gpu_check"
PARTS = ("probe", "throughput", "agreement", "jobs", "e2e")


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
    print(f"smoke run: {seconds:.0f} s")  # not asserted: the machine may be busy
    parts = results["parts"]
    for name in PARTS:
        assert parts[name]["status"] == "ok", (name, parts[name].get("reason"))
    # results.json was written as each part started (running: not reached) and again when it ended (e2e also
    # after each step), the probe before the others
    timeline = results["timeline"]
    assert timeline[0]["part"] == "probe" and timeline[1] == {**timeline[1], "part": "probe", "status": "ok"}
    for name in PARTS:
        statuses = [t["status"] for t in timeline if t["part"] == name]
        assert statuses[0] == "not reached" and statuses[-1] == "ok" and "ok" not in statuses[:-1], (name, timeline)
    assert len([t for t in timeline if t["part"] == "e2e"]) == 4  # start, optimize mlp_l2, compare, end

    probe = parts["probe"]
    assert {(r["arch"], r["engine"], r["batch"]) for r in probe["rows"]} == {("mlp_l2", "keras", 32),
                                                                            ("mlp_l2", "fast", 32)}
    for r in probe["rows"]:
        assert positive(r["first_epoch_seconds"]) and positive(r["second_epoch_seconds"]), r
        assert 0 <= r["val_accuracy"] <= 1 and r["finite"] is True, r
    assert probe["numerics"]["status"] in ("passed", "not available in this checkout"), probe["numerics"]
    assert results["plan"]["times_source"].startswith("the probe")
    assert set(results["plan"]["parts"]) == set(PARTS[1:])

    rows = parts["throughput"]["rows"]
    assert {r["arch"] for r in rows} == {"mlp_l2"}
    for r in rows:
        for engine in ("keras", "fast"):
            assert positive(r[engine]["seconds_per_epoch"]) and positive(r[engine]["images_per_second"]), r
            assert r[engine]["compile_seconds"] is not None and r[engine]["compile_seconds"] >= 0, r
            assert 0 <= r[engine]["val_accuracy"] <= 1 and r[engine]["finite"] is True, r
        assert positive(r["ratio"]), r

    for r in parts["agreement"]["rows"]:
        assert 0 <= r["keras_accuracy"] <= 1 and 0 <= r["fast_accuracy"] <= 1, r
        assert r["keras_seeds"] == r["fast_seeds"] == [0], r
        assert isinstance(r["within_1.5_points"], bool), r
    assert {r["arch"] for r in parts["agreement"]["rows"]} == {"mlp_l2"}

    jobs = parts["jobs"]["rows"]
    assert [r["jobs"] for r in jobs] == [2]
    for r in jobs:
        assert positive(r["seconds"]) and positive(r["trials_per_hour"]), r
        assert sum(r["trials_finished"].values()) == r["trials"], r

    e2e = parts["e2e"]
    assert positive(e2e["seconds"]) and isinstance(e2e["within_target"], bool) and e2e["cut"] == []
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
    monkeypatch.setitem(gpu_check.PARTS, "probe", stand_in("probe", {"rows": []}))
    out = tmp_path / "limited"
    start = time.monotonic()
    assert gpu_check.main(["--smoke", "--out", str(out), "--throughput-limit", "1"]) == 0
    assert time.monotonic() - start < 60
    assert ran[0] == "probe" and sorted(ran[1:]) == ["agreement", "e2e", "jobs"]  # then the others at once
    results = json.loads((out / "results.json").read_text())
    throughput = results["parts"]["throughput"]
    assert throughput["status"] == "not reached"
    assert throughput["reason"].startswith("timeout") and "throughput" in throughput["reason"]
    assert throughput["limit_seconds"] == 1 and throughput["wall_seconds"] < 20
    assert [results["parts"][n]["status"] for n in ("probe", "agreement", "jobs", "e2e")] == ["ok"] * 4
    md = (out / "results.md").read_text()
    assert "Status: **not reached** — timeout" in md
    assert set(tables_per_part(md)) == {*PARTS, "plan"}  # the sizing, then a section per part


@pytest.fixture
def ctrl_c_raises():
    """Ctrl-C raises KeyboardInterrupt in this process whatever it inherited: a shell's background job (`pytest
    ... &` without job control) starts with SIGINT ignored, and then the smoke's main thread never hears it."""
    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, before)


def test_ctrl_c_ends_every_running_part_and_keeps_the_record(gpu_check, tmp_path: Path, monkeypatch, ctrl_c_raises):
    """The smoke runs its parts in threads: Ctrl-C reaches only the main thread, which must end the others'
    commands (they run in sessions of their own) and still write results.json, each part 'interrupted'."""
    pids = []

    def interrupts(ctx, deadline):
        # Ctrl-C at a terminal goes to the process, and Linux hands it to the main thread, which does not block
        # it; os.kill from this worker thread would hand it to this thread, and CPython's main thread, waiting on a
        # lock, may then not run the handler until its wait ends (likely why it failed once in the full suite)
        signal.pthread_kill(threading.main_thread().ident, signal.SIGINT)  # KeyboardInterrupt while it waits
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
    assert [r["trials_finished"] for r in stored_jobs["rows"]] == [STORED]
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
        "'images_per_second': 150.0, 'compile_seconds': 1.5, 'epoch_seconds': [3.5, 2.0], 'val_accuracy': 0.25, "
        "'finite': True}}\n"
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
        "seconds_per_epoch": 2.0, "images_per_second": 150.0, "compile_seconds": 1.5, "val_accuracy": 0.25,
        "finite": True}}]


def probe_result(scale: float = 1.0) -> dict:
    """A probe part's result as probe.run records it: every arch, both engines, batch 32 and 512; ``scale``
    multiplies every time (a slower machine)."""
    per_epoch = {"resnet": 3.0, "cnn_da": 2.0, "cnn": 1.5, "mlp_bn": 1.0, "mlp_l2": 1.0}
    rows = [{"arch": arch, "engine": engine, "batch": batch,
             "first_epoch_seconds": scale * (compile_s + second), "second_epoch_seconds": scale * second}
            for arch, s in per_epoch.items() for engine, compile_s in (("keras", 8.0), ("fast", 5.0))
            for batch, second in ((32, 0.3 * s), (512, 0.05 * s))]
    return {"status": "ok", "images": 5000, "val_images": 1000, "startup_seconds": 10.0 * scale, "rows": rows}


def test_sizing_fits_every_part_in_its_limit_and_cuts_more_on_a_slower_machine(gpu_check):
    from benchmarks.gpu_check import plan as p

    # the rule itself, on uniform times: a study of T trials with --jobs N costs start-up (twice with workers)
    # plus T × (compile + epochs × s per image × images) / min(N, 2)
    uniform = p.Times({("*", e, b): (4.0, 1e-4) for e in ("keras", "fast") for b in (32, 512)}, 6.0, "test")
    jobs_plan = p.replace(p.GPU_PLAN, jobs_counts=(1, 4), jobs_trials=4, jobs_epochs=2, jobs_subset=10_000)
    trial = 4.0 + 2 * 1e-4 * 10_000
    assert p.estimate_jobs(jobs_plan, uniform, 4) == pytest.approx(6.0 + 4 * trial + 12.0 + 4 * trial / 2)

    chosen = {}
    for scale in (0.05, 1.0, 4.0):
        plan, record = p.size(p.GPU_PLAN, p.GPU_LADDERS, p.Times.from_probe(probe_result(scale)), p.LIMITS)
        chosen[scale] = {part: r["rung"] for part, r in record["parts"].items()}
        for part, r in record["parts"].items():
            assert r["budget_seconds"] == pytest.approx(p.SAFETY * p.LIMITS[part])
            assert r["fits"] == (r["estimate_seconds"] <= r["budget_seconds"]), (scale, part, r)
            assert r["fits"] or r["rung"] == r["rungs"] - 1, (scale, part, r)  # the last rung only when none fit
            assert r["sizes"] == plan.sizes(part)
    # a fast machine: the full sizes, but for jobs' three commands whose start-ups alone (at least 5 s each, twice
    # with workers) take most of its 40 s
    assert chosen[0.05] == {"throughput": 0, "agreement": 0, "jobs": chosen[0.05]["jobs"], "e2e": 0}
    for part in chosen[1.0]:
        assert chosen[0.05][part] <= chosen[1.0][part] <= chosen[4.0][part], (part, chosen)
    assert chosen[4.0]["e2e"] > 0
    _, record = p.size(p.GPU_PLAN, p.GPU_LADDERS, p.Times.from_probe(probe_result(4.0)), p.LIMITS)
    cut = record["parts"]["e2e"]["cut"]
    assert cut and cut[0].startswith("archs mlp_bn, mlp_l2, cnn"), cut  # cnn_da and resnet are kept first
    # no probe: pessimistic defaults, never the full sizes
    _, record = p.size(p.GPU_PLAN, p.GPU_LADDERS, p.Times.from_probe(None), p.LIMITS)
    assert record["times_source"].startswith("default") and record["parts"]["e2e"]["rung"] > 0
    # the time the probe left goes to the later parts, in proportion
    stretched = p.stretch(p.LIMITS, ["throughput", "agreement", "jobs"], 60)
    assert sum(stretched[n] for n in ("throughput", "agreement", "jobs")) == pytest.approx(150 + 60)
    assert stretched["e2e"] == p.LIMITS["e2e"] and stretched["throughput"] == pytest.approx(60 + 24)


def test_sigterm_mid_run_leaves_results_with_the_finished_parts(gpu_check, tmp_path: Path, monkeypatch):
    """The GPU order (one part after another): probe and throughput finish, SIGTERM comes during agreement. The
    handler writes results.json at once (the finished parts, agreement still running), the run then ends its
    parts and exits 143, and the copy in --copy-to matches."""
    from benchmarks.gpu_check.machine import synthetic_npz

    out, copy, seen = tmp_path / "out", tmp_path / "copy", {}

    def terminated(ctx, deadline):
        os.kill(os.getpid(), signal.SIGTERM)
        assert ctx.stop.wait(30)
        seen["snapshot"] = json.loads((out / "results.json").read_text())
        return {"status": "not reached", "reason": "stand-in"}

    monkeypatch.setitem(gpu_check.PARTS, "probe", lambda ctx, deadline: probe_result())
    monkeypatch.setitem(gpu_check.PARTS, "throughput", lambda ctx, deadline: {"status": "ok", "rows": []})
    monkeypatch.setitem(gpu_check.PARTS, "agreement", terminated)
    data = synthetic_npz(tmp_path / "d.npz", 50, 20)
    before = signal.getsignal(signal.SIGTERM)
    assert gpu_check.main(["--out", str(out), "--data", str(data), "--copy-to", str(copy)]) == 143
    assert signal.getsignal(signal.SIGTERM) is before
    snapshot = seen["snapshot"]["parts"]
    assert [snapshot[n]["status"] for n in ("probe", "throughput", "agreement")] == ["ok", "ok", "not reached"]
    assert snapshot["agreement"]["reason"] == "running when this file was written"
    results = json.loads((out / "results.json").read_text())
    assert results == json.loads((copy / "results.json").read_text())
    assert (out / "results.md").read_text() == (copy / "results.md").read_text()
    parts = results["parts"]
    assert parts["probe"]["status"] == parts["throughput"]["status"] == "ok"
    assert parts["agreement"]["reason"] == parts["jobs"]["reason"] == "terminated (SIGTERM)"
    assert parts["e2e"]["reason"] == "not selected (--parts)"  # the second command's part
    assert results["plan"]["times_source"] == "the probe (this run)"
    assert not list(out.glob(".*partial"))  # every write was renamed into place


def test_the_e2e_command_is_sized_from_the_first_commands_probe(gpu_check, tmp_path: Path, monkeypatch):
    from benchmarks.gpu_check.machine import synthetic_npz

    first = tmp_path / "first.json"
    first.write_text(json.dumps({"started": "earlier", "parts": {
        "probe": probe_result(4.0), "throughput": {"status": "ok", "rows": []},
        "e2e": {"status": "not reached", "reason": "not selected (--parts)"}}}))
    got = {}

    def e2e_stand_in(ctx, deadline):
        got.update(plan=ctx.plan, sizing=ctx.sizing)
        return {"status": "ok", "steps": [], "seconds": 1.0}

    monkeypatch.setitem(gpu_check.PARTS, "e2e", e2e_stand_in)
    out = tmp_path / "out"
    data = synthetic_npz(tmp_path / "d.npz", 50, 20)
    assert gpu_check.main(["--part", "e2e", "--out", str(out), "--data", str(data), "--probe", str(first),
                           "--jobs", "2"]) == 0
    from benchmarks.gpu_check import plan as p

    sized, record = p.size(p.GPU_PLAN, p.GPU_LADDERS, p.Times.from_probe(probe_result(4.0)), p.LIMITS, e2e_jobs=2)
    assert got["plan"] == sized and got["plan"].e2e_jobs == 2 and got["plan"].e2e_archs != p.ALL_ARCHS
    assert got["sizing"]["parts"]["e2e"]["cut"] == record["parts"]["e2e"]["cut"] != []
    results = json.loads((out / "results.json").read_text())
    assert results["plan"]["times_source"] == f"the probe ({first})"
    assert results["parts"]["probe"]["earlier_run"] == "earlier"  # the first command's parts stay in the record
    assert results["parts"]["throughput"]["status"] == "ok" and results["parts"]["e2e"]["status"] == "ok"
    assert results["parts"]["agreement"]["reason"] == "not selected (--parts)"
