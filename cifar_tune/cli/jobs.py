"""The long commands (``optimize``, ``baseline``, ``compare``, ``run``, ``report``) around their library calls: the
console reporter, the result lines, and the exit status, Ctrl-C and SIGTERM included (``run_stoppable``). The
library raises; only the CLI maps what happened to an exit status."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

from cifar_tune import progress, runtime
from cifar_tune.cli.console import Console
from cifar_tune.errors import INTERRUPTED_STATUS, TERMINATED_STATUS, Terminated, WorkersStopped

if TYPE_CHECKING:
    from cifar_tune.comparison.retrain import CompareSettings
    from cifar_tune.comparison.seed_baseline import BaselineSettings
    from cifar_tune.data.cifar10 import Dataset
    from cifar_tune.storage.handle import Storage
    from cifar_tune.studies.presets import OptimizeSettings


def run_stoppable(command, interrupted) -> int:
    """Run one long command: Ctrl-C and SIGTERM are recorded (``runtime.stop_on_signals``) and stop it at the next
    batch of training or between its steps; then one line on stderr, ``cifar-tune: interrupted (Ctrl-C):
    <interrupted()>``, and exit status 130 (SIGINT) or 143 (SIGTERM), as a shell reports a process killed by that
    signal. ``command()`` returns the exit status; ``interrupted()`` (called after the stop, so it can count what
    was kept) says what was interrupted, what is kept and the command that continues. Progress goes to the
    console (installed here unless a reporter is: ``cli.main`` installs one for every command). The signal
    handlers that were there before come back after, and the stop is forgotten: ``cli.main`` run in a process that
    goes on (a test, a notebook) leaves no handler of its own behind."""
    with progress.reporting_unless_installed(Console):
        try:
            # Deferred throughout, not only while training (stops_on_signals): raised between two steps, a
            # KeyboardInterrupt could land in a garbage-collection callback, which Python reports as "Exception
            # ignored" and swallows. The steps call raise_if_stopping (each batch, each trial, each training of
            # compare, each study of the report).
            with runtime.stops_on_signals():
                return command()
        except KeyboardInterrupt as e:  # Terminated for SIGTERM, or another error's KeyboardInterrupt saying so
            terminated = isinstance(e, Terminated) or str(e) == runtime.TERMINATED
            print(f"cifar-tune: {'terminated (SIGTERM)' if terminated else 'interrupted (Ctrl-C)'}: {interrupted()}",
                  file=sys.stderr, flush=True)
            return TERMINATED_STATUS if terminated else INTERRUPTED_STATUS


def optimize(settings: OptimizeSettings) -> int:
    """The ``optimize`` command: run the study (``tuning.run_study``: the console prints its lines and summary) and
    return the exit status: 0, the workers' status when they stopped (``WorkersStopped``), or 130 / 143 after
    Ctrl-C / SIGTERM, which print one line with the command that resumes (one that says nothing of trials when the
    study had not started: stopped while connecting to a Ray cluster, loading the data). A user error raised
    inside propagates (``cli.main`` prints it, status 2)."""
    from cifar_tune import tuning
    from cifar_tune.cli import display

    def command() -> int:
        try:
            tuning.run_study(settings)
        except WorkersStopped as e:  # the workers said why; the last line says what ended the study
            print(f"cifar-tune: error: {e}", file=sys.stderr, flush=True)
            return e.status
        return 0

    console = progress.current()  # the CLI's Console (cli.main), which counts the studies it announced
    before = getattr(console, "studies_started", None)

    def interrupted() -> str:
        if before is not None and console.studies_started == before:  # stopped connecting, loading the data
            return f"optimize stopped before its study started; start it again with: {display.resume_command(settings)}"
        return ("optimize stopped; the running trial is marked failed, finished trials are stored; resume with: "
                f"{display.resume_command(settings)}")

    return run_stoppable(command, interrupted)


def baseline(ds: Dataset, settings: BaselineSettings) -> int:
    """The ``baseline`` command on ``ds`` (loaded by ``seed_baseline.load_data(settings)``): run, print the table.
    Ctrl-C or SIGTERM ends it with one line and 130 or 143 (``run_stoppable``); the finished architectures are kept
    in the output folder, and the printed command (the same, with ``--out`` that folder) continues."""
    from cifar_tune.comparison import seed_baseline

    state: dict = {}

    def command() -> int:
        result = seed_baseline.run(ds, settings, state)
        print(f"\nProtocol: {seed_baseline.PROTOCOLS[settings.protocol]}")
        print(result.table.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
        print(f"\nWrote {result.out}/metrics.csv, metrics.md and report.html")
        return 0

    def interrupted() -> str:
        if "out" not in state:
            return "baseline stopped before training; nothing was written"
        done = state["done"]
        return (f"baseline stopped; {len(done)} of {len(settings.archs)} architectures finished"
                + (f" ({', '.join(done)}), kept in {state['out']}/{seed_baseline.KEPT}" if done else "")
                + "; continue with: "
                + seed_baseline.resume_command(settings, state["out"]))

    # a line per epoch, unless --verbose: Keras's own progress bar says it then
    with progress.reporting(Console(epoch_lines=not settings.verbose, verbose=bool(settings.verbose))):
        return run_stoppable(command, interrupted)


def compare(settings: CompareSettings) -> int:
    """The ``compare`` command: ``retrain.compare_studies``, then its table and where everything went. Ctrl-C or
    SIGTERM ends it with one line and 130 or 143 (``run_stoppable``), every finished training kept in its study
    for the same command to reuse. Raises ``UserError`` (no studies, bad data) before anything is trained or
    written."""
    from cifar_tune.comparison import retrain

    def command() -> int:
        print(retrain.compare_studies(settings).summary())
        print(f"Next: {report_command(settings.storage)}")  # the user's next step (``run`` reports by itself)
        return 0

    return run_stoppable(
        command,
        lambda: f"compare stopped; the trainings it finished are kept in the studies; continue with: "
                f"{retrain.resume_command(settings)}")


def run(plan: list[OptimizeSettings], *, seeds: int, timeout: float | None, out_dir: str | None) -> int:
    """``cifar-tune run``: ``pipeline.run_job``, printing the comparison and the job's table and the report's path.
    Returns 0, 1 when an architecture could not be compared, the workers' status when a study's workers stopped,
    130 or 143 when a signal stopped it (see ``pipeline``)."""
    from cifar_tune import pipeline
    from cifar_tune.studies import validate

    validate.check_args(seeds=seeds, timeout=timeout, out_dir=out_dir)  # as the CLI does
    phase = {"phase": "studies"}
    return run_stoppable(
        lambda: _run(plan, seeds=seeds, timeout=timeout, out_dir=out_dir, phase=phase),
        lambda: f"run stopped in its {phase['phase']} phase; {pipeline.KEPT[phase['phase']]}; continue the job "
                f"with: {pipeline.resume_command(plan, seeds=seeds, timeout=timeout, out_dir=out_dir)}")


def _run(plan: list[OptimizeSettings], *, seeds: int, timeout: float | None, out_dir: str | None,
         phase: dict) -> int:
    from cifar_tune import pipeline

    try:
        result = pipeline.run_job(plan, seeds=seeds, timeout=timeout, out_dir=out_dir, progress=phase,
                                  show_comparison=lambda comparison: print(comparison.summary()))
    except WorkersStopped as e:
        print(f"cifar-tune: the {e.arch} study stopped (exit status {e.status}); the same "
              "`cifar-tune run` command resumes the job", file=sys.stderr)
        return e.status
    missing, seconds = result.not_compared, result.seconds
    what = (f"The job ended in {seconds:.0f} s without a comparison of {', '.join(missing)}" if missing
            else f"The job is done in {seconds:.0f} s")
    if not result.table.empty:
        print(f"\n{what}. Test-set macro metrics (mean ± std over seeds; tuned - baseline: paired differences [95% "
              "interval]):")
        print(result.display.to_markdown(index=False, tablefmt="simple", disable_numparse=True))
    else:
        print(f"\n{what}.")
    for warning in result.warnings:
        print(f"WARNING: {warning}", file=sys.stderr, flush=True)
    print(f"\nReport: {result.report}", flush=True)
    if missing:  # the verdict of the job's parts: these could not be compared
        print("cifar-tune: error: nothing to compare for " + "; ".join(f"{a}: {w}" for a, w in missing.items()),
              file=sys.stderr)
        return 1
    return 0


def report_command(storage_url: str, out: str | None = None) -> str:
    """The ``cifar-tune report`` command that draws the report of this storage (password masked)."""
    import shlex

    from cifar_tune.choices import DEFAULT_STORAGE
    from cifar_tune.storage.database import mask_url

    words = ["cifar-tune", "report"] + (["--storage", mask_url(storage_url)] if storage_url != DEFAULT_STORAGE else [])
    return shlex.join(words + (["--out", str(out)] if out is not None else []))


def report(storage: Storage, out: str | None) -> int:
    """The ``report`` command on the command's storage. Ctrl-C or SIGTERM ends it with one line and 130 or 143
    (``run_stoppable``); the report only reads the stored records, so the same command draws it again from the
    start."""
    from cifar_tune.views import study_report

    def command() -> int:
        print(f"Wrote {study_report.write_study_report(storage, out)}")
        return 0

    return run_stoppable(command, lambda: "report stopped before it was written (it reads the stored records "
                                          f"only: nothing is lost); draw it again with: "
                                          f"{report_command(storage.url, out)}")

