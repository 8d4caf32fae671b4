"""A supervised worker process: ``python -m cifar_tune.cli.worker`` with a job as JSON on standard input:
``{"settings": {...OptimizeSettings...}, "n_trials": N, "worker": slot}``. It prints as the ``optimize`` command
does (the console reporter: a line per trial) and runs the shared loop ``tuning.run_worker``. Exit status 0, 2 (a
user error or a storage that failed: the supervisor stops) or 130 (interrupted; its trial was failed with the
reason)."""

from __future__ import annotations

import json
import sys


def main() -> int:
    """Run the job read from standard input; returns the exit status."""
    from cifar_tune import progress, runtime
    from cifar_tune.cli.console import Console

    runtime.stop_on_signals(always_deferred=True)
    job = json.loads(sys.stdin.read())
    runtime.import_keras()  # first: the imports below load Keras, whose native logs are silenced here

    from cifar_tune import tuning
    from cifar_tune.errors import UserError
    from cifar_tune.studies.presets import OptimizeSettings

    tuning.quiet_optuna()
    settings = OptimizeSettings(**job["settings"])
    try:
        with progress.reporting(Console()):
            tuning.run_worker(settings, job["n_trials"], worker=job["worker"])
    except UserError as e:
        print(f"cifar-tune: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except Exception as e:  # the storage failed under the worker: one line, as the command itself says it
        from cifar_tune.storage.database import storage_failure

        err = storage_failure(settings.storage, e)
        if err is None:
            raise
        print(f"cifar-tune: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
