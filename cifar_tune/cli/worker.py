"""A supervised worker process: ``python -m cifar_tune.cli.worker`` with a job as JSON on standard input:
``{"settings": {...OptimizeSettings...}, "n_trials": N, "worker": slot, "describe": bool}``. It prints as the
``optimize`` command does (the console reporter: a line per trial) and runs the one worker entry
``tuning.run_job`` (which a Ray cluster's workers run too). Exit status 0, 2 (a user error or a storage that
failed: the supervisor stops) or 130 (interrupted; its trial was failed with the reason).

``--serve --status-fd N`` (a Jupyter kernel's kept worker, ``executors.KeptProcesses``): a job per line of
standard input, each with the caller's working folder (``"cwd"``), until standard input ends; after each job one
line ``{"status": S, "kept": bool}`` on file descriptor N. It leaves (``"kept": false``, then exits with S) after
a job that did not end with 0, after a job with ``trials_per_process`` set, and once it holds more than its memory
ceiling."""

from __future__ import annotations

import argparse
import json
import os
import sys


def main(argv: list[str] | None = None) -> int:
    """Run the job read from standard input (or, with ``--serve``, each job read); returns the exit status."""
    from cifar_tune import runtime

    parser = argparse.ArgumentParser(prog="python -m cifar_tune.cli.worker")
    parser.add_argument("--serve", action="store_true", help="run a job per line until standard input ends")
    parser.add_argument("--status-fd", type=int, help="with --serve: where each job's status line goes")
    args = parser.parse_args(argv)
    runtime.stop_on_signals(always_deferred=True)
    if args.serve:
        os.set_inheritable(args.status_fd, False)  # a process it starts must not hold the pipe open after its end
        return _serve(os.fdopen(args.status_fd, "w"))
    return _run(json.loads(sys.stdin.read()))


def _run(job: dict) -> int:
    from cifar_tune import progress, tuning  # loads no Keras: tuning.run_job loads it first, its native logs silenced
    from cifar_tune.cli.console import Console

    with progress.reporting(Console(verbose=bool(job["settings"].get("verbose")))):
        return tuning.run_job(job)


def _serve(status) -> int:
    from cifar_tune import runtime, tuning

    size_ceiling = tuning.MemoryCeiling(None)  # its size after its first job plus the headroom, where none is set
    for line in sys.stdin:
        job = json.loads(line)
        os.chdir(job.pop("cwd"))
        # a new job: a signal that came while this worker was idle is forgotten (a kernel's interrupt reaches its
        # whole process group, this worker included)
        runtime.stop_on_signals(always_deferred=True)
        code = _run(job)
        over = size_ceiling.passed()
        given = job["settings"].get("worker_memory")
        if given is not None:
            over = tuning.MemoryCeiling(given).passed()
        # --trials-per-process asks for a fresh process after that many trials: it leaves after each job
        kept = code == 0 and not runtime.stopping() and not over and job["settings"].get("trials_per_process") is None
        status.write(json.dumps({"status": code, "kept": kept}) + "\n")
        status.flush()
        if not kept:
            return code
    return 0


if __name__ == "__main__":
    status = main()
    from cifar_tune.cli.ending import end_quickly

    end_quickly()  # the supervisor waits for this process's end before it replaces it or sums up
    sys.exit(status)
