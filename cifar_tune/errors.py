"""The one exception type for mistakes a user can make (bad arch, bad file, bad URL, bad data)."""


class UserError(Exception):
    """A problem with the user's input: the CLI prints it as one line and exits with status 2."""
