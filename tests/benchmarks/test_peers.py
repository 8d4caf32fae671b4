"""benchmarks/peers.py: the peers train what cifar-tune trains, on its split; the tables in docs/benchmarks.md are
the committed data.

Fast: the split (cifar-tune's study records it; the peers' copy must describe the same data), the models' parameter
counts, the space each peer samples, KerasTuner's Hyperband trial count, compare's seeds, ``--vary-seed``'s walk
over study seeds, and docs/benchmarks.md's tables against ``results/peers-*/results.json``. Slow: the ``--smoke``
run of every tool.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import optuna
import pytest

from benchmarks.peers import common, table
from tests.helpers.paths import REPO

SEEDS_RESULTS = REPO / "results" / "peers-seeds-cpu2-2026-12-06" / "results.json"  # the run over study seeds
SHA_RESULTS = REPO / "results" / "peers-sha-cpu2-2026-12-07" / "results.json"  # cifar-tune-sha on the same seeds


def readme_section() -> str:
    """docs/benchmarks.md, the comparison with the peers (the README links it)."""
    return (REPO / "docs" / "benchmarks.md").read_text()


def committed_results() -> Path:
    m = re.search(r"results/peers-[\w.-]+/results\.json", readme_section())
    assert m, "docs/benchmarks.md names its results.json"
    return REPO / m.group(0)


def test_split_equals_cifar_tunes(tiny_npz, tmp_path):
    """The split cifar-tune's study records (fingerprint of the subset, validation size, seed) is the peers'."""
    import cifar_tune as ct

    url = f"sqlite:///{tmp_path / 's.db'}"
    study = ct.optimize(arch="mlp_l2", n_trials=1, epochs=1, data=str(tiny_npz), subset=200, storage=url)
    split = common.load_split(str(tiny_npz), 200)
    assert study.user_attrs["data"] == split["description"]
    assert len(split["y_train"]) == 180 and len(split["y_val"]) == 20 and len(split["y_full"]) == 200
    assert len(split["y_test"]) == round(200 * 100 / 300)


@pytest.mark.parametrize("arch", common.ARCHS)
def test_models_are_the_seeds(arch):
    model = common.build_model(arch, common.BASELINES[arch])
    assert model.count_params() == common.SEED_PARAMS[arch]


@pytest.mark.parametrize("arch", common.ARCHS)
def test_optuna_space_samples_every_parameter(arch):
    """Define-by-run (plain Optuna and Ray's OptunaSearch) samples the TOML's parameters, within their ranges."""
    from benchmarks.peers.optuna_plain import suggest

    params = common.space(arch)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    seen = set()
    for _ in range(40):
        trial = study.ask()
        values = suggest(trial, arch)
        config = common.config_from_values(arch, values)
        seen |= set(values)
        for name, p in params.items():
            v = config[name]
            if "choices" in p:
                assert v in p["choices"] or v == p["baseline"]
            elif name in values:
                assert p["low"] <= v <= p["high"]
        study.tell(trial, 0.0)
    assert set(params) <= seen and "use_l2" in seen


def test_kerastuner_hyperband_trials_match_its_oracle():
    kt = pytest.importorskip("keras_tuner")
    from benchmarks.peers.kerastuner import hyperband_trials

    for max_epochs in (2, 5, 10):
        oracle = kt.oracles.HyperbandOracle(objective="val_loss", max_epochs=max_epochs, factor=3)
        expected = sum(oracle._get_size(b, r) for b in range(oracle._get_num_brackets())
                       for r in range(oracle._get_num_rounds(b)))
        assert hyperband_trials(max_epochs) == expected
    assert hyperband_trials(5) == 10


def test_compare_seeds_are_cifar_tunes():
    """Every tool retrained on the seeds cifar-tune compare used, in both committed runs (compare skips the
    study's own seed, which the run over seeds varies)."""
    for path in (committed_results(), SEEDS_RESULTS):
        runs = [r for r in json.loads(path.read_text())["runs"] if "test" in r]
        assert {r["tool"] for r in runs} >= {"cifar-tune", "optuna"}
        for run in runs:
            assert [t["seed"] for t in run["test"]] == common.compare_seeds(len(run["test"]), run.get("seed", 0))


@pytest.mark.parametrize("vary", [False, True])
def test_vary_seed_walks_the_study_seed(tmp_path, monkeypatch, vary):
    """``--vary-seed``: repetition r trains on seed + r; without it every repetition keeps the seed; resuming a
    folder on other seeds is refused before anything runs or is written. (The loop alone: ``record`` here returns
    what it was given; the smoke test runs the real one.)"""
    from benchmarks.peers import bench

    monkeypatch.setattr(bench, "record", lambda rep, tool, budget, workdir: {
        "rep": rep, "arch": budget.arch, "tool": tool, "seed": budget.seed, "error": "not run"})
    budgets = [common.Budget(arch, 2, 1, 100, "unused.npz", seed=5) for arch in ("mlp_l2", "cnn")]
    results = bench.run(budgets, ["optuna"], 3, tmp_path, tmp_path, {"command": "test"}, vary_seed=vary)
    seeds = [(r["rep"], r["arch"], r["seed"]) for r in results["runs"]]
    assert seeds == [(rep, arch, 5 + rep if vary else 5) for rep in range(3) for arch in ("mlp_l2", "cnn")]
    if vary:  # resuming that folder without --vary-seed would mix searches: refused before anything runs
        path = tmp_path / "results.json"
        kept = [{k: v for k, v in r.items() if k != "error"} for r in results["runs"]]  # as if they had run
        path.write_text(json.dumps({**results, "runs": kept}))
        before = path.read_text()
        with pytest.raises(SystemExit, match="repetition 1 of mlp_l2 ran on study seed 6, this command gives it 5"):
            bench.run(budgets, ["optuna"], 3, tmp_path, tmp_path, {"command": "test"}, vary_seed=False)
        assert path.read_text() == before


@pytest.mark.parametrize("marker", ["peers-table", "peers-seeds-table", "peers-sha-table"])
def test_readme_table_is_the_committed_results(marker):
    """docs/benchmarks.md's tables are ``table.markdown`` of the committed results.json (the seed-0 run, the run
    over study seeds 1 to 3, and cifar-tune with successive halving on those seeds), byte for byte, and every run
    trained on cifar-tune's split (and, over seeds, on its repetition's own seed)."""
    path = {"peers-table": committed_results(), "peers-seeds-table": SEEDS_RESULTS,
            "peers-sha-table": SHA_RESULTS}[marker]
    results = json.loads(path.read_text())
    section = readme_section()
    start, end = f"<!-- {marker} -->", f"<!-- /{marker} -->"
    shown = section[section.index(start) + len(start):section.index(end)].strip()
    assert shown == table.markdown(results).strip()
    assert (path.parent / "table.md").read_text().strip() == shown
    assert all(r.get("split_matches") for r in results["runs"] if "error" not in r)
    if marker != "peers-table":
        assert {(r["rep"], r["seed"]) for r in results["runs"]} == {(0, 1), (1, 2), (2, 3)}
        assert all(r["split"].endswith(f"seed {r['seed']}") for r in results["runs"])


def test_anytime_is_the_best_found_by_each_trials_end():
    """Trial granularity, any order in; a NaN (diverged) or worse trial never lowers the curve."""
    trials = [(30.0, 1.9), (10.0, 2.1), (20.0, float("nan")), (40.0, 2.0), (50.0, 1.7)]
    assert common.anytime(trials) == [[10.0, 2.1], [30.0, 1.9], [50.0, 1.7]]
    rows = [{"t": t, "trial": trial, "val_loss": loss, "val_accuracy": 0.3}
            for t, trial, loss in [(5.0, "a", 2.3), (9.0, "a", 2.2), (12.0, "b", 2.4), (20.0, "b", 2.1)]]
    assert common.summarize_log(rows, 2.1)["anytime"] == [[9.0, 2.2], [20.0, 2.1]]  # each trial's lowest epoch


def test_anytime_table_and_figure_read_each_runs_curve():
    runs = [{"rep": rep, "arch": "cnn", "tool": tool, "wall_s": 300.0, "anytime": curve}
            for rep, tool, curve in [(0, "cifar-tune", [[50.0, 1.6], [200.0, 1.4]]), (1, "cifar-tune", [[70.0, 1.5]]),
                                     (0, "optuna", [[130.0, 1.55]]), (1, "optuna", [])]]
    results = {"meta": {"budget_line": "toy"}, "runs": runs}
    assert table.best_by(runs[0], 49) is None and table.best_by(runs[0], 60) == 1.6
    assert table.best_by(runs[0], 960) == 1.4
    rows = {line.split(" | ")[0].strip("| "): line.split(" | ") for line in table.anytime_table(results, "cnn")}
    assert rows["cifar-tune"][1:3] == ["1.600", "1.550 [1.500, 1.600]"]  # by 60 s rep 1 had found nothing yet
    assert rows["cifar-tune"][3] == "1.450 [1.400, 1.500]"  # by 240 s: rep 0 has found 1.4
    assert rows["optuna"][1:3] == ["—", "—"] and rows["optuna"][3] == "1.550"  # its empty repetition counts not
    assert "best val loss by" in table.markdown(results)
    figure = table.anytime_figure(results)
    assert len(figure.data) == 3  # a line per run that has a curve
    assert [d.showlegend for d in figure.data] == [True, False, True]  # one legend entry per tool
    assert list(figure.data[0].x) == [50.0, 200.0, 300.0] and list(figure.data[0].y) == [1.6, 1.4, 1.4]


@pytest.mark.slow
def test_smoke_runs_every_tool(tmp_path):
    """``peers.py --smoke``: every tool searches and retrains at toy size (a couple of minutes on 2 cores)."""
    pytest.importorskip("keras_tuner")
    pytest.importorskip("ray")
    data = common.REPO / ".data" / "cifar10.npz"
    if not data.is_file():
        pytest.skip(f"real data not materialized at {data}")
    out = tmp_path / "out"
    subprocess.run([sys.executable, str(REPO / "benchmarks" / "peers.py"), "--smoke", "--data", str(data),
                    "--out", str(out), "--work", str(tmp_path / "work")], check=True, timeout=900, cwd=REPO)
    runs = json.loads((out / "results.json").read_text())["runs"]
    assert {r["tool"] for r in runs} == {"cifar-tune", "kerastuner-hyperband", "kerastuner-bayes", "optuna",
                                         "ray-tune"}
    for r in runs:
        assert "error" not in r and r["split_matches"] and r["trials"] >= 1 and r["epochs"] >= r["trials"]
        assert r["peak_rss_mb"] > 0 and len(r["test"]) == 1
    assert "| cifar-tune |" in (out / "table.md").read_text()
    for r in runs:  # the anytime curve: times within the search, losses falling, the last one the tool's best
        times, losses = [p[0] for p in r["anytime"]], [p[1] for p in r["anytime"]]
        assert times and 0 < times[0] and times == sorted(times) and times[-1] <= r["wall_s"], r["anytime"]
        assert losses == sorted(losses, reverse=True) and losses[-1] <= r["best_val_loss"] + 1e-9
    assert "best val loss by" in (out / "table.md").read_text() and (out / "anytime.html").is_file()
