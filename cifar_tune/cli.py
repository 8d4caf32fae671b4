"""The ``cifar-tune`` command: parse, call the library, print. Nothing here trains or stores by itself."""

from __future__ import annotations

import argparse
import os
import sys

from .errors import UserError
from .names import ARCH_KEYS, DATA_ENV, DEFAULT_STORAGE


class _Parser(argparse.ArgumentParser):
    """argparse that reports a usage mistake as one line (and status 2), like every other user error."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message}\n")


def _archs(value: str) -> list[str]:
    keys = [k.strip() for k in value.split(",") if k.strip()]
    bad = [k for k in keys if k not in ARCH_KEYS]
    if bad or not keys:
        raise argparse.ArgumentTypeError(f"unknown architecture {bad[0] if bad else value!r}; "
                                         f"choose from {', '.join(ARCH_KEYS)}")
    return keys


def _positive(value: str) -> int:
    try:
        n = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value!r}") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value!r}")
    return n


def _add_data(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", help="CIFAR-10 source: .npz, cifar-10-python.tar.gz or cifar-10-batches-py/ "
                                  "(default: $CIFAR_TUNE_DATA, else the official download via Keras)")
    p.add_argument("--subset", type=_positive, help="use a stratified subset of N training images "
                                                    "(the test set is scaled alike, N/5)")


def _add_training(p: argparse.ArgumentParser) -> None:
    p.add_argument("--engine", choices=("auto", "keras", "fast"), default=None,
                   help="training engine: keras (stock fit), fast (compiled device loop), auto (fast on an "
                        "accelerator, else keras)")
    p.add_argument("--precision", choices=("float32", "bf16"), default=None, help="compute precision")
    p.add_argument("--verbose", action="store_true", help="show Keras epoch progress")


def _add_storage(p: argparse.ArgumentParser) -> None:
    p.add_argument("--storage", default=None,
                   help=f"Optuna storage URL (default {DEFAULT_STORAGE}; postgresql+psycopg://... to share)")


def _add_study(p: argparse.ArgumentParser) -> None:
    """The options optimize and run share: preset, budget, sampling, pruning, workers, data, training."""
    p.add_argument("--preset", help="study preset: a name in study/ (default, quick, seed) or a TOML path")
    p.add_argument("--epochs", type=_positive)
    p.add_argument("--val-size", type=_positive, help="validation images carved from train "
                                                      "(default: a tenth of them, at most 5,000)")
    _add_storage(p)
    p.add_argument("--sampler", choices=("tpe", "random"))
    p.add_argument("--pruner", choices=("hyperband", "median", "none"))
    p.add_argument("--seed", type=int, help="the trials' seed, 0 .. 4294967295 (default 0)")
    p.add_argument("--jobs", type=_positive, default=1, help="worker processes on this machine")
    p.add_argument("--trials-per-process", type=_positive, default=None,
                   help="a worker replaces itself with a fresh process after this many trials (default 10): "
                        "bounds memory, which Keras's TensorFlow trainer does not fully release between trials")
    p.add_argument("--heartbeat-interval", type=_positive, default=None,
                   help="seconds between a running trial's heartbeats (RDB storage)")
    p.add_argument("--grace-period", type=_positive, default=None,
                   help="seconds without heartbeat after which a trial counts as dead and is retried once")
    _add_data(p)
    _add_training(p)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    parser = _Parser(prog="cifar-tune", description="Optuna studies around the seed notebook's five "
                                                    "CIFAR-10 classifiers.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    sub.add_parser("archs", help="list the architectures and their baseline parameter counts")

    p = sub.add_parser("baseline", help="reproduce the notebook's fixed-baseline comparison table")
    p.add_argument("--archs", type=_archs, default=list(ARCH_KEYS), help="comma-separated (default: all)")
    p.add_argument("--epochs", type=_positive, default=10)
    p.add_argument("--batch-size", type=_positive, default=32)
    p.add_argument("--protocol", choices=("seed", "holdout"), default="seed",
                   help="seed: validate on the test set as the notebook did; holdout: on a split of train")
    p.add_argument("--val-size", type=_positive, default=None,
                   help="holdout validation images (default: a tenth of the training images, at most 5,000)")
    p.add_argument("--out", help="output folder (default: a new folder under storage/reports/)")
    p.add_argument("--seed", type=int, default=0)
    _add_data(p)
    _add_training(p)

    p = sub.add_parser("optimize", help="run (or resume) an Optuna study for one architecture")
    p.add_argument("--arch", required=True, choices=ARCH_KEYS)
    p.add_argument("--space", help="search-space TOML (default: search_spaces/<arch>.toml)")
    p.add_argument("--n-trials", type=_positive, help="new trials this command runs (all workers together)")
    p.add_argument("--total-trials", type=_positive,
                   help="instead of --n-trials: run until the study holds this many trials, whoever runs them "
                        "(for many machines sharing one study)")
    p.add_argument("--timeout", type=float, help="stop starting new trials after this many seconds")
    p.add_argument("--study-name", help="default: cifar10-<arch>")
    _add_study(p)

    p = sub.add_parser("run", help="the whole job: a study per architecture, compare, report (resumes)")
    p.add_argument("--archs", type=_archs, default=list(ARCH_KEYS), help="comma-separated (default: all)")
    p.add_argument("--n-trials", type=_positive, help="trials per study (a study-wide total; default: the preset's)")
    p.add_argument("--timeout", type=float, help="seconds the studies may start trials in, shared among the "
                                                 "architectures in turn (compare and report are not limited)")
    p.add_argument("--seeds", type=_positive, default=3, help="compare's seeds per architecture")
    p.add_argument("--out", help="folder for the compare tables and the report (default: under storage/reports/)")
    _add_study(p)

    p = sub.add_parser("doctor", help="print backend, device, versions, data source and storage (for bug reports)")
    _add_storage(p)
    p.add_argument("--data", help="the data source to check (default: $CIFAR_TUNE_DATA, else the download)")

    p = sub.add_parser("studies", help="list the studies in a storage")
    _add_storage(p)

    p.add_argument("--pruner", choices=("hyperband", "median", "none"))

    p = sub.add_parser("compare", help="retrain each study's best trial and the baseline; compare on test")
    p.add_argument("--archs", type=_archs, default=None, help="comma-separated (default: every arch with a study)")
    p.add_argument("--seeds", type=_positive, default=3)
    p.add_argument("--epochs", type=_positive, default=None, help="default: the study's epochs")
    _add_storage(p)
    p.add_argument("--out", help="output folder (default: a new folder under storage/reports/)")
    _add_data(p)  # default: the data the studies were tuned on (and their subset)
    p.add_argument("--full-data", action="store_true", help="retrain on every training image and test on all test "
                   "images, also where a study was tuned on a --subset (the final verdict)")
    _add_training(p)

    p = sub.add_parser("report", help="write one self-contained HTML report of the stored studies")
    _add_storage(p)
    p.add_argument("--out", help="output folder or .html path (default: storage/reports/)")

    p = sub.add_parser("dashboard", help="serve optuna-dashboard on the storage")
    _add_storage(p)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=_positive, default=8080)
    return parser


def cmd_archs(args) -> int:
    from . import architectures

    print(f"{'key':<8} {'label':<26} {'parameters':>10}")
    for a in architectures.ARCHITECTURES.values():
        print(f"{a.key:<8} {a.label:<26} {a.build().count_params():>10,}")
    return 0


def cmd_baseline(args) -> int:
    from . import data

    ds = data.load_for_run(args.data, args.subset, args.seed)  # bad data fails here, before Keras loads
    from . import baseline

    table, out_dir = baseline.run(ds, args.archs, epochs=args.epochs, batch_size=args.batch_size,
                                  protocol=args.protocol, val_size=args.val_size, out_dir=args.out,
                                  seed=args.seed, verbose=int(args.verbose), engine=args.engine or "auto",
                                  precision=args.precision or "float32")
    print(f"\nProtocol: {baseline.PROTOCOLS[args.protocol]}")
    print(table.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    print(f"\nWrote {out_dir}/metrics.csv, metrics.md and report.html")
    return 0


def cmd_optimize(args) -> int:
    from . import presets, tuning

    settings = presets.settings_from_args(args)  # validates preset, space, storage URL: nothing stored yet
    return tuning.optimize(settings)


def cmd_run(args) -> int:
    from . import job, presets

    args.space, args.study_name, args.total_trials = None, None, None
    plan = []
    for arch in args.archs:  # each architecture's settings: the preset (and its [archs.<arch>] table), the flags
        args.arch = arch
        plan.append(presets.settings_from_args(args))
    return job.run(plan, seeds=args.seeds, timeout=args.timeout, out_dir=args.out)


def cmd_doctor(args) -> int:
    from . import doctor

    for key, value in doctor.facts(args.storage or DEFAULT_STORAGE, args.data).items():
        print(f"{key + ':':<14} {value}")
    return 0


def cmd_studies(args) -> int:
    from . import database, records

    storage = database.storage_for_reading(args.storage or DEFAULT_STORAGE)
    rows = records.study_rows(storage)
    if not rows:
        print(f"No studies in {database.mask_url(args.storage or DEFAULT_STORAGE)}")
        return 0
    import pandas as pd

    print(pd.DataFrame(rows).to_string(index=False))
    compared = records.compared_rows(storage)
    if compared:
        print("\nCompared on the test set (cifar-tune compare; accuracy, mean over the seeds):")
        print(pd.DataFrame(compared).round(4).to_string(index=False))
    return 0


def cmd_compare(args) -> int:
    from . import compare

    if args.full_data and args.subset:
        raise UserError("--full-data compares on every image; it does not go with --subset")
    # Default data: --data, else $CIFAR_TUNE_DATA, else what the studies were tuned on, else the download.
    return compare.run_cli(args.data or os.environ.get(DATA_ENV), args.subset, archs=args.archs, seeds=args.seeds,
                           epochs=args.epochs, storage=args.storage or DEFAULT_STORAGE, out_dir=args.out,
                           engine=args.engine or "auto", precision=args.precision or "float32",
                           verbose=int(args.verbose), full_data=args.full_data)


def cmd_report(args) -> int:
    from . import study_report

    path = study_report.write_study_report(args.storage or DEFAULT_STORAGE, args.out)
    print(f"Wrote {path}")
    return 0


def cmd_dashboard(args) -> int:
    from . import dashboard

    return dashboard.serve(args.storage or DEFAULT_STORAGE, host=args.host, port=args.port)


NEEDS_KERAS = {"archs", "baseline", "optimize", "run", "compare", "doctor"}
COMMANDS = {"archs": cmd_archs, "baseline": cmd_baseline, "optimize": cmd_optimize, "run": cmd_run,
            "doctor": cmd_doctor, "studies": cmd_studies, "compare": cmd_compare, "report": cmd_report,
            "dashboard": cmd_dashboard}


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``cifar-tune``; returns the exit status."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as e:  # usage errors (status 2) and --help (0), returned so callers in-process see them
        return int(e.code or 0)
    try:
        if args.command in NEEDS_KERAS:
            from . import runtime

            runtime.import_keras()
        return COMMANDS[args.command](args)
    except UserError as e:
        print(f"cifar-tune: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("cifar-tune: interrupted", file=sys.stderr)
        return 130
    except Exception as e:
        # What failed mid-command outside the user's input: the storage (damaged, deleted, locked, server gone;
        # also behind Optuna's "Should not reach" when a trial's result could not be stored), or a disk.
        line, code = _failure(args, e)
        if line is None:
            raise
        print(f"cifar-tune: error: {line}", file=sys.stderr)
        return code


_DISK_ERRNOS = {"ENOSPC", "EDQUOT", "EROFS", "EIO", "EACCES", "EPERM", "ENOENT", "ENOTDIR", "EISDIR", "EEXIST"}


def _failure(args, e: BaseException) -> tuple[str | None, int]:
    """(one line, exit status) for a storage error (2, as every storage error) or a failed write (1), else None."""
    import errno

    if "sqlalchemy" in sys.modules:  # no storage was touched without it
        from . import database

        err = database.storage_failure(getattr(args, "storage", None) or DEFAULT_STORAGE, e)
        if err is not None:
            return str(err), 2
    if isinstance(e, OSError) and errno.errorcode.get(e.errno) in _DISK_ERRNOS:
        where = f" {e.filename}" if e.filename else ""
        return f"cannot write{where}: {e.strerror or e}", 1
    return None, 1
