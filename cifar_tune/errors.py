"""The exceptions a user can cause: the CLI prints each as one line and exits with status 2 (``WorkersStopped``:
with the workers' status); the Python API raises them as they are."""


class UserError(Exception):
    """A problem with the user's input: the CLI prints it as one line and exits with status 2."""


class DataError(UserError):
    """The data source is missing, unreadable or not CIFAR-10."""


class WorkersStopped(UserError):
    """An optimize run's worker processes stopped before its trials were done (a worker's user error, or workers
    that kept ending without a trial); each worker said why on standard error. ``status``: the exit status the
    ``optimize`` command ends with (2 for a user error); ``arch``: the study's architecture."""

    def __init__(self, arch: str, status: int):
        super().__init__(f"the {arch} study stopped: its worker processes ended with exit status {status} (each "
                         "said why on standard error)")
        self.arch, self.status = arch, status


def one_line(e: BaseException) -> str:
    """An exception's message cut to one line of at most 300 characters (the CLI prints errors as one line)."""
    lines = str(e).splitlines() or [type(e).__name__]
    return lines[0][:300]
