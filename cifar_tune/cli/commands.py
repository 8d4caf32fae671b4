"""The ``cifar-tune`` command: parse, call the library, print (the console reporter, ``console.py``, for every
command; the long commands' result lines and exit statuses in ``jobs.py``). Nothing here trains or stores by
itself."""

from __future__ import annotations

import argparse
import os
import signal
import sys

from cifar_tune import choices, progress
from cifar_tune.choices import ARCH_KEYS, DATA_ENV, DEFAULT_STORAGE
from cifar_tune.cli.console import Console
from cifar_tune.errors import InvalidValue, UserError
from cifar_tune.studies import validate


class _Parser(argparse.ArgumentParser):
    """argparse that reports a usage mistake as one line, ``cifar-tune: error: ...`` and status 2, like every other
    user error, and takes no abbreviation: a typo (``--trials``, ``--epoch``) is refused with the closest option,
    never read as the option it prefixes (``--trials-per-process``) while the default study starts."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("allow_abbrev", False)  # the subcommands' parsers get it too (sub.add_parser's kwargs)
        super().__init__(*args, **kwargs)

    def error(self, message: str):
        self.exit(2, f"cifar-tune: error: {message}\n")

    def parse_known_args(self, args=None, namespace=None):
        """As argparse, but an unknown option is an error here, in the (sub)parser that knows the options it could
        have meant: argparse itself passes a subcommand's leftovers up to ``cifar-tune``, which says only
        ``unrecognized arguments``."""
        namespace, extras = super().parse_known_args(args, namespace)
        unknown = next((a for a in extras if a.startswith("-") and a != "-"), None)
        if unknown is not None:
            self.error(self._unknown_option(unknown.split("=", 1)[0]))
        return namespace, extras

    def _unknown_option(self, option: str) -> str:
        import difflib

        known = [o for o in self._option_string_actions if o.startswith("--")]
        close = difflib.get_close_matches(option, known, n=1)
        return f"unknown option {option} " + (f"(did you mean {close[0]}?)" if close else f"(see {self.prog} --help)")


def _checked(check, name: str):
    """An argparse type running one of validate.py's checks: the same rule for a flag, a preset key and the Python
    API; argparse prints its ``rule`` after the flag's name, as one line."""
    def parse(value: str):
        try:
            return check(name, value)
        except InvalidValue as e:
            raise argparse.ArgumentTypeError(e.rule) from None

    parse.__name__ = name  # argparse names the type in some messages
    return parse


def _number(name: str):
    """A number flag within ``validate.RANGES[name]`` (--epochs, --batch-size, --seed, --seeds, --subset, ...)."""
    return _checked(validate.parse_number, name)


def _text(name: str):
    """A string flag that may not be empty (--storage '' would silently mean the default database)."""
    return _checked(validate.check_nonempty, name)


_archs = _checked(lambda name, value: validate.check_unique_list(name, validate.split_list(value), ARCH_KEYS),
                  "archs")


def _add_data(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", type=_text("data"), help="CIFAR-10 source: .npz, cifar-10-python.tar.gz or "
                   "cifar-10-batches-py/ (default: $CIFAR_TUNE_DATA, else the official download via Keras)")
    p.add_argument("--subset", type=_number("subset"), help="use a stratified subset of N training images "
                                                    "(the test set is scaled alike, N/5)")


def _add_training(p: argparse.ArgumentParser) -> None:
    p.add_argument("--engine", choices=choices.ENGINES, default=None,
                   help="training engine: keras (stock fit), fast (compiled device loop), auto (fast on an "
                        "accelerator, else keras)")
    p.add_argument("--precision", choices=choices.PRECISIONS, default=None, help="compute precision")
    p.add_argument("--verbose", action="store_true", help="show Keras epoch progress")


def _add_storage(p: argparse.ArgumentParser) -> None:
    p.add_argument("--storage", type=_text("storage"), default=None,
                   help=f"Optuna storage URL (default {DEFAULT_STORAGE}; postgresql+psycopg://... to share)")


def _add_study(p: argparse.ArgumentParser) -> None:
    """The options optimize and run share: preset, budget, sampling, pruning, workers, data, training."""
    p.add_argument("--preset", type=_text("preset"),
                   help="study preset: a name in study/ (default, quick, seed) or a TOML path")
    p.add_argument("--epochs", type=_number("epochs"), help="epochs each trial trains at most (pruning may stop it "
                   "sooner; default: the preset's, 10 in default)")
    p.add_argument("--val-size", type=_number("val_size"), help="validation images carved from train "
                                                      "(default: a tenth of them, at most 5,000)")
    _add_storage(p)
    p.add_argument("--sampler", choices=choices.SAMPLERS,
                   help="Optuna sampler: tpe (multivariate TPE) or random (default: the preset's)")
    p.add_argument("--pruner", choices=choices.PRUNERS, help="Optuna pruner on the validation loss after each epoch "
                   "(default: the preset's)")
    p.add_argument("--seed", type=_number("seed"), help="the trials' seed, 0 .. 4294967295 (default 0)")
    p.add_argument("--jobs", type=_number("jobs"), default=None,
                   help="worker processes on this machine (default: one per visible GPU, 1 without GPUs); they are "
                        "placed round robin over the GPUs (CUDA_VISIBLE_DEVICES)")
    p.add_argument("--jobs-per-gpu", type=_number("jobs_per_gpu"), default=None,
                   help="workers sharing each GPU, each with that share of its memory (default 1; with --jobs: as "
                        "many as the GPUs get)")
    p.add_argument("--ray", type=_text("ray"), default=None, metavar="ADDRESS",
                   help="run the workers as tasks on a Ray cluster, placed by Ray: auto (the cluster this machine "
                        "belongs to), HOST:6379, ray://HOST:10001 (Ray Client) or local (start Ray here); needs "
                        "cifar-tune[ray] on every node and a PostgreSQL storage whose password the nodes hold "
                        "($PGPASSWORD or ~/.pgpass)")
    p.add_argument("--workers", type=_number("workers"), default=None,
                   help="with --ray: workers on the cluster (default: --jobs-per-gpu per GPU of the cluster, one per "
                        "node without GPUs)")
    p.add_argument("--trials-per-process", type=_number("trials_per_process"), default=None,
                   help="a worker replaces itself with a fresh process after this many trials (default 10 on "
                        "TensorFlow, no bound on JAX): "
                        "bounds memory, which Keras's TensorFlow trainer does not fully release between trials")
    p.add_argument("--heartbeat-interval", type=_number("heartbeat_interval"), default=None,
                   help="seconds between a running trial's heartbeats (RDB storage)")
    p.add_argument("--grace-period", type=_number("grace_period"), default=None,
                   help="seconds without heartbeat after which a trial counts as dead and is retried once")
    _add_data(p)
    _add_training(p)


def _add_baseline(sub) -> None:
    p = sub.add_parser("baseline", help="reproduce the notebook's fixed-baseline comparison table")
    p.add_argument("--archs", type=_archs, default=list(ARCH_KEYS), help="comma-separated (default: all)")
    p.add_argument("--epochs", type=_number("epochs"), default=choices.DEFAULT_EPOCHS,
                   help=f"epochs each model trains (default {choices.DEFAULT_EPOCHS}, the notebook's)")
    p.add_argument("--batch-size", type=_number("batch_size"), default=choices.DEFAULT_BATCH_SIZE,
                   help=f"training batch size (default {choices.DEFAULT_BATCH_SIZE}, the notebook's)")
    p.add_argument("--protocol", choices=choices.PROTOCOLS, default=choices.DEFAULT_PROTOCOL,
                   help="seed: validate on the test set as the notebook did; holdout: on a split of train")
    p.add_argument("--val-size", type=_number("val_size"), default=None,
                   help="holdout validation images (default: a tenth of the training images, at most 5,000)")
    p.add_argument("--out", type=_text("out"), help="output folder (default: a new folder under storage/reports/)")
    p.add_argument("--seed", type=_number("seed"), default=choices.DEFAULT_SEED, help="0 .. 4294967295")
    _add_data(p)
    _add_training(p)


def _add_compare(sub) -> None:
    p = sub.add_parser("compare", help="retrain each study's best trial and the baseline; compare on test")
    p.add_argument("--archs", type=_archs, default=None, help="comma-separated (default: every arch with a study)")
    p.add_argument("--seeds", type=_number("seeds"), default=choices.DEFAULT_COMPARE_SEEDS,
                   help="seeds per architecture (1..100)")
    p.add_argument("--epochs", type=_number("epochs"), default=None, help="default: the study's epochs")
    _add_storage(p)
    p.add_argument("--out", type=_text("out"), help="output folder (default: a new folder under storage/reports/)")
    _add_data(p)  # default: the data the studies were tuned on (and their subset)
    p.add_argument("--full-data", action="store_true", help="retrain on every training image and test on all test "
                   "images, also where a study was tuned on a --subset (the final verdict)")
    _add_training(p)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    parser = _Parser(prog="cifar-tune", description="Optuna studies around the seed notebook's five "
                                                    "CIFAR-10 classifiers.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    sub.add_parser("archs", help="list the architectures and their baseline parameter counts")

    _add_baseline(sub)

    p = sub.add_parser("optimize", help="run (or resume) an Optuna study for one architecture")
    p.add_argument("--arch", required=True, choices=ARCH_KEYS, help="the architecture to tune (cifar-tune archs)")
    p.add_argument("--space", type=_text("space"), help="search-space TOML (default: search_spaces/<arch>.toml)")
    p.add_argument("--n-trials", type=_number("n_trials"), help="new trials this command runs (all workers together)")
    p.add_argument("--total-trials", type=_number("total_trials"),
                   help="instead of --n-trials: run until the study holds this many trials, whoever runs them "
                        "(for many machines sharing one study)")
    p.add_argument("--timeout", type=_number("timeout"), help="stop starting new trials after this many seconds")
    p.add_argument("--study-name", type=_text("study_name"), help="default: cifar10-<arch>")
    _add_study(p)

    p = sub.add_parser("run", help="the whole job: a study per architecture, compare, report (resumes)")
    p.add_argument("--archs", type=_archs, default=list(ARCH_KEYS), help="comma-separated (default: all)")
    p.add_argument("--n-trials", type=_number("n_trials"),
                   help="trials per study (a study-wide total; default: the preset's)")
    p.add_argument("--timeout", type=_number("timeout"), help="seconds the studies may start trials in, shared among "
                   "the architectures in turn (compare and report are not limited)")
    p.add_argument("--seeds", type=_number("seeds"), default=choices.DEFAULT_COMPARE_SEEDS,
                   help="compare's seeds per architecture (1..100)")
    p.add_argument("--out", type=_text("out"),
                   help="folder for the compare tables and the report (default: under storage/reports/)")
    _add_study(p)

    p = sub.add_parser("doctor", help="print backend, device, versions, data source and storage (for bug reports)")
    _add_storage(p)
    p.add_argument("--data", type=_text("data"),
                   help="the data source to check (default: $CIFAR_TUNE_DATA, else the download)")
    p.add_argument("--check", action="store_true", help="also check every architecture's numerics in float32 and "
                   "bf16 against a CPU float32 reference (seconds per architecture; cached per device and version)")

    p = sub.add_parser("studies", help="list the studies in a storage")
    _add_storage(p)

    _add_compare(sub)

    p = sub.add_parser("report", help="write one self-contained HTML report of the stored studies")
    _add_storage(p)
    p.add_argument("--out", type=_text("out"), help="output folder or .html path (default: storage/reports/)")

    p = sub.add_parser("dashboard", help="serve optuna-dashboard on the storage")
    _add_storage(p)
    p.add_argument("--host", type=_text("host"), default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=_number("port"), default=8080, help="port to listen on (default 8080)")
    return parser


def cmd_archs(args) -> int:
    from cifar_tune.models import architectures

    print(f"{'key':<8} {'label':<26} {'parameters':>10}")
    for a in architectures.ARCHITECTURES.values():
        print(f"{a.key:<8} {a.label:<26} {a.build().count_params():>10,}")
    return 0


def _training(args) -> dict:
    """The training flags as keywords (an absent flag: the default)."""
    return {"engine": args.engine or choices.DEFAULT_ENGINE, "precision": args.precision or choices.DEFAULT_PRECISION,
            "verbose": int(args.verbose)}


def cmd_baseline(args) -> int:
    from cifar_tune.cli import jobs
    from cifar_tune.comparison import seed_baseline as baseline

    settings = baseline.BaselineSettings(archs=args.archs, epochs=args.epochs, batch_size=args.batch_size,
                                         protocol=args.protocol, val_size=args.val_size, out_dir=args.out,
                                         seed=args.seed, data=args.data, subset=args.subset, **_training(args))
    # the checks and the data as the Python API's cifar_tune.baseline: bad data fail here, before any training
    return jobs.baseline(baseline.load_data(settings), settings)


def study_keywords(args) -> dict:
    """The study flags of ``optimize`` or ``run`` as ``presets.make_settings``'s keywords (absent: not given)."""
    from cifar_tune.studies import presets

    return {key: getattr(args, key) for key in (*presets.KEYS, *presets.EXTRA) if hasattr(args, key)}


def optimize_settings(args):
    """``optimize``'s settings from its flags, through ``presets.make_settings`` as the Python API's
    ``make_settings``: validates preset, space, storage URL; nothing stored yet."""
    from cifar_tune.studies import presets

    return presets.make_settings(args.arch, preset=args.preset, **study_keywords(args))


def cmd_optimize(args) -> int:
    from cifar_tune.cli import jobs

    return jobs.optimize(optimize_settings(args))  # validates preset, space, storage URL: nothing stored yet


def run_plan(args) -> list:
    """The settings of each architecture's study in ``run``: the preset (and its [archs.<arch>] table) and the
    flags (--timeout also bounds each study), through ``presets.make_plan`` as the Python API's ``run``."""
    from cifar_tune.studies import presets

    return presets.make_plan(args.archs, preset=args.preset, **study_keywords(args))


def cmd_run(args) -> int:
    from cifar_tune.cli import jobs

    return jobs.run(run_plan(args), seeds=args.seeds, timeout=args.timeout, out_dir=args.out)


def cmd_doctor(args) -> int:
    from cifar_tune.cli import doctor
    from cifar_tune.storage import handle

    for key, value in doctor.facts(handle.resolve(args.storage), args.data).items():
        print(f"{key + ':':<14} {value}")
    return doctor.check_numerics() if args.check else 0


def cmd_studies(args) -> int:
    from cifar_tune.storage import handle
    from cifar_tune.views import tables

    storage = handle.resolve(args.storage)
    opened = storage.reading()
    rows, foreign = tables.study_rows(opened), tables.foreign_studies(opened)
    if foreign:  # another program's, multi-objective or maximizing: listed, never read as ours
        print("Foreign studies (not cifar-tune's; skipped): " + "; ".join(f"{n} ({why})" for n, why in foreign.items()))
    if not rows:
        print(f"No {'cifar-tune ' if foreign else ''}studies in {storage.shown}")
        return 0
    import pandas as pd

    warned = {r["study"]: r.pop("warning") for r in rows}  # beside each study, in short; in full below the table
    print(pd.DataFrame([{**r, "warning": "NOT LEARNED" if warned[r["study"]] else ""} for r in rows])
          .to_string(index=False))
    for name, warning in warned.items():
        if warning:
            print(f"WARNING: {name}: {warning}")
    compared = tables.compared_rows(opened)
    if compared:
        print("\nCompared on the test set (cifar-tune compare; accuracy, mean over the seeds):")
        print(pd.DataFrame(compared).round(4).to_string(index=False))
    return 0


def cmd_compare(args) -> int:
    from cifar_tune.cli import jobs
    from cifar_tune.comparison import retrain as compare
    from cifar_tune.storage.urls import url_or_default

    # Default data: --data, else $CIFAR_TUNE_DATA, else what the studies were tuned on, else the download.
    return jobs.compare(compare.CompareSettings(
        archs=args.archs, seeds=args.seeds, epochs=args.epochs, storage=url_or_default(args.storage),
        out_dir=args.out, full_data=args.full_data, data=args.data or os.environ.get(DATA_ENV), subset=args.subset,
        **_training(args)))


def cmd_report(args) -> int:
    from cifar_tune.cli import jobs
    from cifar_tune.storage import handle

    return jobs.report(handle.resolve(args.storage), args.out)


def cmd_dashboard(args) -> int:
    from cifar_tune.storage import handle
    from cifar_tune.views import dashboard

    return dashboard.serve(handle.resolve(args.storage), host=args.host, port=args.port)


# The commands that load Keras before anything else; the others load it where training starts in this process
# (after every check that needs no Keras: a refusal costs no Keras import), or never (a supervisor of workers).
NEEDS_KERAS = {"archs", "doctor"}
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
        # the library's progress and warnings, as the commands' lines (--verbose: Keras's bar shows the epochs)
        with progress.reporting(Console(verbose=bool(getattr(args, "verbose", False)))):
            if args.command in NEEDS_KERAS:
                from cifar_tune import runtime

                runtime.import_keras()
            return COMMANDS[args.command](args)
    except UserError as e:
        print(f"cifar-tune: error: {e}", file=sys.stderr)
        return e.status  # 2; a ClusterError of lost Ray workers: 1
    except KeyboardInterrupt:
        print("cifar-tune: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader went away (`cifar-tune studies | head`): stop quietly, as `ls | head`
        # Python's documented recipe: stdout to /dev/null, so the interpreter's last flush cannot fail again
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 128 + signal.SIGPIPE
    except Exception as e:
        # What failed mid-command outside the user's input: the storage (damaged, deleted, locked, server gone;
        # also behind Optuna's "Should not reach" when a trial's result could not be stored), or a disk.
        line, code = _failure(args, e)
        if line is None:
            raise
        print(f"cifar-tune: error: {line}", file=sys.stderr)
        return code
    finally:
        if argv is None:  # the process's own command (the console script, python -m cifar_tune): it ends now
            from cifar_tune.cli.ending import end_quickly

            end_quickly()


_DISK_ERRNOS = {"ENOSPC", "EDQUOT", "EROFS", "EIO", "EACCES", "EPERM", "ENOENT", "ENOTDIR", "EISDIR", "EEXIST"}


def _failure(args, e: BaseException) -> tuple[str | None, int]:
    """(one line, exit status) for a storage error (2, as every storage error) or a failed write (1), else None."""
    import errno

    if "sqlalchemy" in sys.modules:  # no storage was touched without it
        from cifar_tune.storage import handle

        err = handle.resolve(getattr(args, "storage", None)).failure(e)
        if err is not None:
            return str(err), 2
    if isinstance(e, OSError) and errno.errorcode.get(e.errno) in _DISK_ERRNOS:
        where = f" {e.filename}" if e.filename else ""
        return f"cannot write{where}: {e.strerror or e}", 1
    return None, 1
