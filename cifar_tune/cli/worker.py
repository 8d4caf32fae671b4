"""A supervised worker process: ``python -m cifar_tune.cli.worker`` with a job as JSON on standard input:
``{"settings": {...OptimizeSettings...}, "n_trials": N, "worker": slot}``. It prints as the ``optimize`` command
does (the console reporter: a line per trial) and runs the one worker entry ``tuning.run_job`` (which a Ray
cluster's workers run too). Exit status 0, 2 (a user error or a storage that failed: the supervisor stops) or 130
(interrupted; its trial was failed with the reason)."""

from __future__ import annotations

import json
import sys


def main() -> int:
    """Run the job read from standard input; returns the exit status."""
    from cifar_tune import progress, runtime
    from cifar_tune.cli.console import Console

    runtime.stop_on_signals(always_deferred=True)
    job = json.loads(sys.stdin.read())
    from cifar_tune import tuning  # loads no Keras: tuning.run_job loads it first, its native logs silenced

    with progress.reporting(Console(verbose=bool(job["settings"].get("verbose")))):
        return tuning.run_job(job)


if __name__ == "__main__":
    status = main()
    from cifar_tune.cli.ending import end_quickly

    end_quickly()  # the supervisor waits for this process's end before it replaces it or sums up
    sys.exit(status)
