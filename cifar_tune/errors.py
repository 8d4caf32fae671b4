"""The exceptions a user can cause: the CLI prints each as one line and exits with status 2."""


class UserError(Exception):
    """A problem with the user's input: the CLI prints it as one line and exits with status 2."""


class DataError(UserError):
    """The data source is missing, unreadable or not CIFAR-10."""


def one_line(e: BaseException) -> str:
    """An exception's message cut to one line of at most 300 characters (the CLI prints errors as one line)."""
    lines = str(e).splitlines() or [type(e).__name__]
    return lines[0][:300]
