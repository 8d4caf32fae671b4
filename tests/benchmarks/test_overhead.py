"""benchmarks/overhead.py at toy size (2 trials × 1 epoch of mlp_l2 on 500 synthetic images, one repetition, one trial
per worker process so ``processes`` really runs workers): every variant ran and trained the same thing, its figures
are plausible, table.md is what results.json says, and a second ``run`` resumes (runs nothing again)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from benchmarks import overhead
from cifar_tune.models import configs
from tests.helpers.paths import REPO
from tests.helpers.synthetic import synthetic_cifar


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    """(the run's command line, its --out folder) after one toy run (about 2 minutes on 2 cores)."""
    tmp = tmp_path_factory.mktemp("overhead")
    data = tmp / "tiny.npz"
    x, y, xt, yt = synthetic_cifar(600, 120)
    np.savez(data, x_train=x, y_train=y, x_test=xt, y_test=yt)
    cmd = [sys.executable, str(REPO / "benchmarks" / "overhead.py"), "run", "--out", str(tmp / "out"), "--data",
           str(data), "--archs", "mlp_l2", "--reps", "1", "--trials", "2", "--epochs", "1", "--subset", "500"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    subprocess.run(cmd, check=True, timeout=900, cwd=tmp, env=env)
    return cmd, env, tmp / "out"


@pytest.mark.slow
def test_every_variant_did_the_same_work(bench):
    _, _, out = bench
    runs = json.loads((out / "results.json").read_text())["runs"]
    assert [r["variant"] for r in runs] == [v for v in overhead.VARIANTS if not overhead.VARIANTS[v].get("before")]
    workers = {"plain": 1, "inline": 1, "processes": 1, "jobs2": 2, "plain2": 2}
    for r in runs:
        assert "error" not in r and r["returncodes"] == [0] * len(r["commands"]), r
        assert r["trials"] == 2 and r["workers"] == workers[r["variant"]]
        assert r["backend"] == runs[0]["backend"] and r["data"] == runs[0]["data"]  # one split, one backend
        assert r["configs"] == [json.dumps(configs.baseline("mlp_l2"), sort_keys=True)]  # the seed's, every trial
        assert max(abs(v - runs[0]["val_loss"][0]) for v in r["val_loss"]) < 1e-5  # the same training each time


@pytest.mark.slow
def test_figures_are_plausible(bench):
    _, _, out = bench
    for r in json.loads((out / "results.json").read_text())["runs"]:
        slots = 2 if r["variant"] in ("jobs2", "plain2") else 1
        assert 0 < r["fit_s"] < r["wall_s"] * slots
        assert 0 < r["cpu_s"] <= r["wall_s"] * os.cpu_count() * 1.05  # the tree's CPU, not more than the machine's
        assert 200 < r["peak_mb"] < 50_000 and r["max_processes"] >= r["workers"]  # TensorFlow is resident
        assert 0 < r["startup_s"] < r["wall_s"]
        # a trial's resident size (/proc's VmRSS after its fit) is at most the run's peak; the last trial can be
        # the peak itself, and the kernel's high-water mark (ru_maxrss, the peak then) and VmRSS are read from
        # counters that can disagree a little: 1% of slack (measured: an inline run's last trial 1,082.3 MB against
        # its process's ru_maxrss of 1,082.2 MB)
        rss = [t["rss_mb"] for t in r["trial_rows"]]
        assert all(0 < x <= r["peak_mb"] * 1.01 for x in rss), (r["variant"], rss, r["peak_mb"])
        if slots == 1:  # two trials in one slot: one gap between them
            assert 0 < r["outside_fit_s"] < r["wall_s"]
        if r["variant"].startswith("plain"):
            assert 0 < r["fit_cpu_s"] <= r["cpu_s"]


@pytest.mark.slow
def test_table_is_results_json_and_run_resumes(bench):
    cmd, env, out = bench
    results = json.loads((out / "results.json").read_text())
    written = (out / "table.md").read_text()
    assert written == overhead.markdown(results)
    rows = {line.split(" | ")[0].strip("| "): line.split(" | ") for line in written.splitlines()
            if line.startswith("| ")}
    cpu = overhead.COLUMNS.index(("cpu_s", "CPU s", "{:.1f}")) + 1
    by_variant = {r["variant"]: r for r in results["runs"]}
    for v, r in by_variant.items():
        assert rows[v][cpu] == f"{r['cpu_s']:.1f}"
    ratio = by_variant["inline"]["cpu_s"] / by_variant["plain"]["cpu_s"]
    assert rows["inline / plain"][1] == f"{ratio:.2f}"
    assert f"inline cpu_s ≤ 1.05× plain: {ratio:.2f} — {'met' if ratio <= 1.05 else 'not met'}" in written
    (out / "table.md").unlink()
    subprocess.run([sys.executable, str(REPO / "benchmarks" / "overhead.py"), "table", str(out)], check=True,
                   capture_output=True, env=env)
    assert (out / "table.md").read_text() == written
    again = subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=120, env=env).stdout
    assert again.count("done already") == len(results["runs"])
    assert json.loads((out / "results.json").read_text())["runs"] == results["runs"]


@pytest.mark.parametrize("folder", sorted((REPO / "results").glob("overhead-*")), ids=lambda p: p.name)
def test_the_committed_results_table_is_what_its_results_json_gives(folder):
    """Each committed overhead run: its table.md (and the README's and docs' copies of its figures) is
    ``overhead.markdown`` of its results.json, every run finished, and every variant did the plain script's work."""
    results = json.loads((folder / "results.json").read_text())
    assert (folder / "table.md").read_text() == overhead.markdown(results)
    assert results["runs"] and not [r for r in results["runs"] if "error" in r]
    for r in results["runs"]:
        plain = next(p for p in results["runs"]
                     if (p["arch"], p["rep"], p["variant"]) == (r["arch"], r["rep"], "plain"))
        assert max(abs(v - plain["val_loss"][0]) for v in r["val_loss"]) < 1e-5


def test_the_docs_overhead_table_is_the_committed_one():
    """docs/benchmarks.md's overhead table: each of its ratio and target lines is in the committed table.md, in
    the same order within each architecture."""
    doc = (REPO / "docs" / "benchmarks.md").read_text()
    shown = doc.split("<!-- overhead-table -->")[1].split("<!-- /overhead-table -->")[0]
    table = (REPO / "results" / "overhead-cpu2-2026-12-06-freeze" / "table.md").read_text()
    for arch_block in shown.split("**")[2::2]:  # the text after each **arch** heading
        lines = [ln for ln in arch_block.splitlines()[1:] if ln.strip()]
        assert lines and all(ln in table.splitlines() for ln in lines), lines


def test_memory_steps_leave_out_each_processs_first_step():
    """A process's first step (its second trial's RSS over its first's) is its warm-up; the growth is the mean of
    its later steps, over every worker process."""
    rows = [{"worker": w, "start": float(i), "rss_mb": mb}
            for w, sizes in (("a", [1000, 1060, 1070, 1080]), ("b", [900, 940, 960])) for i, mb in enumerate(sizes)]
    assert overhead.memory_steps(rows) == {"warmup_mb": 50.0, "growth_mb": (10 + 10 + 20) / 3}
    assert overhead.memory_steps(rows[:1]) == {"warmup_mb": None, "growth_mb": None}


def test_the_docs_memory_table_is_the_committed_one():
    """docs/benchmarks.md's table of the 12-trial run: each row's memory steps, peak and CPU ratio are the cells of
    the committed table.md for that architecture and variant."""
    doc = (REPO / "docs" / "benchmarks.md").read_text()
    table = (REPO / "results" / "overhead-memory-cpu2-2026-12-06" / "table.md").read_text()
    blocks = dict(zip(table.split("**")[1::2], table.split("**")[2::2], strict=True))  # arch -> its block
    labels = [label for _, label, _ in overhead.COLUMNS]
    shown = [line.split(" | ") for line in doc.splitlines() if line.startswith(("| mlp_l2, ", "| cnn, "))]
    assert len(shown) == 4
    for cells in shown:
        arch, variant = cells[0].strip("| ").split(", ")
        rows = {line.split(" | ")[0].strip("| "): line.split(" | ") for line in blocks[arch].splitlines()
                if line.startswith("| ")}
        row = rows[variant]
        assert cells[1:4] == [row[labels.index(k) + 1] for k in ("MB 1st→2nd trial", "MB/trial after 2nd", "peak MB")]
        ratio = rows["inline / plain"][1] if variant == "inline" else ""
        assert cells[4].strip(" |") == ratio


def test_the_docs_cnn_rerun_figures_are_the_committed_ones():
    """docs/benchmarks.md quotes the CNN rerun's CPU ratios (with and without the batch-level callbacks) as its
    committed table.md gives them."""
    doc = " ".join((REPO / "docs" / "benchmarks.md").read_text().split())
    table = (REPO / "results" / "overhead-cnn-rerun-cpu2-2026-12-06" / "table.md").read_text()
    cpu = {line.split(" | ")[0].strip("| "): line.split(" | ")[1] for line in table.splitlines()
           if line.startswith("| inline")}
    assert f"inline {cpu['inline / plain']} of the plain script's CPU" in doc
    assert f"without those callbacks {cpu['inline-before / plain']}." in doc
