"""The same study in cifar-tune, KerasTuner, plain Optuna and Ray Tune, measured in one run (issue 23).

    .venv/bin/pip install -e '.[peers]'
    .venv/bin/python benchmarks/peers.py --data .data/cifar10.npz --out results/peers-cpu2-DATE     # 12 x 5, 10,000
    .venv/bin/python benchmarks/peers.py --smoke --data .data/cifar10.npz --out /tmp/peers-smoke     # toy, minutes
    .venv/bin/python benchmarks/peers.py pair results/peers-cpu2-DATE/results.json cifar-tune optuna
    .venv/bin/python benchmarks/peers.py table results/peers-cpu2-DATE/results.json   # remake table.md, anytime.html

One study definition per architecture (``common.Budget``: trials, maximum epochs, training images, seed, retraining
seeds) goes through every tool in turn, each in its own measured process (``bench``), on cifar-tune's split of the
same data, the same models and search space (``search_spaces/<arch>.toml``), Hyperband/ASHA pruning at factor 3
where the tool has it, every trial trained with the study's seed and trials run one at a time on all cores.
Writes ``results.json`` (every run, written as it finishes), ``table.md`` and ``anytime.html`` (the best validation
loss each tool had found by each time since its search started: a plotly figure, and a table at fixed times in
table.md); ``--repeats R`` runs it all R times (medians and ranges; ratios within a repetition), each on the same
study seed (``--seed``: the timing's spread) or, with ``--vary-seed``, repetition r on seed + r (the search's
spread too: with 12 trials a TPE study is still in its 10 random start-up trials for most of them). The peers live in
``benchmarks/peers/`` (see its ``__init__``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root: benchmarks.peers is the package

from benchmarks.peers import bench, common, runner, table  # noqa: E402

SMOKE = dict(archs=["mlp_l2"], trials=3, epochs=2, subset=500, seeds=1, repeats=1)


def parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", default=os.environ.get("CIFAR_TUNE_DATA", ".data/cifar10.npz"), help="CIFAR-10 .npz")
    p.add_argument("--archs", nargs="+", default=list(common.ARCHS), choices=common.ARCHS)
    p.add_argument("--tools", nargs="+", default=list(runner.TOOLS), choices=runner.CHOICES)
    p.add_argument("--trials", type=int, default=12, help="trials per study (KerasTuner Hyperband: the closest)")
    p.add_argument("--epochs", type=int, default=5, help="maximum epochs per trial (and of each retraining)")
    p.add_argument("--subset", type=int, default=10_000, help="training images (a tenth validates), N/5 test")
    p.add_argument("--seeds", type=int, default=3, help="fresh seeds the best config is retrained on")
    p.add_argument("--repeats", type=int, default=1, help="repetitions of the whole comparison")
    p.add_argument("--seed", type=int, default=0, help="the study's seed: data split, sampler, every trial's training")
    p.add_argument("--vary-seed", action="store_true",
                   help="repetition r uses seed + r, so the medians span searches, not only the machine's timing")
    p.add_argument("--out", type=Path, help="results folder (default results/peers-<machine>-<date>)")
    p.add_argument("--work", type=Path, default=Path(".data/peers-work"), help="the tools' working folders")
    p.add_argument("--smoke", action="store_true", help="toy size: " + json.dumps(SMOKE))
    args = p.parse_args(argv)
    if args.smoke:
        for k, v in SMOKE.items():
            setattr(args, k, v)
    return args


def _seeds(args: argparse.Namespace) -> str:
    """The study seed(s) the budget line names: one, or the range ``--vary-seed`` walks."""
    if args.vary_seed and args.repeats > 1:
        return f"{args.seed} to {args.seed + args.repeats - 1} (one per repetition)"
    return str(args.seed)


def meta(args: argparse.Namespace, argv: list[str]) -> dict:
    """What the run was: command, budget, machine, date (the versions are in each run's record)."""
    line = (f"{args.trials} trials x {args.epochs} epochs (max) on {args.subset:,} training images "
            f"({args.subset // 10:,} of them validate), test on {args.subset // 5:,}; best config retrained on "
            f"{args.seeds} seeds; study seed {_seeds(args)}; {platform.machine()}, {os.cpu_count()} CPU cores")
    return {"command": "python benchmarks/peers.py " + " ".join(argv), "budget_line": line,
            "machine": f"{platform.node()} {platform.machine()} {os.cpu_count()} cores, {platform.platform()}",
            "python": platform.python_version(), "date": datetime.now().isoformat(timespec="seconds"),
            "budget": vars(args) | {"out": str(args.out), "work": str(args.work)}}


def write_views(results: dict, out: Path) -> None:
    """``table.md`` and, when the runs recorded it, ``anytime.html`` (the anytime figure; plotly.js from its CDN)."""
    (out / "table.md").write_text(table.markdown(results))
    if any(r.get("anytime") for r in results["runs"]):
        table.anytime_figure(results).write_html(out / "anytime.html", include_plotlyjs="cdn")


def main(argv: list[str]) -> int:
    if argv[:1] in (["pair"], ["table"]):
        results = json.loads(Path(argv[1]).read_text())
        if argv[0] == "pair":
            print("\n".join(table.pair_lines(results, argv[2], argv[3])))
        else:
            write_views(results, Path(argv[1]).parent)
        return 0
    args = parse(argv)
    args.out = args.out or Path("results") / f"peers-cpu{os.cpu_count()}-{datetime.now():%Y-%m-%d}"
    budgets = [common.Budget(arch, args.trials, args.epochs, args.subset, str(Path(args.data).resolve()),
                             seed=args.seed, seeds=args.seeds) for arch in args.archs]
    results = bench.run(budgets, args.tools, args.repeats, args.out, args.work.resolve(), meta(args, argv),
                        vary_seed=args.vary_seed)
    write_views(results, args.out)
    print(table.markdown(results))
    return 1 if any("error" in r for r in results["runs"]) else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
