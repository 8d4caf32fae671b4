"""The ``cifar-tune`` command: parse, call the library, print (the console reporter, ``console.py``, for every
command; the long commands' result lines and exit statuses in ``jobs.py``). Nothing here trains or stores by
itself."""

from __future__ import annotations

import argparse
import os
import signal
import sys

from cifar_tune import progress
from cifar_tune.cli.console import Console
from cifar_tune.errors import InvalidValue, UserError
from cifar_tune.studies import settings, validate


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


_archs = _checked(lambda name, value: validate.check_setting(name, validate.split_list(value)), "archs")


def _add_settings(p: argparse.ArgumentParser, command: str) -> None:
    """``command``'s options, as the settings model declares them (``studies/settings.py``): a choice, a number in
    its range, a non-empty text, a list of architectures or a flag without value; its default and help text."""
    for s in settings.settings_of(command):
        if not s.flag:
            continue  # a keyword of the Python API alone
        option = {"help": s.help_in(command), "default": settings.flag_default(s, command)}
        if s.type is bool:
            option["action"] = "store_true"
        elif s.choices is not None:
            option["choices"] = s.choices
        elif s.type is list:
            option["type"] = _archs
        else:
            option["type"] = (_number if s.range is not None else _text)(s.name)
        if s.metavar:
            option["metavar"] = s.metavar
        if s.required:
            option["required"] = True
        p.add_argument(f"--{validate.label(s.name)}", **option)


SUBCOMMANDS = {  # each command's one-line description, in the order `cifar-tune --help` lists them
    "archs": "list the architectures and their baseline parameter counts",
    "baseline": "reproduce the notebook's fixed-baseline comparison table",
    "optimize": "run (or resume) an Optuna study for one architecture",
    "run": "the whole job: a study per architecture, compare, report (resumes)",
    "doctor": "print backend, device, versions, data source and storage (for bug reports)",
    "studies": "list the studies in a storage",
    "compare": "retrain each study's best trial and the baseline; compare on test",
    "report": "write one self-contained HTML report of the stored studies",
    "dashboard": "serve optuna-dashboard on the storage",
}


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand, its options from the settings model."""
    parser = _Parser(prog="cifar-tune", description="Optuna studies around the seed notebook's five "
                                                    "CIFAR-10 classifiers.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for command, description in SUBCOMMANDS.items():
        _add_settings(sub.add_parser(command, help=description), command)
    return parser


def cmd_archs(args) -> int:
    from cifar_tune.models import architectures

    print(f"{'key':<8} {'label':<26} {'parameters':>10}")
    for a in architectures.ARCHITECTURES.values():
        print(f"{a.key:<8} {a.label:<26} {a.build().count_params():>10,}")
    return 0


def given(args, command: str) -> dict:
    """``command``'s options as keywords by their settings' names (an absent flag: its default)."""
    return {s.name: getattr(args, s.name) for s in settings.settings_of(command) if s.flag}


def cmd_baseline(args) -> int:
    from cifar_tune.cli import jobs
    from cifar_tune.comparison import seed_baseline

    made = seed_baseline.make_settings(**given(args, "baseline"))  # as the Python API's cifar_tune.baseline makes them
    # the checks and the data as the Python API's: bad data fail here, before any training
    return jobs.baseline(seed_baseline.load_data(made), made)


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
    from cifar_tune.comparison import retrain

    return jobs.compare(retrain.make_settings(**given(args, "compare")))  # as the Python API's cifar_tune.compare


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
